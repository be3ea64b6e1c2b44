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
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter, deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from .ops import Op, TraceError, quick_op
from .source import compression_of, open_trace_binary

if TYPE_CHECKING:
    from . import TracePeek

__all__ = ["MtraceReader", "detect_mtrace", "read_mtrace"]

_PTR = r"(?:0x[0-9a-fA-F]+|\(nil\))"
_SIZE = r"(?:0x[0-9a-fA-F]+|0)"
RECORD_RE = re.compile(rf"(?:@ .*\] )?(?:[-<] {_PTR}|[+>!] {_PTR} {_SIZE})\s*")
_MARK_RE = re.compile(r"= (?:Start|End)\s*")
NIL = "(nil)"
_SIZE_CACHE = 1 << 12  # distinct sizes remembered (memory stays bounded)
_DEAD_HALF = 1 << 15  # freed pointers remembered: the last 32768 to 65536 frees


def _size(cache: dict[str, int], text: str) -> int:
    """int(text, 16) (ValueError if it is not hex), remembered for the next time."""
    size = int(text, 16)
    if len(cache) < _SIZE_CACHE:
        cache[text] = size
    return size


class MtraceReader:
    """Streams the Ops of one mtrace log; :attr:`stats` counts what was skipped or repaired."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.stats: Counter[str] = Counter()

    def __iter__(self) -> Iterator[Op]:
        binary = open_trace_binary(self.path)  # raises TraceError for a missing/bad file
        with open(self.path, "rb") as raw:
            head = raw.read(8)
        if compression_of(head) is None:
            # plain text: the C-level reader is ~20 % faster than the guarded binary stream
            binary.close()
            text: TextIO = open(self.path, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        else:
            text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape")
        with text:
            yield from self._ops(text)

    def _ops(self, text: TextIO) -> Iterator[Op]:  # noqa: C901 - one hot loop, kept flat
        live: dict[str, str] = {}  # pointer -> handle of its oldest live block
        later: dict[str, deque[str]] = {}  # pointer -> handles of its younger live blocks
        moved: set[str] = set()  # live handles whose block a realloc moved off their pointer
        sizes: dict[str, int] = {}  # hex size -> int: sizes repeat, int() is the slower path
        dead: dict[str, str] = {}  # pointer -> handle free() last released there (newest half)
        dead_old: dict[str, str] = {}
        pending: str | None = None  # handle of a realloc whose '>' line is next
        pending_line = 0
        serial = 0
        n = 0
        stats = self.stats
        try:
            for line in text:
                n += 1
                t = line.split()
                nt = len(t)
                try:
                    if nt > 2:
                        k = t[-3]
                        if k == "+":
                            if pending is not None:
                                yield self._lost_realloc(pending, pending_line)
                                pending = None
                            p = t[-2]
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
                            yield quick_op("malloc", n, h, size)
                            continue
                        if k == ">":
                            p = t[-2]
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
                            yield quick_op("realloc", n, h, size)
                            continue
                        if k == "!":
                            if pending is not None:
                                yield self._lost_realloc(pending, pending_line)
                                pending = None
                            _size(sizes, t[-1])
                            stats["failed_reallocs"] += 1
                            continue
                    if nt > 1:
                        k = t[-2]
                        if k == "-" or k == "<":
                            if pending is not None:
                                yield self._lost_realloc(pending, pending_line)
                                pending = None
                            p = t[-1]
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
                                    yield quick_op("free", n, h)
                                    continue
                            elif p == NIL:
                                stats["null_frees"] += 1
                                continue
                            else:
                                # not live: name the block free() last released at p (so the
                                # replay reports a double free), or a handle never allocated
                                h = dead.get(p) or dead_old.get(p)
                                if h is None or h in moved:
                                    h = "p" + p
                                    if h in moved:
                                        serial += 1
                                        h = f"p{p}.{serial}"
                                if k == "-":
                                    yield quick_op("free", n, h)
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
                    raise TraceError(self.path, n, f"bad size '{t[-1]}' (hex expected)") from None
                raise TraceError(self.path, n, f"not an mtrace record: {line.strip()[:80]!r}")
        except TraceError as e:
            if e.line:
                raise
            # the file itself failed (e.g. corrupt gzip): say how far reading got
            raise TraceError(self.path, n + 1, e.message) from None
        if pending is not None:
            stats["unfinished_reallocs"] += 1

    def _lost_realloc(self, handle: str, line: int) -> Op:
        """A '<' whose '>' never came: the old block is gone, so replay it as a free."""
        self.stats["unpaired_realloc_frees"] += 1
        return Op("free", line, handle)


def read_mtrace(path: str | os.PathLike[str]) -> Iterator[Op]:
    """Stream the Ops of the glibc mtrace log at ``path`` (plain, gzip or zstd)."""
    return iter(MtraceReader(path))


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
    from mmsim.trace import register_reader  # the package imports this module at its end

    register_reader("mtrace", read_mtrace, detect_mtrace)


_register()
