"""OSv's malloc as a user of the simulator relies on it: size classes, layouts, thresholds and
when pages go back (reference §4, §12.1-12.2)."""

from __future__ import annotations

import tracemalloc

import pytest
from mmsim.kernel import Kernel, KernelConfig
from mmsim.mm.constants import HUGE_PAGE_SIZE, MAIN_AREA, MEMPOOL_AREA, PAGE_AREA, PAGE_SIZE
from mmsim.mm.page_pool import PagePool
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.mm.slab import CROSS_CPU_SIGNAL, InvalidPointer, Malloc, MallocAbort

MIB = 1 << 20


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(KernelConfig(memory=256 << 20, cpus=2))


@pytest.fixture
def m(kernel: Kernel) -> Malloc:
    return kernel.malloc.malloc  # type: ignore[attr-defined, no-any-return]


def bare_pool(pages: int = 1 << 15, cpus: int = 2, smp: bool = True) -> PagePool:
    ranges = PageRangeAllocator()
    ranges.add_initial_range(16, pages)
    pool = PagePool(ranges, cpus)
    if smp:
        pool.start_smp()
    return pool


def page_offset(addr: int) -> int:
    return addr & (PAGE_SIZE - 1)


# -- §12.1: which allocator, and how much it gives --------------------------------------------

@pytest.mark.parametrize("n, cls", [
    (0, 8), (1, 8), (7, 8), (8, 8), (9, 16), (16, 16), (17, 32), (33, 64), (100, 128),
    (256, 256), (257, 512), (512, 512), (513, 1024), (1000, 1024), (1024, 1024)])
def test_small_requests_take_the_next_power_of_two_pool(m: Malloc, n: int, cls: int) -> None:
    p = m.malloc(n)
    assert MEMPOOL_AREA <= p < MEMPOOL_AREA + (1 << 44)
    assert m.malloc_usable_size(p) == cls
    assert m.kind_of(p) == str(cls)


@pytest.mark.parametrize("cls, per_page, first", [
    (8, 507, 40), (16, 253, 48), (32, 126, 64), (64, 63, 64), (128, 31, 128), (256, 15, 256),
    (512, 7, 512), (1024, 3, 1024)])
def test_pool_page_layout(m: Malloc, cls: int, per_page: int, first: int) -> None:
    """floor(4056/S) objects a page, laid out from the page's end, lowest handed out first."""
    addrs = [m.malloc(cls, cpu=1) for _ in range(per_page + 1)]
    pages = {a >> 12 for a in addrs[:per_page]}
    assert len(pages) == 1, "the first floor(4056/S) objects share one page"
    assert addrs[per_page] >> 12 not in pages, "one more needs a second page"
    assert page_offset(addrs[0]) == first
    assert addrs[:per_page] == [addrs[0] + i * cls for i in range(per_page)]
    assert page_offset(addrs[per_page - 1]) + cls == PAGE_SIZE
    assert m.pool_of(1, cls).npages == 2


@pytest.mark.parametrize("n", [1025, 2048, 4095, 4096])
def test_1025_to_4096_bytes_take_one_whole_page(kernel: Kernel, m: Malloc, n: int) -> None:
    before = kernel.memory_categories()["malloc_pages"]
    p = m.malloc(n)
    assert PAGE_AREA <= p < PAGE_AREA + (1 << 44) and page_offset(p) == 0
    assert m.malloc_usable_size(p) == PAGE_SIZE
    assert kernel.memory_categories()["malloc_pages"] - before == PAGE_SIZE
    m.free(p)
    assert kernel.memory_categories()["malloc_pages"] == before


@pytest.mark.parametrize("n, pages", [(4097, 2), (8128, 2), (8129, 3), (8192, 3), (100_000, 25)])
def test_larger_requests_take_runs_behind_a_64_byte_header(
        kernel: Kernel, m: Malloc, n: int, pages: int) -> None:
    free_before = kernel.ranges.free_pages
    p = m.malloc(n)
    assert MAIN_AREA <= p < PAGE_AREA and page_offset(p) == 64
    assert kernel.ranges.free_pages == free_before - pages
    assert kernel.memory_categories()["malloc_large"] == pages * PAGE_SIZE
    assert m.malloc_usable_size(p) == pages * PAGE_SIZE - 64
    m.free(p)
    assert kernel.ranges.free_pages == free_before


