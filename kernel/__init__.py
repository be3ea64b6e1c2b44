"""The simulated OSv kernel: boot, configuration, and the syscall face that traces drive."""

from mmsim.balloon.jvm import AppThread  # the thread an image's Java main() runs on
from mmsim.kernel import (
    units,  # the one grammar of sizes and durations (config, command line, traces)
)
from mmsim.kernel.boot import BootError
from mmsim.kernel.config import (
    MAX_NESTING,
    ConfigError,
    KernelConfig,
    apply_settings,
    load_config,
    load_yaml,
    nesting_depth,
)
from mmsim.kernel.kernel import Kernel, OutOfMemory, TraceFault, UnsupportedOperation
from mmsim.kernel.sys_malloc import MALLOC_RECORDS_API  # a reader's packed batches (or None)
from mmsim.kernel.units import parse_size  # the one definition; sizes' grammar is `units`
from mmsim.shrinker import ShrinkerError

__all__ = [
    "MALLOC_RECORDS_API",
    "MAX_NESTING",
    "AppThread",
    "BootError",
    "ConfigError",
    "Kernel",
    "KernelConfig",
    "OutOfMemory",
    "ShrinkerError",
    "TraceFault",
    "UnsupportedOperation",
    "apply_settings",
    "load_config",
    "load_yaml",
    "nesting_depth",
    "parse_size",
    "units",
]
