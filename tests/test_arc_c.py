"""The ARC's C lists (fs/zfs_arc/_arc_c.c, CArcPolicy) against their pure-Python twin
(PyArcPolicy): hit for hit, list for list (T1, T2 and the ghosts B1, B2, in order), the same p,
counters and summary, on the ARC paper's OLTP trace and on hypothesis-generated streams.

Skipped where the extension is not built; MMSIM_REQUIRE_C=1 makes that a failure (CI, where
the build must not silently fall back to the slow path)."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mmsim.fs.zfs_arc import policy_arc
from mmsim.fs.zfs_arc.policy_arc import CArcPolicy, PyArcPolicy
from test_arc import oltp_ids  # noqa: F401  (the fixture: the OLTP trace's requests)

REC = 4096


@pytest.fixture(autouse=True)
def _c_built() -> None:
    if policy_arc._arc_c is None:
        if os.environ.get("MMSIM_REQUIRE_C") == "1":
            pytest.fail("MMSIM_REQUIRE_C=1 but mmsim.fs.zfs_arc._arc_c is not built "
                        "(or MMSIM_PURE_PYTHON is set)")
        pytest.skip("mmsim.fs.zfs_arc._arc_c is not built")


def state(policy: PyArcPolicy) -> tuple[Any, ...]:
    """Everything the two must agree on: counters, p, list sizes and the lists themselves."""
    return (policy.hits, policy.misses, policy.evictions, policy.mru_hits, policy.mfu_hits,
            policy.mru_ghost_hits, policy.mfu_ghost_hits, policy.p, policy.size,
            policy.lists(), policy.dump(), policy.stats())


def batch_replay(cls: type[Any], keys: list[int], c: int, budgets: list[int],
                 checkpoints: int = 8, state: Callable[[Any], Any] = state
                 ) -> list[tuple[Any, ...]]:
    """``keys`` through access_many as the file system's block-trace path uses it (random
    budgets; over budget or a miss that evicts nothing: access() and a new buffer), with the
    state and the buffers taken at a few points along the way (also test_lru_c's, with its
    ``state``)."""
    policy = cls(c * REC)
    bufs: dict[int, int] = {}
    spare: list[int] = []
    new = itertools.count()
    policy.on_evict = lambda k: spare.append(bufs.pop(k))
    rng = random.Random(len(keys))
    every = max(len(keys) // checkpoints, 1)
    seen: list[tuple[Any, ...]] = []
    i = 0
    mark = every
    while i < len(keys):
        j = policy.access_many(keys, REC, i, rng.choice(budgets), bufs)
        last = keys[j - 1] if j > i else None
        if last is not None and last not in bufs and last in policy:
            bufs[last] = next(new)
        if j == i:
            x = keys[i]
            if not policy.access(x, REC) and x in policy:
                bufs[x] = spare.pop() if spare else next(new)
            j = i + 1
        i = j
        if i >= mark:
            seen.append((i, state(policy), dict(bufs)))
            mark += every
    seen.append((i, state(policy), bufs))
    return seen


@pytest.fixture(scope="module")
def oltp_prefix(oltp_ids: list[int]) -> list[int]:  # noqa: F811  (the imported fixture)
    return oltp_ids[:120_000]


@pytest.mark.parametrize("c", [1000, 5000])
def test_c_lists_equal_python_on_oltp_prefix(oltp_prefix: list[int], c: int) -> None:
    budgets = [0, 1, 7, 100, 1 << 40]
    assert batch_replay(CArcPolicy, oltp_prefix, c, budgets) == batch_replay(
        PyArcPolicy, oltp_prefix, c, budgets)


def run_summaries(ids: list[int], tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                  module: Any, classes: tuple[type[Any], ...], policy: str) -> list[dict]:
    """The summaries of `mmsim run --cache-policy POLICY` of ``ids`` (as a .lis file), with
    each of ``classes`` as the policy module's POLICY (also test_lru_c's)."""
    from mmsim.api import replay

    trace = tmp_path / "oltp-prefix.lis"
    with open(trace, "w", encoding="ascii") as f:
        f.writelines(f"{b} 1 0 0\n" for b in ids)
    summaries = []
    for cls in classes:
        monkeypatch.setattr(module, "POLICY", cls)
        summaries.append(replay(str(trace), None, fmt="lis", cache_policy=policy,
                                arc_size=1000 * 512).summary)
    assert summaries[0]["arc"]["hits"] > 0
    return summaries


def test_c_summary_equals_python_on_oltp_prefix(oltp_prefix: list[int], tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`mmsim run` of the prefix (as a .lis file) gives the same summary either way."""
    c_run, py_run = run_summaries(oltp_prefix, tmp_path, monkeypatch, policy_arc,
                                  (CArcPolicy, PyArcPolicy), "arc")
    assert c_run["arc"] == py_run["arc"]
    assert c_run["events"] == py_run["events"]


# a stream of operations on one policy: reads of mixed sizes (on_evict told of each eviction),
# batches of one size, removals, shrinker requests; keys beyond 64 bits now and then
_key = st.one_of(st.integers(0, 60), st.integers(0, 60).map(lambda k: -k - 1),
                 st.just(1 << 70), st.just(-(1 << 64)))
