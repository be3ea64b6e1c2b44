"""Memory over time: a recorder that samples a running kernel into a small CSV or JSON Lines file.

People read memory behaviour from a curve far more easily than from end-of-run numbers, so
``mmsim run --timeline PATH`` (and any command that boots a kernel) writes one row per sample:

``time``
    simulated time in seconds (exact to the nanosecond in CSV).
``event``
    operations applied so far (the kernel's ``events``).
``total_bytes``, ``free_bytes``, ``<category>_bytes``
    one column per memory category of the kernel: on every row free + categories == total.
    These are the only columns whose names end in ``_bytes`` so a reader can sum them.
    ``total_bytes`` is the guest's RAM (the summary's ``config.memory_bytes``, or with an e820
    map in the configuration its usable memory, ``config.ram_bytes``), and
    ``kernel_bytes`` is the part of it the page allocator never got: the kernel image, page 0
    and the firmware's low-memory hole. The other categories and ``free_bytes`` are the
    allocator's: they add up to the summary's ``memory.total_bytes``.
``arc_size``, ``arc_c``, ``arc_p``, ``arc_hits``, ``arc_misses``, ``arc_hit_ratio``
    the summary's ``arc`` section (bytes, counts, cumulative ratio) when the kernel has one.
``events``
    kernel events since the previous row as ``name=count`` joined by ``;`` (an object in
    JSON Lines): ``reclaim`` / ``reclaim_hard`` passes, ``shrink:<shrinker>`` for each
    shrinker that freed something in a pass, ``oom``, the JVM balloon's ``balloon:inflate``,
    ``balloon:deflate`` and ``balloon:move``, the host balloon's ``virtio_balloon:inflate`` and
    ``virtio_balloon:deflate``, and any event the kernel adds later (as ``name:action`` when
    it says what it did).

Columns are fixed at boot from ``memory_categories()``; a category that appears later gets its
column then (the rows written so far are rewritten once, with 0: what it held then).

Sampling: ``--sample-every N`` (every N operations) or ``--sample-ms MS`` (whenever simulated
time crosses a multiple of MS), streamed as the run goes. By default it adapts so that the file
stays small whatever the trace's length: every operation is sampled at first, and whenever more
than :data:`DEFAULT_CAP` rows are held every other row is dropped (its events move to the next
kept row) and the interval doubles. The result is at most ``DEFAULT_CAP`` rows evenly spaced in
steps, plus the first (boot) and the last (end or OOM). A step is an operation applied or, for
commands whose time also passes between operations (``boot``: the JVM runs), a clock tick that
changed the kernel, so rows stay evenly spread over both. Everything depends only on the
kernel's state and event count, so the same run gives the same file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import click

from mmsim.timeline_file import (
    BYTES,
    FIXED_COLUMNS,
    TimelineData,
    TimelineError,
    check_plot_path,
    format_events,
    load_timeline,
)

__all__ = [
    "ARC_COLUMNS",
    "DEFAULT_CAP",
    "Recorder",
    "TimelineData",
    "TimelineError",
    "check_plot_path",
    "load_timeline",
    "timeline_options",
]

DEFAULT_CAP = 1024
"""Most rows the adaptive sampling keeps (besides the boot and the final row)."""

KERNEL = "kernel"
"""The timeline's own category: the guest's RAM the page allocator never got (see above)."""

#: timeline column -> field of the summary's ``arc`` section (no name ends in ``_bytes``)
ARC_COLUMNS: dict[str, str] = {
    "arc_size": "size_bytes",
    "arc_c": "c_bytes",
    "arc_p": "p_bytes",
    "arc_hits": "hits",
    "arc_misses": "misses",
    "arc_hit_ratio": "hit_ratio",
}

#: operations that cannot change the ARC except through pressure (which emits an event)
_HEAP_OPS = frozenset({"malloc", "calloc", "memalign", "realloc", "free", "cpu", "sleep"})
#: the ARC's own threads (reclaim, txg sync) wake on whole seconds of simulated time or later
_ARC_TICK_NS = 1_000_000_000
_NS = 1_000_000_000


# -- recording --------------------------------------------------------------------------------
@dataclass
class _Row:
    time_ns: int
    event: int
    step: int  # operations and clock ticks seen before it: what the default thins by
    total: int
    free: int
    categories: dict[str, int]
    arc: dict[str, Any]
    events: dict[str, int]


def _merge(first: dict[str, int], later: dict[str, int]) -> dict[str, int]:
    out = dict(first)
    for k, v in later.items():
        out[k] = out.get(k, 0) + v
    return out


def _seconds(ns: int) -> str:
    return f"{ns // _NS}.{ns % _NS:09d}"


class _Writer:
    """One timeline file; opened at the start so a bad path fails before a long run."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.jsonl = path.endswith(".jsonl")
        try:
            self.file: TextIO = open(path, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise TimelineError(f"{path}: cannot write ({e.strerror})") from None
        self.columns: list[str] = []
        self._csv: Any = None

    def start(self, columns: list[str]) -> None:
        self.columns = columns
        if not self.jsonl:
            self._csv = csv.writer(self.file, lineterminator="\n")
            self._csv.writerow(columns)

    def write(self, values: dict[str, Any]) -> None:
        try:
            if self.jsonl:
                self.file.write(json.dumps({c: values[c] for c in self.columns}) + "\n")
            else:
                self._csv.writerow([values[c] for c in self.columns])
        except OSError as e:
            raise TimelineError(f"{self.path}: cannot write ({e.strerror})") from None

    def extend(self, columns: list[str]) -> None:
        """Rewrite what was streamed with more columns (0 in the rows before they existed)."""
        path = self.path
        try:
            self.file.close()
            with open(path, encoding="utf-8", newline="") as f:
                if self.jsonl:
                    records = [json.loads(line) for line in f if line.strip()]
                else:
                    records = list(csv.DictReader(f))
            buf = io.StringIO()
            if self.jsonl:
                for r in records:
                    buf.write(json.dumps({c: r.get(c, 0) for c in columns}) + "\n")
            else:
                out = csv.writer(buf, lineterminator="\n")
                out.writerow(columns)
                for r in records:
                    out.writerow([r.get(c, "0") for c in columns])
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(buf.getvalue())
            os.replace(tmp, path)
            self.file = open(path, "a", encoding="utf-8", newline="")
        except OSError as e:
            raise TimelineError(f"{path}: cannot rewrite ({e.strerror})") from None
        self.columns = columns
        if not self.jsonl:
            self._csv = csv.writer(self.file, lineterminator="\n")

    def close(self) -> None:
        try:
            self.file.close()
        except OSError as e:
            raise TimelineError(f"{self.path}: cannot write ({e.strerror})") from None


class Recorder:
    """Samples a kernel into rows; see the module docstring for the columns and the sampling.

    Use: ``rec = Recorder.start(kernel, name, timeline_path=..., plot_path=...)``, replay
    ``rec.wrap(ops)`` through the kernel, then ``rec.finish(summary)`` - also after an
    out-of-memory, whose state becomes the last row. Without outputs it does nothing.
    """

    def __init__(self, kernel: Any, source: str, *, timeline_path: str | None = None,
                 plot_path: str | None = None, every: int | None = None,
                 step_ns: int | None = None, cap: int = DEFAULT_CAP, keep: bool = False
                 ) -> None:
        self.kernel = kernel
        self.source = source
        self.plot_path = plot_path
        self.every = every
        self.step_ns = step_ns
        self.cap = max(2, cap)
        self.active = bool(timeline_path or plot_path or keep)  # keep: rows for the caller
        self.rows: list[_Row] = []  # held rows: all of them unless streamed to a file
        self._writer: _Writer | None = None
        self._interval = 1
        self._step = 0  # operations applied and clock ticks seen (tick()) so far
        self._next_ns = 0
        self._pending: dict[str, int] = {}
        self._actual: dict[str, int] = {}  # a driver's last reported size, by event name
        self._last: tuple[int, int] | None = None  # (event, time) of the last row
        self._late: list[str] = []
        self.categories: list[str] = []
        self.ram = 0
        self._kernel: dict[str, int] = {}
        self.arc_columns: list[str] = []
        self._arc: dict[str, Any] = {}
        self._arc_dirty = True
        self._arc_bytes = -1
        self._arc_tick = 0
        if not self.active:
            return
        if plot_path is not None:
            check_plot_path(plot_path)
        if timeline_path is not None:
            self._writer = _Writer(timeline_path)
        boot = kernel.summary()
        cfg = boot.get("config") or {}
        self.ram = cfg.get("memory_bytes") or cfg.get("ram_bytes") or kernel.total_bytes
        self._kernel = {KERNEL: self.ram - kernel.total_bytes}
        self.categories = list({**self._kernel, **kernel.memory_categories()})
        if isinstance(boot.get("arc"), dict):
            self.arc_columns = list(ARC_COLUMNS)
        kernel.subscribe(self._on_event)
        if self._streaming and self._writer is not None:
            self._writer.start(self.columns())
        self.sample()

    @classmethod
    def start(cls, kernel: Any, source: str, timeline_path: str | None = None,
              plot_path: str | None = None, sample_every: int | None = None,
              sample_ms: float | None = None, keep: bool = False) -> Recorder:
        """From the command-line options of :func:`timeline_options` (``keep``: the rows for
        :meth:`records`, without a file); TimelineError if bad."""
        if sample_every is not None and sample_ms is not None:
            raise TimelineError("--sample-every and --sample-ms are exclusive")
        if (sample_every is not None or sample_ms is not None) and not (
                timeline_path or plot_path or keep):
            raise TimelineError("--sample-every/--sample-ms need --timeline or --plot")
        step = None
        if sample_ms is not None:
            step = round(sample_ms * 1_000_000)
            if step < 1:
                raise TimelineError(f"--sample-ms {sample_ms} is less than a nanosecond")
        return cls(kernel, source, timeline_path=timeline_path, plot_path=plot_path,
                   every=sample_every, step_ns=step, keep=keep)

    @property
    def _streaming(self) -> bool:
        return self.every is not None or self.step_ns is not None

    def columns(self) -> list[str]:
        cats = [*self.categories, *self._late]
        return [*FIXED_COLUMNS, *(c + BYTES for c in cats), *self.arc_columns, "events"]

    # -- the run ------------------------------------------------------------------------------
    def wrap(self, ops: Iterable[Any]) -> Iterable[Any]:
        """The same operations, sampling after each one is applied."""
        return self._wrapped(ops) if self.active else ops

    def _wrapped(self, ops: Iterable[Any]) -> Iterator[Any]:
        for op in ops:
            if op.kind not in _HEAP_OPS:
                self._arc_dirty = True
            yield op  # the kernel applies it before asking for the next one
            self._after_op()

    def _after_op(self) -> None:
        k = self.kernel
        if self.every is not None:
            if k.events % self.every == 0:
                self.sample()
        elif self.step_ns is not None:
            if k.clock_ns >= self._next_ns:
                self.sample()
        else:
            self._step += 1
            if self._step % self._interval == 0:
                self.sample()
                if len(self.rows) > self.cap:
                    self._thin()

    def tick(self) -> None:
        """For commands whose time also passes outside trace operations (``boot``: the JVM
        runs between them): a row whenever the kernel changed, thinned as the default is."""
        if not self.active:
            return
        k = self.kernel
        state = (k.events, k.clock_ns, k.free_bytes)
        if state == getattr(self, "_tick_state", None):
            return
        self._tick_state = state
        self._arc_dirty = True
        self._step += 1
        if self._step % self._interval == 0:
            self.sample()
            if len(self.rows) > self.cap:
                self._thin()

    def _on_event(self, name: str, record: dict[str, Any]) -> None:
        counts = self._pending
        if name == "reclaim":
            kind = "reclaim_hard" if record.get("hard") else "reclaim"
            counts[kind] = counts.get(kind, 0) + 1
            for shrinker, freed in (record.get("by_shrinker") or {}).items():
                if freed:
                    key = f"shrink:{shrinker}"
                    counts[key] = counts.get(key, 0) + 1
        else:
            name = self._event_name(name, record)
            counts[name] = counts.get(name, 0) + 1
        self._arc_dirty = True

    def _event_name(self, name: str, record: dict[str, Any]) -> str:
        """``balloon:inflate`` / ``:deflate`` / ``:move``: the action is what a reader wants to
        see; the virtio balloon's moves are told apart by the way its size went."""
        action = record.get("action")
        if action is None and "actual_bytes" in record:
            actual = record["actual_bytes"]
            before = self._actual.get(name, 0)
            self._actual[name] = actual
            action = "inflate" if actual > before else "deflate" if actual < before else None
        return f"{name}:{action}" if action else name

    def sample(self) -> None:
        """Take a row of the kernel's state now, with the events since the last row."""
        k = self.kernel
        cats = {**self._kernel, **k.memory_categories()}
        for name in cats:
            if name not in self.categories and name not in self._late:
                self._late.append(name)
        row = _Row(k.clock_ns, k.events, self._step, self.ram, k.free_bytes, cats,
                   self._arc_values(cats), self._pending)
        self._pending = {}
        self._last = (row.event, row.time_ns)
        if self.step_ns is not None:
            self._next_ns = (k.clock_ns // self.step_ns + 1) * self.step_ns
        if self._streaming and self._writer is not None:
            if len(self._writer.columns) != len(self.columns()):
                self._writer.extend(self.columns())
            self._writer.write(self._values(row))  # the plot reads the file back
        else:
            self.rows.append(row)

    def _arc_values(self, cats: dict[str, int]) -> dict[str, Any]:
        """The ARC columns, re-read from the summary only when the ARC may have changed:
        the summary costs time proportional to the live heap, too much for every row."""
        if not self.arc_columns:
            return {}
        arc_bytes = cats.get("arc", 0)
        tick = self.kernel.clock_ns // _ARC_TICK_NS
        if self._arc_dirty or arc_bytes != self._arc_bytes or tick != self._arc_tick:
            section = self.kernel.summary().get("arc") or {}
            self._arc = {c: section.get(f) for c, f in ARC_COLUMNS.items()}
            self._arc_dirty = False
            self._arc_bytes = arc_bytes
            self._arc_tick = tick
        return self._arc

    def _thin(self) -> None:
        """Keep the rows on multiples of twice the interval; the others' events move on.

        By step, not by event number: rows taken on clock ticks while no operation runs
        (a JVM app between workload operations) share one event number, and thinning by it
        would keep or drop them all, leaving a gap of seconds."""
        self._interval *= 2
        kept: list[_Row] = []
        carry: dict[str, int] = {}
        for row in self.rows:
            if row.step % self._interval == 0:
                row.events = _merge(carry, row.events)
                carry = {}
                kept.append(row)
            else:
                carry = _merge(carry, row.events)
        self._pending = _merge(carry, self._pending)
        self.rows = kept
        self._last = (kept[-1].event, kept[-1].time_ns)

    def _values(self, row: _Row) -> dict[str, Any]:
        jsonl = self._writer is not None and self._writer.jsonl
        values: dict[str, Any] = {
            "time": row.time_ns / _NS if jsonl else _seconds(row.time_ns),
            "event": row.event, "total_bytes": row.total, "free_bytes": row.free,
            "events": row.events if jsonl else format_events(row.events),
        }
        for name in (*self.categories, *self._late):
            values[name + BYTES] = row.categories.get(name, 0)
        for c in self.arc_columns:
            v = row.arc.get(c)
            values[c] = v if jsonl or v is not None else ""
        return values

    # -- the end ------------------------------------------------------------------------------
    def finish(self, summary: dict[str, Any] | None = None) -> None:
        """Take the final row (end of the run, or its OOM) and write the timeline and plot."""
        if not self.active:
            return
        k = self.kernel
        if self._pending or self._last != (k.events, k.clock_ns):
            self.sample()
        w = self._writer
        if w is not None:
            if not self._streaming:
                w.start(self.columns())
                for row in self.rows:
                    w.write(self._values(row))
            w.close()
        if self.plot_path is not None:
            from mmsim.plot import plot_timeline, save_figure

            data = load_timeline(w.path) if self._streaming and w is not None else self.data()
            data.source = self.source
            save_figure(plot_timeline(data, summary=summary), self.plot_path)

    def records(self) -> list[dict[str, Any]]:
        """The timeline as :meth:`TimelineData.records` (after :meth:`finish`); rows streamed
        to a file are read back from it."""
        if not self.active:
            return []
        w = self._writer
        data = load_timeline(w.path) if self._streaming and w is not None else self.data()
        return data.records()

    def data(self) -> TimelineData:
        """The held rows as columns (for plotting without reading the file back)."""
        d = TimelineData(source=self.source)
        names = [*self.categories, *self._late]
        d.categories = {n: [] for n in names}
        d.extra = {c: [] for c in self.arc_columns}
        for row in self.rows:
            d.time.append(row.time_ns / _NS)
            d.event.append(row.event)
            d.total.append(row.total)
            d.free.append(row.free)
            for n in names:
                d.categories[n].append(row.categories.get(n, 0))
            for c in self.arc_columns:
                v = row.arc.get(c)
                d.extra[c].append(None if v is None else float(v))
            d.events.append(dict(row.events))
        return d


def timeline_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--timeline``, ``--plot``, ``--sample-every`` and ``--sample-ms`` for a command that
    boots a kernel; they arrive as keyword arguments for :meth:`Recorder.start`."""
    f = click.option("--sample-ms", type=click.FloatRange(min=0, min_open=True), metavar="MS",
                     help="Sample whenever simulated time crosses a multiple of MS.")(f)
    f = click.option("--sample-every", type=click.IntRange(min=1), metavar="EVENTS",
                     help="Sample every EVENTS operations (default: adaptive, at most "
                          f"{DEFAULT_CAP} rows).")(f)
    f = click.option("--plot", "plot_path", metavar="PATH",
                     help="Plot memory over time to PATH (.png, .svg or .pdf).")(f)
    f = click.option("--timeline", "timeline_path", metavar="PATH",
                     help="Write memory over time to PATH (CSV; JSON Lines if it ends in "
                          ".jsonl).")(f)
    return f
