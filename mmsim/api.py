"""mmsim's replay API: boot a guest, replay a trace through it, get the result.

`mmsim run`, `mmsim sweep`, `mmsim mrc` and a native image's trace go through :func:`replay`;
scripts and notebooks call it the same way (docs/api.md)::

    from mmsim.api import replay
    result = replay("examples/hello.trace", memory="512M", timeline=True)
    result.summary["memory"]["peak_used_bytes"], result.oom, result.exit_code
    rows = result.timeline  # one dict per sample: pandas.DataFrame(rows)

Every failure a user can cause is an :class:`MmsimError`: a one-line message naming the file and
line, and the exit code the `mmsim` command ends with (:data:`EXIT_BAD_INPUT` for bad input or
options, a user shrinker that failed, a trace asking for what the guest lacks;
:data:`EXIT_INVARIANT` for a kernel invariant broken under ``check``). Running out of guest
memory is a result, not an error: ``result.oom`` and ``result.exit_code`` (:data:`EXIT_OOM`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mmsim.kernel import (
    BootError,
    ConfigError,
    Kernel,
    KernelConfig,
    OutOfMemory,
    ShrinkerError,
    TraceFault,
    UnsupportedOperation,
    apply_settings,
    load_config,
)
from mmsim.timeline import Recorder, TimelineError
from mmsim.trace import TraceError, expand, read_trace, reader_stats

__all__ = [
    "EXIT_APP", "EXIT_APP_ERRORS", "EXIT_BAD_INPUT", "EXIT_INVARIANT", "EXIT_OK", "EXIT_OOM", "InputError",
    "InvariantBroken", "MmsimError", "Observer", "RunResult", "boot", "configure", "replay",
    "replay_errors", "replay_ops",
]

EXIT_OK = 0
EXIT_INVARIANT = 1
EXIT_BAD_INPUT = 2
EXIT_OOM = 3
EXIT_APP = 4
#: `--fail-on app-errors`: the trace's application bugs fail the run (for CI)
EXIT_APP_ERRORS = 1

#: called with the kernel after each call is applied (batches are expanded for observers)
Observer = Callable[[Kernel], None]


def one_line(message: str) -> str:
    """The message on one line (a file name may hold a newline)."""
    return " ".join(str(message).split("\n"))


class MmsimError(Exception):
    """A failure the user caused; str() is one line, :attr:`exit_code` how `mmsim` ends."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class InputError(MmsimError):
    """Bad input or options: a trace, a configuration, a path, a user shrinker (exit 2)."""


class InvariantBroken(MmsimError):
    """A kernel invariant failed under ``check`` (exit 1): a bug of mmsim or of a shrinker."""

    exit_code = EXIT_INVARIANT


@dataclass
class RunResult:
    """What a replay gives: the summary (as `mmsim run --json`), the kernel as it ended, and
    the timeline's rows if one was asked for."""

    summary: dict[str, Any]
    kernel: Kernel
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def oom(self) -> dict[str, Any] | None:
        """The out-of-memory report (what failed, why, the shrinkers' yield), or None."""
        return self.summary.get("oom")

    @property
    def app_errors(self) -> dict[str, Any]:
        """The application bugs the trace showed (frees of unknown pointers, ...), counted."""
        return self.summary.get("app_errors") or {}

    @property
    def exit_code(self) -> int:
        return EXIT_OOM if self.oom else EXIT_OK

    def folded(self) -> list[tuple[str, int]]:
        """Bytes allocated per call site as folded stacks (``file;function``, bytes), the
        input of flamegraph.pl, speedscope and inferno; calls that name no site are
        ``[unknown]``. The counts add up to the summary's ``malloc.allocated_bytes``."""
        return self.kernel.malloc.folded()


def configure(config_path: str | None = None, settings: dict[str, Any] | None = None,
              **more: Any) -> KernelConfig:
    """The configuration file (if any), then ``settings`` and keyword settings over it (the
    command line's twins: ``memory="512M"``, ``cpus=2``, ...; None leaves a key alone)."""
    try:
        return load_config(config_path, {**(settings or {}), **more})
    except ConfigError as e:
        raise InputError(str(e)) from None


def boot(config: KernelConfig) -> Kernel:
    """A guest booted with ``config``; a guest too small to boot is booted out of memory
    (``kernel.oom``), as OSv would be, and any replay on it ends at once."""
    try:
        return Kernel(config)
    except (BootError, ConfigError, ShrinkerError) as e:
        raise InputError(f"cannot boot: {e}") from None


