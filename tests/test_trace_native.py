"""Native trace format: units, parsing, errors, compression, streaming, round trip."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from mmsim.kernel.units import (
    format_duration,
    format_size,
    format_size_exact,
    parse_duration,
    parse_size,
)

import mmsim.trace as trace
from mmsim.trace import (
    OP_KINDS,
    READERS,
    Op,
    TraceError,
    detect_format,
    format_op,
    open_trace_binary,
    open_trace_text,
    parse_native,
    read_native,
    read_trace,
    register_reader,
    write_native,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello.trace"


def parse_one(line: str) -> Op:
    ops = list(parse_native([line], "t.trace"))
    assert len(ops) == 1
    return ops[0]


def parse_error(text: str) -> TraceError:
    with pytest.raises(TraceError) as info:
        list(parse_native(text.splitlines(), "t.trace"))
    return info.value


# --- units ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("4096", 4096),
        ("0x1000", 4096),
        ("0XfF", 255),
        ("4K", 4096),
        ("4k", 4096),
        ("4KiB", 4096),
        ("2M", 2 << 20),
        ("2MiB", 2 << 20),
        ("3g", 3 << 30),
        ("1T", 1 << 40),
        ("1TiB", 1 << 40),
        ("1.5G", 3 << 29),
        (".5K", 512),
        ("512B", 512),
        ("18446744073709551615", 2**64 - 1),
        ("0x" + "f" * 16, 2**64 - 1),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12Q", "bad size '12Q' (unknown unit 'Q')"),
        ("4KB", "unknown unit 'KB'; use K or KiB"),
        ("", "bad size ''"),
        ("abc", "bad size 'abc'"),
        ("1.", "bad size '1.'"),
        ("-1", "negative size '-1'"),
        ("-4K", "negative size"),
        ("1.3K", "not a whole number of bytes"),
        ("0.5", "not a whole number of bytes"),
        ("18446744073709551616", "too large"),
        ("16384P", "unknown unit 'P'"),
        ("16777216T", "too large"),
        ("0x1" + "0" * 16, "too large"),
        ("9" * 5000, "too large"),
        ("0x10K", "hex takes no unit"),
    ],
)
def test_parse_size_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_size(text)
    assert message in str(info.value)
    assert len(str(info.value)) < 120  # junk is quoted cut short


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("2", 2_000_000_000),
        ("1.5", 1_500_000_000),
        ("7ns", 7),
        ("250us", 250_000),
        ("1.5ms", 1_500_000),
        ("2s", 2_000_000_000),
        ("0.000000001", 1),
        ("1.250000us", 1250),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5x", "unit must be ns, us, ms or s"),
        ("-1s", "negative duration"),
        ("1.5ns", "not a whole number of nanoseconds"),
        ("", "bad duration"),
        ("0x10", "bad duration"),
        ("99999999999s", "too large"),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (3 << 29, "1.5 GiB"),
        ((1 << 20) - 1, "1 MiB"),
        (2**64 - 1, "16 EiB"),
    ],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


@given(st.integers(0, 2**64 - 1))
def test_exact_spellings_round_trip(n: int) -> None:
    assert parse_size(format_size_exact(n)) == n
    assert parse_duration(format_duration(n)) == n


def test_exact_spellings_are_short() -> None:
    assert [format_size_exact(n) for n in (0, 100, 4096, 1536, 3 << 30)] == [
        "0",
        "100",
        "4K",
        "1536",
        "3G",
    ]
    assert [format_duration(n) for n in (0, 7, 1_500_000, 2_000_000_000)] == [
        "0s",
        "7ns",
        "1.5ms",
        "2s",
    ]


# --- every operation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("malloc a 4K", {"kind": "malloc", "handle": "a", "size": 4096}),
        ("calloc t 128 32", {"kind": "calloc", "handle": "t", "count": 128, "size": 32}),
        ("memalign b 64 100", {"kind": "memalign", "handle": "b", "align": 64, "size": 100}),
        ("realloc a.x:1-2 0x10", {"kind": "realloc", "handle": "a.x:1-2", "size": 16}),
        ("free _h", {"kind": "free", "handle": "_h"}),
        (
            "mmap m 8M",
            {"kind": "mmap", "size": 8 << 20, "prot": 3, "path": None, "shared": False},
        ),
        ("mmap m 4K anon prot=none private", {"prot": 0, "shared": False}),
        (
            "mmap f 2M file=/data/x off=4K prot=r-x shared populate hugetlb addr=0x200000 fixed",
            {
                "path": "/data/x",
                "offset": 4096,
                "prot": 5,
                "shared": True,
                "populate": True,
                "hugetlb": True,
                "addr": 0x200000,
                "fixed": True,
            },
        ),
        ("mmap m 4K addr=0x10000 prot=rwx", {"addr": 0x10000, "fixed": False, "prot": 7}),
        ("mmap m 4K prot=rw-", {"prot": 3}),
        ("munmap m", {"kind": "munmap", "offset": 0, "length": None}),
        ("munmap m 4K 8K", {"kind": "munmap", "offset": 4096, "length": 8192}),
        ("mprotect m 0 4K r", {"kind": "mprotect", "offset": 0, "length": 4096, "prot": 1}),
        ("mprotect m 0 4K none", {"prot": 0}),
        ("mprotect m 0 4K prot=rx", {"prot": 5}),
        ("madvise m 0 2M dontneed", {"kind": "madvise", "length": 2 << 20, "advice": "dontneed"}),
        ("madvise m 2M 2M hugepage", {"offset": 2 << 20, "advice": "hugepage"}),
        ("madvise m 0 4K nohugepage", {"advice": "nohugepage"}),
        ("mremap m 16M", {"kind": "mremap", "handle": "m", "size": 16 << 20}),
        ("touch m 0 1M", {"kind": "touch", "offset": 0, "length": 1 << 20, "write": True}),
        ("touch m 4K 4K r", {"offset": 4096, "write": False}),
        ("touch m 4K 4K w", {"write": True}),
        ("msync m", {"kind": "msync", "offset": 0, "length": None}),
        ("msync m 0 4K", {"kind": "msync", "length": 4096}),
        ("create /d/f 32M", {"kind": "create", "path": "/d/f", "size": 32 << 20}),
        ("read /d/f 0 4K", {"kind": "read", "path": "/d/f", "length": 4096, "write": False}),
        ("write /d/f 1M 4K", {"kind": "write", "offset": 1 << 20, "write": True}),
        ("fsync /d/f", {"kind": "fsync", "path": "/d/f"}),
        ("unlink /d/f", {"kind": "unlink", "path": "/d/f"}),
        ("host-balloon 256M", {"kind": "host-balloon", "size": 256 << 20}),
        ("sleep 5ms", {"kind": "sleep", "duration_ns": 5_000_000}),
        ("sleep 2", {"duration_ns": 2_000_000_000}),
        ("cpu 3", {"kind": "cpu", "count": 3, "cpu": None}),
        ("@1.5ms malloc a 1", {"time_ns": 1_500_000, "cpu": None}),
        ("cpu=2 free a", {"cpu": 2, "time_ns": None}),
        ("@2s cpu=0 free a", {"cpu": 0, "time_ns": 2_000_000_000}),
        ("  free   a  # trailing comment", {"kind": "free", "handle": "a"}),
    ],
)
def test_operation_forms(line: str, fields: dict[str, object]) -> None:
    op = parse_one(line)
    assert op.line == 1
    for name, value in fields.items():
        assert getattr(op, name) == value, name


def test_every_kind_is_covered_by_the_example() -> None:
    ops = list(read_native(EXAMPLE))
    assert {op.kind for op in ops} == set(OP_KINDS)
    assert detect_format(EXAMPLE) == "native"


def test_comments_blank_lines_and_line_numbers() -> None:
    text = "# mmsim-trace v1\n\n   # indented comment\nmalloc a 1 # c\n\t\nfree a#x\n"
    ops = list(parse_native(text.splitlines()))
    assert [(op.kind, op.line) for op in ops] == [("malloc", 4), ("free", 6)]
    assert ops[1].handle == "a"


def test_header() -> None:
    assert list(parse_native(["#mmsim-trace v1 made by hand", "free a"]))[0].line == 2
    assert "unsupported trace version 'v2'" in str(parse_error("# mmsim-trace v2\n"))
    assert "malformed trace header" in str(parse_error("# mmsim-trace\n"))
    # only the first line is a header; later it is a comment (concatenated traces)
    assert len(list(parse_native(["free a", "# mmsim-trace v2"]))) == 1
    assert len(list(parse_native(["# mmsim-trace-ish notes"]))) == 0


def test_time_stamps_must_not_go_backwards() -> None:
    ops = list(parse_native(["@1ms free a", "free b", "@1ms free c", "@2ms free d"]))
    assert [op.time_ns for op in ops] == [1_000_000, None, 1_000_000, 2_000_000]
    err = parse_error("@2ms free a\nfree b\n@1ms free c\n")
    assert (err.line, err.message) == (3, "time goes backwards: @1ms after @2ms")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mallok a 1", "unknown operation 'mallok' (did you mean 'malloc'?)"),
        ("frobnicate", "unknown operation 'frobnicate'"),
        ("malloc a 12Q", "malloc: bad size '12Q' (unknown unit 'Q')"),
        ("malloc a", "malloc: expected 'malloc H SIZE'"),
        ("malloc a 1 2", "malloc: expected 'malloc H SIZE'"),
        ("malloc 9a 1", "malloc: bad handle '9a'"),
        ("calloc a 1K 4", "calloc: bad count '1K'"),
        ("memalign a 48 4", "memalign: alignment '48' is not a power of two"),
        ("memalign a 0 4", "not a power of two"),
        ("mmap a 0", "mmap: length must be > 0"),
        ("mmap a", "mmap: expected 'mmap H LEN [OPTIONS]'"),
        ("mmap a 4K shared private", "mmap: 'shared' and 'private' are exclusive"),
        ("mmap a 4K anon file=/x", "mmap: 'anon' and 'file=' are exclusive"),
        ("mmap a 4K off=4K", "mmap: off= needs file="),
        ("mmap a 4K fixed", "mmap: 'fixed' needs addr="),
        ("mmap a 4K prot=wr", "mmap: bad protection 'wr'"),
        ("mmap a 4K file=", "mmap: file= needs a path"),
        ("mmap a 4K populate populate", "mmap: option 'populate' given twice"),
        ("mmap a 4K bogus", "mmap: unknown option 'bogus'"),
        ("munmap a 0", "munmap: expected 'munmap H [OFF LEN]'"),
        ("mprotect a 0 4K", "mprotect: expected 'mprotect H OFF LEN PROT'"),
        ("madvise a 0 4K willneed", "madvise: unknown advice 'willneed'"),
        ("touch a 0 4K rw", "touch: access must be r or w, not 'rw'"),
        ("read /f 0", "read: expected 'read PATH OFF LEN'"),
        ("read /f -1 4", "read: negative offset '-1'"),
        ("sleep 5x", "sleep: bad duration '5x' (unit must be ns, us, ms or s)"),
        ("sleep", "sleep: expected 'sleep DURATION'"),
        ("cpu x", "bad cpu number 'x'"),
        ("cpu=1 cpu 2", "'cpu N' takes no cpu= prefix"),
        ("@5x free a", "bad time stamp '5x'"),
        ("@1ms", "missing operation after the prefix"),
        ("cpu=1 @1ms free a", "the @TIME stamp must come first on the line"),
        ("@1ms cpu=1 cpu=2 free a", "cpu=N given twice"),
        ("host-balloon 1Z", "host-balloon: bad size '1Z'"),
    ],
)
def test_malformed_lines(line: str, message: str) -> None:
    err = parse_error(f"free ok\n{line}\n")
    assert err.line == 2
    assert message in err.message
    assert str(err).startswith("t.trace:2: ")
    assert "\n" not in str(err)  # the command prints it as exactly one line


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.trace"
    path.write_text("# mmsim-trace v1\nmalloc a 1K\n\nmallok b 2\n")
    reader = read_native(path)
    assert next(reader).kind == "malloc"  # everything before the bad line is yielded
    with pytest.raises(TraceError) as info:
        next(reader)
    assert str(info.value) == f"{path}:4: unknown operation 'mallok' (did you mean 'malloc'?)"
    assert (info.value.path, info.value.line) == (str(path), 4)

    path.write_text("malloc a 12Q\n")
    with pytest.raises(TraceError, match=r"bad\.trace:1: malloc: bad size '12Q'"):
        list(read_trace(path))  # not even recognized as native, but the message says why
    path.write_text("# mmsim-trace v1\nmalloc a 12Q\n")
    with pytest.raises(TraceError, match=r"bad\.trace:2: malloc: bad size '12Q'"):
        list(read_trace(path))  # the header makes it native; the reader reports the line


def test_trace_error_without_line() -> None:
    err = TraceError("x.trace", 0, "no such file")
    assert str(err) == "x.trace: no such file"
    assert (err.path, err.line, err.message) == ("x.trace", 0, "no such file")


# --- files: missing, compressed, corrupt ----------------------------------------------

TEXT = "# mmsim-trace v1\nmalloc a 4K\n@1ms cpu=1 mmap m 2M populate\ntouch m 0 1M\nfree a\n"


def _ops(path: Path) -> list[Op]:
    return list(read_native(path))


def test_missing_file_directory_unreadable(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as info:
        next(read_native(tmp_path / "nope.trace"))
    assert (info.value.line, info.value.message) == (0, "no such file")
    assert str(info.value) == f"{tmp_path / 'nope.trace'}: no such file"  # one line
    with pytest.raises(TraceError, match="is a directory"):
        open_trace_text(tmp_path)
    with pytest.raises(TraceError, match="no such file"):
        read_trace(tmp_path / "nope.trace")
    unreadable = tmp_path / "secret.trace"
    unreadable.write_text(TEXT)
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything
        return
    with pytest.raises(TraceError, match="permission denied"):
        open_trace_text(unreadable)


def test_gzip_and_zstd_read_like_plain(tmp_path: Path) -> None:
    plain = tmp_path / "t.trace"
    plain.write_text(TEXT)
    gz = tmp_path / "t.trace.gz"
    gz.write_bytes(gzip.compress(TEXT.encode()))
    zst = tmp_path / "t.trace.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(TEXT.encode()))
    # detection is by magic bytes, not by the name
    gz_misnamed = tmp_path / "gz.trace"
    gz_misnamed.write_bytes(gzip.compress(TEXT.encode()))
    zst_misnamed = tmp_path / "zst.log"
    zst_misnamed.write_bytes(zstandard.ZstdCompressor().compress(TEXT.encode()))
    plain_misnamed = tmp_path / "plain.gz"
    plain_misnamed.write_text(TEXT)
    expected = _ops(plain)
    assert len(expected) == 4
    for path in (gz, zst, gz_misnamed, zst_misnamed, plain_misnamed):
        assert _ops(path) == expected, path
        assert detect_format(path) == "native"
    with open_trace_binary(zst) as stream:
        assert stream.read() == TEXT.encode()


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path: Path) -> None:
    half = TEXT.encode()
    gz = tmp_path / "t.gz"
    gz.write_bytes(gzip.compress(half) + gzip.compress(b"free b\n"))
    zst = tmp_path / "t.zst"
    cctx = zstandard.ZstdCompressor()
    zst.write_bytes(cctx.compress(half) + cctx.compress(b"free b\n"))
    for path in (gz, zst):
        assert [op.handle for op in _ops(path)][-2:] == ["a", "b"]


def _big_text(lines: int) -> bytes:
    return b"".join(b"malloc h%d %dK\n" % (i, i % 64 + 1) for i in range(lines))


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_truncated_archive_is_a_trace_error(tmp_path: Path, kind: str) -> None:
    data = _big_text(20_000)
    packed = gzip.compress(data, 1) if kind == "gzip" else zstandard.compress(data)
    path = tmp_path / f"t.{kind}"
    path.write_bytes(packed[: len(packed) // 2])
    reader = read_native(path)
    seen = 0
    with pytest.raises(TraceError) as info:
        for _ in reader:
            seen += 1
    err = info.value
    assert err.message == f"truncated or corrupt {kind} data"
    assert 1 < seen < 20_000 and err.line == seen + 1
    assert str(err).startswith(f"{path}:{err.line}: ")
    assert not isinstance(err, EOFError)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_an_archive_cut_before_its_first_line_names_line_1(tmp_path: Path, kind: str) -> None:
    """zstd gives nothing of a block until it is whole: the first 3000 bytes decompress to
    no line at all, and detection (not the reader) meets the truncation; it must still say
    file:line, as it does for gzip."""
    data = _big_text(20_000)
    packed = gzip.compress(data, 1) if kind == "gzip" else zstandard.compress(data)
    path = tmp_path / f"t.{kind}"
    path.write_bytes(packed[:3000])
    if kind == "gzip":  # gzip yields the lines before the cut: the reader reports it
        with pytest.raises(TraceError) as info:
            list(read_trace(path))
        assert info.value.line > 1
    path.write_bytes(packed[:20] if kind == "gzip" else packed[:3000])
    with pytest.raises(TraceError) as info:
        list(read_trace(path))
    err = info.value
    assert (err.line, err.message) == (1, f"truncated or corrupt {kind} data")
    assert str(err) == f"{path}:1: truncated or corrupt {kind} data"


def test_corrupt_gzip_is_a_trace_error(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(_big_text(2000)))
    packed[len(packed) // 2] ^= 0xFF
    packed[-6] ^= 0xFF  # CRC
    path = tmp_path / "t.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(TraceError, match="truncated or corrupt gzip data"):
        list(read_native(path))
    tiny = tmp_path / "tiny.gz"
    tiny.write_bytes(b"\x1f\x8b")
    with pytest.raises(TraceError, match="truncated or corrupt gzip data"):
        list(read_native(tiny))
    with pytest.raises(TraceError, match="truncated or corrupt gzip data"):
        read_trace(tiny)


def test_invalid_utf8_and_overlong_line(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    path.write_bytes(b"free a\nfree \xff\n")
    with pytest.raises(TraceError) as info:
        list(read_native(path))
    assert (info.value.line, info.value.message) == (2, "invalid UTF-8 at byte 6 of the line")
    path.write_bytes(b"free a\n" + b"#" * (2 << 20))
    with pytest.raises(TraceError, match=r":2: line longer than"):
        list(read_native(path))


def test_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    path.write_bytes(b"\xef\xbb\xbf# mmsim-trace v2\r\n")
    with pytest.raises(TraceError, match="unsupported trace version"):
        list(read_native(path))
    path.write_bytes(b"\xef\xbb\xbfmalloc a 1\r\nfree a\r\n")
    assert [op.kind for op in read_native(path)] == ["malloc", "free"]
    with open_trace_text(path) as text:
        assert text.readline() == "malloc a 1\n"
        assert text.lineno == 1


def test_reading_streams(tmp_path: Path) -> None:
    """The first Op comes out before the rest of a 200k-line file is read or parsed."""
    path = tmp_path / "big.trace.gz"
    path.write_bytes(gzip.compress(_big_text(200_000) + b"mallok broken 1\n", 1))
    reader = read_native(path)
    first = next(reader)  # would raise if the whole file were parsed up front
    assert (first.kind, first.handle, first.line) == ("malloc", "h0", 1)
    assert next(reader).line == 2
    reader.close()
    # nothing happens, not even opening, until the first next()
    lazy = read_native(tmp_path / "does-not-exist")
    with pytest.raises(TraceError):
        next(lazy)


# --- registry -----------------------------------------------------------------------


@pytest.fixture
def clean_registry():
    saved_readers = dict(READERS)
    saved_detectors = dict(trace._DETECTORS)
    yield
    READERS.clear()
    READERS.update(saved_readers)
    trace._DETECTORS.clear()
    trace._DETECTORS.update(saved_detectors)


def test_read_trace_and_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "t.trace"
    path.write_text(TEXT)
    assert list(read_trace(path)) == list(read_trace(path, "native")) == _ops(path)
    with pytest.raises(TraceError) as info:
        read_trace(path, "x")
    assert info.value.line == 0
    assert info.value.message.startswith("unknown format 'x' (known: auto, native")


def test_detection_explains_failure(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("hello world\n")
    with pytest.raises(TraceError) as info:
        detect_format(path)
    assert info.value.line == 1
    assert info.value.message.startswith("unknown operation 'hello'")
    assert "format not recognized" in info.value.message
    binary = tmp_path / "t.bin"
    binary.write_bytes(bytes(range(256)) * 300)
    with pytest.raises(
        TraceError, match=r"t\.bin: unrecognized trace format \(known: auto, native"
    ):
        detect_format(binary)
    empty = tmp_path / "empty.trace"
    empty.write_bytes(b"")
    assert detect_format(empty) == "native"
    assert list(read_trace(empty)) == []


def test_register_reader(tmp_path: Path, clean_registry: None) -> None:
    def read_shout(path: str):
        yield Op("free", 1, handle="SHOUT")

    register_reader("shout", read_shout, lambda peek: peek.head.startswith(b"SHOUT"))
    path = tmp_path / "t.log"
    path.write_bytes(gzip.compress(b"SHOUT SHOUT\n"))
    assert detect_format(path) == "shout"
    assert [op.handle for op in read_trace(path)] == ["SHOUT"]
    with pytest.raises(ValueError, match="already registered"):
        register_reader("shout", read_shout)
    register_reader("quiet", read_shout)  # no detector: only by name
    path.write_text("free a\n")
    assert detect_format(path) == "native"
    assert next(read_trace(path, "quiet")).handle == "SHOUT"


# --- writing and the round trip -------------------------------------------------------

U64 = st.integers(0, 2**64 - 1)
SIZES = st.one_of(U64, st.integers(0, 1 << 22).map(lambda n: n * 4096), st.integers(0, 5000))
HANDLES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,8}", fullmatch=True)
PATHS = st.from_regex(r"/[A-Za-z0-9_.=/-]{0,12}", fullmatch=True)
PROTS = st.integers(0, 7)


@st.composite
def ops_of_kind(draw: st.DrawFn, kind: str) -> Op:
    op = Op(kind, 0)
    if kind in ("malloc", "realloc", "mremap"):
        op.handle, op.size = draw(HANDLES), draw(SIZES)
    elif kind == "calloc":
        op.handle, op.count, op.size = draw(HANDLES), draw(U64), draw(SIZES)
    elif kind == "memalign":
        op.handle, op.align, op.size = draw(HANDLES), 1 << draw(st.integers(0, 63)), draw(SIZES)
    elif kind == "free":
        op.handle = draw(HANDLES)
    elif kind == "mmap":
        op.handle, op.size = draw(HANDLES), draw(SIZES.filter(bool))
        if draw(st.booleans()):
            op.path, op.offset = draw(PATHS), draw(SIZES)
        op.prot = draw(PROTS)
        op.shared, op.populate, op.hugetlb = (
            draw(st.booleans()),
            draw(st.booleans()),
            draw(st.booleans()),
        )
        if draw(st.booleans()):
            op.addr, op.fixed = draw(U64), draw(st.booleans())
    elif kind in ("munmap", "msync"):
        op.handle = draw(HANDLES)
        if draw(st.booleans()):
            op.offset, op.length = draw(SIZES), draw(SIZES)
    elif kind in ("mprotect", "madvise", "touch"):
        op.handle, op.offset, op.length = draw(HANDLES), draw(SIZES), draw(SIZES)
        if kind == "mprotect":
            op.prot = draw(PROTS)
        elif kind == "madvise":
            op.advice = draw(st.sampled_from(["dontneed", "hugepage", "nohugepage"]))
        else:
            op.write = draw(st.booleans())
    elif kind == "create":
        op.path, op.size = draw(PATHS), draw(SIZES)
    elif kind in ("read", "write"):
        op.path, op.offset, op.length = draw(PATHS), draw(SIZES), draw(SIZES)
        op.write = kind == "write"
    elif kind in ("fsync", "unlink"):
        op.path = draw(PATHS)
    elif kind == "host-balloon":
        op.size = draw(SIZES)
    elif kind == "sleep":
        op.duration_ns = draw(U64)
    elif kind == "cpu":
        op.count = draw(st.integers(0, 1 << 16))
    if kind != "cpu" and draw(st.booleans()):
        op.cpu = draw(st.integers(0, 255))
    if draw(st.booleans()):
        op.time_ns = draw(U64)
    return op


OPS = st.sampled_from(OP_KINDS).flatmap(ops_of_kind)


@settings(max_examples=150, deadline=None)
@given(st.lists(OPS, max_size=25))
def test_round_trip(ops: list[Op]) -> None:
    stamps = iter(sorted(op.time_ns for op in ops if op.time_ns is not None))
    for op in ops:  # time stamps must not go backwards
        if op.time_ns is not None:
            op.time_ns = next(stamps)
    buf = io.StringIO()
    assert write_native(ops, buf) == len(ops)
    text = buf.getvalue()
    back = list(parse_native(text.splitlines()))
    for i, op in enumerate(ops):
        op.line = i + 2  # after the header
    assert back == ops
    # canonical: writing what was read gives the same text
    again = io.StringIO()
    write_native(back, again)
    assert again.getvalue() == text


def test_round_trip_through_compressed_file(tmp_path: Path) -> None:
    ops = list(read_native(EXAMPLE))
    path = tmp_path / "copy.trace.zst"
    buf = io.StringIO()
    write_native(ops, buf, header=False)
    path.write_bytes(zstandard.compress(buf.getvalue().encode()))
    back = list(read_native(path))
    assert [format_op(op) for op in back] == [format_op(op) for op in ops]


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (Op("free", 0, handle="9bad"), "bad handle"),
        (Op("free", 0), "bad handle"),
        (Op("unlink", 0, path="/a b"), "path"),
        (Op("unlink", 0, path="/a#b"), "path"),
        (Op("malloc", 0, handle="a", size=-1), "out of range"),
        (Op("memalign", 0, handle="a", align=3), "not a power of two"),
        (Op("mmap", 0, handle="a", size=0), "length must be > 0"),
        (Op("mmap", 0, handle="a", size=1, offset=4096), "offset needs a file"),
        (Op("mmap", 0, handle="a", size=1, fixed=True), "'fixed' needs an address"),
        (Op("munmap", 0, handle="a", offset=4096), "offset needs a length"),
        (Op("touch", 0, handle="a"), "length is None"),
        (Op("madvise", 0, handle="a", length=1, advice="willneed"), "bad advice"),
        (Op("cpu", 0, count=1, cpu=2), "no cpu= prefix"),
        (Op("bogus", 0), "unknown operation"),
    ],
)
def test_write_rejects_what_cannot_be_read_back(op: Op, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        format_op(op)


def test_canonical_form() -> None:
    line = "mmap  m 0x200000 prot=rw- private populate file=/x off=0"
    assert format_op(parse_one(line)) == "mmap m 2M file=/x populate"
    assert format_op(parse_one("@1500us cpu=1 touch m 0 4096 w")) == "@1.5ms cpu=1 touch m 0 4K"
