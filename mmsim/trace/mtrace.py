"""Replay of glibc malloc traces (``MALLOC_TRACE`` logs written by mtrace(), docs/mtrace.md).

Each record may start with the caller, ``@ file:(sym+off)[addr] ``, ``@ file:[addr] ``,
``@ [addr] `` or nothing; the record itself is always the last two or three fields:

* ``+ PTR SIZE`` malloc, calloc or memalign (SIZE in hex); ``- PTR`` free;
* ``< OLD`` then ``> NEW SIZE`` a realloc; ``! OLD SIZE`` a failed realloc (OLD stays);
* ``= Start`` / ``= End`` around the trace. NULL is ``(nil)``.

Pointers are the application's, so each allocation gets a handle: ``p`` and the pointer
(``p0x55d0c3a2b2a0``: a valid native-trace handle, naming the application's pointer). A
``+ PTR`` while PTR is still live is another thread's malloc that got PTR between a free of PTR
and the logging of that free (glibc logs a free after freeing): it gets the handle ``pPTR.N``,
and the pending ``- PTR`` lines free PTR's blocks oldest first. A realloc keeps its block's
handle at the new pointer; a later block at the old pointer then gets a ``pPTR.N`` handle too.

Replay choices (counted in :attr:`MtraceReader.stats`): a NULL result (``+ (nil)``) and a
failed realloc (``!``) are skipped, and so is ``- (nil)``; a ``<`` not followed by its ``>`` is
replayed as a free. A ``-`` or ``<`` of a pointer that is not live names the block free() last
released there, so the replay reports a ``double_free`` or ``realloc_freed``; if free() never
released one (the block predates the trace, or a realloc gave the pointer up), ``-`` is an
``invalid_free`` and ``<`` a realloc(NULL). Freed pointers are remembered for the last 32768 to
65536 frees, as the kernel remembers freed handles.

A size must be ``0`` or ``0x`` and hex digits, a pointer ``0x`` and hex digits or ``(nil)``, and
anything before the record a caller prefix (``@ ...``); otherwise the line is a ``file:line``
error. The hot loop checks a size the first time it sees it (the first 4096 sizes are
remembered), the pointer of each ``+`` and ``>`` (a ``-`` or ``<`` of a live pointer names one
checked then), and a record with more fields than its own for the ``@``.

The hot loop runs in C (``_mtrace_c.ChunkParser``, which also finds a plain log's lines in blocks
of text) where it is built; the pure-Python loop is its twin, with the same records, stats and
errors (tests/test_mtrace_c.py), and runs where it is not, or with MMSIM_PURE_PYTHON=1.
"""

from __future__ import annotations

import io
import mmap
import os
import re
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, TextIO

from mmsim.kernel import MALLOC_RECORDS_API  # the kernel's packed batches of records, if built

from .ops import Op, TraceError, quick_op
from .source import MAX_LINE_BYTES, compression_of, open_trace_binary

try:
    if os.environ.get("MMSIM_PURE_PYTHON"):
        raise ImportError
    import mmsim.trace._mtrace_c as _mtrace_c  # not "from mmsim.trace import": no import cycle
except ImportError:  # not compiled on this machine, or turned off: the pure-Python twin
    _mtrace_c = None

if TYPE_CHECKING:
    from .registry import TracePeek

__all__ = ["DEFAULT_BATCH", "MALLOC_CALLS", "MallocCalls", "MtraceReader", "detect_mtrace", "read_mtrace"]

_PTR = r"(?:0x[0-9a-fA-F]+|\(nil\))"
_SIZE = r"(?:0x[0-9a-fA-F]+|0)"
RECORD_RE = re.compile(rf"(?:@ .*\] )?(?:[-<] {_PTR}|[+>!] {_PTR} {_SIZE})\s*")
_MARK_RE = re.compile(r"= (?:Start|End)\s*")
NIL = "(nil)"
_SIZE_CACHE = 1 << 12  # distinct sizes remembered (memory stays bounded)
_SIZE_TOKEN = re.compile(r"0x[0-9a-fA-F]+|0").fullmatch  # int(_, 16) also takes -0x8, 1_0
_PTR_TOKEN = re.compile(_PTR).fullmatch
_HEX_BYTES = b"0123456789abcdefABCDEF"


