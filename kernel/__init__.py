"""The simulated OSv kernel: boot, configuration, and the syscall face that traces drive."""

from kernel import subsystems as _subsystems  # noqa: E402,F401  (registers every config key)
from kernel.boot import BootError
from kernel.config import ConfigError, KernelConfig, load_config, parse_size
from kernel.kernel import Kernel, OutOfMemory, TraceFault, UnsupportedOperation

__all__ = [
    "BootError",
    "ConfigError",
    "Kernel",
    "KernelConfig",
    "OutOfMemory",
    "TraceFault",
    "UnsupportedOperation",
    "load_config",
    "parse_size",
]
