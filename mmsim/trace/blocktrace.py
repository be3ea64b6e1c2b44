"""Block traces (cache-simulator formats) replayed as reads of one file.

Three formats, each readable plain, gzip'ed or zstd'ed (mmsim.trace.source):

- ``lis``: the ARC paper's traces, ``start n ignore reqno`` per line, standing for the n
  requests start, start+1, ..., start+n-1 of 512-byte blocks.
- ``oracleGeneral``: libCacheSim's binary records, ``struct {uint32 timestamp; uint64 obj_id;
  uint32 obj_size; int64 next_access_vtime}`` little-endian, 24 bytes each; one request per
  record (sizes and times are ignored, as with libCacheSim's ignore_obj_size).
- ``ids``: plain text, one object id per line: a decimal or 0x-hex number, or any other token,
  which is hashed to a number (blake2b, so runs are reproducible); blank lines and lines
  starting with '#' are skipped.

The stream starts with ``create BLOCK_PATH`` whose ``align`` field carries the trace's block
size (the file system's record size for it unless ``block_size`` overrides it), then the
requests: with ``batch=0`` one ``read`` of one block per request, at offset id * block; through
``read_trace`` (the fast path) :class:`BlockReads` operations of kind ``blockread``, each
standing for up to DEFAULT_BATCH such reads (``expand()`` gives them). Errors name the file and
the line (the record number for the binary format).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import struct
from collections.abc import Callable, Iterator, Sequence
from operator import add
from typing import Any

from .ops import OP_KINDS, Op, TraceError
from .registry import register_reader
from .source import open_trace_binary

__all__ = [
    "BLOCK_FORMATS",
    "BLOCK_PATH",
    "BLOCK_READ",
    "LIS_BLOCK",
    "ORACLE_BLOCK",
    "BlockReads",
    "id_of",
    "read_ids",
    "read_lis",
    "read_oracle",
]

#: the formats read here: a stream of one-block reads of one file (what `mmsim mrc`'s one-pass
#: methods need)
BLOCK_FORMATS = ("lis", "oracleGeneral", "ids")
BLOCK_PATH = "/blocktrace"
BLOCK_READ = "blockread"
LIS_BLOCK = 512
ORACLE_BLOCK = 4096
IDS_BLOCK = 4096
ID_LIMIT = 1 << 64
#: blocks one .lis line may ask for (8 GiB of 512-byte blocks): real traces ask for a few; a
#: line asking for 10^19 would take centuries to replay, so it is refused with this limit named
MAX_LIS_RUN = 1 << 24
ORACLE_RECORD = struct.Struct("<IQIq")
#: the same record as a numpy dtype: a chunk's ids in one C loop (4x struct.iter_unpack)
_ORACLE_DTYPE = [("time", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next", "<i8")]
_CHUNK = 24 << 14  # bytes per read: whole binary records
#: requests per BlockReads when read through read_trace (0: one ``read`` Op per request).
#: A block trace is millions of tiny requests; an operation each costs ~1.5 us in the reader
#: and the kernel, more than the cache itself (docs/arc.md has the profile).
DEFAULT_BATCH = 256
#: most requests in one Batch a reader yields: a ``.lis`` line stands for any number n of
#: requests, and host memory must not grow with n (a line of n = 5,000,000 is 5M requests, cut
#: into batches of this size as they are replayed)
MAX_BATCH_REQUESTS = 1 << 16

#: (line of each request, block id of each request); the lines may be a range
Batch = tuple[Sequence[int], list[int]]


class BlockReads(Op):
    """Many one-block reads of the block-trace file in one operation (the fast path).

    ``kind`` is ``blockread``, ``line`` the first request's line, ``length`` the block size;
    ``blocks`` and ``lines`` give every request. :meth:`expand` gives the same requests as
    plain ``read`` operations, which is what it means.
    """

    __slots__ = ("blocks", "lines")

    def __init__(self, lines: Sequence[int], blocks: list[int], block: int) -> None:
        super().__init__(BLOCK_READ, lines[0], path=BLOCK_PATH, length=block, count=len(blocks))
        self.lines = lines
        self.blocks = blocks

    def expand(self) -> Iterator[Op]:
        block = self.length or 0
        for line, b in zip(self.lines, self.blocks, strict=True):
            yield Op("read", line, None, 0, 0, 0, b * block, block, BLOCK_PATH)


def _device(block: int) -> Op:
    """The file standing for the traced device: every 64-bit block number is inside it."""
    return Op("create", 0, path=BLOCK_PATH, size=ID_LIMIT * block, align=block)


def _ops(batches: Iterator[Batch], block: int, batch: int) -> Iterator[Op]:
    """The device's creation, then one read per request, or BlockReads of ``batch`` requests."""
    yield _device(block)
    if batch <= 0:
        for lines, ids in batches:
            for line, b in zip(lines, ids):
                yield Op("read", line, None, 0, 0, 0, b * block, block, BLOCK_PATH)
        return
    for lines, ids in batches:
        for i in range(0, len(ids), batch):
            yield BlockReads(lines[i:i + batch], ids[i:i + batch], block)


