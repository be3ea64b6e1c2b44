"""Wires the host's virtio-balloon: the `host-balloon SIZE` operation, its 500 ms polling in
simulated time, the out-of-memory report when an inflation cannot be served (OSv's guest
aborts), and the options beyond OSv (rate limit, free floor, clamping, DEFLATE_ON_OOM)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmsim.drivers.virtio_balloon import VirtioBalloon
from mmsim.kernel.config import (
    ConfigError,
)
from mmsim.kernel.units import parse_duration, parse_size
from mmsim.mm.constants import PAGE_SIZE
from mmsim.mm.page_pool import OutOfPages

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel
    from mmsim.shrinker import ShrinkerRegistry



@dataclass
class _Settings:
    target: int = 0
    rate: int | None = None
    keep_free: int = 0
    clamp: bool = False
    deflate: bool = False
    latency: int | None = None


def _flag(extra: dict[str, Any], key: str) -> bool:
    value = extra.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"'{key}' must be true or false")
    return value


def virtio_settings(extra: dict[str, Any]) -> _Settings:
    try:
        target = parse_size(extra.get("host_balloon", 0))
        rate = extra.get("virtio_balloon_rate")
        rate = None if rate is None else parse_size(rate)
        keep_free = parse_size(extra.get("virtio_balloon_keep_free", 0))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    latency = extra.get("virtio_balloon_wake_latency")
    if latency is not None:
        try:
            latency = parse_duration(latency)
        except ValueError as e:
            raise ConfigError(f"'virtio_balloon_wake_latency': {e}") from None
    if rate is not None and rate < PAGE_SIZE:
        raise ConfigError("'virtio_balloon_rate' must be at least 4K per second")
    return _Settings(target, rate, keep_free, _flag(extra, "virtio_balloon_clamp_target"),
                     _flag(extra, "virtio_balloon_deflate_on_oom"), latency)




@dataclass
class _Inflation:
    """What the out-of-memory report names when the balloon's inflation fails: the driver's
    thread (OSv's "virtio-balloon"), during the trace line being applied, and the pages its
    poll set out to take."""

    line: int
    size: int
    kind: str = "virtio-balloon"
    handle: str | None = None
    time_ns: int | None = None
    cpu: int | None = None


def attach(kernel: Kernel, registry: ShrinkerRegistry) -> VirtioBalloon:
    cfg = virtio_settings(kernel.config.extra)
    ranges = kernel.ranges
    balloon = VirtioBalloon(kernel.pool, lambda: ranges.free_pages,
                            rate_bytes_per_s=cfg.rate, keep_free_bytes=cfg.keep_free,
                            deflate_on_oom=cfg.deflate)
    balloon.set_target(cfg.target)

    def host_balloon(op: Any) -> None:
        size = op.size
        if cfg.clamp and size > ranges.total_pages * PAGE_SIZE:
            kernel.errors.report("balloon_target_too_large", op.line, op.kind,
                                 f"target {size} exceeds total memory; clamped")
            size = ranges.total_pages * PAGE_SIZE
        balloon.set_target(size)
        if cfg.latency is not None:
            balloon.wake(kernel.clock_ns + cfg.latency)
        kernel.wake_threads()

    def poll() -> None:
        if balloon.next_poll_ns > kernel.clock_ns:
            return  # balloon.poll would run no poll: nothing moves, nothing to tell
        before = balloon.actual_pages
        failed: OutOfPages | None = None
        try:
            balloon.poll(kernel.clock_ns)
        except OutOfPages as e:
            failed = e
        if balloon.actual_pages != before:
            kernel.emit("virtio_balloon", actual_bytes=balloon.actual_pages * PAGE_SIZE,
                        target_bytes=balloon.target_pages * PAGE_SIZE)
        if failed is not None:
            # OSv's alloc_page() never returns null: the guest aborts. The poll runs after an
            # operation, outside the handler whose OutOfPages the kernel reports, so the report
            # is made here, naming the driver's thread; the OutOfMemory it raises ends the run
            # (`mmsim run`: exit 3, the summary's oom section)
            kernel._out_of_memory(failed, _Inflation(kernel.line,
                                                     balloon.inflating_pages * PAGE_SIZE))

    kernel.add_handler("host-balloon", host_balloon)
    # idle at its target, its polls do nothing (poll() skips them when it next runs)
    kernel.add_after_op(poll, lambda: balloon.next_poll_ns
                        if balloon.actual_pages != balloon.target_pages else None,
                        memory=False)  # polls are the clock's (and the host's, which wakes)
    kernel.add_category("virtio_balloon", lambda: balloon.actual_pages * PAGE_SIZE)
    kernel.add_section("virtio_balloon", balloon.summary)
    if cfg.deflate:
        registry.register(balloon)
    return balloon
