"""Kernel threads (after-op hooks) after malloc's calls: those that do not watch memory run only
when something gave them work.

A malloc or free of a large block moves free memory; before, every thread ran after each such
call, although the ARC's threads, its headers and the balloon's polls get work only from the
clock, from their own operations, or from a reclaim pass. The kernel now runs only the threads
that watch memory after a memory-only operation, unless a reclaim pass ran or the reclaimer was
woken (``arm_threads``). These tests hold that to what running every thread gives.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from mmsim.kernel import Kernel, KernelConfig, OutOfMemory

from mmsim.trace import read_trace


def _kernel(memory: int = 256 << 20, **extra: Any) -> Kernel:
    return Kernel(KernelConfig(memory=memory, cpus=2, extra=extra))


def _apply(k: Kernel, path: Path) -> None:
    for op in read_trace(path):
        k.apply(op)


def test_threads_that_do_not_watch_memory_sleep_through_malloc_calls(tmp_path: Path) -> None:
    k = _kernel()
    runs = {"memory": 0, "other": 0}
    k.add_after_op(lambda: runs.__setitem__("memory", runs["memory"] + 1))
    k.add_after_op(lambda: runs.__setitem__("other", runs["other"] + 1), memory=False)
    k.apply(next(iter(read_trace(_trace(tmp_path, "sleep 1ms")))))  # the clock moves: both
    assert runs == {"memory": 1, "other": 1}
    _apply(k, _trace(tmp_path, *[f"malloc b{i} 64K" for i in range(5)], "free b0", "free b1"))
    assert runs == {"memory": 8, "other": 1}  # large blocks move free memory; nothing else
    _apply(k, _trace(tmp_path, "create /f 1M"))  # moves neither the clock nor memory
    assert runs == {"memory": 8, "other": 1}
    _apply(k, _trace(tmp_path, "malloc c 64K"))  # but it may have given a thread work
    assert runs == {"memory": 9, "other": 2}
    _apply(k, _trace(tmp_path, "malloc d 64K"))
    assert runs == {"memory": 10, "other": 2}


def test_a_reclaim_pass_inside_a_malloc_call_runs_every_thread(tmp_path: Path) -> None:
    k = _kernel(128 << 20)
    other: list[int] = []
    passes: list[int] = []
    k.add_after_op(lambda: other.append(k.events), memory=False)
    k.subscribe(lambda name, record: name == "reclaim" and passes.append(record["event"]))
    lines = ["create /f 32M", "read /f 0 32M"]  # the ARC holds 32 MiB the reclaimer can take
    lines += [f"malloc b{i} 1M" for i in range(120)]
    with pytest.raises(OutOfMemory):
        _apply(k, _trace(tmp_path, *lines))
    assert passes, "no reclaim pass: the guest is too large for this test"
    assert set(passes) <= set(other)  # the thread ran after each call whose pass ran
    assert len(other) < k.events - 10  # and not after the calls that only moved memory


def _random_trace(seed: int, n: int = 1200) -> list[str]:
    """Mallocs of every size class, files read and written (the ARC), the host's balloon,
    sleeps and CPU switches, so that reclaim passes happen inside malloc calls."""
    r = random.Random(seed)
    out: list[str] = []
    live: list[str] = []
    files: list[str] = []
    for i in range(n):
        x = r.random()
        cpu = f"cpu={r.randrange(2)} " if r.random() < 0.1 else ""
        if x < 0.35:
            live.append(f"b{i}")
            size = r.choice([r.randrange(1, 1024), r.randrange(1, 1024), r.randrange(1025, 5000),
                             r.randrange(5000, 300_000), r.randrange(5000, 300_000)])
            out.append(f"{cpu}malloc b{i} {size}")
        elif x < 0.58 and live:
            out.append(f"{cpu}free {live.pop(r.randrange(len(live)))}")
        elif x < 0.62 and live:
            out.append(f"{cpu}realloc {r.choice(live)} {r.randrange(1, 400_000)}")
        elif x < 0.66:
            files.append(f"/d/f{i}")
            out.append(f"create /d/f{i} {r.choice(['1M', '4M', '16M'])}")
        elif x < 0.76 and files:
            out.append(f"read {r.choice(files)} {r.randrange(1 << 20)} {r.randrange(1, 1 << 20)}")
        elif x < 0.80 and files:
            out.append(f"write {r.choice(files)} {r.randrange(1 << 20)} {r.randrange(1, 1 << 19)}")
        elif x < 0.82 and files:
            out.append(f"unlink {files.pop(r.randrange(len(files)))}")
        elif x < 0.84:
            out.append(f"host-balloon {r.choice(['0', '8M', '32M'])}")
        elif x < 0.87:
            out.append(f"sleep {r.choice(['1ms', '100ms', '600ms'])}")
        else:
            live.append(f"b{i}")
            out.append(f"{cpu}calloc b{i} {r.randrange(1, 64)} {r.randrange(1, 2000)}")
    return out


def _outcome(path: Path, every_thread: bool, memory: int, extra: dict[str, Any]) -> str:
    k = _kernel(memory, **extra)
    if every_thread:
        k._memory_ops.clear()  # as before: every thread after every call that moved memory
    events: list[Any] = []
    k.subscribe(lambda name, record: events.append((name, record)))
    error = None
    try:
        _apply(k, path)
    except OutOfMemory as e:
        error = str(e)
    return json.dumps({"summary": k.summary(), "events": events, "count": k.events,
                       "error": error}, default=str, sort_keys=True)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("memory", "extra"), [
    (128 << 20, {}),
    (192 << 20, {"virtio_balloon_deflate_on_oom": True, "extra_shrinkers": ["malloc_pools"]}),
    (256 << 20, {"reclaimer_wake_latency": "1ms", "arc_reclaim_wake_latency": "2ms",
                 "virtio_balloon_wake_latency": "3ms"}),
])
def test_skipping_idle_threads_changes_no_result(seed: int, memory: int, extra: dict[str, Any],
                                                 tmp_path: Path) -> None:
    path = _trace(tmp_path, *_random_trace(seed))
    assert _outcome(path, False, memory, extra) == _outcome(path, True, memory, extra)


def test_skipping_idle_threads_changes_no_result_in_batches(tmp_path: Path) -> None:
    """An mtrace log under pressure, in batches (the C loop where it is built)."""
    r = random.Random(3)
    lines = ["= Start"]
    live: list[int] = []
    for rnd in range(40):
        for i in range(60):
            p = 0x10000 + (rnd * 100 + i) * 0x1000
            size = r.choice([0x100000, 0x20, 0x3000, 0x12000, 0x800])
            lines.append(f"@ ./a.out:[0x{r.randrange(16):x}] + {p:#x} {size:#x}")
            live.append(p)
        r.shuffle(live)
        lines += [f"@ ./b.out:[0x1] - {p:#x}" for p in live[:50]]
        live = live[50:]
    path = tmp_path / "pressure.mtrace"
    path.write_text("\n".join(lines) + "\n")
    for memory in (128 << 20, 256 << 20):
        assert _outcome(path, False, memory, {}) == _outcome(path, True, memory, {})


def _trace(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.trace"
    path.write_text("# mmsim-trace v1\n" + "\n".join(lines) + "\n")
    return path
