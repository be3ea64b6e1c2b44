"""OSv's physical page allocator: free page runs in power-of-two lists plus a size-ordered set.

A free run of n pages lives on list floor(log2 n) when that order is below 16, else in a set
ordered by size (reference §2). Lists are LIFO: a dict per order keeps insertion order, so its
"front" is the most recently inserted key and removing any run is O(1). Runs are keyed by their
first page frame number (pfn); the state is one entry per free run, never one per page.

The size-ordered set holds only runs of 2**16 pages (256 MiB) or more, so it is a handful of
runs: a plain list kept sorted (bisect) serves it faster than a balanced structure would. The
hot paths (taking the low part of a run, freeing) inline the container updates; each does the
same inserts and deletes, in the same order, as :meth:`_remove` then :meth:`_insert` would.

Where mm/_page_ranges_c.c is built, :data:`PageRangeAllocator` is its ``PageRanges``: the same
runs and choices (tests/test_page_ranges_c.py holds the two equal), with no Python objects per
run, so that the C malloc loop takes and returns pages without calling Python.
"""

from __future__ import annotations

import os
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator

from mmsim.mm.constants import PAGE_RANGES_MAX_ORDER, PAGE_SIZE

try:
    if os.environ.get("MMSIM_PURE_PYTHON"):
        raise ImportError
    from mmsim.mm import _page_ranges_c
except ImportError:  # not compiled on this machine, or turned off: the pure-Python twin
    _page_ranges_c = None

TREE = PAGE_RANGES_MAX_ORDER  # container index of the size-ordered set
_LISTS = (1 << TREE) - 1  # mask bits of the lists


def run_order(npages: int) -> int:
    """Container a free run of ``npages`` belongs to (16 = the size-ordered set)."""
    return min(npages.bit_length() - 1, TREE)


