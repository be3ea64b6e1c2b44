"""Wires ZFS, its ARC and the virtio-blk disk into the kernel: file operations, memory, summary.

Configuration keys (validated as the configuration is loaded, by the validator this module
registers): ``cache_policy`` (zfs, arc, lru, or any ``fs/zfs_arc/policy_<name>.py``),
``arc_size`` (fixes the capacity: c_min = c_max), ``recordsize`` (the dataset's, 128K by
default), ``block_size`` (record size of block-trace files, overriding the trace's own block),
``disk_latency``, ``disk_bandwidth`` and ``arc_reclaim_wake_latency``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmsim.drivers.virtio_blk import DEFAULT_BANDWIDTH, DEFAULT_LATENCY_NS, VirtioBlk
from mmsim.fs.zfs_arc.buffers import MAX_BUFFER, BufferAllocator
from mmsim.fs.zfs_arc.fs import DEFAULT_RECORDSIZE, MIN_BLOCK, ZfsFileSystem
from mmsim.fs.zfs_arc.mapping import ArcMappings
from mmsim.fs.zfs_arc.policy import policy_class
from mmsim.fs.zfs_arc.policy_zfs import arc_init
from mmsim.kernel.boot import BootError
from mmsim.kernel.footprint import zfs_parts
from mmsim.kernel.held_pages import HeldPages
from mmsim.kernel.units import parse_duration, parse_size
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.kernel.sys_mman import Mman
    from mmsim.shrinker import Reclaimer, ShrinkerRegistry

__all__ = ["ArcShrinker", "FsConfig", "attach"]



def _pow2_size(key: str, value: Any, lo: int, hi: int) -> int:
    n = parse_size(value)
    if n & (n - 1) or not lo <= n <= hi:
        raise ValueError(f"'{key}' must be a power of two in {lo}..{hi}, not {value!r}")
    return n


class FsConfig:
    """The file system's settings from ``config.extra``; ValueError names the bad key."""

    def __init__(self, extra: dict[str, Any]) -> None:
        self.policy = str(extra.get("cache_policy") or "zfs")
        policy_class(self.policy)  # raises for an unknown name
        arc_size = extra.get("arc_size")
        self.arc_size = parse_size(arc_size) if arc_size is not None else None
        if self.arc_size is not None and self.arc_size < MIN_BLOCK:
            raise ValueError(f"'arc_size' must be at least {MIN_BLOCK} bytes")
        rs = extra.get("recordsize")
        self.recordsize = _pow2_size("recordsize", rs, MIN_BLOCK, MAX_BUFFER) if rs else (
            DEFAULT_RECORDSIZE)
        bs = extra.get("block_size")
        self.block_size = _pow2_size("block_size", bs, MIN_BLOCK, MAX_BUFFER) if bs else None
        lat = extra.get("disk_latency")
        self.disk_latency_ns = DEFAULT_LATENCY_NS if lat is None else _duration(lat)
        bw = extra.get("disk_bandwidth")
        self.disk_bandwidth = DEFAULT_BANDWIDTH if bw is None else parse_size(bw)
        if self.disk_bandwidth <= 0:
            raise ValueError("'disk_bandwidth' must be positive")
        wl = extra.get("arc_reclaim_wake_latency", 0)
        try:
            self.arc_reclaim_wake_latency_ns = _duration(wl)
        except ValueError as e:
            raise ValueError(f"'arc_reclaim_wake_latency': {e}") from None




def _duration(value: Any) -> int:
    """Nanoseconds from a duration (``100us``; a bare number is seconds, as in traces)."""
    return parse_duration(value)


class ArcShrinker:
    """OSv's arc_shrinker, for the reclaimer's registry (``request_memory(target, hard)``)."""

    name = "arc"

    def __init__(self, fs: ZfsFileSystem) -> None:
        self.fs = fs

    def request_memory(self, target: int, hard: bool) -> int:
        return self.fs.request_memory(target, hard)


class _Handlers:
    """The trace operations on files; application errors are counted, not raised."""

    def __init__(self, kernel: Kernel, fs: ZfsFileSystem, block_size: int | None) -> None:
        self.kernel = kernel
        self.fs = fs
        self.block_size = block_size

    def _enoent(self, op: Any) -> None:
        self.kernel.errors.report("ENOENT", op.line, op.kind, f"{op.path}: no such file")

    def create(self, op: Any) -> None:
        unit = op.align  # block-trace readers give their block here; 0 for ordinary files
        if unit:
            self.fs.create(op.path, op.size, self.block_size or unit, unit)
        else:
            self.fs.create(op.path, op.size)

    def write(self, op: Any) -> None:
        if self.fs.write(op.path, op.offset, op.length) is None:
            self._enoent(op)

    def fsync(self, op: Any) -> None:
        if not self.fs.fsync(op.path):
            self._enoent(op)

    def unlink(self, op: Any) -> None:
        if not self.fs.unlink(op.path):
            self._enoent(op)


