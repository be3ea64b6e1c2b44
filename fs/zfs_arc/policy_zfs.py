"""The ZFS ARC as OSv's BSD port runs it (reference §8): byte-sized, with a moving target.

Differences from the paper's ARC that matter to a user: the target size ``c`` moves between
``c_min`` and ``c_max`` (it grows on inserts near the target and shrinks by 1/32 when memory is
low), ``p`` moves by whole record sizes times a multiplier capped at 10 and never below c/16, a
second hit on an MRU record promotes it only if it comes more than 62 ms after the first, and
eviction on insert takes exactly one record's worth from the list chosen against ``p``, so the
size may overshoot ``c`` until the reclaim thread's ``arc_adjust`` (once a simulated second)
trims it. OSv's additions are here too: ``arc_sized_adjust`` (the shrinker's soft path, which
frees bytes without moving ``c``) and ``arc_lowmem`` (its hard path).

The size counts what arc.c's ``arc_size`` counts: the records' bytes (data_size), the
headers (hdr_size: an ``arc_buf_hdr_t`` per record, ghosts included, and an ``arc_buf_t`` per
resident one), the dbufs (other_size: a ``dmu_buf_impl_t`` per resident record), and what the
file system charges through :meth:`ZfsArcPolicy.charge` (a file's indirect and metadata blocks,
held while the file has cached records, with their headers and dbufs). Counters, not walks.

Not modelled: the anonymous (dirty, unsynced) state; held (referenced) data buffers, since
reads complete within one operation; prefetch; L2ARC; the 16 hash-partitioned sublists of each
list (arc_evict walks them round robin; here each list is one LRU: docs/arc.md); arc_adapt's
early wake-up of the reclaim thread (it runs every simulated second, and at once after
arc_lowmem).
"""

from __future__ import annotations

from collections import OrderedDict

from mmsim.fs.zfs_arc.policy import CachePolicy, EvictFn, _no_evict

MIB = 1 << 20
GIB = 1 << 30
SEC = 1_000_000_000

ARC_MINTIME_NS = 62_000_000  # hz >> 4 at hz = 1000: a second MRU hit sooner does not promote
SHRINK_SHIFT = 5  # arc_shrink takes c/32
P_MIN_SHIFT = 4  # p stays >= c/16
GROW_RETRY_NS = 60 * SEC  # arc_no_grow lasts this long after the last reclaim
RECLAIM_PERIOD_NS = SEC  # the reclaim thread's sleep
MAX_BLOCK = 128 << 10  # SPA_MAXBLOCKSIZE of the BSD port: c grows within 2 blocks of it
MAX_CATCHUP = 4096  # reclaim passes run for one long sleep; the rest are skipped

# What arc_space_consume adds to arc_size besides the records (x86-64, OSv's release build:
# no ZFS_DEBUG, so refcount_t is one uint64_t; kmutex_t is OSv's 40-byte lockfree mutex,
# kcondvar_t OSv's 64-byte condvar, krwlock_t OSv's 64-byte rwlock; list_node_t two pointers).
# Summed field by field from the structs (arc.c l.503-539, sys/arc.h l.48-56, sys/dbuf.h);
# the measurement agrees: the hdr_size of osv-real.md §3 is 424·N + 280·M at every RAM size
# (128M: N = 302 records, M = 2 headers alone) and grows in steps of 280 between runs.
HDR_SIZE = 280  # sizeof(arc_buf_hdr_t): hdr_cons, arc.c l.934 (ARC_SPACE_HDRS)
BUF_SIZE = 144  # sizeof(arc_buf_t): buf_cons, arc.c l.948 (ARC_SPACE_HDRS)
DBUF_SIZE = 280  # sizeof(dmu_buf_impl_t): dbuf_create, dbuf.c l.1725 (ARC_SPACE_OTHER)
RESIDENT_HDR = HDR_SIZE + BUF_SIZE  # a cached record's headers; a ghost keeps HDR_SIZE

# list tags
ANON, MRU, MFU, MRU_GHOST, MFU_GHOST = range(5)


