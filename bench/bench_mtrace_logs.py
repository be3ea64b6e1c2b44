"""Replay speed over several real glibc mtrace logs, not one (issue 17, items 1 and 2).

bench_mtrace.py measures one CPython log, and the replay was tuned to its shape; other
programs' logs (other callers, more reallocs, other size mixes) replay several times slower.
This bench records six real programs, each traced by glibc's libc_malloc_debug.so and the
start-up shim of tools/mtrace_shim/ (docs/mtrace.md), and measures each log in this process:

* base: reading the file and splitting each line (``for line in f: line.split()``);
* reader: the mtrace reader alone (batches of records produced, nothing replayed);
* replay: the log replayed through OSv's malloc as ``mmsim run`` does it (``read_mtrace`` into
  ``Kernel.run``; the kernel's boot excluded, it does not depend on the trace).

Each figure is the best of ``--repeat`` runs; events/s is the kernel's events over the replay's
seconds, and the ratios are against base, measured in the same process. Each log is measured
in a process of its own, as ``mmsim run`` replays one log a process, so that no log runs on
the heap and the collector's state that the logs before it left (``--in-process`` measures
them one after another in this process). The worst log decides:
``--check`` exits 1 when it replays below 1,000,000 events/s or above 3x base (issue 17's
target). ``--cli`` also replays each log with ``mmsim run LOG --json -`` in a process and fails
on anything but a clean exit (application errors are reported, not failures).

The logs are kept out of git, under /tmp/mmsim-bench/, and recorded when missing (a minute or
two, mostly cc1: glibc's tracer looks up each caller's symbol). ``setarch -R`` turns address
randomisation off, so a log recorded again on the same machine is the same file; each is cut to
its first 1,000,000 lines.

    python bench/bench_mtrace_logs.py [--dir DIR] [--logs NAME,...] [--repeat 3] [--cli] [--check]
    python bench/bench_mtrace_logs.py --kernel-only   # Kernel.run alone, over operations read beforehand
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# the same baseline, reader loop and timing as the one-log bench (bench/ is sys.path[0])
from bench_mtrace import DEBUG_LIB, best, read_and_split, reader_only  # noqa: E402
from mmsim.kernel import Kernel, KernelConfig  # noqa: E402

from mmsim.api import replay_ops  # noqa: E402
from mmsim.trace.mtrace import read_mtrace  # noqa: E402

DEFAULT_DIR = Path(tempfile.gettempdir()) / "mmsim-bench"
MAX_LINES = 1_000_000
MIN_RECORDS = 100_000
TARGET_EVENTS_PER_S = 1_000_000
TARGET_RATIO = 3.0
#: git log -p stops at this commit of mmsim's own history, so the log does not grow with it
GIT_PIN = "37fe375210a516a433f1c40d991f4bd9b30c5c7c"

# CPython, every allocation through malloc: callers carry function names (libpython's
# exported symbols), and list/str/bytearray growth makes reallocs (bench_mtrace has few)
PY_MALLOC = """\
import collections, io, re
words = [f"w{(i * 7919) % 5003}" for i in range(40000)]
buf = io.StringIO()
for i, w in enumerate(words):
    buf.write(w + (" " if i % 13 else "\\n"))
acc = []
for ln in buf.getvalue().splitlines():
    acc.append(re.sub(r"w(\\d+)", lambda m: m.group(1)[::-1], ln))
counts = collections.Counter(t for ln in acc for t in ln.split())
class Rec:
    def __init__(self, k, v):
        self.k, self.v = k, v
recs = sorted((Rec(k, v) for k, v in counts.items()), key=lambda r: (-r.v, r.k))
s = ""
for r in recs:
    s += r.k + ","
ba = bytearray()
for i in range(20000):
    ba += b"x" * (i % 7)
print(len(s), len(ba), len(recs))
"""
# CPython with pymalloc (the default): only blocks over 512 bytes reach malloc
PY_PYMALLOC = """\
keep = []
for i in range(60000):
    items = list(range(70 + i % 90))
    s = ("%d," % i) * (100 + i % 200)
    d = {j: str(j) for j in range(i % 40)}
    if i % 10 == 0:
        keep.append((s, items, d))
    if len(keep) > 2000:
        keep = keep[1000:]
