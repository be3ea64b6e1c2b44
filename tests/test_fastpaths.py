"""The compiled fast paths (setup.py's extensions) and their pure-Python twins.

A user relies on: pip builds the C fast paths from the repository on a machine with a compiler
(CI sets MMSIM_REQUIRE_C=1, so a build that silently fell back to pure Python fails here), and
MMSIM_PURE_PYTHON=1 runs mmsim without any of them, with the same results. Each fast path's own
tests compare it with its twin record for record; these check the switch and the summary of
whole runs through the command.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
#: every extension setup.py declares, by its import name
EXTENSIONS = re.findall(r'Extension\(\s*"([\w.]+)"', (ROOT / "setup.py").read_text())


def _built(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_setup_declares_the_fast_paths() -> None:
    assert "mmsim.trace._mtrace_c" in EXTENSIONS and "mmsim.kernel._mallocs_c" in EXTENSIONS


@pytest.mark.parametrize("name", EXTENSIONS)
def test_each_fast_path_is_built_where_ci_requires_it(name: str) -> None:
    if not _built(name):
        if os.environ.get("MMSIM_REQUIRE_C"):
            pytest.fail(f"{name} is not built (MMSIM_REQUIRE_C=1: pip should have compiled it)")
        pytest.skip(f"{name} is not built on this machine: the pure-Python twin runs")


def _run(trace: Path, pure: bool) -> tuple[dict, list[str]]:
    """``mmsim run TRACE --json -`` in a new process; its summary and the fast paths it loaded."""
    env = {k: v for k, v in os.environ.items() if k != "MMSIM_PURE_PYTHON"}
    if pure:
        env["MMSIM_PURE_PYTHON"] = "1"
    code = ("import json, sys\n"
            "from mmsim.cli import main\n"
            "try:\n"
            "    main(['run', sys.argv[1], '--json', sys.argv[2], '-q'])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            f"print(json.dumps(sorted(set(sys.modules) & set({EXTENSIONS!r}))))\n")
    res = subprocess.run([sys.executable, "-c", code, str(trace), "-"], capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    summary, _, loaded = res.stdout.rstrip("\n").rpartition("\n")
    return json.loads(summary), json.loads(loaded)


@pytest.mark.parametrize("trace", ["mtrace/ls.mtrace", "mtrace/bad_frees.mtrace"])
def test_pure_python_gives_the_same_summary_and_loads_no_extension(trace: str) -> None:
    pure, loaded = _run(FIXTURES / trace, pure=True)
    assert loaded == []
    fast, loaded = _run(FIXTURES / trace, pure=False)
    used = {"mmsim.trace._mtrace_c", "mmsim.kernel._mallocs_c",  # an mtrace replay's
            "mmsim.mm._page_ranges_c"}
    assert {n for n in used if _built(n)} <= set(loaded)
    assert pure == fast
