"""File mappings through the page cache, as OSv's core/pagecache.cc runs them (reference §7).

A file system that keeps whole records in page-aligned buffers (ZFS's ARC) lets a mapping share
those pages instead of copying them. What mm asks of it is the :class:`FileCache` protocol; the
kernel wires a file system into it, so mm knows nothing of ZFS.

* A read fault maps the cached record's page read-only (OSv also sets its software COW bit).
  The page stays the file system's (category ``arc``), never the mapping's.
* A private write copies the page into a page of the mapping (category ``file``).
* A shared write copies it into the *write cache*, drops the record's page from every mapping
  and maps the copy writable; from then on every fault of that file page, read or write, in any
  mapping, finds the write-cache page. The write cache is an LRU of at most ``lru_max`` pages
  (OSv: max(RAM pages / 100, 100)); past that the oldest min(lru_max / 5, 200) are unmapped
  everywhere (one TLB flush), written back if dirty and freed. Its pages are the category
  ``page_cache``; munmap does not free them.
* msync and munmap of a shared mapping write its dirty write-cache pages back and fsync.
* A file that is unlinked (or recreated) loses its write-cache pages once nothing maps it: at
  the unlink (:meth:`PageCache.forget`, which the kernel calls), or at the munmap of its last
  mapping.
* Mapped record buffers are not pinned: the file system calls :meth:`PageCache.invalidate`
  before it evicts one; every page-table entry pointing at it is cleared (one TLB flush) and the
  next touch faults the page in again.

Cost: one object per mapped record and one per run of write-cache pages (pages of one file
inserted together, physically contiguous), never one per page. A read touch maps record by
record; write-cache pages are allocated in bulk and evicted in OSv's batches. Where a mapped
buffer's pages may be mapped is kept as the virtual addresses of its first page in each mapping
(``bases``), so an eviction walks those spans of the page tables and nothing else.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mmsim.mm.constants import MMAP_AREA_END, PAGE_SHIFT, PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages
from mmsim.mm.pagetables import Perm
from sortedcontainers import SortedDict

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mmsim.mm.vma import Vma

__all__ = ["CachedRecord", "FileCache", "Mapper", "PageCache", "lru_max_length"]

PROT_WRITE = 2
#: at most this many remembered mapping spans per buffer before the stale ones are dropped
_MAX_BASES = 16


def lru_max_length(phys_pages: int) -> int:
    """OSv's bound on the write cache: 1 % of the RAM's pages, at least 100."""
    return max(phys_pages // 100, 100)


@dataclass(frozen=True, slots=True)
class CachedRecord:
    """A record as the file system caches it: file pages ``[page, page + npages)``.

    ``frames`` are the (pfn, count) extents holding those pages in file order; None means the
    record cannot be mapped (not cached, or pages not page-aligned in it): the mapping then
    takes private copies. ``token`` identifies the buffer in :meth:`FileCache.mapped` and
    :meth:`PageCache.invalidate`.
    """

    page: int
    npages: int
    frames: tuple[tuple[int, int], ...] | None
    token: Any = None


class FileCache(Protocol):
    """What a file system with a page cache (OSv's ``vop_cache``) offers file mappings.

    Files are named by the handle :meth:`open` returns, as OSv's mappings hold the vnode: a file
    unlinked or recreated under the same path is another file.
    """

    def open(self, path: str) -> Hashable | None:
        """A handle if mappings of ``path`` go through the page cache, else None."""
        ...

    def size(self, file: Any) -> int:
        """The file's size in bytes (SIGBUS past it)."""
        ...

    def record(self, file: Any, page: int) -> CachedRecord | None:
        """The cached record holding file page ``page``, read through the cache (a miss reads
        the disk); None if the file has no data any more (unlinked)."""
        ...

    def read(self, file: Any, offset: int, length: int) -> None:
        """Read through the cache (the data of a copy)."""
        ...

    def write(self, file: Any, offset: int, length: int) -> None:
        """Write back into the file (never past its end)."""
        ...

    def sync(self, file: Any) -> None:
        """Make the file's written data durable (fsync)."""
        ...

    def live(self, file: Any) -> bool:
        """False once the file is unlinked or recreated: its write-cache pages are then
        dropped (unwritten: the data is gone) as soon as nothing maps it."""
        ...

    def mapped(self, token: Any, ptes: int) -> None:
        """Page-table entries now pointing at the buffer (OSv's arc_share_buf/unshare_buf).

        While it is above 0 the file system must call :meth:`PageCache.invalidate` before it
        frees the buffer."""
        ...


class _Shared:
    """A cached record mapped read-only somewhere: its frames and where they may be mapped."""

    __slots__ = ("token", "file", "page", "npages", "pieces", "ptes", "bases", "alive")

    def __init__(self, token: Any, file: Hashable, page: int, npages: int) -> None:
        self.token = token
        self.file = file
        self.page = page
        self.npages = npages
        self.pieces: list[_Piece] = []
        self.ptes = 0
        self.bases: set[int] = set()
        self.alive = True


class _Piece:
    """Frames ``[pfn, pfn + n)`` of a mapped record, holding file pages from ``page``."""

    __slots__ = ("pfn", "n", "page", "owner")

    def __init__(self, pfn: int, n: int, page: int, owner: _Shared) -> None:
        self.pfn = pfn
        self.n = n
        self.page = page
        self.owner = owner


class _Run:
    """Write-cache pages ``[page, page + n)`` of one file in frames ``[pfn, pfn + n)``.

    Inserted together (``seq``), so within a run a lower page is older."""

    __slots__ = ("file", "page", "n", "pfn", "dirty", "seq", "bases")

    def __init__(self, file: Hashable, page: int, n: int, pfn: int, dirty: bool, seq: int,
                 bases: set[int]) -> None:
        self.file = file
        self.page = page
        self.n = n
        self.pfn = pfn
        self.dirty = dirty
        self.seq = seq
        self.bases = bases

    @property
    def owner(self) -> _Run:
        return self

    @property
    def npages(self) -> int:
        return self.n


_PRIVATE = object()  # a present page of the mapping's own (a copy)
_Frame = _Piece | _Run


def _va(vma: Vma, page: int) -> int:
    return vma.start + (page << PAGE_SHIFT) - vma.file_offset


def _page(vma: Vma, va: int) -> int:
    return (va - vma.start + vma.file_offset) >> PAGE_SHIFT


def _slice(frames: tuple[tuple[int, int], ...], skip: int, n: int) -> list[tuple[int, int]]:
    """``n`` frames after the first ``skip`` of an extent list."""
    out: list[tuple[int, int]] = []
    for pfn, cnt in frames:
        if skip >= cnt:
            skip -= cnt
            continue
        take = min(cnt - skip, n)
        out.append((pfn + skip, take))
        n -= take
        skip = 0
        if not n:
            break
    return out


class Mapper(Protocol):
    """What the page cache asks of the address space it maps its pages into: the small face
    of a page provider in OSv's mmu.cc. The cache owns its frames; the space maps them, owns
    the private copies, and counts faults and TLB flushes."""

    def holes(self, start: int, end: int) -> list[tuple[int, int]]: ...

    def frame_extents(self, start: int, length: int) -> Iterable[Any]: ...

    def map_private(self, vma: Vma, pieces: list[tuple[int, int]], perm: Perm) -> None: ...

    def map_frames(self, vaddr: int, frames: list[tuple[int, int]], perm: Perm) -> None: ...

    def unmap_frames(self, vaddr: int, length: int) -> list[Any]: ...

    def protect_frames(self, vaddr: int, length: int, perm: Perm) -> None: ...

    def alloc_frames(self, npages: int) -> list[tuple[int, int]]: ...

    def free_frames(self, runs: list[tuple[int, int]]) -> None: ...

    def count_faults(self, n: int) -> None: ...

    def count_tlb_flush(self) -> None: ...

    def maps_file(self, file: object) -> bool: ...


class PageCache:
    """The page cache of one address space: shared record pages and the write cache."""

    def __init__(self, space: Mapper, backing: FileCache, lru_max: int) -> None:
        self.space = space
        self.backing = backing
        self.lru_max = lru_max
        self.lru_batch = max(min(lru_max // 5, 200), 1)
        self._frames: SortedDict = SortedDict()  # first pfn -> _Piece | _Run
        self._by_token: dict[int, _Shared] = {}
        self._records: dict[Hashable, SortedDict] = {}  # file -> first page -> _Shared
        self._wc: dict[Hashable, SortedDict] = {}  # file -> first page -> _Run
        self._lru: SortedDict = SortedDict()  # (seq, page) -> _Run, oldest first
        self._seq = 0
        self.wc_pages = 0
        self.shared_ptes = 0
        self.evictions = 0  # LRU batches
        self.evicted_pages = 0
        self.written_back_pages = 0
        self.copied_pages = 0
        self.invalidations = 0

    # ------------------------------------------------------------------ frames

    def _overlaps(self, pfn: int, n: int) -> list[tuple[_Frame, int, int]]:
        """Cache frames in ``[pfn, pfn + n)``: (piece or run, first pfn, end pfn), in order."""
        d = self._frames
        if not d:
            return []
        end = pfn + n
        out: list[tuple[_Frame, int, int]] = []
        i = d.bisect_right(pfn) - 1
        if i >= 0:
            obj = d.peekitem(i)[1]
            if obj.pfn + obj.n > pfn:
                out.append((obj, pfn, min(end, obj.pfn + obj.n)))
        for key in d.irange(pfn, end, inclusive=(False, False)):
            obj = d[key]
            out.append((obj, key, min(end, key + obj.n)))
        return out

    def _classify(self, start: int, end: int) -> list[tuple[int, int, Any]]:
        """``[start, end)`` cut into (a, b, what): None (hole), _PRIVATE, or the cache frame."""
        out: list[tuple[int, int, Any]] = []
        cursor = start
        for ext in self.space.frame_extents(start, end - start):
            if ext.vaddr > cursor:
                out.append((cursor, ext.vaddr, None))
            p = ext.pfn
            for obj, lo, hi in self._overlaps(ext.pfn, ext.npages):
                if lo > p:
                    out.append((ext.vaddr + ((p - ext.pfn) << PAGE_SHIFT),
                                ext.vaddr + ((lo - ext.pfn) << PAGE_SHIFT), _PRIVATE))
                out.append((ext.vaddr + ((lo - ext.pfn) << PAGE_SHIFT),
                            ext.vaddr + ((hi - ext.pfn) << PAGE_SHIFT), obj))
                p = hi
            if p < ext.pfn + ext.npages:
                out.append((ext.vaddr + ((p - ext.pfn) << PAGE_SHIFT), ext.end, _PRIVATE))
            cursor = ext.end
        if cursor < end:
            out.append((cursor, end, None))
        return out

    def _add_base(self, owner: _Shared | _Run, base: int) -> None:
        bases = owner.bases
        if base in bases:
            return
        bases.add(base)
        if len(bases) > _MAX_BASES:  # forget the spans where nothing of it is mapped any more
            for b in list(bases):
                if b != base and not self._targets([owner], [b], None, None):
                    bases.discard(b)

    def _targets(self, owners: list[_Shared | _Run], bases: list[int] | None,
                 lo_page: int | None, hi_page: int | None) -> list[list[int]]:
        """[start, end) virtual ranges of the PTEs pointing at ``owners``' frames (of file
        pages [lo_page, hi_page) when given), found in their spans (at ``bases`` if given):
        one walk per span and one bisect per extent, whatever the number of owners."""
        frames: list[tuple[int, int]] = []
        spans: list[tuple[int, int]] = []
        for owner in owners:
            first = owner.page if lo_page is None else lo_page
            last = owner.page + owner.npages if hi_page is None else hi_page
            for f in owner.pieces if isinstance(owner, _Shared) else (owner,):
                flo = f.pfn + max(first - f.page, 0)
                fhi = f.pfn + min(last - f.page, f.n)
                if flo < fhi:
                    frames.append((flo, fhi))
            for base in owner.bases if bases is None else bases:
                s = max(base + ((first - owner.page) << PAGE_SHIFT), 0)
                e = min(base + ((last - owner.page) << PAGE_SHIFT), MMAP_AREA_END)
                if s < e:
                    spans.append((s, e))
        out: list[list[int]] = []
        if not frames or not spans:
            return out
        frames.sort()
        starts = [lo for lo, _ in frames]
        spans.sort()
        merged = [list(spans[0])]
        for s, e in spans[1:]:
            if s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        for s, e in merged:
            for ext in self.space.frame_extents(s, e - s):
                ext_end = ext.pfn + ext.npages
                i = max(bisect_right(starts, ext.pfn) - 1, 0)
                while i < len(frames) and frames[i][0] < ext_end:
                    lo, hi = max(frames[i][0], ext.pfn), min(frames[i][1], ext_end)
                    i += 1
                    if lo >= hi:
                        continue
                    va = ext.vaddr + ((lo - ext.pfn) << PAGE_SHIFT)
                    end = va + ((hi - lo) << PAGE_SHIFT)
                    if out and out[-1][1] == va:
                        out[-1][1] = end
                    else:
                        out.append([va, end])
        return out

    def _unmap_owners(self, owners: list[_Shared | _Run], lo_page: int | None = None,
                      hi_page: int | None = None) -> int:
        """Clear every PTE pointing at ``owners``' frames (of pages [lo, hi)); pages cleared.

        No accounting of the owners here: the caller knows whether they are still alive."""
        removed = 0
        for va, end in self._targets(owners, None, lo_page, hi_page):
            removed += sum(ext.npages for ext in self.space.unmap_frames(va, end - va))
        return removed

    # ------------------------------------------------------------------ shared records

    def _share(self, file: Hashable, rec: CachedRecord) -> _Shared:
        e = self._by_token.get(id(rec.token))
        if e is not None:
            return e
        e = _Shared(rec.token, file, rec.page, rec.npages)
        page = rec.page
        assert rec.frames is not None
        for pfn, n in rec.frames:
            piece = _Piece(pfn, n, page, e)
            self._frames[pfn] = piece
            e.pieces.append(piece)
            page += n
        self._by_token[id(rec.token)] = e
        self._records.setdefault(file, SortedDict())[rec.page] = e
        return e

    def _drop_entry(self, e: _Shared) -> None:
        """Forget a record buffer: no PTE points at it (or all are about to be cleared)."""
        e.alive = False
        for piece in e.pieces:
            del self._frames[piece.pfn]
        del self._by_token[id(e.token)]
        recs = self._records[e.file]
        del recs[e.page]
        if not recs:
            del self._records[e.file]
        self.backing.mapped(e.token, 0)

    def _lost_ptes(self, e: _Shared, n: int) -> None:
        e.ptes -= n
        self.shared_ptes -= n
        if e.ptes <= 0:
            self._drop_entry(e)
        else:
            self.backing.mapped(e.token, e.ptes)

    def invalidate(self, token: Any) -> None:
        """The file system is about to free this buffer: clear every PTE pointing at it.

        OSv's unmap_arc_buf: one TLB flush; the next access faults the page in again."""
        e = self._by_token.get(id(token))
        if e is None or e.token is not token:
            return
        self._drop_entry(e)
        removed = self._unmap_owners([e])
        self.shared_ptes -= e.ptes
        e.ptes = 0
        self.invalidations += 1
        if removed:
            self.space.count_tlb_flush()

    def _map_records(self, vma: Vma, p0: int, p1: int, perm: Perm) -> None:
        """Map file pages [p0, p1) (holes) record by record from the file system's cache."""
        file = vma.cache_file
        backing = self.backing
        space = self.space
        page = p0
        while page < p1:
            rec = backing.record(file, page)
            if rec is None or rec.frames is None:  # nothing to share: a private copy
                hi = p1 if rec is None else min(p1, rec.page + rec.npages)
                space.map_private(vma, [(_va(vma, page), _va(vma, hi))], Perm(vma.prot))
                self.copied_pages += hi - page
                page = hi
                continue
            hi = min(p1, rec.page + rec.npages)
            n = hi - page
            e = self._share(file, rec)
            self._add_base(e, _va(vma, rec.page))
            # counted before the map: a reclaim while a page-table page is allocated may evict
            # this very buffer, and must then tell us
            backing.mapped(rec.token, e.ptes + n)
            va = _va(vma, page)
            try:
                space.map_frames(va, _slice(rec.frames, page - rec.page, n), perm)
            except MemoryError:
                if e.alive and not e.ptes:
                    self._drop_entry(e)
                elif e.alive:
                    backing.mapped(rec.token, e.ptes)
                raise OutOfPages(PAGE_SIZE) from None
            if e.alive:
                e.ptes += n
                self.shared_ptes += n
                backing.mapped(rec.token, e.ptes)
            else:  # evicted meanwhile: no PTE may outlive its buffer
                space.unmap_frames(va, n << PAGE_SHIFT)
            page = hi

    def _drop_record_pages(self, file: Hashable, p0: int, p1: int) -> int:
        """Unmap file pages [p0, p1) of the mapped records everywhere; PTEs cleared."""
        recs = self._records.get(file)
        if not recs:
            return 0
        i = max(recs.bisect_right(p0) - 1, 0)
        hit: list[_Shared] = []
        for key in recs.islice(i):
            if key >= p1:
                break
            e = recs[key]
            if e.page + e.npages > p0:
                hit.append(e)
        removed = 0
        for e in hit:
            got = self._unmap_owners([e], max(p0, e.page), min(p1, e.page + e.npages))
            if got:
                removed += got
                self._lost_ptes(e, got)
        return removed

    # ------------------------------------------------------------------ write cache

    def _segments(self, file: Hashable, p0: int, p1: int,
                  first: bool = False) -> list[tuple[int, int, _Run | None]]:
        """File pages [p0, p1) cut into write-cache runs and gaps (None), in order (only the
        first segment with ``first``)."""
        out: list[tuple[int, int, _Run | None]] = []
        idx = self._wc.get(file)
        cursor = p0
        if idx:
            i = max(idx.bisect_right(p0) - 1, 0)
            for key in idx.islice(i):
                if key >= p1:
                    break
                run = idx[key]
                lo, hi = max(key, p0), min(key + run.n, p1)
                if lo >= hi:
                    continue
                if lo > cursor:
                    out.append((cursor, lo, None))
                    if first:
                        return out
                out.append((lo, hi, run))
                cursor = hi
                if first:
                    return out
        if cursor < p1:
            out.append((cursor, p1, None))
        return out

    def _split(self, run: _Run, page: int) -> _Run:
        """Cut ``run`` at file page ``page``; returns the upper part (``run`` keeps the lower)."""
        d = page - run.page
        up = _Run(run.file, page, run.n - d, run.pfn + d, run.dirty, run.seq,
                  {b + (d << PAGE_SHIFT) for b in run.bases})
        run.n = d
        self._lru[(up.seq, page)] = up
        self._wc[run.file][page] = up
        self._frames[up.pfn] = up
        return up

    def _isolate(self, run: _Run, p0: int, p1: int) -> _Run:
        """The run holding exactly pages [p0, p1) of ``run`` (splitting it as needed)."""
        if p0 > run.page:
            run = self._split(run, p0)
        if p1 < run.page + run.n:
            self._split(run, p1)
        return run

    def _mark_dirty(self, file: Hashable, p0: int, p1: int) -> None:
        for q0, q1, run in self._segments(file, p0, p1):
            if run is not None and not run.dirty:
                self._isolate(run, q0, q1).dirty = True

    def _map_run(self, vma: Vma, run: _Run, p0: int, p1: int, perm: Perm) -> None:
        self._add_base(run, _va(vma, run.page))
        try:
            self.space.map_frames(_va(vma, p0), [(run.pfn + p0 - run.page, p1 - p0)], perm)
        except MemoryError:
            raise OutOfPages(PAGE_SIZE) from None

    def _insert(self, vma: Vma, p0: int, p1: int, perm: Perm) -> None:
        """New dirty write-cache pages for file pages [p0, p1), mapped in ``vma``; past the
        LRU bound the oldest batch goes, as after each single insert in OSv."""
        file = vma.cache_file
        space = self.space
        idx = self._wc.setdefault(file, SortedDict())
        page = p0
        while page < p1:
            k = min(p1 - page, self.lru_max + 1 - self.wc_pages)
            frames = space.alloc_frames(k)
            self._seq += 1
            va = _va(vma, page)
            for pfn, n in frames:
                run = _Run(file, page, n, pfn, True, self._seq, {_va(vma, page)})
                self._lru[(run.seq, page)] = run
                idx[page] = run
                self._frames[pfn] = run
                page += n
            self.wc_pages += k
            try:
                space.map_frames(va, frames, perm)
            except MemoryError:
                raise OutOfPages(PAGE_SIZE) from None
            if self.wc_pages > self.lru_max:
                self._evict(self.lru_batch)

    def _evict(self, count: int) -> None:
        """Evict the ``count`` oldest write-cache pages: unmap, flush, write back, free."""
        gone: list[_Run] = []
        while count and self._lru:
            run = self._lru.peekitem(0)[1]
            if run.n > count:
                self._split(run, run.page + count)
            del self._lru[(run.seq, run.page)]
            idx = self._wc[run.file]
            del idx[run.page]
            if not idx:
                del self._wc[run.file]
            del self._frames[run.pfn]
            self.wc_pages -= run.n
            count -= run.n
            gone.append(run)
        self._unmap_owners(gone)
        self.space.count_tlb_flush()
        self.evictions += 1
        self.evicted_pages += sum(run.n for run in gone)
        self.space.free_frames([(run.pfn, run.n) for run in gone])
        self._write_back([run for run in gone if run.dirty])

    def _write_back(self, runs: list[_Run]) -> None:
        """Write these pages into their files, adjacent pages of a file in one write; files in
        the order they come (deterministic: the disk queue's timing depends on it)."""
        by_file: dict[Hashable, list[_Run]] = {}
        for run in runs:
            by_file.setdefault(run.file, []).append(run)
        for file, group in by_file.items():
            group.sort(key=lambda r: r.page)
            i = 0
            while i < len(group):
                p0 = group[i].page
                p1 = p0 + group[i].n
                i += 1
                while i < len(group) and group[i].page == p1:
                    p1 += group[i].n
                    i += 1
                self.written_back_pages += p1 - p0
                self.backing.write(file, p0 << PAGE_SHIFT, (p1 - p0) << PAGE_SHIFT)

    def _to_write_cache(self, vma: Vma, p0: int, p1: int, perm: Perm) -> None:
        """A shared write of file pages [p0, p1) not in the write cache: read them, drop the
        record pages and all their mappings, insert copies at the LRU front."""
        file = vma.cache_file
        self.backing.read(file, p0 << PAGE_SHIFT, (p1 - p0) << PAGE_SHIFT)
        if self._drop_record_pages(file, p0, p1):
            self.space.count_tlb_flush()
        self._insert(vma, p0, p1, perm)

    # ------------------------------------------------------------------ faults

    def fault(self, vma: Vma, start: int, end: int, write: bool, count: bool = True) -> None:
        """Access ``[start, end)`` of ``vma`` (inside the file): fault what is missing."""
        if not write:
            self._read(vma, start, end, count)
        elif vma.shared:
            self._shared_write(vma, start, end)
        else:
            self._private_write(vma, start, end)

    def _read(self, vma: Vma, start: int, end: int, count: bool) -> None:
        holes = self.space.holes(start, end)
        ro = Perm(vma.prot & ~PROT_WRITE)
        wc_perm = Perm(vma.prot) if vma.shared else ro
        faults = 0
        for a, b in holes:
            faults += (b - a) >> PAGE_SHIFT
            for q0, q1, run in self._segments(vma.cache_file, _page(vma, a), _page(vma, b)):
                if run is not None:
                    self._map_run(vma, run, q0, q1, wc_perm)
                else:
                    self._map_records(vma, q0, q1, ro)
        if count:
            self.space.count_faults(faults)

    def _shared_write(self, vma: Vma, start: int, end: int) -> None:
        file = vma.cache_file
        perm = Perm(vma.prot)
        todo: list[list[int]] = []
        for a, b, what in self._classify(start, end):
            if what is _PRIVATE:
                continue
            if isinstance(what, _Run):  # writable already: the write dirties it, no fault
                self._mark_dirty(file, _page(vma, a), _page(vma, b))
            elif todo and todo[-1][1] == a:
                todo[-1][1] = b
            else:
                todo.append([a, b])
        faults = 0
        for a, b in todo:
            q, p1 = _page(vma, a), _page(vma, b)
            faults += p1 - q
            while q < p1:  # one segment at a time: an insert may evict the runs further on
                q0, q1, run = self._segments(file, q, p1, first=True)[0]
                if run is not None:
                    self._map_run(vma, run, q0, q1, perm)
                    self._mark_dirty(file, q0, q1)
                else:
                    self._to_write_cache(vma, q0, q1, perm)
                q = q1
        self.space.count_faults(faults)

    def _private_write(self, vma: Vma, start: int, end: int) -> None:
        file = vma.cache_file
        for a, b, what in self._classify(start, end):
            if what is _PRIVATE:
                continue
            for q0, q1, run in self._segments(file, _page(vma, a), _page(vma, b)):
                if run is None:  # the copy's data comes through the file system's cache
                    self.backing.read(file, q0 << PAGE_SHIFT, (q1 - q0) << PAGE_SHIFT)
        # the reads may have evicted records: look again, then replace what is shared
        for a, b, what in self._classify(start, end):
            if what is not None and what is not _PRIVATE:
                self._unmap_range(a, b)
        holes = self.space.holes(start, end)
        n = sum(b - a for a, b in holes) >> PAGE_SHIFT
        self.space.map_private(vma, holes, Perm(vma.prot))
        self.copied_pages += n
        self.space.count_faults(n)

    def _unmap_range(self, a: int, b: int) -> None:
        """Clear the cache PTEs of ``[a, b)`` (a mapping's own range), with their accounting."""
        for ext in self.space.unmap_frames(a, b - a):
            rest = self.release(ext.pfn, ext.npages)
            assert not rest, "a private page in a range of cache pages"

    # ------------------------------------------------------------------ unmap, sync, protect

    def release(self, pfn: int, n: int) -> list[tuple[int, int]]:
        """PTEs onto frames ``[pfn, pfn + n)`` were cleared: account for the cache's frames and
        return the others (the mapping's own copies, for the caller to free)."""
        overlaps = self._overlaps(pfn, n)
        if not overlaps:
            return [(pfn, n)]
        out: list[tuple[int, int]] = []
        p = pfn
        for obj, lo, hi in overlaps:
            if lo > p:
                out.append((p, lo - p))
            if isinstance(obj, _Piece):
                self._lost_ptes(obj.owner, hi - lo)
            p = hi
        if p < pfn + n:
            out.append((p, pfn + n - p))
        return out

    def sync(self, vma: Vma, start: int, end: int) -> None:
        """msync (and munmap) of a shared mapping: write its dirty write-cache pages, fsync."""
        file = vma.cache_file
        todo: list[_Run] = []
        for q0, q1, run in self._segments(file, _page(vma, start), _page(vma, end)):
            if run is not None and run.dirty:
                run = self._isolate(run, q0, q1)
                run.dirty = False
                todo.append(run)
        if todo:
            self.space.count_tlb_flush()  # the PTEs' dirty bits are cleaned
            self._write_back(todo)
        self.backing.sync(file)

    def protect(self, vma: Vma, start: int, end: int) -> None:
        """After mprotect gave ``[start, end)`` the VMA's protection: cache pages that a write
        must fault on (record pages; write-cache pages of a private mapping) stay read-only."""
        if not vma.prot & PROT_WRITE:
            return
        ro = Perm(vma.prot & ~PROT_WRITE)
        for a, b, what in self._classify(start, end):
            if what is None or what is _PRIVATE or (isinstance(what, _Run) and vma.shared):
                continue
            self.space.protect_frames(a, b - a, ro)

    def forget(self, file: Hashable) -> None:
        """``file`` was unlinked or recreated: free its write-cache pages if nothing maps it
        (else at the munmap of its last mapping, :meth:`unmapped`)."""
        self._drop_unmapped(file)

    def unmapped(self, vmas: list[Vma]) -> None:
        """These VMAs are gone: a dead file none maps any more loses its write-cache pages."""
        for file in {v.cache_file for v in vmas if v.cache_file in self._wc}:
            if not self.backing.live(file):
                self._drop_unmapped(file)

    def _drop_unmapped(self, file: Hashable) -> None:
        if file not in self._wc or self.space.maps_file(file):
            return
        runs = list(self._wc.pop(file).values())
        for run in runs:  # no VMA maps the file, so no PTE points at these pages
            del self._lru[(run.seq, run.page)]
            del self._frames[run.pfn]
            self.wc_pages -= run.n
        self.space.free_frames([(run.pfn, run.n) for run in runs])

    # ------------------------------------------------------------------ statistics, checks

    def stats(self) -> dict[str, int]:
        """The ``page_cache`` part of the summary's ``mmap`` section."""
        return {
            "arc_mapped_bytes": self.shared_ptes << PAGE_SHIFT,
            "write_cache_bytes": self.wc_pages << PAGE_SHIFT,
            "write_cache_max_bytes": self.lru_max << PAGE_SHIFT,
            "write_cache_evictions": self.evictions,
            "evicted_bytes": self.evicted_pages << PAGE_SHIFT,
            "written_back_bytes": self.written_back_pages << PAGE_SHIFT,
            "copied_bytes": self.copied_pages << PAGE_SHIFT,
            "invalidations": self.invalidations,
        }

    def shared_buffers(self) -> dict[Any, int]:
        """Every mapped buffer's token and the PTEs pointing at it."""
        return {e.token: e.ptes for e in self._by_token.values()}

    def check_ptes(self, vma: Vma, va: int, pfn: int, n: int, perm: Perm,
                   seen: dict[int, int]) -> int:
        """Check the PTEs of ``vma`` at ``va`` onto frames ``[pfn, pfn + n)`` (one extent);
        count the cache's in ``seen``; return the pages that are the mapping's own."""
        own = 0
        p = pfn
        for obj, lo, hi in self._overlaps(pfn, n):
            own += lo - p
            v = va + ((lo - pfn) << PAGE_SHIFT)
            page = obj.page + lo - obj.pfn
            assert page == _page(vma, v), f"PTE at {v:#x} maps file page {page} of another offset"
            owner = obj.owner
            assert owner.file is vma.cache_file, f"PTE at {v:#x} maps another file's page"
            assert _va(vma, owner.page) in owner.bases, f"PTE at {v:#x} is in no known span"
            shared_wc = isinstance(obj, _Run) and vma.shared
            want = Perm(vma.prot) if shared_wc else Perm(vma.prot & ~PROT_WRITE)
            assert perm == want, f"cache page at {v:#x} has perm {perm!r}, not {want!r}"
            if isinstance(obj, _Piece):
                assert owner.alive, f"PTE at {v:#x} points at a dropped buffer"
                seen[id(owner)] = seen.get(id(owner), 0) + hi - lo
                assert all(r is None for _, _, r in self._segments(owner.file, page,
                                                                   page + hi - lo)), (
                    f"file page {page} is both a record page and in the write cache")
            p = hi
        own += pfn + n - p
        return own

    def check(self, seen: dict[int, int]) -> None:
        """Counters and indexes agree; ``seen`` holds the PTEs found per mapped buffer."""
        total = 0
        for e in self._by_token.values():
            assert e.alive and seen.get(id(e), 0) == e.ptes > 0, "mapped-buffer PTE count"
            total += e.ptes
        assert total == self.shared_ptes, "shared PTE total is stale"
        pages = 0
        for run in self._lru.values():
            assert self._wc[run.file][run.page] is run and self._frames[run.pfn] is run
            pages += run.n
        assert pages == self.wc_pages <= self.lru_max, "write-cache size"
        assert sum(len(idx) for idx in self._wc.values()) == len(self._lru)
        nframes = len(self._lru) + sum(len(e.pieces) for e in self._by_token.values())
        assert len(self._frames) == nframes, "frame index is stale"
        prev_end = -1
        for pfn, obj in self._frames.items():
            assert pfn == obj.pfn and pfn >= prev_end, "frames overlap"
            prev_end = pfn + obj.n
        for idx in self._wc.values():
            prev = -1
            for page, run in idx.items():
                assert page == run.page and page >= prev, "write-cache runs overlap"
                prev = page + run.n
