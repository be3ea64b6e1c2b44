"""Configurations OSv's memory layout can hold, and config files that cannot hang or mislead
the loader (reference §1, §6, §10)."""

import contextlib
import signal

import pytest
from cli_helpers import run
from mmsim.kernel import BootError, ConfigError, Kernel, KernelConfig, load_config
from mmsim.kernel.config import E820Entry
from mmsim.mm.constants import MAIN_AREA, MEMPOOL_AREA, PAGE_AREA

GIB = 1 << 30


# -- the layout's limit: each linear-map area is 16 TiB ------------------------------------------

@pytest.mark.parametrize("memory", ["16T", "17T", "64T"])
def test_memory_the_layout_cannot_hold_is_refused(memory):
    # 16T itself does not fit: the PCI hole puts the top of RAM at 16T + 1G
    with pytest.raises(ConfigError, match=r"--memory: .*at most 16383G.*16T"):
        load_config(None, {"memory": memory})


@pytest.mark.parametrize("memory", ["16T", "17T", "64T"])
def test_memory_the_layout_cannot_hold_is_one_line_exit_2(trace, memory):
    code, _, err = run("run", trace("sleep 1s\n"), "--memory", memory, "-q")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "16383G" in err


def test_largest_accepted_memory_boots():
    cfg = load_config(None, {"memory": "16383G"})
    k = Kernel(cfg)
    top = max(e.end for e in cfg.e820_map() if e.type == 1)
    assert top == 1 << 44
    for area in (MAIN_AREA, PAGE_AREA, MEMPOOL_AREA):
        assert k.page_tables.translate(area + top - (4 << 20))[0] == top - (4 << 20)


