"""Device drivers of the simulated guest."""

from drivers.virtio_blk import VirtioBlk

__all__ = ["VirtioBlk"]
