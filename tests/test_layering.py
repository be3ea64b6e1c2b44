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


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "mmsim").with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _front_graph() -> dict[str, set[str]]:
    """The front package's modules (``cli``, ``trace``, ``trace.mtrace``, ...) and the front
    modules each imports, lazy imports too."""
    paths = sorted((ROOT / "mmsim").rglob("*.py"))
    names = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        me = _module_name(path)
        package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            mods: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x, from .x import y
                    base = package.split(".") if package else []
                    base = base[: len(base) - node.level + 1]
                    root = ".".join(base + ([node.module] if node.module else []))
                    mods = [root] + [f"{root}.{a.name}".lstrip(".") for a in node.names]
                elif node.module and node.module.startswith("mmsim"):
                    root = node.module.removeprefix("mmsim").lstrip(".")
                    mods = [root] + [f"{root}.{a.name}".lstrip(".") for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name.removeprefix("mmsim").lstrip(".") for a in node.names
                        if a.name.startswith("mmsim")]
            deps |= {m for m in mods if m in names}
        graph[me] = deps - {me, ""}
    return graph


def test_the_front_has_no_import_cycles() -> None:
    """Not even behind a lazy import: the command group and its subcommands, the recorder and
    the plots, the readers and their package import one way."""
    graph = _front_graph()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node):] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


UNIT_FUNCTIONS = {"parse_size", "parse_duration", "parse_int", "format_size",
                  "format_size_exact", "format_duration"}


def test_sizes_and_durations_have_one_grammar_in_one_place() -> None:
    """kernel/units.py alone defines them; the kernel's public face re-exports parse_size
    (configuration values, the command line and traces all read sizes with it)."""
    defined = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if path.parts[len(ROOT.parts)] in ("tests", "bench", ".venv", "build"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in UNIT_FUNCTIONS:
                defined.append(str(path.relative_to(ROOT)))
    assert set(defined) == {"kernel/units.py"}, defined
    import mmsim.kernel
    from mmsim.kernel import units

    import mmsim.trace

    assert mmsim.kernel.parse_size is units.parse_size
    assert not any(hasattr(mmsim.trace, name) for name in UNIT_FUNCTIONS)
    assert units.parse_size(4096) == units.parse_size("4K") == 4096
    assert units.parse_duration(2) == units.parse_duration("2s") == 2_000_000_000


def test_the_page_cache_uses_the_address_space_only_through_its_mapper_face() -> None:
    """mm/page_cache.py asks the space it maps into only what Mapper declares (OSv's page
    provider face), never its page tables, counters or private helpers."""
    from mmsim.mm.page_cache import Mapper

    face = {n for n in vars(Mapper) if not n.startswith("_")}
    used = set()
    for node in ast.walk(ast.parse((ROOT / "mm" / "page_cache.py").read_text())):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "space") or (
                    isinstance(base, ast.Attribute) and base.attr == "space"):
                used.add(node.attr)
    assert used and used <= face, sorted(used - face)
