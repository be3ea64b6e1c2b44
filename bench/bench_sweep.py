"""Benchmark: local speed-up of `mmsim sweep` with 2 worker processes over 1 (issue 9's target:
at least 1.7x on a 2-core machine for a 12-point sweep of 1-second points).

The trace is a skewed block trace (ids format) sized so that one point takes about
``--point-seconds`` here; the sweep is 12 LRU points over ARC sizes from 1M to 32M. Each run is
timed end to end as the command runs it (spawn pool start, points, result file, pool shutdown),
with a fresh output file so that nothing is skipped; both must write the same rows.

    python bench/bench_sweep.py [--point-seconds 1.0] [--points 12]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mmsim.sweep import plan_sweep, run_plan  # noqa: E402
from mmsim.sweep_exec import LocalBackend  # noqa: E402
from mmsim.sweep_file import TraceSpec, make_sweep, parse_sizes  # noqa: E402
from mmsim.sweep_points import run_point  # noqa: E402


def write_ids(path: str, n: int, distinct: int = 20000) -> None:
    """n requests, small ids much more popular (a fixed LCG: the same file everywhere)."""
    x = 7
    with open(path, "w") as f:
        for _ in range(n):
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            u = (x >> 11) / float(1 << 53)
            f.write(f"{int(distinct * u * u * u)}\n")


def calibrate(path: str, seconds: float, sizes: list[int]) -> int:
    """Requests for a point of about ``seconds`` at the middle size."""
    probe = 100_000
    write_ids(path, probe)
    settings = {"cache_policy": "lru", "arc_size": sizes[len(sizes) // 2]}
    run_point(path, "ids", settings)  # warm the imports
    t = time.perf_counter()
    run_point(path, "ids", settings)
    per_request = (time.perf_counter() - t) / probe
    return max(probe, int(seconds / per_request))


def timed_sweep(trace: TraceSpec, sizes: list[int], workers: int,
                out: str) -> tuple[float, float]:
    """Wall seconds of the sweep, and the CPU seconds its worker processes used."""
    sweep = make_sweep([trace], {"cache_policy": ["lru"], "arc_size": sizes}, "bench")
    cpu0 = _children_cpu()
    t = time.perf_counter()
    plan = plan_sweep(sweep, out)
    backend = LocalBackend(workers)
    try:
        stats = run_plan(plan, backend)
    finally:
        backend.close()
    elapsed = time.perf_counter() - t
    assert stats.ran == len(sizes) and not stats.failed, stats.first_error
    return elapsed, _children_cpu() - cpu0


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--point-seconds", type=float, default=1.0)
    ap.add_argument("--points", type=int, default=12)
    args = ap.parse_args()
    sizes = parse_sizes(f"1M:32M:{args.points}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.ids")
        n = calibrate(path, args.point_seconds, sizes)
        write_ids(path, n)
        trace = TraceSpec("bench.ids", path, "ids")
        one, cpu_one = timed_sweep(trace, sizes, 1, os.path.join(tmp, "one.csv"))
        two, cpu_two = timed_sweep(trace, sizes, 2, os.path.join(tmp, "two.csv"))
        with open(os.path.join(tmp, "one.csv")) as a, open(os.path.join(tmp, "two.csv")) as b:
            assert a.read() == b.read(), "1 and 2 workers wrote different rows"
    print(f"{len(sizes)} points of {n} requests (~{one / len(sizes):.2f} s each with 1 worker); "
          f"CPUs available: {len(os.sched_getaffinity(0))}")
    print(f"1 worker:  {one:.2f} s (workers' CPU {cpu_one:.2f} s)")
    print(f"2 workers: {two:.2f} s (workers' CPU {cpu_two:.2f} s, {cpu_two / two:.2f} CPUs busy;"
          " below 2 means other processes took CPU time)")
    print(f"speed-up:  {one / two:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
