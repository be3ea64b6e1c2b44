"""x86-64 4-level page tables (reference §6) kept as extents.

Every table stores runs of leaves (see :mod:`.table`), so the cost of an operation is
proportional to the tables and runs it touches, never to the pages in its range: the
simulator maps up to 1 TiB of RAM three times at boot.

Behaviour mirrored from OSv:

* table pages (the root included) come from a :class:`TablePageSource` and are counted;
* an operation that covers only part of a 2 MiB (1 GiB) leaf first splits it into a table
  holding 512 smaller leaves inheriting its frames and permissions;
* the walker puts a large leaf only where an entry is empty and fully covered, and
  descends into an existing table instead (so an empty PT keeps a block at 4K);
* table pages are freed only when an unmap clears a fully covered 2 MiB block that has a
  PT; PDs, PDPTs and the root are never freed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mmsim.mm.constants import HUGE_PAGE_SIZE, PAGE_SHIFT, PAGE_SIZE

from .extent import MappedExtent, coalesce
from .perm import Perm
from .source import TablePageSource
from .table import (
    ENTRIES,
    MAX_LEAF_LEVEL,
    TOP_LEVEL,
    VA_LIMIT,
    Run,
    Table,
    leaf_pages,
)

#: x86-64 physical addresses have at most 52 bits.
PHYS_LIMIT = 1 << 52

_Install = tuple[Table, int, Run]
_Created = tuple[Table, int, Table]


def _check_range(vaddr: int, length: int) -> None:
    if vaddr % PAGE_SIZE or length % PAGE_SIZE:
        raise ValueError(f"range {vaddr:#x}+{length:#x} is not 4 KiB aligned")
    if vaddr < 0 or length < 0 or vaddr + length > VA_LIMIT:
        raise ValueError(f"range {vaddr:#x}+{length:#x} is outside [0, 2**48)")


class PageTables:
    """The page-table tree of one address space.

    Virtual addresses are bytes in ``[0, 2**48)`` (no sign extension: the simulator's
    areas at 0x4000_0000_0000 and up are used as is); frames are pfns (phys // 4096).
    """

    def __init__(self, source: TablePageSource, *, giant_pages: bool = False) -> None:
        self._source = source
        self.giant_pages = giant_pages
        self._table_pages = 0
        # Leaf entries currently mapped, per level (4K, 2M, 1G).
        self._leaves = [0, 0, 0]
        self._root = self._new_table(TOP_LEVEL, 0)

    # ------------------------------------------------------------------ counters

    @property
    def table_pages(self) -> int:
        """Table pages currently held, the root included."""
        return self._table_pages

    @property
    def small_leaves(self) -> int:
        """Number of 4 KiB leaf entries currently mapped."""
        return self._leaves[0]

    @property
    def huge_leaves(self) -> int:
        """Number of 2 MiB leaf entries currently mapped."""
        return self._leaves[1]

    @property
    def giant_leaves(self) -> int:
        """Number of 1 GiB leaf entries currently mapped."""
        return self._leaves[2]

    # ------------------------------------------------------------------ mapping

    def map(self, vaddr: int, extents: Sequence[tuple[int, int]], perm: Perm) -> None:
        """Map ``sum(npages)`` pages from ``vaddr`` with 4 KiB leaves onto the ``(pfn,
        npages)`` extents in order.  All or nothing: raises ValueError (nothing changed)
        if any page is already mapped, MemoryError (nothing changed) if a table page
        cannot be had."""
        segments: list[tuple[int, int, int, int]] = []
        va = vaddr
        for pfn, npages in extents:
            if npages < 0 or pfn < 0 or (pfn + npages) << PAGE_SHIFT > PHYS_LIMIT:
                raise ValueError(f"bad extent ({pfn:#x}, {npages})")
            length = npages << PAGE_SHIFT
            if length:
                segments.append((va, va + length, va - (pfn << PAGE_SHIFT), 0))
            va += length
        _check_range(vaddr, va - vaddr)
        self._map_segments(segments, perm)

    def map_huge(self, vaddr: int, pfn: int, perm: Perm) -> None:
        """Map one 2 MiB leaf.  Raises ValueError if the block is not empty *or* already
        has a PT: OSv's walker would descend into that table and map 4K pages, so the
        caller (populate) must check :meth:`has_pt` and fall back to :meth:`map`."""
        if vaddr % HUGE_PAGE_SIZE or pfn % leaf_pages(1):
            raise ValueError(f"huge mapping {vaddr:#x} -> pfn {pfn:#x} is not 2 MiB aligned")
        _check_range(vaddr, HUGE_PAGE_SIZE)
        if pfn < 0 or (pfn << PAGE_SHIFT) + HUGE_PAGE_SIZE > PHYS_LIMIT:
            raise ValueError(f"bad pfn {pfn:#x}")
        if self.has_pt(vaddr):
            raise ValueError(f"block {vaddr:#x} has a page table; map it with 4K pages")
        self._map_segments([(vaddr, vaddr + HUGE_PAGE_SIZE, vaddr - (pfn << PAGE_SHIFT), 1)], perm)

    def linear_map(self, vaddr: int, phys: int, length: int, perm: Perm) -> None:
        """Map ``[phys, phys + length)`` at ``vaddr`` with the largest leaves that fit:
        2 MiB (1 GiB with ``giant_pages``) wherever an entry is fully covered, empty and
        ``vaddr - phys`` is aligned to its size, 4 KiB elsewhere."""
        _check_range(vaddr, length)
        if phys % PAGE_SIZE or phys < 0 or phys + length > PHYS_LIMIT:
            raise ValueError(f"bad physical range {phys:#x}+{length:#x}")
        max_level = MAX_LEAF_LEVEL if self.giant_pages else 1
        if length:
            self._map_segments([(vaddr, vaddr + length, vaddr - phys, max_level)], perm)

    def _map_segments(self, segments: list[tuple[int, int, int, int]], perm: Perm) -> None:
        """Two phases so failures change nothing: plan (create missing tables, detect
        overlap, list the runs to install), then install the runs."""
        created: list[_Created] = []
        installs: list[_Install] = []
        perm = Perm(perm)
        root = self._root
        hint = root  # the PD of the previous segment: segments come in address order
        try:
            for start, end, delta, max_level in segments:
                top = hint
                if not (top.base <= start and end <= top.base + ENTRIES * top.span):
                    top = root
                self._plan(top, start, end, delta, max_level, perm, created, installs)
                if len(segments) > 1:
                    hint = self._table_at(end - 1, 1) or root
        except BaseException:
            for parent, idx, child in reversed(created):
                del parent.entries[idx]
                self._free_table(child)
            raise
        for table, idx, run in installs:
            table.entries[idx] = run
            self._leaves[table.level] += run.count
            table.coalesce(idx, idx + run.count)

    def _table_at(self, vaddr: int, level: int) -> Table | None:
        """The existing table of ``level`` whose range holds ``vaddr``, if the path exists."""
        t = self._root
        while t.level > level:
            cov = t.covering((vaddr - t.base) // t.span)
            if cov is None or isinstance(cov[1], Run):
                return None
            t = cov[1]
        return t

    def _plan(
        self,
        table: Table,
        start: int,
        end: int,
        delta: int,
        max_level: int,
        perm: Perm,
        created: list[_Created],
        installs: list[_Install],
    ) -> None:
        """Plan mapping ``[start, end)`` (frame of address ``a`` = ``(a - delta) >> 12``)
        inside ``table``: leaves on the fully covered, empty, suitably aligned entries,
        recursion into partial entries and existing child tables."""
        level, span, base = table.level, table.span, table.base
        i0, i1 = table.index_range(start, end)
        a = b = i1  # leaf-eligible indices [a, b)
        if level <= max_level and delta % span == 0:
            a = max(-((base - start) // span), 0)
            b = min((end - base) // span, ENTRIES)
            if a >= b:
                a = b = i1
        # Partially covered or ineligible entries: descend (only possible above level 0).
        for idx in (*range(i0, a), *range(b, i1)):
            cov = table.covering(idx)
            if cov is None:
                child = self._new_table(level - 1, base + idx * span)
                table.entries[idx] = child
                created.append((table, idx, child))
            elif isinstance(cov[1], Run):
                raise ValueError(f"{max(start, base + idx * span):#x} is already mapped")
            else:
                child = cov[1]
            self._plan(
                child,
                max(start, child.base),
                min(end, child.base + span),
                delta,
                max_level,
                perm,
                created,
                installs,
            )
        # Leaf range: runs in the gaps, existing (empty-or-not) tables are descended.
        cursor = a
        for key, val in table.items_in(a, b):
            if isinstance(val, Run):
                raise ValueError(f"{base + max(key, a) * span:#x} is already mapped")
            if key > cursor:
                pfn = (base + cursor * span - delta) >> PAGE_SHIFT
                installs.append((table, cursor, Run(key - cursor, pfn, perm)))
            self._plan(val, val.base, val.base + span, delta, max_level, perm, created, installs)
            cursor = key + 1
        if cursor < b:
            pfn = (base + cursor * span - delta) >> PAGE_SHIFT
            installs.append((table, cursor, Run(b - cursor, pfn, perm)))

    # ------------------------------------------------------------------ changing

    def unmap(self, vaddr: int, length: int) -> list[MappedExtent]:
        """Remove every mapping in the range (holes allowed) and return what was mapped,
        in address order and coalesced, so the caller can free the frames.  Leaves fully
        inside come back with their own size; partly covered large leaves are split first
        and the removed pieces come back as 4K extents.  A fully covered 2 MiB block's PT
        page is freed."""
        _check_range(vaddr, length)
        if not length:
            return []
        end = vaddr + length
        self._split_at(vaddr)
        self._split_at(end)
        raw: list[MappedExtent] = []
        self._unmap_in(self._root, vaddr, end, raw)
        return list(coalesce(raw))

    def _unmap_in(self, table: Table, start: int, end: int, out: list[MappedExtent]) -> None:
        level, span, base = table.level, table.span, table.base
        i0, i1 = table.index_range(start, end)
        for key, val in table.items_in(i0, i1):
            if isinstance(val, Table):
                cstart, cend = val.base, val.base + span
                if level == 1 and start <= cstart and cend <= end:
                    out.extend(self._walk(val, cstart, cend))
                    self._leaves[0] -= sum(run.count for run in val.entries.values())
                    del table.entries[key]
                    self._free_table(val)
                else:
                    self._unmap_in(val, max(start, cstart), min(end, cend), out)
            else:
                lo, hi = max(key, i0), min(key + val.count, i1)
                piece = table.carve(key, val, lo, hi)
                self._leaves[level] -= piece.count
                out.append(
                    MappedExtent(
                        base + lo * span,
                        piece.pfn,
                        piece.count * leaf_pages(level),
                        piece.perm,
                        span,
                    )
                )

    def protect(self, vaddr: int, length: int, perm: Perm) -> bool:
        """Set ``perm`` on every present mapping in the range (holes allowed), splitting
        partly covered large leaves.  Returns True if some permission was removed, i.e.
        a TLB flush is needed."""
        _check_range(vaddr, length)
        if not length:
            return False
        end = vaddr + length
        self._split_at(vaddr)
        self._split_at(end)
        return self._protect_in(self._root, vaddr, end, Perm(perm))

    def _protect_in(self, table: Table, start: int, end: int, perm: Perm) -> bool:
        removed = False
        i0, i1 = table.index_range(start, end)
        changed = False
        for key, val in table.items_in(i0, i1):
            if isinstance(val, Table):
                cstart = val.base
                if self._protect_in(val, max(start, cstart), min(end, cstart + table.span), perm):
                    removed = True
            elif val.perm != perm:
                lo, hi = max(key, i0), min(key + val.count, i1)
                piece = table.carve(key, val, lo, hi)
                table.entries[lo] = piece._replace(perm=perm)
                removed = removed or bool(int(val.perm) & ~int(perm))
                changed = True
        if changed:
            table.coalesce(i0, i1)
        return removed

    def split(self, vaddr: int) -> bool:
        """Split the large leaf containing ``vaddr`` down to 4 KiB leaves
        (MADV_NOHUGEPAGE).  True if there was a 2 MiB (or 1 GiB) leaf."""
        _check_range(vaddr, 0)
        table = self._root
        was_large = False
        while table.level > 0:
            idx = (vaddr - table.base) // table.span
            cov = table.covering(idx)
            if cov is None:
                break
            key, val = cov
            if isinstance(val, Table):
                table = val
            else:
                table = self._split_leaf(table, key, val, idx)
                was_large = True
        return was_large

    def _split_at(self, vaddr: int) -> None:
        """Make ``vaddr`` a leaf boundary by splitting a large leaf that straddles it.
        Only allocates; the translation of every address is unchanged."""
        if vaddr >= VA_LIMIT:
            return
        table = self._root
        while table.level > 0:
            idx, off = divmod(vaddr - table.base, table.span)
            cov = table.covering(idx)
            if cov is None or off == 0:
                return
            key, val = cov
            table = val if isinstance(val, Table) else self._split_leaf(table, key, val, idx)

    def _split_leaf(self, table: Table, key: int, run: Run, idx: int) -> Table:
        """Replace leaf ``idx`` of ``run`` by a table holding one run of 512 smaller
        leaves with the same frames and permission (O(1), like OSv's split)."""
        child = self._new_table(table.level - 1, table.base + idx * table.span)
        piece = table.carve(key, run, idx, idx + 1)
        child.entries[0] = Run(ENTRIES, piece.pfn, piece.perm)
        table.entries[idx] = child
        self._leaves[table.level] -= 1
        self._leaves[table.level - 1] += ENTRIES
        return child

    # ------------------------------------------------------------------ queries

    def translate(self, vaddr: int) -> tuple[int, Perm, int] | None:
        """``(physical address of vaddr, perm, leaf size)``, or None if not mapped."""
        if not 0 <= vaddr < VA_LIMIT:
            raise ValueError(f"{vaddr:#x} is outside [0, 2**48)")
        table = self._root
        while True:
            idx = (vaddr - table.base) // table.span
            cov = table.covering(idx)
            if cov is None:
                return None
            key, val = cov
            if isinstance(val, Table):
                table = val
                continue
            leaf_va = table.base + idx * table.span
            pfn = val.pfn + (idx - key) * leaf_pages(table.level)
            return (pfn << PAGE_SHIFT) + (vaddr - leaf_va), val.perm, table.span

    def has_pt(self, vaddr: int) -> bool:
        """True if the 2 MiB block containing ``vaddr`` is served by a PT (even an empty
        one): OSv then populates it with 4K pages, never a huge page."""
        if not 0 <= vaddr < VA_LIMIT:
            raise ValueError(f"{vaddr:#x} is outside [0, 2**48)")
        table = self._root
        while table.level > 1:
            cov = table.covering((vaddr - table.base) // table.span)
            if cov is None or not isinstance(cov[1], Table):
                return False
            table = cov[1]
        cov = table.covering((vaddr - table.base) // table.span)
        return cov is not None and isinstance(cov[1], Table)

    def extents(self, vaddr: int, length: int) -> Iterator[MappedExtent]:
        """Present mappings intersecting the range, clipped to it, in address order,
        coalesced across tables.  Must not be interleaved with changes."""
        _check_range(vaddr, length)
        return coalesce(self._walk(self._root, vaddr, vaddr + length))

    def present_bytes(self, vaddr: int, length: int) -> int:
        """Bytes mapped (PROT_NONE included) in the range."""
        return sum(ext.length for ext in self.extents(vaddr, length))

    def _walk(self, table: Table, start: int, end: int) -> Iterator[MappedExtent]:
        span, base = table.span, table.base
        for key, val in table.items_in(*table.index_range(start, end)):
            if isinstance(val, Table):
                yield from self._walk(val, max(start, val.base), min(end, val.base + span))
                continue
            run_va = base + key * span
            lo = max(start, run_va)
            hi = min(end, run_va + val.count * span)
            yield MappedExtent(
                lo, val.pfn + ((lo - run_va) >> PAGE_SHIFT), (hi - lo) >> PAGE_SHIFT, val.perm, span
            )

    # ------------------------------------------------------------------ table pages

    def _new_table(self, level: int, base: int) -> Table:
        table = Table(level, base, self._source.alloc_table_page())
        self._table_pages += 1
        return table

    def _free_table(self, table: Table) -> None:
        self._source.free_table_page(table.pfn)
        self._table_pages -= 1

    def __repr__(self) -> str:
        return (
            f"PageTables(table_pages={self._table_pages}, small={self._leaves[0]}, "
            f"huge={self._leaves[1]}, giant={self._leaves[2]})"
        )
