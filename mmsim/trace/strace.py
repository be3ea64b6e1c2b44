"""Replay of real ``strace -f -e trace=memory`` logs (with or without ``-t``/``-tt``/``-ttt``/``-T``).

The log's addresses belong to the traced application, not to the simulated guest, so the
importer keeps a map of the application's address space: every application range that a logged
call mapped is a piece ``(handle, offset)`` of a simulator mapping. A later munmap, mprotect,
madvise or msync of application addresses becomes one operation per piece it covers, whatever
addresses the simulator chose. Ranges the log never mapped (the program image and the stack,
mapped by execve before tracing sees anything) are skipped and counted.

Translation choices (docs/vm.md):

* a MAP_FIXED mapping over mapped ranges unmaps those pieces and maps anew, elsewhere in the
  simulator; the bytes mapped and the VMA count stay the same;
* mremap of a whole mapping that is one simulator VMA is the simulator's mremap; any other
  (a part, several pieces, or a mapping that a partial mprotect/madvise/munmap split, which
  Linux merges again but the simulator never does) unmaps the pieces and maps the new size anew;
* brk: the heap is one anonymous mapping that grows and shrinks in place (``mremap``), placed
  by a hint below the simulator's mmap area (:data:`HEAP_HINT`) so that nothing is in its way
  and it stays one VMA, which huge pages can back; a heap that a partial munmap, mprotect or
  madvise has split grows by one new mapping per growth instead;
* a file mapping of descriptor N maps the file ``/strace/fdN`` (or the ``-y`` path), created
  (and grown) to cover every byte the log maps of it;
* failed calls (``= -1 ENOMEM ...``, ``= ?``) and advice other than dontneed, hugepage and
  nohugepage are skipped and counted in :attr:`StraceReader.stats`;
* all pids share one address space (threads); ``pid=`` keeps only one pid's lines, and is an
  error if the log has no such pid;
* lines without a pid prefix are the main process's (see :class:`_Processes`).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sortedcontainers import SortedDict

from .ops import PROT_EXEC, PROT_READ, PROT_WRITE, Op, TraceError
from .source import open_trace_text

__all__ = ["StraceReader", "StraceStats", "detect_strace", "read_strace"]

PAGE = 4096
#: where the simulator places a program's brk heap: below MMAP_DEFAULT_START
#: (0x2000_0000_0000), where mappings without a hint start, so the heap can always grow in
#: place; each program image of the log (a new brk base) gets the next HEAP_STRIDE.
HEAP_HINT = 0x1000_0000_0000
HEAP_STRIDE = 1 << 40
_HALF_DAY = 12 * 3600 * 10**9

_PREFIX_RE = re.compile(
    r"^(?:\[pid\s+(?P<bpid>\d+)\]\s+|(?P<pid>\d+)\s+)?"
    r"(?:(?P<time>\d{1,2}:\d{2}:\d{2}(?:\.\d+)?|\d{9,}\.\d+|\d+\.\d+)\s+)?"
    r"(?P<rest>.*)$"
)
_CALL_RE = re.compile(
    r"^(?P<name>[a-z_0-9]+)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\w+|\?)"
    r"(?:\s+(?P<err>E[A-Z0-9]+)\b.*)?$"
)
_UNFINISHED = " <unfinished ...>"
_RESUMED_RE = re.compile(r"^<\.\.\. (?P<name>[a-z_0-9]+) resumed>\s?(?P<rest>.*)$")
_DURATION_RE = re.compile(r"\s+<\d+(?:\.\d+)?>$")
_FD_RE = re.compile(r"^(?P<fd>-?\d+)(?:<(?P<path>.*)>)?$")
_DETECT_RE = re.compile(
    r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?:[\d:.]+\s+)?"
    r"(?:(?:mmap2?|munmap|mprotect|pkey_mprotect|madvise|mremap|brk|msync|mincore|mlock\w*|"
    r"munlock\w*|mbind|set_mempolicy|get_mempolicy|remap_file_pages)\(.*(?:\)\s+=\s+|"
    r"<unfinished \.\.\.>$)|<\.\.\. \w+ resumed>)"
)
_OTHER_LINE_RE = re.compile(
    r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(?:[\d:.]+\s+)?"
    r"(?:\+\+\+ .* \+\+\+|--- .* ---|[a-z_0-9]+\(.*(?:\)\s+=\s+.*|<unfinished \.\.\.>))$"
)
_ATTACHED_RE = re.compile(r"^strace: Process (\d+) attached")
_ADVICE = {"MADV_DONTNEED": "dontneed", "MADV_HUGEPAGE": "hugepage",
           "MADV_NOHUGEPAGE": "nohugepage"}


@dataclass
class StraceStats:
    """What the import did with the log's calls (for the run's summary)."""

    calls: int = 0
    replayed: int = 0
    #: failed calls, by errno (``?`` for calls that never returned)
    failed: Counter = field(default_factory=Counter)
    #: calls on application addresses no logged call mapped (program image, stack...)
    unknown_address: int = 0
    #: calls the simulator has no counterpart for, by name (mlock, unsupported advice...)
    skipped: Counter = field(default_factory=Counter)
    #: ``<unfinished ...>`` calls whose result never appeared
    unfinished: int = 0

    def as_dict(self) -> dict:
        return {
            "calls": self.calls, "replayed": self.replayed, "failed": dict(self.failed),
            "unknown_address": self.unknown_address, "skipped": dict(self.skipped),
            "unfinished": self.unfinished,
        }


def _page_up(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _int(text: str) -> int:
    text = text.strip()
    if text == "NULL":
        return 0
    return int(text, 0)


def _prot(text: str) -> int:
    prot = 0
    for flag in text.split("|"):
        flag = flag.strip()
        if flag == "PROT_READ":
            prot |= PROT_READ
        elif flag == "PROT_WRITE":
            prot |= PROT_WRITE
        elif flag == "PROT_EXEC":
            prot |= PROT_EXEC
        elif flag.startswith("0x") or flag.isdigit():
            prot |= int(flag, 0) & 7
    return prot


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments (strace prints no nested calls for these)."""
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur or out:
        out.append("".join(cur).strip())
    return out


