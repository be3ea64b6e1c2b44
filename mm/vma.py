"""The VMA list: the virtual memory areas of the one OSv address space (reference §6).

OSv keeps VMAs in a set ordered by start, between sentinels at 0 and the end of the mmap area.
VMAs split on partial munmap/mprotect/madvise and are never merged, so the count a user sees
here is OSv's count, not Linux's. The list is one object per VMA: its memory grows with the
mappings, never with their size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mmsim.mm.constants import HUGE_PAGE_SIZE, MMAP_AREA_END, MMAP_DEFAULT_START, PAGE_SIZE
from sortedcontainers import SortedDict

__all__ = ["ANON", "FILE", "Vma", "VmaList"]

ANON = "anon"
FILE = "file"


@dataclass(slots=True, eq=False)
class Vma:
    """One mapping ``[start, end)``; ``prot`` holds PROT_* bits (R=1, W=2, X=4).

    ``mmap_small`` forbids huge pages (always set on file VMAs, set by MADV_NOHUGEPAGE);
    ``cache_file`` is the page cache's handle of the mapped file when the mapping shares the
    file system's cached pages (None: private copies); ``owner`` is opaque to mm (the kernel
    keeps its trace handle there).
    """

    start: int
    end: int
    prot: int
    kind: str = ANON
    shared: bool = False
    mmap_small: bool = False
    hugetlb: bool = False
    path: str | None = None
    file_offset: int = 0  # file offset of ``start``
    file_size: int = 0  # the file's size when mapped (used if the file has gone since)
    cache_file: Any = None
    owner: Any = None

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def anonymous(self) -> bool:
        return self.kind == ANON

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def tail_from(self, addr: int) -> Vma:
        """A copy of this VMA's attributes for ``[addr, end)`` (the upper part of a split)."""
        return dataclasses.replace(
            self, start=addr, file_offset=self.file_offset + (addr - self.start)
        )


