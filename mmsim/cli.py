"""The `mmsim` command: replay traces against a simulated OSv guest and report.

Exit codes: 0 success, 2 bad input or options (one line naming the file and line), or a user
shrinker that could not be loaded or failed during the run (one line naming it), 3 the
simulated guest ran out of memory (the summary's ``oom`` section says why).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mmsim.api import (
    EXIT_BAD_INPUT,
    EXIT_OOM,
    InputError,
    MmsimError,
    boot,
    configure,
    replay,
)
from mmsim.kernel import Kernel
from mmsim.progress import Progress
from mmsim.summary_text import format_summary, human
from mmsim.timeline import timeline_options
from mmsim.trace import READERS

__all__ = ["EXIT_BAD_INPUT", "EXIT_OOM", "InputError", "boot", "build_config", "main",
           "write_json"]


class _Group(click.Group):
    """Click group whose usage errors are one line, like every other error of mmsim."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.UsageError as e:
            hint = f" (see 'mmsim {e.ctx.info_name} --help')" if e.ctx and e.ctx.parent else ""
            click.echo(f"mmsim: error: {e.format_message()}{hint}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except MmsimError as e:  # the one place a user's error becomes a line and a code
            click.echo(f"mmsim: error: {e}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("mmsim: aborted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mmsim")
def main() -> None:
    """Simulate the memory subsystem of the OSv library OS under a workload trace."""


def kernel_options(f: Any) -> Any:
    """The command-line twins of the configuration file's keys, shared by every command."""
    f = click.option("--seed", type=int, help="Seed for anything random (default 0).")(f)
    f = click.option("--giant-pages/--no-giant-pages", default=None,
                     help="Use 1 GiB leaves in the linear map (default off, as OSv).")(f)
    f = click.option("--hugepages/--no-hugepages", default=None,
                     help="Use 2 MiB pages for anonymous memory (default on).")(f)
    f = click.option("--rootfs", type=click.Choice(["zfs", "rofs"]),
                     help="Root file system: zfs (default, with the ARC) or rofs.")(f)
    f = click.option("--cpus", type=int, help="Number of vCPUs (default 4).")(f)
    f = click.option("--memory", metavar="SIZE", help="Guest RAM, e.g. 512M, 2G, 1T (default 2G).")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="YAML configuration file; command-line options override it.")(f)
    return f


def build_config(config_path: str | None, **overrides: Any) -> Any:
    return configure(config_path, overrides)


def write_json(summary: dict, dest: str) -> None:
    text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        return
    try:
        with open(dest, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"{dest}: cannot write ({e.strerror})") from None


def oom_message(where: str, oom: dict[str, Any]) -> str:
    """The out-of-memory report for stderr: what failed, then (indented) each shrinker's last
    yield and the biggest consumers, one concise line each."""
    chunk = oom.get("chunk_bytes", oom["requested_bytes"])
    part = f" (failed on a {chunk}-byte piece)" if chunk != oom["requested_bytes"] else ""
    lines = [f"mmsim: {where}:{oom['line']}: out of memory ({oom['reason']}): "
             f"{oom['op']} needed {oom['requested_bytes']} bytes{part}, {oom['free_bytes']} "
             f"free, largest free run {oom['largest_free_run_bytes']}"]
    yields = oom.get("shrinkers_last_yield_bytes") or {}
    if yields:
        lines.append("mmsim:   shrinkers' last yield: "
                     + ", ".join(f"{name} {human(n)}" for name, n in yields.items()))
    consumers = oom.get("consumers") or {}
    if consumers:
        lines.append("mmsim:   biggest consumers: "
                     + ", ".join(f"{name} {human(n)}" for name, n in consumers.items() if n))
    return "\n".join(lines)


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
@timeline_options
@click.option("--check", is_flag=True,
              help="Check the kernel's invariants after every operation (slow; exit 1 if broken).")
def run(trace: str, fmt: str, config_path: str | None, memory: str | None, cpus: int | None,
        rootfs: str | None, hugepages: bool | None, giant_pages: bool | None, seed: int | None,
        cache_policy: str | None, arc_size: str | None, block_size: str | None, pid: int | None,
        json_path: str | None, quiet: bool, check: bool, **timeline: Any) -> None:
    """Boot a guest and replay TRACE through it."""
    config = build_config(config_path, memory=memory, cpus=cpus, rootfs=rootfs,
                          hugepages=hugepages,
                          giant_pages=giant_pages, seed=seed, cache_policy=cache_policy,
                          arc_size=arc_size, block_size=block_size)
    with Progress.for_file("replaying", trace) as progress:
        result = replay(trace, config, fmt=fmt, pid=pid, check=check,
                        wrap=lambda ops, kernel: _reporting(ops, kernel, progress), **timeline)
    summary = result.summary
    if result.oom:
        click.echo(oom_message(trace, result.oom), err=True)
    if json_path:
        write_json(summary, json_path)
    if not quiet:
        click.echo(format_summary(summary), err=json_path == "-")
    if result.exit_code:
        sys.exit(result.exit_code)


from mmsim import cmd_fuzz as _cmd_fuzz  # noqa: E402,F401  (registers `mmsim fuzz`)
from mmsim import cmd_image as _cmd_image  # noqa: E402,F401  (registers boot, minmem)
from mmsim import cmd_sweep as _cmd_sweep  # noqa: E402,F401  (registers sweep, mrc)
from mmsim import commands as _commands  # noqa: E402,F401  (registers gen, report, compare)