_op = st.one_of(
    st.tuples(st.just("access"), _key, st.sampled_from([512, 4096, 4096, 4096, 8192, 1 << 20])),
    st.tuples(st.just("batch"), st.lists(st.integers(0, 60), max_size=40), st.integers(0, 12)),
    st.tuples(st.just("remove"), _key, st.just(0)),
    st.tuples(st.just("evict"), st.integers(0, 40_000), st.just(0)),
)


def arc_residents(policy: PyArcPolicy) -> list[tuple[int, int]]:
    t1, t2 = policy.dump()[:2]
    return t1 + t2


def run_ops(cls: type[Any], capacity: int, ops: list[tuple[Any, ...]],
            state: Callable[[Any], Any] = state,
            residents: Callable[[Any], list[tuple[int, int]]] = arc_residents) -> list[Any]:
    """The operations on a policy, with what each returned, evicted and left (also
    test_lru_c's, with its ``state`` and resident records)."""
    policy = cls(capacity)
    bufs: dict[int, int] = {}
    evicted: list[int] = []

    def on_evict(k: int) -> None:
        evicted.append(k)
        bufs.pop(k, None)

    policy.on_evict = on_evict
    new = itertools.count()
    out: list[Any] = []
    for kind, a, b in ops:
        if kind == "access":
            r: Any = policy.access(a, b)
            if a in policy:
                bufs.setdefault(a, next(new))
        elif kind == "batch":
            # access_many's promise: every resident record is REC bytes and has a buffer
            if any(s != REC or k not in bufs for k, s in residents(policy)):
                continue
            r = policy.access_many(a, REC, 0, b, bufs)
            if r and a[r - 1] in policy and a[r - 1] not in bufs:
                bufs[a[r - 1]] = next(new)
        elif kind == "remove":
            r = policy.remove(a)
            bufs.pop(a, None)
        else:
            r = policy.evict_bytes(a)
        out.append((kind, r, list(evicted), state(policy)))
        evicted.clear()
    out.append(sorted(bufs.items()))
    return out


#: the generated streams' arguments (also test_lru_c's)
OPS = {"capacity": st.sampled_from([4096, 3 * 4096, 8 * 4096, 10_000, 50_000]),
       "ops": st.lists(_op, max_size=120)}
_budgets = st.lists(st.integers(0, 50) | st.just(1 << 40), min_size=1, max_size=4)
BATCHES = {"c": st.integers(1, 40), "keys": st.lists(st.integers(0, 100), max_size=600),
           "budgets": _budgets}
SKEWED = {"seed": st.integers(0, 2**32 - 1), "c": st.integers(1, 30),
          "objects": st.integers(2, 80), "length": st.integers(1, 1500), "budgets": _budgets}


@settings(max_examples=300, deadline=None)
@given(**OPS)
def test_c_lists_equal_python_on_generated_streams(capacity: int,
                                                   ops: list[tuple[Any, ...]]) -> None:
    assert run_ops(CArcPolicy, capacity, ops) == run_ops(PyArcPolicy, capacity, ops)


@settings(max_examples=200, deadline=None)
@given(**BATCHES)
def test_c_batches_equal_python_on_generated_streams(c: int, keys: list[int],
                                                     budgets: list[int]) -> None:
    assert batch_replay(CArcPolicy, keys, c, budgets, 4) == batch_replay(
        PyArcPolicy, keys, c, budgets, 4)


def skewed(rng: random.Random, objects: int, c: int, length: int) -> list[int]:
    """Requests with a hot set, loops and scans: what moves p both ways, to its bounds and
    onto exact multiples of the record size (where T1 == p decides REPLACE)."""
    trace: list[int] = []
    while len(trace) < length:
        r = rng.random()
        if r < 0.6:
            trace.append(int(rng.paretovariate(0.8)) % objects)
        elif r < 0.8:
            start = rng.randint(0, 3 * objects)
            trace.extend(range(start, start + rng.randint(1, 2 * c + 1)))
        else:
            trace.extend(rng.sample(range(objects), min(objects, c)))
    return trace


@settings(max_examples=150, deadline=None)
@given(**SKEWED)
def test_c_batches_equal_python_on_skewed_streams(seed: int, c: int, objects: int, length: int,
                                                  budgets: list[int]) -> None:
    keys = skewed(random.Random(seed), objects, c, length)
    assert batch_replay(CArcPolicy, keys, c, budgets, 4) == batch_replay(
        PyArcPolicy, keys, c, budgets, 4)
    assert batch_replay(CArcPolicy, keys, c, [0], 2) == batch_replay(PyArcPolicy, keys, c, [0], 2)


def test_a_key_beyond_64_bits_hands_the_state_to_python() -> None:
    keys = [random.Random(3).randint(0, 50) for _ in range(500)]
    c_side, py_side = CArcPolicy(8 * REC), PyArcPolicy(8 * REC)
    for k in keys + [1 << 80] + keys:
        assert c_side.access(k, REC) == py_side.access(k, REC)
    assert type(c_side) is PyArcPolicy  # carried on in Python, from the same state
    assert state(c_side) == state(py_side)


def test_arc_policy_is_the_c_one_when_built() -> None:
    assert policy_arc.ArcPolicy is CArcPolicy and policy_arc.POLICY is CArcPolicy
