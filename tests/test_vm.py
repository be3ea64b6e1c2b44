"""OSv's observable virtual-memory behaviours (reference §6, §12.7-12.10), through the kernel."""

from __future__ import annotations

import pytest
from helpers import booter
from mmsim.kernel import Kernel, KernelConfig
from mmsim.mm.address_space import AddressSpace, VmError
from mmsim.mm.constants import HUGE_PAGE_SIZE, MMAP_AREA_END, MMAP_DEFAULT_START, PAGE_SIZE
from mmsim.mm.hugepage import HugePagePolicy
from mmsim.mm.pagetables import Perm

from mmsim.trace import parse_native

M = 1 << 20
K4 = PAGE_SIZE
H = HUGE_PAGE_SIZE


boot = booter(256 << 20, cpus=2)


@pytest.fixture
def kernel() -> Kernel:
    return boot()


@pytest.fixture
def vm(kernel: Kernel) -> AddressSpace:
    return kernel.address_space  # type: ignore[attr-defined, no-any-return]


def checked(kernel: Kernel) -> None:
    kernel.check()
    kernel.address_space.check()


def errno(fn, *args, **kw) -> str:  # noqa: ANN001
    with pytest.raises(VmError) as info:
        fn(*args, **kw)
    return info.value.kind


def fragment(kernel: Kernel) -> list[int]:
    """Leave no free aligned 2 MiB run: keep one page of every aligned block (returned)."""
    kept = []
    while (pfn := kernel.ranges.alloc_aligned(512, 512)) is not None:
        kernel.ranges.free(pfn + 1, 511)
        kept.append(pfn)
    assert kernel.ranges.largest_run() < 512 or kernel.ranges.alloc_aligned(512, 512) is None
    return kept


def replay(kernel: Kernel, text: str) -> None:
    kernel.run(parse_native(text.strip().splitlines()))


def create(kernel: Kernel, path: str, size: int) -> None:
    """A file, made by whichever subsystem handles ``create`` (ZFS, or sys_mman's table)."""
    replay(kernel, f"create {path} {size}")


# ---------------------------------------------------------------------------- placement


def test_first_fit_upward_from_default_start_and_2m_alignment(vm: AddressSpace) -> None:
    a = vm.mmap(K4)
    b = vm.mmap(H)
    c = vm.mmap(8 * K4)
    assert a == MMAP_DEFAULT_START
    assert b == MMAP_DEFAULT_START + H  # aligned, leaving a hole below it
    assert c == a + K4  # the small mapping fills the hole first-fit
    d = vm.mmap(3 * M)
    assert d % H == 0 and d == b + H


def test_large_mapping_unaligned_when_no_aligned_hole_fits(vm: AddressSpace) -> None:
    top = MMAP_AREA_END
    vm.mmap(2 * M - K4, fixed=True, addr=top - 4 * M)  # leaves [top-2M-4K, top) free
    got = vm.mmap(H + K4, addr=top - 4 * M)  # the hint is taken: scan upward from it
    assert got == top - H - K4
    assert errno(vm.mmap, H, addr=top - 4 * M) == "ENOMEM"  # nothing fits above the hint


def test_hint_is_used_when_free(vm: AddressSpace) -> None:
    hint = MMAP_DEFAULT_START + 100 * H + 5 * K4
    assert vm.mmap(3 * K4, addr=hint) == hint


