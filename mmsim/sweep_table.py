"""The table a sweep ends with: one line per point, the keys it varied and its headline figures
(the CSV or Parquet file has every column)."""

from __future__ import annotations

import os
from typing import Any

from mmsim.summary_text import human

__all__ = ["MAX_LINES", "format_sweep_table"]

MAX_LINES = 40  # rows shown; the file has them all


def _varied(rows: list[dict[str, Any]]) -> list[str]:
    """The point's keys: the columns between ``point`` and ``status`` of each row."""
    keys: list[str] = []
    for row in rows:
        names = list(row)
        if "point" in names and "status" in names:
            for k in names[names.index("point") + 1:names.index("status")]:
                if k not in keys:
                    keys.append(k)
    return keys


def _number(row: dict[str, Any], key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def _cells(row: dict[str, Any], varied: list[str], arc: bool) -> list[str]:
    peak = _number(row, "memory.peak_used_bytes")
    hits, misses = _number(row, "arc.hits"), _number(row, "arc.misses")
    errors = _number(row, "app_errors.total")
    cells = [os.path.basename(str(row.get("trace", ""))), *(_text(row.get(k)) for k in varied),
             str(row.get("status") or ""), human(peak) if peak is not None else "-"]
    if arc:
        cells.append(f"{100 * hits / (hits + misses):.1f} %" if hits is not None and misses
                     is not None and hits + misses else "-")
    cells.append(f"{int(errors):,}" if errors is not None else "-")
    return cells


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def format_sweep_table(rows: list[dict[str, Any]], output: str) -> str:
    """Aligned columns: trace, the varied keys, status, peak used, hit ratio (when some point
    used the ARC), application errors; at most :data:`MAX_LINES` rows."""
    if not rows:
        return ""
    varied = _varied(rows)
    arc = any((_number(r, "arc.hits") or 0) + (_number(r, "arc.misses") or 0) for r in rows)
    head = ["trace", *varied, "status", "peak used"] + (["hit ratio"] if arc else []) + [
        "app errors"]
    table = [head] + [_cells(r, varied, arc) for r in rows[:MAX_LINES]]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i <= len(varied) + 1 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths))).rstrip()
             for line in table]
    if len(rows) > MAX_LINES:
        lines.append(f"... {len(rows) - MAX_LINES} more rows in {output}")
    return "\n".join(lines)
