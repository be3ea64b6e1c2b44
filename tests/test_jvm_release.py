"""Release in time (issue 13): an application whose live set fits its heap never gets an
OutOfMemoryError because balloons were inflated, on an idle host or a loaded one.

tests/fixtures/images/grow_after: -Xmx1536m on a 2G guest holds 200 MiB while a side workload
reads a 3G file twice (the ARC fills, reserved memory reaches 0, balloons inflate), then grows
its live set to 1100 MiB in 256 KiB arrays. Its collections release the balloons (the ARC
shrinking first), and the JVM would clear a balloon's soft reference before it threw
OutOfMemoryError."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "images" / "grow_after"


def _image(tmp_path: Path) -> Path:
    d = tmp_path / "grow_after"
    shutil.copytree(FIXTURE, d)
    lines = ["# mmsim-trace v1", "create /data/big.bin 3G"]
    for _ in range(2):
        lines += [f"read /data/big.bin {i}M 1M" for i in range(3072)]
    (d / "reads.trace").write_text("\n".join(lines) + "\n")
    return d / "grow_after.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("busy", [0, 2])
def test_an_app_that_grows_after_the_balloons_inflated_never_runs_out_of_heap(tmp_path, busy):
    image = _image(tmp_path)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        res = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(image), "--json", "-"],
                             capture_output=True, text=True, timeout=300)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OutOfMemoryError" not in res.stderr
    assert "GrowAfter: live 1100 MiB" in res.stdout + res.stderr
    s = json.loads(res.stdout)
    assert s["app"]["exit_code"] == 0 and s["app"]["error"] is None
    b = s["balloon"]
    assert b["inflations"] >= 1, "the scan did not make the balloons inflate"
    assert b["deflations"] >= 1, "its collections released no balloon"
