"""Pages a subsystem holds as a block of its own: taken and given back in whole pages."""

from __future__ import annotations

from collections.abc import Callable

Extents = list[tuple[int, int]]


class HeldPages:
    """Whole pages held (as (pfn, n) extents, oldest first), grown with ``take`` and shrunk
    newest first with ``give``; how pages come and go is the owner's choice (the page pool,
    or the free runs straight)."""

    def __init__(self, take: Callable[[int], Extents], give: Callable[[Extents], None]) -> None:
        self._take = take
        self._give = give
        self._held: Extents = []
        self.pages = 0

    def take(self, npages: int) -> None:
        """Hold ``npages`` more (the take function raises if the guest has none)."""
        if npages > 0:
            self._held.extend(self._take(npages))
            self.pages += npages

    def give(self, npages: int) -> int:
        """Give back up to ``npages``, the newest first; returns the pages given."""
        left = min(npages, self.pages)
        out: Extents = []
        while left:
            start, n = self._held[-1]
            k = min(n, left)
            if k == n:
                self._held.pop()
            else:
                self._held[-1] = (start, n - k)
            out.append((start + n - k, k))
            left -= k
        given = sum(n for _, n in out)
        if out:
            self._give(out)
            self.pages -= given
        return given

    def hold(self, npages: int) -> None:
        """Hold exactly ``npages`` from now on."""
        if npages > self.pages:
            self.take(npages - self.pages)
        elif npages < self.pages:
            self.give(self.pages - npages)