class _AppSpace:
    """The application's mapped ranges as pieces of simulator handles, with the protection
    the application gave each: start -> (end, handle, handle offset, prot)."""

    def __init__(self) -> None:
        self._d: SortedDict = SortedDict()

    def pieces(self, a: int, b: int) -> list[tuple[int, int, str, int]]:
        """(start, end, handle, handle offset) of the mapped parts of ``[a, b)``, in order."""
        return [(s, e, h, off) for s, e, h, off, _ in self.pieces_prot(a, b)]

    def pieces_prot(self, a: int, b: int) -> list[tuple[int, int, str, int, int]]:
        """:meth:`pieces` with each piece's protection."""
        d = self._d
        out: list[tuple[int, int, str, int, int]] = []
        pos = d.bisect_left(a)
        if pos:
            s, (e, h, off, prot) = d.peekitem(pos - 1)
            if e > a:
                out.append((a, min(e, b), h, off + a - s, prot))
        for s in d.irange(a, b, inclusive=(True, False)):
            e, h, off, prot = d[s]
            out.append((s, min(e, b), h, off, prot))
        return out

    def remove(self, a: int, b: int) -> None:
        """Forget ``[a, b)``, keeping the parts of pieces outside it."""
        d = self._d
        for s, e, _, _ in self.pieces(a, b):
            key = s if s in d else d.peekitem(d.bisect_right(s) - 1)[0]
            end, h, off, prot = d.pop(key)
            if key < s:
                d[key] = (s, h, off, prot)
            if e < end:
                d[e] = (end, h, off + (e - key), prot)

    def add(self, a: int, b: int, handle: str, off: int, prot: int) -> None:
        self.remove(a, b)
        d = self._d
        pos = d.bisect_left(a)
        if pos:
            s, (e, h, o, p) = d.peekitem(pos - 1)
            if e == a and h == handle and o + (a - s) == off and p == prot:
                d[s] = (b, handle, o, prot)  # the same simulator range, grown (a brk heap)
                return
        d[a] = (b, handle, off, prot)

    def protect(self, a: int, b: int, prot: int) -> None:
        """The application's mprotect of ``[a, b)`` (only where it is mapped)."""
        for s, e, h, off in self.pieces(a, b):
            self.add(s, e, h, off, prot)


