"""`mmsim mrc` against libCacheSim's own MRC profiler (its C `mrcProfiler` tool), same traces,
same sizes (issue 17: "libCacheSim's MRC profiler is the reference to be faster than").

The profiler is not in the libcachesim Python package: build it from libCacheSim's source
(see BUILD below) and give its path with ``--mrc-profiler PATH`` or ``MRC_PROFILER=PATH``.
Nothing of libCacheSim is part of mmsim; without the path this prints how to build it.

Per trace (the ARC paper's OLTP, 914,145 requests, and bench_cache.py's 5,000,000-request
Zipf oracleGeneral, written under /tmp when missing), at the same cache sizes:

- libCacheSim, one process per curve (process start included; a few ms for C): LRU exact
  (SHARDS at rate 1, i.e. every request's stack distance in its splay tree), SHARDS at each
  rate, and ARC by MINISIM (miniature simulations) at each rate on ``--minisim-threads``
  threads (default 1, like mmsim). Its CPU time (user + system) is printed with the wall
  time: MINISIM's main thread polls for the simulations' end with ``sleep(2)``
  (print_progress), so its wall time is whole multiples of 2 s whatever the work.
- mmsim, in this process through mmsim.mrc.one_pass_rows (what the command calls), and as
  a process, ``python -m mmsim mrc`` (start, imports and output included): LRU's exact curve
  in one pass (``--method stack``), SHARDS (``--method sampled --policies lru``) and ARC's
  miniature replays (``--method sampled --policies arc``) at each rate.

Each is run ``--repeat`` times, all in turn; the best time is kept (the least disturbed by
other processes), and the ratios are mmsim's best over libCacheSim's, from the same run.
The curves: mmsim's exact LRU against the profiler's (the same algorithm: they should agree
to its 6 printed digits), and every sampled curve's mean and largest absolute error against
the exact one (LRU: the profiler's exact curve; ARC: the libcachesim package's C ARC, one
simulation per size, when it is installed; its ARC agrees with mmsim's hit for hit, see
bench_cache.py).

    python bench/bench_mrc_profiler.py --mrc-profiler PATH [--repeat 3] [--rates 0.01,0.1]
        [--sizes 256K:64M:9] [--zipf-sizes 4M:1G:9] [--oltp PATH] [--json out.json]

Cite Megiddo & Modha, FAST'03, with any result on the OLTP trace.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_cache import OLTP, RECORD, ZIPF, make_zipf  # noqa: E402

from mmsim.mrc import SAMPLED, STACK, one_pass_rows  # noqa: E402
from mmsim.sweep_file import parse_sizes  # noqa: E402
from mmsim.trace import read_trace  # noqa: E402

BUILD = """\
libCacheSim's mrcProfiler was not given (--mrc-profiler PATH or MRC_PROFILER=PATH).
Build it (Debian; it needs cmake, a C/C++ compiler, glib and zstd), e.g. under /tmp:

    apt-get install -y cmake build-essential pkg-config libglib2.0-dev libzstd-dev
    git clone https://github.com/1a1a11a/libCacheSim /tmp/libCacheSim-src
    cd /tmp/libCacheSim-src && mkdir _build && cd _build
    cmake -DCMAKE_BUILD_TYPE=Release -DENABLE_TESTS=OFF .. && make -j2 mrcProfiler
    python bench/bench_mrc_profiler.py --mrc-profiler /tmp/libCacheSim-src/_build/bin/mrcProfiler

(The tool is libCacheSim/bin/mrcProfiler in recent libCacheSim; older checkouts lack it. The
figures in docs/sweep.md were measured with the branch that added it, JasonGuo98/libCacheSim's
add_mrc_profilers at fd61a11. Its MINISIM aborts on a double free after writing its curve,
which this bench reads from --output.)"""

Curve = dict[int, float]
_ROW = re.compile(r"^(\d+)B\t([0-9.]+)\t", re.M)


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_process(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(wall seconds, CPU seconds, the finished process) of one run of ``cmd``."""
    cpu = _child_cpu()
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t, _child_cpu() - cpu, done


def profiler_curve(binary: str, trace: Path, algo: str, profiler: str, params: str,
                   sizes: list[int]) -> Callable[[], tuple[float, float, Curve]]:
    """A run of mrcProfiler: (wall, CPU, curve). The curve is read from --output's file:
    MINISIM aborts (a double free of the reader's sampler, in close_reader) after writing
    it, and stdout's buffer is lost with the abort."""
    def run() -> tuple[float, float, Curve]:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "mrc.txt")
            wall, cpu, done = run_process([
                binary, str(trace), "oracleGeneral", f"--algo={algo}",
                f"--profiler={profiler}", f"--profiler-params={params}",
                "--size=" + ",".join(f"{c}B" for c in sizes), f"--output={out}"])
            text = Path(out).read_text() if os.path.exists(out) else ""
        curve = {int(c): float(m) for c, m in _ROW.findall(text)}
        if sorted(curve) != sizes:
            raise RuntimeError(f"mrcProfiler {algo} {profiler} {params}: exit "
                               f"{done.returncode}, no curve\n{done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")
        return wall, cpu, curve
    return run


