"""One self-contained HTML page of a run: its summary as tables and its plots inline.

Meant to be mailed or attached to an issue, so nothing is fetched: styles are inline and the
plots are inline SVG (text stays text, so the page is searchable). The same summary and
timeline give the same bytes.
"""

from __future__ import annotations

import html
import os
from typing import Any

from mmsim.summary_text import format_summary, human, human_time, is_active, value_text
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
nav ul{columns:3;font-size:.9em}pre.headline{background:#f7f7f7;padding:.6em;overflow-x:auto}
details summary{cursor:pointer}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _value(key: str, v: Any) -> str:
    """A cell in the readable summary's units (summary_text.value_text: %, s/ms, /s, binary
    units), bytes with their exact count on hover; zero as 0, None as -."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if "_bytes" in key and isinstance(v, (int, float)):
        return f'<span title="{v} bytes">{_e(human(v))}</span>'
    if isinstance(v, (dict, list)):
        return _e(v)
    text = value_text(key, v)
    return _e(text if text is not None else v)


def _kv_table(items: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_value(k, v)}</td></tr>"
                   for k, v in items.items())
    return f"<table>{rows}</table>"


def _matrix(rows: dict[str, dict[str, Any]]) -> str:
    """A dict of dicts (malloc classes, shrinkers) as one table, a column per inner key; rows
    whose every figure is zero are left out, and said to be."""
    cols: list[str] = []
    for r in rows.values():
        cols += [c for c in r if c not in cols and not isinstance(r[c], (dict, list))]
    shown = {name: r for name, r in rows.items()
             if any(r.get(c) not in (0, None, False) for c in cols)}
    head = "<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in cols) + "</tr>"
    body = "".join("<tr><td>" + _e(name) + "</td>" + "".join(
        f"<td>{_value(c, r.get(c))}</td>" for c in cols) + "</tr>" for name, r in shown.items())
    left = len(rows) - len(shown)
    note = f"<p class=muted>{left} rows of zeros left out.</p>" if left else ""
    return (f"<table>{head}{body}</table>" if shown else "") + note


def _section(name: str, section: dict[str, Any]) -> str:
    """Scalars as one table; flat sub-dicts with the same keys (the shrinkers) as one matrix;
    dicts of dicts (malloc classes) as a matrix each; other sub-dicts as their own table. A
    subsystem that did nothing is folded away (its figures one click down)."""
    parts = []
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
        if all(isinstance(x, dict) for x in value.values()):
            parts.append(f"<h3>{_e(name)}.{_e(key)}</h3>" + _matrix(value))
        elif all(isinstance(x, list) for x in value.values()):
            continue  # call sites: their own section
        else:
            parts.append(f"<h3>{_e(name)}.{_e(key)}</h3>" + _kv_table(
                {k: v for k, v in value.items() if not isinstance(v, (dict, list))}))
    body = "".join(parts)
    if not is_active(name, section):
        return (f'<h2 id="{_e(name)}">{_e(name)}</h2><details><summary class=muted>idle in '
                f"this run (its figures)</summary>{body}</details>")
    return f'<h2 id="{_e(name)}">{_e(name)}</h2>{body}'


def _categories(mem: dict[str, Any], peak: dict[str, Any]) -> str:
    """Each category now and at the peak (with bars of the total), free memory last."""
    total = mem["total_bytes"] or 1
    now = dict(mem["categories"])
    then = dict(peak.get("categories") or {})
    names = sorted({k for k, v in now.items() if v} | {k for k, v in then.items() if v},
                   key=lambda k: (-max(now.get(k, 0), then.get(k, 0)), k))
    rows = [(k, now.get(k, 0), then.get(k, 0)) for k in names]
    used_then = peak.get("used_bytes")
    rows.append(("free", mem["free_bytes"], total - used_then if used_then is not None else 0))

    def bar(v: int) -> str:
        return f'<span class="bar" style="width:{200 * v / total:.0f}px"></span>'

    body = "".join(
        f"<tr><td>{_e(k)}</td><td>{_value('_bytes', a)}</td><td>{100 * a / total:.1f}%</td>"
        f'<td style="text-align:left">{bar(a)}</td><td>{_value("_bytes", b)}</td>'
        f'<td style="text-align:left">{bar(b)}</td></tr>' for k, a, b in rows)
    return ("<table><tr><th>category</th><th>at the end</th><th>of total</th><th></th>"
            f"<th>at the peak</th><th></th></tr>{body}</table>")


def _sites_table(entries: list[dict[str, Any]], key: str = "site") -> str:
    if not entries:
        return "<p class=muted>none</p>"
    body = "".join(f"<tr><td>{_e(e[key])}</td><td>{_value('_bytes', e['bytes'])}</td>"
                   f"<td>{e['blocks']:,}</td></tr>" for e in entries[:10])
    return f"<table><tr><th>{key}</th><th>bytes</th><th>blocks</th></tr>{body}</table>"


def _call_sites(malloc: dict[str, Any], peak: dict[str, Any]) -> str:
    sites = malloc.get("sites") or {}
    funcs = malloc.get("functions") or {}
    parts = ['<h2 id="sites">Call sites</h2>']
    for title, entries, key in (
            ("Live when live bytes peaked", sites.get("at_peak"), "site"),
            ("Live at the end (leaks)", sites.get("at_end"), "site"),
            ("Allocated over the run", sites.get("allocated"), "site"),
            ("Allocated over the run, by function", funcs.get("allocated"), "function"),
            ("Live when used memory peaked", peak.get("sites"), "site")):
        parts.append(f"<h3>{_e(title)}</h3>{_sites_table(entries or [], key)}")
    return "".join(parts)


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


def _peak(peak: dict[str, Any]) -> str:
    when = {"peak_used_bytes": peak.get("peak_used_bytes"),
            "used_bytes after the call": peak.get("used_bytes"),
            "simulated time": human_time(peak.get("time_ns") or 0),
            "trace line": peak.get("line"), "operation": peak.get("op"),
            "event": peak.get("event")}
    return ('<h2 id="peak">The peak</h2><p>When used memory reached its peak, and after which '
            "call (massif's peak snapshot); its categories are in the memory table, beside the "
            "end's, and its call sites below.</p>" + _kv_table(when))


def render_report(summary: dict[str, Any], timeline: TimelineData | None = None,
                  title: str | None = None) -> str:
    """The HTML page of a run's summary (and its timeline, if there is one)."""
    from mmsim.plot import figure_svg, plot_categories, plot_timeline

    name = summary.get("image") or summary.get("trace") or "run"
    title = title or f"mmsim report: {os.path.basename(str(name)) or name}"
    mem = summary["memory"]
    cfg = summary.get("config") or {}
    peak = summary.get("peak") or {}
    toc: list[tuple[str, str]] = [("run", "Run"), ("memory", "Memory")]
    body: list[str] = []
    oom = summary.get("oom")
    if oom:
        body.append(f"<p class=oom><b>Out of memory</b> at line {_e(oom.get('line'))} "
                    f"({_e(oom.get('op'))}): {_e(oom.get('reason'))}; asked "
                    f"{_value('_bytes', oom.get('requested_bytes'))}, free "
                    f"{_value('_bytes', oom.get('free_bytes'))}.</p>")
    body.append("<pre class=headline>" + _e("\n".join(format_summary(summary).splitlines()[:6]))
                + "</pre>")
    overview = {("image" if summary.get("image") else "trace"): name,
                "operations": summary.get("events"),
                "simulated time": human_time(summary.get("time_ns") or 0),
                **{f"config.{k}": v for k, v in cfg.items()},
                "application errors": (summary.get("app_errors") or {}).get("total", 0)}
    body += ['<h2 id="run">Run</h2>', _kv_table(overview), '<h2 id="memory">Memory</h2>',
             _kv_table({k: v for k, v in mem.items() if not isinstance(v, dict)}),
             "<h3>By category, at the end and at the peak</h3>", _categories(mem, peak)]
    if peak:
        toc.append(("peak", "The peak"))
        body.append(_peak(peak))
    if timeline is not None and len(timeline):
        toc.append(("over-time", "Memory over time"))
        body += ['<h2 id="over-time">Memory over time</h2>',
                 f"<figure>{figure_svg(plot_timeline(timeline, summary=summary))}</figure>",
                 "<h3>Kernel events</h3>", _events_table(timeline)]
    body.append(f"<figure>{figure_svg(plot_categories(summary))}</figure>")
    malloc = summary.get("malloc")
    if isinstance(malloc, dict) and any((malloc.get("sites") or {}).values()):
        toc.append(("sites", "Call sites"))
        body.append(_call_sites(malloc, peak))
    errors = summary.get("app_errors") or {}
    if errors.get("total"):
        toc.append(("errors", "Application errors"))
        body += ['<h2 id="errors">Application errors</h2>', _kv_table(errors.get("by_kind") or {})]
        ex = errors.get("examples") or []
        if ex:
            body.append(_matrix({f"line {e.get('line')}": e for e in ex}))
    if oom:
        toc.append(("oom", "Out of memory"))
        body.append(_section("oom", oom))
    skip = {"trace", "image", "events", "time_ns", "config", "memory", "app_errors", "oom",
            "peak"}
    for key, section in summary.items():
        if key not in skip and isinstance(section, dict):
            toc.append((key, key if is_active(key, section) else f"{key} (idle)"))
            body.append(_section(key, section))
    nav = "<nav><b>Contents</b><ul>" + "".join(
        f'<li><a href="#{_e(anchor)}">{_e(text)}</a></li>' for anchor, text in toc) + "</ul></nav>"
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1>{nav}{''.join(body)}"
            "<p class=muted>Made by mmsim report.</p></body></html>\n")
