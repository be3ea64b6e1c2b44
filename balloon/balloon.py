"""OSv's JVM balloon as designed in 2014 (reference §9), against a real JVM.

A balloon is a real 128 MiB ``byte[]`` in the real heap, held by a reference (OSv held a JNI
global reference), whose 2 MiB-aligned interior is given back to the guest's page allocator:
the application really has that much less heap, the guest that much more memory. The rules:

- reserved = free + jvm_heap - allowance, where jvm_heap is the heap's faulted pages and the
  allowance the heap's length less the interiors given back (§9.1-2). When reserved <= 4 MiB
  a balloon is requested; the balloon thread inflates while reserved <= 0 (§9.3), up to the soft
  maximum, maxHeap/256 MiB - 1 (§9.4). A hard shrinker call may go past it; the excess is then
  released with the next release request.
- After each real GC (a javax.management notification): qty = 15 x committed - 100 x free of the
  heap after the collection; if positive, release ceil(qty / 128 MiB) balloons (§9.6).
- At the end of each reclaimer pass, release one if reserved > 1.2 balloons (§9.6).
- A release first shrinks the ARC (arc_sized_adjust) until reserved >= 128 MiB, then drops the
  newest reference (§9.5).
- A GC that moves an array (seen as a new address) moves the balloon mapping (§9.7).

Guard (not OSv's): inflation needs the real heap to keep 15 % of its maximum free afterwards;
a nearly full heap makes the JVM thrash in GC for minutes instead of failing (jpype-jvm.md §2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from balloon.heap import ARRAY_HEADER, JavaHeap
from mm.constants import PAGE_SIZE
from mm.page_range_allocator import PageRangeAllocator

__all__ = [
    "ARRAY_BYTES", "BALLOON_SIZE", "MIN_RAM", "JvmBalloon", "JvmLike", "soft_max_balloons",
]

MIB = 1 << 20
BALLOON_SIZE = 128 * MIB
#: G1 puts an array of n MiB plus its 16-byte header in n + 1 regions: 16 bytes short fits
ARRAY_BYTES = BALLOON_SIZE - ARRAY_HEADER
#: the balloon is enabled only with this much RAM or more (§9)
MIN_RAM = (1 << 30) - 4 * MIB
REQUEST_RESERVED = 4 * MIB  # §9.2
RELEASE_RESERVED = BALLOON_SIZE  # §9.5: the ARC shrinks until reserved reaches one balloon
PASS_RELEASE = BALLOON_SIZE * 12 // 10  # §9.6: 1.2 balloons
HEAP_FREE_GUARD = 0.15


class JvmLike(Protocol):
    """What the balloon needs of the real JVM (balloon.jvm.HostJvm)."""

    max_heap_bytes: int

    def new_byte_array(self, nbytes: int) -> Any: ...

    def address_of(self, obj: Any) -> int: ...

    def heap(self) -> tuple[int, int, int]: ...


def soft_max_balloons(max_heap: int) -> int:
    """§9.4: maxHeap / 256 MiB - 1, never negative."""
    return max(0, max_heap // (2 * BALLOON_SIZE) - 1)


class _Balloon:
    __slots__ = ("array", "key", "addr")

    def __init__(self, key: int, array: Any, addr: int | None) -> None:
        self.key = key
        self.array = array
        self.addr = addr


class JvmBalloon:
    """The balloon: a shrinker (``jvm_balloon``) and the GC-driven release rule."""

    name = "jvm_balloon"

    def __init__(
        self,
        jvm: JvmLike,
        heap: JavaHeap,
        ranges: PageRangeAllocator,
        *,
        enabled: bool = True,
        arc_shrink: Callable[[int], int] | None = None,
        emit: Callable[..., None] = lambda name, **f: None,
        wake_reclaimer: Callable[[], None] = lambda: None,
    ) -> None:
        self.jvm = jvm
        self.heap = heap
        self.ranges = ranges
        self.enabled = enabled
        self.arc_shrink = arc_shrink
        self.emit = emit
        self.wake_reclaimer = wake_reclaimer
        self.soft_max = soft_max_balloons(heap.max_bytes)
        self._balloons: list[_Balloon] = []
        self._next_key = 0
        self._busy = False
        self._inflated_in_pass = False
        self.requested = False
        # statistics (the summary's `balloon` section)
        self.inflations = 0
        self.deflations = 0
        self.gc_moves = 0
        self.peak_count = 0
        self.peak_bytes = 0
        self.failed_inflations = 0
        self.arc_bytes_released = 0
        self.release_requests = 0

    # -- the accounting of §9 -----------------------------------------------------------------
    @property
    def count(self) -> int:
        return len(self._balloons)

    @property
    def bytes(self) -> int:
        """Bytes the balloons take from the real heap (whole arrays)."""
        return self.count * BALLOON_SIZE

    def jvm_heap_bytes(self) -> int:
        """OSv's stats::jvm_heap: the heap's faulted pages (balloon edges included)."""
        return self.heap.resident()

    def allowance(self) -> int:
        return self.heap.size - self.heap.interior_bytes()

    def reserved(self) -> int:
        return self.ranges.free_pages * PAGE_SIZE + self.jvm_heap_bytes() - self.allowance()

    def _heap_room(self) -> bool:
        used, _, _ = self.jvm.heap()
        mx = self.jvm.max_heap_bytes
        return mx - used - BALLOON_SIZE >= HEAP_FREE_GUARD * mx

    # -- inflation -------------------------------------------------------------------------------
    def check(self) -> bool:
        """§9.2: request a balloon when reserved <= 4 MiB (called after each operation)."""
        if self.enabled and not self.requested and self.reserved() <= REQUEST_RESERVED:
            self.requested = True
        return self.requested

    def run_thread(self) -> int:
        """The balloon thread's turn: one balloon for the request, then more while reserved
        <= 0, never past the soft maximum. Returns the bytes given back to the allocator."""
        if not self.requested:
            return 0
        self.requested = False
        freed = 0
        first = True
        while self.count < self.soft_max and (first or self.reserved() <= 0):
            got = self.inflate("reserved")
            if got is None:
                break
            freed += got
            first = False
        return freed

    def inflate(self, why: str) -> int | None:
        """Allocate one real balloon array and give its interior back; None if the JVM has no
        room for it (the heap guard, or a real OutOfMemoryError)."""
        if not self.enabled or self._busy:
            return None
        if not self._heap_room():
            self.failed_inflations += 1
            return None
        self._busy = True
        try:
            try:
                array = self.jvm.new_byte_array(ARRAY_BYTES)
            except MemoryError:
                self.failed_inflations += 1
                return None
            addr = self.jvm.address_of(array)
            key = self._next_key
            self._next_key += 1
            freed = self.heap.add_balloon(key, addr, ARRAY_BYTES + ARRAY_HEADER)
            self._balloons.append(_Balloon(key, array, addr))
        finally:
            self._busy = False
        self.inflations += 1
        self._inflated_in_pass = True
        self.peak_count = max(self.peak_count, self.count)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.emit("balloon", action="inflate", why=why, balloons=self.count,
                  bytes=self.bytes, freed_bytes=freed)
        if self.count > self.soft_max:
            self.wake_reclaimer()  # §9.4: the excess goes with the next release request
        return freed

    # -- the shrinker ----------------------------------------------------------------------------
    def request_memory(self, target: int, hard: bool) -> int:
        """Under pressure, inflate one balloon (past the soft maximum only if ``hard``)."""
        if not self.enabled or target <= 0 or self._busy:
            return 0
        if self.count >= self.soft_max and not hard:
            return 0
        return self.inflate("hard" if hard else "shrinker") or 0

    def end_of_pass(self, target: int, hard: bool, freed: int) -> None:
        """§9.6: after a reclaimer pass, release one balloon if reserved > 1.2 balloons
        (not one inflated by the same pass, which the rule would undo at once)."""
        inflated, self._inflated_in_pass = self._inflated_in_pass, False
        if self.count and not inflated and self.reserved() > PASS_RELEASE:
            self.release(1, "reclaimer")

    # -- release -----------------------------------------------------------------------------------
    def on_gc(self, committed: int, used: int) -> int:
        """§9.6: the release rule after a real collection; returns balloons released."""
        free = committed - used
        qty = 15 * committed - 100 * free
        n = math.ceil(qty / BALLOON_SIZE) if qty > 0 else 0
        return self.release(n, "gc") if n or self.count > self.soft_max else 0

    def release(self, n: int, why: str) -> int:
        """Release ``n`` balloons (plus any excess over the soft maximum), newest first."""
        self.release_requests += 1
        n = min(self.count, n + max(0, self.count - self.soft_max))
        for _ in range(n):
            short = RELEASE_RESERVED - self.reserved()
            if short > 0 and self.arc_shrink is not None:
                self.arc_bytes_released += self.arc_shrink(short)
            b = self._balloons.pop()
            self.heap.remove_balloon(b.key)
            b.array = None  # drop the reference: the next GC frees the array
            self.deflations += 1
            self.emit("balloon", action="deflate", why=why, balloons=self.count,
                      bytes=self.bytes)
        return n

    def release_all(self, why: str = "exit") -> int:
        n = self.count
        while self._balloons:
            b = self._balloons.pop()
            self.heap.remove_balloon(b.key)
            b.array = None
            self.deflations += 1
        if n:
            self.emit("balloon", action="deflate", why=why, balloons=0, bytes=0)
        return n

    def drop_arrays(self) -> None:
        """Let the shared JVM collect the arrays (a later image's run) without touching this
        run's guest, whose summary stays as it ended."""
        for b in self._balloons:
            b.array = None
        self.enabled = False

    # -- GC moves ------------------------------------------------------------------------------------
    def check_moves(self) -> int:
        """Compare each array's address with the last seen; a moved one moves its mapping."""
        moved = 0
        for b in self._balloons:
            addr = self.jvm.address_of(b.array)
            if addr != b.addr:
                self.heap.move_balloon(b.key, addr, ARRAY_BYTES + ARRAY_HEADER)
                b.addr = addr
                moved += 1
                self.emit("balloon", action="move", balloons=self.count, bytes=self.bytes)
        self.gc_moves += moved
        return moved

    def section(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "inflations": self.inflations,
            "deflations": self.deflations,
            "balloons": self.count,
            "bytes": self.bytes,
            "peak_bytes": self.peak_bytes,
            "gc_moves": self.gc_moves,
            "soft_max": self.soft_max,
            "failed_inflations": self.failed_inflations,
            "arc_bytes_released": self.arc_bytes_released,
            "reserved_bytes": self.reserved(),
        }
