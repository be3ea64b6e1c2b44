"""The malloc family as a trace drives it: handles name the application's pointers.

Bad frees are the application's bugs, caught as a sanitizer would and counted (the replay goes
on): ``invalid_free`` (a handle never allocated), ``double_free`` and ``realloc_freed`` (a handle
freed before). Like a sanitizer's quarantine, freed handles are remembered for the last
:data:`QUARANTINE` frees only, so memory stays bounded by the live blocks; an older one freed
again counts as ``invalid_free``.

Other handle rules: ``realloc`` of a handle never allocated is realloc(NULL) (a malloc);
``realloc H 0`` frees H; ``malloc`` of a live handle loses the old block, which stays allocated
and live (a leak, as ``p = malloc(); p = malloc();`` is). A call that returns NULL (an impossible
size, or no memory left in the simulated guest) binds nothing and counts in ``failed_calls``;
a later free of that handle is the trace's free of a block the application did get (its malloc
succeeded in the real run), so it counts in ``frees_of_failed``, not as an application error.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

from mmsim.kernel.alloc_sites import AllocSites
from mmsim.kernel.sys_pressure import extra_shrinkers
from mmsim.mm.constants import (
    HUGE_PAGE_SIZE,
    MAIN_AREA,
    MEMPOOL_AREA,
    MIN_EMERGENCY_POOL,
    PAGE_AREA,
    PAGE_SHIFT,
    PAGE_SIZE,
)
from mmsim.mm.page_pool import L1_HI, L1_LO, OutOfPages, PagePool
from mmsim.mm.slab import POOL_CLASSES, Malloc, MallocAbort
from mmsim.mm.slab import large as large_module
from mmsim.mm.slab.large import LargeAllocator
from mmsim.mm.slab.pool import Pool, PoolPage
from mmsim.mm.slab.sizes import large_layout
from mmsim.shrinker import Reclaimer

try:
    if os.environ.get("MMSIM_PURE_PYTHON"):
        raise ImportError
    from mmsim.kernel import _mallocs_c
except ImportError:  # not compiled on this machine, or turned off: the pure-Python twin
    _mallocs_c = None

#: The C loop's packed batch of records (MallocRecords: a sequence of the records' tuples, which
#: it reads with no tuple made) as a capsule for a trace reader's C code to fill
#: (kernel/malloc_records_c.h); None where the C loop is not built.
MALLOC_RECORDS_API = None if _mallocs_c is None else _mallocs_c._RECORDS

try:
    from mmsim.mm.address_space import VmError
except ImportError:  # no virtual memory in this build: the stand-in mapper never raises it

    class VmError(Exception):  # type: ignore[no-redef]
        """Placeholder: the address space's error type."""


if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.mm.address_space import AddressSpace
    from mmsim.shrinker import ShrinkerRegistry

__all__ = ["MALLOC_RECORDS_API", "QUARANTINE", "MallocFace", "attach"]

#: freed handles remembered to tell a double free from an invalid one (two halves of this)
QUARANTINE = 1 << 16
_HALF = QUARANTINE // 2
#: what the C loop inlines (Malloc's pool fast paths, Pool's list): it runs only while these
#: are the classes' own methods (a test or a tool that wraps one gets the Python loop)
_INLINED = [(Malloc, name, getattr(Malloc, name))
            for name in ("malloc", "free", "realloc", "usable_size", "_add_page", "_free_same_cpu",
                         "_std_malloc", "_grow_heap")]
_INLINED += [(PagePool, name, getattr(PagePool, name)) for name in ("alloc_page", "free_page")]
_INLINED += [(LargeAllocator, name, getattr(LargeAllocator, name))
             for name in ("alloc", "free", "owns", "usable_size")]
_INLINED += [(large_module, "large_layout", large_layout)]
_INLINED += [(Pool, name, getattr(Pool, name))
             for name in ("add_page", "unlink", "alloc", "free", "push_front", "push_back")]
_INLINED += [(AllocSites, name, getattr(AllocSites, name))
             for name in ("snapshot_live_peak", "_snapshot")]
