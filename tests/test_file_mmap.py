"""File mmap through the page cache (reference §7, §12.11, §12.13), through the kernel.

What an application and an operator rely on: a read mapping costs no memory of its own (its
pages are the ARC's), writes never leak into the file unless the mapping is shared, shared
writes reach the disk on msync/munmap or when the write cache overflows, an ARC eviction never
leaves a page-table entry on a freed buffer, and every page stays accounted for.

The expected frames come from the file system's own buffers (a record's data pages follow its
4 KiB header page), not from the page cache under test.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

import pytest
from helpers import booter
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from mmsim.fs.zfs_arc.buffers import PAGE, RUN
from mmsim.kernel import Kernel
from mmsim.kernel import sys_fs as _sys_fs  # noqa: F401  (registers arc_size, recordsize)
from mmsim.mm.address_space import AddressSpace, VmError
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.file_backing import FileTable
from mmsim.mm.pagetables import CountingTablePageSource, PageTables, Perm

from mmsim.trace import Op

K4 = PAGE_SIZE
M = 1 << 20
RS = 128 << 10  # the default record size
PPR = RS // K4  # pages per record
R, RW = 1, 3


boot = booter("256M")


def vm_of(k: Kernel) -> AddressSpace:
    return k.address_space  # type: ignore[attr-defined, no-any-return]


def apply(k: Kernel, kind: str, **fields: object) -> None:
    k.apply(Op(kind, 1, **fields))  # type: ignore[arg-type]


def create(k: Kernel, path: str, size: int) -> None:
    apply(k, "create", path=path, size=size)


def checked(k: Kernel) -> None:
    k.check()
    vm_of(k).check()
    k.zfs.check()
    assert_no_pte_outlives_its_buffer(k)


def cats(k: Kernel) -> dict[str, int]:
    return k.memory_categories()


def record_frames(k: Kernel, path: str) -> dict[int, int]:
    """file page -> frame, for every cached record of ``path``, from the ARC's buffers."""
    f = k.zfs.file(path)
    out: dict[int, int] = {}
    per = max(f.recordsize // K4, 1)
    for idx, buf in f.bufs.items():
        if buf.kind == PAGE:
            frames = [buf.pfn]
        elif buf.kind == RUN:
            frames = list(range(buf.pfn + 1, buf.pfn + buf.npages))
        else:
            frames = [p for s, n in buf.extents for p in range(s, s + n)][1:]
        for i, pfn in enumerate(frames):
            out[idx * per + i] = pfn
    return out


def pte_frames(vm: AddressSpace, addr: int, length: int) -> dict[int, tuple[int, Perm]]:
    """vaddr -> (frame, perm) of every present page in the range."""
    out = {}
    for ext in vm.pt.extents(addr, length):
        for i in range(ext.npages):
            out[ext.vaddr + i * K4] = (ext.pfn + i, ext.perm)
    return out


def assert_no_pte_outlives_its_buffer(k: Kernel) -> None:
    """No ARC buffer is freed while a page-table entry points at it: every frame a file
    mapping points at is in use, and one in a live ARC buffer is the data page of the file
    page mapped there. Each buffer's ``mapped`` counts the PTEs pointing at it."""
    vm = vm_of(k)
    fs = k.zfs
    owner: dict[int, tuple[object, int | None, object]] = {}  # frame -> file, page, buffer
    for f in fs._files.values():
        per = max(f.recordsize // K4, 1)
        for idx, buf in f.bufs.items():
            if buf.kind == PAGE:
                frames = [buf.pfn]
            elif buf.kind == RUN:
                frames = list(range(buf.pfn, buf.pfn + buf.npages))
            else:
                frames = [p for s, n in buf.extents for p in range(s, s + n)]
            if buf.kind != PAGE:
                owner[frames.pop(0)] = (f, None, buf)  # the header page is never mapped
            for i, pfn in enumerate(frames):
                owner[pfn] = (f, idx * per + i, buf)
    free = list(k.ranges.runs())
    starts = [s for s, _ in free]
    cached = set(k.pool.cached())
    ptes: dict[int, int] = {}
    for vma in vm.vmas:
        if vma.path is None:
            continue
        for va, (pfn, _) in pte_frames(vm, vma.start, vma.length).items():
            j = bisect_right(starts, pfn) - 1
            assert pfn not in cached and (j < 0 or sum(free[j]) <= pfn), (
                f"PTE at {va:#x} points at free frame {pfn}")
            if pfn in owner:
                f, page, buf = owner[pfn]
                assert f is vma.cache_file and page == (va - vma.start + vma.file_offset) // K4
                ptes[id(buf)] = ptes.get(id(buf), 0) + 1
    for f in fs._files.values():
        for buf in f.bufs.values():
            assert buf.mapped == ptes.get(id(buf), 0), "ArcBuffer.mapped != PTEs pointing at it"


# ---------------------------------------------------------------------------- read faults


def test_read_faults_share_arc_buffers() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 32 * M)
    apply(k, "read", path="/f", offset=0, length=32 * M)  # the file is in the ARC
    before = cats(k)
    disk = k.summary()["disk"]["reads"]
    a = vm.mmap(32 * M, R, path="/f")
    assert vm.touch(a, 32 * M, write=False) == 32 * M // K4  # 4K faults, one per page
    after = cats(k)
    assert after["arc"] == before["arc"]  # the ARC's bytes do not double
    assert after["file"] == 0 and after["anonymous"] == 0 and after["page_cache"] == 0
    assert k.summary()["disk"]["reads"] == disk  # every page came from the cache
    frames = record_frames(k, "/f")
    got = pte_frames(vm, a, 32 * M)
    assert {va: pfn for va, (pfn, _) in got.items()} == {
        a + p * K4: frames[p] for p in range(32 * M // K4)}
    assert {perm for _, perm in got.values()} == {Perm.R}
    # a second mapping, shared and writable, maps the very same frames, read-only
    b = vm.mmap(M, RW, path="/f", shared=True, offset=4 * M)
    vm.touch(b, M, write=False)
    assert [pfn for pfn, _ in pte_frames(vm, b, M).values()] == [
        frames[4 * M // K4 + i] for i in range(M // K4)]
    assert {perm for _, perm in pte_frames(vm, b, M).values()} == {Perm.R}
    assert k.summary()["mmap"]["page_cache"]["arc_mapped_bytes"] == 33 * M
    checked(k)
    vm.munmap(a, 32 * M)
    vm.munmap(b, M)
    assert cats(k)["arc"] == before["arc"]  # unmapping leaves the records cached
    assert k.summary()["mmap"]["page_cache"]["arc_mapped_bytes"] == 0
    checked(k)


def test_a_read_fault_on_a_miss_reads_the_record_into_the_arc() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 4 * RS)
    a = vm.mmap(4 * RS, R, path="/f")
    vm.touch(a + RS + 5 * K4, 1, write=False)  # one page of record 1
    s = k.summary()
    assert s["arc"]["misses"] == 1 and s["disk"]["reads"] == 1
    assert vm.present(a, 4 * RS) == K4  # one fault, one page, though the record is cached
    assert cats(k)["file"] == 0
    vm.touch(a + RS, RS, write=False)  # the rest of the record: no disk read
    assert k.summary()["disk"]["reads"] == 1
    checked(k)


def test_a_read_touch_maps_record_by_record_not_page_by_page() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 32 * M)
    calls = {"map": 0, "buffer": 0, "alloc": 0}
    pt_map, get_buffer, alloc = vm.pt.map, k.zfs.get_buffer, vm.pool.alloc_pages

    def spy(name, fn):  # noqa: ANN001, ANN202
        def wrapped(*a, **kw):  # noqa: ANN002, ANN003, ANN202
            calls[name] += 1
            return fn(*a, **kw)
        return wrapped

    vm.pt.map = spy("map", pt_map)  # type: ignore[method-assign]
    k.zfs.get_buffer = spy("buffer", get_buffer)
    vm.pool.alloc_pages = spy("alloc", alloc)  # type: ignore[method-assign]
    a = vm.mmap(32 * M, R, path="/f")
    assert vm.touch(a, 32 * M, write=False) == 8192
    assert calls == {"map": 256, "buffer": 256, "alloc": 0}  # 256 records, no page of its own
    checked(k)


# ---------------------------------------------------------------------------- writes


def test_a_private_write_copies_and_the_file_is_unchanged() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 2 * RS)
    a = vm.mmap(2 * RS, RW, path="/f")
    vm.touch(a, 16 * K4, write=False)
    arc, disk = cats(k)["arc"], k.summary()["disk"]
    frames = record_frames(k, "/f")
    assert vm.touch(a + 2 * K4, 4 * K4, write=True) == 4  # COW faults on present pages
    assert cats(k)["file"] == 4 * K4 and cats(k)["arc"] == arc
    got = pte_frames(vm, a, 16 * K4)
    for p in range(16):
        pfn, perm = got[a + p * K4]
        if 2 <= p < 6:
            assert pfn != frames[p] and perm == Perm.RW  # the mapping's own copy
        else:
            assert pfn == frames[p] and perm == Perm.R  # still the ARC's page
    assert vm.touch(a + 2 * K4, 4 * K4, write=True) == 0  # copies are writable
    assert vm.touch(a + RS, 3 * K4, write=True) == 3  # never read: copied on the first write
    assert cats(k)["file"] == 7 * K4
    # the file did not change: nothing dirty, nothing written, a new mapping shares the ARC
    assert k.summary()["arc"]["dirty_records"] == 0
    assert k.summary()["disk"]["writes"] == disk["writes"] == 0
    b = vm.mmap(2 * RS, R, path="/f")
    vm.touch(b, 16 * K4, write=False)
    assert [pfn for pfn, _ in pte_frames(vm, b, 16 * K4).values()] == [
        frames[p] for p in range(16)]
    checked(k)
    vm.munmap(a, 2 * RS)
    assert cats(k)["file"] == 0  # the copies are freed with the mapping
    assert k.summary()["disk"]["writes"] == 0
    checked(k)


def test_a_shared_write_moves_the_page_to_the_write_cache_and_msync_writes_it_back() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 4 * RS)
    s = vm.mmap(4 * RS, RW, path="/f", shared=True)
    p = vm.mmap(4 * RS, R, path="/f")
    vm.touch(s, 8 * K4, write=False)
    vm.touch(p, 8 * K4, write=False)
    arc = cats(k)["arc"]
    frames = record_frames(k, "/f")
    flushes = k.summary()["mmap"]["tlb_flushes"]
    assert vm.touch(s, 4 * K4, write=True) == 4  # present read-only: each write faults
    assert cats(k)["page_cache"] == 4 * K4 and cats(k)["arc"] == arc and cats(k)["file"] == 0
    wc = {va - s: pfn for va, (pfn, _) in pte_frames(vm, s, 4 * K4).items()}
    assert all(pfn != frames[i] for i, pfn in enumerate(wc.values()))
    assert {perm for _, perm in pte_frames(vm, s, 4 * K4).values()} == {Perm.RW}
    # the record's pages left every mapping: the private one faults again, onto the copy
    assert vm.present(p, 8 * K4) == 4 * K4
    assert k.summary()["mmap"]["tlb_flushes"] > flushes
    assert vm.touch(p, 8 * K4, write=False) == 4
    got = pte_frames(vm, p, 4 * K4)
    assert {va - p: pfn for va, (pfn, _) in got.items()} == wc
    assert {perm for _, perm in got.values()} == {Perm.R}  # read-only in a private mapping
    assert k.summary()["disk"]["writes"] == 0  # not written back yet
    vm.msync(s, 4 * RS)
    disk = k.summary()["disk"]
    assert disk["writes"] == 1 and disk["write_bytes"] == RS  # one record, fsync'ed
    assert k.summary()["mmap"]["page_cache"]["written_back_bytes"] == 4 * K4
    vm.msync(s, 4 * RS)
    assert k.summary()["disk"]["writes"] == 1  # clean: nothing to write
    assert vm.touch(s + K4, K4, write=True) == 0  # writable: no fault, but dirty again
    vm.msync(s, 4 * RS)
    assert k.summary()["disk"]["writes"] == 2
    vm.touch(s + RS, K4, write=True)  # another record
    vm.munmap(s, 4 * RS)  # munmap writes back too
    assert k.summary()["disk"]["writes"] == 3
    assert cats(k)["page_cache"] == 5 * K4  # the write cache keeps its pages after munmap
    checked(k)


def test_a_private_mapping_cannot_msync_and_a_private_write_of_a_write_cache_page_copies() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", RS)
    s = vm.mmap(RS, RW, path="/f", shared=True)
    p = vm.mmap(RS, RW, path="/f")
    vm.touch(s, K4, write=True)
    with pytest.raises(VmError) as info:
        vm.msync(p, RS)
    assert info.value.kind == "ENOMEM"
    misses = k.summary()["arc"]["misses"]
    vm.touch(p, K4, write=True)
    assert cats(k)["file"] == K4 and cats(k)["page_cache"] == K4
    assert pte_frames(vm, p, K4)[p][0] != pte_frames(vm, s, K4)[s][0]
    assert k.summary()["arc"]["misses"] == misses
    checked(k)


def test_write_cache_lru_is_bounded_as_osv_and_evicts_the_oldest_in_batches() -> None:
    k = boot()
    vm = vm_of(k)
    lru_max = max(k.mem.phys_mem_size // K4 // 100, 100)
    batch = min(lru_max // 5, 200)
    pc = k.summary()["mmap"]["page_cache"]
    assert pc["write_cache_max_bytes"] == lru_max * K4
    npages = 2 * lru_max + 17
    create(k, "/f", npages * K4)
    s = vm.mmap(npages * K4, RW, path="/f", shared=True)
    # a plain model: insert at the front, past the bound drop the oldest batch
    lru: deque[int] = deque()
    evicted: list[int] = []
    batches = 0
    order = list(range(300, npages)) + list(range(0, 300))  # two touches, the second later

    for page in order:
        lru.append(page)
        if len(lru) > lru_max:
            batches += 1
            for _ in range(batch):
                evicted.append(lru.popleft())
    vm.touch(s + 300 * K4, (npages - 300) * K4, write=True)
    vm.touch(s, 300 * K4, write=True)
    st_ = k.summary()["mmap"]["page_cache"]
    assert cats(k)["page_cache"] == len(lru) * K4 <= lru_max * K4
    assert st_["write_cache_evictions"] == batches > 1
    assert st_["evicted_bytes"] == st_["written_back_bytes"] == len(evicted) * K4  # all dirty
    present = {(va - s) // K4 for va in pte_frames(vm, s, npages * K4)}
    assert present == set(lru)  # the evicted pages were unmapped, the others are mapped
    # written back into the file: the ARC holds them dirty until the transaction group syncs
    assert k.summary()["arc"]["dirty_records"] > 0
    assert k.summary()["disk"]["writes"] == 0
    apply(k, "sleep", duration_ns=6_000_000_000)
    assert k.summary()["disk"]["writes"] > 0
    # an evicted page written again is a new page at the front of the LRU
    faults = k.summary()["mmap"]["faults"]
    vm.touch(s + evicted[0] * K4, K4, write=True)
    assert k.summary()["mmap"]["faults"] == faults + 1
    checked(k)


# ---------------------------------------------------------------------------- ARC evictions


def test_an_arc_eviction_of_a_mapped_buffer_unmaps_it_and_the_next_touch_faults_again() -> None:
    k = boot(arc_size="1M")  # 8 records of 128 KiB
    vm = vm_of(k)
    create(k, "/f", 32 * RS)
    a = vm.mmap(32 * RS, R, path="/f")
    assert vm.touch(a, 4 * RS, write=False) == 4 * PPR
    assert vm.present(a, 4 * RS) == 4 * RS
    flushes = k.summary()["mmap"]["tlb_flushes"]
    checked(k)
    apply(k, "read", path="/f", offset=8 * RS, length=24 * RS)  # the ARC evicts the mapped ones
    assert vm.present(a, 4 * RS) == 0
    s = k.summary()
    assert s["mmap"]["page_cache"]["invalidations"] == 4
    assert s["mmap"]["tlb_flushes"] == flushes + 4  # one flush per unmapped buffer
    assert s["mmap"]["page_cache"]["arc_mapped_bytes"] == 0
    checked(k)
    misses, faults = s["arc"]["misses"], s["mmap"]["faults"]
    # one record: the ARC's 1 MiB also holds the file's metadata and the headers (arc.c), so a
    # second refaulted record would evict the first again
    assert vm.touch(a, RS, write=False) == PPR  # refaults, rereads
    s = k.summary()
    assert s["mmap"]["faults"] == faults + PPR and s["arc"]["misses"] == misses + 1
    frames = record_frames(k, "/f")
    assert [pfn for pfn, _ in pte_frames(vm, a, RS).values()] == [frames[p] for p in range(PPR)]
    checked(k)


def test_a_touch_larger_than_the_arc_leaves_only_what_is_still_cached_mapped() -> None:
    k = boot(arc_size="1M")
    vm = vm_of(k)
    create(k, "/f", 32 * RS)
    a = vm.mmap(32 * RS, R, path="/f")
    assert vm.touch(a, 32 * RS, write=False) == 32 * PPR
    cached = record_frames(k, "/f")
    present = pte_frames(vm, a, 32 * RS)
    # exactly the records the ARC still holds are mapped, each onto its own buffer
    assert {(va - a) // K4: pfn for va, (pfn, _) in present.items()} == cached
    assert len(cached) < 32 * PPR
    checked(k)


def test_a_shrinker_call_unmaps_what_it_evicts() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 24 * M)
    a = vm.mmap(24 * M, R, path="/f")
    vm.touch(a, 24 * M, write=False)
    k.zfs.request_memory(0, hard=False)  # the ARC's shrinker gives at least 16 MiB
    assert vm.present(a, 24 * M) <= 8 * M
    checked(k)
    vm.touch(a, 24 * M, write=False)
    assert vm.present(a, 24 * M) == 24 * M
    checked(k)


def test_an_eviction_while_a_page_table_page_is_allocated_leaves_no_pte_behind() -> None:
    """The reclaimer may run inside the allocation of a page-table page for the very mapping
    being made, and the ARC's shrinker may evict the record being mapped."""
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 4 * RS)
    a = vm.mmap(4 * RS, R, path="/f")
    source = k.mem.table_source
    alloc = source.alloc_table_page
    shrunk = []

    def alloc_under_pressure() -> int:
        if not shrunk:
            shrunk.append(k.zfs.request_memory(0, hard=False))  # evicts every record
        return alloc()

    source.alloc_table_page = alloc_under_pressure  # type: ignore[method-assign]
    assert vm.touch(a, RS, write=False) == PPR  # the faults happened
    source.alloc_table_page = alloc  # type: ignore[method-assign]
    assert shrunk and shrunk[0] > 0
    assert vm.present(a, RS) == 0  # the record went while it was mapped: nothing stays
    checked(k)
    assert vm.touch(a, RS, write=False) == PPR
    assert vm.present(a, RS) == RS
    checked(k)


# ---------------------------------------------------------------------------- edges


def test_sigbus_past_the_end_of_the_file() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", 3 * K4 + 10)  # one record of 12.5 KiB: 4 pages
    for shared, prot in ((False, R), (True, RW)):
        a = vm.mmap(8 * K4, prot, path="/f", shared=shared)
        with pytest.raises(VmError) as info:
            vm.touch(a, 8 * K4, write=shared)
        assert info.value.kind == "SIGBUS" and info.value.addr == a + 4 * K4
        assert vm.present(a, 8 * K4) == 4 * K4  # the pages before it are mapped
    assert k.summary()["mmap"]["sigbus"] == 2
    create(k, "/g", 5 * RS + 100)
    b = vm.mmap(8 * RS, R, path="/g", populate=True)  # populate stops at EOF
    assert vm.present(b, 8 * RS) == 5 * RS + K4
    with pytest.raises(VmError) as info:
        vm.touch(b + 5 * RS + K4, 1, write=False)
    assert info.value.kind == "SIGBUS"
    checked(k)


def test_small_files_and_files_without_a_page_cache_take_private_copies() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/tiny", 100)  # under one page: OSv maps it with private copies
    a = vm.mmap(K4, R, path="/tiny")
    vm.touch(a, K4, write=False)
    assert cats(k)["file"] == K4
    checked(k)
    # a file system without a page cache (the fallback table): private copies as before
    table = FileTable()
    table.create("/t", 3 * K4)
    space = AddressSpace(PageTables(CountingTablePageSource()), k.pool, k.ranges, files=table)
    b = space.mmap(4 * K4, R, path="/t")
    assert space.touch(b, 3 * K4, write=False) == 3
    assert space.resident["file"] == 3 * K4 and space.page_cache is None
    space.check()
    space.munmap(b, 4 * K4)


def test_a_recreated_file_is_another_file() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", RS)
    s = vm.mmap(RS, RW, path="/f", shared=True)
    vm.touch(s, 2 * K4, write=True)  # in the write cache
    create(k, "/f", RS)  # truncated and recreated: new data
    p = vm.mmap(RS, R, path="/f")
    vm.touch(p, 2 * K4, write=False)
    frames = record_frames(k, "/f")
    assert [pfn for pfn, _ in pte_frames(vm, p, 2 * K4).values()] == [frames[0], frames[1]]
    writes = k.summary()["disk"]["writes"]
    vm.munmap(s, RS)  # the old file's pages have nowhere to go
    assert k.summary()["disk"]["writes"] == writes
    checked(k)


def test_mprotect_keeps_shared_pages_read_only_so_a_write_still_copies() -> None:
    k = boot()
    vm = vm_of(k)
    create(k, "/f", RS)
    a = vm.mmap(RS, RW, path="/f")
    vm.touch(a, 4 * K4, write=False)
    vm.mprotect(a, RS, R)
    vm.mprotect(a, RS, RW)
    assert {perm for _, perm in pte_frames(vm, a, 4 * K4).values()} == {Perm.R}
    checked(k)
    assert vm.touch(a, 4 * K4, write=True) == 4
    assert cats(k)["file"] == 4 * K4
    checked(k)


def test_trace_replay_of_file_mappings() -> None:
    k = boot()
    text = """
        create /d 1M
        mmap r 2M file=/d prot=r
        touch r 0 1M r
        mmap w 1M file=/d shared
        touch w 0 64K w
        msync w
        mmap c 1M file=/d
        touch c 0 8K w
        munmap w
        touch r 1M 4K r
    """
    from mmsim.trace import parse_native

    k.run(parse_native(text.strip().splitlines()))
    s = k.summary()
    assert s["mmap"]["sigbus"] == 1
    assert s["memory"]["categories"]["page_cache"] == 64 << 10
    assert s["memory"]["categories"]["file"] == 8 << 10
    assert s["mmap"]["page_cache"]["written_back_bytes"] == 64 << 10
    assert s["disk"]["writes"] == 1  # msync wrote record 0; munmap found it clean
    checked(k)


def test_replays_are_deterministic() -> None:
    from mmsim.trace import parse_native

    text = ["create /a 4M", "create /b 4M", "mmap a 4M file=/a shared",
            "mmap b 4M file=/b shared"]
    for i in range(12):  # interleaved pages of two files: eviction batches hold both
        text += [f"touch a {i * 256}K 256K w", f"touch b {i * 256}K 256K w"]
    text += ["msync a", "munmap b"]

    def summary() -> dict:
        k = boot("64M")
        k.run(parse_native(text))
        checked(k)
        return k.summary()

    first = summary()
    assert first["mmap"]["page_cache"]["write_cache_evictions"] > 0
    assert summary() == first


# ---------------------------------------------------------------------------- state machine

PATHS = ["/a", "/b"]
SIZES = [400 * K4, 3 * RS + 700, 5000, 100]  # the simplest first: mapped through the ARC
KINDS = {"shared": (True, RW), "private": (False, RW), "readonly": (False, R)}
HANDLES = st.sampled_from(sorted(KINDS))


class FileMmapMachine(RuleBasedStateMachine):
    """Random file mappings, touches, msyncs, munmaps, file reads/writes and ARC pressure.

    After every step every page is accounted for, no PTE points at a freed buffer, and the
    page tables agree with the page cache. Signals match a plain model of the file sizes;
    private writes alone never write to the disk."""

    def __init__(self) -> None:
        super().__init__()
        self.k: Kernel | None = None
        self.sizes: dict[str, int] = {}
        self.maps: dict[str, tuple[int, int, str, int, bool, int]] = {}  # h -> addr, len, ...
        self.wrote = False  # a shared write or a file write happened

    @initialize(arc=st.sampled_from(["512K", "1M", None]), rs=st.sampled_from(["16K", "128K"]),
                sizes=st.lists(st.sampled_from(SIZES), min_size=2, max_size=2))
    def boot(self, arc: str | None, rs: str, sizes: list[int]) -> None:
        extra: dict[str, object] = {"recordsize": rs}
        if arc:
            extra["arc_size"] = arc
        self.k = boot("64M", **extra)  # a write cache of 163 pages, evicted 32 at a time
        for path, size in zip(PATHS, sizes):
            create(self.k, path, size)
            self.sizes[path] = size

    @property
    def vm(self) -> AddressSpace:
        assert self.k is not None
        return vm_of(self.k)

    @rule(h=HANDLES, path=st.sampled_from(PATHS), pages=st.integers(1, 440),
          off=st.integers(0, 2))
    def mmap(self, h: str, path: str, pages: int, off: int) -> None:
        shared, prot = KINDS[h]
        if h in self.maps:
            self.sync_or_unmap(h, True)
        if path in self.sizes:
            addr = self.vm.mmap(pages * K4, prot, path=path, shared=shared, offset=off * K4)
            self.maps[h] = (addr, pages, path, off, shared, prot)

    def _touch(self, data: st.DataObject, write: bool) -> None:
        h = data.draw(st.sampled_from(sorted(self.maps)))
        addr, pages, path, off, shared, prot = self.maps[h]
        vma = self.vm.vmas.find(addr)
        assert vma is not None
        eof_page = -(-self.vm._file_size(vma) // K4) - off  # first page past the file
        inside = max(min(pages, eof_page), 1)  # mostly inside the file, sometimes past it
        first = data.draw(st.integers(0, inside - 1))
        n = data.draw(st.integers(1, max(inside - first, 1)) | st.just(pages - first))
        past = range(max(first, eof_page), first + n)
        if write and not prot & 2:
            want = "SIGSEGV"
        elif any(self.vm.present(addr + p * K4, K4) == 0 for p in past):
            want = "SIGBUS"  # (a page still present from before a truncation is not faulted)
        else:
            want = None
        try:
            self.vm.touch(addr + first * K4, n * K4, write=write)
            got = None
        except VmError as e:
            got = e.kind
        assert got == want
        self.wrote |= write and shared and first < eof_page and want != "SIGSEGV"
        if got is None and write and not shared:  # private copies stay until unmapped
            assert self.vm.present(addr + first * K4, n * K4) == n * K4

    @rule(data=st.data())
    @precondition(lambda self: self.maps)
    def touch_read(self, data: st.DataObject) -> None:
        self._touch(data, False)

    @rule(data=st.data())
    @precondition(lambda self: self.maps)
    def touch_write(self, data: st.DataObject) -> None:
        self._touch(data, True)

    @rule(h=HANDLES, unmap=st.booleans())
    def sync_or_unmap(self, h: str, unmap: bool) -> None:
        if h not in self.maps:
            return
        addr, pages, _, _, shared, _ = self.maps[h]
        if unmap:
            del self.maps[h]
            self.vm.munmap(addr, pages * K4)
            return
        try:
            self.vm.msync(addr, pages * K4)
            assert shared
        except VmError as e:
            assert e.kind == "ENOMEM" and not shared

    @rule(h=HANDLES, prot=st.sampled_from([RW, R]), dontneed=st.booleans())
    def protect_or_drop(self, h: str, prot: int, dontneed: bool) -> None:
        if h not in self.maps:
            return
        addr, pages, path, off, shared, _ = self.maps[h]
        if dontneed:
            self.vm.madvise(addr, pages * K4, "dontneed")
            assert self.vm.present(addr, pages * K4) == 0
        else:
            self.vm.mprotect(addr, pages * K4, prot)
            self.maps[h] = (addr, pages, path, off, shared, prot)

    @rule(path=st.sampled_from(PATHS), kind=st.sampled_from(["read", "write", "create",
                                                            "unlink"]),
          off=st.integers(0, 40), n=st.integers(1, 40), size=st.sampled_from(SIZES))
    def file_op(self, path: str, kind: str, off: int, n: int, size: int) -> None:
        assert self.k is not None
        if kind == "create":
            create(self.k, path, size)
            self.sizes[path] = size
        elif kind == "unlink":
            apply(self.k, "unlink", path=path)
            self.sizes.pop(path, None)
        else:
            apply(self.k, kind, path=path, offset=off * K4, length=n * K4)
            if kind == "write" and path in self.sizes:
                self.wrote = True
                self.sizes[path] = max(self.sizes[path], (off + n) * K4)

    @rule(hard=st.booleans())
    def arc_shrinks(self, hard: bool) -> None:
        assert self.k is not None
        self.k.zfs.request_memory(0, hard)
        apply(self.k, "sleep", duration_ns=1_100_000_000)

    @invariant()
    def everything_accounted(self) -> None:
        if self.k is not None:
            checked(self.k)
            if not self.wrote:
                assert self.k.summary()["disk"]["writes"] == 0


TestFileMmapMachine = FileMmapMachine.TestCase
