"""A state machine of malloc/calloc/memalign/realloc/free across CPUs on a booted kernel.

After every step: live blocks never overlap (physically for the linear areas, virtually for
mappings), each block is aligned and at least as large as asked, every page is in exactly one
place (malloc, the L1/L2 caches or the free runs) and the kernel's categories add up. Each
same-CPU free of a pool object returns its page exactly when OSv's rule says (the page emptied
and the back page of its CPU's list for that size is empty - possibly itself); frees from
another CPU stay queued until 257 reached the owner from one CPU.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from kernel import Kernel, KernelConfig
from mm.constants import MAIN_AREA, PAGE_SIZE
from mm.slab import (
    CROSS_CPU_SIGNAL,
    POOL_CLASSES,
    MallocAbort,
    PoolPage,
    malloc_alignment,
    objects_per_page,
)

CPUS = 2
sizes = st.one_of(
    st.integers(0, 1024),  # pools
    st.integers(1025, 4096),  # whole pages
    st.integers(4097, 200_000),  # runs
    st.integers(2_000_000, 3_000_000),  # around the mmap threshold
)
cpus = st.integers(0, CPUS - 1)


class MallocMachine(RuleBasedStateMachine):
    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.kernel = Kernel(KernelConfig(memory=256 << 20, cpus=CPUS))
        self.m = self.kernel.malloc.malloc  # type: ignore[attr-defined]
        self.live: dict[int, tuple[int, int]] = {}  # address -> (requested, alignment)
        self.sink = [[0] * CPUS for _ in range(CPUS)]  # frees queued since the last signal
        self.pending = [0] * CPUS

    def _add(self, addr: int, size: int, align: int) -> int:
        assert addr, "a feasible request returned NULL"
        assert addr not in self.live
        self.live[addr] = (size, align)
        return addr

    # -- before SMP: the early allocator -------------------------------------------------------
    @initialize(target=blocks, early=st.lists(st.integers(0, 5000), max_size=6))
    def early(self, early: list[int]) -> object:
        pool = self.kernel.pool
        pool.smp = False
        out = [self._add(self.m.malloc(n), n, malloc_alignment(n)) for n in early]
        pool.start_smp()
        return multiple(*out)

    # -- the calls -------------------------------------------------------------------------------
    @rule(target=blocks, size=sizes, cpu=cpus)
    def malloc(self, size: int, cpu: int) -> int:
        return self._add(self.m.malloc(size, cpu), size, malloc_alignment(size))

    @rule(target=blocks, n=st.integers(0, 64), size=st.integers(0, 300), cpu=cpus)
    def calloc(self, n: int, size: int, cpu: int) -> int:
        total = n * size
        return self._add(self.m.calloc(n, size, cpu), total, malloc_alignment(total))

    @rule(target=blocks, shift=st.integers(0, 14), size=sizes, cpu=cpus)
    def memalign(self, shift: int, size: int, cpu: int) -> object:
        align = 1 << shift
        try:
            addr = self.m.posix_memalign(align, size, cpu)
        except MallocAbort:
            assert align > PAGE_SIZE, "only alignments above a page can miss on the mapped path"
            return multiple()
        return self._add(addr, size, align)

    @rule(target=blocks, block=consumes(blocks), size=sizes, cpu=cpus)
    def realloc(self, block: int, size: int, cpu: int) -> object:
        self._expect_free(block, cpu, check=False)
        del self.live[block]
        new = self.m.realloc(block, size, cpu)
        if size == 0:
            assert new == 0
            return multiple()
        assert new != block, "OSv's realloc never works in place"
        return self._add(new, size, malloc_alignment(size))

    @rule(block=consumes(blocks), cpu=cpus)
    def free(self, block: int, cpu: int) -> None:
        check = self._expect_free(block, cpu)
        del self.live[block]
        self.m.free(block, cpu)
        check()

    @rule(cls=st.sampled_from(POOL_CLASSES), extra=st.integers(0, 40),
          owner=cpus, other=cpus)
    def cross_cpu_burst(self, cls: int, extra: int, owner: int, other: int) -> None:
        """Enough frees from one CPU to another to make the owner collect its queues."""
        if owner == other:
            other = (owner + 1) % CPUS
        objs = [self.m.malloc(cls, owner) for _ in range(CROSS_CPU_SIGNAL + 1 + extra)]
        for o in objs:
            self.live[o] = (cls, cls)
        for o in objs:
            check = self._expect_free(o, other)
            del self.live[o]
            self.m.free(o, other)
            check()

    # -- what each free must do --------------------------------------------------------------------
    def _expect_free(self, addr: int, cpu: int, check: bool = True):  # type: ignore[no-untyped-def]
        page = self.m.page_of(addr)
        if not isinstance(page, PoolPage):
            return lambda: None
        if page.cpu != cpu:
            owner = page.cpu
            self.sink[owner][cpu] += 1
            self.pending[owner] += 1
            collect = self.sink[owner][cpu] > CROSS_CPU_SIGNAL
            if collect:
                self.sink[owner][cpu] = 0
                self.pending[owner] = 0
            nalloc = page.nalloc

            def cross() -> None:
                assert self.m.pending_cross_cpu(owner) == self.pending[owner]
                if not collect:
                    assert self.m.page_of(addr) is page and page.nalloc == nalloc, \
                        "an object freed on another CPU stays allocated until collected"
            return cross if check else lambda: None
        pool = page.pool
        tail = pool.tail
        goes_back = page.nalloc == 1 and tail is not None and (tail is page or not tail.nalloc)

        def same() -> None:
            assert (self.m.page_of(addr) is None) == goes_back, \
                f"page returned: {self.m.page_of(addr) is None}, OSv's rule: {goes_back}"
        return same if check else lambda: None

    # -- invariants --------------------------------------------------------------------------------
    @invariant()
    def blocks_are_aligned_large_enough_and_apart(self) -> None:
        linear: list[tuple[int, int]] = []
        mapped: list[tuple[int, int]] = []
        for addr, (size, align) in self.live.items():
            usable = self.m.malloc_usable_size(addr)
            assert usable >= size, f"{addr:#x}: usable {usable} < requested {size}"
            assert addr % align == 0, f"{addr:#x} is not aligned to {align}"
            if addr < MAIN_AREA:
                mapped.append((addr, addr + usable))
            else:
                phys = addr & ((1 << 44) - 1)
                linear.append((phys, phys + usable))
            kind = self.m.kind_of(addr)
            if kind.isdigit():
                s = int(kind)
                first = PAGE_SIZE - objects_per_page(s) * s
                off = addr % PAGE_SIZE
                assert off >= first and (off - first) % s == 0, "not on an object slot"
        for spans in (linear, mapped):
            spans.sort()
            for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
                assert end <= start, "two live blocks overlap"

    @invariant()
    def every_page_is_in_one_place(self) -> None:
        self.kernel.check()
        self.m.check()
        pieces = list(self.m.pfns())
        pieces += list(self.kernel.ranges.runs())
        pieces += [(p, 1) for p in self.kernel.pool.cached()]
        pieces.sort()
        for (start, n), (nxt, _) in zip(pieces, pieces[1:], strict=False):
            assert start + n <= nxt, f"page {nxt:#x} is held twice"
        held = sum(n for _, n in self.m.pfns())
        assert self.m.heap_bytes == held * PAGE_SIZE + self.m.large.mapped_bytes

    def teardown(self) -> None:
        for addr in list(self.live):
            self.m.free(addr, 0)
        self.kernel.check()
        self.m.check()
        assert self.m.heap_bytes >= 0


TestMallocMachine = MallocMachine.TestCase
