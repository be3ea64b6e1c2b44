"""Tests of mm.pagetables: a model-checked state machine plus targeted unit tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from mmsim.mm.constants import GIANT_PAGE_SIZE, HUGE_PAGE_SIZE, PAGE_SIZE, PAGES_PER_HUGE
from mmsim.mm.pagetables import CountingTablePageSource, MappedExtent, PageTables, Perm

PDPT_SPAN = 512 * GIANT_PAGE_SIZE  # bytes mapped by one PML4 entry
PERMS = st.sampled_from([Perm.NONE, Perm.R, Perm.RW, Perm.RX, Perm.RWX])


def expand(extents: list[MappedExtent]) -> dict[int, tuple[int, Perm, int]]:
    """Per-page view {page number: (pfn, perm, leaf size)} of some extents."""
    out: dict[int, tuple[int, Perm, int]] = {}
    for ext in extents:
        first = ext.vaddr // PAGE_SIZE
        for i in range(ext.npages):
            assert first + i not in out
            out[first + i] = (ext.pfn + i, ext.perm, ext.leaf_size)
    return out


# --------------------------------------------------------------------------- state machine

EDGE = 8  # pages each side of the 2 MiB blocks
BLOCKS = 4


class PageTableMachine(RuleBasedStateMachine):
    """Random map / map_huge / linear_map / unmap / protect / split in a small window,
    checked against a per-page model and a model of which table pages must exist."""

    #: Virtual address of the first full 2 MiB block of the window.
    BLOCK_BASE = 0x4000_0000_0000 + 16 * HUGE_PAGE_SIZE

    def __init__(self) -> None:
        super().__init__()
        self.source = CountingTablePageSource()
        self.pt = PageTables(self.source)
        self.first_page = self.BLOCK_BASE // PAGE_SIZE - EDGE
        self.npages = BLOCKS * PAGES_PER_HUGE + 2 * EDGE
        self.pages: dict[int, tuple[int, Perm]] = {}  # page number -> (pfn, perm)
        self.huge: set[int] = set()  # 2 MiB block numbers mapped by a huge leaf
        self.pts: set[int] = set()  # 2 MiB block numbers that have a PT
        self.pds: set[int] = set()  # 1 GiB numbers that have a PD (never freed)
        self.pdpts: set[int] = set()  # 512 GiB numbers that have a PDPT (never freed)
        self.probes: set[int] = set()  # extra pages worth translating

    # ---------------------------------------------------------------- helpers

    def page_offsets(self) -> st.SearchStrategy[int]:
        """Offsets into the window, biased towards 2 MiB block edges."""
        edges = [EDGE + b * PAGES_PER_HUGE + d for b in range(BLOCKS + 1) for d in (-1, 0, 1)]
        edges = [e for e in edges if 0 <= e <= self.npages]
        return st.one_of(st.integers(0, self.npages), st.sampled_from(edges))

    def draw_range(self, data: st.DataObject) -> tuple[int, int]:
        """A (first page number, page count) range inside the window."""
        a = data.draw(self.page_offsets())
        b = data.draw(self.page_offsets())
        a, b = min(a, b), max(a, b)
        return self.first_page + a, b - a

    def touch_tables(self, page: int) -> None:
        va = page * PAGE_SIZE
        self.pdpts.add(va // PDPT_SPAN)
        self.pds.add(va // GIANT_PAGE_SIZE)

    def occupied(self, first: int, count: int) -> bool:
        return any(p in self.pages for p in range(first, first + count))

    def split_edges(self, first: int, count: int) -> None:
        """Model OSv splitting huge leaves that the range covers only partly."""
        if count == 0:
            return
        for page in (first, first + count):
            block = page // PAGES_PER_HUGE
            if page % PAGES_PER_HUGE and block in self.huge:
                self.huge.remove(block)
                self.pts.add(block)

    def note_probes(self, first: int, count: int) -> None:
        self.probes = {first - 1, first, first + count - 1, first + count}

    # ---------------------------------------------------------------- rules

    @rule(data=st.data(), perm=PERMS)
    def map_small(self, data: st.DataObject, perm: Perm) -> None:
        first, _ = self.draw_range(data)
        room = self.first_page + self.npages - first
        extents: list[tuple[int, int]] = []
        total = 0
        for _ in range(data.draw(st.integers(1, 3))):
            if total >= room:
                break
            n = data.draw(st.integers(1, min(room - total, 700)))
            if extents and data.draw(st.booleans()):
                pfn = extents[-1][0] + extents[-1][1]  # physically contiguous: runs merge
            else:
                pfn = data.draw(st.integers(0, 1 << 20))
            extents.append((pfn, n))
            total += n
        if not extents:
            return
        self.note_probes(first, total)
        before = self.pt.table_pages
        if self.occupied(first, total):
            with pytest.raises(ValueError):
                self.pt.map(first * PAGE_SIZE, extents, perm)
            assert self.pt.table_pages == before
            return
        self.pt.map(first * PAGE_SIZE, extents, perm)
        page = first
        for pfn, n in extents:
            for i in range(n):
                self.pages[page + i] = (pfn + i, perm)
            page += n
        for page in range(first, first + total):
            self.pts.add(page // PAGES_PER_HUGE)
            self.touch_tables(page)

    @rule(block=st.integers(0, BLOCKS - 1), hpfn=st.integers(0, 1 << 10), perm=PERMS)
    def map_huge(self, block: int, hpfn: int, perm: Perm) -> None:
        va = self.BLOCK_BASE + block * HUGE_PAGE_SIZE
        first = va // PAGE_SIZE
        pfn = hpfn * PAGES_PER_HUGE
        self.note_probes(first, PAGES_PER_HUGE)
        before = self.pt.table_pages
        if self.occupied(first, PAGES_PER_HUGE) or va // HUGE_PAGE_SIZE in self.pts:
            assert self.pt.has_pt(va) == (va // HUGE_PAGE_SIZE in self.pts)
            with pytest.raises(ValueError):
                self.pt.map_huge(va, pfn, perm)
            assert self.pt.table_pages == before
            return
        self.pt.map_huge(va, pfn, perm)
        for i in range(PAGES_PER_HUGE):
            self.pages[first + i] = (pfn + i, perm)
        self.huge.add(va // HUGE_PAGE_SIZE)
        self.touch_tables(first)

    @rule(data=st.data(), perm=PERMS)
    def linear(self, data: st.DataObject, perm: Perm) -> None:
        first, count = self.draw_range(data)
        if count == 0:
            return
        if data.draw(st.booleans()):  # congruent modulo 2 MiB: huge leaves possible
            pfn0 = data.draw(st.integers(0, 1 << 10)) * PAGES_PER_HUGE + first % PAGES_PER_HUGE
        else:
            pfn0 = data.draw(st.integers(0, 1 << 20))
        self.note_probes(first, count)
        before = self.pt.table_pages
        if self.occupied(first, count):
            with pytest.raises(ValueError):
                self.pt.linear_map(first * PAGE_SIZE, pfn0 * PAGE_SIZE, count * PAGE_SIZE, perm)
            assert self.pt.table_pages == before
            return
        self.pt.linear_map(first * PAGE_SIZE, pfn0 * PAGE_SIZE, count * PAGE_SIZE, perm)
        congruent = (first - pfn0) % PAGES_PER_HUGE == 0
        for i in range(count):
            self.pages[first + i] = (pfn0 + i, perm)
            self.touch_tables(first + i)
        end = first + count
        for block in range(first // PAGES_PER_HUGE, (end - 1) // PAGES_PER_HUGE + 1):
            lo, hi = block * PAGES_PER_HUGE, (block + 1) * PAGES_PER_HUGE
            if congruent and first <= lo and hi <= end and block not in self.pts:
                self.huge.add(block)
            else:
                self.pts.add(block)

    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        first, count = self.draw_range(data)
        self.note_probes(first, count)
        self.split_edges(first, count)
        got = self.pt.unmap(first * PAGE_SIZE, count * PAGE_SIZE)
        want = {}
        for page in range(first, first + count):
            if page in self.pages:
                pfn, perm = self.pages.pop(page)
                huge = page // PAGES_PER_HUGE in self.huge
                want[page] = (pfn, perm, HUGE_PAGE_SIZE if huge else PAGE_SIZE)
        assert expand(got) == want
        assert [e.vaddr for e in got] == sorted(e.vaddr for e in got)
        end = first + count
        for block in range(-(-first // PAGES_PER_HUGE), end // PAGES_PER_HUGE):
            self.pts.discard(block)  # fully covered: PT page freed
            self.huge.discard(block)

    @rule(data=st.data(), perm=PERMS)
    def protect(self, data: st.DataObject, perm: Perm) -> None:
        first, count = self.draw_range(data)
        self.note_probes(first, count)
        self.split_edges(first, count)
        flushed = self.pt.protect(first * PAGE_SIZE, count * PAGE_SIZE, perm)
        removed = False
        for page in range(first, first + count):
            if page in self.pages:
                pfn, old = self.pages[page]
                removed = removed or bool(int(old) & ~int(perm))
                self.pages[page] = (pfn, perm)
        assert flushed == removed

    @rule(data=st.data())
    def split(self, data: st.DataObject) -> None:
        page = self.first_page + data.draw(st.integers(0, self.npages - 1))
        block = page // PAGES_PER_HUGE
        was_huge = block in self.huge
        assert self.pt.split(page * PAGE_SIZE) == was_huge
        if was_huge:
            self.huge.remove(block)
            self.pts.add(block)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def extents_match_model(self) -> None:
        va, length = self.first_page * PAGE_SIZE, self.npages * PAGE_SIZE
        exts = list(self.pt.extents(va, length))
        want = {
            page: (pfn, perm, HUGE_PAGE_SIZE if page // PAGES_PER_HUGE in self.huge else PAGE_SIZE)
            for page, (pfn, perm) in self.pages.items()
        }
        assert expand(exts) == want
        for a, b in zip(exts, exts[1:], strict=False):
            assert a.end <= b.vaddr and not a.continues(b)  # sorted and coalesced
        assert self.pt.present_bytes(va, length) == len(self.pages) * PAGE_SIZE

    @invariant()
    def translate_matches_model(self) -> None:
        step = 37  # the window is small, but the invariant runs after every step
        probes = set(range(self.first_page, self.first_page + self.npages, step))
        for b in range(BLOCKS + 1):
            edge = self.BLOCK_BASE // PAGE_SIZE + b * PAGES_PER_HUGE
            probes |= {edge - 1, edge, edge + 1}
        probes |= self.probes
        for page in probes:
            got = self.pt.translate(page * PAGE_SIZE + 123)
            if page not in self.pages:
                assert got is None
                continue
            pfn, perm = self.pages[page]
            size = HUGE_PAGE_SIZE if page // PAGES_PER_HUGE in self.huge else PAGE_SIZE
            assert got == (pfn * PAGE_SIZE + 123, perm, size)

    @invariant()
    def counters_match_model(self) -> None:
        assert self.pt.huge_leaves == len(self.huge)
        assert self.pt.small_leaves == len(self.pages) - PAGES_PER_HUGE * len(self.huge)
        want = 1 + len(self.pdpts) + len(self.pds) + len(self.pts)
        assert self.pt.table_pages == want
        assert len(self.source.in_use) == want


class CrossGiantMachine(PageTableMachine):
    """The window straddles a 1 GiB boundary (two PDs)."""

    BLOCK_BASE = 5 * GIANT_PAGE_SIZE - 2 * HUGE_PAGE_SIZE


class CrossPdptMachine(PageTableMachine):
    """The window straddles a 512 GiB boundary (two PDPTs)."""

    BLOCK_BASE = 0x5000_0000_0000 + PDPT_SPAN - 2 * HUGE_PAGE_SIZE


TestPageTableMachine = PageTableMachine.TestCase
TestCrossGiantMachine = CrossGiantMachine.TestCase
TestCrossPdptMachine = CrossPdptMachine.TestCase


# --------------------------------------------------------------------------- unit tests


def new(giant: bool = False) -> tuple[PageTables, CountingTablePageSource]:
    src = CountingTablePageSource()
    return PageTables(src, giant_pages=giant), src


def test_root_is_a_counted_table_page() -> None:
    pt, src = new()
    assert pt.table_pages == 1 and len(src.in_use) == 1


def test_linear_map_one_gib_uses_2m_leaves() -> None:
    pt, _ = new()
    pt.linear_map(0, 0, GIANT_PAGE_SIZE, Perm.RW)
    assert pt.table_pages == 3  # root, PDPT, PD
    assert pt.huge_leaves == 512 and pt.small_leaves == 0
    assert pt.translate(0x1234_5678) == (0x1234_5678, Perm.RW, HUGE_PAGE_SIZE)
    assert list(pt.extents(0, GIANT_PAGE_SIZE)) == [
        MappedExtent(0, 0, GIANT_PAGE_SIZE // PAGE_SIZE, Perm.RW, HUGE_PAGE_SIZE)
    ]
    assert pt.present_bytes(0, 2 * GIANT_PAGE_SIZE) == GIANT_PAGE_SIZE


def test_unaligned_linear_map_uses_4k_at_edges() -> None:
    pt, _ = new()
    va = 0x4000_0000_0000 + HUGE_PAGE_SIZE - 8 * PAGE_SIZE
    phys = 0x1000_0000 + HUGE_PAGE_SIZE - 8 * PAGE_SIZE
    length = 2 * HUGE_PAGE_SIZE + 16 * PAGE_SIZE
    pt.linear_map(va, phys, length, Perm.RW)
    assert pt.huge_leaves == 2 and pt.small_leaves == 16
    assert pt.translate(va) == (phys, Perm.RW, PAGE_SIZE)
    assert pt.translate(va + 8 * PAGE_SIZE) == (phys + 8 * PAGE_SIZE, Perm.RW, HUGE_PAGE_SIZE)
    last = va + length - PAGE_SIZE
    assert pt.translate(last) == (phys + length - PAGE_SIZE, Perm.RW, PAGE_SIZE)
    assert pt.translate(va + length) is None
    assert pt.table_pages == 1 + 1 + 1 + 2  # root, PDPT, PD, two edge PTs
    assert pt.present_bytes(va - HUGE_PAGE_SIZE, length + 2 * HUGE_PAGE_SIZE) == length


def test_incongruent_linear_map_is_all_4k() -> None:
    pt, _ = new()
    pt.linear_map(0, PAGE_SIZE, 2 * HUGE_PAGE_SIZE, Perm.R)
    assert pt.huge_leaves == 0 and pt.small_leaves == 1024
    assert pt.table_pages == 1 + 1 + 1 + 2
    assert len(list(pt.extents(0, 2 * HUGE_PAGE_SIZE))) == 1  # one contiguous run


def test_partial_protect_splits_huge_leaf() -> None:
    pt, _ = new()
    va = 0x4000_0020_0000
    pt.map_huge(va, 512, Perm.RW)
    before = pt.table_pages
    assert pt.protect(va + PAGE_SIZE, PAGE_SIZE, Perm.R) is True
    assert pt.table_pages == before + 1
    assert pt.huge_leaves == 0 and pt.small_leaves == 512
    assert pt.translate(va) == (512 * PAGE_SIZE, Perm.RW, PAGE_SIZE)
    assert pt.translate(va + PAGE_SIZE) == (513 * PAGE_SIZE, Perm.R, PAGE_SIZE)
    assert pt.translate(va + 2 * PAGE_SIZE) == (514 * PAGE_SIZE, Perm.RW, PAGE_SIZE)
    # Restoring the permission merges the PT back to one run, but stays 4K (no promotion).
    assert pt.protect(va + PAGE_SIZE, PAGE_SIZE, Perm.RW) is False
    assert len(list(pt.extents(va, HUGE_PAGE_SIZE))) == 1
    assert pt.translate(va)[2] == PAGE_SIZE


def test_protect_whole_huge_leaf_keeps_it_huge() -> None:
    pt, _ = new()
    pt.map_huge(0, 0, Perm.RW)
    assert pt.protect(0, HUGE_PAGE_SIZE, Perm.RWX) is False  # only adds X
    assert pt.translate(0) == (0, Perm.RWX, HUGE_PAGE_SIZE)
    assert pt.protect(0, HUGE_PAGE_SIZE, Perm.NONE) is True
    assert pt.translate(5) == (5, Perm.NONE, HUGE_PAGE_SIZE)  # PROT_NONE is still mapped
    assert pt.table_pages == 3


def test_unmap_whole_block_frees_pt() -> None:
    pt, src = new()
    va = 0x6000_0000_0000
    pt.map(va + 5 * PAGE_SIZE, [(100, 3)], Perm.RW)
    assert pt.table_pages == 4
    pt_pfns = set(src.in_use)
    got = pt.unmap(va, HUGE_PAGE_SIZE)
    assert got == [MappedExtent(va + 5 * PAGE_SIZE, 100, 3, Perm.RW, PAGE_SIZE)]
    assert pt.table_pages == 3 and src.frees == 1
    assert len(pt_pfns - src.in_use) == 1
    # A partial unmap leaves the (now empty) PT in place, and then the block stays 4K.
    pt.map(va, [(7, 1)], Perm.R)
    pt.unmap(va, PAGE_SIZE)
    assert pt.table_pages == 4 and pt.has_pt(va)
    with pytest.raises(ValueError):
        pt.map_huge(va, 0, Perm.R)
    pt.linear_map(va, 0, HUGE_PAGE_SIZE, Perm.R)  # descends into the PT, like OSv's walker
    assert pt.translate(va) == (0, Perm.R, PAGE_SIZE)
    assert pt.table_pages == 4


def test_unmap_reports_huge_and_split_pieces() -> None:
    pt, _ = new()
    pt.linear_map(0, 0, 3 * HUGE_PAGE_SIZE, Perm.RW)
    got = pt.unmap(HUGE_PAGE_SIZE - PAGE_SIZE, HUGE_PAGE_SIZE + 2 * PAGE_SIZE)
    assert got == [
        MappedExtent(HUGE_PAGE_SIZE - PAGE_SIZE, 511, 1, Perm.RW, PAGE_SIZE),
        MappedExtent(HUGE_PAGE_SIZE, 512, 512, Perm.RW, HUGE_PAGE_SIZE),
        MappedExtent(2 * HUGE_PAGE_SIZE, 1024, 1, Perm.RW, PAGE_SIZE),
    ]
    assert pt.huge_leaves == 0 and pt.small_leaves == 1022
    assert pt.table_pages == 5  # root, PDPT, PD, two PTs from the splits
    assert pt.unmap(0, GIANT_PAGE_SIZE) == [
        MappedExtent(0, 0, 511, Perm.RW, PAGE_SIZE),
        MappedExtent(2 * HUGE_PAGE_SIZE + PAGE_SIZE, 1025, 511, Perm.RW, PAGE_SIZE),
    ]
    assert pt.table_pages == 3 and pt.small_leaves == 0


def test_split_for_nohugepage() -> None:
    pt, _ = new()
    pt.map_huge(HUGE_PAGE_SIZE, 1024, Perm.RX)
    assert pt.split(HUGE_PAGE_SIZE + 7 * PAGE_SIZE) is True
    assert pt.split(HUGE_PAGE_SIZE) is False
    assert pt.split(0) is False
    assert pt.translate(HUGE_PAGE_SIZE + 7 * PAGE_SIZE) == (1031 * PAGE_SIZE, Perm.RX, PAGE_SIZE)
    assert pt.table_pages == 4 and pt.small_leaves == 512


def test_giant_pages() -> None:
    pt, _ = new(giant=True)
    pt.linear_map(0, 0, 2 * GIANT_PAGE_SIZE + HUGE_PAGE_SIZE, Perm.RW)
    assert pt.giant_leaves == 2 and pt.huge_leaves == 1
    assert pt.table_pages == 3  # root, PDPT, one PD for the 2 MiB tail
    assert pt.translate(GIANT_PAGE_SIZE + 5) == (GIANT_PAGE_SIZE + 5, Perm.RW, GIANT_PAGE_SIZE)
    # A partial protect splits the 1 GiB leaf into a PD, then one 2 MiB leaf into a PT.
    assert pt.protect(PAGE_SIZE, PAGE_SIZE, Perm.R) is True
    assert pt.table_pages == 5
    assert pt.giant_leaves == 1 and pt.huge_leaves == 1 + 511 and pt.small_leaves == 512
    assert pt.translate(PAGE_SIZE) == (PAGE_SIZE, Perm.R, PAGE_SIZE)
    assert pt.translate(HUGE_PAGE_SIZE) == (HUGE_PAGE_SIZE, Perm.RW, HUGE_PAGE_SIZE)
    got = pt.unmap(GIANT_PAGE_SIZE, GIANT_PAGE_SIZE)
    assert got == [
        MappedExtent(
            GIANT_PAGE_SIZE, GIANT_PAGE_SIZE // PAGE_SIZE, 262144, Perm.RW, GIANT_PAGE_SIZE
        )
    ]
    # Incongruent modulo 1 GiB but congruent modulo 2 MiB: 2 MiB leaves only.
    pt2, _ = new(giant=True)
    pt2.linear_map(0, HUGE_PAGE_SIZE, GIANT_PAGE_SIZE, Perm.R)
    assert pt2.giant_leaves == 0 and pt2.huge_leaves == 512


GIANT_BASE = 0x4000_0000_0000
GIANT_PAGES = 2 * GIANT_PAGE_SIZE // PAGE_SIZE
_giant_edges = [k * PAGES_PER_HUGE + d for k in range(0, 1025, 255) for d in (-1, 0, 1)]
GIANT_OFFSETS = st.one_of(
    st.integers(0, GIANT_PAGES),
    st.sampled_from([e for e in _giant_edges if 0 <= e <= GIANT_PAGES]),
)
GIANT_OPS = st.lists(
    st.tuples(st.sampled_from(["unmap", "protect", "split"]), GIANT_OFFSETS, GIANT_OFFSETS, PERMS),
    max_size=5,
)


@given(ops=GIANT_OPS)
def test_giant_pages_random_ops(ops: list[tuple[str, int, int, Perm]]) -> None:
    """2 GiB mapped with 1 GiB leaves, then random unmap/protect/split, checked point-wise:
    each probed page tracks its own perm and leaf level (a leaf splits when an operation
    covers it only partly, or when split() hits its 2 MiB block)."""
    pt, _ = new(giant=True)
    pt.linear_map(GIANT_BASE, 0, 2 * GIANT_PAGE_SIZE, Perm.RW)
    probes = {0, GIANT_PAGES - 1}
    for _, a, b, _ in ops:
        probes |= {p for x in (a, b) for p in (x - 1, x) if 0 <= p < GIANT_PAGES}
    state = {p: [Perm.RW, 2] for p in probes}  # page -> [perm, leaf level] (None: unmapped)
    for op, a, b, perm in ops:
        lo, hi = min(a, b), max(a, b)
        if op == "split":
            lo, hi = lo, lo + 1
            pt.split(GIANT_BASE + lo * PAGE_SIZE)
        elif op == "unmap":
            pt.unmap(GIANT_BASE + lo * PAGE_SIZE, (hi - lo) * PAGE_SIZE)
        else:
            pt.protect(GIANT_BASE + lo * PAGE_SIZE, (hi - lo) * PAGE_SIZE, perm)
        if lo == hi:
            continue
        for page, st_ in state.items():
            if st_[0] is None:
                continue
            while st_[1] > 0:
                leaf = PAGE_SIZE << (9 * st_[1]) >> 12  # pages per leaf at this level
                first = page - page % leaf
                if op == "split":
                    must = st_[1] >= 1 and first <= lo < first + leaf
                else:
                    inside = first < hi and lo < first + leaf
                    must = inside and not (lo <= first and first + leaf <= hi)
                if not must:
                    break
                st_[1] -= 1
            if lo <= page < hi and op != "split":
                if op == "unmap":
                    st_[0] = None
                else:
                    st_[0] = perm
    for page, (perm, level) in state.items():
        got = pt.translate(GIANT_BASE + page * PAGE_SIZE)
        if perm is None:
            assert got is None
        else:
            assert got == (page * PAGE_SIZE, perm, PAGE_SIZE << (9 * level))
    total = sum(ext.npages for ext in pt.extents(GIANT_BASE, 2 * GIANT_PAGE_SIZE))
    assert total * PAGE_SIZE == pt.present_bytes(GIANT_BASE, 2 * GIANT_PAGE_SIZE)
    assert total == pt.small_leaves + pt.huge_leaves * PAGES_PER_HUGE + pt.giant_leaves * 262144


def test_one_tib_linear_map_in_three_areas_is_cheap() -> None:
    pt, _ = new()
    tib = 1 << 40
    for area in (0x4000_0000_0000, 0x5000_0000_0000, 0x6000_0000_0000):
        pt.linear_map(area, 0, tib, Perm.RW)
    # Per area: 1 TiB / 1 GiB PDs + 2 PDPTs (512 GiB each); plus the shared root.
    assert pt.table_pages == 1 + 3 * (2 + tib // GIANT_PAGE_SIZE)
    assert pt.huge_leaves == 3 * tib // HUGE_PAGE_SIZE
    assert pt.translate(0x5000_0000_0000 + tib - 1) == (tib - 1, Perm.RW, HUGE_PAGE_SIZE)
    assert pt.protect(0x4000_0000_0000, tib, Perm.R) is True
    assert pt.present_bytes(0x4000_0000_0000, 3 * tib) == tib
    got = pt.unmap(0x6000_0000_0000, tib)
    assert got == [MappedExtent(0x6000_0000_0000, 0, tib // PAGE_SIZE, Perm.RW, HUGE_PAGE_SIZE)]
    assert pt.table_pages == 1 + 3 * (2 + tib // GIANT_PAGE_SIZE)  # PDs are never freed


def test_contiguous_4k_block_is_o1() -> None:
    pt, _ = new()
    pt.map(0, [(512, 256), (768, 256)], Perm.RW)  # two extents that merge into one run
    (ext,) = pt.extents(0, HUGE_PAGE_SIZE)
    assert ext == MappedExtent(0, 512, 512, Perm.RW, PAGE_SIZE)
    pd = pt._root.entries[0].entries[0]
    assert len(pd.entries[0].entries) == 1  # one run object for 512 pages
    # A large 4K mapping costs one run per PT.
    pt.map(GIANT_PAGE_SIZE, [(0, GIANT_PAGE_SIZE // PAGE_SIZE)], Perm.R)
    assert pt.table_pages == 1 + 1 + 2 + 1 + 512
    assert len(list(pt.extents(GIANT_PAGE_SIZE, GIANT_PAGE_SIZE))) == 1


def test_map_over_mapping_is_rejected_without_change() -> None:
    pt, src = new()
    pt.map(HUGE_PAGE_SIZE + 10 * PAGE_SIZE, [(1, 1)], Perm.R)
    before = (pt.table_pages, set(src.in_use), list(pt.extents(0, GIANT_PAGE_SIZE)))
    with pytest.raises(ValueError):
        pt.map(0, [(5, 600)], Perm.R)
    with pytest.raises(ValueError):
        pt.linear_map(0, 0, GIANT_PAGE_SIZE, Perm.R)
    with pytest.raises(ValueError):
        pt.map_huge(HUGE_PAGE_SIZE, 0, Perm.R)
    assert (pt.table_pages, set(src.in_use), list(pt.extents(0, GIANT_PAGE_SIZE))) == before


def test_overlap_rolls_back_new_tables() -> None:
    pt, src = new()
    pt.map(GIANT_PAGE_SIZE, [(1, 1)], Perm.R)
    before = pt.table_pages
    with pytest.raises(ValueError):
        pt.map(GIANT_PAGE_SIZE - 4 * PAGE_SIZE, [(5, 8)], Perm.R)  # new PD + PT, then overlap
    assert pt.table_pages == before and len(src.in_use) == before


def test_memory_error_changes_nothing() -> None:
    src = CountingTablePageSource(limit=3)
    pt = PageTables(src)
    with pytest.raises(MemoryError):
        pt.map(0, [(9, 2 * PAGES_PER_HUGE)], Perm.RW)  # needs root + PDPT + PD + 2 PTs
    assert pt.table_pages == 1 and pt.small_leaves == 0
    assert pt.present_bytes(0, GIANT_PAGE_SIZE) == 0
    pt.map_huge(0, 0, Perm.RW)
    with pytest.raises(MemoryError):
        pt.protect(PAGE_SIZE, PAGE_SIZE, Perm.R)  # the split needs a PT
    assert pt.translate(PAGE_SIZE) == (PAGE_SIZE, Perm.RW, HUGE_PAGE_SIZE)


@pytest.mark.parametrize(
    "call",
    [
        lambda pt: pt.map(1, [(0, 1)], Perm.R),
        lambda pt: pt.map(0, [(-1, 1)], Perm.R),
        lambda pt: pt.map((1 << 48) - PAGE_SIZE, [(0, 2)], Perm.R),
        lambda pt: pt.map_huge(PAGE_SIZE, 0, Perm.R),
        lambda pt: pt.map_huge(0, 1, Perm.R),
        lambda pt: pt.linear_map(0, 1, PAGE_SIZE, Perm.R),
        lambda pt: pt.unmap(0, 1),
        lambda pt: pt.protect(-PAGE_SIZE, PAGE_SIZE, Perm.R),
        lambda pt: pt.translate(1 << 48),
        lambda pt: pt.split(5),
    ],
)
def test_bad_input_is_rejected(call) -> None:
    pt, _ = new()
    with pytest.raises(ValueError):
        call(pt)


def test_top_of_address_space() -> None:
    pt, _ = new()
    top = (1 << 48) - HUGE_PAGE_SIZE
    pt.map_huge(top, 0, Perm.R)
    assert pt.translate((1 << 48) - 1) == (HUGE_PAGE_SIZE - 1, Perm.R, HUGE_PAGE_SIZE)
    assert pt.protect(top, HUGE_PAGE_SIZE, Perm.RW) is False
    assert [e.leaf_size for e in pt.unmap(top, HUGE_PAGE_SIZE)] == [HUGE_PAGE_SIZE]
