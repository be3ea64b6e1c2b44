"""OSv's JVM balloon (reference §9, corrected 2026-12-02), against a real JVM.

A balloon is a real 128 MiB ``byte[]`` in the real heap, held by a reference (OSv held a JNI
global reference), whose 2 MiB-aligned interior is given back to the guest's page allocator:
the application really has that much less heap, the guest that much more memory. The rules are
those of OSv's code (modules/java-base/balloon/jvm_balloon.cc), where the balloon is **not** a
reclaimer shrinker (since 3c716bda, 2014-02-24):

- reserved = free + jvm_heap - allowance, where jvm_heap is the heap's faulted pages and the
  allowance the heap's length less the interiors given back. Every allocation with reserved
  <= 4 MiB requests the balloon thread (``adjust_memory``).
- The balloon thread: if it holds more than the soft maximum (maxHeap/256 MiB - 1, an unsigned
  figure that wraps to 4294967295 under a 256 MiB heap) it wakes the reclaimer; a pending release
  takes the excess over the soft maximum too; each release first shrinks the ARC
  (``arc_sized_adjust(balloon - reserved)``, until reserved reaches a balloon or the ARC frees
  nothing) and is given up if reserved is still short; then it inflates while reserved <= 0,
  with no soft-maximum check.
- After each real GC (a javax.management notification): qty = 15 x committed - 100 x free of the
  heap; if positive, ceil(qty / 128 MiB) balloons are to be released.
- At the end of each reclaimer pass, if reserved > 1.2 balloons, one is to be released, once per
  release (``voluntary_return``: re-armed whenever a balloon goes back).
- A GC that moves an array (seen as a new address) moves the balloon mapping.

Guards (not OSv's): inflation needs the real heap to keep 15 % of its maximum free afterwards
(a nearly full heap makes the JVM thrash in GC for minutes instead of failing, jpype-jvm.md §2);
and a balloon's array is held through a soft reference, not OSv's global reference, so the JVM
clears it rather than throw OutOfMemoryError at an application whose live set fits its heap
(the releases are asynchronous to the application, in OSv as here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from mmsim.balloon.heap import ARRAY_HEADER, JavaHeap
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_range_allocator import PageRangeAllocator

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
#: OSv's _soft_max_balloons is unsigned: (heap / 256 MiB) - 1 wraps under a 256 MiB heap
SOFT_MAX_WRAPPED = 4_294_967_295


class JvmLike(Protocol):
    """What the balloon needs of the real JVM (balloon.jvm.HostJvm)."""

    max_heap_bytes: int

    def new_byte_array(self, nbytes: int) -> Any: ...

    def address_of(self, obj: Any) -> int: ...

    def soft_reference(self, obj: Any) -> Any: ...

    def heap(self) -> tuple[int, int, int]: ...


def soft_max_balloons(max_heap: int) -> int:
    """§9.4: maxHeap / 256 MiB - 1, as OSv's unsigned arithmetic has it (wrapping under
    256 MiB: no soft maximum at all)."""
    n = max_heap // (2 * BALLOON_SIZE) - 1
    return n if n >= 0 else SOFT_MAX_WRAPPED


class _Balloon:
    """One balloon: its array held only through a soft reference (``ref.get()``)."""

    __slots__ = ("ref", "key", "addr")

    def __init__(self, key: int, ref: Any, addr: int | None) -> None:
        self.key = key
        self.ref = ref
        self.addr = addr


class JvmBalloon:
    """The balloon thread's state and rules: requests, pending releases, the balloons."""

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
        self.requested = False  # OSv's _pending: an inflation request (reserved <= 4 MiB)
        self.pending_release = 0  # OSv's _pending_release: balloons to give back
        self._voluntary = True  # OSv's balloon_voluntary_return
        # statistics (the summary's `balloon` section)
        self.inflations = 0
        self.deflations = 0
        self.gc_moves = 0
        self.peak_count = 0
        self.peak_bytes = 0
        self.failed_inflations = 0
        self.arc_bytes_released = 0
        self.release_requests = 0
        self.abandoned_releases = 0  # releases given up: reserved short of a balloon
        self.cleared = 0  # balloons the JVM cleared before an OutOfMemoryError
        self._why_release = "gc"

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
        """``adjust_memory(4 MiB)``, run after each operation: request the balloon thread when
        reserved <= 4 MiB. True if the thread has work (a request or a pending release)."""
        if self.enabled and not self.requested and self.reserved() <= REQUEST_RESERVED:
            self.requested = True
        return self.requested or self.pending_release > 0

    def run_thread(self) -> int:
        """The balloon thread's turn (``_thread_loop``): wake the reclaimer over the soft
        maximum, the pending releases (with the excess), then inflate while reserved <= 0.
        Returns the bytes inflation gave back to the allocator."""
        if not (self.requested or self.pending_release):
            return 0
        if self.count > self.soft_max:
            self.wake_reclaimer()
        if self.pending_release and self.count > self.soft_max:
            self.pending_release += self.count - self.soft_max
        while self.pending_release:
            if not self._balloons:
                self.pending_release = 0
                break
            freed = 1
            while self.reserved() < RELEASE_RESERVED and freed and self.arc_shrink is not None:
                freed = self.arc_shrink(RELEASE_RESERVED - self.reserved())
                self.arc_bytes_released += freed
            if self.reserved() >= RELEASE_RESERVED:
                self.pending_release -= 1
                self._release_one(self._why_release)
            else:  # the guest could not back a bigger heap: give up, as OSv does
                self.pending_release = 0
                self.abandoned_releases += 1
        self.requested = False
        freed = 0
        while self.reserved() <= 0:
            got = self.inflate("reserved")
            if got is None:
                break
            freed += got
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
            ref = self.jvm.soft_reference(array)
            del array  # the soft reference alone holds it
            key = self._next_key
            self._next_key += 1
            freed = self.heap.add_balloon(key, addr, ARRAY_BYTES + ARRAY_HEADER)
            self._balloons.append(_Balloon(key, ref, addr))
        finally:
            self._busy = False
        self.inflations += 1
        self.peak_count = max(self.peak_count, self.count)
        self.peak_bytes = max(self.peak_bytes, self.bytes)
        self.emit("balloon", action="inflate", why=why, balloons=self.count,
                  bytes=self.bytes, freed_bytes=freed)
        return freed

    # -- release ---------------------------------------------------------------------------------
    def end_of_pass(self, target: int, hard: bool, freed: int) -> None:
        """``voluntary_return`` at the end of each reclaimer pass: with reserved above 1.2
        balloons, one release, once until a balloon goes back."""
        if self.count and self.reserved() > PASS_RELEASE and self._voluntary:
            self._voluntary = False
            self.release_memory(1, "reclaimer")

    def on_gc(self, committed: int, used: int) -> int:
        """The GC listener (OSvGCMonitor): qty = 15 x committed - 100 x free; if positive,
        ceil(qty / 128 MiB) balloons are released, on the listener's turn itself, so that
        the heap has them back before the application's next allocation. Returns balloons
        released."""
        free = committed - used
        qty = 15 * committed - 100 * free
        if qty <= 0:
            return 0
        before = self.deflations
        self.release_memory(math.ceil(qty / BALLOON_SIZE), "gc")
        self.run_thread()
        return self.deflations - before

    def release_memory(self, n: int, why: str) -> None:
        """OSv's ``release_memory(n)``: ``n`` more balloons for the thread to give back."""
        self.release_requests += 1
        self.pending_release += n
        self._why_release = why

    def _release_one(self, why: str) -> None:
        """Drop the newest balloon's reference (``return_heap`` re-arms the voluntary return)."""
        b = self._balloons.pop()
        self.heap.remove_balloon(b.key)
        b.ref = None  # drop the reference: the next GC frees the array
        self.deflations += 1
        self._voluntary = True
        self.emit("balloon", action="deflate", why=why, balloons=self.count, bytes=self.bytes)

    def release_all(self, why: str = "exit") -> int:
        n = self.count
        while self._balloons:
            b = self._balloons.pop()
            self.heap.remove_balloon(b.key)
            b.ref = None
            self.deflations += 1
        if n:
            self.emit("balloon", action="deflate", why=why, balloons=0, bytes=0)
        return n

    def drop_arrays(self) -> None:
        """Let the shared JVM collect the arrays (a later image's run) without touching this
        run's guest, whose summary stays as it ended."""
        for b in self._balloons:
            b.ref = None
        self.enabled = False

    # -- GC moves ------------------------------------------------------------------------------------
    def check_moves(self) -> int:
        """After a collection: each array's address against the last seen (a moved one moves
        its mapping), and the arrays the JVM cleared (it clears soft references before it
        would throw OutOfMemoryError: those balloons are back in the heap, ``jvm_cleared``).
        Reading each reference also keeps it recently used. Returns the arrays moved."""
        moved = 0
        for b in list(self._balloons):
            array = self._array(b)
            if array is None:
                self._balloons.remove(b)
                self.heap.remove_balloon(b.key)
                b.ref = None
                self.deflations += 1
                self.cleared += 1
                self._voluntary = True
                self.emit("balloon", action="deflate", why="jvm_cleared", balloons=self.count,
                          bytes=self.bytes)
                continue
            addr = self.jvm.address_of(array)
            del array
            if addr != b.addr:
                self.heap.move_balloon(b.key, addr, ARRAY_BYTES + ARRAY_HEADER)
                b.addr = addr
                moved += 1
                self.emit("balloon", action="move", balloons=self.count, bytes=self.bytes)
        self.gc_moves += moved
        return moved

    @staticmethod
    def _array(b: _Balloon) -> Any:
        """The balloon's array, or None once the JVM cleared its reference."""
        return b.ref.get() if b.ref is not None else None

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
            "abandoned_releases": self.abandoned_releases,
            "cleared": self.cleared,
            "reserved_bytes": self.reserved(),
        }
