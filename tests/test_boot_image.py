"""`mmsim boot` and `mmsim minmem` on images, with the real JVM.

A user relies on: a Java program runs to completion with its output; what it does wrong
(System.exit, an exception, running out of heap) is reported and never takes the simulator
down; manifest mistakes are one-line errors naming the file and line; minmem's figure is one
at which the image runs and one step below which it does not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_jvm import EXAMPLES, ROOT, java_image, start_host_jvm

from mmsim.image import EXIT_APP, EXIT_OK, ImageError, boot_image, load_manifest

MIB = 1 << 20
HELLO = EXAMPLES / "hello" / "hello.yaml"


@pytest.fixture(scope="session")
def host_jvm():
    """The session's one JVM."""
    return start_host_jvm()


def mmsim(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmsim", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_boot_runs_a_java_program_to_completion_with_its_output() -> None:
    res = mmsim("boot", str(HELLO), "--json", "-")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Hello from Java 17" in res.stderr  # with --json -, the app's output goes to stderr
    s = json.loads(res.stdout)
    assert s["app"]["exit_code"] == 0 and s["jvm"]["exit_code"] == 0
    assert s["jvm"]["heap_max_bytes"] > 0 and s["jvm"]["heap_committed_bytes"] > 0
    cats = s["memory"]["categories"]
    assert cats["jvm_heap"] > 0 and cats["jvm_native"] > 0
    assert s["memory"]["free_bytes"] + sum(cats.values()) == s["memory"]["total_bytes"]
    assert s["arc"]["read_bytes"] > 0  # the class path was read from the image's file system
    without_json = mmsim("boot", str(HELLO), "-q")
    assert without_json.returncode == 0
    assert without_json.stdout.startswith("Hello from Java 17")


BAD = """\
public class Bad {
    public static void main(String[] args) {
        switch (args[0]) {
            case "exit": System.exit(7);
            case "throw": throw new IllegalStateException("broken on purpose");
            case "oom": System.out.println(new byte[1500 << 20].length);
            default: System.out.println("fine");
        }
    }
}
"""


@pytest.mark.parametrize("mode,code,kind", [
    ("exit", 7, "System.exit"),
    ("throw", 1, "java_exception"),
    ("oom", 1, "OutOfMemoryError"),
])
def test_a_failing_application_is_reported_not_fatal(host_jvm, tmp_path: Path, mode: str,
                                                    code: int, kind: str) -> None:
    m = load_manifest(str(java_image(tmp_path, "Bad", BAD, mode)))
    out = boot_image(m)
    assert out.status == EXIT_APP
    s = out.summary
    assert s["jvm"]["exit_code"] == code and s["app"]["exit_code"] == code
    assert s["app_errors"]["by_kind"] == {kind: 1}
    assert s["oom"] is None  # the guest did not run out: the application did
    # the simulator and its JVM go on: the same image runs fine afterwards
    fine = boot_image(load_manifest(str(java_image(tmp_path, "Bad", BAD, "fine"))))
    assert fine.status == EXIT_OK and fine.summary["jvm"]["exit_code"] == 0


def test_a_second_jvm_with_other_options_is_refused_clearly(host_jvm, tmp_path: Path) -> None:
    d = tmp_path / "other"
    d.mkdir()
    (d / "image.yaml").write_text("cmdline: /java.so -Xmx300m -cp /app Hello\nfiles:\n"
                                  f"  /app: {EXAMPLES / 'hello'}\n")
    with pytest.raises(ImageError, match="new process"):
        boot_image(load_manifest(str(d / "image.yaml")))


@pytest.mark.parametrize("text,message", [
    ("cmdline: /java.so -cp /app Hello\nmemroy: 1G\n", "image.yaml:2: unknown key 'memroy'"),
    ("cmdline: /bin/sh\n", "image.yaml:1: cmdline must start with /java.so"),
    ("cmdline: /java.so -Xmx1g Hello\n", "image.yaml:1: cmdline: /java.so needs -cp"),
    ("cmdline: /java.so -cp /app Hello\ncpus: 0\n", "image.yaml:2: 'cpus' must be"),
    ("cmdline: /java.so -cp /app Hello\nkernel:\n  seed: 1\n  arc_size: abc\n",
     "image.yaml:4: arc_size: bad size 'abc'"),
    ("cmdline: /java.so -cp /app Hello\nkernel:\n  jvm_balloon: 3\n",
     "image.yaml:3: jvm_balloon: must be auto, true or false"),
    ("cmdline: /java.so -cp /app Hello\nfiles:\n  app: x\n", "image.yaml:3: files: image path"),
])
def test_manifest_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "image.yaml"
    p.write_text(text)
    with pytest.raises(ImageError) as e:
        load_manifest(str(p))
    assert str(e.value).startswith(str(tmp_path)) and message in str(e.value)


def test_boot_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    p = tmp_path / "image.yaml"
    p.write_text("cmdline: /java.so -cp /app Hello\nfiles:\n  /app: missing\n")
    res = mmsim("boot", str(p))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "image.yaml:2: files: /app: no such host" in res.stderr


def test_minmem_is_consistent() -> None:
    """The image ran at the figure in every trial there (at least --confirm of them) and failed
    for lack of memory one step below it; each trial is a new process. A test-side boot at the
    figure could flake: the real JVM's JIT scratch memory varies by a few MiB between runs."""
    res = mmsim("minmem", str(HELLO), "--low", "64M", "--high", "192M", "--step", "4M",
                "--confirm", "2", "--json", "-", timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    found = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    mib = found["minmem_mib"]
    assert 64 < mib < 192 and res.stdout.strip().endswith(f"{mib} MiB")
    at = [t for t in found["trials"] if t["memory_mib"] == mib]
    below = [t for t in found["trials"] if t["memory_mib"] == mib - 4]
    assert len(at) >= 2 and all(t["ok"] for t in at)
    assert below and not all(t["ok"] for t in below)
    assert any("out of memory" in t["why"] for t in below if not t["ok"])
    # every trial that ran had at least as much memory as some failed one below the figure
    assert all(t["ok"] for t in found["trials"] if t["memory_mib"] > mib)
    # two steps below it never runs: the JVM's variation is smaller than 8 MiB
    far = mmsim("boot", str(HELLO), "--memory", f"{mib - 8}M", "-q")
    assert far.returncode != 0 and "out of memory" in far.stderr


@pytest.mark.skipif(not os.path.exists("/usr/share/java/h2.jar"),
                    reason="H2 is not installed (apt-get install libh2-java)")
def test_h2_from_debian_runs_its_sql_load() -> None:
    res = mmsim("boot", str(EXAMPLES / "h2" / "h2.yaml"), "--json", "-")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "H2Load: 200000 rows, 20000 lookups found, 100 groups" in res.stderr
    s = json.loads(res.stdout)
    assert s["jvm"]["gc_count"] > 0 and s["jvm"]["heap_used_bytes"] > 0


def test_a_native_image_replays_its_trace_beside_the_workload(tmp_path: Path) -> None:
    (tmp_path / "app.trace").write_text("# mmsim-trace v1\nmmap h 64M\ntouch h 0 32M\n")
    (tmp_path / "side.trace").write_text("# mmsim-trace v1\ncreate /d/f 8M\nread /d/f 0 8M\n")
    (tmp_path / "image.yaml").write_text(
        "cmdline: /tools/app.so /traces/app.trace\nfiles:\n  /traces: .\n"
        "workload: side.trace\nmemory: 512M\n")
    out = boot_image(load_manifest(str(tmp_path / "image.yaml")))
    assert out.status == EXIT_OK
    s = out.summary
    assert s["app"]["kind"] == "native" and s["jvm"]["heap_max_bytes"] is None
    assert s["mmap"]["resident_bytes"] >= 32 * MIB
    assert s["arc"]["read_bytes"] == 8 * MIB


@pytest.mark.parametrize("which", ["app", "side"])
def test_a_cpu_the_guest_lacks_is_one_line_naming_the_trace(tmp_path: Path, which: str) -> None:
    """As `mmsim run` says it: exit 2, one line with the trace's file and line."""
    bad = "mmap h 1M\ncpu=9 touch h 0 4K\n"
    good = "mmap g 1M\ntouch g 0 4K\n"
    (tmp_path / "app.trace").write_text("# mmsim-trace v1\n" + (bad if which == "app" else good))
    (tmp_path / "side.trace").write_text("# mmsim-trace v1\n" + (bad if which == "side" else good))
    (tmp_path / "image.yaml").write_text(
        "cmdline: /tools/app.so /traces/app.trace\nfiles:\n  /traces: .\n"
        "workload: side.trace\nmemory: 512M\ncpus: 2\n")
    res = mmsim("boot", str(tmp_path / "image.yaml"), "-q")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert f"{tmp_path / (which + '.trace')}:3: cpu 9 does not exist" in res.stderr, res.stderr


def test_options_the_jvm_would_die_of_are_refused_in_one_line(tmp_path: Path) -> None:
    """HotSpot exit()s the whole process on some options (two collectors): mmsim must say so
    and exit 2, not vanish without a summary."""
    text = HELLO.read_text().replace("/java.so ", "/java.so -XX:+UseG1GC -XX:+UseParallelGC ")
    p = EXAMPLES / "hello" / f"two-gcs-{os.getpid()}.yaml"  # the manifest's files are relative
    p.write_text(text)
    try:
        res = mmsim("boot", str(p), "--json", "-")
    finally:
        p.unlink()
    assert res.returncode == 2, res.stderr[-1000:]
    assert res.stderr.count("\n") == 1
    assert f"{p.name}:3: the JVM refuses" in res.stderr
    assert "Multiple garbage collectors selected" in res.stderr


@pytest.mark.slow
def test_the_example_images_run_and_the_arc_image_moves_memory_through_the_balloon() -> None:
    """examples/images: the allocation-heavy app runs to completion under G1; in the ARC image
    the side workload's file scan inflates balloons (taken from the heap) and the app's own
    heap growth deflates them, the ARC giving memory back; inflation, which OSv does not cap at
    the soft maximum, stops where mmsim's guard keeps 15 % of the heap free."""
    alloc = mmsim("boot", str(EXAMPLES / "alloc" / "alloc.yaml"), "--json", "-")
    assert alloc.returncode == 0, alloc.stderr[-2000:]
    s = json.loads(alloc.stdout)
    assert s["jvm"]["exit_code"] == 0 and s["jvm"]["gc_count"] > 0
    arc = mmsim("boot", str(EXAMPLES / "arc" / "arc.yaml"), "--json", "-")
    assert arc.returncode == 0, arc.stderr[-2000:]
    s = json.loads(arc.stdout)
    b = s["balloon"]
    assert b["inflations"] >= 1 and b["deflations"] >= 1
    assert b["arc_bytes_released"] > 0
    assert 0 < b["peak_bytes"] <= 0.85 * s["jvm"]["heap_max_bytes"]
    m = s["memory"]
    assert m["free_bytes"] + sum(m["categories"].values()) == m["total_bytes"]
