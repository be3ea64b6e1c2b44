"""The readable summary: a headline first, human units, idle subsystems left out, 100 columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmsim.api import configure, replay
from mmsim.summary_text import WIDTH, format_summary, human_time, value_text
from tests.cli_helpers import run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hello() -> dict:
    return replay(str(ROOT / "examples" / "hello.trace"), configure()).summary


def test_the_headline_says_peak_oom_hit_ratio_and_errors_first(hello: dict) -> None:
    lines = format_summary(hello).splitlines()
    assert lines[0].startswith("trace ") and "37 events" in lines[0]
    head = lines[1:6]
    assert head[0].startswith("  peak      319.56 MiB used at 500 ms (line 42, sleep): "
                              "virtio_balloon 256.00 MiB")
    assert [line.split()[0] for line in head] == ["peak", "now", "OOM", "hit", "errors"]
    assert "42.9 % (12 of 28 lookups, arc)" in head[3]


def test_units_people_read_and_no_raw_figures(hello: dict) -> None:
    text = format_summary(hello)
    for raw in ("0.42857142857142855", "busy_ns", "5950000", "524288000", "True", "None"):
        assert raw not in text
    assert "busy                            5.950 ms" in text
    assert "500.00 MiB/s" in text and "42.9 %" in text


def test_idle_subsystems_are_left_out_of_the_text_but_not_the_json(hello: dict) -> None:
    text = format_summary(hello).splitlines()
    sections = [line for line in text if line and not line[0].isspace()]
    assert "jvm" not in sections and "balloon" not in sections and "shrinker" not in sections
    assert {"malloc", "arc", "disk", "mmap"} <= set(sections)
    assert text[-1].startswith("(idle: shrinker, balloon, jvm;")
    assert hello["jvm"] is not None and "shrinker" in hello  # --json keeps every figure


@pytest.mark.parametrize("trace", ["examples/hello.trace", "tests/fixtures/mtrace/python3.mtrace.gz",
                                   "tests/fixtures/mtrace/bad_frees.mtrace"])
def test_every_line_fits_in_100_columns(trace: str) -> None:
    code, out, _ = run("run", str(ROOT / trace))
    assert code == 0
    assert max(map(len, out.splitlines())) <= WIDTH
    assert "call sites" in out or "hello" in trace


def test_app_errors_and_oom_are_in_the_headline(tmp_path: Path) -> None:
    t = tmp_path / "t.trace"
    t.write_text("malloc a 1K\nfree a\nfree a\nmalloc b 1G\ntouch b 0 1G\n")
    code, out, err = run("run", str(t), "--memory", "256M")
    assert code == 3
    head = out.splitlines()[:6]
    assert any(line.startswith("  OOM       at line 4 (malloc)") for line in head), head
    assert any(line.startswith("  errors    1 application errors: double_free 1")
               for line in head), head


def test_value_units() -> None:
    assert value_text("hit_ratio", 0.5) == "50.0 %"
    assert value_text("operations", 8) == "8"  # a word that holds "ratio" is no ratio
    assert value_text("bandwidth_bytes_per_s", 1 << 20) == "1.00 MiB/s"
    assert value_text("busy_ns", 2_500_000_000) == "2.500 s"
    assert value_text("gc_time_ms", 12) == "12 ms"
    assert value_text("live_bytes_peak", 2048) == "2.00 KiB"
    assert value_text("calls", 1234567) == "1,234,567"
    assert value_text("active", False) is None and value_text("x", None) is None
    assert human_time(0) == "0 s" and human_time(1500) == "1.500 µs"
    json.dumps(value_text("x", 1))
