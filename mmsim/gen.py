"""Synthetic workloads as native traces: the same bytes for the same kind, length and seed.

Real traces are large and hard to share; these models give every subsystem a workload of known
shape to replay. Each generator is an endless stream of operations drawn from one
``random.Random(seed)`` (nothing else is random: no clock, no hash order), cut at ``events``
operations. docs/gen.md describes the model behind each kind.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TextIO

from mmsim.trace import PROT_NONE, PROT_RW, Op, write_native

__all__ = ["GENERATORS", "Generator", "generate", "write_trace"]

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
PAGE = 4 * KIB


@dataclass(frozen=True)
class Generator:
    """One kind of workload: ``fn(rng, cpus)`` yields its operations for ever."""

    name: str
    summary: str
    default_events: int
    fn: Callable[[random.Random, int], Iterator[Op]]


class _Clock:
    """Simulated time stamps for the ops: integer ns, never going back."""

    def __init__(self) -> None:
        self.ns = 0

    def wait(self, rng: random.Random, mean_ns: float) -> int:
        """Advance by an exponential gap (Poisson arrivals) and return the new time."""
        self.ns += int(rng.expovariate(1.0 / mean_ns))
        return self.ns


def _pages(n: int) -> int:
    """``n`` rounded up to whole pages, at least one."""
    return max(PAGE, (n + PAGE - 1) // PAGE * PAGE)


def _down(n: int) -> int:
    return n // PAGE * PAGE


# -- memcached ------------------------------------------------------------------------------
def _gev(rng: random.Random, mu: float, sigma: float, xi: float) -> float:
    u = rng.random() or 1e-12
    return mu + sigma / xi * ((-math.log(u)) ** -xi - 1)


def _gpareto(rng: random.Random, sigma: float, xi: float) -> float:
    u = rng.random() or 1e-12
    return sigma / xi * (u ** -xi - 1)


def memcached(rng: random.Random, cpus: int) -> Iterator[Op]:
    """Facebook's ETC pool (Atikoglu et al., SIGMETRICS 2012) on a 16 MiB item cache."""
    limit = 16 * MIB  # memcached -m 16: a default-length trace fills it, then evicts
    universe = 1 << 21
    threads = max(1, min(4, cpus))  # memcached -t 4
    clock = _Clock()
    items: OrderedDict[int, tuple[str, int]] = OrderedDict()  # key -> (handle, size), LRU first
    used = 0
    serial = 0
    buckets = 1 << 16  # hashpower 16
    table = 0
    yield Op("malloc", 0, handle="hashtable.0", size=8 * buckets)
    for t in range(threads):  # each worker's connection buffers
        yield Op("malloc", 0, handle=f"rbuf.{t}", size=2 * KIB, cpu=t or None)
        yield Op("malloc", 0, handle=f"wbuf.{t}", size=2 * KIB, cpu=t or None)
    while True:
        for _ in range(rng.randrange(20)):  # gets between two updates: they refresh the LRU
            key = int(universe ** rng.random())
            if key in items:
                items.move_to_end(key)
        key = int(universe ** rng.random())  # log-uniform popularity: Zipf with exponent ~1
        cpu = rng.randrange(threads) or None
        now = clock.wait(rng, 100_000)
        if rng.random() < 0.1:  # delete
            old = items.pop(key, None)
            if old is not None:
                used -= old[1]
                yield Op("free", 0, handle=old[0], time_ns=now, cpu=cpu)
            continue
        nkey = min(250, max(1, round(_gev(rng, 30.7984, 8.20449, 0.078688))))
        nbytes = min(MIB - 512, round(_gpareto(rng, 214.476, 0.348238)))
        size = 48 + nkey + 1 + nbytes + 2  # item header, key, NUL, value, CRLF
        handle = f"item.{serial}"
        serial += 1
        yield Op("malloc", 0, handle=handle, size=size, time_ns=now, cpu=cpu)
        old = items.pop(key, None)
        if old is not None:  # the new item replaces the old, which is then freed
            used -= old[1]
            yield Op("free", 0, handle=old[0], time_ns=now, cpu=cpu)
        items[key] = (handle, size)
        used += size
        while used > limit:  # the LRU tail is evicted to make room
            _, (victim, vsize) = items.popitem(last=False)
            used -= vsize
            yield Op("free", 0, handle=victim, time_ns=now, cpu=cpu)
        if len(items) > buckets * 3 // 2:  # assoc_expand: a table twice as big
            buckets *= 2
            yield Op("malloc", 0, handle=f"hashtable.{table + 1}", size=8 * buckets,
                     time_ns=now)
            yield Op("free", 0, handle=f"hashtable.{table}", time_ns=now)
            table += 1


