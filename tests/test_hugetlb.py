"""A MAP_HUGETLB mapping only ever holds 2 MiB pages: mremap, munmap, mprotect and madvise
follow Linux's hugetlb rules (mmap(2), mm/mremap.c), as the reference is silent on them (§6)."""

from __future__ import annotations

import pytest
from mmsim.kernel import Kernel, KernelConfig
from mmsim.mm.address_space import AddressSpace, VmError
from mmsim.mm.constants import HUGE_PAGE_SIZE, PAGE_SIZE

M = 1 << 20
H = HUGE_PAGE_SIZE


@pytest.fixture
def kernel() -> Kernel:
    return Kernel(KernelConfig(memory=256 << 20, cpus=2))


@pytest.fixture
def vm(kernel: Kernel) -> AddressSpace:
    return kernel.address_space  # type: ignore[attr-defined, no-any-return]


def errno(fn, *args, **kw) -> str:  # noqa: ANN001
    with pytest.raises(VmError) as info:
        fn(*args, **kw)
    return info.value.kind


def only_huge(kernel: Kernel, vm: AddressSpace, huge_pages: int) -> None:
    kernel.check()
    vm.check()  # asserts no 4K page lies in a hugetlb VMA
    assert vm.huge_pages == huge_pages and vm.small_pages == 0


def test_growing_a_hugetlb_mapping_is_einval_not_4k_pages(kernel, vm):
    a = vm.mmap(4 * M, hugetlb=True)
    assert errno(vm.mremap, a, 4 * M, 5 * M) == "EINVAL"  # 256 small pages before
    assert errno(vm.mremap, a, 4 * M, 6 * M) == "EINVAL"  # Linux: no hugetlb expansion
    assert errno(vm.touch, a + 4 * M, M) == "SIGSEGV"
    only_huge(kernel, vm, 2)


def test_shrinking_a_hugetlb_mapping_rounds_to_2m(kernel, vm):
    a = vm.mmap(6 * M, hugetlb=True)
    assert vm.mremap(a, 6 * M, 5 * M) == a  # rounded up to 6M: nothing to do
    only_huge(kernel, vm, 3)
    assert vm.mremap(a, 6 * M, 3 * M) == a  # to 4M: one whole huge page freed
    assert vm.mapped_bytes == 4 * M
    only_huge(kernel, vm, 2)
    assert errno(vm.mremap, a + PAGE_SIZE, 2 * M, M) == "EINVAL"  # unaligned address


@pytest.mark.parametrize("op", ["munmap", "mprotect", "dontneed"])
def test_cutting_a_hugetlb_mapping_off_2m_is_einval(kernel, vm, op):
    a = vm.mmap(4 * M, hugetlb=True)
    calls = {"munmap": lambda s, n: vm.munmap(s, n),
             "mprotect": lambda s, n: vm.mprotect(s, n, 1),
             "dontneed": lambda s, n: vm.madvise(s, n, "dontneed")}
    call = calls[op]
    assert errno(call, a, PAGE_SIZE) == "EINVAL"
    assert errno(call, a + PAGE_SIZE, H) == "EINVAL"
    only_huge(kernel, vm, 2)
    call(a + H, H)  # on 2 MiB boundaries it works, and the rest stays huge
    if op == "dontneed":
        vm.touch(a, 4 * M)  # refaults with a huge page
    only_huge(kernel, vm, 1 if op == "munmap" else 2)


def test_nohugepage_leaves_hugetlb_pages_huge(kernel, vm):
    a = vm.mmap(4 * M, hugetlb=True)
    vm.madvise(a, 4 * M, "nohugepage")
    vm.madvise(a, 4 * M, "dontneed")
    vm.touch(a, 4 * M)
    only_huge(kernel, vm, 2)
