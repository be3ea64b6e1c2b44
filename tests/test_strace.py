"""The strace importer: real logs replay to the mapped bytes the log itself implies."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from mmsim.kernel import Kernel, KernelConfig

from mmsim.cli import main
from mmsim.trace import TraceError, detect_format, format_op, read_trace
from mmsim.trace.strace import HEAP_HINT, read_strace

FIXTURES = Path(__file__).parent / "fixtures" / "strace"
LOGS = sorted(FIXTURES.glob("*.strace"))
PAGE = 4096


def independent_mapped_bytes(path: Path) -> int:
    """A second, deliberately naive reading of a log: a set of application pages."""
    pages: set[int] = set()
    pending: dict[str, str] = {}
    brk: int | None = None

    def span(addr: int, length: int) -> range:
        return range(addr // PAGE, (addr + length + PAGE - 1) // PAGE)

    for line in path.read_text().splitlines():
        m = re.match(r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?(?:[\d:.]+\s+)?(.*)$", line.strip())
        assert m is not None
        pid, rest = m[1] or m[2] or "0", m[3]
        if rest.endswith(" <unfinished ...>"):
            pending[pid] = rest[: -len(" <unfinished ...>")]
            continue
        resumed = re.match(r"^<\.\.\. \w+ resumed>\s?(.*)$", rest)
        if resumed:
            rest = pending.pop(pid) + resumed[1]
        call = re.match(r"^(\w+)\((.*)\)\s+=\s+(\S+)", rest)
        if call is None or call[3].startswith("-") or call[3] == "?":
            continue
        name, ret = call[1], call[3]
        args = [a.strip() for a in call[2].split(",")]
        num = [0 if a == "NULL" else int(a, 0) if re.fullmatch(r"-?(0x)?[0-9a-f]+", a) else None
               for a in args]
        if name == "mmap":
            pages.update(span(int(ret, 0), num[1]))
        elif name == "munmap":
            pages.difference_update(span(num[0], num[1]))
        elif name == "mremap":
            pages.difference_update(span(num[0], num[1]))
            pages.update(span(int(ret, 0), num[2]))
        elif name == "brk":
            new = int(ret, 0)
            if brk is None or (args[0] == "NULL" and new != brk):
                brk = new
                continue
            old_top, new_top = -(-brk // PAGE), -(-new // PAGE)
            pages.update(range(old_top, new_top))
            pages.difference_update(range(new_top, old_top))
            brk = new
    return len(pages) * PAGE


def replay(path: Path | str, **kw: object) -> Kernel:
    kernel = Kernel(KernelConfig(memory=512 << 20, cpus=2))
    kernel.run(read_trace(path, "strace") if not kw else read_strace(path, **kw))  # type: ignore[arg-type]
    kernel.check()
    kernel.address_space.check()
    return kernel


def write_log(tmp_path: Path, text: str) -> Path:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "log.strace"
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path


# ---------------------------------------------------------------------------- real logs


def test_fixtures_exist_with_their_commands() -> None:
    assert len(LOGS) >= 2
    readme = (FIXTURES / "README.md").read_text()
    for log in LOGS:
        assert "strace -f" in readme and f"-o {log.name}" in readme


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.name)
def test_fixture_replays_to_the_logs_mapped_bytes(log: Path) -> None:
    assert detect_format(log) == "strace"
    kernel = replay(log)
    assert kernel.summary()["mmap"]["mapped_bytes"] == independent_mapped_bytes(log)
    assert kernel.summary()["mmap"]["vmas"] > 10


def test_python_fixture_features_are_exercised() -> None:
    log = FIXTURES / "python_threads.strace"
    reader = read_strace(log)
    ops = list(reader)
    kinds = {op.kind for op in ops}
    assert {"mmap", "munmap", "mprotect", "madvise", "mremap", "create"} <= kinds
    assert reader.stats.failed["ENOMEM"] == 3  # the 64 TiB bytearray
    assert all(op.time_ns is not None for op in ops)
    assert max(op.time_ns for op in ops) > 0  # type: ignore[type-var]
    for op in ops:
        format_op(op)  # every op is expressible in the native format


def test_cli_runs_a_log_auto_detected() -> None:
    result = CliRunner().invoke(main, ["run", str(LOGS[0]), "--memory", "512M", "--quiet"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        main, ["run", str(LOGS[0]), "--format", "strace", "--json", "-", "--quiet"])
    assert result.exit_code == 0 and '"mmap"' in result.output


# ---------------------------------------------------------------------------- translation


def test_unfinished_and_resumed_are_joined_per_pid(tmp_path: Path) -> None:
    log = write_log(tmp_path, """
        100 03:00:00.000000 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
        101 03:00:00.000100 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
        100 03:00:00.000200 <... mmap resumed>) = 0x7f0000000000 <0.000200>
        101 03:00:00.000300 <... mmap resumed>) = 0x7f0000100000 <0.000200>
        101 03:00:00.000400 munmap(0x7f0000000000, 4096) = 0 <0.000010>
        101 03:00:00.000500 +++ exited with 0 +++
    """)
    ops = list(read_strace(log))
    assert [(o.kind, o.handle, o.size, o.prot) for o in ops[:2]] == [
        ("mmap", "m1", 8192, 3), ("mmap", "m2", 4096, 1)]
    assert (ops[2].kind, ops[2].handle, ops[2].offset, ops[2].length) == ("munmap", "m1", 0, 4096)
    assert [o.time_ns for o in ops] == [200_000, 300_000, 400_000]
    assert [o.line for o in ops] == [3, 4, 5]
    assert replay(log).summary()["mmap"]["mapped_bytes"] == 8192


def test_pid_filter_and_bracket_prefix(tmp_path: Path) -> None:
    log = write_log(tmp_path, """
        mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        strace: Process 7 attached
        [pid   7] mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000
    """)
    assert detect_format(log) == "strace"
    assert [o.size for o in read_strace(log)] == [4096, 8192]
    assert [o.size for o in read_strace(log, pid=7)] == [8192]


STDERR_LOG = """
    mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
    mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
    strace: Process 7 attached
    [pid     7] mmap(NULL, 16384, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000
    [pid     6] <... mmap resumed>) = 0x7f0000200000
    [pid     7] +++ exited with 0 +++
    munmap(0x7f0000000000, 4096) = 0
    mmap(NULL, 32768, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000300000
    +++ exited with 0 +++
"""


def test_lines_without_a_pid_are_the_main_process(tmp_path: Path) -> None:
    """strace -f writing to stderr prefixes [pid N] only while it traces several processes:
    the started process's lines have no prefix before its first thread and after the last."""
    log = write_log(tmp_path, STDERR_LOG)
    assert [(o.kind, o.length or o.size) for o in read_strace(log, pid=6)] == [
        ("mmap", 4096), ("mmap", 8192), ("munmap", 4096), ("mmap", 32768)]
    assert [o.size for o in read_strace(log, pid=7)] == [16384]
    everything = read_strace(log)
    assert [o.length or o.size for o in everything] == [4096, 16384, 8192, 4096, 32768]
    assert everything.stats.unfinished == 0  # the main's unfinished call met its resumption
    # strace -p: the process attached before any call is the main one
    attached = write_log(tmp_path, """
        strace: Process 6 attached
        mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
    """)
    assert [o.size for o in read_strace(attached, pid=6)] == [4096]


def test_pid_not_in_the_log_is_an_error_naming_the_pids(tmp_path: Path) -> None:
    log = write_log(tmp_path / "a", STDERR_LOG)
    with pytest.raises(TraceError, match=r"--pid 5: no such pid in the log \(its pids: 6, 7\)"):
        read_strace(log, pid=5)
    unnamed = write_log(tmp_path / "b", """
        mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        strace: Process 7 attached
        [pid 7] mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000100000
    """)
    with pytest.raises(TraceError, match=r"its pids: 7; lines without a pid prefix"):
        read_strace(unnamed, pid=1)
    result = CliRunner().invoke(main, ["run", str(log), "--pid", "5", "--memory", "512M"])
    assert result.exit_code == 2
    assert result.stderr == f"mmsim: error: {log}: --pid 5: no such pid in the log (its pids: 6, 7)\n"


def test_failed_and_unknown_calls_are_skipped_and_counted(tmp_path: Path) -> None:
    log = write_log(tmp_path, """
        1 mmap(NULL, 70368744181760, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory)
        1 mprotect(0x5564b831d000, 4096, PROT_READ) = 0
        1 mlock(0x5564b831d000, 4096) = 0
        1 madvise(0x5564b831d000, 4096, MADV_WILLNEED) = 0
        1 exit_group(0) = ?
    """)
    reader = read_strace(log)
    assert list(reader) == []
    st = reader.stats
    assert st.failed == {"ENOMEM": 1, "?": 1}
    assert st.unknown_address == 1
    assert st.skipped == {"mlock": 1, "madvise MADV_WILLNEED": 1}


def test_fixed_overlays_file_descriptors_and_brk(tmp_path: Path) -> None:
    log = write_log(tmp_path, """
        5 brk(NULL) = 0x555555559000
        5 mmap(NULL, 20480, PROT_READ, MAP_PRIVATE|MAP_DENYWRITE, 3, 0) = 0x7f0000000000
        5 mmap(0x7f0000001000, 8192, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3, 0x1000) = 0x7f0000001000
        5 mprotect(0x7f0000000000, 20480, PROT_READ) = 0
        5 brk(0x55555557a000) = 0x55555557a000
        5 brk(0x555555569000) = 0x555555569000
        5 munmap(0x7f0000000000, 20480) = 0
    """)
    ops = [format_op(o) for o in read_strace(log)]
    assert ops == [
        "create /strace/fd3 20K",
        "mmap m1 20K file=/strace/fd3 prot=r",
        "munmap m1 4K 8K",
        "mmap m2 8K file=/strace/fd3 off=4K prot=rx",
        "mprotect m1 0 4K r",
        "mprotect m2 0 8K r",
        "mprotect m1 12K 8K r",
        "mmap m3 132K addr=0x100000000000",
        "mremap m3 64K",
        "munmap m1 0 4K",
        "munmap m2 0 8K",
        "munmap m1 12K 8K",
    ]
    kernel = replay(log)
    assert kernel.summary()["mmap"]["mapped_bytes"] == 64 << 10
    assert kernel.summary()["mmap"]["errors"] == {}


def test_a_growing_brk_heap_is_one_vma(tmp_path: Path) -> None:
    """Four growths (an mmap between them) make one heap VMA of the final size, as Linux's
    heap is one VMA, so huge pages can back it; shrinking and growing again stay in it."""
    log = write_log(tmp_path, """
        5 brk(NULL) = 0x555555559000
        5 brk(0x55555557a000) = 0x55555557a000
        5 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        5 brk(0x5555557a0000) = 0x5555557a0000
        5 brk(0x555555c00000) = 0x555555c00000
        5 brk(0x555556000000) = 0x555556000000
    """)
    ops = [format_op(o) for o in read_strace(log)]
    assert ops[0] == f"mmap m1 132K addr={HEAP_HINT:#x}"
    assert [o.split()[0] for o in ops] == ["mmap", "mmap", "mremap", "mremap", "mremap"]
    kernel = replay(log)
    size = 0x555556000000 - 0x555555559000
    heap = kernel.address_space.vmas.find(HEAP_HINT)
    assert heap is not None and (heap.start, heap.end) == (HEAP_HINT, HEAP_HINT + size)
    assert len(kernel.address_space.vmas.intersecting(HEAP_HINT, HEAP_HINT + (1 << 40))) == 1
    summary = kernel.summary()["mmap"]
    assert summary["vmas"] == 2 and summary["errors"] == {}
    assert summary["mapped_bytes"] == independent_mapped_bytes(log) == size + 8192


def test_brk_heap_shrinks_in_place_and_a_split_heap_grows_by_pieces(tmp_path: Path) -> None:
    log = write_log(tmp_path, """
        5 brk(NULL) = 0x555555559000
        5 brk(0x555555659000) = 0x555555659000
        5 brk(0x555555600000) = 0x555555600000
        5 madvise(0x555555560000, 8192, MADV_DONTNEED) = 0
        5 brk(0x555555700000) = 0x555555700000
        5 brk(0x555555680000) = 0x555555680000
        5 brk(0x555555559000) = 0x555555559000
        5 brk(0x555555569000) = 0x555555569000
    """)
    ops = [format_op(o) for o in read_strace(log)]
    assert ops == [
        f"mmap m1 1M addr={HEAP_HINT:#x}",
        "mremap m1 668K",  # shrinking: in place
        "madvise m1 28K 8K dontneed",  # splits the heap's VMA
        "mmap m2 1M",  # so a growth is one more mapping
        "munmap m2 512K 512K",
        "munmap m1 0 668K",
        "munmap m2 0 512K",
        f"mmap m3 64K addr={HEAP_HINT:#x}",  # all gone: a new heap
    ]
    summary = replay(log).summary()["mmap"]
    assert summary["mapped_bytes"] == independent_mapped_bytes(log) == 64 << 10
    assert summary["errors"] == {}


def test_mremap_of_a_whole_mapping_follows_it(tmp_path: Path) -> None:
    log = write_log(tmp_path, """
        9 mmap(NULL, 1052672, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        9 mremap(0x7f0000000000, 1052672, 2101248, MREMAP_MAYMOVE) = 0x7f1000000000
        9 munmap(0x7f1000000000, 4096) = 0
        9 mremap(0x7f1000001000, 4096, 8192, MREMAP_MAYMOVE) = 0x7f2000000000
    """)
    ops = [format_op(o) for o in read_strace(log)]
    assert ops[1] == "mremap m1 2052K"
    assert ops[2] == "munmap m1 0 4K"
    assert ops[3:] == ["munmap m1 4K 4K", "mmap m2 8K"]  # part of a mapping: unmap, map anew
    assert replay(log).summary()["mmap"]["mapped_bytes"] == 2101248 - 8192 + 8192


def test_mremap_of_a_mapping_linux_merged_but_the_simulator_split(tmp_path: Path) -> None:
    """mprotect of a part and back: Linux merges the VMAs again, the simulator (as OSv) never
    does, so the application's one mapping is three simulator VMAs that its mremap cannot
    take whole (it gave EFAULT, then EINVAL for the munmap of what was never grown)."""
    log = write_log(tmp_path, """
        9 mmap(NULL, 1048576, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
        9 mprotect(0x7f0000000000, 4096, PROT_NONE) = 0
        9 mprotect(0x7f0000000000, 4096, PROT_READ|PROT_WRITE) = 0
        9 mremap(0x7f0000000000, 1048576, 4194304, MREMAP_MAYMOVE) = 0x7f1000000000
        9 munmap(0x7f1000000000, 2097152) = 0
    """)
    ops = [format_op(o) for o in read_strace(log)]
    assert ops[3:] == ["munmap m1 0 4K", "munmap m1 4K 1020K", "mmap m2 4M",
                       "munmap m2 0 2M"]
    summary = replay(log).summary()["mmap"]
    assert summary["mapped_bytes"] == independent_mapped_bytes(log) == 2 << 20
    assert summary["errors"] == {}
    assert summary["vmas"] == 1


def test_mremap_across_two_mappings_keeps_file_and_protection(tmp_path: Path) -> None:
    """Two adjacent mappings of one file that Linux merged, then a read-only mprotect of both:
    the mremap maps the file anew, from the first piece's offset, read-only."""
    log = write_log(tmp_path, """
        9 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 3, 0) = 0x7f0000000000
        9 mmap(0x7f0000002000, 8192, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_FIXED, 3, 0x2000) = 0x7f0000002000
        9 mprotect(0x7f0000000000, 16384, PROT_READ) = 0
        9 mremap(0x7f0000001000, 12288, 20480, MREMAP_MAYMOVE) = 0x7f1000000000
    """)
    ops = [format_op(o) for o in read_strace(log)]
    assert ops[-4:] == ["munmap m1 4K 4K", "munmap m2 0 8K", "create /strace/fd3 24K",
                        "mmap m3 20K file=/strace/fd3 off=4K prot=r shared"]
    summary = replay(log).summary()["mmap"]
    assert summary["mapped_bytes"] == independent_mapped_bytes(log) == 24 << 10
    assert summary["errors"] == {}


def test_not_strace(tmp_path: Path) -> None:
    path = tmp_path / "x.strace"
    path.write_text("mmap a 4K\n")
    assert detect_format(path) == "native"
    path.write_text("1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3, 0) = 0x1000\nnonsense here\n")
    with pytest.raises(TraceError):
        detect_format(path)
    with pytest.raises(TraceError, match=":2:"):
        list(read_strace(path))
