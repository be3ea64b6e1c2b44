"""Plots: real images whose axes carry the timeline's data, readable units and marked events."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from cli_helpers import run
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.image import imread

from mmsim.plot import plot_timeline
from mmsim.timeline import TimelineData, TimelineError, load_timeline

MIB = 1 << 20
GIB = 1 << 30

FILES_AND_HEAP = """# mmsim-trace v1
@1ms create /data/f 8M
@2ms write /data/f 0 8M
@3ms read /data/f 0 4M
@4ms mmap anon 8M
@5ms touch anon 0 6M
@6ms malloc big 1M
@7ms read /data/f 0 8M
@8ms munmap anon
"""
PRESSURE = "\n".join(
    ["create /big 96M"] + [f"read /big {i}M 1M" for i in range(96)]
    + ["mmap a 120M"] + [f"touch a {i}M 2M" for i in range(0, 60, 2)]) + "\n"


def timeline_of(tmp_path, text: str, *args: str) -> TimelineData:
    trace = tmp_path / "t.trace"
    trace.write_text(text)
    tl = str(tmp_path / "t.csv")
    code, _, err = run("run", str(trace), "--timeline", tl, "-q", *args)
    assert code == 0, err
    return load_timeline(tl)


def band(coll: PolyCollection, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, bottom, top) at the n samples of a stepped fill_between polygon (matplotlib's
    layout: a start point, the first curve forward, the second curve backward, the closing
    point; a post-step curve has 2n - 1 points, the samples at the even ones)."""
    v = coll.get_paths()[0].vertices
    m = 2 * n - 1
    forward, backward = v[1:m + 1], v[m + 2:2 * m + 2][::-1]
    return forward[::2, 0], forward[::2, 1], backward[::2, 1]


def test_changes_are_steps_at_the_sample_not_ramps(tmp_path):
    """A sample's value holds until the next sample: between two samples the area is flat,
    and it moves straight up or down at the later one's x (where the change was seen)."""
    data = timeline_of(tmp_path, FILES_AND_HEAP, "--memory", "512M")
    coll = areas(plot_timeline(data).axes[0])["anonymous"]
    n = len(data)
    v = coll.get_paths()[0].vertices[1:2 * n]
    for k in range(n - 1):
        x0, y0 = v[2 * k]
        x1, y1 = v[2 * k + 1]
        assert (x1, y1) == (v[2 * k + 2][0], y0)  # flat to the next sample's x
    assert np.any(np.diff(v[:, 1]) != 0)  # and the stack under it did move


def xlabel(fig) -> str:
    """The label of the shared time axis (on the bottom panel)."""
    return next(ax.get_xlabel() for ax in fig.axes if ax.get_xlabel())


def areas(ax) -> dict[str, PolyCollection]:
    return {c.get_label(): c for c in ax.collections if isinstance(c, PolyCollection)}


def test_stacked_areas_are_the_timeline_columns(tmp_path):
    data = timeline_of(tmp_path, FILES_AND_HEAP, "--memory", "512M")
    fig = plot_timeline(data)
    ax = fig.axes[0]
    used = {n: v for n, v in data.categories.items() if any(v)}
    stack = areas(ax)
    assert list(stack) == list(used)  # every category with memory, in order, labelled
    n = len(data)
    assert "MiB" in ax.get_ylabel()
    below = np.zeros(n)
    for name, values in used.items():
        x, bottom, top = band(stack[name], n)
        assert x.tolist() == [t * 1e3 for t in data.time]  # simulated time in ms
        assert bottom == pytest.approx(below)
        assert top - bottom == pytest.approx(np.array(values) / MIB)
        below = top
    # free memory is the gap up to the total: categories + free = total on the axes too
    assert below + np.array(data.free) / MIB == pytest.approx(np.array(data.total) / MIB)
    assert xlabel(fig) == "simulated time (ms)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(used) <= set(legend)


