"""`mmsim run` on block traces against libCacheSim's C ARC and LRU, in one process (issue 17).

For each trace and policy (``arc``, ``lru``): what ``mmsim run TRACE --cache-policy P
--arc-size C`` costs end to end (reader, kernel, ZFS, disk model, policy, summary: what a user
gets, process start excluded; through mmsim.api.replay, which the command calls), and what
libCacheSim's ARC or LRU costs on the same requests at the same size (its C oracleGeneral
reader over an uncompressed file, objects' sizes ignored). mmsim and libCacheSim run
alternately, ``--repeat`` times; each keeps its best (the least disturbed by other processes).
The hit counts must agree (both are the same algorithms).

Traces: the ARC paper's OLTP (914,145 requests; cite Megiddo & Modha, FAST'03, with any result
on it), and a synthetic Zipf-like oracleGeneral trace of 5,000,000 requests over 500,000
objects (alpha 0.9, ids shuffled), written under /tmp from a fixed seed when missing.

    python bench/bench_cache.py [--repeat 3] [--check] [--json out.json] [--oltp PATH]

``--check`` exits 1 when mmsim takes more than 3x libCacheSim's time (the issue's target).
Needs ``pip install --only-binary=:all: libcachesim``.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gc
import itertools
import json
import os
import random
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsim.api import replay  # noqa: E402
from mmsim.trace import read_trace  # noqa: E402

OLTP = ROOT.parent / "shared" / "data" / "arc-paper" / "OLTP.lis.zst"
WORK = Path(tempfile.gettempdir()) / "mmsim-bench"
ZIPF = WORK / "zipf-5M.oracleGeneral"
ZIPF_REQUESTS = 5_000_000
ZIPF_OBJECTS = 500_000
ZIPF_ALPHA = 0.9
RECORD = struct.Struct("<IQIq")
LIMIT = 3.0  # the target: mmsim within 3x libCacheSim


def make_zipf(path: Path) -> None:
    """The synthetic trace: object of rank r drawn with weight 1/r**alpha, ids shuffled,
    from random.Random(17) (the same bytes on every machine)."""
    rng = random.Random(17)
    ids = list(range(1, ZIPF_OBJECTS + 1))
    rng.shuffle(ids)
    cum = list(itertools.accumulate(1 / r ** ZIPF_ALPHA for r in range(1, ZIPF_OBJECTS + 1)))
    total = cum[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for start in range(0, ZIPF_REQUESTS, 1 << 16):
            n = min(1 << 16, ZIPF_REQUESTS - start)
            f.write(b"".join(RECORD.pack(start + k, ids[bisect.bisect(cum, rng.random() * total)],
                                         4096, -1) for k in range(n)))
    tmp.replace(path)


def oracle_copy(trace: Path, fmt: str, block: int) -> tuple[Path, int]:
    """An uncompressed oracleGeneral file of the trace's requests, for libCacheSim (its
    fastest reader), and their count."""
    out = WORK / (trace.name + ".lcs.oracleGeneral")
    n = 0
    with open(out, "wb") as f:
        for op in read_trace(trace, fmt):
            if op.kind == "blockread":
                f.write(b"".join(RECORD.pack(0, b, block, -1) for b in op.blocks))
                n += len(op.blocks)
    return out, n


def best(fn: Callable[[], Any], times: list[float]) -> Any:
    gc.collect()
    t = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - t)
    return result


def mmsim_run(trace: Path, fmt: str, policy: str, arc_size: int) -> dict[str, Any]:
    """`mmsim run TRACE --format FMT --cache-policy POLICY --arc-size ARC_SIZE`'s summary."""
    return replay(str(trace), None, fmt=fmt, cache_policy=policy, arc_size=arc_size).summary


def libcachesim_run(path: Path, policy: str, c: int) -> float:
    """libCacheSim's miss ratio of ``policy`` with ``c`` objects over an oracleGeneral file."""
    import libcachesim as lcs

    reader = lcs.TraceReader(trace=str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE,
                             reader_init_params=lcs.ReaderInitParam(ignore_obj_size=True))
    return getattr(lcs, policy.upper())(cache_size=c).process_trace(reader)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", action="store_true", help=f"exit 1 if a ratio exceeds {LIMIT}")
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--oltp", type=Path, default=OLTP, help="the ARC paper's OLTP.lis.zst")
    args = ap.parse_args()
    if not ZIPF.exists():
        print(f"writing {ZIPF} ({ZIPF_REQUESTS:,} requests)", flush=True)
        make_zipf(ZIPF)
    # (trace, format, block size, cache size in objects)
    traces = [(args.oltp, "lis", 512, 1000), (ZIPF, "oracleGeneral", 4096, 10_000)]
    rows: list[dict[str, Any]] = []
    worst = 0.0
    for trace, fmt, block, c in traces:
        lcs_path, n = oracle_copy(trace, fmt, block)
        for policy in ("arc", "lru"):
            mm_t: list[float] = []
            lcs_t: list[float] = []
            run_mm = functools.partial(mmsim_run, trace, fmt, policy, c * block)
            run_c = functools.partial(libcachesim_run, lcs_path, policy, c)
            for _ in range(args.repeat):
                summary = best(run_mm, mm_t)
                miss_ratio = best(run_c, lcs_t)
            hits = summary["arc"]["hits"]
            assert summary["events"] == n + 1 and hits == round(n * (1 - miss_ratio)), (
                f"{trace.name} {policy}: mmsim {hits} hits, libCacheSim {n * (1 - miss_ratio)}")
            ratio = min(mm_t) / min(lcs_t)
            worst = max(worst, ratio)
            rows.append({"trace": trace.name, "policy": policy, "requests": n, "cache": c,
                         "hit_ratio": round(hits / n, 4),
                         "mmsim_s": round(min(mm_t), 3), "libcachesim_s": round(min(lcs_t), 3),
                         "mmsim_rps": round(n / min(mm_t)), "libcachesim_rps": round(
                             n / min(lcs_t)), "ratio": round(ratio, 2)})
            r = rows[-1]
            print(f"{r['trace']:28s} {policy} c={c:<6d} hits {r['hit_ratio']:.4f}  mmsim "
                  f"{r['mmsim_rps']:>10,d} req/s  libCacheSim {r['libcachesim_rps']:>10,d} req/s"
                  f"  ratio {ratio:4.2f}", flush=True)
        os.unlink(lcs_path)
    print(f"worst ratio {worst:.2f} (target <= {LIMIT})")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    if args.check and worst > LIMIT:
        sys.exit(1)


if __name__ == "__main__":
    main()
