"""glibc mtrace logs: the reader's record forms and pointer rules, and real traces replayed.

Each committed fixture (tests/fixtures/mtrace, recorded from real programs) is replayed through
``mmsim run FILE --json -``; its live bytes, peak live bytes and invalid frees must equal those of
an independent reading written here, from the format's definition, with no code in common.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections import defaultdict, deque
from pathlib import Path

import pytest
from click.testing import CliRunner
from mmsim.kernel import Kernel, KernelConfig, OutOfMemory

import mmsim.trace.mtrace  # noqa: F401  (registers the format, if the package has not yet)
from mmsim.cli import main
from mmsim.trace import (
    Op,
    TraceError,
    detect_format,
    expand,
    parse_native,
    read_trace,
    write_native,
)
from mmsim.trace.source import open_trace_binary

FIXTURES = Path(__file__).parent / "fixtures" / "mtrace"
TRACES = sorted(p.name for p in FIXTURES.iterdir() if ".mtrace" in p.name)

_LINE = re.compile(r"^(?:@ .*\] )?(?P<op>[-+<>!=]) (?P<a>\S+)(?: (?P<b>\S+))?$")


def independent_reading(path: Path) -> dict[str, int]:
    """Live bytes and blocks, peak live bytes and invalid frees by the format's definition (docs/mtrace.md):
    live blocks are a multiset per pointer, freed oldest first; a realloc replaces the old size
    with the new at once; a free of a pointer not live is invalid, and so is a realloc of a
    pointer whose block free() released last (any other realloc of a dead pointer is a
    realloc(NULL))."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    live: dict[str, deque[int]] = defaultdict(deque)
    freed: set[str] = set()
    live_bytes = peak = invalid = 0
    old: str | None = None
    for line in lines:
        m = _LINE.match(line.strip())
        assert m, f"{path.name}: unexpected line {line!r}"
        op, a, b = m["op"], m["a"], m["b"]
        if op == "=":
            continue
        if op == "+" and a != "(nil)":
            live[a].append(int(b, 16))
            freed.discard(a)
            live_bytes += int(b, 16)
        elif op == "-":
            if live[a]:
                live_bytes -= live[a].popleft()
                freed.add(a)
            elif a != "(nil)":
                invalid += 1
        elif op == "<":
            old = a
            continue
        elif op == ">":
            assert old is not None, "a '>' without its '<'"
            if live[old]:
                live_bytes -= live[old].popleft()
            elif old in freed:
                invalid += 1
            freed.discard(old)
            live[a].append(int(b, 16))
            freed.discard(a)
            live_bytes += int(b, 16)
            old = None
        peak = max(peak, live_bytes)
    return {"live_bytes": live_bytes, "live_bytes_peak": peak, "invalid_frees": invalid,
            "live_blocks": sum(map(len, live.values()))}


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"traceback: {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("name", TRACES)
def test_fixture_replay_matches_an_independent_reading(name: str) -> None:
    path = FIXTURES / name
    expected = independent_reading(path)
    code, out, err = run_cli("run", str(path), "--memory", "256M", "--cpus", "2", "--json", "-")
    assert code == 0, err
    malloc = json.loads(out)["malloc"]
    got = {k: malloc[k] for k in expected}
    assert got == expected
    assert expected["live_bytes_peak"] > 0


def test_a_fixture_has_a_real_double_free_a_null_result_and_a_failed_realloc() -> None:
    """So the independent reading's invalid_frees is checked above at more than 0 == 0."""
    path = FIXTURES / "bad_frees.mtrace"
    assert independent_reading(path)["invalid_frees"] == 1
    reader = mmsim.trace.mtrace.MtraceReader(path)
    k = Kernel(KernelConfig(memory=256 << 20, cpus=2))
    k.run(reader)
    assert reader.stats["null_results"] == 1 and reader.stats["failed_reallocs"] == 1
    assert reader.stats["reused_live_pointers"] == 1  # malloc gave the double-freed block twice
    assert k.summary()["app_errors"]["by_kind"] == {"double_free": 1}


