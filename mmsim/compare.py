"""Two run summaries side by side: what did huge pages, a bigger ARC or the balloon change?

Summaries are flattened to dotted keys (``memory.categories.arc``, ``mmap.huge_pages``) and
every number is shown for both runs with the difference, absolute and relative. Byte counts
(keys ending in ``_bytes`` and the memory categories) read in binary units, ``_ns`` in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mmsim.kernel import MAX_NESTING, nesting_depth
from mmsim.summary_text import human

__all__ = ["Difference", "compare_summaries", "flatten", "format_comparison", "load_summary"]

#: per-run facts rather than results, and lists of examples that do not compare
_SKIP = ("trace", "app_errors.examples")


class SummaryError(Exception):
    """A file that is not a run summary."""


def load_summary(path: str) -> dict[str, Any]:
    """A summary written by ``mmsim run --json``; SummaryError with a one-line reason if not."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise SummaryError(f"{path}: cannot read ({e.strerror})") from None
    except RecursionError:
        raise SummaryError(f"{path}: nested more than {MAX_NESTING} levels deep") from None
    except ValueError as e:
        raise SummaryError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("memory"), dict):
        raise SummaryError(f"{path}: not an mmsim run summary (no 'memory' section)")
    if nesting_depth(data) > MAX_NESTING:
        raise SummaryError(f"{path}: nested more than {MAX_NESTING} levels deep")
    _check_shape(data, path)
    return data


#: what a summary's fields must be where present (a field of the wrong type is named)
_SCALARS = {"events": int, "time_ns": int, "trace": str, "image": str}
_MEMORY_INTS = ("total_bytes", "free_bytes", "used_bytes", "peak_used_bytes")


def _check_shape(data: dict[str, Any], path: str) -> None:
    """SummaryError naming the first field whose type is not a summary's."""
    def bad(field: str, want: str) -> SummaryError:
        return SummaryError(f"{path}: not an mmsim run summary ('{field}' is not {want})")

    for key, value in data.items():
        want = _SCALARS.get(key)
        if want is not None:
            if not isinstance(value, want) or isinstance(value, bool):
                raise bad(key, "an integer" if want is int else "a string")
        elif value is not None and not isinstance(value, dict):
            raise bad(key, "a mapping")
    memory = data["memory"]
    for key in _MEMORY_INTS:
        if key in memory and (not isinstance(memory[key], int) or isinstance(memory[key], bool)):
            raise bad(f"memory.{key}", "an integer")
    cats = memory.get("categories", {})
    if not isinstance(cats, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in cats.values()):
        raise bad("memory.categories", "a mapping of byte counts")


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted key, in the summary's order; lists are left out."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if name in _SKIP:
            continue
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif not isinstance(value, list):
            out[name] = value
    return out


def _is_bytes(key: str) -> bool:
    return key.endswith("_bytes") or key.startswith("memory.categories.")


def _is_ns(key: str) -> bool:
    return key.endswith("_ns") and not key.endswith("_per_ns")


def _seconds(ns: float) -> str:
    return f"{ns / 1e9:.6g} s"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Difference:
    """One compared value; ``delta`` and ``percent`` are None when they do not apply."""

    key: str
    a: Any
    b: Any
    delta: float | None
    percent: float | None

    @property
    def changed(self) -> bool:
        return self.a != self.b


def compare_summaries(a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    """Every leaf of either summary (A's order, then B's new keys), with its difference."""
    fa, fb = flatten(a), flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    out = []
    for k in keys:
        va, vb = fa.get(k), fb.get(k)
        delta = percent = None
        if _number(va) and _number(vb):
            delta = vb - va
            if va:
                percent = 100.0 * delta / abs(va)
        out.append(Difference(k, va, vb, delta, percent))
    return out


def _show(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if _is_bytes(key) and _number(v):
        return human(v)
    if _is_ns(key) and _number(v):
        return _seconds(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _show_delta(d: Difference) -> tuple[str, str]:
    if d.delta is None:
        return ("changed" if d.changed else "", "")
    if not d.delta:
        return ("", "")
    if _is_bytes(d.key):
        text = ("+" if d.delta > 0 else "-") + human(abs(d.delta))
    elif _is_ns(d.key):
        text = ("+" if d.delta > 0 else "-") + _seconds(abs(d.delta))
    elif isinstance(d.delta, float):
        text = f"{d.delta:+.4g}"
    else:
        text = f"{d.delta:+d}"
    pct = "new" if d.percent is None else f"{d.percent:+.1f}%"
    return text, pct


def format_comparison(diffs: list[Difference], label_a: str, label_b: str,
                      all_rows: bool = False) -> str:
    """A table: key, A, B, difference, difference in %; unchanged rows only with ``all_rows``."""
    rows = [(d.key, _show(d.key, d.a), _show(d.key, d.b), *_show_delta(d))
            for d in diffs if all_rows or d.changed]
    header = ("", label_a, label_b, "difference", "%")
    if not rows:
        return f"{label_a} and {label_b}: no differences"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = []
    for r in [header, *rows]:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    changed = sum(d.changed for d in diffs)
    lines.append(f"{changed} of {len(diffs)} values differ")
    return "\n".join(lines)
