"""Parameter sweeps: many configurations × many traces, each point replayed as `mmsim run` would.

A sweep file names ``traces`` and either a ``grid`` (configuration key -> values, every
combination) or a ``points`` list. Each (trace, point) runs in a worker process (a spawn pool, or
a Dask cluster's concurrent.futures executor) and becomes one row: the point's values, a status,
an error, and the run's summary flattened with dots. Rows are written as points finish, so an
interrupted sweep loses nothing done; rerunning it with the same output skips the points already
there. docs/sweep.md is the user's guide.

Running a sweep is here; its parts are mmsim/sweep_file.py (the file), sweep_points.py (one
point: what a worker imports, and nothing of mmsim.cli, so that it starts fast),
sweep_results.py (the result file) and sweep_exec.py (local processes or Dask).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from typing import Any

from mmsim.sweep_exec import Backend, DaskBackend, LocalBackend, default_workers
from mmsim.sweep_file import Sweep
from mmsim.sweep_points import (
    STATUS_ERROR,
    one_line,
)
from mmsim.sweep_results import Results, row_key

__all__ = [
    "Plan",
    "SweepStats",
    "backend_for",
    "default_output",
    "plan_sweep",
    "run_plan",
    "run_sweep",
    "tasks_of",
]



@dataclasses.dataclass
class SweepStats:
    """What a sweep did, and its rows in the final file's order."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    failed: int = 0
    first_error: str | None = None


@dataclasses.dataclass
class Plan:
    """A sweep against its output file: the points still to run and the rows already there."""

    sweep: Sweep
    results: Results
    todo: list[tuple[dict[str, Any], dict[str, Any]]]
    done: int


def tasks_of(sweep: Sweep, isolate: bool = False) -> Iterator[tuple[dict[str, Any], dict]]:
    """(row head, task) for every trace × point, in (trace, point) order."""
    for trace in sweep.traces:
        for i, point in enumerate(sweep.points):
            head = {"trace": trace.name, "point": i, **point}
            task = {"trace": trace.path, "name": trace.name, "format": trace.fmt,
                    "pid": trace.pid, "image": trace.image, "settings": point,
                    "config": sweep.config, "isolate": isolate}
            yield head, task


def plan_sweep(sweep: Sweep, output: str, isolate: bool = False,
               keep: Callable[[dict[str, Any]], bool] | None = None) -> Plan:
    """Read what ``output`` already holds and list the points left (SweepError if the file is
    not this sweep's). ``keep`` may reject rows done another way (`mrc`'s methods): their
    points run again."""
    results = Results(output, sweep)
    done = results.load(sweep)
    if keep is not None:
        done = {k: row for k, row in done.items() if keep(row)}
    todo = [(h, t) for h, t in tasks_of(sweep, isolate)
            if row_key(h["trace"], {k: h.get(k) for k in sweep.keys}) not in done]
    results.start(done.values())
    return Plan(sweep, results, todo, len(done))


def run_plan(plan: Plan, backend: Backend,
             progress: Callable[[int], None] | None = None) -> SweepStats:
    """Run the points left on ``backend``, each row on disk as it finishes; ``progress(1)``
    after each. The file is left sorted, even when interrupted."""
    results = plan.results
    todo = deque(plan.todo)
    stats = SweepStats(skipped=plan.done)
    inflight: dict[Future, tuple[dict[str, Any], dict[str, Any], int]] = {}
    try:
        while todo or inflight:
            while todo and len(inflight) < backend.slots:
                head, task = todo.popleft()
                fut, gen = backend.submit(task)
                inflight[fut] = (head, task, gen)
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            retry = []
            for fut in sorted(finished, key=lambda f: (inflight[f][0]["trace"],
                                                       inflight[f][0]["point"])):
                head, task, gen = inflight.pop(fut)
                try:
                    result = fut.result()
                except Exception as e:
                    if backend.broken(e, gen):
                        retry.append((head, {**task, "isolate": True}))
                        continue
                    result = {"status": STATUS_ERROR, "figures": {},
                              "error": one_line(f"worker failed: {type(e).__name__}: {e}")}
                row = {**head, "status": result["status"], "error": result["error"]}
                for name, value in result["figures"].items():
                    row["summary." + name if name in row else name] = value
                results.add(row)
                stats.ran += 1
                if progress is not None:
                    progress(1)
            todo.extendleft(reversed(retry))
    finally:
        for fut in inflight:
            fut.cancel()
        results.finish()
    stats.rows = results.sorted_rows()
    for row in stats.rows:
        if row.get("status") == STATUS_ERROR:
            stats.failed += 1
            if stats.first_error is None:
                stats.first_error = f"{row['trace']} point {row['point']}: {row.get('error')}"
    return stats


def run_sweep(sweep: Sweep, output: str, backend: Backend, isolate: bool = False) -> SweepStats:
    """Plan and run in one call (for code; the command shows the plan and a progress bar)."""
    return run_plan(plan_sweep(sweep, output, isolate), backend)


@contextmanager
def backend_for(workers: int | None, dask: str | None) -> Iterator[Backend]:
    """The Dask cluster at ``dask``, or ``workers`` local processes (default: the CPU count)."""
    backend: Backend = DaskBackend(dask) if dask else LocalBackend(workers or default_workers())
    try:
        yield backend
    finally:
        backend.close()


_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def default_output(path: str, suffix: str) -> str:
    """``study.yaml`` -> ``study.csv`` beside it (``suffix`` includes the dot)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(os.path.dirname(path), _SAFE_NAME.sub("_", stem) + suffix)


