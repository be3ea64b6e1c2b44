"""What a file mapping needs from a filesystem, kept to one question so mm stays independent.

Without a page cache, OSv maps a file by reading private copies of its pages into anonymous
memory (reference §6, "File mmap"): the only fact mm needs is the file's size, to refuse a
missing file and to raise SIGBUS past the end. The ZFS/ARC subsystem, when present, answers it;
otherwise the kernel keeps a table of the files a trace created.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["FileBacking", "FileTable"]


class FileBacking(Protocol):
    """A source of file sizes for file mappings."""

    def size(self, path: str) -> int | None:
        """Size in bytes of ``path``, or None if there is no such file (ENOENT)."""
        ...


class FileTable:
    """The simplest backing: files are names with sizes (``create PATH SIZE``/``unlink PATH``)."""

    def __init__(self) -> None:
        self._sizes: dict[str, int] = {}

    def size(self, path: str) -> int | None:
        return self._sizes.get(path)

    def create(self, path: str, size: int) -> None:
        """Create or truncate/extend ``path`` to ``size`` bytes."""
        if size < 0:
            raise ValueError("negative file size")
        self._sizes[path] = size

    def unlink(self, path: str) -> bool:
        """Remove ``path``; False if it did not exist. Mappings of it keep working."""
        return self._sizes.pop(path, None) is not None

    def __len__(self) -> int:
        return len(self._sizes)