def test_the_mmap_threshold(kernel: Kernel, m: Malloc) -> None:
    """Totals (n + 64, page-rounded) of 2 MiB and more are populated anonymous mappings."""
    below = 511 * PAGE_SIZE - 64  # 2,092,992: the largest request that stays a run
    p = m.malloc(below)
    assert MAIN_AREA <= p < PAGE_AREA
    assert kernel.memory_categories()["malloc_large"] == 511 * PAGE_SIZE
    anon_before = kernel.memory_categories()["anonymous"]
    q = m.malloc(below + 1)
    assert q < MAIN_AREA and page_offset(q) == 64
    assert m.malloc_usable_size(q) == HUGE_PAGE_SIZE - 64
    assert kernel.memory_categories()["anonymous"] - anon_before == HUGE_PAGE_SIZE
    assert kernel.memory_categories()["malloc_large"] == 511 * PAGE_SIZE
    m.free(q)
    assert kernel.memory_categories()["anonymous"] == anon_before
    m.free(p)
    assert kernel.memory_categories()["malloc_large"] == 0


def test_without_an_address_space_mappings_come_from_the_pages() -> None:
    pool = bare_pool()
    m = Malloc(pool)
    free = pool.ranges.free_pages + pool.l1_pages + pool.l2_pages
    p = m.malloc(3 * MIB)
    assert p < MAIN_AREA and m.malloc_usable_size(p) == 3 * MIB + PAGE_SIZE - 64
    assert m.large_pages == (3 * MIB + PAGE_SIZE) // PAGE_SIZE
    assert pool.ranges.free_pages + pool.l1_pages + pool.l2_pages == free - m.large_pages
    m.free(p)
    assert m.large_pages == 0
    assert pool.ranges.free_pages + pool.l1_pages + pool.l2_pages == free


@pytest.mark.parametrize("align, n, where, offset, pages", [
    (64, 100, "128", 0, 1),          # pool of the larger of size and alignment
    (1024, 8, "1024", 0, 1),
    (2048, 100, "page", 0, 1),       # above the pools' alignment: a whole page
    (4096, 4096, "page", 0, 1),
    (64, 5000, "large", 64, 2),      # header 56 rounded up to the alignment
    (128, 5000, "large", 128, 2),
    (4096, 5000, "large", 4096, 3),  # a page of offset for page alignment
    (8192, 100, "large", 4096, 2),   # carved so that header + 4096 is aligned
    (1 << 16, 100, "large", 4096, 2),
])
def test_memalign(kernel: Kernel, m: Malloc, align: int, n: int, where: str, offset: int,
                  pages: int) -> None:
    p = m.posix_memalign(align, n)
    assert p % align == 0
    assert m.kind_of(p) == where
    assert m.malloc_usable_size(p) >= n
    if where == "large":
        assert page_offset(p) == offset % PAGE_SIZE
    assert m.heap_bytes == pages * PAGE_SIZE
    kernel.check()


def test_memalign_above_a_page_on_the_mapped_path_aborts_as_osv_does(m: Malloc) -> None:
    with pytest.raises(MallocAbort):
        m.aligned_alloc(8192, 3 * MIB)
    assert m.heap_bytes == 0
    assert m.memalign(3, 10) == 0  # not a power of two: EINVAL, NULL


def test_calloc_and_realloc(m: Malloc) -> None:
    assert m.kind_of(m.calloc(10, 10)) == "128"
    assert m.kind_of(m.calloc(0, 10)) == "8"  # calloc(0, n) = malloc(0)
    assert m.calloc(1 << 33, 1 << 32) == 0  # overflow: NULL
    p = m.malloc(100)
    q = m.realloc(p, 100)
    assert q != p, "OSv's realloc always moves"
    assert m.kind_of(q) == "128"
    r = m.realloc(q, 5000)
    assert m.kind_of(r) == "large"
    assert m.realloc(r, 0) == 0
    assert m.heap_bytes == 2 * PAGE_SIZE  # the callocs' pool pages (128 and 8) are left
    assert m.kind_of(m.realloc(0, 20)) == "32"


def test_free_dispatches_on_the_address(kernel: Kernel, m: Malloc) -> None:
    cats = kernel.memory_categories()
    blocks = [m.malloc(n, cpu=0) for n in (8, 600, 3000, 9000, 3 * MIB)]
    assert [m.kind_of(b) for b in blocks] == ["8", "1024", "page", "large", "mapped"]
    for b in blocks:
        m.free(b, cpu=0)
    m.check()
    kernel.check()
    assert m.heap_bytes == 0
    after = kernel.memory_categories()
    for name in ("malloc_pools", "malloc_pages", "malloc_large", "anonymous"):
        assert after[name] == cats[name], name
    with pytest.raises(InvalidPointer):
        m.free(blocks[2])  # the page went back: not malloc's any more


# -- §12.2: when a pool page goes back ----------------------------------------------------------

def test_a_page_emptied_at_the_back_of_the_list_goes_back(kernel: Kernel, m: Malloc) -> None:
    l1 = kernel.pool.l1_pages_of(0)
    p = m.malloc(64)
    assert kernel.pool.l1_pages_of(0) == l1 - 1
    m.free(p)
    assert m.pool_of(0, 64).npages == 0
    assert kernel.pool.l1_pages_of(0) == l1, "the page went back to the CPU's L1 cache"


