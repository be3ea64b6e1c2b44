"""The trace formats mmsim reads, by name: readers and their format detectors register here.

A module of its own, so that reader modules register without importing the package that
imports them (mmsim/trace/__init__.py imports every reader at its end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .ops import Op

__all__ = ["PEEK_BYTES", "PEEK_LINES", "READERS", "Detector", "Reader", "TracePeek",
           "register_reader"]

Reader = Callable[[str], Iterator[Op]]


@dataclass(frozen=True, slots=True)
class TracePeek:
    """The start of a (decompressed) trace, shown to format detectors.

    One peek serves every detector, so the file is opened and decompressed once.
    """

    path: str
    head: bytes  # first PEEK_BYTES bytes after decompression
    lines: list[str]  # complete lines of head (at most PEEK_LINES), newline stripped
    complete: bool  # head is the whole file
    is_text: bool  # head is UTF-8 without NUL bytes


Detector = Callable[[TracePeek], bool]

PEEK_BYTES = 64 << 10
PEEK_LINES = 64

READERS: dict[str, Reader] = {}
"""Readers by format name, in registration order (which is also detection order)."""
DETECTORS: dict[str, Detector] = {}


def register_reader(
    name: str, reader: Reader, detector: Detector | None = None, *, replace: bool = False
) -> None:
    """Make ``reader`` available as format ``name``; ``detector`` lets "auto" choose it.

    Formats without a detector can only be read by naming them. Registering a name
    twice is an error unless ``replace`` (it is almost always two modules colliding).
    """
    if name == "auto":
        raise ValueError("'auto' is reserved for format detection")
    if name in READERS and not replace:
        raise ValueError(f"trace format '{name}' is already registered")
    READERS[name] = reader
    DETECTORS.pop(name, None)
    if detector is not None:
        DETECTORS[name] = detector
