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
size (the file system's record size for it unless ``block_size`` overrides it), then one
``read`` of one block per request, at offset id * block. Errors name the file and the line (the
record number for the binary format).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Iterator

from . import register_reader
from .ops import Op, TraceError
from .source import open_trace_binary

__all__ = ["BLOCK_PATH", "LIS_BLOCK", "ORACLE_BLOCK", "read_ids", "read_lis", "read_oracle"]

BLOCK_PATH = "/blocktrace"
LIS_BLOCK = 512
ORACLE_BLOCK = 4096
IDS_BLOCK = 4096
ID_LIMIT = 1 << 64
ORACLE_RECORD = struct.Struct("<IQIq")
_CHUNK = 24 << 14  # bytes per read: whole binary records


def _device(path: str, block: int) -> Op:
    """The file standing for the traced device: every 64-bit block number is inside it."""
    return Op("create", 0, path=BLOCK_PATH, size=ID_LIMIT * block, align=block)


def _read(line: int, block_id: int, block: int) -> Op:
    return Op("read", line, None, 0, 0, 0, block_id * block, block, BLOCK_PATH)


def read_lis(path: str | os.PathLike[str]) -> Iterator[Op]:
    """The requests of an ARC-paper ``.lis`` trace."""
    name = os.fspath(path)
    stream = open_trace_binary(name)
    return _lis(name, stream)


def _lines(name: str, stream) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    """The stream's lines (without the newline), read in large chunks for speed."""
    rest = b""
    lineno = 0
    with stream:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except TraceError as exc:
                raise TraceError(name, lineno + rest.count(b"\n") + 1, exc.message) from None
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            lineno += len(lines)
            yield from lines
    if rest:
        yield rest


def _lis(name: str, stream) -> Iterator[Op]:  # type: ignore[no-untyped-def]
    block = LIS_BLOCK
    yield _device(name, block)
    lineno = 0
    rest = b""
    with stream:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except TraceError as exc:
                raise TraceError(name, lineno + rest.count(b"\n") + 1, exc.message) from None
            if not chunk:
                if not rest:
                    return
                lines = [rest]  # a last line without a newline
                rest = b""
            else:
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
            for line in lines:
                lineno += 1
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
                    raise TraceError(
                        name, lineno, "expected 'start_block n_blocks ignore request_number'"
                        f" (non-negative integers), got {_show(line)}") from None
                if count == 1:
                    yield Op("read", lineno, None, 0, 0, 0, start * block, block, BLOCK_PATH)
                else:
                    for b in range(start, start + count):
                        yield Op("read", lineno, None, 0, 0, 0, b * block, block, BLOCK_PATH)


def _show(line: bytes) -> str:
    text = line.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def read_oracle(path: str | os.PathLike[str]) -> Iterator[Op]:
    """The requests of a libCacheSim oracleGeneral trace (24-byte binary records)."""
    name = os.fspath(path)
    stream = open_trace_binary(name)
    return _oracle(name, stream)


def _oracle(name: str, stream) -> Iterator[Op]:  # type: ignore[no-untyped-def]
    block = ORACLE_BLOCK
    yield _device(name, block)
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
            for _ts, obj, _sz, _next in ORACLE_RECORD.iter_unpack(memoryview(chunk)[:whole]):
                rec += 1
                yield Op("read", rec, None, 0, 0, 0, obj * block, block, BLOCK_PATH)
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


def read_ids(path: str | os.PathLike[str]) -> Iterator[Op]:
    """The requests of a plain text trace with one object id per line."""
    name = os.fspath(path)
    stream = open_trace_binary(name)
    return _ids(name, stream)


def _ids(name: str, stream) -> Iterator[Op]:  # type: ignore[no-untyped-def]
    block = IDS_BLOCK
    yield _device(name, block)
    lineno = 0
    for line in _lines(name, stream):
        lineno += 1
        token = line.strip()
        if token.isdigit():
            n = int(token)
            if n >= ID_LIMIT:
                n = id_of(token)
        else:
            if not token or token.startswith(b"#"):
                continue
            if len(token.split()) != 1:
                raise TraceError(name, lineno, f"expected one object id, got {_show(line)}")
            n = id_of(token)
        yield Op("read", lineno, None, 0, 0, 0, n * block, block, BLOCK_PATH)


# -- detection --------------------------------------------------------------------------------
_LIS_LINE = re.compile(r"\s*\d+\s+\d+\s+-?\d+\s+-?\d+\s*")
_ID_LINE = re.compile(r"\s*(?:0[xX][0-9a-fA-F]+|\d+)\s*")


def _data_lines(peek) -> list[str]:  # type: ignore[no-untyped-def]
    return [x for x in peek.lines if x.strip() and not x.lstrip().startswith("#")]


def _detect_lis(peek) -> bool:  # type: ignore[no-untyped-def]
    lines = _data_lines(peek) if peek.is_text else []
    return bool(lines) and all(_LIS_LINE.fullmatch(x) for x in lines)


def _detect_ids(peek) -> bool:  # type: ignore[no-untyped-def]
    lines = _data_lines(peek) if peek.is_text else []
    return bool(lines) and all(_ID_LINE.fullmatch(x) for x in lines)


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


register_reader("lis", read_lis, _detect_lis)
register_reader("oracleGeneral", read_oracle, _detect_oracle)
register_reader("ids", read_ids, _detect_ids)
