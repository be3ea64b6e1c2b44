"""OSv's pressure behaviours (§5, §12.5-6): wake threshold, targets, hard mode, OOM kinds."""

import pytest
from helpers import assert_one_line_error
from mmsim.kernel import Kernel, KernelConfig
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.shrinker import Reclaimer, ReclaimFailed, ShrinkerRegistry

MIB = 1 << 20


class Recorder:
    """A shrinker that frees pages it was handed, and records the arguments it got."""

    name = "recorder"

    def __init__(self, ranges: PageRangeAllocator) -> None:
        self.ranges = ranges
        self.held: list[tuple[int, int]] = []
        self.calls: list[tuple[int, bool]] = []

    def request_memory(self, target: int, hard: bool) -> int:
        self.calls.append((target, hard))
        freed = 0
        while self.held and freed < max(target, 1):
            start, n = self.held.pop()
            self.ranges.free(start, n)
            freed += n * PAGE_SIZE
        return freed


def setup(pages: int = 25600):  # 100 MiB
    ranges = PageRangeAllocator()
    registry = ShrinkerRegistry()
    reclaimer = Reclaimer(ranges, registry)
    ranges.on_alloc = reclaimer.on_alloc
    ranges.add_initial_range(1, pages)
    rec = Recorder(ranges)
    registry.register(rec)
    return ranges, reclaimer, rec


def test_woken_exactly_when_free_falls_under_ten_percent():
    ranges, reclaimer, rec = setup()
    wm_pages = reclaimer.watermark_lo // PAGE_SIZE
    n = ranges.free_pages - wm_pages
    rec.held.append((ranges.alloc(n), n))  # now free == watermark exactly
    assert not reclaimer.pending
    rec.held.append((ranges.alloc(1), 1))  # one page under the watermark
    assert reclaimer.pending and reclaimer.wakes == 1
    rec.held.append((ranges.alloc(1), 1))
    assert reclaimer.wakes == 1 and reclaimer.lost_wakes == 1  # a wake while pending is lost
    reclaimer.run()
    assert rec.calls == [(2 * PAGE_SIZE, False)]  # target = watermark - free, soft


def test_every_shrinker_is_called_even_with_target_zero():
    ranges, reclaimer, rec = setup()
    reclaimer.wake()
    reclaimer.run()
    assert rec.calls == [(0, False)]


def test_waiter_gets_a_hard_pass_and_is_served():
    ranges, reclaimer, rec = setup()
    n = ranges.free_pages
    rec.held.append((ranges.alloc(n), n))
    reclaimer.wait_for_memory(10 * MIB)
    assert rec.calls[-1][1] is True
    assert reclaimer.fits(10 * MIB)


def test_a_waiter_gets_a_hard_pass_even_when_a_single_run_fits():
    """OSv's wait_for_memory always queues the waiter (_oom_blocked.wait): the reclaimer runs a
    hard pass for it whatever the runs hold (callers wait only when their own check failed)."""
    ranges, reclaimer, rec = setup()
    reclaimer.wait_for_memory(10 * MIB)
    assert rec.calls == [(0, True)] and reclaimer.waits == 1


def test_fragmentation_oom_although_total_free_would_suffice():
    ranges, reclaimer, rec = setup(pages=4096)
    # free every other 256-page block: half the memory free, no run larger than 1 MiB
    blocks = [ranges.alloc(256) for _ in range(16)]
    for b in blocks[::2]:
        ranges.free(b, 256)
    assert ranges.free_pages * PAGE_SIZE == 8 * MIB
    with pytest.raises(ReclaimFailed) as e:
        reclaimer.wait_for_memory(2 * MIB)
    assert "fragmentation" in e.value.reason


def test_request_above_total_is_refused_at_once():
    ranges, reclaimer, rec = setup()
    with pytest.raises(ReclaimFailed) as e:
        reclaimer.wait_for_memory(ranges.total_pages * PAGE_SIZE + PAGE_SIZE)
    assert "unreasonable" in e.value.reason
    assert rec.calls == []


def test_minimum_memory_waits_only_with_shrinkers():
    ranges, reclaimer, rec = setup()
    n = ranges.free_pages - 256  # leave 1 MiB free
    rec.held.append((ranges.alloc(n), n))
    reclaimer.wait_for_minimum_memory()
    assert rec.calls and rec.calls[-1][1] is True
    empty = Reclaimer(ranges, ShrinkerRegistry())
    ranges.alloc(ranges.free_pages)
    empty.wait_for_minimum_memory()  # no shrinker: proceed without waiting
    assert empty.waits == 0


