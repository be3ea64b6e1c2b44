"""Call sites: who allocated the memory, what was live at the peak and at the end (issue 16).

The summary's figures are checked against an independent reading of real mtrace logs, written
here from the format alone: a dictionary of live pointers, a realloc as its two lines."""

from __future__ import annotations

import gzip
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from mmsim.api import configure, replay
from tests.cli_helpers import run
from tests.helpers import assert_one_line_error

FIXTURES = Path(__file__).parent / "fixtures" / "mtrace"
# single-threaded programs' logs: no pointer is handed out twice while live
LOGS = ["awk.mtrace", "ls.mtrace", "sort.mtrace", "python3.mtrace.gz"]
_RECORD = re.compile(r"(?:@ (?P<site>.*?) )?(?P<op>[-+<>]) (?P<ptr>\S+)(?: (?P<size>\S+))?\s*$")


def _open(path: Path) -> Any:
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _top(items: dict[str, list[int]], key: str = "site") -> list[dict[str, Any]]:
    ranked = sorted(((k, v) for k, v in items.items() if v[0] or key == "allocated"),
                    key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:20]
    return [{"site": k, "blocks": b, "bytes": n} for k, (b, n) in ranked]


def read_sites(path: Path) -> dict[str, Any]:
    """at_peak, at_end, allocated as the issue defines them, and the bytes allocated."""
    live: dict[str, tuple[str, int]] = {}  # pointer -> (site, size)
    per_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    allocated: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    live_bytes = peak = total = 0
    at_peak: dict[str, list[int]] = {}
    old: str | None = None
    with _open(path) as f:
        for line in f:
            m = _RECORD.match(line)
            if m is None:
                continue
            op, ptr, site = m["op"], m["ptr"], m["site"] or "[unknown]"
            if op == "<":
                old = ptr
                continue
            if op == "-" or op == ">":
                gone = live.pop(old if op == ">" else ptr, None)
                old = None
                if gone is not None:
                    per_site[gone[0]][0] -= 1
                    per_site[gone[0]][1] -= gone[1]
                    live_bytes -= gone[1]
            if op in "+>" and ptr != "(nil)":
                size = int(m["size"], 16)
                assert ptr not in live, "a pointer handed out twice: not for this reading"
                live[ptr] = (site, size)
                per_site[site][0] += 1
                per_site[site][1] += size
                allocated[site][0] += 1
                allocated[site][1] += size
                live_bytes += size
                total += size
            if live_bytes > peak:
                peak = live_bytes
                at_peak = {k: list(v) for k, v in per_site.items()}
    at_peak.pop("[unknown]", None)
    per_site.pop("[unknown]", None)
    allocated.pop("[unknown]", None)
    return {"at_peak": _top(at_peak), "at_end": _top(per_site),
            "allocated": _top(allocated, "allocated"), "allocated_bytes": total,
            "live_bytes_peak": peak}


@pytest.mark.parametrize("log", LOGS)
def test_top_sites_at_the_peak_and_at_the_end_are_the_logs(log: str) -> None:
    path = FIXTURES / log
    want = read_sites(path)
    malloc = replay(str(path), configure()).summary["malloc"]
    assert malloc["live_bytes_peak"] == want["live_bytes_peak"]
    assert malloc["allocated_bytes"] == want["allocated_bytes"]
    for view in ("at_peak", "at_end", "allocated"):
        assert malloc["sites"][view] == want[view], view
    assert malloc["sites"]["at_peak"], "every log here has sites live at its peak"


def test_awk_leaks_are_owned() -> None:
    """The blocks awk never freed each have a site, and the top 20 hold most of their bytes."""
    malloc = replay(str(FIXTURES / "awk.mtrace"), configure()).summary["malloc"]
    end = malloc["sites"]["at_end"]
    assert malloc["live_blocks"] == 560
    assert sum(e["bytes"] for e in end) > malloc["live_bytes"] // 2