class _Processes:
    """Which process a line without a pid prefix belongs to.

    strace -f writing to a file (``-o``) prefixes every line with its pid. Writing to stderr
    it prefixes ``[pid N]`` only while it traces more than one process: the lines of the
    process it started, while alone (before its first thread or child, after the last one
    ended), have no prefix and no pid. That main process is the one whose prefixed lines
    appear without a ``strace: Process N attached`` note first (each thread or child gets
    one), or, for ``strace -p N``, the one attached before any call. (If the main process
    ends before a child, or ``-q`` drops the notes, unprefixed lines may be misattributed.)
    """

    def __init__(self) -> None:
        self.main: int | None = None
        self.pids: set[int] = set()  # every pid the log names
        self.unprefixed = False  # a line without a prefix was seen
        self._children: set[int] = set()
        self._calls = False

    def see(self, prefix: str | None, rest: str) -> None:
        """Learn from one line: its pid prefix (None if it has none) and the rest."""
        if prefix is not None:
            pid = int(prefix)
            self.pids.add(pid)
            if self.main is None and pid not in self._children:
                self.main = pid
            self._calls = True
            return
        note = _ATTACHED_RE.match(rest)
        if note is None:
            if not rest.startswith("strace: "):
                self.unprefixed = True
                self._calls = True
            return
        pid = int(note[1])
        self.pids.add(pid)
        if not self._calls and self.main is None:
            self.main = pid  # strace -p PID: attached before anything ran
        elif pid != self.main:
            self._children.add(pid)

    def known(self) -> set[int]:
        """The pids a ``pid=`` can select."""
        return self.pids | ({self.main} if self.main is not None else set())


