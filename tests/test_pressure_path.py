"""The pressure path as OSv's code has it (osv-memory.md §3, §5, §8, corrected 2026-12-02):
two ARC shrinkers on a ZFS root, the 4 MiB rule before every L2 refill batch and on the bulk
fault path, a hard pass for every waiter, none of mmsim's own shrinkers by default, and no
shrinker at all on a ROFS root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_helpers import run
from helpers import apply_lines, assert_one_line_error, boot_kernel
from mmsim.kernel import Kernel

MIB = 1 << 20


def _kernel(memory: int, rootfs: str = "zfs", **extra) -> Kernel:
    return boot_kernel(memory, cpus=1, rootfs=rootfs, **extra)


_apply = apply_lines


def test_a_zfs_root_asks_the_arc_twice_per_pass(trace):
    """register_shrinker_arc_funs (libsolaris.so loading) and bsd_shrinker_init (after the
    root mount) each register an arc_shrinker, and the reclaimer calls every shrinker: each
    pass asks the ARC twice, and each call evicts at least 16 MiB (s = max(target, 16 MiB),
    bsd/porting/shrinker.cc)."""
    path = trace("create /f 600M\nread /f 0 600M\nmmap a 300M populate\n")
    code, out, _ = run("run", path, "--memory", "1G", "--cpus", "1", "--json", "-", "-q")
    assert code == 0
    s = json.loads(out)["shrinker"]
    assert [n for n in s if n != "reclaimer"] == ["arc", "arc#2"]
    passes = s["reclaimer"]["passes"]
    assert passes >= 1
    for name in ("arc", "arc#2"):
        assert s[name]["calls"] == passes
        assert s[name]["last_yield_bytes"] >= 16 * MIB


def test_mmsims_own_shrinkers_are_off_unless_asked_for():
    names = [s.name for s in _kernel(256 * MIB).shrinkers]
    assert names == ["arc", "arc#2"]
    on = _kernel(256 * MIB, extra_shrinkers=["page_pool", "malloc_pools"])
    assert sorted(s.name for s in on.shrinkers) == ["arc", "arc#2", "malloc_pools", "page_pool"]
    assert [s.name for s in _kernel(256 * MIB, "rofs").shrinkers] == []


def test_page_allocations_under_4_mib_free_wait_for_a_hard_pass():
    """l2::refill calls wait_for_minimum_memory before every 32-page batch (mempool.cc
    ~l.1544): with shrinkers and under 4 MiB free, the allocation waits for the difference and
    the reclaimer runs a hard pass (arc_lowmem, then arc_sized_adjust of >= 16 MiB from each
    of the two ARC shrinkers), after which the allocation goes on."""
    k = _kernel(128 * MIB)
    _apply(k, "create /f 60M", "read /f 0 60M")
    free = k.free_bytes
    assert 4 * MIB < free < 40 * MIB
    rec = k.reclaimer
    waits, hard = rec.waits, rec.hard_passes
    _apply(k, f"mmap a {free - 2 * MIB} populate")  # leaves 2 MiB: under the 4 MiB rule
    assert rec.waits == waits + 1 and rec.hard_passes == hard + 1
    assert k.oom is None
    assert k.section("arc")["size_bytes"] < 60 * MIB - 32 * MIB  # two shrinkers, 16 MiB each


def test_a_rofs_root_has_no_4_mib_rule():
    """wait_for_minimum_memory waits only when some shrinker is active: a ROFS root has none,
    so an allocation can take the guest down to its last pages without waiting (the reclaimer
    still wakes under the 10 % watermark, and finds no shrinker to call)."""
    k = _kernel(128 * MIB, "rofs")
    _apply(k, f"mmap a {k.free_bytes - 1 * MIB} populate")
    assert k.oom is None and k.free_bytes <= 1 * MIB
    assert k.reclaimer.waits == 0 and k.reclaimer.hard_passes == 0


def test_every_waiter_gets_a_hard_pass_even_if_a_run_fits():
    """reclaimer::wait_for_memory always queues the waiter (_oom_blocked.wait): the reclaimer
    runs a hard pass for it whatever the runs hold (mempool.cc ~l.578)."""
    k = _kernel(256 * MIB)
    hard = k.reclaimer.hard_passes
    k.reclaimer.wait_for_memory(MIB)  # a run of far more than 1 MiB is free
    assert k.reclaimer.hard_passes == hard + 1


def test_a_guest_too_small_to_boot_runs_out_of_memory_during_boot(trace):
    """OSv aborts when boot cannot allocate: exit 3 with the oom section, op 'boot'. A ZFS root
    needs some 40 MB at boot; a ROFS root boots in 20M."""
    path = trace("malloc a 64\n")
    code, out, err = run("run", path, "--memory", "24M", "--cpus", "1", "--json", "-", "-q")
    assert code == 3 and "out of memory" in err
    oom = json.loads(out)["oom"]
    assert oom["op"] == "boot" and oom["line"] == 0 and "zfs" in oom["reason"]
    code, out, _ = run("run", path, "--memory", "20M", "--cpus", "1", "--rootfs", "rofs",
                       "--json", "-", "-q")
    assert code == 0 and json.loads(out)["oom"] is None


def test_any_ram_size_the_layout_describes_is_accepted(trace):
    path = trace("malloc a 64\n")
    code, _, err = run("run", path, "--memory", "2M", "-q")
    assert code == 3 and "does not fit" in err  # the kernel image itself is 9 MiB
    code, _, err = run("run", path, "--memory", "1M", "-q")
    assert_one_line_error(code, err, "--memory")


def test_the_page_pool_shrinker_does_not_drain_the_l2_its_refill_waits_for(tmp_path):
    """With mmsim's page_pool shrinker, an L2 refill under the 4 MiB rule waited, the hard
    pass drained the L2 being refilled, and the refill took it back and waited again, for
    ever (the fixture: a balloon inflating during a sleep). The replay must end; it runs in
    a process, so that a regression fails on the timeout instead of hanging the suite."""
    config = tmp_path / "c.yaml"
    config.write_text("extra_shrinkers: [page_pool]\n")
    fixture = Path(__file__).parent / "fixtures" / "native" / "page-pool-refill.trace"
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mmsim")), "run", str(fixture), "--memory", "128M",
         "--cpus", "2", "--config", str(config), "--json", "-", "-q"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 3), done.stderr
    s = json.loads(done.stdout)
    passes = s["shrinker"]["reclaimer"]
    assert s["shrinker"]["page_pool"]["calls"] == passes["passes"] and passes["hard_passes"] >= 1
