"""Workload traces: read them, whatever their format, as a stream of :class:`Op`.

Every reader (native, and later mtrace/strace/block traces) yields the same Op
records, so the simulator never cares where a trace came from. Readers register here
by format name, with an optional detector so ``read_trace(path)`` can pick the right
one from the file's first bytes::

    from mmsim.trace import read_trace
    for op in read_trace("examples/hello.trace"):
        ...

Inputs that can be read only once (``-`` for stdin, pipes, FIFOs, ``<(...)``) are copied
once to a temporary file that detection and the reader then share (source.spool); errors
still name the input as given.

A new reader module calls ``register_reader("name", reader, detector)`` at import and
is imported at the bottom of this file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .native import (
    HEADER,
    HEADER_RE,
    format_op,
    native_error,
    parse_native,
    read_native,
    write_native,
)
from .ops import (
    OP_KINDS,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
    PROT_RW,
    PROT_WRITE,
    Op,
    TraceError,
    expand,
)
from .registry import DETECTORS as _DETECTORS
from .registry import (
    PEEK_BYTES,
    PEEK_LINES,
    READERS,
    Detector,
    Reader,
    TracePeek,
    register_reader,
)
from .source import MAX_LINE_BYTES, Spool, open_trace_binary, open_trace_text, spool

__all__ = [
    "HEADER",
    "OP_KINDS",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_RW",
    "PROT_WRITE",
    "READERS",
    "Detector",
    "Op",
    "Reader",
    "TraceError",
    "TracePeek",
    "detect_format",
    "expand",
    "format_op",
    "open_trace_binary",
    "open_trace_text",
    "parse_native",
    "peek_trace",
    "read_native",
    "read_trace",
    "register_reader",
    "write_native",
]

def _known() -> str:
    return ", ".join(["auto", *READERS])


def peek_trace(path: str | os.PathLike[str]) -> tuple[TracePeek, TraceError | None]:
    """Read the start of a trace for detection.

    A read error (e.g. a truncated archive) after some data does not stop detection:
    it is returned with the peek so the caller can report it if nothing matches, and
    otherwise the reader will report it with its line number.
    """
    name = os.fspath(path)
    error: TraceError | None = None
    chunks: list[bytes] = []
    size = 0
    complete = False
    with open_trace_binary(name) as stream:
        try:
            while size < PEEK_BYTES:
                chunk = stream.read(PEEK_BYTES - size)
                if not chunk:
                    complete = True
                    break
                chunks.append(chunk)
                size += len(chunk)
            else:
                complete = not stream.peek(1)
        except TraceError as exc:
            error = exc
    head = b"".join(chunks)
    if error is not None and error.line == 0:
        error = _with_line(name, error)
    pieces = head.split(b"\n")
    if not complete or pieces[-1] == b"":
        pieces.pop()  # a cut-off last line, or the empty rest after the final newline
    pieces = pieces[:PEEK_LINES]
    try:
        # a multibyte character may be cut at the end of head: only whole lines count
        b"\n".join(pieces).decode("utf-8")
        is_text = b"\0" not in head
    except UnicodeDecodeError:
        is_text = False
    lines = [p.decode("utf-8", "replace").rstrip("\r") for p in pieces]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return TracePeek(name, head, lines, complete, is_text), error


def _with_line(name: str, error: TraceError) -> TraceError:
    """``error`` (met while peeking) with the line a text reader would name: the one being
    read when the data broke off. Found by reading the lines again up to the error (which
    the peek met within its first PEEK_BYTES and a read buffer), as the text reader does."""
    lines = 0
    try:
        with open_trace_binary(name) as stream:
            while stream.readline(MAX_LINE_BYTES + 1):
                lines += 1
    except TraceError as again:
        return TraceError(name, lines + 1, again.message)
    return error


def _detect_native(peek: TracePeek) -> bool:
    """Native if it says so in its header, or if its first lines parse as native."""
    if not peek.is_text or (not peek.lines and not peek.complete):
        return False
    if peek.lines and HEADER_RE.fullmatch(peek.lines[0].strip()):
        return True  # even a bad header: the native reader then explains what is wrong
    return native_error(peek.lines, peek.path) is None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the registered format ``path`` is in, judged from its first lines/bytes.

    A once-only input (a pipe, ``-``) is consumed: use :func:`read_trace` to read it.
    """
    name = os.fspath(path)
    copy = spool(name)
    if copy is None:
        return _detect(name)
    try:
        return _detect(copy.path)
    except TraceError as exc:
        raise _renamed(exc, copy) from None
    finally:
        copy.close()


