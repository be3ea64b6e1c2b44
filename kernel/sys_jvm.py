"""Wires a real JVM (balloon/) into the kernel: its memory in the guest, the JVM balloon (driven
by the reserve rule and its releases, not a shrinker), and the `balloon` and `jvm` sections.

Attached at boot, dormant until an image launches a JVM (:meth:`JvmSubsystem.launch`). From
then on every change the JVM makes to guest memory is a kernel operation (kind ``jvm``), applied
by :meth:`JvmSubsystem.tick` on the simulator's thread: the GC listener runs on the JVM's
notification thread and only queues, so the simulated kernel is never touched concurrently.
Out of guest memory while the JVM commits heap is the kernel's out-of-memory, like any other.

Configuration keys: ``jvm_balloon`` (``auto`` by default: OSv's 2014 rule, a balloon only when
java.cc sized the heap itself, see :mod:`balloon.heap_sizing`; ``true`` gives a user-sized heap
one too, beyond OSv; ``false`` never), ``jvm_path`` (a libjvm.so or JDK directory; default: the
JDK of ``javac``),
``jvm_balloon_wake_latency`` (simulated delay between a balloon request and the balloon
thread's inflation; 0 by default: the next tick), ``jvm_alloc_rate`` (how many bytes the
application allocates per simulated second: simulated time while a JVM app runs is
:class:`AppClock`, driven by the app's own allocations, not the host's wall clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmsim.balloon.balloon import MIN_RAM, JvmBalloon
from mmsim.balloon.heap import JavaHeap, TrackedMapping
from mmsim.balloon.heap_sizing import HeapSizing, size_heap
from mmsim.balloon.jvm import HostJvm, JvmError, start_jvm
from mmsim.kernel.boot import BootError
from mmsim.kernel.units import parse_duration, parse_size
from mmsim.mm.constants import PAGE_SIZE, WATERMARK_LO_PERCENT
from mmsim.mm.vma import ANON

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.mm.address_space import AddressSpace

__all__ = ["AppClock", "JvmOp", "JvmSubsystem", "attach"]



def jvm_settings(extra: dict[str, Any]) -> tuple[bool | None, str | None, int]:
    """``jvm_balloon`` (None for ``auto``), ``jvm_path`` and ``jvm_balloon_wake_latency`` (ns)
    from ``config.extra``; ValueError names the bad key."""
    enabled = extra.get("jvm_balloon", "auto")
    if enabled == "auto":
        enabled = None
    elif not isinstance(enabled, bool):
        raise ValueError(f"'jvm_balloon' must be auto, true or false, not {enabled!r}")
    path = extra.get("jvm_path")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"'jvm_path' must be a path, not {path!r}")
    try:
        latency = parse_duration(extra.get("jvm_balloon_wake_latency", 0))
    except ValueError as e:
        raise ValueError(f"'jvm_balloon_wake_latency': {e}") from None
    return enabled, path, latency



DEFAULT_ALLOC_RATE = 1 << 30  # bytes per simulated second


def alloc_rate(extra: dict[str, Any]) -> int:
    """``jvm_alloc_rate`` (bytes per simulated second) from ``config.extra``."""
    value = extra.get("jvm_alloc_rate", DEFAULT_ALLOC_RATE)
    try:
        rate = parse_size(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"'jvm_alloc_rate': {e}") from None
    if rate <= 0:
        raise ValueError(f"'jvm_alloc_rate' must be a positive size per second, not {value!r}")
    return rate




class AppClock:
    """Simulated time while a JVM application runs: the kernel's clock when it started plus
    the bytes its threads allocated since, at ``rate`` bytes per simulated second.

    The application's allocations are its progress, the same in every run of the same
    program whatever the host's load; the wall clock is not. An application that sleeps or
    waits allocates nothing: its time stands still. The side workload may run while the
    kernel's clock is at or behind this time (:meth:`lets`), or freely once the application
    has finished or is blocked for good (:attr:`free`).
    """

    def __init__(self, t0_ns: int = 0, rate: int = DEFAULT_ALLOC_RATE, bytes0: int = 0) -> None:
        if rate <= 0:
            raise ValueError("the allocation rate must be positive")
        self.t0_ns, self.rate, self.bytes0 = t0_ns, rate, bytes0
        self.allocated = 0  # bytes since t0
        self.free = False

    def restart(self, t0_ns: int, bytes0: int) -> None:
        """Count from now: the kernel's clock ``t0_ns``, the app's ``bytes0`` allocated so far."""
        self.t0_ns, self.bytes0, self.allocated = t0_ns, bytes0, 0

    def update(self, allocated_bytes: int) -> int:
        """The app's allocated bytes now (never taken back); its simulated time."""
        self.allocated = max(self.allocated, allocated_bytes - self.bytes0)
        return self.now_ns

    @property
    def now_ns(self) -> int:
        return self.t0_ns + self.allocated * 1_000_000_000 // self.rate

    def lets(self, clock_ns: int) -> bool:
        """May the side workload's next operation run with the kernel's clock at ``clock_ns``?"""
        return self.free or clock_ns <= self.now_ns


