"""Issue 2's and issue 12's figures: boot time and RSS of a 1 TiB guest against a 1 GiB one,
and the rates of single-page (L1) and multi-page run alloc+free pairs, each beside a
plain-Python baseline run in the same process (these machines are noisy: compare ratios, not
seconds across runs).

    python bench/bench_boot_alloc.py
"""

from __future__ import annotations

import gc
import time

import psutil
from mmsim.kernel import Kernel, KernelConfig


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def boot(memory: int) -> Kernel:
    return Kernel(KernelConfig(memory=memory, cpus=4))


def main() -> None:
    base_rss = rss()
    t1 = min(timed(boot, 1 << 30) for _ in range(3))
    small = boot(1 << 30)
    rss_1g = rss() - base_rss
    tb = min(timed(boot, 1 << 40) for _ in range(3))  # the best of 3: a busy host adds noise
    big = boot(1 << 40)
    rss_1t = rss() - base_rss - rss_1g
    print(f"boot 1 GiB: {t1 * 1000:.1f} ms   boot 1 TiB: {tb * 1000:.1f} ms (limit 50 ms, issue 12)")
    print(f"RSS added by a 1 TiB guest over a 1 GiB one: {(rss_1t - rss_1g) / 2**20:.1f} MiB "
          f"(limit 50 MiB); page-table pages {big.page_tables.table_pages} vs "
          f"{small.page_tables.table_pages}")

    pool, ranges = big.pool, big.ranges
    n = 1_000_000
    alloc, free = pool.alloc_page, pool.free_page

    def pages() -> None:
        for _ in range(n):
            free(alloc(0), 0)

    stack: list[int] = [1] * 300

    def baseline() -> None:  # the cheapest Python pair of calls: list pop + append
        pop, push = stack.pop, stack.append
        for _ in range(n):
            push(pop())

    tp, tbase = timed(pages), timed(baseline)
    print(f"single-page alloc+free through L1: {n / tp:,.0f} pairs/s (limit 1,000,000); "
          f"{tp / tbase:.2f}x a bare list pop+append loop")

    m = 200_000
    ralloc, rfree = ranges.alloc, ranges.free

    def runs() -> None:
        for i in range(m):
            k = 2 + (i & 63)
            rfree(ralloc(k), k)

    tr = timed(runs)
    print(f"multi-page run alloc+free: {m / tr:,.0f} pairs/s (limit 200,000); "
          f"{tr / m / (tbase / n):.1f}x the baseline pair")
    big.check()


if __name__ == "__main__":
    main()
