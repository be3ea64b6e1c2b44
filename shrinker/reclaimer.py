"""OSv's reclaimer (reference §5): woken under the 10 % watermark, asks every shrinker, wakes
waiters whose request a single free run can serve, and declares out-of-memory when it cannot.

The reclaimer is a kernel thread in OSv. Here a wake sets a flag and :meth:`Reclaimer.run` is the
thread's pass, which the kernel runs at a deterministic point (after the operation that woke it,
or later in simulated time); a wake while a wake is pending is lost, as OSv's wake-one is. A
thread that must wait for memory (``wait_for_memory``) runs a hard pass at once, since in a
one-application simulation nothing else could run first.
"""

from __future__ import annotations

from collections.abc import Callable

from mmsim.mm.constants import MIN_EMERGENCY_POOL, PAGE_SIZE, WATERMARK_LO_PERCENT
from mmsim.mm.page_pool import OutOfPages
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.shrinker.registry import ShrinkerRegistry


def _no_jvm_heap() -> int:
    """No JVM heap counts as free (the default of :attr:`Reclaimer.jvm_heap_bytes`)."""
    return 0


class ReclaimFailed(OutOfPages):
    """Out of memory: the reclaimer could not make a single free run large enough."""

    def __init__(self, requested: int, reason: str, free_bytes: int | None = None,
                 largest_free_run_bytes: int | None = None) -> None:
        super().__init__(requested, free_bytes, largest_free_run_bytes)
        self.requested = requested
        self.reason = reason


