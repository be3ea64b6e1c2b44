"""`mmsim gen`: synthetic traces that are the same for the same seed and replay cleanly."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from mmsim.cli import main
from mmsim.gen import GENERATORS
from mmsim.trace import read_trace

KINDS = sorted(GENERATORS)
# enough operations for each model to go through its cycles (GCs, scans, unlinks, rehashes)
EVENTS = {"memcached": 3000, "redis": 3000, "jvm": 1500, "fsmark": 2500, "scan": 2000}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"traceback: {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr


def gen(tmp_path, kind: str, *args: str, name: str | None = None) -> str:
    out = str(tmp_path / (name or f"{kind}.trace"))
    code, _, err = run("gen", kind, "-o", out, *args)
    assert code == 0, err
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, kind):
    a = gen(tmp_path, kind, "--events", "400", "--seed", "7", name="a")
    b = gen(tmp_path, kind, "--events", "400", "--seed", "7", name="b")
    c = gen(tmp_path, kind, "--events", "400", "--seed", "8", name="c")
    assert open(a, "rb").read() == open(b, "rb").read()
    assert open(a, "rb").read() != open(c, "rb").read()
    ops = list(read_trace(a))
    assert len(ops) == 400  # exactly the operations asked for


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_replays_without_errors(tmp_path, kind):
    trace = gen(tmp_path, kind, "--events", str(EVENTS[kind]), "--seed", "3")
    js = str(tmp_path / "s.json")
    code, _, err = run("run", trace, "--json", js, "-q")
    assert code == 0, err
    s = json.load(open(js))
    assert s["app_errors"]["total"] == 0, s["app_errors"]["examples"]
    assert s["events"] == EVENTS[kind]
    kinds = Counter(op.kind for op in read_trace(trace))
    if kind == "memcached":  # item churn on 4 worker CPUs: frees cross CPUs
        assert kinds["malloc"] and kinds["free"]
        assert s["malloc"]["cross_cpu_frees"] > 0
        assert s["malloc"]["classes"]["128"]["blocks"] and s["malloc"]["classes"]["512"]["blocks"]
    elif kind == "redis":  # a growing keyspace: more mallocs than frees, appends realloc
        assert kinds["malloc"] > kinds["free"] > 0 and kinds["realloc"] > 0
        assert s["malloc"]["live_blocks"] > 1000
    elif kind == "jvm":  # a reserved heap committed with mprotect, GC touches, uncommits
        assert kinds["mprotect"] and kinds["touch"]
        assert s["mmap"]["faults"] > 0 and s["mmap"]["segv"] == 0
        assert s["memory"]["categories"]["anonymous"] > 64 << 20
    elif kind == "fsmark":
        assert all(kinds[k] for k in ("create", "write", "fsync", "read"))
        assert s["disk"]["writes"] > 0 and s["arc"]["written_bytes"] > 0
    else:
        assert set(kinds) == {"create", "read"}
        assert s["arc"]["hits"] > 0 and s["arc"]["misses"] > 0


def test_jvm_gives_heap_back_after_a_job(tmp_path):
    trace = gen(tmp_path, "jvm", "--events", "6000", "--seed", "1")
    ops = list(read_trace(trace))
    assert any(op.kind == "madvise" and op.advice == "dontneed" for op in ops)
    tl = str(tmp_path / "t.csv")
    assert run("run", trace, "--timeline", tl, "-q")[0] == 0
    with open(tl, newline="") as f:
        anon = [int(row["anonymous_bytes"]) for row in csv.DictReader(f)]
    peak = anon.index(max(anon))
    assert min(anon[peak:]) < max(anon) - (32 << 20)  # the heap shrank after its peak


def test_scan_arc_beats_lru(tmp_path):
    trace = gen(tmp_path, "scan", "--events", "7000")
    ratio = {}
    for policy in ("arc", "lru"):
        js = str(tmp_path / f"{policy}.json")
        code, _, err = run("run", trace, "--arc-size", "64M", "--cache-policy", policy,
                           "--json", js, "-q")
        assert code == 0, err
        ratio[policy] = json.load(open(js))["arc"]["hit_ratio"]
    assert ratio["arc"] > ratio["lru"] + 0.05


def test_compressed_output_is_deterministic_and_readable(tmp_path):
    a = gen(tmp_path, "redis", "--events", "300", name="a.trace.gz")
    b = gen(tmp_path, "redis", "--events", "300", name="b.trace.gz")
    assert open(a, "rb").read() == open(b, "rb").read()
    assert gzip.decompress(open(a, "rb").read()).startswith(b"# mmsim-trace v1\n")
    assert len(list(read_trace(a))) == 300


def test_cpus_bound_the_threads(tmp_path):
    trace = gen(tmp_path, "memcached", "--events", "500", "--cpus", "2")
    assert {op.cpu for op in read_trace(trace)} <= {None, 1}
    assert run("run", trace, "--cpus", "2", "-q")[0] == 0


def test_stdout_and_unknown_kind():
    code, out, _ = run("gen", "scan", "--events", "3", "-o", "-")
    assert code == 0 and out.startswith("# mmsim-trace v1\n")
    assert len([ln for ln in out.splitlines() if not ln.startswith("#")]) == 3
    code, _, err = run("gen", "postgres", "-o", "-")
    assert_one_line_error(code, err, "postgres")


def test_gen_says_what_it_wrote_and_how_to_replay_it(tmp_path):
    out = tmp_path / "w.trace"
    code, stdout, err = run("gen", "scan", "--events", "50", "-o", str(out))
    assert code == 0 and stdout == ""
    ops = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert err == (f"mmsim gen: wrote {len(ops)} operations of the scan workload to {out} "
                   f"(seed 0, 4 CPUs); replay it with 'mmsim run {out}'\n")
    code, stdout, err = run("gen", "scan", "--events", "3", "-o", "-")
    assert err == "mmsim gen: wrote 3 operations of the scan workload to standard output\n"
