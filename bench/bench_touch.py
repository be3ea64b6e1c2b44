"""Benchmark: one ``touch`` of a 64 GiB anonymous mapping (issue 3's performance target).

Cases: huge pages (2 MiB blocks), ``nohugepage`` (all 4 KiB pages), and a fragmented physical
memory (one page pinned in every aligned 2 MiB block, so every block falls back to 512 small
pages). Each case runs in its own process, so that its RSS growth is its own; it reports the
touch's seconds and RSS growth, and the ratio of that time to a baseline run in the same process:
the same 64 GiB touched as 64 touches of 1 GiB. A ratio near 1 means the cost is linear in the
blocks and extents touched, whatever the size of one touch.

    python bench/bench_touch.py [--size 64G] [--memory 80G] [--repeat N]
                                [--case huge|nohugepage|fragmented]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402
from mmsim.kernel import Kernel, KernelConfig, parse_size  # noqa: E402

CASES = ("huge", "nohugepage", "fragmented")
CHUNKS = 64


def fragment(kernel: Kernel) -> int:
    """Pin one page of every aligned 2 MiB block of free memory; returns the blocks pinned."""
    n = 0
    while (pfn := kernel.ranges.alloc_aligned(512, 512)) is not None:
        kernel.ranges.free(pfn + 1, 511)
        n += 1
    return n


def touch_once(vm, size: int, small: bool) -> tuple[float, int]:  # noqa: ANN001
    """Seconds of one touch of a fresh ``size`` mapping, and its faults (then unmapped)."""
    a = vm.mmap(size)
    if small:
        vm.madvise(a, size, "nohugepage")
    t = time.perf_counter()
    faults = vm.touch(a, size)
    dt = time.perf_counter() - t
    vm.munmap(a, size)
    return dt, faults


def run_case(case: str, size: int, memory: int) -> dict:
    proc = psutil.Process()
    kernel = Kernel(KernelConfig(memory=memory, cpus=2))
    vm = kernel.address_space
    pinned = fragment(kernel) if case == "fragmented" else 0
    small = case == "nohugepage"
    a = vm.mmap(size)
    if small:
        vm.madvise(a, size, "nohugepage")
    gc.collect()
    rss0 = proc.memory_info().rss
    t = time.perf_counter()
    faults = vm.touch(a, size)
    seconds = time.perf_counter() - t
    rss = proc.memory_info().rss - rss0
    result = {
        "case": case, "size": size, "seconds": round(seconds, 3), "rss_mb": round(rss / 2**20, 1),
        "faults": faults, "huge_pages": vm.huge_pages, "small_pages": vm.small_pages,
        "huge_fallbacks": vm.stats.huge_fallbacks, "pinned_blocks": pinned,
        "table_pages": kernel.page_tables.table_pages,
    }
    t = time.perf_counter()
    vm.munmap(a, size)
    result["munmap_seconds"] = round(time.perf_counter() - t, 3)
    if not pinned:  # pinned pages belong to no category
        kernel.check()
    baseline = 0.0
    chunk = size // CHUNKS
    a = vm.mmap(size)
    if small:
        vm.madvise(a, size, "nohugepage")
    for i in range(CHUNKS):
        t = time.perf_counter()
        vm.touch(a + i * chunk, chunk)
        baseline += time.perf_counter() - t
    vm.munmap(a, size)
    result["baseline_seconds"] = round(baseline, 3)
    result["ratio"] = round(seconds / baseline, 2) if baseline else None
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64G")
    ap.add_argument("--memory", default="80G")
    ap.add_argument("--case", choices=CASES, help="run one case in this process (JSON out)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="processes per case; the fastest is shown (timings on a busy machine)")
    args = ap.parse_args()
    size, memory = parse_size(args.size), parse_size(args.memory)
    if args.case:
        print(json.dumps(run_case(args.case, size, memory)))
        return
    print(f"touch of {args.size} in a {args.memory} guest; baseline = {CHUNKS} touches of "
          f"{args.size}/{CHUNKS} in the same process")
    print(f"{'case':<12}{'seconds':>9}{'RSS MB':>9}{'baseline s':>12}{'ratio':>7}"
          f"{'faults':>10}{'huge':>8}{'small':>10}{'munmap s':>10}")
    for case in CASES:
        runs = []
        for _ in range(max(args.repeat, 1)):
            out = subprocess.run(
                [sys.executable, __file__, "--case", case, "--size", args.size, "--memory",
                 args.memory], check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        r = min(runs, key=lambda x: x["seconds"])
        print(f"{r['case']:<12}{r['seconds']:>9}{r['rss_mb']:>9}{r['baseline_seconds']:>12}"
              f"{r['ratio']:>7}{r['faults']:>10}{r['huge_pages']:>8}{r['small_pages']:>10}"
              f"{r['munmap_seconds']:>10}")


if __name__ == "__main__":
    main()
