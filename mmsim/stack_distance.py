"""LRU stack distances in one pass over a block stream, and SHARDS' spatial sampling of it.

LRU is a stack algorithm (Mattson et al., 1970): a request hits an LRU cache of k equal records
exactly when fewer than k distinct other records were referenced since its previous reference
(its *stack distance*). One pass that counts the distances therefore gives the miss ratio at
every cache size, where a replay gives it at one.

SHARDS (Waldspurger et al., FAST'15) keeps the requests of the blocks whose hash falls under
a threshold, ``hash(block) mod P < T``, so that a rate R = T/P of the blocks is kept with all
their requests; distances measured in the sample, divided by R, estimate the full trace's.
"""

from __future__ import annotations

import itertools
import os
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence

#: SHARDS' modulus P: a rate is kept as T/P with T a whole number (rates down to 2^-24)
MODULUS = 1 << 24
_MASK = (1 << 64) - 1
#: last-reference times per chunk: bigger chunks mean fewer tree steps but longer deletions
#: (2048 was the fastest of 512..4096 on the ARC paper's OLTP trace)
CHUNK = 2048

try:  # the C twin of the counting (setup.py)
    if os.environ.get("MMSIM_PURE_PYTHON"):
        raise ImportError
    from mmsim._stack_distance_c import Counter as _Counter
except ImportError:  # not compiled on this machine, or turned off: the pure-Python counting
    _Counter = None
PURE = _Counter is None


def spatial_hash(block: int) -> int:
    """A block id's hash in [0, MODULUS): murmur3's 64-bit finalizer (a multiply-xorshift
    mix), its top 24 bits. Fixed, unlike Python's hash(), so that a sample is the same in
    every run; and a full mix, so that runs of consecutive blocks are sampled evenly. The
    golden-ratio offset moves the finalizer's fixed point (0) off block 0."""
    h = (block + 0x9E3779B97F4A7C15) & _MASK
    h = ((h ^ (h >> 33)) * 0xFF51AFD7ED558CCD) & _MASK
    h = ((h ^ (h >> 33)) * 0xC4CEB9FE1A85EC53) & _MASK
    return (h ^ (h >> 33)) >> 40


def sample_threshold(rate: float) -> int:
    """SHARDS' T for ``rate``: the blocks kept are those with spatial_hash(block) < T.
    ValueError unless 0 < rate <= 1 and the rate is at least 1/MODULUS."""
    if not 0 < rate <= 1:
        raise ValueError(f"must be in (0, 1], not {rate:g}")
    t = round(rate * MODULUS)
    if t < 1:
        raise ValueError(f"{rate:g} is below the smallest rate, 1/{MODULUS}")
    return t


