"""Application bugs and failed calls seen in a trace, kept the way a sanitizer reports them.

The replay goes on after each one: a user wants every bug of a trace counted, not the first
one turned into a crash of the simulator.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

MAX_EXAMPLES = 5


@dataclass
class AppErrors:
    """Counts by kind (``EINVAL``, ``double_free``, ``SIGSEGV``...) plus the first examples."""

    counts: Counter = field(default_factory=Counter)
    examples: list[dict] = field(default_factory=list)

    def report(self, kind: str, line: int, op: str, message: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append({"kind": kind, "line": line, "op": op, "message": message})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        return {"total": self.total, "by_kind": dict(sorted(self.counts.items())),
                "examples": list(self.examples)}
