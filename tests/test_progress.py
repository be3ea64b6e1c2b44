"""Progress bars of the long commands: on a terminal only, and moving while the work goes on."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

from cli_helpers import run

import mmsim.cmd_image
from mmsim.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def native_image(tmp_path: Path) -> Path:
    (tmp_path / "app.trace").write_text("# mmsim-trace v1\nmmap h 64M\ntouch h 0 32M\n")
    side = "".join(f"malloc m{i} 4K\nfree m{i}\n" for i in range(3000))
    (tmp_path / "side.trace").write_text("# mmsim-trace v1\n" + side)
    (tmp_path / "image.yaml").write_text(
        "cmdline: /tools/app.so /traces/app.trace\nfiles:\n  /traces: .\n"
        "workload: side.trace\nmemory: 512M\n")
    return tmp_path / "image.yaml"


def test_minmem_has_a_bar_over_its_trials(tmp_path, monkeypatch):
    image = native_image(tmp_path)
    bars: list[Progress] = []

    tty = _TTY()
    totals: list[int] = []

    class OnATerminal(Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "stream": tty})
            bars.append(self)
            totals.append(self._bar.total)

    tried: list[int] = []

    def trial(image: str, mib: int, timeout: float) -> tuple[bool, str, float]:
        tried.append(mib)
        assert bars and bars[0]._bar.n == len(tried) - 1  # the bar counts as trials finish
        return mib >= 100, "" if mib >= 100 else "guest out of memory", 0.01

    monkeypatch.setattr(mmsim.cmd_image, "Progress", OnATerminal)
    monkeypatch.setattr(mmsim.cmd_image, "trial", trial)
    code, out, err = run("minmem", str(image), "--low", "64M", "--high", "192M", "--step", "4M")
    assert code == 0, err
    assert out.strip() == "100 MiB"
    bar = bars[0]._bar
    assert bar.n == len(tried)
    # the estimate (both ends, the halvings, one confirmation) was the count of trials made
    assert totals == [len(tried)] == [2 + 5 + 1]
    assert "   100 MiB  runs" in tty.getvalue()  # each trial's line, above the bar


def _on_a_pty(args: list[str]) -> str:
    """What ``args`` writes to a 120-column terminal (a pty reports 0 columns by default,
    in which tqdm draws nothing)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin, stdout and stderr are the terminal
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "mmsim", *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    os.close(fd)
    return out.decode("utf-8", "replace")


def test_boot_has_a_bar_on_a_terminal_only(tmp_path):
    image = native_image(tmp_path)
    shown = _on_a_pty(["boot", str(image), "-q"])
    assert "booting" in shown and "op" in shown, shown
    plain = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(image), "-q"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "booting" not in plain.stderr


def test_counts_are_whole_numbers_and_bytes_have_units():
    """A sweep's 3 of 4 points reads "3/4", not "3.00/4.00"; a file's bytes read in KiB/MiB."""
    tty = _TTY()
    with Progress("sweeping", "grid", total=4, unit="point", stream=tty) as bar:
        for _ in range(3):
            bar.update(1)
        bar._bar.refresh()  # type: ignore[union-attr]
    text = tty.getvalue()
    assert "3/4" in text and "3.00" not in text
    tty = _TTY()
    with Progress("replaying", "t", total=3 << 20, position=lambda: 2 << 20, stream=tty) as bar:
        bar.update(1)
        bar._bar.refresh()  # type: ignore[union-attr]
    assert "2.00M/3.00M" in tty.getvalue()