def _chunks(name: str, stream) -> Iterator[tuple[int, bytes]]:  # type: ignore[no-untyped-def]
    """(number of the first line, whole lines) of a text stream, in large chunks for speed."""
    rest = b""
    lineno = 1
    with stream:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except TraceError as exc:
                raise TraceError(name, lineno + rest.count(b"\n"), exc.message) from None
            if not chunk:
                if rest:
                    yield lineno, rest + b"\n"  # a last line without a newline
                return
            chunk = rest + chunk
            cut = chunk.rfind(b"\n") + 1
            rest = chunk[cut:]
            if cut:
                yield lineno, chunk[:cut]
                lineno += chunk.count(b"\n", 0, cut)


def read_lis(path: str | os.PathLike[str], batch: int = 0) -> Iterator[Op]:
    """The requests of an ARC-paper ``.lis`` trace (``batch`` > 0: as BlockReads)."""
    name = os.fspath(path)
    return _ops(_lis(name, open_trace_binary(name, lines=True)), LIS_BLOCK, batch)


def _decimals(a: Any, lo: Any, hi: Any) -> Any:
    """The numbers written in decimal digits at a[lo[i]:hi[i]] (numpy arrays; every field
    one or more digits), as uint64; None if one has more than 19 digits (10**19 > 2**64:
    Python's int() reads and checks those). One pass per digit position, over all fields."""
    import numpy as np

    width = hi - lo
    most = int(width.max())
    if most > 19:
        return None
    value = np.zeros(len(lo), np.uint64)
    scale = np.uint64(1)
    for k in range(most):
        digit = a[np.maximum(hi - 1 - k, lo)].astype(np.uint64) - np.uint64(48)
        value += np.where(k < width, digit * scale, np.uint64(0))
        scale *= np.uint64(10)
    return value


def _lis_chunk(first: int, text: bytes) -> tuple[Sequence[int], list[int]] | None:
    """The requests of a chunk of whole .lis lines, parsed with numpy (10x faster than line by
    line, which was most of a replay's reader time); None when the chunk needs the line-by-line
    reader: any line that is not four fields split by single spaces with the first two plain
    numbers of at most 19 digits in range (comments, blank lines, tabs, signs, CRs), or more
    requests than one batch holds (that reader cuts them and names the line)."""
    import numpy as np  # here: `mmsim run` of other traces does not pay its import

    a = np.frombuffer(text, np.uint8)
    seps = np.flatnonzero((a == 32) | ((a >= 9) & (a <= 13)))  # every whitespace byte
    n = len(seps) >> 2
    if not n or len(seps) != 4 * n or seps[0] == 0:
        return None
    kinds = a[seps].reshape(n, 4)
    if (kinds[:, :3] != 32).any() or (kinds[:, 3] != 10).any() or (np.diff(seps) == 1).any():
        return None  # not exactly "f f f f\n" on every line (no empty field)
    line_start = np.empty(n, np.intp)
    line_start[0] = 0
    line_start[1:] = seps[3::4][:-1] + 1
    sep1 = seps[0::4]
    end2 = seps[1::4]
    nondigit = np.flatnonzero((a < 48) | (a > 57))  # the separators among them
    k = np.searchsorted(nondigit, line_start)  # the first at or after each line's start
    if (nondigit[k] != sep1).any() or (nondigit[k + 1] != end2).any():
        return None  # the first two fields are not all digits
    first_field = _decimals(a, line_start, sep1)
    counts = _decimals(a, sep1 + 1, end2)
    if first_field is None or counts is None:
        return None
    if int(first_field.max()) + int(counts.max()) > ID_LIMIT:
        return None
    starts = first_field.tolist()
    if (counts == 1).all() and n <= MAX_BATCH_REQUESTS:  # a request a line (OLTP)
        return range(first, first + n), starts
    runs = counts.tolist()
    if sum(runs) > MAX_BATCH_REQUESTS:
        return None
    lines = list(itertools.chain.from_iterable(
        map(itertools.repeat, range(first, first + n), runs)))
    ids = list(itertools.chain.from_iterable(map(range, starts, map(add, starts, runs))))
    return lines, ids


