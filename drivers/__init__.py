"""Device drivers of the simulated guest."""

from mmsim.drivers.virtio_blk import VirtioBlk

__all__ = ["VirtioBlk"]
