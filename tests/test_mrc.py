"""`mmsim mrc`'s one-pass methods against the replays they stand for: LRU's curve from stack
distances equals the per-size replays request for request, and sampled curves stay within the
error bound docs/sweep.md states."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from cli_helpers import run
from helpers import assert_one_line_error, ids_trace
from mmsim.fs.zfs_arc.policy_lru import LruPolicy

from mmsim import stack_distance
from mmsim.mrc import estimated_misses
from mmsim.stack_distance import (
    MODULUS,
    StackDistances,
    sample_positions,
    sample_threshold,
    spatial_hash,
)

#: the first 20,000 requests of the ARC paper's OLTP trace (Megiddo & Modha, FAST'03)
OLTP_HEAD = Path(__file__).parent / "fixtures" / "blocktrace" / "oltp_20k.lis.gz"
#: docs/sweep.md's bound at --sample-rate 0.1: mean absolute error per policy (the fixture, a
#: fixed sample: lru 0.018, arc 0.022, zfs 0.022)
SAMPLED_MAE_BOUND = 0.025


def _curve(path: Path) -> dict[tuple[str, int], dict[str, str]]:
    with open(path, newline="") as f:
        return {(r["cache_policy"], int(r["arc_size"])): r for r in csv.DictReader(f)}


def _mrc(tmp_path: Path, trace: Path, out: str, *args: str) -> dict[tuple[str, int],
                                                                    dict[str, str]]:
    code, _, err = run("mrc", str(trace), "-o", str(tmp_path / out), "--workers", "1", *args)
    assert code == 0, err
    return _curve(tmp_path / out)


def _miss_ratio(row: dict[str, str]) -> float:
    return int(row["arc.misses"]) / (int(row["arc.hits"]) + int(row["arc.misses"]))


def _lru_misses(blocks: list[int], k: int) -> int:
    """The project's LRU policy replayed at k one-byte records."""
    if k == 0:
        return len(blocks)
    lru = LruPolicy(k)
    for b in blocks:
        lru.access(b, 1)
    return lru.misses


try:
    from mmsim._stack_distance_c import Counter
except ImportError:  # not built here: the pure-Python counting alone
    Counter = None
needs_c = pytest.mark.skipif(Counter is None, reason="mmsim._stack_distance_c is not built")
COUNTINGS = [pytest.param(True, id="pure"), pytest.param(False, id="C", marks=needs_c)]


@pytest.mark.parametrize("pure", COUNTINGS)
@pytest.mark.parametrize("seed", range(6))
def test_stack_distances_give_every_lru_size_s_misses(seed: int, pure: bool,
                                                      monkeypatch) -> None:
    """Tiny chunks (pure) or a tree of 2 slots (C), so that a few thousand requests seal over
    a thousand chunks, or renumber the slots and grow the tree and the hash table, on the way;
    fed in pieces of random lengths."""
    monkeypatch.setattr(stack_distance, "CHUNK", 2)
    if not pure:
        monkeypatch.setattr(stack_distance, "_Counter", lambda: Counter(slots=2))
    rng = random.Random(seed)
    distinct = rng.choice([5, 60, 400])
    blocks = [int(distinct * rng.random() ** 3) for _ in range(rng.randint(2500, 5000))]
    sd = StackDistances(pure=pure)
    i = 0
    while i < len(blocks):
        step = rng.randint(1, 70)
        sd.feed(blocks[i:i + step])
        i += step
    ks = [0, 1, 2, 3, 7, 40, distinct - 1, distinct, distinct + 5, 10_000]
    assert sd.requests == len(blocks) and sd.cold == len(set(blocks))
    assert sd.misses(ks) == [_lru_misses(blocks, k) for k in ks]


@needs_c
def test_the_c_counting_gives_the_pure_python_histogram(monkeypatch) -> None:
    """Ids over the whole of [0, 2**64) (a hash table's collisions, the top bit); one that is
    not a block id is refused before any of its batch is counted."""
    monkeypatch.setattr(stack_distance, "_Counter", Counter)  # even under MMSIM_PURE_PYTHON
    rng = random.Random(7)
    ids = [rng.choice([0, 1, 2**63, 2**64 - 1, rng.getrandbits(64)]) for _ in range(300)]
    blocks = [rng.choice(ids) for _ in range(20_000)]
    pure, c = StackDistances(pure=True), StackDistances(pure=False)
    for i in range(0, len(blocks), 999):
        pure.feed(blocks[i:i + 999])
        c.feed(iter(blocks[i:i + 999]))
    assert (c.hist, c.requests, c.cold) == (pure.hist, pure.requests, pure.cold)
    with pytest.raises(OverflowError):
        c.feed([5, -1])
    assert c.requests == len(blocks)


