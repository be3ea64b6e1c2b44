"""Parameter sweeps: many configurations × many traces, each point replayed as `mmsim run` would.

A sweep file names ``traces`` and either a ``grid`` (configuration key -> values, every
combination) or a ``points`` list. Each (trace, point) runs in a worker process (a spawn pool, or
a Dask cluster's concurrent.futures executor) and becomes one row: the point's values, a status,
an error, and the run's summary flattened with dots. Rows are written as points finish, so an
interrupted sweep loses nothing done; rerunning it with the same output skips the points already
there. docs/sweep.md is the user's guide.

Only the kernel's public face is used here, and nothing of mmsim.cli: workers import this module
alone, so a worker process starts fast.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from typing import Any, Protocol

import yaml

from mmsim.api import MmsimError, replay
from mmsim.kernel import (
    BootError,
    ConfigError,
    Kernel,
    load_config,
    parse_size,
)
from mmsim.kernel.config import NoAliasLoader
from mmsim.trace import READERS

__all__ = [
    "Plan",
    "PointError",
    "Sweep",
    "SweepError",
    "SweepStats",
    "TraceSpec",
    "flatten",
    "load_sweep",
    "parse_sizes",
    "plan_sweep",
    "run_plan",
    "run_point",
    "run_sweep",
    "run_task",
]

#: the columns every row has, before the point's keys (trace, point) and after them (status, error)
LEAD = ("trace", "point")
TAIL = ("status", "error")
STATUS_OK, STATUS_OOM, STATUS_APP, STATUS_ERROR = "ok", "oom", "app_error", "error"
#: statuses of points that ran to a result (a rerun skips them; it runs "error" points again)
DONE = (STATUS_OK, STATUS_OOM, STATUS_APP)
#: keys whose values are not checked by booting a kernel up front: booting with every memory
#: size costs time, and user shrinkers are user code that belongs in the workers only
_NO_BOOT_CHECK = frozenset({"memory", "e820", "shrinkers"})
#: at most this often (seconds) the whole Parquet file is rewritten while points finish
_PARQUET_EVERY_S = 1.0


class SweepError(ValueError):
    """A bad sweep file or option; str() is the one-line message (``path:line: what``)."""

    def __init__(self, message: str, path: str | None = None, line: int = 0) -> None:
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(where + message)


class PointError(Exception):
    """A point that could not run to its end; str() is the message `mmsim run` would print."""


# -- one point ------------------------------------------------------------------------------


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


def _one_line(message: str) -> str:
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
        return {"status": STATUS_ERROR, "error": _one_line(str(e).replace(path, name)),
                "figures": {}}
    except Exception as e:  # a bug of the simulator: keep the sweep going, say what it was
        return {"status": STATUS_ERROR,
                "error": _one_line(f"internal error: {type(e).__name__}: {e}".replace(path, name)),
                "figures": {}}
    summary.pop("trace", None)
    figures = {k: v for k, v in flatten(summary).items() if k not in _WALL_CLOCK}
    return {"status": status, "error": _one_line(error.replace(path, name)) if error else None,
            "figures": figures}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """What a worker runs for one (trace, point): here, or in a process of its own with
    ``task["isolate"]`` or for an image (a point that kills its process then fails alone)."""
    if task.get("isolate") or task.get("image"):
        return _run_isolated(task)
    return _execute(task)


def _run_isolated(task: dict[str, Any]) -> dict[str, Any]:
    """The task in a fresh interpreter (``python -m mmsim.sweep``), JSON in and out.

    A subprocess rather than multiprocessing: Dask's worker processes are daemons, which may
    not have multiprocessing children. The child sees this process's sys.path.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    fd, result_path = tempfile.mkstemp(prefix="mmsim-point-", suffix=".json")
    os.close(fd)
    try:
        # the application's output (a JVM writes to fd 1 itself) goes nowhere
        proc = subprocess.run([sys.executable, "-m", "mmsim.sweep", result_path],
                              input=json.dumps(task), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env, check=False)
    except OSError as e:  # no process at all (no interpreter, no fork): the point fails alone
        os.unlink(result_path)
        return {"status": STATUS_ERROR, "figures": {},
                "error": _one_line(f"cannot start the point's process ({e.strerror or e})")}
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
            "error": _one_line(f"the point's process died ({how}){detail}")}


