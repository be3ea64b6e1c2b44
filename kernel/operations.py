"""Every operation the kernel applies, once: its kind and the subsystem that handles it.

Traces are read into these (mmsim/trace's ``OP_KINDS`` plus the batches its fast paths make);
subsystems register the handler of a kind at boot (``Kernel.add_handler``), and only of a kind
listed here, so the kernel's syscall face is this table. A kind this guest has no handler for
(a file operation with no file system) is an error naming the subsystem it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OPERATIONS", "Operation", "subsystem_of"]

_MALLOC = "malloc pools (mm/slab)"
_VM = "virtual memory (mm/)"
_FILES = "a file system (fs/zfs_arc or fs/rofs)"


@dataclass(frozen=True)
class Operation:
    kind: str
    subsystem: str
    #: stands for many calls of a trace (a fast path), each counted as an event
    batch: bool = False


OPERATIONS: dict[str, Operation] = {op.kind: op for op in (
    Operation("malloc", _MALLOC),
    Operation("calloc", _MALLOC),
    Operation("memalign", _MALLOC),
    Operation("realloc", _MALLOC),
    Operation("free", _MALLOC),
    Operation("mallocs", _MALLOC, batch=True),  # an mtrace log's records
    Operation("mmap", _VM),
    Operation("munmap", _VM),
    Operation("mprotect", _VM),
    Operation("madvise", _VM),
    Operation("mremap", _VM),
    Operation("touch", _VM),
    Operation("msync", _VM),
    Operation("create", _FILES),
    Operation("read", _FILES),
    Operation("blockread", _FILES, batch=True),  # a block trace's requests
    Operation("write", _FILES),
    Operation("fsync", _FILES),
    Operation("unlink", _FILES),
    Operation("host-balloon", "virtio-balloon (drivers/)"),
    Operation("jvm", "the JVM of an image (balloon/)"),
    Operation("sleep", "the scheduler (kernel/)"),
    Operation("cpu", "the scheduler (kernel/)"),
)}


def subsystem_of(kind: str) -> str:
    op = OPERATIONS.get(kind)
    return op.subsystem if op is not None else "a subsystem"
