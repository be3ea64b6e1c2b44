"""The host's virtio-balloon (reference §9, "virtio-balloon [2026]"; OSv's drivers/virtio-balloon.cc).

As OSv's driver does, by default:

- it polls the host's target every 500 ms of simulated time and moves the whole difference in
  that one poll, in requests (page-frame groups) of 256 pages at most;
- inflating takes single pages through the normal page path (OSv's ``alloc_page()``, which
  never returns null: it waits for memory, which runs the reclaimer's hard pass, or the guest
  aborts out of memory) and keeps them; a target the guest cannot give ends the guest;
- deflating gives pages back (``free_page()``) from the front of the list: the oldest inflated
  pages first (FIFO);
- the target is taken as the host sets it, and the balloon is no shrinker (OSv advertises
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM in its feature bits, but no code acts on it).

Beyond OSv, each off unless configured: a rate limit (pages per poll), a free-memory floor
inflation stops at instead of waiting, and DEFLATE_ON_OOM acted on as Linux's driver does (the
balloon is a shrinker that gives pages back on hard passes; its own inflation then stops short
instead of making the guest wait or abort). Clamping the target is the wiring's
(kernel/sys_balloon.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from mmsim.mm.constants import MIN_EMERGENCY_POOL, PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages

POLL_NS = 500_000_000
PFNS_PER_REQUEST = 256


class PageSource(Protocol):
    def alloc_pages(self, npages: int, cpu: int = 0) -> list[tuple[int, int]]: ...
    def free_pages(self, extents: list[tuple[int, int]], cpu: int = 0) -> None: ...


class VirtioBalloon:
    """Balloon pages held as extents, oldest first; ``poll(now)`` moves them to the target."""

    name = "virtio_balloon"

    def __init__(self, pages: PageSource, free_pages: Callable[[], int], *,
                 rate_bytes_per_s: int | None = None, keep_free_bytes: int = 0,
                 deflate_on_oom: bool = False) -> None:
        self._pages = pages
        self._free_pages = free_pages
        #: None (OSv): a poll moves the whole difference
        self.rate_pages_per_poll: int | None = None
        if rate_bytes_per_s is not None:
            self.rate_pages_per_poll = max(PFNS_PER_REQUEST,
                                           rate_bytes_per_s * POLL_NS // 10**9 // PAGE_SIZE)
        #: free pages inflation leaves alone (0, OSv: none; it takes pages until it must wait)
        self.keep_free_pages = keep_free_bytes // PAGE_SIZE
        self.deflate_on_oom = deflate_on_oom
        self.target_pages = 0
        self.actual_pages = 0
        #: inflated extents in the order they were taken; deflation takes from the left
        self.held: deque[tuple[int, int]] = deque()
        self.inflations = 0  # requests (groups of <= 256 pages) sent to the host
        self.deflations = 0
        self.stalls = 0  # polls where inflation stopped short (the free floor, DEFLATE_ON_OOM)
        self.oom_deflated_pages = 0
        self.next_poll_ns = 0
        #: pages the last inflation set out to take (what an out-of-memory report names)
        self.inflating_pages = 0
        self._inflating = False

    def set_target(self, nbytes: int) -> None:
        self.target_pages = nbytes // PAGE_SIZE

    def wake(self, at_ns: int) -> None:
        """The host's configuration interrupt: poll at ``at_ns`` (then every 500 ms from there)
        unless a poll is due sooner."""
        self.next_poll_ns = min(self.next_poll_ns, at_ns)

    @staticmethod
    def _requests(npages: int) -> int:
        return -(-npages // PFNS_PER_REQUEST)

    def poll(self, now_ns: int) -> None:
        """Run every poll that is due by ``now_ns`` (one per 500 ms), in order.

        Raises :class:`OutOfPages` when an inflation cannot be served (OSv's guest aborts)."""
        while self.next_poll_ns <= now_ns:
            self._poll_once()
            self.next_poll_ns += POLL_NS
            if self.actual_pages == self.target_pages and self.next_poll_ns <= now_ns:
                # nothing left to move: skip the idle polls in one step
                skipped = (now_ns - self.next_poll_ns) // POLL_NS + 1
                self.next_poll_ns += skipped * POLL_NS

    def _poll_once(self) -> None:
        delta = self.target_pages - self.actual_pages
        limit = self.rate_pages_per_poll
        if delta > 0:
            self._inflate(delta if limit is None else min(delta, limit))
        elif delta < 0:
            self._deflate(-delta if limit is None else min(-delta, limit))

    def _inflate(self, npages: int) -> None:
        """Take ``npages`` in requests of up to 256 pages; each request's pages are kept."""
        if self.keep_free_pages:
            spare = max(self._free_pages() - self.keep_free_pages, 0)
            if spare < npages:
                self.stalls += 1
                npages = spare
        self.inflating_pages = npages
        self._inflating = True
        left = npages
        try:
            while left:
                n = min(left, PFNS_PER_REQUEST)
                try:
                    self.held.extend(self._pages.alloc_pages(n))
                except OutOfPages:
                    if not self.deflate_on_oom:
                        raise  # OSv: alloc_page() never returns null, the guest aborts
                    self.stalls += 1  # as Linux's driver: the inflation fails softly
                    break
                self.actual_pages += n
                self.inflations += 1
                left -= n
        finally:
            self._inflating = False

    def _deflate(self, npages: int) -> int:
        """Give back ``npages``, the oldest inflated first (OSv pops the list's front)."""
        out: list[tuple[int, int]] = []
        left = npages
        held = self.held
        while left and held:
            start, n = held[0]
            if n <= left:
                held.popleft()
                out.append((start, n))
                left -= n
            else:
                held[0] = (start + left, n - left)
                out.append((start, left))
                left = 0
        done = npages - left
        if out:
            self._pages.free_pages(out)
            self.actual_pages -= done
            self.deflations += self._requests(done)
        return done

    def request_memory(self, target: int, hard: bool) -> int:
        """The DEFLATE_ON_OOM shrinker (beyond OSv): on a hard pass give back what the guest
        needs, the oldest pages first; never while the balloon itself is inflating."""
        if not (hard and self.deflate_on_oom) or self._inflating:
            return 0
        want = max(target, MIN_EMERGENCY_POOL) // PAGE_SIZE
        done = self._deflate(min(want, self.actual_pages))
        self.oom_deflated_pages += done
        return done * PAGE_SIZE

    def summary(self) -> dict[str, int | bool]:
        return {"target_pages": self.target_pages, "actual_pages": self.actual_pages,
                "inflations": self.inflations, "deflations": self.deflations,
                "stalls": self.stalls, "deflate_on_oom": self.deflate_on_oom,
                "oom_deflated_pages": self.oom_deflated_pages}
