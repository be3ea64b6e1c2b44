"""OSv's single-page caches: a per-CPU L1 stack and the global L2 pool of 32-page batches (§3).

Pages in L1 and L2 are not free (OSv's free_memory counts only the runs), so a freed page stays
"used" until a fill thread drains it. OSv's fill threads are asynchronous; here they run at
deterministic points, when the kernel calls :meth:`PagePool.run_fill_threads` (after each
operation), and only if an allocation or free woke them, as OSv's watermark checks do.

Single-page paths follow OSv step for step. The bulk paths used by page faults and unmaps
(:meth:`alloc_pages`, :meth:`free_pages`) take from / give to L1 first and then go straight to the
runs in whole extents, so that a 2 MiB block of 512 small pages costs O(1) work past the L1
stack; OSv would cycle the same pages through L2 batches one by one (a documented difference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain

from mmsim.mm.constants import L1_MAX, MIN_EMERGENCY_POOL, PAGE_BATCH, PAGE_SIZE
from mmsim.mm.page_range_allocator import PageRangeAllocator

L1_LO = L1_MAX // 4
L1_HI = L1_MAX * 3 // 4
L1_HALF = L1_MAX // 2
MIN_POOL_PAGES = MIN_EMERGENCY_POOL // PAGE_SIZE


class OutOfPages(MemoryError):
    """No free run can supply the pages asked for.

    ``args[0]`` is the bytes the failing allocation asked for (a chunk of the operation, which
    may have asked for more). ``free_bytes`` and ``largest_free_run_bytes``, when set, are the
    runs as they were at the failure, before the caller gave back what it had already taken.
    """

    def __init__(self, requested: int, free_bytes: int | None = None,
                 largest_free_run_bytes: int | None = None) -> None:
        super().__init__(requested)
        self.free_bytes = free_bytes
        self.largest_free_run_bytes = largest_free_run_bytes


class PagePool:
    """L1/L2 page caches in front of a :class:`PageRangeAllocator`."""

    def __init__(self, ranges: PageRangeAllocator, ncpus: int) -> None:
        self.ranges = ranges
        self.ncpus = ncpus
        self._l1: list[list[int]] = [[] for _ in range(ncpus)]
        self._l2: list[list[int]] = []
        self.l2_max = ncpus * (L1_MAX // PAGE_BATCH)
        self.l2_lo = self.l2_max // 4
        self.l2_hi = self.l2_max * 3 // 4
        self._l1_woken: set[int] = set()
        self._l2_woken = False
        #: whether a fill thread has work: a plain attribute, since it is read after every
        #: operation (and every call of a batch); set where a thread is woken
        self.woken = False
        #: before SMP is up, single pages come straight from the runs (OSv's smp_allocator)
        self.smp = False
        #: called with a page count when the runs hold fewer single pages than needed: waits
        #: for memory (the reclaimer's hard pass) or raises OutOfPages
        self.wait_for_pages: Callable[[int], None] | None = None
        #: OSv's wait_for_minimum_memory, called before every batch of pages taken from the
        #: runs (l2::refill) while under 4 MiB are free: with shrinkers it waits (a hard
        #: reclaimer pass) or raises OutOfPages
        self.min_memory: Callable[[], None] | None = None
        self._short: OutOfPages | None = None  # why the last L2 refill came up short
        self._refilling = False  # an L2 refill is taking batches (and may wait for memory)

    # -- counters ------------------------------------------------------------------------
    @property
    def l1_pages(self) -> int:
        return sum(map(len, self._l1))

    def l1_pages_of(self, cpu: int) -> int:
        return len(self._l1[cpu])

    @property
    def l2_pages(self) -> int:
        return len(self._l2) * PAGE_BATCH

    def cached(self) -> Iterator[int]:
        """Every page held in L1 or L2 (for invariant checks, which run after every step of a
        fuzz: chained in C, not yielded one by one)."""
        return chain.from_iterable((*self._l1, *self._l2))

    # -- single pages (OSv's alloc_page / free_page) --------------------------------------
    def alloc_page(self, cpu: int = 0) -> int:
        """One page: pop the CPU's L1 stack, refilling it from L2 (and L2 from the runs)."""
        l1 = self._l1[cpu]
        if len(l1) < L1_LO:
            if not self.smp:
                return self._early_alloc_page()
            self._l1_woken.add(cpu)
            self.woken = True
            if not l1:
                self._l1_refill(cpu)
        return l1.pop()

    def free_page(self, pfn: int, cpu: int = 0) -> None:
        """Push a page on the CPU's L1 stack; a full stack moves a batch to L2 first."""
        l1 = self._l1[cpu]
        if len(l1) > L1_HI or not self.smp:
            if not self.smp:
                self.ranges.free(pfn, 1)
                return
            self._l1_woken.add(cpu)
            self.woken = True
            if len(l1) == L1_MAX:
                self._l1_unfill(cpu)
        l1.append(pfn)

    def _early_alloc_page(self) -> int:
        pfn = self.ranges.alloc(1)
        if pfn is None:
            raise self._failure(PAGE_SIZE)
        return pfn

    def _failure(self, requested: int) -> OutOfPages:
        """The error for a failed allocation, with the runs as they are now (at the failure)."""
        r = self.ranges
        return OutOfPages(requested, r.free_pages * PAGE_SIZE, r.largest_run() * PAGE_SIZE)

    def _l1_refill(self, cpu: int) -> None:
        l1 = self._l1[cpu]
        if len(l1) + PAGE_BATCH < L1_HALF:
            l1.extend(self._l2_alloc_batch())

    def _l1_unfill(self, cpu: int) -> None:
        l1 = self._l1[cpu]
        if len(l1) > PAGE_BATCH + L1_HALF:
            batch = l1[-PAGE_BATCH:]
            del l1[-PAGE_BATCH:]
            self._l2_free_batch(batch)

    def _l2_alloc_batch(self) -> list[int]:
        if len(self._l2) < self.l2_lo:
            self._l2_woken = True
            self.woken = True
        while not self._l2:
            if not self._l2_refill():
                raise self._short or self._failure(PAGE_SIZE)
        # a batch is popped and then consumed from its end, like OSv's L1 pops
        return self._l2.pop()

    def _l2_free_batch(self, batch: list[int]) -> None:
        if len(self._l2) > self.l2_hi:
            self._l2_woken = True
            self.woken = True
        if len(self._l2) == self.l2_max:
            self._l2_unfill()
        self._l2.append(batch)

    def _l2_refill(self) -> bool:
        """Fill L2 to half its size with batches of single pages from the runs.

        As in OSv, the refill waits for memory only when the runs are empty, and at most once:
        a reclaim pass may itself empty the page caches, and waiting again would loop.
        """
        got_any = False
        waited = False
        self._short = None
        self._refilling = True
        try:
            while len(self._l2) < self.l2_max // 2:
                if self.ranges.free_pages < MIN_POOL_PAGES and self.min_memory is not None:
                    self.min_memory()
                if (self.ranges.free_pages == 0 and self.wait_for_pages is not None
                        and not waited):
                    waited = True
                    self.wait_for_pages(1)
                extents = self.ranges.alloc_pages_bulk(PAGE_BATCH)
                pages = [p for start, n in extents for p in range(start, start + n)]
                if len(pages) < PAGE_BATCH:  # OSv aborts a partial batch
                    self._short = self._failure(PAGE_SIZE)  # as it failed, before the give-back
                    for p in pages:
                        self.ranges.free(p, 1)
                    break
                self._l2.append(pages)
                got_any = True
        finally:
            self._refilling = False
        return got_any

    def _l2_unfill(self) -> None:
        while len(self._l2) > self.l2_max // 2:
            for p in self._l2.pop():
                self.ranges.free(p, 1)

    # -- the fill threads ----------------------------------------------------------------
    def start_smp(self) -> None:
        """SMP is up: single pages now go through L1/L2, whose fill threads warm them at once."""
        self.smp = True
        self._l1_woken.update(range(self.ncpus))
        self.woken = True
        self.run_fill_threads()

    def run_fill_threads(self) -> None:
        """Run the woken L1 fill threads (in CPU order) and then the L2 thread, as OSv's do."""
        if not (self._l1_woken or self._l2_woken) or not self.smp:
            return
        for cpu in sorted(self._l1_woken):
            l1 = self._l1[cpu]
            try:
                if len(l1) < L1_LO:
                    while len(l1) + PAGE_BATCH < L1_HALF:
                        l1.extend(self._l2_alloc_batch())
            except OutOfPages:
                pass
            if len(l1) > L1_HI:
                while len(l1) > PAGE_BATCH + L1_HALF:
                    self._l1_unfill(cpu)
        self._l1_woken.clear()
        if not self.l2_lo <= len(self._l2) <= self.l2_hi:
            if len(self._l2) < self.l2_lo:
                self._l2_refill()
            if len(self._l2) > self.l2_hi:
                self._l2_unfill()
        self._l2_woken = False
        self.woken = bool(self._l1_woken)

    def drain(self) -> int:
        """Return every cached page to the runs (a shrinker's last resort); pages returned.

        Not the L2's while an L2 refill is what waits for memory: it would take them back
        batch by batch, under the 4 MiB rule wait again, and be drained again, for ever."""
        n = 0
        for l1 in self._l1:
            for p in l1:
                self.ranges.free(p, 1)
            n += len(l1)
            l1.clear()
        if self._refilling:
            return n
        for batch in self._l2:
            for p in batch:
                self.ranges.free(p, 1)
            n += len(batch)
        self._l2.clear()
        return n

    # -- bulk paths for faults and unmaps ------------------------------------------------
    def alloc_pages(self, npages: int, cpu: int = 0) -> list[tuple[int, int]]:
        """``npages`` single pages as (pfn, n) extents: L1 first, then whole runs.

        Raises :class:`OutOfPages` (after giving everything back) if memory runs out.
        """
        out: list[tuple[int, int]] = []
        l1 = self._l1[cpu]
        if self.smp and l1:
            k = min(npages, len(l1))
            popped = l1[-k:]
            del l1[-k:]
            popped.reverse()
            out = _to_extents(popped)
            npages -= k
            if len(l1) < L1_LO:
                self._l1_woken.add(cpu)
                self.woken = True
        if npages:
            if self.ranges.free_pages < npages and self.wait_for_pages is not None:
                try:
                    self.wait_for_pages(npages)
                except OutOfPages:  # the pages already taken from L1 go back
                    self.free_pages(out, cpu)
                    raise
            got = self._bulk_batches(npages, out, cpu)
            if got < npages:
                e = self._failure(npages * PAGE_SIZE)  # before the pages taken go back
                self.free_pages(out, cpu)
                raise e
        return out

    def _bulk_batches(self, npages: int, out: list[tuple[int, int]], cpu: int) -> int:
        """Take ``npages`` from the runs into ``out`` as OSv's L2 refills would, 32 at a time
        with the 4 MiB rule before each batch: every batch that starts while 4 MiB or more are
        free goes in one step; under that each batch first calls :attr:`min_memory`."""
        ranges = self.ranges
        got = 0
        while got < npages:
            free = ranges.free_pages
            if free >= MIN_POOL_PAGES or self.min_memory is None:
                # the batches starting at free, free-32, ... while that is >= 4 MiB
                room = (free - MIN_POOL_PAGES) // PAGE_BATCH * PAGE_BATCH + PAGE_BATCH
                take = npages - got if self.min_memory is None else min(npages - got, room)
            else:
                try:
                    self.min_memory()
                except OutOfPages:
                    self.free_pages(out, cpu)
                    raise
                take = min(npages - got, PAGE_BATCH)
            extents = ranges.alloc_pages_bulk(take)
            out.extend(extents)
            n = sum(k for _, k in extents)
            got += n
            if n < take:
                break
        return got

    def free_pages(self, extents: list[tuple[int, int]], cpu: int = 0) -> None:
        """Free single pages: they fill the CPU's L1 stack, the rest go back to the runs."""
        l1 = self._l1[cpu]
        for start, n in extents:
            room = L1_MAX - len(l1) if self.smp else 0
            k = min(room, n)
            if k:
                l1.extend(range(start, start + k))
            if n > k:
                self.ranges.free(start + k, n - k)
        if self.smp and len(l1) > L1_HI:
            self._l1_woken.add(cpu)
            self.woken = True


def _to_extents(pages: list[int]) -> list[tuple[int, int]]:
    """Group a sequence of pfns into (start, n) runs of consecutive frames, keeping order."""
    out: list[tuple[int, int]] = []
    start = prev = pages[0]
    for p in pages[1:]:
        if p != prev + 1:
            out.append((start, prev - start + 1))
            start = p
        prev = p
    out.append((start, prev - start + 1))
    return out
