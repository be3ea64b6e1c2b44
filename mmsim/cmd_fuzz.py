"""The `mmsim fuzz` command (see :mod:`mmsim.fuzz`)."""

from __future__ import annotations

import sys

import click

from mmsim.command import boot, build_config, main
from mmsim.progress import Progress


@main.command("fuzz")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML configuration to fuzz (user shrinkers included).")
@click.option("--memory", metavar="SIZE", help="Guest RAM (default: the config's, or 256M).")
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

    if memory is None and config_path is None:
        memory = "256M"
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
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(result.trace or "")
        click.echo(f"fuzz: shrunk counterexample written to {output}; replay it with "
                   f"'mmsim run {output} --check'", err=True)
    else:
        click.echo(result.trace, nl=False)
    sys.exit(1)
