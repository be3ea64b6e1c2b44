"""One self-contained HTML page of a run: its summary as tables and its plots inline.

Meant to be mailed or attached to an issue, so nothing is fetched: styles are inline and the
plots are inline SVG (text stays text, so the page is searchable). The same summary and
timeline give the same bytes.
"""

from __future__ import annotations

import html
from typing import Any

from mmsim.summary_text import human
from mmsim.timeline import TimelineData

__all__ = ["render_report"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em}
th,td{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
.bar{display:inline-block;height:.7em;background:#4c78a8}
.oom{background:#fde0dc;padding:.6em;border-left:4px solid #c0392b}
figure{margin:1em 0}svg{max-width:100%;height:auto}.muted{color:#777}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _value(key: str, v: Any) -> str:
    """A cell: bytes in binary units (exact count on hover), floats to 4 digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if key.endswith("_bytes") and isinstance(v, (int, float)):
        return f'<span title="{v} bytes">{_e(human(v))}</span>'
    if isinstance(v, float):
        return _e(f"{v:.4g}")
    return _e(v)


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_value(k, v)}</td></tr>"
                   for k, v in items.items())
    return f"<table>{rows}</table>"


def _matrix(rows: dict[str, dict[str, Any]]) -> str:
    """A dict of dicts (malloc classes, shrinkers) as one table, a column per inner key."""
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols and not isinstance(r[c], (dict, list))]
    head = "<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"
    body = "".join("<tr><td>" + _e(name) + "</td>" + "".join(
        f"<td>{_value(c, r.get(c))}</td>" for c in cols) + "</tr>" for name, r in rows.items())
    return f"<table>{head}{body}</table>"


def _section(name: str, section: dict[str, Any]) -> str:
    """Scalars as one table; flat sub-dicts with the same keys (the shrinkers) as one matrix;
    dicts of dicts (malloc classes) as a matrix each; other sub-dicts as their own table."""
    parts = [f"<h2>{_e(name)}</h2>"]
    scalars = {k: v for k, v in section.items() if not isinstance(v, (dict, list))}
    if scalars:
        parts.append(_kv_table(scalars))
    flat = {k: v for k, v in section.items() if isinstance(v, dict) and v
            and not any(isinstance(x, (dict, list)) for x in v.values())}
    groups: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for k, v in flat.items():
        groups.setdefault(tuple(v), {})[k] = v
    for key, value in section.items():
        if not isinstance(value, dict) or not value:
            continue
        group = groups.get(tuple(value)) if key in flat else None
        if group is not None and len(group) > 1:
            if next(iter(group)) == key:
                parts.append(_matrix(group))
            continue
        parts.append(f"<h3>{_e(name)}.{_e(key)}</h3>")
        if all(isinstance(x, dict) for x in value.values()):
            parts.append(_matrix(value))
        else:
            parts.append(_kv_table({k: v for k, v in value.items()
                                    if not isinstance(v, (dict, list))}))
    return "".join(parts)


def _categories(mem: dict[str, Any]) -> str:
    total = mem["total_bytes"] or 1
    rows = [*mem["categories"].items(), ("free", mem["free_bytes"])]
    body = "".join(
        f"<tr><td>{_e(k)}</td><td>{_value('_bytes', v)}</td><td>{100 * v / total:.1f}%</td>"
        f'<td style="text-align:left"><span class="bar" style="width:{300 * v / total:.0f}px">'
        f"</span></td></tr>" for k, v in rows)
    return ("<table><tr><th>category</th><th>bytes</th><th>of total</th><th></th></tr>"
            f"{body}</table>")


def _events_table(data: TimelineData) -> str:
    counts: dict[str, int] = {}
    first: dict[str, float] = {}
    for t, events in zip(data.time, data.events):
        for k, v in events.items():
            counts[k] = counts.get(k, 0) + v
            first.setdefault(k, t)
    if not counts:
        return "<p class=muted>No kernel events (no memory pressure) during the run.</p>"
    body = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td><td>{first[k]:.6f}</td></tr>"
                   for k, v in counts.items())
    return ("<table><tr><th>event</th><th>count</th><th>first seen at (s)</th></tr>"
            f"{body}</table>")


def render_report(summary: dict[str, Any], timeline: TimelineData | None = None,
                  title: str | None = None) -> str:
    """The HTML page of a run's summary (and its timeline, if there is one)."""
    from mmsim.plot import figure_svg, plot_categories, plot_timeline

    trace = summary.get("trace") or "run"
    title = title or f"mmsim report: {trace}"
    mem = summary["memory"]
    cfg = summary.get("config") or {}
    out = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>"]
    oom = summary.get("oom")
    if oom:
        out.append(f"<p class=oom><b>Out of memory</b> at line {_e(oom.get('line'))} "
                   f"({_e(oom.get('op'))}): {_e(oom.get('reason'))}; asked "
                   f"{_value('_bytes', oom.get('requested_bytes'))}, free "
                   f"{_value('_bytes', oom.get('free_bytes'))}.</p>")
    overview = {"trace": trace, "operations": summary.get("events"),
                "simulated time (s)": (summary.get("time_ns") or 0) / 1e9,
                **{f"config.{k}": v for k, v in cfg.items()},
                "application errors": (summary.get("app_errors") or {}).get("total", 0)}
    out += ["<h2>Run</h2>", _kv_table(overview), "<h2>Memory</h2>",
            _kv_table({k: v for k, v in mem.items() if not isinstance(v, dict)}),
            "<h3>By category at the end</h3>", _categories(mem)]
    if timeline is not None and len(timeline):
        out += ["<h2>Memory over time</h2>",
                f"<figure>{figure_svg(plot_timeline(timeline, summary=summary))}</figure>",
                "<h3>Kernel events</h3>", _events_table(timeline)]
    out.append(f"<figure>{figure_svg(plot_categories(summary))}</figure>")
    errors = summary.get("app_errors") or {}
    if errors.get("total"):
        out += ["<h2>Application errors</h2>", _kv_table(errors.get("by_kind") or {})]
        ex = errors.get("examples") or []
        if ex:
            out.append(_matrix({f"line {e.get('line')}": e for e in ex}))
    if oom:
        out.append(_section("oom", oom))
    skip = {"trace", "events", "time_ns", "config", "memory", "app_errors", "oom"}
    for name, section in summary.items():
        if name not in skip and isinstance(section, dict):
            out.append(_section(name, section))
    out.append("<p class=muted>Made by mmsim report.</p></body></html>\n")
    return "".join(out)
