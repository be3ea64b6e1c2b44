"""Replay speed of a 500,000-line real glibc mtrace log (issue 4's performance target).

Records the log once (kept out of git, under /tmp): CPython run with every allocation sent to
malloc (PYTHONMALLOC=malloc), traced by glibc's libc_malloc_debug.so and the start-up shim of
tools/mtrace_shim/, then cut to its first 500,000 lines. Then measures, in this process:

* base: only reading the file and splitting each line (``for line in f: line.split()``);
* reader: the mtrace reader alone (batches of records produced, nothing replayed);
* replay: replaying the log through OSv's malloc as ``mmsim run`` does (``read_mtrace``: the
  records in batches of DEFAULT_BATCH, one MallocCalls operation each);
* replay_unbatched: the same with one Op per record (``MtraceReader(path, 0)``), for comparison.

The target: replay >= 500,000 events/s and <= 7x base (aim: 1,000,000/s and 3x). Each figure is
the best of ``--repeat`` runs. ``--check`` exits 1 if a target is missed.

    python bench/bench_mtrace.py [--trace FILE] [--repeat 3] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmsim.kernel import Kernel, KernelConfig  # noqa: E402

from mmsim.trace.mtrace import MtraceReader, read_mtrace  # noqa: E402

LINES = 500_000
DEFAULT_TRACE = Path(tempfile.gettempdir()) / "mmsim-bench" / "python-500k.mtrace"
DEBUG_LIB = "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
WORKLOAD = ("import json, collections\n"
            "d = {str(i): list(range(i % 50)) for i in range(6000)}\n"
            "s = json.dumps(d)\n"
            "print(len(s), len(collections.Counter(s.split(','))))\n")


def record(path: Path) -> None:
    """Trace a real CPython run and keep its first LINES lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shim = path.parent / "mtrace_shim.so"
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-o", str(shim),
                    str(ROOT / "tools" / "mtrace_shim" / "mtrace_shim.c")], check=True)
    full = path.with_suffix(".full")
    env = dict(os.environ, PYTHONMALLOC="malloc", MALLOC_TRACE=str(full),
               LD_PRELOAD=f"{DEBUG_LIB}:{shim}")
    subprocess.run([sys.executable, "-c", WORKLOAD], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    with open(full, encoding="utf-8", errors="surrogateescape") as src, \
            open(path, "w", encoding="utf-8", errors="surrogateescape") as dst:
        for n, line in enumerate(src):
            if n == LINES:
                break
            dst.write(line)
    full.unlink()
    with open(path, "rb") as f:
        got = sum(1 for _ in f)
    if got < LINES:
        raise SystemExit(f"{path}: the workload wrote only {got} lines (need {LINES})")


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def read_and_split(path: Path) -> None:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            line.split()


def reader_only(path: Path) -> int:
    return sum(1 for _ in read_mtrace(path))


def replay(path: Path, batched: bool = True) -> Kernel:
    kernel = Kernel(KernelConfig(memory=2 << 30, cpus=4))
    t = time.perf_counter()
    kernel.run(read_mtrace(path) if batched else MtraceReader(path, 0))
    replay.seconds = time.perf_counter() - t  # type: ignore[attr-defined]
    return kernel


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                    help=f"the mtrace log (recorded there if missing; default {DEFAULT_TRACE})")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = ap.parse_args()
    if not args.trace.exists():
        print(f"recording {args.trace} ...", file=sys.stderr)
        record(args.trace)
    base = best(lambda: read_and_split(args.trace), args.repeat)
    reader = best(lambda: reader_only(args.trace), args.repeat)
    times = []
    for _ in range(args.repeat):
        kernel = replay(args.trace)
        times.append(replay.seconds)  # type: ignore[attr-defined]
    full = min(times)  # boot excluded: it does not depend on the trace
    events = kernel.events
    unbatched = []
    for _ in range(args.repeat):
        other = replay(args.trace, batched=False)
        unbatched.append(replay.seconds)  # type: ignore[attr-defined]
    if other.summary()["malloc"] != kernel.summary()["malloc"]:
        raise SystemExit("batched and unbatched replays disagree")
    result = {
        "trace": str(args.trace),
        "lines": LINES,
        "events": events,
        "base_s": round(base, 4),
        "reader_s": round(reader, 4),
        "replay_s": round(full, 4),
        "events_per_s": round(events / full),
        "replay_over_base": round(full / base, 2),
        "replay_unbatched_s": round(min(unbatched), 4),
        "reader_over_base": round(reader / base, 2),
        "malloc": {k: v for k, v in kernel.summary()["malloc"].items() if k != "classes"},
    }
    print(json.dumps(result, indent=2))
    ok = result["events_per_s"] >= 500_000 and result["replay_over_base"] <= 7
    if args.check and not ok:
        print("target missed: >= 500,000 events/s and <= 7x base", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
