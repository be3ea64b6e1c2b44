"""A state machine over ZFS file operations, time and memory pressure, for every cache policy.

Random interleavings of creates, reads, writes, fsyncs and unlinks, mallocs and frees, other
subsystems taking and returning memory, time passing (the ARC's reclaim thread, txg syncs) and shrinker calls.
After every step: every page is accounted for (kernel.check), each cached record has exactly
one buffer, the files' sizes and read lengths match a plain model, and the ZFS target c never
falls below c_min; soft shrinker calls never move it.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from mmsim.kernel import Kernel, load_config
from mmsim.kernel import sys_fs as _sys_fs  # noqa: F401  (registers cache_policy, arc_size...)
from mmsim.mm.constants import PAGE_SIZE

from mmsim.trace import Op

PATHS = ["/a", "/b", "/c"]
SIZES = [0, 1, 511, 4096, 100_000, 128 << 10, (128 << 10) + 1, 1 << 20, 3 << 20]
RECORDSIZES = ["4K", "16K", "128K"]


class ArcMachine(RuleBasedStateMachine):
    policy = "zfs"

    def __init__(self) -> None:
        super().__init__()
        self.k: Kernel | None = None
        self.sizes: dict[str, int] = {}
        self.enoent = 0
        self.eaten: list[list[tuple[int, int]]] = []
        self.handles: set[str] = set()
        self.line = 0

    @rule(memory=st.sampled_from(["96M", "128M"]), recordsize=st.sampled_from(RECORDSIZES),
          fixed=st.sampled_from([None, "256K", "8M"]))
    @precondition(lambda self: self.k is None)
    def boot(self, memory: str, recordsize: str, fixed: str | None) -> None:
        settings = {"memory": memory, "cache_policy": self.policy, "recordsize": recordsize}
        if fixed is not None or self.policy != "zfs":
            settings["arc_size"] = fixed or "8M"
        self.k = Kernel(load_config(None, settings))
        eaten = self.eaten
        self.k.add_category("machine", lambda: sum(n for e in eaten for _, n in e) * PAGE_SIZE)

    def apply(self, **fields: object) -> None:
        assert self.k is not None
        self.line += 1
        self.k.apply(Op(line=self.line, **fields))  # type: ignore[arg-type]

    @property
    def fs(self):  # type: ignore[no-untyped-def]
        assert self.k is not None
        return self.k.zfs

    @rule(path=st.sampled_from(PATHS), size=st.sampled_from(SIZES))
    @precondition(lambda self: self.k is not None)
    def create(self, path: str, size: int) -> None:
        self.apply(kind="create", path=path, size=size)
        self.sizes[path] = size

    @rule(path=st.sampled_from(PATHS), offset=st.integers(0, 4 << 20),
          length=st.integers(0, 1 << 20))
    @precondition(lambda self: self.k is not None)
    def read(self, path: str, offset: int, length: int) -> None:
        before = self.fs.read_bytes
        self.apply(kind="read", path=path, offset=offset, length=length)
        if path not in self.sizes:
            self.enoent += 1
            return
        expected = max(0, min(offset + length, self.sizes[path]) - offset)
        assert self.fs.read_bytes - before == expected

    @rule(path=st.sampled_from(PATHS), offset=st.integers(0, 2 << 20),
          length=st.integers(1, 512 << 10))
    @precondition(lambda self: self.k is not None)
    def write(self, path: str, offset: int, length: int) -> None:
        self.apply(kind="write", path=path, offset=offset, length=length)
        if path not in self.sizes:
            self.enoent += 1
        else:
            self.sizes[path] = max(self.sizes[path], offset + length)

    @rule(path=st.sampled_from(PATHS))
    @precondition(lambda self: self.k is not None)
    def fsync(self, path: str) -> None:
        self.apply(kind="fsync", path=path)
        if path not in self.sizes:
            self.enoent += 1
        else:
            assert not self.fs.file(path).dirty

    @rule(path=st.sampled_from(PATHS))
    @precondition(lambda self: self.k is not None)
    def unlink(self, path: str) -> None:
        self.apply(kind="unlink", path=path)
        if self.sizes.pop(path, None) is None:
            self.enoent += 1

    @rule(ms=st.sampled_from([1, 300, 1000, 2500, 7000]))
    @precondition(lambda self: self.k is not None)
    def sleep(self, ms: int) -> None:
        self.apply(kind="sleep", duration_ns=ms * 1_000_000)

    @rule(fraction=st.sampled_from([0.2, 0.5, 0.9]))
    @precondition(lambda self: self.k is not None)
    def other_subsystem_takes_memory(self, fraction: float) -> None:
        assert self.k is not None
        r = self.k.ranges
        npages = int((r.free_pages - 8192) * fraction)  # keeps 32 MiB for the mallocs below
        if npages > 0:
            self.eaten.append(r.alloc_pages_bulk(npages))

    @rule(handle=st.sampled_from(["h0", "h1", "h2", "h3"]),
          size=st.sampled_from([16, 3000, 64 << 10, 1 << 20, 3 << 20]))
    @precondition(lambda self: self.k is not None and self.k.has_handler("malloc"))
    def malloc(self, handle: str, size: int) -> None:
        if handle in self.handles:
            self.apply(kind="free", handle=handle)
        self.apply(kind="malloc", handle=handle, size=size)
        self.handles.add(handle)

    @rule(handle=st.sampled_from(["h0", "h1", "h2", "h3"]))
    @precondition(lambda self: self.k is not None and self.handles)
    def free(self, handle: str) -> None:
        if handle in self.handles:
            self.apply(kind="free", handle=handle)
            self.handles.discard(handle)

    @rule()
    @precondition(lambda self: self.k is not None and self.eaten)
    def other_subsystem_returns_memory(self) -> None:
        assert self.k is not None
        for start, n in self.eaten.pop():
            self.k.ranges.free(start, n)

    @rule(goal=st.sampled_from([0, 1 << 20, 32 << 20]), hard=st.booleans())
    @precondition(lambda self: self.k is not None)
    def shrinker_call(self, goal: int, hard: bool) -> None:
        policy = self.fs.policy
        lists = policy.list_sizes()
        c, size = policy.target, lists["mru_bytes"] + lists["mfu_bytes"]
        freed = self.fs.request_memory(goal, hard)
        # what it says it freed is the records' bytes that left the lists (ZFS's arc_size
        # drops by more: their headers, dbufs and the metadata they held go too)
        lists = policy.list_sizes()
        assert freed == size - lists["mru_bytes"] - lists["mfu_bytes"]
        if not hard:
            assert policy.target == c  # arc_sized_adjust never moves the target
            assert freed >= min(size, 16 << 20)  # at least 16 MiB when the ARC has it
        self.apply(kind="sleep", duration_ns=1)  # a woken reclaim thread runs

    @invariant()
    def pages_are_conserved(self) -> None:
        if self.k is None:
            return
        self.k.check()
        self.fs.check()

    @invariant()
    def model_agrees(self) -> None:
        if self.k is None:
            return
        for path in PATHS:
            assert self.k.files.size(path) == self.sizes.get(path)
        assert self.k.errors.counts.get("ENOENT", 0) == self.enoent

    @invariant()
    def target_never_below_c_min(self) -> None:
        if self.k is None:
            return
        policy = self.fs.policy
        assert policy.c_min <= policy.target <= policy.capacity
        assert 0 <= policy.p <= policy.target

    def teardown(self) -> None:
        if self.k is not None:
            assert self.k.oom is None


class LruMachine(ArcMachine):
    policy = "lru"


class PaperArcMachine(ArcMachine):
    policy = "arc"


TestZfsArc = ArcMachine.TestCase
TestLru = LruMachine.TestCase
TestPaperArc = PaperArcMachine.TestCase
