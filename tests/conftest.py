"""Hypothesis profiles: `ci` bounds examples so that .ci/run stays within its time budget."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, stateful_step_count=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("long", max_examples=2000, stateful_step_count=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def trace(tmp_path):
    """Write a trace file in the test's folder and return its path."""

    def write(text: str, name: str = "t.trace") -> str:
        p = tmp_path / name
        p.write_text(text)
        return str(p)

    return write


@pytest.fixture(autouse=True, scope="session")
def _no_exit_in_the_test_process():
    """`mmsim boot` leaves with os._exit (a JVM application may hold non-daemon threads): run
    in-process by a test, it would end pytest itself with the image's status, 0 included, and
    the rest of the suite would silently not run. In this process os._exit raises SystemExit
    instead (click's test runner turns it into the exit code); children exit as ever."""
    real_exit = os._exit
    pid = os.getpid()

    def guarded_exit(status: int) -> None:
        if os.getpid() != pid:
            real_exit(status)
        raise SystemExit(status)

    os._exit = guarded_exit
    yield
    os._exit = real_exit
