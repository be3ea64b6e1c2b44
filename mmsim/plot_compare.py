"""Two runs' timelines on one figure (`mmsim compare A.json B.json --plot`).

Used memory of each run, then its biggest categories (one colour per category as in every
plot, run A solid, run B dashed), then the ARC's cumulative hit ratio if either run used it.
Both runs share the x-axis: simulated time when both spread their rows in time, else the
operations applied.
"""

from __future__ import annotations

import math
import os

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from mmsim.plot import byte_unit, category_color, peak_row, x_axis
from mmsim.summary_text import human
from mmsim.timeline_file import TimelineData, TimelineError

__all__ = ["default_timeline", "plot_overlay"]

_STYLES = ("-", "--")
_TOP_CATEGORIES = 6


def _used(data: TimelineData) -> list[int]:
    """Memory out of the page allocator's free runs: the summary's ``used`` (no kernel image)."""
    kernel = data.categories.get("kernel") or [0] * len(data)
    return [t - f - k for t, f, k in zip(data.total, data.free, kernel)]


def _axes_x(runs: list[TimelineData]) -> tuple[list[list[float]], str]:
    axes = [x_axis(d) for d in runs]
    if all(a.kind == "time" for a in axes):
        return [a.x for a in axes], axes[0].label
    return [[float(e) for e in d.event] for d in runs], "operations applied"


def plot_overlay(a: TimelineData, b: TimelineData, labels: tuple[str, str],
                 title: str | None = None) -> Figure:
    """The figure comparing run ``a`` with run ``b`` (``labels`` name them)."""
    runs = [a, b]
    for d in runs:
        if not len(d):
            raise TimelineError(f"{d.source or 'timeline'}: no rows to plot")
    xs, xlabel = _axes_x(runs)
    arc = any(any((h or 0) + (m or 0) for h, m in zip(d.extra.get("arc_hits") or [],
                                                       d.extra.get("arc_misses") or []))
              for d in runs)
    fig = Figure(figsize=(11, 1.2 + 3.4 * (2 + arc)), dpi=100, layout="constrained")
    axes = fig.subplots(2 + arc, 1, sharex=True, squeeze=False)[:, 0]
    fig.suptitle(title or f"mmsim: {labels[0]} vs {labels[1]}", fontsize=13)

    used = [_used(d) for d in runs]
    uname, unit = byte_unit(max(max(u) for u in used))
    ax = axes[0]
    for d, x, u, label, style in zip(runs, xs, used, labels, _STYLES):
        ax.plot(x, [v / unit for v in u], style, color="black", drawstyle="steps-post",
                label=f"{label}: used", linewidth=1.5)
        i = peak_row(d)
        ax.plot([x[i]], [u[i] / unit], marker="v", color="tab:red", linestyle="",
                label=f"{label}: peak {human(u[i])}")
    ax.set_title("Used memory", fontsize=10)
    ax.set_ylabel(f"memory ({uname})")
    ax.set_ylim(bottom=0)

    ax = axes[1]
    peaks: dict[str, int] = {}
    for d in runs:
        for name, values in d.categories.items():
            if name != "kernel" and any(values):
                peaks[name] = max(peaks.get(name, 0), max(values))
    top = sorted(peaks, key=lambda n: (-peaks[n], n))[:_TOP_CATEGORIES]
    cname, cunit = byte_unit(max(peaks.values(), default=0))
    for d, x, label, style in zip(runs, xs, labels, _STYLES):
        for name in top:
            values = d.categories.get(name) or [0] * len(d)
            ax.plot(x, [v / cunit for v in values], style, color=category_color(name),
                    drawstyle="steps-post", linewidth=1.3, label=f"{label}: {name}")
    ax.set_title(f"The {len(top)} biggest categories", fontsize=10)
    ax.set_ylabel(f"memory ({cname})")
    ax.set_ylim(bottom=0)

    if arc:
        ax = axes[2]
        for d, x, label, style in zip(runs, xs, labels, _STYLES):
            ratio = d.extra.get("arc_hit_ratio")
            if ratio:
                ax.plot(x, [math.nan if v is None else v for v in ratio], style,
                        color="tab:green", drawstyle="steps-post", label=f"{label}: hit ratio")
        ax.set_title("ARC hit ratio (cumulative)", fontsize=10)
        ax.set_ylim(0, 1.05)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
        ax.margins(x=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    axes[-1].set_xlabel(xlabel)
    return fig


def default_timeline(summary_path: str) -> str | None:
    """The timeline written beside a summary under the same name (run.json: run.csv or
    run.jsonl), or None."""
    stem = os.path.splitext(summary_path)[0]
    for ext in (".csv", ".jsonl"):
        if os.path.isfile(stem + ext):
            return stem + ext
    return None
