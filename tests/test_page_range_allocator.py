"""The physical page allocator against OSv's rules (reference §2, §3, §12.3-4)."""

import pytest
from mmsim.mm.page_pool import L1_HI, L1_MAX, OutOfPages, PagePool
from mmsim.mm.page_range_allocator import TREE, PageRangeAllocator, run_order

from mmsim.machines import PageAllocatorMachine  # the state machine lives in the package


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


TestPageAllocator = PageAllocatorMachine.TestCase
