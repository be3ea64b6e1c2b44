"""Traces that can be read only once: pipes, FIFOs, process substitution and stdin (`-`).

Detection and reading both open the trace; such an input is copied once to a temporary file
that both share, so a pipe reads exactly like the file it carries, and errors still name it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from mmsim.trace import TraceError, detect_format, read_trace

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello.trace"
STRACE = ROOT / "tests" / "fixtures" / "strace" / "python_threads.strace"


def _payloads() -> dict[str, tuple[bytes, str]]:
    return {
        "native": (HELLO.read_bytes(), "native"),
        "gz": (gzip.compress(HELLO.read_bytes()), "native"),
        "zst": (zstandard.compress(HELLO.read_bytes()), "native"),
        "strace": (STRACE.read_bytes(), "strace"),
    }


PAYLOADS = _payloads()


def _expected(kind: str) -> list:
    return list(read_trace(STRACE if kind == "strace" else HELLO))


def _feed(fd: int, data: bytes) -> threading.Thread:
    """Write ``data`` to the write end ``fd`` of a pipe from a thread, then close it."""

    def write() -> None:
        with os.fdopen(fd, "wb") as w:
            w.write(data)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Spooled copies go here, so a test can see that none is left behind."""
    d = tmp_path / "spool"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    yield d


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_a_pipe_reads_like_the_file_it_carries(kind: str, spool_dir: Path) -> None:
    data, fmt = PAYLOADS[kind]
    r, w = os.pipe()
    feeder = _feed(w, data)
    try:
        reader = read_trace(f"/dev/fd/{r}")  # auto-detected: detection must not eat lines
        ops = list(reader)
    finally:
        feeder.join(5)
        os.close(r)
    assert ops == _expected(kind)
    if fmt == "strace":
        assert reader.stats.calls > 0  # type: ignore[attr-defined]
    assert list(spool_dir.iterdir()) == []  # the copy is gone once read


def test_a_pipe_with_a_named_format_and_pid(spool_dir: Path) -> None:
    r, w = os.pipe()
    feeder = _feed(w, STRACE.read_bytes())
    pid = int(STRACE.read_text().split()[0])
    try:
        ops = list(read_trace(f"/dev/fd/{r}", "strace", pid=pid))
    finally:
        feeder.join(5)
        os.close(r)
    assert ops == list(read_trace(STRACE, "strace", pid=pid))


def test_errors_in_a_pipe_name_the_pipe_and_its_line(spool_dir: Path) -> None:
    r, w = os.pipe()
    feeder = _feed(w, b"sleep 1s\nmallok a 4K\n")
    name = f"/dev/fd/{r}"
    try:
        with pytest.raises(TraceError) as info:
            list(read_trace(name, "native"))
    finally:
        feeder.join(5)
        os.close(r)
    assert str(info.value).startswith(f"{name}:2: unknown operation 'mallok'")
    assert "spool" not in str(info.value)
    assert list(spool_dir.iterdir()) == []


def test_detect_format_of_a_pipe(spool_dir: Path) -> None:
    r, w = os.pipe()
    feeder = _feed(w, gzip.compress(STRACE.read_bytes()))
    try:
        assert detect_format(f"/dev/fd/{r}") == "strace"
    finally:
        feeder.join(5)
        os.close(r)
    assert list(spool_dir.iterdir()) == []


def _mmsim(*args: str, stdin: bytes | None = None, timeout: float = 60
           ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mmsim", *args], input=stdin, cwd=ROOT,
                          capture_output=True, timeout=timeout, check=False)


@pytest.mark.parametrize("kind", ["native", "gz", "strace"])
def test_a_fifo_fed_by_another_process(kind: str, tmp_path: Path) -> None:
    data, _ = PAYLOADS[kind]
    source = tmp_path / "payload"
    source.write_bytes(data)
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat '{source}' > '{fifo}'"])
    try:
        done = _mmsim("run", str(fifo), "--memory", "512M", "--json", "-", "-q", timeout=30)
    finally:
        writer.wait(10)
    assert done.returncode == 0, done.stderr
    plain = _mmsim("run", str(source), "--memory", "512M", "--json", "-", "-q")
    a, b = json.loads(done.stdout), json.loads(plain.stdout)
    assert a["events"] == b["events"] > 0
    assert a["memory"] == b["memory"] and a.get("trace_reader") == b.get("trace_reader")


@pytest.mark.skipif(not shutil.which("bash"), reason="process substitution needs bash")
@pytest.mark.parametrize(("kind", "producer"), [("native", "gzip -c examples/hello.trace"),
                                                ("strace", f"cat '{STRACE}'")])
def test_process_substitution(kind: str, producer: str) -> None:
    """`mmsim run <(gzip -c hello.trace)` once replayed 0 events with exit 0."""
    cmd = f"'{sys.executable}' -m mmsim run <({producer}) --memory 512M --json - -q"
    done = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["events"] == len(_expected(kind)) > 0
    if kind == "strace":
        assert out["trace_reader"]["calls"] > 0


@pytest.mark.parametrize(("kind", "fmt"), [("native", "native"), ("native", "auto"),
                                           ("gz", "auto"), ("strace", "auto")])
def test_stdin_as_dash(kind: str, fmt: str, tmp_path: Path) -> None:
    data, _ = PAYLOADS[kind]
    source = tmp_path / "payload"
    source.write_bytes(data)
    done = _mmsim("run", "-", "--format", fmt, "--memory", "512M", "--json", "-", "-q",
                  stdin=data)
    assert done.returncode == 0, done.stderr
    plain = json.loads(_mmsim("run", str(source), "--memory", "512M", "--json", "-", "-q").stdout)
    out = json.loads(done.stdout)
    assert out["events"] == plain["events"] > 0
    assert out["memory"] == plain["memory"]
    assert out["trace"] == "-"


def test_stdin_errors_name_dash_and_the_line() -> None:
    done = _mmsim("run", "-", "--format", "native", stdin=b"sleep 1s\nmallok a 4K\n")
    err = done.stderr.decode()
    assert done.returncode == 2
    assert err.startswith("mmsim: error: -:2: unknown operation 'mallok'")
    assert err.count("\n") == 1
    data = zstandard.compress(b"".join(b"malloc h%d 4K\n" % i for i in range(20000)))
    done = _mmsim("run", "-", stdin=data[:3000])
    assert done.returncode == 2
    assert done.stderr.decode() == "mmsim: error: -:1: truncated or corrupt zstd data\n"