def test_map_fixed_replaces_what_is_there(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(4 * H, populate=True)
    assert vm.resident_bytes == 4 * H
    b = vm.mmap(H, fixed=True, addr=a + H, prot=1)
    assert b == a + H
    assert vm.resident_bytes == 3 * H
    assert [v.prot for v in vm.vmas] == [3, 1, 3]
    assert errno(vm.mmap, K4, fixed=True, addr=a + 1) == "EINVAL"
    checked(kernel)


# ---------------------------------------------------------------------------- faults and huge pages


def test_populate_of_n_aligned_blocks_gives_n_huge_pages(kernel: Kernel, vm: AddressSpace) -> None:
    vm.mmap(5 * H, populate=True)
    assert (vm.huge_pages, vm.small_pages) == (5, 0)
    assert vm.stats.faults == 0  # populate is not faulting
    checked(kernel)


def test_faults_near_unaligned_edges_get_4k_pages(kernel: Kernel, vm: AddressSpace) -> None:
    base = MMAP_DEFAULT_START + 10 * H
    vm.mmap(4 * H, fixed=True, addr=base + K4)  # [base+4K, base+8M+4K): 3 whole blocks inside
    assert vm.touch(base + K4, K4) == 1  # first block is cut by the VMA start: one 4K page
    assert (vm.huge_pages, vm.small_pages) == (0, 1)
    assert vm.touch(base + H + 7 * K4, 1) == 1  # a whole block inside: one fault, one 2M page
    assert vm.huge_pages == 1
    assert kernel.page_tables.translate(base + H)[2] == H
    assert vm.touch(base + 4 * H, K4) == 1  # last block is cut by the VMA end
    assert (vm.huge_pages, vm.small_pages) == (1, 2)
    checked(kernel)


def test_touch_counts_one_fault_per_block_or_4k_page(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(5 * M)  # 2 whole blocks + 1 MiB tail
    assert vm.touch(a, 5 * M) == 2 + 256
    assert (vm.huge_pages, vm.small_pages) == (2, 256)
    assert vm.touch(a, 5 * M) == 0  # everything present: no fault
    checked(kernel)


def test_hugepages_false_maps_4k_only() -> None:
    k = boot(hugepages=False)
    vm = k.address_space
    a = vm.mmap(4 * H, populate=True)
    assert (vm.huge_pages, vm.small_pages) == (0, 4 * 512)
    b = vm.mmap(2 * H)
    assert vm.touch(b, 2 * H) == 1024
    assert a != b
    assert errno(vm.mmap, H, hugetlb=True) == "ENOMEM"
    checked(k)


def test_no_aligned_physical_run_maps_all_512_small_pages(kernel: Kernel, vm: AddressSpace) -> None:
    kept = fragment(kernel)
    reclaimer = kernel.reclaimer
    reclaimer.run()
    wakes = reclaimer.wakes
    a = vm.mmap(2 * H)
    assert vm.touch(a + 3 * K4, K4) == 1  # one fault populates the whole block
    assert (vm.huge_pages, vm.small_pages) == (0, 512)
    assert vm.stats.huge_fallbacks == 1
    assert reclaimer.pending and reclaimer.wakes == wakes + 1  # OSv wakes the reclaimer
    assert vm.present(a, H) == H and vm.present(a + H, H) == 0
    vm.check()
    for pfn in kept:
        kernel.ranges.free(pfn, 1)
    checked(kernel)


def test_block_with_a_page_table_is_filled_with_4k(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(H, populate=True)
    vm.madvise(a, K4, "dontneed")  # splits the huge page, keeps the PT
    assert (vm.huge_pages, vm.small_pages) == (0, 511)
    assert vm.touch(a + 100 * K4, K4) == 0  # present
    assert vm.touch(a, K4) == 1  # refault: the hole is filled with a 4K page
    assert (vm.huge_pages, vm.small_pages) == (0, 512)
    checked(kernel)


def test_madvise_nohugepage_splits_and_keeps_4k(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(4 * H)
    vm.touch(a, 2 * H)
    assert vm.huge_pages == 2
    vm.madvise(a, 4 * H, "nohugepage")
    assert (vm.huge_pages, vm.small_pages) == (0, 1024)
    assert kernel.page_tables.translate(a)[2] == K4
    assert vm.touch(a + 2 * H, H) == 512  # now 4K faults
    assert vm.huge_pages == 0
    vm.madvise(a, 4 * H, "hugepage")
    assert vm.touch(a + 3 * H, H) == 1
    assert vm.huge_pages == 1
    checked(kernel)


def test_partial_munmap_of_huge_page_frees_pieces_to_l1(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(2 * H, populate=True)
    pfn = kernel.page_tables.translate(a + 5 * K4)[0] // K4
    free_before = kernel.ranges.free_pages
    l1_before = kernel.pool.l1_pages_of(kernel.cpu)
    tables_before = kernel.page_tables.table_pages
    vm.munmap(a + 5 * K4, 2 * K4)
    new_tables = kernel.page_tables.table_pages - tables_before  # the split's PT, from L1
    assert new_tables == 1
    assert kernel.pool.l1_pages_of(kernel.cpu) == l1_before + 2 - new_tables
    assert {pfn, pfn + 1} <= set(kernel.pool.cached())
    assert kernel.ranges.free_pages == free_before  # nothing went back to the runs
    assert (vm.huge_pages, vm.small_pages) == (1, 510)
    whole = kernel.page_tables.translate(a + H)[0] // K4
    vm.munmap(a + H, H)  # a whole huge page goes straight back to the runs
    assert kernel.ranges.free_pages == free_before + 512
    assert whole not in set(kernel.pool.cached())
    assert len(vm.vmas) == 2  # [a, a+20K) and [a+28K, a+2M)
    checked(kernel)


def test_dontneed_frees_and_next_touch_faults_again(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(1 * M)
    vm.touch(a, M)
    flushes = vm.stats.tlb_flushes
    vm.madvise(a, M, "dontneed")
    assert vm.resident_bytes == 0
    assert vm.stats.tlb_flushes == flushes + 1
    assert vm.touch(a, M) == 256
    checked(kernel)


def test_vmas_split_and_never_merge(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(10 * K4)
    vm.mprotect(a + 2 * K4, 2 * K4, 1)
    assert len(vm.vmas) == 3
    vm.mprotect(a + 2 * K4, 2 * K4, 3)
    assert len(vm.vmas) == 3
    vm.madvise(a + 8 * K4, K4, "nohugepage")
    assert len(vm.vmas) == 5
    checked(kernel)


def test_mprotect_rewrites_present_ptes_and_flushes_on_removal(
    kernel: Kernel, vm: AddressSpace
) -> None:
    a = vm.mmap(H, populate=True)
    flushes = vm.stats.tlb_flushes
    vm.mprotect(a, K4, 1)
    assert kernel.page_tables.translate(a)[1] == Perm.R
    assert kernel.page_tables.translate(a + K4)[1] == Perm.RW
    assert vm.stats.tlb_flushes == flushes + 1
    vm.mprotect(a, K4, 3)  # adding a permission needs no flush
    assert vm.stats.tlb_flushes == flushes + 1
    checked(kernel)


# ---------------------------------------------------------------------------- errors (§12.10)


def test_error_codes(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(4 * K4)
    hole = a + 8 * K4
    assert errno(vm.munmap, a, 8 * K4) == "EINVAL"  # part is not mapped
    assert errno(vm.munmap, a + 1, K4) == "EINVAL"
    assert errno(vm.munmap, a, 0) == "EINVAL"
    assert errno(vm.mprotect, a, 8 * K4, 1) == "ENOMEM"
    assert errno(vm.mprotect, a + 1, K4, 1) == "EINVAL"
    assert errno(vm.madvise, hole, K4, "dontneed") == "ENOMEM"
    assert errno(vm.madvise, a, K4, "willneed") == "EINVAL"
    assert errno(vm.mmap, 0) == "EINVAL"
    assert errno(vm.mmap, K4, shared=True, private=True) == "EINVAL"
    assert errno(vm.mmap, K4, path="/nope") == "ENOENT"
    assert errno(vm.mremap, hole, K4, 2 * K4) == "EFAULT"
    assert errno(vm.mremap, a, K4, 2 * K4, fixed=True) == "EINVAL"
    assert vm.mapped_bytes == 4 * K4  # failed calls changed nothing
    assert vm.stats.errors["EINVAL"] == 8
    checked(kernel)


def test_signals(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(4 * K4, prot=0)
    assert errno(vm.touch, a, 1, write=False) == "SIGSEGV"  # PROT_NONE
    r = vm.mmap(4 * K4, prot=1)
    assert vm.touch(r, 4 * K4, write=False) == 4
    assert errno(vm.touch, r, 1, write=True) == "SIGSEGV"  # write to read-only
    assert errno(vm.touch, r + 4 * K4, 1) == "SIGSEGV"  # nothing mapped there
    b = vm.mmap(4 * K4)
    vm.munmap(b + 2 * K4, K4)
    assert errno(vm.touch, b, 4 * K4) == "SIGSEGV"
    assert vm.present(b, 2 * K4) == 2 * K4  # pages before the bad one were touched
    assert vm.stats.segv == 4
    checked(kernel)


def test_populated_prot_none_is_present_but_faults(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(2 * K4, prot=0, populate=True)
    assert vm.resident_bytes == 2 * K4
    assert kernel.page_tables.translate(a)[1] == Perm.NONE
    assert errno(vm.touch, a, 1, write=False) == "SIGSEGV"
    checked(kernel)


def test_map_hugetlb(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(3 * M, hugetlb=True)
    assert a % H == 0 and vm.mapped_bytes == 2 * H and vm.huge_pages == 2
    kept = fragment(kernel)
    assert errno(vm.mmap, H, hugetlb=True) == "ENOMEM"
    assert vm.mapped_bytes == 2 * H and len(vm.vmas) == 1
    assert errno(vm.mmap, H, hugetlb=True, path="/f") == "EINVAL"
    for pfn in kept:
        kernel.ranges.free(pfn, 1)
    checked(kernel)


# ---------------------------------------------------------------------------- mremap / msync


def test_mremap_shrinks_grows_in_place_and_moves(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(4 * K4)
    vm.touch(a, 4 * K4)
    assert vm.mremap(a, 4 * K4, 2 * K4) == a
    assert vm.mapped_bytes == 2 * K4 and vm.resident_bytes == 2 * K4
    assert vm.mremap(a, 2 * K4, 6 * K4) == a  # the tail is free
    assert vm.mapped_bytes == 6 * K4 and vm.resident_bytes == 2 * K4
    vm.mmap(K4, fixed=True, addr=a + 6 * K4)  # block the tail
    b = vm.mremap(a, 6 * K4, 3 * H)
    assert b != a and b % H == 0
    assert vm.vmas.find(a) is None
    assert vm.resident_bytes == 3 * H  # an anonymous move populates (and copies)
    assert vm.huge_pages == 3
    vm.mmap(K4, fixed=True, addr=b + 3 * H)
    assert errno(vm.mremap, b, 3 * H, 4 * H, maymove=False) == "ENOMEM"
    checked(kernel)


def test_msync(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.mmap(2 * K4)
    vm.msync(a, 2 * K4)  # anonymous: nothing to do
    create(kernel, "/f", 10 * K4)
    p = vm.mmap(2 * K4, path="/f")
    s = vm.mmap(2 * K4, path="/f", shared=True)
    assert errno(vm.msync, p, K4) == "ENOMEM"
    vm.msync(s, 2 * K4)
    assert errno(vm.msync, a + 8 * K4, K4) == "ENOMEM"


# ---------------------------------------------------------------------------- file mappings


def test_file_mapping_small_pages_populate_to_eof_and_sigbus_past_it(
        kernel: Kernel, vm: AddressSpace) -> None:
    create(kernel, "/data", 3 * K4 + 10)
    a = vm.mmap(4 * H, path="/data", populate=True)
    assert vm.present(a, 4 * H) == 4 * K4  # populate stops at EOF (page 3 partial)
    assert vm.resident == {"anon": 0, "file": 0}  # shared ARC pages (tests/test_file_mmap.py)
    assert vm.huge_pages == 0
    assert errno(vm.touch, a + 4 * K4, 1) == "SIGBUS"
    assert vm.stats.sigbus == 1
    b = vm.mmap(2 * H, path="/data", offset=K4)
    assert vm.touch(b, 3 * K4) == 3  # file VMAs are mmap_small: 4K faults
    assert errno(vm.touch, b, 4 * K4) == "SIGBUS"
    assert vm.resident["file"] == 3 * K4  # the private writes copied their pages
    assert errno(vm.mmap, K4, path="/data", offset=100) == "EINVAL"
    checked(kernel)


# ---------------------------------------------------------------------------- cost


def test_touch_of_a_large_range_costs_extents_not_pages(vm: AddressSpace) -> None:
    calls = {"map": 0, "alloc": 0}
    pt_map, alloc = vm.pt.map, vm.pool.alloc_pages

    def spy_map(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls["map"] += 1
        return pt_map(*a, **kw)

    def spy_alloc(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls["alloc"] += 1
        return alloc(*a, **kw)

    vm.pt.map, vm.pool.alloc_pages = spy_map, spy_alloc  # type: ignore[method-assign]
    a = vm.mmap(100 * M)
    vm.madvise(a, 100 * M, "nohugepage")
    assert vm.touch(a, 100 * M) == 100 * 256
    assert calls == {"map": 1, "alloc": 1}
    assert vm.small_pages == 100 * 256


# ---------------------------------------------------------------------------- kernel face


def test_trace_replay_summary_and_categories(kernel: Kernel) -> None:
    replay(kernel, """
        mmap a 8M populate
        mmap b 5M
        touch b 0 5M
        munmap a 0 4K
        mprotect b 0 4K r
        touch b 0 4K w
        munmap zz
        mmap b 4K
        msync b
    """)
    s = kernel.summary()["mmap"]
    assert s["vmas"] == 3
    assert s["mapped_bytes"] == 13 * M - K4
    # a: 3 huge + 511 pieces; b: mprotect split one of its 2 huge pages, + the 1 MiB tail
    assert s["huge_pages"] == 3 + 1 and s["small_pages"] == 511 + 512 + 256
    assert s["resident_bytes"] == 13 * M - K4
    assert s["faults"] == 258 and s["segv"] == 1
    assert s["errors"] == {"SIGSEGV": 1, "handle_in_use": 1, "unknown_handle": 1}
    cats = kernel.memory_categories()
    assert cats["anonymous"] == s["resident_bytes"] and cats["file"] == 0
    assert kernel.errors.counts["unknown_handle"] == 1
    checked(kernel)


def test_handles_are_forgotten_when_all_unmapped(kernel: Kernel) -> None:
    replay(kernel, """
        mmap a 8K
        munmap a 0 4K
        munmap a 4K 4K
        touch a 0 4K
        mmap a 4K
        touch a 0 4K
        munmap a
        munmap a
    """)
    assert dict(kernel.errors.counts) == {"unknown_handle": 2}
    assert kernel.summary()["mmap"]["faults"] == 1
    checked(kernel)


def test_trace_file_mapping_with_create_and_unlink(kernel: Kernel) -> None:
    replay(kernel, """
        create /f 6K
        mmap m 16K file=/f prot=r
        touch m 0 8K r
        touch m 8K 4K r
    """)
    assert kernel.memory_categories()["file"] == 0  # the ARC's pages, shared
    replay(kernel, """
        unlink /f
        unlink /f
        mmap n 4K file=/f
    """)
    assert kernel.address_space.present(kernel.mman.handles["m"][0], 8 * K4) == 0
    replay(kernel, "touch m 0 8K r")  # the unlinked file's mapping keeps working: copies
    s = kernel.summary()["mmap"]
    assert kernel.memory_categories()["file"] == 2 * K4
    assert s["sigbus"] == 1
    assert s["errors"] == {"SIGBUS": 1, "ENOENT": 1}  # the unlinks are the file system's
    checked(kernel)


def test_map_anon_for_malloc(kernel: Kernel, vm: AddressSpace) -> None:
    a = vm.map_anon(3 * H)
    assert a % H == 0 and vm.huge_pages == 3
    vm.unmap(a, 3 * H)
    assert vm.mapped_bytes == 0 and vm.resident_bytes == 0
    checked(kernel)


def test_giant_page_kernels_map_huge_pages_too() -> None:
    k = boot(giant_pages=True)
    vm = k.address_space
    a = vm.mmap(3 * H, populate=True)
    assert vm.huge_pages == 3 and k.page_tables.translate(a + H)[2] == H
    vm.munmap(a, 3 * H)
    checked(k)


def test_policy_is_the_only_judge() -> None:
    p = HugePagePolicy()
    assert p.span(True, False, K4, 3 * H + K4) == (H, 3 * H)
    assert p.span(False, False, 0, 4 * H)[0] == p.span(False, False, 0, 4 * H)[1]
    assert p.span(True, True, 0, 4 * H)[0] == p.span(True, True, 0, 4 * H)[1]
    assert HugePagePolicy(enabled=False).span(True, False, 0, 4 * H) == (0, 0)
    assert p.fault_block(True, False, K4, 3 * H + K4, 2 * H + 5) == 2 * H
    assert p.fault_block(True, False, K4, 3 * H + K4, 5 * K4) is None


def test_munmap_of_the_whole_handle_after_a_partial_one_unmaps_the_rest():
    from mmsim.kernel import Kernel

    from mmsim.trace.ops import Op

    k = Kernel(KernelConfig(memory=256 << 20, cpus=1))
    for op in (Op("mmap", 1, handle="h", size=8 << 20), Op("touch", 2, handle="h", length=8 << 20),
               Op("munmap", 3, handle="h", offset=0, length=2 << 20),
               Op("munmap", 4, handle="h", offset=4 << 20, length=1 << 20),
               Op("munmap", 5, handle="h")):
        k.apply(op)
    s = k.summary()
    assert s["app_errors"]["total"] == 0
    assert s["mmap"]["vmas"] == 0 and s["mmap"]["mapped_bytes"] == 0
    k.check()
