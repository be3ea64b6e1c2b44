"""Wires a ROFS root (``rootfs: rofs``) into the kernel: its file operations, its cache's memory
(category ``rofs_cache``), the ``rofs`` summary section and file mmap through its cache.

A ROFS image registers no shrinker (OSv's ROFS cache never gives memory back), so the 4 MiB
rule of malloc_large and the page caches never waits on it: the guest runs until a request
finds no free memory at all, then aborts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmsim.drivers.virtio_blk import VirtioBlk
from mmsim.fs.rofs import RofsFileSystem, RofsMappings
from mmsim.kernel.boot import BootError
from mmsim.kernel.sys_fs import FsConfig
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.kernel.sys_mman import Mman
    from mmsim.shrinker import Reclaimer

__all__ = ["attach"]


class _ContiguousPages:
    """malloc_large(contiguous=true), as alloc_phys_contiguous_aligned takes it (§4): the
    4 MiB rule first, one run, and when none fits a wait for the reclaimer, then one retry."""

    def __init__(self, kernel: Kernel, reclaimer: Reclaimer) -> None:
        self.ranges = kernel.ranges
        self.reclaimer = reclaimer

    def alloc(self, npages: int) -> int:
        self.reclaimer.wait_for_minimum_memory()
        pfn = self.ranges.alloc(npages, contiguous=True)
        if pfn is None:
            self.reclaimer.wait_for_memory(npages * PAGE_SIZE)
            pfn = self.ranges.alloc(npages, contiguous=True)
        if pfn is None:
            r = self.ranges
            raise OutOfPages(npages * PAGE_SIZE, r.free_pages * PAGE_SIZE,
                             r.largest_run() * PAGE_SIZE)
        return pfn


class _Handlers:
    """File operations on a read-only image; application errors are counted, not raised."""

    def __init__(self, kernel: Kernel, fs: RofsFileSystem) -> None:
        self.kernel = kernel
        self.fs = fs

    def _error(self, kind: str, op: Any, message: str) -> None:
        self.kernel.errors.report(kind, op.line, op.kind, message)

    def create(self, op: Any) -> None:
        self.fs.create(op.path, op.size)

    def read(self, op: Any) -> None:
        if self.fs.read(op.path, op.offset, op.length) is None:
            self._error("ENOENT", op, f"{op.path}: no such file")

    def blockread(self, op: Any) -> None:
        """A block trace's batch of reads, request by request; each is an event."""
        k = self.kernel
        lines = op.lines
        k.begin_batch()
        for i, b in enumerate(op.blocks):
            k.batch_call(i, lines[i], "read")
            op.line = lines[i]  # an application error names the request's line
            try:
                got = self.fs.read(op.path, b * op.length, op.length)
            except OutOfPages as e:
                k.batch_failed(e, "read", lines[i], op.length)
            if got is None:
                self._error("ENOENT", op, f"{op.path}: no such file")
        k.end_batch(len(op.blocks))

    def write(self, op: Any) -> None:
        if not self.fs.exists(op.path):
            self._error("ENOENT", op, f"{op.path}: no such file")
        else:
            self._error("EROFS", op, f"{op.path}: read-only file system (rootfs: rofs)")

    unlink = write

    def fsync(self, op: Any) -> None:
        if not self.fs.exists(op.path):
            self._error("ENOENT", op, f"{op.path}: no such file")


def attach(kernel: Kernel, mman: Mman, reclaimer: Reclaimer) -> RofsFileSystem:
    """Mount the ROFS root and plug its operations into ``kernel``."""
    try:
        cfg = FsConfig(kernel.config.extra)  # the disk's settings are the same keys
    except ValueError as e:
        raise BootError(str(e)) from None
    disk = VirtioBlk(cfg.disk_latency_ns, cfg.disk_bandwidth)
    fs = RofsFileSystem(_ContiguousPages(kernel, reclaimer), disk, kernel)
    handlers = _Handlers(kernel, fs)
    for kind in ("create", "read", "blockread", "write", "fsync", "unlink"):
        kernel.add_handler(kind, getattr(handlers, kind))
    kernel.add_category("rofs_cache", lambda: fs.pages * PAGE_SIZE)
    kernel.add_section("rofs", fs.stats)
    kernel.add_section("disk", disk.stats)
    mman.use_page_cache(RofsMappings(fs))  # file mmap maps the cache's segments
    return fs
