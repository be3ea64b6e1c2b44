"""A ROFS root (rootfs: rofs): OSv's read-only image with its 32 KiB-segment file cache."""

from __future__ import annotations

import json

from cli_helpers import run
from helpers import apply_lines, boot_kernel
from mmsim.kernel import Kernel

MIB = 1 << 20


def _kernel(**kw) -> Kernel:
    return boot_kernel(kw.pop("memory", 256 * MIB), cpus=1, rootfs="rofs", **kw)


_apply = apply_lines


def test_reading_a_file_caches_it_in_9_page_segments():
    """rofs_cache.cc: 32 KiB segments from alloc_phys_contiguous_aligned(32K, 4096), i.e.
    malloc_large with a 4096-byte header: 9 pages each; 1024 of them for 32 MiB, kept for good
    (real OSv: used grows by 36.9-38.1 MB)."""
    k = _kernel()
    before = k.total_bytes - k.free_bytes
    _apply(k, "create /f 32M", "read /f 0 32M")
    grown = k.total_bytes - k.free_bytes - before
    assert k.memory_categories()["rofs_cache"] == 1024 * 9 * 4096
    assert 36_900_000 <= grown <= 38_100_000
    _apply(k, "read /f 0 32M")  # all hits: nothing more
    assert k.total_bytes - k.free_bytes - before == grown
    s = k.section("rofs")
    assert (s["misses"], s["hits"], s["segments"]) == (1024, 1024, 1024)


def test_a_small_file_is_one_segment_of_its_size():
    k = _kernel()
    _apply(k, "create /small 10000", "read /small 0 100")
    # 10000 B -> 20 blocks of 512 = 10240 B + the 4096 header -> 4 pages
    assert k.memory_categories()["rofs_cache"] == 4 * 4096


def test_writes_are_refused_as_the_application_would_see_them(trace):
    path = trace("create /f 1M\nwrite /f 0 4K\nunlink /f\nread /nope 0 1\n")
    code, out, _ = run("run", path, "--rootfs", "rofs", "--json", "-", "-q")
    assert code == 0
    errors = json.loads(out)["app_errors"]
    assert errors["by_kind"] == {"EROFS": 2, "ENOENT": 1}


def test_a_file_mapping_shares_the_cache_segments():
    """rofs_map_cached_page maps the segment's own memory: mapping and touching a cached file
    costs page tables only, no copy."""
    k = _kernel()
    _apply(k, "create /f 4M", "read /f 0 4M")
    cache = k.memory_categories()["rofs_cache"]
    _apply(k, "mmap m 4M file=/f prot=r", "touch m 0 4M r")
    cats = k.memory_categories()
    assert cats["rofs_cache"] == cache and cats.get("file", 0) == 0


def test_rootfs_from_the_configuration_the_command_line_and_the_manifest(tmp_path, trace):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rootfs: rofs\n")
    path = trace("create /f 64K\nread /f 0 64K\n")
    code, out, _ = run("run", path, "--config", str(cfg), "--json", "-", "-q")
    assert code == 0 and "rofs" in json.loads(out) and "arc" not in json.loads(out)
    code, out, _ = run("run", path, "--config", str(cfg), "--rootfs", "zfs", "--json", "-", "-q")
    assert code == 0 and "arc" in json.loads(out)
    cfg.write_text("rootfs: ext4\n")
    code, _, err = run("run", path, "--config", str(cfg))
    assert code == 2 and "c.yaml:1" in err and "rootfs" in err


def test_rootfs_in_an_image_manifest(tmp_path):
    from mmsim.image import ImageError, kernel_config, load_manifest

    (tmp_path / "t.trace").write_text("malloc a 64\n")
    m = tmp_path / "image.yaml"
    m.write_text("cmdline: /tools/app.so /t/t.trace\nfiles:\n  /t: .\nmemory: 128M\n"
                 "rootfs: rofs\n")
    manifest = load_manifest(str(m))
    assert kernel_config(manifest).rootfs == "rofs"
    code, out, err = run("boot", str(m), "--json", "-", "-q")
    assert code == 0, err
    assert "rofs" in json.loads(out) and "arc" not in json.loads(out)
    code, out, err = run("boot", str(m), "--rootfs", "zfs", "--json", "-", "-q")
    assert code == 0 and "arc" in json.loads(out), err
    m.write_text("cmdline: /tools/app.so /t/t.trace\nfiles:\n  /t: .\nrootfs: btrfs\n")
    try:
        load_manifest(str(m))
    except ImageError as e:
        assert str(e).startswith(f"{m}:4: ") and "rootfs" in str(e)
    else:
        raise AssertionError("a bad rootfs was accepted")
