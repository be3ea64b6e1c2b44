"""ROFS's side of file mmap: a mapped file page is its cache segment's page (OSv's
``rofs_map_cached_page`` returns the segment's memory), so mappings share the cache's pages
read-only. Segments are never evicted, so nothing ever unmaps them from under a mapping."""

from __future__ import annotations

from mmsim.fs.rofs.fs import SEGMENT, RofsFile, RofsFileSystem, segment_pages
from mmsim.mm.constants import PAGE_SHIFT, PAGE_SIZE
from mmsim.mm.page_cache import CachedRecord

PAGES_PER_SEGMENT = SEGMENT >> PAGE_SHIFT


class RofsMappings:
    """:class:`mm.page_cache.FileCache` over a :class:`RofsFileSystem` (read-only: a shared
    write stays in the write cache, as nothing can be written back to the image)."""

    def __init__(self, fs: RofsFileSystem) -> None:
        self.fs = fs

    def open(self, path: str) -> RofsFile | None:
        f = self.fs.file(path)
        return f if f is not None and f.size >= PAGE_SIZE else None

    def size(self, file: RofsFile) -> int:
        return file.size

    def live(self, file: RofsFile) -> bool:
        return True  # nothing is unlinked from a read-only image

    def record(self, file: RofsFile, page: int) -> CachedRecord:
        idx = page // PAGES_PER_SEGMENT
        pfn = self.fs.segment(file, idx)
        data = segment_pages(file.segment_bytes(idx)) - 1  # after malloc_large's header
        return CachedRecord(idx * PAGES_PER_SEGMENT, data, ((pfn + 1, data),), pfn)

    def read(self, file: RofsFile, offset: int, length: int) -> None:
        self.fs.read(file.path, offset, length)

    def write(self, file: RofsFile, offset: int, length: int) -> None:
        pass  # a read-only image: the data stays in the guest's write cache

    def sync(self, file: RofsFile) -> None:
        pass

    def mapped(self, token: int, ptes: int) -> None:
        pass
