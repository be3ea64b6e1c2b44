"""The `mmsim` command as a user meets it: exit codes and one-line errors naming file:line."""

import gzip
import json
import re

import pytest
from cli_helpers import run
from helpers import assert_one_line_error


def test_json_summary_of_a_minimal_trace(trace):
    path = trace("# mmsim-trace v1\ncpu 1\nsleep 5ms\n@1s sleep 1ms\n")
    code, out, _ = run("run", path, "--memory", "512M", "--cpus", "2", "--json", "-", "-q")
    assert code == 0
    s = json.loads(out)
    assert s["events"] == 3
    assert s["time_ns"] == 1_001_000_000
    mem = s["memory"]
    assert mem["total_bytes"] == mem["free_bytes"] + sum(mem["categories"].values())
    assert 0 < mem["page_table_bytes"] <= mem["peak_used_bytes"]
    assert s["oom"] is None
    assert s["config"]["cpus"] == 2


def test_json_to_a_file_and_readable_summary(trace, tmp_path):
    out_path = tmp_path / "s.json"
    code, out, _ = run("run", trace("sleep 1s\n"), "--json", str(out_path))
    assert code == 0
    assert "peak used" in out
    assert json.loads(out_path.read_text())["events"] == 1


def test_bad_option_is_one_line():
    code, _, err = run("run", "x.trace", "--bogus")
    assert code == 2
    assert err.strip().count("\n") == 0 and "--bogus" in err


def test_bad_memory_value(trace):
    code, _, err = run("run", trace("sleep 1s\n"), "--memory", "12Q")
    assert_one_line_error(code, err, "12Q")


def test_unknown_operation_names_file_and_line(trace):
    path = trace("sleep 1s\n\nmallok a 10\n")
    code, _, err = run("run", path)
    assert_one_line_error(code, err, f"{path}:3:", "mallok")


def test_malformed_line_names_file_and_line(trace):
    path = trace("# comment\nsleep\n")
    code, _, err = run("run", path)
    assert_one_line_error(code, err)
    assert err.startswith(f"mmsim: error: {path}:2: ")


def test_cpu_that_does_not_exist(trace):
    path = trace("sleep 1s\ncpu 9\n")
    code, _, err = run("run", path, "--cpus", "2")
    assert code == 2 and f"{path}:2:" in err and "cpu 9" in err


def test_truncated_gz(tmp_path):
    data = gzip.compress(b"sleep 1ms\n" * 20000)
    p = tmp_path / "t.trace.gz"
    p.write_bytes(data[: len(data) // 2])
    code, _, err = run("run", str(p))
    assert_one_line_error(code, err)
    m = re.fullmatch(rf"mmsim: error: {re.escape(str(p))}:(\d+): truncated or corrupt gzip data\n",
                     err)
    assert m is not None, err
    assert 1 < int(m[1]) < 20000  # the line it had reached, not 0


def test_missing_file():
    code, _, err = run("run", "/nonexistent/t.trace")
    assert code == 2
    assert err == "mmsim: error: /nonexistent/t.trace: no such file\n"  # exactly one line


def test_yaml_with_python_object_tag_is_refused(tmp_path, trace):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory: 1G\ncpus: !!python/object/apply:os.system ['echo pwned']\n")
    code, _, err = run("run", trace("sleep 1s\n"), "--config", str(cfg))
    assert code == 2 and f"{cfg}:2:" in err and "pwned" not in err


def test_yaml_unknown_key_names_line(tmp_path, trace):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory: 1G\nhugepage: true\n")
    code, _, err = run("run", trace("sleep 1s\n"), "--config", str(cfg))
    assert code == 2 and f"{cfg}:2:" in err and "hugepage" in err


def test_command_line_overrides_config(tmp_path, trace):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory: 1G\ncpus: 2\nhugepages: false\n")
    code, out, _ = run("run", trace("sleep 1s\n"), "--config", str(cfg), "--cpus", "3",
                       "--json", "-", "-q")
    s = json.loads(out)
    assert code == 0 and s["config"]["cpus"] == 3 and s["config"]["hugepages"] is False
    assert s["config"]["memory_bytes"] == 1 << 30


def test_same_trace_same_summary(trace):
    path = trace("cpu 1\nsleep 3ms\ncpu 0\n")
    a = run("run", path, "--json", "-", "-q")[1]
    b = run("run", path, "--json", "-", "-q")[1]
    assert json.loads(a) == json.loads(b)


def test_strace_pid_selects_one_thread_and_reader_stats_are_reported():
    path = "tests/fixtures/strace/python_threads.strace"
    pids = {line.split()[0] for line in open(path) if line[:1].isdigit()}
    assert len(pids) > 1
    code, out, _ = run("run", path, "--json", "-", "-q")
    everything = json.loads(out)["trace_reader"]
    first = min(pids, key=int)
    code, out, _ = run("run", path, "--pid", first, "--json", "-", "-q")
    assert code == 0
    one = json.loads(out)["trace_reader"]
    assert 0 < one["calls"] < everything["calls"]


def test_pid_on_a_format_without_pids(trace):
    code, _, err = run("run", trace("sleep 1s\n"), "--pid", "3")
    assert code == 2 and "--pid" in err


def test_bad_option_value_names_the_option(trace):
    code, _, err = run("run", trace("sleep 1s\n"), "--memory", "1P")
    assert code == 2 and err.startswith("mmsim: error: --memory: ")


def test_bad_subsystem_option_values_name_the_option(trace):
    for option in ("--arc-size", "--block-size"):
        code, _, err = run("run", trace("sleep 1s\n"), option, "abc")
        assert code == 2 and err == f"mmsim: error: {option}: bad size 'abc'\n"


def test_bad_subsystem_value_in_yaml_names_file_line_and_key(tmp_path, trace):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory: 1G\ncache_policy: arc\narc_size: abc\n")
    code, _, err = run("run", trace("sleep 1s\n"), "--config", str(cfg))
    assert code == 2 and err == f"mmsim: error: {cfg}:3: arc_size: bad size 'abc'\n"


@pytest.mark.parametrize("text", [
    "malloc a 1M\nsleep 18446744073709551615ns\nfree a\n",  # 2^64 - 1 ns
    "create /f 8M\nread /f 0 8M\nwrite /f 0 1M\nsleep 94608000s\nread /f 0 1M\n",  # 3 years
    "mmap a 64M\ntouch a 0 64M\n@18446744073709551615ns sleep 0\n",
])
def test_an_absurd_simulated_time_costs_its_events_not_its_length(tmp_path, text):
    """Simulated time jumps over periods where no kernel thread has work (the ARC's reclaim
    thread at rest, the txg sync with nothing dirty, the balloon at its target): a sleep of
    years ends at once (it took hours tick by tick)."""
    import subprocess
    import sys

    p = tmp_path / "t.trace"
    p.write_text("# mmsim-trace v1\n" + text)
    res = subprocess.run([sys.executable, "-m", "mmsim", "run", str(p), "--json", "-", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["time_ns"] >= 94608000 * 10**9


def test_fail_on_app_errors_fails_the_run_for_ci(trace):
    """Application errors are counted and the run succeeds, unless the user asks CI to fail."""
    buggy = trace("malloc a 1K\nfree a\nfree a\n")
    code, out, err = run("run", buggy, "-q")
    assert code == 0
    code, out, err = run("run", buggy, "-q", "--fail-on", "app-errors")
    assert code == 1 and err.endswith(": 1 application errors (--fail-on app-errors)\n"), err
    code, _, err = run("run", trace("malloc a 1K\nfree a\n"), "-q", "--fail-on", "app-errors")
    assert code == 0, err
