"""An unlinked file's write-cache pages are freed once nothing maps it (reference §7): they were
kept in the ``page_cache`` category for good after munmap + unlink."""

from __future__ import annotations

import pytest
from helpers import booter
from mmsim.kernel import Kernel
from mmsim.kernel import sys_fs as _sys_fs  # noqa: F401  (registers the file system's keys)

from mmsim.trace import parse_native

boot = booter("256M", cpus=2)


def replay(k: Kernel, text: str) -> None:
    k.run(parse_native(text.strip().splitlines()))
    k.check()  # pages are conserved: free + every category == total
    k.address_space.check()
    k.zfs.check()


def page_cache(k: Kernel) -> int:
    return k.memory_categories()["page_cache"]


def free_and_cached(k: Kernel) -> int:
    """Free pages, with the ones parked in the L1/L2 caches (they are free for reuse)."""
    cats = k.memory_categories()
    return k.summary()["memory"]["free_bytes"] + cats["l1_cache"] + cats["l2_cache"]


SETUP = """
create /f 1M
mmap m 1M file=/f shared
touch m 0 64K w
"""


def test_munmap_then_unlink_frees_the_write_cache():
    k = boot()
    replay(k, "create /f 1M\nread /f 0 1M")  # the ARC holds the file, as after the mmap
    before = free_and_cached(k)
    replay(k, SETUP)
    assert page_cache(k) == 64 << 10
    replay(k, "munmap m")
    assert page_cache(k) == 64 << 10  # a cache: munmap writes back, the pages stay (OSv)
    assert k.summary()["mmap"]["page_cache"]["written_back_bytes"] == 64 << 10
    replay(k, "unlink /f")
    assert page_cache(k) == 0
    assert free_and_cached(k) >= before  # every write-cache page came back (and the ARC's)


def test_unlink_while_mapped_frees_at_the_last_munmap():
    k = boot()
    replay(k, SETUP + "mmap n 1M file=/f shared\ntouch n 64K 64K w\nunlink /f\n"
                      "touch m 128K 64K w\n")  # written after the unlink: still the vnode's
    assert page_cache(k) == 192 << 10
    replay(k, "munmap m")
    assert page_cache(k) == 192 << 10  # n still maps the file
    replay(k, "munmap n")
    assert page_cache(k) == 0


@pytest.mark.parametrize("gone", ["unlink /f", "create /f 1M"])
def test_a_live_or_recreated_file(gone):
    k = boot()
    replay(k, SETUP + "munmap m\n" + gone)
    assert page_cache(k) == 0  # recreating the path is another file: the old pages go too
    k2 = boot()
    replay(k2, SETUP + "munmap m\ncreate /g 1M\nunlink /g")  # another file's unlink
    assert page_cache(k2) == 64 << 10
