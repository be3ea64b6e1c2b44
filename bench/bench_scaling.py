"""Replay cost against trace length: time linear, memory flat (issue 17, item 5).

The same workload at 1x, 4x and 16x its length (``mmsim gen KIND --events N``, the same seed),
each replayed in a fresh subprocess, which reports its replay time (process start and imports
excluded) and its peak resident memory (``ru_maxrss``), whole and above what the process held
before the replay (the interpreter and mmsim's modules: the replay's own growth, which is what
must stay flat). The workloads keep the same live set at
every length, so only time should grow:

* ``scan``: the ARC's workload (docs/gen.md): a 32 MiB hot file set and sequential scans of a
  4 GiB table, replayed with ``--arc-size 64M --cache-policy arc``; 1x = 30,000 operations.
* ``memcached``: malloc churn of a 16 MiB item cache, full after ~140,000 operations;
  1x = 160,000 operations (past the fill, so every length has the full cache).

Printed: each run's time and peak memory, and their ratios to 1x (time ~4 and ~16, memory
~1). Traces are generated under /tmp once and reused.

    python bench/bench_scaling.py [--kinds scan,memcached] [--scales 1,4,16] [--check]

``--check`` exits 1 if the 16x time ratio is over 20 (worse than linear by 25 %) or the 16x
peak memory is over 1.25 times the 1x one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(tempfile.gettempdir()) / "mmsim-bench" / "scaling"
#: kind -> (1x operations, mmsim run settings)
WORKLOADS: dict[str, tuple[int, dict[str, Any]]] = {
    "scan": (30_000, {"arc_size": "64M", "cache_policy": "arc"}),
    "memcached": (160_000, {}),
}
CHILD = """
import json, resource, sys, time
from mmsim.api import replay
settings = json.loads(sys.argv[2])
import mmsim.kernel, mmsim.trace, numpy  # what any replay imports, before the high-water mark
start_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
summary = replay(sys.argv[1], None, **settings).summary
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "events": summary["events"], "start_kib": start_kib,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def trace_for(kind: str, events: int) -> Path:
    """The generated trace (written once: generation is slower than replay)."""
    path = WORK / f"{kind}-{events}.trace"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        subprocess.run([sys.executable, "-m", "mmsim", "gen", kind, "--events", str(events),
                        "--seed", "1", "-o", str(tmp)], check=True, cwd=ROOT,
                       stderr=subprocess.DEVNULL)
        tmp.replace(path)
    return path


def replay_in_child(trace: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """One replay in a fresh interpreter: its time and its peak resident memory."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(trace), json.dumps(settings)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default=",".join(WORKLOADS))
    ap.add_argument("--scales", default="1,4,16")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    scales = [int(x) for x in args.scales.split(",")]
    rows: list[dict[str, Any]] = []
    bad = False
    print(f"{'workload':10s} {'scale':>5s} {'events':>10s} {'seconds':>8s} {'time x':>7s} "
          f"{'events/s':>10s} {'peak MiB':>9s} {'memory x':>9s} {'replay MiB':>11s} "
          f"{'replay x':>9s}")
    for kind in args.kinds.split(","):
        base_events, settings = WORKLOADS[kind]
        first: dict[str, Any] | None = None
        for scale in scales:
            r = replay_in_child(trace_for(kind, base_events * scale), settings)
            first = first or r
            grown = r["maxrss_kib"] - r["start_kib"]
            row = {"kind": kind, "scale": scale, "events": r["events"],
                   "seconds": round(r["seconds"], 3), "peak_mib": round(r["maxrss_kib"] / 1024, 1),
                   "replay_mib": round(grown / 1024, 1),
                   "time_ratio": round(r["seconds"] / first["seconds"], 2),
                   "memory_ratio": round(r["maxrss_kib"] / first["maxrss_kib"], 3),
                   "replay_memory_ratio": round(
                       grown / max(first["maxrss_kib"] - first["start_kib"], 1), 3)}
            rows.append(row)
            print(f"{kind:10s} {scale:>4d}x {r['events']:>10,d} {row['seconds']:>8.2f} "
                  f"{row['time_ratio']:>7.2f} {round(r['events'] / r['seconds']):>10,d} "
                  f"{row['peak_mib']:>9.1f} {row['memory_ratio']:>9.3f} "
                  f"{row['replay_mib']:>11.1f} {row['replay_memory_ratio']:>9.3f}", flush=True)
            if scale == 16 and (row["time_ratio"] > 20 or row["memory_ratio"] > 1.25):
                bad = True
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    if args.check and bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