@pytest.mark.parametrize("pure", COUNTINGS)
def test_stack_distances_are_the_distinct_blocks_since_the_last_reference(
        pure: bool, monkeypatch) -> None:
    if not pure:  # the C counting even where MMSIM_PURE_PYTHON turned it off for mmsim
        monkeypatch.setattr(stack_distance, "_Counter", Counter)
    sd = StackDistances(pure=pure)
    sd.feed([1, 2, 3, 1])  # distances: -, -, -, 2
    assert sd.misses([2, 3]) == [4, 3]
    sd.feed([1, 3, 2])  # 0, 1, 2: the misses asked before are not kept
    assert sd.hist == [1, 1, 2, 0]
    assert sd.misses([0, 1, 2, 3]) == [7, 6, 5, 3]


def _generated(tmp_path: Path) -> Path:
    path = tmp_path / "gen.ids"
    path.write_text(ids_trace(n=6000, distinct=900, seed=3))
    return path


@pytest.mark.parametrize("trace, extra", [
    ("fixture", ()),
    ("generated", ()),
    ("generated", ("--block-size", "8K")),  # records of 8 KiB for the trace's 4 KiB blocks
])
def test_lru_s_one_pass_curve_is_the_per_size_replays_curve(tmp_path: Path, trace: str,
                                                              extra: tuple[str, ...]) -> None:
    """Sizes below one record, between record multiples and past the working set."""
    path = OLTP_HEAD if trace == "fixture" else _generated(tmp_path)
    sizes = ["--sizes", "1K,4000,16K,100001,700K,3M,64M"]
    one_pass = _mrc(tmp_path, path, "stack.csv", *sizes, "--policies", "lru", *extra)
    exact = _mrc(tmp_path, path, "exact.csv", *sizes, "--policies", "lru", "--method", "exact",
                 *extra)
    assert set(one_pass) == set(exact) and len(exact) == 7
    for point, row in exact.items():
        assert one_pass[point]["mrc.method"] == "stack"  # the default for lru
        assert "mrc.method" not in row
        assert (one_pass[point]["arc.hits"], one_pass[point]["arc.misses"]) == (
            row["arc.hits"], row["arc.misses"]), point
    ratios = [_miss_ratio(exact["lru", s]) for _, s in sorted(exact)]
    assert ratios[0] > 0.99 and ratios[-1] < 0.9  # the sizes cover a real curve


@pytest.fixture(scope="module")
def exact_fixture_curves(tmp_path_factory) -> dict[tuple[str, int], dict[str, str]]:
    tmp = tmp_path_factory.mktemp("exact")
    return _mrc(tmp, OLTP_HEAD, "exact.csv", "--sizes", "16K:2M:6", "--method", "exact")


def test_sampling_every_block_gives_the_exact_curves(tmp_path: Path,
                                                     exact_fixture_curves) -> None:
    """At rate 1 SHARDS is the stack pass and a miniature replay is the replay itself: so the
    sampled method's scaling and replay agree with the exact ones, for every policy."""
    sampled = _mrc(tmp_path, OLTP_HEAD, "s.csv", "--sizes", "16K:2M:6", "--sample-rate", "1")
    for point, row in exact_fixture_curves.items():
        got = sampled[point]
        assert got["mrc.method"] == "sampled" and float(got["mrc.sample_rate"]) == 1.0
        assert (got["arc.hits"], got["arc.misses"]) == (row["arc.hits"], row["arc.misses"])


def test_sampled_curves_are_within_the_documented_error(tmp_path: Path,
                                                        exact_fixture_curves) -> None:
    sampled = _mrc(tmp_path, OLTP_HEAD, "s.csv", "--sizes", "16K:2M:6", "--method", "sampled",
                   "--sample-rate", "0.1")
    for policy in ("arc", "lru", "zfs"):
        errors = [abs(_miss_ratio(sampled[p]) - _miss_ratio(row))
                  for p, row in exact_fixture_curves.items() if p[0] == policy]
        assert len(errors) == 6
        assert sum(errors) / len(errors) <= SAMPLED_MAE_BOUND, (policy, errors)
    for row in sampled.values():  # the whole trace's misses, estimated from a 10 % sample's
        assert int(row["mrc.requests"]) == 20_000 == int(row["arc.hits"]) + int(row["arc.misses"])
        assert 1000 < int(row["mrc.sampled_requests"]) < 4000
        assert int(row["mrc.sampled_misses"]) <= int(row["mrc.sampled_requests"])


def test_the_spatial_hash_is_fixed_and_samples_evenly() -> None:
    """The same sample in every process (no Python hash randomisation), and about R of any
    run of consecutive blocks."""
    assert [spatial_hash(b) for b in (0, 1, 12345, 2**64 - 1)] == [
        10264678, 15072704, 3253103, 2471797]
    t = sample_threshold(0.1)
    assert t == round(0.1 * MODULUS)
    kept = sum(spatial_hash(b) < t for b in range(1_000_000, 1_100_000))
    assert 9_700 < kept < 10_300