def _isolated_main(result_path: str) -> None:
    """``python -m mmsim.sweep RESULT.json``: one task from stdin, its result in the file; then
    leave at once (a JVM's application may hold non-daemon threads)."""
    result = _execute(json.load(sys.stdin))
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# -- the sweep file ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TraceSpec:
    """One trace of a sweep: ``name`` as the sweep file writes it (the rows' ``trace``), the
    path the workers open, and its format."""

    name: str
    path: str
    fmt: str = "auto"
    pid: int | None = None
    image: bool = False


@dataclasses.dataclass
class Sweep:
    """Traces × points; ``keys`` are the configuration keys of the points, in first-use order."""

    traces: list[TraceSpec]
    points: list[dict[str, Any]]
    keys: list[str]
    config: str | None = None
    origin: str = "sweep"


_TOP_KEYS = {
    "traces": "list of trace files (relative to this file), or {path, format, pid} mappings",
    "grid": "configuration key -> list of values; every combination is a point",
    "points": "list of mappings of configuration keys; each is a point",
    "format": "trace format of every trace (default auto)",
    "config": "a configuration file every point starts from (relative to this file)",
}


class _Located:
    """A YAML document as plain values, with the line of every mapping key and list item."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}

    def load(self) -> Any:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise SweepError("no such file", self.path) from None
        except IsADirectoryError:
            raise SweepError("is a directory", self.path) from None
        except UnicodeDecodeError:
            raise SweepError("not a UTF-8 text file", self.path) from None
        except OSError as e:
            raise SweepError(f"cannot read ({e.strerror})", self.path) from None
        loader = NoAliasLoader(text)  # an alias bomb would never finish loading
        try:
            node = loader.get_single_node()
            return None if node is None else self._value(loader, node, ())
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise SweepError(f"bad YAML: {e.problem or e.context}", self.path,
                             mark.line + 1 if mark else 0) from None
        except yaml.YAMLError as e:
            raise SweepError(f"bad YAML: {e}", self.path) from None
        finally:
            loader.dispose()

    def _value(self, loader: yaml.SafeLoader, node: yaml.Node, at: tuple[Any, ...]) -> Any:
        self.lines.setdefault(at, node.start_mark.line + 1)
        plain = {yaml.MappingNode: yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                 yaml.SequenceNode: yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG}
        if type(node) in plain and node.tag != plain[type(node)]:
            raise SweepError(f"bad YAML: unsupported tag {node.tag!r}", self.path,
                             node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                key = loader.construct_object(knode, deep=True)
                line = knode.start_mark.line + 1
                if not isinstance(key, str | int | float | bool):
                    raise SweepError("a key must be a plain value", self.path, line)
                if key in out:
                    raise SweepError(f"duplicate key '{key}'", self.path, line)
                self.lines[(*at, key)] = line
                out[key] = self._value(loader, vnode, (*at, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(loader, item, (*at, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def error(self, message: str, *at: Any) -> SweepError:
        return SweepError(message, self.path, self.lines.get(at, 0))


class UnknownKey(ValueError):
    """A configuration key no part of the kernel knows."""


def check_value(key: str, value: Any) -> None:
    """ValueError unless ``key: value`` is a configuration a guest boots with: the key is
    known, the value parses, and (for subsystem keys, e.g. cache_policy) a kernel boots, so a
    typo stops the sweep before it starts rather than failing every point."""
    cache_key = (key, type(value).__name__, _cell(value))
    if cache_key in _checked:
        return
    try:
        cfg = load_config(None, {key: value if value is not None else 0})
    except ConfigError as e:
        if str(e).startswith("unknown key"):
            raise UnknownKey(str(e)) from None
        if value is not None and value != "":
            raise ValueError(e.reason or str(e)) from None  # the key's line, not its option
    if value is None or value == "":
        raise ValueError(f"'{key}' has no value")
    if key not in _NO_BOOT_CHECK:
        try:
            Kernel(cfg)
        except (BootError, ConfigError) as e:
            raise ValueError(str(e)) from None
    _checked.add(cache_key)


#: (key, value) pairs found good: a long points list repeats them
_checked: set[tuple[str, str, str]] = set()


def _cell(value: Any) -> str:
    """A value as its CSV cell; also the canonical form that matches a point to a row."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _check_points(points: list[dict[str, Any]], path: str,
                  line_of: Callable[[int], int]) -> None:
    """Whole-configuration checks of every point, and no point twice (rows are found by their
    values); the error names ``path`` at ``line_of(i)`` for point i."""
    seen: dict[frozenset[tuple[str, str]], int] = {}
    for i, point in enumerate(points):
        key = frozenset((k, _cell(v)) for k, v in point.items())
        if key in seen:
            raise SweepError(f"point {i} is the same as point {seen[key]}", path, line_of(i))
        seen[key] = i
        try:
            load_config(None, point)
        except ConfigError as e:
            raise SweepError(f"point {i} ({_describe(point)}): {e}", path, line_of(i)) from None


