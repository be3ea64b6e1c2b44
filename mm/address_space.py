"""mm's public face for virtual memory: mmap, munmap, mprotect, madvise, mremap, msync, faults.

One :class:`AddressSpace` is OSv's single address space (reference §6). It owns the VMA list and
changes the kernel's page tables, taking data pages from the page pool (4 KiB) and the run
allocator (2 MiB). Errors are what the application would see: :class:`VmError` carries an errno
name (``EINVAL``, ``ENOMEM``...) or a signal (``SIGSEGV``, ``SIGBUS``) and is counted in
:attr:`AddressSpace.stats` before it is raised.

Cost: every operation works on VMAs, page-table extents and 2 MiB blocks, never on single
pages. A touch of a range computes the holes of the range once, groups the 4 KiB pages it needs
into one bulk allocation and one ``map`` per contiguous piece, and counts faults arithmetically
(one per 4 KiB page, one per 2 MiB block populated whole).

File mappings either take private copies of the file's pages (OSv without a page cache) or,
once :meth:`AddressSpace.use_page_cache` has wired a file system in, share its cached pages
through :mod:`mm.page_cache` (§7).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mmsim.mm.constants import HUGE_PAGE_SIZE, MMAP_AREA_END, PAGE_SHIFT, PAGE_SIZE, PAGES_PER_HUGE
from mmsim.mm.file_backing import FileBacking
from mmsim.mm.hugepage import HugePagePolicy, align_down, align_up
from mmsim.mm.page_cache import FileCache, PageCache
from mmsim.mm.page_pool import OutOfPages, PagePool
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.mm.pagetables import PageTables, Perm
from mmsim.mm.vma import ANON, FILE, Vma, VmaList

__all__ = ["ADVICE", "AddressSpace", "VmError", "VmStats"]

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
PROT_MASK = PROT_READ | PROT_WRITE | PROT_EXEC
ADVICE = ("dontneed", "hugepage", "nohugepage")
HUGE = HUGE_PAGE_SIZE


def _page_up(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE


class VmError(Exception):
    """What the application sees: an errno name or a signal, with a readable message."""

    def __init__(self, kind: str, message: str, addr: int | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.addr = addr


class _NoHugePage(Exception):
    """A MAP_HUGETLB mapping could not get a 2 MiB page (never falls back to 4 KiB)."""


@dataclass
class VmStats:
    """Event counters of the address space (the summary's ``mmap`` section)."""

    faults: int = 0
    segv: int = 0
    sigbus: int = 0
    tlb_flushes: int = 0
    #: 2 MiB blocks mapped with 512 small pages because no aligned 2 MiB run was free
    huge_fallbacks: int = 0
    errors: Counter = field(default_factory=Counter)


class AddressSpace:
    """The VMAs and anonymous/file pages of OSv's one address space."""

    def __init__(
        self,
        page_tables: PageTables,
        pool: PagePool,
        ranges: PageRangeAllocator,
        hugepage_policy: HugePagePolicy | None = None,
        *,
        files: FileBacking | None = None,
        reserved: Iterable[tuple[int, int]] = ((0, PAGE_SIZE),),
        cpu: Callable[[], int] = lambda: 0,
        on_huge_page_shortage: Callable[[], None] | None = None,
    ) -> None:
        self.pt = page_tables
        self.pool = pool
        self.ranges = ranges
        self.policy = hugepage_policy or HugePagePolicy()
        self.files = files
        self.vmas = VmaList(reserved)
        self._cpu = cpu
        #: OSv wakes the reclaimer when a huge page cannot be had
        self.on_huge_page_shortage = on_huge_page_shortage
        #: bytes of pages the mappings own (shared page-cache pages are the cache's)
        self.resident: dict[str, int] = {ANON: 0, FILE: 0}
        self.huge_pages = 0
        self.small_pages = 0
        self.stats = VmStats()
        self.page_cache: PageCache | None = None

    def use_page_cache(self, backing: FileCache, lru_max: int) -> PageCache:
        """Map the files ``backing`` serves through its cache (OSv's ``vop_cache``) from now
        on; ``lru_max`` bounds the write cache (see :func:`mm.page_cache.lru_max_length`)."""
        self.page_cache = PageCache(self, backing, lru_max)
        return self.page_cache

    # ------------------------------------------------------------------ helpers

    def _fail(self, kind: str, message: str, addr: int | None = None) -> VmError:
        self.stats.errors[kind] += 1
        if kind == "SIGSEGV":
            self.stats.segv += 1
        elif kind == "SIGBUS":
            self.stats.sigbus += 1
        return VmError(kind, message, addr)

    def _range(self, addr: int, length: int, what: str) -> tuple[int, int]:
        """Checked ``[addr, addr + length rounded up to 4K)``; EINVAL if misaligned or outside."""
        if addr % PAGE_SIZE:
            raise self._fail("EINVAL", f"{what}: address {addr:#x} is not page aligned", addr)
        if length < 0:
            raise self._fail("EINVAL", f"{what}: negative length", addr)
        end = addr + _page_up(length)
        if addr < 0 or end > MMAP_AREA_END:
            raise self._fail("EINVAL", f"{what}: range outside the mmap area", addr)
        return addr, end

    def _hugetlb_cut(self, start: int, end: int, what: str) -> None:
        """EINVAL if ``[start, end)`` cuts a MAP_HUGETLB mapping off a 2 MiB boundary (Linux,
        mmap(2): munmap's address and length must be huge-page multiples; a split elsewhere is
        EINVAL), so that a hugetlb VMA only ever holds 2 MiB pages."""
        for x in (start, end):
            vma = self.vmas.find(x) if x % HUGE else None
            if vma is not None and vma.hugetlb:
                raise self._fail("EINVAL", f"{what}: {x:#x} cuts a MAP_HUGETLB mapping off a "
                                 "2 MiB boundary", x)

    @property
    def resident_bytes(self) -> int:
        return self.resident[ANON] + self.resident[FILE]

    @property
    def mapped_bytes(self) -> int:
        return self.vmas.mapped_bytes

    def present(self, addr: int, length: int) -> int:
        """Bytes of ``[addr, addr + length)`` backed by a page (PROT_NONE pages included)."""
        return self.pt.present_bytes(addr, length)

    def _file_size(self, vma: Vma) -> int:
        if vma.cache_file is not None and self.page_cache is not None:
            return self.page_cache.backing.size(vma.cache_file)
        size = self.files.size(vma.path) if self.files is not None and vma.path else None
        return vma.file_size if size is None else size

    # ------------------------------------------------------------------ mmap

    def mmap(
        self,
        length: int,
        prot: int = PROT_READ | PROT_WRITE,
        *,
        shared: bool = False,
        private: bool | None = None,
        path: str | None = None,
        offset: int = 0,
        populate: bool = False,
        hugetlb: bool = False,
        fixed: bool = False,
        addr: int | None = None,
        owner: object = None,
    ) -> int:
        """Map ``length`` bytes (anonymous, or of file ``path``); returns the address.

        ``private`` defaults to ``not shared``; exactly one of them must hold (EINVAL).
        Anonymous shared memory is private (OSv). MAP_HUGETLB rounds to 2 MiB, implies populate
        and fails with ENOMEM unless every block gets a 2 MiB page.
        """
        if private is None:
            private = not shared
        if shared == private:
            raise self._fail("EINVAL", "mmap: exactly one of MAP_SHARED and MAP_PRIVATE")
        if length <= 0:
            raise self._fail("EINVAL", "mmap: length is 0")
        if prot & ~PROT_MASK:
            raise self._fail("EINVAL", f"mmap: bad protection {prot:#x}")
        if offset < 0 or (path is not None and offset % PAGE_SIZE):
            raise self._fail("EINVAL", f"mmap: offset {offset:#x} is not page aligned")
        if hugetlb and path is not None:
            raise self._fail("EINVAL", "mmap: MAP_HUGETLB of a regular file")
        size = align_up(length) if hugetlb else _page_up(length)
        if fixed:
            if addr is None or addr % (HUGE if hugetlb else PAGE_SIZE):
                raise self._fail("EINVAL", f"mmap: MAP_FIXED address {addr or 0:#x} misaligned")
            if addr < 0 or addr + size > MMAP_AREA_END:
                raise self._fail("ENOMEM", "mmap: MAP_FIXED range outside the mmap area", addr)
            if any(s < addr + size and addr < e for s, e in self.vmas.reserved):
                raise self._fail("EINVAL", "mmap: MAP_FIXED over a kernel range", addr)
        file_size = 0
        if path is not None:
            got = self.files.size(path) if self.files is not None else None
            if got is None:
                raise self._fail("ENOENT", f"mmap: no such file '{path}'")
            file_size = got
        cache_file = None
        if path is not None and self.page_cache is not None:
            cache_file = self.page_cache.backing.open(path)
        if hugetlb and not self.policy.hugetlb_available():
            raise self._fail("ENOMEM", "mmap: MAP_HUGETLB but huge pages are disabled")
        if fixed:
            assert addr is not None
            start = addr
            self._unmap_range(start, start + size)
        else:
            found = self.vmas.find_hole(addr, size, aligned_only=hugetlb)
            if found is None:
                raise self._fail("ENOMEM", f"mmap: no hole for {size:#x} bytes")
            start = found
        vma = Vma(
            start, start + size, prot,
            kind=ANON if path is None else FILE,
            shared=shared, mmap_small=path is not None, hugetlb=hugetlb,
            path=path, file_offset=offset, file_size=file_size, cache_file=cache_file,
            owner=owner,
        )
        self.vmas.insert(vma)
        if hugetlb:
            try:
                self._fill(vma, vma.start, vma.end, fault=False)
            except _NoHugePage:
                self._unmap_range(vma.start, vma.end)
                raise self._fail("ENOMEM", "mmap: MAP_HUGETLB: no free 2 MiB page") from None
        elif populate:
            end = vma.end
            if vma.kind == FILE:  # file populate stops at EOF
                end = min(end, vma.start + _page_up(file_size) - offset)
            if end > vma.start and vma.cache_file is not None:
                assert self.page_cache is not None
                self.page_cache.fault(vma, vma.start, end, write=False, count=False)
            elif end > vma.start:
                self._fill(vma, vma.start, end, fault=False)
        return start

    def map_anon(self, length: int, populate: bool = True, owner: object = None) -> int:
        """A private read-write anonymous mapping (malloc's path for large blocks)."""
        return self.mmap(length, PROT_READ | PROT_WRITE, populate=populate, owner=owner)

    def unmap(self, vaddr: int, length: int) -> None:
        """munmap for in-kernel callers (malloc's free of a large block)."""
        self.munmap(vaddr, length)

    # ------------------------------------------------------------------ munmap

    def munmap(self, addr: int, length: int) -> None:
        """Unmap ``[addr, addr + length)``; all of it must be mapped (EINVAL otherwise)."""
        if length == 0:
            raise self._fail("EINVAL", "munmap: length is 0", addr)
        start, end = self._range(addr, length, "munmap")
        gap = self.vmas.first_gap(start, end)
        if gap is not None:
            raise self._fail("EINVAL", f"munmap: {gap:#x} is not mapped", gap)
        self._hugetlb_cut(start, end, "munmap")
        self._unmap_range(start, end)

    def _unmap_range(self, start: int, end: int) -> None:
        """Remove every VMA and page in ``[start, end)`` (holes allowed)."""
        vmas = self.vmas.isolate(start, end)
        if not vmas:
            return
        if self.page_cache is not None:  # OSv syncs shared file mappings before unmapping
            for vma in vmas:
                if vma.cache_file is not None and vma.shared:
                    self.page_cache.sync(vma, vma.start, vma.end)
        self._unmap_pages(start, end, vmas)
        for vma in vmas:
            self.vmas.remove(vma)
        if self.page_cache is not None:  # an unlinked file's last mapping frees its pages
            self.page_cache.unmapped(vmas)

    def _count_edge_splits(self, start: int, end: int) -> None:
        """A page-table change over ``[start, end)`` splits a 2 MiB leaf straddling either edge."""
        seen = -1
        for x in (start, end):
            if x % HUGE and x < MMAP_AREA_END and align_down(x) != seen:
                hit = self.pt.translate(x)
                if hit is not None and hit[2] == HUGE:
                    self.huge_pages -= 1
                    self.small_pages += PAGES_PER_HUGE
                    seen = align_down(x)

    def _unmap_pages(self, start: int, end: int, vmas: list[Vma]) -> int:
        """Unmap and free the pages of ``[start, end)`` (VMAs isolated, in order); bytes freed.

        Whole 2 MiB pages go straight back to the runs; 4 KiB pages, including the pieces of a
        split huge page, are freed one by one into the CPU's L1 cache (§12.9). Pages of the
        page cache are only unmapped: they stay the cache's.
        """
        self._count_edge_splits(start, end)
        extents = self.pt.unmap(start, end - start)
        if not extents:
            return 0
        small: list[tuple[int, int]] = []
        freed = 0
        vi = 0
        pc = self.page_cache
        for ext in extents:
            if ext.leaf_size == HUGE:
                if small:
                    self.pool.free_pages(small, self._cpu())
                    small = []
                self.huge_pages -= ext.npages // PAGES_PER_HUGE
                self.ranges.free(ext.pfn, ext.npages)
            else:
                self.small_pages -= ext.npages
            # charge the bytes to the kinds of the VMAs the extent lies in
            a, b = ext.vaddr, ext.end
            while a < b:
                while vmas[vi].end <= a:
                    vi += 1
                vma = vmas[vi]
                piece = min(b, vma.end) - a
                if ext.leaf_size == HUGE:
                    self.resident[vma.kind] -= piece
                    freed += piece
                else:
                    pfn = ext.pfn + ((a - ext.vaddr) >> PAGE_SHIFT)
                    npages = piece >> PAGE_SHIFT
                    own = [(pfn, npages)]
                    if vma.cache_file is not None and pc is not None:
                        own = pc.release(pfn, npages)
                    for _, n in own:
                        self.resident[vma.kind] -= n << PAGE_SHIFT
                        freed += n << PAGE_SHIFT
                    small += own
                a += piece
        if small:
            self.pool.free_pages(small, self._cpu())
        self.stats.tlb_flushes += 1
        return freed

    # ------------------------------------------------------------------ mprotect / madvise

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """Change the protection of a mapped range (ENOMEM if part of it is not mapped)."""
        start, end = self._range(addr, length, "mprotect")
        if prot & ~PROT_MASK:
            raise self._fail("EINVAL", f"mprotect: bad protection {prot:#x}", addr)
        if start == end:
            return
        gap = self.vmas.first_gap(start, end)
        if gap is not None:
            raise self._fail("ENOMEM", f"mprotect: {gap:#x} is not mapped", gap)
        self._hugetlb_cut(start, end, "mprotect")
        vmas = self.vmas.isolate(start, end)
        for vma in vmas:
            vma.prot = prot
        self._count_edge_splits(start, end)
        if self.pt.protect(start, end - start, Perm(prot)):
            self.stats.tlb_flushes += 1
        if self.page_cache is not None:
            for vma in vmas:
                if vma.cache_file is not None:
                    self.page_cache.protect(vma, vma.start, vma.end)

    def madvise(self, addr: int, length: int, advice: str) -> None:
        """dontneed frees the pages (the next touch gets zero pages); nohugepage forbids huge
        pages and splits the present ones; hugepage allows them again (anonymous VMAs)."""
        start, end = self._range(addr, length, "madvise")
        if advice not in ADVICE:
            raise self._fail("EINVAL", f"madvise: unsupported advice '{advice}'", addr)
        if start == end:
            return
        gap = self.vmas.first_gap(start, end)
        if gap is not None:
            raise self._fail("ENOMEM", f"madvise: {gap:#x} is not mapped", gap)
        self._hugetlb_cut(start, end, "madvise")
        vmas = self.vmas.isolate(start, end)
        if advice == "dontneed":
            self._unmap_pages(start, end, vmas)
        elif advice == "nohugepage":
            huge = []
            for vma in vmas:
                if vma.hugetlb:
                    continue  # MAP_HUGETLB memory is huge pages whatever the advice
                vma.mmap_small = True
                huge += [e for e in self.pt.extents(vma.start, vma.end - vma.start)
                         if e.leaf_size == HUGE]
            for ext in huge:
                for block in range(align_down(ext.vaddr), ext.end, HUGE):
                    if self.pt.split(block):
                        self.huge_pages -= 1
                        self.small_pages += PAGES_PER_HUGE
        else:
            for vma in vmas:
                if vma.anonymous:  # file VMAs stay 4K: ARC pages cannot be mapped huge
                    vma.mmap_small = False

    # ------------------------------------------------------------------ mremap / msync

    def mremap(
        self, old_addr: int, old_size: int, new_size: int, *, maymove: bool = True,
        fixed: bool = False,
    ) -> int:
        """Resize a mapping: shrink in place, grow in place if the tail is free, else move
        (anonymous: populated and copied). The old range must lie in one VMA (EFAULT)."""
        if fixed:
            raise self._fail("EINVAL", "mremap: MREMAP_FIXED is not supported", old_addr)
        if new_size <= 0 or old_size <= 0:
            raise self._fail("EINVAL", "mremap: size is 0", old_addr)
        start, old_end = self._range(old_addr, old_size, "mremap")
        new_len = _page_up(new_size)
        vma = self.vmas.find(start)
        if vma is not None and vma.hugetlb:  # Linux: 2 MiB multiples, shrink only (EINVAL)
            if start % HUGE:
                raise self._fail("EINVAL", "mremap: MAP_HUGETLB address not 2 MiB aligned", start)
            old_end, new_len = start + align_up(old_size), align_up(new_size)
            if new_len > old_end - start:
                raise self._fail("EINVAL", "mremap: a MAP_HUGETLB mapping cannot grow", start)
        if vma is None or vma.end < old_end:
            raise self._fail("EFAULT", f"mremap: [{start:#x}, {old_end:#x}) is not one mapping")
        old_len = old_end - start
        if new_len <= old_len:
            if new_len < old_len:
                self._unmap_range(start + new_len, old_end)
            return start
        if vma.end == old_end and self.vmas.is_free(old_end, start + new_len):
            self.vmas.set_end(vma, start + new_len)
            return start
        if not maymove:
            raise self._fail("ENOMEM", "mremap: cannot grow in place", start)
        where = self.vmas.find_hole(None, new_len)
        if where is None:
            raise self._fail("ENOMEM", f"mremap: no hole for {new_len:#x} bytes", start)
        moved = vma.tail_from(start)
        moved.start, moved.end = where, where + new_len
        self.vmas.insert(moved)
        if moved.anonymous:
            try:
                self._fill(moved, moved.start, moved.end, fault=False)
            except _NoHugePage:
                self._unmap_range(moved.start, moved.end)
                raise self._fail("ENOMEM", "mremap: MAP_HUGETLB: no free 2 MiB page") from None
        self._unmap_range(start, old_end)
        return where

    def msync(self, addr: int, length: int) -> None:
        """No-op for anonymous memory; ENOMEM for a private file mapping (OSv). A shared
        mapping through the page cache writes its dirty pages back and syncs the file."""
        start, end = self._range(addr, length, "msync")
        gap = self.vmas.first_gap(start, end)
        if gap is not None:
            raise self._fail("ENOMEM", f"msync: {gap:#x} is not mapped", gap)
        vmas = self.vmas.intersecting(start, end)
        for vma in vmas:
            if vma.kind == FILE and not vma.shared:
                raise self._fail("ENOMEM", "msync: private file mapping", vma.start)
        if self.page_cache is not None:
            for vma in vmas:
                if vma.cache_file is not None:
                    self.page_cache.sync(vma, max(start, vma.start), min(end, vma.end))

    # ------------------------------------------------------------------ faults

    def touch(self, addr: int, length: int, write: bool = True) -> int:
        """Access every page of ``[addr, addr + length)`` in address order; returns the faults.

        Raises VmError SIGSEGV (no mapping, PROT_NONE, write to read-only) or SIGBUS (past the
        end of a mapped file) at the first bad page; the pages before it stay populated.
        """
        if length <= 0:
            return 0
        start = align_down(addr, PAGE_SIZE)
        end = _page_up(addr + length)
        before = self.stats.faults
        if start < 0 or end > MMAP_AREA_END:
            raise self._fail("SIGSEGV", f"touch: {max(start, 0):#x} is outside the mmap area")
        cursor = start
        for vma in self.vmas.intersecting(start, end):
            if vma.start > cursor:
                break
            piece_end = min(end, vma.end)
            self._touch_vma(vma, cursor, piece_end, write)
            cursor = piece_end
        if cursor < end:
            raise self._fail("SIGSEGV", f"touch: {cursor:#x} is not mapped", cursor)
        return self.stats.faults - before

    def _touch_vma(self, vma: Vma, start: int, end: int, write: bool) -> None:
        prot = vma.prot
        if prot == 0:
            raise self._fail("SIGSEGV", f"touch: {start:#x} is PROT_NONE", start)
        if write and not prot & PROT_WRITE:
            raise self._fail("SIGSEGV", f"touch: write to read-only {start:#x}", start)
        limit = end
        if vma.kind == FILE:
            eof = vma.start + _page_up(self._file_size(vma)) - vma.file_offset
            limit = max(start, min(end, eof))
        if not write and not prot & PROT_READ:
            # present pages are readable (x86 has no write-only PTE), a read fault is not
            holes = self._holes(start, limit)
            if holes:
                raise self._fail("SIGSEGV", f"touch: read of write-only {holes[0][0]:#x}")
        if limit > start and vma.cache_file is not None:
            assert self.page_cache is not None
            self.page_cache.fault(vma, start, limit, write)
        elif limit > start:
            try:
                self._fill(vma, start, limit, fault=True)
            except _NoHugePage:
                raise self._fail("SIGBUS", "touch: MAP_HUGETLB block without a 2 MiB page") from None
        if limit < end and self._holes(limit, end):
            raise self._fail("SIGBUS", f"touch: {limit:#x} is past the end of '{vma.path}'", limit)

    def _holes(self, start: int, end: int) -> list[tuple[int, int]]:
        """The unpopulated sub-ranges of ``[start, end)``, in order (one page-table walk)."""
        out: list[tuple[int, int]] = []
        cursor = start
        for ext in self.pt.extents(start, end - start):
            if ext.vaddr > cursor:
                out.append((cursor, ext.vaddr))
            cursor = ext.end
        if cursor < end:
            out.append((cursor, end))
        return out

    def _fill(self, vma: Vma, start: int, end: int, *, fault: bool) -> None:
        """Populate the holes of ``[start, end)`` inside ``vma`` as OSv's fault/populate does.

        In the huge span (2 MiB blocks fully inside the VMA for a fault, inside the range for a
        populate) a block with a hole is populated whole: a 2 MiB page if it is empty, has no PT
        and an aligned run is free, else 4K pages in all its holes. Elsewhere, 4K pages. With
        ``fault``, one fault is counted per whole-block populate and per 4K page otherwise.
        """
        lo, hi = (vma.start, vma.end) if fault else (start, end)
        hs, he = self.policy.span(vma.anonymous, vma.mmap_small, lo, hi)
        qs = align_down(start) if hs <= start < he else start
        qe = align_up(end) if hs < end < he else end
        holes = self._holes(qs, qe)
        if not holes:
            return
        # boundary blocks reached only by the widening are populated only if the range itself
        # has a hole in them
        skip: set[int] = set()
        if qs < start:
            skip.add(align_down(start))
        if qe > end:
            skip.add(align_down(end - 1))
        for block in list(skip):
            b_lo, b_hi = max(block, start), min(block + HUGE, end)
            if any(a < b_hi and b_lo < b for a, b in holes):
                skip.discard(block)

        small: list[tuple[int, int]] = []  # 4K ranges not yet mapped, in address order
        faults = 0
        last_block = -1  # the last block counted as one fault
        perm = Perm(vma.prot)
        huge_failed = False

        def add_small(a: int, b: int) -> None:
            if small and small[-1][1] == a:
                small[-1] = (small[-1][0], b)
            else:
                small.append((a, b))

        for hole_start, hole_end in holes:
            for a, b, in_span in _split_span(hole_start, hole_end, hs, he):
                if not in_span:
                    add_small(a, b)
                    faults += (b - a) >> PAGE_SHIFT
                    continue
                block = align_down(a)
                while a < b:
                    block_end = block + HUGE
                    if block in skip:
                        a = block = block_end
                        continue
                    if a == block and b >= block_end:  # a run of empty blocks
                        last = align_down(b)
                        faults += (last - block) // HUGE
                        last_block = last - HUGE
                        for blk in range(block, last, HUGE):
                            if not huge_failed and not self.pt.has_pt(blk):
                                pfn = self.ranges.alloc_aligned(PAGES_PER_HUGE, PAGES_PER_HUGE)
                                if pfn is not None:
                                    self._map_small(vma, small, perm)
                                    small = []
                                    self._map_huge(vma, blk, pfn, perm)
                                    continue
                                huge_failed = True
                                if self.on_huge_page_shortage is not None:
                                    self.on_huge_page_shortage()
                            if huge_failed:
                                if vma.hugetlb:
                                    self._map_small(vma, small, perm)
                                    raise _NoHugePage
                                self.stats.huge_fallbacks += 1
                            add_small(blk, blk + HUGE)
                        a = block = last
                        continue
                    add_small(a, min(block_end, b))  # a block with pages: fill its holes
                    if block != last_block:
                        faults += 1
                        last_block = block
                    a = block = block_end
        self._map_small(vma, small, perm)
        if fault:
            self.stats.faults += faults

    def _map_huge(self, vma: Vma, vaddr: int, pfn: int, perm: Perm) -> None:
        try:
            if self.pt.giant_pages:
                self.pt.map_huge(vaddr, pfn, perm)
            else:
                # the block is empty and has no PT (checked): linear_map puts exactly one 2 MiB
                # leaf there, without map_huge's second PT lookup
                self.pt.linear_map(vaddr, pfn << PAGE_SHIFT, HUGE, perm)
        except MemoryError:
            self.ranges.free(pfn, PAGES_PER_HUGE)
            raise OutOfPages(PAGE_SIZE) from None
        self.huge_pages += 1
        self.resident[vma.kind] += HUGE

    def _map_small(self, vma: Vma, pieces: list[tuple[int, int]], perm: Perm) -> None:
        """Map 4K pages on every ``[a, b)`` of ``pieces`` with one bulk page allocation."""
        if not pieces:
            return
        total = sum(b - a for a, b in pieces) >> PAGE_SHIFT
        cpu = self._cpu()
        if total <= self.ranges.free_pages + self.pool.l1_pages_of(cpu):
            extents = self.pool.alloc_pages(total, cpu)
        else:
            # short of memory: ask per 2 MiB, so that waiting for memory needs no single run
            # of the whole size (OSv allocates, and waits, page by page)
            extents = []
            try:
                for done in range(0, total, PAGES_PER_HUGE):
                    extents += self.pool.alloc_pages(min(PAGES_PER_HUGE, total - done), cpu)
            except OutOfPages:
                self.pool.free_pages(extents, cpu)
                raise
        i = 0
        used = 0  # pages of extents[i] already given
        for n, (a, b) in enumerate(pieces):
            need = (b - a) >> PAGE_SHIFT
            chunk: list[tuple[int, int]] = []
            while need:
                pfn, cnt = extents[i]
                take = min(cnt - used, need)
                chunk.append((pfn + used, take))
                need -= take
                used += take
                if used == cnt:
                    i, used = i + 1, 0
            try:
                self.pt.map(a, chunk, perm)
            except MemoryError:
                rest = chunk + ([(extents[i][0] + used, extents[i][1] - used)] if used else [])
                start_i = i + (1 if used else 0)
                self.pool.free_pages(rest + list(extents[start_i:]), self._cpu())
                del pieces[n:]
                raise OutOfPages(PAGE_SIZE) from None
            self.small_pages += (b - a) >> PAGE_SHIFT
            self.resident[vma.kind] += b - a

    # ------------------------------------------------------------------ checks

    # -- the page providers' face (mm/page_cache.py's Mapper): pages another owner holds ------
    def holes(self, start: int, end: int) -> list[tuple[int, int]]:
        """The unpopulated sub-ranges of ``[start, end)``, in order."""
        return self._holes(start, end)

    def frame_extents(self, start: int, length: int) -> Iterable[Any]:
        """The present extents (``vaddr``, ``end``, ``pfn``, ``npages``) in the range."""
        return self.pt.extents(start, length)

    def map_private(self, vma: Vma, pieces: list[tuple[int, int]], perm: Perm) -> None:
        """Fresh anonymous 4K pages of this space on every ``[a, b)`` of ``pieces`` (a private
        copy of file data, say): the space owns them."""
        self._map_small(vma, pieces, perm)

    def map_frames(self, vaddr: int, frames: list[tuple[int, int]], perm: Perm) -> None:
        """Map frames another owner holds (a cache's) at ``vaddr``, 4K each; MemoryError if a
        page-table page cannot be had (nothing mapped then)."""
        self.pt.map(vaddr, frames, perm)
        self.small_pages += sum(n for _, n in frames)

    def unmap_frames(self, vaddr: int, length: int) -> list[Any]:
        """Clear the PTEs of ``[vaddr, vaddr + length)`` without freeing their frames (their
        owner does); the extents that were mapped."""
        gone = list(self.pt.unmap(vaddr, length))
        self.small_pages -= sum(ext.npages for ext in gone)
        return gone

    def protect_frames(self, vaddr: int, length: int, perm: Perm) -> None:
        self.pt.protect(vaddr, length, perm)

    def alloc_frames(self, npages: int) -> list[tuple[int, int]]:
        """Pages from the allocator on the current CPU, for an owner outside this space."""
        return self.pool.alloc_pages(npages, self._cpu())

    def free_frames(self, runs: list[tuple[int, int]]) -> None:
        self.pool.free_pages(runs, self._cpu())

    def count_faults(self, n: int) -> None:
        self.stats.faults += n

    def count_tlb_flush(self) -> None:
        self.stats.tlb_flushes += 1

    def maps_file(self, file: object) -> bool:
        """True if a mapping of this space is of ``file`` (a page-cache file)."""
        return any(v.cache_file is file for v in self.vmas)

    def check(self) -> None:
        """Assert that the VMAs, the page tables and the counters agree (tests; O(extents))."""
        self.vmas.check()
        resident = {ANON: 0, FILE: 0}
        pages = {PAGE_SIZE: 0, HUGE: 0}
        vmas = list(self.vmas)
        vi = 0
        pc = self.page_cache
        seen: dict[int, int] = {}  # PTEs per mapped page-cache buffer
        for ext in self.pt.extents(0, MMAP_AREA_END):
            if any(s <= ext.vaddr < e for s, e in self.vmas.reserved):
                continue  # the kernel image's own mapping
            assert ext.leaf_size in pages, f"unexpected leaf size at {ext.vaddr:#x}"
            pages[ext.leaf_size] += ext.npages
            a = ext.vaddr
            while a < ext.end:
                while vi < len(vmas) and vmas[vi].end <= a:
                    vi += 1
                assert vi < len(vmas) and vmas[vi].start <= a, f"page {a:#x} is in no VMA"
                vma = vmas[vi]
                assert not vma.hugetlb or ext.leaf_size == HUGE, f"4K page {a:#x} in a hugetlb VMA"
                piece = min(ext.end, vma.end) - a
                own = piece
                if vma.cache_file is not None and pc is not None:
                    pfn = ext.pfn + ((a - ext.vaddr) >> PAGE_SHIFT)
                    own = pc.check_ptes(vma, a, pfn, piece >> PAGE_SHIFT, ext.perm, seen)
                    own <<= PAGE_SHIFT
                if own:
                    assert ext.perm == Perm(vma.prot), f"PTE perm at {a:#x} != VMA prot"
                resident[vma.kind] += own
                a += piece
        assert resident == self.resident, f"resident {self.resident} != page tables {resident}"
        if pc is not None:
            pc.check(seen)
        assert pages[HUGE] == self.huge_pages * PAGES_PER_HUGE, "huge page count is stale"
        assert pages[PAGE_SIZE] == self.small_pages, "small page count is stale"

def _split_span(a: int, b: int, hs: int, he: int) -> list[tuple[int, int, bool]]:
    """``[a, b)`` cut into the parts below, inside (True) and above the huge span ``[hs, he)``."""
    if hs >= he or b <= hs or a >= he:
        return [(a, b, False)]
    out: list[tuple[int, int, bool]] = []
    if a < hs:
        out.append((a, hs, False))
    out.append((max(a, hs), min(b, he), True))
    if b > he:
        out.append((he, b, False))
    return out
