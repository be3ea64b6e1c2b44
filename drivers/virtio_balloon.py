"""The host's virtio-balloon (reference §9, "virtio-balloon [2026]").

The driver polls the host's target every 500 ms of simulated time. Inflating takes single pages
from the page allocator and keeps them (so the guest feels memory pressure); deflating gives them
back. Pages move in page-frame groups of 256 at most per request, at a rate the configuration sets
(the host must acknowledge each group). With VIRTIO_BALLOON_F_DEFLATE_ON_OOM the balloon gives
pages back when the guest would otherwise run out of memory (a shrinker that acts on hard passes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mm.constants import MIN_EMERGENCY_POOL, PAGE_SIZE

POLL_NS = 500_000_000
PFNS_PER_REQUEST = 256


class PageSource(Protocol):
    def alloc_pages(self, npages: int, cpu: int = 0) -> list[tuple[int, int]]: ...
    def free_pages(self, extents: list[tuple[int, int]], cpu: int = 0) -> None: ...


class VirtioBalloon:
    """Balloon pages held as extents; ``poll(now)`` moves them toward the host's target."""

    name = "virtio_balloon"

    def __init__(self, pages: PageSource, free_pages: Callable[[], int], *,
                 rate_bytes_per_s: int = 1 << 30, deflate_on_oom: bool = False) -> None:
        self._pages = pages
        self._free_pages = free_pages
        self.rate_pages_per_poll = max(PFNS_PER_REQUEST,
                                       rate_bytes_per_s * POLL_NS // 10**9 // PAGE_SIZE)
        self.deflate_on_oom = deflate_on_oom
        self.target_pages = 0
        self.actual_pages = 0
        self.held: list[tuple[int, int]] = []
        self.inflations = 0  # requests (groups of <= 256 pages) sent to the host
        self.deflations = 0
        self.stalls = 0  # polls where inflation stopped for lack of free memory
        self.oom_deflated_pages = 0
        self.next_poll_ns = 0

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
        """Run every poll that is due by ``now_ns`` (one per 500 ms), in order."""
        while self.next_poll_ns <= now_ns:
            self._poll_once()
            self.next_poll_ns += POLL_NS
            if self.actual_pages == self.target_pages and self.next_poll_ns <= now_ns:
                # nothing left to move: skip the idle polls in one step
                skipped = (now_ns - self.next_poll_ns) // POLL_NS + 1
                self.next_poll_ns += skipped * POLL_NS

    def _poll_once(self) -> None:
        delta = self.target_pages - self.actual_pages
        if delta > 0:
            # keep OSv's emergency pool: inflation never makes the guest wait for memory
            spare = self._free_pages() - MIN_EMERGENCY_POOL // PAGE_SIZE
            n = min(delta, self.rate_pages_per_poll, max(spare, 0))
            if n < delta and n < self.rate_pages_per_poll:
                self.stalls += 1
            if n > 0:
                self.held.extend(self._pages.alloc_pages(n))
                self.actual_pages += n
                self.inflations += self._requests(n)
        elif delta < 0:
            self._deflate(min(-delta, self.rate_pages_per_poll))

    def _deflate(self, npages: int) -> int:
        """Give back ``npages`` (the most recently inflated first)."""
        out: list[tuple[int, int]] = []
        left = npages
        while left and self.held:
            start, n = self.held[-1]
            if n <= left:
                self.held.pop()
                out.append((start, n))
                left -= n
            else:
                self.held[-1] = (start, n - left)
                out.append((start + n - left, left))
                left = 0
        done = npages - left
        if out:
            self._pages.free_pages(out)
            self.actual_pages -= done
            self.deflations += self._requests(done)
        return done

    def request_memory(self, target: int, hard: bool) -> int:
        """The DEFLATE_ON_OOM shrinker: on a hard pass give back what the guest needs."""
        if not (hard and self.deflate_on_oom):
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
