"""The `gen`, `report` and `compare` commands: generating workloads and reading results.

Registered on the `mmsim` group when mmsim.cli imports this module (at its end). Heavy imports
(matplotlib) happen inside the commands, so `mmsim run` does not pay for them.
"""

from __future__ import annotations

import gzip
import io
import os
import shlex
import sys
from typing import Any, TextIO

import click

from mmsim.command import InputError, main
from mmsim.compare import SummaryError, compare_summaries, format_comparison, load_summary
from mmsim.gen import GENERATORS, write_trace
from mmsim.progress import Progress
from mmsim.timeline import TimelineError, check_plot_path, load_timeline


def _open_output(path: str) -> tuple[TextIO, Any]:
    """A text stream for ``path`` (``-`` is stdout), gzip or zstd by extension, and the file
    to close; gzip without a time stamp or name, so the bytes depend on the content only."""
    if path == "-":
        return sys.stdout, None
    try:
        raw = open(path, "wb")
    except OSError as e:
        raise InputError(f"{path}: cannot write ({e.strerror})") from None
    if path.endswith(".gz"):
        inner: Any = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
    elif path.endswith(".zst"):
        import zstandard

        inner = zstandard.ZstdCompressor().stream_writer(raw)
    else:
        inner = raw
    return io.TextIOWrapper(inner, encoding="utf-8", newline="\n"), raw


_GEN_HELP = (
    "Write a synthetic native trace of KIND (the same bytes for the same seed).\n\n\b\n"
    "KIND is one of:\n" + "\n".join(f"  {g.name:<10} {g.summary}" for g in GENERATORS.values())
    + "\n\ndocs/gen.md describes the model behind each."
)


@main.command(help=_GEN_HELP, short_help="Write a synthetic native trace of KIND.")
@click.argument("kind", type=click.Choice(sorted(GENERATORS)), metavar="KIND")
@click.option("--events", type=click.IntRange(min=0), metavar="N",
              help="Operations to write (default depends on KIND).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--cpus", type=click.IntRange(min=1), default=4, show_default=True,
              help="CPUs the workload's threads run on (the guest needs at least as many).")
@click.option("-o", "--output", required=True, metavar="TRACE|-",
              help="Where to write the trace (.gz or .zst compress it).")
def gen(kind: str, events: int | None, seed: int, cpus: int, output: str) -> None:
    """Stream the trace out as it is generated: a long one never sits in memory."""
    stream, raw = _open_output(output)
    total = GENERATORS[kind].default_events if events is None else events
    try:
        with Progress("generating", kind, total=total) as progress:
            written = write_trace(kind, stream, events, seed, cpus, progress.update)
        stream.flush()
        if raw is not None:
            stream.close()
    except OSError as e:
        raise InputError(f"{output}: cannot write ({e.strerror})") from None
    where = "standard output" if output == "-" else output
    click.echo(f"mmsim gen: wrote {written:,} operations of the {kind} workload to {where} "
               f"(seed {seed}, {cpus} CPUs); replay it with 'mmsim run {shlex.quote(output)}'"
               if output != "-" else f"mmsim gen: wrote {written:,} operations of the {kind} "
               f"workload to {where}", err=True)


@main.command()
@click.argument("run_json", metavar="RUN.json")
@click.argument("timeline", required=False, metavar="[TIMELINE]")
@click.option("-o", "--output", metavar="PATH",
              help="The HTML file (default: RUN.json's name with .html).")
@click.option("--title", help="The page's title (default: from the trace's name).")
def report(run_json: str, timeline: str | None, output: str | None, title: str | None) -> None:
    """One self-contained HTML page of a run: summary tables and plots.

    RUN.json is `mmsim run --json`'s summary; TIMELINE its `--timeline` file, for the plots
    over time.
    """
    from mmsim.report import render_report

    try:
        summary = load_summary(run_json)
        data = load_timeline(timeline) if timeline else None
        if data is not None and timeline is not None:
            _check_same_run(summary, data, run_json, timeline)
        page = render_report(summary, data, title)
    except (SummaryError, TimelineError) as e:
        raise InputError(str(e)) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field deeper down
        raise InputError(f"{run_json}: not an mmsim run summary ({type(e).__name__}: "
                         f"{e})") from None
    dest = output or os.path.splitext(run_json)[0] + ".html"
    try:
        with open(dest, "w", encoding="utf-8", errors="replace") as f:  # a trace's odd bytes
            f.write(page)
    except OSError as e:
        raise InputError(f"{dest}: cannot write ({e.strerror})") from None
    click.echo(f"mmsim: wrote {dest}", err=True)


