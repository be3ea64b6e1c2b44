"""Wires the host's virtio-balloon: the `host-balloon SIZE` operation, its 500 ms polling in
simulated time, and its DEFLATE_ON_OOM shrinker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drivers.virtio_balloon import VirtioBalloon
from kernel.config import (
    ConfigError,
    parse_duration,
    parse_size,
    register_config_keys,
    register_config_validator,
)
from mm.constants import PAGE_SIZE

if TYPE_CHECKING:
    from kernel.kernel import Kernel

register_config_keys({
    "host_balloon": "the host's initial virtio-balloon target (a size; default 0)",
    "virtio_balloon_rate": "bytes per second the balloon can move (default 1G)",
    "virtio_balloon_deflate_on_oom": "VIRTIO_BALLOON_F_DEFLATE_ON_OOM (true/false, default false)",
    "virtio_balloon_wake_latency": "delay between a new host target and the driver's poll "
                                   "(e.g. 1ms; default: none, the next 500 ms poll sees it)",
})


def _settings(extra: dict[str, Any]) -> tuple[int, int, bool, int | None]:
    try:
        target = parse_size(extra.get("host_balloon", 0))
        rate = parse_size(extra.get("virtio_balloon_rate", 1 << 30))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    latency = extra.get("virtio_balloon_wake_latency")
    if latency is not None:
        try:
            latency = parse_duration(latency)
        except ValueError as e:
            raise ConfigError(f"'virtio_balloon_wake_latency': {e}") from None
    deflate = extra.get("virtio_balloon_deflate_on_oom", False)
    if not isinstance(deflate, bool):
        raise ConfigError("'virtio_balloon_deflate_on_oom' must be true or false")
    if rate < PAGE_SIZE:
        raise ConfigError("'virtio_balloon_rate' must be at least 4K per second")
    return target, rate, deflate, latency


register_config_validator(_settings)  # each value checked as the configuration is loaded


def attach(kernel: Kernel) -> VirtioBalloon:
    target, rate, deflate, latency = _settings(kernel.config.extra)
    ranges = kernel.ranges
    balloon = VirtioBalloon(kernel.pool, lambda: ranges.free_pages,
                            rate_bytes_per_s=rate, deflate_on_oom=deflate)
    balloon.set_target(target)

    def host_balloon(op: Any) -> None:
        if op.size > ranges.total_pages * PAGE_SIZE:
            kernel.errors.report("balloon_target_too_large", op.line, op.kind,
                                 f"target {op.size} exceeds total memory; clamped")
        balloon.set_target(min(op.size, ranges.total_pages * PAGE_SIZE))
        if latency is not None:
            balloon.wake(kernel.clock_ns + latency)
        kernel.wake_threads()

    def poll() -> None:
        before = balloon.actual_pages
        balloon.poll(kernel.clock_ns)
        if balloon.actual_pages != before:
            kernel.emit("virtio_balloon", actual_bytes=balloon.actual_pages * PAGE_SIZE,
                        target_bytes=balloon.target_pages * PAGE_SIZE)

    kernel.add_handler("host-balloon", host_balloon)
    kernel.add_after_op(poll, lambda: balloon.next_poll_ns)
    kernel.add_category("virtio_balloon", lambda: balloon.actual_pages * PAGE_SIZE)
    kernel.add_section("virtio_balloon", balloon.summary)
    registry = getattr(kernel, "shrinkers", None)
    if registry is not None and deflate:
        registry.register(balloon)
    kernel.virtio_balloon = balloon  # type: ignore[attr-defined]
    return balloon
