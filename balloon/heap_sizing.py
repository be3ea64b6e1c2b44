"""java.cc's heap sizing, which decides whether a JVM gets a balloon at all.

OSv's launcher (java/java.cc, 2014) reads the JVM options that precede the main class or
``-jar``. With no ``-Xmx`` (nor ``-mx``) on a guest of at least 1 GiB − 4 MiB it sizes the heap
itself: ``-Xmx`` = ``-Xms`` = min(free, max_no_reclaim), in whole MiB (``-Xms`` only if the
user gave none), and only then creates the balloon ("manually setting the heap size is viewed
as a declaration of intent"). A heap sized by the user never has one in OSv; mmsim's
``jvm_balloon: true`` gives it one anyway, beyond OSv.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HeapSizing", "size_heap"]

MIB = 1 << 20


@dataclass(frozen=True)
class HeapSizing:
    """The options the JVM is started with, and the heap OSv sized (0: the user sized it)."""

    options: list[str]
    auto_heap: int  # bytes; 0 unless OSv chose -Xmx

    @property
    def osv_sized(self) -> bool:
        return self.auto_heap > 0


def _sets_max(opt: str) -> bool:
    return opt.startswith(("-Xmx", "-mx"))


def _sets_min(opt: str) -> bool:
    return opt.startswith(("-Xms", "-ms"))


def size_heap(options: list[str], phys_mem_size: int, free: int, max_no_reclaim: int,
              min_ram: int) -> HeapSizing:
    """java.cc's rule: ``options`` are the JVM's (those before the main class); returns them
    with OSv's ``-Xmx``/``-Xms`` appended when it sizes the heap."""
    if any(_sets_max(o) for o in options) or phys_mem_size < min_ram:
        return HeapSizing(list(options), 0)
    mib = min(free, max_no_reclaim) // MIB
    if mib <= 0:
        return HeapSizing(list(options), 0)
    out = [*options, f"-Xmx{mib}M"]
    if not any(_sets_min(o) for o in options):
        out.append(f"-Xms{mib}M")
    return HeapSizing(out, mib * MIB)