class VmaList:
    """VMAs ordered by start, with OSv's hole search and split-never-merge rules.

    ``reserved`` are address ranges no mapping may use (OSv's linear ranges inside the mmap area:
    the kernel image, and the null page here).
    """

    def __init__(self, reserved: Iterable[tuple[int, int]] = ()) -> None:
        self._by_start: SortedDict = SortedDict()
        self.reserved = sorted((s, e) for s, e in reserved if e > s)
        self.mapped_bytes = 0
        self._owner_bytes: dict[Any, int] = {}

    # -- bookkeeping ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_start)

    def __iter__(self) -> Iterator[Vma]:
        return iter(list(self._by_start.values()))

    def owner_bytes(self, owner: Any) -> int:
        """Bytes of the VMAs tagged with ``owner`` (0 once all are gone)."""
        return self._owner_bytes.get(owner, 0)

    def _account(self, vma: Vma, nbytes: int) -> None:
        self.mapped_bytes += nbytes
        if vma.owner is not None:
            left = self._owner_bytes.get(vma.owner, 0) + nbytes
            if left:
                self._owner_bytes[vma.owner] = left
            else:
                del self._owner_bytes[vma.owner]

    def insert(self, vma: Vma) -> None:
        """Add a VMA; the caller made sure its range is free."""
        if not (0 <= vma.start < vma.end <= MMAP_AREA_END) or vma.start % PAGE_SIZE or (
            vma.end % PAGE_SIZE
        ):
            raise ValueError(f"bad VMA [{vma.start:#x}, {vma.end:#x})")
        if not self.is_free(vma.start, vma.end):
            raise ValueError(f"VMA [{vma.start:#x}, {vma.end:#x}) overlaps another")
        self._by_start[vma.start] = vma
        self._account(vma, vma.length)

    def remove(self, vma: Vma) -> None:
        del self._by_start[vma.start]
        self._account(vma, -vma.length)

    def set_end(self, vma: Vma, end: int) -> None:
        """Grow or shrink a VMA in place (mremap); growing needs a free tail."""
        if end <= vma.start or end % PAGE_SIZE:
            raise ValueError("bad VMA end")
        if end > vma.end and not self.is_free(vma.end, end):
            raise ValueError("VMA tail is not free")
        self._account(vma, end - vma.end)
        vma.end = end

    # -- lookups -------------------------------------------------------------------------
    def find(self, addr: int) -> Vma | None:
        """The VMA containing ``addr``."""
        d = self._by_start
        pos = d.bisect_right(addr)
        if pos:
            vma = d.peekitem(pos - 1)[1]
            if addr < vma.end:
                return vma
        return None

    def intersecting(self, start: int, end: int) -> list[Vma]:
        """VMAs overlapping ``[start, end)``, in address order."""
        if end <= start:
            return []
        d = self._by_start
        out: list[Vma] = []
        first = self.find(start)
        if first is not None:
            out.append(first)
        for key in d.irange(start, end, inclusive=(first is None, False)):
            out.append(d[key])
        return out

    def first_gap(self, start: int, end: int) -> int | None:
        """First address in ``[start, end)`` not inside a VMA, or None if all of it is mapped."""
        cursor = start
        for vma in self.intersecting(start, end):
            if vma.start > cursor:
                return cursor
            cursor = vma.end
        return cursor if cursor < end else None

    def covers(self, start: int, end: int) -> bool:
        """True if every address of ``[start, end)`` lies in some VMA."""
        return self.first_gap(start, end) is None

    def is_free(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` is inside the mmap area and touches no VMA or reserved range."""
        if start < 0 or end > MMAP_AREA_END or end <= start:
            return False
        return self._obstacle(start, end) is None

    def _obstacle(self, start: int, end: int) -> int | None:
        """End of the lowest VMA or reserved range overlapping ``[start, end)``, or None."""
        found: int | None = None
        vmas = self.intersecting(start, end)
        if vmas:
            found = vmas[0].end
        for s, e in self.reserved:
            if s < end and start < e and (found is None or e < found):
                found = e
        return found

    # -- changes -------------------------------------------------------------------------
    def split_at(self, addr: int) -> None:
        """Make ``addr`` a VMA boundary by splitting the VMA that strictly contains it."""
        vma = self.find(addr)
        if vma is None or vma.start == addr:
            return
        upper = vma.tail_from(addr)
        vma.end = addr
        self._by_start[addr] = upper  # same owner and bytes: no accounting change

    def isolate(self, start: int, end: int) -> list[Vma]:
        """Split at both edges and return the VMAs now lying inside ``[start, end)``."""
        self.split_at(start)
        self.split_at(end)
        return self.intersecting(start, end)

    # -- placement (OSv's find_hole) -----------------------------------------------------
    def find_hole(self, hint: int | None, size: int, *, aligned_only: bool = False) -> int | None:
        """Where a new mapping of ``size`` bytes goes, or None (ENOMEM).

        The hint is returned if the range there is free; otherwise gaps are scanned upward from
        it (from 0x2000_0000_0000 without a hint). Below 2 MiB the first fit wins; from 2 MiB the
        first gap where a 2 MiB-aligned start fits, else the first unaligned fit.
        """
        start = MMAP_DEFAULT_START if not hint else hint - hint % PAGE_SIZE
        if hint and self.is_free(start, start + size) and (
            not aligned_only or start % HUGE_PAGE_SIZE == 0
        ):
            return start
        if size >= HUGE_PAGE_SIZE or aligned_only:
            found = self._scan(start, size, HUGE_PAGE_SIZE)
            if found is not None or aligned_only:
                return found
        return self._scan(start, size, PAGE_SIZE)

    def _scan(self, start: int, size: int, align: int) -> int | None:
        cursor = -(-start // align) * align
        while cursor + size <= MMAP_AREA_END:
            blocker = self._obstacle(cursor, cursor + size)
            if blocker is None:
                return cursor
            cursor = -(-blocker // align) * align
        return None

    # -- checks --------------------------------------------------------------------------
    def check(self) -> None:
        """Assert ordering, no overlap, and the byte counters."""
        prev_end = 0
        total = 0
        owners: dict[Any, int] = {}
        for key, vma in self._by_start.items():
            assert key == vma.start < vma.end, "VMA key or bounds wrong"
            assert vma.start >= prev_end, "VMAs overlap"
            assert vma.start % PAGE_SIZE == 0 and vma.end % PAGE_SIZE == 0
            for s, e in self.reserved:
                assert not (s < vma.end and vma.start < e), "VMA over a reserved range"
            prev_end = vma.end
            total += vma.length
            if vma.owner is not None:
                owners[vma.owner] = owners.get(vma.owner, 0) + vma.length
        assert total == self.mapped_bytes, f"mapped {self.mapped_bytes} != {total}"
        assert owners == self._owner_bytes, "owner byte counts are stale"
