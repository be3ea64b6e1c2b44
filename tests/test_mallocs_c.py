"""The C batch loop of kernel/_mallocs_c.c against its pure-Python twin (MallocFace._mallocs).

Both must leave the same results: the summary, the event count, the kernel's events (with the
line and event each happened at), the application errors and the out-of-memory report, on the
committed mtrace fixtures, on the real logs of bench/bench_mtrace_logs.py where this machine
has them, and on random batches (hypothesis) in a guest small enough that reclaim and OOM
happen inside a batch. Skipped where the extension is not built, unless MMSIM_REQUIRE_C=1
(CI sets it: there a missing build is a failure).
"""

from __future__ import annotations

import gc
import gzip
import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import test_mtrace
import test_mtrace_c
from hypothesis import given
from hypothesis import strategies as st
from mmsim.kernel import Kernel, KernelConfig, OutOfMemory, sys_malloc
from mmsim.mm.slab.large import LargeAllocator

from mmsim.trace.mtrace import MallocCalls, read_mtrace

C = sys_malloc._mallocs_c
FIXTURES = Path(__file__).parent / "fixtures" / "mtrace"
TRACES = sorted(p.name for p in FIXTURES.iterdir() if ".mtrace" in p.name)
BENCH = Path("/tmp/mmsim-bench")
BENCH_LOGS = ["python-malloc", "python-pymalloc", "sqlite3", "cc1", "git-log", "perl"]


def test_the_extension_is_built_where_required() -> None:
    if os.environ.get("MMSIM_REQUIRE_C") == "1":
        assert C is not None, "MMSIM_REQUIRE_C=1 but mmsim.kernel._mallocs_c is not built"
    elif C is None:
        pytest.skip("mmsim.kernel._mallocs_c is not built (or MMSIM_PURE_PYTHON is set)")


needs_c = pytest.mark.skipif(C is None and os.environ.get("MMSIM_REQUIRE_C") != "1",
                             reason="mmsim.kernel._mallocs_c is not built")


def _outcome(k: Kernel, events: list[dict[str, Any]], error: str | None) -> dict[str, Any]:
    k.malloc.malloc.check()
    if k.oom is None:
        k.check()
    return {"summary": json.loads(json.dumps(k.summary(), default=str)), "events": k.events,
            "kernel_events": events, "error": error, "line": k.line, "op_kind": k.op_kind,
            "folded": k.malloc.folded()}


def _replay(ops: list[Any], use_c: bool, memory: int, cpus: int,
            cpu_switches: list[int] | None = None) -> dict[str, Any]:
    """Apply ``ops`` with one loop or the other; ``cpu_switches[i]`` is the CPU before op i."""
    saved = sys_malloc._mallocs_c
    sys_malloc._mallocs_c = C if use_c else None
    try:
        k = Kernel(KernelConfig(memory=memory, cpus=cpus))
        events: list[dict[str, Any]] = []
        k.subscribe(lambda name, record: events.append({"name": name, **record}))
        error = None
        try:
            for i, op in enumerate(ops):
                if cpu_switches is not None:
                    k.cpu = cpu_switches[i] % cpus
                k.apply(op)
        except OutOfMemory as e:
            error = f"OutOfMemory: {e}"
        return _outcome(k, events, error)
    finally:
        sys_malloc._mallocs_c = saved


def _same(ops: list[Any], memory: int, cpus: int, cpu_switches: list[int] | None = None) -> None:
    a = _replay(ops, True, memory, cpus, cpu_switches)
    b = _replay(ops, False, memory, cpus, cpu_switches)
    assert a == b


@needs_c
@pytest.mark.parametrize("name", TRACES)
@pytest.mark.parametrize(("memory", "cpus"), [(2 << 30, 4), (256 << 20, 2), (56 << 20, 1),
                                              (64 << 20, 4)])
def test_the_c_loop_gives_the_python_loops_results_on_the_fixtures(
        name: str, memory: int, cpus: int) -> None:
    ops = list(read_mtrace(FIXTURES / name))
    _same(ops, memory, cpus)
    _same(list(read_mtrace(FIXTURES / name, 8)), memory, cpus, list(range(10_000)))


