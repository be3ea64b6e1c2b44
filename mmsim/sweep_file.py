"""Sweep files: the traces, the grid or the points, every value checked with its line."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Callable
from typing import Any

import yaml

from mmsim.kernel import (
    BootError,
    ConfigError,
    Kernel,
    load_config,
)
from mmsim.kernel.config import MAX_NESTING, NoAliasLoader
from mmsim.trace import READERS

#: keys whose values are not checked by booting a kernel up front: booting with every memory
#: size costs time, and user shrinkers are user code that belongs in the workers only
_NO_BOOT_CHECK = frozenset({"memory", "e820", "shrinkers"})

class SweepError(ValueError):
    """A bad sweep file or option; str() is the one-line message (``path:line: what``)."""

    def __init__(self, message: str, path: str | None = None, line: int = 0) -> None:
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(where + message)



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


def _node_depth(node: yaml.Node) -> int:
    """How deep a composed YAML node nests (iteratively)."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        n, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_NESTING:
            break
        if isinstance(n, yaml.SequenceNode):
            stack.extend((v, depth + 1) for v in n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend((v, depth + 1) for _k, v in n.value)
    return deepest


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
            if node is not None and _node_depth(node) > MAX_NESTING:
                raise SweepError(f"nested more than {MAX_NESTING} levels deep", self.path)
            return None if node is None else self._value(loader, node, ())
        except RecursionError:
            raise SweepError(f"nested more than {MAX_NESTING} levels deep", self.path) from None
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
    cache_key = (key, type(value).__name__, cell(value))
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


def cell(value: Any) -> str:
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
        key = frozenset((k, cell(v)) for k, v in point.items())
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
    return ", ".join(f"{k}={cell(v)}" for k, v in point.items()) or "defaults"


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


#: points a sweep may plan (each a replay; planning a million took 14 minutes and 2 GB before
#: the first row ran): a stated limit, far above any study that can finish
MAX_POINTS = 100_000


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
            if cell(value) in seen:
                raise doc.error(f"grid: '{key}' lists {cell(value)} twice", "grid", key, i)
            seen[cell(value)] = i
    keys = [str(k) for k in grid]
    n = math.prod(len(v) for v in grid.values())
    if n > MAX_POINTS:
        raise doc.error(f"grid: {n} points (at most {MAX_POINTS}: split the study, or list "
                        "the points you need under 'points')", "grid")
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
    n = math.prod(len(v) for v in grid.values()) * max(len(traces), 1)
    if n > MAX_POINTS:
        raise SweepError(f"{n} points (at most {MAX_POINTS})", origin)
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
        if n > MAX_POINTS:
            raise ValueError(f"{n} sizes in {spec!r} (at most {MAX_POINTS})")
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