def _pointers_ok(ptrs: list[str]) -> bool:
    """Each of ``ptrs`` is 0x and hex digits (a quick test of a chunk's pointers, a few C calls
    over one string; a False may still be a (nil), which the slow path accepts)."""
    s = " " + " ".join(ptrs)
    n = len(ptrs)
    return (s.count(" 0x") == n and s.count("x") == n and "x " not in s and s[-1] != "x"
            and not s.encode("ascii", "replace").translate(None, _HEX_BYTES + b" x"))
#: one call: (kind, line, handle, size, site); site is the caller's text or None
Record = tuple[str, int, str, int, "str | None"]


def _caller(line: str, t: list[str], nt: int) -> str | None:
    """The caller of a record with other than one field before it: the text between ``@ ``
    and the record, as the log writes it (a file name may hold spaces); None if none."""
    if nt <= 3 or t[0] != "@":
        return None
    body = line.rstrip("\r\n")
    end = len(body.rstrip())
    for field in reversed(t[-3:]):  # the record's three fields, from the end
        end = body.rindex(field, 0, end)
    return body[body.index("@") + 1:end].strip() or None


#: characters read at once by _records_blocks. Each block is three allocations (the bytes read,
#: the str decoded, the str joined to the last block's rest); at 1 MiB glibc mapped them afresh
#: and gave them back often enough for a third of a replay's page faults (perl's log: 4.3 k of
#: 20 k); at 256 k they stay in its heap.
_BLOCK = 1 << 18