def test_fixtures_are_detected_as_mtrace() -> None:
    for name in TRACES:
        assert detect_format(FIXTURES / name) == "mtrace", name


def test_multithreaded_fixture_frees_a_reused_pointer_oldest_first() -> None:
    """The producer/consumer trace logs '+ A' while A is live; the late '- A' is the old one."""
    path = FIXTURES / "producer_consumer.mtrace"
    reader = mmsim.trace.mtrace.MtraceReader(path)
    k = Kernel(KernelConfig(memory=256 << 20, cpus=2))
    k.run(reader)
    assert reader.stats["reused_live_pointers"] > 0
    summary = k.summary()
    assert summary["malloc"]["invalid_frees"] == 0
    assert summary["malloc"]["live_bytes"] == 0  # the program frees every block it made
    assert summary["app_errors"]["total"] == 0


def _write(tmp_path: Path, text: str, name: str = "t.mtrace") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _ops(path: Path) -> list[tuple[str, int, str | None, int]]:
    return [(op.kind, op.line, op.handle, op.size) for op in expand(read_trace(path, "mtrace"))]


def test_caller_prefixes_in_all_their_forms(tmp_path: Path) -> None:
    path = _write(tmp_path, "= Start\n"
                  "@ /lib/x86_64-linux-gnu/libc.so.6:(_IO_file_doallocate+8c)[0x758cc] + 0x10 0x400\n"
                  "@ ./prog:(main-0x1a)[0x401136] + 0x20 0x10\n"
                  "@ /usr/lib/x86_64-linux-gnu/libstdc++.so.6:[0x9bd4c] + 0x30 0\n"
                  "@ [0x7f0000001234] - 0x10\n"
                  "@ /opt/my dir/a b.so:[0x1] - 0x20\n"
                  "- 0x30\n"
                  "= End\n")
    assert _ops(path) == [("malloc", 2, "p0x10", 1024), ("malloc", 3, "p0x20", 16),
                          ("malloc", 4, "p0x30", 0), ("free", 5, "p0x10", 0),
                          ("free", 6, "p0x20", 0), ("free", 7, "p0x30", 0)]


def test_realloc_pairs_keep_the_handle_and_a_reused_old_pointer_gets_a_new_one(
        tmp_path: Path) -> None:
    path = _write(tmp_path, "+ 0x10 0x20\n"
                  "@ [0x1] < 0x10\n@ [0x1] > 0x50 0x40\n"   # moves: handle 0x10 now at 0x50
                  "+ 0x10 0x8\n"                            # a new block at the old pointer
                  "- 0x50\n- 0x10\n")
    ops = _ops(path)
    assert ops[:2] == [("malloc", 1, "p0x10", 32), ("realloc", 3, "p0x10", 64)]
    assert ops[2][0] == "malloc" and ops[2][2] != "p0x10"  # taken by the moved block
    assert ops[3] == ("free", 5, "p0x10", 0)
    assert ops[4] == ("free", 6, ops[2][2], 0)


def test_null_results_failed_reallocs_and_free_null_are_skipped(tmp_path: Path) -> None:
    path = _write(tmp_path, "+ (nil) 0x7fffffffffff\n+ 0x10 0x8\n! 0x10 0xffffffffff\n"
                  "- (nil)\n- 0x10\n")
    reader = mmsim.trace.mtrace.MtraceReader(path)
    assert [(op.kind, op.handle) for op in reader] == [("malloc", "p0x10"), ("free", "p0x10")]
    assert reader.stats == {"null_results": 1, "failed_reallocs": 1, "null_frees": 1}


def test_a_pointer_malloced_again_while_live_is_freed_oldest_first(tmp_path: Path) -> None:
    path = _write(tmp_path, "+ 0xa 0x10\n+ 0xa 0x20\n- 0xa\n- 0xa\n")
    ops = _ops(path)
    first, second = ops[0][2], ops[1][2]
    assert first != second
    assert [op[2] for op in ops[2:]] == [first, second]
    k = Kernel(KernelConfig(memory=256 << 20, cpus=2))
    k.run(read_trace(path, "mtrace"))
    m = k.summary()["malloc"]
    assert (m["live_bytes"], m["live_bytes_peak"], m["invalid_frees"]) == (0, 0x30, 0)


