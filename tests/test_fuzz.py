"""`mmsim fuzz` finds a broken invariant and prints a trace that replays the failure."""

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import settings
from mmsim.kernel import KernelConfig
from mmsim.mm.page_pool import PagePool
from mmsim.mm.slab import Malloc

from mmsim.cli import main
from mmsim.fuzz import fuzz

#: the loaded hypothesis profile's bounds (tests/conftest.py: `ci` under CI), and short runs:
#: a found bug is shrunk by replaying it hundreds of times, each run costing its steps
BOUNDS = ["--examples", str(settings().max_examples), "--steps", "20"]


def test_invariants_hold_on_a_sound_kernel():
    result = fuzz(KernelConfig(memory=128 << 20, cpus=2), examples=8, steps=30, seed=1)
    assert result.ok, result.trace


@pytest.mark.slow
def test_a_leak_is_found_and_the_trace_replays_it(monkeypatch, tmp_path):
    real_free_pages = PagePool.free_pages

    def leaky(self, extents, cpu=0):  # loses the last page of any multi-page free
        if sum(n for _, n in extents) > 1:
            start, n = extents[-1]
            extents = [*extents[:-1], (start, n - 1)] if n > 1 else extents[:-1]
        return real_free_pages(self, extents, cpu)

    monkeypatch.setattr(PagePool, "free_pages", leaky)
    out = tmp_path / "cex.trace"
    runner = CliRunner()
    config = tmp_path / "guest.yaml"
    config.write_text("cpus: 3\n")  # and fuzz's own default memory, 256M (run's is 2G)
    result = runner.invoke(main, ["fuzz", "--config", str(config), *BOUNDS,
                                  "--seed", "3", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "invariant broken" in result.stderr
    trace = out.read_text()
    assert trace.startswith("# mmsim-trace v1")
    assert len(trace.splitlines()) < 12  # shrunk to a handful of operations
    # the hint is a command that reproduces the failure as it is, options and all
    hint = shlex.split(result.stderr.split("replay it with '")[1].split("'")[0])
    assert hint[:3] == ["mmsim", "run", str(out)]
    assert hint[hint.index("--memory") + 1] == "256M" and hint[hint.index("--cpus") + 1] == "3"
    replay = runner.invoke(main, [*hint[1:], "-q"])
    assert replay.exit_code == 1 and "invariant broken" in replay.stderr
    monkeypatch.setattr(PagePool, "free_pages", real_free_pages)
    clean = runner.invoke(main, [*hint[1:], "-q"])
    assert clean.exit_code in (0, 3) and "invariant" not in clean.stderr, clean.stderr


@pytest.mark.slow
def test_a_pool_object_handed_out_twice_is_found_and_the_trace_replays_it(monkeypatch, tmp_path):
    real_malloc = Malloc.malloc

    def twice(self, size, cpu=0):  # every pool object goes to two callers in a row
        last = self.__dict__.pop("_handed_once", None)
        if last is not None and size <= 1024:
            return last
        addr = real_malloc(self, size, cpu)
        if size <= 1024:
            self._handed_once = addr
        return addr

    monkeypatch.setattr(Malloc, "malloc", twice)
    out = tmp_path / "cex.trace"
    runner = CliRunner()
    result = runner.invoke(main, ["fuzz", "--memory", "128M", *BOUNDS,
                                  "--seed", "1", "-o", str(out)])
    assert result.exit_code == 1, result.output
    broken = result.stderr.splitlines()[0]
    assert broken.startswith("fuzz: invariant broken: AssertionError: "), broken
    assert "overlap" in broken or "not allocated" in broken, broken  # the same object twice
    trace = out.read_text()
    assert trace.startswith("# mmsim-trace v1")
    assert 3 <= len(trace.splitlines()) < 6  # two calls that get the same object, or three
    replay = runner.invoke(main, ["run", str(out), "--memory", "128M", "--check", "-q"])
    assert replay.exit_code == 1, replay.stderr
    assert broken.split("AssertionError: ")[1] in replay.stderr, replay.stderr
    monkeypatch.setattr(Malloc, "malloc", real_malloc)
    clean = runner.invoke(main, ["run", str(out), "--memory", "128M", "--check", "-q"])
    assert clean.exit_code == 0, clean.stderr


def test_hypothesis_is_a_runtime_dependency():
    """`mmsim fuzz` is a documented command: a plain install must be able to run it."""
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    runtime = text.split("dependencies = [", 1)[1].split("]", 1)[0]  # [project] dependencies
    assert re.search(r'^\s*"hypothesis[><=]', runtime, re.M), runtime


def test_a_bad_configuration_is_an_input_error_before_fuzzing(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("shrinkers: [bogus]\n")
    result = CliRunner().invoke(main, ["fuzz", "--config", str(config), "--examples", "2"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""  # no counterexample
    assert result.stderr.startswith("mmsim: error: cannot boot: shrinker 'bogus'")
    assert len(result.stderr.splitlines()) == 1


def test_the_fuzz_tries_both_sides_of_the_real_mmap_threshold():
    """§4's formula puts the threshold at 2,092,993 (its figure, 2,093,057, is a typo)."""
    from mmsim.mm.slab import MAPPED, route

    from mmsim.fuzz import MMAP_THRESHOLD, malloc_sizes
    from mmsim.machines import sizes

    assert route(MMAP_THRESHOLD - 1, 16)[0] != MAPPED and route(MMAP_THRESHOLD, 16)[0] == MAPPED
    for strategy in (malloc_sizes, sizes):
        sampled = {v for s in strategy.original_strategies
                   if hasattr(s, "elements") for v in s.elements}
        assert {MMAP_THRESHOLD - 1, MMAP_THRESHOLD} <= sampled


def test_fuzz_reports_each_example_to_its_progress_bar():
    """`mmsim fuzz` is a long command: its bar advances once per example run."""
    seen = []
    result = fuzz(KernelConfig(memory=128 << 20, cpus=2), examples=5, steps=5, seed=2,
                  on_example=lambda: seen.append(1))
    assert result.ok and len(seen) >= 5
