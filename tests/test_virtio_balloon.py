"""The host's virtio-balloon: 500 ms polls in simulated time, pressure, DEFLATE_ON_OOM."""

import json

from click.testing import CliRunner

from kernel import Kernel, KernelConfig
from mm.constants import PAGE_SIZE
from mmsim.cli import main
from mmsim.trace.ops import Op

MIB = 1 << 20


def op(kind: str, **kw) -> Op:
    return Op(kind, 1, **kw)


def boot(**extra) -> Kernel:
    return Kernel(KernelConfig(memory=512 * MIB, cpus=2, extra=extra))


def test_inflation_follows_the_polls_and_the_rate():
    k = boot(virtio_balloon_rate="100M")  # 50 MiB per 500 ms poll
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


def test_inflation_creates_pressure_and_wakes_the_reclaimer():
    k = boot()
    k.apply(op("host-balloon", size=500 * MIB))
    k.apply(op("sleep", duration_ns=2_000_000_000))
    assert k.reclaimer.wakes >= 1
    # the balloon stops short (at OSv's 4 MiB emergency pool) instead of making anyone wait
    b = k.virtio_balloon
    assert b.stalls >= 1 and b.actual_pages < b.target_pages and k.oom is None
    k.check()


def test_deflate_on_oom_gives_memory_back_to_a_waiter():
    trace = [op("host-balloon", size=400 * MIB), op("sleep", duration_ns=1_000_000_000),
             op("mmap", handle="a", size=200 * MIB, populate=True)]
    plain = boot()
    oom = None
    try:
        for o in trace:
            plain.apply(o)
    except Exception as e:  # noqa: BLE001 - the OOM is the point
        oom = e
    assert oom is not None and plain.oom is not None
    helped = boot(virtio_balloon_deflate_on_oom=True)
    for o in trace:
        helped.apply(o)
    assert helped.oom is None
    assert helped.virtio_balloon.oom_deflated_pages > 0
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