def test_bad_frees_are_counted_by_kind_and_the_replay_goes_on(tmp_path: Path) -> None:
    path = _write(tmp_path, "+ 0xa 0x10\n- 0xa\n- 0xa\n- 0xbad\n< 0xa\n> 0xc 0x30\n"
                  "< 0x01d\n> 0xd 0x8\n+ 0xe 0x100\n")
    k = Kernel(KernelConfig(memory=256 << 20, cpus=2))
    k.run(read_trace(path, "mtrace"))
    s = k.summary()
    assert s["app_errors"]["by_kind"] == {"double_free": 1, "invalid_free": 1, "realloc_freed": 1}
    assert s["malloc"]["invalid_frees"] == 3
    # the realloc of a freed block and of a block older than the trace both allocate
    assert s["malloc"]["live_bytes"] == 0x30 + 0x8 + 0x100
    assert [e["line"] for e in s["app_errors"]["examples"]] == [3, 4, 6]


def test_a_realloc_cut_in_half_frees_the_old_block(tmp_path: Path) -> None:
    path = _write(tmp_path, "+ 0xa 0x10\n< 0xa\n+ 0xb 0x8\n")
    reader = mmsim.trace.mtrace.MtraceReader(path)
    assert [(op.kind, op.line, op.handle) for op in reader] == [
        ("malloc", 1, "p0xa"), ("free", 2, "p0xa"), ("malloc", 3, "p0xb")]
    assert reader.stats["unpaired_realloc_frees"] == 1


def test_gzip_traces_and_auto_detection_without_a_start_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.trace.gz"
    with gzip.open(path, "wt") as f:
        f.write("@ ./p:[0x1] + 0x55d0c3a2b2a0 0x64\n@ ./p:[0x2] - 0x55d0c3a2b2a0\n")
    assert detect_format(path) == "mtrace"
    assert [op.kind for op in expand(read_trace(path))] == ["malloc", "free"]


def test_a_native_trace_is_not_taken_for_mtrace(tmp_path: Path) -> None:
    path = _write(tmp_path, "# mmsim-trace v1\nmalloc a 16\nfree a\n", "n.trace")
    assert detect_format(path) == "native"


@pytest.mark.parametrize("text, line, what", [
    ("= Start\n+ 0x10 zz\n", 2, "bad size"),
    ("= Start\n+ 0x10 0x8\nhello world\n", 3, "not an mtrace record"),
    ("= Start\n+ 0x10 -0x8\n", 2, "bad size"),  # int(_, 16) takes a sign
    ("+ 0x10 0x8\n< 0x10\n> 0x20 -0x18\n", 3, "bad size"),
    ("+ 0x10 0x1_0\n", 1, "bad size"),
    ("= Start\n+ foo 0x8\n", 2, "bad pointer"),
    ("+ 0x10 0x8\n+ 0x 0x8\n", 2, "bad pointer"),
    ("+ 0x10 0x8\n- 0x10\n- bar\n", 3, "bad pointer"),
    ("+ 0x10 0x8\n! zz 0x10\n", 2, "bad pointer"),
    ("+ foo 0x8\n+ 0x20 zz\n", 1, "bad pointer"),  # the earlier line of a chunk first
    ("xyz + 0x10 0x8\n", 1, "not an mtrace record"),  # junk, not a caller '@ ...'
    ("+ 0x10 0x8\nxyz - 0x10\n", 2, "not an mtrace record"),
])
def test_malformed_lines_name_their_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TraceError) as e:
        list(read_trace(path, "mtrace"))
    assert e.value.line == line and what in e.value.message