def test_functions_add_up_the_sites_that_name_them() -> None:
    path = FIXTURES / "python3.mtrace.gz"
    want: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with _open(path) as f:
        for line in f:
            m = _RECORD.match(line)
            if m and m["op"] in "+>" and m["ptr"] != "(nil)" and m["site"]:
                name = re.search(r":\((\w+)[+-][0-9a-f]+\)\[", m["site"])
                if name:
                    want[name[1]][0] += 1
                    want[name[1]][1] += int(m["size"], 16)
    got = replay(str(path), configure()).summary["malloc"]["functions"]["allocated"]
    assert got and got == [{"function": k, "blocks": b, "bytes": n} for k, (b, n) in sorted(
        want.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:20]]


@pytest.mark.parametrize("log", ["python3.mtrace.gz", "awk.mtrace"])
def test_folded_stacks_add_up_to_the_bytes_allocated(log: str, tmp_path: Path) -> None:
    folded = tmp_path / "out.folded"
    path = FIXTURES / log
    code, _, err = run("run", str(path), "-q", "--folded", str(folded))
    assert code == 0, err
    lines = folded.read_text().splitlines()
    assert lines and all(re.fullmatch(r"[^ ;]+(;[^ ;]+)* \d+", ln) for ln in lines), lines[:3]
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in lines) == read_sites(path)["allocated_bytes"]


def test_a_native_trace_names_its_sites_and_keeps_them_through_a_conversion(
        tmp_path: Path) -> None:
    trace = tmp_path / "t.trace"
    trace.write_text("malloc a 64K site=load\nmalloc b 1K site=parse\nrealloc b 8K site=grow\n"
                     "free a\nmalloc c 4K\n")
    sites = replay(str(trace), configure()).summary["malloc"]["sites"]
    assert sites["at_peak"] == [{"site": "load", "blocks": 1, "bytes": 65536},
                                {"site": "grow", "blocks": 1, "bytes": 8192}]
    assert sites["at_end"] == [{"site": "grow", "blocks": 1, "bytes": 8192}]
    assert [e["site"] for e in sites["allocated"]] == ["load", "grow", "parse"]
    folded = tmp_path / "t.folded"
    code, _, err = run("run", str(trace), "-q", "--folded", str(folded))
    assert code == 0, err
    assert folded.read_text().splitlines() == [
        "[unknown] 4096", "grow 8192", "load 65536", "parse 1024"]
    bad = tmp_path / "bad.trace"
    bad.write_text("malloc a 1K site=\n")
    code, _, err = run("run", str(bad))
    assert_one_line_error(code, err, f"{bad}:1: malloc: empty site=")


def test_the_peak_snapshot_says_when_and_what(tmp_path: Path) -> None:
    """massif's peak: the call that raised used memory to its peak, and what held it then."""
    trace = tmp_path / "t.trace"
    trace.write_text("malloc small 1K site=s\n@1s malloc big 64M site=b\n@2s free big\n"
                     "@3s malloc mid 16M site=m\n")
    summary = replay(str(trace), configure()).summary
    peak = summary["peak"]
    assert (peak["line"], peak["op"], peak["time_ns"]) == (2, "malloc", 10**9)
    assert peak["used_bytes"] == sum(peak["categories"].values())
    assert peak["used_bytes"] == summary["memory"]["peak_used_bytes"] == peak["peak_used_bytes"]
    assert peak["categories"]["anonymous"] >= 64 << 20  # a large malloc is an mmap
    assert [s["site"] for s in peak["sites"]] == ["b", "s"]
    json.dumps(summary)  # plain data


def test_a_caller_that_is_not_utf8_is_written_back_as_it_was(tmp_path: Path) -> None:
    """A log whose caller's file name holds a byte that is not UTF-8 (read with --format
    mtrace): the summary, the report and the folded stacks are written, the stacks with the
    log's own bytes."""
    log = tmp_path / "odd.mtrace"
    log.write_bytes(b"= Start\n@ /usr/bin/pr\xffog:[0x1] + 0x55 0x10\n= End\n")
    folded, js = tmp_path / "o.folded", tmp_path / "o.json"
    code, _, err = run("run", str(log), "--format", "mtrace", "--folded", str(folded),
                       "--json", str(js))
    assert code == 0, err
    assert folded.read_bytes() == b"/usr/bin/pr\xffog;[0x1] 16\n"
    assert json.loads(js.read_text())["malloc"]["sites"]["at_end"][0]["bytes"] == 16
    code, _, err = run("report", str(js), "-o", str(tmp_path / "o.html"))
    assert code == 0, err
