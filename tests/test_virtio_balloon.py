"""The host's virtio-balloon as OSv's driver (drivers/virtio-balloon.cc): 500 ms polls in
simulated time, the whole difference a poll, inflation through alloc_page (waits, or the guest
aborts out of memory), FIFO deflation; and the options beyond OSv, off by default."""

import json

import pytest
from cli_helpers import run
from click.testing import CliRunner
from helpers import booter
from mmsim.kernel import Kernel, OutOfMemory, load_config
from mmsim.mm.constants import MIN_EMERGENCY_POOL, PAGE_SIZE

from mmsim.cli import main
from mmsim.trace.ops import Op

MIB = 1 << 20


def op(kind: str, **kw) -> Op:
    return Op(kind, 1, **kw)


boot = booter(512 * MIB, cpus=2)


def held_pages(k: Kernel) -> list[int]:
    """The balloon's pages in the order it took them."""
    return [p for start, n in k.virtio_balloon.held for p in range(start, start + n)]


def test_the_whole_difference_moves_in_one_poll():
    # OSv's adjust_toward_target() inflates (or deflates) target - actual in one go, in
    # requests of 256 PFNs: no rate limit
    k = boot()
    moves = _balloon_moves(k)
    k.apply(op("host-balloon", size=200 * MIB))
    assert k.virtio_balloon.actual_pages * PAGE_SIZE == 200 * MIB  # the poll due at time 0
    assert moves == [0]
    assert k.virtio_balloon.inflations == 200 * MIB // PAGE_SIZE // 256  # 200 requests
    k.apply(op("host-balloon", size=8 * MIB))
    k.apply(op("sleep", duration_ns=500_000_000))
    assert k.virtio_balloon.actual_pages * PAGE_SIZE == 8 * MIB  # the next poll, at 500 ms
    assert moves == [0, 500_000_000]
    assert k.virtio_balloon.deflations == 192 * MIB // PAGE_SIZE // 256
    k.check()


def test_the_rate_option_moves_at_most_its_share_a_poll():
    k = boot(virtio_balloon_rate="100M")  # beyond OSv: 50 MiB per 500 ms poll
    k.apply(op("host-balloon", size=200 * MIB))
    first = k.virtio_balloon.actual_pages * PAGE_SIZE
    assert first == 50 * MIB  # the poll due at time 0 ran after the operation
    k.apply(op("sleep", duration_ns=499_000_000))
    assert k.virtio_balloon.actual_pages * PAGE_SIZE == 50 * MIB  # next poll not due yet
    k.apply(op("sleep", duration_ns=1_000_000_000))
    assert k.virtio_balloon.actual_pages * PAGE_SIZE == 150 * MIB  # two more polls
    k.apply(op("sleep", duration_ns=5_000_000_000))
    assert k.virtio_balloon.actual_pages * PAGE_SIZE == 200 * MIB
    k.check()
    s = k.summary()
    assert s["memory"]["categories"]["virtio_balloon"] == 200 * MIB
    assert s["virtio_balloon"]["inflations"] == 200 * MIB // PAGE_SIZE // 256


def test_deflation_returns_the_pages():
    k = boot()
    k.apply(op("host-balloon", size=100 * MIB))
    free_inflated = k.ranges.free_pages
    k.apply(op("host-balloon", size=0))
    k.apply(op("sleep", duration_ns=1_000_000_000))
    assert k.virtio_balloon.actual_pages == 0
    assert k.ranges.free_pages > free_inflated + (90 * MIB) // PAGE_SIZE  # L1 keeps a few
    k.check()


