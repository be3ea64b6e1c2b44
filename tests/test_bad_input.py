"""Whatever a user feeds mmsim, every command answers the same way: bad input is one line
naming the file (and line) and exit 2, never a traceback, a hang or a host allocation sized by
the input (issue 15). One table of bad inputs, run against every command that reads them, each
in its own process with a timeout and a 2 GiB address-space limit. (An empty trace is not bad
input: it replays nothing, a boot-only run.)
"""

from __future__ import annotations

import gzip
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT_AS = 2 << 30
TIMEOUT_S = 60


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def _mmsim(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmsim", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=cwd, preexec_fn=_limit)


def _cut(data: bytes) -> bytes:
    """A compressed file cut in the middle, as a copy interrupted."""
    return data[: len(data) // 2]


def _nested_yaml(depth: int) -> str:
    return "memory: 1G\nshrinkers: " + "[" * depth + "]" * depth + "\n"


#: name -> (file name, bytes); each a trace, a configuration or a summary as the command wants
FILES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "binary": ("t.trace", lambda: bytes(range(256)) * 64),
    "nul": ("t.trace", lambda: b"# mmsim-trace v1\nmalloc a 1\x00K\n"),
    "bad_utf8": ("t.trace", lambda: b"# mmsim-trace v1\nmalloc a 1K\nfree \xff\xfe\n"),
    "unknown_op": ("t.trace", lambda: b"# mmsim-trace v1\nmallok a 1K\n"),
    "size_neg": ("t.trace", lambda: b"# mmsim-trace v1\nmalloc a -1\n"),
    "size_2_64": ("t.trace", lambda: b"# mmsim-trace v1\nmalloc a 18446744073709551616\n"),
    "size_1e30": ("t.trace", lambda: b"# mmsim-trace v1\nmalloc a 1e30\n"),
    "truncated_gz": ("t.trace.gz", lambda: _cut(gzip.compress(b"# mmsim-trace v1\n" + b"".join(
        b"malloc h%d %d\n" % (i, (i * 7919) % 65521) for i in range(20000))))),
    "lis_huge_run": ("t.lis", lambda: b"0 18000000000000000000 0 0\n"),
    "long_line": ("t.trace", lambda: b"# mmsim-trace v1\nmalloc a " + b"9" * (10 << 20) + b"\n"),
}

CONFIGS: dict[str, str] = {
    "config_bad_size": "memory: 12Q\n",
    "config_zero": "memory: 0\n",
    "config_negative_cpus": "cpus: -1\n",
    "config_huge": "memory: 18446744073709551616\n",
    "config_unknown_key": "memroy: 1G\n",
    "config_bad_bool": "hugepages: maybe\n",
    "config_bad_duration": "reclaimer_wake_latency: soon\n",
    "config_nested": _nested_yaml(10_000),
    "config_nested_80": _nested_yaml(80),
    "config_not_mapping": "- 1\n- 2\n",
    "config_alias_bomb": "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
}


def _one_line(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mmsim: error: "), res.stderr[-2000:]
    assert all(f in lines[0] for f in fragments), (fragments, lines[0])


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("command", ["run", "mrc"])
def test_a_bad_trace_is_one_line(tmp_path: Path, name: str, command: str) -> None:
    fname, make = FILES[name]
    (tmp_path / fname).write_bytes(make())
    args = ["run", fname, "-q"] if command == "run" else [
        "mrc", fname, "--sizes", "1M:4M:2", "--workers", "1", "-o", "m.csv"]
    _one_line(_mmsim(*args, cwd=tmp_path), fname)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("command", ["run", "boot", "sweep", "fuzz"])
def test_a_bad_configuration_is_one_line(tmp_path: Path, name: str, command: str) -> None:
    (tmp_path / "t.trace").write_text("# mmsim-trace v1\nmalloc a 1K\n")
    text = CONFIGS[name]
    if command == "run":
        (tmp_path / "c.yaml").write_text(text)
        res = _mmsim("run", "t.trace", "--config", "c.yaml", "-q", cwd=tmp_path)
        where = "c.yaml"
    elif command == "boot":  # a manifest's kernel section, or the manifest itself
        body = "".join("  " + ln + "\n" for ln in text.splitlines())
        (tmp_path / "image.yaml").write_text(
            "cmdline: /tools/app.so /t/t.trace\nfiles:\n  /t: .\nkernel:\n" + body)
        res = _mmsim("boot", "image.yaml", "-q", cwd=tmp_path)
        where = "image.yaml"
    elif command == "fuzz":
        (tmp_path / "c.yaml").write_text(text)
        res = _mmsim("fuzz", "--config", "c.yaml", "--examples", "1", cwd=tmp_path)
        where = "c.yaml"
    else:
        (tmp_path / "s.yaml").write_text("traces: [t.trace]\n" + text)
        res = _mmsim("sweep", "s.yaml", "-o", "r.csv", "--workers", "1", cwd=tmp_path)
        where = "s.yaml"
    _one_line(res, where)


@pytest.mark.parametrize("what", ["missing", "directory"])
@pytest.mark.parametrize("command", ["run", "boot", "minmem", "sweep", "mrc", "report",
                                     "compare", "fuzz"])
def test_a_path_that_is_not_a_file_is_one_line(tmp_path: Path, what: str, command: str) -> None:
    name = "nothing.x" if what == "missing" else "adir"
    if what == "directory":
        (tmp_path / name).mkdir()
    args = {"run": ["run", name], "boot": ["boot", name], "minmem": ["minmem", name],
            "sweep": ["sweep", name], "mrc": ["mrc", name, "--sizes", "1M,2M"],
            "report": ["report", name], "compare": ["compare", name, name],
            "fuzz": ["fuzz", "--config", name, "--examples", "1"]}[command]
    _one_line(_mmsim(*args, cwd=tmp_path), name)


@pytest.mark.parametrize("depth", [80, 100_000])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_deeply_nested_summary_is_one_line(tmp_path: Path, depth: int, command: str) -> None:
    (tmp_path / "s.json").write_text('{"memory": {}, "x": ' + "[" * depth + "]" * depth + "}")
    args = ["report", "s.json"] if command == "report" else ["compare", "s.json", "s.json"]
    _one_line(_mmsim(*args, cwd=tmp_path), "s.json", "nested")


@pytest.mark.parametrize("fmt", ["ids", "lis", "mtrace", "native", "strace"])
def test_a_decompression_bomb_without_a_newline_is_refused_at_once(tmp_path: Path,
                                                                    fmt: str) -> None:
    """64 MiB of one endless line in a 6 KB .zst: every text reader stops at its line limit
    (1 MiB), in bounded memory and time, naming the line; the ids and .lis readers ran on
    for minutes, the mtrace reader held the whole line, before."""
    import zstandard

    with open(tmp_path / "bomb.zst", "wb") as f, \
            zstandard.ZstdCompressor(level=1).stream_writer(f) as w:
        for _ in range(64):
            w.write(b"7" * (1 << 20))
    _one_line(_mmsim("run", "bomb.zst", "--format", fmt, "-q", cwd=tmp_path),
              "bomb.zst", "line longer than")


def test_work_sized_by_the_input_is_refused_with_its_limit(tmp_path: Path) -> None:
    """A grid of 1.2 million points, or mrc with a million sizes, planned for minutes and
    gigabytes before the first row: refused at once, the limit named."""
    (tmp_path / "t.trace").write_text("# mmsim-trace v1\nmalloc a 1K\n")
    values = ", ".join(str(i) for i in range(1, 1101))
    (tmp_path / "s.yaml").write_text(
        f"traces: [t.trace]\ngrid:\n  seed: [{values}]\n  disk_latency: [{values}]\n")
    _one_line(_mmsim("sweep", "s.yaml", "-o", "r.csv", cwd=tmp_path), "s.yaml", "at most")
    _one_line(_mmsim("mrc", "t.trace", "--sizes", "1K:1T:1000000", cwd=tmp_path),
              "--sizes", "at most")


def test_an_endless_stream_is_refused_not_copied_without_end(tmp_path: Path) -> None:
    """/dev/zero (one endless line) is read once: its copy stops at the line limit."""
    _one_line(_mmsim("run", "/dev/zero", "-q", cwd=tmp_path), "/dev/zero", "line longer than")


def test_invalid_utf8_in_a_text_trace_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "t.trace").write_bytes(b"# mmsim-trace v1\nmalloc a 1K\nfree \xff\xfe\n")
    _one_line(_mmsim("run", "t.trace", "-q", cwd=tmp_path), "t.trace:3:", "invalid UTF-8")


def test_a_manifests_bad_memory_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "t.trace").write_text("# mmsim-trace v1\nmalloc a 1K\n")
    (tmp_path / "image.yaml").write_text(
        "cmdline: /tools/app.so /t/t.trace\nfiles:\n  /t: .\nmemory: 1\n")
    _one_line(_mmsim("boot", "image.yaml", "-q", cwd=tmp_path), "image.yaml:4:", "memory")