def test_the_reader_yields_ops_a_native_trace_can_hold(tmp_path: Path) -> None:
    """So an mtrace log converts to the native format (handles are valid native names)."""
    path = _write(tmp_path, "+ 0x10 0x8\n+ 0x10 0x9\n< 0x10\n> 0x20 0x18\n- 0x10\n- 0x20\n")
    ops = list(expand(read_trace(path, "mtrace")))
    assert all(isinstance(op, Op) and op.cpu is None and op.time_ns is None for op in ops)
    buf = io.StringIO()
    write_native(ops, buf)
    again = list(parse_native(buf.getvalue().splitlines(), "x"))
    assert [(o.kind, o.handle, o.size) for o in again] == [(o.kind, o.handle, o.size) for o in ops]


def _replay(path: Path, batch: int, memory: int = 256 << 20) -> tuple[Kernel, list[dict]]:
    k = Kernel(KernelConfig(memory=memory, cpus=2))
    events: list[dict] = []
    k.subscribe(lambda name, record: events.append({"name": name, **record}))
    k.run(mmsim.trace.mtrace.MtraceReader(path, batch))
    return k, events


def _pressure_trace(tmp_path: Path) -> Path:
    """Three rounds of 68 x 1 MiB malloc'd then freed: the reclaimer wakes in a 128 MiB guest
    (43 MB of which its 2 vCPUs and ZFS root use at boot)."""
    lines = ["= Start"]
    for _ in range(3):
        lines += [f"+ {0x1000 + i:#x} 0x100000" for i in range(68)]
        lines += [f"- {0x1000 + i:#x}" for i in range(68)]
    return _write(tmp_path, "\n".join(lines) + "\n", "pressure.mtrace")


@pytest.mark.parametrize("name", [*TRACES, "pressure"])
def test_batched_replay_is_the_per_record_replay(name: str, tmp_path: Path) -> None:
    """mmsim run replays an mtrace log in batches (the fast path); a batch of any size must give
    what one operation a record gives: the summary, the event count, and the kernel's events
    with the line and event number each happened at."""
    path, memory = (_pressure_trace(tmp_path), 128 << 20) if name == "pressure" else (
        FIXTURES / name, 256 << 20)
    one, one_events = _replay(path, 0, memory)
    if name == "pressure":
        assert any(e["name"] == "reclaim" for e in one_events)
    for batch in (2, 64):
        k, events = _replay(path, batch, memory)
        assert k.summary() == one.summary(), batch
        assert k.events == one.events and events == one_events, batch


def test_an_oom_inside_a_batch_names_the_call_that_failed(tmp_path: Path) -> None:
    """The OOM report names the record's line, not the batch's first one."""
    lines = [f"+ {0x1000 + i:#x} 0x100000" for i in range(200)]  # 200 x 1 MiB in a 64 MiB guest
    path = _write(tmp_path, "= Start\n" + "\n".join(lines) + "\n")
    reports = []
    for batch in (0, 64):
        k = Kernel(KernelConfig(memory=64 << 20, cpus=2))
        with pytest.raises(OutOfMemory):
            k.run(mmsim.trace.mtrace.MtraceReader(path, batch))
        oom = k.summary()["oom"]
        assert oom is not None
        reports.append((oom, k.events))
    assert reports[0] == reports[1]
    assert reports[0][0]["line"] > 2


def test_a_bad_pointer_past_the_first_chunk_names_its_line(tmp_path: Path) -> None:
    """The reader checks a chunk's pointers at once; the error still names the line."""
    good = "".join(f"+ {0x1000 + i:#x} 0x10\n+ (nil) 0x10\n" for i in range(1500))
    path = _write(tmp_path, good + "+ 0x10 0x8\n+ 0xg 0x8\n")
    with pytest.raises(TraceError) as e:
        list(read_trace(path, "mtrace"))
    assert e.value.line == 3002 and "bad pointer '0xg'" in e.value.message
    assert len(_ops(_write(tmp_path, good, "ok.mtrace"))) == 1500  # (nil) results pass