class StraceReader:
    """Iterator of the :class:`Op`s a strace log replays to; ``stats`` fills as it goes."""

    def __init__(self, path: str | os.PathLike[str], pid: int | None = None) -> None:
        self.path = os.fspath(path)
        self.pid = pid
        self.stats = StraceStats()
        self._space = _AppSpace()
        self._next_handle = 0
        self._handle_len: dict[str, int] = {}
        #: how each handle was mapped: the mmap Op's flags and file, for mapping it anew
        self._handle_op: dict[str, Op] = {}
        #: handles whose simulator mapping is more than one VMA: an mprotect, madvise or
        #: munmap of part of it split it, and the simulator (like OSv) never merges VMAs
        self._split: set[str] = set()
        self._files: dict[str, int] = {}  # simulated file -> size created so far
        self._brk: int | None = None
        self._heap: str | None = None  # the brk heap's handle
        self._heap_base = 0  # its application address
        self._images = -1  # program images seen (each brk base is one)
        self._pending: dict[str, str] = {}  # pid -> text of an unfinished call
        self._procs = _Processes()
        if pid is not None:
            self._procs = self._scan_pids(pid)
        self._t0: int | None = None
        self._prev_ns: int | None = None
        self._day = 0
        self._it = self._ops()

    def __iter__(self) -> Iterator[Op]:
        return self

    def __next__(self) -> Op:
        return next(self._it)

    # -- lines ---------------------------------------------------------------------------
    def _scan_pids(self, pid: int) -> _Processes:
        """A first pass over the log for ``pid=``: which pids it has, and the unprefixed
        lines' (needed before the first of them is kept or dropped)."""
        procs = _Processes()
        with open_trace_text(self.path) as text:
            for raw in text:
                m = _PREFIX_RE.match(raw.strip())
                assert m is not None
                if m["rest"]:
                    procs.see(m["bpid"] or m["pid"], m["rest"])
        known = procs.known()
        if pid not in known:
            shown = sorted(known)
            listed = ", ".join(map(str, shown[:20])) or "none"
            if len(shown) > 20:
                listed += f", ... ({len(shown)} in all)"
            if procs.unprefixed and procs.main is None:
                listed += "; lines without a pid prefix, of a process the log does not name"
            raise TraceError(self.path, 0, f"--pid {pid}: no such pid in the log (its pids: "
                                           f"{listed})")
        return procs

    def _ops(self) -> Iterator[Op]:
        with open_trace_text(self.path) as text:
            for raw in text:
                line = raw.rstrip("\n")
                if not line.strip():
                    continue
                yield from self._line(line, text.lineno)
        self.stats.unfinished += len(self._pending)

    def _line(self, line: str, lineno: int) -> Iterator[Op]:
        m = _PREFIX_RE.match(line.strip())
        assert m is not None  # the pattern matches every string
        rest = m["rest"]
        prefix = m["bpid"] or m["pid"]
        procs = self._procs
        if self.pid is None and procs.main is None:
            procs.see(prefix, rest)  # learning as it goes (with pid=, the scan knows it all)
            if procs.main is not None and "" in self._pending:
                self._pending[str(procs.main)] = self._pending.pop("")
        pid_text = prefix or (str(procs.main) if procs.main is not None else "")
        if self.pid is not None and pid_text != str(self.pid):
            return
        time_ns = self._time(m["time"]) if m["time"] else None
        if rest.startswith(("+++", "---", "strace: ")):
            return  # exits, signals, strace's own notes ("Process N attached")
        if rest.endswith(_UNFINISHED):
            self._pending[pid_text] = rest[: -len(_UNFINISHED)]
            return
        r = _RESUMED_RE.match(rest)
        if r is not None:
            head = self._pending.pop(pid_text, None)
            if head is None:
                return  # the call began before the log did
            rest = head + r["rest"]
        rest = _DURATION_RE.sub("", rest)
        c = _CALL_RE.match(rest)
        if c is None:
            raise TraceError(self.path, lineno, f"not a strace line: {line[:60]!r}")
        self.stats.calls += 1
        if c["ret"] == "?" or c["ret"].startswith("-"):
            self.stats.failed[c["err"] or "?"] += 1
            return
        try:
            args = _split_args(c["args"])
            ret = _int(c["ret"])
            ops = list(self._call(c["name"], args, ret))
        except (ValueError, IndexError):
            raise TraceError(self.path, lineno, f"cannot read {c['name']} call: {rest[:60]!r}") from None
        if ops:
            self.stats.replayed += 1
        for op in ops:
            op.line = lineno
            op.time_ns = time_ns
            yield op

    def _time(self, text: str) -> int:
        """Nanoseconds since the log's first stamp (wall-clock stamps may pass midnight)."""
        if ":" in text:
            h, mi, sec = text.split(":")
            whole, _, frac = sec.partition(".")
            ns = ((int(h) * 60 + int(mi)) * 60 + int(whole)) * 10**9
            ns += int((frac + "0" * 9)[:9]) + self._day
            if self._prev_ns is not None and ns < self._prev_ns - _HALF_DAY:
                self._day += 2 * _HALF_DAY
                ns += 2 * _HALF_DAY
        else:
            whole, _, frac = text.partition(".")
            ns = int(whole) * 10**9 + int((frac + "0" * 9)[:9])
        self._prev_ns = ns
        if self._t0 is None:
            self._t0 = ns
        return max(ns - self._t0, 0)

    # -- calls ---------------------------------------------------------------------------
    def _new_handle(self, length: int) -> str:
        self._next_handle += 1
        h = f"m{self._next_handle}"
        self._handle_len[h] = length
        return h

    def _partly(self, h: str, off: int, n: int) -> None:
        """An operation on ``[off, off + n)`` of handle ``h``: less than all of it splits it."""
        if off or n != self._handle_len.get(h):
            self._split.add(h)

    def _unmap(self, a: int, b: int) -> list[Op]:
        ops = []
        for s, e, h, off in self._space.pieces(a, b):
            self._partly(h, off, e - s)
            ops.append(Op("munmap", 0, handle=h, offset=off, length=e - s))
        self._space.remove(a, b)
        return ops

    def _call(self, name: str, args: list[str], ret: int) -> Iterator[Op]:
        if name in ("mmap", "mmap2"):
            yield from self._mmap(args, ret, page_offset=name == "mmap2")
        elif name == "munmap":
            a, length = _int(args[0]), _page_up(_int(args[1]))
            yield from self._per_piece(name, a, length, lambda h, off, n: Op(
                "munmap", 0, handle=h, offset=off, length=n))
            self._space.remove(a, a + length)
        elif name in ("mprotect", "pkey_mprotect"):
            a, length, prot = _int(args[0]), _page_up(_int(args[1])), _prot(args[2])
            yield from self._per_piece(name, a, length, lambda h, off, n: Op(
                "mprotect", 0, handle=h, offset=off, length=n, prot=prot))
            self._space.protect(a, a + length, prot)
        elif name == "madvise":
            advice = _ADVICE.get(args[2].strip())
            if advice is None:
                self.stats.skipped[f"madvise {args[2].strip()}"] += 1
                return
            a, length = _int(args[0]), _page_up(_int(args[1]))
            yield from self._per_piece(name, a, length, lambda h, off, n: Op(
                "madvise", 0, handle=h, offset=off, length=n, advice=advice))
        elif name == "msync":
            a, length = _int(args[0]), _page_up(_int(args[1]))
            yield from self._per_piece(name, a, length, lambda h, off, n: Op(
                "msync", 0, handle=h, offset=off, length=n))
        elif name == "mremap":
            yield from self._mremap(args, ret)
        elif name == "brk":
            yield from self._brk_call(args, ret)
        else:
            self.stats.skipped[name] += 1

    def _per_piece(
        self, name: str, a: int, length: int, make: Callable[[str, int, int], Op]
    ) -> Iterator[Op]:
        pieces = self._space.pieces(a, a + length)
        covered = sum(e - s for s, e, _, _ in pieces)
        if covered < length:
            self.stats.unknown_address += 1
        for s, e, h, off in pieces:
            if name != "msync":
                self._partly(h, off, e - s)
            yield make(h, off, e - s)

    def _mmap(self, args: list[str], ret: int, page_offset: bool) -> Iterator[Op]:
        length = _int(args[1])
        prot = _prot(args[2])
        flags = args[3]
        fd_m = _FD_RE.match(args[4].strip())
        offset = _int(args[5]) * (PAGE if page_offset else 1)
        size = _page_up(length)
        yield from self._unmap(ret, ret + size)  # MAP_FIXED over earlier mappings
        h = self._new_handle(size)
        op = Op("mmap", 0, handle=h, size=length, prot=prot, shared="MAP_SHARED" in flags,
                populate="MAP_POPULATE" in flags, hugetlb="MAP_HUGETLB" in flags)
        anonymous = "MAP_ANON" in flags or fd_m is None or int(fd_m["fd"]) < 0
        if not anonymous:
            assert fd_m is not None
            path = fd_m["path"]
            path = re.sub(r"[\s#]", "_", path) if path else f"/strace/fd{fd_m['fd']}"
            need = offset + size
            if self._files.get(path, -1) < need:
                self._files[path] = need
                yield Op("create", 0, path=path, size=need)
            op.path, op.offset = path, offset
        self._space.add(ret, ret + size, h, 0, prot)
        self._handle_op[h] = op
        yield op

    def _mremap(self, args: list[str], ret: int) -> Iterator[Op]:
        old, old_len, new_len = _int(args[0]), _page_up(_int(args[1])), _int(args[2])
        pieces = self._space.pieces_prot(old, old + old_len)
        if not pieces:
            self.stats.unknown_address += 1
            return
        new_size = _page_up(new_len)
        s, e, h, off, prot = pieces[0]
        if len(pieces) == 1 and s == old and e == old + old_len and off == 0 and (
            self._handle_len[h] == old_len and h not in self._split
        ):
            # the whole of a mapping that is one simulator VMA: the simulator's mremap
            self._space.remove(old, old + old_len)
            self._space.add(ret, ret + new_size, h, 0, prot)
            self._handle_len[h] = new_size
            yield Op("mremap", 0, handle=h, size=new_len)
            return
        # Part of a mapping, or one that the simulator holds as several VMAs or handles
        # (Linux merges adjacent VMAs that agree, OSv and the simulator never do; the log's
        # mremap succeeded, so Linux saw one VMA, with one protection: the last piece's):
        # unmap the old pieces, then map the new size anew like the first piece.
        yield from self._unmap(old, old + old_len)
        yield from self._unmap(ret, ret + new_size)
        prot = pieces[-1][4]
        nh = self._new_handle(new_size)
        first = self._handle_op.get(h)
        op = Op("mmap", 0, handle=nh, size=new_len, prot=prot)
        if first is not None:
            op.shared, op.hugetlb = first.shared, first.hugetlb
            if first.path is not None:
                op.path, op.offset = first.path, first.offset + off
                need = op.offset + new_size
                if self._files.get(op.path, -1) < need:
                    self._files[op.path] = need
                    yield Op("create", 0, path=op.path, size=need)
        self._space.add(ret, ret + new_size, nh, 0, prot)
        self._handle_op[nh] = op
        yield op

    def _heap_whole(self, top: int) -> bool:
        """The heap is still the one simulator VMA of ``[heap base, top)``, nothing else."""
        h = self._heap
        return h is not None and h not in self._split and self._handle_len.get(h) == (
            top - self._heap_base
        ) and self._space.pieces(self._heap_base, top) == [(self._heap_base, top, h, 0)]

    def _brk_call(self, args: list[str], ret: int) -> Iterator[Op]:
        if self._brk is None or (args[0].strip() == "NULL" and ret != self._brk):
            self._brk = ret  # the first call, or a new program image (execve is not logged)
            self._heap = None
            self._images += 1
            return
        old_top, new_top = _page_up(self._brk), _page_up(ret)
        self._brk = ret
        rw = PROT_READ | PROT_WRITE
        if new_top > old_top:
            yield from self._unmap(old_top, new_top)  # anything the log had mapped there
            if self._heap is None:
                h = self._heap = self._new_handle(new_top - old_top)
                self._heap_base = old_top
                self._space.add(old_top, new_top, h, 0, rw)
                yield Op("mmap", 0, handle=h, size=new_top - old_top,
                         addr=HEAP_HINT + max(self._images, 0) * HEAP_STRIDE)
            elif self._heap_whole(old_top):
                h, size = self._heap, new_top - self._heap_base
                self._space.add(old_top, new_top, h, old_top - self._heap_base, rw)
                self._handle_len[h] = size
                yield Op("mremap", 0, handle=h, size=size)  # in place: nothing is after it
            else:  # split: one more mapping
                h = self._new_handle(new_top - old_top)
                self._space.add(old_top, new_top, h, 0, rw)
                yield Op("mmap", 0, handle=h, size=new_top - old_top)
        elif new_top < old_top:
            if self._heap_whole(old_top):
                h, size = self._heap, new_top - self._heap_base
                self._space.remove(new_top, old_top)
                if size > 0:
                    self._handle_len[h] = size
                    yield Op("mremap", 0, handle=h, size=size)
                else:
                    self._heap = None
                    yield Op("munmap", 0, handle=h)
            else:
                yield from self._unmap(new_top, old_top)
                if new_top <= self._heap_base:
                    self._heap = None  # all of it is gone: the next growth is a new heap


def read_strace(path: str | os.PathLike[str], pid: int | None = None) -> StraceReader:
    """The Ops a strace log replays to; ``pid`` keeps only that pid's (thread's) calls."""
    return StraceReader(path, pid)


def detect_strace(peek) -> bool:  # noqa: ANN001 - a TracePeek (imported lazily to avoid a cycle)
    """A text file whose first lines are strace output with at least one memory call."""
    if not peek.is_text:
        return False
    lines = [line for line in peek.lines if line.strip()]
    if not lines:
        return False
    calls = 0
    for line in lines:
        line = line.strip()
        if _DETECT_RE.match(line):
            calls += 1
        elif not _OTHER_LINE_RE.match(line) and not line.startswith("strace: "):
            return False
    return calls > 0


def _register() -> None:
    from .registry import register_reader

    register_reader("strace", read_strace, detect_strace)


_register()
