"""The ARC: OSv's sizing rules, the paper's hit ratios, scan resistance, memory pressure, costs.

Expected hit ratios come from outside the simulator: the ARC paper's OLTP table as measured with
libCacheSim (../shared/data/arc-paper/README.md), the scan-mix figures of anchors.md, and, on
generated traces, straightforward transcriptions of the paper's Fig. 4 and of LRU written here.
"""

from __future__ import annotations

import itertools
import json
import os
import random

import pytest
from click.testing import CliRunner
from helpers import booter
from mmsim.fs.zfs_arc.buffers import buffer_pages
from mmsim.fs.zfs_arc.fs import (
    FILE_META_BUFS,
    FILE_META_BYTES,
    FILE_META_HDRS,
    FILE_META_OTHER,
    INDIRECT_SIZE,
    SHRINK_MIN,
)
from mmsim.fs.zfs_arc.policy import available_policies, policy_class
from mmsim.fs.zfs_arc.policy_arc import ArcPolicy
from mmsim.fs.zfs_arc.policy_lru import LruPolicy
from mmsim.fs.zfs_arc.policy_zfs import (
    BUF_SIZE,
    DBUF_SIZE,
    HDR_SIZE,
    RESIDENT_HDR,
    ZfsArcPolicy,
    arc_init,
)
from mmsim.kernel import Kernel, load_config
from mmsim.kernel import sys_fs as _sys_fs  # noqa: F401  (registers cache_policy, arc_size...)
from mmsim.mm.constants import PAGE_SIZE

from mmsim.trace import Op, read_trace
from mmsim.trace import blocktrace as _blocktrace  # noqa: F401  (registers the formats)

MIB = 1 << 20
GIB = 1 << 30
SEC = 1_000_000_000
OLTP = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "arc-paper",
                    "OLTP.lis.zst")
if not os.path.exists(OLTP):
    OLTP = "/work/shared/data/arc-paper/OLTP.lis.zst"
BLOCK = 512  # .lis pages


# -- independent references ------------------------------------------------------------------
def paper_arc_hits(trace: list[int], c: int) -> list[bool]:
    """Fig. 4 of Megiddo & Modha, transcribed with plain lists (slow, obviously right)."""
    t1: list[int] = []
    t2: list[int] = []
    b1: list[int] = []
    b2: list[int] = []
    p = 0.0
    out = []

    def replace(x: int) -> None:
        if t1 and ((x in b2 and len(t1) == p) or len(t1) > p):
            b1.append(t1.pop(0))
        else:
            b2.append(t2.pop(0))

    for x in trace:
        if x in t1 or x in t2:
            (t1 if x in t1 else t2).remove(x)
            t2.append(x)
            out.append(True)
            continue
        out.append(False)
        if x in b1:
            p = min(p + max(len(b2) / len(b1), 1.0), c)
            replace(x)
            b1.remove(x)
            t2.append(x)
        elif x in b2:
            p = max(p - max(len(b1) / len(b2), 1.0), 0.0)
            replace(x)
            b2.remove(x)
            t2.append(x)
        else:
            if len(t1) + len(b1) == c:
                if len(t1) < c:
                    b1.pop(0)
                    replace(x)
                else:
                    t1.pop(0)
            elif len(t1) + len(b1) + len(t2) + len(b2) >= c:
                if len(t1) + len(b1) + len(t2) + len(b2) == 2 * c:
                    b2.pop(0)
                replace(x)
            t1.append(x)
    return out


def plain_lru_hits(trace: list[int], c: int) -> list[bool]:
    cache: list[int] = []
    out = []
    for x in trace:
        hit = x in cache
        out.append(hit)
        if hit:
            cache.remove(x)
        elif len(cache) == c:
            cache.pop(0)
        cache.append(x)
    return out


def run_policy(policy, trace: list[int], size: int = 1) -> list[bool]:  # type: ignore[no-untyped-def]
    return [policy.access(x, size) for x in trace]


def generated_traces(n: int = 40) -> list[tuple[list[int], int]]:
    rng = random.Random(5)
    out = []
    for _ in range(n):
        objects = rng.randint(2, 80)
        c = rng.randint(1, 30)
        length = rng.randint(50, 1500)
        if rng.random() < 0.5:
            trace = [rng.randint(0, objects) for _ in range(length)]
        else:  # skewed, with loops and scans mixed in
            trace = []
            while len(trace) < length:
                r = rng.random()
                if r < 0.6:
                    trace.append(int(rng.paretovariate(0.8)) % objects)
                elif r < 0.8:
                    start = rng.randint(0, 500)
                    trace.extend(range(start, start + rng.randint(1, 2 * c + 1)))
                else:
                    trace.extend(rng.sample(range(objects), min(objects, c)))
        out.append((trace, c))
    return out


