"""The memory subsystem's invariants, as plain checks (no test framework needed).

`mmsim run --check`, `mmsim fuzz` and the test suite's state machines all run these, so the
rules live here once: each function raises AssertionError naming what broke.

- :func:`check_page_allocator`: free runs never overlap, are coalesced and sit in the right
  container; with the caller's allocations and the page caches, free + held + cached == total
  and no page is in two places.
- :func:`check_blocks`: live malloc blocks never overlap, are aligned as asked, at least as large
  as asked and pool objects sit on an object slot of their page.
- :func:`check_address_space`: VMAs and page tables agree (permissions, counters), every
  resident page is in exactly one VMA, resident <= mapped.
- :func:`check_kernel`: all of the above over a booted kernel, plus pages conserved.
- :class:`FreeRule`: a free of a pool object returns its page exactly when OSv's rule says, and
  frees from another CPU stay queued until the owner is signalled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from mmsim.mm.constants import MAIN_AREA, PAGE_SIZE
from mmsim.mm.slab import (
    CROSS_CPU_SIGNAL,
    InvalidPointer,
    PoolPage,
    malloc_alignment,
    objects_per_page,
)

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.mm.page_pool import PagePool
    from mmsim.mm.page_range_allocator import PageRangeAllocator
    from mmsim.mm.slab import Malloc

__all__ = [
    "FreeRule",
    "check_address_space",
    "check_blocks",
    "check_kernel",
    "check_page_allocator",
    "face_blocks",
]

_PHYS_MASK = (1 << 44) - 1


def _page_runs(pfns: Iterable[int]) -> list[tuple[int, int]]:
    """Single pages as (pfn, npages) runs of consecutive pfns; a page given twice stays two
    pieces, so :func:`_disjoint` still sees it. The caches hold thousands of pages, mostly in
    runs, and a fuzz checks after every step: found with numpy, not a Python loop a page."""
    a = np.fromiter(pfns, dtype=np.int64)
    if not a.size:
        return []
    a.sort()
    cut = np.flatnonzero(np.diff(a) != 1) + 1
    starts = a[np.concatenate(([0], cut))]
    ends = a[np.concatenate((cut - 1, [a.size - 1]))] + 1
    return list(zip(starts.tolist(), (ends - starts).tolist(), strict=True))


def _disjoint(pieces: list[tuple[int, int]], what: str) -> None:
    pieces.sort()
    for (start, n), (nxt, _) in zip(pieces, pieces[1:], strict=False):
        assert start + n <= nxt, f"{what} {nxt:#x} is held twice (also by {start:#x}+{n})"


def check_page_allocator(ranges: PageRangeAllocator, pool: PagePool | None = None,
                         held: Iterable[tuple[int, int]] | None = None) -> None:
    """Runs never overlap, stay coalesced and sit in their container; if ``held`` (the
    (pfn, npages) the caller holds) is given, free + held + cached == total and no page is
    both free, cached or held twice."""
    ranges.check()
    runs = list(ranges.runs())
    for (s, n), (nxt, _) in zip(runs, runs[1:], strict=False):
        assert s + n < nxt, f"adjacent free runs at {s:#x} and {nxt:#x} were not coalesced"
    if held is None:
        return
    held = list(held)
    cached = _page_runs(pool.cached()) if pool is not None else []
    total = ranges.free_pages + sum(n for _, n in held) + sum(n for _, n in cached)
    assert total == ranges.total_pages, \
        f"free {ranges.free_pages} + held + cached = {total} != total {ranges.total_pages}"
    _disjoint(runs + held + cached, "page")


def check_blocks(malloc: Malloc, blocks: Iterable[tuple[int, int, int]]) -> None:
    """Each (address, requested bytes, alignment) is a live block at least as large as asked,
    aligned as asked, a pool object on one of its page's slots; no two blocks overlap
    (physically in the linear areas, virtually for mappings)."""
    linear: list[tuple[int, int]] = []
    mapped: list[tuple[int, int]] = []
    for addr, size, align in blocks:
        assert addr, "a live block at NULL"
        try:
            usable = malloc.malloc_usable_size(addr)
        except InvalidPointer:
            raise AssertionError(f"live block {addr:#x} is not allocated (freed, or never "
                                 f"handed out)") from None
        assert usable >= size, f"{addr:#x}: usable {usable} < requested {size}"
        assert addr % align == 0, f"{addr:#x} is not aligned to {align}"
        if addr < MAIN_AREA:
            mapped.append((addr, usable))
        else:
            linear.append((addr & _PHYS_MASK, usable))
        kind = malloc.kind_of(addr)
        if kind.isdigit():
            s = int(kind)
            first = PAGE_SIZE - objects_per_page(s) * s
            off = addr % PAGE_SIZE
            assert off >= first and (off - first) % s == 0, f"{addr:#x} is not on an object slot"
    for spans in (linear, mapped):
        spans.sort()
        for (a, n), (b, _) in zip(spans, spans[1:], strict=False):
            assert a + n <= b, f"two live blocks overlap: {a:#x}+{n} and {b:#x}"


def face_blocks(kernel: Kernel) -> list[tuple[int, int, int]]:
    """The blocks the kernel's malloc face holds for the trace (live handles and leaked
    blocks), with the alignment every malloc family call gets at least."""
    face = kernel.malloc
    return [(addr, size, min(8, malloc_alignment(size)))
            for addr, size, _site in [*face.live.values(), *face.leaked]]


def check_sites(face: Any) -> None:
    """Each call site's live blocks and bytes are those of the live blocks that name it, and
    the bytes allocated are the sites' plus those of calls that named none."""
    live: dict[str, list[int]] = {}
    for _, size, site in [*face.live.values(), *face.leaked]:
        if site is not None:
            acc = live.setdefault(site, [0, 0])
            acc[0] += 1
            acc[1] += size
    counted = {site: [st[0] - st[2], st[1] - st[3]] for site, st in face.sites.stats.items()
               if st[0] != st[2] or st[1] != st[3]}
    assert counted == live, f"call sites count {counted}, the live blocks say {live}"
    allocated = sum(st[1] for st in face.sites.stats.values()) + face.unattributed_bytes
    assert allocated == face.allocated_bytes, \
        f"sites allocated {allocated} bytes, malloc counted {face.allocated_bytes}"