if _mallocs_c is not None:
    _mallocs_c.setup(Pool, PoolPage, VmError, OutOfPages, _HALF, MEMPOOL_AREA, PAGE_SHIFT,
                     PAGE_AREA, L1_LO, L1_HI, MAIN_AREA, HUGE_PAGE_SIZE,
                     large_layout(PAGE_SIZE + 1, 16)[0])  # malloc's objects in a run
PEAK_SITES = 10  # call sites in the summary's peak snapshot


def _hashed_dict() -> dict[Any, Any]:
    """An empty dict whose table keeps each key's hash beside it, as it does once a key other
    than a str has been in it (CPython keeps str-only tables without them, and a probe that
    meets another key must then read that key's hash from the str itself: one more cache miss
    in a table of 100 k handles). The handle maps of a replay are such tables; the C loop
    makes its own the same way. Results do not depend on it: elsewhere it is a plain dict."""
    d: dict[Any, Any] = {0: None}
    del d[0]
    return d


def _live_blocks() -> MutableMapping[str, Any]:
    """An empty map of live blocks: the C loop's own (_mallocs_c.LiveBlocks, a mapping whose
    values are the same tuples, a block a slot of its table rather than a dict entry, a tuple
    and an int) where it is built, else a dict."""
    if _mallocs_c is not None:
        return _mallocs_c.LiveBlocks()  # type: ignore[no-any-return]
    return _hashed_dict()


def _freed_handles() -> MutableMapping[str, int]:
    """An empty half of the freed-handle quarantine (handle -> line of its free): the C loop's
    own (_mallocs_c.FreedHandles, whose slots hold a handle's text and line, so that neither
    object lives on for the 32 k frees a half lasts) where it is built, else a dict."""
    if _mallocs_c is not None:
        return _mallocs_c.FreedHandles()  # type: ignore[no-any-return]
    return _hashed_dict()


_CLASS_NAMES = [str(s) for s in POOL_CLASSES]
#: a live block: (address, requested size, the caller's site or None)
Block = tuple[int, int, "str | None"]


