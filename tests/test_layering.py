"""The layering the code base promises (README, "Layout"), checked on the imports themselves.

mm/ knows nothing of the file systems, the balloon, the drivers, the shrinkers, the kernel or
the front; no subsystem imports the front (the `mmsim` command's own modules); every import of
a subsystem goes through the one `mmsim.` namespace.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBSYSTEMS = ("mm", "shrinker", "balloon", "kernel", "fs", "drivers")
FRONT = {p.stem for p in (ROOT / "mmsim").glob("*.py")} | {"trace"}


def _imports(folder: str) -> list[tuple[str, str]]:
    """(file, imported module) for every import in ``folder``'s Python files."""
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                out += [(str(path.relative_to(ROOT)), node.module)]
                if node.module == "mmsim":
                    out += [(str(path.relative_to(ROOT)), f"mmsim.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                out += [(str(path.relative_to(ROOT)), a.name) for a in node.names]
    return out


def _subsystem(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mmsim" and len(parts) > 1 else None


@pytest.mark.parametrize("folder", [*SUBSYSTEMS, "mmsim", "tests", "bench"])
def test_subsystems_are_imported_through_the_mmsim_namespace(folder: str) -> None:
    bare = [(f, m) for f, m in _imports(folder) if m.split(".")[0] in SUBSYSTEMS]
    assert not bare, bare


def test_mm_knows_nothing_of_the_subsystems_above_it() -> None:
    above = {"shrinker", "balloon", "kernel", "fs", "drivers"} | FRONT
    bad = [(f, m) for f, m in _imports("mm") if _subsystem(m) in above]
    assert not bad, bad


@pytest.mark.parametrize("folder", SUBSYSTEMS)
def test_no_subsystem_imports_the_front(folder: str) -> None:
    bad = [(f, m) for f, m in _imports(folder) if _subsystem(m) in FRONT]
    assert not bad, bad
