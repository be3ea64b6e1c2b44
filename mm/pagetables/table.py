"""One page-table page whose 512 entries are stored as runs, never one object per entry.

A table at level ``L`` (3 = PML4, 2 = PDPT, 1 = PD, 0 = PT) maps ``512 * span(L)`` bytes
from ``base``.  Its ``entries`` map the first index of each occupied slot range to either
a child :class:`Table` (exactly one index) or a :class:`Run` of leaves.  This keeps a
1 TiB linear map or a physically contiguous 2 MiB block of 4K pages O(1) objects.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import NamedTuple, Union

from mmsim.mm.constants import PAGE_SHIFT

from .perm import Perm

ENTRIES = 512
LEVEL_BITS = 9
TOP_LEVEL = 3
#: Highest level that may hold leaves (1 GiB pages in a PDPT).
MAX_LEAF_LEVEL = 2
VA_LIMIT = 1 << 48


def entry_span(level: int) -> int:
    """Bytes mapped by one entry of a level-``level`` table."""
    return 1 << (PAGE_SHIFT + LEVEL_BITS * level)


def leaf_pages(level: int) -> int:
    """4 KiB frames covered by one leaf at ``level`` (so pfn step between entries)."""
    return 1 << (LEVEL_BITS * level)


class Run(NamedTuple):
    """``count`` consecutive leaf entries with frames ``pfn + i * leaf_pages`` and equal perm."""

    count: int
    pfn: int
    perm: Perm


Entry = Union["Table", Run]


class Entries:
    """A table's entries by first index: a dict plus its sorted keys.

    A table holds at most 512 keys, so a plain list with bisect beats a SortedDict, whose
    construction alone cost more than a whole 2 MiB block's mapping (one table is made per
    block of 4K pages).
    """

    __slots__ = ("_d", "_keys")

    def __init__(self) -> None:
        self._d: dict[int, Entry] = {}
        self._keys: list[int] = []

    def __getitem__(self, key: int) -> Entry:
        return self._d[key]

    def __setitem__(self, key: int, value: Entry) -> None:
        if key not in self._d:
            keys = self._keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
        self._d[key] = value

    def __delitem__(self, key: int) -> None:
        del self._d[key]
        keys = self._keys
        del keys[bisect_left(keys, key)]

    def __contains__(self, key: int) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._keys))

    def values(self) -> list[Entry]:
        d = self._d
        return [d[k] for k in self._keys]

    def items(self) -> list[tuple[int, Entry]]:
        d = self._d
        return [(k, d[k]) for k in self._keys]

    def bisect_right(self, key: int) -> int:
        return bisect_right(self._keys, key)

    def peekitem(self, pos: int) -> tuple[int, Entry]:
        k = self._keys[pos]
        return k, self._d[k]

    def irange(self, lo: int, hi: int) -> list[int]:
        """Keys in ``[lo, hi]`` (inclusive, as SortedDict.irange), as a snapshot."""
        keys = self._keys
        return keys[bisect_left(keys, lo):bisect_right(keys, hi)]


class Table:
    """One table page; ``pfn`` is the frame it occupies (counted as table memory)."""

    __slots__ = ("level", "base", "span", "pfn", "entries")

    def __init__(self, level: int, base: int, pfn: int) -> None:
        self.level = level
        self.base = base
        self.span = entry_span(level)
        self.pfn = pfn
        self.entries = Entries()

    def index_range(self, start: int, end: int) -> tuple[int, int]:
        """Indices ``[i0, i1)`` of the entries intersecting ``[start, end)`` (clipped)."""
        shift = PAGE_SHIFT + LEVEL_BITS * self.level
        i0 = max((start - self.base) >> shift, 0)
        i1 = min(-((self.base - end) >> shift), ENTRIES)
        return i0, i1

    def covering(self, idx: int) -> tuple[int, Entry] | None:
        """The entry (key, value) that occupies index ``idx``, if any."""
        d = self.entries
        pos = d.bisect_right(idx)
        if pos == 0:
            return None
        key, val = d.peekitem(pos - 1)
        if key == idx or (isinstance(val, Run) and key + val.count > idx):
            return key, val
        return None

    def items_in(self, i0: int, i1: int) -> list[tuple[int, Entry]]:
        """Snapshot of the entries intersecting indices ``[i0, i1)``, in index order.

        A snapshot, so callers may rewrite entries while iterating.
        """
        if i0 >= i1:
            return []
        d = self.entries
        out: list[tuple[int, Entry]] = []
        cov = self.covering(i0)
        if cov is not None and cov[0] < i0:
            out.append(cov)
        out.extend((k, d[k]) for k in d.irange(i0, i1 - 1))
        return out

    def carve(self, key: int, run: Run, lo: int, hi: int) -> Run:
        """Remove indices ``[lo, hi)`` from ``run`` (stored at ``key``) and return the
        removed part (which starts at ``lo``); the pieces outside stay in place."""
        d = self.entries
        step = leaf_pages(self.level)
        end = key + run.count
        del d[key]
        if lo > key:
            d[key] = Run(lo - key, run.pfn, run.perm)
        if hi < end:
            d[hi] = Run(end - hi, run.pfn + (hi - key) * step, run.perm)
        return Run(hi - lo, run.pfn + (lo - key) * step, run.perm)

    def coalesce(self, i0: int, i1: int) -> None:
        """Merge adjacent compatible runs among the entries touching ``[i0, i1)``,
        including the neighbours just outside it."""
        d = self.entries
        lo = max(i0 - 1, 0)
        cov = self.covering(lo)
        first = cov[0] if cov is not None else lo
        step = leaf_pages(self.level)
        prev_key = -1
        prev: Entry | None = None
        for k in list(d.irange(first, i1)):
            val = d[k]
            if (
                isinstance(val, Run)
                and isinstance(prev, Run)
                and prev_key + prev.count == k
                and prev.perm == val.perm
                and prev.pfn + prev.count * step == val.pfn
            ):
                prev = Run(prev.count + val.count, prev.pfn, prev.perm)
                d[prev_key] = prev
                del d[k]
            else:
                prev_key, prev = k, val
