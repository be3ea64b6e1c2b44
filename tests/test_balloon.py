"""The JVM balloon against the real JVM of the test process (tests/conftest_jvm.py).

What a user relies on: a balloon really takes heap from the application; the guest gets the
pages back; deflation follows the application's own heap pressure; inflation stops at the soft
maximum; pages stay conserved with the heap and the balloon counted; a GC move moves the balloon.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest_jvm import GUEST_CPUS, GUEST_MEMORY, JVM_OPTIONS, ROOT, start_host_jvm
from mmsim.balloon.balloon import BALLOON_SIZE, soft_max_balloons
from mmsim.kernel import Kernel, load_config
from mmsim.mm.constants import PAGE_SIZE

from mmsim.trace import Op

MIB = 1 << 20
CHUNK = 16 * MIB - 16  # G1: exactly 16 regions


@pytest.fixture(scope="session")
def host_jvm():
    """The session's one JVM."""
    return start_host_jvm()


def boot(memory: int = GUEST_MEMORY) -> Kernel:
    import mmsim.kernel.sys_jvm  # noqa: F401  (its config keys)

    # a user-sized heap (-Xmx): the balloon is on by jvm_balloon: true, beyond OSv
    k = Kernel(load_config(None, {"memory": memory, "cpus": GUEST_CPUS, "jvm_balloon": True}))
    k.jvm.launch(JVM_OPTIONS)
    return k