def check_address_space(vm: Any) -> None:
    """VMAs and page tables agree, every resident page is in exactly one VMA (the address
    space's own check), and resident <= mapped."""
    vm.check()
    assert vm.resident_bytes <= vm.mapped_bytes, \
        f"resident {vm.resident_bytes} > mapped {vm.mapped_bytes}"


def check_kernel(kernel: Kernel, blocks: Iterable[tuple[int, int, int]] | None = None) -> None:
    """Every invariant of a booted kernel: pages conserved (free + categories == total), the
    page allocator's structure, malloc's pools and its pages each in one place, the live
    blocks (``blocks`` as :func:`check_blocks` takes them, or the trace's live handles), the
    address space against its page tables."""
    kernel.check()
    check_page_allocator(kernel.ranges)
    face = kernel.malloc
    if face is not None:
        m = face.malloc
        m.check()
        pieces = list(m.pfns()) + list(kernel.ranges.runs())
        pieces += _page_runs(kernel.pool.cached())
        _disjoint(pieces, "page")
        held = sum(n for _, n in m.pfns())
        assert m.heap_bytes == held * PAGE_SIZE + m.large.mapped_bytes, "heap size drifted"
        check_blocks(m, face_blocks(kernel) if blocks is None else blocks)
        check_sites(face)
    vm = kernel.address_space
    if vm is not None:
        check_address_space(vm)


class FreeRule:
    """OSv's rule for a free of a pool object, as a model of the garbage sinks.

    Call :meth:`before` with the address and the freeing CPU just before the free, and the
    returned function just after it (``settled=False`` if a reclaim pass ran in between, which
    may give an emptied page back on its own). Frees that are not checked (realloc's) must
    still go through :meth:`before` so the model counts them, with ``check=False``.
    """

    def __init__(self, malloc: Malloc) -> None:
        self.m = malloc
        n = malloc.ncpus
        self.sink = [[0] * n for _ in range(n)]  # frees queued since the last signal
        self.pending = [0] * n

    def before(self, addr: int, cpu: int, check: bool = True) -> Callable[..., None]:
        m = self.m
        page = m.page_of(addr)
        if not isinstance(page, PoolPage):
            return _nothing
        if page.cpu != cpu and m.pool.smp:
            owner = page.cpu
            self.sink[owner][cpu] += 1
            self.pending[owner] += 1
            collect = self.sink[owner][cpu] > CROSS_CPU_SIGNAL
            if collect:
                self.sink[owner][cpu] = 0
                self.pending[owner] = 0
            nalloc = page.nalloc

            def cross(settled: bool = True) -> None:
                assert m.pending_cross_cpu(owner) == self.pending[owner], \
                    f"CPU {owner} has {m.pending_cross_cpu(owner)} queued frees, " \
                    f"OSv's rule: {self.pending[owner]}"
                if not collect:
                    assert m.page_of(addr) is page and page.nalloc == nalloc, \
                        "an object freed on another CPU stays allocated until collected"
            return cross if check else _nothing
        tail = page.pool.tail
        goes_back = page.nalloc == 1 and tail is not None and (tail is page or not tail.nalloc)

        def same(settled: bool = True) -> None:
            gone = m.page_of(addr) is None
            if goes_back or settled:
                assert gone == goes_back, \
                    f"pool page of {addr:#x} returned: {gone}, OSv's rule: {goes_back}"
        return same if check else _nothing


def _nothing(settled: bool = True) -> None:
    return None
