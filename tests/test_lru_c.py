"""The LRU's C list (fs/zfs_arc/_arc_c.c's Lru, CLruPolicy) against its pure-Python twin
(PyLruPolicy): hit for hit, the list in order, the same evictions (and on_evict calls),
counters and summary, on the ARC paper's OLTP trace and on hypothesis-generated streams (the
drivers are test_arc_c's, given the LRU's state).

Skipped where the extension is not built; MMSIM_REQUIRE_C=1 makes that a failure (CI, where
the build must not silently fall back to the slow path)."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import given, settings
from mmsim.fs.zfs_arc import policy_lru
from mmsim.fs.zfs_arc.policy_lru import CLruPolicy, PyLruPolicy
from test_arc import oltp_ids  # noqa: F401  (the fixture: the OLTP trace's requests)
from test_arc_c import BATCHES, OPS, REC, SKEWED, batch_replay, run_ops, run_summaries, skewed


@pytest.fixture(autouse=True)
def _c_built() -> None:
    if policy_lru._arc_c is None:
        if os.environ.get("MMSIM_REQUIRE_C") == "1":
            pytest.fail("MMSIM_REQUIRE_C=1 but mmsim.fs.zfs_arc._arc_c is not built "
                        "(or MMSIM_PURE_PYTHON is set)")
        pytest.skip("mmsim.fs.zfs_arc._arc_c is not built")


def state(policy: PyLruPolicy) -> tuple[Any, ...]:
    """Everything the two must agree on: counters, sizes and the list itself, in order."""
    return (policy.hits, policy.misses, policy.evictions, policy.mru_hits, policy.size,
            policy.lists(), policy.dump(), policy.stats())


def lru(cls: type[PyLruPolicy], keys: list[int], c: int, budgets: list[int],
        checkpoints: int = 8) -> list[tuple[Any, ...]]:
    return batch_replay(cls, keys, c, budgets, checkpoints, state=state)


def run(cls: type[PyLruPolicy], capacity: int, ops: list[tuple[Any, ...]]) -> list[Any]:
    return run_ops(cls, capacity, ops, state=state, residents=lambda p: p.dump())


@pytest.fixture(scope="module")
def oltp_prefix(oltp_ids: list[int]) -> list[int]:  # noqa: F811  (the imported fixture)
    return oltp_ids[:120_000]


@pytest.mark.parametrize("c", [1000, 5000])
def test_c_list_equals_python_on_oltp_prefix(oltp_prefix: list[int], c: int) -> None:
    budgets = [0, 1, 7, 100, 1 << 40]
    assert lru(CLruPolicy, oltp_prefix, c, budgets) == lru(PyLruPolicy, oltp_prefix, c, budgets)


def test_c_summary_equals_python_on_oltp_prefix(oltp_prefix: list[int], tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`mmsim run --cache-policy lru` of the prefix (as a .lis file): the same summary."""
    c_run, py_run = run_summaries(oltp_prefix, tmp_path, monkeypatch, policy_lru,
                                  (CLruPolicy, PyLruPolicy), "lru")
    assert c_run["arc"] == py_run["arc"]
    assert c_run["events"] == py_run["events"]


@settings(max_examples=300, deadline=None)
@given(**OPS)
def test_c_list_equals_python_on_generated_streams(capacity: int,
                                                   ops: list[tuple[Any, ...]]) -> None:
    """Mixed sizes (records bigger than the cache, several pushed out for one), batches,
    removals, shrinker requests and keys beyond 64 bits, on_evict's calls compared."""
    assert run(CLruPolicy, capacity, ops) == run(PyLruPolicy, capacity, ops)


@settings(max_examples=200, deadline=None)
@given(**BATCHES)
def test_c_batches_equal_python_on_generated_streams(c: int, keys: list[int],
                                                     budgets: list[int]) -> None:
    assert lru(CLruPolicy, keys, c, budgets, 4) == lru(PyLruPolicy, keys, c, budgets, 4)


@settings(max_examples=150, deadline=None)
@given(**SKEWED)
def test_c_batches_equal_python_on_skewed_streams(seed: int, c: int, objects: int, length: int,
                                                  budgets: list[int]) -> None:
    keys = skewed(random.Random(seed), objects, c, length)
    assert lru(CLruPolicy, keys, c, budgets, 4) == lru(PyLruPolicy, keys, c, budgets, 4)
    assert lru(CLruPolicy, keys, c, [0], 2) == lru(PyLruPolicy, keys, c, [0], 2)


def test_a_key_beyond_64_bits_hands_the_state_to_python() -> None:
    keys = [random.Random(3).randint(0, 50) for _ in range(500)]
    c_side, py_side = CLruPolicy(8 * REC), PyLruPolicy(8 * REC)
    for k in keys + [1 << 80] + keys:
        assert c_side.access(k, REC) == py_side.access(k, REC)
    assert type(c_side) is PyLruPolicy  # carried on in Python, from the same state
    assert state(c_side) == state(py_side)


def test_a_batch_key_beyond_64_bits_hands_the_rest_to_python() -> None:
    keys = [random.Random(5).randint(0, 50) for _ in range(300)]
    keys = keys + [1 << 64] + keys
    assert lru(CLruPolicy, keys, 8, [3, 1 << 40], 4) == lru(PyLruPolicy, keys, 8, [3, 1 << 40], 4)


def test_lru_policy_is_the_c_one_when_built() -> None:
    assert policy_lru.LruPolicy is CLruPolicy and policy_lru.POLICY is CLruPolicy


def test_a_cache_beyond_the_c_lists_gets_the_python_twin(tmp_path) -> None:
    """An ARC size over 2**53 bytes (the C lists' limit) is the pure-Python policy's, with the
    same hits, and `mmsim run` takes it with no traceback."""
    from cli_helpers import run as run_cli
    from mmsim.fs.zfs_arc.policy import C_MAX_CAPACITY
    from mmsim.fs.zfs_arc.policy_arc import CArcPolicy, PyArcPolicy

    for cls, twin in ((CArcPolicy, PyArcPolicy), (CLruPolicy, PyLruPolicy)):
        assert type(cls(C_MAX_CAPACITY)) is cls
        big, pure = cls(C_MAX_CAPACITY + 1), twin(C_MAX_CAPACITY + 1)
        assert type(big) is twin
        keys = [random.Random(3).randrange(50) for _ in range(500)]
        assert [big.access(k, 4096) for k in keys] == [pure.access(k, 4096) for k in keys]
    trace = tmp_path / "t.lis"
    trace.write_text("".join(f"{k} 1 0 0\n" for k in range(100)) * 2)
    for policy in ("arc", "lru"):
        code, out, err = run_cli("run", str(trace), "--cache-policy", policy,
                                 "--arc-size", "9000T", "--json", "-", "-q")
        assert code == 0, err