def test_user_shrinker_from_configuration(tmp_path, monkeypatch):
    mod = tmp_path / "my_policy.py"
    mod.write_text(
        "calls = []\n"
        "def give_back(target, hard):\n"
        "    calls.append((target, hard))\n"
        "    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    k = Kernel(KernelConfig(memory=256 << 20, cpus=1,
                            extra={"shrinkers": ["my_policy:give_back"]}))
    assert "give_back" in k.summary()["shrinker"]
    k.reclaimer.wake()
    k.reclaimer.run()
    import my_policy
    assert my_policy.calls == [(0, False)]
    assert k.summary()["shrinker"]["give_back"]["calls"] == 1


def test_exhausting_memory_with_large_mallocs_ends_in_oom_not_a_loop(tmp_path):
    """The page caches refill waits for memory at most once: a reclaim pass that empties the
    caches must not send the refill round again (that looped forever once)."""
    import json

    from click.testing import CliRunner

    from mmsim.cli import main

    p = tmp_path / "t.trace"
    p.write_text("".join(f"malloc m{i} 30M\n" for i in range(5)))
    r = CliRunner().invoke(main, ["run", str(p), "--memory", "128M", "--json", "-", "-q"])
    assert r.exit_code == 3, r.stderr
    oom = json.loads(r.stdout)["oom"]
    assert oom["line"] == 3 and oom["op"] == "malloc"  # boot took 50 MB of the 128M
    assert set(oom["shrinkers_last_yield_bytes"]) == {"arc", "arc#2"}


def test_bulk_pages_need_no_single_run():
    """A fault's small pages come one by one in OSv: free pages scattered in small runs serve
    them, where a contiguous request of the same size would be a fragmentation OOM."""
    ranges, reclaimer, rec = setup(pages=4096)
    blocks = [ranges.alloc(256) for _ in range(16)]
    for b in blocks[::2]:
        ranges.free(b, 256)
    reclaimer.wait_for_pages(2048)  # 8 MiB free in 1 MiB runs: enough
    assert reclaimer.waits == 0


def test_pool_shrinker_returns_cached_empty_pages():
    from mmsim.trace.ops import Op

    k = Kernel(KernelConfig(memory=256 << 20, cpus=1,
                            extra={"extra_shrinkers": ["malloc_pools", "page_pool"]}))
    for i in range(200):  # 200 x 1 KiB: 67 pages of the 1024-byte class (3 objects a page)
        k.apply(Op("malloc", i + 1, handle=f"h{i}", size=1000))
    for i in range(200):
        k.apply(Op("free", 300 + i, handle=f"h{i}"))
    kept = k.memory_categories()["malloc_pools"]
    assert kept > 0  # OSv's rule keeps an empty page per class
    names = [s for s in k.summary()["shrinker"] if s != "reclaimer"]
    assert names.index("malloc_pools") < names.index("page_pool")  # caches drained last
    k.reclaimer.wake()
    k.reclaimer.run()
    assert k.memory_categories()["malloc_pools"] == 0
    assert k.summary()["shrinker"]["malloc_pools"]["freed_bytes"] == kept
    k.check()


def test_reclaimer_wake_latency_in_simulated_time():
    from mmsim.trace.ops import Op

    def pressure(k):
        wm = k.reclaimer.watermark_lo // PAGE_SIZE
        n = k.ranges.free_pages - wm + 400  # under the watermark even after L1 serves some
        k.apply(Op("mmap", 1, handle="a", size=n * PAGE_SIZE, populate=True))

    now = Kernel(KernelConfig(memory=256 << 20, cpus=1))
    pressure(now)
    assert now.reclaimer.passes == 1  # ran right after the operation that woke it

    later = Kernel(KernelConfig(memory=256 << 20, cpus=1,
                                extra={"reclaimer_wake_latency": "50ms"}))
    pressure(later)
    assert later.reclaimer.passes == 0 and later.reclaimer.pending
    later.apply(Op("sleep", 2, duration_ns=40_000_000))
    assert later.reclaimer.passes == 0
    later.apply(Op("sleep", 3, duration_ns=20_000_000))
    assert later.reclaimer.passes == 1


