"""OSv's early allocator: malloc before SMP is up, a bump pointer in one page at a time (§4).

Each object is preceded by a 2-byte size; the page header counts the objects. A page goes back to
the runs when its count drops to 0; freeing the most recent object of the current page rolls the
bump pointer back one step. A zero size marks a freed object (so a second free does nothing), which
also means malloc(0) can never be freed: OSv's behaviour, kept.
"""

from __future__ import annotations

from mmsim.mm.constants import MEMPOOL_AREA, PAGE_SHIFT, PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.mm.slab.sizes import EARLY_HEADER, EARLY_SIZE_PREFIX

__all__ = ["EarlyAllocator", "EarlyPage"]


class EarlyPage:
    """One early page: live objects by offset (their 2-byte size) and the header's count."""

    __slots__ = ("count", "pfn", "sizes")

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.count = 0
        self.sizes: dict[int, int] = {}


class EarlyAllocator:
    """Bump allocation in early pages, which come straight from (and return to) the runs."""

    def __init__(self, ranges: PageRangeAllocator) -> None:
        self.ranges = ranges
        self.pages: dict[int, EarlyPage] = {}
        self.current: EarlyPage | None = None
        self.next_off = 0
        self.prev_off = 0

    def _new_page(self) -> EarlyPage:
        pfn = self.ranges.alloc(1)
        if pfn is None:
            raise OutOfPages(PAGE_SIZE)
        page = EarlyPage(pfn)
        self.pages[pfn] = page
        self.current = page
        self.next_off = EARLY_HEADER
        return page

    def alloc(self, size: int, align: int) -> int:
        """An object of ``size`` bytes (the caller checked that it fits in a fresh page)."""
        page = self.current
        if page is None:
            page = self._new_page()
        off = _align_up(self.next_off + EARLY_SIZE_PREFIX, align)
        if off + size > PAGE_SIZE:
            page = self._new_page()
            off = _align_up(self.next_off + EARLY_SIZE_PREFIX, align)
        self.prev_off = self.next_off
        self.next_off = off + size
        page.sizes[off] = size
        page.count += 1
        return MEMPOOL_AREA + (page.pfn << PAGE_SHIFT) + off

    def size_of(self, addr: int) -> int:
        page = self.pages[(addr - MEMPOOL_AREA) >> PAGE_SHIFT]
        return page.sizes.get(addr & (PAGE_SIZE - 1), 0)

    def free(self, addr: int) -> None:
        page = self.pages[(addr - MEMPOOL_AREA) >> PAGE_SHIFT]
        off = addr & (PAGE_SIZE - 1)
        size = page.sizes.pop(off, 0)  # only the live objects' sizes are kept
        if not size:
            return
        page.count -= 1
        if page.count <= 0:
            del self.pages[page.pfn]
            self.ranges.free(page.pfn, 1)
            if self.current is page:
                self.current = None
        elif self.current is page and off == self.next_off - size:
            self.next_off = self.prev_off

    @property
    def npages(self) -> int:
        return len(self.pages)


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a
