"""Open trace files, compressed or not, as constant-memory streams.

Traces of real workloads are large and usually compressed, often without a telling
extension (``trace.log`` piped through ``zstd``), so compression is detected from the
magic bytes. Everything streams: memory use does not grow with the file's length, and
a decompression bomb cannot make us allocate more than a few MiB at a time.

Pipes, FIFOs, process substitution (``<(zstd -dc t.zst)``) and ``-`` (stdin) can be read
only once, but detection and reading both open the trace: :func:`spool` copies such an input
once to a temporary file (bounded by disk, not memory), which is then detected and read in
its place (``read_trace`` does this, and names the input as given in its errors).

Every failure - missing file, truncated or corrupt archive, invalid UTF-8, absurdly
long line - becomes a :class:`TraceError` naming the file (and the line reached, for
text), never a raw ``EOFError``/``zlib.error`` traceback.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
import sys
import tempfile
import weakref
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from .ops import TraceError

__all__ = [
    "MAX_LINE_BYTES",
    "Spool",
    "TraceText",
    "compression_of",
    "needs_spool",
    "open_trace_binary",
    "open_trace_text",
    "spool",
]

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"  # then a level digit and the block magic below
BZIP2_BLOCK = b"\x31\x41\x59\x26\x53\x59"

MAX_LINE_BYTES = 1 << 20
"""Longest line accepted; a longer one means the file is not a text trace."""

# Compressed bytes fed to zstd per call. zstd can expand ~32000:1 (runs of one byte),
# so this bounds the output of one call to ~32 MiB even for a hostile file.
_ZSTD_FEED = 1024


def compression_of(head: bytes) -> str | None:
    """'gzip', 'zstd', or None (plain) for a file starting with ``head``."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return None


def _os_error_message(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not a trace file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ENOTDIR:
        return "no such file (a parent is not a directory)"
    return f"cannot read: {exc.strerror or exc}".lower()


class _ZstdRaw(io.RawIOBase):
    """zstd decompression that notices truncation.

    ``zstandard``'s stream_reader silently ends at a cut-off frame, which would make a
    truncated trace look complete; this feeds a decompressobj frame by frame instead
    and raises if the input ends inside a frame.
    """

    def __init__(self, source: BinaryIO) -> None:
        import zstandard  # declared dependency, imported lazily: only zstd traces need it

        self._source = source
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False  # fed bytes of a frame that has not ended yet
        self._out = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._obj.decompress(data))
            self._in_frame = True
            if not self._obj.eof:
                break
            data = self._obj.unused_data  # next frame (zstd files may hold several)
            self._obj = self._dctx.decompressobj()
            self._in_frame = False
        return b"".join(out)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._out:
            if self._done:
                return 0
            data = self._source.read(_ZSTD_FEED)
            if not data:
                if self._in_frame:
                    raise EOFError("zstd data ends inside a frame")
                self._done = True
                return 0
            self._out = memoryview(self._feed(data))
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


class _Guarded(io.RawIOBase):
    """Turns the many ways decompression or reading fails into one TraceError."""

    def __init__(self, inner: BinaryIO, path: str, compression: str | None, file: BinaryIO,
                 lines: bool = False) -> None:
        self._inner = inner
        #: a text format's stream: a line longer than MAX_LINE_BYTES is an error as soon as
        #: it is read (a decompression bomb without a newline costs bounded memory and time)
        self._lines = lines
        self._since_newline = 0
        self._lineno = 1
        self._file = file  # the underlying file, which a GzipFile would not close
        self._path = path
        self._what = f"truncated or corrupt {compression} data" if compression else None
        self._errors: tuple[type[BaseException], ...] = (EOFError, zlib.error, gzip.BadGzipFile)
        if compression == "zstd":
            import zstandard

            self._errors += (zstandard.ZstdError,)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
            if self._lines and n:
                self._count_lines(bytes(buffer[:n]))
            return n  # type: ignore[no-any-return]
        except self._errors:
            raise TraceError(self._path, 0, self._what or "corrupt data") from None
        except OSError as exc:
            if self._what and not isinstance(exc, (PermissionError, IsADirectoryError)):
                # gzip raises plain OSError("Not a gzipped file") and the like
                raise TraceError(self._path, 0, self._what) from None
            raise TraceError(self._path, 0, _os_error_message(exc)) from None

    def _count_lines(self, data: bytes) -> None:
        last = data.rfind(b"\n")
        if last < 0:
            self._since_newline += len(data)
        else:
            self._lineno += data.count(b"\n")
            self._since_newline = len(data) - last - 1
        if self._since_newline > MAX_LINE_BYTES:
            raise TraceError(self._path, self._lineno,
                             f"line longer than {MAX_LINE_BYTES} bytes")

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                self._file.close()
        super().close()


def _is_bzip2(head: bytes) -> bool:
    return head[:3] == BZIP2_MAGIC and head[3:4].isdigit() and head[4:10] == BZIP2_BLOCK


def _open_raw(path: str) -> tuple[BinaryIO, str | None, BinaryIO]:
    try:
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        file = open(path, "rb")  # closed by the stream it ends up in
    except OSError as exc:
        raise TraceError(path, 0, _os_error_message(exc)) from None
    try:
        head = file.peek(10)[:10]
    except OSError as exc:
        file.close()
        raise TraceError(path, 0, _os_error_message(exc)) from None
    compression = compression_of(head)
    if compression is None and (head.startswith(XZ_MAGIC) or _is_bzip2(head)):
        file.close()
        kind = "xz" if head.startswith(XZ_MAGIC) else "bzip2"
        raise TraceError(path, 0, f"{kind}-compressed traces are not supported (use gzip or zstd)")
    inner: BinaryIO
    if compression == "gzip":
        inner = gzip.GzipFile(fileobj=file, mode="rb")  # type: ignore[assignment]
    elif compression == "zstd":
        try:
            inner = _ZstdRaw(file)  # type: ignore[assignment]
        except ImportError:
            file.close()
            raise TraceError(
                path, 0, "zstd-compressed trace needs the 'zstandard' package"
            ) from None
    else:
        inner = file
    return inner, compression, file