HOARDER = (
    "class Hoarder:\n"
    "    \"\"\"Holds 1 MiB of simulated pages from boot and gives them back on request.\"\"\"\n"
    "    name = 'hoarder'\n"
    "    def __init__(self, kernel):\n"
    "        self.kernel = kernel\n"
    "        self.args = []\n"
    "        kernel.alloc(1 << 20)\n"
    "    def request_memory(self, target, hard):\n"
    "        self.args.append((target, hard))\n"
    "        return self.kernel.free(self.kernel.held_bytes)\n")


def test_user_shrinker_named_in_a_yaml_file_frees_memory(tmp_path):
    """A user shrinker holds real simulated pages (its module found next to the configuration
    file, without PYTHONPATH), frees them on request, and free memory rises by what it says."""
    import json

    from cli_helpers import run

    (tmp_path / "hoard.py").write_text(HOARDER)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory: 256M\ncpus: 1\nshrinkers: ['hoard:Hoarder']\n")
    trace = tmp_path / "t.trace"
    trace.write_text("mmap a 195M populate\nsleep 10ms\n")
    code, out, err = run("run", str(trace), "--config", str(cfg), "--json", "-", "-q")
    assert code == 0, err
    s = json.loads(out)["shrinker"]
    assert s["hoarder"]["calls"] >= 1
    assert s["hoarder"]["freed_bytes"] == s["hoarder"]["claimed_bytes"] == 1 << 20


def test_user_shrinker_pages_count_and_free_memory_rises_by_its_yield(tmp_path, monkeypatch):
    (tmp_path / "hoard_cwd.py").write_text(HOARDER)
    monkeypatch.chdir(tmp_path)  # the current folder is searched too
    k = Kernel(KernelConfig(memory=256 << 20, cpus=1, extra={"shrinkers": ["hoard_cwd:Hoarder"]}))
    assert k.memory_categories()["user_shrinkers"] == 1 << 20
    k.check()
    before = k.ranges.free_pages * PAGE_SIZE
    k.reclaimer.wake()
    k.reclaimer.run()
    assert k.ranges.free_pages * PAGE_SIZE - before >= 1 << 20
    assert k.summary()["shrinker"]["hoarder"]["last_yield_bytes"] == 1 << 20
    assert k.memory_categories()["user_shrinkers"] == 0
    k.check()


def test_a_user_shrinker_that_frees_nothing_gets_no_credit(tmp_path, monkeypatch):
    """What a user shrinker says it freed is capped at what free memory rose by; the claim is
    kept beside it."""
    (tmp_path / "liar.py").write_text("def claim(target, hard):\n    return 1 << 20\n")
    monkeypatch.chdir(tmp_path)
    k = Kernel(KernelConfig(memory=256 << 20, cpus=1, extra={"shrinkers": ["liar:claim"]}))
    k.reclaimer.wake()
    k.reclaimer.run()
    s = k.summary()["shrinker"]["claim"]
    assert s["freed_bytes"] == 0 and s["last_yield_bytes"] == 0
    assert s["claimed_bytes"] == 1 << 20


BAD_SHRINKERS = {
    "raises": ("def shrink(target, hard):\n    raise ValueError('no cache today')\n",
               "shrink", "request_memory(", "raised ValueError: no cache today"),
    "returns_none": ("def shrink(target, hard):\n    pass\n",
                     "shrink", "request_memory(", "returned None"),
    "returns_float": ("def shrink(target, hard):\n    return 1.5\n",
                      "shrink", "request_memory(", "returned 1.5"),
    "signature": ("def shrink(target):\n    return 0\n",
                  "shrink", "must take (target, hard)", ""),
    "constructor": ("class Shrink:\n    def __init__(self):\n        raise OSError('disk')\n"
                    "    def request_memory(self, target, hard):\n        return 0\n",
                    "Shrink", "Shrink() raised OSError: disk", ""),
    "alloc_in_call": ("class Shrink:\n    def __init__(self, kernel):\n        self.k = kernel\n"
                      "    def request_memory(self, target, hard):\n"
                      "        return self.k.alloc(4096)\n",
                      "Shrink", "raised RuntimeError: alloc() inside request_memory", ""),
}