NATIVE_SPAN = 8 << 30  # virtual room for the JVM's native memory (metaspace, code, threads)
NATIVE_PERIOD_NS = 250_000_000  # how often (simulated) native memory tracking is read
#: native memory tracking's own bookkeeping: the guest would not run with it
_NMT_SELF = "Native Memory Tracking"


@dataclass
class JvmOp:
    """A kernel operation standing for something the JVM did to guest memory."""

    action: str
    kind: str = "jvm"
    line: int = 0
    handle: str | None = None
    time_ns: int | None = None
    cpu: int | None = None
    args: dict[str, Any] = field(default_factory=dict)


class JvmSubsystem:
    """The guest's view of the hosted JVM: heap and native mappings, balloon, GC statistics."""

    def __init__(self, kernel: Kernel, space: AddressSpace) -> None:
        self.kernel = kernel
        self._space = space
        try:
            self.balloon_wanted, self.jvm_path, self.balloon_latency_ns = jvm_settings(
                kernel.config.extra)
        except ValueError as e:
            raise BootError(str(e)) from None
        self.host: HostJvm | None = None
        self.sizing: HeapSizing | None = None
        self.heap: JavaHeap | None = None
        self.native: TrackedMapping | None = None
        self.balloon: JvmBalloon | None = None
        self.exit_code: int | None = None
        self._gc0 = (0, 0)
        self.host_gcs = 0
        self.host_gc_ms = 0
        self.gc_events = 0
        try:
            rate = alloc_rate(kernel.config.extra)
        except ValueError as e:
            raise BootError(str(e)) from None
        self.clock = AppClock(kernel.clock_ns, rate)  # simulated time while the app runs
        self._native_at: int | None = None
        self._frozen: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.native_target = 0
        self._asked_ns: int | None = None  # when the pending balloon request was made
        #: heap bytes the JVM has touched: OSv faults the heap's pages in on first write, so
        #: committed but never used heap (java.cc's -Xms = all free memory) is not resident
        self.touched = 0
        self.pretouch = False

    # -- launching ---------------------------------------------------------------------------
    def launch(self, options: list[str], classpath: list[str] | None = None) -> HostJvm:
        """Start (or reuse) the process's JVM and give it its memory in this guest; without
        -Xmx, java.cc sizes the heap (and only then is there a balloon, unless
        ``jvm_balloon`` says otherwise)."""
        k = self.kernel
        total = k.ranges.total_pages * PAGE_SIZE
        self.sizing = sizing = size_heap(
            options, k.mem.phys_mem_size, k.ranges.free_pages * PAGE_SIZE,
            total - total * WATERMARK_LO_PERCENT // 100, MIN_RAM)
        try:
            host = start_jvm(sizing.options, self.jvm_path, classpath or [])
        except JvmError as e:
            raise BootError(str(e)) from None
        self.host = host
        host.poll_gc()  # collections of earlier images in this process are not ours
        self._gc0 = host.gc_totals()
        host.track_app_threads()  # threads alive now (this one included) are not the app's
        self.clock.restart(self.kernel.clock_ns, 0)
        space = self._space
        self.heap = JavaHeap(space, host.max_heap_bytes, host.heap_range)
        self.touched = 0
        self.pretouch = "-XX:+AlwaysPreTouch" in host.options
        self.native = TrackedMapping(space, NATIVE_SPAN, ("jvm", "native"))
        wanted = sizing.osv_sized if self.balloon_wanted is None else self.balloon_wanted
        enabled = wanted and k.mem.phys_mem_size >= MIN_RAM
        fs = k.zfs
        reclaimer = k.reclaimer
        self.balloon = JvmBalloon(
            host, self.heap, k.ranges, enabled=enabled,
            arc_shrink=fs.sized_adjust if fs is not None else None,
            emit=k.emit,
            wake_reclaimer=reclaimer.wake if reclaimer is not None else lambda: None,
        )
        if enabled:
            k.add_after_op(self.after_op)  # only now: a replay without a JVM pays nothing
            # not a shrinker (OSv's since 3c716bda): the reserve rule and the releases alone
            if reclaimer is not None:
                reclaimer.jvm_heap_bytes = self.balloon.jvm_heap_bytes  # §5: free + JVM heap
                reclaimer.on_pass.append(self.balloon.end_of_pass)
        self._apply("native")
        self._apply("heap")
        return host

    # -- operations ----------------------------------------------------------------------------
    def _apply(self, action: str, **args: Any) -> None:
        """A JVM operation, stamped with the app's simulated time (:class:`AppClock`)."""
        self.kernel.apply(JvmOp(action, time_ns=self.clock.now_ns, args=args))

    def observe(self) -> int:
        """Read the application's progress (its threads' allocated bytes) into the clock;
        the app's simulated time."""
        if self.host is None:
            return self.clock.now_ns
        return self.clock.update(self.host.app_allocated_bytes())

    def restart_clock(self) -> None:
        """The application starts now: its simulated time counts from the kernel's clock."""
        if self.host is not None:
            self.clock.restart(self.kernel.clock_ns, self.host.app_allocated_bytes())
        self.clock.free = False

    def op(self, op: JvmOp) -> None:
        """The ``jvm`` operation's handler (runs inside the kernel's apply)."""
        heap, balloon, host = self.heap, self.balloon, self.host
        if heap is None or balloon is None or host is None:
            return
        if op.action == "heap":
            self._sync_heap()
        elif op.action == "native":
            self.native_target = self._native_bytes()
            assert self.native is not None
            self.native.sync(self.native_target)
        elif op.action == "gc":
            balloon.check_moves()
            balloon.on_gc(op.args["committed"], op.args["used"])
            self._sync_heap(op.args.get("used_before", 0))
        elif op.action == "balloon":
            balloon.run_thread()
            self._sync_heap()

    def _sync_heap(self, used_before: int = 0) -> None:
        """The heap's resident pages follow what the JVM touched, within what it committed
        (all of it with -XX:+AlwaysPreTouch); uncommitted pages are dropped."""
        assert self.heap is not None and self.host is not None
        used, committed, _ = self.host.heap()
        self.touched = min(committed, max(self.touched, used, used_before))
        self.heap.sync_heap(committed if self.pretouch else self.touched)

    def _native_bytes(self) -> int:
        assert self.host is not None
        nmt = self.host.native_committed()
        nmt.pop("Java Heap", None)
        nmt.pop(_NMT_SELF, None)
        return sum(nmt.values()) + self.host.file_rss()

    def tick(self, wait: float = 0.0, *, observe: bool = True) -> int:
        """Apply what the JVM did since the last tick: its collections (release rule, moves),
        its committed heap, every 250 simulated ms its native memory, and a requested
        inflation, stamped with the app's simulated time (read now with ``observe``; else the
        time of the caller's last :meth:`observe`). Waits up to ``wait`` seconds (wall time)
        for a collection. Returns the collections seen."""
        host, balloon = self.host, self.balloon
        if host is None or balloon is None:
            return 0
        if observe:
            self.observe()
        events = host.poll_gc(wait)
        for ev in events:
            self.gc_events += 1
            if ev.host:
                self.host_gcs += 1
                self.host_gc_ms += ev.duration_ms
            self._apply("gc", committed=ev.heap_committed_after, used=ev.heap_used_after,
                        used_before=ev.heap_used_before, cause=ev.cause)
        now = self.clock.now_ns
        if self._native_at is None or now - self._native_at >= NATIVE_PERIOD_NS:
            self._native_at = now
            self._apply("native")
        self._apply("heap")
        self.balloon_tick()
        return len(events)

    def balloon_tick(self) -> None:
        """The balloon thread, if an inflation is due (after each operation of a paced
        workload: where it inflates depends on the workload's operations, not on when the
        simulator polled the JVM)."""
        if self.balloon is not None and self._balloon_due():
            self._asked_ns = None
            self._apply("balloon")

    def _balloon_due(self) -> bool:
        """The balloon's §9.2 check; True once a request is ``jvm_balloon_wake_latency`` old
        (the balloon thread's wake latency, in simulated time)."""
        assert self.balloon is not None
        if not self.balloon.check():
            self._asked_ns = None
            return False
        now = self.kernel.clock_ns
        if self._asked_ns is None:
            self._asked_ns = now
        return now - self._asked_ns >= self.balloon_latency_ns

    def after_op(self) -> None:
        """After a workload operation: the balloon's §9.2 check (inflation waits for a tick)."""
        if self.balloon is not None:
            self._balloon_due()

    # -- summary ---------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """True once :meth:`finish` froze the sections."""
        return self._frozen is not None

    def finish(self, exit_code: int | None) -> None:
        """Freeze the sections at the end of a run, then let the JVM (shared by later runs in
        this process) collect the balloon arrays; the guest's memory stays as it ended.
        Only the first call counts."""
        if self._frozen is not None:
            return
        self.exit_code = exit_code
        if self.host is not None and self.kernel.oom is None:  # a dead guest changes no more
            self.tick()
            self._apply("native")
        self._frozen = (self._balloon_section(), self._jvm_section())
        if self.balloon is not None:
            self.balloon.drop_arrays()

    def _balloon_section(self) -> dict[str, Any]:
        if self.balloon is None:
            return {"enabled": False, "inflations": 0, "deflations": 0, "balloons": 0,
                    "bytes": 0, "peak_bytes": 0, "gc_moves": 0}
        return self.balloon.section()

    def _jvm_section(self) -> dict[str, Any]:
        host = self.host
        if host is None:
            return {"heap_max_bytes": None, "heap_committed_bytes": None,
                    "heap_used_bytes": None, "gc_count": None, "gc_time_ms": None,
                    "exit_code": self.exit_code}
        used, committed, _ = host.heap()
        n, ms = host.gc_totals()
        return {
            "heap_max_bytes": host.max_heap_bytes,
            "heap_committed_bytes": committed,
            "heap_used_bytes": used,
            "gc_count": n - self._gc0[0] - self.host_gcs,
            "gc_time_ms": max(0, ms - self._gc0[1] - self.host_gc_ms),
            "host_gc_count": self.host_gcs,
            "exit_code": self.exit_code,
            "native_bytes": self.native_target,
            "options": host.options,
            "heap_sized_by": "osv" if self.sizing and self.sizing.osv_sized else "user",
            "jvm_path": host.jvm_path,
            "start_seconds": round(host.start_seconds, 3),
        }

    def balloon_section(self) -> dict[str, Any]:
        return self._frozen[0] if self._frozen else self._balloon_section()

    def jvm_section(self) -> dict[str, Any]:
        return self._frozen[1] if self._frozen else self._jvm_section()

    # -- categories --------------------------------------------------------------------------------
    def heap_bytes(self) -> int:
        return self.heap.heap_resident() if self.heap is not None else 0

    def balloon_bytes(self) -> int:
        return self.heap.balloon_resident() if self.heap is not None else 0

    def native_bytes(self) -> int:
        return self.native.resident() if self.native is not None else 0


def attach(kernel: Kernel, space: AddressSpace) -> JvmSubsystem:
    """Register the ``jvm`` operation, the JVM's categories and the two summary sections."""
    jvm = JvmSubsystem(kernel, space)
    kernel.add_handler("jvm", jvm.op)
    # the JVM's mappings are anonymous memory: count them in their own categories and
    # not again in sys_mman's `anonymous`, so that free + categories still adds up to total
    kernel.add_category("anonymous", lambda: space.resident[ANON] - jvm.heap_bytes()
                        - jvm.balloon_bytes() - jvm.native_bytes())
    kernel.add_category("jvm_heap", jvm.heap_bytes)
    kernel.add_category("balloon", jvm.balloon_bytes)
    kernel.add_category("jvm_native", jvm.native_bytes)
    kernel.add_section("balloon", jvm.balloon_section)
    kernel.add_section("jvm", jvm.jvm_section)
    return jvm