def _renamed(exc: TraceError, copy: Spool) -> TraceError:
    """``exc`` about the spooled copy, told about the input it is a copy of."""
    return TraceError(copy.name, exc.line, exc.message.replace(copy.path, copy.name))


class _SpooledReader:
    """A reader of a spooled copy: errors name the input, ``stats`` are the reader's, and
    the copy is deleted when reading ends (or with this object)."""

    def __init__(self, reader: Iterator[Op], copy: Spool) -> None:
        self._reader = reader
        self._copy = copy
        self._ops = self._run()

    @property
    def stats(self) -> object:
        return getattr(self._reader, "stats", None)

    def _run(self) -> Iterator[Op]:
        try:
            yield from self._reader
        except TraceError as exc:
            raise _renamed(exc, self._copy) from None
        finally:
            self._copy.close()

    def __iter__(self) -> Iterator[Op]:
        return self._ops

    def __next__(self) -> Op:
        return next(self._ops)


def _detect(path: str) -> str:
    peek, error = peek_trace(path)
    for name, detector in _DETECTORS.items():
        if detector(peek):
            return name
    if error is not None:
        raise error
    if peek.is_text and "native" in READERS:
        # Most likely a native trace with a mistake: say where, as reading it would.
        native = native_error(peek.lines, peek.path)
        if native is not None:
            raise TraceError(
                peek.path, native.line, f"{native.message} (format not recognized; tried native)"
            )
    if not peek.is_text and b"\0" not in peek.head:
        # text with a bad byte (no NUL: not binary): name its line, as a reader would
        parts = peek.head.split(b"\n")
        for lineno, raw in enumerate(parts, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                if lineno < len(parts) or e.reason != "unexpected end of data":  # not a cut
                    raise TraceError(peek.path, lineno, f"invalid UTF-8 at byte {e.start + 1} "
                                     "of the line (format not recognized)") from None
    raise TraceError(peek.path, 0, f"unrecognized trace format (known: {_known()})")


def read_trace(path: str | os.PathLike[str], fmt: str = "auto", pid: int | None = None
               ) -> Iterator[Op]:
    """Stream the Ops of the trace at ``path``, in format ``fmt`` or the detected one.

    ``pid`` selects one process of a multi-process log (formats that have pids: strace).
    Format problems (unknown name, undetectable file, missing file with "auto") raise
    TraceError here; problems inside the trace raise it while iterating.
    """
    name = os.fspath(path)
    reader = READERS.get(fmt)
    if reader is None and fmt != "auto":
        raise TraceError(name, 0, f"unknown format '{fmt}' (known: {_known()})")
    if pid is not None and fmt not in ("auto", "strace"):
        raise TraceError(name, 0, f"--pid applies to strace logs, not to format '{fmt}'")
    copy = spool(name)  # a pipe or stdin: read it once, into a file detection and reader share
    if copy is None:
        return _open_reader(name, fmt, pid)
    try:
        return _SpooledReader(_open_reader(copy.path, fmt, pid), copy)
    except TraceError as exc:
        copy.close()
        raise _renamed(exc, copy) from None


def _open_reader(name: str, fmt: str, pid: int | None) -> Iterator[Op]:
    if fmt == "auto":
        fmt = _detect(name)
    reader = READERS[fmt]
    if pid is not None:
        if fmt != "strace":
            raise TraceError(name, 0, f"--pid applies to strace logs, not to format '{fmt}'")
        return reader(name, pid=pid)  # type: ignore[call-arg]
    return reader(name)


def reader_stats(ops: object) -> dict | None:
    """What a reader skipped or repaired (failed calls, unknown addresses...), if it counts."""
    stats = getattr(ops, "stats", None)
    if stats is None:
        return None
    if hasattr(stats, "as_dict"):
        return stats.as_dict()
    return dict(stats)


register_reader("native", read_native, _detect_native)
# Further readers register themselves when imported here; detection tries them in this order.
from . import blocktrace, mtrace, strace  # noqa: E402, F401, I001
