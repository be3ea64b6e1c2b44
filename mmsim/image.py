"""OSv images: a manifest with Capstanfile's keys, booted on the simulated kernel.

A manifest (YAML, read safely, every key validated with file:line errors)::

    base: cloudius/osv-openjdk          # informative, as in a Capstanfile
    cmdline: /java.so -Xmx256m -cp /app Hello world
    build: javac -d build/classes Hello.java
    files:
      /app: build/classes                # image path: host path (relative to the manifest)
      /app/config.properties: conf/dev.properties   # a file; its directories are implied
    memory: 1G                           # the guest's RAM (--memory overrides it)
    cpus: 2
    kernel: {arc_size: 64M}              # configuration keys, as in the configuration file
    workload: reads.trace                # a trace replayed alongside the application

``cmdline`` is ``/java.so [JVM options] -cp PATH MAIN [ARGS]`` (a real JVM, hosted in this
process, runs MAIN's main(ARGS) with those options) or ``/tools/NAME.so TRACE`` (a native
application: the trace is its memory behaviour). ``build`` runs before boot, in the manifest's
directory, only when a source changed since the last build (keyed by the modification times of
the files beside the manifest, kept in ``build/.mmsim-build``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmsim.api import InputError, boot, replay_errors
from mmsim.kernel import (
    AppThread,
    BootError,
    ConfigError,
    Kernel,
    KernelConfig,
    OutOfMemory,
    apply_settings,
    load_yaml,
    parse_size,
)
from mmsim.trace import Op, read_trace

__all__ = [
    "BootOutcome", "ImageError", "JavaApp", "Manifest", "NativeApp", "boot_image",
    "classpath_host", "load_manifest", "run_build",
]

KEYS = ("base", "cmdline", "files", "build", "memory", "cpus", "rootfs", "kernel", "workload")
BUILD_DIR = "build"
STAMP = ".mmsim-build"
CLASSPATH_FLAGS = ("-cp", "-classpath", "--class-path")
EXIT_OK, EXIT_OOM, EXIT_APP = 0, 3, 4
PACE_WAIT_S = 0.0005  # while the workload waits for the app's progress, poll it this often
PACE_STEP_NS = 1_000_000  # the app runs about this much simulated time between two rounds
BLOCKED_POLLS = 20  # polls without progress before asking whether the app is blocked for good


class ImageError(InputError, ValueError):
    """A bad manifest, file or build; str() is one line naming the file (and line), and
    `mmsim` exits 2 on it like on any input error."""

    def __init__(self, message: str, path: str | None = None, line: int = 0) -> None:
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(where + message)


@dataclass
class JavaApp:
    options: list[str]
    classpath: list[str]  # image paths
    main: str
    args: list[str]


@dataclass
class NativeApp:
    tool: str
    trace: str  # image path
    args: list[str]


@dataclass
class Manifest:
    path: str
    dir: str
    cmdline: str
    app: JavaApp | NativeApp
    files: dict[str, str] = field(default_factory=dict)  # image path -> absolute host path
    base: str | None = None
    build: list[str] = field(default_factory=list)
    memory: int | None = None
    cpus: int | None = None
    rootfs: str | None = None  # zfs or rofs; --rootfs overrides it
    kernel: dict[str, Any] = field(default_factory=dict)
    workload: str | None = None
    lines: dict[str, int] = field(default_factory=dict)

    def host_path(self, image_path: str) -> str | None:
        """The host file or directory behind an image path (longest ``files`` prefix)."""
        best = None
        for img, host in self.files.items():
            root = img.rstrip("/") or "/"
            if image_path == root or image_path.startswith(root.rstrip("/") + "/"):
                if best is None or len(root) > len(best[0]):
                    best = (root, host)
        if best is None:
            return None
        rest = image_path[len(best[0]):].lstrip("/")
        return os.path.join(best[1], rest) if rest else best[1]

    def below(self, image_path: str) -> list[str]:
        """The ``files`` entries strictly inside an image path: a directory they imply (or
        whose content they add to or replace)."""
        prefix = image_path.rstrip("/") + "/"
        return sorted(img for img in self.files if img.startswith(prefix))


# -- reading the manifest ------------------------------------------------------------------------

def parse_cmdline(cmdline: str) -> JavaApp | NativeApp:
    """``/java.so [options] -cp PATH MAIN [ARGS]`` or ``/tools/NAME.so TRACE``."""
    try:
        words = shlex.split(cmdline)
    except ValueError as e:
        raise ValueError(f"cmdline: {e}") from None
    if not words:
        raise ValueError("cmdline is empty")
    prog, rest = words[0], words[1:]
    if prog == "/java.so":
        options: list[str] = []
        i = 0
        while i < len(rest) and rest[i].startswith("-") and rest[i] not in CLASSPATH_FLAGS:
            if rest[i] == "-jar":
                raise ValueError("cmdline: -jar is not supported; use -cp JAR MAIN")
            options.append(rest[i])
            i += 1
        if i >= len(rest) or rest[i] not in CLASSPATH_FLAGS:
            raise ValueError("cmdline: /java.so needs -cp PATH MAIN [ARGS]")
        if len(rest) < i + 3:
            raise ValueError("cmdline: -cp PATH must be followed by a main class")
        classpath = [p for p in rest[i + 1].split(":") if p]
        if not classpath or not all(p.startswith("/") for p in classpath):
            raise ValueError("cmdline: class path entries must be absolute image paths")
        return JavaApp(options, classpath, rest[i + 2], rest[i + 3:])
    if prog.startswith("/tools/") and prog.endswith(".so"):
        if not rest:
            raise ValueError(f"cmdline: {prog} needs a TRACE (an image path)")
        return NativeApp(prog, rest[0], rest[1:])
    raise ValueError(f"cmdline must start with /java.so or /tools/NAME.so, not '{prog}'")


def load_manifest(path: str) -> Manifest:
    """Read and validate an image manifest; ImageError names the file and line."""
    try:
        data = load_yaml(path)
    except ConfigError as e:
        raise ImageError(str(e)) from None
    lines: dict[str, int] = data.get("__lines__", {})
    for key in data:
        if key != "__lines__" and key not in KEYS:
            raise ImageError(f"unknown key '{key}' (known: {', '.join(KEYS)})", path,
                             lines.get(key, 0))
    mdir = os.path.dirname(os.path.abspath(path))

    def fail(key: str, message: str) -> ImageError:
        return ImageError(message, path, lines.get(key, 0))

    cmdline = data.get("cmdline")
    if not isinstance(cmdline, str):
        raise fail("cmdline", "'cmdline' is required: /java.so ... or /tools/NAME.so TRACE")
    try:
        app = parse_cmdline(cmdline)
    except ValueError as e:
        raise fail("cmdline", str(e)) from None
    m = Manifest(path=path, dir=mdir, cmdline=cmdline, app=app, lines=lines)
    if "base" in data:
        if not isinstance(data["base"], str):
            raise fail("base", "'base' must be a string (the base image's name)")
        m.base = data["base"]
    files = data.get("files") or {}
    if not isinstance(files, dict):
        raise fail("files", "'files' must map image paths to host paths")
    flines = files.get("__lines__", {})
    for img, host in files.items():
        if img == "__lines__":
            continue
        line = flines.get(img, lines.get("files", 0))
        if not isinstance(img, str) or not img.startswith("/"):
            raise ImageError(f"files: image path {img!r} must be absolute", path, line)
        if not isinstance(host, str) or not host:
            raise ImageError(f"files: {img}: host path must be a string", path, line)
        m.files[img] = os.path.normpath(os.path.join(mdir, os.path.expanduser(host)))
    build = data.get("build")
    if build is not None:
        cmds = [build] if isinstance(build, str) else build
        if not isinstance(cmds, list) or not all(isinstance(c, str) and c for c in cmds):
            raise fail("build", "'build' must be a command or a list of commands")
        m.build = list(cmds)
    if "memory" in data:
        try:
            m.memory = parse_size(data["memory"])
        except ValueError as e:
            raise fail("memory", f"memory: {e}") from None
    if "cpus" in data:
        c = data["cpus"]
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 256:
            raise fail("cpus", f"'cpus' must be an integer in 1..256, not {c!r}")
        m.cpus = c
    if "rootfs" in data:
        if data["rootfs"] not in ("zfs", "rofs"):
            raise fail("rootfs", f"'rootfs' must be zfs or rofs, not {data['rootfs']!r}")
        m.rootfs = data["rootfs"]
    kern = data.get("kernel") or {}
    if not isinstance(kern, dict):
        raise fail("kernel", "'kernel' must be a mapping of configuration keys")
    m.kernel = kern
    if data.get("workload") is not None:
        w = data["workload"]
        if not isinstance(w, str):
            raise fail("workload", "'workload' must be a trace's path")
        m.workload = os.path.normpath(os.path.join(mdir, w))
    kernel_config(m)  # every kernel key's value, named with its line, before any build or boot
    return m


def check_files(m: Manifest) -> None:
    """Every host path exists, and the class path / trace lie in the image's files (a class
    path directory may be implied by the files under it)."""
    for img, host in m.files.items():
        if not os.path.exists(host):
            hint = " (apt-get install libh2-java)" if host.endswith("h2.jar") else ""
            raise ImageError(f"files: {img}: no such host file '{host}'{hint}", m.path,
                             m.lines.get("files", 0))
    for img, host in sorted(m.files.items()):
        inside = m.below(img)
        if inside and not os.path.isdir(host):
            raise ImageError(f"files: {inside[0]}: '{img}' is a file ('{host}'), not a "
                             "directory", m.path, m.lines.get("files", 0))
    java = isinstance(m.app, JavaApp)
    wanted = m.app.classpath if isinstance(m.app, JavaApp) else [m.app.trace]
    for p in wanted:
        host = m.host_path(p)
        if (host is None or not os.path.exists(host)) and not (java and m.below(p)):
            raise ImageError(f"cmdline: '{p}' is not in the image's files", m.path,
                             m.lines.get("cmdline", 0))
    if m.workload is not None and not os.path.exists(m.workload):
        raise ImageError(f"workload: no such trace '{m.workload}'", m.path,
                         m.lines.get("workload", 0))


# -- building ------------------------------------------------------------------------------------

def _source_key(m: Manifest) -> str:
    h = hashlib.sha256("\0".join(m.build).encode())
    for root, dirs, names in os.walk(m.dir):
        dirs[:] = sorted(d for d in dirs if d != BUILD_DIR and not d.startswith("."))
        for name in sorted(names):
            if name.endswith((".yaml", ".yml", ".md")):
                continue
            p = os.path.join(root, name)
            st = os.stat(p)
            h.update(f"{os.path.relpath(p, m.dir)}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
    return h.hexdigest()


def run_build(m: Manifest) -> bool:
    """Run the manifest's build if its sources changed; True if it ran. One build at a time
    per image (a lock beside the output), so concurrent boots share it."""
    if not m.build:
        return False
    out = os.path.join(m.dir, BUILD_DIR)
    os.makedirs(out, exist_ok=True)
    stamp = os.path.join(out, STAMP)
    with open(os.path.join(out, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = _source_key(m)
        with contextlib.suppress(OSError), open(stamp, encoding="utf-8") as f:
            if f.read().strip() == key:
                return False
        for cmd in m.build:
            try:
                res = subprocess.run(shlex.split(cmd), cwd=m.dir, capture_output=True, text=True)
            except (OSError, ValueError) as e:
                raise ImageError(f"build: cannot run '{cmd}' ({e})", m.path,
                                 m.lines.get("build", 0)) from None
            if res.returncode:
                tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
                raise ImageError(f"build: '{cmd}' failed (exit {res.returncode}): "
                                 + " | ".join(tail), m.path, m.lines.get("build", 0))
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(key + "\n")
    return True


# -- booting -------------------------------------------------------------------------------------

def kernel_config(m: Manifest, memory: int | None = None, cpus: int | None = None
                  ) -> KernelConfig:
    config = KernelConfig()
    try:
        config = apply_settings(config, m.kernel, m.path)
        top = {k: v for k, v in (("memory", m.memory), ("cpus", m.cpus), ("rootfs", m.rootfs))
               if v is not None}
        if top:  # with their lines in the manifest, for the messages
            lines = {k: m.lines.get(k, 0) for k in top}
            config = apply_settings(config, {**top, "__lines__": lines}, m.path)
        over = {k: v for k, v in (("memory", memory), ("cpus", cpus)) if v is not None}
        if over:
            config = apply_settings(config, over)
    except ConfigError as e:
        raise ImageError(str(e)) from None
    return config


def jvm_options(app: JavaApp, config: KernelConfig) -> list[str]:
    """The image's JVM options, plus what the JVM would see of the guest: its RAM and CPUs
    (HotSpot's ergonomics then pick the heap sizes and the collector as on the guest)."""
    opts = list(app.options)
    if not any(o.startswith("-XX:MaxRAM=") for o in opts):
        opts.append(f"-XX:MaxRAM={config.memory}")
    if not any(o.startswith("-XX:ActiveProcessorCount=") for o in opts):
        opts.append(f"-XX:ActiveProcessorCount={config.cpus}")
    return opts


def _image_files(m: Manifest) -> Iterator[tuple[str, str, int]]:
    """(image path, host path, size) of every file the image holds."""
    for img, host in sorted(m.files.items()):
        if os.path.isdir(host):
            for root, dirs, names in os.walk(host):
                dirs.sort()
                for name in sorted(names):
                    if name.startswith(".mmsim") or name == ".lock":
                        continue
                    p = os.path.join(root, name)
                    rel = os.path.relpath(p, host)
                    yield img.rstrip("/") + "/" + rel, p, os.path.getsize(p)
        else:
            yield img, host, os.path.getsize(host)


def classpath_host(m: Manifest, image_path: str) -> str | None:
    """The host path the JVM reads for a class path entry (its class path is host paths).

    An entry that is a ``files`` entry, or lies inside a directory entry, is that host file or
    directory. A directory with ``files`` entries inside it (implied by them, or a directory
    entry that they add to) is mirrored as a tree of symbolic links to the image's files under
    it, so that the JVM sees exactly the image's directory, wherever on the host its files come
    from and whatever they are called there. The tree is kept in the user's cache
    (``~/.cache/mmsim/classpath/``), named by its content, and shared by later boots.
    """
    if not m.below(image_path):
        return m.host_path(image_path)
    prefix = image_path.rstrip("/") + "/"
    links: dict[str, str] = {}
    for img, host, _size in _image_files(m):  # an entry sorts before the entries inside it
        if img.startswith(prefix):
            links[img[len(prefix):]] = host
    try:
        return _link_tree(links)
    except OSError as e:
        raise ImageError(f"cmdline: cannot lay out '{image_path}' for the JVM ({e})", m.path,
                         m.lines.get("cmdline", 0)) from None


def _link_tree(links: dict[str, str]) -> str:
    """A directory holding ``relative path -> symbolic link to host path`` for each item."""
    key = hashlib.sha256("".join(f"{rel}\0{host}\n" for rel, host in sorted(links.items()))
                         .encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out = os.path.join(cache, "mmsim", "classpath", key)
    if os.path.isdir(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out))
    try:
        for rel, host in sorted(links.items()):
            link = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(host, link)
        os.rename(tmp, out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(out):  # not another process that got there first
            raise
    return out


@dataclass
class BootOutcome:
    summary: dict[str, Any]
    status: int  # EXIT_OK, EXIT_OOM or EXIT_APP
    message: str = ""


class _Source:
    """The trace the kernel's current operation came from (the app's or the workload's), so
    that an operation the guest cannot run is named by its file and line."""

    path = ""


def _ops(path: str, source: _Source | None = None) -> Iterator[Any]:
    for op in read_trace(path):
        if source is not None:
            source.path = path
        yield op


def boot_image(m: Manifest, memory: int | None = None, cpus: int | None = None, *,
               app_output_to_stderr: bool = False,
               on_kernel: Callable[[Kernel], Callable[[], None] | None] | None = None
               ) -> BootOutcome:
    """Boot the image, run its application (and workload) to completion, and summarise.

    ``on_kernel`` is called with the booted kernel and may return a function to call as the
    run goes on (after each workload operation and each JVM tick): the timeline's sampler.
    """
    run_build(m)
    check_files(m)
    config = kernel_config(m, memory, cpus)
    kernel = boot(config)  # InputError ("cannot boot: ...") as for `mmsim run`
    tick = on_kernel(kernel) if on_kernel is not None else None
    started = time.perf_counter()
    image_files = list(_image_files(m))
    app_info: dict[str, Any] = {"cmdline": m.cmdline}
    source = _Source()
    source.path = m.path
    with replay_errors(kernel, lambda: source.path):  # as mmsim run's, naming the trace
        status, message, app_info = _run_app(kernel, m, config, image_files, source, app_info,
                                             app_output_to_stderr, tick)
    app_info["wall_seconds"] = round(time.perf_counter() - started, 3)
    summary = kernel.summary()
    summary["image"] = m.path
    summary["app"] = app_info
    return BootOutcome(summary, status, message)


def _run_app(kernel: Kernel, m: Manifest, config: KernelConfig,
             image_files: list[tuple[str, str, int]], source: _Source, app_info: dict[str, Any],
             app_output_to_stderr: bool, tick: Callable[[], None] | None
             ) -> tuple[int, str, dict[str, Any]]:
    """The image's files, then its application beside its workload; (status, message, app)."""
    status, message = EXIT_OK, ""
    try:
        for img, _host, size in image_files:
            kernel.apply(Op("create", 0, path=img, size=size))
        workload = _ops(m.workload, source) if m.workload else iter(())
        if isinstance(m.app, JavaApp):
            app_info.update(kind="java", main=m.app.main, args=m.app.args)
            code, err = _run_java(kernel, m, m.app, config, image_files, workload,
                                  app_output_to_stderr, tick)
        else:
            app_info.update(kind="native", tool=m.app.tool, trace=m.app.trace)
            code, err = _run_native(kernel, m, m.app, workload, tick, source)
        app_info.update(exit_code=code, error=err)
        if code:
            status, message = EXIT_APP, f"the application failed: {err or f'exit {code}'}"
    except OutOfMemory as e:
        status = EXIT_OOM
        oom = e.report
        message = (f"out of memory ({oom['reason']}): {oom['op']} needed "
                   f"{oom['requested_bytes']} bytes, {oom['free_bytes']} free")
        app_info.update(exit_code=None, error="guest out of memory")
        jvm = kernel.jvm
        if jvm is not None:
            jvm.finish(None)
    return status, message, app_info


def _run_native(kernel: Kernel, m: Manifest, app: NativeApp, workload: Iterator[Any],
                tick: Callable[[], None] | None = None, source: _Source | None = None
                ) -> tuple[int, str | None]:
    """The native application's trace, interleaved op by op with the side workload."""
    host = m.host_path(app.trace)
    assert host is not None
    ops = _ops(host, source)
    live = [ops, workload]
    while live:
        for it in list(live):
            op = next(it, None)
            if op is None:
                live.remove(it)
            else:
                kernel.apply(op)
                if tick is not None:
                    tick()
    kernel.jvm.finish(0)
    return 0, None


def _run_java(kernel: Kernel, m: Manifest, app: JavaApp, config: KernelConfig,
              image_files: list[tuple[str, str, int]], workload: Iterator[Any],
              to_stderr: bool, tick: Callable[[], None] | None = None
              ) -> tuple[int, str | None]:
    jvm = kernel.jvm
    cp_host = [h for h in (classpath_host(m, p) for p in app.classpath) if h]
    try:
        host = jvm.launch(jvm_options(app, config), cp_host)
    except BootError as e:
        raise ImageError(str(e), m.path, m.lines.get("cmdline", 0)) from None
    # the JVM reads its class path from the image's file system as it starts
    for img, _h, _s in image_files:
        if any(img == p or img.startswith(p.rstrip("/") + "/") for p in app.classpath):
            kernel.apply(Op("read", 0, path=img, offset=0, length=None))
    sys.stdout.flush()
    runner = AppThread(host, app.main, list(app.args))
    with host.app_output_to_stderr(to_stderr):
        _drive_java(kernel, jvm, runner, workload, tick)
    return _finish_java(kernel, jvm, runner.outcome)


def replay_paced(kernel: Any, workload: Iterator[Any], clock: Any,
                 after_op: Callable[[], None] | None = None) -> bool:
    """Replay the side workload's operations while ``clock`` (an :class:`kernel.sys_jvm.
    AppClock`) lets them: while the kernel's clock, which the workload's own disk reads and
    sleeps advance, is at or behind the application's simulated time (all of them once the
    application is done). ``after_op`` runs after each. False once the workload is exhausted."""
    while clock.lets(kernel.clock_ns):
        op = next(workload, None)
        if op is None:
            return False
        kernel.apply(op)
        if after_op is not None:
            after_op()
    return True


def _let_run(host: Any, clock: Any, step_ns: int) -> None:
    """Let the (resumed) application run until it has allocated ``step_ns`` of simulated time
    more, or for :data:`PACE_WAIT_S` if it allocates nothing (it sleeps or waits): each read
    costs ~25 us, so a round stops it within about a MiB of the step on an idle host."""
    target = clock.bytes0 + clock.allocated + step_ns * clock.rate // 1_000_000_000
    deadline = time.perf_counter() + PACE_WAIT_S
    while host.app_allocated_bytes() < target and time.perf_counter() < deadline:
        pass


def _drive_java(kernel: Kernel, jvm: Any, runner: AppThread, workload: Iterator[Any],
                tick: Callable[[], None] | None) -> None:
    """Run main() on its thread, the side workload paced by the application's progress, until
    both are done. Each round reads the app's allocated bytes (its simulated time), replays
    the workload up to that time (the balloon thread running after each operation), then
    applies what the JVM did (collections, committed heap) at that time. The host's load
    changes how many rounds there are, not where the workload stands when the JVM acts."""
    first = next(workload, None)  # no workload: the app is never paused (balloon/jvm.py)
    pending = first is not None
    if pending:
        workload = itertools.chain([first], workload)
    clock, host = jvm.clock, jvm.host

    def after_op() -> None:
        jvm.balloon_tick()
        if tick is not None:
            tick()

    try:
        jvm.restart_clock()
        try:
            runner.start()
        except Exception as e:  # no such class: the application's error, as java would say
            runner.outcome.exit_code, runner.outcome.error = 1, "exception"
            runner.outcome.message = str(e)
        idle = 0
        while True:
            alive = runner.alive
            if alive and pending:
                host.pause_app()  # the app waits while the workload catches up with it
            try:
                before = clock.now_ns
                jvm.observe()
                idle = idle + 1 if clock.now_ns == before else 0
                clock.free = not alive or (idle >= BLOCKED_POLLS and host.app_blocked())
                if pending:
                    pending = replay_paced(kernel, workload, clock, after_op)
                jvm.tick(observe=False)
            finally:
                host.resume_app()
            if tick is not None:
                tick()
            if not alive and not pending:
                break
            if pending and alive:
                _let_run(host, clock, PACE_STEP_NS)
            elif idle:
                time.sleep(PACE_WAIT_S)  # the app sleeps or waits
        runner.join()
    except OutOfMemory:
        host.resume_app()
        runner.stop()
        raise


def _finish_java(kernel: Kernel, jvm: Any, out: Any) -> tuple[int, str | None]:
    if out.error is not None:
        kind = {"OutOfMemoryError": "OutOfMemoryError", "exit": "System.exit"}.get(
            out.error, "java_exception")
        text = f"{out.exception_class}: {out.message}" if out.exception_class else out.message
        kernel.errors.report(kind, 0, "java", text)
    jvm.finish(out.exit_code)
    return out.exit_code, (f"{out.exception_class or out.error}: {out.message}"
                           if out.error else None)
