"""The replay API (mmsim/api.py, docs/api.md) as a script or a notebook uses it.

What a user relies on: replay() gives the summary `mmsim run --json` prints, byte for byte; the
timeline as rows a DataFrame takes; running out of memory is a result with exit code 3; every
failure they can cause is an MmsimError with one line and the command's exit code; observers see
the kernel after each operation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run

from mmsim.api import (
    EXIT_BAD_INPUT,
    EXIT_INVARIANT,
    EXIT_OOM,
    InputError,
    MmsimError,
    configure,
    replay,
)

ROOT = Path(__file__).resolve().parent.parent
HELLO = str(ROOT / "examples" / "hello.trace")
MTRACE = str(ROOT / "tests" / "fixtures" / "mtrace" / "ls.mtrace")


def _write(tmp_path: Path, text: str, name: str = "t.trace") -> str:
    p = tmp_path / name
    p.write_text("# mmsim-trace v1\n" + text)
    return str(p)


@pytest.mark.parametrize("trace", [HELLO, MTRACE])
def test_replay_gives_the_summary_mmsim_run_prints(trace: str) -> None:
    code, out, err = run("run", trace, "--memory", "512M", "--json", "-", "-q")
    assert code == 0, err
    result = replay(trace, memory="512M")
    assert json.dumps(result.summary, indent=2) + "\n" == out
    assert result.exit_code == 0 and result.oom is None


def test_the_timeline_comes_as_rows_a_dataframe_takes() -> None:
    result = replay(HELLO, memory="512M", timeline=True)
    rows = result.timeline
    assert len(rows) >= 2
    times = [r["time_s"] for r in rows]
    assert times == sorted(times)
    assert all(r["free_bytes"] + sum(v for k, v in r.items() if k.endswith("_bytes")
                                     and k not in ("free_bytes", "total_bytes"))
               == r["total_bytes"] for r in rows)
    assert set(rows[0]) == set(rows[-1])  # one set of columns
    assert rows[-1]["free_bytes"] == result.summary["memory"]["free_bytes"]
    assert replay(HELLO, memory="512M").timeline == []  # only when asked


def test_out_of_memory_is_a_result(tmp_path: Path) -> None:
    trace = _write(tmp_path, "mmap a 1G\ntouch a 0 1G\n")
    result = replay(trace, memory="256M")
    assert result.exit_code == EXIT_OOM
    assert result.oom is not None and result.oom["line"] == 3
    code, _out, err = run("run", trace, "--memory", "256M", "-q")
    assert code == EXIT_OOM and "out of memory" in err


@pytest.mark.parametrize("text, settings, what", [
    ("mallok 1 2\n", {}, ":2: unknown operation 'mallok'"),
    ("cpu=9 mmap a 1M\n", {"cpus": 2}, ":2: cpu 9 does not exist"),
    ("mmap a 1M\n", {"memory": "12X"}, "memory"),
])
def test_every_failure_is_one_line_with_the_commands_exit_code(
        tmp_path: Path, text: str, settings: dict, what: str) -> None:
    trace = _write(tmp_path, text, "bad\nname.trace")
    with pytest.raises(MmsimError) as e:
        replay(trace, settings=settings)
    assert isinstance(e.value, InputError) and e.value.exit_code == EXIT_BAD_INPUT
    assert "\n" not in str(e.value) and what in str(e.value)
    args = [f"--{k}={v}" for k, v in settings.items()]
    code, _out, err = run("run", trace, *args, "-q")
    assert code == EXIT_BAD_INPUT and err == f"mmsim: error: {e.value}\n"


def test_observers_see_the_kernel_after_each_operation(tmp_path: Path) -> None:
    trace = _write(tmp_path, "mmap a 8M\ntouch a 0 2M\ntouch a 2M 2M\nmunmap a\n")
    seen: list[int] = []
    replay(trace, memory="256M", observers=[lambda k: seen.append(k.free_bytes)])
    assert len(seen) == 4
    assert seen[1] > seen[2] and seen[3] > seen[2]  # touching takes pages, munmap gives back


def test_a_broken_invariant_under_check_exits_1(tmp_path: Path, monkeypatch) -> None:
    from mmsim.kernel import invariants

    def broken(kernel, *a):
        raise AssertionError("pages lost")

    monkeypatch.setattr(invariants, "check_kernel", broken)
    trace = _write(tmp_path, "mmap a 1M\n")
    with pytest.raises(MmsimError) as e:
        replay(trace, check=True)
    assert e.value.exit_code == EXIT_INVARIANT and "invariant broken: pages lost" in str(e.value)


def test_configure_then_replay_with_more_settings() -> None:
    cfg = configure(None, memory="1G", cpus=3)
    s = replay(HELLO, cfg, hugepages=False, cpus=4).summary
    assert s["config"]["memory_bytes"] == 1 << 30 and s["config"]["cpus"] == 4
    assert s["config"]["hugepages"] is False


def test_observers_see_every_call_of_a_batch() -> None:
    """An mtrace log is replayed in batches of calls; observers still see each call, run by
    the kernel with its events counted as they are."""
    seen: list[int] = []
    result = replay(MTRACE, memory="512M", observers=[lambda k: seen.append(k.events)])
    assert seen == list(range(1, result.summary["events"] + 1))


def test_an_out_of_memory_report_stays_on_its_lines_whatever_the_file_name(tmp_path) -> None:
    trace = _write(tmp_path, "mmap a 1G\ntouch a 0 1G\n", "bad\nname.trace")
    code, _out, err = run("run", trace, "--memory", "256M", "-q")
    assert code == EXIT_OOM
    assert all(line.startswith("mmsim: ") for line in err.splitlines()), err


def test_a_replay_keeps_the_booted_guest_out_of_the_collectors_passes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest booted before a replay is frozen (gc.freeze) while it runs, and thawed after
    it; a process that froze objects itself keeps its own freeze (the replay neither freezes
    nor thaws: frozen objects may still die in it, so their count would not tell)."""
    import gc

    from mmsim.api import boot, replay_ops
    from mmsim.trace import read_trace

    seen: list[int] = []
    kernel = boot(configure(memory="512M"))
    replay_ops(kernel, read_trace(MTRACE), MTRACE, observers=[lambda k: seen.append(
        gc.get_freeze_count())])
    assert seen and min(seen) > 0, "nothing was frozen during the replay"
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        calls: list[str] = []
        monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
        monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
        replay_ops(boot(configure(memory="512M")), read_trace(MTRACE), MTRACE)
        assert calls == []
    finally:
        monkeypatch.undo()
        gc.unfreeze()