# -- arc_init ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ram, c_max, c_min", [
    (2 * GIB, 1280 * MIB, 160 * MIB),  # §8's examples
    (8 * GIB, 7 * GIB, 896 * MIB),
    # by hand from §8's rules: c_max = 5/8 RAM under 1 GiB, c_min = c_max/8 while that is the
    # larger of the two floors, else max(RAM/32, 16 MiB)
    (512 * MIB, 320 * MIB, 40 * MIB),
    (256 * MIB, 160 * MIB, 20 * MIB),
    (128 * MIB, 80 * MIB, 16 * MIB),
    (64 * GIB, 63 * GIB, 63 * GIB // 8),
])
def test_arc_init_sizes_as_osv(ram: int, c_max: int, c_min: int) -> None:
    got_min, got_max, meta = arc_init(ram)
    assert (got_max, got_min) == (c_max, c_min)
    assert meta == c_max // 4


def test_a_booted_guest_sizes_its_arc_from_its_ram() -> None:
    k = Kernel(load_config(None, {"memory": "2G"}))
    arc = k.summary()["arc"]
    # kmem_size() = physmem pages * 4096, physmem from the usable e820 memory (RAM less the
    # legacy hole and SeaBIOS's top: 2 GiB - 528 KiB); arc.c scales arc_c = kmem/8
    kmem = k.mem.phys_mem_size // 4096 * 4096
    assert kmem == (2 << 30) - 540672
    assert arc["c_max_bytes"] == kmem // 8 * 5
    assert arc["c_min_bytes"] == arc["c_max_bytes"] // 8
    assert arc["c_bytes"] == arc["c_max_bytes"] and arc["p_bytes"] == arc["c_bytes"] // 2
    k = Kernel(load_config(None, {"memory": "2G", "arc_size": "64M"}))
    arc = k.summary()["arc"]
    assert arc["c_min_bytes"] == arc["c_max_bytes"] == arc["c_bytes"] == 64 * MIB


# -- the paper's algorithm ------------------------------------------------------------------------
def test_arc_and_lru_equal_straightforward_transcriptions_hit_for_hit() -> None:
    for trace, c in generated_traces():
        assert run_policy(ArcPolicy(c), trace) == paper_arc_hits(trace, c), (c, trace[:50])
        assert run_policy(LruPolicy(c), trace) == plain_lru_hits(trace, c)


def _replay_with_buffers(cls: type, trace: list[int], c: int,
                         budgets: list[int] | None) -> tuple[tuple[object, ...], dict[int, int]]:
    """The policy's state and which buffer each cached key holds, after ``trace`` referenced
    as the file system does: one key at a time (``budgets`` None; an evicted record's buffer
    goes to the record that replaced it), or in batches through access_many with a budget
    drawn from ``budgets``. Buffers are numbered as they are first needed."""
    policy = cls(c * 4096)
    bufs: dict[int, int] = {}
    spare: list[int] = []
    new = itertools.count()
    policy.on_evict = lambda k: spare.append(bufs.pop(k))

    def one(x: int) -> None:
        if not policy.access(x, 4096) and x in policy:
            bufs[x] = spare.pop() if spare else next(new)

    rng = random.Random(c)
    i = 0
    while i < len(trace):
        if budgets is None:
            j = i
        else:
            j = policy.access_many(trace, 4096, i, rng.choice(budgets), bufs)
            assert not spare, "on_evict called in a batch"
            last = trace[j - 1] if j > i else None
            if last is not None and last not in bufs and last in policy:
                bufs[last] = next(new)  # the miss that evicted nothing: a new buffer
        if j == i:  # one at a time (or over budget: the caller's access())
            one(trace[i])
            j = i + 1
        i = j
    state = (policy.hits, policy.misses, policy.evictions, policy.p, policy.lists())
    return state, bufs


def test_access_many_is_access_one_key_at_a_time() -> None:
    """A batch through access_many (the block-trace path) leaves each policy exactly where
    access() one key at a time does: hits, counters, p, lists, and every cached key holding the
    buffer it would hold (an evicted record's buffer handed to the key that replaced it),
    whatever the budget."""
    for trace, c in generated_traces(12):
        for cls in (ArcPolicy, LruPolicy):
            expected = _replay_with_buffers(cls, trace, c, None)
            assert _replay_with_buffers(cls, trace, c, [0, 1, 3, 1 << 40]) == expected
            assert _replay_with_buffers(cls, trace, c, [1 << 40]) == expected


def test_arc_counts_bytes_exactly_as_objects_for_equal_records() -> None:
    for trace, c in generated_traces(10):
        assert run_policy(ArcPolicy(c * 4096), trace, 4096) == paper_arc_hits(trace, c)