def mmsim_in_process(trace: Path, fmt: str, block: int, policy: str, sizes: list[int],
                     method: str, rate: float | None) -> Callable[[], tuple[float, float, Curve]]:
    def run() -> tuple[float, float, Curve]:
        heads = [{"trace": str(trace), "point": i, "cache_policy": policy, "arc_size": c,
                  "block_size": str(block)} for i, c in enumerate(sizes)]
        gc.collect()
        cpu, t = time.process_time(), time.perf_counter()
        rows = one_pass_rows(str(trace), fmt, heads, {policy: method}, rate)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        return wall, cpu, {r["arc_size"]: r["arc.misses"] / r["mrc.requests"] for r in rows}
    return run


def mmsim_process(trace: Path, fmt: str, block: int, policy: str, sizes: list[int],
                  method: str, rate: float | None) -> Callable[[], tuple[float, float, Curve]]:
    def run() -> tuple[float, float, Curve]:
        with tempfile.TemporaryDirectory() as tmp:  # a fresh output: mrc resumes an old one
            out = os.path.join(tmp, "mrc.csv")
            cmd = [sys.executable, "-m", "mmsim", "mrc", str(trace), "--format", fmt,
                   "--block-size", str(block), "--policies", policy, "--method", method,
                   "--sizes", ",".join(map(str, sizes)), "-o", out]
            if rate is not None:
                cmd += ["--sample-rate", str(rate)]
            wall, cpu, done = run_process(cmd)
            if done.returncode:
                raise RuntimeError(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr}")
            with open(out, newline="") as f:
                curve = {int(r["arc_size"]): int(r["arc.misses"]) / int(r["mrc.requests"])
                         for r in csv.DictReader(f)}
        return wall, cpu, curve
    return run


