"""Block-trace readers: the ARC paper's .lis, libCacheSim's oracleGeneral, plain ids.

Each format is read plain, gzip'ed and zstd'ed; requests become reads of one block of one
file; mistakes are reported as file:line.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from click.testing import CliRunner

from mmsim.trace import TraceError, detect_format, open_trace_binary, read_trace
from mmsim.trace.blocktrace import (
    BLOCK_PATH,
    MAX_BATCH_REQUESTS,
    BlockReads,
    _ids,
    _lis,
    id_of,
    read_ids,
    read_lis,
    read_oracle,
)

READERS_ONE = {"lis": read_lis, "oracleGeneral": read_oracle, "ids": read_ids}

RECORD = struct.Struct("<IQIq")


def write(path: Path, data: bytes, compression: str) -> Path:
    if compression == "gz":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    elif compression == "zst":
        path = path.with_name(path.name + ".zst")
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def requests(path: Path, fmt: str) -> tuple[int, list[tuple[int, int]]]:
    """(block size, [(line, block id)]) of a block trace, the same one request at a time."""
    ops = list(read_trace(path, fmt))
    create = ops[0]
    assert create.kind == "create" and create.path == BLOCK_PATH
    block = create.align
    out = []
    for batch in ops[1:]:
        assert isinstance(batch, BlockReads) and batch.kind == "blockread"
        assert batch.line == batch.lines[0] and batch.count == len(batch.blocks)
        for op in batch.expand():
            assert op.kind == "read" and op.path == BLOCK_PATH and op.length == block
            assert op.offset % block == 0
            out.append((op.line, op.offset // block))
    one_by_one = list(READERS_ONE[fmt](path))
    assert [(op.line, op.offset // block) for op in one_by_one[1:]] == out
    assert all(op.kind == "read" for op in one_by_one[1:])
    return block, out


def oracle_bytes(ids: list[int]) -> bytes:
    last: dict[int, int] = {}
    nxt = [-1] * len(ids)
    for i, x in enumerate(ids):
        if x in last:
            nxt[last[x]] = i
        last[x] = i
    return b"".join(RECORD.pack(i // 10, x, 4096, nxt[i]) for i, x in enumerate(ids))


def _batches(reader, text: bytes, bulk: bool, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The batches (or the error) a chunk reader gives for ``text``, with the bulk (numpy)
    parsing of whole chunks, or line by line only."""
    from mmsim.trace import blocktrace

    with monkeypatch.context() as m:
        if not bulk:
            m.setattr(blocktrace, "_lis_chunk", lambda first, text: None)
            m.setattr(blocktrace, "_ids_chunk", lambda first, text: None)
        try:
            return [(list(lines), ids) for lines, ids in reader("t", io.BytesIO(text))]
        except TraceError as e:
            return str(e)


