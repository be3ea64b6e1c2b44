"""The readable form of a run's summary, for a person at a terminal."""

from __future__ import annotations

from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human(n: int | float) -> str:
    """Bytes in binary units with three significant figures (``1.50 GiB``)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _line(section: dict[str, Any]) -> str:
    """The scalar fields of a section on one line, byte counts in binary units."""
    return "  ".join(f"{k} {human(v) if '_bytes' in k and isinstance(v, int) else v}"
                     for k, v in section.items() if not isinstance(v, (dict, list)))


def format_summary(s: dict[str, Any]) -> str:
    """Sections in a fixed order; byte counts in binary units, other figures as they are."""
    mem = s["memory"]
    # a boot names its image (its workload, if any, is part of the image); a replay its trace
    head = (f"image        {s['image']}" if s.get("image")
            else f"trace        {s.get('trace', '-')}")
    lines = [
        head,
        f"events       {s['events']}   simulated time {s['time_ns'] / 1e9:.3f} s",
        f"memory       total {human(mem['total_bytes'])}  free {human(mem['free_bytes'])}  "
        f"used {human(mem['used_bytes'])}  peak used {human(mem['peak_used_bytes'])}",
        f"             page tables {human(mem['page_table_bytes'])}  free runs "
        f"{mem['free_runs']}  largest free run {human(mem['largest_free_run_bytes'])}",
        "  by category: " + ", ".join(
            f"{k} {human(v)}" for k, v in mem["categories"].items() if v),
    ]
    for name, section in s.items():
        if name in ("trace", "image", "events", "time_ns", "memory", "config", "app_errors",
                    "oom"):
            continue
        if isinstance(section, dict):
            flat = _line(section)
            if flat:
                lines.append(f"{name:<12} {flat}")
            else:
                lines.append(name)
            for sub, value in section.items():
                if isinstance(value, dict) and _line(value):
                    lines.append(f"  {sub}: {_line(value)}")
    errs = s["app_errors"]
    if errs["total"]:
        lines.append(f"app errors   {errs['total']}: " + ", ".join(
            f"{k} {v}" for k, v in errs["by_kind"].items()))
        for ex in errs["examples"]:
            lines.append(f"  line {ex['line']}: {ex['op']}: {ex['message']}")
    if s.get("oom"):
        oom = s["oom"]
        lines.append(f"OUT OF MEMORY at line {oom['line']} ({oom['op']}): asked "
                     f"{human(oom['requested_bytes'])}, free {human(oom['free_bytes'])}, "
                     f"largest run {human(oom['largest_free_run_bytes'])}")
    return "\n".join(lines)
