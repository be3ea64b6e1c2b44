"""The virtio-blk disk behind ZFS: counts requests and bytes and models their time.

One queue served in order: a request starts when the disk is free (or when it is issued, if
later) and takes a fixed latency plus its bytes over the bandwidth. Reads are synchronous, so
the caller's clock moves to their completion; background writes (transaction-group sync) only
keep the disk busy, which delays the reads queued behind them. The defaults are an SSD-backed
host (100 µs, 500 MiB/s); both are configuration keys.
"""

from __future__ import annotations

from typing import Any

DEFAULT_LATENCY_NS = 100_000
DEFAULT_BANDWIDTH = 500 << 20  # bytes per second


class VirtioBlk:
    """A block device with a latency + bandwidth service time, in simulated nanoseconds."""

    def __init__(
        self, latency_ns: int = DEFAULT_LATENCY_NS, bandwidth: int = DEFAULT_BANDWIDTH
    ) -> None:
        if latency_ns < 0 or bandwidth <= 0:
            raise ValueError("disk latency must be >= 0 and bandwidth > 0")
        self.latency_ns = latency_ns
        self.bandwidth = bandwidth
        self.reads = 0
        self.writes = 0
        self.read_bytes = 0
        self.write_bytes = 0
        self.busy_ns = 0
        self._free_at = 0  # when the queue drains

    def _serve(self, now_ns: int, nbytes: int) -> int:
        start = now_ns if now_ns > self._free_at else self._free_at
        service = self.latency_ns + nbytes * 1_000_000_000 // self.bandwidth
        self.busy_ns += service
        self._free_at = start + service
        return self._free_at

    def read(self, now_ns: int, nbytes: int) -> int:
        """Issue a read at ``now_ns``; returns when it completes (the reader waits till then)."""
        self.reads += 1
        self.read_bytes += nbytes
        start = now_ns if now_ns > self._free_at else self._free_at  # _serve, inlined
        service = self.latency_ns + nbytes * 1_000_000_000 // self.bandwidth
        self.busy_ns += service
        self._free_at = start + service
        return self._free_at

    def reads_before(self, now_ns: int, nbytes: int, deadline_ns: int) -> int:
        """How many reads issued one after the other from ``now_ns`` (each as the one before
        completes: a reader waiting for each) all complete before ``deadline_ns``."""
        start = now_ns if now_ns > self._free_at else self._free_at
        service = self.latency_ns + nbytes * 1_000_000_000 // self.bandwidth
        if start >= deadline_ns:
            return 0
        return (deadline_ns - 1 - start) // service if service else 1 << 62

    def read_many(self, now_ns: int, nbytes: int, count: int) -> int:
        """``count`` synchronous reads one after the other, as as many :meth:`read` calls
        would be with nothing else queued between them (a batch of misses); returns when the
        last completes."""
        start = now_ns if now_ns > self._free_at else self._free_at
        busy = count * (self.latency_ns + nbytes * 1_000_000_000 // self.bandwidth)
        self.reads += count
        self.read_bytes += count * nbytes
        self.busy_ns += busy
        self._free_at = start + busy
        return self._free_at

    def write(self, now_ns: int, nbytes: int) -> int:
        """Issue a write at ``now_ns``; returns its completion time (callers may not wait)."""
        self.writes += 1
        self.write_bytes += nbytes
        return self._serve(now_ns, nbytes)

    def stats(self) -> dict[str, Any]:
        """The summary's ``disk`` section."""
        return {
            "reads": self.reads,
            "writes": self.writes,
            "read_bytes": self.read_bytes,
            "write_bytes": self.write_bytes,
            "busy_ns": self.busy_ns,
            "latency_ns": self.latency_ns,
            "bandwidth_bytes_per_s": self.bandwidth,
        }