def arc_init(phys_mem_size: int) -> tuple[int, int, int]:
    """(c_min, c_max, meta_limit) as OSv's arc_init derives them from the RAM size.

    kmem_size() is physmem * PAGE_SIZE, physmem being phys_mem_size in whole pages
    (opensolaris_kmem.c, bsd/init.cc); arc.c works from arc_c = kmem/8, so its figures are
    multiples of kmem/8, to the byte (real OSv's c_max at 128M is 83548160 = 5 * 16709632)."""
    kmem = phys_mem_size // 4096 * 4096
    c8 = kmem // 8
    c_min = max(c8 // 4, 16 * MIB)
    c_max = c8 * 8 - GIB if c8 * 8 >= GIB else c_min
    c_max = max(c8 * 5, c_max)
    meta_limit = c_max // 4
    if c_min < meta_limit // 2:
        c_min = c_max // 8
    return c_min, c_max, meta_limit


class ZfsArcPolicy(CachePolicy):
    """MRU/MFU lists with ghosts, adaptive ``p`` and ``c``, and the ARC's reclaim thread."""

    name = "zfs"
    models_metadata = True

    def __init__(
        self, capacity: int, on_evict: EvictFn = _no_evict, *, c_min: int | None = None
    ) -> None:
        super().__init__(capacity, on_evict, c_min=c_min)
        self.c = capacity  # arc_init starts at c_max
        self.p = capacity // 2
        # key -> [size, last access ns] for resident records, key -> size for ghosts;
        # least recently released first
        self._mru: OrderedDict[int, list[int]] = OrderedDict()
        self._mfu: OrderedDict[int, list[int]] = OrderedDict()
        self._mru_ghost: OrderedDict[int, int] = OrderedDict()
        self._mfu_ghost: OrderedDict[int, int] = OrderedDict()
        self.mru_size = self.mfu_size = self.mru_ghost_size = self.mfu_ghost_size = 0
        self.no_grow = False
        self.needfree = False
        self._aggressive = False  # the last reclaim pass's strategy
        self._growtime = 0
        self.next_tick_ns = 0  # the thread's first pass runs at boot
        self.mru_hits = self.mfu_hits = self.mru_ghost_hits = self.mfu_ghost_hits = 0
        self.shrinks = 0
        #: arc_size beyond the records on the lists (arc_space_consume's bytes): charged
        #: metadata blocks (data_size), headers (hdr_size) and dbufs/dnodes (other_size);
        #: extra = meta + hdr + other, kept as one counter for the insert path
        self.meta_size = self.hdr_size = self.other_size = self.extra = 0

    # -- hot path --------------------------------------------------------------------------
    def access(self, key: int, size: int) -> bool:
        e = self._mfu.get(key)
        if e is not None:
            self._mfu.move_to_end(key)
            e[1] = self.clock()
            self.hits += 1
            self.mfu_hits += 1
            return True
        e = self._mru.get(key)
        if e is not None:
            now = self.clock()
            if now > e[1] + ARC_MINTIME_NS:  # referenced again, later: frequently used
                del self._mru[key]
                self.mru_size -= e[0]
                e[1] = now
                self._mfu[key] = e
                self.mfu_size += e[0]
            else:
                self._mru.move_to_end(key)
            self.hits += 1
            self.mru_hits += 1
            return True
        self.misses += 1
        if key in self._mru_ghost:
            state = MRU_GHOST
            self.mru_ghost_hits += 1
        elif key in self._mfu_ghost:
            state = MFU_GHOST
            self.mfu_ghost_hits += 1
        else:
            state = ANON
        self._get_data_buf(size, state)
        now = self.clock()
        if state == ANON:
            self._mru[key] = [size, now]
            self.mru_size += size
            # a new arc_buf_hdr_t and arc_buf_t, and the record's dbuf
            self.hdr_size += RESIDENT_HDR
            self.other_size += DBUF_SIZE
            self.extra += RESIDENT_HDR + DBUF_SIZE
            # arc_get_data_buf (arc.c l.2755-2757): growing, with anonymous data beyond p
            # (the new buffer is anonymous until arc_access puts it on the MRU)
            if (self.mru_size + self.mfu_size + self.extra < self.c
                    and self.mru_size > self.p):
                self.p = min(self.c, self.p + size)
        else:  # seen before, evicted since: straight to MFU (the ghost's header stays)
            self._drop_ghost(key)
            self._mfu[key] = [size, now]
            self.mfu_size += size
            self.hdr_size += HDR_SIZE + BUF_SIZE
            self.other_size += DBUF_SIZE
            self.extra += HDR_SIZE + BUF_SIZE + DBUF_SIZE
        return False

    def _drop_ghost(self, key: int) -> bool:
        """Forget a ghost and its arc_buf_hdr_t."""
        s = self._mru_ghost.pop(key, None)
        if s is not None:
            self.mru_ghost_size -= s
        else:
            s = self._mfu_ghost.pop(key, None)
            if s is None:
                return False
            self.mfu_ghost_size -= s
        self.hdr_size -= HDR_SIZE
        self.extra -= HDR_SIZE
        return True

    def reclaim_needed(self) -> bool:
        """arc_reclaim_needed: a hard request is pending, or free memory is under ~25 %."""
        return self.needfree or self.memory_low()

    def _get_data_buf(self, size: int, state: int) -> None:
        """arc_get_data_buf: adapt, then evict one record's worth if the ARC is full."""
        self._adapt(size, state)
        if not (self.reclaim_needed() or self.mru_size + self.mfu_size + self.extra > self.c):
            return
        if state == MFU_GHOST:
            victim = MRU if (self.mru_size >= size and self.c - self.p > self.mfu_size) else MFU
        else:  # new records and MRU-ghost hits take from the recency side unless it is small
            victim = MFU if (self.mfu_size >= size and self.p > self.mru_size) else MRU
        self._evict(victim, size)

    def _adapt(self, size: int, state: int) -> None:
        """arc_adapt: move p on a ghost hit; grow c by ``size`` when full and allowed."""
        c = self.c
        p_min = c >> P_MIN_SHIFT
        if state == MRU_GHOST:
            mrug, mfug = self.mru_ghost_size, self.mfu_ghost_size
            mult = min(1 if mrug >= mfug else mfug // mrug, 10)
            self.p = min(c - p_min, self.p + size * mult)
        elif state == MFU_GHOST:
            mrug, mfug = self.mru_ghost_size, self.mfu_ghost_size
            mult = min(1 if mfug >= mrug else mrug // mfug, 10)
            self.p = max(p_min, self.p - min(size * mult, self.p))
        if self.reclaim_needed() or self.no_grow or c >= self.capacity:
            return
        if self.mru_size + self.mfu_size + self.extra > c - 2 * MAX_BLOCK:
            c += size
            if c > self.capacity:
                c = self.capacity
            elif state == ANON:
                self.p += size
            self.c = c
            if self.p > c:
                self.p = c

    def _evict(self, state: int, nbytes: int) -> int:
        """arc_evict: oldest records of ``state`` to its ghost list until ``nbytes`` are out."""
        if state == MRU:
            lst, ghost = self._mru, self._mru_ghost
        else:
            lst, ghost = self._mfu, self._mfu_ghost
        evicted = 0
        n = self.evictions
        on_evict = self.on_evict
        while lst and evicted < nbytes:
            key, e = lst.popitem(last=False)
            s = e[0]
            ghost[key] = s
            evicted += s
            n += 1
            on_evict(key)
        # each one loses its arc_buf_t and dbuf; its arc_buf_hdr_t stays with the ghost
        n -= self.evictions
        self.evictions += n
        self.hdr_size -= n * BUF_SIZE
        self.other_size -= n * DBUF_SIZE
        self.extra -= n * (BUF_SIZE + DBUF_SIZE)
        if state == MRU:
            self.mru_size -= evicted
            self.mru_ghost_size += evicted
        else:
            self.mfu_size -= evicted
            self.mfu_ghost_size += evicted
        if self.no_grow and self.mru_ghost_size + self.mfu_ghost_size > self.c:
            # keep the ghosts within c while the ARC may not grow
            mru_over = self.mru_size + self.mru_ghost_size - self.c
            if mru_over > 0 and self.mru_ghost_size > 0:
                self._evict_ghost(MRU_GHOST, min(self.mru_ghost_size, mru_over))
            elif self.mfu_ghost_size > 0:
                self._evict_ghost(MFU_GHOST, min(
                    self.mfu_ghost_size, self.mru_ghost_size + self.mfu_ghost_size - self.c))
        return evicted

    def _evict_ghost(self, state: int, nbytes: int) -> None:
        """arc_evict_ghost: forget the oldest ghosts until ``nbytes`` are gone."""
        ghost = self._mru_ghost if state == MRU_GHOST else self._mfu_ghost
        gone = 0
        n = len(ghost)
        while ghost and gone < nbytes:
            gone += ghost.popitem(last=False)[1]
        n -= len(ghost)
        self.hdr_size -= n * HDR_SIZE  # arc_hdr_destroy
        self.extra -= n * HDR_SIZE
        if state == MRU_GHOST:
            self.mru_ghost_size -= gone
        else:
            self.mfu_ghost_size -= gone

    # -- the reclaim thread and the shrinker hooks -----------------------------------------
    def _adjust(self) -> None:
        """arc_adjust = arc_sized_adjust(-1): evict down to c (MRU beyond p first, then MFU),
        then trim the ghosts."""
        adj = min(self.size - self.c, self.mru_size + self.extra - self.p)
        if adj > 0 and self._mru:
            self._evict(MRU, min(self.mru_size, adj))
        adj = self.size - self.c
        if adj > 0 and self._mfu:
            self._evict(MFU, min(self.mfu_size, adj))
        self._trim_ghosts()

    def _trim_ghosts(self) -> None:
        adj = self.mru_size + self.mru_ghost_size - self.c
        if adj > 0 and self.mru_ghost_size > 0:
            self._evict_ghost(MRU_GHOST, min(self.mru_ghost_size, adj))
        adj = self.mru_ghost_size + self.mfu_ghost_size - self.c
        if adj > 0 and self.mfu_ghost_size > 0:
            self._evict_ghost(MFU_GHOST, min(self.mfu_ghost_size, adj))

    def _shrink(self) -> None:
        """arc_shrink: c and p lose 1/32 (c not below c_min), then evict down to c."""
        if self.c > self.c_min:
            to_free = self.c >> SHRINK_SHIFT
            self.c = self.c - to_free if self.c > self.c_min + to_free else self.c_min
            self.p -= self.p >> SHRINK_SHIFT
            if self.c > self.size:
                self.c = max(self.size, self.c_min)
            if self.p > self.c:
                self.p = self.c >> 1
            self.shrinks += 1
        if self.size > self.c:
            self._adjust()

    def reclaim_pass(self, now_ns: int) -> None:
        """One iteration of arc_reclaim_thread (OSv runs it every second)."""
        if self.reclaim_needed():
            if self.no_grow:
                self._aggressive = not self._aggressive
            else:
                self.no_grow = True
                self._aggressive = True
            self._growtime = now_ns + GROW_RETRY_NS
            if self.needfree and not self._aggressive:
                # arc_reclaim_thread (arc.c l.2511-2519): arc_lowmem was called, so a pass
                # that would have been conservative is aggressive
                self.no_grow = True
                self._aggressive = True
            if self._aggressive:
                self._shrink()
        elif self.no_grow and now_ns >= self._growtime:
            self.no_grow = False
        self._adjust()
        self.needfree = False

    tick_period_ns = RECLAIM_PERIOD_NS

    def at_rest(self) -> bool:
        """A reclaim pass would change nothing: no reclaim needed (nor asked for), free to grow,
        nothing above c to evict, no ghost list over its share. Only an operation or another
        kernel thread changes that, so the passes meanwhile can be skipped."""
        if self.next_tick_ns < 0 or self.no_grow or self.reclaim_needed():
            return False
        c = self.c
        if self.mru_size + self.mfu_size + self.extra > c:
            return False
        if self.mru_ghost_size > 0 and self.mru_size + self.mru_ghost_size > c:
            return False
        return not (self.mfu_ghost_size > 0 and self.mru_ghost_size + self.mfu_ghost_size > c)

    def tick(self, now_ns: int) -> None:
        t = self.next_tick_ns
        if now_ns < t:
            return
        if t < 0:  # woken by arc_lowmem
            t = now_ns
        for _ in range(MAX_CATCHUP):
            self.reclaim_pass(t)
            t += RECLAIM_PERIOD_NS
            if t > now_ns:
                break
        self.next_tick_ns = t if t > now_ns else now_ns + RECLAIM_PERIOD_NS

    def lowmem(self) -> int:
        """arc_lowmem: ask the reclaim thread for a pass now; nothing is freed at once."""
        self.needfree = True
        self.next_tick_ns = -1  # woken: runs after the current operation
        return 0

    def sized_adjust(self, nbytes: int) -> int:
        """arc_sized_adjust (OSv): evict at least ``nbytes`` if cached; c is left unchanged."""
        freed = 0
        # arc_meta_used: every arc_space_consume'd byte (metadata blocks, headers, dbufs)
        adj = max(nbytes, min(self.size - self.c, self.mru_size + self.extra - self.p))
        if adj > 0 and self._mru:
            freed += self._evict(MRU, min(self.mru_size, adj))
        adj = max(nbytes - freed, self.size - self.c)
        if adj > 0 and self._mfu:
            freed += self._evict(MFU, min(self.mfu_size, adj))
        self._trim_ghosts()
        return freed

    def evict_bytes(self, nbytes: int) -> int:
        return self.sized_adjust(nbytes)

    # -- the rest of the interface ---------------------------------------------------------
    def remove(self, key: int) -> bool:
        e = self._mru.pop(key, None)
        if e is not None:
            self.mru_size -= e[0]
        else:
            e = self._mfu.pop(key, None)
            if e is None:
                self._drop_ghost(key)
                return False
            self.mfu_size -= e[0]
        self.hdr_size -= RESIDENT_HDR  # arc_hdr_destroy with its buffer
        self.other_size -= DBUF_SIZE
        self.extra -= RESIDENT_HDR + DBUF_SIZE
        return True

    def charge(self, data: int, hdr: int, other: int) -> None:
        """Add (or with negative amounts take back) bytes that are in arc_size but on no
        list here: held metadata blocks (data_size), their headers and dbufs/dnodes."""
        self.meta_size += data
        self.hdr_size += hdr
        self.other_size += other
        self.extra += data + hdr + other

    def __contains__(self, key: int) -> bool:
        return key in self._mru or key in self._mfu

    @property
    def size(self) -> int:
        """arc_size: data_size + hdr_size + other_size."""
        return self.mru_size + self.mfu_size + self.extra

    @property
    def data_size(self) -> int:
        return self.mru_size + self.mfu_size + self.meta_size

    def space(self) -> tuple[int, int, int]:
        return self.data_size, self.hdr_size, self.other_size

    def overhead(self) -> int:
        """:meth:`space`'s hdr_size + other_size, without adding up the data (after every
        operation that moves memory: the ARC's headers are held in pages)."""
        return self.hdr_size + self.other_size

    @property
    def target(self) -> int:
        return self.c

    def lists(self) -> dict[str, int]:
        return {
            "mru_bytes": self.mru_size, "mfu_bytes": self.mfu_size,
            "mru_ghost_bytes": self.mru_ghost_size, "mfu_ghost_bytes": self.mfu_ghost_size,
            "mru_count": len(self._mru), "mfu_count": len(self._mfu),
            "mru_ghost_count": len(self._mru_ghost), "mfu_ghost_count": len(self._mfu_ghost),
        }


POLICY = ZfsArcPolicy