def replay_ops(kernel: Kernel, ops: Iterable[Any], where: str, *,
               observers: Iterable[Observer] = (), check: bool = False) -> None:
    """Apply ``ops`` (read from ``where``, for messages) to ``kernel``: the one place where
    a replay's failures become :class:`MmsimError`. Out of memory propagates
    (:class:`~mmsim.kernel.OutOfMemory`). The kernel runs the observers (and under ``check``
    the invariants first) after every call: batches are applied call by call then."""
    watchers = list(observers)
    if check:
        from mmsim.kernel.invariants import check_kernel

        watchers.insert(0, check_kernel)
    if watchers:
        ops = expand(ops)
        for observe in watchers:
            kernel.add_observer(observe)
    with replay_errors(kernel, lambda: where), _boot_frozen():
        try:
            kernel.run(ops)
        except OutOfMemory:
            if check:  # the guest is down, but what it holds must still add up
                from mmsim.kernel.invariants import check_kernel

                _invariants(check_kernel, kernel, where)
            raise


@contextmanager
def _boot_frozen() -> Iterator[None]:
    """The objects that exist before a replay (the booted guest: its pools, pages, tables)
    outside the cyclic garbage collector's passes while it runs (gc.freeze): they live for the
    whole replay, and traversing them in every full pass cost 5-6 % of a long replay's time.
    Objects made during the replay are collected as usual; nothing changes if the process
    froze objects itself or turned the collector off."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def replay_errors(kernel: Kernel, where: Callable[[], str]) -> Iterator[None]:
    """The one place where what stops a replay becomes an :class:`MmsimError`, naming the
    trace (``where()``: the file the failing operation came from) and the kernel's line; out
    of memory propagates (:class:`~mmsim.kernel.OutOfMemory`)."""
    try:
        yield
    except (TraceError, TimelineError) as e:
        raise InputError(str(e)) from None
    except (UnsupportedOperation, TraceFault, ShrinkerError) as e:  # a user shrinker failed too
        raise InputError(f"{where()}:{kernel.line}: {e}") from None
    except AssertionError as e:
        raise InvariantBroken(f"{where()}:{kernel.line}: invariant broken: {e}") from None


def _invariants(check: Callable[[Kernel], Any], kernel: Kernel, where: str) -> None:
    try:
        check(kernel)
    except AssertionError as e:
        raise InvariantBroken(f"{where}:{kernel.line}: invariant broken: {e}") from None


def replay(trace: str, config: KernelConfig | str | None = None, *, fmt: str = "auto",
           pid: int | None = None, observers: Iterable[Observer] = (), check: bool = False,
           timeline: bool = False, timeline_path: str | None = None,
           plot_path: str | None = None, sample_every: int | None = None,
           sample_ms: float | None = None, wrap: Callable[[Iterable[Any], Kernel],
                                                        Iterable[Any]] | None = None,
           settings: dict[str, Any] | None = None, **more: Any) -> RunResult:
    """Boot a guest and replay ``trace`` (a path, or ``-`` for stdin) through it.

    ``config`` is a :class:`KernelConfig`, a configuration file's path or None; ``settings``
    (a dict) and keyword settings go over it (``memory="512M"``, ``cpus=2``,
    ``hugepages=False``, ...; None leaves a key alone). ``observers`` are
    called with the kernel after each operation; ``check`` checks the kernel's invariants after
    every call. ``timeline`` keeps the timeline's rows in the result; ``timeline_path`` and
    ``plot_path`` write it (CSV or JSON Lines; PNG, SVG or PDF), sampled every
    ``sample_every`` events or ``sample_ms`` simulated milliseconds (default: adaptive, at most
    1024 rows). ``wrap`` may wrap the operations (a progress bar).
    """
    over = {k: v for k, v in {**(settings or {}), **more}.items() if v is not None}
    if isinstance(config, KernelConfig):
        try:
            cfg = apply_settings(config, over)
        except ConfigError as e:
            raise InputError(str(e)) from None
    else:
        cfg = configure(config, over)
    try:
        ops = reader = read_trace(trace, fmt, pid=pid)
    except TraceError as e:
        raise InputError(str(e)) from None
    kernel = boot(cfg)
    try:
        recorder = Recorder.start(kernel, trace, timeline_path=timeline_path,
                                  plot_path=plot_path, sample_every=sample_every,
                                  sample_ms=sample_ms, keep=timeline)
    except TimelineError as e:
        raise InputError(str(e)) from None
    if check or observers:  # call by call: the timeline too samples each call of a batch
        observers = list(observers)
        ops = expand(ops)
    ops = recorder.wrap(ops)
    if wrap is not None:
        ops = wrap(ops, kernel)
    try:
        replay_ops(kernel, ops, trace, observers=observers, check=check)
    except OutOfMemory:
        pass
    summary = kernel.summary()
    summary["trace"] = trace
    stats = reader_stats(reader)
    if stats is not None:
        summary["trace_reader"] = stats
    try:
        recorder.finish(summary)
        rows = recorder.records() if timeline else []
    except TimelineError as e:
        raise InputError(str(e)) from None
    return RunResult(summary, kernel, rows)
