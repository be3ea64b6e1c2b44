"""ARC data buffers as the page allocations OSv makes for them.

OSv backs ZFS's kmem caches with posix_memalign(4096, size) so that a buffer can be mapped
into a process (§7, §8). By the malloc rules (§4, §12.1) a buffer of at most 4096 bytes is one
whole page from alloc_page (the per-CPU L1 cache), and a larger one goes to malloc_large with a
4096-byte header page: ceil(size/4096) + 1 pages from the free runs (33 for a 128 KiB record),
or, when no run fits, the same number of single pages (malloc_large's map_anon fallback).
"""

from __future__ import annotations

from collections.abc import Callable

from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages, PagePool

HEADER = PAGE_SIZE  # malloc_large's offset for an alignment of 4096
MAX_BUFFER = 1 << 20  # ZFS's largest record; malloc_large's mmap path (>= 2 MiB) is never taken

PAGE, RUN, SCATTERED = range(3)


def buffer_pages(size: int) -> int:
    """Pages a posix_memalign(4096, size) buffer takes."""
    if size <= PAGE_SIZE:
        return 1
    return -(-(size + HEADER) // PAGE_SIZE)


class ArcBuffer:
    """One cached record's memory; ``mapped`` counts page-table entries that point at it."""

    __slots__ = ("kind", "pfn", "npages", "extents", "size", "dirty", "mapped")

    def __init__(self, kind: int, pfn: int, npages: int, size: int,
                 extents: list[tuple[int, int]] | None = None) -> None:
        self.kind = kind
        self.pfn = pfn
        self.npages = npages
        self.extents = extents
        self.size = size
        self.dirty = False
        self.mapped = 0


class BufferAllocator:
    """Allocates and frees ARC buffers from the simulated machine's pages, and counts them."""

    def __init__(self, pool: PagePool, cpu: Callable[[], int] | None = None,
                 before_large: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self.ranges = pool.ranges
        self._cpu = cpu or (lambda: 0)
        #: OSv's wait_for_minimum_memory, run before each malloc_large (the reclaimer's)
        self.before_large = before_large
        self.pages = 0  # pages held by live buffers
        self.buffers = 0

    def alloc(self, size: int) -> ArcBuffer:
        """A buffer for ``size`` bytes; raises OutOfPages if the machine has no pages left."""
        if size <= PAGE_SIZE:
            buf = ArcBuffer(PAGE, self.pool.alloc_page(self._cpu()), 1, size)
        else:
            n = buffer_pages(size)
            if self.before_large is not None:
                self.before_large()
            pfn = self.ranges.alloc(n, contiguous=False)
            if pfn is not None:
                buf = ArcBuffer(RUN, pfn, n, size)
            else:  # malloc_large's fallback: anonymous memory, one page at a time
                extents = self.pool.alloc_pages(n, self._cpu())
                buf = ArcBuffer(SCATTERED, extents[0][0], n, size, extents)
        self.pages += buf.npages
        self.buffers += 1
        return buf

    def free(self, buf: ArcBuffer) -> None:
        """Give the buffer's pages back: single pages to L1, runs to the allocator."""
        if buf.kind == PAGE:
            self.pool.free_page(buf.pfn, self._cpu())
        elif buf.kind == RUN:
            self.ranges.free(buf.pfn, buf.npages)
        else:
            self.pool.free_pages(buf.extents or [], self._cpu())
        self.pages -= buf.npages
        self.buffers -= 1

    @staticmethod
    def pages_for(size: int) -> int:
        """Pages a buffer of ``size`` takes (a recycled buffer must have as many)."""
        return 1 if size <= PAGE_SIZE else -(-(size + HEADER) // PAGE_SIZE)


__all__ = ["ArcBuffer", "BufferAllocator", "OutOfPages", "buffer_pages"]
