"""Where a sweep's points run: local worker processes or a Dask cluster."""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Any, Protocol

from mmsim.sweep_file import SweepError
from mmsim.sweep_points import run_task


class Backend(Protocol):
    """Where tasks run: a concurrent.futures-style executor that may need renewing."""

    slots: int

    def submit(self, task: dict[str, Any]) -> tuple[Future, int]: ...

    def broken(self, exc: BaseException, generation: int) -> bool: ...

    def close(self) -> None: ...


class LocalBackend:
    """A spawn process pool (fork after a JVM started in the parent would hang). A pool whose
    worker died is replaced, and the points it was running run again each in its own process."""

    def __init__(self, workers: int) -> None:
        import multiprocessing

        self.workers = workers
        self.slots = 2 * workers
        self._ctx = multiprocessing.get_context("spawn")
        self._pool: Any = None
        self._generation = 0

    def _make(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, mp_context=self._ctx)

    def submit(self, task: dict[str, Any]) -> tuple[Future, int]:
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._pool = self._make()
        try:
            return self._pool.submit(run_task, task), self._generation
        except BrokenProcessPool:  # broke before its futures told us
            self._renew()
            self._pool = self._make()
            return self._pool.submit(run_task, task), self._generation

    def _renew(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._generation += 1

    def broken(self, exc: BaseException, generation: int) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        if not isinstance(exc, BrokenProcessPool):
            return False
        if generation == self._generation:
            self._renew()
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskBackend:
    """An existing dask.distributed cluster, through its concurrent.futures executor; pure=False
    so that two identical points are two runs."""

    def __init__(self, address: str) -> None:
        try:
            from dask.distributed import Client
        except ImportError:
            raise SweepError("--dask needs dask.distributed: pip install 'mmsim[dask]'") from None
        from distributed.comm.addressing import parse_address, parse_host_port

        try:
            scheme, location = parse_address(address)
            if scheme in ("tcp", "tls"):
                parse_host_port(location)  # else a half-made Client hangs a minute in __del__
            self.client = Client(address, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise SweepError(f"cannot connect to the Dask scheduler ({e})", address) from None
        self.executor = self.client.get_executor(pure=False)
        threads = sum(self.client.nthreads().values())
        self.slots = max(2, 2 * threads)

    def submit(self, task: dict[str, Any]) -> tuple[Future, int]:
        return self.executor.submit(run_task, task), 0

    def broken(self, exc: BaseException, generation: int) -> bool:
        return False  # the scheduler retries on lost workers itself, then reports KilledWorker

    def close(self) -> None:
        try:
            self.executor.shutdown(wait=False)
        finally:
            self.client.close()


def default_workers() -> int:
    """The CPUs this process may run on (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