@needs_c
def test_reclaim_and_oom_inside_a_batch_are_the_same(tmp_path: Path) -> None:
    """The reclaimer wakes and the guest runs out of memory in the middle of batches."""
    path = test_mtrace._pressure_trace(tmp_path)
    for memory in (128 << 20, 96 << 20):
        a = _replay(list(read_mtrace(path, 64)), True, memory, 2)
        assert any(e["name"] == "reclaim" for e in a["kernel_events"])
        assert a == _replay(list(read_mtrace(path, 64)), False, memory, 2)
    lines = [f"+ {0x1000 + i:#x} 0x100000" for i in range(200)]
    oom = tmp_path / "oom.mtrace"
    oom.write_text("= Start\n" + "\n".join(lines) + "\n")
    a = _replay(list(read_mtrace(oom, 64)), True, 64 << 20, 2)
    assert a["error"] and a["summary"]["oom"]["line"] > 2
    assert a == _replay(list(read_mtrace(oom, 64)), False, 64 << 20, 2)


@needs_c
def test_many_live_blocks_are_the_same(tmp_path: Path) -> None:
    """100 k blocks live at once: the C loop's table of live blocks past the size from which it
    looks ahead in it (2**16 slots), a realloc in ten, a double and an invalid free."""
    path = test_mtrace_c._many_live_log(tmp_path / "many.mtrace", 100_000)
    a = _replay(list(read_mtrace(path)), True, 256 << 20, 2)
    assert a["summary"]["malloc"]["calls"]["realloc"] == 10_000
    assert a["summary"]["app_errors"]["by_kind"] == {"double_free": 1, "invalid_free": 1}
    assert a == _replay(list(read_mtrace(path)), False, 256 << 20, 2)


# -- the existing batched-replay tests, with the Python loop (they run with C by default) ----
@pytest.mark.parametrize("name", [*TRACES, "pressure"])
def test_batched_replay_is_the_per_record_replay_in_python(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys_malloc, "_mallocs_c", None)
    test_mtrace.test_batched_replay_is_the_per_record_replay(name, tmp_path)


def test_an_oom_inside_a_batch_names_the_call_in_python(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys_malloc, "_mallocs_c", None)
    test_mtrace.test_an_oom_inside_a_batch_names_the_call_that_failed(tmp_path)


# -- random batches -----------------------------------------------------------------------
HANDLES = [f"p{i}" for i in range(24)]
SITES = [None, None, "a.out:(f+0x10)[0x401000]", "a.out:(g+0x20)[0x402000]", "[0x403000]",
         "libc.so:(strdup+0x1a)[0x7f0001]"]
SIZES = st.one_of(st.integers(0, 1100), st.integers(0, 5000), st.integers(0, 5000),
                  st.sampled_from([0, 8, 16, 1024, 1025, 4096, 4097, 65536, 300_000, 2 << 20,
                                   1 << 40, 1 << 50, 1 << 62, 1 << 63, (1 << 64) - 1]))
RECORD = st.tuples(st.sampled_from(["malloc", "malloc", "malloc", "free", "free", "realloc"]),
                   st.sampled_from(HANDLES), st.one_of(SIZES, st.just(0)),
                   st.sampled_from(SITES))


def _batches(draw_records: list[tuple[str, str, int, str | None]],
             cuts: list[int]) -> list[MallocCalls]:
    records = [(kind, n, handle, size if kind != "free" else 0, site if kind != "free" else None)
               for n, (kind, handle, size, site) in enumerate(draw_records, 1)]
    out = []
    start = 0
    for cut in [*sorted(set(cuts)), len(records)]:
        if start < cut <= len(records):
            out.append(MallocCalls(records[start:cut]))
            start = cut
    return out


@needs_c
@given(records=st.lists(RECORD, min_size=1, max_size=400),
       cuts=st.lists(st.integers(1, 400), max_size=6),
       cpus=st.sampled_from([1, 4]), switches=st.lists(st.integers(0, 3), min_size=8, max_size=8),
       small=st.booleans())
