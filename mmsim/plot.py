"""Plots of a run: memory by category over time with the kernel's events, the ARC, the balloon.

Made with matplotlib's object API (``Figure``, no pyplot): no display, no global state, and the
Agg renderer for PNG. Every function returns the Figure so callers (and tests) can inspect the
axes; :func:`save_figure` writes it byte-for-byte the same for the same data.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

from mmsim.summary_text import human
from mmsim.timeline_file import TimelineData, TimelineError, check_plot_path

__all__ = [
    "CATEGORY_COLORS",
    "EVENT_STYLES",
    "XAxis",
    "byte_unit",
    "figure_svg",
    "plot_categories",
    "plot_timeline",
    "save_figure",
    "x_axis",
]

MIB = 1 << 20
GIB = 1 << 30

#: how each kind of kernel event is marked; other kinds get the ``None`` style
EVENT_STYLES: dict[str | None, dict[str, Any]] = {
    "reclaim": {"color": "tab:orange", "linestyle": ":", "linewidth": 0.8},
    "reclaim_hard": {"color": "tab:red", "linestyle": "--", "linewidth": 1.0},
    "oom": {"color": "black", "linestyle": "-", "linewidth": 2.0},
    # the balloons: what they did, not only that they moved (green gives memory to the guest)
    "balloon:inflate": {"color": "tab:brown", "linestyle": "-", "linewidth": 1.2},
    "balloon:deflate": {"color": "tab:green", "linestyle": "-", "linewidth": 1.2},
    "balloon:move": {"color": "tab:gray", "linestyle": ":", "linewidth": 1.0},
    "virtio_balloon:inflate": {"color": "tab:pink", "linestyle": "--", "linewidth": 1.2},
    "virtio_balloon:deflate": {"color": "tab:olive", "linestyle": "--", "linewidth": 1.2},
    None: {"color": "tab:purple", "linestyle": "-.", "linewidth": 0.8},
}
#: categories that get their own panel as lines, besides being in the stack
_SPOTLIGHT = ("balloon", "jvm")
_FREE_COLOR = "#e8e8e8"
#: strong colours first, then their light twins: neighbours in the stack stay distinct
_COLORS = matplotlib.colormaps["tab20"].colors[0::2] + matplotlib.colormaps["tab20"].colors[1::2]
#: one colour per memory category, the same in every plot of every run (docs/summary.md's list;
#: the timeline's ``kernel`` is the memory outside the allocator), no two alike
_PALETTE = _COLORS + matplotlib.colormaps["tab20b"].colors[0::2]
CATEGORY_COLORS: dict[str, Any] = {
    name: _PALETTE[i] for i, name in enumerate((
        "anonymous", "malloc_pools", "arc", "jvm_heap", "file", "malloc_large", "page_cache",
        "balloon", "virtio_balloon", "malloc_pages", "l1_cache", "l2_cache", "page_tables",
        "arc_headers", "rofs_cache", "jvm_native", "zfs_threads", "zfs_hash_tables", "zfs",
        "kernel_heap", "percpu", "kernel_threads", "virtio_net", "app_main_stack",
        "page_bitmap", "user_shrinkers", "kernel"))}
_PEAK_COLOR = "tab:red"
#: the total is drawn (and the axis goes up to it) once this share of it is used
_TOTAL_SHOWN = 0.4
_SVG_RC = {"svg.hashsalt": "mmsim", "svg.fonttype": "none"}


def byte_unit(max_bytes: float) -> tuple[str, int]:
    """GiB from 2 GiB up, MiB below: axes stay in readable numbers."""
    return ("GiB", GIB) if max_bytes >= 2 * GIB else ("MiB", MIB)


@dataclass
class XAxis:
    """What the plot's x-axis shows: ``x`` per row, its label, and a top axis of the other
    measure of progress (``top_ticks``: positions and labels) when that one says more."""

    x: list[float]
    label: str
    kind: str  # "time", "operations" or "steps"
    top_label: str = ""
    top_ticks: list[tuple[float, str]] = field(default_factory=list)


#: rows that may share one x value, with something changing, before time is not the x-axis
_HIDDEN_SHARE = 1 / 200
_TOP_TICKS = 7


def _time_unit(end: float) -> tuple[str, float]:
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("µs", 1e6)):
        if end * scale >= 1 or unit == "µs":
            return unit, scale
    raise AssertionError("unreachable")


def _changed(data: TimelineData, i: int) -> bool:
    """Row i shows something row i-1 did not (memory moved, or events happened)."""
    return bool(data.events[i]) or data.free[i] != data.free[i - 1] or any(
        v[i] != v[i - 1] for v in data.categories.values())


def _hidden(data: TimelineData, values: Sequence[float]) -> int:
    """Rows that would be drawn at the x value of the row before although they differ."""
    return sum(1 for i in range(1, len(values))
               if values[i] <= values[i - 1] and _changed(data, i))


def _ticks(x: Sequence[float], labels: Sequence[str]) -> list[tuple[float, str]]:
    """Up to _TOP_TICKS positions evenly over x, each labelled as its row is."""
    lo, hi = x[0], x[-1]
    out: list[tuple[float, str]] = []
    for k in range(_TOP_TICKS):
        target = lo + (hi - lo) * k / (_TOP_TICKS - 1)
        i = next((j for j, v in enumerate(x) if v >= target), len(x) - 1)
        if not out or (x[i] > out[-1][0] and labels[i] != out[-1][1]):
            out.append((x[i], labels[i]))  # a label once: where the clock stood still
    return out


def _spread(ops: list[float]) -> list[float]:
    """Event numbers, with a row that shares its number with the row before (the operation
    that ran out of memory is not counted as applied) half a sampling interval later."""
    steps = sorted(b - a for a, b in zip(ops, ops[1:]) if b > a)
    half = steps[len(steps) // 2] / 2 if steps else 0.5
    out = ops[:1]
    for v in ops[1:]:
        out.append(max(v, out[-1] + half) if v <= out[-1] else v)
    return out


def x_axis(data: TimelineData) -> XAxis:
    """The x-axis that shows what happened: simulated time when the rows are spread in time;
    else operations applied (work that takes no simulated time: a burst of faults, reclaim
    passes, an OOM) with simulated time on top; else, when neither spreads the rows (a JVM's
    ticks at one operation, then operations at one time), the samples in order."""
    n = len(data)
    end = max(data.time, default=0.0)
    unit, scale = _time_unit(end)
    times = [t * scale for t in data.time]
    time_label = f"simulated time ({unit})"
    time_names = [f"{t:.4g}" for t in times]
    ops = [float(e) for e in data.event]
    op_names = [str(e) for e in data.event]
    hidden_t = _hidden(data, times) if end > 0 else n
    if hidden_t <= n * _HIDDEN_SHARE:
        moved = data.event[-1] > data.event[0]
        return XAxis(times, time_label, "time", "operations applied" if moved else "",
                     _ticks(times, op_names) if moved else [])
    if _hidden(data, ops) <= max(1.0, n * _HIDDEN_SHARE):  # e.g. the row of an OOM
        ops = _spread(ops)
        top = (time_label, _ticks(ops, time_names)) if end > 0 else ("", [])
        return XAxis(ops, "operations applied", "operations", *top)
    steps = [float(i) for i in range(n)]
    return XAxis(steps, "samples in run order (labels: operations applied)", "steps", time_label if end > 0 else "",
                 _ticks(steps, time_names) if end > 0 else [])


def _subtitle(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    cfg = summary.get("config") or {}
    parts = []
    ram = cfg.get("memory_bytes") or cfg.get("ram_bytes")
    if ram:
        parts.append(f"{human(ram)} RAM")
    if cfg.get("cpus"):
        parts.append(f"{cfg['cpus']} CPUs")
    if "hugepages" in cfg:
        parts.append("huge pages " + ("on" if cfg["hugepages"] else "off"))
    arc = summary.get("arc")
    if isinstance(arc, dict) and arc.get("policy"):
        parts.append(f"cache policy {arc['policy']}")
    parts.append(f"{summary.get('events', 0)} operations")
    return ", ".join(parts)


def category_color(name: str) -> Any:
    """The category's colour: fixed for the known ones, from the name's checksum otherwise
    (never from its place in this run's list, which changes from run to run)."""
    color = CATEGORY_COLORS.get(name)
    return color if color is not None else _PALETTE[zlib.crc32(name.encode()) % len(_PALETTE)]


def _event_marks(data: TimelineData) -> dict[str, list[int]]:
    """Row indexes per event kind (shrinker yields go with their reclaim pass)."""
    marks: dict[str, list[int]] = {}
    for i, events in enumerate(data.events):
        for name in events:
            if not name.startswith("shrink:"):
                marks.setdefault(name, []).append(i)
    return marks


def _mark_events(ax: Axes, x: Sequence[float], marks: dict[str, list[int]], data: TimelineData,
                 label: bool) -> None:
    for name, rows in marks.items():
        style = EVENT_STYLES.get(name, EVENT_STYLES[None])
        count = sum(data.events[i][name] for i in rows)
        ax.vlines([x[i] for i in rows], 0, 1, transform=ax.get_xaxis_transform(),
                  label=f"{name} ({count})" if label else None, zorder=3, **style)


def plot_timeline(data: TimelineData, summary: dict[str, Any] | None = None,
                  title: str | None = None) -> Figure:
    """Memory by category stacked over time (up to the total when it is close; free memory is
    the gap), kernel events marked; then the ARC's size, target and hit ratio if it was used;
    then the balloon and JVM heap if present."""
    if not len(data):
        raise TimelineError(f"{data.source or 'timeline'}: no rows to plot")
    axis = x_axis(data)
    x = axis.x
    marks = _event_marks(data)
    cats = [n for n, v in data.categories.items() if any(v)]
    arc = _arc_used(data)
    spot = [n for n in cats if any(word in n for word in _SPOTLIGHT)]
    panels = 1 + arc + bool(spot)
    fig = Figure(figsize=(11, 1.2 + 3.6 * panels), dpi=100, layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title or f"mmsim: {os.path.basename(data.source) or 'run'}", fontsize=13)
    sub = _subtitle(summary)
    if sub:
        axes[0].set_title(f"Memory by category - {sub}", fontsize=10)
    else:
        axes[0].set_title("Memory by category", fontsize=10)

    ax = axes[0]
    used = max(t - f for t, f in zip(data.total, data.free))
    total = max(data.total)
    show_total = used >= total * _TOTAL_SHOWN
    uname, unit = byte_unit(total if show_total else used)
    # a sample holds from its x to the next one's: changes are instant, so steps, not ramps
    ax.stackplot(x, [[b / unit for b in data.categories[n]] for n in cats], labels=cats,
                 colors=[category_color(n) for n in cats], linewidth=0, step="post")
    if show_total:  # free memory is the gap up to this line
        ax.plot(x, [t / unit for t in data.total], color="black", linewidth=1, label="total",
                drawstyle="steps-post")
        ax.set_ylim(0, total / unit * 1.02)
        ax.set_ylabel(f"memory ({uname})")
    else:
        ax.set_ylim(0, max(used, 1) / unit * 1.1)
        ax.set_ylabel(f"memory ({uname}) of {human(total)}")
    ax.margins(x=0)
    _mark_events(ax, x, marks, data, label=True)
    _mark_peak(ax, x, data, unit)
    if "oom" in marks:
        ax.annotate("out of memory", (x[marks["oom"][0]], 1), xycoords=("data", "axes fraction"),
                    xytext=(-4, -4), textcoords="offset points", ha="right", va="top",
                    fontsize="small", fontweight="bold")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize="small", title="top of the stack first", title_fontsize="small")
    ax.grid(axis="y", alpha=0.3)

    n = 1
    if arc:
        _plot_arc(axes[n], x, data, marks)
        n += 1
    if spot:
        ax = axes[n]
        sname, sunit = byte_unit(max(max(data.categories[c]) for c in spot))
        for c in spot:
            ax.plot(x, [b / sunit for b in data.categories[c]], label=c, linewidth=1.5,
                    color=category_color(c), drawstyle="steps-post")
        ax.set_title("Balloon and JVM heap", fontsize=10)
        ax.set_ylabel(f"memory ({sname})")
        ax.set_ylim(bottom=0)
        _mark_events(ax, x, marks, data, label=False)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xlabel(axis.label)
    if axis.kind == "steps":  # the samples in order, labelled with the operations applied
        events = data.event
        axes[-1].xaxis.set_major_formatter(FuncFormatter(
            lambda v, _: str(events[int(v)]) if v == int(v) and 0 <= v < len(events) else ""))
    if axis.top_ticks:
        top = axes[0].secondary_xaxis("top")
        top.set_xticks([p for p, _ in axis.top_ticks], [t for _, t in axis.top_ticks])
        top.tick_params(labelsize="small")
        top.set_xlabel(axis.top_label, fontsize="small")
    return fig


