"""`mmsim mrc`'s one-pass and sampled curves against its per-size replays, in one process.

On the ARC paper's OLTP trace and on a generated block trace (a skewed hot set with scans):
the time of the exact per-size replays of each policy (what `mmsim mrc --method exact` runs,
one `mmsim run` per size, here one after the other), of LRU's one-pass curve (which must
equal the replays' curve exactly) and of the sampled curves at each rate, with the sampled
curves' mean and largest absolute error against the exact ones. With the libcachesim package
(`pip install --only-binary=:all: libcachesim`): its C LRU and ARC, one simulation per size,
and its spatial sampler at c*R (a miniature simulation); its MRC profiler (SHARDS/MINISIM) is
not in the Python package: bench_mrc_profiler.py runs the C tool.

    python bench/bench_mrc.py [--trace OLTP.lis.zst] [--sizes 256K:64M:9] [--rates 0.01,0.1]
                              [--requests 300000] [--json out.json]

Cite Megiddo & Modha, FAST'03, with any result on the OLTP trace.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_arc import DEFAULT_TRACE  # noqa: E402

from mmsim.api import replay  # noqa: E402
from mmsim.mrc import SAMPLED, STACK, one_pass_rows  # noqa: E402
from mmsim.sweep_file import parse_sizes  # noqa: E402
from mmsim.trace import read_trace  # noqa: E402

Curve = dict[int, float]
#: libcachesim 0.3.5 crashes (SIGSEGV) when a reader made with a sampler is freed: keep them
_ALIVE: list[Any] = []


def clock(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def _lcg(x: int) -> tuple[int, float]:
    x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    return x, (x >> 11) / float(1 << 53)


def write_generated(path: str, n: int) -> None:
    """``n`` requests (ids format, 4 KiB blocks): about 85 % to a skewed hot set of 20,000
    blocks, 15 % in sequential scans of 64 blocks never seen before (so that ARC and LRU
    differ); a fixed LCG, so the same file everywhere."""
    scan = 0.15 / (64 - 63 * 0.15)  # draws that start a scan: 15 % of the requests
    x, scan_next, out = 11, 1 << 32, []
    while len(out) < n:
        x, u = _lcg(x)
        if u < scan:
            out.extend(range(scan_next, scan_next + 64))
            scan_next += 64
        else:
            x, v = _lcg(x)
            out.append(int(20_000 * v ** 3))
    with open(path, "w") as f:
        f.write("\n".join(map(str, out[:n])) + "\n")


def exact_curve(trace: str, fmt: str, policy: str, sizes: list[int]) -> Curve:
    curve = {}
    for c in sizes:
        arc = replay(trace, fmt=fmt, settings={"cache_policy": policy, "arc_size": c}
                     ).summary["arc"]
        curve[c] = arc["misses"] / (arc["hits"] + arc["misses"])
    return curve


def one_pass_curve(trace: str, fmt: str, policy: str, sizes: list[int], method: str,
                   rate: float | None = None) -> Curve:
    heads = [{"trace": trace, "point": i, "cache_policy": policy, "arc_size": c}
             for i, c in enumerate(sizes)]
    rows = one_pass_rows(trace, fmt, heads, {policy: method}, rate)
    return {r["arc_size"]: r["arc.misses"] / r["mrc.requests"] for r in rows}


def errors(curve: Curve, exact: Curve) -> tuple[float, float]:
    diffs = [abs(curve[c] - exact[c]) for c in exact]
    return sum(diffs) / len(diffs), max(diffs)


def libcachesim_curves(trace: str, fmt: str, block: int, sizes: list[int], policies: list[str],
                       rates: list[float]) -> list[dict[str, Any]] | None:
    """libCacheSim's LRU and ARC per size, and with its spatial sampler at c*R."""
    try:
        import libcachesim as lcs
        from libcachesim.libcachesim_python import Sampler, SamplerType
    except ImportError:
        return None
    rec = struct.Struct("<IQIq")
    ids = [b for op in read_trace(trace, fmt) if op.kind == "blockread" for b in op.blocks]
    with tempfile.NamedTemporaryFile(suffix=".oracleGeneral.bin", delete=False) as f:
        f.write(b"".join(rec.pack(0, k, block, -1) for k in ids))
        path = f.name
    out = []
    try:
        for name, cls in (("lru", lcs.LRU), ("arc", lcs.ARC)):
            if name not in policies:
                continue
            for rate in (None, *rates):
                def run(c: int, rate: float | None = rate, cls: Any = cls) -> float:
                    sampler = None if rate is None else Sampler(rate,
                                                                SamplerType.SPATIAL_SAMPLER)
                    params = lcs.ReaderInitParam(ignore_obj_size=True) if rate is None else (
                        lcs.ReaderInitParam(ignore_obj_size=True, sampler=sampler))
                    reader = lcs.TraceReader(trace=path,
                                             trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE,
                                             reader_init_params=params)
                    _ALIVE.append((sampler, params, reader))
                    k = c // block if rate is None else round(c // block * rate)
                    if k < 1:
                        return 1.0
                    return cls(cache_size=k).process_trace(reader)[0]
                dt, curve = clock(lambda run=run: {c: run(c) for c in sizes})
                out.append({"policy": name, "rate": rate, "seconds": dt, "curve": curve})
    finally:
        os.unlink(path)
    return out