def open_trace_binary(path: str | os.PathLike[str], lines: bool = False) -> BinaryIO:
    """Open ``path`` as a buffered binary stream, transparently decompressing gzip/zstd.

    Read errors raise TraceError with line 0; with ``lines`` (a text format read in binary
    chunks) a line longer than :data:`MAX_LINE_BYTES` is a TraceError naming its line.
    """
    name = os.fspath(path)
    inner, compression, file = _open_raw(name)
    return io.BufferedReader(  # type: ignore[return-value]
        _Guarded(inner, name, compression, file, lines))


class TraceText(io.TextIOBase):
    """Line-oriented UTF-8 text of a trace; errors name the line they happened on.

    Decodes line by line (not in chunks) so an encoding error points at its real line;
    ``lineno`` is the number of lines returned so far.
    """

    def __init__(self, binary: BinaryIO, path: str) -> None:
        super().__init__()
        self._binary = binary
        self.path = path
        self.lineno = 0

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def readable(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        """Next whole line (``size`` is ignored) with '\\r\\n' made '\\n'; '' at the end."""
        try:
            raw = self._binary.readline(MAX_LINE_BYTES + 1)
        except TraceError as exc:
            raise TraceError(self.path, self.lineno + 1, exc.message) from None
        if not raw:
            return ""
        self.lineno += 1
        if len(raw) > MAX_LINE_BYTES:
            raise TraceError(self.path, self.lineno, f"line longer than {MAX_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceError(
                self.path, self.lineno, f"invalid UTF-8 at byte {exc.start + 1} of the line"
            ) from None
        if self.lineno == 1 and text.startswith("\ufeff"):
            text = text[1:]  # byte-order mark some editors write
        if text.endswith("\r\n"):
            text = text[:-2] + "\n"
        return text

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __iter__(self) -> Iterator[str]:
        return self

    def read(self, size: int | None = -1) -> str:
        """The rest of the text; only whole reads are supported (traces are read by line)."""
        if size is not None and size >= 0:
            raise io.UnsupportedOperation("read(n) is not supported; iterate over lines")
        return "".join(self)

    def close(self) -> None:
        if not self.closed:
            self._binary.close()
        super().close()


def open_trace_text(path: str | os.PathLike[str]) -> TraceText:
    """Open ``path`` as UTF-8 text lines, transparently decompressing gzip/zstd.

    Raises TraceError(path, 0, ...) now if the file cannot be opened; decompression
    and decoding errors raise TraceError(path, line_reached, ...) while iterating.
    """
    name = os.fspath(path)
    return TraceText(open_trace_binary(name), name)


def needs_spool(path: str | os.PathLike[str]) -> bool:
    """True for inputs that can be read only once: ``-`` (stdin), pipes, FIFOs, sockets and
    character devices. Regular files, directories, block devices and missing paths are
    opened as they are (the open reports what is wrong with them)."""
    name = os.fspath(path)
    if name == "-":
        return True
    try:
        mode = os.stat(name).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISBLK(mode))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Spool:
    """A once-only input copied to a temporary regular file, as it is (still compressed).

    ``path`` is the copy, which readers open (as often as they need) in the input's place;
    ``name`` is the input as the user gave it. The copy is deleted by :meth:`close`, when
    the Spool is garbage-collected, or at exit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        source: BinaryIO
        try:
            if name == "-":
                buffer = getattr(sys.stdin, "buffer", None)
                source = buffer if buffer is not None else os.fdopen(0, "rb", closefd=False)
            else:
                source = open(name, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise TraceError(name, 0, _os_error_message(exc)) from None
        fd, self.path = tempfile.mkstemp(prefix="mmsim-spool-")
        self._finalizer = weakref.finalize(self, _unlink, self.path)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_lines(source, out, name)
        except TraceError:
            self.close()
            raise
        except OSError as exc:
            self.close()
            raise TraceError(name, 0, "cannot copy the input to a temporary file: "
                             + str(exc.strerror or exc).lower()) from None
        finally:
            if name != "-":
                source.close()

    def close(self) -> None:
        """Delete the copy (idempotent)."""
        self._finalizer()


def _copy_lines(source: BinaryIO, out: BinaryIO, name: str) -> None:
    """Copy a once-only input; uncompressed, it must show a line within MAX_LINE_BYTES (an
    endless stream of one line, such as /dev/zero, would be copied without end)."""
    chunk = source.read(1 << 20)
    plain = chunk and compression_of(chunk[:10]) is None
    seen = 0
    while chunk:
        out.write(chunk)
        if plain and seen >= 0:
            if b"\n" in chunk:
                seen = -1  # a line ends: a text stream, copied as it comes
            else:
                seen += len(chunk)
                if seen > MAX_LINE_BYTES:
                    raise TraceError(name, 1, f"line longer than {MAX_LINE_BYTES} bytes (no "
                                     "newline: not a text trace, and a binary one must be a file)")
        chunk = source.read(1 << 20)


def spool(path: str | os.PathLike[str]) -> Spool | None:
    """A :class:`Spool` of ``path`` if it can be read only once (:func:`needs_spool`), else None."""
    name = os.fspath(path)
    return Spool(name) if needs_spool(name) else None
