"""A progress bar on stderr when it is a terminal, and nothing otherwise (logs stay clean)."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm


class Progress:
    """Counts operations with a rate; silent unless stderr is a TTY."""

    def __init__(self, desc: str, name: str, total: int | None = None, unit: str = "op") -> None:
        self._bar: tqdm | None = None
        if sys.stderr.isatty():
            self._bar = tqdm(desc=f"{desc} {name}", total=total, unit=unit, unit_scale=True,
                             file=sys.stderr, leave=False, mininterval=0.25)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.close()