def _block_reads(kernel: Kernel, fs: ZfsFileSystem) -> Callable[[Any], None]:
    """The handler of a block trace's batch of reads (mmsim.trace.blocktrace.BlockReads): the
    file system reads them in one go; the kernel counts each request as an event and names the
    one that found no memory."""

    def blockread(op: Any) -> None:
        kernel.begin_batch()
        try:
            fs.block_read_op(op)
        except OutOfPages as e:
            i = getattr(e, "request", 0)
            kernel.batch_failed(e, "read", op.lines[i], op.length)
        kernel.end_batch(len(op.blocks))

    return blockread


def attach(kernel: Kernel, mman: Mman, registry: ShrinkerRegistry,
           reclaimer: Reclaimer) -> ZfsFileSystem:
    """Build the file system from the configuration and plug it into ``kernel``."""
    try:
        cfg = FsConfig(kernel.config.extra)
    except ValueError as e:
        raise BootError(str(e)) from None
    phys = kernel.mem.phys_mem_size
    for part in zfs_parts(kernel.config, phys):  # mounting the root: libsolaris, hash tables
        kernel.reserve(part.category, part.nbytes)
    if cfg.arc_size is not None:
        c_min = c_max = cfg.arc_size
    else:
        c_min, c_max, _ = arc_init(phys)
    policy = policy_class(cfg.policy)(c_max, c_min=c_min)
    ranges = kernel.ranges
    low_pages = 3 * phys // 4 // PAGE_SIZE  # kmem_used > 3/4 kmem_size
    policy.memory_low = lambda: ranges.total_pages - ranges.free_pages > low_pages
    policy.clock = lambda: kernel.clock_ns
    buffers = BufferAllocator(
        kernel.pool, cpu=lambda: kernel.cpu,
        before_large=reclaimer.wait_for_minimum_memory)
    disk = VirtioBlk(cfg.disk_latency_ns, cfg.disk_bandwidth)

    fs = ZfsFileSystem(policy, buffers, disk, kernel, cfg.recordsize)
    handlers = _Handlers(kernel, fs, cfg.block_size)
    for kind in ("create", "write", "fsync", "unlink"):
        kernel.add_handler(kind, getattr(handlers, kind))
    kernel.add_handler("read", fs.read_op)
    kernel.add_handler("blockread", _block_reads(kernel, fs))  # block traces' fast path
    fs.on_error = lambda kind, op, message: kernel.errors.report(kind, op.line, op.kind, message)
    kernel.add_category("arc", lambda: buffers.pages * PAGE_SIZE)
    kernel.add_section("arc", fs.stats)
    kernel.add_section("disk", disk.stats)
    fs.reclaim_wake_latency_ns = cfg.arc_reclaim_wake_latency_ns
    # its work is the clock's and what the ARC's operations and shrinker leave (a spare
    # buffer): an operation on memory alone leaves it none unless a reclaim pass ran
    kernel.add_after_op(fs.after_op, fs.next_due_ns, fs.skip_to, memory=False)
    # the ARC's headers and dbufs are malloc'ed in OSv (kmem_cache_alloc): as its size counts
    # them (hdr_size + other_size), the guest's memory holds them, packed in whole pages
    headers = HeldPages(lambda n: kernel.pool.alloc_pages(n, kernel.cpu),
                        lambda extents: kernel.pool.free_pages(extents, kernel.cpu))
    kernel.add_category("arc_headers", lambda: headers.pages * PAGE_SIZE)

    overhead = policy.overhead  # fs.overhead_bytes(): fs.policy is this policy for good

    def hold_headers() -> None:
        npages = -(-overhead() // PAGE_SIZE)
        if npages != headers.pages:  # hold() would do nothing (most operations touch no ARC)
            headers.hold(npages)

    kernel.add_after_op(hold_headers, memory=False)  # the ARC's size moves, not free memory
    pc = mman.use_page_cache(ArcMappings(fs))  # file mmap shares the ARC's buffers (§7)
    fs.on_unmap = pc.invalidate
    fs.on_file_gone = pc.forget  # an unlinked file's write-cache pages go with it
    # two, as on OSv: libsolaris.so registers one as it loads (register_shrinker_arc_funs),
    # and bsd_shrinker_init, after the root mount, wraps arc_lowmem (which arc_init put
    # on vm_lowmem) in a second: every reclaimer pass asks the ARC twice
    registry.register(ArcShrinker(fs))
    registry.register(ArcShrinker(fs))
    return fs
