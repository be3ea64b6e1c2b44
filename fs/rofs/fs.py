"""ROFS as OSv keeps it: a read-only image whose file data is cached in 32 KiB segments.

OSv's ROFS cache (fs/rofs/rofs_cache.cc) cuts each file into 32 KiB segments (64 blocks of
512 bytes) and, on the first read of a segment, allocates it with
``alloc_phys_contiguous_aligned(size, 4096)``: malloc_large with a 4096-byte header, one
contiguous run, so a 32 KiB segment costs 9 pages (reading a 32 MiB file costs 36 MiB,
which is what real OSv shows: used grows by 36.9-38.1 MB, osv-real.md §3). A file of at most
32 KiB is one segment of its own size, rounded up to 512 bytes. Segments are never freed: ROFS
has no shrinker and its cache no eviction, so on a ROFS root nothing gives memory back.

Differences: a segment under one page is malloc'ed from the pools in OSv; here it costs the
whole page a malloc of 1025..4096 bytes would. The segment objects and the cache's hash maps
(a few dozen bytes a segment) are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mmsim.mm.constants import PAGE_SIZE

BLOCK = 512
SEGMENT = 64 * BLOCK  # CACHE_SEGMENT_SIZE_IN_BLOCKS
HEADER = PAGE_SIZE  # malloc_large's offset for an alignment of 4096


def segment_pages(nbytes: int) -> int:
    """Pages a segment of ``nbytes`` takes: align_up(n + 4096, 4096) from one run, or one
    page under a page."""
    if nbytes < PAGE_SIZE:
        return 1
    return -(-(nbytes + HEADER) // PAGE_SIZE)


class Clock(Protocol):
    clock_ns: int


class Disk(Protocol):
    def read(self, now_ns: int, nbytes: int) -> int: ...


class SegmentAllocator(Protocol):
    """Where segments' pages come from (the kernel wires the page allocator's contiguous
    path: malloc_large with its waits for memory)."""

    def alloc(self, npages: int) -> int: ...


class RofsFile:
    """A file of the image: its size and its cached segments (index -> first page)."""

    __slots__ = ("path", "size", "segments")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self.segments: dict[int, int] = {}

    def segment_bytes(self, idx: int) -> int:
        """Bytes of segment ``idx`` as allocated (a small file's one segment is its size)."""
        if self.size <= SEGMENT:
            return -(-self.size // BLOCK) * BLOCK
        return SEGMENT


class RofsFileSystem:
    """The image's files and the ROFS cache in front of the disk."""

    def __init__(self, segments: SegmentAllocator, disk: Disk, clock: Clock) -> None:
        self._segments = segments
        self.disk = disk
        self._time = clock
        self._files: dict[str, RofsFile] = {}
        self.pages = 0  # pages held by cached segments
        self.nsegments = 0
        self.hits = 0
        self.misses = 0
        self.read_bytes = 0
        #: reports an application error: (kind, op, message); the kernel wiring counts it
        self.on_error: Callable[[str, Any, str], None] | None = None

    # -- files -----------------------------------------------------------------------------
    def size(self, path: str) -> int | None:
        f = self._files.get(path)
        return None if f is None else f.size

    def exists(self, path: str) -> bool:
        return path in self._files

    def file(self, path: str) -> RofsFile | None:
        return self._files.get(path)

    def create(self, path: str, size: int) -> RofsFile:
        """A file of the image (the image is built before boot: ``create`` names its files)."""
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = RofsFile(path, size)
        else:  # the image lists it again: same file, the cache keeps what it read
            f.size = max(f.size, size)
        return f

    # -- the cache -------------------------------------------------------------------------
    def segment(self, f: RofsFile, idx: int) -> int:
        """The first page of segment ``idx`` of ``f``, read from the disk on a miss."""
        pfn = f.segments.get(idx)
        if pfn is not None:
            self.hits += 1
            return pfn
        self.misses += 1
        nbytes = f.segment_bytes(idx)
        npages = segment_pages(nbytes)
        pfn = self._segments.alloc(npages)
        f.segments[idx] = pfn
        self.pages += npages
        self.nsegments += 1
        t = self._time
        t.clock_ns = self.disk.read(t.clock_ns, min(nbytes, f.size - idx * SEGMENT))
        return pfn

    def read(self, path: str, offset: int, length: int | None) -> int | None:
        """Read through the cache; bytes read (short at EOF), None if there is no such file."""
        f = self._files.get(path)
        if f is None:
            return None
        end = f.size if length is None else min(offset + length, f.size)
        if end <= offset:
            return 0
        for idx in range(offset // SEGMENT, (end - 1) // SEGMENT + 1):
            self.segment(f, idx)
        self.read_bytes += end - offset
        return end - offset

    def stats(self) -> dict[str, Any]:
        """The summary's ``rofs`` section."""
        return {"files": len(self._files), "segments": self.nsegments,
                "cache_bytes": self.pages * PAGE_SIZE, "hits": self.hits,
                "misses": self.misses, "read_bytes": self.read_bytes}
