"""A sweep's result file (CSV or Parquet): rows written as points finish, read back on a rerun."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable
from typing import Any

from mmsim.sweep_file import Sweep, SweepError, cell
from mmsim.sweep_points import DONE, LEAD, TAIL

#: at most this often (seconds) the whole Parquet file is rewritten while points finish
_PARQUET_EVERY_S = 1.0



def _natural(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key of a dotted column: numeric parts by value (malloc.classes.8 before .16)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def row_key(trace: str, point: dict[str, Any]) -> tuple[str, frozenset[tuple[str, str]]]:
    return trace, frozenset((k, cell(v)) for k, v in point.items()
                            if v is not None and v != "")


class Results:
    """The output file: rows appended as points finish, the whole file rewritten sorted (and
    so the same for the same sweep) by :meth:`finish`; reopening it finds the rows done."""

    def __init__(self, path: str, sweep: Sweep) -> None:
        self.path = path
        self.parquet = path.lower().endswith(".parquet")
        self.keys = list(sweep.keys)
        self.order = {t.name: i for i, t in enumerate(sweep.traces)}
        self.rows: list[dict[str, Any]] = []
        self._header: list[str] = []
        self._last_write = 0.0
        self._dirty = False
        if self.parquet:
            _pyarrow()

    # reading what a previous run wrote
    def load(self, sweep: Sweep) -> dict[tuple[str, frozenset[tuple[str, str]]], dict[str, Any]]:
        """The rows already done, by (trace, point), keeping only this sweep's points; rows
        that failed are dropped so that they run again."""
        if not os.path.exists(self.path):
            return {}
        rows, header = self._read_parquet() if self.parquet else self._read_csv()
        for col in (*LEAD, *TAIL):
            if col not in header:
                raise SweepError(f"not an mmsim sweep result (no '{col}' column); give "
                                 "another -o", self.path)
        file_keys = header[len(LEAD):header.index(TAIL[0])]
        wanted = {row_key(t.name, p): (self.order[t.name], i)
                  for t in sweep.traces for i, p in enumerate(sweep.points)}
        done: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, Any]] = {}
        for n, row in enumerate(rows, 2):
            key = row_key(str(row.get("trace", "")), {k: row.get(k) for k in file_keys})
            if key not in wanted:
                point = ", ".join(f"{k}={v}" for k, v in sorted(key[1])) or "defaults"
                raise SweepError(f"row {n} ({key[0]}, {point}) is not a point of this sweep; "
                                 "give another -o (or remove the file)", self.path)
            if row.get("status") in DONE:
                row["point"] = wanted[key][1]
                done[key] = row
        return done

    def _read_csv(self) -> tuple[list[dict[str, Any]], list[str]]:
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SweepError(f"cannot read ({e})", self.path) from None
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]  # a row cut by a crash: that point runs again
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        rows = []
        for cells in reader:
            if len(cells) != len(header):
                continue
            rows.append({h: c for h, c in zip(header, cells) if c != ""})
        return rows, header

    def _read_parquet(self) -> tuple[list[dict[str, Any]], list[str]]:
        pq = _pyarrow()[1]
        try:
            table = pq.read_table(self.path)
        except Exception as e:  # pyarrow's errors have no common base
            raise SweepError(f"cannot read as Parquet ({e})", self.path) from None
        rows = [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
        return rows, list(table.column_names)

    # writing
    def start(self, done: Iterable[dict[str, Any]]) -> None:
        """Begin with the rows kept from a previous run (the file is rewritten with them)."""
        self.rows = list(done)
        self._write(self.sorted_rows())

    def add(self, row: dict[str, Any]) -> None:
        """A finished point: on disk at once (CSV), or within a second (Parquet)."""
        row = {k: v for k, v in row.items() if v is not None and v != "" or k in LEAD}
        self.rows.append(row)
        if self.parquet:
            self._dirty = True
            if time.monotonic() - self._last_write >= _PARQUET_EVERY_S:
                self._write(self.rows)
            return
        if not set(row) <= set(self._header):
            self._write(self.rows)  # a new column: the header grows, so write it all
            return
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(cell(row.get(c)) for c in self._header)
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(line.getvalue())

    def finish(self) -> None:
        """The final file: rows sorted by (trace, point), columns in their fixed order."""
        self._write(self.sorted_rows())

    def sorted_rows(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: (self.order[r["trace"]], int(r["point"])))

    def _columns(self, rows: list[dict[str, Any]]) -> list[str]:
        fixed = {*LEAD, *self.keys, *TAIL}
        figures = {k for r in rows for k in r if k not in fixed}
        return [*LEAD, *self.keys, *TAIL, *sorted(figures, key=_natural)]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        columns = self._columns(rows)
        tmp = f"{self.path}.tmp"
        try:
            if self.parquet:
                _pyarrow()[1].write_table(self._table(rows, columns), tmp)
            else:
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    w = csv.writer(f, lineterminator="\n")
                    w.writerow(columns)
                    for r in rows:
                        w.writerow(cell(r.get(c)) for c in columns)
            os.replace(tmp, self.path)
        except OSError as e:
            raise SweepError(f"cannot write ({e.strerror})", self.path) from None
        self._header = columns
        self._last_write = time.monotonic()
        self._dirty = False

    def _table(self, rows: list[dict[str, Any]], columns: list[str]) -> Any:
        """Typed columns: one type per column, else the cells' text (so reading it back and
        writing again gives the same file)."""
        pa = _pyarrow()[0]
        arrays = []
        figures = set(columns[len(LEAD) + len(self.keys) + len(TAIL):])
        for col in columns:
            values = [r.get(col) for r in rows]
            kinds = {type(v) for v in values if v is not None}
            if kinds == {bool}:
                typ = pa.bool_()
            elif kinds == {int} and all(-(1 << 63) <= v < 1 << 63 for v in values if v is not None):
                typ = pa.int64()
            elif kinds and kinds <= {int, float} and col in figures:
                typ, values = pa.float64(), [None if v is None else float(v) for v in values]
            elif kinds == {float}:
                typ = pa.float64()
            else:
                typ, values = pa.string(), [None if v is None else cell(v) for v in values]
            arrays.append(pa.array(values, type=typ))
        return pa.table(arrays, names=columns)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise SweepError("Parquet output needs pyarrow: pip install 'mmsim[parquet]'") from None
    return pyarrow, pyarrow.parquet
