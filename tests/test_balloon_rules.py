"""OSv's JVM balloon rules (reference §9.3-9.6), exactly, against a stand-in JVM.

tests/test_balloon.py checks the balloon against the real JVM (real heap taken and given
back); here the rules are pinned at their boundaries, which a real GC's timing never lets a
test choose: the GC release rule's qty = 15 x committed - 100 x free, the soft maximum and its
excess after a hard request, the end-of-pass release when reserved exceeds 1.2 balloons, and the
ARC shrinking first on a release.
"""

from __future__ import annotations

from typing import Any

import pytest

from balloon.balloon import BALLOON_SIZE, PASS_RELEASE, JvmBalloon
from balloon.heap import JavaHeap
from kernel import Kernel, KernelConfig

MIB = 1 << 20
GIB = 1 << 30


class FakeJvm:
    """Arrays are tokens; their addresses are unknown, so the heap places them from its top."""

    def __init__(self, max_heap: int) -> None:
        self.max_heap_bytes = max_heap

    def new_byte_array(self, nbytes: int) -> Any:
        return object()

    def address_of(self, obj: Any) -> int | None:
        return None

    def heap(self) -> tuple[int, int, int]:
        return 0, self.max_heap_bytes, self.max_heap_bytes  # used, committed, max: room


def make(memory: int, max_heap: int, **kw: Any) -> JvmBalloon:
    k = Kernel(KernelConfig(memory=memory, cpus=1))
    heap = JavaHeap(k.address_space, max_heap, None)
    heap.sync_committed(64 * MIB)
    return JvmBalloon(FakeJvm(max_heap), heap, k.ranges, **kw)


@pytest.mark.parametrize("free_mib,released", [
    (151, 0),  # qty = 15000 - 15100 < 0
    (150, 0),  # qty = 0
    (149, 1),  # qty = 100 MiB: one balloon (rounded up)
    (148, 2),  # qty = 200 MiB: two
    (140, 3),  # qty = 1000 MiB: eight, but three are held
])
def test_the_gc_release_rule(free_mib: int, released: int) -> None:
    b = make(4 * GIB, GIB)
    for _ in range(3):
        assert b.inflate("test") is not None
    assert b.on_gc(1000 * MIB, (1000 - free_mib) * MIB) == released
    assert b.count == 3 - released and b.deflations == released


def test_the_balloon_thread_inflates_while_reserved_is_negative_up_to_the_soft_maximum() -> None:
    # a 2 GiB heap allowance in a 1 GiB guest: reserved is about -1 GiB, 9 balloons short
    b = make(GIB, 2 * GIB)
    assert b.soft_max == 7
    assert b.reserved() < -7 * 126 * MIB
    assert b.check() and b.run_thread() >= 0
    assert b.count == b.soft_max == b.peak_count
    assert b.reserved() <= 0  # it stopped at the maximum, not because reserved recovered
    assert b.request_memory(16 * MIB, hard=False) == 0 and b.count == 7  # soft: no further


def test_a_hard_request_goes_past_the_soft_maximum_and_the_next_release_takes_the_excess() -> None:
    woken = []
    b = make(GIB, GIB, wake_reclaimer=lambda: woken.append(1))
    for _ in range(b.soft_max):
        b.inflate("test")
    assert not woken
    b.request_memory(16 * MIB, hard=True)
    assert b.count == b.soft_max + 1 and woken  # §9.4: the excess wakes the reclaimer
    assert b.on_gc(1000 * MIB, 0) == 1  # qty < 0, yet the excess goes
    assert b.count == b.soft_max


def test_end_of_pass_releases_one_when_reserved_exceeds_one_point_two_balloons() -> None:
    roomy = make(4 * GIB, GIB)
    roomy.inflate("test")
    roomy.inflate("test")
    roomy._inflated_in_pass = False  # inflated before this pass
    assert roomy.reserved() > PASS_RELEASE
    roomy.end_of_pass(0, False, 0)
    assert roomy.count == 1
    roomy.inflate("test")  # inflated by this very pass: the rule would undo it at once
    roomy.end_of_pass(0, False, 0)
    assert roomy.count == 2
    tight = make(GIB, 2 * GIB)
    tight.inflate("test")
    tight._inflated_in_pass = False
    assert tight.reserved() <= PASS_RELEASE
    tight.end_of_pass(0, False, 0)
    assert tight.count == 1


def test_a_release_shrinks_the_arc_first_until_reserved_reaches_one_balloon() -> None:
    asked: list[int] = []
    b = make(GIB, 2 * GIB, arc_shrink=lambda n: asked.append(n) or 0)
    b.inflate("test")
    short = BALLOON_SIZE - b.reserved()
    assert short > 0
    assert b.release(1, "test") == 1
    assert asked == [short]
    roomy = make(4 * GIB, GIB, arc_shrink=lambda n: asked.append(n) or 0)
    roomy.inflate("test")
    roomy.release(1, "test")
    assert asked == [short]  # reserved already above one balloon: the ARC is left alone