def _about(key: str, e: ValueError) -> str:
    """The message, naming the key if it does not already."""
    return str(e) if isinstance(e, UnknownKey) or f"'{key}'" in str(e) else f"{key}: {e}"


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v)}" for k, v in point.items()) or "defaults"


def load_sweep(path: str) -> Sweep:
    """Read and check a sweep file; any problem is a SweepError naming the file and line."""
    doc = _Located(path)
    data = doc.load()
    if not isinstance(data, dict):
        raise SweepError("expected a mapping with 'traces' and 'grid' or 'points'", path, 1)
    for key in data:
        if key not in _TOP_KEYS:
            raise doc.error(f"unknown key '{key}' (known: {', '.join(_TOP_KEYS)})", key)
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(p)))

    fmt = data.get("format", "auto")
    if not isinstance(fmt, str) or (fmt != "auto" and fmt not in READERS):
        raise doc.error(f"unknown trace format {fmt!r} (known: auto, {', '.join(READERS)})",
                        "format")
    config = data.get("config")
    if config is not None:
        if not isinstance(config, str) or not config:
            raise doc.error("'config' must be the path of a configuration file", "config")
        config = resolve(config)
        try:
            load_config(config)
        except ConfigError as e:
            raise doc.error(f"config: {e}", "config") from None

    if "traces" not in data:
        raise SweepError("missing 'traces' (a list of trace files)", path, 1)
    traces_in = data["traces"]
    if not isinstance(traces_in, list) or not traces_in:
        raise doc.error("'traces' must be a non-empty list of trace files", "traces")
    traces: list[TraceSpec] = []
    for i, item in enumerate(traces_in):
        tfmt, pid, image = fmt, None, False
        if isinstance(item, dict) and set(item) == {"image"}:
            item, image = item["image"], True
        elif isinstance(item, dict):
            extra = set(item) - {"path", "format", "pid"}
            if extra or "path" not in item:
                raise doc.error("a trace is a path, {path, format, pid} or {image: manifest}",
                                "traces", i)
            pid = item.get("pid")
            if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid < 0):
                raise doc.error(f"'pid' must be a process id, not {pid!r}", "traces", i, "pid")
            tfmt = item.get("format", fmt)
            if not isinstance(tfmt, str) or (tfmt != "auto" and tfmt not in READERS):
                raise doc.error(f"unknown trace format {tfmt!r} (known: auto, "
                                f"{', '.join(READERS)})", "traces", i, "format")
            item = item["path"]
        if not isinstance(item, str) or not item:
            raise doc.error("a trace is a file path", "traces", i)
        if any(t.name == item for t in traces):
            raise doc.error(f"trace '{item}' is listed twice", "traces", i)
        full = resolve(item)
        if not os.path.isfile(full):
            raise doc.error(f"{'image' if image else 'trace'} '{item}': no such file",
                            "traces", i)
        if image:
            _prepare_image(full, doc.error, "traces", i)
        traces.append(TraceSpec(item, full, tfmt, pid, image))

    has_grid, has_points = "grid" in data, "points" in data
    if has_grid and has_points:
        second = max(("grid", "points"), key=lambda k: doc.lines.get((k,), 0))
        raise doc.error("give 'grid' or 'points', not both", second)
    if not has_grid and not has_points:
        raise SweepError("missing 'grid' or 'points' (the configurations to run)", path, 1)
    if has_grid:
        points, keys = _grid_points(doc, data["grid"])
    else:
        points, keys = _listed_points(doc, data["points"])
    return Sweep(traces, points, keys, config, path)


