"""When a JVM has a balloon: java.cc's heap sizing (osv-memory.md §9 corrected).

What a user relies on: without -Xmx on a guest of at least 1 GiB - 4 MiB, OSv sizes the heap to
min(free, max_no_reclaim) and only then gives it a balloon; a heap the image sizes has none
unless ``jvm_balloon: true`` asks for one (beyond OSv); heap the JVM committed but never touched
is not guest memory in use (OSv faults the heap in on first write).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest_jvm import EXAMPLES, ROOT, have_javac
from mmsim.balloon.balloon import MIN_RAM
from mmsim.balloon.heap_sizing import size_heap

MIB = 1 << 20
GIB = 1 << 30
HELLO = EXAMPLES / "hello" / "hello.yaml"


def test_no_xmx_on_a_large_enough_guest_sizes_the_heap_to_free_memory() -> None:
    s = size_heap(["-XX:+UseG1GC"], MIN_RAM, 900 * MIB + 12345, 921 * MIB, MIN_RAM)
    assert s.osv_sized and s.auto_heap == 900 * MIB  # whole MiB, rounded down
    assert s.options == ["-XX:+UseG1GC", "-Xmx900M", "-Xms900M"]
    # max_no_reclaim caps it when free memory is above it
    assert size_heap([], 2 * GIB, 1900 * MIB, 1843 * MIB, MIN_RAM).auto_heap == 1843 * MIB


def test_a_guest_under_one_gib_less_4_mib_gets_no_osv_heap() -> None:
    s = size_heap([], MIN_RAM - 4096, 800 * MIB, 900 * MIB, MIN_RAM)
    assert not s.osv_sized and s.options == []


@pytest.mark.parametrize("opt", ["-Xmx512m", "-mx512m"])
def test_a_user_maximum_is_a_declaration_of_intent(opt: str) -> None:
    s = size_heap([opt, "-Xms64m"], 2 * GIB, GIB, GIB, MIN_RAM)
    assert not s.osv_sized and s.options == [opt, "-Xms64m"]


@pytest.mark.parametrize("opt", ["-Xms64m", "-ms64m"])
def test_a_user_minimum_is_kept_and_only_the_maximum_added(opt: str) -> None:
    s = size_heap([opt], 2 * GIB, GIB, GIB, MIN_RAM)
    assert s.osv_sized and s.options == [opt, "-Xmx1024M"]


def _boot(manifest: Path, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(manifest), "--json", "-",
                          *args], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def _user_heap_image(tmp_path: Path, extra: str = "") -> Path:
    """The Hello image with -Xmx512m (its classes as built by the Hello image)."""
    p = tmp_path / "user.yaml"
    p.write_text(f"cmdline: /java.so -Xmx512m -cp /app Hello\n"
                 f"files:\n  /app: {HELLO.parent / 'build' / 'classes'}\n"
                 f"memory: 1G\ncpus: 1\n{extra}")
    return p


@pytest.mark.skipif(not have_javac(), reason="needs a JDK")
def test_an_image_without_xmx_gets_osv_heap_and_a_balloon_with_untouched_heap_free(
        tmp_path: Path) -> None:
    s = _boot(HELLO)  # no -Xmx, 1G
    jvm, cats = s["jvm"], s["memory"]["categories"]
    assert jvm["heap_sized_by"] == "osv" and s["balloon"]["enabled"]
    xmx = [o for o in jvm["options"] if o.startswith("-Xmx")]
    assert len(xmx) == 1 and f"-Xms{xmx[0][4:]}" in jvm["options"]
    heap = int(xmx[0][4:-1]) * MIB
    assert 800 * MIB <= heap <= s["memory"]["total_bytes"] * 9 // 10
    # the heap is committed in full, but only what the JVM used is resident
    assert jvm["heap_committed_bytes"] > 512 * MIB
    assert cats["jvm_heap"] + cats["balloon"] < 256 * MIB
    assert s["memory"]["free_bytes"] + sum(cats.values()) == s["memory"]["total_bytes"]


@pytest.mark.skipif(not have_javac(), reason="needs a JDK")
def test_a_user_sized_heap_has_a_balloon_only_when_asked(tmp_path: Path) -> None:
    _boot(HELLO, "-q")  # builds the classes the copies below point at
    plain = _boot(_user_heap_image(tmp_path))
    assert plain["jvm"]["heap_sized_by"] == "user" and not plain["balloon"]["enabled"]
    assert "-Xmx512m" in plain["jvm"]["options"]
    assert not any(o.startswith("-Xms") for o in plain["jvm"]["options"])
    forced = _boot(_user_heap_image(tmp_path, "kernel:\n  jvm_balloon: true\n"))
    assert forced["jvm"]["heap_sized_by"] == "user" and forced["balloon"]["enabled"]
    off = _boot(HELLO.parent / "hello.yaml", "--memory", "1020M")  # under 1 GiB - 4 MiB
    assert off["jvm"]["heap_sized_by"] == "user" and not off["balloon"]["enabled"]