class Reclaimer:
    """Memory pressure detection and the shrinker passes, with OSv's thresholds."""

    def __init__(self, ranges: PageRangeAllocator, registry: ShrinkerRegistry) -> None:
        self.ranges = ranges
        self.registry = registry
        self.pending = False
        #: simulated time, for the time of a wake (the kernel sets it)
        self.clock: Callable[[], int] = lambda: 0
        #: when the pending wake happened (meaningful while ``pending``)
        self.woken_ns = 0
        self.wakes = 0
        self.lost_wakes = 0
        self.passes = 0
        self.hard_passes = 0
        self.waits = 0
        #: waits that began although one free run fit the request (must stay 0: a check)
        self.needless_waits = 0
        #: a pass is under way (its allocations skip the 4 MiB rule)
        self.running = False
        self.last_target = 0
        #: bytes of JVM heap counted as free while the balloon is on (§5 on_alloc); 0 otherwise
        self.jvm_heap_bytes: Callable[[], int] = _no_jvm_heap
        #: observers told of each pass: fn(target, hard, freed)
        self.on_pass: list[Callable[[int, bool, int], None]] = []
        #: observers told each time the thread is woken (a wake while pending is lost)
        self.on_wake: list[Callable[[], None]] = []

    @property
    def watermark_lo(self) -> int:
        """10 % of total, in bytes (recomputed as boot hands memory over)."""
        return self.ranges.total_pages * PAGE_SIZE * WATERMARK_LO_PERCENT // 100

    def free_bytes(self) -> int:
        return self.ranges.free_pages * PAGE_SIZE

    def target(self) -> int:
        """Bytes to reclaim: watermark - free under pressure, else 0 (only two levels used)."""
        free = self.free_bytes()
        return self.watermark_lo - free if free < self.watermark_lo else 0

    # -- the allocator's pressure hook ---------------------------------------------------
    def on_alloc(self, npages: int) -> None:
        """Called each time the runs lose pages: wake the reclaimer under the watermark."""
        jvm = self.jvm_heap_bytes  # (not called when it is the default: a large malloc's path)
        if (self.ranges.free_pages * PAGE_SIZE + (0 if jvm is _no_jvm_heap else jvm())
                < self.watermark_lo):
            if self.pending:
                self.lost_wakes += 1
            else:
                self.wake()

    def wake(self) -> None:
        if not self.pending:
            self.pending = True
            self.woken_ns = self.clock()
            self.wakes += 1
            for fn in self.on_wake:
                fn()

    # -- the thread ------------------------------------------------------------------------
    def run(self) -> int:
        """One soft pass if woken: every shrinker gets the target (which may be 0)."""
        if not self.pending:
            return 0
        self.pending = False
        return self._pass(hard=False)

    def _pass(self, hard: bool) -> int:
        target = self.target()
        self.last_target = target
        self.passes += 1
        self.hard_passes += hard
        self.running = True  # OSv's emergency_alloc_level: the reclaimer never waits
        try:
            freed = self.registry.shrink_all(target, hard)
        finally:
            self.running = False
        for fn in self.on_pass:
            fn(target, hard, freed)
        return freed

    # -- waiting for memory ------------------------------------------------------------------
    def fits(self, nbytes: int) -> bool:
        """Whether one free run can serve ``nbytes`` (OSv wakes a waiter only then)."""
        return self.ranges.largest_run() * PAGE_SIZE >= nbytes

    def wait_for_memory(self, nbytes: int) -> None:
        """Block until one free run can serve ``nbytes``, or raise :class:`ReclaimFailed`.

        As OSv's, the waiter is always queued, so it always gets a hard pass, even when a run
        already fits (§5): callers wait only when their own check failed."""
        self._wait(nbytes, needless_check=True)

    def _wait(self, nbytes: int, needless_check: bool) -> None:
        if nbytes > self.ranges.total_pages * PAGE_SIZE:
            raise self._failed(nbytes, "unreasonable allocation: more than total memory")
        self._begin_wait(nbytes, contiguous=True, needless_check=needless_check)
        if not self.fits(nbytes):
            free = self.free_bytes()
            reason = ("fragmentation: no single free run fits although free memory would"
                      if free >= nbytes else "could not reclaim any further")
            raise self._failed(nbytes, reason)

    def has_pages(self, npages: int) -> bool:
        """Whether the runs hold ``npages`` single pages (contiguous or not)."""
        return self.ranges.free_pages >= npages

    def wait_for_pages(self, npages: int) -> None:
        """Block until the runs hold ``npages`` single pages (they need not be contiguous: OSv
        takes them one alloc_page at a time), or raise :class:`ReclaimFailed`."""
        nbytes = npages * PAGE_SIZE
        if nbytes > self.ranges.total_pages * PAGE_SIZE:
            raise self._failed(nbytes, "unreasonable allocation: more than total memory")
        if self.has_pages(npages):
            return
        self._begin_wait(nbytes, contiguous=False, needless_check=True)
        if not self.has_pages(npages):
            raise self._failed(nbytes, "could not reclaim any further")

    def _begin_wait(self, nbytes: int, contiguous: bool, needless_check: bool) -> None:
        """A thread blocks: the reclaimer runs a hard pass at once (its wake is this wait).

        The no-needless-wait check looks at the free runs themselves as the waiter goes to
        sleep, not through :meth:`fits`/:meth:`has_pages`, so a caller that waits although its
        allocation could have been served at once shows up in ``needless_waits``. The 4 MiB
        rule's waits are exempt: OSv makes them whatever the runs hold."""
        if contiguous:
            could_be_served = self.ranges.largest_run() * PAGE_SIZE >= nbytes
        else:
            could_be_served = self.ranges.free_pages * PAGE_SIZE >= nbytes
        self.waits += 1
        self.needless_waits += could_be_served and needless_check
        self.pending = False
        self._pass(hard=True)

    def _failed(self, nbytes: int, reason: str) -> ReclaimFailed:
        """The out-of-memory error, with the runs as they are at the failure."""
        return ReclaimFailed(nbytes, reason, self.free_bytes(),
                             self.ranges.largest_run() * PAGE_SIZE)

    def wait_for_minimum_memory(self) -> None:
        """Before malloc_large and every L2 refill batch: with shrinkers present, a caller
        finding under 4 MiB free waits for the difference (and so gets a hard pass); with none,
        it goes on and uses up what is left (§5). The reclaimer's own allocations never wait."""
        free = self.free_bytes()
        if free < MIN_EMERGENCY_POOL and self.registry.active_count and not self.running:
            self._wait(MIN_EMERGENCY_POOL - free, needless_check=False)

    def summary(self) -> dict[str, int]:
        return {"wakes": self.wakes, "lost_wakes": self.lost_wakes, "passes": self.passes,
                "hard_passes": self.hard_passes, "waits": self.waits,
                "needless_waits": self.needless_waits,
                "watermark_lo_bytes": self.watermark_lo, "last_target_bytes": self.last_target}