def test_arc_panel_shows_size_target_and_hit_ratio(tmp_path):
    data = timeline_of(tmp_path, FILES_AND_HEAP, "--memory", "512M")
    fig = plot_timeline(data)
    arc = next(ax for ax in fig.axes if ax.get_title().startswith("ARC"))
    lines = {ln.get_label(): ln for ln in arc.get_lines()}
    assert lines["size"].get_ydata() == pytest.approx([v / MIB for v in data.extra["arc_size"]])
    assert lines["target c"].get_ydata() == pytest.approx(
        [v / MIB for v in data.extra["arc_c"]])
    twin = next(ax for ax in fig.axes if ax.get_ylabel() == "hit ratio")
    ratio = {ln.get_label(): ln.get_ydata() for ln in twin.get_lines()}
    per_interval = [r for r in ratio["hit ratio (per interval)"] if not math.isnan(r)]
    assert per_interval and all(0 <= r <= 1 for r in per_interval)
    assert ratio["hit ratio (cumulative)"][-1] == pytest.approx(data.extra["arc_hit_ratio"][-1])


def test_no_arc_panel_when_the_arc_was_not_used(tmp_path):
    data = timeline_of(tmp_path, "malloc a 1M\nmalloc b 100\nfree a\n")
    fig = plot_timeline(data)
    assert not any(ax.get_title().startswith("ARC") for ax in fig.axes)
    assert xlabel(fig) == "operations applied"  # no simulated time passed


def test_events_are_marked_where_they_happened(tmp_path):
    data = timeline_of(tmp_path, PRESSURE, "--memory", "128M")
    fig = plot_timeline(data)
    ax = fig.axes[0]
    marks = [c for c in ax.collections if isinstance(c, LineCollection)
             and c.get_label().startswith("reclaim (")]
    assert len(marks) == 1
    rows = [i for i, e in enumerate(data.events) if "reclaim" in e]
    assert rows
    x = band(areas(ax)[next(iter(areas(ax)))], len(data))[0]
    assert [seg[0][0] for seg in marks[0].get_segments()] == [x[i] for i in rows]
    assert marks[0].get_label() == f"reclaim ({sum(data.events[i]['reclaim'] for i in rows)})"


def synthetic(tmp_path, total: int, used: list[int], extra: str = "") -> TimelineData:
    path = tmp_path / "s.csv"
    head = "time,event,total_bytes,free_bytes,anonymous_bytes" + (",balloon_bytes,"
                                                                   "jvm_heap_bytes" if extra else "")
    lines = [head + ",events"]
    for i, u in enumerate(used):
        row = f"{i}.0,{i * 10},{total},{total - u},{u - (2 * MIB if extra else 0)}"
        lines.append(row + (f",{MIB},{MIB}" if extra else "") + ",")
    path.write_text("\n".join(lines) + "\n")
    return load_timeline(str(path))


def test_units_follow_the_size_of_the_machine(tmp_path):
    big = plot_timeline(synthetic(tmp_path, 8 * GIB, [GIB, 6 * GIB, 5 * GIB]))
    ax = big.axes[0]
    assert ax.get_ylabel() == "memory (GiB)"
    total = next(ln for ln in ax.get_lines() if ln.get_label() == "total")
    assert list(total.get_ydata()) == [8.0, 8.0, 8.0]
    assert xlabel(big) == "simulated time (s)"
    small = plot_timeline(synthetic(tmp_path, 8 * GIB, [10 * MIB, 30 * MIB, 20 * MIB]))
    assert small.axes[0].get_ylabel() == "memory (MiB) of 8.00 GiB"
    assert small.axes[0].get_ylim()[1] == pytest.approx(33)


