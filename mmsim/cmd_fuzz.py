"""The `mmsim fuzz` command (see :mod:`mmsim.fuzz`)."""

from __future__ import annotations

import shlex
import sys

import click

from mmsim.command import boot, build_config, main
from mmsim.kernel import ConfigError, KernelConfig, load_yaml
from mmsim.kernel.units import format_size_exact
from mmsim.progress import Progress


@main.command("fuzz")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML configuration to fuzz (user shrinkers included).")
@click.option("--memory", metavar="SIZE", help="Guest RAM (default: the configuration file's, else 256M).")
@click.option("--cpus", type=int, help="Number of vCPUs.")
@click.option("--examples", type=click.IntRange(1, 1_000_000), default=100, show_default=True,
              help="How many random operation sequences to try.")
@click.option("--steps", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="Operations per sequence.")
@click.option("--seed", type=int, default=0, show_default=True, help="Hypothesis seed.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the counterexample trace here (default: standard output).")
def fuzz_command(config_path: str | None, memory: str | None, cpus: int | None, examples: int,
                 steps: int, seed: int, output: str | None) -> None:
    """Check the allocator invariants under random operations; print a failing trace."""
    from mmsim.fuzz import fuzz  # hypothesis loads only when fuzzing

    if memory is None and not _sets_memory(config_path):
        memory = "256M"  # small enough that the fuzzer meets memory pressure
    config = build_config(config_path, memory=memory, cpus=cpus)
    boot(config)  # a configuration that cannot boot (e.g. a bad shrinker) is an input error
    with Progress("fuzzing", f"({steps} steps each)", total=examples, unit="example") as bar:
        # the count goes past the total while hypothesis shrinks a failure
        result = fuzz(config, examples=examples, seed=seed, steps=steps,
                      on_example=lambda: bar.update(1))
    if result.ok:
        click.echo(f"fuzz: {examples} examples of up to {steps} operations, invariants held")
        return
    click.echo(f"fuzz: invariant broken: {result.error}", err=True)
    hint = replay_command(output or "FAIL.trace", config_path, config)
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(result.trace or "")
        click.echo(f"fuzz: shrunk counterexample written to {output}; replay it with "
                   f"'{hint}'", err=True)
    else:
        click.echo(result.trace, nl=False)
        click.echo(f"fuzz: save the trace above as FAIL.trace and replay it with '{hint}'",
                   err=True)
    sys.exit(1)


def _sets_memory(config_path: str | None) -> bool:
    """True if the configuration file says how much memory the guest has."""
    if not config_path:
        return False
    try:
        data = load_yaml(config_path)
    except (ConfigError, OSError):
        return True  # build_config reports what is wrong with it
    return isinstance(data, dict) and data.get("memory") is not None


def replay_command(trace: str, config_path: str | None, config: KernelConfig) -> str:
    """The `mmsim run` line that boots the guest the fuzzer used (its configuration file and
    the memory and CPUs it settled on: fuzz's defaults are not run's) and checks every call."""
    words = ["mmsim", "run", trace, "--check"]
    if config_path:
        words += ["--config", config_path]
    words += ["--memory", format_size_exact(config.memory), "--cpus", str(config.cpus)]
    return shlex.join(words)
