"""Plain LRU over byte-sized records: the baseline every ARC result is compared with."""

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


class PyLruPolicy(CachePolicy):
    """Least recently used first out; an OrderedDict ordered oldest to newest. In pure
    Python: the reference of :class:`CLruPolicy` (the same decisions, its list in C)."""

    name = "lru"

    def __init__(
        self, capacity: int, on_evict: EvictFn = _no_evict, *, c_min: int | None = None
    ) -> None:
        super().__init__(capacity, on_evict)  # a fixed capacity: c_min = c_max
        self._d: OrderedDict[int, int] = OrderedDict()
        self._bytes = 0

    def access(self, key: int, size: int) -> bool:
        d = self._d
        if key in d:  # the common case without the loop's set-up
            d.move_to_end(key)
            self.hits += 1
            return True
        self._replay((key,), size, 0, 0, None)
        return False

    def access_many(self, keys: Sequence[int], size: int, start: int, budget: int,
                    payload: dict[int, Any]) -> int:
        return self._replay(keys, size, start, budget, payload)

    def _replay(self, keys: Sequence[int], size: int, start: int, budget: int,
                payload: dict[int, Any] | None) -> int:
        """The one implementation behind :meth:`access` (``payload`` None: every key,
        evictions told to on_evict) and :meth:`access_many`; the state is in local variables
        meanwhile (the caller's on_evict must not look at the policy)."""
        d = self._d
        cap = self.capacity
        used = self._bytes
        hits = misses = evictions = 0
        i = start
        n = len(keys)
        while i < n:
            key = keys[i]
            i += 1
            if key in d:
                d.move_to_end(key)
                hits += 1
                continue
            if used + size <= cap or size > cap:  # room for it, or never (served uncached)
                misses += 1
                if size <= cap:
                    d[key] = size
                    used += size
                if payload is not None:
                    break  # the caller gives it a buffer before the next key
                continue
            if payload is not None:
                if not budget:
                    i -= 1
                    break
                budget -= 1
            misses += 1
            old, s = d.popitem(last=False)
            used -= s
            evictions += 1
            if payload is None:
                self.on_evict(old)
            else:
                payload[key] = payload.pop(old)  # the evicted record's buffer
            d[key] = size
            used += size
            if used > cap:  # records of other sizes: more to push out
                if payload is not None:
                    raise ValueError("access_many: a resident record of another size")
                self._bytes = used
                self._evict_until(cap)
                used = self._bytes
        self._bytes = used
        self.hits += hits
        self.misses += misses
        self.evictions += evictions
        return i

    def _evict_until(self, limit: int) -> int:
        d = self._d
        freed = 0
        evict = self.on_evict
        while self._bytes > limit and d:
            key, size = d.popitem(last=False)
            self._bytes -= size
            freed += size
            self.evictions += 1
            evict(key)
        return freed

    def remove(self, key: int) -> bool:
        size = self._d.pop(key, None)
        if size is None:
            return False
        self._bytes -= size
        return True

    def __contains__(self, key: int) -> bool:
        return key in self._d

    @property
    def size(self) -> int:
        return self._bytes

    def evict_bytes(self, nbytes: int) -> int:
        return self._evict_until(max(self._bytes - nbytes, 0))

    @property
    def mru_hits(self) -> int:  # type: ignore[override]
        """Every hit is on the one list, reported as the MRU list (as :meth:`lists` does)."""
        return self.hits

    def lists(self) -> dict[str, int]:
        return {"mru_bytes": self._bytes, "mru_count": len(self._d)}

    def dump(self) -> list[tuple[int, int]]:
        """The records as (key, size), oldest first (for the tests that hold the C list to
        this one)."""
        return list(self._d.items())


class CLruPolicy(PyLruPolicy):
    """:class:`PyLruPolicy` with its list in ``_arc_c.Lru`` (ARC's C nodes and hash table
    with one list) and the replay loop in C: the Python loop costs about 3x libCacheSim's C
    LRU on a block trace, the issue's limit. The counters stay here. A key beyond 64 bits
    (never a block trace's) turns the object into a PyLruPolicy with the same state, which
    carries on."""

    def __new__(cls, capacity: int, *args: Any, **kwargs: Any) -> PyLruPolicy:
        if capacity > C_MAX_CAPACITY:  # beyond the C lists: the twin, which takes any size
            return PyLruPolicy(capacity, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self, capacity: int, on_evict: EvictFn = _no_evict, *, c_min: int | None = None
    ) -> None:
        CachePolicy.__init__(self, capacity, on_evict)
        assert _arc_c is not None
        self._core = _arc_c.Lru(capacity)

    def access(self, key: int, size: int) -> bool:
        evicted = self._core.access(key, size, self.on_evict)
        if evicted is None:  # beyond 64 bits: the pure-Python twin takes over
            self._to_python()
            return self.access(key, size)
        if evicted < 0:
            self.hits += 1
            return True
        self.misses += 1
        self.evictions += evicted
        return False

    def _replay(self, keys: Sequence[int], size: int, start: int, budget: int,
                payload: dict[int, Any] | None) -> int:
        end, hits, misses, evictions, left, overflow = self._core.replay(
            keys, size, start, budget, payload, self.on_evict)
        self.hits += hits
        self.misses += misses
        self.evictions += evictions
        if overflow:  # keys[end] is beyond 64 bits: the pure-Python twin takes over
            self._to_python()
            return self._replay(keys, size, end, left, payload)
        return end

    def _to_python(self) -> None:
        records = self._core.dump()
        del self._core
        self.__class__ = PyLruPolicy  # type: ignore[assignment]
        self._d = OrderedDict(records)
        self._bytes = sum(self._d.values())

    def _evict_until(self, limit: int) -> int:
        freed, evictions = self._core.evict_until(limit, self.on_evict)
        self.evictions += evictions
        return freed

    def remove(self, key: int) -> bool:
        return self._core.remove(key)

    def __contains__(self, key: int) -> bool:
        return key in self._core

    @property
    def size(self) -> int:
        return self._core.sizes()[0]

    def evict_bytes(self, nbytes: int) -> int:
        return self._evict_until(max(self.size - nbytes, 0))

    def lists(self) -> dict[str, int]:
        nbytes, count = self._core.sizes()
        return {"mru_bytes": nbytes, "mru_count": count}

    def dump(self) -> list[tuple[int, int]]:
        return self._core.dump()


#: the C list when the extension is built (and not turned off), else the pure-Python twin
LruPolicy: type[PyLruPolicy] = CLruPolicy if _arc_c is not None else PyLruPolicy

POLICY = LruPolicy
