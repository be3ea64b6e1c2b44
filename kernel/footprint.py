"""What OSv allocates while it boots, before the application's first call (docs/boot.md).

Each part is a named memory category, so a user sees where the ~9 MB (ROFS) or ~40 MB (ZFS)
that real OSv uses right after boot go (docs/calibration.md). Sizes that OSv's code determines
are computed here from the machine (RAM, vCPUs); the two remainders (``kernel_heap``, ``zfs``) are
measured on real OSv and say so.
The page caches' boot fill (``l1_cache``, ``l2_cache``) and the linear map's ``page_tables`` are
not here: the page pool and the page tables make them themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmsim.kernel.config import KernelConfig
from mmsim.mm.constants import PAGE_SIZE

#: malloc_large's header for malloc's alignment (§4): a block of n bytes takes
#: align_up(n + 64, 4096) bytes of whole pages
MALLOC_LARGE_OFFSET = 64


def malloc_large_bytes(n: int) -> int:
    """Whole-page bytes a malloc(n) above one page costs (the mmap path's too: §4)."""
    return -(-(n + MALLOC_LARGE_OFFSET) // PAGE_SIZE) * PAGE_SIZE


def _pow2_at_least(start: int, unit: int, phys_mem_size: int) -> int:
    """The hash-table size loops of dbuf_init/buf_init: double ``start`` until
    ``hsize * unit >= physmem * PAGESIZE`` (physmem counts whole pages)."""
    mem = phys_mem_size // PAGE_SIZE * PAGE_SIZE
    h = start
    while h * unit < mem:
        h <<= 1
    return h


def page_bitmap_bytes(top: int) -> int:
    """page_range_allocator's bitmap: one bit per physical page up to the top of RAM
    (core/mempool.cc), allocated in whole pages."""
    nbytes = -(-(top // PAGE_SIZE) // 8)
    return -(-nbytes // PAGE_SIZE) * PAGE_SIZE


def dbuf_hash_bytes(phys_mem_size: int) -> int:
    """dbuf_init's hash table: 2^16 pointers at least, one per 4 KiB of RAM (dbuf.c)."""
    return malloc_large_bytes(8 * _pow2_at_least(1 << 16, 4096, phys_mem_size))


def arc_hash_bytes(phys_mem_size: int) -> int:
    """buf_init's hash table: 2^12 pointers at least, one per 64 KiB of RAM (arc.c)."""
    return malloc_large_bytes(8 * _pow2_at_least(1 << 12, 65536, phys_mem_size))


# -- the parts (docs/boot.md itemises each, with OSv's file and line) -----------------------------
KIB = 1024

#: A default kernel thread: a 64 KiB stack (17 pages with malloc_large's header), the thread
#: object with its interrupt and exception stacks (6 pages) and its TLS block (1 page).
KERNEL_THREAD = 24 * PAGE_SIZE
#: A BSD/ZFS kthread: bsd/porting/kthread.cc gives every one a 256 KiB stack (65 pages).
KTHREAD = 72 * PAGE_SIZE

#: Per vCPU: its idle, load-balancer, page-pool L1 fill, RCU, async-worker and per-CPU-worker
#: threads, and its per-CPU area (the 64 KiB dynamic per-CPU buffer, the RCU defer queue, the
#: ``cpu`` object with its TSS and nested-exception stacks, the L1 stack's array).
PER_CPU = 6 * KERNEL_THREAD + 220 * KIB

#: The kernel's global threads: about nine default ones (page_pool_l2, reaper, callout, netisr,
#: virtio-net's rx poll, dhcp, console input, acpi, page-cache writeback), the reclaimer (4 KiB
#: stack) and the init thread; and the BSD "thread" taskqueue and virtio-blk kthreads.
KERNEL_THREADS = 968 * KIB + 2 * KTHREAD

#: virtio-net's receive ring: one page per descriptor of QEMU's 256-entry queue, and the rings.
VIRTIO_NET = 1072 * KIB

#: The application's main thread: a 1 MiB stack populated at creation (conf_lazy_stack is off),
#: with its object and TLS.
APP_MAIN_STACK = 1056 * KIB

#: The rest of the kernel's heap at boot (ACPI, PCI and driver objects, the network stack, the
#: VFS and the root mount's metadata, the application's ELF loading): measured, the remainder of
#: real OSv's 9100 kB on a ROFS root at 128M with 1 vCPU after every part above and mmsim's own
#: page tables, page caches' fill and page bitmap.
KERNEL_HEAP = 2_656 * KIB

#: ZFS's kthreads: the ZIO taskqs (73 threads, 2 more per vCPU), system_taskq, the delay taskq,
#: arc_reclaim, l2arc_feed, txg quiesce and sync, vn_rele, zil_clean: 91 + 2 per vCPU.
ZFS_THREADS_BASE = 91
ZFS_THREADS_PER_CPU = 2

#: The rest of a ZFS root's cost: libsolaris.so's loaded image, the metaslabs, the ARC's metadata
#: read at import, the spa/vdev structures, the page-access scanner thread, the ZIO caches.
#: Measured: real OSv's ZFS root costs 30.8 MB over ROFS at 128M with 1 vCPU; this is what is
#: left after the threads and the hash tables.
ZFS_REST = 3_444 * KIB


@dataclass(frozen=True)
class BootPart:
    """One category of boot-time memory and its size on a given machine."""

    category: str
    nbytes: int


def kernel_parts(config: KernelConfig, top: int) -> list[BootPart]:
    """The kernel's parts, allocated in this order before SMP starts (any root file system)."""
    return [
        BootPart("page_bitmap", page_bitmap_bytes(top)),
        BootPart("percpu", PER_CPU * config.cpus),
        BootPart("kernel_threads", KERNEL_THREADS),
        BootPart("virtio_net", VIRTIO_NET),
        BootPart("kernel_heap", KERNEL_HEAP),
        BootPart("app_main_stack", APP_MAIN_STACK),
    ]


def zfs_parts(config: KernelConfig, phys_mem_size: int) -> list[BootPart]:
    """What mounting a ZFS root costs, in the order zfs_init/arc_init/dbuf_init allocate it."""
    threads = ZFS_THREADS_BASE + ZFS_THREADS_PER_CPU * config.cpus
    return [
        BootPart("zfs_threads", threads * KTHREAD),
        BootPart("zfs_hash_tables",
                 arc_hash_bytes(phys_mem_size) + dbuf_hash_bytes(phys_mem_size)),
        BootPart("zfs", ZFS_REST),
    ]
