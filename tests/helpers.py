"""What many test files need: a booted kernel, native trace lines applied to it, and the check
that an error is what mmsim promises (one line, ``mmsim: error:``, exit 2, no traceback)."""

from __future__ import annotations

from typing import Any

from mmsim.kernel import Kernel

from mmsim.api import EXIT_BAD_INPUT, boot, configure
from mmsim.trace.native import parse_native


def boot_kernel(memory: str | int = "256M", **settings: Any) -> Kernel:
    """A guest of ``memory`` with ``settings`` (configuration keys, as in a YAML file)."""
    return boot(configure(None, {"memory": memory, **settings}))


def apply_lines(kernel: Kernel, *lines: str) -> None:
    """Apply native trace lines (``mmap a 1M``, ...) one by one."""
    for op in parse_native(list(lines)):
        kernel.apply(op)


def assert_one_line_error(code: int, err: str, *fragments: str,
                          exit_code: int = EXIT_BAD_INPUT) -> None:
    """``err`` is one line naming what is wrong (every fragment in it), with ``exit_code``."""
    assert code == exit_code, (code, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err, err
    assert all(f in err for f in fragments), (fragments, err)


def booter(memory: str | int = "256M", **defaults: Any) -> Any:
    """A test file's ``boot(memory=..., **settings)``: its own default guest."""

    def boot_(memory: str | int = memory, **settings: Any) -> Kernel:
        return boot_kernel(memory, **{**defaults, **settings})

    return boot_


def ids_trace(n: int = 3000, distinct: int = 400, seed: int = 7) -> str:
    """A skewed block trace (a fixed LCG, so the file is the same everywhere)."""
    x, out = seed, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        u = (x >> 11) / float(1 << 53)
        out.append(str(int(distinct * u * u * u)))  # small ids are much more popular
    return "\n".join(out) + "\n"
