"""The `mmsim` command group and what its subcommands share: one-line errors and exit codes
(the only place a :class:`~mmsim.api.MmsimError` becomes a line and a code), the configuration
options, JSON output and the out-of-memory report. The subcommands live in mmsim/cli.py (run)
and mmsim/cmd_*.py, mmsim/commands.py, which import this module and register on :data:`main`.
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
    one_line,
)
from mmsim.summary_text import human

__all__ = ["EXIT_BAD_INPUT", "EXIT_OOM", "InputError", "boot", "build_config",
           "kernel_options", "main", "oom_message", "write_json"]


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


def fail_on_option(f: Any) -> Any:
    """``--fail-on app-errors``: application errors in the trace fail the command (for CI)."""
    return click.option("--fail-on", "fail_on", type=click.Choice(["app-errors"]),
                        multiple=True, help="Exit 1 if the trace shows application errors "
                        "(double frees, ...): for CI.")(f)


def failed_on(fail_on: tuple[str, ...], where: str, summary: dict[str, Any]) -> bool:
    """True (and one line on stderr) if ``--fail-on`` asked for what the summary shows."""
    errors = (summary.get("app_errors") or {}).get("total", 0)
    if "app-errors" in fail_on and errors:
        click.echo(f"mmsim: {one_line(where)}: {errors} application errors "
                   "(--fail-on app-errors)", err=True)
        return True
    return False


def build_config(config_path: str | None, **overrides: Any) -> Any:
    return configure(config_path, overrides)


def write_json(summary: dict, dest: str) -> None:
    write_text(json.dumps(summary, indent=2, sort_keys=False) + "\n", dest)


def write_folded(stacks: list[tuple[str, int]], dest: str) -> None:
    """Folded stacks, one ``stack count`` line each (flamegraph.pl's input)."""
    write_text("".join(f"{stack} {count}\n" for stack, count in stacks), dest)


def write_text(text: str, dest: str) -> None:
    """``text`` to the file ``dest`` (``-``: standard output); one-line error if it cannot.
    Bytes of a trace that were not UTF-8 (a caller's file name) are written back as they were."""
    if dest == "-":
        sys.stdout.flush()  # what was echoed before comes first
        sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
        return
    try:
        with open(dest, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"{dest}: cannot write ({e.strerror})") from None


def oom_message(where: str, oom: dict[str, Any]) -> str:
    """The out-of-memory report for stderr: what failed, then (indented) each shrinker's last
    yield and the biggest consumers, one concise line each."""
    chunk = oom.get("chunk_bytes", oom["requested_bytes"])
    part = f" (failed on a {chunk}-byte piece)" if chunk != oom["requested_bytes"] else ""
    where = one_line(where)  # a file name may hold a newline
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
