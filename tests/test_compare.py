"""`mmsim compare`: two summaries side by side, showing what a configuration change did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from mmsim.cli import main

MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"traceback: {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr


def row(out: str, key: str) -> list[str]:
    """The cells of the table row for ``key`` (cells are separated by two spaces or more)."""
    for line in out.splitlines():
        if line.split("  ")[0].strip() == key:
            return [c.strip() for c in line.split("  ") if c.strip()]
    raise AssertionError(f"no row {key!r} in:\n{out}")


def summary(hits: int, arc: int, anon: int, policy: str, errors: int = 0) -> dict:
    return {
        "events": 100, "time_ns": 2_000_000_000,
        "memory": {"total_bytes": 1024 * MIB, "free_bytes": 1024 * MIB - arc - anon,
                   "categories": {"arc": arc, "anonymous": anon}},
        "app_errors": {"total": errors, "by_kind": {}, "examples": [{"line": 1}]},
        "arc": {"policy": policy, "hits": hits, "hit_ratio": hits / 20},
    }


@pytest.fixture
def pair(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(summary(10, 100 * MIB, 0, "zfs")))
    b.write_text(json.dumps(summary(15, 150 * MIB, 4 * MIB, "arc")))
    return str(a), str(b)


def test_differences_absolute_and_relative(pair):
    code, out, _ = run("compare", *pair)
    assert code == 0
    assert out.splitlines()[0].split() == ["a.json", "b.json", "difference", "%"]
    assert row(out, "arc.hits") == ["arc.hits", "10", "15", "+5", "+50.0%"]
    assert row(out, "arc.hit_ratio") == ["arc.hit_ratio", "0.5", "0.75", "+0.25", "+50.0%"]
    assert row(out, "memory.categories.arc") == [
        "memory.categories.arc", "100.00 MiB", "150.00 MiB", "+50.00 MiB", "+50.0%"]
    assert row(out, "memory.free_bytes") == [
        "memory.free_bytes", "924.00 MiB", "870.00 MiB", "-54.00 MiB", "-5.8%"]
    assert row(out, "memory.categories.anonymous") == [
        "memory.categories.anonymous", "0 B", "4.00 MiB", "+4.00 MiB", "new"]
    assert row(out, "arc.policy") == ["arc.policy", "zfs", "arc", "changed"]
    assert "events" not in [line.split()[0] for line in out.splitlines()]  # equal: hidden
    assert out.splitlines()[-1] == "6 of 10 values differ"


def test_all_shows_the_equal_values_too(pair):
    code, out, _ = run("compare", *pair, "--all")
    assert code == 0
    assert row(out, "events") == ["events", "100", "100"]
    assert row(out, "time_ns") == ["time_ns", "2 s", "2 s"]


def test_what_huge_pages_change(tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text("mmap a 64M\ntouch a 0 64M\n")
    paths = []
    for flag in ("--hugepages", "--no-hugepages"):
        p = str(tmp_path / f"{flag[2:]}.json")
        assert run("run", str(trace), flag, "--json", p, "-q")[0] == 0
        paths.append(p)
    code, out, _ = run("compare", *paths)
    assert code == 0
    assert row(out, "config.hugepages")[1:] == ["yes", "no", "changed"]
    assert row(out, "mmap.huge_pages")[1:] == ["32", "0", "-32", "-100.0%"]
    assert row(out, "mmap.small_pages")[1:] == ["0", "16384", "+16384", "new"]
    faults = row(out, "mmap.faults")
    assert int(faults[2]) == 16384 * 1 and int(faults[1]) < int(faults[2])


def test_what_a_bigger_arc_changes(tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text("create /f 48M\n" + "".join(
        f"read /f {i % 48}M 1M\n" for i in range(144)))
    paths = []
    for size in ("16M", "64M"):
        p = str(tmp_path / f"{size}.json")
        assert run("run", str(trace), "--arc-size", size, "--json", p, "-q")[0] == 0
        paths.append(p)
    code, out, _ = run("compare", *paths)
    assert code == 0
    assert row(out, "arc.c_bytes")[1:] == ["16.00 MiB", "64.00 MiB", "+48.00 MiB", "+300.0%"]
    hits = row(out, "arc.hits")
    assert int(hits[2]) > int(hits[1])  # 48 MiB read three times fits only in the bigger one


@pytest.mark.parametrize("content, message", [
    (None, "cannot read"),
    ("{not json", "not JSON"),
    ('{"events": 1}', "not an mmsim run summary"),
])
def test_bad_input_is_one_line(tmp_path, pair, content, message):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    code, _, err = run("compare", pair[0], str(bad))
    assert_one_line_error(code, err, message)


def _run_with_timeline(tmp_path, name: str, memory: str) -> None:
    code, _, err = run("run", str(ROOT / "examples" / "hello.trace"), "-q", "--memory", memory,
                       "--json", str(tmp_path / f"{name}.json"),
                       "--timeline", str(tmp_path / f"{name}.csv"))
    assert code == 0, err


def test_compare_plot_overlays_the_two_timelines(tmp_path):
    """--plot draws both runs' used memory (found beside each summary) on one figure."""
    from matplotlib.image import imread

    from mmsim.plot_compare import plot_overlay
    from mmsim.timeline import load_timeline

    _run_with_timeline(tmp_path, "a", "2G")
    _run_with_timeline(tmp_path, "b", "1G")
    out = tmp_path / "cmp.png"
    code, _, err = run("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                       "--plot", str(out))
    assert code == 0, err
    assert imread(str(out)).shape[1] == 1100
    a, b = (load_timeline(str(tmp_path / f"{n}.csv")) for n in "ab")
    ax = plot_overlay(a, b, ("a", "b")).axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for name, data in (("a", a), ("b", b)):
        used = [t - f - k for t, f, k in zip(data.total, data.free, data.categories["kernel"])]
        assert list(lines[f"{name}: used"].get_ydata()) == pytest.approx([u / (1 << 20)
                                                                          for u in used])
    summary = json.loads((tmp_path / "a.json").read_text())
    assert any(lb.startswith("a: peak ") and lb.endswith(
        f"{summary['memory']['peak_used_bytes'] / (1 << 20):.2f} MiB") for lb in lines)


def test_compare_plot_without_timelines_is_one_line(tmp_path):
    _run_with_timeline(tmp_path, "a", "2G")
    (tmp_path / "a.csv").rename(tmp_path / "elsewhere.csv")
    code, _, err = run("compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                       "--plot", str(tmp_path / "c.png"))
    assert_one_line_error(code, err, "--plot needs", "a.json's timeline")
    code, _, err = run("compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"),
                       "--plot", str(tmp_path / "c.png"), "--timeline",
                       str(tmp_path / "elsewhere.csv"))
    assert_one_line_error(code, err, "--timeline: give two")
