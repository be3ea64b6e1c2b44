"""Booting guests of every size, and e820 maps with holes (reference §10)."""

import pytest
from mmsim.kernel import BootError, ConfigError, Kernel, KernelConfig, load_config
from mmsim.kernel.config import E820Entry
from mmsim.mm.constants import (
    KERNEL_PHYS,
    KERNEL_VIRT,
    L1_MAX,
    MAIN_AREA,
    MEMPOOL_AREA,
    PAGE_AREA,
    PAGE_SIZE,
)

GIB = 1 << 30


def page_set(kernel: Kernel) -> list[tuple[int, int]]:
    return list(kernel.ranges.runs())


@pytest.mark.parametrize("memory", [512 << 20, 2 * GIB, 64 * GIB, 1 << 40])
def test_boot_sizes(memory):
    k = Kernel(KernelConfig(memory=memory, cpus=4))
    k.check()
    kernel_end = k.mem.kernel_end
    # what the allocator got: every whole usable page but page 0 and the kernel image
    expected = sum(e.end // PAGE_SIZE - -(-e.start // PAGE_SIZE)
                   for e in k.config.e820_map() if e.type == 1)
    expected -= 1 + (kernel_end - KERNEL_PHYS) // PAGE_SIZE
    assert k.ranges.total_pages == expected
    # the linear map covers all RAM in the three areas, with 2 MiB leaves where aligned
    top = max(e.end for e in k.config.e820_map() if e.type == 1)
    for area in (MAIN_AREA, PAGE_AREA, MEMPOOL_AREA):
        phys, _, leaf = k.page_tables.translate(area + top - (4 << 20))
        assert phys == top - (4 << 20)
        assert leaf == 2 << 20
    assert k.page_tables.translate(KERNEL_VIRT)[0] == KERNEL_PHYS
    # page tables: one PD per GiB in each area at least, counted as used
    assert k.page_tables.table_pages >= 3 * (top // GIB)
    assert k.summary()["memory"]["page_table_bytes"] == k.page_tables.table_pages * PAGE_SIZE


def test_page_zero_and_kernel_are_never_given():
    k = Kernel(KernelConfig(memory=512 << 20, cpus=1))
    k.pool.drain()  # put L1/L2 pages back in the runs to see every page the allocator owns
    owned = page_set(k)
    for start, n in owned:
        assert start > 0
        assert start + n <= KERNEL_PHYS // PAGE_SIZE or start >= k.mem.kernel_end // PAGE_SIZE


def test_warm_caches_after_boot():
    k = Kernel(KernelConfig(memory=2 * GIB, cpus=4))
    # each CPU's L1 is refilled to [224, 256) and L2 holds half its batches (§3, §11)
    for cpu in range(4):
        assert 224 <= k.pool.l1_pages_of(cpu) < 256
    assert k.pool.l2_pages == 4 * (L1_MAX // 2)
    cats = k.memory_categories()
    assert cats["l1_cache"] + cats["l2_cache"] > 0
    assert k.summary()["memory"]["free_bytes"] == k.ranges.free_pages * PAGE_SIZE


def test_e820_with_holes():
    e820 = [
        E820Entry(0, 0x9F000, 1),
        E820Entry(0x9F000, 0x61000, 2),
        E820Entry(0x100000, 0x3FF00000, 1),      # up to 1 GiB
        E820Entry(0x40000000, 0x40000000, 2),    # a 1 GiB reserved hole
        E820Entry(0x80000000, 0x80000000, 1),    # 2 GiB usable above it
    ]
    k = Kernel(KernelConfig(e820=e820, cpus=2))
    k.check()
    k.pool.drain()
    for start, n in page_set(k):
        s, e = start * PAGE_SIZE, (start + n) * PAGE_SIZE
        assert not (s < 0x80000000 and e > 0x40000000), "a free run lies in the hole"
    assert k.page_tables.translate(MAIN_AREA + 0x80000000)[0] == 0x80000000
    assert k.summary()["config"]["ram_bytes"] == 0x9F000 + 0x3FF00000 + 0x80000000


def test_e820_from_yaml(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("cpus: 2\ne820:\n  - {start: 0, length: 640K}\n"
                 "  - {start: 1M, length: 511M}\n  - {start: 1G, length: 1G, type: 2}\n"
                 "  - {start: 2G, length: 1G}\n")
    cfg = load_config(str(p))
    k = Kernel(cfg)
    k.check()
    assert k.mem.phys_mem_size == (640 << 10) + (511 << 20) + GIB


def test_overlapping_e820_is_rejected(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("e820:\n  - {start: 0, length: 1G}\n  - {start: 512M, length: 1G}\n")
    with pytest.raises(ConfigError, match="overlap"):
        load_config(str(p))


def test_no_memory_below_one_gib_cannot_boot():
    e820 = [E820Entry(0, 0x1000, 1), E820Entry(0x40000000, 0x40000000, 1)]
    with pytest.raises(BootError):
        Kernel(KernelConfig(e820=e820))


def test_giant_pages_shrink_the_linear_map():
    small = Kernel(KernelConfig(memory=64 * GIB))
    giant = Kernel(KernelConfig(memory=64 * GIB, giant_pages=True))
    assert giant.page_tables.table_pages < small.page_tables.table_pages
    assert giant.page_tables.translate(MAIN_AREA + 8 * GIB)[2] == GIB


def test_every_key_is_validated_as_the_configuration_is_loaded(tmp_path):
    """A bad value of any key, the kernel's or a subsystem's, names file:line: key, before any
    boot (the subsystems register validators for their keys with the config module)."""
    from mmsim.kernel.config import known_keys

    boot_time_only = {"shrinkers"}  # user modules are imported when the kernel is built
    for key in sorted(set(known_keys()) - boot_time_only):
        p = tmp_path / "m.yaml"
        other = "seed" if key == "cpus" else "cpus"  # a duplicate key is an error of its own
        p.write_text(f"{other}: 2\n{key}: [[1]]\n")
        with pytest.raises(ConfigError) as e:
            load_config(str(p))
        assert str(e.value).startswith(f"{p}:2: {key}"), str(e.value)
        assert e.value.key == key


@pytest.mark.parametrize("key, value, reason", [
    ("arc_size", "abc", "bad size 'abc'"),
    ("recordsize", "3K", "must be a power of two in 512..1048576, not '3K'"),
    ("cache_policy", "fifo", "unknown cache policy 'fifo'"),
    ("disk_latency", "5 parsecs", "bad duration"),
    ("jvm_balloon", "maybe", "must be auto, true or false, not 'maybe'"),
    ("virtio_balloon_deflate_on_oom", 3, "must be true or false"),
    ("host_balloon", "1Q", "bad size '1Q'"),
    ("reclaimer_wake_latency", "abc", "bad duration 'abc'"),
    ("cpus", 0, "must be an integer in 1..256, not 0"),
    ("memory", "abc", "bad size 'abc'"),
])
def test_a_bad_value_names_file_line_key_and_what_is_wrong(tmp_path, key, value, reason):
    p = tmp_path / "m.yaml"
    p.write_text(f"seed: 1\n\n{key}: {value}\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(e.value).startswith(f"{p}:3: {key}: {reason}"), str(e.value)
    with pytest.raises(ConfigError) as e:  # the command line's twin names the option
        load_config(None, {key: value})
    assert str(e.value).startswith(f"--{key.replace('_', '-')}: "), str(e.value)


@pytest.mark.parametrize("rootfs", ["zfs", "rofs"])
def test_the_kernel_declares_every_subsystem_it_wires(rootfs: str) -> None:
    """Kernel's annotations name every subsystem kernel/subsystems.py builds (no attribute
    appears from nowhere), each set after boot; a ROFS root has no ZFS."""
    from mmsim.kernel import Kernel, load_config

    declared = set(Kernel.__annotations__)
    k = Kernel(load_config(None, {"memory": "256M", "rootfs": rootfs}))
    assert declared <= set(vars(k))
    set_ = {n for n in declared if getattr(k, n) is not None}
    assert set_ == declared - ({"zfs"} if rootfs == "rofs" else set())
    assert (k.zfs is k.files) if rootfs == "zfs" else (k.zfs is None)


def test_subsystems_are_handed_what_they_need_not_looking_it_up_on_the_kernel() -> None:
    """The boot order in kernel/subsystems.py is the only one: no subsystem module reads
    another subsystem off the kernel (it is passed the ones it needs as arguments), so that
    reordering the build cannot silently hand one a None."""
    import re
    from pathlib import Path

    from mmsim.kernel import Kernel

    names = "|".join(n for n in Kernel.__annotations__)
    lookup = re.compile(rf"kernel\.({names})\b")
    root = Path(__file__).resolve().parent.parent
    files = [*(root / "kernel").glob("sys_*.py"),
             *(p for f in ("fs", "balloon", "drivers", "shrinker") for p in (root / f).rglob("*.py"))]
    assert len(files) > 10
    offenders = [f"{p.relative_to(root)}:{n}: {line.strip()}" for p in sorted(files)
                 for n, line in enumerate(p.read_text().splitlines(), 1) if lookup.search(line)]
    assert offenders == []


@pytest.mark.parametrize("rootfs", ["zfs", "rofs"])
def test_every_operation_of_the_table_has_a_handler_and_no_other(rootfs: str) -> None:
    """kernel/operations.py is the kernel's syscall face: every kind a trace reader makes is
    in it, a booted guest handles every one, and no subsystem adds a kind outside it."""
    from mmsim.kernel import Kernel, load_config
    from mmsim.kernel.operations import OPERATIONS

    from mmsim.trace import OP_KINDS

    assert set(OP_KINDS) <= set(OPERATIONS)
    k = Kernel(load_config(None, {"memory": "256M", "rootfs": rootfs}))
    assert all(k.has_handler(kind) for kind in OPERATIONS)
    with pytest.raises(ValueError, match="not an operation"):
        k.add_handler("mallok", lambda op: None)
