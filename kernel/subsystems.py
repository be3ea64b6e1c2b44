"""Where the kernel wires its subsystems together, in OSv's boot order.

Each subsystem's ``attach`` registers its handlers, categories and sections on the kernel's
hooks and is handed the earlier subsystems it needs, as arguments: no subsystem looks another
up on the kernel, so the order below is the only order there is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmsim.kernel import sys_balloon, sys_fs, sys_jvm, sys_malloc, sys_mman, sys_pressure, sys_rofs

if TYPE_CHECKING:
    from mmsim.drivers.virtio_balloon import VirtioBalloon
    from mmsim.fs.rofs import RofsFileSystem
    from mmsim.fs.zfs_arc.fs import ZfsFileSystem
    from mmsim.kernel.kernel import Kernel
    from mmsim.kernel.sys_jvm import JvmSubsystem
    from mmsim.kernel.sys_malloc import MallocFace
    from mmsim.kernel.sys_mman import Mman
    from mmsim.shrinker import Reclaimer, ShrinkerRegistry


@dataclass(frozen=True)
class Subsystems:
    """Every subsystem of one booted guest."""

    shrinkers: ShrinkerRegistry
    reclaimer: Reclaimer
    mman: Mman
    malloc: MallocFace
    files: ZfsFileSystem | RofsFileSystem
    jvm: JvmSubsystem
    virtio_balloon: VirtioBalloon


def build(kernel: Kernel) -> Subsystems:
    """Attach every subsystem this build has, in OSv's initialisation order."""
    # the reclaimer and the registry exist before any shrinker
    registry, reclaimer = sys_pressure.attach(kernel)
    mman = sys_mman.attach(kernel, reclaimer)  # virtual memory first: large mallocs are mmaps
    malloc = sys_malloc.attach(kernel, mman.space, registry, reclaimer)
    files: ZfsFileSystem | RofsFileSystem
    if kernel.config.rootfs == "rofs":
        files = sys_rofs.attach(kernel, mman, reclaimer)  # its cache, and no shrinker at all
    else:  # ZFS: its two ARC shrinkers are kernel ones, before the user's
        files = sys_fs.attach(kernel, mman, registry, reclaimer)
    mman.mount(files)
    jvm = sys_jvm.attach(kernel, mman.space)  # dormant until an image starts a JVM
    balloon = sys_balloon.attach(kernel, registry)  # DEFLATE_ON_OOM shrinker after the ARC's
    sys_pressure.attach_user_shrinkers(kernel, registry)  # last, after the kernel's own
    return Subsystems(registry, reclaimer, mman, malloc, files, jvm, balloon)