print(len(keep))
"""
# Perl hashes and arrays growing in place: a realloc-heavy log (one record in ten)
PERL = ('my %h; for my $i (1..60000) { my $k = "k" . ($i * 7919 % 50021); $h{$k} .= "v$i,"; '
        'push @{$h{"l" . ($i % 997)}}, [$i, "x" x ($i % 50)]; } '
        'my $n = 0; $n += length($_) for values %h; print "$n\\n";')
SQLITE_ROWS = 20_000
CC1_FUNCTIONS = 20


def _sqlite_script() -> str:
    """Row-at-a-time inserts into an indexed table: the statement parser and the b-tree."""
    rows = "".join(f"insert into t(name, v) values ('name-{i * 7919 % 100003}', {i}.5);\n"
                   for i in range(SQLITE_ROWS))
    return ("create table t(id integer primary key, name text, v real);\n"
            "create index tn on t(name);\nbegin;\n" + rows +
            "commit;\nselect count(*), sum(v) from t;\n")


def _c_source() -> str:
    """A C file with no #include (cc1 runs without the driver's include paths): functions with
    loops, switches and calls to each other, so -O2 inlines and unrolls."""
    parts = ["typedef unsigned long u64;\n"
             "struct node { struct node *next; u64 key; char name[16]; };\n"]
    for i in range(CC1_FUNCTIONS):
        n = 16 + i % 48
        parts.append(f"""
static u64 table_{i}[{n}];
u64 fn_{i}(struct node *n, u64 x)
{{
    u64 acc = {i}u;
    for (; n; n = n->next) {{
        switch ((n->key ^ x) % 7) {{
        case 0: acc += n->key * {i * 31 + 7}u; break;
        case 1: acc ^= (acc << 5) + n->name[{i % 16}]; break;
        case 2: acc = table_{i}[acc % {n}] + x; break;
        case 3: table_{i}[x % {n}] = acc; break;
        default: acc -= x >> {i % 13}; break;
        }}
        if (acc > {i * 1000003}u) x += fn_{max(i - 1, 0)}(n->next, acc);
    }}
    return acc + x;
}}
""")
    return "".join(parts)


@dataclass(frozen=True)
class Log:
    """One real program to trace: its command line (run in ``work``, a scratch directory
    holding its input files), its environment, and what it reads on stdin."""

    name: str
    program: str  # what the table calls it
    argv: Callable[[Path], list[str]]
    env: dict[str, str]
    inputs: Callable[[Path], None] = lambda work: None
    stdin: str | None = None


def _write(name: str, text: Callable[[], str]) -> Callable[[Path], None]:
    return lambda work: (work / name).write_text(text(), encoding="utf-8")


def _program(name: str) -> str:
    """The program's full path (the traced one runs with a bare PATH)."""
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed: it is needed to record its log")
    return found


#: the interpreter itself, not a virtual environment's (whose site-packages would change the
#: start-up's allocations); no bytecode written, no user site-packages
PYTHON = [getattr(sys, "_base_executable", sys.executable), "-B", "-s"]


def _sqlite_argv(work: Path) -> list[str]:
    # the CLI when installed, else python's sqlite3 module (the same libsqlite3 underneath)
    if shutil.which("sqlite3"):
        return [_program("sqlite3"), str(work / "db.sqlite")]
    return [*PYTHON, "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.isolation_level = None; "
            "c.executescript(sys.stdin.read())", str(work / "db.sqlite")]


def _cc1(work: Path) -> list[str]:
    # cc1 itself, not the gcc driver: MALLOC_TRACE names one file, which the driver's other
    # children (as, collect2) would overwrite
    cc1 = subprocess.run([_program("gcc"), "-print-prog-name=cc1"], capture_output=True, text=True,
                         check=True).stdout.strip()
    return [cc1, "-quiet", "-O2", str(work / "big.c"), "-o", str(work / "big.s")]


