"""Wires memory pressure: the allocator's hook to the reclaimer, and the shrinkers it calls.

User shrinkers are named in the configuration (``shrinkers: [module:attr, ...]``): a class (made
with ``kernel=`` a :class:`ShrinkerKernel` if it takes that parameter, else with no arguments),
an object with ``request_memory(target, hard)``, or a callable ``fn(target, hard) -> bytes``,
registered after the kernel's own, like OSv's C API shrinkers (docs/configuration.md).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any

from mmsim.kernel.config import (
    ConfigError,
)
from mmsim.kernel.held_pages import HeldPages
from mmsim.kernel.units import parse_duration
from mmsim.mm.constants import PAGE_SIZE, WATERMARK_LO_PERCENT
from mmsim.shrinker import Reclaimer, ShrinkerRegistry

if TYPE_CHECKING:
    from mmsim.kernel.kernel import Kernel

#: shrinkers mmsim can add that OSv does not have (off by default; docs/configuration.md)
EXTRA_SHRINKERS = ("page_pool", "malloc_pools")



def extra_shrinkers(extra: dict[str, Any]) -> list[str]:
    """The ``extra_shrinkers`` a configuration turns on; ValueError names a bad one."""
    names = extra.get("extra_shrinkers") or []
    if not isinstance(names, list) or any(n not in EXTRA_SHRINKERS for n in names):
        raise ValueError(f"'extra_shrinkers' must be a list of {', '.join(EXTRA_SHRINKERS)}, "
                         f"not {names!r}")
    return names




class PagePoolShrinker:
    """Gives the L1/L2 page caches back to the runs, on hard pressure only (the option
    ``extra_shrinkers: [page_pool]``).

    OSv has no such shrinker (its fill threads alone drain the caches, and pages in the
    caches stay unusable to a waiter, so OSv declares out-of-memory with them still held).
    """

    name = "page_pool"

    def __init__(self, kernel: Kernel) -> None:
        self.pool = kernel.pool

    def request_memory(self, target: int, hard: bool) -> int:
        return self.pool.drain() * PAGE_SIZE if hard else 0


def check_wake_latency(extra: dict[str, Any]) -> int:
    """``reclaimer_wake_latency`` from ``config.extra`` (ns); ConfigError if bad."""
    return _wake_latency(extra.get("reclaimer_wake_latency", 0))


def _wake_latency(value: Any) -> int:
    """A duration (``1ms``, ``0.5s``, a number of seconds) in nanoseconds."""
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"'reclaimer_wake_latency': {e}") from None




class ShrinkerKernel:
    """What a user shrinker sees of the kernel (its ``kernel`` argument, or ``attach(kernel)``):
    memory figures, simulated time, and a cache of simulated pages of its own.

    The cache's pages are real guest memory (the ``user_shrinkers`` category): ``alloc`` takes
    them from the page allocator (so the guest feels the pressure) and ``free`` gives them back
    to the free runs, so free memory rises by exactly the bytes ``free`` returns, which is what
    ``request_memory`` should then answer. The registry believes no more than that rise.
    """

    page_size = PAGE_SIZE

    def __init__(self, kernel: Kernel, registry: ShrinkerRegistry, spec: str) -> None:
        self._kernel = kernel
        self._registry = registry
        self._spec = spec
        ranges = kernel.ranges

        def give(extents: list[tuple[int, int]]) -> None:
            for start, n in extents:  # straight to the runs: free memory rises by as much
                ranges.free(start, n)

        self._cache = HeldPages(lambda n: kernel.pool.alloc_pages(n, kernel.cpu), give)

    @property
    def held_pages(self) -> int:
        return self._cache.pages

    @property
    def total_bytes(self) -> int:
        return self._kernel.ranges.total_pages * PAGE_SIZE

    @property
    def free_bytes(self) -> int:
        """Bytes in free runs (OSv's stats::free: the page caches count as used)."""
        return self._kernel.ranges.free_pages * PAGE_SIZE

    @property
    def clock_ns(self) -> int:
        return self._kernel.clock_ns

    @property
    def held_bytes(self) -> int:
        """Bytes the cache holds."""
        return self.held_pages * PAGE_SIZE

    def alloc(self, nbytes: int) -> int:
        """Take whole pages for ``nbytes`` into the cache; returns the bytes taken. Raises
        MemoryError if the guest cannot give them (after the reclaimer tried). Not allowed
        inside ``request_memory`` (a shrinker gives memory back then)."""
        if self._registry.calling is not None:
            raise RuntimeError("alloc() inside request_memory: a shrinker may only free there")
        npages = -(-int(nbytes) // PAGE_SIZE)
        if npages <= 0:
            return 0
        self._cache.take(npages)
        return npages * PAGE_SIZE

    def free(self, nbytes: int) -> int:
        """Give back up to ``nbytes`` of the cache (whole pages, newest first) to the free
        runs; returns the bytes freed (free memory rises by as much)."""
        if nbytes <= 0:
            return 0
        return self._cache.give(-(-int(nbytes) // PAGE_SIZE)) * PAGE_SIZE


def _import(module_name: str, paths: list[str]) -> Any:
    """Import a module with ``paths`` (the configuration's folder, the current one) searched
    first, for the import only."""
    added = [p for p in paths if p not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(module_name)
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def _error(e: BaseException) -> str:
    detail = str(e).splitlines()[0] if str(e) else ""
    return type(e).__name__ + (f": {detail}" if detail else "")


def _accepts_kernel(cls: type) -> bool:
    try:
        return "kernel" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


def load_user_shrinker(spec: Any, face: ShrinkerKernel | None = None,
                       paths: list[str] | None = None) -> Any:
    """Import ``module:attr``. A class is instantiated, with ``kernel=`` (a
    :class:`ShrinkerKernel`, ``face``) if its constructor has that parameter, else with no arguments; an
    object with ``attach(kernel)`` is given it after. Every failure is a ValueError naming the
    shrinker and what went wrong, in one line."""
    if (not isinstance(spec, str) or spec.count(":") != 1
            or not all(spec.split(":"))):
        raise ValueError(f"shrinker {spec!r} must be written 'module:attr'")
    module_name, attr = spec.split(":")
    where = f"shrinker '{spec}'"
    try:
        obj = getattr(_import(module_name, paths or []), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load {where}: {e}") from None
    except Exception as e:  # the module itself failed as it was imported
        raise ValueError(f"{where}: importing {module_name} raised {_error(e)}") from None
    if isinstance(obj, type):
        try:
            obj = obj(kernel=face) if face is not None and _accepts_kernel(obj) else obj()
        except Exception as e:
            raise ValueError(f"{where}: {attr}() raised {_error(e)}") from None
    if face is not None and callable(getattr(obj, "attach", None)):
        try:
            obj.attach(face)
        except Exception as e:
            raise ValueError(f"{where}: attach(kernel) raised {_error(e)}") from None
    fn = getattr(obj, "request_memory", None)
    what = "request_memory" if fn is not None else attr
    if fn is None:
        fn = obj
    if not callable(fn):
        raise ValueError(f"{where}: neither callable nor an object with request_memory")
    try:
        inspect.signature(fn).bind(0, False)
    except TypeError as e:
        raise ValueError(f"{where}: {what} must take (target, hard): {e}") from None
    except ValueError:
        pass  # no signature to check (a builtin): its first call will tell
    if not hasattr(obj, "name"):
        try:
            obj.name = attr
        except AttributeError:
            pass
    return obj


def attach(kernel: Kernel) -> tuple[ShrinkerRegistry, Reclaimer]:
    """The shrinker registry and the reclaimer, wired to the page allocator's pressure hooks."""
    registry = ShrinkerRegistry(lambda: kernel.ranges.free_pages * PAGE_SIZE)
    reclaimer = Reclaimer(kernel.ranges, registry)
    kernel.ranges.on_alloc = reclaimer.on_alloc
    # the reclaimer wakes only under its watermark (the JVM heap it may count is never
    # negative): above it the allocator need not call it
    kernel.ranges.on_alloc_percent = WATERMARK_LO_PERCENT
    kernel.pool.wait_for_pages = reclaimer.wait_for_pages
    kernel.pool.min_memory = reclaimer.wait_for_minimum_memory  # before every L2 refill batch
    latency = _wake_latency(kernel.config.extra.get("reclaimer_wake_latency", 0))
    reclaimer.clock = lambda: kernel.clock_ns

    def reclaimer_thread() -> None:
        """The reclaimer's pass, ``latency`` after the wake that is pending (wake-one)."""
        if reclaimer.pending and kernel.clock_ns - reclaimer.woken_ns >= latency:
            reclaimer.run()

    def due() -> int | None:
        return reclaimer.woken_ns + latency if reclaimer.pending else None

    # its work comes from a wake (which arms the threads), not from free memory as such; and
    # what a pass frees or evicts may give the other threads work
    kernel.add_after_op(reclaimer_thread, due, memory=False)
    reclaimer.on_wake.append(kernel.arm_threads)
    reclaimer.on_pass.append(lambda target, hard, freed: kernel.arm_threads())
    reclaimer.on_pass.append(lambda target, hard, freed: kernel.emit(
        "reclaim", target_bytes=target, hard=hard, freed_bytes=freed,
        by_shrinker={n: s["last_yield_bytes"] for n, s in registry.summary().items()}))
    kernel.add_section("shrinker", lambda: {**registry.summary(), "reclaimer": reclaimer.summary()})
    return registry, reclaimer


def attach_user_shrinkers(kernel: Kernel, registry: ShrinkerRegistry) -> None:
    """The page caches' shrinker if asked for (not OSv's) after every kernel shrinker (pages
    those free go to the L1 caches first), then the user's, in the configuration's order.

    A user shrinker's modules are looked for in the configuration file's folder and the current
    one too; its answers are checked and capped at what free memory rose by (verify)."""
    if "page_pool" in extra_shrinkers(kernel.config.extra):
        registry.register(PagePoolShrinker(kernel))
    specs = kernel.config.extra.get("shrinkers") or []
    if not isinstance(specs, list):
        raise ConfigError("'shrinkers' must be a list of 'module:attr'")
    if not specs:
        return
    paths = [p for p in (kernel.config.base_dir, os.getcwd()) if p]
    faces: list[ShrinkerKernel] = []
    kernel.add_category("user_shrinkers", lambda: sum(f.held_pages for f in faces) * PAGE_SIZE)
    for spec in specs:
        face = ShrinkerKernel(kernel, registry, spec)
        faces.append(face)
        try:
            obj = load_user_shrinker(spec, face, paths)
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e)) from None
        registry.register(obj, name=spec.split(":")[1] if isinstance(spec, str) else None,
                                  verify=True, origin=str(spec))