class MallocFace:
    """Handles -> blocks of one :class:`Malloc`, with the application's statistics.

    A live block is ``(address, requested size, site)``; ``site`` (the caller, where the trace
    names one) is counted in :attr:`sites` (kernel/alloc_sites.py)."""

    def __init__(self, kernel: Kernel, space: AddressSpace, reclaimer: Reclaimer) -> None:
        self.kernel = kernel
        self.malloc = Malloc(kernel.pool, space)
        self.malloc.wait_for_minimum_memory = reclaimer.wait_for_minimum_memory
        self._c_wait_below: int | None = None  # (see _c_ready)
        # handle -> its block: in C a slot a block (_mallocs_c.LiveBlocks), where it is built
        self.live: MutableMapping[str, Block] = _live_blocks()
        self.leaked: list[Block] = []  # blocks whose handle was bound again
        self._freed = _freed_handles()  # handle -> line of its free (newest half)
        self._freed_old: MutableMapping[str, int] = {}
        self.n_malloc = self.n_calloc = self.n_memalign = self.n_realloc = self.n_free = 0
        self._malloc = self.malloc.malloc
        self._free = self.malloc.free
        self.failed = 0
        self._failed: dict[str, int] = {}  # handle -> line of its failed (NULL) allocation
        self.frees_of_failed = 0
        self.invalid_frees = 0
        self.live_bytes = 0
        self.live_bytes_peak = 0
        self.heap_at_peak = 0
        self.sites = AllocSites()
        self.allocated_blocks = 0  # successful allocations (a realloc's new block is one)
        self.allocated_bytes = 0
        self.unattributed_bytes = 0  # of those, by calls that name no site
        # live bytes reached a new peak and nothing changed the live blocks since: the sites'
        # snapshot is taken just before the next change that does not raise the peak
        self.peak_pending = False
        self._handlers = {"free": self.op_free, "realloc": self.op_realloc}

    # -- the handlers (op_malloc and op_free are the hot path of a replay: kept inline) -----
    def op_malloc(self, op: Any) -> None:
        self.n_malloc += 1
        size = op.size
        try:
            addr = self._malloc(size, self.kernel.cpu)
        except VmError:  # no room for the mapping: malloc returns NULL
            addr = 0
        if not addr:
            self._fail(op.handle, op.line)
            return
        self._bind(op.handle, addr, size, op.line, op.site)

    def op_free(self, op: Any) -> None:
        self.n_free += 1
        handle = op.handle
        block = self.live.pop(handle, None)
        if block is None:
            self._bad_free(op, "double_free", "invalid_free")
            return
        self._free(block[0], self.kernel.cpu)
        self._dropped(block)
        self._forget(handle, op.line)

    def op_calloc(self, op: Any) -> None:
        self.n_calloc += 1
        try:
            addr = self.malloc.calloc(op.count, op.size, self.kernel.cpu)
        except VmError:
            addr = 0
        self._bind(op.handle, addr, op.count * op.size, op.line, op.site)

    def op_memalign(self, op: Any) -> None:
        self.n_memalign += 1
        try:
            addr = self.malloc.memalign(op.align, op.size, self.kernel.cpu)
        except MallocAbort as e:
            self.kernel.errors.report("osv_abort", op.line, op.kind, str(e))
            addr = 0
        except VmError:
            addr = 0
        self._bind(op.handle, addr, op.size, op.line, op.site)

    def op_realloc(self, op: Any) -> None:
        self.n_realloc += 1
        handle = op.handle
        size = op.size
        block = self.live.get(handle)
        if block is None:
            if handle in self._freed or handle in self._freed_old:
                self._bad_free(op, "realloc_freed", "")
            try:
                addr = self.malloc.malloc(size, self.kernel.cpu)
            except VmError:
                addr = 0
            self._bind(handle, addr, size, op.line, op.site)
            return
        if not size:
            self.malloc.realloc(block[0], 0, self.kernel.cpu)
            del self.live[handle]
            self._dropped(block)
            self._forget(handle, op.line)
            return
        try:
            addr = self.malloc.realloc(block[0], size, self.kernel.cpu)
        except VmError:
            addr = 0
        if not addr:
            self.failed += 1
            return
        # the new block is the realloc's caller's: the old one leaves its site
        self._dropped(block)
        self.live[handle] = new = (addr, size, op.site)
        self._added(new)

    def op_mallocs(self, op: Any) -> None:
        """Many calls in one operation (mmsim.trace.mtrace.MallocCalls, the fast path of a
        replay): each record is applied as its own operation would be, settling the kernel
        after it (fill threads, reclaimer, hooks) and counting it as an event. The C loop
        (kernel/_mallocs_c.c) applies them if it is built; it hands the rest of the batch to
        the Python loop, its twin, at a record it does not take (a size beyond 2**50...)."""
        records = op.records
        k = self.kernel
        k.begin_batch()
        start = 0
        if _mallocs_c is not None and self._c_ready():
            start = _mallocs_c.run(self, records, _Call())
        if start < len(records):
            self._mallocs(records, start)
        k.end_batch(len(records))

    def _c_ready(self) -> bool:
        """The C loop may run: the allocator is the plain Malloc, whose methods it inlines.
        It takes large runs itself while free memory is at least ``_c_wait_below`` bytes, from
        which the reclaimer's wait_for_minimum_memory has no work (None: another wait)."""
        m = self.malloc
        wait = m.large.wait_for_minimum_memory
        self._c_wait_below = (
            0 if wait is None else MIN_EMERGENCY_POOL
            if (getattr(wait, "__func__", None) is Reclaimer.wait_for_minimum_memory
                and wait.__self__.ranges is m.large.ranges) else None)
        return (type(m) is Malloc and type(m.pool) is PagePool
                and type(self.live) is _mallocs_c.LiveBlocks
                and type(m.large) is LargeAllocator
                and type(self.sites) is AllocSites
                and getattr(self._malloc, "__func__", None) is _INLINED[0][2]
                and getattr(self._free, "__func__", None) is _INLINED[1][2]
                and all(getattr(cls, name) is fn for cls, name, fn in _INLINED))

    def _mallocs(self, records: Sequence[Any], start: int) -> None:  # noqa: C901 - one hot loop, kept flat
        """The pure-Python loop of :meth:`op_mallocs`, from record ``start`` on."""
        k = self.kernel
        live = self.live
        setdefault = live.setdefault
        pop = live.pop
        freed = self._freed
        malloc = self._malloc
        free = self._free
        realloc = self.malloc.realloc
        cpu = k.cpu
        sites = self.sites
        stats = sites.stats
        entry = sites.entry
        dirty = sites.dirty.add
        snapshot = sites.snapshot_live_peak
        call = _Call()
        batch_call = k.batch_call  # also settles the kernel after the call before
        # the counters live in locals during the loop and go back to self before anything
        # else may look at them (the general path, the end, an OOM; only the summary reads
        # them, never a kernel thread)
        live_bytes, peak, pending = self.live_bytes, self.live_bytes_peak, self.peak_pending
        nm = nf = nr = nb = nbytes = unattributed = 0
        store = self._store  # (a method, not a closure: the loop's counters stay fast locals)
        try:
            for i, (kind, line, handle, size, site) in enumerate(  # noqa: B007
                    islice(records, start, None), start):
                batch_call(i, line, kind)  # what a reclaim or OOM during the call reports
                if kind == "malloc":  # op_malloc, inlined
                    nm += 1
                    try:
                        addr = malloc(size, cpu)
                    except VmError:
                        addr = 0
                    if not addr:
                        self._fail(handle, line)
                        continue
                    block = (addr, size, site)
                    old = setdefault(handle, block)
                    if old is not block:  # the handle is bound again: its block leaks
                        self.leaked.append(old)
                        live[handle] = block
                    grown = live_bytes + size
                elif kind == "realloc" and size and handle in live:  # op_realloc, inlined
                    nr += 1
                    block = live[handle]
                    try:
                        addr = realloc(block[0], size, cpu)
                    except VmError:
                        addr = 0
                    if not addr:
                        self.failed += 1
                        continue
                    grown = live_bytes + size - block[1]
                    old_site = block[2]
                    if old_site is not None:  # the new block is the realloc's caller's
                        if pending and grown <= peak:  # before the old block leaves its site
                            snapshot()
                            pending = False
                        st = stats[old_site]
                        st[2] += 1
                        st[3] += block[1]
                        dirty(old_site)
                    live[handle] = (addr, size, site)
                else:
                    block = pop(handle, None) if kind == "free" else None
                    if block is not None:  # op_free, inlined
                        nf += 1
                        if pending:
                            snapshot()
                            pending = False
                        free(block[0], cpu)
                        live_bytes -= block[1]
                        site = block[2]
                        if site is not None:
                            st = stats[site]
                            st[2] += 1
                            st[3] += block[1]
                            dirty(site)
                        freed[handle] = line
                        if len(freed) >= _HALF:
                            self._freed_old = freed
                            self._freed = freed = _freed_handles()
                    else:  # a realloc or a bad free: the general path
                        store(live_bytes, peak, pending, nm, nf, nr, nb, nbytes, unattributed)
                        nm = nf = nr = nb = nbytes = unattributed = 0
                        call.kind, call.line, call.handle, call.size = kind, line, handle, size
                        call.site = site
                        self._handlers[kind](call)
                        freed = self._freed
                        live_bytes, peak = self.live_bytes, self.live_bytes_peak
                        pending = self.peak_pending
                    continue
                # a new block is live (a malloc's, or a realloc's): _added, inlined
                if grown > peak:
                    peak = grown
                    pending = True
                    self.heap_at_peak = self.malloc.heap_bytes
                elif pending:  # not a new peak (a block of 0 bytes, a smaller realloc)
                    snapshot()  # before its site counts it
                    pending = False
                live_bytes = grown
                nb += 1
                nbytes += size
                if site is not None:
                    st = stats.get(site) or entry(site)
                    st[0] += 1
                    st[1] += size
                    dirty(site)
                else:
                    unattributed += size
        except OutOfPages as e:
            store(live_bytes, peak, pending, nm, nf, nr, nb, nbytes, unattributed)
            nm = nf = nr = nb = nbytes = unattributed = 0
            k.batch_failed(e, kind, line, size)  # the OOM report names the call
        finally:
            store(live_bytes, peak, pending, nm, nf, nr, nb, nbytes, unattributed)

    # -- bookkeeping -----------------------------------------------------------------------
    def _store(self, live_bytes: int, peak: int, pending: bool, nm: int, nf: int, nr: int,
               nb: int, nbytes: int, unattributed: int) -> None:
        """The batch loop's counters back into the face (before anything else reads them)."""
        self.live_bytes, self.live_bytes_peak, self.peak_pending = live_bytes, peak, pending
        self.n_malloc += nm
        self.n_free += nf
        self.n_realloc += nr
        self.allocated_blocks += nb
        self.allocated_bytes += nbytes
        self.unattributed_bytes += unattributed

    def _bind(self, handle: str, addr: int, size: int, line: int, site: str | None) -> None:
        if not addr:
            self._fail(handle, line)
            return
        old = self.live.get(handle)
        if old is not None:
            self.leaked.append(old)
        self.live[handle] = block = (addr, size, site)
        self._added(block)

    def _added(self, block: Block) -> None:
        """A block became live (counted as allocated by its site)."""
        size, site = block[1], block[2]
        live = self.live_bytes + size
        if live > self.live_bytes_peak:
            self.live_bytes_peak = live
            self.heap_at_peak = self.malloc.heap_bytes
            self.peak_pending = True
        elif self.peak_pending:
            self.sites.snapshot_live_peak()  # as the peak was, before this block
            self.peak_pending = False
        self.live_bytes = live
        self.allocated_blocks += 1
        self.allocated_bytes += size
        if site is None:
            self.unattributed_bytes += size
            return
        st = self.sites.entry(site)
        st[0] += 1
        st[1] += size
        self.sites.dirty.add(site)

    def _dropped(self, block: Block) -> None:
        """A block stopped being live (freed, or replaced by a realloc's new block)."""
        if self.peak_pending:
            self.sites.snapshot_live_peak()  # as the peak was, before this change
            self.peak_pending = False
        self.live_bytes -= block[1]
        site = block[2]
        if site is not None:
            st = self.sites.stats[site]
            st[2] += 1
            st[3] += block[1]
            self.sites.dirty.add(site)

    def _forget(self, handle: str, line: int) -> None:
        freed = self._freed
        freed[handle] = line
        if len(freed) >= _HALF:
            self._freed_old = freed
            self._freed = _freed_handles()

    def _fail(self, handle: str, line: int) -> None:
        """A call that binds ``handle`` returned NULL here (the application's did not)."""
        self.failed += 1
        failed = self._failed
        if len(failed) >= QUARANTINE:  # remembered as freed handles are: memory stays bounded
            failed.clear()
        failed[handle] = line

    def _bad_free(self, op: Any, freed_kind: str, unknown_kind: str) -> None:
        handle = op.handle
        line = self._freed.get(handle, self._freed_old.get(handle))
        failed = self._failed.get(handle)
        if failed is not None and (line is None or failed > line):
            # the block the application got where our guest returned NULL: not its bug
            del self._failed[handle]
            if freed_kind == "double_free":
                self.frees_of_failed += 1
            return
        if line is not None:
            what = "free" if freed_kind == "double_free" else "realloc"
            self.kernel.errors.report(freed_kind, op.line, op.kind,
                                      f"{what} of '{handle}', already freed at line {line}")
        elif unknown_kind:
            self.kernel.errors.report(unknown_kind, op.line, op.kind,
                                      f"free of '{handle}', which was never allocated")
        else:
            return
        self.invalid_frees += 1

    # -- results ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The ``malloc`` section; docs/mtrace.md describes its keys."""
        m = self.malloc
        classes: dict[str, dict[str, int]] = {
            name: {"blocks": 0, "requested_bytes": 0, "usable_bytes": 0, "memory_bytes": 0}
            for name in [*_CLASS_NAMES, "early", "page", "large", "mapped"]}
        for addr, size, _site in [*self.live.values(), *self.leaked]:
            c = classes[m.kind_of(addr)]
            c["blocks"] += 1
            c["requested_bytes"] += size
            c["usable_bytes"] += m.usable_size(addr)
        for size, pages in m.pool_pages_by_class().items():
            classes[str(size)]["memory_bytes"] = pages * PAGE_SIZE
        classes["early"]["memory_bytes"] = m.early.npages * PAGE_SIZE
        classes["page"]["memory_bytes"] = m.whole_pages * PAGE_SIZE
        classes["large"]["memory_bytes"] = m.large.run_pages * PAGE_SIZE
        classes["mapped"]["memory_bytes"] = m.large.mapped_bytes
        requested = sum(c["requested_bytes"] for c in classes.values())
        usable = sum(c["usable_bytes"] for c in classes.values())
        peak = self.live_bytes_peak
        return {
            "calls": {"malloc": self.n_malloc, "calloc": self.n_calloc,
                      "memalign": self.n_memalign, "realloc": self.n_realloc,
                      "free": self.n_free},
            "failed_calls": self.failed,
            "frees_of_failed": self.frees_of_failed,
            "invalid_frees": self.invalid_frees,
            "live_blocks": len(self.live) + len(self.leaked),
            "live_bytes": self.live_bytes,
            "live_bytes_peak": peak,
            "usable_bytes": usable,
            "internal_fragmentation_bytes": usable - requested,
            "heap_bytes": m.heap_bytes,
            "heap_bytes_peak": m.heap_bytes_peak,
            "heap_bytes_at_live_peak": self.heap_at_peak,
            "peak_utilization": round(peak / self.heap_at_peak, 6) if self.heap_at_peak else None,
            "cross_cpu_frees": m.cross_cpu_frees,
            "cross_cpu_pending": m.pending_cross_cpu(),
            "pool_pages_returned": m.pool_pages_returned,
            "classes": classes,
            "allocated_blocks": self.allocated_blocks,
            "allocated_bytes": self.allocated_bytes,
            "sites": self.sites_summary(),
            "functions": self.sites.by_function(),
        }

    def folded(self) -> list[tuple[str, int]]:
        """Bytes allocated per site as folded stacks (see AllocSites.folded)."""
        return self.sites.folded(self.unattributed_bytes)

    def sites_summary(self) -> dict[str, list[dict[str, Any]]]:
        """``malloc.sites``: the top call sites at the live peak, at the end, and over the run."""
        if self.peak_pending:  # nothing lowered the peak since: it is the state now
            self.sites.snapshot_live_peak()
            self.peak_pending = False
        return self.sites.summary()