@pytest.mark.parametrize("case", sorted(BAD_SHRINKERS))
def test_a_failing_user_shrinker_is_one_line_and_exit_2(tmp_path, case):
    from cli_helpers import run

    source, attr, what, detail = BAD_SHRINKERS[case]
    module = f"bad_{case}"
    (tmp_path / f"{module}.py").write_text(source)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"memory: 256M\ncpus: 1\nshrinkers: ['{module}:{attr}']\n")
    trace = tmp_path / "t.trace"
    trace.write_text("mmap a 195M populate\nsleep 10ms\n")
    code, out, err = run("run", str(trace), "--config", str(cfg), "-q")
    assert_one_line_error(code, err)
    assert f"shrinker '{module}:{attr}'" in err and what in err and detail in err


def test_a_bad_user_shrinker_is_a_config_error(tmp_path):
    from click.testing import CliRunner

    from mmsim.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("shrinkers: ['no_such_module_xyz:thing']\n")
    trace = tmp_path / "t.trace"
    trace.write_text("sleep 1ms\n")
    r = CliRunner().invoke(main, ["run", str(trace), "--config", str(cfg)])
    assert r.exit_code == 2 and "no_such_module_xyz" in r.stderr
    assert r.stderr.count("\n") == 1


def test_a_waiter_sleeping_although_a_run_fits_is_counted(monkeypatch):
    """The no-needless-wait check looks at the runs as the waiter sleeps: a caller that waits
    although the runs could serve it at once (here: has_pages() that always says no, and a
    direct wait_for_memory while a run fits) makes the count rise. The 4 MiB rule's waits
    are OSv's own and exempt."""
    ranges, reclaimer, rec = setup()
    reclaimer.wait_for_pages(256)
    assert reclaimer.waits == 0 and reclaimer.needless_waits == 0
    reclaimer.wait_for_memory(MIB)
    assert reclaimer.waits == 1 and reclaimer.needless_waits == 1
    monkeypatch.setattr(reclaimer, "has_pages", lambda npages: False)
    with pytest.raises(ReclaimFailed):
        reclaimer.wait_for_pages(256)
    assert reclaimer.needless_waits == 2
    n = ranges.free_pages - 256  # 1 MiB free: under the 4 MiB rule
    rec.held.append((ranges.alloc(n), n))
    reclaimer.wait_for_minimum_memory()
    assert reclaimer.waits == 3 and reclaimer.needless_waits == 2


def test_a_real_wait_is_not_needless():
    ranges, reclaimer, rec = setup()
    n = ranges.free_pages
    rec.held.append((ranges.alloc(n), n))
    reclaimer.wait_for_memory(10 * MIB)
    assert reclaimer.waits == 1 and reclaimer.needless_waits == 0


def test_fuzz_invariant_catches_a_needless_wait(monkeypatch):
    """The state machine's pressure invariant fails when the kernel's wait path is broken."""
    from mmsim.shrinker.reclaimer import Reclaimer as _Reclaimer

    from mmsim.fuzz import make_machine

    machine = make_machine(KernelConfig(memory=128 << 20, cpus=1))()
    machine.pressure_invariants()  # holds on a healthy kernel
    monkeypatch.setattr(_Reclaimer, "fits", lambda self, nbytes: False)
    with pytest.raises(ReclaimFailed):
        machine.kernel.reclaimer.wait_for_memory(MIB)
    with pytest.raises(AssertionError, match="free run fit"):
        machine.pressure_invariants()


def _oom_run(trace_path: str, *options: str):
    import json

    from cli_helpers import run

    code, out, err = run("run", trace_path, "--json", "-", "-q", *options)
    assert code == 3, err
    return json.loads(out)["oom"], err


def test_oom_report_of_a_populate_larger_than_memory(trace):
    """The report names what the operation asked (3 GiB), the piece that failed apart (the 4 MiB
    rule's wait: what free memory lacked of 4 MiB, as the page caches' refill asks for it),
    and free memory as it was at the failure (less than that piece, so no contradiction)."""
    oom, err = _oom_run(trace("mmap a 3G populate\n"), "--memory", "1G")
    assert oom["requested_bytes"] == 3 << 30
    assert oom["chunk_bytes"] + oom["free_bytes"] == 4 * MIB
    assert oom["reason"] == "could not reclaim any further"
    assert oom["free_bytes"] < oom["chunk_bytes"]
    assert oom["largest_free_run_bytes"] <= oom["free_bytes"]
    lines = err.splitlines()
    assert lines[0].startswith("mmsim: ") and "mmap needed 3221225472 bytes" in lines[0]
    assert f"{oom['chunk_bytes']}-byte piece" in lines[0]
    assert f"{oom['free_bytes']} free" in lines[0]
    assert lines[1].startswith("mmsim:   shrinkers' last yield: ")
    assert all(name in lines[1] for name in oom["shrinkers_last_yield_bytes"])
    assert lines[2].startswith("mmsim:   biggest consumers: anonymous ")
    assert len(lines) == 3


