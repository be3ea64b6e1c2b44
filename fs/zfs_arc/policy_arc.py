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

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from mmsim.fs.zfs_arc.policy import C_MAX_CAPACITY, CachePolicy, EvictFn, _no_evict

try:
    if os.environ.get("MMSIM_PURE_PYTHON"):
        raise ImportError
    from mmsim.fs.zfs_arc import _arc_c
except ImportError:  # not compiled on this machine, or turned off: the pure-Python twin
    _arc_c = None


class PyArcPolicy(CachePolicy):
    """The adaptive replacement cache with a fixed capacity ``c`` (bytes), in pure Python:
    the reference of :class:`CArcPolicy` (the same decisions, its lists in C)."""

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
        if key in t2:  # the commonest hit without the loop's set-up
            t2.move_to_end(key)
            self.hits += 1
            return True
        hits = self.hits
        self._replay((key,), size, 0, 0, None)
        return self.hits != hits

    def access_many(self, keys: Sequence[int], size: int, start: int, budget: int,
                    payload: dict[int, Any]) -> int:
        return self._replay(keys, size, start, budget, payload)

    def _replay(self, keys: Sequence[int], size: int, start: int, budget: int,
                payload: dict[int, Any] | None) -> int:
        """Fig. 4 for keys[start:], the one implementation behind :meth:`access` (``payload``
        None: every key, evictions told to on_evict) and :meth:`access_many`. The state is in
        local variables during the loop (attributes cost a third more); the caller's on_evict
        must not look at the policy."""
        t1 = self._t1
        t2 = self._t2
        b1 = self._b1
        b2 = self._b2
        t1b, t2b, b1b, b2b = self._t1b, self._t2b, self._b1b, self._b2b
        p = self.p
        c = self.capacity
        room = c - size  # "x + size > c" is "x > room"
        on_evict = self.on_evict
        batch = payload is not None
        first_budget = budget
        hits = mru_hits = evictions = b1_hits = b2_hits = 0
        n = end = len(keys)
        for i in range(start, n):  # ``end``: where the next call starts
            key = keys[i]
            if key in t2:  # case I, frequent
                t2.move_to_end(key)
                hits += 1
                continue
            s = t1.pop(key, None)
            if s is not None:  # case I, recent: promote to T2
                t1b -= s
                t2[key] = s
                t2b += s
                hits += 1
                mru_hits += 1
                continue
            if room < 0:  # can never fit: served without being cached
                if batch:
                    end = i + 1
                    break
                continue
            full = t1b + t2b > room  # a resident record must go
            if full and batch:
                if not budget:
                    end = i  # not served: the caller's next call starts with it
                    break
                budget -= 1
            in_b2 = False
            s = b1.pop(key, None)
            if s is not None:  # case II: recency was undervalued
                b1_hits += 1
                step = b2b / b1b if b2b > b1b else 1.0  # |B1| as it was when the request came
                b1b -= s
                p += step * size
                if p > c:
                    p = float(c)
                dest = t2
            else:
                s = b2.pop(key, None)
                if s is not None:  # case III: frequency was undervalued
                    b2_hits += 1
                    step = b1b / b2b if b1b > b2b else 1.0
                    b2b -= s
                    p -= step * size
                    if p < 0.0:
                        p = 0.0
                    dest = t2
                    in_b2 = True
                else:  # case IV, a new key: first the ghosts' part
                    dest = t1
                    if t1b + b1b > room:  # A: |T1| + |B1| = c
                        if t1b <= room:  # |T1| < c: drop B1's oldest
                            while b1 and t1b + b1b > room:
                                b1b -= b1.popitem(last=False)[1]
                        else:  # T1 fills the cache: its oldest leaves without a ghost
                            while t1 and t1b + t2b > room:
                                k, s = t1.popitem(last=False)
                                t1b -= s
                                if not batch:
                                    evictions += 1
                                    on_evict(k)
                    elif full:  # B with a full cache: |L1| + |L2| = 2c?
                        total = t1b + t2b + b1b + b2b
                        while b2 and total + size > 2 * c:
                            s = b2.popitem(last=False)[1]
                            b2b -= s
                            total -= s
            if t1b + t2b > room:  # REPLACE, the first one inlined
                if t1b and (t1b > p or (in_b2 and t1b == p) or not t2):
                    k, s = t1.popitem(last=False)  # T1's oldest to B1
                    t1b -= s
                    b1[k] = s
                    b1b += s
                else:  # T2's oldest to B2
                    k, s = t2.popitem(last=False)
                    t2b -= s
                    b2[k] = s
                    b2b += s
                if not batch:
                    evictions += 1
                    on_evict(k)
                if t1b + t2b > room:  # records of other sizes: more to replace
                    if batch:
                        raise ValueError("access_many: a resident record of another size")
                    self._t1b, self._t2b, self._b1b, self._b2b, self.p = t1b, t2b, b1b, b2b, p
                    self._make_room(size, in_b2)
                    t1b, t2b, b1b, b2b = self._t1b, self._t2b, self._b1b, self._b2b
            dest[key] = size
            if dest is t1:
                t1b += size
            else:
                t2b += size
            if batch:
                if not full:  # the caller gives it a buffer before the next key
                    end = i + 1
                    break
                payload[key] = payload.pop(k)  # the evicted record's buffer
        self._t1b, self._t2b, self._b1b, self._b2b, self.p = t1b, t2b, b1b, b2b, p
        self.hits += hits
        self.mru_hits += mru_hits
        self.misses += end - start - hits
        self.evictions += evictions + first_budget - budget  # a batch's: one a full miss
        self.mru_ghost_hits += b1_hits
        self.mfu_ghost_hits += b2_hits
        return end

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

    def dump(self) -> tuple[list[tuple[int, int]], ...]:
        """T1, T2, B1 and B2 as (key, size) lists, oldest first (for the tests that hold the
        C lists to these)."""
        return tuple(list(d.items()) for d in (self._t1, self._t2, self._b1, self._b2))

    def lists(self) -> dict[str, int]:
        return {
            "mru_bytes": self._t1b, "mfu_bytes": self._t2b,
            "mru_ghost_bytes": self._b1b, "mfu_ghost_bytes": self._b2b,
            "mru_count": len(self._t1), "mfu_count": len(self._t2),
            "mru_ghost_count": len(self._b1), "mfu_ghost_count": len(self._b2),
        }


