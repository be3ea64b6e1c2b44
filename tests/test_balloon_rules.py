"""OSv's JVM balloon rules (jvm_balloon.cc, osv-memory.md §9 corrected), exactly, against a
stand-in JVM.

tests/test_balloon.py checks the balloon against the real JVM (real heap taken and given
back); here the rules are pinned at their boundaries, which a real GC's timing never lets a
test choose: the GC release rule's qty = 15 x committed - 100 x free, inflation while reserved
<= 0 with no soft-maximum check, the soft maximum's wake-up and its excess added to the next
release, the voluntary return when reserved exceeds 1.2 balloons (once per release), and a
release shrinking the ARC first and given up when reserved stays short of a balloon. The
balloon is no shrinker: no reclaimer pass inflates it.
"""

from __future__ import annotations

from typing import Any

import pytest
from mmsim.balloon.balloon import (
    PASS_RELEASE,
    SOFT_MAX_WRAPPED,
    JvmBalloon,
    soft_max_balloons,
)
from mmsim.balloon.heap import JavaHeap
from mmsim.kernel import Kernel, KernelConfig

MIB = 1 << 20
GIB = 1 << 30


class Ref:
    """A soft reference the test can clear, as the JVM does before an OutOfMemoryError."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def get(self) -> Any:
        return self.obj


class FakeJvm:
    """Arrays are tokens; their addresses are unknown, so the heap places them from its top."""

    def __init__(self, max_heap: int) -> None:
        self.max_heap_bytes = max_heap

    def new_byte_array(self, nbytes: int) -> Any:
        return object()

    def address_of(self, obj: Any) -> int | None:
        return None

    def soft_reference(self, obj: Any) -> Any:
        return Ref(obj)

    def heap(self) -> tuple[int, int, int]:
        return 0, self.max_heap_bytes, self.max_heap_bytes  # used, committed, max: room


def make(memory: int, max_heap: int, **kw: Any) -> JvmBalloon:
    k = Kernel(KernelConfig(memory=memory, cpus=1))
    heap = JavaHeap(k.address_space, max_heap, None)
    heap.sync_heap(64 * MIB)
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


def test_the_balloon_thread_inflates_while_reserved_is_not_positive_past_the_soft_maximum():
    """while (jvm_heap_reserved() <= 0) _request_memory(env, 1): no soft-maximum check."""
    # a 2 GiB heap allowance in a 1 GiB guest: reserved is about -1 GiB, 9 balloons short
    woken = []
    b = make(GIB, 2 * GIB, wake_reclaimer=lambda: woken.append(1))
    assert b.soft_max == 7
    assert b.reserved() < -7 * 126 * MIB
    assert b.check()
    b.run_thread()
    assert b.count > b.soft_max and b.reserved() > 0
    assert b.reserved() - 126 * MIB <= 0  # it stopped as soon as reserved turned positive
    assert not woken  # the wake-up comes at the thread's next turn, over the maximum
    b.requested = True
    b.run_thread()
    assert woken


def test_a_request_with_reserved_still_positive_inflates_nothing():
    """adjust_memory requests at reserved <= 4 MiB, but the thread inflates only at <= 0."""
    b = make(4 * GIB, GIB)
    b.requested = True
    assert b.reserved() > 0 and b.run_thread() == 0 and b.count == 0


def test_the_soft_maximum_wraps_under_a_256_mib_heap():
    assert soft_max_balloons(255 * MIB) == SOFT_MAX_WRAPPED  # (size_t)(0 - 1), §9
    assert soft_max_balloons(512 * MIB) == 1


def test_a_release_takes_the_excess_over_the_soft_maximum_too():
    b = make(4 * GIB, 512 * MIB)  # soft maximum 1
    for _ in range(3):
        b.inflate("test")
    assert b.on_gc(1000 * MIB, 1000 * MIB - 149 * MIB) == 3  # qty: one balloon, + 2 excess
    assert b.count == 0


def test_the_voluntary_return_is_once_per_release():
    """voluntary_return: reserved > 1.2 balloons releases one, then not again until a balloon
    goes back (balloon_voluntary_return, re-armed by return_heap)."""
    roomy = make(4 * GIB, GIB)
    roomy.inflate("test")
    roomy.inflate("test")
    assert roomy.reserved() > PASS_RELEASE
    roomy.end_of_pass(0, False, 0)
    roomy.end_of_pass(0, False, 0)  # the thread has not run yet: still one
    assert roomy.pending_release == 1
    roomy.run_thread()
    assert roomy.count == 1
    roomy.end_of_pass(0, False, 0)  # re-armed by that release
    roomy.run_thread()
    assert roomy.count == 0
    tight = make(GIB, 2 * GIB)
    tight.inflate("test")
    assert tight.reserved() <= PASS_RELEASE
    tight.end_of_pass(0, False, 0)
    assert tight.pending_release == 0 and tight.count == 1


def test_a_release_shrinks_the_arc_first_and_is_given_up_if_reserved_stays_short():
    """The thread calls arc_sized_adjust(balloon - reserved) until reserved reaches a balloon
    or the ARC frees nothing; short of a balloon, the release is abandoned."""

    def squeezed(arc_gives_back: bool) -> tuple[JvmBalloon, list[int]]:
        """Two balloons, and pages held (standing for the ARC) until reserved is 100 MiB."""
        asked: list[int] = []
        b = make(4 * GIB, GIB)
        b.inflate("test")
        b.inflate("test")
        held = b.ranges.alloc_pages_bulk((b.reserved() - 100 * MIB) // 4096)
        assert b.reserved() == 100 * MIB

        def arc(n: int) -> int:
            asked.append(n)
            if not arc_gives_back:
                return 0
            for start, k in held:
                b.ranges.free(start, k)
            held.clear()
            return n

        b.arc_shrink = arc
        b.release_memory(1, "test")
        b.run_thread()
        return b, asked

    b, asked = squeezed(arc_gives_back=False)
    assert asked == [28 * MIB] and b.count == 2 and b.abandoned_releases == 1
    b, asked = squeezed(arc_gives_back=True)
    assert asked == [28 * MIB] and b.count == 1 and b.abandoned_releases == 0
    asked = []
    roomy = make(4 * GIB, GIB, arc_shrink=lambda n: asked.append(n) or 0)
    roomy.inflate("test")
    roomy.release_memory(1, "test")
    roomy.run_thread()
    assert asked == [] and roomy.count == 0  # reserved above a balloon: the ARC left alone


def test_the_balloon_is_not_a_shrinker():
    k = Kernel(KernelConfig(memory=2 * GIB, cpus=1))
    assert "jvm_balloon" not in k.summary()["shrinker"]
    assert not hasattr(JvmBalloon, "request_memory")


def test_a_balloon_the_jvm_cleared_is_back_in_the_heap():
    """Balloons are held through soft references (not OSv's): the JVM clears them all before
    it would throw OutOfMemoryError, and the next collection's check gives them back."""
    b = make(4 * GIB, GIB)
    for _ in range(3):
        b.inflate("test")
    allowance = b.allowance()
    b._balloons[-1].ref.obj = None  # the JVM cleared the newest
    assert b.check_moves() == 0
    assert b.count == 2 and b.cleared == 1 and b.deflations == 1
    assert b.allowance() == allowance + 126 * MIB  # its interior is heap again