def _prepare_image(path: str, error: Callable[..., SweepError], *at: Any) -> None:
    """Check an image's manifest and files, and build it once here, before its points share
    the build (``error(message, *at)`` makes the sweep file's error)."""
    from mmsim.image import ImageError, check_files, load_manifest, run_build

    try:
        m = load_manifest(path)
        run_build(m)
        check_files(m)
    except ImageError as e:
        raise error(f"image: {e}", *at) from None


def _grid_points(doc: _Located, grid: Any) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(grid, dict) or not grid:
        raise doc.error("'grid' must map configuration keys to lists of values", "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise doc.error(f"grid: '{key}' must be a non-empty list of values", "grid", key)
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            try:
                check_value(str(key), value)
            except ValueError as e:
                at = ("grid", key) if isinstance(e, UnknownKey) else ("grid", key, i)
                raise doc.error(f"grid: {_about(str(key), e)}", *at) from None
            if _cell(value) in seen:
                raise doc.error(f"grid: '{key}' lists {_cell(value)} twice", "grid", key, i)
            seen[_cell(value)] = i
    keys = [str(k) for k in grid]
    points = [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]
    _check_points(points, doc.path, lambda i: doc.lines.get(("grid",), 0))
    return points, keys


def _listed_points(doc: _Located, points: Any) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(points, list) or not points:
        raise doc.error("'points' must be a non-empty list of mappings", "points")
    keys: list[str] = []
    for i, point in enumerate(points):
        if not isinstance(point, dict):
            raise doc.error("a point is a mapping of configuration keys ({} for the defaults)",
                            "points", i)
        for key, value in point.items():
            try:
                check_value(str(key), value)
            except ValueError as e:
                raise doc.error(f"points: {_about(str(key), e)}", "points", i, key) from None
            if key not in keys:
                keys.append(str(key))
    _check_points(points, doc.path, lambda i: doc.lines.get(("points", i), 0))
    return points, keys


def make_sweep(traces: list[TraceSpec], grid: dict[str, list[Any]], origin: str,
               config: str | None = None) -> Sweep:
    """A grid sweep built in code (e.g. by `mmsim mrc`), checked like a sweep file."""
    for key, values in grid.items():
        for value in values:
            try:
                check_value(key, value)
            except ValueError as e:
                raise SweepError(_about(key, e), origin) from None
    keys = list(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*grid.values())]
    _check_points(points, origin, lambda i: 0)
    return Sweep(traces, points, keys, config, origin)


def parse_sizes(spec: str) -> list[int]:
    """``1M,4M,16M`` or ``LO:HI:N`` (N sizes from LO to HI, evenly spaced on a log scale, each
    rounded to whole bytes), in increasing order; ValueError says what is wrong."""
    from mmsim.kernel import parse_size

    spec = spec.strip()
    if ":" in spec:
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(f"bad range {spec!r} (use LO:HI:N, e.g. 1M:64M:8)")
        lo, hi = parse_size(parts[0]), parse_size(parts[1])
        try:
            n = int(parts[2])
        except ValueError:
            raise ValueError(f"bad count {parts[2]!r} in {spec!r}") from None
        if not 0 < lo < hi or n < 2:
            raise ValueError(f"bad range {spec!r} (needs 0 < LO < HI and N >= 2)")
        ratio = math.log(hi / lo)
        sizes = [lo] + [round(lo * math.exp(ratio * i / (n - 1))) for i in range(1, n - 1)]
        sizes.append(hi)
    else:
        sizes = [parse_size(s) for s in spec.split(",") if s.strip()]
        if not sizes:
            raise ValueError("no sizes given")
    out = sorted(set(sizes))
    if out[0] <= 0:
        raise ValueError("sizes must be positive")
    return out


# -- result files -----------------------------------------------------------------------------


def _natural(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key of a dotted column: numeric parts by value (malloc.classes.8 before .16)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("."))


def _row_key(trace: str, point: dict[str, Any]) -> tuple[str, frozenset[tuple[str, str]]]:
    return trace, frozenset((k, _cell(v)) for k, v in point.items()
                            if v is not None and v != "")


