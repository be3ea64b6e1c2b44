"""One point of a sweep: a trace replayed (or an image booted) with the point's settings, its
summary flattened into a row; in this process, or isolated in a fresh interpreter."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from mmsim.api import MmsimError, replay
from mmsim.kernel import (
    parse_size,
)

#: the columns every row has, before the point's keys (trace, point) and after them (status, error)
LEAD = ("trace", "point")
TAIL = ("status", "error")
STATUS_OK, STATUS_OOM, STATUS_APP, STATUS_ERROR = "ok", "oom", "app_error", "error"
#: statuses of points that ran to a result (a rerun skips them; it runs "error" points again)
DONE = (STATUS_OK, STATUS_OOM, STATUS_APP)

class PointError(Exception):
    """A point that could not run to its end; str() is the message `mmsim run` would print."""



def run_point(trace: str, fmt: str = "auto", settings: dict[str, Any] | None = None,
              config: str | None = None, pid: int | None = None) -> dict[str, Any]:
    """Replay ``trace`` (``pid``'s calls, for an strace log) on a guest configured by ``config``
    (a YAML file) then ``settings``.

    The summary of `mmsim run --json`; running out of memory is a result (its ``oom`` section),
    everything else that stops the run raises PointError with `mmsim run`'s message.
    """
    try:
        return replay(trace, config, fmt=fmt, pid=pid, settings=settings).summary
    except MmsimError as e:
        raise PointError(str(e)) from None


#: summary figures left out of rows: wall-clock times, so that rows depend on the point only
_WALL_CLOCK = ("app.wall_seconds",)


def run_image(manifest: str, settings: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], str, str | None]:
    """Boot the image of ``manifest`` as `mmsim boot` does, with ``settings`` over the
    manifest's configuration: (summary, status, why the application failed).

    A Java image starts a JVM in this process, which cannot start another: call it in a
    process of its own (the sweep isolates every image point).
    """
    from mmsim.image import EXIT_APP, EXIT_OOM, ImageError, boot_image, load_manifest

    settings = dict(settings or {})
    memory, cpus = settings.pop("memory", None), settings.pop("cpus", None)
    try:
        m = load_manifest(manifest)
        m = dataclasses.replace(m, kernel={**m.kernel, **settings})
        outcome = boot_image(m, parse_size(memory) if memory is not None else None, cpus)
    except (ImageError, ValueError) as e:
        raise PointError(str(e)) from None
    status = {EXIT_OOM: STATUS_OOM, EXIT_APP: STATUS_APP}.get(outcome.status, STATUS_OK)
    return outcome.summary, status, outcome.message or None


def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted columns (``arc.hit_ratio``); lists as JSON text, so every
    value is a scalar a CSV or Parquet cell can hold."""
    out: dict[str, Any] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))  # an empty section has no column
        elif isinstance(value, list | tuple):
            out[name] = json.dumps(value, sort_keys=True, separators=(",", ":"))
        else:
            out[name] = value
    return out


def one_line(message: str) -> str:
    return " ".join(message.split())


def _execute(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task here; never raises for the point's own failures (they become the result)."""
    path, name = task["trace"], task["name"]
    error = None
    try:
        if task.get("image"):
            summary, status, error = run_image(path, task["settings"])
            summary.pop("image", None)
        else:
            summary = run_point(path, task["format"], task["settings"], task["config"],
                                task.get("pid"))
            status = STATUS_OOM if summary.get("oom") else STATUS_OK
    except PointError as e:
        return {"status": STATUS_ERROR, "error": one_line(str(e).replace(path, name)),
                "figures": {}}
    except Exception as e:  # a bug of the simulator: keep the sweep going, say what it was
        return {"status": STATUS_ERROR,
                "error": one_line(f"internal error: {type(e).__name__}: {e}".replace(path, name)),
                "figures": {}}
    summary.pop("trace", None)
    figures = {k: v for k, v in flatten(summary).items() if k not in _WALL_CLOCK}
    return {"status": status, "error": one_line(error.replace(path, name)) if error else None,
            "figures": figures}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """What a worker runs for one (trace, point): here, or in a process of its own with
    ``task["isolate"]`` or for an image (a point that kills its process then fails alone)."""
    if task.get("isolate") or task.get("image"):
        return _run_isolated(task)
    return _execute(task)


def _run_isolated(task: dict[str, Any]) -> dict[str, Any]:
    """The task in a fresh interpreter (``python -m mmsim.sweep_points``), JSON in and out.

    A subprocess rather than multiprocessing: Dask's worker processes are daemons, which may
    not have multiprocessing children. The child sees this process's sys.path.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    fd, result_path = tempfile.mkstemp(prefix="mmsim-point-", suffix=".json")
    os.close(fd)
    try:
        # the application's output (a JVM writes to fd 1 itself) goes nowhere
        proc = subprocess.run([sys.executable, "-m", "mmsim.sweep_points", result_path],
                              input=json.dumps(task), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env, check=False)
    except OSError as e:  # no process at all (no interpreter, no fork): the point fails alone
        os.unlink(result_path)
        return {"status": STATUS_ERROR, "figures": {},
                "error": one_line(f"cannot start the point's process ({e.strerror or e})")}
    try:
        if proc.returncode == 0:
            with open(result_path, encoding="utf-8") as f:
                return json.load(f)
    except (OSError, ValueError):
        pass
    finally:
        os.unlink(result_path)
    if proc.returncode < 0:
        try:
            how = f"killed by {signal.Signals(-proc.returncode).name}"
        except ValueError:
            how = f"killed by signal {-proc.returncode}"
    else:
        how = f"exit code {proc.returncode}"
    last = proc.stderr.strip().splitlines()[-1:] if proc.stderr else []
    detail = f": {last[0]}" if last else ""
    return {"status": STATUS_ERROR, "figures": {},
            "error": one_line(f"the point's process died ({how}){detail}")}


def isolated_main(result_path: str) -> None:
    """``python -m mmsim.sweep_points RESULT.json``: one task from stdin, its result in the
    file; then leave at once (a JVM's application may hold non-daemon threads)."""
    result = _execute(json.load(sys.stdin))
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    isolated_main(sys.argv[1])