def _git_log(work: Path) -> list[str]:
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{GIT_PIN}^{{commit}}"],
                      capture_output=True).returncode:
        raise SystemExit(f"git log: {ROOT} is not a git checkout holding commit {GIT_PIN}")
    return [_program("git"), "--no-pager", "-C", str(ROOT), "log", "-p", "--stat", "--no-color", GIT_PIN]


PY_ENV = {"PYTHONHASHSEED": "0"}
LOGS = [
    Log("python-malloc", "CPython, PYTHONMALLOC=malloc (text, regex, reallocs)",
        lambda work: [*PYTHON, "-c", PY_MALLOC], {**PY_ENV, "PYTHONMALLOC": "malloc"}),
    Log("python-pymalloc", "CPython, pymalloc (blocks > 512 bytes)",
        lambda work: [*PYTHON, "-c", PY_PYMALLOC],
        {**PY_ENV, "PYTHONMALLOC": "pymalloc"}),
    Log("sqlite3", f"sqlite3, {SQLITE_ROWS} inserts into an indexed table", _sqlite_argv, {},
        stdin="sql"),
    Log("cc1", f"gcc 'cc1 -O2', {CC1_FUNCTIONS} C functions", _cc1, {},
        inputs=_write("big.c", _c_source)),
    Log("git-log", "git log -p --stat of mmsim's history", _git_log,
        {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}),
    Log("perl", "perl, hashes and arrays growing", lambda work: [_program("perl"), "-e", PERL],
        {"PERL_HASH_SEED": "0", "PERL_PERTURB_KEYS": "0"}),
]


def _cut(full: Path, path: Path) -> None:
    """Keep the first MAX_LINES lines, not ending on a realloc's '<' whose '>' was cut off (the
    reader would replay it as a free: correct, but not what the program did)."""
    kept: list[str] = []
    with open(full, encoding="utf-8", errors="surrogateescape") as src:
        for n, line in enumerate(src):
            if n == MAX_LINES:
                break
            kept.append(line)
    fields = kept[-1].split() if kept else []
    if len(fields) > 1 and fields[-2] == "<":
        kept.pop()
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as dst:
        dst.writelines(kept)


def record(log: Log, path: Path) -> None:
    """Trace the program into ``path`` (its first MAX_LINES lines). Its environment is only
    what the log sets, its working directory always the same, and address randomisation off
    when setarch can do that: environment strings, paths and ASLR all move the pointers and
    the sizes, and a log recorded again should be the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shim = path.parent / "mtrace_shim.so"
    if not shim.exists():
        subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-o", str(shim),
                        str(ROOT / "tools" / "mtrace_shim" / "mtrace_shim.c")], check=True)
    full = path.with_suffix(".full")
    work = path.parent / "work" / log.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log.inputs(work)
    # only the traced program gets the preload: setarch and env stay untraced
    cmd = ["env", "-i", f"PATH={os.defpath}", "LC_ALL=C", f"LD_PRELOAD={DEBUG_LIB}:{shim}",
           f"MALLOC_TRACE={full}", *(f"{k}={v}" for k, v in log.env.items()), *log.argv(work)]
    if shutil.which("setarch") and subprocess.run(
            ["setarch", os.uname().machine, "-R", "true"], capture_output=True).returncode == 0:
        cmd = ["setarch", os.uname().machine, "-R", *cmd]
    stdin = _sqlite_script() if log.stdin == "sql" else None
    subprocess.run(cmd, cwd=work, input=stdin, text=True, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(work)
    _cut(full, path)
    full.unlink()
    got = count_records(path)
    if got < MIN_RECORDS:
        raise SystemExit(f"{path}: {log.name} wrote only {got} records (need {MIN_RECORDS})")


def count_records(path: Path) -> int:
    """Lines that are malloc records (not the '= Start' and '= End' marks)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if not line.startswith(b"="))


