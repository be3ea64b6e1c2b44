"""Plain LRU over byte-sized records: the baseline every ARC result is compared with."""

from __future__ import annotations

from collections import OrderedDict

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
        if key in d:
            d.move_to_end(key)
            self.hits += 1
            return True
        self.misses += 1
        if size > self.capacity:
            return False  # can never fit: served without being cached
        limit = self.capacity - size
        if self._bytes > limit:
            self._evict_until(limit)
        d[key] = size
        self._bytes += size
        return False

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
