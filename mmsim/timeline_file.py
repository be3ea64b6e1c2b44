"""Timeline files: what `mmsim run --timeline` writes and `report`, `compare` and the plots read.

The columns are described in :mod:`mmsim.timeline` (the recorder that samples a kernel into
them); this module holds the format alone, so that the plots read timelines without the
recorder and the recorder draws plots without a cycle between them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, TextIO

__all__ = [
    "BYTES",
    "FIXED_COLUMNS",
    "PLOT_FORMATS",
    "TimelineData",
    "TimelineError",
    "check_plot_path",
    "format_events",
    "load_timeline",
    "parse_events",
]

BYTES = "_bytes"
FIXED_COLUMNS = ("time", "event", "total_bytes", "free_bytes")


class TimelineError(Exception):
    """A timeline or plot that cannot be made (bad option, unwritable or unreadable file)."""


PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_plot_path(path: str, formats: tuple[str, ...] = PLOT_FORMATS) -> str:
    """The plot's format from its extension; TimelineError before a run if it cannot be made."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in formats:
        names = ", ".join(formats[:-1]) + f" or {formats[-1]}" if len(formats) > 1 else formats[0]
        raise TimelineError(f"{path}: a plot must be {names}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise TimelineError(f"{path}: cannot write (no writable directory {parent})")
    return ext[1:]


# -- reading ----------------------------------------------------------------------------------
@dataclass
class TimelineData:
    """A timeline as columns, whatever file format it came from."""

    time: list[float] = field(default_factory=list)
    event: list[int] = field(default_factory=list)
    total: list[int] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    categories: dict[str, list[int]] = field(default_factory=dict)  # name -> bytes per row
    extra: dict[str, list[float | None]] = field(default_factory=dict)  # arc_* and the like
    events: list[dict[str, int]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.time)

    def records(self) -> list[dict[str, Any]]:
        """One dict per row, what ``pandas.DataFrame`` takes: ``time_s``, ``event``,
        ``total_bytes``, ``free_bytes``, ``<category>_bytes``, the ARC's columns, and
        ``events`` (the kernel's events since the previous row, by name)."""
        out = []
        for i in range(len(self.time)):
            r: dict[str, Any] = {"time_s": self.time[i], "event": self.event[i],
                                 "total_bytes": self.total[i], "free_bytes": self.free[i]}
            for name, col in self.categories.items():
                r[name + BYTES] = col[i]
            for name, vals in self.extra.items():
                r[name] = vals[i]
            r["events"] = dict(self.events[i]) if i < len(self.events) else {}
            out.append(r)
        return out


def parse_events(text: str) -> dict[str, int]:
    """``reclaim=2;oom=1`` -> ``{"reclaim": 2, "oom": 1}`` (a bare name counts once)."""
    out: dict[str, int] = {}
    for item in text.split(";"):
        name, _, count = item.strip().partition("=")
        if name:
            out[name] = out.get(name, 0) + (int(count) if count else 1)
    return out


def format_events(events: dict[str, int]) -> str:
    return ";".join(f"{k}={v}" for k, v in events.items())


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _read_jsonl(f: TextIO, path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; TimelineError at the line that is not
    one JSON object (with json's column, not its 'line 1')."""
    out = []
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise TimelineError(f"{path}:{n}: not a timeline row ({e.msg} at column {e.colno})"
                                ) from None
        if not isinstance(record, dict):
            raise TimelineError(f"{path}:{n}: not a timeline row (a JSON object is expected)")
        out.append((n, record))
    return out


def load_timeline(path: str) -> TimelineData:
    """Read a timeline written by :class:`Recorder` (CSV, or JSON Lines for ``.jsonl``)."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if path.endswith(".jsonl"):
                records = _read_jsonl(f, path)
                header = list(records[0][1]) if records else []
            else:
                reader = csv.DictReader(f)
                records = []
                for r in reader:  # the line a row ends on (a quoted field may span lines)
                    records.append((reader.line_num, r))
                header = list(reader.fieldnames or [])
    except OSError as e:
        raise TimelineError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, csv.Error) as e:
        raise TimelineError(f"{path}: not a timeline ({e})") from None
    missing = [c for c in FIXED_COLUMNS if c not in header]
    if missing:
        raise TimelineError(f"{path}: not an mmsim timeline (no column {missing[0]!r})")
    data = TimelineData(source=path)
    names = [c[: -len(BYTES)] for c in header if c.endswith(BYTES) and c not in FIXED_COLUMNS]
    extra = [c for c in header if c not in FIXED_COLUMNS and not c.endswith(BYTES)
             and c != "events"]
    data.categories = {n: [] for n in names}
    data.extra = {c: [] for c in extra}
    for line, r in records:
        column = "time"
        try:
            time = float(r["time"])
            column = "event"
            event = int(r["event"])
            column = "total_bytes"
            total = int(r["total_bytes"])
            column = "free_bytes"
            free = int(r["free_bytes"])
            cats = []
            for n in names:
                column = n + BYTES
                cats.append(int(r.get(column) or 0))
            more = []
            for c in extra:
                column = c
                more.append(_number(r.get(c)))
            column = "events"
            ev = r.get("events") or {}
            events = dict(ev) if isinstance(ev, dict) else parse_events(ev)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TimelineError(f"{path}:{line}: bad timeline row ({column}: {e})") from None
        data.time.append(time)
        data.event.append(event)
        data.total.append(total)
        data.free.append(free)
        for n, v in zip(names, cats):
            data.categories[n].append(v)
        for c, v in zip(extra, more):
            data.extra[c].append(v)
        data.events.append(events)
    return data