def test_balloon_and_jvm_heap_get_their_panel(tmp_path):
    fig = plot_timeline(synthetic(tmp_path, GIB, [100 * MIB, 200 * MIB], extra="yes"))
    panel = next(ax for ax in fig.axes if ax.get_title() == "Balloon and JVM heap")
    assert {ln.get_label() for ln in panel.get_lines()} == {"balloon", "jvm_heap"}
    assert list(panel.get_lines()[0].get_ydata()) == [1.0, 1.0]


def test_an_empty_timeline_cannot_be_plotted():
    with pytest.raises(TimelineError, match="no rows"):
        plot_timeline(TimelineData(source="empty.csv"))


def test_run_plot_is_a_real_png_of_sensible_size(tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text(FILES_AND_HEAP)
    png = tmp_path / "p.png"
    code, _, err = run("run", str(trace), "--plot", str(png), "-q")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(str(png))
    h, w = pixels.shape[:2]
    assert w == 1100 and 400 <= h <= 1600
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_run_plot_svg_is_deterministic_xml_with_the_categories(tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text(FILES_AND_HEAP)
    outs = []
    for name in ("a.svg", "b.svg"):
        code, _, err = run("run", str(trace), "--plot", str(tmp_path / name), "-q",
                           "--sample-every", "2")
        assert code == 0, err
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    root = ET.fromstring(outs[0])
    assert root.tag.endswith("svg")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for word in ("anonymous", "arc", "Memory by category", "ARC: size, target and hit ratio"):
        assert word in text


def test_balloon_actions_are_marked_apart(tmp_path):
    from mmsim.plot import EVENT_STYLES

    data = synthetic(tmp_path, GIB, [100 * MIB, 200 * MIB, 150 * MIB, 120 * MIB], extra="yes")
    data.events = [{}, {"balloon:inflate": 1}, {"balloon:move": 2}, {"balloon:deflate": 1}]
    fig = plot_timeline(data)
    marks = {c.get_label(): c for c in fig.axes[0].collections
             if isinstance(c, LineCollection)}
    assert set(marks) == {"balloon:inflate (1)", "balloon:move (2)", "balloon:deflate (1)"}
    colors = {tuple(c.get_colors()[0]) for c in marks.values()}
    assert len(colors) == 3  # three distinct marks
    styles = {EVENT_STYLES[n]["color"] for n in ("balloon:inflate", "balloon:deflate",
                                                  "balloon:move")}
    assert len(styles) == 3 and EVENT_STYLES[None]["color"] not in styles


def top_axis(ax):
    """The secondary x-axis on top of a panel (matplotlib keeps it among the child axes)."""
    return next(c for c in ax.child_axes if c.get_xlabel())


def test_work_that_takes_no_time_is_spread_by_operations(tmp_path):
    """Reads take disk time, the touches and their reclaim passes none: on a time axis they
    would all stand at one x. The x-axis is then the operations, with the time on top."""
    data = timeline_of(tmp_path, PRESSURE, "--memory", "128M")
    assert len(set(data.time[-30:])) == 1  # the touches all happen at one simulated time
    fig = plot_timeline(data)
    ax = fig.axes[0]
    assert xlabel(fig) == "operations applied"
    x = band(areas(ax)[next(iter(areas(ax)))], len(data))[0]
    assert all(b > a for a, b in zip(x, x[1:]))  # every row has its own x
    assert x.tolist() == [float(e) for e in data.event]
    top = top_axis(ax)
    assert top.get_xlabel() == "simulated time (ms)"
    labels = [t.get_text() for t in top.get_xticklabels()]
    assert labels[0] == "0" and len(labels) == len(set(labels)) >= 2


def test_the_operation_that_ran_out_of_memory_gets_its_own_x(tmp_path):
    trace = tmp_path / "o.trace"
    trace.write_text("create f 64M\nread f 0 64M\nsleep 200ms\nmmap a 200M\ntouch a 0 200M w\n")
    tl = str(tmp_path / "o.csv")
    code, _, _ = run("run", str(trace), "--memory", "128M", "--timeline", tl, "-q")
    assert code == 3
    data = load_timeline(tl)
    assert data.event[-1] == data.event[-2]  # the failed touch is not counted as applied
    fig = plot_timeline(data)
    x = band(areas(fig.axes[0])["anonymous"], len(data))[0]
    assert x[-1] == data.event[-1] + 0.5 and x[-2] == data.event[-2]
    oom = next(c for c in fig.axes[0].collections if c.get_label() == "oom (1)")
    assert oom.get_segments()[0][0][0] == x[-1]


def test_ticks_and_timeless_bursts_are_drawn_as_samples_in_order(tmp_path):
    """A boot: the JVM's ticks at one operation, then operations at one time. Neither time nor
    operations spread the rows; the samples in order do, labelled with both."""
    lines = ["time,event,total_bytes,free_bytes,anonymous_bytes,events"]
    rows = [(0.1 * i, 0) for i in range(10)] + [(1.0, i) for i in range(1, 11)]
    for i, (t, e) in enumerate(rows):
        lines.append(f"{t},{e},{GIB},{GIB - (i + 1) * MIB},{(i + 1) * MIB},")
    path = tmp_path / "b.csv"
    path.write_text("\n".join(lines) + "\n")
    data = load_timeline(str(path))
    fig = plot_timeline(data)
    ax = fig.axes[0]
    x = band(areas(ax)["anonymous"], len(data))[0]
    assert x.tolist() == list(range(len(data)))
    assert xlabel(fig).startswith("samples in run order")
    fmt = fig.axes[-1].xaxis.get_major_formatter()
    assert fmt(15, 0) == "6"  # the 16th sample was taken after 6 operations
    assert top_axis(ax).get_xlabel() == "simulated time (s)"


def test_a_category_has_one_colour_in_every_run(tmp_path):
    """The same category is drawn in the same colour whatever else the run holds."""
    heap = timeline_of(tmp_path, FILES_AND_HEAP, "--memory", "512M")
    anon_only = timeline_of(tmp_path, "mmap a 8M\ntouch a 0 8M\n", "--memory", "512M")
    colours = [{n: tuple(c.get_facecolor()[0]) for n, c in areas(plot_timeline(d).axes[0]).items()}
               for d in (heap, anon_only)]
    shared = set(colours[0]) & set(colours[1])
    assert "anonymous" in shared and len(colours[0]) > len(colours[1])
    assert all(colours[0][n] == colours[1][n] for n in shared)
    assert len(set(colours[0].values())) == len(colours[0])  # and apart within one plot


def test_the_peak_and_the_oom_are_marked(tmp_path):
    data = timeline_of(tmp_path, FILES_AND_HEAP, "--memory", "512M")
    ax = plot_timeline(data).axes[0]
    marker = next(ln for ln in ax.get_lines() if ln.get_label().startswith("peak "))
    used = [t - f for t, f in zip(data.total, data.free)]
    i = used.index(max(used))
    assert marker.get_ydata()[0] == pytest.approx(max(used) / MIB)
    assert marker.get_xdata()[0] == pytest.approx(data.time[i] * 1e3)
    trace = tmp_path / "oom.trace"
    trace.write_text("mmap a 1G\ntouch a 0 1G\n")
    tl = tmp_path / "oom.csv"
    code, _, _ = run("run", str(trace), "--memory", "256M", "--timeline", str(tl), "-q")
    assert code == 3
    texts = [t.get_text() for t in plot_timeline(load_timeline(str(tl))).axes[0].texts]
    assert "out of memory" in texts


def test_run_plot_writes_pdf_too_the_same_bytes_each_time(tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text(FILES_AND_HEAP)
    outs = []
    for name in ("a.pdf", "b.pdf"):
        code, _, err = run("run", str(trace), "--plot", str(tmp_path / name), "-q")
        assert code == 0, err
        outs.append((tmp_path / name).read_bytes())
    assert outs[0].startswith(b"%PDF") and outs[0] == outs[1]