def exact_arc(oracle: Path, block: int, sizes: list[int]) -> Curve | None:
    """ARC's exact curve by the libcachesim package's C ARC, one simulation per size."""
    try:
        import libcachesim as lcs
    except ImportError:
        return None
    curve = {}
    for c in sizes:
        reader = lcs.TraceReader(trace=str(oracle),
                                 trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE,
                                 reader_init_params=lcs.ReaderInitParam(ignore_obj_size=True))
        curve[c] = lcs.ARC(cache_size=c // block).process_trace(reader)[0]
    return curve


def oracle_copy(trace: Path, fmt: str, block: int, out: Path) -> None:
    """``trace``'s requests as an uncompressed oracleGeneral file (objects of ``block``
    bytes), for libCacheSim; in this run's own directory (bench_cache.py, perhaps running
    too, deletes its copy under /tmp/mmsim-bench when done)."""
    with open(out, "wb") as f:
        for op in read_trace(str(trace), fmt):
            if op.kind == "blockread":
                f.write(b"".join(RECORD.pack(0, b, block, -1) for b in op.blocks))


def errors(curve: Curve, exact: Curve) -> tuple[float, float]:
    diffs = [abs(curve[c] - exact[c]) for c in exact]
    return sum(diffs) / len(diffs), max(diffs)


def bench_trace(binary: str, trace: Path, fmt: str, oracle: Path, block: int, sizes: list[int],
                rates: list[float], repeat: int, threads: int) -> dict[str, Any]:
    """``trace`` (format ``fmt``) is what mmsim reads, ``oracle`` the same requests as an
    oracleGeneral file for the profiler (the same file, or a copy)."""
    print(f"\n== {trace.name} ({fmt}; the profiler reads {oracle.name}): {len(sizes)} sizes "
          f"{sizes[0]}..{sizes[-1]} bytes, {block}-byte records", flush=True)
    # (key, tool, policy, how, rate, runner); the pairs compared share policy, how and rate
    runs: list[tuple[str, str, str, str, float | None, Callable[[], Any]]] = []
    for rate in (None, *rates):
        how = "exact" if rate is None else "sampled"
        shards = f"FIX_RATE,{1 if rate is None else rate},42"
        runs.append((f"lcs lru {how} {rate}", "libCacheSim", "lru", how, rate,
                     profiler_curve(binary, oracle, "LRU", "SHARDS", shards, sizes)))
        method = STACK if rate is None else SAMPLED
        runs.append((f"mm lru {how} {rate}", "mmsim", "lru", how, rate,
                     mmsim_in_process(trace, fmt, block, "lru", sizes, method, rate)))
        runs.append((f"mmp lru {how} {rate}", "mmsim process", "lru", how, rate,
                     mmsim_process(trace, fmt, block, "lru", sizes, method, rate)))
    for rate in rates:
        runs.append((f"lcs arc sampled {rate}", "libCacheSim", "arc", "sampled", rate,
                     profiler_curve(binary, oracle, "ARC", "MINISIM",
                                    f"FIX_RATE,{rate},{threads}", sizes)))
        runs.append((f"mm arc sampled {rate}", "mmsim", "arc", "sampled", rate,
                     mmsim_in_process(trace, fmt, block, "arc", sizes, SAMPLED, rate)))
        runs.append((f"mmp arc sampled {rate}", "mmsim process", "arc", "sampled", rate,
                     mmsim_process(trace, fmt, block, "arc", sizes, SAMPLED, rate)))
    best: dict[str, tuple[float, float]] = {}
    curves: dict[str, Curve] = {}
    for i in range(repeat):
        for key, *_, run in runs:
            wall, cpu, curve = run()
            old = best.get(key)
            best[key] = (min(wall, old[0]), min(cpu, old[1])) if old else (wall, cpu)
            if key in curves:
                assert curves[key] == curve, f"{key}: another curve in another run"
            curves[key] = curve
        print(f"  run {i + 1}/{repeat} done", flush=True)
    exact = {"lru": curves["lcs lru exact None"], "arc": exact_arc(oracle, block, sizes)}
    rows = []
    for key, tool, policy, how, rate, _ in runs:
        ref = exact[policy]
        mae, worst = errors(curves[key], ref) if ref is not None else (None, None)
        lcs = best[f"lcs {policy} {how} {rate}"]
        rows.append({"tool": tool, "policy": policy, "how": how, "rate": rate,
                     "wall_s": best[key][0], "cpu_s": best[key][1],
                     "wall_ratio": best[key][0] / lcs[0], "cpu_ratio": best[key][1] / lcs[1],
                     "mae": mae, "max_error": worst})
    print(f"{'':14s} {'policy':6s} {'curve':12s} {'wall s':>8s} {'cpu s':>8s} "
          f"{'wall/lcs':>8s} {'cpu/lcs':>8s}  error vs exact: mean (max)")
    for r in rows:
        what = r["how"] if r["rate"] is None else f"R={r['rate']:g}"
        err = "-" if r["mae"] is None else f"{r['mae']:.4f} ({r['max_error']:.4f})"
        print(f"{r['tool']:14s} {r['policy']:6s} {what:12s} {r['wall_s']:8.3f} "
              f"{r['cpu_s']:8.3f} {r['wall_ratio']:8.2f} {r['cpu_ratio']:8.2f}  {err}")
    return {"trace": trace.name, "sizes": sizes, "block": block, "rows": rows,
            "exact": {p: c for p, c in exact.items() if c is not None}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mrc-profiler", default=os.environ.get("MRC_PROFILER"),
                    help="libCacheSim's mrcProfiler binary (or MRC_PROFILER=PATH)")
    ap.add_argument("--oltp", type=Path, default=OLTP, help="the ARC paper's OLTP.lis.zst")
    ap.add_argument("--sizes", default="256K:64M:9", help="cache sizes for OLTP (LO:HI:N)")
    ap.add_argument("--zipf-sizes", default="4M:1G:9", help="cache sizes for the Zipf trace")
    ap.add_argument("--rates", default="0.01,0.1")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--minisim-threads", type=int, default=1)
    ap.add_argument("--no-zipf", action="store_true", help="OLTP only")
    ap.add_argument("--mmsim-reads", choices=("lis", "oracleGeneral"), default="lis",
                    help="OLTP as mmsim reads it: the .lis.zst, or the profiler's own "
                         "uncompressed oracleGeneral copy (the same bytes as it)")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    if not args.mrc_profiler:
        print(BUILD)
        sys.exit(2)
    if not os.access(args.mrc_profiler, os.X_OK):
        sys.exit(f"{args.mrc_profiler}: not an executable\n\n{BUILD}")
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        oltp_oracle = Path(tmp) / "OLTP.oracleGeneral"
        oracle_copy(args.oltp, "lis", 512, oltp_oracle)
        mine = (args.oltp, "lis") if args.mmsim_reads == "lis" else (oltp_oracle,
                                                                     "oracleGeneral")
        results = [bench_trace(args.mrc_profiler, *mine, oltp_oracle, 512,
                               parse_sizes(args.sizes), rates, args.repeat,
                               args.minisim_threads)]
    if not args.no_zipf:
        if not ZIPF.exists():
            print(f"writing {ZIPF}", flush=True)
            make_zipf(ZIPF)
        results.append(bench_trace(args.mrc_profiler, ZIPF, "oracleGeneral", ZIPF, 4096,
                                   parse_sizes(args.zipf_sizes), rates, args.repeat,
                                   args.minisim_threads))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
