"""The JVM's memory as the guest sees it: anonymous mappings whose resident pages follow the
bytes the real JVM has touched.

OSv gives the JVM its heap as ordinary anonymous memory (MAP_FIXED mmaps inside the reserved
range, java.cc), whose pages fault in on first write. Here the heap is one mapping of -Xmx bytes
in the guest's address space; the simulator makes its resident pages equal to the most heap the
real JVM has used (MemoryMXBean, and each collection's use before it), within what it has
committed, filling holes from the bottom as that grows and dropping pages from the top
(MADV_DONTNEED) when the JVM uncommits, so that page faults, huge pages and the allocator see
the JVM as OSv would.

A balloon's 2 MiB-aligned interior is a separate PROT_NONE mapping over the heap (OSv's
``jvm_balloon_vma``): mapping it evacuates the pages there back to the page allocator, and the
heap's resident target excludes it. Its edges (the array's parts outside the interior) stay
ordinary heap pages, counted as the balloon's.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsim.mm.address_space import PROT_READ, PROT_WRITE, AddressSpace
from mmsim.mm.constants import HUGE_PAGE_SIZE, PAGE_SIZE
from mmsim.mm.hugepage import align_down, align_up

__all__ = ["ARRAY_HEADER", "BalloonRange", "JavaHeap", "TrackedMapping"]

ARRAY_HEADER = 16  # a byte[]'s header with compressed class pointers: its elements follow


def _page_up(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE


class TrackedMapping:
    """An anonymous mapping whose resident bytes are driven to a target (outside excluded
    ranges): the fill order is bottom-up, the drop order top-down."""

    def __init__(self, space: AddressSpace, size: int, owner: object) -> None:
        self.space = space
        self.size = align_up(max(size, HUGE_PAGE_SIZE))
        self.owner = owner
        self.base = space.map_anon(self.size, populate=False, owner=owner)
        self.syncs = 0
        #: resident bytes as last counted: only this object's methods change its pages, and
        #: the reclaimer and the balloon ask after every allocation (a page-table walk each)
        self._resident: int | None = None

    # -- what is excluded (balloon interiors in the heap) ---------------------------------
    def excluded(self) -> list[tuple[int, int]]:
        return []

    def segments(self) -> list[tuple[int, int]]:
        """The parts of the mapping whose pages follow the target, in address order."""
        out: list[tuple[int, int]] = []
        cursor = self.base
        for a, b in sorted(self.excluded()):
            if a > cursor:
                out.append((cursor, a))
            cursor = max(cursor, b)
        if cursor < self.base + self.size:
            out.append((cursor, self.base + self.size))
        return out

    def resident(self) -> int:
        """Bytes with a page anywhere in the mapping."""
        if self._resident is None:
            self._resident = self.space.present(self.base, self.size)
        return self._resident

    def tracked_resident(self) -> int:
        return sum(self.space.present(a, b - a) for a, b in self.segments())

    def _present_extents(self, a: int, b: int) -> list[tuple[int, int]]:
        return [(e.vaddr, e.end) for e in self.space.pt.extents(a, b - a)]

    # -- following the target ---------------------------------------------------------------
    def sync(self, target: int) -> int:
        """Fault or drop pages until the tracked resident bytes match ``target`` (faulting
        whole 2 MiB pages may overshoot by less than one); returns the change in bytes."""
        self.syncs += 1
        self._resident = None
        target = min(_page_up(max(0, target)), sum(b - a for a, b in self.segments()))
        before = cur = self.tracked_resident()
        if cur < target:
            for a, b in self.segments():
                cursor = a
                for ea, eb in self._present_extents(a, b) + [(b, b)]:
                    while cursor < ea and cur < target:
                        take = min(ea - cursor, target - cur)
                        self.space.touch(cursor, take, True)
                        cur = self.tracked_resident()
                        cursor = _page_up(cursor + take)
                    cursor = max(cursor, eb)
                    if cur >= target:
                        break
                if cur >= target:
                    break
        elif cur - target >= HUGE_PAGE_SIZE or (target == 0 and cur):
            excess = cur - target
            for a, b in reversed(self.segments()):
                for ea, eb in reversed(self._present_extents(a, b)):
                    drop = min(eb - ea, excess)
                    if drop <= 0:
                        break
                    self.space.madvise(eb - drop, drop, "dontneed")
                    excess -= drop
                if excess <= 0:
                    break
            cur = self.tracked_resident()
        self._resident = None
        return cur - before


@dataclass
class BalloonRange:
    """Where one balloon array lies in the simulated heap."""

    start: int  # the array object's first byte
    end: int
    interior_start: int  # 2 MiB-aligned interior, given back to the page allocator
    interior_end: int

    @property
    def interior(self) -> int:
        return self.interior_end - self.interior_start


class JavaHeap(TrackedMapping):
    """The -Xmx heap mapping, with the balloons placed where the real arrays lie."""

    def __init__(self, space: AddressSpace, max_bytes: int,
                 real_range: tuple[int, int] | None = None) -> None:
        super().__init__(space, max_bytes, ("jvm", "heap"))
        self.max_bytes = max_bytes
        self.real_lo = real_range[0] if real_range else None
        self.balloons: dict[int, BalloonRange] = {}

    def excluded(self) -> list[tuple[int, int]]:
        return [(r.interior_start, r.interior_end) for r in self.balloons.values()]

    def interior_bytes(self) -> int:
        return sum(r.interior for r in self.balloons.values())

    def balloon_resident(self) -> int:
        """The balloons' edge pages (ordinary heap pages inside the arrays)."""
        sp = self.space
        return sum(sp.present(r.start, r.interior_start - r.start)
                   + sp.present(r.interior_end, r.end - r.interior_end)
                   for r in self.balloons.values())

    def heap_resident(self) -> int:
        """Heap pages that are not a balloon's."""
        return self.resident() - self.balloon_resident()

    def sync_heap(self, touched: int) -> int:
        """Resident heap pages (balloon edges included) follow the heap bytes the JVM has
        touched, less the interiors given back."""
        return self.sync(touched - self.interior_bytes())

    # -- balloons -----------------------------------------------------------------------------
    def place(self, real_addr: int | None, length: int) -> tuple[int, int]:
        """The simulated range of an object of ``length`` bytes at ``real_addr`` in the real
        heap (same offset from the heap's start), or a free slot from the top if unknown."""
        top = self.base + self.size
        if real_addr is not None and self.real_lo is not None:
            start = self.base + (real_addr - self.real_lo)
            if self.base <= start and start + length <= top and self._free(start, start + length):
                return start, start + length
        start = align_down(top - length)
        while start >= self.base:
            if self._free(start, start + length):
                return start, start + length
            start -= HUGE_PAGE_SIZE
        raise ValueError("no room for a balloon in the heap mapping")

    def _free(self, a: int, b: int) -> bool:
        return all(b <= r.start or r.end <= a for r in self.balloons.values())

    def add_balloon(self, key: int, real_addr: int | None, length: int) -> int:
        """Swap the array's 2 MiB-aligned interior for a PROT_NONE balloon mapping (OSv's
        map_jvm); returns the resident bytes it gave back to the page allocator."""
        start, end = self.place(real_addr, length)
        # OSv swaps the 2 MiB-aligned interior of the elements (JNI's pointer is past the header)
        i0, i1 = align_up(start + ARRAY_HEADER), align_down(end)
        # the edges are whole pages: the array shares its first and last page with neighbours
        rng = BalloonRange(align_down(start, PAGE_SIZE), _page_up(end), i0, max(i0, i1))
        freed = 0
        self._resident = None
        if rng.interior:
            freed = self.space.present(i0, rng.interior)
            self.space.mmap(rng.interior, 0, fixed=True, addr=i0, owner=("jvm", "balloon", key))
        self.balloons[key] = rng
        return freed

    def remove_balloon(self, key: int) -> BalloonRange:
        """Restore ordinary anonymous heap over the interior (no pages until touched)."""
        rng = self.balloons.pop(key)
        self._resident = None
        if rng.interior:
            self.space.mmap(rng.interior, PROT_READ | PROT_WRITE, fixed=True,
                            addr=rng.interior_start, owner=self.owner)
        return rng

    def move_balloon(self, key: int, real_addr: int | None, length: int) -> int:
        """A GC copied the array: OSv's fault handler moves the balloon mapping to the
        destination instead of copying; the source becomes ordinary heap again."""
        self.remove_balloon(key)
        return self.add_balloon(key, real_addr, length)
