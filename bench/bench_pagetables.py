"""Cost of building the boot-time linear map (reference §6): all RAM mapped three times.

Prints wall time and tracemalloc peak of mapping 1 GiB and 1 TiB of RAM in the main,
page and mempool areas, with 2 MiB leaves and with 1 GiB leaves.  Timing and memory are
measured in separate runs because tracemalloc slows allocation down.
"""

from __future__ import annotations

import time
import tracemalloc

from mmsim.mm.constants import GIANT_PAGE_SIZE, MAIN_AREA, MEMPOOL_AREA, PAGE_AREA
from mmsim.mm.pagetables import CountingTablePageSource, PageTables, Perm

AREAS = (MAIN_AREA, PAGE_AREA, MEMPOOL_AREA)


def build(ram: int, giant: bool) -> PageTables:
    """Map ``ram`` bytes of physical memory at every linear area."""
    pt = PageTables(CountingTablePageSource(), giant_pages=giant)
    for area in AREAS:
        pt.linear_map(area, 0, ram, Perm.RWX)
    return pt


def measure(ram: int, giant: bool) -> tuple[float, int, PageTables]:
    t0 = time.perf_counter()
    pt = build(ram, giant)
    elapsed = time.perf_counter() - t0
    del pt
    tracemalloc.start()
    pt = build(ram, giant)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return elapsed, peak, pt


def main() -> None:
    print(f"{'RAM':>6} {'leaves':>6} {'time':>9} {'peak':>10} {'tables':>7} {'leaf entries':>13}")
    for giant in (False, True):
        for ram, name in ((GIANT_PAGE_SIZE, "1 GiB"), (1 << 40, "1 TiB")):
            elapsed, peak, pt = measure(ram, giant)
            leaves = pt.small_leaves + pt.huge_leaves + pt.giant_leaves
            print(
                f"{name:>6} {'1G' if giant else '2M':>6} {elapsed * 1e3:7.1f}ms "
                f"{peak / 2**20:7.2f}MiB {pt.table_pages:>7} {leaves:>13}"
            )


if __name__ == "__main__":
    main()
