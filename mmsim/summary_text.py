"""The readable form of a run's summary, for a person at a terminal.

A headline first (what was run, the peak and when, the out-of-memory and why, the hit ratio,
application errors), then one section per subsystem that did something, its figures in two
aligned columns with human units: bytes in KiB/MiB/GiB, times in s/ms/µs, ratios as %, rates
per second. Zeros and idle subsystems are left out (``--json`` keeps every figure). Every line
fits in :data:`WIDTH` columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["WIDTH", "format_summary", "human", "human_time", "value_text"]

WIDTH = 100
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
_CELL = 42  # two cells a line: "  label   value" each
_TOP = 10  # call sites shown per list


def human(n: int | float) -> str:
    """Bytes in binary units with three significant figures (``1.50 GiB``)."""
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_time(ns: int | float) -> str:
    """Simulated nanoseconds in the largest unit that keeps them above 1 (``1.250 s``)."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3f} {unit}".replace(".000 ", " ")
    return f"{int(ns)} ns" if ns else "0 s"


def value_text(key: str, value: Any) -> str | None:
    """One figure as a person reads it, its unit taken from the key's name (docs/summary.md's
    conventions); None for what is not shown (None, zero, False, containers)."""
    if value is None or isinstance(value, (dict, list)) or value is False or value == 0:
        return None
    if value is True:
        return "yes"
    if isinstance(value, str):
        return value
    if key.endswith("_bytes_per_s"):
        return f"{human(value)}/s"
    if key.endswith("_per_s"):
        return f"{value:,.0f}/s"
    if "_bytes" in key or key == "bytes":
        return human(value)
    if key.endswith("_ns"):
        return human_time(value)
    if key.endswith("_ms"):
        return human_time(value * 1e6)
    if key.endswith(("ratio", "utilization")):  # hit_ratio, peak_utilization (not "operations")
        return f"{100 * value:.1f} %"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}"


def _label(key: str) -> str:
    """A key as words, less a unit suffix its value shows (``busy_ns``: ``busy``)."""
    for suffix in ("_bytes_per_s", "_per_s", "_ns", "_ms"):
        if key.endswith(suffix) and key != suffix[1:]:
            key = key[: -len(suffix)]
            break
    return key.replace("_", " ")


def _cells(pairs: list[tuple[str, str]], indent: int = 2) -> list[str]:
    """Label/value pairs two to a line, labels left and values right in each cell."""
    cells = []
    for label, text in pairs:
        width = max(_CELL - indent - len(label) - 2, len(text))
        cells.append(f"{label}  {text:>{width}}")
    lines = []
    for i in range(0, len(cells), 2):
        row = cells[i:i + 2]
        if len(row) == 2 and indent + len(row[0]) + 4 + len(row[1]) > WIDTH:
            lines += [" " * indent + row[0], " " * indent + row[1]]
        else:
            lines.append(" " * indent + "    ".join(row))
    return [_fit(line) for line in lines]


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def _shorten(text: str, width: int) -> str:
    """The end of a long site (its function and address say most), with … before it."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def _flat(section: dict[str, Any], indent: int = 2) -> list[str]:
    """A section's scalar figures (shown ones only), then its sub-dictionaries of scalars."""
    pairs = [(_label(k), t) for k, v in section.items() if (t := value_text(k, v)) is not None]
    lines = _cells(pairs, indent)
    for key, sub in section.items():
        if isinstance(sub, dict) and sub and all(not isinstance(v, (dict, list))
                                                 for v in sub.values()):
            inner = [(_label(k), t) for k, v in sub.items()
                     if (t := value_text(k, v)) is not None]
            if inner:
                lines.append(" " * indent + _label(key))
                lines += _cells(inner, indent + 2)
    return lines


def _sum(d: dict[str, Any], *keys: str) -> int:
    return sum(int(d.get(k) or 0) for k in keys)


# What makes a subsystem's section worth reading: it did something in this run.
_ACTIVE: dict[str, Callable[[dict[str, Any]], bool]] = {
    "shrinker": lambda s: any(v.get("calls") for k, v in s.items()
                              if k != "reclaimer" and isinstance(v, dict))
    or _sum(s.get("reclaimer", {}), "wakes", "passes", "waits") > 0,
    "mmap": lambda s: _sum(s, "vmas", "mapped_bytes", "faults", "segv", "sigbus") > 0,
    "malloc": lambda s: sum((s.get("calls") or {}).values()) > 0,
    "arc": lambda s: _sum(s, "hits", "misses", "size_bytes", "written_bytes") > 0,
    "rofs": lambda s: _sum(s, "hits", "misses", "files") > 0,
    "disk": lambda s: _sum(s, "reads", "writes") > 0,
    "balloon": lambda s: bool(s.get("enabled")) or _sum(s, "inflations", "deflations") > 0,
    "jvm": lambda s: s.get("heap_max_bytes") is not None,
    "virtio_balloon": lambda s: _sum(s, "target_pages", "inflations", "deflations") > 0,
}
_NOT_SECTIONS = {"trace", "image", "events", "time_ns", "memory", "config", "app_errors", "oom",
                 "peak"}


def is_active(name: str, section: Any) -> bool:
    """True if the summary's section ``name`` shows the subsystem did something."""
    if not isinstance(section, dict):
        return section not in (None, False, 0, "")
    test = _ACTIVE.get(name)
    if test is not None:
        return test(section)
    return any(value_text(k, v) for k, v in section.items()) or any(
        isinstance(v, dict) and is_active(k, v) for k, v in section.items())


