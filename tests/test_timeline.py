"""`mmsim run --timeline`: memory over time that adds up on every row, sampled as asked."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from cli_helpers import run
from helpers import assert_one_line_error

from mmsim.progress import Progress, file_position
from mmsim.timeline import Recorder, load_timeline
from mmsim.trace import Op

# Every memory category a trace can reach: ARC (file I/O), file pages (a shared file mapping),
# anonymous memory, malloc pools, whole pages and large blocks; page tables and the L1/L2
# caches come with any allocation. (The JVM heap needs a hosted JVM: `mmsim boot`.)
REACHABLE = ["page_tables", "l1_cache", "l2_cache", "anonymous", "file", "malloc_pools",
             "malloc_pages", "malloc_large", "arc", "page_cache"]
EVERY_CATEGORY = """# mmsim-trace v1
create /data/f 8M
write /data/f 0 8M
read /data/f 0 4M
mmap fm 4M file=/data/f shared
touch fm 0 2M r
touch fm 2M 64K w
mmap fp 1M file=/data/f
touch fp 0 64K w
mmap anon 8M
touch anon 0 6M
malloc small 100
malloc page 4K
malloc big 1M
malloc huge 3M
@10ms sleep 1ms
free small
munmap anon
@20ms free big
"""

# An ARC filled to its target, then anonymous memory: the reclaimer wakes and the ARC's
# shrinker gives memory back (run with --memory 128M).
PRESSURE = "\n".join(
    ["create /big 96M"] + [f"read /big {i}M 1M" for i in range(96)]
    + ["mmap a 120M"] + [f"touch a {i}M 2M" for i in range(0, 60, 2)]) + "\n"


def rows_of(path: str) -> list[dict[str, Any]]:
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in open(path)]
    return list(csv.DictReader(open(path)))


def byte_columns(row: dict[str, Any]) -> list[str]:
    return [c for c in row if c.endswith("_bytes") and c not in ("total_bytes", "free_bytes")]


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_rows_add_up_on_every_row_for_every_category(trace, tmp_path, ext):
    tl = str(tmp_path / f"t.{ext}")
    js = str(tmp_path / "s.json")
    code, _, err = run("run", trace(EVERY_CATEGORY), "--memory", "256M", "--timeline", tl,
                       "--json", js, "-q")
    assert code == 0, err
    summary = json.load(open(js))
    rows = rows_of(tl)
    cats = byte_columns(rows[0])
    # the kernel's categories, after the guest's RAM the page allocator never got
    assert cats == ["kernel_bytes", *(f"{c}_bytes" for c in summary["memory"]["categories"])]
    for row in rows:
        assert int(row["free_bytes"]) + sum(int(row[c]) for c in cats) == int(row["total_bytes"])
        assert int(row["total_bytes"]) == 256 << 20  # the guest's RAM, as configured
        assert int(row["total_bytes"]) - int(row["kernel_bytes"]) == summary["memory"][
            "total_bytes"]  # the summary's total is the allocator's
    for c in REACHABLE:  # the trace did exercise every category
        assert any(int(row[f"{c}_bytes"]) for row in rows), c
    last = rows[-1]  # the end of the run is the last row
    assert int(last["event"]) == summary["events"]
    assert int(last["free_bytes"]) == summary["memory"]["free_bytes"]
    assert {c[:-6]: int(last[c]) for c in cats[1:]} == summary["memory"]["categories"]
    assert float(last["time"]) == pytest.approx(summary["time_ns"] / 1e9)
    assert [int(r["event"]) for r in rows] == list(range(len(rows)))  # short: every op
    # ARC state over time, named so that no extra column ends in _bytes
    assert int(last["arc_size"]) == summary["arc"]["size_bytes"]
    assert int(last["arc_c"]) == summary["arc"]["c_bytes"]
    assert float(last["arc_hit_ratio"]) == pytest.approx(summary["arc"]["hit_ratio"])
    assert [int(r["arc_misses"]) for r in rows][:3] == [0, 0, 64]  # the write misses


def test_events_column_counts_every_reclaim_pass(trace, tmp_path):
    tl = str(tmp_path / "p.csv")
    js = str(tmp_path / "s.json")
    code, _, err = run("run", trace(PRESSURE), "--memory", "128M", "--timeline", tl,
                       "--sample-every", "7", "--json", js, "-q")
    assert code == 0, err
    summary = json.load(open(js))
    reclaimer = summary["shrinker"]["reclaimer"]
    assert reclaimer["passes"] > 0
    events: dict[str, int] = {}
    for row in load_timeline(tl).events:
        for k, v in row.items():
            events[k] = events.get(k, 0) + v
    assert events.get("reclaim", 0) + events.get("reclaim_hard", 0) == reclaimer["passes"]
    assert events["shrink:arc"] > 0  # the ARC gave memory back, and the row shows it


def test_sample_every_and_sample_ms(trace, tmp_path):
    text = "".join(f"@{i}ms malloc m{i} 64K\n" for i in range(40))
    path = trace(text)
    tl = str(tmp_path / "e.csv")
    assert run("run", path, "--timeline", tl, "--sample-every", "10", "-q")[0] == 0
    assert [int(r["event"]) for r in rows_of(tl)] == [0, 10, 20, 30, 40]
    tl = str(tmp_path / "t.csv")
    assert run("run", path, "--timeline", tl, "--sample-ms", "7.5", "-q")[0] == 0
    times = [float(r["time"]) for r in rows_of(tl)]
    # boot, then the first op at or after each multiple of 7.5 ms, then the end
    assert times == [0.0, 0.008, 0.015, 0.023, 0.030, 0.038, 0.039]


def test_adaptive_default_stays_small_and_keeps_every_event(trace, tmp_path):
    """Rows thin out evenly as the run grows; the events of dropped rows move on."""
    from mmsim.kernel import Kernel, load_config

    kernel = Kernel(load_config(None, {"memory": "128M"}))
    rec = Recorder(kernel, "pressure", timeline_path=str(tmp_path / "a.csv"), cap=16)
    ops = [Op("create", 1, path="/big", size=96 << 20)]
    ops += [Op("read", 2 + i, path="/big", offset=i << 20, length=1 << 20) for i in range(96)]
    ops += [Op("mmap", 200, handle="a", size=120 << 20)]
    ops += [Op("touch", 300 + i, handle="a", offset=i << 21, length=2 << 20) for i in range(30)]
    kernel.run(rec.wrap(ops))
    rec.finish()
    rows = rows_of(str(tmp_path / "a.csv"))
    events = [int(r["event"]) for r in rows]
    assert len(rows) <= 16 + 1
    assert events[-1] == len(ops)
    steps = {b - a for a, b in zip(events[:-1], events[1:-1])}
    assert len(steps) == 1 and steps.pop() >= 8  # evenly spaced, interval doubled
    passes = kernel.summary()["shrinker"]["reclaimer"]["passes"]
    counted = sum(e.get("reclaim", 0) for e in load_timeline(str(tmp_path / "a.csv")).events)
    assert passes > 0 and counted == passes


def test_out_of_memory_is_the_last_row(trace, tmp_path):
    tl = str(tmp_path / "o.jsonl")
    code, _, _ = run("run", trace("mmap a 200M\ntouch a 0 200M\n"), "--memory", "128M",
                     "--timeline", tl, "-q")
    assert code == 3
    rows = rows_of(tl)
    assert rows[-1]["events"].get("oom") == 1
    for row in rows:
        assert row["free_bytes"] + sum(row[c] for c in byte_columns(row)) == row["total_bytes"]


def test_same_run_same_timeline(trace, tmp_path):
    path = trace(EVERY_CATEGORY)
    outs = []
    for name in ("1.csv", "2.csv"):
        assert run("run", path, "--timeline", str(tmp_path / name), "-q")[0] == 0
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("args, message", [
    (["--plot", "x.jpg"], "must be .png, .svg or .pdf"),
    (["--timeline", "t.csv", "--sample-every", "5", "--sample-ms", "1"], "exclusive"),
    (["--sample-every", "5"], "need --timeline or --plot"),
    (["--timeline", "/nonexistent/dir/t.csv"], "cannot write"),
    (["--timeline", "t.csv", "--sample-every", "0"], "--sample-every"),
])
def test_bad_timeline_options_are_one_line_before_running(trace, tmp_path, monkeypatch, args,
                                                         message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run("run", trace("malloc a 1K\n"), *args)
    assert_one_line_error(code, err, message)


class GrowingKernel:
    """The kernel's public face, with a category that appears after boot (as a balloon
    driver loaded later would)."""

    total_bytes = 100 * 4096
    free_bytes = 60 * 4096

    def __init__(self) -> None:
        self.events = 0
        self.clock_ns = 0
        self.cats = {"a": 40 * 4096}
        self._subs: list = []

    def summary(self) -> dict[str, Any]:
        return {"memory": {"total_bytes": 100 * 4096}}

    def memory_categories(self) -> dict[str, int]:
        return dict(self.cats)

    def subscribe(self, fn) -> None:
        self._subs.append(fn)

    def run(self, ops) -> None:
        for _op in ops:
            self.events += 1
            if self.events == 3:
                self.cats = {"a": 30 * 4096, "balloon": 10 * 4096}
                for fn in self._subs:
                    fn("balloon", {"moved_bytes": 10 * 4096})


@pytest.mark.parametrize("name, every", [("g.csv", 1), ("g.jsonl", 2), ("g.csv", None)])
def test_a_category_appearing_later_gets_its_column(tmp_path, name, every):
    k = GrowingKernel()
    path = str(tmp_path / name)
    rec = Recorder(k, "g", timeline_path=path, every=every)
    k.run(rec.wrap([Op("sleep", i) for i in range(5)]))
    rec.finish()
    rows = rows_of(path)
    assert byte_columns(rows[0]) == ["kernel_bytes", "a_bytes", "balloon_bytes"]
    assert [int(r["balloon_bytes"]) for r in rows][0] == 0 and int(rows[-1]["balloon_bytes"])
    for row in rows:
        assert int(row["free_bytes"]) + sum(int(row[c]) for c in byte_columns(row)) == int(
            row["total_bytes"])
    assert any("balloon" in str(r["events"]) for r in rows)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_follows_the_file_with_a_rate_and_an_estimate(tmp_path):
    p = tmp_path / "f.trace"
    p.write_bytes(b"x" * 10000)
    with open(p, "rb", buffering=0) as f:
        pos = file_position(str(p))
        f.read(2500)
        if pos() is None:
            pytest.skip("no /dev/fd on this system")
        assert pos() == 2500
        with Progress("replaying", "f.trace", total=10000, position=pos, stream=_TTY()) as bar:
            bar.update(4096)
            text = str(bar)
    assert "25%" in text and "4.10k ops" in text and "ops/s" in text
    assert "00:00<00:00" in text  # elapsed < estimate left
    with Progress("replaying", "f.trace", total=10000, position=pos, stream=io.StringIO()) as bar:
        bar.update(4096)
        assert str(bar) == ""  # not a terminal: nothing at all


def test_boot_writes_a_timeline_that_adds_up(tmp_path):
    """`mmsim boot --timeline` samples while the image's application runs (a native image here:
    no JVM needed)."""
    import csv
    import subprocess
    import sys

    (tmp_path / "app.trace").write_text(
        "".join(f"malloc m{i} 64K\n" for i in range(50)) + "mmap a 8M populate\nsleep 1s\n")
    (tmp_path / "side.trace").write_text("create /f 4M\nread /f 0 4M\n")
    image = tmp_path / "native.yaml"
    image.write_text("cmdline: /tools/app.so /app.trace\nfiles:\n  /app.trace: app.trace\n"
                     "workload: side.trace\nmemory: 512M\n")
    out = tmp_path / "t.csv"
    # boot leaves with os._exit (the JVM may hold app threads): run it in its own process
    r = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(image), "--timeline",
                        str(out), "-q"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) >= 3
    for row in rows:
        parts = sum(int(v) for k, v in row.items()
                    if k.endswith("_bytes") and k not in ("total_bytes", "free_bytes"))
        assert parts + int(row["free_bytes"]) == int(row["total_bytes"])
    assert int(rows[-1]["malloc_large_bytes"]) + int(rows[-1]["anonymous_bytes"]) > 0


def test_the_front_knows_only_the_kernels_public_face():
    """The timeline and the trace readers use what kernel/__init__.py exports (and the Kernel's
    public methods), never a kernel submodule or the page allocator behind it."""
    import ast
    import pathlib

    from mmsim import kernel

    root = pathlib.Path(__file__).resolve().parent.parent / "mmsim"
    for path in [root / "timeline.py", *sorted((root / "trace").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("kernel", "mmsim.kernel.")), \
                    f"{path.name}: {node.module}"
                if node.module == "mmsim.kernel":
                    assert all(a.name in kernel.__all__ for a in node.names), path.name
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("ranges", "pool", "mem"), f"{path.name}: .{node.attr}"


def test_total_is_the_guests_ram_with_the_kernel_as_a_category(trace, tmp_path):
    """2 GiB of RAM is a 2 GiB total: the kernel image, page 0 and the low-memory hole are the
    kernel category (reserved before the page allocator is given the rest)."""
    tl = str(tmp_path / "k.csv")
    js = str(tmp_path / "k.json")
    assert run("run", trace("malloc a 1M\n"), "--timeline", tl, "--json", js, "-q")[0] == 0
    summary = json.load(open(js))
    for row in rows_of(tl):
        assert int(row["total_bytes"]) == 2 << 30
        kernel = int(row["kernel_bytes"])
        # at least the 6.75 MiB image, page 0 and the 640K-1M hole; at most a few MiB more
        assert 0x6C0000 + 4096 + 0x60400 <= kernel < 8 << 20
        assert kernel == (2 << 30) - summary["memory"]["total_bytes"]


def test_default_thinning_keeps_rows_spread_over_clock_ticks(tmp_path):
    """A boot-like run: a few operations, then seconds of JVM ticks at one event number. The
    rows kept stay evenly spread in time (thinned by step, not by event number)."""
    from mmsim.kernel import Kernel, load_config

    kernel = Kernel(load_config(None, {"memory": "128M"}))
    cap = 16
    rec = Recorder(kernel, "ticks", timeline_path=str(tmp_path / "t.csv"), cap=cap)
    kernel.run(rec.wrap([Op("malloc", 1 + i, handle=f"m{i}", size=4096) for i in range(100)]))
    for _ in range(1000):  # 10 s of ticks with no operation: a long sleep, a JVM's own work
        kernel.advance_to(kernel.clock_ns + 10_000_000)
        rec.tick()
    rec.finish()
    rows = load_timeline(str(tmp_path / "t.csv"))
    assert len(rows) <= cap + 1
    assert rows.time[-1] == pytest.approx(10.0)
    gaps = [b - a for a, b in zip(rows.time, rows.time[1:])]
    assert max(gaps) <= 4 * 10.0 / cap  # no multi-second hole


def test_balloon_events_keep_their_action(trace, tmp_path):
    tl = str(tmp_path / "b.csv")
    text = "malloc a 1M\nhost-balloon 64M\nsleep 3s\nhost-balloon 0\nsleep 3s\n"
    assert run("run", trace(text), "--memory", "256M", "--timeline", tl, "-q")[0] == 0
    names = [name for row in load_timeline(tl).events for name in row]
    assert names == ["virtio_balloon:inflate", "virtio_balloon:deflate"]
    # the JVM balloon says what it did (a real JVM is for test_boot_image; its events are these)
    from mmsim.kernel import Kernel, load_config

    kernel = Kernel(load_config(None, {"memory": "128M"}))
    rec = Recorder(kernel, "b", timeline_path=str(tmp_path / "j.jsonl"), every=1)
    for action in ("inflate", "move", "deflate"):
        kernel.emit("balloon", action=action, balloons=1, bytes=1 << 20)
        rec.sample()
    rec.finish()
    events = load_timeline(str(tmp_path / "j.jsonl")).events
    assert [list(e) for e in events[1:]] == [["balloon:inflate"], ["balloon:move"],
                                             ["balloon:deflate"]]


GOOD_CSV = "time,event,total_bytes,free_bytes,a_bytes,arc_size,events\n0.0,0,100,60,40,,\n"
GOOD_ROW = {"time": 0.0, "event": 0, "total_bytes": 100, "free_bytes": 60, "a_bytes": 40,
            "events": {}}


@pytest.mark.parametrize("name, text, where", [
    ("t.csv", GOOD_CSV + "0.5,1,100,60,40,,\nx,2,100,60,40,,\n", ":4: bad timeline row (time"),
    ("t.csv", GOOD_CSV + "0.5,1,100,60,40,,\n1.0,2,100,60,4O,,\n", ":4: bad timeline row (a_bytes"),
    ("t.csv", GOOD_CSV + "1.0,2,100,sixty,40,,\n", ":3: bad timeline row (free_bytes"),
    ("t.csv", GOOD_CSV + "1.0,2,100,60,40,big,\n", ":3: bad timeline row (arc_size"),
    ("t.jsonl", json.dumps(GOOD_ROW) + "\n" + json.dumps({**GOOD_ROW, "event": "x"}) + "\n",
     ":2: bad timeline row (event"),
    ("t.jsonl", json.dumps(GOOD_ROW) + "\n\n" + json.dumps({**GOOD_ROW, "a_bytes": [1]}) + "\n",
     ":3: bad timeline row (a_bytes"),
    ("t.jsonl", json.dumps(GOOD_ROW) + '\n{"time": 1.0,, }\n',
     ":2: not a timeline row (Expecting property name enclosed in double quotes at column 14)"),
    ("t.jsonl", json.dumps(GOOD_ROW) + "\n[1, 2]\n", ":2: not a timeline row (a JSON object"),
])
def test_a_bad_timeline_file_names_its_line(tmp_path, name, text, where):
    from mmsim.timeline import TimelineError

    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TimelineError) as e:
        load_timeline(str(path))
    assert str(e.value).startswith(f"{path}{where}"), str(e.value)


def test_progress_advance_to_counts_what_is_done_and_writes_above_the_bar():
    tty = _TTY()
    with Progress("booting", "app.yaml", stream=tty) as bar:
        bar.advance_to(100)
        bar.advance_to(100)  # nothing new: the count stays
        bar.advance_to(250)
        bar.set_postfix("simulated 1.5 s")
        bar.write("  2048 MiB  runs  (3.1 s)")
        assert bar._bar.n == 250
        text = str(bar)
    assert "250" in text and "simulated 1.5 s" in text
    assert "2048 MiB  runs" in tty.getvalue()
    plain = io.StringIO()
    with Progress("booting", "app.yaml", stream=plain) as bar:
        bar.advance_to(10)
        bar.write("a line")
    assert plain.getvalue() == "a line\n"  # no bar, the line as it is


def test_run_progress_moves_during_the_run(trace, monkeypatch):
    """The bar hears of the kernel's events every few operations, not once per 4096 (a run of
    batched operations, an mtrace log's 1024 calls each, never reached 4096 before its end)."""
    import mmsim.cli

    seen: list[int] = []

    class Spy(Progress):
        @classmethod
        def for_file(cls, desc: str, path: str) -> Progress:
            return cls(desc, path, stream=_TTY())

        def update(self, n: int) -> None:
            super().update(n)
            seen.append(self._bar.n)

    monkeypatch.setattr(mmsim.cli, "Progress", Spy)
    text = "".join(f"malloc m{i} 64\nfree m{i}\n" for i in range(500))
    assert run("run", trace(text), "-q")[0] == 0
    assert seen[-1] == 1000  # every operation counted
    assert len(seen) >= 10 and seen[0] < 200  # and counted as they went