def _check_same_run(summary: dict[str, Any], data: Any, run_json: str, timeline: str) -> None:
    """InputError unless the timeline comes from the run the summary describes: the same
    memory for the page allocator (the timeline's total less its kernel category) and the
    same operations at its last row."""
    if not len(data):
        return
    from mmsim.summary_text import human

    kernel = data.categories.get("kernel") or [0] * len(data)
    given = data.total[-1] - kernel[-1]
    want = summary["memory"]["total_bytes"]
    if given != want:
        raise InputError(f"{timeline}: not the timeline of {run_json}: its guest gave the page "
                         f"allocator {human(given)}, the summary's {human(want)} ({want} bytes)")
    events = summary.get("events")
    if events is not None and data.event[-1] != events:
        raise InputError(f"{timeline}: not the timeline of {run_json}: it ends after "
                         f"{data.event[-1]} operations, the summary's run after {events}")


@main.command(short_help="Two run summaries side by side, with the differences.")
@click.argument("a", metavar="A.json")
@click.argument("b", metavar="B.json")
@click.option("--all", "all_rows", is_flag=True, help="Also show the values that are equal.")
@click.option("--plot", "plot_path", metavar="PATH",
              help="Overlay the two runs' timelines in PATH (.png, .svg or .pdf).")
@click.option("--timeline", "timelines", multiple=True, metavar="PATH",
              help="A run's timeline for --plot, A's then B's (default: beside each summary, "
                   "A.csv or A.jsonl).")
def compare(a: str, b: str, all_rows: bool, plot_path: str | None,
            timelines: tuple[str, ...]) -> None:
    """Two run summaries side by side, with the differences (absolute and in %)."""
    if plot_path:
        try:
            check_plot_path(plot_path)
        except TimelineError as e:
            raise InputError(f"--plot {e}") from None
    try:
        sa, sb = load_summary(a), load_summary(b)
    except SummaryError as e:
        raise InputError(str(e)) from None
    label_a = os.path.basename(a)
    label_b = os.path.basename(b)
    if label_a == label_b:
        label_a, label_b = a, b
    try:
        text = format_comparison(compare_summaries(sa, sb), label_a, label_b, all_rows)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field deeper down
        raise InputError(f"{a} or {b}: not an mmsim run summary ({type(e).__name__}: "
                         f"{e})") from None
    click.echo(text)
    if plot_path:
        _plot_comparison((a, b), (sa, sb), timelines, (label_a, label_b), plot_path)


def _plot_comparison(paths: tuple[str, str], summaries: tuple[dict, dict],
                     timelines: tuple[str, ...], labels: tuple[str, str], dest: str) -> None:
    from mmsim.plot import save_figure
    from mmsim.plot_compare import default_timeline, plot_overlay

    if timelines and len(timelines) != 2:
        raise InputError(f"--timeline: give two, A's then B's (got {len(timelines)})")
    chosen = list(timelines) or [default_timeline(p) for p in paths]
    data = []
    for path, summary, tl in zip(paths, summaries, chosen):
        if tl is None:
            raise InputError(f"--plot needs {path}'s timeline: none beside it (.csv or .jsonl "
                             "of the same name); give --timeline A.csv --timeline B.csv")
        try:
            d = load_timeline(tl)
        except TimelineError as e:
            raise InputError(str(e)) from None
        _check_same_run(summary, d, path, tl)
        data.append(d)
    try:
        save_figure(plot_overlay(data[0], data[1], labels), dest)
    except TimelineError as e:
        raise InputError(str(e)) from None
    click.echo(f"mmsim: wrote {dest}", err=True)


@main.command(short_help="mmsim's figures beside real OSv's, scenario by scenario.")
@click.option("--all", "all_rows", is_flag=True, help="Show every row (default: all too).")
def calibrate(all_rows: bool) -> None:
    """Replay every scenario real OSv was measured in (docs/calibration.md) and print OSv's
    figure beside mmsim's, with the tolerance each is held to; exit 1 if one is outside it."""
    from mmsim.calibration import calibrate as run_calibration
    from mmsim.calibration import format_table

    rows = run_calibration()
    click.echo(format_table(rows))
    off = [r for r in rows if not r.ok]
    click.echo(f"{len(rows) - len(off)} of {len(rows)} figures within tolerance")
    if off:
        sys.exit(1)
