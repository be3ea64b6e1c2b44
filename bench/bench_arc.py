"""Requests per second of the cache policies on the ARC paper's OLTP trace, in one process.

Four measurements, so that a slow machine shows up as a slow baseline rather than as a slow
simulator: a plain OrderedDict LRU loop over the request ids (the floor of any pure-Python cache
simulator), each policy alone over the same ids, each policy through `mmsim run` (reader,
kernel, ZFS, disk model: what a user gets), and libCacheSim's C ARC when the libcachesim package
is installed (`pip install --only-binary=:all: libcachesim`).

    python bench/bench_arc.py [--trace OLTP.lis.zst] [--pages 1000] [--json out.json]

Cite Megiddo & Modha, FAST'03, with any result on this trace.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mmsim.fs.zfs_arc.policy import policy_class  # noqa: E402
from mmsim.kernel import Kernel, load_config  # noqa: E402
from mmsim.kernel import sys_fs as _sys_fs  # noqa: E402, F401  (registers cache_policy, arc_size)

from mmsim.trace import read_trace  # noqa: E402
from mmsim.trace.blocktrace import read_lis  # noqa: E402  (also registers the formats)

DEFAULT_TRACE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                             "data", "arc-paper", "OLTP.lis.zst")
BLOCK = 512


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (the least disturbed by other processes)."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def baseline_lru(ids: list[int], c: int) -> int:
    d: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for k in ids:
        if k in d:
            d.move_to_end(k)
            hits += 1
        else:
            d[k] = None
            if len(d) > c:
                d.popitem(last=False)
    return hits


def policy_alone(name: str, ids: list[int], c: int) -> int:
    p = policy_class(name)(c * BLOCK)
    access = p.access
    for k in ids:
        access(k, BLOCK)
    return p.hits


def mmsim_run(trace: str, name: str, c: int, batch: bool = True) -> dict[str, Any]:
    """What `mmsim run TRACE --cache-policy NAME --arc-size C` does, minus printing; with
    ``batch`` False, one operation per request (mmsim.trace.blocktrace.read_lis(path, 0))."""
    config = load_config(None, {"cache_policy": name, "arc_size": c * BLOCK})
    kernel = Kernel(config)
    kernel.run(read_trace(trace, "lis") if batch else read_lis(trace, 0))
    return kernel.summary()["arc"]


def libcachesim_arc(ids: list[int], c: int) -> tuple[float, int] | None:
    try:
        import libcachesim as lcs
    except ImportError:
        return None
    rec = struct.Struct("<IQIq")
    with tempfile.NamedTemporaryFile(suffix=".oracleGeneral.bin", delete=False) as f:
        f.write(b"".join(rec.pack(0, k, BLOCK, -1) for k in ids))
        path = f.name
    try:
        def run() -> float:
            reader = lcs.TraceReader(trace=path, trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE,
                                     reader_init_params=lcs.ReaderInitParam(ignore_obj_size=True))
            miss_ratio, _ = lcs.ARC(cache_size=c).process_trace(reader)
            return miss_ratio
        dt, miss_ratio = timed(run, 3)
        return dt, round(len(ids) * (1 - miss_ratio))
    finally:
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE)
    ap.add_argument("--pages", type=int, default=1000, help="cache size c in 512-byte pages")
    ap.add_argument("--policies", default="arc,lru,zfs")
    ap.add_argument("--repeat", type=int, default=3, help="best of N for the in-memory loops")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    c = args.pages
    ids = [b for op in read_trace(args.trace, "lis") if op.kind == "blockread" for b in op.blocks]
    n = len(ids)
    rows: list[dict[str, Any]] = []

    def add(what: str, seconds: float, hits: int) -> None:
        rows.append({"what": what, "requests": n, "seconds": round(seconds, 3),
                     "requests_per_s": round(n / seconds), "hit_ratio_pct": round(
                         100 * hits / n, 2)})
        r = rows[-1]
        print(f"{what:34s} {r['requests_per_s']:>10,d} req/s  {r['seconds']:7.3f} s  "
              f"hits {r['hit_ratio_pct']:6.2f} %", flush=True)

    dt, hits = timed(lambda: baseline_lru(ids, c), args.repeat)
    add("baseline OrderedDict LRU", dt, hits)
    base = dt
    for name in args.policies.split(","):
        dt, hits = timed(lambda name=name: policy_alone(name, ids, c), args.repeat)
        add(f"policy {name} alone", dt, hits)
    runs: dict[str, float] = {}
    for name in args.policies.split(","):
        dt, arc = timed(lambda name=name: mmsim_run(args.trace, name, c), 1)
        add(f"mmsim run pipeline, {name}", dt, arc["hits"])
        runs[name] = dt
    for name in args.policies.split(","):
        dt, arc = timed(lambda name=name: mmsim_run(args.trace, name, c, False), 1)
        add(f"  one Op per request, {name}", dt, arc["hits"])
    lcs = libcachesim_arc(ids, c)
    if lcs is not None:
        add("libcachesim ARC (C, oracleGeneral)", lcs[0], lcs[1])
    print()
    for name, dt in runs.items():
        line = f"mmsim run {name}: {dt / base:.1f}x the baseline LRU loop"
        if lcs is not None:
            line += f", {dt / lcs[0]:.1f}x libcachesim's ARC"
        print(line)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump({"trace": args.trace, "c_pages": c, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
