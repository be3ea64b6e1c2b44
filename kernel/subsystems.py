"""Where the kernel wires its subsystems together: one function per subsystem, called at boot."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kernel.kernel import Kernel


def attach_all(kernel: Kernel) -> None:
    """Attach every subsystem this build has, in OSv's initialisation order."""