def _lis(name: str, stream) -> Iterator[Batch]:  # type: ignore[no-untyped-def]
    for first, text in _chunks(name, stream):
        fast = _lis_chunk(first, text)
        if fast is not None:
            if fast[1]:
                yield fast
            continue
        lines: list[int] = []
        ids: list[int] = []
        for lineno, line in enumerate(text.split(b"\n")[:-1], first):
            try:
                a, n, _, _ = line.split()
                start = int(a)
                count = int(n)
                if start < 0 or count < 0 or start + count > ID_LIMIT:
                    raise ValueError
            except ValueError:
                stripped = line.strip()
                if not stripped or stripped.startswith(b"#"):
                    continue
                if ids:  # the requests before the bad line are replayed first
                    yield lines, ids
                raise TraceError(
                    name, lineno, "expected 'start_block n_blocks ignore request_number'"
                    f" (non-negative integers), got {_show(line)}") from None
            if count > MAX_LIS_RUN:
                if ids:
                    yield lines, ids
                raise TraceError(name, lineno, f"a request of {count} blocks (at most "
                                 f"{MAX_LIS_RUN}, 8 GiB: a replay would not end)")
            if count == 1:
                lines.append(lineno)
                ids.append(start)
                if len(ids) >= MAX_BATCH_REQUESTS:
                    yield lines, ids
                    lines, ids = [], []
                continue
            end = start + count
            while start < end:  # a long run: full batches as they fill, memory stays flat
                take = min(end - start, MAX_BATCH_REQUESTS - len(ids))
                lines.extend(itertools.repeat(lineno, take))
                ids.extend(range(start, start + take))
                start += take
                if len(ids) >= MAX_BATCH_REQUESTS:
                    yield lines, ids
                    lines, ids = [], []
        if ids:
            yield lines, ids


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def read_oracle(path: str | os.PathLike[str], batch: int = 0) -> Iterator[Op]:
    """The requests of a libCacheSim oracleGeneral trace (24-byte binary records)."""
    name = os.fspath(path)
    return _ops(_oracle(name, open_trace_binary(name)), ORACLE_BLOCK, batch)


