"""OSv's shrinker registry: subsystems that can give memory back, asked in registration order.

A shrinker is anything with a ``name`` and ``request_memory(target, hard) -> bytes freed``
(OSv's ``osv_register_shrinker(name, fn)``); a plain callable can be registered under a name.
The registry keeps each shrinker's calls, total freed bytes and last yield for the summary and
for the out-of-memory report.

Shrinkers registered with ``verify=True`` (the user's) are not believed blindly: a call that
raises or answers anything but a byte count is a :class:`ShrinkerError`, and the yield counted is
at most what free memory (``free_bytes``) rose by during the call; what they claimed is kept
beside it (``claimed_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Shrinker(Protocol):
    """Gives back about ``target`` bytes; ``hard`` means someone is blocked waiting for memory."""

    name: str

    def request_memory(self, target: int, hard: bool) -> int: ...


class ShrinkerError(Exception):
    """A shrinker failed during a reclaim pass (it raised, or answered something that is not a
    byte count); str() is one line naming the shrinker."""

    def __init__(self, origin: str, message: str) -> None:
        super().__init__(f"shrinker '{origin}': {message}")
        self.origin = origin


@dataclass
class _FunctionShrinker:
    name: str
    fn: Callable[[int, bool], int]

    def request_memory(self, target: int, hard: bool) -> int:
        return self.fn(target, hard)


@dataclass
class ShrinkerStats:
    calls: int = 0
    freed_bytes: int = 0
    last_yield: int = 0
    active: bool = True
    #: set for verified shrinkers: where it came from (``module:attr``) and what it claimed
    origin: str | None = None
    claimed_bytes: int = 0


class ShrinkerRegistry:
    """Registered shrinkers in order, each activatable, with its statistics."""

    def __init__(self, free_bytes: Callable[[], int] | None = None) -> None:
        self._shrinkers: list[Shrinker] = []
        self.stats: dict[str, ShrinkerStats] = {}
        #: free memory in bytes, to check what verified shrinkers say they freed
        self.free_bytes = free_bytes
        #: the name of the shrinker being called, if any (a call may not allocate)
        self.calling: str | None = None

    def register(self, shrinker: Shrinker | Callable[[int, bool], int], name: str | None = None,
                 *, verify: bool = False, origin: str | None = None) -> Shrinker:
        """Register an object with request_memory, or a callable under ``name``; active at once.

        ``verify``: check each answer and cap it at the rise of free memory (user shrinkers);
        ``origin`` names the shrinker in errors (default: its name)."""
        if not isinstance(shrinker, Shrinker):
            if not callable(shrinker):
                raise TypeError(f"{shrinker!r} is neither a shrinker nor callable")
            shrinker = _FunctionShrinker(name or getattr(shrinker, "__name__", "shrinker"),
                                         shrinker)
        base, n = shrinker.name, 2
        while shrinker.name in self.stats:  # OSv allows duplicates; our summary keys must differ
            shrinker.name = f"{base}#{n}"
            n += 1
        self._shrinkers.append(shrinker)
        self.stats[shrinker.name] = ShrinkerStats(
            origin=(origin or shrinker.name) if verify else None)
        return shrinker

    def activate(self, name: str) -> None:
        self.stats[name].active = True

    def deactivate(self, name: str) -> None:
        self.stats[name].active = False

    @property
    def active_count(self) -> int:
        return sum(s.active for s in self.stats.values())

    def __iter__(self) -> Iterator[Shrinker]:
        return iter(self._shrinkers)

    def __len__(self) -> int:
        return len(self._shrinkers)

    def shrink_all(self, target: int, hard: bool) -> int:
        """Call every registered shrinker in order, as OSv's reclaimer does (it checks neither
        the active flag nor the target, which may be 0). Returns the bytes freed in all."""
        total = 0
        for s in self._shrinkers:
            st = self.stats[s.name]
            if st.origin is None:
                freed = max(0, int(s.request_memory(target, hard)))
            else:
                freed = self._verified_call(s, st, target, hard)
            st.calls += 1
            st.freed_bytes += freed
            st.last_yield = freed
            total += freed
        return total

    def _verified_call(self, s: Shrinker, st: ShrinkerStats, target: int, hard: bool) -> int:
        """A user shrinker's call: errors named, the yield capped at what free memory rose by."""
        origin = st.origin or s.name
        call = f"request_memory({target}, {hard})"
        before = self.free_bytes() if self.free_bytes is not None else None
        self.calling = s.name
        try:
            claimed = s.request_memory(target, hard)
        except ShrinkerError:
            raise
        except Exception as e:  # user code: any failure is the user's, reported in one line
            detail = str(e).splitlines()[0] if str(e) else ""
            raise ShrinkerError(origin, f"{call} raised {type(e).__name__}"
                                + (f": {detail}" if detail else "")) from None
        finally:
            self.calling = None
        if isinstance(claimed, bool) or not isinstance(claimed, int) or claimed < 0:
            raise ShrinkerError(origin, f"{call} returned {claimed!r}, not the bytes it freed "
                                "(an int >= 0)")
        st.claimed_bytes += claimed
        if before is None:
            return claimed
        return max(0, min(claimed, self.free_bytes() - before))

    def summary(self) -> dict[str, dict[str, int | bool]]:
        out: dict[str, dict[str, int | bool]] = {}
        for name, s in self.stats.items():
            out[name] = {"calls": s.calls, "freed_bytes": s.freed_bytes,
                         "last_yield_bytes": s.last_yield, "active": s.active}
            if s.origin is not None:  # a user shrinker: what it said, beside what it freed
                out[name]["claimed_bytes"] = s.claimed_bytes
        return out
