"""One CPU's pool of one object size: pages of equal objects, on OSv's list order (§4).

A page's free objects form a LIFO list whose tail is the never-used objects in ascending address
order (frees only ever push at the head). So a page is a stack of freed addresses plus a bump
pointer over the fresh ones: the same order as OSv's list, without a Python object per slot.

The pool's list holds the pages that have a free object; allocation uses its front page, a page
that fills up leaves it, and new pages join at the back. When a same-CPU free empties a page,
the page goes back to the page allocator if the list's back page has no object allocated (that
may be the page itself); otherwise a page that was full rejoins at the front (or at the back if
it is now empty), so about one empty page per class per CPU is kept.
"""

from __future__ import annotations

from mmsim.mm.constants import MEMPOOL_AREA, PAGE_SHIFT, PAGE_SIZE
from mmsim.mm.slab.sizes import objects_per_page

__all__ = ["Pool", "PoolPage"]


class PoolPage:
    """A page of one pool: its objects, the allocated count and its place in the pool's list."""

    __slots__ = ("base", "cpu", "end", "fresh", "freed", "nalloc", "next", "pfn", "pool", "prev")

    def __init__(self, pool: Pool, pfn: int, cpu: int) -> None:
        self.pool = pool
        self.pfn = pfn
        self.cpu = cpu
        self.base = MEMPOOL_AREA + (pfn << PAGE_SHIFT)
        self.end = self.base + PAGE_SIZE
        self.fresh = self.end - pool.objects * pool.size  # next never-used object
        self.freed: list[int] = []  # freed objects, most recent last
        self.nalloc = 0
        self.prev: PoolPage | None = None
        self.next: PoolPage | None = None

    def has_free(self) -> bool:
        return bool(self.freed) or self.fresh < self.end

    def free_objects(self) -> list[int]:
        """Addresses of the free objects, in the order they would be handed out."""
        return self.freed[::-1] + list(range(self.fresh, self.end, self.pool.size))


class Pool:
    """The pages one CPU uses for one object size, in OSv's list order."""

    __slots__ = ("cpu", "head", "npages", "objects", "size", "tail")

    def __init__(self, size: int, cpu: int) -> None:
        self.size = size
        self.cpu = cpu
        self.objects = objects_per_page(size)
        self.head: PoolPage | None = None
        self.tail: PoolPage | None = None
        self.npages = 0  # pages this pool holds, on its list or full

    # -- the intrusive list ---------------------------------------------------------------
    def push_front(self, page: PoolPage) -> None:
        page.prev = None
        page.next = self.head
        if self.head is None:
            self.tail = page
        else:
            self.head.prev = page
        self.head = page

    def push_back(self, page: PoolPage) -> None:
        page.next = None
        page.prev = self.tail
        if self.tail is None:
            self.head = page
        else:
            self.tail.next = page
        self.tail = page

    def unlink(self, page: PoolPage) -> None:
        if page.prev is None:
            self.head = page.next
        else:
            page.prev.next = page.next
        if page.next is None:
            self.tail = page.prev
        else:
            page.next.prev = page.prev
        page.prev = page.next = None

    def pages(self) -> list[PoolPage]:
        """The list from front to back (pages with a free object)."""
        out = []
        page = self.head
        while page is not None:
            out.append(page)
            page = page.next
        return out

    # -- objects ---------------------------------------------------------------------------
    def add_page(self, pfn: int) -> PoolPage:
        """A fresh page joins the back of the list."""
        page = PoolPage(self, pfn, self.cpu)
        self.push_back(page)
        self.npages += 1
        return page

    def alloc(self) -> int:
        """An object from the front page (the list must not be empty)."""
        page = self.head
        assert page is not None
        page.nalloc += 1
        if page.freed:
            addr = page.freed.pop()
            if page.freed or page.fresh < page.end:
                return addr
        else:
            addr = page.fresh
            page.fresh = addr + self.size
            if page.fresh < page.end:
                return addr
        self.unlink(page)  # full: it leaves the list
        return addr

    def take_empty(self) -> list[PoolPage]:
        """Unlink and forget every page with no object allocated (the empty pages OSv keeps at
        the back of the list), for the pools' shrinker; the caller frees them."""
        out = []
        page = self.tail
        while page is not None and not page.nalloc:
            prev = page.prev
            self.unlink(page)
            self.npages -= 1
            out.append(page)
            page = prev
        return out

    def free(self, page: PoolPage, addr: int) -> bool:
        """Give ``addr`` back to its page, on the owner CPU; True if the page must be released
        (it was unlinked and forgotten here; the caller frees the page itself)."""
        page.nalloc -= 1
        listed = bool(page.freed) or page.fresh < page.end
        if not page.nalloc:
            tail = self.tail
            if tail is not None and not tail.nalloc:
                if listed:
                    self.unlink(page)
                self.npages -= 1
                return True
        if not listed:
            if page.nalloc:
                self.push_front(page)
            else:
                self.push_back(page)
        page.freed.append(addr)
        return False