# -- redis ------------------------------------------------------------------------------------
def _sds(n: int) -> int:
    """Bytes of an sds string of length n: header (by length class), data, NUL."""
    return (3 if n < 256 else 5 if n < 65536 else 9) + n + 1


def redis(rng: random.Random, cpus: int) -> Iterator[Op]:
    """A single-threaded key-value store whose keyspace grows, with overwrites, appends and
    deletes, and dict tables that double and are rehashed incrementally."""
    clock = _Clock()
    live: list[int] = []  # key ids, for O(1) random picks
    where: dict[int, int] = {}  # key id -> index in live
    value: dict[int, tuple[bool, int]] = {}  # key id -> (embedded?, sds length)
    next_key = 0
    size = 4  # dict's ht[0] buckets
    table = 0
    rehash_left = 0  # buckets still to move from the old table (one per command)
    yield Op("malloc", 0, handle="ht.0", size=8 * size)

    def new_value(k: int, t: int) -> Iterator[Op]:
        r = rng.random()
        if r < 0.6:
            n = max(1, round(rng.lognormvariate(3.0, 0.6)))
        elif r < 0.95:
            n = round(100 * 10 ** rng.random())  # 100 B .. 1 KiB
        else:
            n = round(KIB * 64 ** rng.random())  # 1 KiB .. 64 KiB
        if n <= 44:  # OBJ_ENCODING_EMBSTR: robj and sds in one block
            value[k] = (True, n)
            yield Op("malloc", 0, handle=f"v.{k}", size=16 + _sds(n), time_ns=t)
        else:
            value[k] = (False, n)
            yield Op("malloc", 0, handle=f"o.{k}", size=16, time_ns=t)
            yield Op("malloc", 0, handle=f"v.{k}", size=_sds(n), time_ns=t)

    def drop_value(k: int, t: int) -> Iterator[Op]:
        embedded, _ = value.pop(k)
        if not embedded:
            yield Op("free", 0, handle=f"o.{k}", time_ns=t)
        yield Op("free", 0, handle=f"v.{k}", time_ns=t)

    while True:
        now = clock.wait(rng, 10_000)  # ~100k commands/s
        r = rng.random()
        if r < 0.55 or not live:  # SET of a new key
            k = next_key
            next_key += 1
            where[k] = len(live)
            live.append(k)
            yield Op("malloc", 0, handle=f"e.{k}", size=24, time_ns=now)  # dictEntry
            yield Op("malloc", 0, handle=f"k.{k}", size=_sds(len(f"key:{k:012d}")), time_ns=now)
            yield from new_value(k, now)
        else:
            k = live[rng.randrange(len(live))]
            if r < 0.75:  # SET over an existing key
                yield from drop_value(k, now)
                yield from new_value(k, now)
            elif r < 0.85:  # APPEND: sdsMakeRoomFor doubles below 1 MiB
                embedded, n = value[k]
                grown = n + round(16 * 64 ** rng.random())
                if embedded:
                    yield Op("free", 0, handle=f"v.{k}", time_ns=now)
                    yield Op("malloc", 0, handle=f"o.{k}", size=16, time_ns=now)
                    yield Op("malloc", 0, handle=f"v.{k}", size=_sds(grown), time_ns=now)
                else:
                    room = grown * 2 if grown < MIB else grown + MIB
                    yield Op("realloc", 0, handle=f"v.{k}", size=_sds(room), time_ns=now)
                value[k] = (False, grown)
            else:  # DEL
                i = where.pop(k)
                last = live.pop()
                if last != k:
                    live[i] = last
                    where[last] = i
                yield Op("free", 0, handle=f"e.{k}", time_ns=now)
                yield Op("free", 0, handle=f"k.{k}", time_ns=now)
                yield from drop_value(k, now)
        if rehash_left:
            rehash_left -= 1
            if not rehash_left:  # the old table is empty: free it
                yield Op("free", 0, handle=f"ht.{table - 1}", time_ns=now)
        elif len(live) >= size:  # dictExpand, then rehash one bucket per command
            rehash_left = size
            size *= 2
            table += 1
            yield Op("malloc", 0, handle=f"ht.{table}", size=8 * size, time_ns=now)


