"""The interface every buffer-cache replacement policy implements, and the registry of policies.

A policy decides which records stay cached; it never touches memory itself. The file system
owns the buffers: it is told through ``on_evict(key)`` when a record leaves the cache, and it
allocates a buffer after a miss. A new policy is one new module ``policy_<name>.py`` in this
package defining ``POLICY`` (a :class:`CachePolicy` subclass): it is found by its file name,
so no list has to be edited.

Keys are ints chosen by the caller (the file system packs file id and record index). Sizes are
bytes; with equal-sized records every byte quantity is that size times the object count.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

EvictFn = Callable[[int], None]


NEVER = 1 << 62
#: the largest capacity the C lists take (their byte counts are compared as doubles with p);
#: a larger cache gets the pure-Python twin, with the same results
C_MAX_CAPACITY = 1 << 53

#: the list keys of the summary's ``arc`` section; every policy reports all of them (0 for
#: the lists it does not have), so summaries of different policies line up key for key
LIST_KEYS = (
    "mru_bytes", "mfu_bytes", "mru_ghost_bytes", "mfu_ghost_bytes",
    "mru_count", "mfu_count", "mru_ghost_count", "mfu_ghost_count",
)


def _no_evict(key: int) -> None:
    """Default eviction callback: nothing to release (policy used on its own)."""


def _zero() -> int:
    return 0


def _false() -> bool:
    return False


class CachePolicy(ABC):
    """A replacement policy over keyed, sized records with a byte capacity.

    ``access`` is the whole hot path: it returns whether the key was cached and, on a miss,
    makes room (calling ``on_evict`` for each record pushed out) and admits the key.
    """

    name: ClassVar[str] = ""

    #: target bytes of the recency side (ARC's p); 0 for policies without one
    p: float = 0.0
    #: when :meth:`tick` next has work (simulated ns); never for policies without a thread
    next_tick_ns: int = NEVER
    #: the period of :meth:`tick`'s passes (their grid: next_tick_ns + k periods)
    tick_period_ns: int = NEVER
    #: hits on each list (ghost hits are misses that found a ghost); 0 without such a list
    mru_hits: int = 0
    mfu_hits: int = 0
    mru_ghost_hits: int = 0
    mfu_ghost_hits: int = 0
    #: ZFS's arc_no_grow and its reclaim thread's shrinks of c; False and 0 elsewhere
    no_grow: bool = False
    shrinks: int = 0
    #: whether the file system should charge a file's indirect and metadata blocks (ZFS)
    models_metadata: ClassVar[bool] = False

    def __init__(
        self, capacity: int, on_evict: EvictFn = _no_evict, *, c_min: int | None = None
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"cache capacity must be positive, not {capacity}")
        self.capacity = capacity
        #: the floor of an adaptive target; fixed-size policies have c_min = c_max = capacity
        self.c_min = capacity if c_min is None else min(c_min, capacity)
        self.on_evict = on_evict
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        #: simulated time in ns and "memory is low" (ZFS: kmem_used > 3/4 kmem_size); the
        #: file system points these at the kernel
        self.clock: Callable[[], int] = _zero
        self.memory_low: Callable[[], bool] = _false

    @abstractmethod
    def access(self, key: int, size: int) -> bool:
        """Reference ``key``; True on a hit. A miss admits it (evicting others first)."""

    def access_many(self, keys: Sequence[int], size: int, start: int, budget: int,
                    payload: dict[int, Any]) -> int:
        """Reference keys[start], keys[start + 1], ... as :meth:`access` would, while each is
        a hit or a miss that pushes out exactly one resident record, at most ``budget`` of
        those: the evicted key's value in ``payload`` passes to the new key, and ``on_evict``
        is not called. Stops after a miss that evicts nothing or can never fit (the caller
        gives it a value), or before a miss over budget; returns the index after the last key
        referenced.

        Why: a block trace is millions of one-record reads; a call per request and a callback
        per eviction cost more than the cache itself. The caller promises that every resident
        record is ``size`` bytes (so a full cache evicts one per miss) and has a value in
        ``payload`` (its buffer), and does the rest of each miss's work (the disk read) after
        the call: so only a policy whose decisions depend on the keys alone (no clock, no
        memory state, no thread) may implement it. The default references none."""
        return start

    @abstractmethod
    def remove(self, key: int) -> bool:
        """Forget ``key`` (file removed or record rewritten), resident or ghost; True if cached.

        No ``on_evict`` call: the caller releases the buffer itself.
        """

    @abstractmethod
    def __contains__(self, key: int) -> bool:
        """Whether ``key`` is resident (ghosts do not count)."""

    def at_rest(self) -> bool:
        """True if a pass of :meth:`tick` would change nothing now (always, without a thread):
        the file system then lets simulated time jump over the passes."""
        return True

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes of resident records."""

    @abstractmethod
    def evict_bytes(self, nbytes: int) -> int:
        """Push out at least ``nbytes`` if there is that much; bytes freed (the shrinker's
        soft path). The capacity target is left unchanged."""

    @property
    def target(self) -> int:
        """The size the policy evicts down to (ZFS's arc_c); the capacity for fixed policies."""
        return self.capacity

    def lowmem(self) -> int:
        """Hard memory pressure (ZFS's arc_lowmem); bytes freed at once. Fixed policies: 0."""
        return 0

    def tick(self, now_ns: int) -> None:
        """Run the cache's own thread if due (ZFS's reclaim thread); none by default."""
        return None


    def space(self) -> tuple[int, int, int]:
        """(data_size, hdr_size, other_size): what the size is made of. Only ZFS's ARC counts
        headers and dbufs; the other policies' size is all data."""
        return self.size, 0, 0

    def overhead(self) -> int:
        """hdr_size + other_size of :meth:`space`: the bytes of the size that are no data."""
        _, hdr, other = self.space()
        return hdr + other

    def charge(self, data: int, hdr: int, other: int) -> None:
        """Bytes in the size but on no list (ZFS: held metadata blocks, their headers and
        dbufs); policies that do not model them ignore it."""
        return None

    def lists(self) -> dict[str, int]:
        """Bytes on each of the policy's lists, for the summary (resident and ghost)."""
        return {}

    def list_sizes(self) -> dict[str, int]:
        """Every key of LIST_KEYS: :meth:`lists`, with 0 for the lists this policy lacks."""
        return {**dict.fromkeys(LIST_KEYS, 0), **self.lists()}

    def stats(self) -> dict[str, Any]:
        """Counters and sizes for the summary's ``arc`` section."""
        total = self.hits + self.misses
        data, hdr, other = self.space()
        return {
            "policy": self.name,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hits / total if total else 0.0,
            "size_bytes": self.size,
            "data_size_bytes": data,
            "hdr_size_bytes": hdr,
            "other_size_bytes": other,
            "c_bytes": self.target,
            "p_bytes": self.p,
            "c_min_bytes": self.c_min,
            "c_max_bytes": self.capacity,
            "evictions": self.evictions,
            "mru_hits": self.mru_hits,
            "mfu_hits": self.mfu_hits,
            "mru_ghost_hits": self.mru_ghost_hits,
            "mfu_ghost_hits": self.mfu_ghost_hits,
            "no_grow": self.no_grow,
            "shrinks": self.shrinks,
        }


def available_policies() -> list[str]:
    """Names of the policy modules shipped in this package, sorted."""
    pkg = importlib.import_module(__package__ or "mmsim.fs.zfs_arc")
    names = [
        m.name[len("policy_"):]
        for m in pkgutil.iter_modules(pkg.__path__)
        if m.name.startswith("policy_")
    ]
    return sorted(names)


def policy_class(name: str) -> type[CachePolicy]:
    """The class of policy ``name``; ValueError naming the known ones if there is none."""
    if not name.isidentifier() or name not in available_policies():
        known = ", ".join(available_policies())
        raise ValueError(f"unknown cache policy '{name}' (known: {known})")
    module = importlib.import_module(f"{__package__ or 'mmsim.fs.zfs_arc'}.policy_{name}")
    cls = getattr(module, "POLICY", None)
    if not (isinstance(cls, type) and issubclass(cls, CachePolicy)):
        raise ValueError(f"cache policy module '{name}' defines no POLICY class")
    return cls