def test_an_empty_page_is_kept_while_the_back_page_is_in_use(m: Malloc) -> None:
    full = [m.malloc(1024) for _ in range(3)]  # page A, full: off the list
    last = m.malloc(1024)  # page B: the list is [B]
    for p in full:
        m.free(p)  # A rejoins at the front, then empties while B (the back) is in use
    pool = m.pool_of(0, 1024)
    assert pool.npages == 2
    a = m.page_of(full[0])
    assert a is not None and a.nalloc == 0 and pool.head is a
    m.free(last)  # B empties at the back: it goes back, A stays as the spare page
    assert pool.npages == 1 and pool.head is a and pool.tail is a
    assert m.malloc(1024) == full[2], "the spare page serves next, last freed object first"


def test_frees_from_another_cpu_wait_for_the_owner_until_257(m: Malloc) -> None:
    objs = [m.malloc(8, cpu=0) for _ in range(CROSS_CPU_SIGNAL + 1)]
    page = m.page_of(objs[0])
    assert page is not None and {m.page_of(o) for o in objs} == {page}
    for o in objs[:-1]:
        m.free(o, cpu=1)
    assert m.pending_cross_cpu() == CROSS_CPU_SIGNAL
    assert page.nalloc == CROSS_CPU_SIGNAL + 1, "queued objects stay allocated"
    fresh = m.malloc(8, cpu=0)
    assert fresh not in objs
    m.free(fresh, cpu=0)
    m.free(objs[-1], cpu=1)  # the 257th: the owner collects every queued object
    assert m.pending_cross_cpu() == 0
    assert m.page_of(objs[0]) is None and m.pool_of(0, 8).npages == 0
    m.check()


def test_the_signal_counts_per_pair_of_cpus() -> None:
    m = Malloc(bare_pool(cpus=3))
    objs = [m.malloc(16, cpu=0) for _ in range(400)]
    for o in objs[:200]:
        m.free(o, cpu=1)
    for o in objs[200:]:
        m.free(o, cpu=2)
    assert m.pending_cross_cpu() == 400 and m.collections == 0
    m.free(m.malloc(16, cpu=1), cpu=0)  # owner 1 now: a different queue
    assert m.pending_cross_cpu() == 401


# -- before SMP ---------------------------------------------------------------------------------

def test_the_early_allocator_before_smp() -> None:
    pool = bare_pool(smp=False)
    free = pool.ranges.free_pages
    m = Malloc(pool)
    a = m.malloc(100)
    b = m.malloc(100)
    assert m.kind_of(a) == "early" and a >> 12 == b >> 12
    assert page_offset(a) == 32  # align_up(16 + 2, 16): header, then the 2-byte size
    assert page_offset(b) == 144  # align_up(132 + 2, 16)
    assert m.malloc_usable_size(a) == 100
    assert pool.ranges.free_pages == free - 1, "early pages come straight from the runs"
    m.free(b)
    assert m.malloc(40) == b, "freeing the last object rolls the bump pointer back"
    c = m.malloc(4000)  # fits only a fresh early page: a second one
    assert m.kind_of(c) == "early" and c >> 12 != a >> 12
    assert pool.ranges.free_pages == free - 2
    pool.start_smp()
    assert m.kind_of(m.malloc(100)) == "128"
    runs = pool.ranges.free_pages
    m.free(a)
    assert pool.ranges.free_pages == runs, "the first page still holds an object"
    m.free(b)
    assert pool.ranges.free_pages == runs + 1, "at count 0 an early page goes to the runs"
    m.free(c)
    assert pool.ranges.free_pages == runs + 2 and m.early.npages == 0


def test_early_objects_fill_a_page_then_start_another() -> None:
    pool = bare_pool(smp=False)
    m = Malloc(pool)
    a = m.malloc(4064)  # 32 + 4064 = 4096: fits exactly
    b = m.malloc(1)
    assert m.kind_of(a) == m.kind_of(b) == "early" and a >> 12 != b >> 12
    assert m.kind_of(m.malloc(4065)) == "page"  # never fits an early page


# -- scale ----------------------------------------------------------------------------------------

def test_memory_follows_live_blocks_not_ram() -> None:
    pool = bare_pool(pages=1 << 28)  # 1 TiB of RAM
    m = Malloc(pool)
    tracemalloc.start()
    try:
        blocks = [m.malloc(64 << 30), m.malloc(100 << 30), m.malloc(5 << 20)]
        used = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sum(map(m.malloc_usable_size, blocks)) > 164 << 30
    assert used < 1 << 20
