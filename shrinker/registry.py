"""OSv's shrinker registry: subsystems that can give memory back, asked in registration order.

A shrinker is anything with a ``name`` and ``request_memory(target, hard) -> bytes freed``
(OSv's ``osv_register_shrinker(name, fn)``); a plain callable can be registered under a name.
The registry keeps each shrinker's calls, total freed bytes and last yield for the summary and
for the out-of-memory report.
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


@dataclass
class _FunctionShrinker:
    name: str
    fn: Callable[[int, bool], int]

    def request_memory(self, target: int, hard: bool) -> int:
        return int(self.fn(target, hard))


@dataclass
class ShrinkerStats:
    calls: int = 0
    freed_bytes: int = 0
    last_yield: int = 0
    active: bool = True


class ShrinkerRegistry:
    """Registered shrinkers in order, each activatable, with its statistics."""

    def __init__(self) -> None:
        self._shrinkers: list[Shrinker] = []
        self.stats: dict[str, ShrinkerStats] = {}

    def register(self, shrinker: Shrinker | Callable[[int, bool], int], name: str | None = None
                 ) -> Shrinker:
        """Register an object with request_memory, or a callable under ``name``; active at once."""
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
        self.stats[shrinker.name] = ShrinkerStats()
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
            freed = max(0, int(s.request_memory(target, hard)))
            st = self.stats[s.name]
            st.calls += 1
            st.freed_bytes += freed
            st.last_yield = freed
            total += freed
        return total

    def summary(self) -> dict[str, dict[str, int | bool]]:
        return {name: {"calls": s.calls, "freed_bytes": s.freed_bytes,
                       "last_yield_bytes": s.last_yield, "active": s.active}
                for name, s in self.stats.items()}
