"""The mmap family of system calls, driven by trace handles (reference §6).

A trace names each mapping with a handle (``mmap H LEN``); later operations give offsets from
the mapping's start, so the same trace replays whatever addresses the simulator picks. What an
application would see - an errno, SIGSEGV, SIGBUS - is counted as an application error and the
replay goes on. So is a handle the trace misuses (unknown, or re-used while still mapped).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from mmsim.mm.address_space import AddressSpace, VmError
from mmsim.mm.constants import KERNEL_PHYS, KERNEL_VIRT, PAGE_SIZE
from mmsim.mm.file_backing import FileTable
from mmsim.mm.hugepage import HugePagePolicy
from mmsim.mm.page_cache import FileCache, PageCache, lru_max_length
from mmsim.mm.vma import ANON, FILE

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.shrinker import Reclaimer

__all__ = ["Mman", "attach"]


class _KernelFiles:
    """File sizes from the file system once one is mounted (:meth:`Mman.mount`: it attaches
    after this subsystem), else our table."""

    def __init__(self, table: FileTable) -> None:
        self.table = table
        self.fs: FileSizes | None = None

    def size(self, path: str) -> int | None:
        if self.fs is not None:
            return self.fs.size(path)
        return self.table.size(path)


class FileSizes(Protocol):
    """What mmap needs of a file system: a file's size (None if it has none)."""

    def size(self, path: str) -> int | None: ...