def test_the_vectorized_sample_is_the_hash_s() -> None:
    """sample_positions (numpy, what mrc samples with) keeps exactly the blocks whose
    spatial_hash is under the threshold, over the whole id range."""
    rng = random.Random(3)
    blocks = [0, 1, 2**63, 2**64 - 1, *(rng.getrandbits(64) for _ in range(20_000)),
              *range(5000)]
    for rate in (1 / MODULUS, 0.01, 0.5, 1.0):
        t = sample_threshold(rate)
        assert sample_positions(blocks, t) == [i for i, b in enumerate(blocks)
                                               if spatial_hash(b) < t]
    assert sample_positions([], 5) == []


def test_a_rerun_keeps_rows_of_the_same_method_and_redoes_the_others(tmp_path: Path) -> None:
    path = _generated(tmp_path)
    args = ("mrc", str(path), "--sizes", "16K,64K", "--policies", "lru", "-o",
            str(tmp_path / "m.csv"), "--workers", "1")
    for more, method, ran in (((), "stack", 2), ((), "stack", 0),
                              (("--method", "exact"), None, 2),
                              (("--sample-rate", "0.5"), "sampled", 2),
                              (("--sample-rate", "0.5"), "sampled", 0),
                              (("--sample-rate", "0.25"), "sampled", 2)):
        code, _, err = run(*args, *more)
        assert code == 0 and f"({ran} run, {2 - ran} already done" in err, (more, err)
        assert {r.get("mrc.method") for r in _curve(tmp_path / "m.csv").values()} == {method}


def test_sampled_rows_from_before_the_whole_trace_estimate_run_again(tmp_path: Path) -> None:
    """A sampled row without mrc.sampled_requests counted the sample's own hits and misses
    (an older mmsim): its miss ratio is not this one's, so a rerun computes it again."""
    path, out = _generated(tmp_path), tmp_path / "m.csv"
    args = ("mrc", str(path), "--sizes", "16K,64K", "--policies", "lru", "-o", str(out),
            "--workers", "1", "--sample-rate", "0.5")
    assert run(*args)[0] == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(out, "w", newline="") as f:
        columns = [c for c in rows[0] if not c.startswith("mrc.sampled_")]
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    code, _, err = run(*args)
    assert code == 0 and "(2 run, 0 already done" in err, err
    assert all(r["mrc.sampled_requests"] for r in _curve(out).values())


def test_the_estimate_scales_the_sample_s_misses_to_the_whole_trace() -> None:
    """Misses over R, rounded, never more than all the requests; at rate 1 the sample's own."""
    t = sample_threshold(0.01)
    assert estimated_misses(0, 1000, t) == 0
    assert estimated_misses(7, 1000, t) == 700
    assert estimated_misses(11, 1000, t) == 1000  # 1100 estimated: at most every request
    assert estimated_misses(123, 500, MODULUS) == 123


def test_a_trace_that_is_not_a_block_trace_is_replayed_per_size(tmp_path: Path) -> None:
    (tmp_path / "t.trace").write_text("# mmsim-trace v1\ncreate /f 1M\nread /f 0 1M\n"
                                      "read /f 0 1M\n")
    rows = _mrc(tmp_path, tmp_path / "t.trace", "m.csv", "--sizes", "64K,2M", "--policies",
                "lru")
    assert [r.get("mrc.method") for r in rows.values()] == [None, None]
    assert int(rows["lru", 2 << 20]["arc.hits"]) > 0


@pytest.mark.parametrize("args, what", [
    (["--sample-rate", "0"], "--sample-rate: must be in (0, 1]"),
    (["--sample-rate", "1.5"], "--sample-rate: must be in (0, 1]"),
    (["--sample-rate", "-0.1"], "--sample-rate: must be in (0, 1]"),
    (["--sample-rate", "nan"], "--sample-rate: must be in (0, 1]"),
    (["--sample-rate", "lots"], "--sample-rate: not a number: 'lots'"),
    (["--sample-rate", "1e-9"], "below the smallest rate"),
    (["--sample-rate", "0.1", "--method", "exact"], "--sample-rate goes with --method sampled"),
    (["--method", "stack"], "--method stack gives LRU's curve only (arc, zfs"),
    (["--method", "fast"], "--method"),
])
def test_bad_rates_and_methods_are_one_line(tmp_path: Path, args: list[str], what: str) -> None:
    (tmp_path / "b.ids").write_text("1\n2\n1\n")
    code, _, err = run("mrc", str(tmp_path / "b.ids"), "--sizes", "16K,64K",
                       "-o", str(tmp_path / "m.csv"), *args)
    assert_one_line_error(code, err, what)
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("method", ["stack", "sampled"])
def test_a_one_pass_method_on_a_trace_that_is_not_a_block_trace_is_one_line(
        tmp_path: Path, method: str) -> None:
    (tmp_path / "t.trace").write_text("# mmsim-trace v1\nmalloc a 1K\n")
    code, _, err = run("mrc", str(tmp_path / "t.trace"), "--sizes", "16K,64K", "--policies",
                       "lru", "--method", method, "-o", str(tmp_path / "m.csv"))
    assert_one_line_error(code, err, f"--method {method} needs a block trace")

