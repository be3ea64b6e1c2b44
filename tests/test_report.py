"""`mmsim report`: one self-contained HTML page with the summary's tables and the plots."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from mmsim.cli import main
from mmsim.summary_text import human

TRACE = """# mmsim-trace v1
@1ms create /data/f 8M
@2ms write /data/f 0 8M
@3ms read /data/f 0 4M
@4ms mmap anon 8M
@5ms touch anon 0 6M
@6ms malloc big 1M
@7ms malloc small 100
@8ms free nothing
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"traceback: {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr


class Page(HTMLParser):
    """Tables as lists of rows of cell texts, inline svg elements, and external references."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.svgs = 0
        self.external: list[str] = []
        self.title = ""
        self._cell: list[str] | None = None
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag in ("link", "script", "img", "iframe"):
            self.external.append(tag)
        if tag == "svg":
            self.svgs += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data

    def value(self, key: str) -> str:
        """The cell after the first cell that reads ``key``."""
        for table in self.tables:
            for row in table:
                if row and row[0] == key:
                    return row[1]
        raise AssertionError(f"no row {key!r}")


@pytest.fixture
def run_files(tmp_path):
    trace = tmp_path / "web.trace"
    trace.write_text(TRACE)
    js, tl = str(tmp_path / "web.json"), str(tmp_path / "web.csv")
    code, _, err = run("run", str(trace), "--memory", "512M", "--json", js, "--timeline", tl,
                       "-q")
    assert code == 0, err
    return js, tl


def test_report_has_the_summary_tables_and_inline_plots(run_files, tmp_path):
    js, tl = run_files
    out = str(tmp_path / "r.html")
    code, _, err = run("report", js, tl, "-o", out)
    assert code == 0, err
    text = open(out, encoding="utf-8").read()
    page = Page(text)
    s = json.load(open(js))
    assert "web.trace" in page.title
    assert page.value("operations") == str(s["events"])
    assert page.value("free_bytes") == human(s["memory"]["free_bytes"])
    for cat, size in s["memory"]["categories"].items():
        if size or s["peak"]["categories"][cat]:
            assert page.value(cat) == human(size)
        else:  # nothing in it, at the end or at the peak: left out
            with pytest.raises(AssertionError):
                page.value(cat)
    row = next(r for t in page.tables for r in t if r and r[0] == "anonymous")
    assert row[4] == human(s["peak"]["categories"]["anonymous"])  # beside: at the peak
    assert page.value("peak_used_bytes") == human(s["memory"]["peak_used_bytes"])
    assert page.value("trace line") == str(s["peak"]["line"])
    assert page.value("hits") == str(s["arc"]["hits"])  # the arc section, as a table
    assert page.value("application errors") == "1"  # the free of an unknown handle
    assert page.value("invalid_free") == "1"
    assert page.svgs == 2  # memory over time, and at the end
    assert not page.external  # self-contained: nothing to fetch
    for svg in text.split("<svg")[1:]:  # each plot is well-formed SVG
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")
    assert "Memory by category" in text and "ARC: size, target and hit ratio" in text


def test_report_without_timeline_and_default_name(run_files, tmp_path):
    js, _ = run_files
    code, _, err = run("report", js)
    assert code == 0, err
    out = tmp_path / "web.html"  # RUN.json's name with .html
    assert str(out) in err
    page = Page(out.read_text(encoding="utf-8"))
    assert page.svgs == 1 and "Memory at the end of the run" in out.read_text()


def test_report_is_deterministic(run_files, tmp_path):
    js, tl = run_files
    pages = []
    for name in ("a.html", "b.html"):
        assert run("report", js, tl, "-o", str(tmp_path / name))[0] == 0
        pages.append((tmp_path / name).read_bytes())
    assert pages[0] == pages[1]


def test_report_of_an_out_of_memory_run(tmp_path):
    trace = tmp_path / "oom.trace"
    trace.write_text("mmap a 200M\ntouch a 0 200M\n")
    js = str(tmp_path / "oom.json")
    assert run("run", str(trace), "--memory", "128M", "--json", js, "-q")[0] == 3
    assert run("report", js, "-o", str(tmp_path / "oom.html"))[0] == 0
    text = (tmp_path / "oom.html").read_text()
    assert "<b>Out of memory</b> at line 2 (touch)" in text
    assert Page(text).value("reason") == json.load(open(js))["oom"]["reason"]


@pytest.mark.parametrize("which, content, message", [
    ("run", "[1, 2]", "not an mmsim run summary"),
    ("run", None, "cannot read"),
    ("timeline", "a,b\n1,2\n", "not an mmsim timeline"),
])
def test_bad_inputs_are_one_line(run_files, tmp_path, which, content, message):
    js, tl = run_files
    bad = tmp_path / "bad"
    if content is not None:
        bad.write_text(content)
    args = [str(bad), tl] if which == "run" else [js, str(bad)]
    code, _, err = run("report", *args, "-o", str(tmp_path / "x.html"))
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("args, message", [
    (["--memory", "256M"], "its guest gave the page allocator"),  # another machine
    (["--memory", "512M", "--sample-every", "2"], None),  # the same run, sampled otherwise
])
def test_a_timeline_of_another_run_is_refused(run_files, tmp_path, args, message):
    js, _ = run_files
    other = tmp_path / "other.trace"
    other.write_text(TRACE)
    tl = str(tmp_path / "other.csv")
    assert run("run", str(other), "--timeline", tl, "-q", *args)[0] == 0
    code, _, err = run("report", js, tl, "-o", str(tmp_path / "x.html"))
    if message is None:
        assert code == 0, err
    else:
        assert_one_line_error(code, err, message, "not the timeline of")


def test_a_timeline_of_another_trace_on_the_same_machine_is_refused(run_files, tmp_path):
    js, _ = run_files
    other = tmp_path / "short.trace"
    other.write_text("malloc a 1M\n")
    tl = str(tmp_path / "short.csv")
    assert run("run", str(other), "--memory", "512M", "--timeline", tl, "-q")[0] == 0
    code, _, err = run("report", js, tl, "-o", str(tmp_path / "x.html"))
    assert code == 2 and "it ends after 1 operations" in err, err


def test_report_has_contents_and_folds_what_did_nothing(run_files, tmp_path):
    js, tl = run_files
    out = tmp_path / "r.html"
    assert run("report", js, tl, "-o", str(out))[0] == 0
    text = out.read_text(encoding="utf-8")
    s = json.load(open(js))
    links = re.findall(r'<li><a href="#([^"]+)">', text)
    assert links[:3] == ["run", "memory", "peak"]
    assert all(f'id="{anchor}"' in text for anchor in links)  # every entry leads somewhere
    assert s["jvm"] and '<h2 id="jvm">jvm</h2><details>' in text  # idle: folded away
    assert '<h2 id="arc">arc</h2><table>' in text  # used: open
    classes = s["malloc"]["classes"]
    zero = [c for c, v in classes.items() if not any(v.values())]
    assert zero and f"{len(zero)} rows of zeros left out" in text


def test_report_of_an_image_is_titled_by_the_image(tmp_path):
    summary = {"image": "/srv/apps/web.yaml", "events": 0, "time_ns": 0,
               "memory": {"total_bytes": 1 << 30, "free_bytes": 1 << 29, "used_bytes": 1 << 29,
                          "peak_used_bytes": 1 << 29, "page_table_bytes": 0, "free_runs": 1,
                          "largest_free_run_bytes": 1 << 29, "categories": {"anonymous": 1 << 29}},
               "app_errors": {"total": 0, "by_kind": {}, "examples": []}, "oom": None}
    from mmsim.report import render_report

    assert Page(render_report(summary)).title == "mmsim report: web.yaml"