class PyPageRangeAllocator:
    """Free physical memory as coalesced runs of pages, with OSv's allocation policy."""

    def __init__(self) -> None:
        self._lists: list[dict[int, int]] = [{} for _ in range(TREE)]
        self._tree: list[tuple[int, int]] = []  # (npages, start), ascending
        self._by_start: dict[int, int] = {}
        self._by_end: dict[int, int] = {}  # exclusive end pfn -> start pfn
        self._mask = 0  # bit k set iff container k is non-empty
        self.free_pages = 0
        self.total_pages = 0
        #: the most pages ever out of the runs (used, cached or in page tables)
        self.peak_used_pages = 0
        #: called with the number of pages each time the runs lose pages (OSv's on_alloc)
        self.on_alloc: Callable[[int], None] | None = None
        #: on_alloc only while free memory is under this % of the total (None: always): the
        #: reclaimer acts only under its watermark, and a call above it would be for nothing
        self.on_alloc_percent: int | None = None

    # -- containers ---------------------------------------------------------------------
    def _insert(self, start: int, npages: int) -> None:
        order = npages.bit_length() - 1  # run_order, inlined
        if order >= TREE:
            order = TREE
            insort(self._tree, (npages, start))
        else:
            self._lists[order][start] = npages
        self._mask |= 1 << order
        self._by_start[start] = npages
        self._by_end[start + npages] = start

    def _remove(self, start: int, npages: int) -> None:
        order = npages.bit_length() - 1  # run_order, inlined
        if order >= TREE:
            tree = self._tree
            del tree[bisect_left(tree, (npages, start))]  # always there: runs are in one place
            if not tree:
                self._mask &= ~(1 << TREE)
        else:
            lst = self._lists[order]
            del lst[start]
            if not lst:
                self._mask &= ~(1 << order)
        del self._by_start[start]
        del self._by_end[start + npages]

    def _take(self, start: int, npages: int, piece_start: int, piece_pages: int) -> None:
        """Remove ``piece`` from the free run ``start``; the parts around it stay free."""
        self._remove(start, npages)
        if piece_start > start:
            self._insert(start, piece_start - start)
        end = start + npages
        piece_end = piece_start + piece_pages
        if piece_end < end:
            self._insert(piece_end, end - piece_end)
        self._taken(piece_pages)

    def _taken(self, npages: int) -> None:
        """``npages`` left the free runs: the counts, the peak, the pressure hook."""
        self.free_pages -= npages
        if self.total_pages - self.free_pages > self.peak_used_pages:
            self.peak_used_pages = self.total_pages - self.free_pages
        if self.on_alloc is not None and (
                self.on_alloc_percent is None or self.free_pages * PAGE_SIZE
                < self.total_pages * PAGE_SIZE * self.on_alloc_percent // 100):
            self.on_alloc(npages)

    # -- the allocator's interface -------------------------------------------------------
    def add_initial_range(self, start: int, npages: int) -> None:
        """free_initial_memory_range: hand boot memory to the allocator; it counts in total."""
        if npages <= 0:
            return
        self.total_pages += npages
        self.free(start, npages)

    def alloc(self, npages: int, contiguous: bool = True) -> int | None:
        """Allocate ``npages``; the caller gets the low part of the chosen run (§2)."""
        if npages <= 0:
            raise ValueError("alloc of no pages")
        e = (npages - 1).bit_length()  # the order npages rounds up to
        if e > TREE:
            e = TREE
        eligible = self._mask >> e << e
        if eligible & _LISTS:
            order = (eligible & -eligible).bit_length() - 1
            lst = self._lists[order]
            start = next(reversed(lst))
            run = lst[start]
        elif eligible:
            run, start = self._tree[-1]
            if run < npages:
                return None
        elif contiguous and e > 0 and self._mask >> (e - 1) & 1:
            for start in reversed(self._lists[e - 1]):
                if self._lists[e - 1][start] >= npages:
                    run = self._lists[e - 1][start]
                    break
            else:
                return None
        else:
            return None
        # the low npages of the run (_take(start, run, start, npages), inlined). When the run
        # is the set's largest and the rest stays in the set above the run below it, the rest
        # takes the run's place in the list: the set _remove then _insert would leave, without
        # the shuffle (the dicts lose the run and gain the rest as they would)
        rest = run - npages
        new = start + npages
        tree = self._tree
        if rest >> TREE and tree[-1] == (run, start) and (len(tree) == 1
                                                          or tree[-2] < (rest, new)):
            tree[-1] = (rest, new)  # the run and its rest both in the size-ordered set
            by_start = self._by_start
            del by_start[start]
            by_start[new] = rest
            self._by_end[new + rest] = new
        else:
            self._remove(start, run)
            if rest:
                self._insert(new, rest)
        self._taken(npages)
        return start

    def alloc_pages_bulk(self, npages: int) -> list[tuple[int, int]]:
        """The pages ``npages`` successive single-page allocs would get, as (pfn, n) extents.

        After a single page is split off the lowest non-empty container's front run, the
        remainder goes to the front of a list no higher than before, and every lower list is
        empty: so the same run keeps being chosen until it is used up. Bulk allocation takes it
        from its low end in one step. Returns fewer pages when memory runs out.
        """
        out: list[tuple[int, int]] = []
        while npages > 0 and self._mask:
            mask = self._mask
            if mask & ((1 << TREE) - 1):
                order = (mask & -mask).bit_length() - 1
                start = next(reversed(self._lists[order]))
                run = self._lists[order][start]
            else:
                run, start = self._tree[-1]
            take = min(run, npages)
            self._take(start, run, start, take)
            out.append((start, take))
            npages -= take
        return out

    def alloc_aligned(
        self, npages: int, align_pages: int, offset_pages: int = 0
    ) -> int | None:
        """Carve ``npages`` from the high end of a run so that start+offset is aligned (§2).

        Visits the size-ordered set ascending, then lists 15 down to max(log2 pages, 1) - 1,
        taking the first run the piece fits in.
        """
        if (npages <= 0 or align_pages <= 0 or align_pages & (align_pages - 1)
                or offset_pages < 0):
            raise ValueError("bad aligned allocation")

        def fit(start: int, run: int) -> int | None:
            end = start + run
            s = ((end - npages + offset_pages) // align_pages) * align_pages - offset_pages
            return s if s >= start else None

        for run, start in self._tree:
            if run >= npages:
                s = fit(start, run)
                if s is not None:
                    self._take(start, run, s, npages)
                    return s
        low = max(npages.bit_length() - 1, 1) - 1
        for order in range(TREE - 1, low - 1, -1):
            if not self._mask >> order & 1:
                continue
            for start in reversed(self._lists[order]):
                run = self._lists[order][start]
                if run >= npages:
                    s = fit(start, run)
                    if s is not None:
                        self._take(start, run, s, npages)
                        return s
        return None

    def free(self, start: int, npages: int) -> None:
        """Return a run, merging it with free neighbours on both sides."""
        if npages <= 0:
            return
        self.free_pages += npages
        prev_start = self._by_end.get(start)
        if prev_start is not None:
            prev_pages = self._by_start[prev_start]
            self._remove(prev_start, prev_pages)
            start, npages = prev_start, npages + prev_pages
        nxt = start + npages
        next_pages = self._by_start.get(nxt)
        if next_pages is not None:
            tree = self._tree
            if next_pages >> TREE and tree[-1] == (next_pages, nxt):
                # the set's largest run grows down: the merged run, larger still, takes its
                # place at the set's end (what _remove then _insert would leave)
                npages += next_pages
                tree[-1] = (npages, start)
                by_start = self._by_start
                del by_start[nxt]
                by_start[start] = npages
                self._by_end[start + npages] = start
                return
            self._remove(nxt, next_pages)
            npages += next_pages
        self._insert(start, npages)

    # -- inspection ----------------------------------------------------------------------
    def runs(self) -> Iterator[tuple[int, int]]:
        """Free runs as (start, npages), in address order."""
        for start in sorted(self._by_start):
            yield start, self._by_start[start]

    @property
    def nr_runs(self) -> int:
        return len(self._by_start)

    def largest_run(self) -> int:
        """Pages in the largest free run (what the biggest single request could get)."""
        if self._tree:
            return self._tree[-1][0]
        for order in range(TREE - 1, -1, -1):
            if self._lists[order]:
                return max(self._lists[order].values())
        return 0

    def runs_by_size(self) -> Iterator[tuple[int, int]]:
        """Runs in OSv's wake_waiters order: the set ascending, then lists high to low."""
        for run, start in self._tree:
            yield start, run
        for order in range(TREE - 1, -1, -1):
            for start in reversed(self._lists[order]):
                yield start, self._lists[order][start]

    def check(self) -> None:
        """Assert the structural invariants (used by tests and `mmsim fuzz`)."""
        seen = 0
        prev_end = -1
        for start, npages in self.runs():
            assert npages > 0, "empty run"
            assert start > prev_end, f"run {start:#x} overlaps or touches the previous one"
            prev_end = start + npages
            order = run_order(npages)
            if order == TREE:
                assert (npages, start) in self._tree, "run missing from the size-ordered set"
            else:
                assert self._lists[order].get(start) == npages, "run on the wrong list"
            assert self._by_end[start + npages] == start
            seen += npages
        assert seen == self.free_pages, f"free count {self.free_pages} != pages in runs {seen}"
        assert len(self._tree) + sum(map(len, self._lists)) == len(self._by_start)
        for order in range(TREE + 1):
            nonempty = bool(self._tree) if order == TREE else bool(self._lists[order])
            assert bool(self._mask >> order & 1) == nonempty, f"mask bit {order} is stale"


PageRangeAllocator: type[PyPageRangeAllocator]
if _page_ranges_c is not None and _page_ranges_c.PAGE_SIZE == PAGE_SIZE \
        and _page_ranges_c.TREE == TREE:
    PageRangeAllocator = _page_ranges_c.PageRanges  # type: ignore[assignment]
else:
    PageRangeAllocator = PyPageRangeAllocator
