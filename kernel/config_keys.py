"""Every configuration key, once: its name, its command-line twin, its default, what it means,
and the function of the subsystem that reads it (which also checks a value as the file is read).

A static table, so that the keys do not depend on which modules happen to be imported, and so
that docs/configuration.md's tables are checked against it (tests/test_config_layout.py). A
checker is named as ``module:function`` and imported only when a value of its key is checked:
the subsystem that reads a key at boot is the one that says whether a value is good, so the
two cannot disagree, and this module imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["KEYS", "ConfigKey", "check_value", "key"]


@dataclass(frozen=True)
class ConfigKey:
    name: str
    #: what it means, in one line (the `unknown key` message lists the names)
    doc: str
    #: the default as docs/configuration.md shows it
    default: str
    #: the command line's twin, as the docs show it ("--arc-size SIZE"); None if file-only
    option: str | None = None
    #: ``module:function`` called with ``{name: value}``, raising ValueError for a bad value;
    #: None for the machine's keys, which kernel/config.py parses itself
    checker: str | None = None


_FS = "mmsim.kernel.sys_fs:FsConfig"
_JVM = "mmsim.kernel.sys_jvm:jvm_settings"
_VIRTIO = "mmsim.kernel.sys_balloon:virtio_settings"

KEYS: tuple[ConfigKey, ...] = (
    # the machine (kernel/config.py)
    ConfigKey("memory", "RAM size, e.g. 512M, 2G, 1T", "`2G`", "--memory SIZE"),
    ConfigKey("cpus", "number of vCPUs (1..256)", "`4`", "--cpus N"),
    ConfigKey("rootfs", "root file system: zfs (default) or rofs", "`zfs`", "--rootfs zfs\\|rofs"),
    ConfigKey("hugepages", "use 2 MiB pages for anonymous memory (true/false)", "`true`",
              "--hugepages/--no-hugepages"),
    ConfigKey("giant_pages", "use 1 GiB leaves in the linear map (true/false)", "`false`",
              "--giant-pages/--no-giant-pages"),
    ConfigKey("kernel_size", "size of the kernel in memory from 2 MiB (default: the rootfs "
              "build's ELF + .bss)", "the rootfs build's"),
    ConfigKey("e820", "list of {start, length, type} firmware map entries", "QEMU-like"),
    ConfigKey("seed", "random seed for anything random", "`0`", "--seed N"),
    # ZFS and its ARC (kernel/sys_fs.py)
    ConfigKey("cache_policy", "ARC replacement policy: zfs (default), arc (FAST'03) or lru",
              "`zfs`", "--cache-policy NAME", _FS),
    ConfigKey("arc_size", "fixed ARC capacity, e.g. 512M (c_min = c_max); default from the RAM "
              "size", "from the RAM size", "--arc-size SIZE", _FS),
    ConfigKey("recordsize", "ZFS record size, a power of two in 512..1M (default 128K)",
              "`128K`", None, _FS),
    ConfigKey("block_size", "record size of block-trace files (default: the trace's block, 512 "
              "for .lis)", "the trace's block", "--block-size SIZE", _FS),
    ConfigKey("disk_latency", "virtio-blk latency per request, e.g. 100us (the default; a bare "
              "number is seconds)", "`100us`", None, _FS),
    ConfigKey("disk_bandwidth", "virtio-blk bandwidth in bytes per second, e.g. 500M (default)",
              "`500M`", None, _FS),
    ConfigKey("arc_reclaim_wake_latency", "delay between arc_lowmem's wake and the ARC's reclaim "
              "pass (e.g. 10ms; default 0: right after the operation)", "`0`", None, _FS),
    # the reclaimer and the shrinkers (kernel/sys_pressure.py)
    ConfigKey("reclaimer_wake_latency", "simulated delay between a wake and the reclaimer's pass "
              "(e.g. 1ms)", "`0`", None, "mmsim.kernel.sys_pressure:check_wake_latency"),
    ConfigKey("shrinkers", "list of user shrinkers as 'module:attr'", "`[]`"),
    ConfigKey("extra_shrinkers", "shrinkers OSv does not have, off by default: a list of "
              "page_pool (drain the L1/L2 page caches on hard passes) and malloc_pools (free the "
              "pools' empty pages)", "`[]`", None, "mmsim.kernel.sys_pressure:extra_shrinkers"),
    # virtio-balloon (kernel/sys_balloon.py)
    ConfigKey("host_balloon", "the host's initial virtio-balloon target (a size; default 0)",
              "`0`", None, _VIRTIO),
    ConfigKey("virtio_balloon_rate", "beyond OSv: bytes per second the balloon can move (a size; "
              "default unset: as OSv, a poll moves the whole difference)", "unset", None,
              _VIRTIO),
    ConfigKey("virtio_balloon_keep_free", "beyond OSv: free memory inflation stops at instead of "
              "waiting (a size, e.g. 4M; default 0: as OSv, none)", "`0`", None, _VIRTIO),
    ConfigKey("virtio_balloon_clamp_target", "beyond OSv: clamp a host target above total memory "
              "and count an app error (true/false; default false: as OSv, not clamped)",
              "`false`", None, _VIRTIO),
    ConfigKey("virtio_balloon_deflate_on_oom", "beyond OSv: act on "
              "VIRTIO_BALLOON_F_DEFLATE_ON_OOM, as Linux does (true/false; default false: OSv "
              "only advertises it)", "`false`", None, _VIRTIO),
    ConfigKey("virtio_balloon_wake_latency", "delay between a new host target and the driver's "
              "poll (e.g. 1ms; default: none, the next 500 ms poll sees it)", "unset", None,
              _VIRTIO),
    # the JVM of an image and its balloon (kernel/sys_jvm.py)
    ConfigKey("jvm_balloon", "the JVM balloon: auto (OSv: only for a heap OSv sized, no -Xmx), "
              "true (any heap, beyond OSv) or false (default auto)", "`auto`", None, _JVM),
    ConfigKey("jvm_path", "the JVM to host: a libjvm.so or a JDK directory (default: javac's "
              "JDK)", "javac's JDK", None, _JVM),
    ConfigKey("jvm_balloon_wake_latency", "delay between a balloon request and the balloon "
              "thread's inflation, in simulated time (e.g. 50ms; default 0)", "`0`", None, _JVM),
    ConfigKey("jvm_alloc_rate", "bytes a JVM application allocates per simulated second: its "
              "simulated time (e.g. 512M; default 1G)", "`1G`", None,
              "mmsim.kernel.sys_jvm:alloc_rate"),
)

_BY_NAME = {k.name: k for k in KEYS}


def key(name: str) -> ConfigKey | None:
    return _BY_NAME.get(name)


def _checker(spec: str) -> Callable[[dict[str, Any]], object]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def check_value(name: str, value: Any) -> None:
    """ValueError (saying what is wrong) if ``value`` is no good for subsystem key ``name``."""
    k = _BY_NAME[name]
    if k.checker is not None:
        _checker(k.checker)({name: value})