def settle_heap() -> None:
    """The kernel a round left, freed before the next round, as ``mmsim run`` replays in a
    process that holds no other: kept (or left to the collector, its objects being cyclic), it
    made the next rounds' replays 30-50 % slower (the collector freeing it inside their timing,
    their memory fresh pages)."""
    gc.collect()


def replay(path: Path) -> tuple[float, Kernel]:
    """Seconds of ``mmsim run``'s replay (boot excluded: the call mmsim run makes after it)
    and the kernel it left."""
    kernel = Kernel(KernelConfig(memory=2 << 30, cpus=4))
    t = time.perf_counter()
    replay_ops(kernel, read_mtrace(path), str(path))
    return time.perf_counter() - t, kernel


def kernel_only(path: Path, repeat: int) -> dict[str, float | int]:
    """The kernel side alone: the log's operations read into a list first (not timed), then
    ``Kernel.run`` over that list (boot excluded), best of ``repeat``; ratio to base. Base and
    kernel runs alternate, so that a busy spell of the machine slows both."""
    ops = list(read_mtrace(path))
    bases, times = [], []
    events = 0
    for _ in range(repeat):
        bases.append(best(lambda: read_and_split(path), 1))
        kernel = Kernel(KernelConfig(memory=2 << 30, cpus=4))
        t = time.perf_counter()
        kernel.run(ops)
        times.append(time.perf_counter() - t)
        events = kernel.events
        del kernel
        settle_heap()
    base, seconds = min(bases), min(times)
    return {"records": count_records(path), "events": events, "base_s": base,
            "kernel_s": seconds, "events_per_s": events / seconds,
            "ratio": seconds / base}


def run_cli(path: Path) -> str:
    """``mmsim run LOG --json -`` in a process: 'ok' and its application errors, or what went
    wrong (an exit code other than 0, a traceback or warning on stderr, where the readable
    summary goes with ``--json -``, a summary that is not JSON)."""
    mmsim = Path(sys.executable).with_name("mmsim")
    cmd = [str(mmsim)] if mmsim.exists() else [sys.executable, "-m", "mmsim.cli"]
    p = subprocess.run([*cmd, "run", str(path), "--json", "-"], capture_output=True, text=True)
    if p.returncode or "Traceback" in p.stderr or not p.stderr.startswith("trace "):
        return f"exit {p.returncode}: {p.stderr.strip()[:300]}"
    try:
        errors = json.loads(p.stdout).get("app_errors", {})
    except json.JSONDecodeError as e:
        return f"bad JSON: {e}"
    return f"ok, app_errors {json.dumps(errors.get('by_kind', {}), separators=(',', ':'))}"


def measure(path: Path, repeat: int) -> dict[str, float | int]:
    """Best of ``repeat`` rounds, each a base, a reader and a replay run in turn: a busy spell
    of the shared machine slows all three of a round, not the base's runs or the replay's."""
    bases, readers, runs = [], [], []
    for _ in range(repeat):
        bases.append(best(lambda: read_and_split(path), 1))
        readers.append(best(lambda: reader_only(path), 1))
        seconds, kernel = replay(path)
        runs.append((seconds, kernel.events))
        del kernel
        settle_heap()
    base, reader = min(bases), min(readers)
    seconds = min(s for s, _ in runs)
    events = runs[0][1]
    return {"records": count_records(path), "events": events, "base_s": base,
            "reader_s": reader, "replay_s": seconds, "events_per_s": events / seconds,
            "ratio": seconds / base, "reader_ratio": reader / base}


def measure_in_child(path: Path, args: argparse.Namespace) -> dict[str, float | int]:
    """measure() (or kernel_only()) of one log in a new process of this script."""
    cmd = [sys.executable, __file__, "--one", str(path), "--repeat", str(args.repeat)]
    p = subprocess.run(cmd + (["--kernel-only"] if args.kernel_only else []),
                       capture_output=True, text=True, check=False)
    if p.returncode:
        raise SystemExit(f"measuring {path} failed:\n{p.stderr.strip()}")
    return json.loads(p.stdout)