def _split_lines(text: str) -> list[str]:
    """text's lines as reading it line by line gives them (newlines already translated)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


_DEAD_HALF = 1 << 15  # freed pointers remembered: the last 32768 to 65536 frees
#: records per MallocCalls when read through read_trace (lines per internal chunk otherwise)
DEFAULT_BATCH = 1024
MALLOC_CALLS = "mallocs"


def _size(cache: dict[str, int], text: str) -> int:
    """int(text, 16) (ValueError if it is not 0 or 0x and hex digits), remembered for the next
    time."""
    if not _SIZE_TOKEN(text):
        raise ValueError(text)
    size = int(text, 16)
    if len(cache) < _SIZE_CACHE:
        cache[text] = size
    return size


class MallocCalls(Op):
    """Many malloc/free/realloc records in one operation (the fast path of a replay).

    ``kind`` is ``mallocs``, ``line`` the first record's line; ``records`` holds each call as
    ``(kind, line, handle, size, site)``: ``site`` is the caller as the log writes it (what
    stands between ``@ `` and the record), or None. From the C reader they are packed in the
    kernel's MallocRecords (a read-only sequence of those tuples, which the kernel's C loop reads
    with no tuple made), else a list. :meth:`expand` gives the same calls as plain Ops, which is
    what it means: the kernel replays it record by record, with the same results.
    """

    __slots__ = ("records",)

    def __init__(self, records: Sequence[Record]) -> None:
        super().__init__(MALLOC_CALLS, records[0][1], count=len(records))
        self.records = records

    def expand(self) -> Iterator[Op]:
        for kind, line, handle, size, site in self.records:
            yield quick_op(kind, line, handle, size, site)


def _check_line_lengths(path: str) -> None:
    """TraceError if a line of the plain file is much longer than MAX_LINE_BYTES (beyond
    1.5 times it): every window of MAX_LINE_BYTES starting at a multiple of half of it must hold
    a newline, a few calls per MiB, so an endless line is refused before it is read whole."""
    step = MAX_LINE_BYTES // 2
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size <= MAX_LINE_BYTES:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            for pos in range(0, size - MAX_LINE_BYTES, step):
                if m.find(b"\n", pos, pos + MAX_LINE_BYTES) < 0:
                    line = 1 + sum(m[i:min(i + (16 << 20), pos)].count(b"\n")
                                   for i in range(0, pos, 16 << 20))
                    raise TraceError(path, line, f"line longer than {MAX_LINE_BYTES} bytes")


class MtraceReader:
    """Streams the Ops of one mtrace log; :attr:`stats` counts what was skipped or repaired.

    ``batch`` > 0 gives :class:`MallocCalls` of up to ``batch`` records instead of one Op a
    record: an Op costs more than the malloc it stands for (docs/mtrace.md has the figures).
    """

    def __init__(self, path: str | os.PathLike[str], batch: int = 0) -> None:
        if batch < 0 or batch & (batch - 1):
            raise ValueError(f"batch must be 0 or a power of two, not {batch}")
        self.path = os.fspath(path)
        self.batch = batch
        self.stats: Counter[str] = Counter()

    def __iter__(self) -> Iterator[Op]:
        binary = open_trace_binary(self.path, lines=True)  # TraceError: missing, bad, bomb
        with open(self.path, "rb") as raw:
            head = raw.read(8)
        if compression_of(head) is None:
            # plain text: the C-level reader is ~20 % faster than the guarded binary stream
            binary.close()
            _check_line_lengths(self.path)
            text: TextIO = open(self.path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
            plain = True
        else:
            text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape")
            plain = False
        with text:
            if self.batch > 0:
                for records in self._records(text, self.batch, plain):  # at most batch records each
                    yield MallocCalls(records)
            else:
                for records in self._records(text, DEFAULT_BATCH, plain):
                    for kind, line, handle, nbytes, site in records:
                        yield quick_op(kind, line, handle, nbytes, site)

    def _records(self, text: TextIO, every: int, plain: bool = False) -> Iterator[Sequence[Record]]:
        """The records of the log, a list every ``every`` lines (a power of two): the C loop
        of _mtrace_c where it is built, else its pure-Python twin (the same records and stats).
        A ``plain`` file is read in blocks (a decompressing stream line by line, so that a
        corrupt one fails after the same batches)."""
        if _mtrace_c is None:
            return self._records_py(text, every)
        if plain:
            return self._records_blocks(text, every)
        return self._records_c(text, every)

    def _records_blocks(self, text: TextIO, every: int) -> Iterator[Sequence[Record]]:
        """_records_c with the file read in blocks of text, whose lines the C loop finds
        itself: no str a line (newlines are translated as when reading lines)."""
        parser = _mtrace_c.ChunkParser(self.stats, MALLOC_RECORDS_API)
        buf, pos, end_of_file = "", 0, False
        out: Sequence[Record] = []
        base = 0  # lines before the chunk
        while True:
            if not end_of_file and not parser.ready(buf, pos, every):
                more = text.read(_BLOCK)
                end_of_file = not more
                buf = buf[pos:] + more
                pos = 0
                continue
            if pos >= len(buf):
                break
            if out:
                yield out
            out, status, i, end, lines = parser.parse_text(buf, pos, base, every)
            if status:
                self._c_error(_split_lines(buf[pos:end])[:lines], base, status, i)
            base += lines
            pos = end
        if parser.pending:
            self.stats["unfinished_reallocs"] += 1
        if out:
            yield out

    def _records_c(self, text: TextIO, every: int) -> Iterator[Sequence[Record]]:
        """_records_py's loop with each chunk's lines read by _mtrace_c.ChunkParser, which
        stops at a line in error and says what is wrong; the messages are made here, by the
        same methods, so they and their precedence are the pure loop's."""
        parse = _mtrace_c.ChunkParser(self.stats, MALLOC_RECORDS_API).parse
        out: Sequence[Record] = []
        base = 0  # lines before the chunk
        try:
            for chunk in iter(lambda: list(islice(text, every)), []):
                if out:
                    yield out
                self._cut_last_line(chunk, base)
                out, status, i = parse(chunk, base)
                if status:
                    self._c_error(chunk, base, status, i)
                base += len(chunk)
        except TraceError as e:
            self._file_failed(e)
        if parse.__self__.pending:
            self.stats["unfinished_reallocs"] += 1
        if out:
            yield out

    def _c_error(self, chunk: list[str], base: int, status: int, i: int) -> None:
        """Raise the TraceError of what ChunkParser.parse found at chunk[i] (status 2: the
        record fails _check_record; 3: a bad size; 4: not a record), or check the whole chunk's
        pointers (status 1: one of them is not 0x and hex, maybe a (nil))."""
        n = base + i + 1
        if status == 1:
            self._check_lines(chunk, base, base + len(chunk))
            return
        t = chunk[i].split()
        if status == 2:
            self._check_record(t, n)
            raise AssertionError(f"line {n}: _mtrace_c and _check_record disagree")
        self._check_lines(chunk, base, n)  # an earlier bad pointer first
        if status == 3:
            raise TraceError(self.path, n, f"bad size '{t[-1]}' (hex expected)")
        raise TraceError(self.path, n, f"not an mtrace record: {chunk[i].strip()[:80]!r}")

    def _cut_last_line(self, chunk: list[str], base: int) -> None:
        """Drop the log's last line if it has no newline: glibc ends every record with one, so
        the program died while writing it; replay up to it, and say so."""
        if chunk[-1][-1:] != "\n" and chunk[-1].strip():
            self.stats["truncated_at_line"] = base + len(chunk)
            chunk.pop()

    def _file_failed(self, e: TraceError) -> None:
        """Raise e again if it names a line, else (the file itself failed, e.g. corrupt gzip)
        say how far reading got (a chunk's lines are read at once, so count them again up to
        the failure)."""
        if e.line:
            raise e
        raise TraceError(self.path, self._lines_readable() + 1, e.message) from None

    def _records_py(self, text: TextIO, every: int) -> Iterator[Sequence[Record]]:  # noqa: C901 - one hot loop, kept flat
        """The pure-Python twin of _records_c (the reference for what it must give)."""
        live: dict[str, str] = {}  # pointer -> handle of its oldest live block
        later: dict[str, deque[str]] = {}  # pointer -> handles of its younger live blocks
        moved: set[str] = set()  # live handles whose block a realloc moved off their pointer
        sizes: dict[str, int] = {}  # hex size -> int: sizes repeat, int() is the slower path
        check = self._check_record
        new_ptrs: list[str] = []  # the pointers of the chunk's '+' and '>' records
        new_ptr = new_ptrs.append
        dead: dict[str, str] = {}  # pointer -> handle free() last released there (newest half)
        dead_old: dict[str, str] = {}
        pending: str | None = None  # handle of a realloc whose '>' line is next
        pending_line = 0
        serial = 0
        n = 0  # the line number
        stats = self.stats
        out: list[Record] = []
        emit = out.append
        chunks = iter(lambda: list(islice(text, every)), [])
        base = 0  # lines before the chunk
        try:
            for chunk in chunks:
                if out:
                    yield out
                    out = []
                    emit = out.append
                self._cut_last_line(chunk, base)
                for n, line in enumerate(chunk, base + 1):  # noqa: B007 - n is the line read
                    t = line.split()
                    nt = len(t)
                    try:
                        if nt > 2:
                            k = t[-3]
                            if k == "+":
                                if pending is not None:
                                    emit(self._lost_realloc(pending, pending_line))
                                    pending = None
                                p = t[-2]
                                new_ptr(p)  # checked with the chunk's others, at its end
                                if nt > 3 and t[0] != "@":
                                    check(t, n)
                                size = sizes.get(t[-1])
                                if size is None:
                                    size = _size(sizes, t[-1])
                                h = "p" + p
                                if live.setdefault(p, h) is not h:
                                    if p == NIL:
                                        stats["null_results"] += 1
                                        continue
                                    serial += 1
                                    h = f"p{p}.{serial}"
                                    later.setdefault(p, deque()).append(h)
                                    stats["reused_live_pointers"] += 1
                                elif moved and h in moved:
                                    serial += 1
                                    h = f"p{p}.{serial}"
                                    live[p] = h
                                elif p == NIL:
                                    del live[p]
                                    stats["null_results"] += 1
                                    continue
                                emit(("malloc", n, h, size, t[1] if nt == 5 and t[0] == "@"
                                       else _caller(line, t, nt)))
                                continue
                            if k == ">":
                                p = t[-2]
                                new_ptr(p)  # checked with the chunk's others, at its end
                                if nt > 3 and t[0] != "@":
                                    check(t, n)
                                size = sizes.get(t[-1])
                                if size is None:
                                    size = _size(sizes, t[-1])
                                h = pending
                                pending = None
                                if h is None:  # a '>' without its '<': a realloc(NULL)
                                    stats["unpaired_realloc_results"] += 1
                                    h = "p" + p
                                    if p in live or h in moved:
                                        serial += 1
                                        h = f"p{p}.{serial}"
                                if p in live:
                                    later.setdefault(p, deque()).append(h)
                                    stats["reused_live_pointers"] += 1
                                else:
                                    live[p] = h
                                if h != "p" + p:
                                    moved.add(h)
                                elif moved:
                                    moved.discard(h)
                                emit(("realloc", n, h, size, t[1] if nt == 5 and t[0] == "@"
                                       else _caller(line, t, nt)))
                                continue
                            if k == "!":
                                check(t, n)
                                if pending is not None:
                                    emit(self._lost_realloc(pending, pending_line))
                                    pending = None
                                _size(sizes, t[-1])
                                stats["failed_reallocs"] += 1
                                continue
                        if nt > 1:
                            k = t[-2]
                            if k == "-" or k == "<":
                                if pending is not None:
                                    emit(self._lost_realloc(pending, pending_line))
                                    pending = None
                                p = t[-1]
                                if nt > 2 and t[0] != "@":
                                    check(t, n)
                                h = live.pop(p, None)
                                if h is not None:
                                    if later:
                                        younger = later.get(p)
                                        if younger:
                                            live[p] = younger.popleft()
                                            if not younger:
                                                del later[p]
                                    if moved:
                                        moved.discard(h)
                                    if k == "-":
                                        dead[p] = h
                                        if len(dead) >= _DEAD_HALF:
                                            dead_old = dead
                                            dead = {}
                                        emit(("free", n, h, 0, None))
                                        continue
                                elif p == NIL:
                                    stats["null_frees"] += 1
                                    continue
                                else:
                                    check(t, n)
                                    # not live: name the block free() last released at p (so the
                                    # replay reports a double free), or a handle never allocated
                                    h = dead.get(p) or dead_old.get(p)
                                    if h is None or h in moved:
                                        h = "p" + p
                                        if h in moved:
                                            serial += 1
                                            h = f"p{p}.{serial}"
                                    if k == "-":
                                        emit(("free", n, h, 0, None))
                                        continue
                                    dead.pop(p, None)
                                    dead_old.pop(p, None)
                                pending = h
                                pending_line = n
                                continue
                            if k == "=" and _MARK_RE.fullmatch(line.strip()):
                                continue
                        if not t:
                            continue
                    except ValueError:
                        self._check_lines(chunk, base, n)  # an earlier bad pointer first
                        raise TraceError(self.path, n, f"bad size '{t[-1]}' (hex expected)") from None
                    self._check_lines(chunk, base, n)
                    raise TraceError(self.path, n, f"not an mtrace record: {line.strip()[:80]!r}")
                if new_ptrs:
                    if not _pointers_ok(new_ptrs):
                        self._check_lines(chunk, base, n)
                    new_ptrs.clear()
                base += len(chunk)
        except TraceError as e:
            self._file_failed(e)
        if pending is not None:
            stats["unfinished_reallocs"] += 1
        if out:
            yield out

    def _check_record(self, t: list[str], n: int) -> None:
        """The record's pointer is hex (or NIL) and what precedes the record is a caller prefix
        (its size is checked as it is converted)."""
        k = t[-2] if t[-2] in ("-", "<") else t[-3]
        fields = 2 if k in ("-", "<") else 3
        p = t[1 - fields]
        if not _PTR_TOKEN(p):
            raise TraceError(self.path, n, f"bad pointer '{p[:40]}' (hex or (nil) expected)")
        if len(t) > fields and t[0] != "@":
            raise TraceError(self.path, n, f"not an mtrace record (junk before it, not a "
                                           f"caller '@ ...'): {' '.join(t)[:80]!r}")

    def _lines_readable(self) -> int:
        """How many lines of the file read before it fails (the error path only)."""
        n = 0
        try:
            with io.TextIOWrapper(open_trace_binary(self.path), encoding="utf-8",
                                  errors="surrogateescape") as text:
                for n, _ in enumerate(text, 1):  # noqa: B007
                    pass
        except TraceError:
            pass
        return n

    def _check_lines(self, chunk: list[str], base: int, last: int) -> None:
        """Raise for the first record of ``chunk`` (its first line is ``base + 1``) up to line
        ``last`` whose pointer is bad (the slow path: the hot loop checks them in bulk)."""
        for n, line in enumerate(chunk[:last - base], base + 1):
            t = line.split()
            if len(t) > 2 and t[-3] in ("+", ">", "!"):
                self._check_record(t, n)

    def _lost_realloc(self, handle: str, line: int) -> Record:
        """A '<' whose '>' never came: the old block is gone, so replay it as a free."""
        self.stats["unpaired_realloc_frees"] += 1
        return ("free", line, handle, 0, None)


def read_mtrace(path: str | os.PathLike[str], batch: int = DEFAULT_BATCH) -> MtraceReader:
    """The Ops of the glibc mtrace log at ``path`` (plain, gzip or zstd), as
    :class:`MallocCalls` of ``batch`` records (0: one Op a record); ``.stats`` on the result."""
    return MtraceReader(path, batch)


def detect_mtrace(peek: TracePeek) -> bool:
    """An mtrace log starts with ``= Start``, or (cut) with mtrace records only."""
    if not peek.is_text:
        return False
    lines = [s.strip() for s in peek.lines if s.strip()]
    if not lines:
        return False
    if lines[0] == "= Start":
        return True
    return all(RECORD_RE.fullmatch(s) or _MARK_RE.fullmatch(s) for s in lines[:32])


def _register() -> None:
    from .registry import register_reader

    register_reader("mtrace", read_mtrace, detect_mtrace)


_register()
