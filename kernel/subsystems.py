"""Where the kernel wires its subsystems together: one function per subsystem, called at boot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmsim.kernel import sys_balloon, sys_fs, sys_jvm, sys_malloc, sys_mman, sys_pressure, sys_rofs

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel


def attach_all(kernel: Kernel) -> None:
    """Attach every subsystem this build has, in OSv's initialisation order."""
    sys_pressure.attach(kernel)  # the reclaimer and the registry exist before any shrinker
    sys_mman.attach(kernel)  # virtual memory first: malloc's large blocks are mmaps
    sys_malloc.attach(kernel)  # after sys_mman: it maps blocks of 2 MiB and more
    if kernel.config.rootfs == "rofs":
        sys_rofs.attach(kernel)  # ROFS: its cache, and no shrinker at all
    else:
        sys_fs.attach(kernel)  # ZFS: its two ARC shrinkers are kernel ones, before the user's
    sys_jvm.attach(kernel)  # dormant until an image starts a JVM (its balloon registers then)
    sys_balloon.attach(kernel)  # virtio-balloon: its DEFLATE_ON_OOM shrinker after the ARC's
    sys_pressure.attach_user_shrinkers(kernel)  # last, after the kernel's own shrinkers
