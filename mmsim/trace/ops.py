"""The operation record every trace reader yields, and the error they all raise.

One flat record for all operation kinds (rather than a class per kind) keeps readers,
writers and the simulator's dispatch simple and cheap: a trace can hold hundreds of
millions of operations, and ``slots`` keeps each record small.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "OP_KINDS",
    "PROT_EXEC",
    "PROT_NONE",
    "PROT_READ",
    "PROT_RW",
    "PROT_WRITE",
    "Op",
    "TraceError",
    "expand",
]

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4
PROT_RW = PROT_READ | PROT_WRITE

OP_KINDS: tuple[str, ...] = (
    # malloc pools / page-range allocator
    "malloc",
    "calloc",
    "memalign",
    "realloc",
    "free",
    # mmap / VMAs / page faults
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "touch",
    "msync",
    # files: ZFS ARC
    "create",
    "read",
    "write",
    "fsync",
    "unlink",
    # virtio-balloon
    "host-balloon",
    # scheduler
    "sleep",
    "cpu",
)

MADVICE: tuple[str, ...] = ("dontneed", "hugepage", "nohugepage")


@dataclass
class Op:
    """One traced operation; fields not used by ``kind`` keep their defaults.

    Not slotted on purpose: the defaults stay class attributes, so :func:`quick_op` can build
    the common small records (malloc, free: four fields) at half the cost of ``__init__``.
    """

    kind: str  # one of OP_KINDS
    line: int  # 1-based line number in the source (0 if none)
    handle: str | None = None
    # SIZE of malloc/realloc/calloc/memalign/create/host-balloon, mmap LEN, mremap NEWLEN
    size: int = 0
    count: int = 0  # calloc N; cpu N
    align: int = 0  # memalign ALIGN
    offset: int = 0  # OFF of munmap/mprotect/madvise/touch/msync/read/write, mmap off=
    # LEN of mprotect/madvise/touch/read/write, and of munmap/msync (None = whole mapping)
    length: int | None = None
    path: str | None = None  # file= of mmap, PATH of file operations
    prot: int = PROT_RW  # R=1 W=2 X=4 bit flags; mmap default rw; mprotect PROT
    shared: bool = False
    populate: bool = False
    hugetlb: bool = False
    fixed: bool = False  # mmap addr=ADDR fixed
    addr: int | None = None  # mmap addr=ADDR hint
    advice: str | None = None  # madvise: dontneed|hugepage|nohugepage
    write: bool = True  # touch r|w (default w); False for read, True for write
    duration_ns: int = 0  # sleep DURATION
    time_ns: int | None = None  # optional @TIME stamp
    cpu: int | None = None  # optional per-line cpu=N selector
    site: str | None = None  # the allocation's caller, where the trace names one


def quick_op(kind: str, line: int, handle: str | None, size: int = 0,
             site: str | None = None, _new: object = object.__new__) -> Op:
    """An Op with only kind, line, handle, size and site set (the rest read the class
    defaults): the fast path of readers of huge allocator logs."""
    op = _new(Op)  # type: ignore[operator]
    op.kind = kind
    op.line = line
    op.handle = handle
    op.size = size
    if site is not None:
        op.site = site
    return op


class TraceError(Exception):
    """A trace cannot be read; says where (file and line) so the user can fix it.

    ``line`` is 0 when the problem is not tied to a line (missing file, unknown format).
    """

    path: str
    line: int
    message: str

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        super().__init__(os.fspath(path), line, message)
        self.path = os.fspath(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.message}"
        return f"{self.path}: {self.message}"


def expand(ops: Iterable[Op]) -> Iterator[Op]:
    """The operations with each batch (an Op with an ``expand()``: a block trace's BlockReads,
    an mtrace log's MallocCalls) replaced by the operations it stands for, for whoever looks at
    every one."""
    for op in ops:
        more = getattr(op, "expand", None)
        if more is None:
            yield op
        else:
            yield from more()
