"""Simulated time while a JVM application runs follows the application's own progress (the
bytes its threads allocate, ``jvm_alloc_rate``), not the host's wall clock.

A user relies on: the side workload never gets ahead of the application's simulated time, an
application that has finished lets the rest of the workload run, and an image with a real JVM
shows the same balloon moves on an idle host and on a loaded one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest_jvm import EXAMPLES, ROOT
from mmsim.kernel import ConfigError, Kernel, load_config
from mmsim.kernel.sys_jvm import AppClock

from mmsim.image import replay_paced
from mmsim.trace import Op

MS = 1_000_000
GIB = 1 << 30


def _kernel() -> Kernel:
    import mmsim.kernel.sys_jvm  # noqa: F401  (its config keys)

    return Kernel(load_config(None, {"memory": "1G", "cpus": 1}))


def test_the_workload_goes_no_further_than_the_apps_simulated_time() -> None:
    k = _kernel()
    clock = AppClock(k.clock_ns, GIB)  # 1 GiB per simulated second: 1 MiB ~ 0.98 ms
    ops = iter([Op("sleep", i, duration_ns=10 * MS) for i in range(10)])
    started: list[int] = []

    def after() -> None:
        started.append(k.clock_ns)

    t0 = k.clock_ns
    # nothing allocated yet: the clock is at the app's time, so one operation may start
    assert replay_paced(k, ops, clock, after)
    assert k.clock_ns == t0 + 10 * MS and len(started) == 1
    # 25 MiB allocated: ~24.4 ms of app time; operations start at +10 and +20 ms, not +30
    clock.update(25 << 20)
    assert replay_paced(k, ops, clock, after)
    assert k.clock_ns == t0 + 30 * MS and len(started) == 3
    assert not clock.lets(k.clock_ns)
    # an app that allocates nothing (it sleeps, it waits) holds the workload where it is
    clock.update(25 << 20)
    assert replay_paced(k, ops, clock, after) and len(started) == 3
    # the app has finished: the rest of the workload runs
    clock.free = True
    assert not replay_paced(k, ops, clock, after)
    assert len(started) == 10 and k.clock_ns == t0 + 100 * MS


def test_the_app_clock_counts_allocated_bytes_at_the_configured_rate() -> None:
    clock = AppClock(5 * MS, 512 << 20)
    assert clock.now_ns == 5 * MS
    assert clock.update(256 << 20) == 5 * MS + 500 * MS
    assert clock.update(100) == 5 * MS + 500 * MS  # never goes back
    clock.restart(1000 * MS, 1 << 30)  # the app starts now, having allocated 1 GiB before
    assert clock.update(1 << 30) == 1000 * MS
    assert clock.update((1 << 30) + (512 << 20)) == 2000 * MS
    with pytest.raises(ValueError):
        AppClock(0, 0)


@pytest.mark.parametrize("value", ["abc", "0", -5])
def test_jvm_alloc_rate_must_be_a_positive_size(value: object) -> None:
    import mmsim.kernel.sys_jvm  # noqa: F401

    with pytest.raises(ConfigError, match="jvm.alloc.rate"):
        load_config(None, {"jvm_alloc_rate": value})
    assert load_config(None, {"jvm_alloc_rate": "512M"}).extra["jvm_alloc_rate"] == "512M"


def _arc_moves() -> dict[str, int]:
    res = subprocess.run([sys.executable, "-m", "mmsim", "boot",
                          str(EXAMPLES / "arc" / "arc.yaml"), "--json", "-"],
                         capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    b = json.loads(res.stdout)["balloon"]
    return {k: b[k] for k in ("inflations", "deflations")}


@pytest.mark.slow
def test_the_arc_image_makes_the_same_balloon_moves_on_a_loaded_host() -> None:
    """The app's progress, not the wall clock, paces the scan: a busy process beside the
    simulator slows both. The balloon moves as it does on an idle host, within one balloon:
    the real collector's own decisions still make about one boot in eight inflate and deflate
    one balloon fewer (docs/jvm.md); the wall clock made loaded boots give 3/0, 1/0 and 0/0
    where idle ones gave 3/3."""
    idle = _arc_moves()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = _arc_moves()
    finally:
        busy.kill()
        busy.wait()
    for moves in (idle, loaded):
        assert moves["inflations"] >= 1 and moves["deflations"] >= 1, (idle, loaded)
        assert abs(moves["inflations"] - moves["deflations"]) <= 1, (idle, loaded)
    assert abs(loaded["inflations"] - idle["inflations"]) <= 1, (idle, loaded)
    assert abs(loaded["deflations"] - idle["deflations"]) <= 1, (idle, loaded)


SHORT_MAINS = """
import sys
sys.path.insert(0, {root!r})
from mmsim.image import boot_image, load_manifest
m = load_manifest({manifest!r})
for i in range({n}):
    out = boot_image(m)
    assert out.status == 0 and out.summary["arc"]["read_bytes"] >= 64 << 20, out.message
print("ok")
"""


def test_apps_that_end_at_once_beside_a_workload_never_hang(tmp_path) -> None:
    """main() runs on a Java thread of its own, so pausing the application can never leave
    Python's lock with a suspended thread: when main() ran on a Python thread, a suspension
    landing as it returned deadlocked the process (a CI run hung once on such boots). That race
    is too rare to reproduce on demand (150 boots did not); this runs the path 60 times."""
    from conftest_jvm import have_javac, java_image

    if not have_javac():
        pytest.skip("needs a JDK")
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "reads.trace").write_text(
        "# mmsim-trace v1\ncreate /d 64M\n" + "".join(f"read /d {i}M 1M\n" for i in range(64)))
    manifest = java_image(tmp_path, "Quick", """\
        public class Quick {
            public static void main(String[] args) { byte[] b = new byte[1 << 20]; }
        }
        """, extra="workload: ../quick/reads.trace\n")
    script = SHORT_MAINS.format(root=str(ROOT), manifest=str(manifest), n=60)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=240, cwd=ROOT)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