class Mman:
    """Trace handles over one :class:`AddressSpace`, and the summary of its use."""

    def __init__(self, kernel: Kernel, reclaimer: Reclaimer) -> None:
        self.kernel = kernel
        self._reclaimer = reclaimer
        self.file_table = FileTable()
        self._files = _KernelFiles(self.file_table)
        image = kernel.mem.kernel_end - KERNEL_PHYS
        self.space = AddressSpace(
            kernel.page_tables,
            kernel.pool,
            kernel.ranges,
            HugePagePolicy(enabled=kernel.config.hugepages),
            files=self._files,
            reserved=[(0, PAGE_SIZE), (KERNEL_VIRT, KERNEL_VIRT + image)],
            cpu=lambda: kernel.cpu,
            on_huge_page_shortage=self._wake_reclaimer,
        )
        self.handles: dict[str, tuple[int, int]] = {}  # handle -> (address, length)
        self.handle_errors: Counter = Counter()

    def mount(self, fs: FileSizes) -> None:
        """The root file system: file mappings take their files' sizes from it."""
        self._files.fs = fs

    def use_page_cache(self, backing: FileCache) -> PageCache:
        """Map ``backing``'s files through the page cache (a file system with one calls this);
        its write cache is bounded as OSv's and counted in the category ``page_cache``."""
        phys_pages = self.kernel.mem.phys_mem_size // PAGE_SIZE
        pc = self.space.use_page_cache(backing, lru_max_length(phys_pages))
        self.kernel.add_category("page_cache", lambda: pc.wc_pages * PAGE_SIZE)
        return pc

    def _wake_reclaimer(self) -> None:
        """OSv wakes the reclaimer when a huge page is not available (if one is built)."""
        self._reclaimer.wake()

    # -- handles -------------------------------------------------------------------------
    @staticmethod
    def _owner(handle: str) -> tuple[str, str]:
        return ("mmap", handle)

    def _live(self, handle: str) -> bool:
        return self.space.vmas.owner_bytes(self._owner(handle)) > 0

    def _lookup(self, op: Any) -> tuple[int, int] | None:
        got = self.handles.get(op.handle)
        if got is not None and not self._live(op.handle):
            del self.handles[op.handle]  # all of it was unmapped (e.g. by a MAP_FIXED)
            got = None
        if got is None:
            self._error(op, "unknown_handle", f"'{op.handle}' is not a live mapping")
        return got

    def _error(self, op: Any, kind: str, message: str) -> None:
        if kind in ("unknown_handle", "handle_in_use"):
            self.handle_errors[kind] += 1
        self.kernel.errors.report(kind, op.line, op.kind, message)

    def _forget_if_gone(self, handle: str) -> None:
        if handle in self.handles and not self._live(handle):
            del self.handles[handle]

    # -- operations ----------------------------------------------------------------------
    def op_mmap(self, op: Any) -> None:
        if op.handle in self.handles and self._live(op.handle):
            self._error(op, "handle_in_use", f"'{op.handle}' is still mapped")
            return
        try:
            addr = self.space.mmap(
                op.size, op.prot, shared=op.shared, path=op.path, offset=op.offset,
                populate=op.populate, hugetlb=op.hugetlb, fixed=op.fixed, addr=op.addr,
                owner=self._owner(op.handle),
            )
        except VmError as e:
            self._error(op, e.kind, e.message)
            return
        self.handles[op.handle] = (addr, op.size)

    def _whole_or_range(self, op: Any, base: int, length: int) -> tuple[int, int]:
        if op.length is None:
            return base, length
        return base + op.offset, op.length

    def op_munmap(self, op: Any) -> None:
        got = self._lookup(op)
        if got is None:
            return
        if op.length is None:
            # the whole mapping: whatever is left of it, piece by piece if a partial munmap or
            # a MAP_FIXED over it has left holes
            base, length = got
            owner = self._owner(op.handle)
            pieces: list[list[int]] = []
            for vma in self.space.vmas.intersecting(base, base + length):
                if vma.owner != owner:
                    continue
                if pieces and pieces[-1][1] == vma.start:
                    pieces[-1][1] = vma.end
                else:
                    pieces.append([vma.start, vma.end])
        else:
            pieces = [[got[0] + op.offset, got[0] + op.offset + op.length]]
        for start, end in pieces:
            try:
                self.space.munmap(start, end - start)
            except VmError as e:
                self._error(op, e.kind, e.message)
        self._forget_if_gone(op.handle)

    def _on_range(self, op: Any, call: Callable[[int, int], Any]) -> None:
        """``call(address, length)`` on OFF..OFF+LEN of the op's mapping; an errno or a signal
        is the application's error, counted, and the replay goes on."""
        got = self._lookup(op)
        if got is not None:
            try:
                call(got[0] + op.offset, op.length or 0)
            except VmError as e:
                self._error(op, e.kind, e.message)

    def op_mprotect(self, op: Any) -> None:
        self._on_range(op, lambda addr, n: self.space.mprotect(addr, n, op.prot))

    def op_madvise(self, op: Any) -> None:
        self._on_range(op, lambda addr, n: self.space.madvise(addr, n, op.advice or ""))

    def op_mremap(self, op: Any) -> None:
        got = self._lookup(op)
        if got is None:
            return
        try:
            addr = self.space.mremap(got[0], got[1], op.size, fixed=op.fixed)
        except VmError as e:
            self._error(op, e.kind, e.message)
            return
        self.handles[op.handle] = (addr, op.size)

    def op_touch(self, op: Any) -> None:
        self._on_range(op, lambda addr, n: self.space.touch(addr, n, op.write))

    def op_msync(self, op: Any) -> None:
        got = self._lookup(op)
        if got is not None:
            try:
                self.space.msync(*self._whole_or_range(op, *got))
            except VmError as e:
                self._error(op, e.kind, e.message)

    def op_create(self, op: Any) -> None:
        self.file_table.create(op.path, op.size)

    def op_unlink(self, op: Any) -> None:
        if not self.file_table.unlink(op.path):
            self._error(op, "ENOENT", f"unlink: no such file '{op.path}'")

    # -- statistics ----------------------------------------------------------------------
    def section(self) -> dict[str, Any]:
        """The summary's ``mmap`` section."""
        space = self.space
        st = space.stats
        errors = Counter(st.errors)
        errors.update(self.handle_errors)
        out = {
            "vmas": len(space.vmas),
            "mapped_bytes": space.mapped_bytes,
            "resident_bytes": space.resident_bytes,
            "huge_pages": space.huge_pages,
            "small_pages": space.small_pages,
            "faults": st.faults,
            "segv": st.segv,
            "sigbus": st.sigbus,
            "tlb_flushes": st.tlb_flushes,
            "huge_fallbacks": st.huge_fallbacks,
            "errors": dict(sorted(errors.items())),
        }
        if space.page_cache is not None:
            out["page_cache"] = space.page_cache.stats()
        return out


def attach(kernel: Kernel, reclaimer: Reclaimer) -> Mman:
    """Create the address space, register the mmap-family handlers, categories and section."""
    mman = Mman(kernel, reclaimer)
    for kind in ("mmap", "munmap", "mprotect", "madvise", "mremap", "touch", "msync"):
        kernel.add_handler(kind, getattr(mman, f"op_{kind}"))
    for kind in ("create", "unlink"):
        if not kernel.has_handler(kind):
            kernel.add_handler(kind, getattr(mman, f"op_{kind}"))
    kernel.add_category("anonymous", lambda: mman.space.resident[ANON])
    kernel.add_category("file", lambda: mman.space.resident[FILE])
    kernel.add_section("mmap", mman.section)
    return mman
