"""Random mmap/munmap/mprotect/madvise/mremap/touch against a plain per-page model.

The model knows which pages are mapped (with their protection), where VMAs start (they split,
never merge), which pages must be resident (touched and not freed since) and which error each
call must give. After every step: the VMAs and protections equal the model, resident pages lie
inside VMAs and include every touched page, the page tables agree with the VMAs, and the
kernel's pages are conserved.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kernel import Kernel, KernelConfig
from mm.address_space import VmError
from mm.constants import MMAP_DEFAULT_START, PAGE_SIZE, PAGES_PER_HUGE

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
    def __init__(self) -> None:
        super().__init__()
        self.kernel = Kernel(KernelConfig(memory=256 << 20, cpus=2))
        self.vm = self.kernel.address_space  # type: ignore[attr-defined]
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
        vm.check()  # page tables == VMAs (perms, counters), present pages only inside VMAs
        self.kernel.check()  # free + categories == total
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


TestVmMachine = VmMachine.TestCase
