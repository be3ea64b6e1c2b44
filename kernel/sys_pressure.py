"""Wires memory pressure: the allocator's hook to the reclaimer, and the shrinkers it calls.

User shrinkers are named in the configuration (``shrinkers: [module:attr, ...]``): a class (made
with no arguments), an object with ``request_memory(target, hard)``, or a callable
``fn(target, hard) -> bytes``, registered after the kernel's own, like OSv's C API shrinkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kernel.config import ConfigError, parse_duration, register_config_keys
from mm.constants import PAGE_SIZE
from shrinker import Reclaimer, ShrinkerRegistry

if TYPE_CHECKING:
    from kernel.kernel import Kernel

register_config_keys({
    "shrinkers": "list of user shrinkers as 'module:attr'",
    "reclaimer_wake_latency": "simulated delay between a wake and the reclaimer's pass (e.g. 1ms)",
})


class PagePoolShrinker:
    """Gives the L1/L2 page caches back to the runs, on hard pressure only.

    OSv has no such shrinker (its fill threads alone drain the caches); a hard pass that
    ignored up to ~2 MiB per CPU of cached pages would declare out-of-memory too early.
    """

    name = "page_pool"

    def __init__(self, kernel: Kernel) -> None:
        self.pool = kernel.pool

    def request_memory(self, target: int, hard: bool) -> int:
        return self.pool.drain() * PAGE_SIZE if hard else 0


def _wake_latency(value: Any) -> int:
    """A duration (``1ms``, ``0.5s``, a number of seconds) in nanoseconds."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"'reclaimer_wake_latency': {e}") from None


def load_user_shrinker(spec: Any) -> Any:
    """Import ``module:attr``; a class is instantiated with no arguments."""
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"shrinker {spec!r} must be written 'module:attr'")
    module_name, attr = spec.split(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load shrinker {spec!r}: {e}") from None
    if isinstance(obj, type):
        obj = obj()
    if not hasattr(obj, "name"):
        try:
            obj.name = attr
        except AttributeError:
            pass
    return obj


def attach(kernel: Kernel) -> None:
    registry = ShrinkerRegistry()
    reclaimer = Reclaimer(kernel.ranges, registry)
    kernel.shrinkers = registry
    kernel.reclaimer = reclaimer
    kernel.ranges.on_alloc = reclaimer.on_alloc
    kernel.pool.wait_for_pages = reclaimer.wait_for_pages
    latency = _wake_latency(kernel.config.extra.get("reclaimer_wake_latency", 0))
    reclaimer.clock = lambda: kernel.clock_ns

    def reclaimer_thread() -> None:
        """The reclaimer's pass, ``latency`` after the wake that is pending (wake-one)."""
        if reclaimer.pending and kernel.clock_ns - reclaimer.woken_ns >= latency:
            reclaimer.run()

    def due() -> int | None:
        return reclaimer.woken_ns + latency if reclaimer.pending else None

    kernel.add_after_op(reclaimer_thread, due)
    reclaimer.on_pass.append(lambda target, hard, freed: kernel.emit(
        "reclaim", target_bytes=target, hard=hard, freed_bytes=freed,
        by_shrinker={n: s["last_yield_bytes"] for n, s in registry.summary().items()}))
    kernel.add_section("shrinker", lambda: {**registry.summary(), "reclaimer": reclaimer.summary()})


def attach_user_shrinkers(kernel: Kernel) -> None:
    """The page caches' shrinker after every other kernel shrinker (pages those free go to the
    L1 caches first), then the user's, in the configuration's order."""
    kernel.shrinkers.register(PagePoolShrinker(kernel))
    specs = kernel.config.extra.get("shrinkers") or []
    if not isinstance(specs, list):
        raise ConfigError("'shrinkers' must be a list of 'module:attr'")
    for spec in specs:
        try:
            obj = load_user_shrinker(spec)
            kernel.shrinkers.register(obj, name=spec.split(":")[1])
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
