"""Plain LRU over byte-sized records: the baseline every ARC result is compared with."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from mmsim.fs.zfs_arc.policy import CachePolicy, EvictFn, _no_evict


class LruPolicy(CachePolicy):
    """Least recently used first out; an OrderedDict ordered oldest to newest."""

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


POLICY = LruPolicy