def test_random_batches_give_the_same_results(records: list[Any], cuts: list[int], cpus: int,
                                              switches: list[int], small: bool) -> None:
    ops = _batches(records, cuts)
    memory = (56 << 20 if cpus == 1 else 64 << 20) if small else 256 << 20
    _same(ops, memory, cpus, [switches[i % len(switches)] for i in range(len(ops))])


@needs_c
def test_a_long_random_trace_fills_the_quarantine_the_same() -> None:
    """More frees than the quarantine's half: its halves rotate inside the C loop."""
    import random
    rnd = random.Random(7)
    records = []
    for n in range(1, 3 * sys_malloc._HALF):
        h = f"p{rnd.randrange(1 << 20)}"
        records.append(("malloc", 2 * n, h, rnd.randrange(2000), rnd.choice(SITES)))
        records.append(("free", 2 * n + 1, h, 0, None))
        if n % 97 == 0:
            records.append(("free", 2 * n + 1, h, 0, None))  # a double free
    ops = [MallocCalls(records[i:i + 1024]) for i in range(0, len(records), 1024)]
    _same(ops, 256 << 20, 2)


@needs_c
def test_a_dropped_quarantine_half_forgets_its_handles_and_a_held_one_is_kept() -> None:
    """The C loop makes the quarantine's new half of the table of the half it drops: what that
    half held must be forgotten (a free of a handle freed three halves ago is an invalid free,
    not a double free), and a half that someone still holds must be left as it is."""
    half = sys_malloc._HALF
    records: list[Any] = []
    for n in range(4 * half):
        records.append(("malloc", 0, f"p{n}", 32, "site_a"))
        records.append(("free", 0, f"p{n}", 0, None))
        if n >= 3 * half and n % 1000 == 0:
            records.append(("free", 0, f"p{n - 3 * half + 1}", 0, None))  # long out of it
            records.append(("free", 0, f"p{n - 1}", 0, None))  # a double free
    records = [(kind, i, h, size, site) for i, (kind, _, h, size, site) in enumerate(records, 1)]
    ops = [MallocCalls(records[i:i + 1024]) for i in range(0, len(records), 1024)]
    _same(ops, 256 << 20, 1)
    errors = _replay(ops, True, 256 << 20, 1)["summary"]
    assert "invalid_free" in json.dumps(errors) and "double_free" in json.dumps(errors)

    k = Kernel(KernelConfig(memory=256 << 20, cpus=1))
    held: list[tuple[Any, dict[str, int]]] = []
    for op in ops:
        k.apply(op)
        old = k.malloc._freed_old
        if len(old) and not any(o is old for o, _ in held):
            held.append((old, {h: old[h] for h in old}))
    assert len(held) >= 3
    assert all({h: old[h] for h in old} == seen for old, seen in held)