def test_arc_and_lru_equal_libcachesim_hit_for_hit() -> None:
    lcs = pytest.importorskip("libcachesim")
    for trace, c in generated_traces(25):
        for ours, theirs in ((ArcPolicy, lcs.ARC), (LruPolicy, lcs.LRU)):
            cache = theirs(cache_size=c)
            expected = []
            for x in trace:
                req = lcs.Request()
                req.obj_id = x
                req.obj_size = 1
                expected.append(cache.get(req))
            assert run_policy(ours(c), trace) == expected, (ours.name, c)


@pytest.fixture(scope="module")
def oltp_ids() -> list[int]:
    if not os.path.exists(OLTP):
        pytest.skip("the OLTP trace is not in ../shared/data/arc-paper")
    ops = read_trace(OLTP, "lis")
    assert next(ops).kind == "create"
    return [b for op in ops for b in op.blocks]  # BlockReads: the requests in order


def test_oltp_trace_has_the_papers_footprint(oltp_ids: list[int]) -> None:
    assert len(oltp_ids) == 914_145
    assert len(set(oltp_ids)) == 186_880


def oltp_table() -> list[tuple[str, int, float]]:
    """(policy, c, hit ratio %) of every row and column of the data folder's README table."""
    readme = os.path.join(os.path.dirname(OLTP), "README.md")
    if not os.path.exists(readme):
        return []
    with open(readme, encoding="utf-8") as f:
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in f if line.lstrip().startswith("|")]
    header = [h.lower() for h in rows[0]]
    assert header[0] == "c" and set(header[1:]) <= {"lru", "arc"}, header
    out = []
    for row in rows[1:]:
        if not row[0].isdigit():
            continue  # the |---| line under the header
        out += [(name, int(row[0]), float(v)) for name, v in zip(header[1:], row[1:], strict=True)]
    return out


def test_the_oltp_table_is_read_whole() -> None:
    table = oltp_table()
    if not table:
        pytest.skip("the OLTP README is not in ../shared/data/arc-paper")
    assert {c for _, c, _ in table} >= {1000, 2000, 5000, 10000, 15000}
    assert {name for name, _, _ in table} == {"lru", "arc"}


@pytest.mark.parametrize("name, c, expected", oltp_table())
def test_oltp_hit_ratios_of_the_paper(oltp_ids: list[int], name: str, c: int,
                                      expected: float) -> None:
    policy = policy_class(name)(c * BLOCK)
    access = policy.access
    for x in oltp_ids:
        access(x, BLOCK)
    assert policy.hits + policy.misses == len(oltp_ids)
    assert round(100 * policy.hits / len(oltp_ids), 2) == expected


