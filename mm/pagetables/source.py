"""Where page-table pages come from: the simulator counts them as used memory."""

from __future__ import annotations

from typing import Protocol


class TablePageSource(Protocol):
    """Supplier of 4 KiB frames for page-table pages (OSv: ``alloc_page()``)."""

    def alloc_table_page(self) -> int:
        """Return the pfn of a fresh table page; raise MemoryError when none is left."""
        ...

    def free_table_page(self, pfn: int) -> None:
        """Take back a table page returned by :meth:`alloc_table_page`."""
        ...


class CountingTablePageSource:
    """A self-contained source for tests and benchmarks: hands out pfns from a counter
    (reusing freed ones) and optionally fails after ``limit`` pages are in use."""

    def __init__(self, first_pfn: int = 1 << 30, limit: int | None = None) -> None:
        self._next = first_pfn
        self._free: list[int] = []
        self.limit = limit
        self.in_use: set[int] = set()
        self.allocs = 0
        self.frees = 0

    def alloc_table_page(self) -> int:
        if self.limit is not None and len(self.in_use) >= self.limit:
            raise MemoryError("table page source exhausted")
        if self._free:
            pfn = self._free.pop()
        else:
            pfn = self._next
            self._next += 1
        self.in_use.add(pfn)
        self.allocs += 1
        return pfn

    def free_table_page(self, pfn: int) -> None:
        if pfn not in self.in_use:
            raise ValueError(f"pfn {pfn:#x} is not an allocated table page")
        self.in_use.remove(pfn)
        self._free.append(pfn)
        self.frees += 1
