"""The `mmsim` command: replay traces against a simulated OSv guest and report. This module
holds `mmsim run` and gathers the other subcommands; the group is mmsim/command.py.

Exit codes: 0 success, 1 application errors in the trace with ``--fail-on app-errors``, 2 bad
input or options (one line naming the file and line), or a user shrinker that could not be
loaded or failed during the run (one line naming it), 3 the simulated guest ran out of memory
(the summary's ``oom`` section says why).
"""

from __future__ import annotations

import sys
from typing import Any

import click

# the other subcommands register themselves on `main` as they are imported
from mmsim import cmd_fuzz as _cmd_fuzz  # noqa: F401  (fuzz)
from mmsim import cmd_image as _cmd_image  # noqa: F401  (boot, minmem)
from mmsim import cmd_sweep as _cmd_sweep  # noqa: F401  (sweep, mrc)
from mmsim import commands as _commands  # noqa: F401  (gen, report, compare)
from mmsim.api import EXIT_APP_ERRORS, one_line, replay
from mmsim.command import (
    EXIT_BAD_INPUT,
    EXIT_OOM,
    InputError,
    boot,
    build_config,
    fail_on_option,
    failed_on,
    kernel_options,
    main,
    oom_message,
    write_folded,
    write_json,
)
from mmsim.kernel import Kernel
from mmsim.progress import Progress
from mmsim.summary_text import format_summary
from mmsim.timeline import timeline_options
from mmsim.trace import READERS

__all__ = ["EXIT_BAD_INPUT", "EXIT_OOM", "InputError", "boot", "build_config", "main",
           "write_json"]


#: operations between progress reports: a batched operation (an mtrace batch, a block trace's
#: line) stands for up to 64Ki calls, so the count of operations alone can stay below the
#: kernel's own 4096 for a whole run
REPORT_EVERY = 64


def _reporting(ops: Any, kernel: Kernel, progress: Progress) -> Any:
    """The operations, telling ``progress`` the kernel's events (calls applied, a batch's
    included) every :data:`REPORT_EVERY` operations, so the bar moves during the run."""
    for n, op in enumerate(ops, 1):
        yield op
        if not n % REPORT_EVERY:
            progress.advance_to(kernel.events)
    progress.advance_to(kernel.events)


@main.command()
@click.argument("trace", type=click.Path())
@click.option("--format", "fmt", default="auto", show_default=True,
              help=f"Trace format: auto or one of {', '.join(sorted(READERS))}.")
@kernel_options
@click.option("--cache-policy", metavar="NAME",
              help="ARC replacement policy: zfs (default), arc or lru.")
@click.option("--arc-size", metavar="SIZE", help="Fix the ARC's capacity (c_min = c_max).")
@click.option("--block-size", metavar="SIZE", help="Record size of a block trace's file.")
@click.option("--pid", type=int, help="Replay only this process of a strace log.")
@click.option("--json", "json_path", metavar="PATH|-", help="Write the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No readable summary.")
@click.option("--folded", "folded_path", metavar="PATH",
              help="Write bytes allocated per call site as folded stacks (flamegraph.pl, "
                   "speedscope, inferno).")
@timeline_options
@fail_on_option
@click.option("--check", is_flag=True,
              help="Check the kernel's invariants after every operation (slow; exit 1 if broken).")
def run(trace: str, fmt: str, config_path: str | None, memory: str | None, cpus: int | None,
        rootfs: str | None, hugepages: bool | None, giant_pages: bool | None, seed: int | None,
        cache_policy: str | None, arc_size: str | None, block_size: str | None, pid: int | None,
        json_path: str | None, quiet: bool, folded_path: str | None,
        fail_on: tuple[str, ...], check: bool, **timeline: Any) -> None:
    """Boot a guest and replay TRACE through it."""
    config = build_config(config_path, memory=memory, cpus=cpus, rootfs=rootfs,
                          hugepages=hugepages,
                          giant_pages=giant_pages, seed=seed, cache_policy=cache_policy,
                          arc_size=arc_size, block_size=block_size)
    with Progress.for_file("replaying", trace) as progress:
        result = replay(trace, config, fmt=fmt, pid=pid, check=check,
                        wrap=lambda ops, kernel: _reporting(ops, kernel, progress), **timeline)
    summary = result.summary
    cut = (summary.get("trace_reader") or {}).get("truncated_at_line")
    if cut:
        click.echo(f"mmsim: warning: {one_line(trace)}:{cut}: the log ends inside this "
                   "record (the program died while writing it?); replayed up to it", err=True)
    if result.oom:
        click.echo(oom_message(trace, result.oom), err=True)
    if json_path:
        write_json(summary, json_path)
    if folded_path:
        write_folded(result.folded(), folded_path)
    if not quiet:
        click.echo(format_summary(summary), err=json_path == "-")
    if result.exit_code:
        sys.exit(result.exit_code)
    if failed_on(fail_on, trace, summary):
        sys.exit(EXIT_APP_ERRORS)
