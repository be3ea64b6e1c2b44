"""`mmsim sweep` and `mmsim mrc` as a user meets them: the same rows wherever the points run,
failures recorded without stopping the sweep, reruns that skip what is done, one-line errors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error, ids_trace

from mmsim.cli import main
from mmsim.summary_text import human
from mmsim.sweep_file import parse_sizes

NATIVE = """\
# mmsim-trace v1
create /f 4M
read /f 0 4M
read /f 0 4M
malloc b 64K
mmap m 2M
touch m 0 2M
cpu 1
free b
read /f 0 1M
"""


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"traceback: {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """Two traces (native, ids) × 2 CPU counts × 2 policies; the native trace uses CPU 1, so
    its one-CPU points fail."""
    (tmp_path / "t.trace").write_text(NATIVE)
    (tmp_path / "blocks.ids").write_text(ids_trace())
    sweep = tmp_path / "study.yaml"
    sweep.write_text("traces:\n  - t.trace\n  - {path: blocks.ids, format: ids}\n"
                     "grid:\n  cpus: [1, 2]\n  cache_policy: [arc, lru]\n  arc_size: [256K]\n")
    return sweep


def test_local_and_dask_give_the_same_rows_and_failures_do_not_stop_the_sweep(study, tmp_path):
    local, dask_out = tmp_path / "local.csv", tmp_path / "dask.csv"
    code, out, err = cli("sweep", str(study), "-o", str(local), "--workers", "2")
    assert code == 1, err  # some points failed: their rows say why
    assert "8 rows (8 run, 0 already done, 2 failed)" in err

    got = rows(local)
    # and a table a person reads: the varied keys and headline figures, one line a point
    table = out.splitlines()
    assert table[0].split() == ["trace", "cpus", "cache_policy", "arc_size", "status", "peak",
                                "used", "hit", "ratio", "app", "errors"]
    assert len(table) == 1 + len(got) and max(map(len, table)) <= 100
    for line, r in zip(table[1:], got):
        cells = line.split()
        assert cells[:5] == [r["trace"], r["cpus"], r["cache_policy"], r["arc_size"],
                             r["status"]]
        if r["status"] == "ok":
            assert " ".join(cells[5:7]) == human(int(r["memory.peak_used_bytes"]))
    assert [(r["trace"], r["point"]) for r in got] == [
        (t, str(i)) for t in ("t.trace", "blocks.ids") for i in range(4)]
    assert [(r["cpus"], r["cache_policy"], r["arc_size"]) for r in got[:4]] == [
        ("1", "arc", "256K"), ("1", "lru", "256K"), ("2", "arc", "256K"), ("2", "lru", "256K")]
    for r in got:
        if r["trace"] == "t.trace" and r["cpus"] == "1":
            assert r["status"] == "error"
            assert r["error"] == "t.trace:8: cpu 1 does not exist (the guest has 1)"
            assert r["events"] == ""
        else:
            assert r["status"] == "ok" and r["error"] == ""
            assert int(r["memory.peak_used_bytes"]) > 0
            assert r["arc.policy"] == r["cache_policy"]
            assert int(r["config.cpus"]) == int(r["cpus"])
            assert int(r["arc.c_max_bytes"]) == 256 << 10
    blocks = [r for r in got if r["trace"] == "blocks.ids"]
    assert all(int(r["arc.hits"]) + int(r["arc.misses"]) == 3000 for r in blocks)

    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        code, _, err = cli("sweep", str(study), "-o", str(dask_out), "--dask",
                           cluster.scheduler_address)
    assert code == 1, err
    assert dask_out.read_bytes() == local.read_bytes()

    # a rerun runs the failed points again, and only them
    code, _, err = cli("sweep", str(study), "-o", str(local), "--workers", "2")
    assert code == 1 and "(2 run, 6 already done, 2 failed)" in err
    assert local.read_bytes() == dask_out.read_bytes()


def test_a_point_is_what_mmsim_run_reports(study, tmp_path):
    out = tmp_path / "r.csv"
    cli("sweep", str(study), "-o", str(out), "--workers", "1")
    row = next(r for r in rows(out) if r["trace"] == "t.trace" and r["point"] == "3")
    code, js, _ = cli("run", str(tmp_path / "t.trace"), "--cpus", "2", "--cache-policy", "lru",
                      "--arc-size", "256K", "--json", "-", "-q")
    assert code == 0
    summary = json.loads(js)
    assert int(row["events"]) == summary["events"]
    assert int(row["time_ns"]) == summary["time_ns"]
    assert int(row["memory.peak_used_bytes"]) == summary["memory"]["peak_used_bytes"]
    assert int(row["arc.hits"]) == summary["arc"]["hits"]
    assert float(row["arc.hit_ratio"]) == summary["arc"]["hit_ratio"]
    assert int(row["mmap.faults"]) == summary["mmap"]["faults"]


def test_rerun_skips_done_points_and_redoes_a_row_cut_short(study, tmp_path):
    (tmp_path / "one.yaml").write_text(
        "traces: [blocks.ids]\nformat: ids\ngrid:\n  arc_size: [64K, 128K, 256K, 512K]\n")
    out = tmp_path / "one.csv"
    assert cli("sweep", str(tmp_path / "one.yaml"), "-o", str(out), "--workers", "2")[0] == 0
    first = out.read_text()
    header, *lines = first.splitlines(keepends=True)
    assert len(lines) == 4
    cols = header.rstrip("\n").split(",")
    # mark point 0 (a rerun would overwrite the mark), drop point 2, cut point 3 mid-row
    marked = lines[0].split(",")
    marked[cols.index("events")] = "-1"
    out.write_text(header + ",".join(marked) + lines[1] + lines[3][:len(lines[3]) // 2])

    code, _, err = cli("sweep", str(tmp_path / "one.yaml"), "-o", str(out), "--workers", "2")
    assert code == 0, err
    assert "2 points already done, 2 to run" in err
    assert "(2 run, 2 already done, 0 failed)" in err
    again = rows(out)
    assert [r["point"] for r in again] == ["0", "1", "2", "3"]
    assert again[0]["events"] == "-1"  # point 0 was not run again
    assert out.read_text() == first.replace(lines[0], ",".join(marked))


def test_a_point_that_kills_its_process_is_a_row_and_the_others_complete(tmp_path, monkeypatch):
    (tmp_path / "crashmod.py").write_text(
        "import os\n\nclass Crash:\n    def __init__(self):\n        os._exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "t.trace").write_text(NATIVE)
    (tmp_path / "s.yaml").write_text(
        "traces: [t.trace]\npoints:\n  - {cpus: 2}\n  - {cpus: 2, shrinkers: ['crashmod:Crash']}\n"
        "  - {cpus: 4}\n")
    out = tmp_path / "s.csv"
    code, _, err = cli("sweep", str(tmp_path / "s.yaml"), "-o", str(out), "--workers", "2")
    assert code == 1, err
    got = rows(out)
    assert [r["status"] for r in got] == ["ok", "error", "ok"]
    assert got[1]["error"] == "the point's process died (exit code 3)"
    assert got[1]["shrinkers"] == '["crashmod:Crash"]'
    assert got[0]["events"] == got[2]["events"] == str(NATIVE.count("\n") - 1)


def test_an_image_point_boots_as_mmsim_boot_does(tmp_path):
    (tmp_path / "t.trace").write_text(NATIVE.replace("cpu 1\n", ""))
    (tmp_path / "img.yaml").write_text(
        "cmdline: /tools/replay.so /app/t.trace\nfiles:\n  /app/t.trace: t.trace\ncpus: 2\n")
    (tmp_path / "s.yaml").write_text(
        "traces:\n  - {image: img.yaml}\ngrid:\n  memory: [256M, 512M]\n  arc_size: [1M]\n")
    out = tmp_path / "s.csv"
    code, _, err = cli("sweep", str(tmp_path / "s.yaml"), "-o", str(out), "--workers", "2")
    assert code == 0, err
    # `mmsim boot` leaves with os._exit (a JVM's threads): run it as a command
    boot = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(tmp_path / "img.yaml"),
                           "--memory", "512M", "--json", "-", "-q"],
                          capture_output=True, text=True, check=True)
    booted = json.loads(boot.stdout)
    got = rows(out)
    assert [(r["trace"], r["memory"], r["status"]) for r in got] == [
        ("img.yaml", "256M", "ok"), ("img.yaml", "512M", "ok")]
    assert [int(r["config.memory_bytes"]) for r in got] == [256 << 20, 512 << 20]
    assert all(int(r["arc.c_max_bytes"]) == 1 << 20 for r in got)
    assert got[1]["app.kind"] == "native" and "app.wall_seconds" not in got[1]
    assert int(got[1]["events"]) == booted["events"]
    assert int(got[1]["memory.peak_used_bytes"]) < booted["memory"]["peak_used_bytes"]  # 1M ARC


def test_parquet_output_has_typed_columns_and_resumes(study, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    csv_out, pq_out = tmp_path / "r.csv", tmp_path / "r.parquet"
    cli("sweep", str(study), "-o", str(csv_out), "--workers", "2")
    code, _, err = cli("sweep", str(study), "-o", str(pq_out), "--workers", "2")
    assert code == 1 and "8 rows" in err
    table = pq.read_table(pq_out)
    assert str(table.schema.field("arc.hits").type) == "int64"
    assert str(table.schema.field("arc.hit_ratio").type) == "double"
    assert table.column_names == list(rows(csv_out)[0])
    for want, got in zip(rows(csv_out), table.to_pylist(), strict=True):
        assert str(got["point"]) == want["point"] and got["status"] == want["status"]
        if want["status"] == "ok":
            assert got["arc.hits"] == int(want["arc.hits"])
            assert got["arc.hit_ratio"] == float(want["arc.hit_ratio"])
    before = pq_out.read_bytes()
    code, _, err = cli("sweep", str(study), "-o", str(pq_out), "--workers", "1")
    assert "(2 run, 6 already done, 2 failed)" in err
    assert pq_out.read_bytes() == before


@pytest.mark.parametrize(("text", "line", "what"), [
    ("traces: [t.trace]\ngrid:\n  arc_size:\n    - 1M\n    - 12Q\n", 5, "bad size '12Q'"),
    ("traces: [t.trace]\ngrid:\n  cpus: [2]\n  cache_polcy: [lru]\n", 4,
     "unknown key 'cache_polcy'"),
    ("traces: [t.trace]\ngrid:\n  cache_policy: [lru, lur]\n", 3, "unknown cache policy 'lur'"),
    ("traces:\n  - t.trace\n  - missing.trace\ngrid: {cpus: [2]}\n", 3,
     "trace 'missing.trace': no such file"),
    ("traces: [t.trace]\npoints:\n  - {cpus: 2}\n  - {memory: 1G,\n     cpus: 0}\n", 5,
     "'cpus' must be an integer in 1..256, not 0"),
    ("traces: [t.trace]\npoints:\n  - {cpus: 2}\n  - {cpus: 2}\n", 4,
     "point 1 is the same as point 0"),
    ("traces: [t.trace]\ngrid: {cpus: [2]}\npoints: [{}]\n", 3, "'grid' or 'points', not both"),
    ("traces: [t.trace]\ngrid: {cpus: [2]}\nworkers: 4\n", 3, "unknown key 'workers'"),
    ("traces: [t.trace]\ngrid: {cpus: [2, 2]}\n", 2, "'cpus' lists 2 twice"),
    ("traces: [t.trace]\ngrid: {cpus: []}\n", 2, "'cpus' must be a non-empty list"),
    ("traces: [t.trace]\nformat: nope\ngrid: {cpus: [2]}\n", 2, "unknown trace format 'nope'"),
    ("traces:\n  - {path: t.trace,\n     pid: -1}\ngrid: {cpus: [2]}\n", 3,
     "'pid' must be a process id"),
    ("traces: [t.trace]\ngrid: {cpus: [2]\n", 3, "bad YAML"),
    ("traces: [t.trace]\ngrid: {cpus: !!python/object:os.system [2]}\n", 2, "bad YAML"),
])
def test_sweep_file_errors_name_file_and_line(tmp_path, text, line, what):
    (tmp_path / "t.trace").write_text(NATIVE)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, _, err = cli("sweep", str(path))
    assert_one_line_error(code, err)
    assert f"{path}:{line}: " in err and what in err, err
    assert not (tmp_path / "bad.csv").exists()


def test_an_output_of_another_sweep_is_not_overwritten(study, tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("trace,point,memory,status,error\nt.trace,0,1G,ok,\n")
    code, _, err = cli("sweep", str(study), "-o", str(out))
    assert code == 2 and "is not a point of this sweep" in err
    assert out.read_text() == "trace,point,memory,status,error\nt.trace,0,1G,ok,\n"


def test_parse_sizes():
    sizes = parse_sizes("1M:64M:7")
    assert sizes[0] == 1 << 20 and sizes[-1] == 64 << 20 and len(sizes) == 7
    ratios = [b / a for a, b in zip(sizes, sizes[1:])]
    assert all(math.isclose(r, 2.0, rel_tol=1e-6) for r in ratios)
    assert parse_sizes("4K, 1M,64K") == [4096, 65536, 1 << 20]
    for bad in ("1M:64M", "64M:1M:4", "1M:64M:1", "", "12Q"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_mrc_lru_miss_ratio_does_not_grow_with_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.ids").write_text(ids_trace(n=2500, distinct=300, seed=11))
    code, out, err = cli("mrc", "b.ids", "--format", "ids", "--sizes", "16K:1M:5",
                         "--policies", "lru,arc", "--plot", "mrc.png", "--workers", "2")
    assert code == 0, err
    got = rows(tmp_path / "b.mrc.csv")
    assert len(got) == 10
    curve = {p: [int(r["arc.misses"]) / 2500 for r in got if r["cache_policy"] == p]
             for p in ("lru", "arc")}
    lru = curve["lru"]
    assert all(b <= a for a, b in zip(lru, lru[1:])), lru
    assert lru[-1] < lru[0]
    assert all(0 < m < 1 for m in curve["arc"])
    table = out.splitlines()
    assert table[0].split() == ["size", "(KiB)", "lru", "arc"]  # every size in one unit
    sizes = [float(line.split()[0]) for line in table[1:6]]
    assert sizes[0] == 16 and sizes[-1] == 1024 and sizes == sorted(sizes)
    assert [float(x) for x in table[1].split()[1:]] == pytest.approx(
        [curve["lru"][0], curve["arc"][0]], abs=1e-4)
    assert (tmp_path / "mrc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mrc_bad_options_are_one_line(tmp_path):
    (tmp_path / "b.ids").write_text("1\n2\n")
    for args, what in ((["--sizes", "1M:2"], "--sizes"), (["--sizes", "1M", "--policies", "x"],
                                                          "unknown cache policy 'x'")):
        code, _, err = cli("mrc", str(tmp_path / "b.ids"), "--format", "ids",
                           "-o", str(tmp_path / "m.csv"), *args)
        assert_one_line_error(code, err, what)


def test_mrc_bad_plot_path_fails_before_any_point_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "b.ids").write_text(ids_trace(n=200, distinct=30, seed=1))
    for plot, what in (("mrc.txt", "must be .png, .svg or .pdf"),
                       ("/nonexistent/dir/m.png", "cannot write")):
        code, _, err = cli("mrc", "b.ids", "--format", "ids", "--sizes", "16K:1M:3",
                           "--plot", plot, "--workers", "1")
        assert_one_line_error(code, err, what)
        assert not (tmp_path / "b.mrc.csv").exists()  # nothing ran


def test_plot_mrc_is_a_figure_whose_axes_carry_the_curves():
    from matplotlib.figure import Figure

    from mmsim.cmd_sweep import plot_mrc

    curves = {"lru": [(1 << 14, 0.9), (1 << 16, 0.5), (1 << 20, 0.1)],
              "arc": [(1 << 14, 0.8), (1 << 16, 0.4), (1 << 20, 0.1)]}
    fig = plot_mrc(curves, "miss-ratio curves: b.ids")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"lru", "arc"}
    for policy, points in curves.items():
        assert list(lines[policy].get_xdata()) == [s for s, _ in points]
        assert list(lines[policy].get_ydata()) == [r for _, r in points]
    assert ax.get_xscale() == "log" and ax.get_ylim() == (0, 1.02)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("ARC size", "miss ratio")
    assert ax.get_title() == "miss-ratio curves: b.ids"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lru", "arc"]


def test_a_sweep_file_error_names_the_key_not_its_option(tmp_path):
    (tmp_path / "t.trace").write_text(NATIVE)
    path = tmp_path / "bad.yaml"
    path.write_text("traces: [t.trace]\ngrid:\n  memory: [12Q]\n")
    code, _, err = cli("sweep", str(path))
    assert code == 2
    assert f"{path}:3: grid: memory: bad size '12Q'" in err and "--memory" not in err, err


def test_an_isolated_point_whose_process_cannot_start_fails_alone(monkeypatch):
    import mmsim.sweep_points as sweep

    def no_process(*args, **kwargs):
        raise OSError(7, "Argument list too long")

    monkeypatch.setattr(sweep.subprocess, "run", no_process)
    got = sweep.run_task({"isolate": True, "trace": "t.trace"})
    assert got["status"] == sweep.STATUS_ERROR and got["figures"] == {}
    assert "cannot start the point's process (Argument list too long)" in got["error"]