def test_deflation_frees_the_oldest_pages_first():
    # OSv's deflate() takes _ballooned.front() and pops it: the first pages inflated go back
    # first (FIFO), the newest stay in the balloon
    k = boot()
    k.apply(op("host-balloon", size=8 * MIB))
    oldest = held_pages(k)
    k.apply(op("host-balloon", size=16 * MIB))
    k.apply(op("sleep", duration_ns=500_000_000))
    newest = held_pages(k)[len(oldest):]
    assert len(oldest) == len(newest) == 8 * MIB // PAGE_SIZE
    assert set(oldest).isdisjoint(newest)
    k.apply(op("host-balloon", size=10 * MIB))
    k.apply(op("sleep", duration_ns=500_000_000))
    left = 2 * MIB // PAGE_SIZE  # 6 MiB of the oldest went back, the newest all stayed
    assert held_pages(k) == oldest[-left:] + newest
    k.apply(op("host-balloon", size=4 * MIB))
    k.apply(op("sleep", duration_ns=500_000_000))
    assert held_pages(k) == newest[-(4 * MIB // PAGE_SIZE):]
    k.check()


def test_inflation_waits_for_memory_and_the_reclaimer_frees_caches():
    k = boot()
    k.apply(op("create", path="/f", size=300 * MIB))
    k.apply(op("read", path="/f", offset=0, length=300 * MIB, write=False))
    arc = k.summary()["memory"]["categories"]["arc"]
    assert k.free_bytes < 400 * MIB < k.free_bytes + arc  # only reclaim can give 400 MiB
    k.apply(op("host-balloon", size=400 * MIB))
    k.apply(op("sleep", duration_ns=500_000_000))  # the next poll (time 0's ran before)
    # alloc_page() waits when the guest has no free pages: the reclaimer's hard pass shrinks
    # the ARC and the whole target is inflated in that one poll
    b = k.virtio_balloon
    assert b.actual_pages == b.target_pages == 400 * MIB // PAGE_SIZE
    assert k.reclaimer.waits >= 1 and k.reclaimer.hard_passes >= 1 and k.oom is None
    assert k.summary()["memory"]["categories"]["arc"] < arc
    assert b.stalls == 0
    k.check()


def test_a_target_the_guest_cannot_give_aborts_it_out_of_memory(trace, tmp_path):
    # OSv (drivers/virtio-balloon.cc): adjust_toward_target() calls inflate(target - actual)
    # with the host's num_pages as they are (no clamp), and inflate() takes each page with
    # alloc_page(), which never returns null: it waits for memory (the reclaimer's hard pass)
    # and, when nothing can be reclaimed, the guest aborts out of memory. So a 600 MiB target on
    # a 512 MiB guest with nothing to reclaim ends the run on its first line (the poll due at
    # time 0): exit 3, the oom section naming the driver's thread and the whole 600 MiB
    # (629145600 bytes) its one poll asked for.
    summary = tmp_path / "s.json"
    code, _, err = run("run", trace("host-balloon 600M\nsleep 1s\n"), "--memory", "512M",
                       "--json", str(summary), "-q")
    assert code == 3
    assert "out of memory" in err and "virtio-balloon needed 629145600 bytes" in err
    s = json.loads(summary.read_text())
    oom = s["oom"]
    assert oom["op"] == "virtio-balloon" and oom["line"] == 1 and oom["time_ns"] == 0
    assert oom["requested_bytes"] == 600 * MIB
    assert oom["reason"] == "could not reclaim any further"
    # the balloon keeps the requests the host was told of: all the guest had (nothing else
    # moved), but for the page caches and what the runs keep back (under OSv's 4 MiB
    # emergency pool and one 1 MiB request)
    assert oom["free_bytes"] < MIN_EMERGENCY_POOL + 256 * PAGE_SIZE
    fresh = Kernel(load_config(None, {"memory": "512M"}))
    had = fresh.free_bytes + fresh.pool.l1_pages * PAGE_SIZE + fresh.pool.l2_pages * PAGE_SIZE
    cats = s["memory"]["categories"]
    held = cats["virtio_balloon"]
    assert held + cats["l1_cache"] + cats["l2_cache"] + s["memory"]["free_bytes"] == had
    assert held == s["virtio_balloon"]["actual_pages"] * PAGE_SIZE > had - 16 * MIB
    assert oom["consumers"]["virtio_balloon"] == held
    assert s["app_errors"] == fresh.errors.summary()  # not clamped: no error counted


def test_a_target_above_total_memory_is_not_clamped():
    k = boot()
    k.apply(op("sleep", duration_ns=1_000_000))
    with pytest.raises(OutOfMemory):
        k.apply(op("host-balloon", size=1 << 40))  # polled at 500 ms, in the sleep
        k.apply(op("sleep", duration_ns=1_000_000_000))
    assert k.virtio_balloon.target_pages * PAGE_SIZE == 1 << 40
    assert k.oom["op"] == "virtio-balloon" and k.oom["requested_bytes"] == (1 << 40)
    assert k.oom["line"] == 1 and k.oom["time_ns"] == 500_000_000


def test_the_keep_free_option_stops_short_instead_of_waiting():
    k = boot(virtio_balloon_keep_free="16M")  # beyond OSv: a floor of free memory
    k.apply(op("host-balloon", size=500 * MIB))
    b = k.virtio_balloon
    assert b.stalls == 1 and 0 < b.actual_pages < b.target_pages
    assert k.ranges.free_pages >= 16 * MIB // PAGE_SIZE  # as the poll left the runs
    k.apply(op("sleep", duration_ns=2_000_000_000))
    assert k.reclaimer.wakes >= 1  # the inflation still creates pressure
    assert b.stalls >= 2 and b.actual_pages < b.target_pages and k.oom is None
    assert k.reclaimer.waits == 0  # no alloc_page ever waited
    k.check()


def test_the_clamp_option_clamps_the_target_and_counts_an_app_error():
    k = boot(virtio_balloon_clamp_target=True, virtio_balloon_keep_free="4M")
    k.apply(op("host-balloon", size=1 << 40))
    assert k.virtio_balloon.target_pages == k.ranges.total_pages
    assert "balloon_target_too_large" in json.dumps(k.errors.summary())
    assert k.oom is None
    plain = boot(virtio_balloon_keep_free="4M")
    plain.apply(op("host-balloon", size=1 << 40))
    assert plain.virtio_balloon.target_pages * PAGE_SIZE == 1 << 40
    assert "balloon_target_too_large" not in json.dumps(plain.errors.summary())


def test_deflate_on_oom_gives_memory_back_to_a_waiter():
    trace = [op("host-balloon", size=400 * MIB), op("sleep", duration_ns=1_000_000_000),
             op("mmap", handle="a", size=200 * MIB, populate=True)]
    plain = boot()
    with pytest.raises(OutOfMemory):
        for o in trace:
            plain.apply(o)
    assert plain.oom is not None and plain.oom["op"] == "mmap"
    assert plain.virtio_balloon.summary()["oom_deflated_pages"] == 0  # OSv: no code acts on it
    helped = boot(virtio_balloon_deflate_on_oom=True)  # beyond OSv (Linux's driver)
    helped.apply(trace[0])
    oldest = held_pages(helped)
    for o in trace[1:]:
        helped.apply(o)
    assert helped.oom is None
    b = helped.virtio_balloon
    assert b.oom_deflated_pages > 0
    assert held_pages(helped) == oldest[b.oom_deflated_pages:]  # the oldest went back first
    helped.check()
    # and its own inflation stops short (retried at the next poll) instead of aborting
    helped.apply(op("host-balloon", size=1 << 40))
    helped.apply(op("sleep", duration_ns=1_000_000_000))
    assert helped.oom is None and b.stalls >= 1 and b.actual_pages < b.target_pages
    helped.check()


def test_host_balloon_through_the_command(tmp_path):
    p = tmp_path / "b.trace"
    p.write_text("host-balloon 64M\nsleep 1s\n")
    r = CliRunner().invoke(main, ["run", str(p), "--memory", "512M", "--json", "-", "-q"])
    assert r.exit_code == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["virtio_balloon"]["actual_pages"] == 64 * MIB // PAGE_SIZE


def _balloon_moves(k: Kernel) -> list[int]:
    times: list[int] = []
    k.subscribe(lambda name, rec: times.append(rec["time_ns"]) if name == "virtio_balloon"
                else None)
    return times


def test_wake_latency_polls_at_the_new_target_plus_the_latency():
    for extra, expected in (({"virtio_balloon_wake_latency": "1ms"}, 101_000_000),
                            ({}, 500_000_000)):  # unset: the next 500 ms poll sees the target
        k = boot(**extra)
        times = _balloon_moves(k)
        k.apply(op("sleep", duration_ns=100_000_000))
        k.apply(op("host-balloon", size=16 * MIB))
        k.apply(op("sleep", duration_ns=2_000_000_000))
        assert times and times[0] == expected, extra
        assert k.virtio_balloon.actual_pages * PAGE_SIZE == 16 * MIB


def test_polls_run_at_their_time_during_a_sleep_not_at_a_tick():
    k = boot(virtio_balloon_rate="8M")  # 4 MiB a poll
    times = _balloon_moves(k)
    k.apply(op("sleep", duration_ns=50_000_000))  # from 50 ms, ticks would fall at 150, 250 ...
    k.apply(op("host-balloon", size=16 * MIB))
    k.apply(op("sleep", duration_ns=3_000_000_000))
    assert times[:4] == [500_000_000, 1_000_000_000, 1_500_000_000, 2_000_000_000]


def test_a_bad_wake_latency_is_a_config_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("virtio_balloon_wake_latency: soon\n")
    trace = tmp_path / "t.trace"
    trace.write_text("sleep 1ms\n")
    r = CliRunner().invoke(main, ["run", str(trace), "--config", str(cfg)])
    assert r.exit_code == 2 and "virtio_balloon_wake_latency" in r.stderr
    assert r.stderr.count("\n") == 1