@needs_c
@pytest.mark.parametrize("inside", [False, True])
def test_pages_python_releases_and_other_kernels_pages_are_not_taken_for_seen_ones(
        inside: bool) -> None:
    """The C loop remembers the pool pages it found, across its runs: pages released by Python
    code (the pools' shrinker, between two runs or inside one, from a thread that watches
    memory) and the pages of another kernel, which have the same numbers, must not be taken
    for the pages it remembers."""
    records = []
    for n in range(40):
        for r in "ab":  # a page of 64-byte blocks filled and emptied, twice; the shrinker
            # takes it back when a large block takes pages in between
            records += [("malloc", 0, f"p{n}{r}{i}", 64, "site_a") for i in range(64)]
            records += [("free", 0, f"p{n}{r}{i}", 0, None) for i in range(0, 64, 2)]
            records += [("free", 0, f"p{n}{r}{i}", 0, None) for i in range(1, 64, 2)]
            records += [("malloc", 0, f"q{n}{r}", 8192, "site_b"), ("free", 0, f"q{n}{r}", 0, None)]
    records = [(kind, n, h, size, site) for n, (kind, _, h, size, site) in enumerate(records, 1)]
    ops = [MallocCalls(records[i:i + 96]) for i in range(0, len(records), 96)]

    def replay(use_c: bool, kernels: int) -> list[dict[str, Any]]:
        saved = sys_malloc._mallocs_c
        sys_malloc._mallocs_c = C if use_c else None
        held: list[Any] = []  # released pages kept alive: a new page cannot take one's place

        def shrink(k: Kernel) -> None:
            held.extend(k.malloc.malloc._pages.values())
            k.malloc.malloc.release_empty_pages()

        try:
            ks = [Kernel(KernelConfig(memory=256 << 20, cpus=1)) for _ in range(kernels)]
            for k in ks:
                if inside:
                    k.add_after_op(lambda k=k: shrink(k))
            for op in ops:
                for k in ks:
                    k.apply(op)
                    if not inside:
                        shrink(k)
            assert all(k.malloc.malloc.pool_pages_returned >= len(ops) // 2 for k in ks)
            return [_outcome(k, [], None) for k in ks]
        finally:
            sys_malloc._mallocs_c = saved

    alone = replay(False, 1)[0]
    assert replay(True, 1) == [alone]
    assert replay(True, 2) == [alone, alone]


@needs_c
@pytest.mark.parametrize("spare_runs", [200, 40])
def test_large_blocks_take_runs_then_mappings_when_no_run_fits_the_same(
        spare_runs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large mallocs (over a page, under 2 MiB) take runs of pages until memory is nearly
    all theirs; with every other one freed, memory is in holes too small for a 150-page block,
    which becomes a mapping (the mapped path after no run fitted), or, with fewer pages
    spare, the guest runs out of memory inside the large path."""
    memory = 64 << 20
    blocks = Kernel(KernelConfig(memory=memory, cpus=1)).ranges.free_pages // 4 - spare_runs
    records: list[Any] = []
    for i in range(blocks):
        records.append(("malloc", len(records) + 1, f"p{i}", 3 * 4096, "site_a"))
    for i in range(0, blocks, 2):
        records.append(("free", len(records) + 1, f"p{i}", 0, None))
    for size in (200 * 4096, 5000, 150 * 4096):
        records.append(("malloc", len(records) + 1, f"big{size}", size, "site_b"))
        records.append(("realloc", len(records) + 1, f"big{size}", size + 9000, "site_c"))
    for i in range(1, blocks, 2):
        records.append(("free", len(records) + 1, f"p{i}", 0, None))
    ops = [MallocCalls(records[i:i + 256]) for i in range(0, len(records), 256)]
    mapped: list[int] = []
    monkeypatch.setattr(LargeAllocator, "_map", lambda self, total, _map=LargeAllocator._map:
                        mapped.append(total) or _map(self, total))
    a = _replay(ops, True, memory, 1)
    assert a == _replay(ops, False, memory, 1)
    if spare_runs == 200:
        assert a["error"] is None and mapped, "no block took the mapped path"
    else:
        assert a["error"] is not None and "OutOfMemory" in a["error"]


# -- the real logs, where this machine has them -------------------------------------------
@needs_c
@pytest.mark.slow
@pytest.mark.parametrize("name", BENCH_LOGS)
def test_the_real_logs_give_the_same_results(name: str) -> None:
    path = BENCH / f"{name}.mtrace"
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (bench/bench_mtrace_logs.py records it)")
    ops = list(read_mtrace(path))
    _same(ops, 2 << 30, 4)


# -- packed batches ------------------------------------------------------------------------
_RECS = [("malloc", 3, "p0x10", 24, "a.out:(main+4)[0x1]"), ("realloc", 4, "p0x10", 5000, None),
         ("free", 9, "p0x10", 0, None)]


@needs_c
def test_a_packed_batch_is_the_sequence_of_its_records() -> None:
    """MallocRecords, the batch the C reader fills for the C loop, reads as the list of its
    records' tuples: length, indexing, iteration, equality both ways, pickling."""
    recs = C.MallocRecords(_RECS)
    assert len(recs) == 3 and recs[0] == _RECS[0] and recs[-1] == _RECS[-1]
    assert list(recs) == _RECS and recs == _RECS and _RECS == recs and recs == C.MallocRecords(_RECS)
    assert recs != _RECS[:2] and recs != [*_RECS[:2], ("free", 9, "p0x11", 0, None)]
    assert not C.MallocRecords() and C.MallocRecords() == []
    with pytest.raises(IndexError):
        recs[3]
    assert pickle.loads(pickle.dumps(recs)) == _RECS
    assert repr(recs) == f"MallocRecords({_RECS!r})"
    with pytest.raises(TypeError):
        hash(recs)
    for bad in ([("malloc", 3, "p0x10", 24)], [("malloc", "3", "p0x10", 24, None)],
                [("malloc", 3, "p0x10", 24, ["a list"])], [["malloc", 3, "p0x10", 24, None]]):
        with pytest.raises(TypeError, match="record 0 is not"):
            C.MallocRecords(bad)


@needs_c
@pytest.mark.parametrize("name", ["python3.mtrace.gz", "bad_frees.mtrace"])
def test_the_c_loop_reads_a_packed_batch_as_its_list(name: str) -> None:
    """The reader's packed batches replay as the same records in lists do, through the C loop
    and through the Python one (which iterates them)."""
    ops = list(read_mtrace(FIXTURES / name, 64))
    assert all(type(op.records) is C.MallocRecords for op in ops)
    as_lists = [MallocCalls(list(op.records)) for op in ops]
    a = _replay(ops, True, 256 << 20, 2)
    assert a == _replay(as_lists, True, 256 << 20, 2) == _replay(ops, False, 256 << 20, 2)


# -- references ---------------------------------------------------------------------------
@needs_c
def test_replays_leak_no_references_nor_memory(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The records' objects get back their reference counts after each replay (the kernel
    gone), and 50 replays of a fixture do not grow the process."""
    path = tmp_path / "python3.mtrace"
    with gzip.open(FIXTURES / "python3.mtrace.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    ops = list(read_mtrace(path, 64))
    # (not the small ints, None and the kinds: the interpreter and its caches share those)
    objs = {id(x): x for op in ops for rec in op.records for x in (rec, *rec[1:])
            if x is not None and not (type(x) is int and -5 <= x <= 256)}
    monkeypatch.setattr(sys_malloc, "_mallocs_c", C)

    def replay() -> None:
        k = Kernel(KernelConfig(memory=256 << 20, cpus=2))
        k.run(ops)
        k.summary()

    for _ in range(3):
        replay()
    gc.collect()
    before = {i: sys.getrefcount(x) for i, x in objs.items()}
    rss = []
    for n in range(50):
        replay()
        if n in (9, 49):
            gc.collect()
            rss.append(psutil.Process().memory_info().rss)
    gc.collect()
    after = {i: sys.getrefcount(x) for i, x in objs.items()}
    drift = {repr(objs[i])[:60]: (before[i], after[i]) for i in objs if after[i] != before[i]}
    assert not drift
    assert rss[1] - rss[0] < 8 << 20


@needs_c
@pytest.mark.parametrize("memory_hook", [False, True])
def test_a_thread_that_watches_memory_sees_every_large_call_as_in_python(
        memory_hook: bool) -> None:
    """Large blocks' runs are taken and given in C, and the kernel settled there when nothing
    watches memory alone; a thread that does (add_after_op, memory=True: a JVM's) must run
    after each call that moved free memory, at the same lines, as the Python loop runs it."""
    records: list[Any] = []
    for i in range(300):
        records.append(("malloc", len(records) + 1, f"p{i}", 4096 * (1 + i % 5), "site_a"))
        if i % 3:
            records.append(("free", len(records) + 1, f"p{i - 1}", 0, None))
    ops = [MallocCalls(records[i:i + 128]) for i in range(0, len(records), 128)]

    def replay(use_c: bool) -> tuple[dict[str, Any], list[tuple[int, int]]]:
        saved = sys_malloc._mallocs_c
        sys_malloc._mallocs_c = C if use_c else None
        try:
            k = Kernel(KernelConfig(memory=256 << 20, cpus=2))
            seen: list[tuple[int, int]] = []
            if memory_hook:
                k.add_after_op(lambda: seen.append((k.line, k.ranges.free_pages)))
            for op in ops:
                k.apply(op)
            return _outcome(k, [], None), seen
        finally:
            sys_malloc._mallocs_c = saved

    (on_c, seen_c), (on_py, seen_py) = replay(True), replay(False)
    assert on_c == on_py
    assert seen_c == seen_py
    if memory_hook:
        assert len(seen_c) > 300, "the thread did not run after each large call"
