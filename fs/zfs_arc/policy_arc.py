"""ARC exactly as Megiddo & Modha's FAST'03 paper states it (Fig. 4), for comparison with ZFS.

T1/T2 hold resident records seen once / more than once, B1/B2 remember what left them; the
target size of T1, ``p``, moves by max(|B2|/|B1|, 1) on a B1 hit and the converse on a B2 hit.
Like libCacheSim, ``p`` and the step are floats (the paper does not say). Everything is counted
in bytes so that one code path serves equal records (where it is the paper's algorithm scaled
by the record size: exact for power-of-two sizes) and mixed record sizes; "|L| = c" tests
become "no room for this record". Unlike the paper, keys can also be removed (files deleted),
so eviction only happens when the resident records do not leave room.
"""

from __future__ import annotations

from collections import OrderedDict

from mmsim.fs.zfs_arc.policy import CachePolicy, EvictFn, _no_evict


class ArcPolicy(CachePolicy):
    """The adaptive replacement cache with a fixed capacity ``c`` (bytes)."""

    name = "arc"

    def __init__(
        self, capacity: int, on_evict: EvictFn = _no_evict, *, c_min: int | None = None
    ) -> None:
        super().__init__(capacity, on_evict)  # a fixed capacity: c_min = c_max
        self.p = 0.0
        # key -> size, least recently used first
        self._t1: OrderedDict[int, int] = OrderedDict()
        self._t2: OrderedDict[int, int] = OrderedDict()
        self._b1: OrderedDict[int, int] = OrderedDict()
        self._b2: OrderedDict[int, int] = OrderedDict()
        self._t1b = self._t2b = self._b1b = self._b2b = 0
        self.mru_hits = self.mru_ghost_hits = self.mfu_ghost_hits = 0

    # -- the hot path ----------------------------------------------------------------------
    def access(self, key: int, size: int) -> bool:
        t2 = self._t2
        if key in t2:  # case I, frequent
            t2.move_to_end(key)
            self.hits += 1
            return True
        t1 = self._t1
        s = t1.pop(key, None)
        if s is not None:  # case I, recent: promote to T2
            self._t1b -= s
            t2[key] = s
            self._t2b += s
            self.hits += 1
            self.mru_hits += 1
            return True
        self.misses += 1
        c = self.capacity
        if size > c:
            return False  # can never fit: served without being cached
        in_b2 = False
        s = self._b1.pop(key, None)
        if s is not None:  # case II: recency was undervalued
            self.mru_ghost_hits += 1
            b2b = self._b2b
            b1b = self._b1b
            self._b1b = b1b - s
            step = b2b / b1b if b2b > b1b else 1.0  # |B1| as it was when the request came
            p = self.p + step * size
            self.p = p if p < c else float(c)
            dest = t2
        else:
            s = self._b2.pop(key, None)
            if s is not None:  # case III: frequency was undervalued
                self.mfu_ghost_hits += 1
                b2b = self._b2b
                b1b = self._b1b
                self._b2b = b2b - s
                step = b1b / b2b if b1b > b2b else 1.0
                p = self.p - step * size
                self.p = p if p > 0.0 else 0.0
                dest = t2
                in_b2 = True
            else:  # case IV, a new key: first the ghosts' part
                dest = t1
                t1b = self._t1b
                if t1b + self._b1b + size > c:  # A: |T1| + |B1| = c
                    if t1b + size <= c:  # |T1| < c: drop B1's oldest
                        b1 = self._b1
                        while b1 and self._t1b + self._b1b + size > c:
                            self._b1b -= b1.popitem(last=False)[1]
                    else:  # T1 fills the cache: its oldest leaves without a ghost
                        while t1 and self._t1b + self._t2b + size > c:
                            k, s = t1.popitem(last=False)
                            self._t1b -= s
                            self.evictions += 1
                            self.on_evict(k)
                elif t1b + self._t2b + size > c:  # B with a full cache: |L1| + |L2| = 2c?
                    total = t1b + self._t2b + self._b1b + self._b2b
                    b2 = self._b2
                    while b2 and total + size > 2 * c:
                        s = b2.popitem(last=False)[1]
                        self._b2b -= s
                        total -= s
        t1b = self._t1b
        if t1b + self._t2b + size > c:  # REPLACE, the first one inlined
            if t1b and (t1b > self.p or (in_b2 and t1b == self.p) or not t2):
                k, s = t1.popitem(last=False)  # T1's oldest to B1
                self._t1b = t1b - s
                self._b1[k] = s
                self._b1b += s
            else:  # T2's oldest to B2
                k, s = t2.popitem(last=False)
                self._t2b -= s
                self._b2[k] = s
                self._b2b += s
            self.evictions += 1
            self.on_evict(k)
            if self._t1b + self._t2b + size > c:  # records of other sizes: more to replace
                self._make_room(size, in_b2)
        dest[key] = size
        if dest is t1:
            self._t1b += size
        else:
            self._t2b += size
        return False

    def _make_room(self, size: int, in_b2: bool) -> None:
        """REPLACE until ``size`` fits: T1's oldest to B1 if T1 is over p, else T2's to B2."""
        c = self.capacity
        while self._t1b + self._t2b + size > c:
            t1b = self._t1b
            if t1b and (t1b > self.p or (in_b2 and t1b == self.p) or not self._t2):
                k, s = self._t1.popitem(last=False)
                self._t1b -= s
                self._b1[k] = s
                self._b1b += s
            else:
                k, s = self._t2.popitem(last=False)
                self._t2b -= s
                self._b2[k] = s
                self._b2b += s
            self.evictions += 1
            self.on_evict(k)

    # -- the rest of the interface ---------------------------------------------------------
    def remove(self, key: int) -> bool:
        for lst, attr in ((self._t1, "_t1b"), (self._t2, "_t2b"), (self._b1, "_b1b"),
                          (self._b2, "_b2b")):
            s = lst.pop(key, None)
            if s is not None:
                setattr(self, attr, getattr(self, attr) - s)
                return attr in ("_t1b", "_t2b")
        return False

    def __contains__(self, key: int) -> bool:
        return key in self._t1 or key in self._t2

    @property
    def size(self) -> int:
        return self._t1b + self._t2b

    def evict_bytes(self, nbytes: int) -> int:
        """Shrinker request: REPLACE, as misses would, until ``nbytes`` are out (ghosts kept)."""
        before = self.size
        goal = max(before - nbytes, 0)
        self._make_room(self.capacity - goal, False)  # i.e. until size <= goal
        return before - self.size

    @property
    def mfu_hits(self) -> int:  # type: ignore[override]
        """Hits in T2: every hit not in T1 (not counted on the hot path, the most taken one)."""
        return self.hits - self.mru_hits

    def lists(self) -> dict[str, int]:
        return {
            "mru_bytes": self._t1b, "mfu_bytes": self._t2b,
            "mru_ghost_bytes": self._b1b, "mfu_ghost_bytes": self._b2b,
            "mru_count": len(self._t1), "mfu_count": len(self._t2),
            "mru_ghost_count": len(self._b1), "mfu_ghost_count": len(self._b2),
        }


POLICY = ArcPolicy
