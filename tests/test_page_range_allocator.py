"""The physical page allocator against OSv's rules (reference §2, §3, §12.3-4)."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from mm.page_pool import L1_HI, L1_MAX, OutOfPages, PagePool
from mm.page_range_allocator import TREE, PageRangeAllocator, run_order


def fresh(npages: int, start: int = 1) -> PageRangeAllocator:
    r = PageRangeAllocator()
    r.add_initial_range(start, npages)
    return r


def test_normal_allocation_takes_the_low_part_and_aligned_the_high_end():
    r = fresh(1024, start=1024)
    assert r.alloc(3) == 1024
    s = r.alloc_aligned(512, 512)
    assert s == 1536  # the highest 512-aligned piece of [1027, 2048)
    r.check()


def test_lowest_qualifying_list_front_run_is_taken():
    r = PageRangeAllocator()
    r.add_initial_range(100, 4)   # list 2
    r.add_initial_range(200, 8)   # list 3
    r.add_initial_range(300, 5)   # list 2, inserted last: the front of list 2
    assert r.alloc(3) == 300      # ceil(log2 3) = 2 -> list 2, its front (LIFO)
    assert r.alloc(5) == 200      # needs order 3: list 3
    r.check()


def test_contiguous_scan_of_the_list_below():
    r = PageRangeAllocator()
    r.add_initial_range(10, 6)    # list 2 (4..7 pages)
    # 5 pages need order 3; nothing there, but list 2 holds a run of 6
    assert r.alloc(5, contiguous=False) is None
    assert r.alloc(5) == 10
    r.check()


def test_tree_takes_the_largest_run():
    r = PageRangeAllocator()
    r.add_initial_range(1 << 20, 1 << 16)
    r.add_initial_range(1 << 24, 1 << 17)
    assert run_order(1 << 17) == TREE
    assert r.alloc(1 << 16) == 1 << 24  # worst fit: the largest run of the set
    r.check()


def test_free_coalesces_with_both_neighbours():
    r = fresh(300)
    a, b, c = r.alloc(100), r.alloc(100), r.alloc(100)
    r.free(a, 100)
    r.free(c, 100)
    assert r.nr_runs == 2
    r.free(b, 100)
    assert list(r.runs()) == [(1, 300)]
    r.check()


def test_bulk_single_pages_equal_successive_single_allocations():
    def setup():
        r = PageRangeAllocator()
        for start, n in [(10, 3), (50, 17), (200, 70000), (90000, 9)]:
            r.add_initial_range(start, n)
        return r

    one_by_one = setup()
    singles = [one_by_one.alloc(1) for _ in range(100)]
    bulk = setup()
    extents = bulk.alloc_pages_bulk(100)
    assert [p for s, n in extents for p in range(s, s + n)] == singles
    assert list(bulk.runs()) == list(one_by_one.runs())


def test_l1_counts_as_used_until_it_overflows():
    r = fresh(100_000)
    pool = PagePool(r, ncpus=1)
    pool.start_smp()
    warm = pool.l1_pages
    assert 224 <= warm < 256  # the fill thread's target band
    free_before = r.free_pages
    p = pool.alloc_page()
    pool.free_page(p)
    assert r.free_pages == free_before  # the page went back to L1, not to the runs
    pages = [pool.alloc_page() for _ in range(L1_MAX)]
    for q in pages:
        pool.free_page(q)
    assert pool.l1_pages <= L1_MAX
    pool.run_fill_threads()
    assert pool.l1_pages <= L1_HI


def test_a_bulk_allocation_that_cannot_wait_gives_its_l1_pages_back():
    r = fresh(100_000)
    pool = PagePool(r, ncpus=1)
    pool.start_smp()
    eaten = r.alloc_pages_bulk(r.free_pages - 10)
    l1 = pool.l1_pages

    def no_memory(npages: int) -> None:
        raise OutOfPages(npages * 4096)

    pool.wait_for_pages = no_memory
    with pytest.raises(OutOfPages):
        pool.alloc_pages(l1 + 100)
    assert pool.l1_pages == l1 and r.free_pages == 10  # nothing lost
    assert sum(n for _, n in eaten) + l1 + pool.l2_pages + 10 == r.total_pages


class PageAllocatorMachine(RuleBasedStateMachine):
    """Random run, aligned, huge and single-page traffic: runs never overlap, stay coalesced
    and sit in the right container; free + allocated + cached == total."""

    allocations = Bundle("allocations")

    def __init__(self) -> None:
        super().__init__()
        self.ranges = PageRangeAllocator()
        # two separate areas, so that coalescing across a hole would be a bug
        self.ranges.add_initial_range(1, 3000)
        self.ranges.add_initial_range(4096, 70000)
        self.pool = PagePool(self.ranges, ncpus=2)
        self.pool.start_smp()
        self.owned: dict[int, int] = {}  # start -> npages, everything the test holds

    def _own(self, start: int, n: int) -> tuple[int, int]:
        for s, m in self.owned.items():
            assert start + n <= s or s + m <= start, "allocation overlaps a live one"
        self.owned[start] = n
        return start, n

    @rule(target=allocations, n=st.integers(1, 5000))
    def alloc(self, n):
        start = self.ranges.alloc(n)
        if start is None:
            assert self.ranges.largest_run() < n  # fails only when no single run fits
            return None
        return self._own(start, n)

    @rule(target=allocations, n=st.integers(1, 600), align=st.sampled_from([1, 8, 64, 512]))
    def alloc_aligned(self, n, align):
        start = self.ranges.alloc_aligned(n, align)
        if start is None:
            return None
        assert start % align == 0
        return self._own(start, n)

    @rule(target=allocations, cpu=st.integers(0, 1))
    def alloc_page(self, cpu):
        try:
            return (*self._own(self.pool.alloc_page(cpu), 1), cpu)
        except OutOfPages:
            return None

    @rule(target=allocations, n=st.integers(1, 1200), cpu=st.integers(0, 1))
    def alloc_pages(self, n, cpu):
        try:
            extents = self.pool.alloc_pages(n, cpu)
        except OutOfPages:
            return None
        assert sum(k for _, k in extents) == n
        for s, k in extents:
            self._own(s, k)
        return ("bulk", extents, cpu)

    @rule(a=consumes(allocations))
    def free(self, a):
        if a is None:
            return
        if a[0] == "bulk":
            _, extents, cpu = a
            for s, _ in extents:
                del self.owned[s]
            self.pool.free_pages(extents, cpu)
        elif len(a) == 3:
            start, _, cpu = a
            del self.owned[start]
            self.pool.free_page(start, cpu)
        else:
            start, n = a
            del self.owned[start]
            self.ranges.free(start, n)

    @precondition(lambda self: True)
    @rule()
    def fill_threads(self):
        self.pool.run_fill_threads()

    @invariant()
    def structure_and_conservation(self):
        self.ranges.check()
        held = sum(self.owned.values())
        cached = self.pool.l1_pages + self.pool.l2_pages
        assert self.ranges.free_pages + held + cached == self.ranges.total_pages
        free_runs = list(self.ranges.runs())
        for a, b in zip(free_runs, free_runs[1:]):
            assert a[0] + a[1] < b[0], "adjacent free runs were not coalesced"
        cached_pages = [(p, 1) for p in self.pool.cached()]
        pieces = sorted(free_runs + list(self.owned.items()) + cached_pages)
        for a, b in zip(pieces, pieces[1:]):
            assert a[0] + a[1] <= b[0], f"{a} overlaps {b}: a page is both free and in use"


TestPageAllocator = PageAllocatorMachine.TestCase