def peak_row(data: TimelineData) -> int:
    """The first row where used memory (total - free) is at its most."""
    used = [t - f for t, f in zip(data.total, data.free)]
    return used.index(max(used))


def _mark_peak(ax: Axes, x: Sequence[float], data: TimelineData, unit: int) -> None:
    """A marker on top of the stack where it is highest, labelled with the summary's peak
    used (the allocator's memory: the kernel image outside it is not counted)."""
    i = peak_row(data)
    top = data.total[i] - data.free[i]
    used = human(top - (data.categories.get("kernel") or [0] * len(data))[i])
    ax.plot([x[i]], [top / unit], marker="v", color=_PEAK_COLOR, markersize=8, linestyle="",
            label=f"peak {used} used", zorder=4)
    ax.annotate(f"peak {used}", (x[i], top / unit), xytext=(0, 7),
                textcoords="offset points", ha="center", fontsize="small", color=_PEAK_COLOR)


def _arc_used(data: TimelineData) -> bool:
    size = data.extra.get("arc_size")
    if not size:
        return False
    accesses = [(h or 0) + (m or 0) for h, m in zip(data.extra.get("arc_hits") or [],
                                                      data.extra.get("arc_misses") or [])]
    return any(accesses)  # an ARC no one read from or wrote to did nothing worth a panel


