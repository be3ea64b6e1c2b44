"""The unit in which mappings are reported: a physically contiguous run of leaves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mmsim.mm.constants import PAGE_SHIFT

from .perm import Perm


@dataclass(frozen=True, slots=True)
class MappedExtent:
    """``npages`` 4 KiB pages mapped from ``vaddr`` onto frames ``pfn``, ``pfn + 1``, ...

    ``leaf_size`` is the size of the page-table leaves that map them (4 KiB, 2 MiB or
    1 GiB); extents are reported per run of leaves, not per leaf, so a huge extent may
    cover several 2 MiB leaves (``npages`` is then a multiple of 512).
    """

    vaddr: int
    pfn: int
    npages: int
    perm: Perm
    leaf_size: int

    @property
    def length(self) -> int:
        """Bytes covered."""
        return self.npages << PAGE_SHIFT

    @property
    def end(self) -> int:
        """First virtual address after the extent."""
        return self.vaddr + (self.npages << PAGE_SHIFT)

    @property
    def phys(self) -> int:
        """Physical address of the first byte."""
        return self.pfn << PAGE_SHIFT

    def continues(self, other: MappedExtent) -> bool:
        """True if ``other`` directly follows this extent virtually and physically."""
        return (
            self.end == other.vaddr
            and self.pfn + self.npages == other.pfn
            and self.perm == other.perm
            and self.leaf_size == other.leaf_size
        )


def coalesce(extents: Iterable[MappedExtent]) -> Iterator[MappedExtent]:
    """Merge neighbours that continue each other, so that a contiguous mapping spread
    over many tables is reported as one extent (callers free frames per extent)."""
    pending: MappedExtent | None = None
    for ext in extents:
        if pending is not None and pending.continues(ext):
            pending = MappedExtent(
                pending.vaddr, pending.pfn, pending.npages + ext.npages, ext.perm, ext.leaf_size
            )
            continue
        if pending is not None:
            yield pending
        pending = ext
    if pending is not None:
        yield pending