def fill_heap(host, nbytes: int) -> bool:
    """Allocate ``nbytes`` of live 16 MiB arrays in the real heap; False on OutOfMemoryError."""
    held = []
    try:
        for _ in range(nbytes // (CHUNK + 16)):
            held.append(host.new_byte_array(CHUNK))
    except MemoryError:
        return False
    finally:
        held.clear()
        host.system_gc()
    return True


def settle(k: Kernel) -> None:
    """Apply the notifications of earlier collections (they arrive up to ~0.2 s late)."""
    while k.jvm.tick(0.3):
        pass


def check_conserved(k: Kernel) -> None:
    """free + categories == total, and the JVM's categories are the heap mapping's pages."""
    k.check()
    cats = k.memory_categories()
    heap = k.jvm.heap
    assert cats["jvm_heap"] + cats["balloon"] == heap.resident()
    assert k.address_space.present(heap.base, heap.size) == heap.resident()
    for r in heap.balloons.values():  # an interior never holds a page
        assert k.address_space.present(r.interior_start, r.interior) == 0


def test_inflation_takes_real_heap_away_and_deflation_gives_it_back(host_jvm) -> None:
    k = boot()
    b = k.jvm.balloon
    host = host_jvm
    assert b.enabled and b.soft_max == soft_max_balloons(1 << 30) == 3
    want = 640 * MIB  # fits in a 1 GiB heap, not in one with 3 balloons (384 MiB) taken
    assert fill_heap(host, want)
    settle(k)  # its collections were under pressure: their release rule must not see balloons
    free0 = k.ranges.free_pages * PAGE_SIZE
    for _ in range(3):
        assert b.inflate("test") is not None
    k.jvm.tick()
    check_conserved(k)
    assert b.count == 3 and b.bytes == 3 * BALLOON_SIZE
    assert k.jvm.heap.interior_bytes() == 3 * 126 * MIB
    used, _, _ = host.heap()
    assert used >= 3 * BALLOON_SIZE  # the arrays are real and live
    k.jvm.host.poll_gc(0.3)  # (drop earlier collections' notifications: on_gc is called below)
    # the release rule after a GC: plenty of free heap releases nothing; 10 % free releases all
    assert b.on_gc(1000 * MIB, 100 * MIB) == 0 and b.count == 3
    assert b.on_gc(1000 * MIB, 900 * MIB) == 3 and b.count == 0
    assert b.deflations == 3
    host.system_gc()
    k.jvm.tick()
    check_conserved(k)
    assert fill_heap(host, want)
    # balloons again, and an application that needs the heap before any release: the JVM
    # clears the balloons' soft references rather than throw OutOfMemoryError
    k.jvm.tick(0.3)
    for _ in range(3):
        assert b.inflate("test") is not None
    assert fill_heap(host, want), "a balloon made the application run out of heap"
    k.jvm.tick(0.3)
    check_conserved(k)
    assert b.count == 0 and b.cleared == 3
    assert k.ranges.free_pages * PAGE_SIZE <= free0 + 2 * MIB  # the heap took its pages back
    k.jvm.finish(0)
    s = k.summary()
    assert s["balloon"]["inflations"] == 6 and s["balloon"]["deflations"] == 6
    assert s["balloon"]["cleared"] == 3 and s["balloon"]["peak_bytes"] == 3 * BALLOON_SIZE
    assert s["jvm"]["heap_max_bytes"] == 1 << 30 and s["jvm"]["gc_count"] >= 0


def test_file_cache_pressure_inflates_then_app_pressure_deflates(host_jvm) -> None:
    from mmsim.balloon.jvm import AppThread

    k = boot()
    b = k.jvm.balloon
    counts: list[int] = []
    k.subscribe(lambda name, rec: counts.append(rec["balloons"]) if name == "balloon" else None)
    k.apply(Op("create", 1, path="/data/scan", size=1400 * MIB))
    for i in range(1400):
        k.apply(Op("read", i + 2, path="/data/scan", offset=i * MIB, length=MIB))
        if i % 16 == 15:
            k.jvm.tick()
            check_conserved(k)
    k.jvm.tick()
    # the ARC's growth takes reserved memory to 0: balloons give the guest heap pages back
    assert b.inflations >= 1 and max(counts) >= 1
    assert k.summary()["arc"]["size_bytes"] > 500 * MIB
    # the application now needs 700 MiB of heap: its collections must release the balloons
    app = AppThread(host_jvm, "Alloc", ["900", "700", "2"])
    app.start()
    deadline = time.monotonic() + 60
    while app.alive and time.monotonic() < deadline:
        k.jvm.tick(0.005)
    app.join()
    k.jvm.tick()
    check_conserved(k)
    assert not app.alive
    assert app.outcome.exit_code == 0, app.outcome
    assert b.deflations >= 1 and b.count < max(counts)
    assert b.arc_bytes_released > 0, "a release shrinks the ARC first"
    k.jvm.finish(0)


MOVE_SCRIPT = """
import json, os, sys
sys.path.insert(0, {root!r})
import mmsim.kernel.sys_jvm
from mmsim.kernel import Kernel, load_config
k = Kernel(load_config(None, {{"memory": "2G", "cpus": 2, "jvm_balloon": True}}))
host = k.jvm.launch(["-Xmx1g", "-Xms16m", "-XX:+UseSerialGC"])
junk = [host.new_byte_array(8 << 20) for _ in range(8)]
b = k.jvm.balloon
b.inflate("test")
k.jvm.tick()
before = dict(k.jvm.heap.balloons[0].__dict__)
del junk
host.system_gc()
for _ in range(50):
    k.jvm.tick(0.05)
    if b.gc_moves:
        break
k.check()
heap = k.jvm.heap
r = heap.balloons[0]
print(json.dumps({{"moves": b.gc_moves, "before": before, "after": dict(r.__dict__),
                  "interior_pages": k.address_space.present(r.interior_start, r.interior),
                  "old_interior_pages": k.address_space.present(before["interior_start"],
                                                                 r.interior),
                  "gc": "MarkSweepCompact" in host.gc_names}}))
# leave as `mmsim boot` does: a JVM shutting down under live JPype threads may abort the
# process after the result is out ("FATAL: exception not rethrown")
sys.stdout.flush()
os._exit(0)
"""


def test_a_gc_move_moves_the_balloon_mapping(tmp_path) -> None:
    """Serial GC's full collection slides the array down: the balloon's mapping follows it."""
    res = subprocess.run([sys.executable, "-c", MOVE_SCRIPT.format(root=str(ROOT))],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["gc"]
    assert out["moves"] >= 1
    assert out["after"]["start"] < out["before"]["start"]  # compaction slides toward the bottom
    assert out["interior_pages"] == 0
    assert out["after"]["interior_end"] - out["after"]["interior_start"] == 126 * MIB


def test_balloon_is_off_below_one_gib(host_jvm) -> None:
    deadline = time.monotonic() + 10  # G1 uncommits an emptied heap within seconds
    host_jvm.system_gc()
    while host_jvm.heap()[1] > 300 * MIB and time.monotonic() < deadline:
        time.sleep(0.1)
    k = boot(1000 * MIB)
    assert not k.jvm.balloon.enabled
    assert k.jvm.balloon.inflate("test") is None
    assert "jvm_balloon" not in k.shrinkers.stats
    k.jvm.finish(0)


@pytest.mark.parametrize("max_heap,expected", [(256 * MIB, 0), (512 * MIB, 1), (1 << 30, 3),
                                               (4 << 30, 15)])
def test_soft_max_is_max_heap_over_256_mib_minus_one(max_heap: int, expected: int) -> None:
    assert soft_max_balloons(max_heap) == expected


def test_the_balloon_thread_inflates_after_its_wake_latency(host_jvm) -> None:
    """jvm_balloon_wake_latency: a balloon request waits that long in simulated time before
    the balloon thread inflates (0, the default, inflates at the next tick)."""
    import mmsim.kernel.sys_jvm  # noqa: F401  (its config keys)

    k = Kernel(load_config(None, {"memory": GUEST_MEMORY, "cpus": GUEST_CPUS,
                                  "jvm_balloon_wake_latency": "2s", "jvm_balloon": True}))
    k.jvm.launch(JVM_OPTIONS)
    settle(k)
    b = k.jvm.balloon
    # reserved memory at 0 or under until one balloon inflates (standing for the file cache's
    # growth): the thread inflates then, and only then
    b.reserved = lambda: 0 if b.count == 0 else 1 << 30
    k.jvm.tick()
    assert b.count == 0  # asked, but the thread wakes 2 s later
    k.advance_to(k.clock_ns + 1_000_000_000)
    k.jvm.tick()
    assert b.count == 0
    k.advance_to(k.clock_ns + 1_000_000_000)
    k.jvm.tick()
    assert b.count == 1 and b.inflations == 1
    check_conserved(k)
    k.jvm.finish(0)
