"""`mmsim fuzz`: hypothesis state machines over a booted kernel, as a user's configuration sets it.

The machine drives the kernel through the same operations a trace does (malloc family, the mmap
family, touches, files, CPU switches, time) and checks the kernel's invariants after every step
(:func:`kernel.invariants.check_kernel`): pages conserved (free + every category == total), free
runs coalesced and in their containers, every page in one place, the VMAs against the page
tables (resident <= mapped, each resident page in exactly one VMA); and, against the machine's
own model of the blocks it allocated, that live blocks never overlap, are aligned and at least
as large as asked, and that each free of a pool object returns its page exactly when OSv's rule
says (:class:`kernel.invariants.FreeRule`). The ARC's target stays at or above c_min and nobody
waits for memory needlessly. Allocations name a few call sites (or none), and each site's live
blocks and bytes must be those of the live blocks that name it.
When one breaks, hypothesis shrinks the operations, and the smallest failing sequence is written
as a native trace that `mmsim run --check` replays. Users can subclass :class:`KernelMachine` or
call :func:`make_machine` from their own pytest; :mod:`mmsim.machines` has the allocators' own
machines.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from mmsim.kernel import Kernel, KernelConfig, OutOfMemory
from mmsim.kernel.invariants import FreeRule, check_kernel
from mmsim.mm.slab import malloc_alignment
from mmsim.trace.native import write_native
from mmsim.trace.ops import Op

PAGE = 4096
MIB = 1 << 20

#: malloc sizes around OSv's boundaries: pool classes, whole pages, runs, the mmap threshold
#: (2,092,992 is the largest run and 2,092,993 the first mapping, by §4's formula
#: ceil((n + 64) / 4096) >= 512; §4's own figure, 2,093,057, is a typo: docs/mtrace.md)
MMAP_THRESHOLD = 2_092_993
malloc_sizes = st.one_of(
    st.integers(1, 1024),
    st.integers(1025, 4096),
    st.integers(4097, 64 * 1024),
    st.sampled_from([8, 16, 1024, 1025, 4096, 4097, 8192, MMAP_THRESHOLD - 1, MMAP_THRESHOLD,
                     2_093_056, 2_093_057, 3 * MIB]),
)
#: call sites of the malloc family: a few, and none (a trace that names no caller)
SITES = st.sampled_from([None, "main", "parse", "grow"])
map_lengths = st.one_of(
    st.integers(1, 64).map(lambda n: n * PAGE),
    st.integers(1, 6).map(lambda n: n * 2 * MIB),
    st.integers(1, 6).map(lambda n: n * 2 * MIB + PAGE),
)
prots = st.sampled_from([1, 3, 3, 3, 5, 0])


class KernelMachine(RuleBasedStateMachine):
    """Random operations against one kernel; ``config`` is set by :func:`make_machine`."""

    config: KernelConfig = KernelConfig(memory=256 * MIB, cpus=2)
    #: the operations of the most recent run (after shrinking: the minimal failing one)
    last_ops: list[Op] = []
    #: called as each example (a run of the machine, shrinking's included) starts
    on_example: Callable[[], None] | None = None

    mallocs = Bundle("mallocs")
    maps = Bundle("maps")

    def __init__(self) -> None:
        super().__init__()
        if self.on_example is not None:
            self.on_example()
        self.kernel = Kernel(self.config)
        self.ops: list[Op] = []
        type(self).last_ops = self.ops
        self.names = 0
        self.out_of_memory = False
        self.face = self.kernel.malloc
        #: the machine's model of its live blocks: handle -> (requested bytes, alignment)
        self.blocks: dict[str, tuple[int, int]] = {}
        self.free_rule = FreeRule(self.face.malloc)
        self.reclaims = 0
        self.kernel.subscribe(self._event)

    def _event(self, name: str, record: object) -> None:
        if name == "reclaim":
            self.reclaims += 1

    def _bound(self, h: str, size: int, align: int) -> None:
        """After a call that binds ``h``: the model holds the block if malloc returned one."""
        if not self.out_of_memory and h in self.face.live:
            self.blocks[h] = (size, align)

    def _name(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def _apply(self, op: Op) -> None:
        if self.out_of_memory:  # a simulated OOM ends the run's story, it is not a bug
            return
        op.line = len(self.ops) + 2  # line 1 is the trace's header
        self.ops.append(op)
        try:
            self.kernel.apply(op)
        except OutOfMemory:
            self.out_of_memory = True

    # -- malloc family ---------------------------------------------------------------------
    @rule(target=mallocs, size=malloc_sizes, site=SITES)
    def malloc(self, size: int, site: str | None) -> str:
        h = self._name("m")
        self._apply(Op("malloc", 0, handle=h, size=size, site=site))
        self._bound(h, size, malloc_alignment(size))
        return h

    @rule(target=mallocs, n=st.integers(1, 64), size=st.integers(1, 4096), site=SITES)
    def calloc(self, n: int, size: int, site: str | None) -> str:
        h = self._name("m")
        self._apply(Op("calloc", 0, handle=h, count=n, size=size, site=site))
        self._bound(h, n * size, malloc_alignment(n * size))
        return h

    @rule(target=mallocs, align=st.sampled_from([8, 64, 4096, 8192, 2 * MIB]),
          size=st.integers(1, 3 * MIB), site=SITES)
    def memalign(self, align: int, size: int, site: str | None) -> str:
        h = self._name("m")
        self._apply(Op("memalign", 0, handle=h, align=align, size=size, site=site))
        self._bound(h, size, align)
        return h

    @rule(h=mallocs, size=malloc_sizes, site=SITES)
    def realloc(self, h: str, size: int, site: str | None) -> None:
        block = self.face.live.get(h)
        rule = self.free_rule
        saved = ([row[:] for row in rule.sink], rule.pending[:])
        if block is not None and not self.out_of_memory:
            rule.before(block[0], self.kernel.cpu, check=False)  # realloc frees the old block
        self._apply(Op("realloc", 0, handle=h, size=size, site=site))
        now = self.face.live.get(h)
        if block is not None and now is not None and now[0] == block[0]:
            rule.sink, rule.pending = saved  # it failed: the old block was not freed
        self.blocks.pop(h, None)
        self._bound(h, size, malloc_alignment(size))

    @rule(h=consumes(mallocs))
    def free(self, h: str) -> None:
        block = self.face.live.get(h)
        check = None
        if block is not None and not self.out_of_memory:
            check = self.free_rule.before(block[0], self.kernel.cpu)
        reclaims = self.reclaims
        self._apply(Op("free", 0, handle=h))
        self.blocks.pop(h, None)
        if check is not None and not self.out_of_memory:
            check(settled=self.reclaims == reclaims)

    # -- mmap family -----------------------------------------------------------------------
    @rule(target=maps, length=map_lengths, prot=prots, populate=st.booleans(),
          shared=st.booleans())
    def mmap(self, length: int, prot: int, populate: bool, shared: bool) -> tuple[str, int]:
        h = self._name("v")
        self._apply(Op("mmap", 0, handle=h, size=length, prot=prot, populate=populate,
                       shared=shared))
        return h, length

    @rule(m=maps, data=st.data(), write=st.booleans())
    def touch(self, m: tuple[str, int], data: st.DataObject, write: bool) -> None:
        off, length = _subrange(data, m[1])
        self._apply(Op("touch", 0, handle=m[0], offset=off, length=length, write=write))

    @rule(m=maps, data=st.data(), prot=prots)
    def mprotect(self, m: tuple[str, int], data: st.DataObject, prot: int) -> None:
        off, length = _subrange(data, m[1])
        self._apply(Op("mprotect", 0, handle=m[0], offset=off, length=length, prot=prot))

    @rule(m=maps, data=st.data(), advice=st.sampled_from(["dontneed", "hugepage", "nohugepage"]))
    def madvise(self, m: tuple[str, int], data: st.DataObject, advice: str) -> None:
        off, length = _subrange(data, m[1])
        self._apply(Op("madvise", 0, handle=m[0], offset=off, length=length, advice=advice))

    @rule(m=maps, data=st.data())
    def munmap_part(self, m: tuple[str, int], data: st.DataObject) -> None:
        off, length = _subrange(data, m[1])
        self._apply(Op("munmap", 0, handle=m[0], offset=off, length=length))

    @rule(m=consumes(maps))
    def munmap(self, m: tuple[str, int]) -> None:
        self._apply(Op("munmap", 0, handle=m[0]))

    # -- files, CPUs and time ----------------------------------------------------------------
    @rule(n=st.integers(0, 3), size=st.integers(1, 2 * MIB))
    def create(self, n: int, size: int) -> None:
        self._apply(Op("create", 0, path=f"/f{n}", size=size))

    @rule(n=st.integers(0, 3), off=st.integers(0, 2 * MIB), length=st.integers(1, 512 * 1024),
          write=st.booleans())
    def file_io(self, n: int, off: int, length: int, write: bool) -> None:
        kind = "write" if write else "read"
        self._apply(Op(kind, 0, path=f"/f{n}", offset=off, length=length, write=write))

    @rule(mib=st.sampled_from([0, 0, 16, 64, 200]))
    def host_balloon(self, mib: int) -> None:
        self._apply(Op("host-balloon", 0, size=mib * MIB))

    @rule(data=st.data())
    def cpu(self, data: st.DataObject) -> None:
        self._apply(Op("cpu", 0, count=data.draw(st.integers(0, self.config.cpus - 1))))

    @rule(ms=st.integers(1, 1500))
    def sleep(self, ms: int) -> None:
        self._apply(Op("sleep", 0, duration_ns=ms * 1_000_000))

    @invariant()
    def kernel_invariants(self) -> None:
        if self.out_of_memory:  # the model may be mid-call: check the kernel's own view
            check_kernel(self.kernel)
            return
        live = self.face.live
        blocks = []
        for h, (size, align) in self.blocks.items():
            block = live.get(h)
            assert block is not None, f"malloc forgot the live block '{h}'"
            assert block[1] == size, f"'{h}': the kernel holds {block[1]} bytes, asked {size}"
            blocks.append((block[0], size, align))
        check_kernel(self.kernel, blocks)

    @invariant()
    def pressure_invariants(self) -> None:
        """The ARC's target never goes under c_min (only its size may, on shrinker calls), and
        nobody waited for memory that a single free run could have served."""
        arc = self.kernel.section("arc")
        if arc is not None:
            assert arc["c_bytes"] >= arc["c_min_bytes"], "ARC target under c_min"
        reclaimer = self.kernel.reclaimer
        if reclaimer is not None:
            assert not reclaimer.needless_waits, "a waiter slept while a free run fit it"


def _subrange(data: st.DataObject, length: int) -> tuple[int, int]:
    pages = max(1, length // PAGE)
    first = data.draw(st.integers(0, pages - 1))
    count = data.draw(st.integers(1, pages - first))
    return first * PAGE, count * PAGE


def make_machine(config: KernelConfig, on_example: Callable[[], None] | None = None
                 ) -> type[KernelMachine]:
    """A :class:`KernelMachine` subclass bound to ``config`` (user shrinkers included);
    ``on_example`` is called as each example starts (a progress bar)."""
    return type("ConfiguredKernelMachine", (KernelMachine,),
                {"config": config, "last_ops": [], "on_example": staticmethod(on_example)
                 if on_example is not None else None})


@dataclass
class FuzzResult:
    ok: bool
    examples: int
    error: str | None = None
    trace: str | None = None  # the shrunk counterexample, as a native trace


def fuzz(config: KernelConfig, examples: int = 100, seed: int = 0, steps: int = 50,
         on_example: Callable[[], None] | None = None) -> FuzzResult:
    """Run the machine; on failure return the minimal failing operations as a native trace.
    ``on_example`` is called as each example starts (those shrinking runs included)."""
    machine = make_machine(config, on_example)
    hypothesis.seed(seed)(machine)
    run_settings = settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False,
        report_multiple_bugs=False,  # one failure, whose shrunk run is the last one made
    )
    try:
        run_state_machine_as_test(machine, settings=run_settings)
    except Exception as e:  # an invariant or a simulator crash: both are what fuzz hunts
        out = io.StringIO()
        write_native(machine.last_ops, out)
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        return FuzzResult(False, examples, message, out.getvalue())
    return FuzzResult(True, examples)
