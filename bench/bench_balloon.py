"""Benchmark: the JVM balloon through JPype, and booting the Hello image (issue 7's targets).

Cases, each in a fresh process (one JVM per process, and a fresh JVM for the boot):

- ``balloon``: inflate and deflate one 128 MiB balloon in a 2 GiB guest (-Xmx1g, G1,
  ``jvm_balloon: true``): the real array's allocation, its interior given back to the page
  allocator, the reference dropped and the heap mapping restored; target < 50 ms wall for the
  pair at the 90th percentile. Baseline in the same process: the bare JPype allocation and
  drop of the same array, without the simulator.
- ``boot``: ``python -m mmsim boot examples/images/hello/hello.yaml`` with the JVM's start;
  target < 3 s wall. Baseline: a Python process that starts a JVM and runs Hello's main
  through JPype, without mmsim.

``--load N`` runs N busy processes (``while True: pass``) beside the cases: the targets hold
on a loaded host too.

    python bench/bench_balloon.py [--case balloon|boot] [--repeat N] [--load N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
HELLO = os.path.join(ROOT, "examples", "images", "hello", "hello.yaml")


def _p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]


def balloon_case(repeat: int) -> dict:
    import mmsim.kernel.sys_jvm  # noqa: F401  (config keys)
    from mmsim.balloon.balloon import ARRAY_BYTES
    from mmsim.kernel import Kernel, load_config

    k = Kernel(load_config(None, {"memory": "2G", "cpus": 2, "jvm_balloon": True}))
    host = k.jvm.launch(["-Xmx1g", "-Xms512m", "-XX:+UseG1GC"])
    b = k.jvm.balloon
    pairs, inflates, deflates, bare = [], [], [], []
    for i in range(repeat + 1):  # the first round warms up
        t0 = time.perf_counter()
        assert b.inflate("bench") is not None
        t1 = time.perf_counter()
        b.release_memory(1, "bench")
        b.run_thread()
        assert b.count == 0
        t2 = time.perf_counter()
        arr = host.new_byte_array(ARRAY_BYTES)
        del arr
        t3 = time.perf_counter()
        host.system_gc()  # each round starts from the same heap
        k.jvm.tick(0.05)
        if i:
            inflates.append(t1 - t0)
            deflates.append(t2 - t1)
            pairs.append(t2 - t0)
            bare.append(t3 - t2)
    k.check()
    ms = 1000.0
    return {"case": "balloon", "pair_ms_median": round(statistics.median(pairs) * ms, 2),
            "pair_ms_p90": round(_p90(pairs) * ms, 2),
            "pair_ms_max": round(max(pairs) * ms, 2),
            "inflate_ms_median": round(statistics.median(inflates) * ms, 2),
            "deflate_ms_median": round(statistics.median(deflates) * ms, 3),
            "baseline_alloc_ms_median": round(statistics.median(bare) * ms, 2),
            "target_ms": 50}


BASELINE = """
import jpype, sys
jpype.startJVM(classpath=[sys.argv[1]], interrupt=False)
jpype.JClass("Hello").main(jpype.JArray(jpype.JString)([]))
"""


def boot_case(repeat: int) -> dict:
    from mmsim.image import load_manifest, run_build

    run_build(load_manifest(HELLO))
    classes = os.path.join(os.path.dirname(HELLO), "build", "classes")
    boots, base = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "mmsim", "boot", HELLO, "-q"], cwd=ROOT,
                             capture_output=True, text=True)
        boots.append(time.perf_counter() - t0)
        assert res.returncode == 0 and "Hello from Java" in res.stdout, res.stderr
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", BASELINE, classes], capture_output=True, check=True)
        base.append(time.perf_counter() - t0)
    return {"case": "boot", "boot_s_median": round(statistics.median(boots), 2),
            "boot_s_p90": round(_p90(boots), 2),
            "boot_s_max": round(max(boots), 2),
            "baseline_jpype_hello_s_median": round(statistics.median(base), 2), "target_s": 3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", choices=("balloon", "boot"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="busy processes to run beside the cases")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = balloon_case if args.case == "balloon" else boot_case
        print(json.dumps(fn(args.repeat)), flush=True)
        # as mmsim boot does: a process hosting a JVM leaves without its exit handlers (the
        # JVM's teardown can abort: "terminate called without an active exception")
        os._exit(0)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    try:
        for case in ([args.case] if args.case else ["balloon", "boot"]):
            res = subprocess.run([sys.executable, __file__, "--child", "--case", case,
                                  "--repeat", str(args.repeat)], capture_output=True, text=True)
            if res.returncode:
                print(f"{case}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                sys.exit(1)
            out = json.loads(res.stdout.strip().splitlines()[-1])
            print(json.dumps({**out, "busy_processes": args.load}))
    finally:
        for p in busy:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