def sample_positions(blocks: Sequence[int], threshold: int) -> list[int]:
    """The positions in ``blocks`` (ids in [0, 2**64)) of those SHARDS keeps at ``threshold``:
    spatial_hash(block) < threshold, computed over a numpy array (uint64 arithmetic wraps as
    the masks do), about 20x faster than one call per block."""
    import numpy as np

    h = np.array(blocks, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    for m in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h ^= h >> np.uint64(33)
        h *= np.uint64(m)
    h ^= h >> np.uint64(33)
    return np.flatnonzero((h >> np.uint64(40)) < threshold).tolist()


def sampled(blocks: Sequence[int], threshold: int) -> list[int]:
    """The blocks of ``blocks`` that SHARDS keeps at ``threshold`` (each block always or never)."""
    return [blocks[i] for i in sample_positions(blocks, threshold)]


class StackDistances:
    """The histogram of LRU stack distances of a stream of block ids, fed piece by piece.

    The time of every block's last reference is kept, in time order, in chunks of at most
    CHUNK times; a request's distance is the number of times after its block's previous one:
    those after it in its chunk, plus the later chunks' counts, summed by a Fenwick tree over
    the chunks (O(log n) per request; the newest chunk, still filling, is counted apart so
    that appending to it costs no tree update). Memory grows with the distinct blocks, plus
    one chunk per CHUNK requests.

    Unless ``pure`` (default: when the C twin is not built, or MMSIM_PURE_PYTHON=1), the
    counting is done by mmsim._stack_distance_c.Counter: the same histogram, from a Fenwick
    tree over the last references' times in C (about 15x faster on OLTP); block ids must then
    be in [0, 2**64), as a block trace's are.
    """

    def __init__(self, pure: bool | None = None) -> None:
        self._c = None if (PURE if pure is None else pure) else _Counter()
        self._hist: list[int] = [0]
        self._requests = 0
        self._last: dict[int, int] = {}
        self._chunks: list[list[int]] = [[]]
        self._starts = [0]  # first time of each chunk: chunk i holds times in [s_i, s_i+1)
        self._tree = [0] * (1024 + 1)  # Fenwick tree over the sealed chunks' counts
        self._sealed = 0  # times held in the sealed chunks (all but the last)
        self._hits: list[int] | None = None  # _hits[k]: hits at k records (kept until fed)

    @property
    def hist(self) -> list[int]:
        """hist[d]: requests at distance d (d distinct other blocks since their previous one)."""
        return self._hist if self._c is None else self._c.hist()

    @property
    def requests(self) -> int:
        return self._requests if self._c is None else self._c.requests

    @property
    def cold(self) -> int:
        """First references: misses at every size."""
        return len(self._last) if self._c is None else self._c.distinct

    def feed(self, blocks: Iterable[int]) -> None:
        """Count the distances of ``blocks``, requested in this order after those fed before."""
        self._hits = None
        if self._c is not None:
            self._c.feed(blocks)
            return
        last = self._last
        get = last.get
        hist = self._hist
        chunks, starts, tree = self._chunks, self._starts, self._tree
        cap = len(tree) - 1
        sealed = self._sealed
        tail = chunks[-1]
        tail_start = starts[-1]
        t = self._requests
        for b in blocks:
            p = get(b)
            last[b] = t
            if p is None:
                hist.append(0)  # one more block: distances can reach one further
            elif p >= tail_start:  # referenced since the newest chunk began
                i = bisect_left(tail, p)
                del tail[i]
                hist[len(tail) - i] += 1
            else:
                ci = bisect_right(starts, p)  # the chunk's tree index (1-based)
                chunk = chunks[ci - 1]
                i = bisect_left(chunk, p)
                del chunk[i]
                s = 0
                j = ci
                while j:  # times in chunks up to and including p's
                    s += tree[j]
                    j &= j - 1
                hist[len(chunk) - i + sealed - s + len(tail)] += 1
                sealed -= 1
                j = ci
                while j <= cap:
                    tree[j] -= 1
                    j += j & -j
            tail.append(t)
            t += 1
            if len(tail) >= CHUNK:  # seal it: into the tree, and start a new chunk
                k = len(chunks)
                if k > cap:
                    cap *= 2
                    tree = self._tree = self._rebuilt(cap)
                else:
                    n = len(tail)
                    j = k
                    while j <= cap:
                        tree[j] += n
                        j += j & -j
                sealed += len(tail)
                tail = []
                chunks.append(tail)
                starts.append(t)
                tail_start = t
        self._requests = t
        self._sealed = sealed

    def _rebuilt(self, cap: int) -> list[int]:
        """A Fenwick tree of ``cap`` chunks over every chunk (the newest being sealed)."""
        tree = [0] * (cap + 1)
        for k, chunk in enumerate(self._chunks, 1):
            tree[k] = len(chunk)
        for k in range(1, cap + 1):  # each node adds itself to its parent, children first
            up = k + (k & -k)
            if up <= cap:
                tree[up] += tree[k]
        return tree

    def misses(self, ks: Iterable[int]) -> list[int]:
        """Misses of an LRU cache of k records, for each k of ``ks``: the first references
        and the requests at distance k or more."""
        hits = self._hits
        if hits is None:  # once for all the sizes asked until the next feed
            hits = self._hits = [0, *itertools.accumulate(self.hist)]
        top = len(hits) - 1
        return [self.requests - hits[min(max(k, 0), top)] for k in ks]
