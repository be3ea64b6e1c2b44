"""Large allocations: page runs behind OSv's page_range header, and anonymous mappings (§4).

A request whose total (offset + size, page-rounded) is 2 MiB or more becomes a populated
anonymous mapping; so does any large request when no run of pages fits. The mapping comes from
an :class:`AnonMapper` - the kernel's address space - so this package does not depend on the
virtual-memory code. Without one, :class:`PagePoolMapper` stands in: it takes the pages as a
populated mapping would (page by page, L1 first) and hands out addresses in the mmap area.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mmsim.mm.constants import (
    HUGE_PAGE_SIZE,
    MAIN_AREA,
    MMAP_DEFAULT_START,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from mmsim.mm.page_pool import OutOfPages, PagePool
from mmsim.mm.slab.sizes import large_layout

__all__ = ["AnonMapper", "LargeAllocator", "PagePoolMapper"]


class AnonMapper(Protocol):
    """What malloc needs of virtual memory: OSv's map_anon(populate) and munmap."""

    def map_anon(self, length: int, populate: bool = True) -> int: ...

    def unmap(self, vaddr: int, length: int) -> None: ...


class PagePoolMapper:
    """A stand-in address space: each mapping takes its pages from the page pool.

    Addresses are handed out upward from the mmap area's default start, 2 MiB-aligned for
    mappings of 2 MiB or more; an unmapped range is reused by the next mapping of its length.
    """

    def __init__(self, pool: PagePool, cpu: Callable[[], int] = lambda: 0) -> None:
        self.pool = pool
        self.cpu = cpu
        self.pages = 0  # pages held by live mappings
        self._maps: dict[int, list[tuple[int, int]]] = {}
        self._spare: dict[int, list[int]] = {}
        self._next = MMAP_DEFAULT_START

    def map_anon(self, length: int, populate: bool = True) -> int:
        npages = -(-length // PAGE_SIZE)
        if npages > self.pool.ranges.total_pages:
            raise OutOfPages(length)
        extents = self.pool.alloc_pages(npages, self.cpu())
        spare = self._spare.get(npages)
        if spare:
            vaddr = spare.pop()
        else:
            if length >= HUGE_PAGE_SIZE:
                self._next = -(-self._next // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
            vaddr = self._next
            self._next += npages * PAGE_SIZE
        self._maps[vaddr] = extents
        self.pages += npages
        return vaddr

    def unmap(self, vaddr: int, length: int) -> None:
        extents = self._maps.pop(vaddr)
        npages = sum(n for _, n in extents)
        self.pages -= npages
        self.pool.free_pages(extents, self.cpu())
        self._spare.setdefault(npages, []).append(vaddr)


class LargeAllocator:
    """Page runs in the main area (header + offset + object) and the mapped path."""

    def __init__(self, pool: PagePool, mapper: AnonMapper) -> None:
        self.pool = pool
        self.ranges = pool.ranges
        self.mapper = mapper
        #: called before taking a run (OSv's wait_for_minimum_memory); may raise OutOfPages
        self.wait_for_minimum_memory: Callable[[], None] | None = None
        self.runs: dict[int, int] = {}  # header pfn -> pages (the page_range header's size)
        self.run_pages = 0
        self.mapped: dict[int, int] = {}  # mapping start -> total bytes (its first 8 bytes)
        self.mapped_bytes = 0

    def alloc(self, size: int, align: int) -> int:
        """The object's address; mapped if the total reaches 2 MiB or no run of pages fits."""
        offset, total = large_layout(size, align)
        if total < HUGE_PAGE_SIZE:
            if self.wait_for_minimum_memory is not None:
                self.wait_for_minimum_memory()
            npages = total >> PAGE_SHIFT
            if align > PAGE_SIZE:
                pfn = self.ranges.alloc_aligned(npages, align >> PAGE_SHIFT, 1)
            else:
                pfn = self.ranges.alloc(npages, contiguous=False)
            if pfn is not None:
                self.runs[pfn] = npages
                self.run_pages += npages
                return MAIN_AREA + (pfn << PAGE_SHIFT) + offset
        return self._map(total) + offset

    def _map(self, total: int) -> int:
        """The mapped path: a populated anonymous mapping of ``total`` bytes, its address."""
        vaddr = self.mapper.map_anon(total, populate=True)
        self.mapped[vaddr] = total
        self.mapped_bytes += total
        return vaddr

    @staticmethod
    def header_of(addr: int) -> int:
        """The header's address: the page below the object (OSv's align_down(p - 1, page))."""
        return (addr - 1) & ~(PAGE_SIZE - 1)

    def usable_size(self, addr: int) -> int:
        header = self.header_of(addr)
        if header < MAIN_AREA:
            return self.mapped[header] - (addr - header)
        return (self.runs[(header - MAIN_AREA) >> PAGE_SHIFT] << PAGE_SHIFT) - (addr - header)

    def free(self, addr: int) -> bool:
        """Free the allocation at ``addr``; False (and nothing changes) if it is none of ours."""
        header = (addr - 1) & ~(PAGE_SIZE - 1)  # header_of, inlined
        if header < MAIN_AREA:
            total = self.mapped.pop(header, None)
            if total is None:
                return False
            self.mapped_bytes -= total
            self.mapper.unmap(header, total)
            return True
        pfn = (header - MAIN_AREA) >> PAGE_SHIFT
        npages = self.runs.pop(pfn, None)
        if npages is None:
            return False
        self.run_pages -= npages
        self.ranges.free(pfn, npages)
        return True

    def owns(self, addr: int) -> bool:
        header = self.header_of(addr)
        if header < MAIN_AREA:
            return header in self.mapped
        return (header - MAIN_AREA) >> PAGE_SHIFT in self.runs