# -- jvm --------------------------------------------------------------------------------------
def jvm(rng: random.Random, cpus: int) -> Iterator[Op]:
    """HotSpot with the parallel collector as a native app shows it: a reserved heap committed
    and uncommitted with mprotect/madvise, TLAB touches, and minor and full GC cycles."""
    xmx, xms = 512 * MIB, 64 * MIB
    young_max = _down(xmx // 3)  # NewRatio=2
    young_min = _down(xms // 3)
    clock = _Clock()
    gc_threads = max(1, cpus)

    def t(mean_ns: float) -> int:
        return clock.wait(rng, mean_ns)

    def resize(base: int, old: int, new: int) -> Iterator[Op]:
        """Commit with mprotect rw; uncommit as os::uncommit_memory does (pages dropped,
        then PROT_NONE)."""
        if new > old:
            yield Op("mprotect", 0, handle="heap", offset=base + old, length=new - old,
                     prot=PROT_RW, time_ns=clock.ns)
        elif new < old:
            yield Op("madvise", 0, handle="heap", offset=base + new, length=old - new,
                     advice="dontneed", time_ns=clock.ns)
            yield Op("mprotect", 0, handle="heap", offset=base + new, length=old - new,
                     prot=PROT_NONE, time_ns=clock.ns)

    def gc_touch(base: int, length: int) -> Iterator[Op]:
        """Parallel GC threads each copy a share of ``length`` bytes from ``base``."""
        share = _pages(-(-length // gc_threads))
        off = 0
        for g in range(gc_threads):
            n = min(share, length - off)
            if n <= 0:
                break
            yield Op("touch", 0, handle="heap", offset=base + off, length=n,
                     time_ns=clock.ns, cpu=g or None)
            off += n

    yield Op("mmap", 0, handle="heap", size=xmx, prot=PROT_NONE)  # -Xmx reserved
    young = young_min
    old_c = old_min = xms - young
    yield from resize(0, 0, young)
    yield from resize(young_max, 0, old_c)
    yield Op("mmap", 0, handle="metaspace", size=64 * MIB)
    yield Op("mmap", 0, handle="codecache", size=48 * MIB, prot=7)
    for i in range(8):  # application and VM threads: 1 MiB stacks, the top in use
        yield Op("mmap", 0, handle=f"stack.{i}", size=MIB)
        yield Op("touch", 0, handle=f"stack.{i}", offset=MIB - 64 * KIB, length=64 * KIB)
    meta = code = 0
    old_top = 0
    live_set = 0  # the application's live data: builds up over a job, released at its end
    gcs_left = rng.randrange(15, 40)  # minor GCs until the job ends
    arenas: list[str] = []
    serial = 0
    while True:
        eden = _down(young * 8 // 10)
        survivor = _down(young // 10)
        top = 0
        while True:  # the mutator allocates TLABs in eden
            tlab = rng.choice((256, 512, 1024, 2048)) * KIB
            if top + tlab > eden:
                break
            yield Op("touch", 0, handle="heap", offset=top, length=tlab,
                     time_ns=t(2_000_000 * tlab / MIB), cpu=rng.randrange(gc_threads) or None)
            top += tlab
            if meta < 48 * MIB and rng.random() < 0.2:  # class loading
                yield Op("touch", 0, handle="metaspace", offset=meta, length=256 * KIB,
                         time_ns=clock.ns)
                meta += 256 * KIB
            if code < 40 * MIB and rng.random() < 0.1:  # the JIT compiles a method
                arena = f"arena.{serial}"
                serial += 1
                arenas.append(arena)
                yield Op("malloc", 0, handle=arena, size=rng.choice((32, 64, 128, 256)) * KIB,
                         time_ns=clock.ns)
                yield Op("touch", 0, handle="codecache", offset=code, length=64 * KIB,
                         time_ns=clock.ns)
                code += 64 * KIB
            if len(arenas) > 4:
                yield Op("free", 0, handle=arenas.pop(0), time_ns=clock.ns)
        # minor GC: survivors are copied to a survivor space, some promoted to the old gen
        gcs_left -= 1
        idle = not gcs_left
        grown = 0
        if idle:  # the job is done: its data becomes garbage, the application idles
            live_set = rng.randrange(8 * MIB, 24 * MIB)
            gcs_left = rng.randrange(15, 40)
        else:
            grown = min(200 * MIB, live_set + rng.randrange(MIB, 6 * MIB)) - live_set
            live_set += grown
        survived = _pages(min(survivor, top * rng.randrange(5, 15) // 100))
        # tenured: the job's new long-lived data, and some objects that die soon after
        promoted = _pages(grown + top * rng.randrange(1, 4) // 100)
        to_space = eden + survivor * rng.randrange(2)
        yield from gc_touch(to_space, survived)
        if idle or old_top + promoted > old_c:  # full GC: compact the old gen to the live set
            # (when idle, the periodic GC of JEP 346 that gives memory back to the system)
            clock.wait(rng, 1_000_000_000 if idle else 50_000_000)
            old_top = min(old_top, _pages(live_set))
            yield from gc_touch(young_max, max(old_top, PAGE))
            free_ratio = 1 - (old_top + promoted) / old_c
            new_c = old_c
            if free_ratio < 0.4:  # MinHeapFreeRatio: grow
                new_c = min(xmx - young_max, _pages(int((old_top + promoted) / 0.6)))
            elif free_ratio > 0.7:  # MaxHeapFreeRatio: shrink
                new_c = max(old_min, _pages(int((old_top + promoted) / 0.3)))
            yield from resize(young_max, old_c, new_c)
            old_c = new_c
            new_young = min(young_max, max(young_min, _pages(old_c // 2)))
            yield from resize(0, young, new_young)
            young = new_young
            promoted = min(promoted, old_c - old_top)
        if promoted > 0:
            yield from gc_touch(young_max + old_top, promoted)
            old_top += promoted
        clock.wait(rng, 5_000_000)  # the pause


# -- fsmark -----------------------------------------------------------------------------------
def fsmark(rng: random.Random, cpus: int) -> Iterator[Op]:
    """fs_mark: threads create files, write them in 16 KiB calls and fsync each one; files are
    read back later, and the oldest are unlinked to keep about 256 MiB on disk."""
    threads = max(1, min(4, cpus))
    keep = 256 * MIB // threads

    def thread(t: int) -> Iterator[Op]:
        """One fs_mark thread in its own directory (so no thread unlinks another's file)."""
        cpu = t or None
        files: OrderedDict[str, int] = OrderedDict()  # path -> size, oldest first
        stored = 0
        serial = 0
        while True:
            path = f"/fsmark/{t:02d}/{serial:08x}"
            serial += 1
            size = _pages(round(4 * KIB * 256 ** rng.random()))  # 4 KiB .. 1 MiB
            yield Op("create", 0, path=path, size=0, cpu=cpu)
            for off in range(0, size, 16 * KIB):
                yield Op("write", 0, path=path, offset=off, length=min(16 * KIB, size - off),
                         cpu=cpu)
            yield Op("fsync", 0, path=path, cpu=cpu)
            files[path] = size
            stored += size
            if rng.random() < 0.25 and files:  # read back an earlier file
                old = list(files)[rng.randrange(len(files))]
                for off in range(0, files[old], 64 * KIB):
                    yield Op("read", 0, path=old, offset=off,
                             length=min(64 * KIB, files[old] - off), cpu=cpu)
            while stored > keep:
                victim, vsize = files.popitem(last=False)
                stored -= vsize
                yield Op("unlink", 0, path=victim, cpu=cpu)

    workers = [thread(t) for t in range(threads)]
    while True:  # the threads run concurrently: interleave their system calls
        yield next(workers[rng.randrange(threads)])


# -- scan -------------------------------------------------------------------------------------
def scan(rng: random.Random, cpus: int) -> Iterator[Op]:
    """A 32 MiB hot set read at random between sequential scans of 96 MiB of a big table;
    each scan reads new data, so only frequency (ARC's MFU list) can protect the hot set."""
    record = 128 * KIB
    hot_files, hot_size = 8, 4 * MIB
    table, window = 4 * GIB, 96 * MIB
    for i in range(hot_files):
        yield Op("create", 0, path=f"/db/hot.{i}", size=hot_size)
    yield Op("create", 0, path="/db/table", size=table)
    start = 0
    while True:
        for _ in range(1500):
            f = rng.randrange(hot_files)
            off = rng.randrange(hot_size // record) * record
            yield Op("read", 0, path=f"/db/hot.{f}", offset=off, length=record)
        for off in range(start, start + window, record):
            yield Op("read", 0, path="/db/table", offset=off, length=record)
        start = (start + window) % table


GENERATORS: dict[str, Generator] = {g.name: g for g in (
    Generator("memcached", "slab churn: ETC item sizes, LRU evictions, 4 worker CPUs",
              200_000, memcached),
    Generator("redis", "a growing keyspace with overwrites, appends and deletes", 200_000, redis),
    Generator("jvm", "heap growth and GC cycles: mmap, mprotect, touches, madvise", 20_000, jvm),
    Generator("fsmark", "create, write, fsync, read back and unlink files", 50_000, fsmark),
    Generator("scan", "a hot file set with periodic scans (ARC beats LRU)", 30_000, scan),
)}


def generate(kind: str, events: int | None = None, seed: int = 0, cpus: int = 4
             ) -> Iterator[Op]:
    """The first ``events`` operations (the kind's default if None) of ``kind``."""
    g = GENERATORS[kind]
    n = g.default_events if events is None else events
    return islice(g.fn(random.Random(seed), cpus), n)


def write_trace(kind: str, stream: TextIO, events: int | None = None, seed: int = 0,
                cpus: int = 4, progress: Callable[[int], None] | None = None) -> int:
    """Write a native trace of ``kind`` to ``stream``; returns the operations written."""
    ops = generate(kind, events, seed, cpus)
    if progress is not None:
        ops = _counted(ops, progress)
    stream.write(f"# mmsim-trace v1\n# mmsim gen {kind} --events "
                 f"{GENERATORS[kind].default_events if events is None else events} "
                 f"--seed {seed} --cpus {cpus}\n")
    return write_native(ops, stream, header=False)


def _counted(ops: Iterator[Op], progress: Callable[[int], None]) -> Iterator[Op]:
    for n, op in enumerate(ops, 1):
        yield op
        if not n & 4095:
            progress(4096)