def test_mmsim_run_reproduces_the_oltp_arc_ratio() -> None:
    if not os.path.exists(OLTP):
        pytest.skip("the OLTP trace is not in ../shared/data/arc-paper")
    from mmsim.cli import main

    result = CliRunner().invoke(main, ["run", OLTP, "--cache-policy", "arc", "--arc-size",
                                       str(1000 * BLOCK), "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    arc, disk = summary["arc"], summary["disk"]
    assert arc["hits"] + arc["misses"] == 914_145
    assert round(100 * arc["hit_ratio"], 2) == 38.95
    assert disk["reads"] == arc["misses"] and disk["read_bytes"] == arc["misses"] * BLOCK
    assert summary["time_ns"] >= disk["busy_ns"] > 0  # misses waited for the disk
    # each 512-byte record is a page (posix_memalign(4096, 512)): 1000 pages cached
    assert arc["buffers"] == 1000 and summary["memory"]["categories"]["arc"] == 1000 * PAGE_SIZE


# -- behaviours ---------------------------------------------------------------------------
def scan_mix(rounds: int = 50, seed: int = 1) -> list[int]:
    """anchors.md: 800 hot objects, 4000 hot requests, then 2000 never-seen objects, repeated."""
    rng = random.Random(seed)
    trace: list[int] = []
    fresh = itertools.count(10_000)
    for _ in range(rounds):
        trace.extend(rng.randrange(800) for _ in range(4000))
        trace.extend(next(fresh) for _ in range(2000))
    return trace


def test_scan_mix_arc_keeps_its_hot_set_and_lru_does_not() -> None:
    trace = scan_mix()
    arc = sum(run_policy(ArcPolicy(1000), trace)) / len(trace)
    lru = sum(run_policy(LruPolicy(1000), trace)) / len(trace)
    assert arc == pytest.approx(0.664, abs=0.005)  # the ceiling is 4000/6000 less warm-up
    assert lru == pytest.approx(0.534, abs=0.01)
    assert arc > lru + 0.1


boot = booter("512M")


def replay(k: Kernel, path: str, records: list[int], rs: int) -> None:
    for i, r in enumerate(records, 1):
        k.apply(Op("read", i, path=path, offset=r * rs, length=rs))


@pytest.mark.parametrize("policy", ["zfs", "arc", "lru"])
def test_a_one_time_scan_evicts_the_hot_set_only_under_lru(policy: str) -> None:
    rs = 4096
    # room for 1000 records: in OSv's ARC a record also costs its headers and dbuf, and the
    # file's metadata and the indirect blocks above the cached records are held in it too
    size = 1000 * rs if policy != "zfs" else (
        1000 * (rs + RESIDENT_HDR + DBUF_SIZE) + FILE_META_BYTES + FILE_META_OTHER + (4 << 20))
    # (+4 MiB: between reclaim passes, once a simulated second, ghosts are not trimmed
    # unless arc_no_grow (arc.c l.2041), and each keeps its 280-byte header in the size)
    k = boot(cache_policy=policy, arc_size=size, recordsize=rs)
    k.apply(Op("create", 0, path="/db", size=1 << 30))
    trace = scan_mix(rounds=12)
    replay(k, "/db", trace[:6000 * 4], rs)  # warm up
    arc = k.summary()["arc"]
    hits0, misses0 = arc["hits"], arc["misses"]
    replay(k, "/db", trace[6000 * 4:], rs)
    arc = k.summary()["arc"]
    ratio = (arc["hits"] - hits0) / (arc["hits"] - hits0 + arc["misses"] - misses0)
    if policy == "lru":
        assert ratio < 0.56
    else:
        assert ratio > 0.64  # hot requests hit; only the scan misses
    k.check()


def test_lru_miss_ratio_never_rises_with_size(oltp_ids: list[int]) -> None:
    prefix = oltp_ids[:150_000]
    misses = []
    for c in (50, 100, 200, 400, 800, 1600, 3200, 6400):
        p = LruPolicy(c)
        for x in prefix:
            p.access(x, 1)
        misses.append(p.misses)
    assert misses == sorted(misses, reverse=True) and misses[0] > misses[-1]


# -- memory: buffers, reclaim, shrinker -----------------------------------------------------
@pytest.mark.parametrize("recordsize, pages", [
    (128 << 10, 33), (512, 1), (4096, 1), (8192, 3), (1 << 20, 257)])
def test_a_record_costs_what_posix_memalign_4096_costs(recordsize: int, pages: int) -> None:
    assert buffer_pages(recordsize) == pages
    k = boot(recordsize=recordsize)
    k.apply(Op("create", 1, path="/f", size=4 * recordsize))
    used0 = k.ranges.total_pages - k.ranges.free_pages - k.pool.l1_pages - k.pool.l2_pages
    k.apply(Op("read", 2, path="/f", offset=0, length=1))
    # the file's measured metadata and one L1 indirect block (4 records) come with it
    meta_pages = (FILE_META_BUFS - 1) * buffer_pages(FILE_META_BYTES // FILE_META_BUFS) + (
        buffer_pages(FILE_META_BYTES // FILE_META_BUFS + FILE_META_BYTES % FILE_META_BUFS)
        + buffer_pages(INDIRECT_SIZE))
    cats = k.memory_categories()
    assert cats["arc"] == (pages + meta_pages) * PAGE_SIZE
    used1 = k.ranges.total_pages - k.ranges.free_pages - k.pool.l1_pages - k.pool.l2_pages
    arc = k.summary()["arc"]
    overhead = arc["hdr_size_bytes"] + arc["other_size_bytes"]  # malloc'ed in OSv
    headers = cats["arc_headers"] // PAGE_SIZE
    assert overhead > 0 and headers == -(-overhead // PAGE_SIZE)
    assert used1 - used0 == pages + meta_pages + headers  # out of the runs (or L1/L2)
    assert arc["data_size_bytes"] == recordsize + FILE_META_BYTES + INDIRECT_SIZE
    assert arc["mru_bytes"] == recordsize
    k.check()


def eat(k: Kernel, nbytes: int) -> list[tuple[int, int]]:
    """Another subsystem's memory, taken straight from the runs."""
    got = k.ranges.alloc_pages_bulk(nbytes // PAGE_SIZE)
    k.add_category("test_eaten", lambda: sum(n for _, n in got) * PAGE_SIZE)
    return got


def fill_arc(k: Kernel, nrecords: int, rs: int = 128 << 10) -> None:
    k.apply(Op("create", 1, path="/big", size=nrecords * rs))
    k.apply(Op("read", 2, path="/big", offset=0, length=nrecords * rs))


def test_zfs_arc_shrinks_by_a_32nd_every_other_second_under_pressure_and_not_below_c_min() -> None:
    k = boot("1G")  # room for the boot footprint and a full ARC under 3/4 of the RAM
    zfs = k.zfs.policy
    c_min, c_max = zfs.c_min, zfs.capacity
    fill_arc(k, 5400)  # 675 MiB of records: fills the ARC to c_max (640 MiB)
    assert zfs.size >= c_max - (128 << 10) and zfs.c == c_max
    assert not zfs.memory_low()
    eat(k, k.ranges.free_pages * PAGE_SIZE - k.mem.phys_mem_size // 5)  # now free < 25 %
    assert zfs.memory_low()
    seen = [zfs.c]
    for second in range(1, 200):
        k.apply(Op("sleep", 10 + second, duration_ns=1_000_000_000))
        seen.append(zfs.c)
        assert zfs.c >= c_min
        assert zfs.size <= zfs.c
    drops = [a - b for a, b in zip(seen, seen[1:]) if a != b]
    assert drops, "the ARC never shrank"
    for a, b in zip(seen, seen[1:]):
        assert b == a or b == max(a - a // 32, c_min)  # aggressive passes only
    # alternating aggressive/conservative: never two drops in a row while pressure lasts
    assert all(not (seen[i] > seen[i + 1] > seen[i + 2]) for i in range(len(seen) - 2))
    assert seen[-1] < c_max
    if not zfs.memory_low():  # relieved: the target stopped falling above c_min
        assert seen[-1] == seen[-2] >= c_min
    k.check()
    k.zfs.check()


def test_under_sustained_pressure_c_falls_to_c_min_and_stays_there() -> None:
    k = boot("256M")
    zfs = k.zfs.policy
    rs = 128 << 10
    fill_arc(k, 240)  # 30 MiB cached, the ARC still growing
    # free stays under 25 % even with the ARC at c_min, and above the reclaimer's 10 %
    phys = k.mem.phys_mem_size
    eat(k, k.ranges.free_pages * PAGE_SIZE - 15 * phys // 100)
    assert zfs.memory_low()
    seen = []
    for i in range(600):  # keep re-reading the 30 MiB: the ARC stays full at its target
        k.apply(Op("read", 10 + i, path="/big", offset=(i % 240) * rs, length=rs))
        k.apply(Op("sleep", 10 + i, duration_ns=200_000_000))
        assert zfs.c >= zfs.c_min
        assert zfs.size >= zfs.c_min - rs  # its own reclaim never evicts under c_min
        seen.append(zfs.c)
    assert zfs.c == zfs.c_min and zfs.no_grow
    assert len(set(seen)) > 10  # it got there by 1/32 steps
    assert k.oom is None
    k.check()
    k.zfs.check()
    # only a shrinker call takes the ARC's size under c_min (the target stays)
    k.zfs.request_memory(0, hard=False)
    assert zfs.size < zfs.c_min - rs and zfs.c == zfs.c_min


def test_zfs_arc_does_not_shrink_with_enough_free_memory() -> None:
    k = boot("256M")
    fill_arc(k, 400)
    c = k.zfs.policy.c
    for second in range(30):
        k.apply(Op("sleep", 10 + second, duration_ns=1_000_000_000))
    assert k.zfs.policy.c == c and not k.zfs.policy.no_grow


def test_request_memory_soft_frees_16_mib_and_keeps_c_hard_shrinks_via_lowmem() -> None:
    k = boot("512M")
    zfs = k.zfs.policy
    fill_arc(k, 600)  # 75 MiB
    size0, c0 = zfs.mru_size + zfs.mfu_size, zfs.c
    freed = k.zfs.request_memory(0, hard=False)
    # freed counts records' bytes (arc_evict's b_size), as OSv's arc_sized_adjust returns
    assert freed >= SHRINK_MIN and zfs.mru_size + zfs.mfu_size == size0 - freed
    assert zfs.c == c0  # arc_sized_adjust leaves the target alone
    freed = k.zfs.request_memory(20 * MIB, hard=False)
    assert freed >= 20 * MIB and zfs.c == c0
    k.check()
    # hard: arc_lowmem wakes the reclaim thread, whose pass shrinks c (aggressively) at once
    size1 = zfs.mru_size + zfs.mfu_size
    freed = k.zfs.request_memory(MIB, hard=True)
    assert freed >= SHRINK_MIN and zfs.mru_size + zfs.mfu_size == size1 - freed
    k.apply(Op("sleep", 99, duration_ns=1))
    assert zfs.c < c0 and zfs.c >= zfs.c_min
    k.check()
    k.zfs.check()


# -- the ARC as arc.c (issue 12, item 5) -------------------------------------------------------
REC = 128 << 10


def filled(capacity: int, n: int, c_min: int | None = None) -> ZfsArcPolicy:
    """A ZFS ARC alone (no memory pressure, time 0) after ``n`` new 128 KiB records."""
    arc = ZfsArcPolicy(capacity, c_min=c_min)
    for key in range(n):
        arc.access(key, REC)
    return arc


def test_p_grows_with_anonymous_inserts_beyond_p_while_the_arc_is_under_c() -> None:
    """arc_get_data_buf, arc.c l.2755-2757: if (arc_size < arc_c && hdr->b_state == arc_anon
    && arc_anon->arcs_size + arc_mru->arcs_size > arc_p) arc_p = MIN(arc_c, arc_p + size).
    c = 64 MiB, p = 32 MiB (arc_init's c/2): from the 257th new record on, MRU > p and each
    insert adds its 128 KiB to p, so p follows the MRU: p = n * 128 KiB."""
    arc = filled(64 * MIB, 256)
    assert arc.p == 32 * MIB  # MRU = 32 MiB is not > p yet
    arc.access(256, REC)
    assert arc.p == 32 * MIB + REC
    for key in range(257, 300):
        arc.access(key, REC)
    assert arc.p == 300 * REC == 39321600
    # until arc_size (records + 424 B of headers + 280 B of dbuf each) reaches c: the 510th
    # record takes it to 510 * 131776 = 67205760 >= 67108864, so p stays at 509 * 128 KiB
    for key in range(300, 520):
        arc.access(key, REC)
    assert arc.p == 509 * REC == 66715648
    # a record seen before (a ghost hit) is not anonymous: arc_adapt moves p, not this rule
    assert arc.c == 64 * MIB


def test_needfree_turns_the_next_conservative_reclaim_pass_aggressive() -> None:
    """arc_reclaim_thread, arc.c l.2511-2519: if (needfree && last_reclaim ==
    ARC_RECLAIM_CONS) last_reclaim = ARC_RECLAIM_AGGR; an aggressive pass runs arc_shrink,
    c -= c >> 5 (arc_shrink_shift 5, l.2343): 64 MiB -> 65011712 -> 62980096 -> 61011968."""
    arc = filled(64 * MIB, 520, c_min=16 * MIB)
    low = [True]
    arc.memory_low = lambda: low[0]
    arc.reclaim_pass(0)  # pressure: aggressive (arc_no_grow set)
    assert arc.c == 64 * MIB - 2 * MIB == 65011712
    arc.reclaim_pass(SEC)  # the next one alternates: conservative, c stays
    assert arc.c == 65011712
    arc.reclaim_pass(2 * SEC)  # aggressive again
    assert arc.c == 65011712 - 65011712 // 32 == 62980096
    arc.lowmem()  # needfree: the pass that would be conservative is aggressive
    arc.reclaim_pass(3 * SEC)
    assert arc.c == 62980096 - 62980096 // 32 == 61011968
    assert not arc.needfree  # cleared at the end of the pass
    arc.reclaim_pass(4 * SEC)  # and then conservative: the alternation goes on from there
    assert arc.c == 61011968


def test_the_arc_falls_below_c_min_under_the_shrinker_and_c_stays_at_c_min() -> None:
    """arc_shrink (arc.c l.2338-2346) never takes c under c_min, and arc_shrink/arc_adjust
    evict only down to c; but arc_sized_adjust (l.2176-2247, the shrinker's path) has no
    c_min test at all: it evicts whatever it is asked for. Nothing stops at c_min or 24 MiB."""
    arc = filled(64 * MIB, 520, c_min=16 * MIB)
    arc.memory_low = lambda: True
    t = 0
    while arc.c > arc.c_min:
        arc.reclaim_pass(t)
        t += SEC
    assert arc.c == 16 * MIB and arc.mru_size + arc.mfu_size >= 16 * MIB - 2 * REC
    for _ in range(3):  # the shrinker: max(target, 16 MiB) per call, whatever c_min is
        assert arc.sized_adjust(SHRINK_MIN) >= min(SHRINK_MIN, arc.mru_size + arc.mfu_size)
    assert arc.mru_size + arc.mfu_size == 0 and arc.size < arc.c_min
    for _ in range(5):  # squeezed: c stays at c_min (arc_shrink: if arc_c > arc_c_min)
        arc.reclaim_pass(t)
        t += SEC
    assert arc.c == arc.c_min


def test_the_arc_size_counts_headers_ghosts_included_and_dbufs() -> None:
    """arc_space_consume (arc.c l.1359-1379) adds arc_buf_hdr_t (hdr_cons, l.934) and
    arc_buf_t (buf_cons, l.948) to hdr_size and dmu_buf_impl_t (dbuf.c l.1725) to
    other_size; an evicted record's arc_buf_t and dbuf go (arc_buf_destroy, dbuf_do_evict),
    its header stays with the ghost until arc_evict_ghost destroys it. On x86-64 OSv:
    280 + 144 and 280 bytes (policy_zfs.py: summed from the structs)."""
    assert (HDR_SIZE, BUF_SIZE, DBUF_SIZE) == (280, 144, 280)
    arc = filled(8 * MIB, 40)
    assert arc.space() == (40 * REC, 40 * 424, 40 * 280)
    assert arc.size == 40 * (REC + 424 + 280)
    arc.sized_adjust(10 * REC)  # 10 to the MRU ghost list
    assert arc.lists()["mru_ghost_count"] == 10
    assert arc.space() == (30 * REC, 30 * 424 + 10 * 280, 30 * 280)
    arc.access(0, REC)  # a ghost hit: back with a new arc_buf_t and dbuf
    assert arc.space() == (31 * REC, 31 * 424 + 9 * 280, 31 * 280)
    arc.remove(1)  # a ghost forgotten: its header goes
    arc.remove(20)  # a resident record dropped: all three go
    assert arc.space() == (30 * REC, 30 * 424 + 8 * 280, 30 * 280)
    assert arc.size == sum(arc.space())


def test_reading_32_mib_twice_gives_the_arc_of_real_osv() -> None:
    """osv-real.md §3 (128M guest, 1 MiB reads of a 32 MiB file, twice): size 34234552 after
    the first read, data_size 33921536, hdr_size 128608, other_size 184408; the second read
    all hits, no growth; p = c/2 unchanged. The 128 KiB records (256) and their headers and
    dbufs, the 16 KiB indirect blocks (2 L1 + 1 L2) come from the code; the rest of the
    file's metadata is the measured remainder (fs.py: FILE_META_*)."""
    k = boot("128M")
    zfs = k.zfs.policy
    c0, p0 = zfs.c, zfs.p
    assert p0 == c0 // 2
    k.apply(Op("create", 1, path="/blob32m", size=32 * MIB))
    free0 = k.ranges.free_pages
    seen = []
    for _ in range(2):
        for i in range(32):
            k.apply(Op("read", 2 + i, path="/blob32m", offset=i * MIB, length=MIB))
        seen.append(k.summary()["arc"])
    first, second = seen
    assert first["data_size_bytes"] == 32 * MIB + 367104 == 33921536
    assert first["data_size_bytes"] == 256 * REC + 3 * INDIRECT_SIZE + FILE_META_BYTES
    assert first["hdr_size_bytes"] == (256 + 3 + FILE_META_BUFS) * 424 + FILE_META_HDRS * 280
    assert first["hdr_size_bytes"] == 128608
    assert first["other_size_bytes"] == 259 * 280 + FILE_META_OTHER == 184408
    assert first["size_bytes"] == 34234552
    assert (first["misses"], first["hits"]) == (256, 0)
    assert (second["misses"], second["hits"]) == (256, 256)
    assert second["size_bytes"] == first["size_bytes"]
    assert zfs.c == c0 and zfs.p == p0  # p = c/2, unchanged
    # the blocks are real pages in `arc`; headers and dbufs are malloc'ed bytes (overhead)
    assert k.zfs.overhead_bytes() == 128608 + 184408
    used = (free0 - k.ranges.free_pages) * PAGE_SIZE
    assert k.memory_categories()["arc"] <= used
    assert 33921536 < k.memory_categories()["arc"] < 33921536 * 1.05
    k.check()
    k.zfs.check()
    k.apply(Op("unlink", 99, path="/blob32m"))
    assert k.summary()["arc"]["size_bytes"] == 0 and k.memory_categories()["arc"] == 0


def test_the_reclaimer_reaches_the_arc_through_the_shrinker_registry() -> None:
    k = boot("256M")
    registry = getattr(k, "shrinkers", None)
    if registry is None:
        pytest.skip("no shrinker registry in this build")
    assert "arc" in registry.stats
    fill_arc(k, 800)
    before = k.zfs.policy.size
    registry.shrink_all(0, False)
    assert before - k.zfs.policy.size >= SHRINK_MIN


def test_reads_are_short_at_eof_and_missing_files_are_enoent() -> None:
    k = boot()
    k.apply(Op("create", 1, path="/f", size=1000))
    k.apply(Op("read", 2, path="/f", offset=500, length=4096))
    k.apply(Op("read", 3, path="/f", offset=5000, length=10))
    k.apply(Op("read", 4, path="/nope", offset=0, length=10))
    s = k.summary()
    assert s["arc"]["read_bytes"] == 500
    assert s["app_errors"]["by_kind"] == {"ENOENT": 1}
    # one block: the file's size rounded up to 512 (no indirect block), and its metadata
    assert s["arc"]["mru_bytes"] == 1024
    assert s["arc"]["data_size_bytes"] == 1024 + FILE_META_BYTES
    assert k.files.size("/f") == 1000 and k.files.size("/nope") is None


def test_writes_go_to_disk_on_fsync_and_txg_sync_and_unlink_frees_buffers() -> None:
    k = boot(recordsize="4K")
    k.apply(Op("create", 1, path="/f", size=0))
    k.apply(Op("write", 2, path="/f", offset=0, length=64 << 10))
    assert k.files.size("/f") == 64 << 10
    assert k.summary()["arc"]["dirty_records"] == 16 and k.summary()["disk"]["writes"] == 0
    t0 = k.clock_ns
    k.apply(Op("fsync", 3, path="/f"))
    disk = k.summary()["disk"]
    assert disk["writes"] == 16 and disk["write_bytes"] == 64 << 10 and k.clock_ns > t0
    k.apply(Op("write", 4, path="/f", offset=100, length=10))  # a cached record: no read
    assert k.summary()["disk"]["reads"] == 0
    k.apply(Op("sleep", 5, duration_ns=6_000_000_000))  # the transaction group syncs
    assert k.summary()["disk"]["writes"] == 17 and k.summary()["arc"]["dirty_records"] == 0
    arc_bytes = k.memory_categories()["arc"]
    meta_pages = FILE_META_BUFS * 3 + buffer_pages(INDIRECT_SIZE)  # ~7.4 KiB blocks, one L1
    assert arc_bytes == (16 + meta_pages) * PAGE_SIZE
    k.apply(Op("unlink", 6, path="/f"))
    assert k.memory_categories()["arc"] == 0 and k.files.size("/f") is None
    assert k.summary()["arc"]["size_bytes"] == 0  # headers, dbufs and metadata went too
    k.check()


def test_every_shipped_policy_is_found_by_its_file_name() -> None:
    assert {"zfs", "arc", "lru"} <= set(available_policies())
    assert policy_class("zfs") is ZfsArcPolicy
    with pytest.raises(ValueError, match="unknown cache policy 'nope'.*arc"):
        policy_class("nope")


def test_every_policy_reports_the_same_arc_keys() -> None:
    """`mmsim compare` and sweeps line up summaries of different policies key by key."""
    keys = {}
    for name in ("zfs", "arc", "lru"):
        k = boot(cache_policy=name, arc_size="64K", recordsize="4K")
        k.apply(Op("create", 1, path="/f", size=1 << 20))
        replay(k, "/f", [0, 1, 0, 0, *range(2, 40), 1, 0], 4096)
        arc = k.summary()["arc"]
        assert arc["mru_hits"] + arc["mfu_hits"] == arc["hits"] > 0, name
        keys[name] = list(arc)
    assert keys["zfs"] == keys["arc"] == keys["lru"]
    for key in ("mru_hits", "mfu_hits", "mru_ghost_hits", "mfu_ghost_hits", "no_grow",
                "shrinks", "mfu_bytes", "mru_ghost_count", "mfu_ghost_bytes"):
        assert key in keys["lru"], key


def test_arc_counts_hits_by_list_as_the_paper_names_them() -> None:
    arc = ArcPolicy(2)
    # Fig. 4 by hand (c = 2): 1 hits in T1 (to T2), then in T2 twice; 2 returns from B1
    # (p = 1), which pushes T2's 1 to B2, from where it returns
    for x in (1, 1, 2, 1, 3, 4, 2, 5, 1, 2, 1):
        arc.access(x, 1)
    s = arc.stats()
    assert (s["hits"], s["mru_hits"], s["mfu_hits"]) == (3, 1, 2)
    assert (s["mru_ghost_hits"], s["mfu_ghost_hits"]) == (1, 1)


@pytest.mark.parametrize("latency, expected_ms", [(None, 10), ("50ms", 60)])
def test_arc_reclaim_thread_runs_at_its_wake_latency(latency, expected_ms):
    """arc_lowmem (a hard shrinker call at 10 ms) wakes the reclaim thread: it runs right after
    the operation by default, or ``arc_reclaim_wake_latency`` later, not at a 100 ms tick."""
    k = boot(**({} if latency is None else {"arc_reclaim_wake_latency": latency}))
    k.apply(Op("sleep", 1, duration_ns=10_000_000))  # the boot-time pass has run
    policy = k.zfs.policy
    passes: list[int] = []
    original = policy.reclaim_pass
    policy.reclaim_pass = lambda t: (passes.append(k.clock_ns), original(t))[1]
    k.zfs.request_memory(0, True)  # as a reclaimer's hard pass inside some operation would
    k.wake_threads()
    k.apply(Op("sleep", 2, duration_ns=0 if latency is None else 2_000_000_000))
    assert passes and passes[0] == expected_ms * 1_000_000


def test_a_bad_arc_wake_latency_is_a_one_line_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("arc_reclaim_wake_latency: -5ms\n")
    trace = tmp_path / "t.trace"
    trace.write_text("sleep 1ms\n")
    r = CliRunner().invoke(main_cli(), ["run", str(trace), "--config", str(cfg)])
    assert r.exit_code == 2 and "arc_reclaim_wake_latency" in r.stderr
    assert r.stderr.count("\n") == 1


def main_cli():
    from mmsim.cli import main

    return main