def _headline(s: dict[str, Any]) -> list[str]:
    mem, cfg = s["memory"], s.get("config") or {}
    what = f"image {s['image']}" if s.get("image") else f"trace {s.get('trace', '-')}"
    guest = (f"a {human(cfg['memory_bytes'])} guest with {cfg['cpus']} CPUs"
             if cfg.get("memory_bytes") else "")
    lines = [_fit(f"{what}: {s['events']:,} events, {human_time(s['time_ns'])} simulated"
                  + (f", {guest}" if guest else ""))]
    peak = s.get("peak") or {}
    when = ""
    if peak.get("op"):
        when = (f" at {human_time(peak['time_ns'])} (line {peak['line']}, {peak['op']})"
                if peak.get("line") else " at boot")
    line = f"  peak      {human(mem['peak_used_bytes'])} used{when}"
    held = sorted((peak.get("categories") or {}).items(), key=lambda kv: -kv[1])[:3]
    for n, (k, v) in enumerate(held):  # its biggest holders, as many as fit whole
        more = f"{': ' if n == 0 else ', '}{k} {human(v)}"
        if len(line) + len(more) > WIDTH:
            break
        line += more
    lines.append(_fit(line))
    lines.append(f"  now       {human(mem['used_bytes'])} used of {human(mem['total_bytes'])}")
    oom = s.get("oom")
    if oom:
        lines.append(_fit(f"  OOM       at line {oom['line']} ({oom['op']}): {oom['reason']}; "
                          f"asked {human(oom['requested_bytes'])}, free "
                          f"{human(oom['free_bytes'])}, largest run "
                          f"{human(oom['largest_free_run_bytes'])}"))
    else:
        lines.append("  OOM       none")
    for name in ("arc", "rofs"):
        cache = s.get(name)
        if isinstance(cache, dict) and _sum(cache, "hits", "misses"):
            n = _sum(cache, "hits", "misses")
            lines.append(f"  hit ratio {100 * cache['hits'] / n:.1f} % ({cache['hits']:,} of "
                         f"{n:,} lookups, {name})")
    errs = s.get("app_errors") or {}
    if errs.get("total"):
        kinds = ", ".join(f"{k} {v:,}" for k, v in errs["by_kind"].items())
        lines.append(_fit(f"  errors    {errs['total']:,} application errors: {kinds}"))
    else:
        lines.append("  errors    none")
    return lines


def _memory(s: dict[str, Any]) -> list[str]:
    mem = s["memory"]
    keys = ("total_bytes", "free_bytes", "used_bytes", "peak_used_bytes", "page_table_bytes",
            "largest_free_run_bytes", "free_runs")
    lines = ["memory"] + _cells([(_label(k), value_text(k, mem[k]) or "0") for k in keys
                                 if k in mem])
    now = mem.get("categories") or {}
    at_peak = (s.get("peak") or {}).get("categories") or {}
    names = sorted({k for k, v in now.items() if v} | {k for k, v in at_peak.items() if v},
                   key=lambda k: (-max(now.get(k, 0), at_peak.get(k, 0)), k))
    if names:
        lines.append(f"  {'by category':<24}{'now':>14}{'at the peak' if at_peak else '':>16}")
        for k in names:
            peak = human(at_peak.get(k, 0)) if at_peak else ""
            lines.append(f"    {k:<22}{human(now.get(k, 0)):>14}{peak:>16}")
    return lines


def _sites(title: str, entries: list[dict[str, Any]], key: str = "site") -> list[str]:
    if not entries:
        return []
    lines = [f"  {title}"]
    for e in entries[:_TOP]:
        lines.append(f"    {human(e['bytes']):>11} {e['blocks']:>8,}  "
                     f"{_shorten(str(e[key]), WIDTH - 29)}")
    return lines


def _malloc(section: dict[str, Any], peak: dict[str, Any]) -> list[str]:
    skip = {"sites", "functions", "classes"}
    lines = ["malloc"] + _flat({k: v for k, v in section.items() if k not in skip})
    sites = section.get("sites") or {}
    funcs = section.get("functions") or {}
    if any(sites.values()):
        lines.append(f"  {'call sites':<12}{'bytes':>11} {'blocks':>8}")
    lines += _sites("live when live bytes peaked", sites.get("at_peak") or [])
    lines += _sites("live at the end", sites.get("at_end") or [])
    lines += _sites("allocated over the run", sites.get("allocated") or [])
    lines += _sites("allocated over the run, by function", funcs.get("allocated") or [],
                    "function")
    lines += _sites("live when used memory peaked", peak.get("sites") or [])
    return lines


def format_summary(s: dict[str, Any]) -> str:
    """The headline, memory (now and at the peak), then each active subsystem's section."""
    lines = _headline(s) + [""] + _memory(s)
    idle = []
    for name, section in s.items():
        if name in _NOT_SECTIONS:
            continue
        if not is_active(name, section):
            idle.append(name)
            continue
        if name == "malloc" and isinstance(section, dict):
            lines += _malloc(section, s.get("peak") or {})
        elif isinstance(section, dict):
            lines += [name] + _flat(section)
        else:
            lines.append(_fit(f"{name}  {section}"))
    errs = s.get("app_errors") or {}
    if errs.get("total"):
        lines.append("application errors (the first ones)")
        lines += [_fit(f"  line {ex['line']}: {ex['op']}: {ex['message']}")
                  for ex in errs["examples"]]
    if idle:
        lines.append(_fit(f"(idle: {', '.join(idle)}; zeros left out; --json has every figure)"))
    # a trace's bytes that were not UTF-8 (a caller's file name) print as U+FFFD
    return "\n".join(lines).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
