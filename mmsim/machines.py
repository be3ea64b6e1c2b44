"""The allocator state machines (malloc, pages, mappings), for `mmsim fuzz`, the test suite and
users' own pytest::

    from mmsim.machines import MallocMachine
    TestMalloc = MallocMachine.TestCase

Each drives one allocator through hypothesis rules against its own model and checks, after
every step, the invariants of :mod:`kernel.invariants` (the same checks `mmsim run --check` and
`mmsim fuzz` run). :class:`mmsim.fuzz.KernelMachine` drives a whole kernel through trace
operations instead.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from mmsim.kernel import Kernel, KernelConfig
from mmsim.kernel.invariants import (
    FreeRule,
    check_address_space,
    check_kernel,
    check_page_allocator,
)
from mmsim.mm.address_space import VmError
from mmsim.mm.constants import MMAP_DEFAULT_START, PAGE_SIZE, PAGES_PER_HUGE
from mmsim.mm.page_pool import OutOfPages, PagePool
from mmsim.mm.page_range_allocator import PageRangeAllocator
from mmsim.mm.slab import CROSS_CPU_SIGNAL, POOL_CLASSES, MallocAbort, malloc_alignment

__all__ = ["MallocMachine", "PageAllocatorMachine", "VmMachine"]

# ------------------------------------------------------------------------------- malloc

CPUS = 2
sizes = st.one_of(
    st.integers(0, 1024),  # pools
    st.integers(1025, 4096),  # whole pages
    st.integers(4097, 200_000),  # runs
    st.integers(2_000_000, 3_000_000),  # around the mmap threshold
    st.sampled_from([2_092_992, 2_092_993]),  # the threshold itself (docs/mtrace.md)
)
cpus = st.integers(0, CPUS - 1)


class MallocMachine(RuleBasedStateMachine):
    """malloc/calloc/memalign/realloc/free across CPUs on a booted kernel, the early allocator
    before SMP included. After every step: live blocks never overlap, each is aligned and at
    least as large as asked, every page is in exactly one place and the kernel's categories add
    up. Each same-CPU free of a pool object returns its page exactly when OSv's rule says (the
    page emptied and the back page of its CPU's list for that size is empty - possibly itself);
    frees from another CPU stay queued until 257 reached the owner from one CPU."""

    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.kernel = Kernel(KernelConfig(memory=256 << 20, cpus=CPUS))
        self.m = self.kernel.malloc.malloc
        self.live: dict[int, tuple[int, int]] = {}  # address -> (requested, alignment)
        self.rule = FreeRule(self.m)

    def _add(self, addr: int, size: int, align: int) -> int:
        assert addr, "a feasible request returned NULL"
        assert addr not in self.live, f"{addr:#x} handed out twice"
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
        self.rule.before(block, cpu, check=False)
        del self.live[block]
        new = self.m.realloc(block, size, cpu)
        if size == 0:
            assert new == 0
            return multiple()
        assert new != block, "OSv's realloc never works in place"
        return self._add(new, size, malloc_alignment(size))

    @rule(block=consumes(blocks), cpu=cpus)
    def free(self, block: int, cpu: int) -> None:
        check = self.rule.before(block, cpu)
        del self.live[block]
        self.m.free(block, cpu)
        check()

    @rule(cls=st.sampled_from(POOL_CLASSES), extra=st.integers(0, 40), owner=cpus, other=cpus)
    def cross_cpu_burst(self, cls: int, extra: int, owner: int, other: int) -> None:
        """Enough frees from one CPU to another to make the owner collect its queues."""
        if owner == other:
            other = (owner + 1) % CPUS
        objs = [self._add(self.m.malloc(cls, owner), cls, cls)
                for _ in range(CROSS_CPU_SIGNAL + 1 + extra)]
        for o in objs:
            check = self.rule.before(o, other)
            del self.live[o]
            self.m.free(o, other)
            check()

    @invariant()
    def invariants(self) -> None:
        check_kernel(self.kernel, [(a, s, al) for a, (s, al) in self.live.items()])

    def teardown(self) -> None:
        for addr in list(self.live):
            self.m.free(addr, 0)
        check_kernel(self.kernel, [])
        assert self.m.heap_bytes >= 0


# ------------------------------------------------------------------------------- pages

class PageAllocatorMachine(RuleBasedStateMachine):
    """Random run, aligned, huge and single-page traffic: runs never overlap, stay coalesced
    and sit in the right container; free + allocated + cached == total."""

    allocations = Bundle("allocations")

    def __init__(self) -> None:
        super().__init__()
        self.ranges = PageRangeAllocator()
        # two separate areas, so that coalescing across a hole would be a bug
        self.ranges.add_initial_range(1, 3000)
        self.ranges.add_initial_range(4096, 70000)
        self.pool = PagePool(self.ranges, ncpus=2)
        self.pool.start_smp()
        self.owned: dict[int, int] = {}  # start -> npages, everything the machine holds

    def _own(self, start: int, n: int) -> tuple[int, int]:
        for s, m in self.owned.items():
            assert start + n <= s or s + m <= start, "allocation overlaps a live one"
        self.owned[start] = n
        return start, n

    @rule(target=allocations, n=st.integers(1, 5000))
    def alloc(self, n: int) -> Any:
        start = self.ranges.alloc(n)
        if start is None:
            assert self.ranges.largest_run() < n  # fails only when no single run fits
            return None
        return self._own(start, n)

    @rule(target=allocations, n=st.integers(1, 600), align=st.sampled_from([1, 8, 64, 512]))
    def alloc_aligned(self, n: int, align: int) -> Any:
        start = self.ranges.alloc_aligned(n, align)
        if start is None:
            return None
        assert start % align == 0
        return self._own(start, n)

    @rule(target=allocations, cpu=st.integers(0, 1))
    def alloc_page(self, cpu: int) -> Any:
        try:
            return (*self._own(self.pool.alloc_page(cpu), 1), cpu)
        except OutOfPages:
            return None

    @rule(target=allocations, n=st.integers(1, 1200), cpu=st.integers(0, 1))
    def alloc_pages(self, n: int, cpu: int) -> Any:
        try:
            extents = self.pool.alloc_pages(n, cpu)
        except OutOfPages:
            return None
        assert sum(k for _, k in extents) == n
        for s, k in extents:
            self._own(s, k)
        return ("bulk", extents, cpu)

    @rule(a=consumes(allocations))
    def free(self, a: Any) -> None:
        if a is None:
            return
        if a[0] == "bulk":
            _, extents, cpu = a
            for s, _ in extents:
                del self.owned[s]
            self.pool.free_pages(extents, cpu)
        elif len(a) == 3:
            start, _, cpu = a
            del self.owned[start]
            self.pool.free_page(start, cpu)
        else:
            start, n = a
            del self.owned[start]
            self.ranges.free(start, n)

    @rule()
    def fill_threads(self) -> None:
        self.pool.run_fill_threads()

    @invariant()
    def structure_and_conservation(self) -> None:
        check_page_allocator(self.ranges, self.pool, self.owned.items())


# ------------------------------------------------------------------------------- mappings

BASE = MMAP_DEFAULT_START // PAGE_SIZE  # page number of the window's start
BLOCKS = 8
WINDOW = BLOCKS * PAGES_PER_HUGE
EDGES = sorted({b * PAGES_PER_HUGE + d for b in range(BLOCKS + 1) for d in (-1, 0, 1)} - {-1})
SLOTS = st.one_of(st.integers(0, WINDOW), st.sampled_from(EDGES))
SIZES = st.one_of(st.integers(1, 16), st.integers(1, 3 * PAGES_PER_HUGE),
                  st.sampled_from([PAGES_PER_HUGE - 1, PAGES_PER_HUGE, PAGES_PER_HUGE + 1,
                                   2 * PAGES_PER_HUGE]))
PROTS = st.sampled_from([0, 1, 3, 5, 7])  # none, r, rw, rx, rwx


class VmMachine(RuleBasedStateMachine):
    """Random mmap/munmap/mprotect/madvise/mremap/touch against a plain per-page model of
    which pages are mapped (with their protection), where VMAs start (they split, never
    merge), which pages must be resident and which error each call must give. After every
    step: the VMAs and protections equal the model, resident pages lie inside VMAs and include
    every touched page, the page tables agree with the VMAs, and pages are conserved."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = Kernel(KernelConfig(memory=256 << 20, cpus=2))
        self.vm = self.kernel.address_space
        self.mapped: dict[int, int] = {}  # page -> prot
        self.starts: set[int] = set()  # pages where a VMA starts (if mapped)
        self.touched: set[int] = set()  # pages that must be resident

    # -- model helpers -------------------------------------------------------------------
    def _all_mapped(self, s: int, e: int) -> bool:
        return all(p in self.mapped for p in range(s, e))

    def _cut(self, s: int, e: int) -> None:
        self.starts.add(s)
        self.starts.add(e)

    def _new_vma(self, s: int, e: int, prot: int) -> None:
        self.starts.difference_update(range(s + 1, e))
        self._cut(s, e)
        for p in range(s, e):
            self.mapped[p] = prot

    def _unmap_model(self, s: int, e: int) -> None:
        for p in range(s, e):
            self.mapped.pop(p, None)
            self.touched.discard(p)
        self.starts.difference_update(range(s + 1, e))
        self._cut(s, e)

    def _expect(self, kind: str | None, fn, *args, **kw):  # noqa: ANN001, ANN202
        try:
            got = fn(*args, **kw)
        except VmError as e:
            assert e.kind == kind, f"{fn.__name__}{args}: {e.kind} but the model says {kind}"
            return None
        assert kind is None, f"{fn.__name__}{args} succeeded but the model says {kind}"
        return got

    def _resident_pages(self, s: int, e: int) -> set[int]:
        out: set[int] = set()
        for ext in self.vm.pt.extents(s * PAGE_SIZE, (e - s) * PAGE_SIZE):
            first = ext.vaddr // PAGE_SIZE
            out.update(range(first, first + ext.npages))
        return out

    def _vma_runs(self) -> list[tuple[int, int]]:
        """The model's VMAs: maximal runs of mapped pages, cut where a VMA starts."""
        runs: list[tuple[int, int]] = []
        for p in sorted(self.mapped):
            if runs and runs[-1][1] == p and p not in self.starts:
                runs[-1] = (runs[-1][0], p + 1)
            else:
                runs.append((p, p + 1))
        return runs

    # -- rules ---------------------------------------------------------------------------
    @rule(slot=SLOTS, n=SIZES, prot=PROTS, populate=st.booleans())
    def mmap_fixed(self, slot: int, n: int, prot: int, populate: bool) -> None:
        s = BASE + slot
        got = self._expect(None, self.vm.mmap, n * PAGE_SIZE, prot, fixed=True,
                           addr=s * PAGE_SIZE, populate=populate)
        assert got == s * PAGE_SIZE
        self._unmap_model(s, s + n)
        self._new_vma(s, s + n, prot)
        if populate:
            assert self._resident_pages(s, s + n) == set(range(s, s + n))

    @rule(n=SIZES, prot=PROTS)
    def mmap_anywhere(self, n: int, prot: int) -> None:
        got = self._expect(None, self.vm.mmap, n * PAGE_SIZE, prot)
        s = got // PAGE_SIZE
        assert not any(p in self.mapped for p in range(s, s + n)), "placed over a mapping"
        if n >= PAGES_PER_HUGE and s % PAGES_PER_HUGE:
            # unaligned only if no aligned hole exists before the first fit
            assert s < BASE + WINDOW + 4 * PAGES_PER_HUGE
        self._new_vma(s, s + n, prot)

    @rule(slot=SLOTS, n=st.integers(0, 3 * PAGES_PER_HUGE))
    def munmap(self, slot: int, n: int) -> None:
        s = BASE + slot
        kind = None if n and self._all_mapped(s, s + n) else "EINVAL"
        self._expect(kind, self.vm.munmap, s * PAGE_SIZE, n * PAGE_SIZE)
        if kind is None:
            self._unmap_model(s, s + n)
            assert not self._resident_pages(s, s + n)

    @rule(slot=SLOTS, n=st.integers(1, 3 * PAGES_PER_HUGE), prot=PROTS)
    def mprotect(self, slot: int, n: int, prot: int) -> None:
        s = BASE + slot
        kind = None if self._all_mapped(s, s + n) else "ENOMEM"
        self._expect(kind, self.vm.mprotect, s * PAGE_SIZE, n * PAGE_SIZE, prot)
        if kind is None:
            self._cut(s, s + n)
            for p in range(s, s + n):
                self.mapped[p] = prot

    @rule(slot=SLOTS, n=st.integers(1, 3 * PAGES_PER_HUGE),
          advice=st.sampled_from(["dontneed", "hugepage", "nohugepage"]))
    def madvise(self, slot: int, n: int, advice: str) -> None:
        s = BASE + slot
        kind = None if self._all_mapped(s, s + n) else "ENOMEM"
        self._expect(kind, self.vm.madvise, s * PAGE_SIZE, n * PAGE_SIZE, advice)
        if kind is None:
            self._cut(s, s + n)
            if advice == "dontneed":
                self.touched.difference_update(range(s, s + n))
                assert not self._resident_pages(s, s + n)
            if advice == "nohugepage":
                assert all(e.leaf_size == PAGE_SIZE for e in self.vm.pt.extents(
                    s * PAGE_SIZE, n * PAGE_SIZE))

    @rule(slot=SLOTS, n=st.integers(1, 3 * PAGES_PER_HUGE), write=st.booleans())
    def touch(self, slot: int, n: int, write: bool) -> None:
        s = BASE + slot
        bad = None
        for p in range(s, s + n):
            prot = self.mapped.get(p)
            if prot is None or prot == 0 or (write and not prot & 2):
                bad = p
                break
        self._expect(None if bad is None else "SIGSEGV", self.vm.touch, s * PAGE_SIZE,
                     n * PAGE_SIZE, write)
        done = range(s, s + n if bad is None else bad)
        self.touched.update(done)
        assert self._resident_pages(s, s + n) >= set(done)

    @precondition(lambda self: bool(self.mapped))
    @rule(data=st.data(), new=SIZES)
    def mremap(self, data: st.DataObject, new: int) -> None:
        runs = self._vma_runs()
        vs, ve = data.draw(st.sampled_from(runs))
        old = data.draw(st.integers(1, ve - vs))
        got = self._expect(None, self.vm.mremap, vs * PAGE_SIZE, old * PAGE_SIZE,
                           new * PAGE_SIZE)
        prot = self.mapped[vs]
        w = got // PAGE_SIZE
        if new <= old:
            assert w == vs
            if new < old:
                self._unmap_model(vs + new, vs + old)
        elif w == vs:
            assert old == ve - vs and not any(p in self.mapped for p in range(ve, vs + new))
            self._new_vma(ve, vs + new, prot)
            self.starts.discard(ve)  # the VMA grew: no new VMA
        else:
            assert not any(p in self.mapped for p in range(w, w + new))
            self._unmap_model(vs, vs + old)
            self._new_vma(w, w + new, prot)
            self.touched.update(range(w, w + new))  # an anonymous move populates

    # -- invariants ----------------------------------------------------------------------
    @invariant()
    def agrees_with_model(self) -> None:
        vm = self.vm
        check_address_space(vm)  # page tables == VMAs, resident pages only inside VMAs
        check_kernel(self.kernel)  # free + categories == total, malloc, page allocator
        runs = self._vma_runs()
        got = [(v.start // PAGE_SIZE, v.end // PAGE_SIZE) for v in vm.vmas]
        assert got == runs, "VMAs differ from the model (split/never-merge)"
        mapped = self.mapped
        for v in vm.vmas:
            first = v.start // PAGE_SIZE
            prots = {mapped[p] for p in range(first, v.end // PAGE_SIZE)}
            assert prots == {v.prot}, f"VMA at {v.start:#x} has prot {v.prot}, model {prots}"
        resident = self._resident_pages(runs[0][0], runs[-1][1]) if runs else set()
        assert self.touched <= resident, "a touched page is not resident"
        assert len(resident) * PAGE_SIZE == vm.resident_bytes <= vm.mapped_bytes
        assert vm.mapped_bytes == len(self.mapped) * PAGE_SIZE
