"""The `boot` and `minmem` commands: whole images (a real JVM, or a native trace) on the guest.

Registered on the `mmsim` group when mmsim.cli imports this module. Exit codes of `boot`: 0 the
application ran to completion with status 0; 2 bad input (manifest, build, JVM options); 3 the
guest ran out of memory; 4 the application failed (an exception, an OutOfMemoryError, or
System.exit with a non-zero status: all reported, none takes the simulator down).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click

from mmsim.api import EXIT_APP_ERRORS
from mmsim.command import InputError, fail_on_option, failed_on, main, write_json
from mmsim.image import EXIT_OK, ImageError, boot_image, load_manifest, run_build
from mmsim.kernel import parse_size
from mmsim.kernel.config import MIN_MEMORY as LAYOUT_MIN
from mmsim.progress import Progress
from mmsim.timeline import Recorder, TimelineError, timeline_options

MIB = 1 << 20
#: the smallest guest minmem tries by default: the firmware's layout, in whole MiB (a guest too
#: small to boot is a failed trial, out of memory during boot, as on OSv)
MIN_MEMORY = -(-LAYOUT_MIN // MIB) * MIB


def _size(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise InputError(f"{what}: {e}") from None


@main.command()
@click.argument("image", metavar="IMAGE.yaml")
@click.option("--memory", metavar="SIZE", help="Guest RAM (default: the manifest's, else 2G).")
@click.option("--cpus", type=int, help="Number of vCPUs (default: the manifest's, else 4).")
@click.option("--rootfs", type=click.Choice(["zfs", "rofs"]),
              help="Root file system (default: the manifest's, else zfs).")
@click.option("--json", "json_path", metavar="PATH|-", help="Write the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No readable summary.")
@fail_on_option
@timeline_options
def boot(image: str, memory: str | None, cpus: int | None, rootfs: str | None,
         json_path: str | None, quiet: bool, fail_on: tuple[str, ...], **timeline: Any) -> None:
    """Boot IMAGE.yaml and run its application to completion, with its output.

    A Java image runs in a real JVM hosted in this process; its heap, native memory and the
    JVM balloon live in the simulated guest. See docs/jvm.md.
    """
    from mmsim.summary_text import format_summary

    recorders: list[Recorder] = []
    progress = Progress("booting", image, unit="op")

    def start_timeline(kernel: Any) -> Any:
        recorders.append(Recorder.start(kernel, image, **timeline))
        sample = recorders[0].tick

        def tick() -> None:  # after each workload operation and each JVM tick
            sample()
            progress.set_postfix(f"simulated {kernel.clock_ns / 1e9:.1f} s")
            progress.advance_to(kernel.events)

        return tick

    try:
        with progress:
            manifest = load_manifest(image)
            if rootfs is not None:
                manifest.rootfs = rootfs
            outcome = boot_image(manifest, _size(memory, "--memory"), cpus,
                                 app_output_to_stderr=json_path == "-",
                                 on_kernel=start_timeline)
    except (ImageError, TimelineError) as e:
        raise InputError(str(e)) from None
    if outcome.message:
        click.echo(f"mmsim: {image}: {outcome.message}", err=True)
    if json_path:
        write_json(outcome.summary, json_path)
    if not quiet:
        click.echo(format_summary(outcome.summary), err=json_path == "-")
    try:
        for rec in recorders:
            rec.finish(outcome.summary)
    except TimelineError as e:
        raise InputError(str(e)) from None
    status = outcome.status
    if not status and failed_on(fail_on, image, outcome.summary):
        status = EXIT_APP_ERRORS
    sys.stdout.flush()
    sys.stderr.flush()
    # the JVM may hold non-daemon threads of the application: leave without waiting for them
    os._exit(status)


def trial(image: str, memory_mib: int, timeout: float) -> tuple[bool, str, float]:
    """Boot ``image`` with ``memory_mib`` MiB in a fresh process (one JVM per process, never a
    fork of one): (ran to completion, why not, seconds)."""
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    cmd = [sys.executable, "-m", "mmsim", "boot", image, "--memory", f"{memory_mib}M",
           "--json", out, "--quiet"]
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:g} s", time.perf_counter() - t0
    finally:
        took = time.perf_counter() - t0
    try:
        with open(out, encoding="utf-8") as f:
            summary: dict[str, Any] = json.load(f)
    except (OSError, ValueError):
        summary = {}
    finally:
        os.unlink(out)
    if res.returncode == EXIT_OK:
        return True, "", took
    if res.returncode == 2:
        raise InputError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else
                         f"{image}: the trial failed with exit 2")
    app = summary.get("app") or {}
    why = (summary.get("oom") or {}).get("reason")
    why = f"guest out of memory ({why})" if why else app.get("error") or f"exit {res.returncode}"
    return False, str(why), took


def _bisect(run: Callable[[int], bool], lo: int, hi: int, unit: int, confirm: int,
            trials: list[dict[str, Any]]) -> int | None:
    """The smallest MiB that runs (``run`` tries one and records it in ``trials``), or None."""
    result: int | None
    if not run(hi):
        return None
    if run(lo):
        result = lo
    else:
        bad, good = lo, hi  # bad fails, good runs
        while good - bad > unit:
            mid = bad + (good - bad) // (2 * unit) * unit
            if run(mid):
                good = mid
            else:
                bad = mid
        result = good
    # a real JVM's JIT scratch memory varies by a few MiB from run to run: the figure must
    # run `confirm` times in all, or the answer moves up a step (a user sizes a VM from it)
    while result < hi:
        runs = sum(1 for t in trials if t["memory_mib"] == result and t["ok"])
        if runs >= confirm:
            break
        if not run(result):
            result += unit
    return result


@main.command()
@click.argument("image", metavar="IMAGE.yaml")
@click.option("--low", "low", metavar="SIZE", help="Smallest memory to try (default 2M: below, no firmware layout).")
@click.option("--high", "high", metavar="SIZE",
              help="Largest memory to try (default: the manifest's memory, else 2G).")
@click.option("--step", metavar="SIZE", default="1M", show_default=True,
              help="Resolution of the answer.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds a trial may run before it counts as a failure.")
@click.option("--confirm", type=click.IntRange(1, 20), default=2, show_default=True,
              help="Trials the figure must run in a row (a real JVM's footprint varies).")
@click.option("--json", "json_path", metavar="PATH|-", help="Write the trials as JSON.")
def minmem(image: str, low: str | None, high: str | None, step: str, timeout: float,
           confirm: int, json_path: str | None) -> None:
    """The smallest memory (MiB) in which IMAGE.yaml boots and runs to completion.

    Bisection, then the figure is confirmed with --confirm trials in a row (one step up for
    each failure); each trial boots the image in its own process.
    """
    try:
        manifest = load_manifest(image)
        run_build(manifest)  # once, before the trials share it
    except ImageError as e:
        raise InputError(str(e)) from None
    step_b = _size(step, "--step") or MIB
    if step_b % MIB:
        raise InputError("--step must be a whole number of MiB")
    unit = step_b // MIB
    lo_b = _size(low, "--low") or MIN_MEMORY
    hi_b = _size(high, "--high") or manifest.memory or 2 << 30
    lo, hi = -(-lo_b // step_b) * unit, hi_b // step_b * unit
    if lo < MIN_MEMORY // MIB or hi < lo:
        raise InputError(f"bad range {lo}..{hi} MiB (the guest has at least "
                         f"{MIN_MEMORY // MIB} MiB)")
    trials: list[dict[str, Any]] = []
    # the trials a bisection needs at least: both ends, the halvings, then the confirmations
    steps = max(0, ((hi - lo) // unit - 1).bit_length())
    progress = Progress("minmem", os.path.basename(image), total=2 + steps + confirm - 1,
                        unit="trial")

    def run(mib: int) -> bool:
        progress.set_postfix(f"trying {mib} MiB")
        ok, why, took = trial(image, mib, timeout)
        trials.append({"memory_mib": mib, "ok": ok, "why": why, "seconds": round(took, 2)})
        progress.write(f"  {mib:6d} MiB  {'runs' if ok else 'fails: ' + why}  ({took:.1f} s)")
        progress.advance_to(len(trials))
        progress.grow_to(len(trials) + 1)  # at least one more may follow (a confirmation)
        return ok

    click.echo(f"mmsim: {image}: bisecting {lo}..{hi} MiB in {unit} MiB steps", err=True)
    with progress:
        result = _bisect(run, lo, hi, unit, confirm, trials)
    if json_path:
        write_json({"image": image, "minmem_mib": result, "step_mib": unit, "confirm": confirm,
                    "trials": trials},
                   json_path)
    if result is None:
        click.echo(f"mmsim: {image}: does not run even with {hi} MiB", err=True)
        sys.exit(1)
    note = " (the lowest tried)" if result == lo else ""
    click.echo(f"{result} MiB{note}")
