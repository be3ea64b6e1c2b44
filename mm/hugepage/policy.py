"""The one place that decides whether a 2 MiB page may back part of a mapping (reference §6).

OSv uses a huge page ⇔ the mapping is anonymous, not ``mmap_small`` (file VMAs always are;
MADV_NOHUGEPAGE sets it), the 2 MiB-aligned block lies fully inside the VMA (fault path) or the
populate range (MAP_POPULATE), the block is still empty, and an aligned 2 MiB physical run is free.
The first three are policy and live here; the last two are facts about the page tables and the
allocator that the address space checks when it acts. The configuration's ``hugepages: false``
turns every answer into "no", so that a run can be compared with and without huge pages.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsim.mm.constants import HUGE_PAGE_SIZE

__all__ = ["HugePagePolicy", "align_down", "align_up"]


def align_down(addr: int, align: int = HUGE_PAGE_SIZE) -> int:
    """``addr`` rounded down to a multiple of ``align`` (a power of two)."""
    return addr & ~(align - 1)


def align_up(addr: int, align: int = HUGE_PAGE_SIZE) -> int:
    """``addr`` rounded up to a multiple of ``align`` (a power of two)."""
    return (addr + align - 1) & ~(align - 1)


@dataclass(frozen=True)
class HugePagePolicy:
    """When 2 MiB pages are used; ``enabled=False`` is the configuration's ``hugepages: false``."""

    enabled: bool = True

    def allows(self, anonymous: bool, mmap_small: bool) -> bool:
        """May a mapping of this kind get huge pages at all?"""
        return self.enabled and anonymous and not mmap_small

    def span(self, anonymous: bool, mmap_small: bool, start: int, end: int) -> tuple[int, int]:
        """The 2 MiB-aligned blocks fully inside ``[start, end)`` that may be huge, as
        ``[lo, hi)``; empty (lo == hi) when none may. ``[start, end)`` is the VMA for a fault
        and the populate range for MAP_POPULATE."""
        if not self.allows(anonymous, mmap_small):
            return start, start
        lo, hi = align_up(start), align_down(end)
        return (lo, hi) if lo < hi else (start, start)

    def fault_block(
        self, anonymous: bool, mmap_small: bool, vma_start: int, vma_end: int, addr: int
    ) -> int | None:
        """Start of the 2 MiB block a fault at ``addr`` populates whole, or None for one 4K page."""
        lo, hi = self.span(anonymous, mmap_small, vma_start, vma_end)
        return align_down(addr) if lo <= addr < hi else None

    def hugetlb_available(self) -> bool:
        """MAP_HUGETLB needs huge pages; without them it fails with ENOMEM."""
        return self.enabled