def test_e820_past_16t_is_refused(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("e820:\n  - {start: 0, length: 640K}\n  - {start: 1M, length: 1023M}\n"
                 "  - {start: 16T, length: 1G}\n")
    with pytest.raises(ConfigError, match=rf"{p}:1: e820: usable RAM ends at 0x100040000000"):
        load_config(str(p))
    # a reserved entry up there maps nothing and is fine
    p.write_text("e820:\n  - {start: 0, length: 640K}\n  - {start: 1M, length: 1023M}\n"
                 "  - {start: 16T, length: 1G, type: 2}\n")
    Kernel(load_config(str(p))).check()


def test_kernel_refuses_a_map_past_16t_without_the_config():
    e820 = [E820Entry(0, 0x9F000, 1), E820Entry(0x100000, GIB, 1), E820Entry(1 << 44, GIB, 1)]
    with pytest.raises(BootError, match="16T"):
        Kernel(KernelConfig(e820=e820))


# -- memory and e820 describe one thing: the map sets the RAM size ------------------------------

MAP = ("e820:\n  - {start: 0, length: 640K}\n  - {start: 1M, length: 1023M}\n"
       "  - {start: 1G, length: 1G, type: 2}\n  - {start: 2G, length: 1G}\n")
MAP_RAM = (640 << 10) + (1023 << 20) + GIB


def test_an_e820_map_sets_memory(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("cpus: 2\n" + MAP)
    cfg = load_config(str(p))
    assert cfg.memory == MAP_RAM == Kernel(cfg).mem.phys_mem_size
    assert Kernel(cfg).summary()["config"]["memory_bytes"] == MAP_RAM  # not null


def test_memory_disagreeing_with_the_map_names_its_line(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("cpus: 2\nmemory: 4G\n" + MAP)
    with pytest.raises(ConfigError, match=rf"^{p}:2: memory: 4G disagrees with the e820 map"):
        load_config(str(p))
    p.write_text(f"cpus: 2\nmemory: {MAP_RAM}\n" + MAP)  # the same size is fine
    assert load_config(str(p)).memory == MAP_RAM


def test_command_line_memory_overrides_the_files_map(tmp_path, trace):
    import json

    p = tmp_path / "m.yaml"
    p.write_text("cpus: 2\n" + MAP)
    cfg = load_config(str(p), {"memory": "1G"})
    assert cfg.memory == GIB and cfg.e820 is None
    code, out, _ = run("run", trace("sleep 1s\n"), "--config", str(p), "--memory", "1G",
                       "--json", "-", "-q")
    s = json.loads(out)
    assert code == 0 and s["config"]["memory_bytes"] == GIB and s["config"]["cpus"] == 2
    assert s["config"]["ram_bytes"] == GIB - 0x60400 - 0x23000  # the legacy hole, SeaBIOS's top


def test_the_docs_e820_example_loads(tmp_path):
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "e820:" in b]
    assert blocks
    for i, block in enumerate(blocks):
        p = tmp_path / f"{i}.yaml"
        p.write_text(block)
        Kernel(load_config(str(p))).check()


# -- YAML that would hang the loader or be read wrong: aliases and duplicate keys ------------------

def _bomb(key: str) -> str:
    """A 'billion laughs' under ``key``: 8 levels of ten aliases each, 10**8 values in <1 KB."""
    text = f"{key}:\n  - &a0 {{start: 0, length: 1}}\n"
    for i in range(1, 9):
        text += f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


@contextlib.contextmanager
def _deadline(seconds: float):
    """Fail instead of hanging: SIGALRM raises in the loader's Python loop."""
    def expired(*_):
        raise TimeoutError(f"still loading after {seconds}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_yaml_alias_bomb_in_a_config_is_refused_at_once(tmp_path, trace):
    p = tmp_path / "bomb.yaml"
    p.write_text("cpus: 2\n" + _bomb("e820"))
    assert len(p.read_text()) < 1024
    with _deadline(5), pytest.raises(ConfigError, match=rf"^{p}:4: bad YAML: aliases are not"):
        load_config(str(p))
    with _deadline(5):
        code, _, err = run("run", trace("sleep 1s\n"), "--config", str(p), "-q")
    assert code == 2 and err.strip().count("\n") == 0 and f"{p}:4:" in err


def test_duplicate_keys_in_a_config_are_refused(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("memory: 1G\ncpus: 2\nmemory: 2G\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: bad YAML: duplicate key 'memory'"):
        load_config(str(p))
    p.write_text("e820:\n  - {start: 0, length: 640K}\n  - {start: 1M, length: 1G, start: 2M}\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: bad YAML: duplicate key 'start'"):
        load_config(str(p))


def test_image_manifests_refuse_aliases_and_duplicate_keys(tmp_path):
    from mmsim.image import ImageError, load_manifest

    p = tmp_path / "img.yaml"
    p.write_text("cmdline: /tools/replay.so /t.trace\nkernel:\n  cpus: 1\n"
                 + _bomb("  e820").replace("\n  ", "\n    "))
    with _deadline(5), pytest.raises(ImageError, match=rf"^{p}:6: bad YAML: aliases are not"):
        load_manifest(str(p))
    p.write_text("cmdline: /tools/replay.so /t.trace\nmemory: 1G\nmemory: 2G\n")
    with pytest.raises(ImageError, match=rf"^{p}:3: bad YAML: duplicate key 'memory'"):
        load_manifest(str(p))


def test_sweep_files_refuse_aliases(tmp_path):
    from mmsim.sweep_file import SweepError, load_sweep

    (tmp_path / "t.trace").write_text("sleep 1s\n")
    p = tmp_path / "s.yaml"
    p.write_text("traces: [t.trace]\ngrid:\n  memory: [1G]\n" + _bomb("points"))
    with _deadline(5), pytest.raises(SweepError, match=rf"^{p}:6: bad YAML: aliases are not"):
        load_sweep(str(p))


# -- command-line twins: the docs' table says which keys have one, and they exist ----------------

def test_giant_pages_has_a_twin_that_overrides_the_file(tmp_path, trace):
    import json

    p = tmp_path / "c.yaml"
    p.write_text("memory: 8G\ngiant_pages: true\n")
    t = trace("sleep 1s\n")
    got = {}
    for flag in ("--giant-pages", "--no-giant-pages"):
        code, out, _ = run("run", t, "--config", str(p), flag, "--json", "-", "-q")
        s = json.loads(out)
        assert code == 0
        got[s["config"]["giant_pages"]] = s["memory"]["page_table_bytes"]
    assert got[True] < got[False]


def test_the_docs_tables_are_the_key_table():
    """docs/configuration.md's tables list exactly the keys of kernel/config_keys.py, with
    their command-line twins and defaults, and every twin is an option of mmsim run."""
    import pathlib
    import re

    from mmsim.kernel.config_keys import KEYS

    doc = (pathlib.Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    rows = {key: (twin, default) for key, twin, default in
            re.findall(r"^\| `(\w+)` \| (.+?) \| (.+?) \|", doc, re.M)}
    assert set(rows) == {k.name for k in KEYS}, "docs/configuration.md and config_keys.py differ"
    for k in KEYS:
        twin, default = rows[k.name]
        assert twin == (f"`{k.option}`" if k.option else "—"), k.name
        assert default == k.default, k.name
    _, helptext, _ = run("run", "--help")
    for k in KEYS:
        for option in re.findall(r"--[\w-]+", k.option or ""):
            assert option in helptext, f"{k.name}: {option} is not an option of mmsim run"


def test_every_checker_the_key_table_names_exists():
    import importlib

    from mmsim.kernel.config_keys import KEYS

    for k in KEYS:
        if k.checker is not None:
            module, _, attr = k.checker.partition(":")
            assert callable(getattr(importlib.import_module(module), attr)), k.name
