"""Constants of OSv's memory subsystem (x86-64), see reference §1."""

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
HUGE_PAGE_SHIFT = 21
HUGE_PAGE_SIZE = 1 << HUGE_PAGE_SHIFT
PAGES_PER_HUGE = HUGE_PAGE_SIZE // PAGE_SIZE
GIANT_PAGE_SIZE = 1 << 30

# page_range_allocator: 16 power-of-two lists, runs of >= 2**16 pages in a size-ordered set.
PAGE_RANGES_MAX_ORDER = 16

# Per-CPU L1 page cache and global L2 batch pool (kconfig/memory, mempool.cc).
L1_MAX = 512
L1_LOW = 128
L1_HIGH = 384
PAGE_BATCH = 32
L2_BATCHES_PER_CPU = 16

# Reclaim watermark: 10 % of total; minimum emergency pool.
WATERMARK_LO_PERCENT = 10
MIN_EMERGENCY_POOL = 4 << 20

# Virtual memory layout.
MMAP_AREA_END = 0x4000_0000_0000
MMAP_DEFAULT_START = 0x2000_0000_0000
MAIN_AREA = 0x4000_0000_0000
PAGE_AREA = 0x5000_0000_0000
MEMPOOL_AREA = 0x6000_0000_0000
KERNEL_PHYS = 0x200000
KERNEL_VIRT = 0x40200000
