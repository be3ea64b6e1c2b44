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
        self._done = 0
        self._next_look = 0.0
        self._stream = stream
        if stream.isatty():
            bytes_bar = self._position is not None
            # counts stay integers ("3/4 points", not "3.00/4.00"); bytes get their units
            self._bar = tqdm(desc=f"{desc} {name}", total=total, unit="B" if bytes_bar else unit,
                             unit_scale=bytes_bar, unit_divisor=1024,
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

    def advance_to(self, done: int) -> None:
        """The count is ``done`` now (a kernel's events): what a caller that knows the total
        so far, not the step, reports."""
        if done > self._done:
            self.update(done - self._done)
            self._done = done
        elif self._bar is not None and self._position is None:
            now = time.monotonic()  # nothing counted: keep the elapsed time moving
            if now >= self._next_look:
                self._next_look = now + _POSITION_EVERY_S
                self._bar.refresh()

    def grow_to(self, total: int) -> None:
        """Raise the total to ``total`` if the estimate fell short (a bisection that needs
        more trials than planned); never lowers it."""
        bar = self._bar
        if bar is not None and bar.total is not None and bar.total < total:
            bar.total = total
            bar.refresh()

    def set_postfix(self, text: str) -> None:
        """A note after the bar (shown at the next refresh)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def write(self, text: str) -> None:
        """A line of output above the bar (the bar is redrawn after it), or plain when silent."""
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            self._stream.write(text + "\n")

    def __str__(self) -> str:
        """The bar as it reads now ('' when silent)."""
        return str(self._bar) if self._bar is not None else ""

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
