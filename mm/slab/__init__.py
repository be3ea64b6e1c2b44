"""OSv's malloc: per-CPU object pools, whole pages, large page runs and mappings (reference §4).

    from mmsim.mm.slab import Malloc
    m = Malloc(kernel.pool, kernel.address_space)   # or Malloc(pool) with a stand-in mapper
    p = m.malloc(100, cpu=0); m.free(p, cpu=1)
"""

from mmsim.mm.slab.early import EarlyAllocator, EarlyPage
from mmsim.mm.slab.large import AnonMapper, LargeAllocator, PagePoolMapper
from mmsim.mm.slab.malloc import CROSS_CPU_SIGNAL, InvalidPointer, Malloc, MallocAbort
from mmsim.mm.slab.pool import Pool, PoolPage
from mmsim.mm.slab.sizes import (
    EARLY,
    LARGE,
    MAPPED,
    MAX_OBJECT,
    MIN_OBJECT,
    PAGE,
    POOL,
    POOL_CLASSES,
    POOL_HEADER,
    RANGE_HEADER,
    first_object_offset,
    large_layout,
    malloc_alignment,
    next_pow2,
    objects_per_page,
    route,
)

__all__ = [
    "CROSS_CPU_SIGNAL",
    "EARLY",
    "LARGE",
    "MAPPED",
    "MAX_OBJECT",
    "MIN_OBJECT",
    "PAGE",
    "POOL",
    "POOL_CLASSES",
    "POOL_HEADER",
    "RANGE_HEADER",
    "AnonMapper",
    "EarlyAllocator",
    "EarlyPage",
    "InvalidPointer",
    "LargeAllocator",
    "Malloc",
    "MallocAbort",
    "PagePoolMapper",
    "Pool",
    "PoolPage",
    "first_object_offset",
    "large_layout",
    "malloc_alignment",
    "next_pow2",
    "objects_per_page",
    "route",
]