def attach(kernel: Kernel, space: AddressSpace, registry: ShrinkerRegistry,
           reclaimer: Reclaimer) -> MallocFace:
    """Register malloc's handlers, its three memory categories and the ``malloc`` section."""
    face = MallocFace(kernel, space, reclaimer)
    for kind in ("malloc", "calloc", "memalign", "realloc", "free", "mallocs"):
        kernel.add_handler(kind, getattr(face, f"op_{kind}"), memory_only=True)
    m = face.malloc
    kernel.add_category("malloc_pools", lambda: m.pool_pages * PAGE_SIZE)
    kernel.add_category("malloc_pages", lambda: m.whole_pages * PAGE_SIZE)
    kernel.add_category("malloc_large", lambda: m.large_pages * PAGE_SIZE)
    kernel.add_section("malloc", face.summary)
    kernel.add_peak_view("sites", face.sites.snapshot_use_peak,
                         lambda: face.sites.at_use_peak(PEAK_SITES))
    if "malloc_pools" in extra_shrinkers(kernel.config.extra):
        registry.register(PoolShrinker(m))  # not OSv's: only when asked for
    return face


class _Call:
    """One record of a batch, seen by the general handlers as the Op it stands for."""

    __slots__ = ("handle", "kind", "line", "site", "size")
    cpu = None

    def __init__(self) -> None:
        self.kind = self.handle = ""
        self.line = self.size = 0
        self.site: str | None = None


class PoolShrinker:
    """Gives the pools' cached empty pages back (``extra_shrinkers: [malloc_pools]``; OSv keeps
    about one per class per CPU and has no shrinker for them)."""

    name = "malloc_pools"

    def __init__(self, malloc: Any) -> None:
        self.malloc = malloc

    def request_memory(self, target: int, hard: bool) -> int:
        return self.malloc.release_empty_pages() * PAGE_SIZE
