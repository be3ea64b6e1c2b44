"""The native trace format v1: read it (streaming) and write it (canonical form).

The format is the simulator's own: one operation per line, readable and writable by
hand, so tests and bug reports can be small text files. docs/trace-format.md is the
user-facing description; this module is its reference implementation.

Reading is strictly one line at a time and allocates nothing sized by the values it
reads (a ``malloc h 1T`` is just a number), so a trace of any length and any sizes
can be read in constant memory.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

from mmsim.kernel import units

from .ops import (
    MADVICE,
    OP_KINDS,
    PROT_EXEC,
    PROT_READ,
    PROT_RW,
    PROT_WRITE,
    Op,
    TraceError,
    expand,
)
from .source import open_trace_text

__all__ = [
    "HEADER",
    "HANDLE_RE",
    "HEADER_RE",
    "USAGE",
    "VERSION",
    "NativeParser",
    "format_op",
    "format_prot",
    "native_error",
    "parse_native",
    "parse_prot",
    "read_native",
    "write_native",
]

VERSION = 1
HEADER = f"# mmsim-trace v{VERSION}"

HANDLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
HEADER_RE = re.compile(r"#\s*mmsim-trace(?=\s|$)(?P<rest>.*)")
_PROT_RE = re.compile(r"(?=.)r?w?x?|[r-][w-][x-]")  # rw, rx, ... or ls-style r-x, ---
_VERSION_RE = re.compile(r"\s+v(?P<version>\S+)(?:\s.*)?")

USAGE: dict[str, str] = {
    "malloc": "malloc H SIZE",
    "calloc": "calloc H N SIZE",
    "memalign": "memalign H ALIGN SIZE",
    "realloc": "realloc H SIZE",
    "free": "free H",
    "mmap": "mmap H LEN [OPTIONS]",
    "munmap": "munmap H [OFF LEN]",
    "mprotect": "mprotect H OFF LEN PROT",
    "madvise": "madvise H OFF LEN dontneed|hugepage|nohugepage",
    "mremap": "mremap H NEWLEN",
    "touch": "touch H OFF LEN [r|w]",
    "msync": "msync H [OFF LEN]",
    "create": "create PATH SIZE",
    "read": "read PATH OFF LEN",
    "write": "write PATH OFF LEN",
    "fsync": "fsync PATH",
    "unlink": "unlink PATH",
    "host-balloon": "host-balloon SIZE",
    "sleep": "sleep DURATION",
    "cpu": "cpu N",
}
assert tuple(USAGE) == OP_KINDS


class _Bad(Exception):
    """A malformed line; NativeParser adds the file and line number."""


def _show(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


# --- field parsers ------------------------------------------------------------------


def _expect(kind: str, args: list[str], *counts: int) -> None:
    if len(args) not in counts:
        raise _Bad(f"{kind}: expected '{USAGE[kind]}'")


def _handle(kind: str, text: str) -> str:
    if HANDLE_RE.fullmatch(text) is None:
        raise _Bad(
            f"{kind}: bad handle '{_show(text)}' "
            "(letters, digits and _.:- only, not starting with a digit)"
        )
    return text


def _size(kind: str, text: str, what: str = "size") -> int:
    try:
        return units.parse_size(text, what)
    except ValueError as exc:
        raise _Bad(f"{kind}: {exc}") from None


def parse_prot(text: str) -> int:
    """``none``, ``r``, ``rw``, ``rx``, ``rwx`` (any of r, w, x in that order), or the
    ``ls``-style ``r-x``/``rw-``/``---``, to PROT_* bit flags."""
    if text == "none":
        return 0
    if not _PROT_RE.fullmatch(text):
        raise ValueError(f"bad protection '{_show(text)}' (r, rw, rx, rwx, r-x, none, ...)")
    return (
        (PROT_READ if "r" in text else 0)
        | (PROT_WRITE if "w" in text else 0)
        | (PROT_EXEC if "x" in text else 0)
    )


def format_prot(prot: int) -> str:
    """Canonical spelling of PROT_* flags: ``none``, ``r``, ``rw``, ``rwx``, ..."""
    if not 0 <= prot <= 7:
        raise ValueError(f"bad protection flags {prot} (0..7)")
    if prot == 0:
        return "none"
    return "".join(
        c for c, bit in (("r", PROT_READ), ("w", PROT_WRITE), ("x", PROT_EXEC)) if prot & bit
    )


def _prot(kind: str, text: str) -> int:
    try:
        return parse_prot(text)
    except ValueError as exc:
        raise _Bad(f"{kind}: {exc}") from None


# --- one parser per operation ------------------------------------------------------


def _p_malloc(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 2)
    return Op(kind, 0, handle=_handle(kind, a[0]), size=_size(kind, a[1]))


def _p_calloc(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 3)
    try:
        count = units.parse_int(a[1], "count")
    except ValueError as exc:
        raise _Bad(f"{kind}: {exc}") from None
    return Op(kind, 0, handle=_handle(kind, a[0]), count=count, size=_size(kind, a[2]))


def _p_memalign(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 3)
    handle = _handle(kind, a[0])
    align = _size(kind, a[1], "alignment")
    if align == 0 or align & (align - 1):
        raise _Bad(f"{kind}: alignment '{_show(a[1])}' is not a power of two")
    return Op(kind, 0, handle=handle, align=align, size=_size(kind, a[2]))


def _p_free(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 1)
    return Op(kind, 0, handle=_handle(kind, a[0]))


_MMAP_FLAGS = ("anon", "shared", "private", "populate", "hugetlb", "fixed")
_MMAP_KEYS = ("file", "off", "prot", "addr")


def _p_mmap(kind: str, a: list[str]) -> Op:
    if len(a) < 2:
        raise _Bad(f"{kind}: expected '{USAGE[kind]}'")
    op = Op(kind, 0, handle=_handle(kind, a[0]), size=_size(kind, a[1], "length"))
    if op.size == 0:
        raise _Bad(f"{kind}: length must be > 0")
    seen: set[str] = set()
    for option in a[2:]:
        key, eq, value = option.partition("=")
        if (key not in _MMAP_KEYS or not eq) and (option not in _MMAP_FLAGS):
            raise _Bad(f"{kind}: unknown option '{_show(option)}'")
        if key in seen:
            raise _Bad(f"{kind}: option '{key}' given twice")
        seen.add(key)
        if key == "file":
            if not value:
                raise _Bad(f"{kind}: file= needs a path")
            op.path = value
        elif key == "off":
            op.offset = _size(kind, value, "offset")
        elif key == "prot":
            op.prot = _prot(kind, value)
        elif key == "addr":
            op.addr = _size(kind, value, "address")
        elif key == "shared":
            op.shared = True
        elif key == "populate":
            op.populate = True
        elif key == "hugetlb":
            op.hugetlb = True
        elif key == "fixed":
            op.fixed = True
    if "shared" in seen and "private" in seen:
        raise _Bad(f"{kind}: 'shared' and 'private' are exclusive")
    if "anon" in seen and "file" in seen:
        raise _Bad(f"{kind}: 'anon' and 'file=' are exclusive")
    if "off" in seen and "file" not in seen:
        raise _Bad(f"{kind}: off= needs file=")
    if "fixed" in seen and "addr" not in seen:
        raise _Bad(f"{kind}: 'fixed' needs addr=")
    return op


def _p_range_optional(kind: str, a: list[str]) -> Op:
    """munmap/msync H [OFF LEN]: without a range the op covers the whole mapping."""
    _expect(kind, a, 1, 3)
    op = Op(kind, 0, handle=_handle(kind, a[0]))
    if len(a) == 3:
        op.offset = _size(kind, a[1], "offset")
        op.length = _size(kind, a[2], "length")
    return op


def _range(kind: str, a: list[str]) -> Op:
    return Op(
        kind,
        0,
        handle=_handle(kind, a[0]),
        offset=_size(kind, a[1], "offset"),
        length=_size(kind, a[2], "length"),
    )


def _p_mprotect(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 4)
    op = _range(kind, a)
    prot = a[3][5:] if a[3].startswith("prot=") else a[3]
    op.prot = _prot(kind, prot)
    return op


def _p_madvise(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 4)
    op = _range(kind, a)
    if a[3] not in MADVICE:
        raise _Bad(f"{kind}: unknown advice '{_show(a[3])}' (dontneed, hugepage or nohugepage)")
    op.advice = a[3]
    return op


def _p_mremap(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 2)
    return Op(kind, 0, handle=_handle(kind, a[0]), size=_size(kind, a[1], "length"))


def _p_touch(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 3, 4)
    op = _range(kind, a)
    if len(a) == 4:
        if a[3] not in ("r", "w"):
            raise _Bad(f"{kind}: access must be r or w, not '{_show(a[3])}'")
        op.write = a[3] == "w"
    return op


def _p_create(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 2)
    return Op(kind, 0, path=a[0], size=_size(kind, a[1]))


def _p_file_io(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 3)
    return Op(
        kind,
        0,
        path=a[0],
        offset=_size(kind, a[1], "offset"),
        length=_size(kind, a[2], "length"),
        write=kind == "write",
    )


def _p_path(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 1)
    return Op(kind, 0, path=a[0])


def _p_balloon(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 1)
    return Op(kind, 0, size=_size(kind, a[0]))


def _p_sleep(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 1)
    try:
        return Op(kind, 0, duration_ns=units.parse_duration(a[0]))
    except ValueError as exc:
        raise _Bad(f"{kind}: {exc}") from None


def _cpu_number(text: str) -> int:
    try:
        return units.parse_int(text, "cpu number")
    except ValueError as exc:
        raise _Bad(str(exc)) from None


def _p_cpu(kind: str, a: list[str]) -> Op:
    _expect(kind, a, 1)
    return Op(kind, 0, count=_cpu_number(a[0]))


_PARSERS: dict[str, Callable[[str, list[str]], Op]] = {
    "malloc": _p_malloc,
    "calloc": _p_calloc,
    "memalign": _p_memalign,
    "realloc": _p_malloc,
    "free": _p_free,
    "mmap": _p_mmap,
    "munmap": _p_range_optional,
    "mprotect": _p_mprotect,
    "madvise": _p_madvise,
    "mremap": _p_mremap,
    "touch": _p_touch,
    "msync": _p_range_optional,
    "create": _p_create,
    "read": _p_file_io,
    "write": _p_file_io,
    "fsync": _p_path,
    "unlink": _p_path,
    "host-balloon": _p_balloon,
    "sleep": _p_sleep,
    "cpu": _p_cpu,
}
assert tuple(_PARSERS) == OP_KINDS


#: operations that may end with ``site=CALLER``: who allocated the block (docs/trace-format.md)
SITE_KINDS = frozenset(("malloc", "calloc", "memalign", "realloc"))


# --- the line parser -----------------------------------------------------------------


class NativeParser:
    """Parses native lines one by one, keeping the state that spans lines.

    The state is the last time stamp (stamps must not go backwards). Lines must be
    given in order with their 1-based numbers; line 1 may be the version header.
    """

    def __init__(self, path: str | os.PathLike[str] = "<trace>") -> None:
        self.path = os.fspath(path)
        self._last_time: int | None = None

    def parse_line(self, text: str, lineno: int) -> Op | None:
        """The Op on this line, None for a blank or comment line; TraceError if malformed."""
        if "#" in text:
            if lineno == 1:
                self._check_header(text.strip(), lineno)
            text = text.partition("#")[0]
        tokens = text.split()
        if not tokens:
            return None
        try:
            return self._parse_tokens(tokens, lineno)
        except _Bad as exc:
            raise TraceError(self.path, lineno, str(exc)) from None

    def _check_header(self, text: str, lineno: int) -> None:
        m = HEADER_RE.fullmatch(text)
        if m is None:
            return
        v = _VERSION_RE.fullmatch(m["rest"])
        if v is None:
            raise TraceError(self.path, lineno, f"malformed trace header (expected '{HEADER}')")
        if v["version"] != str(VERSION):
            version = _show(v["version"])
            message = f"unsupported trace version 'v{version}' (this reader knows v{VERSION})"
            raise TraceError(self.path, lineno, message)

    def _parse_tokens(self, tokens: list[str], lineno: int) -> Op:
        i = 0
        time_ns: int | None = None
        cpu: int | None = None
        if tokens[0].startswith("@"):
            try:
                time_ns = units.parse_duration(tokens[0][1:], "time stamp")
            except ValueError as exc:
                raise _Bad(str(exc)) from None
            if self._last_time is not None and time_ns < self._last_time:
                raise _Bad(
                    f"time goes backwards: @{units.format_duration(time_ns)} "
                    f"after @{units.format_duration(self._last_time)}"
                )
            i = 1
        if i < len(tokens) and tokens[i].startswith("cpu="):
            cpu = _cpu_number(tokens[i][4:])
            i += 1
        if i == len(tokens):
            raise _Bad("missing operation after the prefix")
        kind = tokens[i]
        parser = _PARSERS.get(kind)
        if parser is None:
            if kind.startswith("@"):
                raise _Bad("the @TIME stamp must come first on the line")
            if kind.startswith("cpu="):
                raise _Bad("cpu=N given twice" if cpu is not None else "cpu=N must follow @TIME")
            close = difflib.get_close_matches(kind, OP_KINDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _Bad(f"unknown operation '{_show(kind)}'{hint}")
        if kind == "cpu" and cpu is not None:
            raise _Bad("'cpu N' takes no cpu= prefix")
        args = tokens[i + 1 :]
        site = None
        if kind in SITE_KINDS and args and args[-1].startswith("site="):
            site = args.pop()[5:]
            if not site:
                raise _Bad(f"{kind}: empty site= (the caller's name expected)")
        op = parser(kind, args)
        if site is not None:
            op.site = site
        op.line = lineno
        op.time_ns = time_ns
        op.cpu = cpu
        if time_ns is not None:
            self._last_time = time_ns
        return op


def parse_native(lines: Iterable[str], path: str | os.PathLike[str] = "<trace>") -> Iterator[Op]:
    """Parse native-format text lines (e.g. ``text.splitlines()``); lazily, like read_native."""
    parser = NativeParser(path)
    for lineno, line in enumerate(lines, start=1):
        op = parser.parse_line(line, lineno)
        if op is not None:
            yield op


def native_error(
    lines: Iterable[str], path: str | os.PathLike[str] = "<trace>"
) -> TraceError | None:
    """The first error in these lines as a native trace, or None if they all parse.

    Used to recognize native traces from their first lines, and to explain why a file
    was not recognized.
    """
    try:
        for _ in parse_native(lines, path):
            pass
    except TraceError as exc:
        return exc
    return None


def read_native(path: str | os.PathLike[str]) -> Iterator[Op]:
    """Stream the Ops of a native trace (plain, gzip or zstd), one line at a time.

    A generator: the file is opened at the first ``next()`` and closed when exhausted
    or when the generator is closed. Raises TraceError(path, line, ...) on the first
    malformed line, after yielding every Op before it.
    """
    text = open_trace_text(path)
    with text:
        yield from parse_native(text, text.path)


# --- writing --------------------------------------------------------------------------


def _w_handle(op: Op) -> str:
    if op.handle is None or HANDLE_RE.fullmatch(op.handle) is None:
        raise ValueError(f"cannot write {op.kind}: bad handle {op.handle!r}")
    return op.handle


def _w_path(op: Op) -> str:
    p = op.path
    if not p or "#" in p or any(c.isspace() for c in p):
        raise ValueError(f"cannot write {op.kind}: path {p!r} is empty or has whitespace or '#'")
    return p


def _w_length(op: Op) -> str:
    if op.length is None:
        raise ValueError(f"cannot write {op.kind}: length is None")
    return units.format_size_exact(op.length)


def _w_count(op: Op, n: int) -> str:
    if not 0 <= n < units.LIMIT:
        raise ValueError(f"cannot write {op.kind}: number {n} out of range")
    return str(n)


def format_op(op: Op) -> str:
    """One Op in canonical native syntax (no newline); ValueError if not expressible.

    Canonical means: defaults omitted (mmap ``anon``/``prot=rw``/``private``, touch
    ``w``), sizes with the largest exact binary suffix, addresses in hex, mmap options
    in the documented order. ``op.line`` is not written.
    """
    z = units.format_size_exact
    kind = op.kind
    parts: list[str] = []
    if op.time_ns is not None:
        parts.append("@" + units.format_duration(op.time_ns))
    if op.cpu is not None:
        if kind == "cpu":
            raise ValueError("cannot write cpu: a 'cpu N' op takes no cpu= prefix")
        parts.append("cpu=" + _w_count(op, op.cpu))
    parts.append(kind)
    if kind in ("malloc", "realloc"):
        parts += [_w_handle(op), z(op.size)]
    elif kind == "calloc":
        parts += [_w_handle(op), _w_count(op, op.count), z(op.size)]
    elif kind == "memalign":
        if op.align <= 0 or op.align & (op.align - 1):
            raise ValueError(f"cannot write memalign: alignment {op.align} is not a power of two")
        parts += [_w_handle(op), z(op.align), z(op.size)]
    elif kind == "free":
        parts.append(_w_handle(op))
    elif kind == "mmap":
        if op.size <= 0:
            raise ValueError("cannot write mmap: length must be > 0")
        parts += [_w_handle(op), z(op.size)]
        if op.path is not None:
            parts.append("file=" + _w_path(op))
            if op.offset:
                parts.append("off=" + z(op.offset))
        elif op.offset:
            raise ValueError("cannot write mmap: an offset needs a file")
        if op.prot != PROT_RW:
            parts.append("prot=" + format_prot(op.prot))
        if op.shared:
            parts.append("shared")
        if op.populate:
            parts.append("populate")
        if op.hugetlb:
            parts.append("hugetlb")
        if op.addr is not None:
            parts.append(f"addr={op.addr:#x}")
            if op.fixed:
                parts.append("fixed")
        elif op.fixed:
            raise ValueError("cannot write mmap: 'fixed' needs an address")
    elif kind in ("munmap", "msync"):
        parts.append(_w_handle(op))
        if op.length is not None:
            parts += [z(op.offset), z(op.length)]
        elif op.offset:
            raise ValueError(f"cannot write {kind}: an offset needs a length")
    elif kind == "mprotect":
        parts += [_w_handle(op), z(op.offset), _w_length(op), format_prot(op.prot)]
    elif kind == "madvise":
        if op.advice not in MADVICE:
            raise ValueError(f"cannot write madvise: bad advice {op.advice!r}")
        parts += [_w_handle(op), z(op.offset), _w_length(op), op.advice]
    elif kind == "mremap":
        parts += [_w_handle(op), z(op.size)]
    elif kind == "touch":
        parts += [_w_handle(op), z(op.offset), _w_length(op)]
        if not op.write:
            parts.append("r")
    elif kind == "create":
        parts += [_w_path(op), z(op.size)]
    elif kind in ("read", "write"):
        parts += [_w_path(op), z(op.offset), _w_length(op)]
    elif kind in ("fsync", "unlink"):
        parts.append(_w_path(op))
    elif kind == "host-balloon":
        parts.append(z(op.size))
    elif kind == "sleep":
        parts.append(units.format_duration(op.duration_ns))
    elif kind == "cpu":
        parts.append(_w_count(op, op.count))
    else:
        raise ValueError(f"cannot write unknown operation {kind!r}")
    if op.site is not None and kind in SITE_KINDS:
        if not op.site or any(c.isspace() or c == "#" for c in op.site):
            raise ValueError(f"cannot write {kind}: site {op.site!r} is empty or holds a "
                             "space or '#'")
        parts.append("site=" + op.site)
    return " ".join(parts)


def write_native(ops: Iterable[Op], stream: TextIO, header: bool = True) -> int:
    """Write Ops as a native trace (with the version header unless told not to).

    Streams: each line is written as its Op arrives; a batch (MallocCalls, BlockReads) is written
    as the operations it stands for. Returns the number of Ops written.
    """
    if header:
        stream.write(HEADER + "\n")
    n = 0
    for op in expand(ops):
        stream.write(format_op(op) + "\n")
        n += 1
    return n