def test_bulk_parsing_reads_what_the_line_reader_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy fast path of .lis and ids chunks gives the same requests, lines and errors
    as the line-by-line reader, on well-formed chunks and on every kind it must hand over."""
    rng = random.Random(5)
    numbers = ["0", "1", "7", "12", "007", "3", "18446744073709551615"]
    odd = ["18446744073709551616", "99999999999999999999", "+3", "-1", "1_0", "x", "#", "0x1f",
           "", " ", "\t", "\r", "obj"]
    fast = 0
    for _ in range(1500):
        rows = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.75:
                rows.append(f"{rng.choice(numbers)} {rng.choice('11123450')} 0 {rng.randint(0, 9)}")
            else:
                rows.append(" ".join(rng.choice(numbers + odd) for _ in range(rng.randint(0, 5))))
        text = ("\n".join(rows) + rng.choice(["\n", ""])).encode()
        assert _batches(_lis, text, True, monkeypatch) == _batches(_lis, text, False, monkeypatch)
        ids = ("\n".join(rng.choice(numbers) if rng.random() < 0.85 else rng.choice(odd)
                          for _ in range(rng.randint(1, 6))) + "\n").encode()
        assert _batches(_ids, ids, True, monkeypatch) == _batches(_ids, ids, False, monkeypatch)
        fast += all(x in numbers for x in ids.decode().split("\n")[:-1])
    assert fast > 500  # the fast path was taken, not only the line reader


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_lis_lines_expand_to_n_page_requests(tmp_path: Path, compression: str) -> None:
    text = b"100 3 0 1\n7 1 0 2\n\n100 2 0 3\r\n"
    path = write(tmp_path / "t.lis", text, compression)
    block, reqs = requests(path, "lis")
    assert block == 512
    assert reqs == [(1, 100), (1, 101), (1, 102), (2, 7), (4, 100), (4, 101)]
    assert detect_format(path) == "lis"


def test_a_long_lis_run_is_cut_into_bounded_batches(tmp_path: Path) -> None:
    """A line of n requests is replayed in batches of bounded size, not built whole."""
    n = 5_000_000
    path = write(tmp_path / "t.lis", b"7 1 0 1\n0 %d 0 2\n9 2 0 3\n" % n, "")
    batches = [(len(lines), lines[0], ids[0], lines[-1], ids[-1])
               for lines, ids in _lis(str(path), open_trace_binary(str(path)))]
    assert max(size for size, *_ in batches) == MAX_BATCH_REQUESTS
    assert sum(size for size, *_ in batches) == n + 3
    assert batches[0][1:3] == (1, 7) and batches[-1][3:] == (3, 10)
    # the batches are consecutive pieces of the run
    assert all(b[2] == a[4] + 1 for a, b in zip(batches, batches[1:], strict=False))


def test_a_long_lis_run_takes_constant_host_memory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsim.trace import blocktrace

    monkeypatch.setattr(blocktrace, "MAX_BATCH_REQUESTS", 1024)
    n = 100_000  # built whole: > 4 MB of lists and ints
    path = write(tmp_path / "t.lis", b"0 %d 0 1\n" % n, "")
    total = 0
    tracemalloc.start()
    try:
        for op in read_lis(path, 256):
            total += op.count or 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == n
    assert peak < 1 << 20, f"{peak} bytes for one line of {n} requests"


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_oracle_general_records_are_requests(tmp_path: Path, compression: str) -> None:
    ids = [5, 1 << 40, 5, 7, (1 << 64) - 1, 7]
    path = write(tmp_path / "t.bin", oracle_bytes(ids), compression)
    block, reqs = requests(path, "oracleGeneral")
    assert block == 4096
    assert reqs == list(enumerate(ids, 1))
    assert detect_format(path) == "oracleGeneral"


@pytest.mark.parametrize("compression", ["", "gz", "zst"])
def test_ids_numbers_and_names(tmp_path: Path, compression: str) -> None:
    text = b"# ids\n42\n0x10\nuser:alice\n\n42\nuser:bob\nuser:alice\n"
    path = write(tmp_path / "t.txt", text, compression)
    _, reqs = requests(path, "ids")
    lines = [line for line, _ in reqs]
    got = [x for _, x in reqs]
    assert lines == [2, 3, 4, 6, 7, 8]
    assert got[0] == got[3] == 42 and got[1] == 16
    assert got[2] == got[5] != got[4]  # a name always maps to the same object
    assert got[2] == id_of(b"user:alice")  # and across runs (no per-process hashing)


def test_numeric_ids_are_detected(tmp_path: Path) -> None:
    path = write(tmp_path / "t", b"1\n2\n3\n", "zst")
    assert detect_format(path) == "ids"


@pytest.mark.parametrize("text", [
    b"deadbeef\n0a1b2c3d\nDEADBEEF\n",  # hex strings without 0x
    b"# object names\nuser:alice\nuser:bob\n\nimg/cat.png\nuser:alice\n",
    b"a3f9c0e1b2d4\t\n42\n0x10\n",  # mixed, with trailing blanks
])
def test_non_numeric_ids_are_detected(tmp_path: Path, text: bytes) -> None:
    path = write(tmp_path / "t", text, "gz")
    assert detect_format(path) == "ids"
    ops = list(read_trace(path))
    assert ops[0].kind == "create" and sum(op.count for op in ops[1:]) == len(
        [x for x in text.split(b"\n") if x.strip() and not x.startswith(b"#")])


@pytest.mark.parametrize("text, fmt", [
    (b"# mmsim-trace v1\nmalloc a 10\n", "native"),
    (b"malloc a 10\nfree a\n", "native"),
    (b"1 2 0 3\n", "lis"),
])
def test_id_detection_leaves_other_formats_alone(tmp_path: Path, text: bytes, fmt: str) -> None:
    path = write(tmp_path / "t", text, "")
    assert detect_format(path) == fmt


def test_bare_operation_names_are_a_broken_native_trace_not_ids(tmp_path: Path) -> None:
    path = write(tmp_path / "t", b"malloc\nfree\n", "")
    with pytest.raises(TraceError, match="tried native"):
        detect_format(path)
    assert [op.count for op in read_trace(path, "ids")][1:] == [2]


@pytest.mark.parametrize("fmt, text, line, message", [
    ("lis", b"1 1 0 1\n2 1 0\n", 2, "expected 'start_block n_blocks"),
    ("lis", b"1 1 0 1\n\n-4 1 0 3\n", 3, "non-negative"),
    ("lis", b"1 x 0 1\n", 1, "got '1 x 0 1'"),
    ("ids", b"1\n2\ntwo words\n", 3, "expected one object id"),
])
def test_errors_name_the_file_and_line(tmp_path: Path, fmt: str, text: bytes, line: int,
                                       message: str) -> None:
    for compression in ("", "gz"):
        path = write(tmp_path / f"bad{compression}", text, compression)
        with pytest.raises(TraceError) as err:
            list(read_trace(path, fmt))
        assert err.value.line == line
        assert str(err.value).startswith(f"{path}:{line}: ") and message in str(err.value)


def test_a_truncated_oracle_record_names_its_number(tmp_path: Path) -> None:
    data = oracle_bytes([1, 2, 3])[:-5]
    path = write(tmp_path / "t.bin", data, "zst")
    with pytest.raises(TraceError) as err:
        list(read_trace(path, "oracleGeneral"))
    assert err.value.line == 3 and "truncated record" in str(err.value)


def test_a_truncated_archive_is_an_error_not_a_short_trace(tmp_path: Path) -> None:
    text = b"".join(b"%d 1 0 %d\n" % (i, i) for i in range(20000))
    path = tmp_path / "t.lis.gz"
    path.write_bytes(gzip.compress(text)[:-200])
    with pytest.raises(TraceError) as err:
        list(read_trace(path, "lis"))
    assert "truncated or corrupt gzip" in str(err.value) and err.value.line > 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such file"):
        list(read_trace(tmp_path / "nope.lis", "lis"))


def test_batches_replay_exactly_as_one_read_per_request(tmp_path: Path) -> None:
    from mmsim.kernel import Kernel, load_config
    from mmsim.kernel import sys_fs as _sys_fs  # noqa: F401

    rng = random.Random(3)
    ids = [int(rng.paretovariate(0.7)) % 3000 for _ in range(20_000)]
    path = write(tmp_path / "t.bin", oracle_bytes(ids), "zst")
    results = []
    for ops in (read_trace(path, "oracleGeneral"), read_oracle(path)):
        k = Kernel(load_config(None, {"memory": "256M", "arc_size": "2M"}))
        k.run(ops)
        s = k.summary()
        results.append((s["arc"]["hits"], s["arc"]["misses"], s["arc"]["mru_count"],
                        s["arc"]["p_bytes"], s["disk"], s["time_ns"], s["memory"]["categories"]))
        k.check()
    assert results[0] == results[1]
    assert results[0][0] > 0 and results[0][1] > 0


def test_mmsim_run_replays_a_block_trace_with_a_block_size(tmp_path: Path) -> None:
    from mmsim.cli import main

    # 3 objects, then the same 3 again: 3 misses, 3 hits, whatever the policy
    path = write(tmp_path / "t.ids", b"1\n2\n3\n1\n2\n3\n", "zst")
    for policy in ("zfs", "arc", "lru"):
        result = CliRunner().invoke(main, ["run", str(path), "--format", "ids", "--block-size",
                                           "8K", "--cache-policy", policy, "--json", "-", "-q"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        arc = summary["arc"]
        assert (arc["hits"], arc["misses"]) == (3, 3)
        assert arc["data_size_bytes"] == 3 * 8192  # size_bytes adds the headers (arc.c)
        # an 8 KiB record is posix_memalign(4096, 8K): 3 pages
        assert summary["memory"]["categories"]["arc"] == 3 * 3 * 4096
        assert summary["disk"]["read_bytes"] == 3 * 8192


def test_mmsim_run_rejects_an_unknown_policy(tmp_path: Path) -> None:
    from mmsim.cli import main

    path = write(tmp_path / "t.ids", b"1\n", "")
    result = CliRunner().invoke(main, ["run", str(path), "--cache-policy", "fifo"])
    assert result.exit_code == 2
    assert "unknown cache policy 'fifo'" in result.output


def test_a_batch_counts_one_event_per_request(tmp_path) -> None:
    """The kernel counts a batch's calls: `events` is the same batched or one read per
    request (`--check` expands the batches)."""
    import json

    from cli_helpers import run

    p = tmp_path / "t.lis"
    p.write_text("".join(f"{i % 37} 1 0 0\n" for i in range(600)))
    outs = []
    for extra in ([], ["--check"]):
        code, out, err = run("run", str(p), "--memory", "256M", "--json", "-", "-q", *extra)
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0]["events"] == outs[1]["events"] == 601  # 600 requests and the create
    assert outs[0]["arc"]["hits"] == outs[1]["arc"]["hits"]
