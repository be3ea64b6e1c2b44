"""kernel/_mallocs_c.c's FreedHandles, a half of the freed-handle quarantine where the C loop is
built, against the dict of the pure-Python build.

What the replay does with it (set a handle's line, set it again, ask whether a handle is there
and at which line it was freed, count) must give what the dict gives, for handles short enough
to live in a slot and for the others (long, not ASCII), through collisions and growth.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from mmsim.kernel import sys_malloc

C = sys_malloc._mallocs_c
needs_c = pytest.mark.skipif(C is None and os.environ.get("MMSIM_REQUIRE_C") != "1",
                             reason="mmsim.kernel._mallocs_c is not built")

# slot-sized handles as the reader makes them, the longest a slot holds, and ones held by
# reference: one character longer, longer still, not ASCII, empty
HANDLES = ([f"p0x{i:x}" for i in range(0, 4000, 97)] + ["p0x55d4c3a0b2c0.1234567", "p" * 22,
           "p" * 23, "q" * 23, "p" * 24, "p0x" + "f" * 40, "p0xé", "p0x\u4e2d", ""])


class FreedHandlesMachine(RuleBasedStateMachine):
    """Random sets and lookups on a FreedHandles and a dict: the same answers."""

    def __init__(self) -> None:
        super().__init__()
        assert C is not None, "MMSIM_REQUIRE_C=1 but mmsim.kernel._mallocs_c is not built"
        self.fh = C.FreedHandles()
        self.d: dict[str, int] = {}

    @rule(h=st.sampled_from(HANDLES), line=st.integers(-(1 << 62), 1 << 62))
    def set(self, h: str, line: int) -> None:
        key = "".join(list(h))  # an equal str, not the same object: found by its text
        self.fh[key] = line
        self.d[key] = line

    @rule(h=st.sampled_from(HANDLES))
    def lookups(self, h: str) -> None:
        assert (h in self.fh) == (h in self.d)
        assert self.fh.get(h) == self.d.get(h)
        assert self.fh.get(h, -7) == self.d.get(h, -7)
        if h in self.d:
            assert self.fh[h] == self.d[h]
        else:
            with pytest.raises(KeyError):
                self.fh[h]

    @invariant()
    def same(self) -> None:
        assert len(self.fh) == len(self.d)
        assert sorted(self.fh) == sorted(self.d)


FreedHandlesMachine.TestCase.settings = settings(
    max_examples=40 if os.environ.get("CI") else 150, stateful_step_count=80, deadline=None)
TestFreedHandles = needs_c(FreedHandlesMachine.TestCase)


@needs_c
def test_a_half_of_the_quarantine_holds_what_a_dict_holds() -> None:
    """40 k handles (the table grows past a half's 32 k), each freed once or twice."""
    fh, d = C.FreedHandles(), {}
    rnd = random.Random(3)
    handles = [f"p0x{rnd.getrandbits(44):x}" for _ in range(40_000)]
    for line, h in enumerate(handles + handles[::7], 1):
        fh[h] = line
        d[h] = line
    assert len(fh) == len(d)
    assert all(fh[h] == d[h] for h in handles)
    assert sorted(fh) == sorted(d)
    assert "p0x1" not in fh and fh.get(123) is None


@needs_c
def test_what_a_freed_handle_cannot_be_is_an_error() -> None:
    fh = C.FreedHandles()
    for key, line in ((5, 1), ("p0x1", "1"), ("p0x1", 1 << 70)):
        with pytest.raises(TypeError):
            fh[key] = line
    fh["p0x1"] = 3
    with pytest.raises(TypeError):
        del fh["p0x1"]
    assert fh["p0x1"] == 3 and len(fh) == 1
