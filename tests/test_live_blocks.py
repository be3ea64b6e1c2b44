"""kernel/_mallocs_c.c's LiveBlocks, MallocFace.live where the C loop is built, against a dict.

Everything a reader of the face's live blocks does (get, pop, set, setdefault, delete,
membership, len, the blocks in insertion order, a key set again keeping its place) must give
what the dict of the pure-Python build gives; the table's probing, growth and deletion (by
moving later slots back) are exercised by handles that collide in a small table and by tens of
thousands of handles coming and going.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from mmsim.kernel import Kernel, KernelConfig, sys_malloc

C = sys_malloc._mallocs_c
needs_c = pytest.mark.skipif(C is None and os.environ.get("MMSIM_REQUIRE_C") != "1",
                             reason="mmsim.kernel._mallocs_c is not built")

HANDLES = [f"p{i:x}" for i in range(40)]
SITES = [None, "a.out:(f+0x10)[0x401000]", "[0x403000]"]
blocks = st.tuples(st.integers(0, 1 << 62), st.integers(0, 1 << 50), st.sampled_from(SITES))


def _same(lb: Any, d: dict[str, Any]) -> None:
    assert len(lb) == len(d)
    assert lb.keys() == list(d.keys())
    assert lb.values() == list(d.values())
    assert lb.items() == list(d.items())
    assert list(lb) == list(d)


class LiveBlocksMachine(RuleBasedStateMachine):
    """Random operations on a LiveBlocks and a dict: the same answers, the same order."""

    def __init__(self) -> None:
        super().__init__()
        self.lb = C.LiveBlocks()
        self.d: dict[str, Any] = {}

    @rule(h=st.sampled_from(HANDLES), block=blocks)
    def set(self, h: str, block: tuple[int, int, str | None]) -> None:
        # a copy of the handle, not the object: keys are found by equality, as in a dict
        key = "".join(h)
        self.lb[key] = block
        self.d[key] = block

    @rule(h=st.sampled_from(HANDLES), block=blocks)
    def setdefault(self, h: str, block: tuple[int, int, str | None]) -> None:
        got = self.lb.setdefault(h, block)
        assert got == self.d.setdefault(h, block)
        # the block itself once it is put there (the replay tells a leak by identity)
        assert (got is block) == (self.d[h] is block)

    @rule(h=st.sampled_from(HANDLES))
    def pop(self, h: str) -> None:
        assert self.lb.pop(h, None) == self.d.pop(h, None)

    @rule(h=st.sampled_from(HANDLES))
    def delete(self, h: str) -> None:
        if h in self.d:
            del self.lb[h]
            del self.d[h]
        else:
            with pytest.raises(KeyError):
                del self.lb[h]

    @rule(h=st.sampled_from(HANDLES))
    def lookup(self, h: str) -> None:
        assert (h in self.lb) == (h in self.d)
        assert self.lb.get(h) == self.d.get(h)
        assert self.lb.get(h, 7) == self.d.get(h, 7)
        if h in self.d:
            assert self.lb[h] == self.d[h]
        else:
            with pytest.raises(KeyError):
                self.lb[h]  # noqa: B018

    @invariant()
    def same(self) -> None:
        _same(self.lb, self.d)


TestLiveBlocks = needs_c(LiveBlocksMachine.TestCase)


@needs_c
def test_many_handles_coming_and_going_are_a_dicts() -> None:
    """Growth from 8 slots to 65,536, and deletions that move runs of colliding slots back
    across the table's end."""
    rng = random.Random(17)
    lb, d = C.LiveBlocks(), {}
    for step in range(60_000):
        h = f"p{rng.randrange(30_000):x}"
        if rng.random() < 0.6:
            block = (rng.randrange(1 << 47), rng.randrange(1 << 20), rng.choice(SITES))
            lb[h] = block
            d[h] = block
        else:
            assert lb.pop(h, None) == d.pop(h, None)
        if step % 10_000 == 0:
            _same(lb, d)
    _same(lb, d)
    for h in list(d):
        assert lb.pop(h) == d.pop(h)
    assert len(lb) == 0 and lb.values() == []


@needs_c
def test_a_table_that_doubles_in_place_finds_every_block() -> None:
    """Past 2 MiB the table doubles inside its own mapping, its blocks moved within it (and
    those of a run that wrapped around the table's end set aside and put back): after each
    doubling, up to 524,288 slots, every block is found where a dict has it, in its order."""
    rng = random.Random(29)
    lb, d = C.LiveBlocks(), {}
    checked = 0
    for i in range(300_000):
        h = f"p0x{rng.randrange(1 << 44):x}"
        block = (i, i % 4096, SITES[i % 3])
        lb[h] = block
        d[h] = block
        if i % 7 == 0:  # some leave, so that runs move back across the table's end too
            gone = f"p0x{rng.randrange(1 << 44):x}" if i % 2 else h
            assert lb.pop(gone, None) == d.pop(gone, None)
        if len(d) in (40_000, 80_000, 170_000, 260_000) and checked < len(d):
            checked = len(d)
            assert all(lb[k] == v for k, v in d.items())
    assert checked == 260_000
    _same(lb, d)


@needs_c
def test_what_a_live_block_cannot_be_is_an_error_not_a_crash() -> None:
    lb = C.LiveBlocks()
    with pytest.raises(TypeError):
        lb[1] = (0x1000, 16, None)  # a handle is a str
    with pytest.raises(TypeError):
        lb["p1"] = (0x1000, 16)  # a block is (address, size, site)
    with pytest.raises(OverflowError):
        lb["p1"] = (1 << 64, 16, None)
    assert 1 not in lb and lb.get(1) is None and len(lb) == 0


@needs_c
def test_the_face_keeps_its_blocks_in_the_c_table() -> None:
    """With the C loop built, the face's live blocks are a LiveBlocks (the C loop runs only on
    it) and the summary counts them as the dict would."""
    k = Kernel(KernelConfig(memory=256 << 20, cpus=1))
    assert type(k.malloc.live) is C.LiveBlocks
    assert k.malloc._c_ready()
