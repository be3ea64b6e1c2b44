"""The simulated kernel: boots the memory subsystem and applies trace operations to it.

Subsystems plug in through three narrow hooks: operation handlers (the syscall face a trace
drives), memory categories (bytes each subsystem holds, for the conservation check and the
summary) and summary sections. The kernel wires them; they never reach into each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from mmsim.fs.zfs_arc.fs import ZfsFileSystem
from mmsim.kernel.app_errors import AppErrors
from mmsim.kernel.boot import PhysicalMemory, boot_memory
from mmsim.kernel.config import KernelConfig
from mmsim.kernel.footprint import kernel_parts
from mmsim.kernel.operations import OPERATIONS, subsystem_of
from mmsim.kernel.subsystems import Subsystems, build
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages

if TYPE_CHECKING:  # the subsystems' types
    from mmsim.drivers.virtio_balloon import VirtioBalloon
    from mmsim.fs.rofs import RofsFileSystem
    from mmsim.kernel.sys_jvm import JvmSubsystem
    from mmsim.kernel.sys_malloc import MallocFace
    from mmsim.kernel.sys_mman import Mman
    from mmsim.mm.address_space import AddressSpace
    from mmsim.shrinker import Reclaimer, ShrinkerRegistry


class OpLike(Protocol):
    """What the kernel reads of a trace operation (see the front's trace readers)."""

    kind: str
    line: int
    handle: str | None
    time_ns: int | None
    cpu: int | None


class UnsupportedOperation(Exception):
    """A trace operation of a subsystem this build does not have (yet)."""


class TraceFault(Exception):
    """An operation the trace got wrong in a way no application could (e.g. a CPU that
    does not exist, an unknown handle where the format requires a known one)."""


class OutOfMemory(Exception):
    """The simulated machine ran out of memory; ``report`` is the summary's ``oom`` section."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report.get("reason", "out of memory"))
        self.report = report


Handler = Callable[[Any], None]


class Kernel:
    """One booted OSv guest."""

    # The subsystems, built in OSv's boot order by kernel/subsystems.py; ``zfs`` is None on a
    # ROFS root
    shrinkers: ShrinkerRegistry
    reclaimer: Reclaimer
    mman: Mman
    address_space: AddressSpace
    malloc: MallocFace
    files: ZfsFileSystem | RofsFileSystem
    zfs: ZfsFileSystem | None
    jvm: JvmSubsystem
    virtio_balloon: VirtioBalloon

    def __init__(self, config: KernelConfig) -> None:
        self.config = config
        self.mem: PhysicalMemory = boot_memory(config)
        self.pool = self.mem.pool
        self.ranges = self.mem.ranges
        self.page_tables = self.mem.page_tables
        self.clock_ns = 0
        self.cpu = 0
        self.events = 0
        self.line = 0
        self.errors = AppErrors()
        #: the out-of-memory report once the guest has run out (during boot, or a call)
        self.oom: dict[str, Any] | None = None
        self._handlers: dict[str, Handler] = {"cpu": self._op_cpu, "sleep": self._op_sleep}
        self._categories: dict[str, Callable[[], int]] = {
            "page_tables": lambda: self.page_tables.table_pages * PAGE_SIZE,
            "l1_cache": lambda: self.pool.l1_pages * PAGE_SIZE,
            "l2_cache": lambda: self.pool.l2_pages * PAGE_SIZE,
        }
        self._reserved: dict[str, int] = {}  # boot-time memory by category, in pages
        self._sections: dict[str, Callable[[], Any]] = {}
        self._after_op: list[Callable[[], None]] = []
        self._after_op_memory: list[Callable[[], None]] = []  # those memory alone may give work
        self._memory_ops: set[str] = set()  # operations that touch nothing but memory
        self._due: list[Callable[[], int | None]] = []
        self._skips: list[Callable[[int], None]] = []
        self._hooks_clock = -1  # the clock and free pages when the hooks last ran
        self._hooks_free = -1
        self._wakeups = False
        # something may have given a thread work since the threads last ran (a reclaim pass,
        # a reclaimer wake, an operation after which they did not run): after a memory
        # operation, all of them run, not only those that watch memory
        self._armed = True
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._batch_base = 0  # the events before the batch being applied
        self._observers: list[Callable[[Kernel], object]] = []
        self.op_kind = "boot"  # the kind of the call being applied (a batch's: its record's)
        #: massif's peak snapshot: memory by category when used memory last reached a new peak
        self.peak: dict[str, Any] = {}
        self._peak_pages = -1
        self._peak_hooks: list[Callable[[], None]] = []
        self._peak_views: dict[str, Callable[[], Any]] = {}
        if self.mem.failure is not None:
            self._boot_failed(self.mem.failure, self.mem.failure_bytes)
        top = max(e.end for e in self.mem.e820 if e.type == 1)
        for part in kernel_parts(config, top):  # before SMP, straight from the runs
            self.reserve(part.category, part.nbytes)
        self.pool.start_smp()
        self._install(build(self))  # the wiring lives in one place
        self._snapshot_peak()  # what boot left used: the first peak

    def _install(self, parts: Subsystems) -> None:
        self.shrinkers = parts.shrinkers
        self.reclaimer = parts.reclaimer
        self.mman = parts.mman
        self.address_space = parts.mman.space
        self.malloc = parts.malloc
        self.files = parts.files
        self.zfs = parts.files if isinstance(parts.files, ZfsFileSystem) else None
        self.jvm = parts.jvm
        self.virtio_balloon = parts.virtio_balloon

    # -- wiring for subsystems ----------------------------------------------------------
    def add_handler(self, kind: str, handler: Handler, memory_only: bool = False) -> None:
        """The handler of operation ``kind``, one of kernel/operations.py's table.

        ``memory_only``: the operation allocates and frees memory and reaches no other
        subsystem but through memory pressure (malloc's calls), whose reclaimer wakes and
        passes :meth:`arm_threads`. After it, a thread registered with ``memory=False`` runs
        only if the clock moved or something woke or armed the threads."""
        if kind not in OPERATIONS:
            raise ValueError(f"'{kind}' is not an operation of kernel/operations.py")
        self._handlers[kind] = handler
        if memory_only:
            self._memory_ops.add(kind)
        else:
            self._memory_ops.discard(kind)

    def has_handler(self, kind: str) -> bool:
        """True if some subsystem already handles ``kind`` (so another can stand back)."""
        return kind in self._handlers

    def add_category(self, name: str, bytes_fn: Callable[[], int]) -> None:
        self._categories[name] = bytes_fn

    def reserve(self, category: str, nbytes: int) -> None:
        """Boot-time memory held for good under ``category`` (the kernel's and its file
        systems' own allocations as they start). Whole pages from the runs, any pages; if the
        runs cannot give them the guest fails to boot (the ``oom`` report; every operation
        then raises :class:`OutOfMemory`), and the rest of boot still wires itself up."""
        if category not in self._reserved:
            self._reserved[category] = 0
            self._categories[category] = lambda: self._reserved[category] * PAGE_SIZE
        npages = -(-nbytes // PAGE_SIZE)
        if self.oom is not None or npages <= 0:
            return
        if self.ranges.free_pages < npages:
            self._boot_failed(f"boot: no memory for {category} ({nbytes} bytes)", nbytes)
            return
        self.ranges.alloc_pages_bulk(npages)
        self._reserved[category] += npages

    def _boot_failed(self, reason: str, nbytes: int) -> None:
        """OSv aborts when boot runs out of memory: the run's out-of-memory report, line 0."""
        self.oom = {
            "reason": reason,
            "requested_bytes": nbytes,
            "chunk_bytes": nbytes,
            "free_bytes": self.ranges.free_pages * PAGE_SIZE,
            "largest_free_run_bytes": self.ranges.largest_run() * PAGE_SIZE,
            "line": 0,
            "op": "boot",
            "time_ns": 0,
            "shrinkers_last_yield_bytes": {},
            "consumers": dict(sorted(self.memory_categories().items(),
                                     key=lambda kv: -kv[1])[:5]),
        }

    def add_peak_view(self, name: str, on_peak: Callable[[], None],
                      view: Callable[[], Any]) -> None:
        """``on_peak()`` is called whenever used memory reaches a new peak (after the call that
        raised it); ``view()`` gives the summary's ``peak.<name>`` as it was then."""
        self._peak_hooks.append(on_peak)
        self._peak_views[name] = view

    def _snapshot_peak(self) -> None:
        """Used memory reached a new peak during the call just applied: its categories now."""
        self._peak_pages = self.ranges.peak_used_pages
        cats = self.memory_categories()
        self.peak = {
            "used_bytes": sum(cats.values()),
            "time_ns": self.clock_ns,
            "event": self.events,
            "line": self.line,
            "op": self.op_kind,
            "categories": cats,
        }
        for hook in self._peak_hooks:
            hook()

    def peak_section(self) -> dict[str, Any]:
        """The summary's ``peak``: when used memory peaked, by what, and what held it."""
        return {**self.peak, "peak_used_bytes": self._peak_pages * PAGE_SIZE,
                **{name: view() for name, view in self._peak_views.items()}}

    def add_section(self, name: str, fn: Callable[[], Any]) -> None:
        self._sections[name] = fn

    def section(self, name: str) -> Any:
        """One section of :meth:`summary` (None if no subsystem adds it): cheaper than the
        whole summary for whoever looks after every operation."""
        fn = self._sections.get(name)
        return fn() if fn is not None else None

    def add_after_op(self, fn: Callable[[], None],
                     due: Callable[[], int | None] | None = None,
                     skip: Callable[[int], None] | None = None, memory: bool = True) -> None:
        """Deferred work (kernel threads) run after each operation that moved the clock or free
        memory or woke the threads, in registration order.

        ``memory=False``: free memory moving alone gives ``fn`` no work, whatever reclaim
        does being reported by :meth:`arm_threads` (the reclaimer's wakes and passes). After a
        memory-only operation (:meth:`add_handler`) that armed nothing, it does not run.

        ``due`` tells when the thread next wants to run (simulated ns, or None: not until an
        operation gives it work): while time passes (:meth:`advance_to`) the clock stops
        there, and jumps over the rest. ``skip(t)`` is told when the clock jumped to ``t``
        with the thread idle, so that a periodic thread keeps its grid (its passes meanwhile
        were no-ops). A thread whose work depends on time alone must have a ``due``."""
        self._after_op.append(fn)
        if memory:
            self._after_op_memory.append(fn)
        if due is not None:
            self._due.append(due)
        if skip is not None:
            self._skips.append(skip)

    def subscribe(self, fn: Callable[[str, dict[str, Any]], None]) -> None:
        """Be told of kernel events (pressure passes, shrinker yields, OOM, balloon moves)."""
        self._listeners.append(fn)

    def emit(self, name: str, **fields: Any) -> None:
        """Tell subscribers that ``name`` happened now; cheap when nobody listens."""
        if self._listeners:
            record = {"time_ns": self.clock_ns, "event": self.events, "line": self.line, **fields}
            for fn in self._listeners:
                fn(name, record)

    # -- the face traces drive -----------------------------------------------------------
    def apply(self, op: OpLike) -> None:
        """Apply one trace operation; application errors are counted, not raised."""
        if self.oom is not None:  # the guest is down: nothing runs any more
            raise OutOfMemory(self.oom)
        self.line = op.line
        self.op_kind = op.kind
        t = op.time_ns
        if t is not None and t > self.clock_ns:
            self.advance_to(t)
        handler = self._handlers.get(op.kind)
        if handler is None:
            raise UnsupportedOperation(
                f"'{op.kind}' needs {subsystem_of(op.kind)}, which this guest does not have")
        if op.cpu is None:
            try:
                handler(op)
            except OutOfPages as e:
                self._out_of_memory(e, op)
        else:
            self._apply_on_cpu(op, handler)
        self.events += 1
        self.settle(op.kind in self._memory_ops)
        if self._observers:
            for observe in self._observers:
                observe(self)

    def add_observer(self, observe: Callable[[Kernel], object]) -> None:
        """Call ``observe(kernel)`` after every operation is applied and settled (a batch once:
        replay the expanded operations to observe each call, as mmsim.api does)."""
        self._observers.append(observe)

    def settle(self, memory_only: bool = False) -> None:
        """What follows every operation: the fill threads if woken, the kernel threads and
        after-op hooks if the clock or free memory moved (after a ``memory_only`` one that
        armed nothing, only the threads that watch memory). A handler that applies many calls
        in one operation (a batch) calls it after each call it stands for."""
        pool = self.pool
        try:
            if pool.woken:
                pool.run_fill_threads()
            moved = self.ranges.free_pages != self._hooks_free
            if (self.clock_ns != self._hooks_clock or self._wakeups
                    or moved and (self._armed or not memory_only)):
                self._run_hooks()
            elif moved:
                self._run_memory_hooks()
            elif not memory_only:
                self._armed = True  # the operation may have given a thread work
        except OutOfPages as e:  # a kernel thread could not be served: OSv aborts there too
            self._out_of_memory(e, _ThreadOp(self.line))

    def _apply_on_cpu(self, op: OpLike, handler: Handler) -> None:
        """An operation with a ``cpu=N`` prefix runs there; the current CPU stays as it was."""
        self._check_cpu(op.cpu)
        cpu, self.cpu = self.cpu, op.cpu
        try:
            handler(op)
        except OutOfPages as e:
            self._out_of_memory(e, op)
        finally:
            self.cpu = cpu

    # -- batches: one operation standing for many calls (kernel/operations.py) -----------
    def begin_batch(self) -> None:
        """A batch's handler starts: its calls are counted from the kernel's events now."""
        self._batch_base = self.events

    def batch_call(self, index: int, line: int, kind: str) -> None:
        """Call ``index`` (from 0) of the batch starts, at the trace's ``line``. First what
        follows every operation, for the call before it (the fill threads, the kernel threads,
        the hooks) if anything moved, as after an operation of its own; then the event and
        line that a reclaim or an out-of-memory during this call reports."""
        if self.pool.woken or self.ranges.free_pages != self._hooks_free or self._wakeups:
            self.events = self._batch_base + index
            self.settle(kind in self._memory_ops)
        self.events = self._batch_base + index
        self.line = line
        self.op_kind = kind

    def end_batch(self, calls: int) -> None:
        """The batch applied ``calls`` calls, each an event (apply counts the last one)."""
        self.events = self._batch_base + calls - 1

    def batch_failed(self, e: OutOfPages, kind: str, line: int, size: int) -> NoReturn:
        """A call of the batch found no memory: the guest's out-of-memory, naming that call."""
        self._out_of_memory(e, _CallOp(kind, line, size))

    def arm_threads(self) -> None:
        """Something may have given a thread that does not watch memory work (a reclaim pass
        ran, the reclaimer was woken): they all run after the operation if memory moved."""
        self._armed = True

    def wake_threads(self) -> None:
        """Make the kernel threads run after this operation even if neither the clock nor free
        memory moved (they are skipped otherwise: most operations of a long trace move neither)."""
        self._wakeups = True

    def run(self, ops: Iterable[OpLike], progress: Callable[[int], None] | None = None) -> None:
        """Apply every operation; ``progress`` is called with the count every 4096 operations.
        Raises :class:`OutOfMemory` at once if the guest did not boot."""
        if self.oom is not None:
            raise OutOfMemory(self.oom)
        for n, op in enumerate(ops, 1):
            self.apply(op)
            if progress is not None and not n & 4095:
                progress(4096)

    def _check_cpu(self, cpu: int) -> None:
        if not 0 <= cpu < self.config.cpus:
            raise TraceFault(f"cpu {cpu} does not exist (the guest has {self.config.cpus})")

    def _op_cpu(self, op: Any) -> None:
        self._check_cpu(op.count)
        self.cpu = op.count

    def _op_sleep(self, op: Any) -> None:
        self.advance_to(self.clock_ns + op.duration_ns)

    def advance_to(self, t_ns: int) -> None:
        """Let simulated time pass: kernel threads run at each time a thread asked for (its
        wake latency, its period), all in registration order, so a long sleep sees the
        balloon's polls, the ARC's reclaim and the reclaimer interleave. Time jumps over
        periods where no thread has work, so a sleep costs its events, not its length."""
        while self.clock_ns < t_ns:
            now = self.clock_ns
            nxt = t_ns
            for due in self._due:
                d = due()
                if d is not None and now < d < nxt:
                    nxt = d
            self.clock_ns = nxt
            for skip in self._skips:
                skip(nxt)
            if nxt < t_ns:
                try:
                    self._run_threads()
                except OutOfPages as e:
                    self._out_of_memory(e, _ThreadOp(self.line))

    def _run_threads(self) -> None:
        self.pool.run_fill_threads()
        self._run_hooks()

    def _run_hooks(self) -> None:
        self._wakeups = self._armed = False
        for fn in self._after_op:
            fn()
        self._hooks_clock = self.clock_ns
        self._hooks_free = self.ranges.free_pages
        if self.ranges.peak_used_pages > self._peak_pages:
            self._snapshot_peak()

    def _run_memory_hooks(self) -> None:
        """_run_hooks after a memory-only operation that armed nothing: the others are idle."""
        for fn in self._after_op_memory:
            fn()
        self._hooks_free = self.ranges.free_pages
        if self.ranges.peak_used_pages > self._peak_pages:
            self._snapshot_peak()

    def _out_of_memory(self, e: OutOfPages, op: OpLike) -> NoReturn:
        shrinkers = self.shrinkers
        chunk = int(e.args[0]) if e.args else PAGE_SIZE
        free, largest = _at_failure(e)
        self.oom = {
            "reason": getattr(e, "reason", "no free run fits the request"),
            "requested_bytes": _requested_bytes(op, chunk),
            "chunk_bytes": chunk,
            "free_bytes": self.ranges.free_pages * PAGE_SIZE if free is None else free,
            "largest_free_run_bytes": (self.ranges.largest_run() * PAGE_SIZE
                                       if largest is None else largest),
            "line": op.line,
            "op": op.kind,
            "time_ns": self.clock_ns,
            "shrinkers_last_yield_bytes": {
                name: st["last_yield_bytes"] for name, st in shrinkers.summary().items()
            } if shrinkers is not None else {},
            "consumers": dict(sorted(self.memory_categories().items(),
                                     key=lambda kv: -kv[1])[:5]),
        }
        self.emit("oom", requested_bytes=self.oom["requested_bytes"], reason=self.oom["reason"])
        raise OutOfMemory(self.oom)

    # -- statistics ----------------------------------------------------------------------
    def memory_categories(self) -> dict[str, int]:
        """Bytes used, by category; with free memory they add up to total."""
        return {name: fn() for name, fn in self._categories.items()}

    def check(self) -> None:
        """Conservation: free + every category == total; raises AssertionError if not."""
        self.ranges.check()
        used = sum(self.memory_categories().values())
        free = self.ranges.free_pages * PAGE_SIZE
        total = self.ranges.total_pages * PAGE_SIZE
        assert free + used == total, f"free {free} + used {used} != total {total}"

    def summary(self) -> dict[str, Any]:
        """The run's results; its keys are documented in docs/summary.md."""
        total = self.ranges.total_pages * PAGE_SIZE
        free = self.ranges.free_pages * PAGE_SIZE
        cats = self.memory_categories()
        out: dict[str, Any] = {
            "events": self.events,
            "time_ns": self.clock_ns,
            "config": {
                "memory_bytes": self.config.memory,
                "ram_bytes": self.mem.phys_mem_size,
                "cpus": self.config.cpus,
                "hugepages": self.config.hugepages,
                "giant_pages": self.config.giant_pages,
                "seed": self.config.seed,
            },
            "memory": {
                "total_bytes": total,
                "free_bytes": free,
                "used_bytes": total - free,
                "peak_used_bytes": self.ranges.peak_used_pages * PAGE_SIZE,
                "page_table_bytes": cats["page_tables"],
                "kernel_image_bytes": self.mem.kernel_end - 0x200000,
                "free_runs": self.ranges.nr_runs,
                "largest_free_run_bytes": self.ranges.largest_run() * PAGE_SIZE,
                "categories": cats,
            },
            "peak": self.peak_section(),
            "app_errors": self.errors.summary(),
            "oom": self.oom,
        }
        for name, fn in self._sections.items():
            out[name] = fn()
        return out

    # -- memory at a glance, for samplers (cheap, unlike summary()) ------------------------
    @property
    def total_bytes(self) -> int:
        """Memory given to the page allocator at boot (the summary's ``memory.total_bytes``)."""
        return self.ranges.total_pages * PAGE_SIZE

    @property
    def free_bytes(self) -> int:
        """Memory free in the page allocator now (the summary's ``memory.free_bytes``)."""
        return self.ranges.free_pages * PAGE_SIZE


class _CallOp:
    """One call of a batch, as the out-of-memory report reads it."""

    count = 0

    def __init__(self, kind: str, line: int, size: int) -> None:
        self.kind, self.line, self.size = kind, line, size
        self.length = size


class _ThreadOp:
    """What the out-of-memory report names when a kernel thread (a page-cache fill thread,
    the balloon's poll, ...) ran out of memory after the trace's operation ``line``."""

    kind = "kernel thread"
    size = 0

    def __init__(self, line: int) -> None:
        self.line = line


def _requested_bytes(op: Any, chunk: int) -> int:
    """What the operation asked for (the failing allocation may be one chunk of it)."""
    size = getattr(op, "size", 0) or 0
    if op.kind == "calloc":
        size *= getattr(op, "count", 0) or 0
    if not size:
        size = getattr(op, "length", None) or 0
    return size if isinstance(size, int) and size > 0 else chunk


def _at_failure(e: BaseException) -> tuple[int | None, int | None]:
    """Free bytes and the largest free run when the allocation failed, before any give-back:
    from the error, or from the error it was raised while handling (a re-raise)."""
    seen: BaseException | None = e
    while seen is not None:
        free = getattr(seen, "free_bytes", None)
        if free is not None:
            return free, getattr(seen, "largest_free_run_bytes", None)
        seen = seen.__cause__ or seen.__context__
    return None, None
