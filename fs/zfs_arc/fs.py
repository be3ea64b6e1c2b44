"""ZFS as the simulator sees it: named files cut into records, read and written through the ARC.

A file is created with a size (its data is taken to be on the disk already, as for an image
taken from a host folder) and a record size: the dataset's ``recordsize`` (128 KiB by default)
for files larger than that, otherwise one record of the file's size rounded up to 512 bytes,
which grows with the file until it reaches ``recordsize`` (as zfs_write grows a single block).
Block-trace files have a fixed record size, and their offsets count trace blocks (``unit``).

Reads look each record up in the cache policy; a miss allocates a buffer (real pages, see
buffers.py) and reads the record from the disk, which advances simulated time. Writes make the
record's buffer dirty (reading it first when only part of it is written); dirty buffers go to
disk on fsync, at each transaction-group sync (every 5 simulated seconds) and when evicted.
Differences from ZFS: dirty buffers stay on the MRU/MFU lists instead of the anonymous state,
and a rewritten record keeps its cache identity (ZFS gives it a new block pointer).

For file mmap (mapping.py, mm/page_cache.py): :meth:`ZfsFileSystem.get_buffer` returns a
record's buffer after reading it through the cache, ``ArcBuffer.mapped`` counts the page-table
entries pointing at it, and ``on_unmap(buffer)`` is called before a mapped buffer is evicted or
dropped (OSv unmaps it; the next access faults it in again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mmsim.drivers.virtio_blk import VirtioBlk
from mmsim.fs.zfs_arc.buffers import MAX_BUFFER, ArcBuffer, BufferAllocator, OutOfPages
from mmsim.fs.zfs_arc.policy import NEVER, CachePolicy
from mmsim.fs.zfs_arc.policy_zfs import DBUF_SIZE, HDR_SIZE, RESIDENT_HDR

FID_BITS = 32
FID_MASK = (1 << FID_BITS) - 1


def record_key(fid: int, idx: int) -> int:
    """The cache key of record ``idx`` of file ``fid``.

    File 0 (the first created: a block trace's device) uses idx itself, so its keys stay
    one-digit Python ints (dictionaries are ~25 % faster with them) and are the keys of its
    ``bufs`` (what CachePolicy.access_many moves buffers in); the others pack the file id in
    the low 32 bits of a negative key.
    """
    return idx if fid == 0 else ~(idx << FID_BITS | fid)


def split_key(key: int) -> tuple[int, int]:
    """(file id, record index) of a cache key."""
    return (0, key) if key >= 0 else (~key & FID_MASK, ~key >> FID_BITS)
MIN_BLOCK = 512
DEFAULT_RECORDSIZE = 128 << 10
TXG_TIMEOUT_NS = 5_000_000_000
SHRINK_MIN = 16 << 20  # the ARC shrinker's minimum per soft call (§8)

# A file's indirect blocks, from the layout of OSv's (pre-2015) ZFS: files are created with
# indblkshift = zfs_default_ibs = DN_MAX_INDBLKSHIFT = 14 (dnode.c l.59, sys/dnode.h l.60),
# so an indirect block is 16 KiB of 128-byte block pointers (SPA_BLKPTRSHIFT 7): 128 each;
# a ZPL file with SA bonus has one block pointer in its dnode (dnode.c l.536-537), so a file
# of n records has ceil(n/128) L1 blocks, ceil(n/128^2) L2 blocks... up to a single top
# block (a one-record file has none). 32 MiB in 128 KiB records: 2 L1 + 1 L2 = 48 KiB.
INDIRECT_SIZE = 1 << 14
INDIRECT_SHIFT = 7  # log2(block pointers per indirect block)
# The rest of a file's metadata cannot be told from the code (dnode blocks, directory ZAPs,
# SA, object set and MOS blocks read on the way): measured (osv-real.md §3, 128M). After
# reading a 32 MiB file data_size is 32 MiB + 367104 B, of which the 48 KiB of indirect blocks
# above; hdr_size 128608 = 302 (arc_buf_hdr_t + arc_buf_t) + 2 arc_buf_hdr_t alone, so 302 -
# 256 data - 3 indirect = 43 buffers; other_size 184408 = 259 dbufs of data and indirect
# blocks (280 B each) + 111888 B of dnodes, bonus buffers and these blocks' dbufs.
FILE_META_BYTES = 367104 - 3 * INDIRECT_SIZE  # 317952, in FILE_META_BUFS buffers
FILE_META_BUFS = 43
FILE_META_HDRS = 2  # headers without a buffer
FILE_META_OTHER = 184408 - 259 * 280  # 111888


class Clock(Protocol):
    """Where simulated time lives (the kernel): ``clock_ns`` is read and advanced."""

    clock_ns: int


class ZfsFile:
    """One file: size, record size, and its cached buffers by record index."""

    __slots__ = ("fid", "path", "size", "recordsize", "npages", "unit", "fixed", "bufs",
                 "dirty", "meta_on", "meta", "indirect")

    def __init__(self, fid: int, path: str, size: int, recordsize: int, unit: int,
                 fixed: bool) -> None:
        self.fid = fid
        self.path = path
        self.size = size
        self.set_recordsize(recordsize)
        self.unit = unit  # bytes of offset per record (the record size, or a trace block)
        self.fixed = fixed  # the record size never changes (block-trace files)
        self.bufs: dict[int, ArcBuffer] = {}
        self.dirty: set[int] = set()
        #: the ARC caches this file's indirect and metadata blocks (set by the file system)
        self.meta_on = False
        #: their buffers, held while any record of the file is cached (each dbuf holds its
        #: parent), and the ids (level, index) of the indirect blocks among them
        self.meta: list[ArcBuffer] = []
        self.indirect: set[tuple[int, int]] = set()

    def set_recordsize(self, recordsize: int) -> None:
        self.recordsize = recordsize
        self.npages = BufferAllocator.pages_for(recordsize)  # what each of its buffers costs


def single_block_size(size: int, recordsize: int) -> int:
    """Block size of a file that fits one record: its size rounded up to 512, at most recordsize."""
    return min(max(MIN_BLOCK, -(-size // MIN_BLOCK) * MIN_BLOCK), recordsize)


class ZfsFileSystem:
    """Files, the ARC in front of them, and the disk behind them."""

    def __init__(self, policy: CachePolicy, buffers: BufferAllocator, disk: VirtioBlk,
                 clock: Clock, recordsize: int = DEFAULT_RECORDSIZE) -> None:
        if recordsize & (recordsize - 1) or not MIN_BLOCK <= recordsize <= MAX_BUFFER:
            raise ValueError(f"recordsize must be a power of two in 512..1M, not {recordsize}")
        self.policy = policy
        self.buffers = buffers
        self.disk = disk
        self.recordsize = recordsize
        self._time = clock  # simulated time: reads wait for the disk
        self._files: dict[str, ZfsFile] = {}
        self._by_fid: dict[int, ZfsFile] = {}
        self._dirty_files: dict[int, ZfsFile] = {}
        self._next_fid = 0
        self._spare: ArcBuffer | None = None  # the last evicted buffer, for the next miss
        self._next_txg = TXG_TIMEOUT_NS
        self._next_timer = min(policy.next_tick_ns, NEVER)
        self._access_fn = policy.access
        self._disk_read = disk.read
        #: reports an application error: (kind, path); the kernel wiring counts it
        self.on_error: Callable[[str, Any, str], None] | None = None
        #: called with a mapped buffer before the ARC evicts it (the VM code unmaps it)
        self.on_unmap: Callable[[ArcBuffer], None] | None = None
        #: called with a file unlinked or recreated (the page cache drops its pages)
        self.on_file_gone: Callable[[ZfsFile], None] | None = None
        self.read_bytes = 0
        self.written_bytes = 0
        self.recycled = 0
        self.shrink_calls = 0
        #: simulated delay between arc_lowmem's wake and the reclaim thread's pass (0: at once)
        self.reclaim_wake_latency_ns = 0
        self._meta_on = policy.models_metadata
        policy.on_evict = self._on_evict

    # -- files -----------------------------------------------------------------------------
    def size(self, path: str) -> int | None:
        """Size of the file at ``path`` in bytes, None if there is none (for file mappings)."""
        f = self._files.get(path)
        return None if f is None else f.size

    def exists(self, path: str) -> bool:
        return path in self._files

    def file(self, path: str) -> ZfsFile | None:
        return self._files.get(path)

    @property
    def nfiles(self) -> int:
        return len(self._files)

    def create(self, path: str, size: int, recordsize: int = 0, unit: int = 0) -> ZfsFile:
        """Create (or truncate and recreate) ``path``; ``recordsize`` fixes the record size."""
        if path in self._files:
            self.unlink(path)
        fid = self._next_fid
        self._next_fid += 1
        if recordsize:
            f = ZfsFile(fid, path, size, recordsize, unit or recordsize, True)
        else:
            rs = self.recordsize if size > self.recordsize else single_block_size(
                size, self.recordsize)
            f = ZfsFile(fid, path, size, rs, rs, False)
        f.meta_on = self._meta_on and not f.fixed  # a block trace's blocks are a device's
        self._files[path] = f
        self._by_fid[fid] = f
        return f

    def unlink(self, path: str) -> bool:
        """Remove ``path``: its buffers are freed, its dirty data dropped unwritten."""
        f = self._files.pop(path, None)
        if f is None:
            return False
        self._drop_buffers(f)
        f.dirty.clear()
        self._dirty_files.pop(f.fid, None)
        del self._by_fid[f.fid]
        if self.on_file_gone is not None:
            self.on_file_gone(f)
        return True

    def _drop_buffers(self, f: ZfsFile) -> None:
        for idx, buf in list(f.bufs.items()):
            self.policy.remove(record_key(f.fid, idx))
            if buf.mapped and self.on_unmap is not None:
                self.on_unmap(buf)
            self.buffers.free(buf)
        f.bufs.clear()
        if f.meta:
            self._release_meta(f)

    # -- a file's indirect and metadata blocks ---------------------------------------------
    def _load_meta(self, f: ZfsFile, idx: int) -> None:
        """After record ``idx`` was cached: the blocks above it that are not cached yet (and,
        for the file's first cached record, its measured metadata). They are held, so never
        on an evictable list: charged to the ARC's size, in real buffer pages. f.meta holds
        the metadata buffers first, then one buffer per indirect block, each charged once
        complete, so that _release_meta can tell what was charged from its length."""
        charge = self.policy.charge
        meta = f.meta
        if len(meta) < FILE_META_BUFS:
            each = FILE_META_BYTES // FILE_META_BUFS
            while len(meta) < FILE_META_BUFS:
                meta.append(self._alloc_meta(
                    each + (FILE_META_BYTES - each * FILE_META_BUFS if not meta else 0)))
            charge(FILE_META_BYTES, FILE_META_BUFS * RESIDENT_HDR + FILE_META_HDRS * HDR_SIZE,
                   FILE_META_OTHER)
        n = -(-f.size // f.unit)  # records: the levels above them hold their pointers
        level = 1
        while n > 1:
            n = -(-n >> INDIRECT_SHIFT)  # ceil(n / 128)
            block = (level, idx >> (INDIRECT_SHIFT * level))
            if block not in f.indirect:
                meta.append(self._alloc_meta(INDIRECT_SIZE))
                f.indirect.add(block)
                charge(INDIRECT_SIZE, RESIDENT_HDR, DBUF_SIZE)
            level += 1
        if not f.bufs:  # a shrinker run by those allocations took the file's records
            self._release_meta(f)

    def _alloc_meta(self, size: int) -> ArcBuffer:
        try:
            return self.buffers.alloc(size)
        except OutOfPages:
            self.request_memory(size, hard=True)
            return self.buffers.alloc(size)

    def _release_meta(self, f: ZfsFile) -> None:
        """The file's last cached record went: its dbufs release their parents (and whatever
        an allocation that failed part-way left is freed)."""
        nind = len(f.meta) - FILE_META_BUFS
        if nind >= 0:
            self.policy.charge(
                -(FILE_META_BYTES + nind * INDIRECT_SIZE),
                -((FILE_META_BUFS + nind) * RESIDENT_HDR + FILE_META_HDRS * HDR_SIZE),
                -(FILE_META_OTHER + nind * DBUF_SIZE))
        free = self.buffers.free
        for buf in f.meta:
            free(buf)
        f.meta.clear()
        f.indirect.clear()

    def overhead_bytes(self) -> int:
        """Bytes of the ARC's size that are no buffer pages: its headers and dbufs/dnodes
        (hdr_size + other_size), which OSv mallocs (kmem_cache_alloc -> malloc)."""
        return self.policy.overhead()

    # -- the cache -------------------------------------------------------------------------
    def _on_evict(self, key: int) -> None:
        fid, idx = split_key(key)
        f = self._by_fid.get(fid)
        if f is None:
            return
        buf = f.bufs.pop(idx, None)
        if buf is None:  # evicted before its buffer arrived (a reclaim during the fill)
            return
        if not f.bufs and f.meta:
            self._release_meta(f)
        if buf.dirty:
            self._write_back(f, idx, wait=False)
            buf.dirty = False
        if buf.mapped and self.on_unmap is not None:
            self.on_unmap(buf)
            buf.mapped = 0
        if self._spare is None:  # arc_evict recycles an evicted buffer for the new record
            self._spare = buf
        else:
            self.buffers.free(buf)

    def _free_spare(self) -> None:
        if self._spare is not None:
            self.buffers.free(self._spare)
            self._spare = None

    def _access(self, f: ZfsFile, idx: int, read_disk: bool) -> ArcBuffer | None:
        """Look record ``idx`` up; on a miss fill a buffer, from the disk if ``read_disk``."""
        key = record_key(f.fid, idx)
        if self._access_fn(key, f.recordsize):
            return f.bufs.get(idx)
        return self._fill(f, idx, key, read_disk)

    def _fill(self, f: ZfsFile, idx: int, key: int, read_disk: bool) -> ArcBuffer | None:
        """After a miss: a buffer (recycled from the eviction if it fits) and the disk read."""
        rs = f.recordsize
        spare = self._spare
        if spare is not None and spare.npages == f.npages:
            self._spare = None
            spare.size = rs
            spare.dirty = False
            self.recycled += 1
            if read_disk:
                t = self._time
                t.clock_ns = self._disk_read(t.clock_ns, rs)
            if rs <= self.policy.capacity:  # nothing ran that could have evicted it
                f.bufs[idx] = spare
                if f.meta_on:
                    self._load_meta(f, idx)
                return spare
            buf = spare
        else:
            self._free_spare()
            buf = self._alloc(rs, key)  # may run shrinkers, which may evict this very key
            if read_disk:
                t = self._time
                t.clock_ns = self._disk_read(t.clock_ns, rs)
        if key in self.policy:
            f.bufs[idx] = buf
            if f.meta_on:
                self._load_meta(f, idx)
            return buf
        self.buffers.free(buf)  # too big to cache, or reclaimed while it was filled
        return None

    def _alloc(self, size: int, key: int) -> ArcBuffer:
        try:
            return self.buffers.alloc(size)
        except OutOfPages:
            # the reclaimer (if any) has already run the shrinkers; squeeze the ARC itself once
            self.request_memory(size, hard=True)
            try:
                return self.buffers.alloc(size)
            except OutOfPages:
                self.policy.remove(key)
                raise

    def read(self, path: str, offset: int, length: int | None) -> int | None:
        """Read through the cache; bytes read (short at EOF), None if there is no such file."""
        f = self._files.get(path)
        if f is None:
            return None
        end = f.size if length is None else offset + length
        if end > f.size:
            end = f.size
        if end <= offset:
            return 0
        u = f.unit
        first = offset // u
        last = (end - 1) // u
        if first == last:  # the common case, inlined
            key = record_key(f.fid, first)
            if not self._access_fn(key, f.recordsize):
                self._fill(f, first, key, True)
        else:
            for idx in range(first, last + 1):
                self._access(f, idx, True)
        self.read_bytes += end - offset
        return end - offset

    def read_op(self, op: Any) -> None:
        """A trace's ``read PATH OFF LEN`` (the hot path of block traces: one call less)."""
        f = self._files.get(op.path)
        if f is not None:
            u = f.unit
            offset = op.offset
            if op.length == u and not offset % u and offset + u <= f.size:  # one whole record
                idx = offset // u
                key = idx if f.fid == 0 else ~(idx << FID_BITS | f.fid)
                if not self._access_fn(key, f.recordsize):
                    self._fill(f, idx, key, True)
                self.read_bytes += u
                return
        if self.read(op.path, op.offset, op.length) is None and self.on_error is not None:
            self.on_error("ENOENT", op, f"{op.path}: no such file")

    def block_read_op(self, op: Any) -> None:
        """Many one-block reads at once (mmsim.trace.blocktrace.BlockReads, the fast path):
        the same work as one ``read`` per block, without an operation's overhead for each."""
        f = self._files.get(op.path)
        blocks = op.blocks
        if f is None or op.length != f.unit or (max(blocks) + 1) * f.unit > f.size:
            lines = op.lines
            for i, b in enumerate(blocks):  # the general path, request by request
                op.line = lines[i]
                if self.read(op.path, b * op.length, op.length) is None and self.on_error:
                    self.on_error("ENOENT", op, f"{op.path}: no such file")
            return
        fid = f.fid
        keys = blocks if fid == 0 else [~(b << FID_BITS | fid) for b in blocks]
        rs = f.recordsize
        access = self._access_fn
        policy = self.policy
        disk = self.disk
        clock = self._time
        bufs = f.bufs
        # what access_many asks for: every cached record is this file's (all of one size),
        # keyed as in its bufs, none dirty (so none to write back as it goes; a block-trace
        # file is never mapped)
        batch = fid == 0 and f.fixed and len(self._files) == 1 and not f.dirty
        n = len(keys)
        i = 0
        try:
            while i < n:
                if batch and self._spare is None:
                    now = clock.clock_ns
                    budget = disk.reads_before(now, rs, self._next_timer)  # no thread due
                    evictions = policy.evictions
                    j = policy.access_many(keys, rs, i, budget, bufs)
                    if j > i:
                        moved = policy.evictions - evictions  # buffers recycled as they went
                        if moved:
                            clock.clock_ns = disk.read_many(now, rs, moved)
                            self.recycled += moved
                        i = j - 1
                        key = keys[i]
                        if key not in bufs:  # a miss that evicted nothing: a new buffer
                            self._fill(f, key, key, True)
                            if clock.clock_ns >= self._next_timer:
                                self._free_spare()
                                self._run_timers()
                        i = j
                        continue
                    batch = budget == 0  # else the policy has no access_many
                key = keys[i]  # one request at a time
                if not access(key, rs):
                    self._fill(f, key if fid == 0 else ~key >> FID_BITS, key, True)
                    if clock.clock_ns >= self._next_timer:  # as after a single read
                        self._free_spare()
                        self._run_timers()
                i += 1
        except OutOfPages as e:
            e.request = i  # type: ignore[attr-defined]  # which one: the OOM report names it
            raise
        self.read_bytes += f.unit * n

    def write(self, path: str, offset: int, length: int | None) -> int | None:
        """Write through the cache (records become dirty); bytes written, None if no file."""
        f = self._files.get(path)
        if f is None:
            return None
        if length is None:
            length = max(f.size - offset, 0)
        if length <= 0:
            return 0
        end = offset + length
        old_size = f.size
        if end > f.size:
            if f.fixed:
                end = f.size  # a block device does not grow
                if end <= offset:
                    return 0
            else:
                self._grow(f, end)
        u = f.unit
        for idx in range(offset // u, (end - 1) // u + 1):
            start = idx * u
            whole = offset <= start and end >= start + u
            # a partial write of data that exists reads the record first
            buf = self._access(f, idx, read_disk=not whole and start < old_size)
            if buf is None:
                buf = f.bufs.get(idx)
            if buf is None:  # not cacheable: write through
                self.disk.write(self._time.clock_ns, f.recordsize)
                continue
            buf.dirty = True
            f.dirty.add(idx)
            if not self._dirty_files and self._next_txg < self._next_timer:
                self._next_timer = self._next_txg
            self._dirty_files[f.fid] = f
        self.written_bytes += end - offset
        return end - offset

    def _grow(self, f: ZfsFile, end: int) -> None:
        """Extend the file; a one-record file's block grows (its cached record is dropped)."""
        rs = f.recordsize
        if rs < self.recordsize:
            new_rs = self.recordsize if end > self.recordsize else single_block_size(
                end, self.recordsize)
            if new_rs != rs:
                was_dirty = bool(f.dirty)
                self._drop_buffers(f)
                f.dirty.clear()
                self._dirty_files.pop(f.fid, None)
                f.set_recordsize(new_rs)
                f.unit = new_rs
                if was_dirty:  # the old block's data is carried into the new one
                    self.disk.write(self._time.clock_ns, rs)
        f.size = end

    def get_buffer(self, path: str, offset: int) -> ArcBuffer | None:
        """The buffer of the record holding ``offset``, read through the cache (for mmap)."""
        f = self._files.get(path)
        if f is None or not 0 <= offset < f.size:
            return None
        idx = offset // f.unit
        buf = self._access(f, idx, True)
        return buf if buf is not None else f.bufs.get(idx)

    # -- writing back --------------------------------------------------------------------
    def _write_back(self, f: ZfsFile, idx: int, wait: bool) -> None:
        f.dirty.discard(idx)
        buf = f.bufs.get(idx)
        if buf is not None:
            buf.dirty = False
        t = self._time
        done = self.disk.write(t.clock_ns, f.recordsize)
        if wait and done > t.clock_ns:
            t.clock_ns = done
        if not f.dirty:
            self._dirty_files.pop(f.fid, None)

    def fsync(self, path: str) -> bool:
        """Write the file's dirty records and wait for them; False if there is no such file."""
        f = self._files.get(path)
        if f is None:
            return False
        for idx in sorted(f.dirty):
            self._write_back(f, idx, wait=True)
        return True

    def sync_all(self) -> None:
        """A transaction-group sync: every dirty record goes to disk in the background."""
        for f in list(self._dirty_files.values()):
            for idx in sorted(f.dirty):
                self._write_back(f, idx, wait=False)

    @property
    def dirty_records(self) -> int:
        return sum(len(f.dirty) for f in self._dirty_files.values())

    # -- threads and memory pressure -----------------------------------------------------
    def after_op(self) -> None:
        """Kernel threads, after each operation: the ARC reclaim thread and the txg sync."""
        if self._spare is not None:
            self._free_spare()
        if self._time.clock_ns >= self._next_timer:
            self._run_timers()

    def next_due_ns(self) -> int | None:
        """When the ARC's reclaim thread or the txg sync next wants to run (None: never, or
        not until an operation changes what they look at: every pass would be a no-op)."""
        if self._next_timer >= NEVER or (
                self._next_timer >= 0 and not self._dirty_files and self.policy.at_rest()):
            return None
        return self._next_timer

    def skip_to(self, t_ns: int) -> None:
        """Simulated time jumped to ``t_ns`` with nothing due (:meth:`next_due_ns`): the passes
        before it were no-ops, so their grid moves on as if they had run (the one at ``t_ns``
        runs after the operation there, as it would have)."""
        policy = self.policy
        period = policy.tick_period_ns
        if self._next_timer < 0 or period >= NEVER or not 0 <= policy.next_tick_ns < t_ns:
            return
        last = policy.next_tick_ns + (t_ns - 1 - policy.next_tick_ns) // period * period
        policy.next_tick_ns = last + period
        if self._next_txg <= last:
            self._next_txg = last - last % TXG_TIMEOUT_NS + TXG_TIMEOUT_NS
        self._next_timer = policy.next_tick_ns

    def _run_timers(self) -> None:
        now = self._time.clock_ns
        policy = self.policy
        if now >= policy.next_tick_ns:
            policy.tick(now)
            self._free_spare()
        if now >= self._next_txg:
            if self._dirty_files:
                self.sync_all()
            self._next_txg = now - now % TXG_TIMEOUT_NS + TXG_TIMEOUT_NS
        nxt = policy.next_tick_ns
        if self._dirty_files and self._next_txg < nxt:
            nxt = self._next_txg
        self._next_timer = nxt

    def request_memory(self, target: int, hard: bool) -> int:
        """OSv's ARC shrinker: on hard pressure arc_lowmem first; then arc_sized_adjust of at
        least 16 MiB until that much is freed or a call frees nothing. Returns ARC bytes freed
        (record bytes, as OSv counts them; the pages freed can be more)."""
        self.shrink_calls += 1
        freed = 0
        if hard:
            policy = self.policy
            scheduled = policy.next_tick_ns
            freed = policy.lowmem()
            if self.reclaim_wake_latency_ns and policy.next_tick_ns < 0:
                # woken, but the thread runs only after its wake latency (or sooner if due)
                policy.next_tick_ns = min(scheduled,
                                          self._time.clock_ns + self.reclaim_wake_latency_ns)
                self._next_timer = min(self._next_timer, policy.next_tick_ns)
            else:
                self._next_timer = -1  # the reclaim thread was woken: after this operation
            if freed >= target > 0:
                return freed
        goal = max(target, SHRINK_MIN)
        total = 0
        while total < goal:
            got = self.policy.evict_bytes(goal - total)
            if got <= 0:
                break
            total += got
        self._free_spare()
        return freed + total

    def sized_adjust(self, nbytes: int) -> int:
        """OSv's ``arc_sized_adjust(nbytes)`` called directly (the JVM balloon's release):
        one eviction pass of at least ``nbytes`` if cached, no 16 MiB minimum, c unchanged;
        returns the bytes freed."""
        freed = self.policy.evict_bytes(nbytes) if nbytes > 0 else 0
        self._free_spare()
        return freed

    # -- statistics ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """The summary's ``arc`` section."""
        out = self.policy.stats()
        out.update(self.policy.list_sizes())
        out.update({
            "buffers": self.buffers.buffers,
            "buffer_bytes": self.buffers.pages * 4096,
            "recycled": self.recycled,
            "files": len(self._files),
            "dirty_records": self.dirty_records,
            "read_bytes": self.read_bytes,
            "written_bytes": self.written_bytes,
            "shrinker_calls": self.shrink_calls,
        })
        return out

    def check(self) -> None:
        """Every cached record has exactly one buffer and the buffer count adds up."""
        n = 0
        pages = 0
        nmeta = 0
        for f in self._files.values():
            assert not f.meta or f.bufs, "metadata held for a file with no cached record"
            nmeta += len(f.meta)
            pages += sum(buf.npages for buf in f.meta)
            for idx, buf in f.bufs.items():
                assert record_key(f.fid, idx) in self.policy, "buffer of an uncached record"
                n += 1
                pages += buf.npages
            assert all(buf.dirty for idx, buf in f.bufs.items() if idx in f.dirty)
        assert self._spare is None, "a recycled buffer was left over"
        assert all(f.dirty for f in self._dirty_files.values()), "a clean file listed as dirty"
        assert all(f.fid in self._dirty_files for f in self._files.values() if f.dirty)
        assert n + nmeta == self.buffers.buffers and pages == self.buffers.pages, "buffer leak"
        resident = self.policy.lists().get("mru_count", 0) + self.policy.lists().get(
            "mfu_count", 0)
        assert resident == n, f"{resident} records cached but {n} buffers"
