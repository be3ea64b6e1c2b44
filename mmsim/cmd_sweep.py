"""The `sweep` and `mrc` commands (see :mod:`mmsim.sweep` and docs/sweep.md).

Registered on the `mmsim` group when mmsim.cli imports this module (at its end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from mmsim.command import InputError, main
from mmsim.mrc import (
    BLOCK_FORMATS,
    DEFAULT_RATE,
    EXACT,
    METHODS,
    SAMPLED,
    choose_methods,
    current_rows,
    one_pass_rows,
    parse_rate,
)
from mmsim.progress import Progress
from mmsim.sweep import SweepStats, backend_for, default_output, plan_sweep, run_plan
from mmsim.sweep_file import SweepError, TraceSpec, load_sweep, make_sweep, parse_sizes
from mmsim.sweep_points import STATUS_ERROR
from mmsim.sweep_table import format_sweep_table
from mmsim.timeline import TimelineError, check_plot_path
from mmsim.trace import READERS, TraceError, detect_format

EXIT_POINTS_FAILED = 1


def executor_options(f: Any) -> Any:
    """Where the points run: shared by `sweep` and `mrc`."""
    f = click.option("--isolate", is_flag=True,
                     help="Run every point in a fresh process of its own (slower; for points "
                          "that cannot share one, e.g. JVM images).")(f)
    f = click.option("--dask", metavar="ADDRESS",
                     help="Run on the Dask distributed cluster whose scheduler is at ADDRESS "
                          "(e.g. tcp://10.0.0.5:8786) instead of local processes.")(f)
    f = click.option("--workers", type=click.IntRange(min=1), metavar="N",
                     help="Local worker processes (default: the number of CPUs).")(f)
    return f


#: rows a command computes itself from the points left (their heads), before the others run
Compute = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _run(make: Callable[[], Any], output: str, name: str, workers: int | None,
         dask: str | None, isolate: bool, keep: Callable[[dict[str, Any]], bool] | None = None,
         here: Callable[[dict[str, Any]], bool] | None = None,
         compute: Compute | None = None) -> SweepStats:
    """Check the sweep, reach the executor, read what ``output`` holds (keeping the rows
    ``keep`` accepts), then run the points left with a progress bar over them; SweepError
    becomes exit 2. The points ``here`` selects are not replayed: ``compute`` makes their rows
    (`mrc`'s one-pass methods)."""
    if workers is not None and dask:
        raise click.UsageError("--workers is for local processes; a Dask cluster has its own")
    try:
        sweep_ = make()
        with backend_for(workers, dask) as backend:
            plan = plan_sweep(sweep_, output, isolate, keep)
            if plan.done:
                click.echo(f"mmsim: {output}: {plan.done} points already done, "
                           f"{len(plan.todo)} to run", err=True)
            computed = []
            if here is not None and compute is not None:
                mine = [head for head, _ in plan.todo if here(head)]
                plan.todo = [(head, task) for head, task in plan.todo if not here(head)]
                computed = compute(mine)
                for row in computed:
                    plan.results.add(row)
            with Progress("sweeping", name, total=len(plan.todo) or None,
                          unit="point") as progress:
                stats = run_plan(plan, backend, progress.update)
            stats.ran += len(computed)
            return stats
    except SweepError as e:
        raise InputError(str(e)) from None


def _report(stats: SweepStats, output: str) -> None:
    """One line on stderr; exit 1 if some points failed (their rows say why)."""
    click.echo(f"mmsim: wrote {output}: {len(stats.rows)} rows ({stats.ran} run, "
               f"{stats.skipped} already done, {stats.failed} failed)", err=True)
    if stats.failed:
        click.echo(f"mmsim: {stats.failed} points failed; first: {stats.first_error}", err=True)
        sys.exit(EXIT_POINTS_FAILED)


@main.command()
@click.argument("sweep_file", metavar="SWEEP.yaml", type=click.Path(dir_okay=False))
@click.option("-o", "--output", metavar="PATH",
              help="Results: CSV, or Parquet if PATH ends in .parquet (default: SWEEP.csv "
                   "beside SWEEP.yaml). Rerunning with the same PATH skips points done.")
@executor_options
def sweep(sweep_file: str, output: str | None, workers: int | None, dask: str | None,
          isolate: bool) -> None:
    """Run every point of SWEEP.yaml on every trace it names; one row per point and trace.

    \b
    SWEEP.yaml (docs/sweep.md):
      traces: [a.trace, b.trace]      # relative to SWEEP.yaml
      grid:                           # every combination (or: points: [{...}, ...])
        memory: [512M, 1G]
        cache_policy: [zfs, arc, lru]
      format: auto                    # optional
      config: base.yaml               # optional: every point starts from it

    Exit 1 if some points failed (their rows have an `error`), 2 for a bad file or option.
    """
    output = output or default_output(sweep_file, ".csv")
    stats = _run(lambda: load_sweep(sweep_file), output, os.path.basename(sweep_file), workers,
                 dask, isolate)
    table = format_sweep_table(stats.rows, output)
    if table:
        click.echo(table)
    _report(stats, output)


def miss_ratio(row: dict[str, Any]) -> float | None:
    """Misses over requests of a row's ARC figures (None for a failed or idle point)."""
    if row.get("status") == STATUS_ERROR:
        return None
    try:
        hits, misses = float(row["arc.hits"]), float(row["arc.misses"])
    except (KeyError, TypeError, ValueError):
        return None
    return misses / (hits + misses) if hits + misses else None


def mrc_curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Policy -> [(ARC size, miss ratio)] by increasing size, from a sweep's rows."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        ratio = miss_ratio(row)
        if ratio is not None:
            curves.setdefault(str(row["cache_policy"]), []).append((int(row["arc_size"]), ratio))
    return {p: sorted(c) for p, c in curves.items()}


MRC_PLOT_FORMATS = (".png", ".svg", ".pdf")


def check_mrc_plot_path(path: str) -> None:
    """InputError before any point runs if the plot cannot be written at ``path``."""
    try:
        check_plot_path(path, MRC_PLOT_FORMATS)
    except TimelineError as e:
        raise InputError(f"--plot {e}") from None


def plot_mrc(curves: dict[str, list[tuple[int, float]]], title: str) -> Any:
    """Miss ratio against cache size (log scale), one line per policy: a matplotlib Figure
    (no display, no pyplot) that :func:`save_mrc` writes."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from mmsim.kernel import units

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for policy, points in curves.items():
        ax.plot([s for s, _ in points], [r for _, r in points], marker="o", label=policy)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: units.format_size(int(x))))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("ARC size")
    ax.set_ylabel("miss ratio")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def save_mrc(fig: Any, path: str) -> None:
    ext = os.path.splitext(path)[1].lower()
    try:
        fig.savefig(path, format=ext[1:],
                    metadata={"Software": None} if ext == ".png" else None)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot write the plot ({e})") from None


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--sizes", required=True, metavar="LIST|LO:HI:N",
              help="ARC sizes: a list (64K,1M,16M) or N sizes from LO to HI spaced on a log "
                   "scale (1M:64M:8).")
@click.option("--policies", default="arc,lru,zfs", show_default=True, metavar="LIST",
              help="Cache policies to compare.")
@click.option("--format", "fmt", default="auto", show_default=True,
              help=f"Trace format: auto or one of {', '.join(sorted(READERS))}.")
@click.option("--block-size", metavar="SIZE", help="Record size of a block trace's file.")
@click.option("--memory", metavar="SIZE", help="Guest RAM (default 2G; make it exceed the "
                                               "largest size).")
@click.option("-o", "--output", metavar="PATH",
              help="The sweep's rows (default: TRACE's name with .mrc.csv, here).")
@click.option("--plot", "plot_path", metavar="PATH", help="Plot the curves (PNG, SVG or PDF).")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="exact: one replay per size and policy; stack: LRU's whole curve in one "
                   "pass; sampled: a spatial sample of the blocks (SHARDS for lru, miniature "
                   "replays for the others). auto: stack for lru and exact for the others on "
                   "a block trace, sampled for all with --sample-rate.")
@click.option("--sample-rate", "sample_rate", metavar="R",
              help=f"Fraction of the blocks sampled, in (0, 1] (default {DEFAULT_RATE} with "
                   "--method sampled).")
@executor_options
def mrc(trace: str, sizes: str, policies: str, fmt: str, block_size: str | None,
        memory: str | None, output: str | None, plot_path: str | None, method: str,
        sample_rate: str | None, workers: int | None, dask: str | None,
        isolate: bool) -> None:
    """Miss-ratio curves: TRACE's miss ratio with each policy at each ARC size.

    Prints the miss ratio per size and policy. Exact curves replay TRACE per size and policy,
    as a sweep (resumable, on local processes or a Dask cluster); on a block trace LRU's
    curve takes one pass (stack distances), and --sample-rate samples every policy's.
    """
    try:
        size_list = parse_sizes(sizes)
    except ValueError as e:
        raise InputError(f"--sizes: {e}") from None
    policy_list = list(dict.fromkeys(p.strip() for p in policies.split(",") if p.strip()))
    if not policy_list:
        raise InputError("--policies: no policy given")
    if fmt != "auto" and fmt not in READERS:
        raise InputError(f"--format: unknown format '{fmt}' (known: auto, {', '.join(READERS)})")
    if not os.path.isfile(trace):
        raise InputError(f"{trace}: no such file")
    if plot_path:
        check_mrc_plot_path(plot_path)  # before the points run, not after
    methods, rate = _mrc_methods(trace, fmt, policy_list, method, sample_rate)
    grid: dict[str, list[Any]] = {"cache_policy": policy_list, "arc_size": size_list}
    if block_size:
        grid["block_size"] = [block_size]
    if memory:
        grid["memory"] = [memory]
    output = output or default_output(os.path.basename(trace), ".mrc.csv")
    spec = TraceSpec(trace, os.path.abspath(trace), fmt)
    stats = _run(lambda: make_sweep([spec], grid, "mrc"), output, os.path.basename(trace),
                 workers, dask, isolate, keep=current_rows(methods, rate),
                 here=lambda head: methods[head["cache_policy"]] != EXACT,
                 compute=lambda heads: one_pass_rows(trace, fmt, heads, methods, rate))
    errors = {row.get("error") for row in stats.rows if row.get("status") == STATUS_ERROR}
    if stats.rows and stats.failed == len(stats.rows) and len(errors) == 1:
        raise InputError(str(errors.pop()))  # every point met it: the trace itself is bad
    curves = mrc_curves(stats.rows)
    click.echo(format_mrc(curves, size_list))
    if plot_path:
        save_mrc(plot_mrc(curves, f"miss-ratio curves: {os.path.basename(trace)}"), plot_path)
        click.echo(f"mmsim: wrote {plot_path}", err=True)
    _report(stats, output)


def _mrc_methods(trace: str, fmt: str, policies: list[str], method: str,
                 sample_rate: str | None) -> tuple[dict[str, str], float | None]:
    """Each policy's method, and the sampling rate (None unless sampled); InputError for a
    bad rate or a method that cannot serve."""
    rate = None
    if sample_rate is not None:
        try:
            rate = parse_rate(sample_rate)
        except ValueError as e:
            raise InputError(f"--sample-rate: {e}") from None
    if method == "auto" and rate is None and "lru" not in policies:
        return dict.fromkeys(policies, EXACT), None  # nothing to detect
    try:
        real = detect_format(trace) if fmt == "auto" else fmt
    except TraceError as e:
        raise InputError(str(e)) from None
    try:
        methods = choose_methods(policies, method, rate, real in BLOCK_FORMATS)
    except ValueError as e:
        raise InputError(str(e)) from None
    if rate is None and SAMPLED in methods.values():
        rate = DEFAULT_RATE
    return methods, rate


def format_mrc(curves: dict[str, list[tuple[int, float]]], sizes: list[int]) -> str:
    """A table: one line per size, a miss-ratio column per policy ('-' where a point failed).
    Every size in one unit (see :func:`size_unit`), so the column reads down."""
    policies = list(curves)
    name, unit = size_unit(min(sizes, default=0), max(sizes, default=0))
    lines = [f"{'size (' + name + ')':<14}" + "".join(f"{p:>10}" for p in policies)]
    ratios = {p: dict(c) for p, c in curves.items()}
    for size in sizes:
        cells = "".join(f"{ratios[p][size]:>10.4f}" if size in ratios[p] else f"{'-':>10}"
                        for p in policies)
        lines.append(f"{size / unit:>12.2f}  {cells}")
    return "\n".join(lines)


def size_unit(smallest: int, largest: int) -> tuple[str, int]:
    """The binary unit in which ``smallest`` reads at least 1 (bytes below 1 KiB), or the
    next one up if ``largest`` would then need more than five digits."""
    units = [("bytes", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
    i = max([k for k, (_, u) in enumerate(units) if smallest >= u], default=0)
    if largest / units[i][1] >= 100_000 and i + 1 < len(units):
        i += 1
    return units[i]