@pytest.mark.parametrize("batch", [0, 64])
def test_a_free_of_a_block_the_guest_failed_to_allocate_is_not_an_app_error(
        tmp_path: Path, batch: int) -> None:
    """The application's malloc succeeded (it logged a pointer); ours returned NULL (OSv fails
    sizes of 2^63 and more): its free is counted apart, not as an invalid free."""
    path = _write(tmp_path, "= Start\n+ 0x10 0xffffffffffffffff\n+ 0x20 0x8000000000000000\n"
                  "+ 0x30 0x10\n- 0x10\n- 0x20\n- 0x30\n- 0x30\n- 0x40\n")
    k, _ = _replay(path, batch)
    s = k.summary()
    assert s["malloc"]["failed_calls"] == 2 and s["malloc"]["frees_of_failed"] == 2
    assert s["app_errors"]["by_kind"] == {"double_free": 1, "invalid_free": 1}
    assert s["malloc"]["invalid_frees"] == 2
    assert [e["line"] for e in s["app_errors"]["examples"]] == [8, 9]


def test_a_truncated_gzip_log_names_the_line_reading_reached(tmp_path: Path) -> None:
    text = "".join(f"+ {0x1000 + i:#x} 0x10\n" for i in range(30000))
    data = gzip.compress(text.encode())
    path = tmp_path / "cut.mtrace.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError) as e:
        list(read_trace(path, "mtrace"))
    readable = 0  # the lines the trace source gives before it fails
    try:
        with io.TextIOWrapper(open_trace_binary(path), encoding="utf-8") as f:
            for readable, _ in enumerate(f, 1):  # noqa: B007
                pass
    except TraceError:
        pass
    assert 1000 < readable < 30000
    assert e.value.line == readable + 1 and "truncated" in e.value.message  # not a chunk's start


def test_check_looks_after_every_call_of_a_batch(tmp_path: Path, monkeypatch) -> None:
    """`mmsim run --check` checks the kernel after each call, not once per 1024-call batch, and
    the replay's results are the same as without it."""
    from mmsim.kernel import invariants

    path = _write(tmp_path, "= Start\n" + "".join(f"+ {0x10 * i:#x} 0x20\n" for i in range(1, 8))
                  + "- 0x10\n- 0x20\n= End\n")
    real, seen = invariants.check_kernel, []
    monkeypatch.setattr(invariants, "check_kernel",
                        lambda k, *a: (seen.append(k.events), real(k, *a)))
    code, checked, err = run_cli("run", str(path), "--check", "--json", "-", "-q")
    assert code == 0, err
    assert seen == list(range(1, 10))  # nine calls, nine checks, each after its own call
    _, plain, _ = run_cli("run", str(path), "--json", "-", "-q")
    assert json.loads(checked)["malloc"] == json.loads(plain)["malloc"]


def test_a_log_cut_inside_its_last_record_replays_up_to_it_with_a_warning(tmp_path) -> None:
    """A program that died while glibc wrote its log: the replay is the log's whole records,
    a one-line warning names the cut line, and the summary says the log was truncated."""
    import json

    from cli_helpers import run as run_cli

    full = (Path(__file__).parent / "fixtures" / "mtrace" / "ls.mtrace").read_bytes()
    body = full[: full.rstrip(b"\n").rfind(b"\n= End")]  # the records, without the end mark
    whole = body[: body.rfind(b"\n") + 1]
    cut = whole + body[body.rfind(b"\n") + 1:][:20]  # 20 bytes into the last record
    (tmp_path / "whole.mtrace").write_bytes(whole)
    (tmp_path / "cut.mtrace").write_bytes(cut)
    code, out_cut, err = run_cli("run", str(tmp_path / "cut.mtrace"), "--json", "-", "-q")
    assert code == 0 and err.count("\n") == 1 and "warning" in err
    n = whole.count(b"\n") + 1
    assert f"cut.mtrace:{n}:" in err
    code, out_whole, _ = run_cli("run", str(tmp_path / "whole.mtrace"), "--json", "-", "-q")
    a, b = json.loads(out_cut), json.loads(out_whole)
    assert a["trace_reader"].pop("truncated_at_line") == n
    a.pop("trace"), b.pop("trace")
    assert a == b
