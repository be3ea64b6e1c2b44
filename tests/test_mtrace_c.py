"""The C hot loop of the mtrace reader (mmsim/trace/_mtrace_c.c) against its pure-Python twin.

Both must give the same records, the same stats (keys in the same order) and the same errors
(path, line, message, and the batches yielded before it) on any log: the committed fixtures
and hypothesis-made logs that use every rule of the reader. Skipped where the extension is not
built, unless MMSIM_REQUIRE_C=1 (CI), where its absence fails.
"""

from __future__ import annotations

import gc
import gzip
import os
import resource
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mmsim.trace.mtrace as mtrace_mod
from mmsim.trace.mtrace import MtraceReader
from mmsim.trace.ops import TraceError

FIXTURES = Path(__file__).parent / "fixtures" / "mtrace"

try:
    from mmsim.trace import _mtrace_c
except ImportError:
    _mtrace_c = None


@pytest.fixture(autouse=True)
def _built() -> None:
    if _mtrace_c is None:
        if os.environ.get("MMSIM_REQUIRE_C"):
            pytest.fail("MMSIM_REQUIRE_C is set but mmsim.trace._mtrace_c is not built")
        pytest.skip("mmsim.trace._mtrace_c is not built")


def _read(path: Path, batch: int, c: bool, block: int = 1 << 20) -> tuple[list, list, tuple | None]:
    """(the batches' records, the stats' items, the error as (path, line, message) or None),
    read with the C loop (a plain file in blocks of ``block`` characters, a compressed one
    line by line) or the pure one."""
    saved = mtrace_mod._mtrace_c, mtrace_mod._BLOCK
    mtrace_mod._mtrace_c = _mtrace_c if c else None
    mtrace_mod._BLOCK = block
    reader = MtraceReader(path, batch)
    batches: list = []
    error = None
    try:
        for op in reader:
            batches.append(op.records if batch else (op.kind, op.line, op.handle, op.size, op.site))
    except TraceError as e:
        error = (e.path, e.line, e.message)
    finally:
        mtrace_mod._mtrace_c, mtrace_mod._BLOCK = saved
    return batches, list(reader.stats.items()), error