def bench_trace(trace: str, fmt: str, block: int, sizes: list[int], policies: list[str],
                rates: list[float]) -> dict[str, Any]:
    print(f"\n== {os.path.basename(trace)}: {len(sizes)} sizes "
          f"{sizes[0]}..{sizes[-1]} bytes, policies {','.join(policies)}", flush=True)
    exact: dict[str, Curve] = {}
    exact_s: dict[str, float] = {}
    for p in policies:
        exact_s[p], exact[p] = clock(lambda p=p: exact_curve(trace, fmt, p, sizes))
        print(f"exact per-size replays, {p:4s} {exact_s[p]:8.2f} s", flush=True)
    result: dict[str, Any] = {"trace": trace, "sizes": sizes, "exact_seconds": exact_s,
                              "sampled": []}
    if "lru" in policies:
        dt, curve = clock(lambda: one_pass_curve(trace, fmt, "lru", sizes, STACK))
        assert curve == exact["lru"], "the one-pass curve differs from the replays"
        result["stack_seconds"] = dt
        print(f"one-pass LRU (stack)        {dt:8.2f} s   {exact_s['lru'] / dt:5.1f}x the "
              "per-size replays, curve identical", flush=True)
    for rate in rates:
        for p in policies:
            dt, curve = clock(lambda p=p, rate=rate: one_pass_curve(
                trace, fmt, p, sizes, SAMPLED, rate))
            mae, worst = errors(curve, exact[p])
            result["sampled"].append({"policy": p, "rate": rate, "seconds": dt, "mae": mae,
                                      "max_error": worst})
            print(f"sampled R={rate:<6g} {p:4s}      {dt:8.2f} s   {exact_s[p] / dt:5.1f}x   "
                  f"mean abs error {mae:.4f}, max {worst:.4f}", flush=True)
    lcs = libcachesim_curves(trace, fmt, block, sizes, policies, rates)
    if lcs is None:
        print("libcachesim: not installed (pip install --only-binary=:all: libcachesim)")
    else:
        result["libcachesim"] = []
        for r in lcs:
            p = r["policy"]
            mae, worst = errors(r["curve"], exact[p])
            what = "per size" if r["rate"] is None else f"sampled R={r['rate']:g}"
            line = (f"libcachesim {p:3s} {what:15s} {r['seconds']:8.2f} s   mean abs error "
                    f"{mae:.4f}, max {worst:.4f}")
            if p == "lru" and r["rate"] is None and "stack_seconds" in result:
                line += (f"   (mmsim's one pass takes {result['stack_seconds'] / r['seconds']:.1f}"
                         "x this)")
            print(line, flush=True)
            result["libcachesim"].append({**r, "curve": None, "mae": mae, "max_error": worst})
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default=DEFAULT_TRACE)
    ap.add_argument("--sizes", default="256K:64M:9", help="ARC sizes for OLTP (LO:HI:N)")
    ap.add_argument("--generated-sizes", default="1M:512M:9",
                    help="ARC sizes for the generated trace")
    ap.add_argument("--requests", type=int, default=300_000,
                    help="requests of the generated trace (0: skip it)")
    ap.add_argument("--rates", default="0.01,0.1")
    ap.add_argument("--policies", default="lru,arc,zfs")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    policies = args.policies.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    results = [bench_trace(args.trace, "lis", 512, parse_sizes(args.sizes), policies, rates)]
    if args.requests:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "generated.ids")
            write_generated(path, args.requests)
            results.append(bench_trace(path, "ids", 4096, parse_sizes(args.generated_sizes),
                                       policies, rates))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
