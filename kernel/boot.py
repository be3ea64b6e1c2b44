"""Boot-time memory setup in OSv's order (reference §10, arch_setup_free_memory).

Physical page 0 is never given; the kernel image sits at 2 MiB; usable memory from the image's
end up to 1 GiB is given first, the first GiB is linear-mapped (2 MiB leaves) in the main, page
and mempool areas; then memory below the kernel is given, and every part above 1 GiB is linear-
mapped (its page tables come from memory already given) and then given.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsim.kernel.config import LINEAR_AREA_SIZE, E820Entry, KernelConfig
from mmsim.mm.constants import (
    KERNEL_PHYS,
    KERNEL_VIRT,
    MAIN_AREA,
    MEMPOOL_AREA,
    PAGE_AREA,
    PAGE_SIZE,
)
from mmsim.mm.page_pool import OutOfPages, PagePool
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.mm.pagetables import PageTables, Perm

GIB = 1 << 30
LINEAR_AREAS = (MAIN_AREA, PAGE_AREA, MEMPOOL_AREA)


class BootError(RuntimeError):
    """The configured machine cannot be described (e.g. RAM past the linear map's reach)."""


class _TablePages:
    """Page-table pages come from alloc_page (straight from the runs before SMP), as in OSv."""

    def __init__(self, pool: PagePool) -> None:
        self.pool = pool
        self.cpu = 0

    def alloc_table_page(self) -> int:
        try:
            return self.pool.alloc_page(self.cpu)
        except OutOfPages:
            raise MemoryError("no page for a page table") from None

    def free_table_page(self, pfn: int) -> None:
        self.pool.free_page(pfn, self.cpu)


@dataclass
class PhysicalMemory:
    """What boot leaves behind: the allocator, its page caches and the one page table."""

    ranges: PageRangeAllocator
    pool: PagePool
    page_tables: PageTables
    table_source: _TablePages
    phys_mem_size: int
    kernel_end: int
    e820: list[E820Entry]
    #: why boot ran out of memory before the allocator was complete (None: it did not); the
    #: kernel turns it into its out-of-memory report, as OSv aborts during boot
    failure: str | None = None
    #: what the failing step needed, in bytes
    failure_bytes: int = PAGE_SIZE


def _give(ranges: PageRangeAllocator, start: int, end: int) -> None:
    start = max(start, PAGE_SIZE)  # physical page 0 is never given
    start = -(-start // PAGE_SIZE) * PAGE_SIZE
    end = end // PAGE_SIZE * PAGE_SIZE
    if end > start:
        ranges.add_initial_range(start // PAGE_SIZE, (end - start) // PAGE_SIZE)


def _linear_map(pt: PageTables, start: int, end: int) -> None:
    for area in LINEAR_AREAS:
        pt.linear_map(area + start, start, end - start, Perm.RWX)


def boot_memory(config: KernelConfig) -> PhysicalMemory:
    """Hand the e820 map's usable memory to a new allocator and build the linear map."""
    e820 = config.e820_map()
    usable = [e for e in e820 if e.type == 1]
    if any(e.end > LINEAR_AREA_SIZE for e in usable):  # it would run into the next area
        raise BootError("usable RAM ends past 16T, the size of each linear-map area")
    phys_mem_size = sum(e.length for e in usable)
    kernel_end = -(-(KERNEL_PHYS + config.kernel_bytes) // PAGE_SIZE) * PAGE_SIZE
    ranges = PageRangeAllocator()
    pool = PagePool(ranges, config.cpus)
    source = _TablePages(pool)

    # 3. usable memory from the kernel's end up to 1 GiB
    for e in usable:
        _give(ranges, max(e.start, kernel_end), min(e.end, GIB))
    if ranges.free_pages == 0:  # the kernel itself does not fit in RAM: OSv cannot start
        for e in usable:  # what lies below the kernel is all the guest has
            _give(ranges, e.start, min(e.end, KERNEL_PHYS))
        try:
            pt = PageTables(source, giant_pages=config.giant_pages)
        except MemoryError:
            raise BootError("no usable memory in the e820 map") from None
        return PhysicalMemory(ranges, pool, pt, source, phys_mem_size, kernel_end, e820,
                              "the kernel image does not fit in RAM", kernel_end - KERNEL_PHYS)
    pt = PageTables(source, giant_pages=config.giant_pages)
    try:
        # 4. the first GiB in the three linear areas, and the kernel image
        _linear_map(pt, 0, GIB)
        pt.map(KERNEL_VIRT, [(KERNEL_PHYS // PAGE_SIZE, (kernel_end - KERNEL_PHYS) // PAGE_SIZE)],
               Perm.RWX)
        # 5. memory below the kernel, then each part above 1 GiB, mapped before it is given
        for e in usable:
            _give(ranges, e.start, min(e.end, KERNEL_PHYS))
        for e in usable:
            if e.end > GIB:
                start = max(e.start, GIB)
                _linear_map(pt, start, e.end)
                _give(ranges, start, e.end)
    except MemoryError:
        return PhysicalMemory(ranges, pool, pt, source, phys_mem_size, kernel_end, e820,
                              "no page for the linear map's page tables")
    return PhysicalMemory(ranges, pool, pt, source, phys_mem_size, kernel_end, e820)