def table(rows: list[tuple[str, str, dict[str, float | int]]]) -> str:
    """The measures of each log (replay and reader, or the kernel side alone)."""
    kernel = "kernel_s" in rows[0][2]
    head = (f"{'log':<16} {'records':>9} {'events/s':>10} "
            + (f"{'kernel s':>9} {'base s':>7} {'ratio':>6}" if kernel else
               f"{'replay s':>9} {'base s':>7} {'ratio':>6} {'reader s':>9} {'reader':>7}")
            + "  program")
    out = [head, "-" * len(head)]
    for name, program, m in rows:
        cells = (f"{m['kernel_s']:>9.3f} {m['base_s']:>7.3f} {m['ratio']:>5.2f}x" if kernel else
                 f"{m['replay_s']:>9.3f} {m['base_s']:>7.3f} {m['ratio']:>5.1f}x "
                 f"{m['reader_s']:>9.3f} {m['reader_ratio']:>6.1f}x")
        out.append(f"{name:<16} {m['records']:>9,} {m['events_per_s']:>10,.0f} {cells}  {program}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                    help=f"where the logs are kept (recorded there if missing; default {DEFAULT_DIR})")
    ap.add_argument("--logs", default=",".join(log.name for log in LOGS),
                    help="comma-separated names of the logs to measure (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cli", action="store_true",
                    help="also replay each log with `mmsim run LOG --json -` in a process")
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 if the worst log is below {TARGET_EVENTS_PER_S:,} events/s "
                         f"or above {TARGET_RATIO:g}x read+split")
    ap.add_argument("--kernel-only", action="store_true",
                    help="time only Kernel.run over the log's operations, read into a list "
                         "beforehand (the reader is left out), as a ratio to base")
    ap.add_argument("--in-process", action="store_true",
                    help="measure every log in this process, one after another (default: each "
                         "in a process of its own, as mmsim run replays it)")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # a child: one log, as JSON
    args = ap.parse_args()
    if args.one is not None:
        measured = (kernel_only if args.kernel_only else measure)(args.one, args.repeat)
        print(json.dumps(measured))
        return 0
    by_name = {log.name: log for log in LOGS}
    wanted = [s for s in args.logs.split(",") if s]
    unknown = [s for s in wanted if s not in by_name]
    if unknown or not wanted:
        ap.error(f"unknown log {', '.join(unknown)} (known: {', '.join(by_name)})")
    rows = []
    failures = []
    for name in wanted:
        log = by_name[name]
        path = args.dir / f"{name}.mtrace"
        if not path.exists():
            print(f"recording {path} ...", file=sys.stderr)
            record(log, path)
        if args.cli:
            verdict = run_cli(path)
            print(f"mmsim run {path.name}: {verdict}", file=sys.stderr)
            if not verdict.startswith("ok"):
                failures.append(name)
        if args.in_process:
            rows.append((name, log.program,
                         (kernel_only if args.kernel_only else measure)(path, args.repeat)))
        else:
            rows.append((name, log.program, measure_in_child(path, args)))
    print(table(rows))
    if args.kernel_only:
        widest = max(rows, key=lambda r: r[2]["ratio"])
        print(f"\nworst: {widest[0]} kernel side {widest[2]['ratio']:.2f}x read+split; "
              f"best of {args.repeat}")
        return 1 if failures else 0
    slowest = min(rows, key=lambda r: r[2]["events_per_s"])
    widest = max(rows, key=lambda r: r[2]["ratio"])
    print(f"\nworst: {slowest[0]} {slowest[2]['events_per_s']:,.0f} events/s, "
          f"{widest[0]} {widest[2]['ratio']:.1f}x read+split (reader "
          f"{widest[2]['reader_ratio']:.1f}x); target >= {TARGET_EVENTS_PER_S:,}/s and "
          f"<= {TARGET_RATIO:g}x; best of {args.repeat}")
    if failures:
        print(f"mmsim run failed on {', '.join(failures)}", file=sys.stderr)
        return 1
    missed = (slowest[2]["events_per_s"] < TARGET_EVENTS_PER_S
              or widest[2]["ratio"] > TARGET_RATIO)
    if args.check and missed:
        print("target missed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