@pytest.mark.parametrize("field, value", [("app_errors", [1, 2]), ("oom", "boom"), ("arc", 5),
                                          ("events", "many"), ("memory.categories", [1])])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_summary_field_of_the_wrong_type_is_named(tmp_path: Path, field: str, value: object,
                                                   command: str) -> None:
    import json

    res = _mmsim("run", str(ROOT / "examples" / "hello.trace"), "--json", "good.json", "-q",
                 cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    s = json.loads((tmp_path / "good.json").read_text())
    where = s
    *parents, last = field.split(".")
    for p in parents:
        where = where[p]
    where[last] = value
    (tmp_path / "bad.json").write_text(json.dumps(s))
    args = ["report", "bad.json", "-o", "r.html"] if command == "report" else [
        "compare", "good.json", "bad.json"]
    _one_line(_mmsim(*args, cwd=tmp_path), "bad.json", f"'{field}'")


@pytest.mark.parametrize("trace", ["examples/hello.trace",
                                   "tests/fixtures/mtrace/python3.mtrace.gz",
                                   "tests/fixtures/strace/python_threads.strace"])
def test_the_same_replay_gives_the_same_summary_in_another_process_on_a_busy_host(
        tmp_path: Path, trace: str) -> None:
    """Determinism across processes and host load: byte for byte."""
    outs = []
    for busy in (0, 2):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            res = _mmsim("run", str(ROOT / trace), "--memory", "512M", "--json", "-", "-q",
                         cwd=tmp_path)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        assert res.returncode in (0, 3), res.stderr
        outs.append(res.stdout)
    assert outs[0] == outs[1]


def test_an_endless_line_in_a_plain_mtrace_log_is_refused_before_it_is_read(
        tmp_path: Path) -> None:
    """The plain-text fast path reads whole lines: a 40 MiB line is found first, cheaply."""
    (tmp_path / "t.mtrace").write_bytes(b"= Start\n@ x:(f)[0x1] + 0x10 0x20\n"
                                        + b"7" * (40 << 20) + b"\n")
    _one_line(_mmsim("run", "t.mtrace", "--format", "mtrace", "-q", cwd=tmp_path),
              "t.mtrace:3:", "line longer than")


def test_a_jvm_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    """Under a 2 GiB address-space limit HotSpot cannot reserve its spaces: mmsim says so in one
    line and exits 2 (it died with exit 1 and HotSpot's report on stdout)."""
    import shutil

    if shutil.which("javac") is None:
        pytest.skip("needs a JDK")
    hello = tmp_path / "hello"
    shutil.copytree(ROOT / "examples" / "images" / "hello", hello,
                    ignore=shutil.ignore_patterns("build"))
    # built without the limit (javac is a JVM too): what fails under it is the guest's JVM
    subprocess.run(["javac", "-d", "build/classes", "Hello.java"], cwd=hello, check=True)
    (hello / "hello.yaml").write_text("\n".join(
        ln for ln in (hello / "hello.yaml").read_text().splitlines()
        if not ln.startswith("build:")) + "\n")
    res = _mmsim("boot", str(hello / "hello.yaml"), "-q", cwd=tmp_path)
    _one_line(res, "hello.yaml", "the JVM refuses")
    assert not res.stdout.strip(), res.stdout[-2000:]