def _oracle(name: str, stream) -> Iterator[Batch]:  # type: ignore[no-untyped-def]
    import numpy as np  # here: `mmsim run` of other traces does not pay its import

    rec = 0
    size = ORACLE_RECORD.size
    rest = b""
    with stream:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except TraceError as exc:
                raise TraceError(name, rec + 1, exc.message) from None
            if not chunk:
                break
            if rest:
                chunk = rest + chunk
            whole = len(chunk) - len(chunk) % size
            rest = chunk[whole:]
            ids = np.frombuffer(chunk, _ORACLE_DTYPE, whole // size)["obj_id"].tolist()
            if ids:
                yield range(rec + 1, rec + 1 + len(ids)), ids
                rec += len(ids)
    if rest:
        raise TraceError(name, rec + 1, f"truncated record: {len(rest)} of {size} bytes "
                         "(an oracleGeneral trace is a whole number of 24-byte records)")


_NUMBER = re.compile(rb"(?:0[xX][0-9a-fA-F]+|[0-9]+)")


def id_of(token: bytes) -> int:
    """The number of an object id: itself if numeric (below 2**64), else a stable hash."""
    if _NUMBER.fullmatch(token):
        n = int(token, 0) if token[:2] in (b"0x", b"0X") else int(token)
        if n < ID_LIMIT:
            return n
    return int.from_bytes(hashlib.blake2b(token, digest_size=8).digest(), "little")


def read_ids(path: str | os.PathLike[str], batch: int = 0) -> Iterator[Op]:
    """The requests of a plain text trace with one object id per line."""
    name = os.fspath(path)
    return _ops(_ids(name, open_trace_binary(name, lines=True)), IDS_BLOCK, batch)


def _ids_chunk(first: int, text: bytes) -> tuple[range, list[int]] | None:
    """The ids of a chunk of whole lines that are all plain numbers of at most 19 digits,
    parsed with numpy; None if any line is something else (the line-by-line reader)."""
    import numpy as np

    a = np.frombuffer(text, np.uint8)
    ends = np.flatnonzero(a == 10)
    n = len(ends)
    if not n or ends[0] == 0 or (np.diff(ends) == 1).any() or (
            np.count_nonzero((a >= 48) & (a <= 57)) != len(a) - n):
        return None  # a blank line, or a byte that is neither a digit nor a newline
    starts = np.empty(n, np.intp)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    ids = _decimals(a, starts, ends)
    return None if ids is None else (range(first, first + n), ids.tolist())


def _ids(name: str, stream) -> Iterator[Batch]:  # type: ignore[no-untyped-def]
    for first, text in _chunks(name, stream):
        fast = _ids_chunk(first, text)
        if fast is not None:
            yield fast
            continue
        lines: list[int] = []
        ids: list[int] = []
        for lineno, line in enumerate(text.split(b"\n")[:-1], first):
            token = line.strip()
            if token.isdigit():
                n = int(token)
                if n >= ID_LIMIT:
                    n = id_of(token)
            else:
                if not token or token.startswith(b"#"):
                    continue
                if len(token.split()) != 1:
                    if ids:
                        yield lines, ids
                    raise TraceError(name, lineno, f"expected one object id, got {_show(line)}")
                n = id_of(token)
            lines.append(lineno)
            ids.append(n)
        if ids:
            yield lines, ids


# -- detection --------------------------------------------------------------------------------
_LIS_LINE = re.compile(r"\s*\d+\s+\d+\s+-?\d+\s+-?\d+\s*")


def _data_lines(peek) -> list[str]:  # type: ignore[no-untyped-def]
    return [x for x in peek.lines if x.strip() and not x.lstrip().startswith("#")]


def _detect_lis(peek) -> bool:  # type: ignore[no-untyped-def]
    lines = _data_lines(peek) if peek.is_text else []
    return bool(lines) and all(_LIS_LINE.fullmatch(x) for x in lines)


def _detect_ids(peek) -> bool:  # type: ignore[no-untyped-def]
    """One token per line: numbers, hex strings, names. Never a native trace, whose every
    operation has arguments; a line that is a bare operation name (``free``) is more likely a
    broken native trace, so it is not taken for an id (``--format ids`` reads it)."""
    lines = _data_lines(peek) if peek.is_text else []
    if not lines:
        return False
    for x in lines:
        token = x.split()
        if len(token) != 1 or token[0] in OP_KINDS:
            return False
    return True


def _detect_oracle(peek) -> bool:  # type: ignore[no-untyped-def]
    head = peek.head
    size = ORACLE_RECORD.size
    if peek.is_text or len(head) < size or (peek.complete and len(head) % size):
        return False
    whole = len(head) - len(head) % size
    last_ts = 0
    for i, (ts, _obj, _sz, nxt) in enumerate(ORACLE_RECORD.iter_unpack(head[:whole])):
        # the next access of request i comes later (or never: -1); time does not go back
        if not (nxt == -1 or nxt > i) or ts < last_ts:
            return False
        last_ts = ts
    return True


def _batched(reader: Callable[[str, int], Iterator[Op]]) -> Callable[[str], Iterator[Op]]:
    def read(path: str) -> Iterator[Op]:
        return reader(path, DEFAULT_BATCH)

    read.__doc__ = reader.__doc__
    return read


register_reader("lis", _batched(read_lis), _detect_lis)
register_reader("oracleGeneral", _batched(read_oracle), _detect_oracle)
register_reader("ids", _batched(read_ids), _detect_ids)
