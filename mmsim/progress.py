"""A progress bar on stderr when it is a terminal, and nothing otherwise (logs stay clean)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

#: how often the file position is looked up, at most (it costs a few system calls)
_POSITION_EVERY_S = 0.25


def file_position(path: str) -> Callable[[], int | None]:
    """How far this process has read ``path`` (bytes of the file, compressed or not).

    Found by the file's identity among our open descriptors (``/dev/fd``), so any trace reader
    gets an estimate without exposing its position; None where that is not possible.
    """
    try:
        st = os.stat(path)
    except OSError:
        return lambda: None
    ident = (st.st_dev, st.st_ino)
    fd_cache: list[int] = []

    def same(fd: int) -> bool:
        try:
            s = os.fstat(fd)
        except OSError:
            return False
        return (s.st_dev, s.st_ino) == ident

    def position() -> int | None:
        if not (fd_cache and same(fd_cache[0])):
            fd_cache.clear()
            try:
                fds = sorted(int(n) for n in os.listdir("/dev/fd") if n.isdigit())
            except OSError:
                return None
            fd_cache.extend(fd for fd in fds if same(fd))
            if not fd_cache:
                return None
        try:
            return os.lseek(fd_cache[0], 0, os.SEEK_CUR)
        except OSError:
            return None

    return position


class Progress:
    """Counts operations with a rate; silent unless stderr is a TTY.

    With ``position`` (bytes done, see :func:`file_position`) and ``total`` bytes, the bar
    follows the input file instead, so it can show an estimate of the time left; the
    operations counted still show, with their rate, after the bar.
    """

    def __init__(self, desc: str, name: str, total: int | None = None, unit: str = "op",
                 position: Callable[[], int | None] | None = None,
                 stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self._position = position if total else None
        self._ops = 0
        self._next_look = 0.0
        if stream.isatty():
            bytes_bar = self._position is not None
            self._bar = tqdm(desc=f"{desc} {name}", total=total, unit="B" if bytes_bar else unit,
                             unit_scale=True, unit_divisor=1024 if bytes_bar else 1000,
                             file=stream, leave=False, mininterval=0.25)

    @classmethod
    def for_file(cls, desc: str, path: str) -> Progress:
        """A bar over the bytes of the file at ``path`` (plain count if its size is unknown)."""
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        return cls(desc, path, total=size or None, position=file_position(path))

    def update(self, n: int) -> None:
        bar = self._bar
        if bar is None:
            return
        if self._position is None:
            bar.update(n)
            return
        self._ops += n
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + _POSITION_EVERY_S
        pos = self._position()
        if pos is not None and pos > bar.n:
            bar.update(min(pos, bar.total or pos) - bar.n)
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix_str(f"{tqdm.format_sizeof(self._ops)} ops, "
                            f"{tqdm.format_sizeof(self._ops / elapsed)} ops/s", refresh=False)

    def __str__(self) -> str:
        """The bar as it reads now ('' when silent)."""
        return str(self._bar) if self._bar is not None else ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
