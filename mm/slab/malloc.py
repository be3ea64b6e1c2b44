"""OSv's malloc front (§4): per-CPU pools, whole pages, large runs, mappings, the early allocator.

Addresses are simulated virtual addresses in OSv's areas - pool objects in the mempool area, whole
pages in the page area, large runs in the main area (area base + physical address), mappings
below 0x4000_0000_0000 - so :meth:`Malloc.free` dispatches on the address alone, as OSv's does.

A free on another CPU than the object's page is queued to the owner (one queue per pair of CPUs);
the owner collects all its queues only when one of them has received 257 frees since it last
signalled. Until then the queued objects stay allocated [inferred, reference §4].

The caller passes valid pointers (kernel/sys_malloc.py catches the application's bad frees);
a pointer this allocator never handed out raises :class:`InvalidPointer`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mmsim.mm.constants import MAIN_AREA, MEMPOOL_AREA, PAGE_AREA, PAGE_SHIFT, PAGE_SIZE
from mmsim.mm.page_pool import PagePool
from mmsim.mm.slab.early import EarlyAllocator, EarlyPage
from mmsim.mm.slab.large import AnonMapper, LargeAllocator, PagePoolMapper
from mmsim.mm.slab.pool import Pool, PoolPage
from mmsim.mm.slab.sizes import (
    MAX_OBJECT,
    MIN_OBJECT,
    POOL_CLASSES,
    malloc_alignment,
    next_pow2,
    route,
)

__all__ = ["CROSS_CPU_SIGNAL", "InvalidPointer", "Malloc", "MallocAbort"]

#: a garbage sink signals its owner CPU when more than this many frees were queued since
#: it last did (OSv's signal_threshold)
CROSS_CPU_SIGNAL = 256

_MAX_SIZE = (1 << 63) - 1  # OSv: (ssize_t)size < 0 -> ENOMEM
_AREA_MAIN = MAIN_AREA >> 44
_AREA_PAGE = PAGE_AREA >> 44
_AREA_MEMPOOL = MEMPOOL_AREA >> 44

#: pool class index for plain malloc(n), n <= 1024: next_pow2(max(n, 8))
_MALLOC_CLASS: list[int] = [POOL_CLASSES.index(next_pow2(max(n, MIN_OBJECT)))
                            for n in range(MAX_OBJECT + 1)]


class InvalidPointer(ValueError):
    """free/realloc/malloc_usable_size of an address this allocator does not hold."""


class MallocAbort(RuntimeError):
    """OSv would abort here (an assertion in its malloc fires)."""


class Malloc:
    """The whole malloc family over one :class:`PagePool` (and so its page runs)."""

    def __init__(self, pool: PagePool, mapper: AnonMapper | None = None) -> None:
        self.pool = pool
        self.ncpus = pool.ncpus
        self._cpu = 0  # the CPU of the call in progress, for the stand-in mapper
        self.fallback_mapper: PagePoolMapper | None = None
        if mapper is None:
            mapper = self.fallback_mapper = PagePoolMapper(pool, lambda: self._cpu)
        self.large = LargeAllocator(pool, mapper)
        self.early = EarlyAllocator(pool.ranges)
        self._pools: list[list[Pool]] = [[Pool(s, cpu) for s in POOL_CLASSES]
                                         for cpu in range(self.ncpus)]
        #: plain malloc's pool for each size 0..1024, per CPU (one lookup on the hot path)
        self._by_size: list[list[Pool]] = [[row[i] for i in _MALLOC_CLASS] for row in self._pools]
        self._pages: dict[int, PoolPage] = {}  # pfn -> pool page (mempool area)
        self._whole: set[int] = set()  # pfns handed out as whole pages (page area)
        # garbage sinks: _sinks[owner][freeing cpu] = queued objects, and their counters
        self._sinks: list[list[list[int]]] = [[[] for _ in range(self.ncpus)]
                                              for _ in range(self.ncpus)]
        self._sink_count: list[list[int]] = [[0] * self.ncpus for _ in range(self.ncpus)]
        self.cross_cpu_frees = 0
        self.collections = 0
        #: pages that left _pages: the C batch loop knows from it that the pool pages it found
        #: may be gone, so whatever takes a page out of _pages counts it here
        self.pool_pages_returned = 0
        #: bytes of memory malloc holds, mappings included (the heap size for utilization)
        self.heap_bytes = 0
        self.heap_bytes_peak = 0

    # -- pages held, for the kernel's categories ------------------------------------------
    @property
    def pool_pages(self) -> int:
        """Pages held by the pools and the early allocator."""
        return len(self._pages) + self.early.npages

    @property
    def whole_pages(self) -> int:
        return len(self._whole)

    @property
    def large_pages(self) -> int:
        """Pages of large runs, plus the stand-in mapper's pages if there is no address space."""
        extra = self.fallback_mapper.pages if self.fallback_mapper is not None else 0
        return self.large.run_pages + extra

    def _heap_bytes(self) -> int:
        return ((len(self._pages) + self.early.npages + len(self._whole) + self.large.run_pages)
                << PAGE_SHIFT) + self.large.mapped_bytes

    @property
    def wait_for_minimum_memory(self) -> Callable[[], None] | None:
        return self.large.wait_for_minimum_memory

    @wait_for_minimum_memory.setter
    def wait_for_minimum_memory(self, fn: Callable[[], None] | None) -> None:
        self.large.wait_for_minimum_memory = fn

    # -- allocation ------------------------------------------------------------------------
    def malloc(self, size: int, cpu: int = 0) -> int:
        """malloc(size): the object's address, or 0 (NULL) for an impossible size."""
        if size <= MAX_OBJECT and self.pool.smp:
            # Pool.alloc, inlined: this is the path nearly every call of a trace takes
            pool = self._by_size[cpu][size]
            page = pool.head
            if page is None:
                page = self._add_page(pool, cpu)
            page.nalloc += 1
            freed = page.freed
            if freed:
                addr = freed.pop()
                if freed or page.fresh < page.end:
                    return addr
            else:
                addr = page.fresh
                page.fresh = nxt = addr + pool.size
                if nxt < page.end:
                    return addr
            pool.unlink(page)  # full: it leaves the list
            return addr
        return self._std_malloc(size, 16 if size >= 16 else malloc_alignment(size), cpu)

    def memalign(self, align: int, size: int, cpu: int = 0) -> int:
        """posix_memalign/aligned_alloc/memalign; 0 if ``align`` is not a power of two.

        Raises :class:`MallocAbort` where OSv's alignment assertion fires: an alignment above
        4096 on the mapped path, which aligns only to a page.
        """
        if align <= 0 or align & (align - 1):
            return 0
        addr = self._std_malloc(size, align, cpu)
        if addr & (align - 1):
            self.free(addr, cpu)
            raise MallocAbort(f"posix_memalign({align}, {size}): OSv's mapped path aligns only "
                              f"to a page, so its alignment assertion fails")
        return addr

    posix_memalign = memalign
    aligned_alloc = memalign

    def calloc(self, count: int, size: int, cpu: int = 0) -> int:
        """calloc: malloc(count * size), NULL on overflow (zeroing costs nothing here)."""
        if count == 0 or size == 0:
            return self.malloc(0, cpu)
        if count * size >= 1 << 64:
            return 0
        return self.malloc(count * size, cpu)

    def realloc(self, addr: int, size: int, cpu: int = 0) -> int:
        """OSv's realloc: never in place - allocate, copy, free (the old block stays if the
        allocation fails). realloc(NULL, n) = malloc(n); realloc(p, 0) frees p, returns NULL."""
        if not addr:
            return self.malloc(size, cpu)
        if not size:
            self.free(addr, cpu)
            return 0
        self.usable_size(addr)  # validates addr before anything changes
        new = self.malloc(size, cpu)
        if new:
            self.free(addr, cpu)
        return new

    def _std_malloc(self, size: int, align: int, cpu: int) -> int:
        if size > _MAX_SIZE:
            return 0
        if size <= PAGE_SIZE:  # beyond a page, route() answers LARGE or MAPPED whatever else
            smp = self.pool.smp
            kind, detail = route(size, align, smp)
            if kind == "pool":
                pool = self._pools[cpu][POOL_CLASSES.index(detail)]
                if pool.head is None:
                    self._add_page(pool, cpu)
                return pool.alloc()
            if kind == "early":
                before = self.early.npages
                addr = self.early.alloc(size, align)
                self._grow_heap((self.early.npages - before) << PAGE_SHIFT)
                return addr
            if kind == "page":
                pfn = self.pool.alloc_page(cpu if smp else 0)
                self._whole.add(pfn)
                self._grow_heap(PAGE_SIZE)
                return PAGE_AREA + (pfn << PAGE_SHIFT)
        self._cpu = cpu
        large = self.large
        before = (large.run_pages << PAGE_SHIFT) + large.mapped_bytes
        addr = large.alloc(size, align)
        self.heap_bytes += (large.run_pages << PAGE_SHIFT) + large.mapped_bytes - before
        if self.heap_bytes > self.heap_bytes_peak:  # _grow_heap, inlined
            self.heap_bytes_peak = self.heap_bytes
        return addr

    def _add_page(self, pool: Pool, cpu: int) -> PoolPage:
        pfn = self.pool.alloc_page(cpu)
        page = self._pages[pfn] = pool.add_page(pfn)
        self._grow_heap(PAGE_SIZE)
        return page

    def _grow_heap(self, delta: int) -> None:
        self.heap_bytes += delta
        if self.heap_bytes > self.heap_bytes_peak:
            self.heap_bytes_peak = self.heap_bytes

    # -- free --------------------------------------------------------------------------------
    def free(self, addr: int, cpu: int = 0) -> None:
        """free(p), dispatched on p's area; free(NULL) does nothing."""
        area = addr >> 44
        if area == _AREA_MEMPOOL:
            page = self._pages.get((addr - MEMPOOL_AREA) >> PAGE_SHIFT)
            if page is None:
                if (addr - MEMPOOL_AREA) >> PAGE_SHIFT in self.early.pages:
                    before = self.early.npages
                    self.early.free(addr)
                    self.heap_bytes += (self.early.npages - before) << PAGE_SHIFT
                    return
                raise InvalidPointer(f"free({addr:#x}): not a pool object")
            if page.cpu == cpu or not self.pool.smp:
                if page.nalloc > 1 and (page.freed or page.fresh < page.end):
                    # Pool.free's common case, inlined: the page stays where it is
                    page.nalloc -= 1
                    page.freed.append(addr)
                else:
                    self._free_same_cpu(page, addr)
            else:
                self._free_other_cpu(page.cpu, cpu, addr)
        elif area == _AREA_PAGE:
            pfn = (addr - PAGE_AREA) >> PAGE_SHIFT
            if pfn not in self._whole or addr & (PAGE_SIZE - 1):
                raise InvalidPointer(f"free({addr:#x}): not a page allocation")
            self._whole.remove(pfn)
            self.heap_bytes -= PAGE_SIZE
            self.pool.free_page(pfn, cpu if self.pool.smp else 0)
        elif area == _AREA_MAIN or (0 < addr < MAIN_AREA):
            large = self.large
            before = (large.run_pages << PAGE_SHIFT) + large.mapped_bytes
            cpu_was, self._cpu = self._cpu, cpu
            if not large.free(addr):  # one lookup: owns() and free() in one
                self._cpu = cpu_was
                raise InvalidPointer(f"free({addr:#x}): not a large allocation")
            self.heap_bytes += (large.run_pages << PAGE_SHIFT) + large.mapped_bytes - before
        elif addr:
            raise InvalidPointer(f"free({addr:#x}): outside malloc's areas")

    def release_empty_pages(self) -> int:
        """Give every pool's cached empty pages back (the pools' shrinker); pages released."""
        n = 0
        for row in self._pools:
            for pool in row:
                for page in pool.take_empty():
                    del self._pages[page.pfn]
                    self.heap_bytes -= PAGE_SIZE
                    self.pool.free_page(page.pfn, page.cpu)
                    n += 1
        self.pool_pages_returned += n
        return n

    def _free_same_cpu(self, page: PoolPage, addr: int) -> None:
        if page.pool.free(page, addr):
            del self._pages[page.pfn]
            self.pool_pages_returned += 1
            self.heap_bytes -= PAGE_SIZE
            self.pool.free_page(page.pfn, page.cpu)

    def _free_other_cpu(self, owner: int, cpu: int, addr: int) -> None:
        self.cross_cpu_frees += 1
        self._sinks[owner][cpu].append(addr)
        counts = self._sink_count[owner]
        counts[cpu] += 1
        if counts[cpu] > CROSS_CPU_SIGNAL:
            counts[cpu] = 0
            self.collect(owner)

    def collect(self, owner: int) -> int:
        """The owner CPU's garbage collector: free every object queued to it (each queue
        most recent first, as OSv pops its lock-free stacks); objects freed."""
        self.collections += 1
        n = 0
        pages = self._pages
        for sink in self._sinks[owner]:
            while sink:
                addr = sink.pop()
                self._free_same_cpu(pages[(addr - MEMPOOL_AREA) >> PAGE_SHIFT], addr)
                n += 1
        return n

    def pending_cross_cpu(self, owner: int | None = None) -> int:
        """Objects freed on another CPU and not yet collected by their owner (one or all)."""
        rows = self._sinks if owner is None else [self._sinks[owner]]
        return sum(len(s) for row in rows for s in row)

    # -- inspection ---------------------------------------------------------------------------
    def usable_size(self, addr: int) -> int:
        """malloc_usable_size(p) (0 for NULL)."""
        area = addr >> 44
        if area == _AREA_MEMPOOL:
            pfn = (addr - MEMPOOL_AREA) >> PAGE_SHIFT
            page = self._pages.get(pfn)
            if page is not None:
                return page.pool.size
            if pfn in self.early.pages:
                return self.early.size_of(addr)
        elif area == _AREA_PAGE:
            if (addr - PAGE_AREA) >> PAGE_SHIFT in self._whole:
                return PAGE_SIZE
        elif area == _AREA_MAIN or 0 < addr < MAIN_AREA:
            if self.large.owns(addr):
                return self.large.usable_size(addr)
        elif not addr:
            return 0
        raise InvalidPointer(f"malloc_usable_size({addr:#x}): not an allocation")

    malloc_usable_size = usable_size

    def kind_of(self, addr: int) -> str:
        """Which allocator holds ``addr``: '8'..'1024' (pool class), early, page, large, mapped."""
        area = addr >> 44
        if area == _AREA_MEMPOOL:
            page = self._pages.get((addr - MEMPOOL_AREA) >> PAGE_SHIFT)
            return str(page.pool.size) if page is not None else "early"
        if area == _AREA_PAGE:
            return "page"
        return "large" if area == _AREA_MAIN else "mapped"

    def pool_of(self, cpu: int, size: int) -> Pool:
        """CPU ``cpu``'s pool of class ``size`` (for tests and inspection)."""
        return self._pools[cpu][POOL_CLASSES.index(size)]

    def page_of(self, addr: int) -> PoolPage | EarlyPage | None:
        pfn = (addr - MEMPOOL_AREA) >> PAGE_SHIFT
        return self._pages.get(pfn) or self.early.pages.get(pfn)

    def pools(self) -> Iterator[Pool]:
        for row in self._pools:
            yield from row

    def pool_pages_by_class(self) -> dict[int, int]:
        out = dict.fromkeys(POOL_CLASSES, 0)
        for pool in self.pools():
            out[pool.size] += pool.npages
        return out

    def pfns(self) -> Iterator[tuple[int, int]]:
        """Every physical page malloc holds directly, as (pfn, npages) (for invariant checks;
        mappings made through an address space are that address space's)."""
        for pfn in self._pages:
            yield pfn, 1
        for pfn in self.early.pages:
            yield pfn, 1
        for pfn in self._whole:
            yield pfn, 1
        yield from self.large.runs.items()
        if self.fallback_mapper is not None:
            for extents in self.fallback_mapper._maps.values():
                yield from extents

    def check(self) -> None:
        """Assert the pools' structural invariants (lists, counts, page ownership)."""
        held = 0
        queued: dict[int, int] = {}
        for row in self._sinks:
            for sink in row:
                for addr in sink:
                    pfn = (addr - MEMPOOL_AREA) >> PAGE_SHIFT
                    queued[pfn] = queued.get(pfn, 0) + 1
        for pool in self.pools():
            listed = pool.pages()
            prev = None
            for page in listed:
                assert page.pool is pool and page.prev is prev, "broken pool list"
                assert page.has_free(), "a full page on the list"
                prev = page
            assert pool.tail is prev, "stale tail"
            mine = [p for p in self._pages.values() if p.pool is pool]
            assert len(mine) == pool.npages, "page count of a pool"
            for page in mine:
                free = len(page.freed) + (page.end - page.fresh) // pool.size
                assert page.nalloc + free == pool.objects, "objects lost in a page"
                assert page.nalloc >= queued.get(page.pfn, 0)
                assert (page in listed) == page.has_free(), "a page with room is off the list"
                assert page.cpu == pool.cpu
            held += pool.npages
        assert held == len(self._pages)
        assert self.heap_bytes == self._heap_bytes(), "heap size drifted"
        empties = [p for pool in self.pools() for p in pool.pages() if not p.nalloc]
        assert len(set(map(id, empties))) == len(empties)
