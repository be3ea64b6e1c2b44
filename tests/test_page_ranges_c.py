"""The C page range allocator (mm/_page_ranges_c.c) against its Python twin: the same calls give
the same pages, leave the same runs in the same containers and order (runs_by_size is OSv's
wake order, so list order is part of what must match) and call the pressure hook the same.

Skipped where the extension is not built, unless MMSIM_REQUIRE_C=1 (CI), where that fails.
"""

from __future__ import annotations

import os
import random
from typing import Any

import hypothesis.strategies as st
import pytest
import test_mallocs_c
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from mmsim.kernel import boot
from mmsim.mm import page_range_allocator as pra
from mmsim.mm.page_range_allocator import PyPageRangeAllocator

from mmsim.trace.mtrace import read_mtrace

C = pra._page_ranges_c
needs_c = pytest.mark.skipif(C is None and os.environ.get("MMSIM_REQUIRE_C") != "1",
                             reason="mmsim.mm._page_ranges_c is not built")

# two areas with a hole between them, the second large enough for the size-ordered set
AREAS = [(1, 3000), (4096, 200_000), (300_000, 70_000)]


def twins() -> tuple[Any, PyPageRangeAllocator]:
    assert C is not None, "MMSIM_REQUIRE_C=1 but mmsim.mm._page_ranges_c is not built"
    out = []
    for cls in (C.PageRanges, PyPageRangeAllocator):
        r = cls()
        for start, n in AREAS:
            r.add_initial_range(start, n)
        out.append(r)
    return out[0], out[1]


def state(r: Any) -> tuple:
    return (list(r.runs()), list(r.runs_by_size()), r.free_pages, r.total_pages,
            r.peak_used_pages, r.nr_runs, r.largest_run())


class TwinMachine(RuleBasedStateMachine):
    """Every call on both; the answers, the runs and the hook's calls must be equal."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.py = twins()
        self.calls: dict[str, list[int]] = {"c": [], "py": []}
        self.c.on_alloc = self.calls["c"].append
        self.py.on_alloc = self.calls["py"].append
        self.held: list[tuple[int, int]] = []

    def both(self, name: str, *args: Any, **kw: Any) -> Any:
        a = getattr(self.c, name)(*args, **kw)
        b = getattr(self.py, name)(*args, **kw)
        assert a == b, f"{name}{args}: C {a} != Python {b}"
        return a

    @rule(n=st.one_of(st.integers(1, 40), st.integers(1, 5000), st.integers(60_000, 140_000)),
          contiguous=st.booleans())
    def alloc(self, n: int, contiguous: bool) -> None:
        start = self.both("alloc", n, contiguous=contiguous)
        if start is not None:
            self.held.append((start, n))

    @rule(n=st.integers(1, 600), align=st.sampled_from([1, 8, 64, 512]), offset=st.integers(0, 1))
    def alloc_aligned(self, n: int, align: int, offset: int) -> None:
        start = self.both("alloc_aligned", n, align, offset)
        if start is not None:
            self.held.append((start, n))

    @rule(n=st.integers(1, 3000))
    def bulk(self, n: int) -> None:
        self.held.extend(self.both("alloc_pages_bulk", n))

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        start, n = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        self.both("free", start, n)

    @rule(percent=st.sampled_from([None, 10, 50, 99]))
    def hook_percent(self, percent: int | None) -> None:
        self.c.on_alloc_percent = self.py.on_alloc_percent = percent
        assert self.c.on_alloc_percent == percent

    @invariant()
    def equal(self) -> None:
        assert state(self.c) == state(self.py)
        assert self.calls["c"] == self.calls["py"]
        self.c.check()


TwinMachine.TestCase.settings = settings(max_examples=60 if os.environ.get("CI") else 200,
                                         stateful_step_count=60, deadline=None)
TestTwins = needs_c(TwinMachine.TestCase)


@needs_c
def test_many_runs_through_growth_and_merges_stay_equal():
    """20,000 runs at once (the tables grow, deletions wrap around their ends), then freed in
    a random order so that every kind of merge happens."""
    c, py = twins()
    rng = random.Random(7)
    pieces = [c.alloc(1) for _ in range(40_000)]
    assert pieces == [py.alloc(1) for _ in range(40_000)]
    rng.shuffle(pieces)
    for k, p in enumerate(pieces):
        c.free(p, 1)
        py.free(p, 1)
        if k % 4000 == 0:
            assert state(c) == state(py)
            c.check()
    assert state(c) == state(py)
    assert list(c.runs()) == [(s, n) for s, n in AREAS]
    c.check()


@needs_c
def test_the_hook_runs_only_under_its_percent_and_its_error_propagates():
    c, py = C.PageRanges(), PyPageRangeAllocator()
    total = 100_000
    for r in (c, py):
        r.add_initial_range(16, total)
    seen: list[int] = []
    c.on_alloc, c.on_alloc_percent = seen.append, 10
    assert c.alloc(total - total // 10) is not None  # free is 10 %, not under it: not called
    assert seen == []
    c.alloc(1)  # now under it
    assert seen == [1]

    def boom(n: int) -> None:
        raise RuntimeError(n)

    for r in (c, py):
        r.on_alloc = boom
        with pytest.raises(RuntimeError):
            r.alloc(7)
    assert c.free_pages == total // 10 - 1 - 7  # the pages were taken, as in Python
    assert py.free_pages == total - 7


@needs_c
def test_bad_calls_are_errors_as_in_python():
    c, py = twins()
    for r in (c, py):
        with pytest.raises(ValueError):
            r.alloc(0)
        with pytest.raises(ValueError):
            r.alloc_aligned(4, 3)
        with pytest.raises(ValueError):
            r.alloc_aligned(4, 4, -1)
        with pytest.raises(TypeError):
            r.alloc("4")
    with pytest.raises(ValueError):
        c.on_alloc_percent = 101
    with pytest.raises(OverflowError):
        c.free(1 << 60, 1)
    assert state(c) == state(py)


@needs_c
@pytest.mark.parametrize(("name", "memory"), [("ls.mtrace", 2 << 30), ("awk.mtrace", 56 << 20)])
def test_a_replay_on_either_twin_gives_the_same_results(
        name: str, memory: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole kernel booted on the Python twin replays a fixture as on the C one (whose large
    runs the C malloc loop takes and gives without Python): summary, events, errors."""
    ops = list(read_mtrace(test_mallocs_c.FIXTURES / name))
    on_c = test_mallocs_c._replay(ops, True, memory, 2)
    monkeypatch.setattr(boot, "PageRangeAllocator", PyPageRangeAllocator)
    on_py = test_mallocs_c._replay(ops, True, memory, 2)
    assert on_py == on_c
