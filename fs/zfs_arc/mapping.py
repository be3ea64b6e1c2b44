"""ZFS's side of file mmap: the ARC's record buffers offered to mm's page cache (§7).

OSv's BSD ZFS maps a file page straight from the ARC buffer of its record (``arc_read_cache``:
ZIO buffers are page-aligned, so the record's data pages can be mapped). Here a buffer's data
pages follow its 4096-byte header page (buffers.py), and the page cache maps them read-only.

A file goes through the page cache (OSv: the file system has ``vop_cache`` and the file is at
least one page) when its pages fall whole into records: records of a multiple of 4 KiB, or a
single record. Block-trace files (addressed in trace blocks) and files of smaller records take
private copies, the path OSv uses without a page cache.
"""

from __future__ import annotations

from mmsim.fs.zfs_arc.buffers import PAGE, RUN, ArcBuffer
from mmsim.fs.zfs_arc.fs import ZfsFile, ZfsFileSystem
from mmsim.mm.constants import PAGE_SHIFT, PAGE_SIZE
from mmsim.mm.page_cache import CachedRecord

__all__ = ["ArcMappings", "data_frames"]


def data_frames(buf: ArcBuffer) -> tuple[tuple[int, int], ...]:
    """The (pfn, count) extents of a buffer's data pages, in order (after the header page)."""
    if buf.kind == PAGE:
        return ((buf.pfn, 1),)
    if buf.kind == RUN:
        return ((buf.pfn + 1, buf.npages - 1),)
    out: list[tuple[int, int]] = []
    skip = 1
    for pfn, n in buf.extents or ():
        if skip:
            pfn, n, skip = pfn + 1, n - 1, 0
        if n:
            out.append((pfn, n))
    return tuple(out)


class ArcMappings:
    """:class:`mm.page_cache.FileCache` over a :class:`ZfsFileSystem`; files are ZfsFile objects
    (a file unlinked or recreated under its path keeps its mappings but has no data any more)."""

    def __init__(self, fs: ZfsFileSystem) -> None:
        self.fs = fs

    def open(self, path: str) -> ZfsFile | None:
        f = self.fs.file(path)
        if f is None or f.size < PAGE_SIZE or f.fixed or f.unit != f.recordsize:
            return None
        if f.recordsize % PAGE_SIZE and f.size > f.recordsize:
            return None
        return f

    def size(self, file: ZfsFile) -> int:
        return file.size  # an unlinked file keeps its size, as its vnode does in OSv

    def _live(self, file: ZfsFile) -> bool:
        return self.fs.file(file.path) is file

    live = _live

    def record(self, file: ZfsFile, page: int) -> CachedRecord | None:
        if not self._live(file):
            return None
        rs = file.recordsize
        if rs % PAGE_SIZE == 0:
            per = rs >> PAGE_SHIFT
            first = page - page % per
        elif file.size <= rs:  # one record (of the file's size rounded up to 512)
            per = -(-rs // PAGE_SIZE)
            first = 0
        else:  # a page spans records (it has grown with small records): copy it
            return CachedRecord(page, 1, None)
        buf = self.fs.get_buffer(file.path, first << PAGE_SHIFT)
        if buf is None:  # not cacheable (a record larger than the ARC)
            return CachedRecord(first, per, None)
        return CachedRecord(first, per, data_frames(buf), buf)

    def _clip(self, file: ZfsFile, offset: int, length: int) -> int:
        return max(0, min(offset + length, file.size) - offset)

    def read(self, file: ZfsFile, offset: int, length: int) -> None:
        n = self._clip(file, offset, length)
        if n and self._live(file):
            self.fs.read(file.path, offset, n)

    def write(self, file: ZfsFile, offset: int, length: int) -> None:
        n = self._clip(file, offset, length)  # a whole last page never grows the file
        if n and self._live(file):
            self.fs.write(file.path, offset, n)

    def sync(self, file: ZfsFile) -> None:
        if self._live(file):
            self.fs.fsync(file.path)

    def mapped(self, token: ArcBuffer, ptes: int) -> None:
        token.mapped = ptes