class Results:
    """The output file: rows appended as points finish, the whole file rewritten sorted (and
    so the same for the same sweep) by :meth:`finish`; reopening it finds the rows done."""

    def __init__(self, path: str, sweep: Sweep) -> None:
        self.path = path
        self.parquet = path.lower().endswith(".parquet")
        self.keys = list(sweep.keys)
        self.order = {t.name: i for i, t in enumerate(sweep.traces)}
        self.rows: list[dict[str, Any]] = []
        self._header: list[str] = []
        self._last_write = 0.0
        self._dirty = False
        if self.parquet:
            _pyarrow()

    # reading what a previous run wrote
    def load(self, sweep: Sweep) -> dict[tuple[str, frozenset[tuple[str, str]]], dict[str, Any]]:
        """The rows already done, by (trace, point), keeping only this sweep's points; rows
        that failed are dropped so that they run again."""
        if not os.path.exists(self.path):
            return {}
        rows, header = self._read_parquet() if self.parquet else self._read_csv()
        for col in (*LEAD, *TAIL):
            if col not in header:
                raise SweepError(f"not an mmsim sweep result (no '{col}' column); give "
                                 "another -o", self.path)
        file_keys = header[len(LEAD):header.index(TAIL[0])]
        wanted = {_row_key(t.name, p): (self.order[t.name], i)
                  for t in sweep.traces for i, p in enumerate(sweep.points)}
        done: dict[tuple[str, frozenset[tuple[str, str]]], dict[str, Any]] = {}
        for n, row in enumerate(rows, 2):
            key = _row_key(str(row.get("trace", "")), {k: row.get(k) for k in file_keys})
            if key not in wanted:
                point = ", ".join(f"{k}={v}" for k, v in sorted(key[1])) or "defaults"
                raise SweepError(f"row {n} ({key[0]}, {point}) is not a point of this sweep; "
                                 "give another -o (or remove the file)", self.path)
            if row.get("status") in DONE:
                row["point"] = wanted[key][1]
                done[key] = row
        return done

    def _read_csv(self) -> tuple[list[dict[str, Any]], list[str]]:
        try:
            with open(self.path, encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise SweepError(f"cannot read ({e})", self.path) from None
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]  # a row cut by a crash: that point runs again
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        rows = []
        for cells in reader:
            if len(cells) != len(header):
                continue
            rows.append({h: c for h, c in zip(header, cells) if c != ""})
        return rows, header

    def _read_parquet(self) -> tuple[list[dict[str, Any]], list[str]]:
        pq = _pyarrow()[1]
        try:
            table = pq.read_table(self.path)
        except Exception as e:  # pyarrow's errors have no common base
            raise SweepError(f"cannot read as Parquet ({e})", self.path) from None
        rows = [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
        return rows, list(table.column_names)

    # writing
    def start(self, done: Iterable[dict[str, Any]]) -> None:
        """Begin with the rows kept from a previous run (the file is rewritten with them)."""
        self.rows = list(done)
        self._write(self.sorted_rows())

    def add(self, row: dict[str, Any]) -> None:
        """A finished point: on disk at once (CSV), or within a second (Parquet)."""
        row = {k: v for k, v in row.items() if v is not None and v != "" or k in LEAD}
        self.rows.append(row)
        if self.parquet:
            self._dirty = True
            if time.monotonic() - self._last_write >= _PARQUET_EVERY_S:
                self._write(self.rows)
            return
        if not set(row) <= set(self._header):
            self._write(self.rows)  # a new column: the header grows, so write it all
            return
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(_cell(row.get(c)) for c in self._header)
        with open(self.path, "a", encoding="utf-8", newline="") as f:
            f.write(line.getvalue())

    def finish(self) -> None:
        """The final file: rows sorted by (trace, point), columns in their fixed order."""
        self._write(self.sorted_rows())

    def sorted_rows(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: (self.order[r["trace"]], int(r["point"])))

    def _columns(self, rows: list[dict[str, Any]]) -> list[str]:
        fixed = {*LEAD, *self.keys, *TAIL}
        figures = {k for r in rows for k in r if k not in fixed}
        return [*LEAD, *self.keys, *TAIL, *sorted(figures, key=_natural)]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        columns = self._columns(rows)
        tmp = f"{self.path}.tmp"
        try:
            if self.parquet:
                _pyarrow()[1].write_table(self._table(rows, columns), tmp)
            else:
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    w = csv.writer(f, lineterminator="\n")
                    w.writerow(columns)
                    for r in rows:
                        w.writerow(_cell(r.get(c)) for c in columns)
            os.replace(tmp, self.path)
        except OSError as e:
            raise SweepError(f"cannot write ({e.strerror})", self.path) from None
        self._header = columns
        self._last_write = time.monotonic()
        self._dirty = False

    def _table(self, rows: list[dict[str, Any]], columns: list[str]) -> Any:
        """Typed columns: one type per column, else the cells' text (so reading it back and
        writing again gives the same file)."""
        pa = _pyarrow()[0]
        arrays = []
        figures = set(columns[len(LEAD) + len(self.keys) + len(TAIL):])
        for col in columns:
            values = [r.get(col) for r in rows]
            kinds = {type(v) for v in values if v is not None}
            if kinds == {bool}:
                typ = pa.bool_()
            elif kinds == {int} and all(-(1 << 63) <= v < 1 << 63 for v in values if v is not None):
                typ = pa.int64()
            elif kinds and kinds <= {int, float} and col in figures:
                typ, values = pa.float64(), [None if v is None else float(v) for v in values]
            elif kinds == {float}:
                typ = pa.float64()
            else:
                typ, values = pa.string(), [None if v is None else _cell(v) for v in values]
            arrays.append(pa.array(values, type=typ))
        return pa.table(arrays, names=columns)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise SweepError("Parquet output needs pyarrow: pip install 'mmsim[parquet]'") from None
    return pyarrow, pyarrow.parquet


# -- executors ---------------------------------------------------------------------------------


class Backend(Protocol):
    """Where tasks run: a concurrent.futures-style executor that may need renewing."""

    slots: int

    def submit(self, task: dict[str, Any]) -> tuple[Future, int]: ...

    def broken(self, exc: BaseException, generation: int) -> bool: ...

    def close(self) -> None: ...


class LocalBackend:
    """A spawn process pool (fork after a JVM started in the parent would hang). A pool whose
    worker died is replaced, and the points it was running run again each in its own process."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self.slots = 2 * workers
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: Any = None
        self._generation = 0

    def _make(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, mp_context=self._ctx)

    def submit(self, task: dict[str, Any]) -> tuple[Future, int]:
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._pool = self._make()
        try:
            return self._pool.submit(run_task, task), self._generation
        except BrokenProcessPool:  # broke before its futures told us
            self._renew()
            self._pool = self._make()
            return self._pool.submit(run_task, task), self._generation

    def _renew(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._generation += 1

    def broken(self, exc: BaseException, generation: int) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        if not isinstance(exc, BrokenProcessPool):
            return False
        if generation == self._generation:
            self._renew()
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskBackend:
    """An existing dask.distributed cluster, through its concurrent.futures executor; pure=False
    so that two identical points are two runs."""

    def __init__(self, address: str) -> None:
        try:
            from dask.distributed import Client
        except ImportError:
            raise SweepError("--dask needs dask.distributed: pip install 'mmsim[dask]'") from None
        from distributed.comm.addressing import parse_address, parse_host_port

        try:
            scheme, location = parse_address(address)
            if scheme in ("tcp", "tls"):
                parse_host_port(location)  # else a half-made Client hangs a minute in __del__
            self.client = Client(address, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise SweepError(f"cannot connect to the Dask scheduler ({e})", address) from None
        self.executor = self.client.get_executor(pure=False)
        threads = sum(self.client.nthreads().values())
        self.slots = max(2, 2 * threads)

    def submit(self, task: dict[str, Any]) -> tuple[Future, int]:
        return self.executor.submit(run_task, task), 0

    def broken(self, exc: BaseException, generation: int) -> bool:
        return False  # the scheduler retries on lost workers itself, then reports KilledWorker

    def close(self) -> None:
        try:
            self.executor.shutdown(wait=False)
        finally:
            self.client.close()


def default_workers() -> int:
    """The CPUs this process may run on (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- running ----------------------------------------------------------------------------------


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


def plan_sweep(sweep: Sweep, output: str, isolate: bool = False) -> Plan:
    """Read what ``output`` already holds and list the points left (SweepError if the file is
    not this sweep's)."""
    results = Results(output, sweep)
    done = results.load(sweep)
    todo = [(h, t) for h, t in tasks_of(sweep, isolate)
            if _row_key(h["trace"], {k: h.get(k) for k in sweep.keys}) not in done]
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
                              "error": _one_line(f"worker failed: {type(e).__name__}: {e}")}
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


if __name__ == "__main__":
    _isolated_main(sys.argv[1])