def _same(path: Path, batches: tuple[int, ...] = (1, 2, 1024, 0), block: int = 1 << 20) -> tuple:
    """The C and the pure readers agree on the log at path, and on it gzipped (if it is not)."""
    paths = [path]
    if path.suffix != ".gz":
        paths.append(path.with_name(path.name + ".gz"))
        paths[-1].write_bytes(gzip.compress(path.read_bytes()))
    for p in paths:
        for batch in batches:
            c, py = _read(p, batch, True, block), _read(p, batch, False)
            assert c == py, f"{p.name}, batch {batch}"
    return py


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.mtrace*")))
def test_fixtures_read_the_same_in_c(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes((FIXTURES / name).read_bytes())
    batches, _, error = _same(path)
    assert batches and error is None


@pytest.mark.parametrize("name", ["python3.mtrace.gz", "bad_frees.mtrace"])
def test_batches_packed_for_the_kernel_hold_the_records_of_lists(name: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel's C loop is built, the C reader packs each batch in its MallocRecords
    (no tuple a record); without it, lists: the same records either way."""
    path = tmp_path / name
    path.write_bytes((FIXTURES / name).read_bytes())
    packed, stats, _ = _read(path, 64, True)
    if mtrace_mod.MALLOC_RECORDS_API is not None:
        assert {type(b).__name__ for b in packed} == {"MallocRecords"}
    monkeypatch.setattr(mtrace_mod, "MALLOC_RECORDS_API", None)
    lists, stats_lists, _ = _read(path, 64, True)
    assert {type(b) for b in lists} == {list}
    assert [list(b) for b in packed] == lists and stats == stats_lists


# the pieces of a log: pointers (glibc's form, and others a dict holds), sizes, callers
_PTRS = ["0x10", "0x20", "0x30", "0x0", "0x1a", "0xAB", "0x0010", "(nil)",
         "0x" + "f" * 20, "0xffffffffffffffff"]
_SIZES = ["0", "0x10", "0x8", "0x" + "f" * 20, "0x00000000000000000001", "0xfff", "0x1000"]
_CALLERS = ["", "@ [0x4005d6] ", "@ /bin/ls:(main+0x1c)[0x4005d6] ", "@ /usr/lib/my prog:[0x12] ",
            "@ /lib/x\udcff\udcfe.so:(f+1)[0x2] ", "@ ", "@ /p\u00e9:[0x3] ", "@ \u4e2d:[0x3] ",
            "@ a:(b+1)[0x2]  c\u2003d[0x5] "]
_SEPS = [" ", "\t", "\x1c", "\x1f", "  ", " \t"]


@st.composite
def _line(draw, bad: bool = False) -> str:
    ptrs = _PTRS + (["foo", "0x", "0X10", "-", "0xg", "0x1\udcff"] if bad else [])
    sizes = _SIZES + (["-0x8", "0x1_0", "zz", "0X8", "00"] if bad else [])
    callers = _CALLERS + (["xyz ", "x y "] if bad else [])
    p, size, caller = draw(st.sampled_from(ptrs)), draw(st.sampled_from(sizes)), draw(st.sampled_from(callers))
    kind = draw(st.sampled_from("+-<>!=" + ("?" if bad else "")))
    fields = {"+": ["+", p, size], ">": [">", p, size], "!": ["!", p, size], "-": ["-", p],
              "<": ["<", p], "=": ["=", draw(st.sampled_from(["Start", "End"]))],
              "?": [p]}[kind]
    sep = draw(st.sampled_from(_SEPS))
    if kind == "=" and draw(st.booleans()):
        return "= " + fields[1]
    if draw(st.integers(0, 30)) == 0:
        return draw(st.sampled_from(["", "   ", "\t"]))
    return caller.replace(" ", sep) + sep.join(fields) + draw(st.sampled_from(["", " ", "\t"]))


def _log(draw, bad: bool) -> bytes:
    lines = draw(st.lists(_line(bad), min_size=1, max_size=60))
    ends = [draw(st.sampled_from(["\n", "\n", "\r\n"])) for _ in lines]
    if draw(st.booleans()):
        ends[-1] = ""  # a truncated last line
    return "".join(a + b for a, b in zip(lines, ends)).encode("utf-8", "surrogateescape")


@st.composite
def _logs(draw, bad: bool = False) -> bytes:
    return _log(draw, bad)


_BLOCKS = st.sampled_from([1, 2, 7, 64, 1 << 20])  # lines split across the reads of blocks


@given(_logs(), _BLOCKS)
def test_c_and_pure_readers_agree_on_any_log(tmp_path_factory, data: bytes, block: int) -> None:
    path = tmp_path_factory.mktemp("c") / "t.mtrace"
    path.write_bytes(data)
    _same(path, block=block)


@given(_logs(bad=True), _BLOCKS)
def test_c_and_pure_readers_agree_on_errors(tmp_path_factory, data: bytes, block: int) -> None:
    path = tmp_path_factory.mktemp("c") / "t.mtrace"
    path.write_bytes(data)
    _same(path, block=block)


@pytest.mark.parametrize("text", [
    "+ foo 0x8\n+ 0x20 zz\n",  # a bad pointer earlier in the chunk than a bad size
    "+ foo 0x8\nhello\n",  # ... than a line that is no record
    "+ foo 0x8\n! bar 0x8\n",  # a '!' is checked on its own line, first
    "+ foo 0x8\n- 0x10\n",  # only the chunk-end check finds it
    "+ (nil) 0x8\n+ 0x10 0x8\n",  # the chunk-end check passes a (nil)
    "@ a + - 0x10\n",  # a '-' pointer in a '+' record, behind a caller
    "+ - 0x10\n",
    "xyz - 0x10\n",
    "= Start\n=\tStart\n",
    "+ 0x10 0x8\n< 0x10\n> 0x20 -0x18\n",
])
def test_errors_are_the_pure_readers(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.mtrace"
    path.write_text(text)
    _same(path)
    _same(path, block=3)


def test_a_long_log_reads_the_same_in_blocks(tmp_path: Path) -> None:
    """Blocks of 1 MiB: chunks and blocks end at other lines, a cut last line."""
    lines = "".join(f"@ /bin/x:(f+{i % 97:x})[0x{i % 89:x}] + 0x{16 * (i % 5000) + 16:x} 0x{i % 300:x}\n"
                    f"- 0x{16 * ((i * 7) % 5000) + 16:x}\r\n" for i in range(40000))
    path = tmp_path / "t.mtrace"
    path.write_text(lines + "+ 0x10", newline="")
    _same(path, batches=(1024, 0))


def _many_live_log(path: Path, live: int = 150_000, seed: int = 5) -> Path:
    """A log that keeps ``live`` pointers live at once (perl's holds 286 k), each then freed
    or moved by a realloc in a random order, with a free of a pointer never allocated and a
    double free among them: past the size from which the C loops look ahead in their tables."""
    import random

    rng = random.Random(seed)
    ptrs = rng.sample(range(0x10000, 0x10000 + 64 * live * 4, 16), live + live // 9)
    out = ["= Start"]
    out += [f"@ /bin/p:(f+{i % 7:x})[0x{i % 13:x}] + {p:#x} {16 + i % 200:#x}"
            for i, p in enumerate(ptrs[:live])]
    order = ptrs[:live]
    rng.shuffle(order)
    spare = iter(ptrs[live:])
    for i, p in enumerate(order):
        if i % 10 == 3:
            out += [f"@ /bin/p:(g+1)[0x20] < {p:#x}", f"@ /bin/p:(g+1)[0x20] > {next(spare):#x} 0x40"]
        else:
            out.append(f"@ /bin/p:(h+2)[0x30] - {p:#x}")
        if i == live // 2:
            out += [f"@ /bin/p:(h+2)[0x30] - {p:#x}", "@ /bin/p:(h+2)[0x30] - 0x8"]
    path.write_text("\n".join(out) + "\n")
    return path


def test_a_log_of_many_live_pointers_reads_the_same(tmp_path: Path) -> None:
    """The live table past the size from which the C reader looks ahead in it."""
    live = 150_000  # a table of 2**19 slots at most half full: looked ahead in from 2**17
    batches = _same(_many_live_log(tmp_path / "many.mtrace", live), batches=(1024,))[0]
    records = [r for b in batches for r in b]
    assert len(records) == 2 * live + 2  # each pointer's malloc, free or realloc; the 2 bad frees
    assert sum(r[0] == "realloc" for r in records) == live // 10


def test_pointer_tables_that_double_in_place_lose_no_pointer(tmp_path: Path) -> None:
    """The live table doubles in place, its pointers moved within it while others come and go:
    every free still finds the handle its pointer holds, the one a realloc moved there (a run
    of pointers that wrapped around the table's end, moved as the others are, would leave some
    out of reach, their frees named after the pointer). 150 logs, each with about 2,000
    pointers live at the end: the table grows from 1,024 slots to 4,096 or 8,192."""
    import random

    for seed in range(150):
        rng = random.Random(seed)
        fresh = iter(rng.sample(range(1 << 20, 1 << 36), 9_000))
        live: list[int] = []  # live pointers
        handles: dict[int, str] = {}  # each one's handle
        out, expected = [], []
        while len(out) < 8_000:
            r = rng.random()
            if live and r < 0.5:
                i = rng.randrange(len(live))
                p, live[i] = live[i], live[-1]
                live.pop()
                if r < 0.15:
                    out.append(f"- {p * 16:#x}")
                    expected.append(handles.pop(p))
                else:  # moved: the block keeps its first pointer's name
                    q = next(fresh)
                    live.append(q)
                    handles[q] = handles.pop(p)
                    out += [f"< {p * 16:#x}", f"> {q * 16:#x} 0x40"]
            else:
                p = next(fresh)
                live.append(p)
                handles[p] = f"p{p * 16:#x}"
                out.append(f"+ {p * 16:#x} 0x20")
        path = tmp_path / f"churn{seed}.mtrace"
        path.write_text("\n".join(out) + "\n")
        batches, _, error = _read(path, 1024, True)
        assert error is None
        assert [r[2] for b in batches for r in b if r[0] == "free"] == expected, seed


def test_the_c_reader_gives_what_the_rules_say(tmp_path: Path) -> None:
    """Not only the same as the twin: the records themselves (a reused live pointer, a move, a
    realloc without its '>', huge sizes, a caller with spaces)."""
    path = tmp_path / "t.mtrace"
    path.write_text("= Start\n@ /a b/c:(f+1)[0x2] + 0x10 0x10\n+ 0x10 0x" + "f" * 20 + "\n"
                    "< 0x10\n> 0x20 0x30\n- 0x10\n- 0x10\n< 0x20\n+ 0x30 0x8\n")
    batches, stats, error = _read(path, 1024, True)
    assert error is None
    assert batches == [[
        ("malloc", 2, "p0x10", 16, "/a b/c:(f+1)[0x2]"),
        ("malloc", 3, "p0x10.1", int("f" * 20, 16), None),
        ("realloc", 5, "p0x10", 0x30, None),
        ("free", 6, "p0x10.1", 0, None),
        ("free", 7, "p0x10.1", 0, None),
        ("free", 8, "p0x10", 0, None),
        ("malloc", 9, "p0x30", 8, None),
    ]]
    assert stats == [("reused_live_pointers", 1), ("unpaired_realloc_frees", 1)]


def test_the_c_reader_keeps_no_references() -> None:
    """Reading a log again and again leaves the refcounts of the shared objects and the
    process's memory as they were."""
    watched = [sys.intern("malloc"), sys.intern("free"), sys.intern("realloc"),
               sys.intern("reused_live_pointers"), sys.intern("null_results"), 0, 16]

    def loop(times: int) -> None:
        for name in ("ls.mtrace", "producer_consumer.mtrace", "bad_frees.mtrace", "awk.mtrace",
                     "python3.mtrace.gz"):  # the last one read line by line
            for _ in range(times):
                _read(FIXTURES / name, 1024, True)

    loop(2)
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loop(50)
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 16 << 10  # KiB
    if hasattr(sys, "gettotalrefcount"):  # a debug build counts every reference
        total = sys.gettotalrefcount()
        loop(5)
        gc.collect()
        assert abs(sys.gettotalrefcount() - total) < 100


@pytest.mark.parametrize("aligned", [True, False])
def test_pointers_crowding_pages_do_not_make_long_probes(aligned: bool) -> None:
    """The pointer tables' hash spreads any set of pointers: here every 16-byte granule (or
    every byte) of 64 pages live at once, then freed. A lookup steps past fewer than two slots
    on average (a hash that kept a page's pointers together made runs of thousands)."""
    parser = _mtrace_c.ChunkParser({})
    step = 16 if aligned else 1
    ptrs = [0x555555550000 + page * 0x1000 + off
            for page in range(64) for off in range(0, 4096, step)]
    for i in range(0, len(ptrs), 4096):
        records, status, _ = parser.parse([f"+ {p:#x} 0x8\n" for p in ptrs[i:i + 4096]], i)
        assert status == 0 and len(records) == len(ptrs[i:i + 4096])
    for i in range(0, len(ptrs), 4096):
        records, status, _ = parser.parse([f"- {p:#x}\n" for p in ptrs[i:i + 4096]], i)
        assert status == 0 and {r[0] for r in records} == {"free"}
    finds, steps = parser.probes
    assert finds >= 2 * len(ptrs)
    assert steps / finds < 2