class CArcPolicy(PyArcPolicy):
    """:class:`PyArcPolicy` with its lists, ghosts and p in ``_arc_c.Arc`` (the replay loop in
    C: a block trace's requests cost a third of the Python loop's). The counters stay here.
    A key beyond 64 bits (never a block trace's) turns the object into a PyArcPolicy with the
    same state, which carries on."""

    def __new__(cls, capacity: int, *args: Any, **kwargs: Any) -> PyArcPolicy:
        if capacity > C_MAX_CAPACITY:  # beyond the C lists: the twin, which takes any size
            return PyArcPolicy(capacity, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self, capacity: int, on_evict: EvictFn = _no_evict, *, c_min: int | None = None
    ) -> None:
        CachePolicy.__init__(self, capacity, on_evict)
        assert _arc_c is not None
        self._core = _arc_c.Arc(capacity)
        self.mru_hits = self.mru_ghost_hits = self.mfu_ghost_hits = 0

    @property  # type: ignore[override]
    def p(self) -> float:
        return self._core.p

    @p.setter
    def p(self, value: float) -> None:
        self._core.p = value

    def access(self, key: int, size: int) -> bool:
        hits = self.hits
        self._replay((key,), size, 0, 0, None)
        return self.hits != hits

    def _replay(self, keys: Sequence[int], size: int, start: int, budget: int,
                payload: dict[int, Any] | None) -> int:
        end, hits, mru_hits, evictions, b1_hits, b2_hits, left, overflow = self._core.replay(
            keys, size, start, budget, payload, self.on_evict)
        self.hits += hits
        self.mru_hits += mru_hits
        self.misses += end - start - hits
        self.evictions += evictions
        self.mru_ghost_hits += b1_hits
        self.mfu_ghost_hits += b2_hits
        if overflow:  # keys[end] is beyond 64 bits: the pure-Python twin takes over
            self._to_python()
            return self._replay(keys, size, end, left, payload)
        return end

    def _to_python(self) -> None:
        t1, t2, b1, b2 = self._core.dump()
        p = self._core.p
        del self._core
        self.__class__ = PyArcPolicy  # type: ignore[assignment]
        self._t1, self._t2, self._b1, self._b2 = (OrderedDict(x) for x in (t1, t2, b1, b2))
        self._t1b, self._t2b, self._b1b, self._b2b = (
            sum(d.values()) for d in (self._t1, self._t2, self._b1, self._b2))
        self.p = p

    def _make_room(self, size: int, in_b2: bool) -> None:
        self.evictions += self._core.make_room(size, in_b2, self.on_evict)

    def remove(self, key: int) -> bool:
        return self._core.remove(key) == 1

    def __contains__(self, key: int) -> bool:
        return key in self._core

    @property
    def size(self) -> int:
        t1b, t2b = self._core.sizes()[:2]
        return t1b + t2b

    def lists(self) -> dict[str, int]:
        t1b, t2b, b1b, b2b, t1n, t2n, b1n, b2n = self._core.sizes()
        return {
            "mru_bytes": t1b, "mfu_bytes": t2b, "mru_ghost_bytes": b1b, "mfu_ghost_bytes": b2b,
            "mru_count": t1n, "mfu_count": t2n, "mru_ghost_count": b1n, "mfu_ghost_count": b2n,
        }

    def dump(self) -> tuple[list[tuple[int, int]], ...]:
        """T1, T2, B1 and B2 as (key, size) lists, oldest first (as PyArcPolicy.dump)."""
        return self._core.dump()


#: the C lists when the extension is built (and not turned off), else the pure-Python twin
ArcPolicy: type[PyArcPolicy] = CArcPolicy if _arc_c is not None else PyArcPolicy

POLICY = ArcPolicy