def test_oom_report_of_a_fragmentation_oom(trace):
    """Scattered free pages: a ROFS cache segment is one contiguous run of 9 pages
    (alloc_phys_contiguous_aligned), and when no run that large is left the waiter's hard pass
    finds no shrinker to call, although free memory would cover it. The report says so with
    figures from the moment of failure."""
    k = Kernel(KernelConfig(memory=128 << 20, cpus=1, hugepages=False, rootfs="rofs"))
    n = k.ranges.free_pages - 4
    text = [f"mmap a {n * PAGE_SIZE} populate", "create /f 32K"]
    text += [f"madvise a {i * PAGE_SIZE} 4096 dontneed" for i in range(0, 3000, 2)]
    text.append("read /f 0 32K")
    oom, err = _oom_run(trace("\n".join(text) + "\n"), "--memory", "128M", "--cpus", "1",
                        "--no-hugepages", "--rootfs", "rofs")
    assert oom["reason"].startswith("fragmentation")
    assert oom["op"] == "read" and oom["requested_bytes"] == 32768
    assert oom["chunk_bytes"] == 9 * PAGE_SIZE
    assert oom["largest_free_run_bytes"] < oom["chunk_bytes"] <= oom["free_bytes"]
    assert oom["shrinkers_last_yield_bytes"] == {}
    lines = err.splitlines()
    assert "fragmentation" in lines[0] and "read needed 32768 bytes" in lines[0]
    assert f"largest free run {oom['largest_free_run_bytes']}" in lines[0]
    assert "anonymous" in lines[1] and len(lines) == 2


@pytest.mark.parametrize("latency_ms", [1, 150])
def test_reclaimer_runs_at_its_wake_latency_during_a_long_sleep(latency_ms):
    """Not at the next 100 ms tick: 1 ms runs the pass at 1 ms, 150 ms at 150 ms."""
    from mmsim.trace.ops import Op

    k = Kernel(KernelConfig(memory=256 << 20, cpus=1,
                            extra={"reclaimer_wake_latency": f"{latency_ms}ms"}))
    passes: list[int] = []
    k.subscribe(lambda name, rec: passes.append(rec["time_ns"]) if name == "reclaim" else None)
    wm = k.reclaimer.watermark_lo // PAGE_SIZE
    n = k.ranges.free_pages - wm + 400
    k.apply(Op("mmap", 1, handle="a", size=n * PAGE_SIZE, populate=True))
    assert k.reclaimer.pending and k.reclaimer.woken_ns == 0 and not passes
    k.apply(Op("sleep", 2, duration_ns=2_000_000_000))
    assert passes and passes[0] == latency_ms * 1_000_000
    assert k.clock_ns == 2_000_000_000


def test_a_failing_user_shrinker_fails_one_sweep_point_and_one_boot_in_one_line(tmp_path,
                                                                                monkeypatch):
    """mmsim sweep records the point's error (no 'simulator bug'); mmsim boot says it in one
    line with exit 2; neither shows a traceback."""
    from cli_helpers import run

    from mmsim.sweep_points import PointError, run_point

    (tmp_path / "bad_sweep.py").write_text(BAD_SHRINKERS["raises"][0])
    monkeypatch.chdir(tmp_path)
    trace = tmp_path / "t.trace"
    trace.write_text("mmap a 195M populate\nsleep 10ms\n")
    with pytest.raises(PointError, match=r"t\.trace:1: shrinker 'bad_sweep:shrink'.*ValueError"):
        run_point(str(trace), settings={"memory": "256M", "cpus": 1,
                                        "shrinkers": ["bad_sweep:shrink"]})
    (tmp_path / "image.yaml").write_text(
        "cmdline: /tools/app.so /traces/t.trace\nfiles:\n  /traces: .\nmemory: 256M\n"
        "kernel:\n  shrinkers: ['bad_sweep:shrink']\n")
    code, _, err = run("boot", str(tmp_path / "image.yaml"), "-q")
    assert_one_line_error(code, err)
    assert "shrinker 'bad_sweep:shrink'" in err and "ValueError" in err
