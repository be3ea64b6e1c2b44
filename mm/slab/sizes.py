"""OSv's malloc size mapping (reference §4, §12.1-12.2), as pure functions and constants.

Kept apart from the allocators so that tests, the summary and the allocators all read the one
definition of "which path does a request of n bytes with alignment a take".
"""

from __future__ import annotations

from mmsim.mm.constants import HUGE_PAGE_SIZE, PAGE_SIZE

__all__ = [
    "EARLY_HEADER",
    "EARLY_SIZE_PREFIX",
    "LARGE",
    "MAPPED",
    "MAX_OBJECT",
    "MIN_OBJECT",
    "PAGE",
    "POOL",
    "POOL_CLASSES",
    "POOL_HEADER",
    "POOL_OBJECT_SPACE",
    "RANGE_HEADER",
    "EARLY",
    "first_object_offset",
    "large_layout",
    "malloc_alignment",
    "next_pow2",
    "objects_per_page",
    "route",
]

#: pool::page_header, measured (g++/boost 1.74)
POOL_HEADER = 40
#: bytes of a pool page that hold objects
POOL_OBJECT_SPACE = PAGE_SIZE - POOL_HEADER
#: pool::min_object_size (sizeof(free_object)) and pool::max_object_size (page/4)
MIN_OBJECT = 8
MAX_OBJECT = PAGE_SIZE // 4
#: the classes malloc uses: 8, 16, ..., 1024
POOL_CLASSES: tuple[int, ...] = tuple(1 << i for i in range(3, 11))
#: page_range header in front of a large allocation
RANGE_HEADER = 56
#: early (pre-SMP) allocator: page header {owner, count} and the 2-byte size before each object
EARLY_HEADER = 16
EARLY_SIZE_PREFIX = 2

# the routes a request can take
POOL = "pool"
EARLY = "early"
PAGE = "page"
LARGE = "large"
MAPPED = "mapped"


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (1 for n <= 1), OSv's 1 << ilog2_roundup(n)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def malloc_alignment(size: int) -> int:
    """The alignment plain malloc(size) asks for: 16, or less for objects smaller than 16."""
    return 16 if size >= 16 else next_pow2(size)


def objects_per_page(obj_size: int) -> int:
    """Objects a pool page of class ``obj_size`` holds: floor(4056 / S)."""
    return POOL_OBJECT_SPACE // obj_size


def first_object_offset(obj_size: int) -> int:
    """Offset in its page of the first object a fresh pool page hands out (objects sit at the
    page's end, and the lowest one is handed out first)."""
    return PAGE_SIZE - objects_per_page(obj_size) * obj_size


def route(size: int, align: int, smp: bool = True) -> tuple[str, int]:
    """Which allocator serves ``size`` bytes aligned to ``align``, in OSv's order of tests.

    Returns (route, detail): the pool class for POOL, 0 for EARLY and PAGE, and the total bytes
    taken (header and offset included, page-rounded) for LARGE and MAPPED. The LARGE route can
    still end up MAPPED at run time if no run of pages fits.
    """
    m = max(size, MIN_OBJECT)
    if smp and size <= MAX_OBJECT and align <= m:
        return POOL, next_pow2(m)
    if smp and align <= MAX_OBJECT and m <= align:
        return POOL, next_pow2(align)
    if not smp and _early_fits(size, align):
        return EARLY, 0
    if m <= PAGE_SIZE and align <= PAGE_SIZE:
        return PAGE, 0
    _, total = large_layout(size, align)
    return (MAPPED if total >= HUGE_PAGE_SIZE else LARGE), total


def _early_fits(size: int, align: int) -> bool:
    return _align_up(EARLY_HEADER + EARLY_SIZE_PREFIX, align) + size <= PAGE_SIZE


def large_layout(size: int, align: int) -> tuple[int, int]:
    """(offset of the object from the header, total bytes) of a large allocation.

    The header is a page_range; the object follows it at the first aligned offset, or a whole
    page later for alignments of a page or more.
    """
    offset = _align_up(RANGE_HEADER, align) if align < PAGE_SIZE else PAGE_SIZE
    return offset, _align_up(size + offset, PAGE_SIZE)


def _align_up(n: int, a: int) -> int:
    return -(-n // a) * a
