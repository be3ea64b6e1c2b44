"""The simulated OSv kernel: boot, configuration, and the syscall face that traces drive."""

from balloon.jvm import AppThread  # the thread an image's Java main() runs on
from kernel import subsystems as _subsystems  # noqa: E402,F401  (registers every config key)
from kernel import units  # the one grammar of sizes and durations (config, command line, traces)
from kernel.boot import BootError
from kernel.config import (
    ConfigError,
    KernelConfig,
    apply_settings,
    load_config,
    load_yaml,
    parse_size,
)
from kernel.kernel import Kernel, OutOfMemory, TraceFault, UnsupportedOperation
from shrinker import ShrinkerError

__all__ = [
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
    "parse_size",
    "units",
]