def interval_hit_ratio(hits: Sequence[float | None], misses: Sequence[float | None]
                       ) -> list[float]:
    """Hits / accesses between consecutive rows (NaN where there were none)."""
    out = []
    ph = pm = 0.0
    for h, m in zip(hits, misses):
        h, m = h or 0.0, m or 0.0
        dh, dm = h - ph, m - pm
        out.append(dh / (dh + dm) if dh + dm > 0 else math.nan)
        ph, pm = h, m
    return out


def _plot_arc(ax: Axes, x: Sequence[float], data: TimelineData,
              marks: dict[str, list[int]]) -> None:
    ex = data.extra
    values = [v or 0 for c in ("arc_size", "arc_c", "arc_p") for v in ex.get(c) or []]
    uname, unit = byte_unit(max(values, default=0))
    for col, label, style, color in (("arc_size", "size", "-", "tab:blue"),
                                     ("arc_c", "target c", "--", "tab:orange"),
                                     ("arc_p", "MRU target p", ":", "tab:purple")):
        if col in ex:
            ax.plot(x, [(v or 0) / unit for v in ex[col]], style, label=label, linewidth=1.5,
                    color=color, drawstyle="steps-post")
    ax.set_ylabel(f"ARC ({uname})")
    ax.set_ylim(bottom=0)
    ax.set_title("ARC: size, target and hit ratio", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    _mark_events(ax, x, marks, data, label=False)
    lines, labels = ax.get_legend_handles_labels()
    if "arc_hits" in ex and "arc_misses" in ex:
        ratio = ax.twinx()
        ratio.plot(x, interval_hit_ratio(ex["arc_hits"], ex["arc_misses"]), color="tab:green",
                   linewidth=1, label="hit ratio (per interval)", drawstyle="steps-pre")
        if "arc_hit_ratio" in ex:
            ratio.plot(x, [math.nan if v is None else v for v in ex["arc_hit_ratio"]],
                       color="tab:green", linestyle="--", linewidth=1,
                       label="hit ratio (cumulative)")
        ratio.set_ylim(0, 1.05)
        ratio.yaxis.set_major_formatter(PercentFormatter(1.0))
        ratio.set_ylabel("hit ratio")
        more, more_labels = ratio.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    ax.legend(lines, labels, loc="upper left", bbox_to_anchor=(1.08, 1), fontsize="small")


def plot_categories(summary: dict[str, Any], title: str | None = None) -> Figure:
    """The run's end state as horizontal bars: each category and free memory."""
    mem = summary["memory"]
    cats = {k: v for k, v in mem["categories"].items() if v}
    cats["free"] = mem["free_bytes"]
    uname, unit = byte_unit(mem["total_bytes"])
    fig = Figure(figsize=(9, 1.2 + 0.35 * len(cats)), dpi=100, layout="constrained")
    ax = fig.subplots()
    names = list(cats)[::-1]
    bars = ax.barh(names, [cats[n] / unit for n in names],
                   color=[_FREE_COLOR if n == "free" else category_color(n) for n in names])
    ax.bar_label(bars, labels=[human(cats[n]) for n in names], padding=3, fontsize="small")
    ax.set_xlabel(f"memory ({uname}) of {human(mem['total_bytes'])}")
    ax.set_xlim(0, mem["total_bytes"] / unit * 1.15)
    ax.set_title(title or "Memory at the end of the run", fontsize=11)
    return fig


#: what makes each format's file the same bytes for the same figure (no dates, no versions)
_METADATA: dict[str, dict[str, Any]] = {"svg": {"Date": None}, "png": {"Software": None},
                                        "pdf": {"CreationDate": None, "Producer": None,
                                                "Creator": None}}


def save_figure(fig: Figure, path: str) -> None:
    """PNG, SVG or PDF by the extension, without dates or random ids in the file."""
    fmt = check_plot_path(path)
    try:
        with matplotlib.rc_context(_SVG_RC):
            fig.savefig(path, format=fmt, metadata=_METADATA[fmt])
    except OSError as e:
        raise TimelineError(f"{path}: cannot write ({e.strerror})") from None


def figure_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element to put inline in HTML."""
    buf = io.StringIO()
    with matplotlib.rc_context(_SVG_RC):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]
