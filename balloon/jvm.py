"""The host JVM: one real HotSpot hosted in this process through JPype (jpype-jvm.md).

A process can start one JVM and never restart it, so this module keeps it as a singleton:
:func:`start_jvm` starts it with the options of the first image and returns the same
:class:`HostJvm` for later calls with the same options; different options raise
:class:`JvmOptionsConflict`, telling the user to run in a new process. Never fork after it
started (a GC-heavy call in the child hangs): use spawned processes.

Everything the simulator reads of the JVM is real: heap usage and the GC notifications
(MemoryMXBean, GarbageCollectorMXBeans), the heap's address range and native memory tracking
(the DiagnosticCommand MBean), object addresses (sun.misc.Unsafe, to see a GC move a balloon).
"""

from __future__ import annotations

import contextlib
import gc as pygc
import hashlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AppOutcome", "AppThread", "GcEvent", "HostJvm", "JvmError", "JvmOptionsConflict",
    "current_jvm", "find_jvm_path", "start_jvm",
]

MIB = 1 << 20
#: options mmsim adds to every JVM: the System.exit guard needs a SecurityManager (JDK 17), and
#: native memory tracking reports the JVM's footprint outside the heap
ADDED_OPTIONS = ("-Djava.security.manager=allow", "-XX:NativeMemoryTracking=summary")
_HELPER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "java")
_HELPER = "MmsimNoExit"


class JvmError(RuntimeError):
    """The host JVM cannot do what was asked; str() is a one-line message for the user."""


class JvmOptionsConflict(JvmError):
    """The process's JVM runs with other options; only a new process can have different ones."""


@dataclass(frozen=True)
class GcEvent:
    """One real collection, as its notification reported it (heap pools only)."""

    name: str
    cause: str
    start_ms: float  # epoch milliseconds
    duration_ms: int
    heap_used_after: int
    heap_committed_after: int
    #: triggered by the host (JPype's Python-GC link, or mmsim itself), not by the application
    host: bool
    #: the heap's use just before: the most it held, so the pages it has touched
    heap_used_before: int = 0


@dataclass
class AppOutcome:
    """How an application's main() ended."""

    exit_code: int = 0
    #: ``OutOfMemoryError``, ``exception``, ``exit`` (System.exit with a non-zero status) or None
    error: str | None = None
    message: str = ""
    exception_class: str | None = None


# -- finding the JDK ---------------------------------------------------------------------------

def _libjvm_of(home: str) -> str | None:
    for rel in ("lib/server/libjvm.so", "jre/lib/amd64/server/libjvm.so", "lib/libjvm.so"):
        p = os.path.join(home, rel)
        if os.path.isfile(p):
            return p
    return None


def find_jvm_path(configured: str | None = None) -> str:
    """The libjvm.so to host: ``configured`` (a libjvm.so or a JDK home), else $MMSIM_JVM,
    else the JDK of the ``javac`` on the PATH (so classes the project compiles always load),
    else JPype's default. Several JDKs may be installed; $JAVA_HOME is not trusted blindly."""
    for cand in (configured, os.environ.get("MMSIM_JVM")):
        if cand:
            if os.path.isfile(cand):
                return cand
            lib = _libjvm_of(cand) if os.path.isdir(cand) else None
            if lib is None:
                raise JvmError(f"no JVM at '{cand}' (give a libjvm.so or a JDK directory)")
            return lib
    javac = shutil.which("javac")
    if javac:
        home = os.path.dirname(os.path.dirname(os.path.realpath(javac)))
        lib = _libjvm_of(home)
        if lib:
            return lib
    try:
        import jpype
    except ImportError:
        raise JvmError("JPype is not installed (pip install 'jpype1>=1.5,<2')") from None
    try:
        return str(jpype.getDefaultJVMPath())
    except Exception as e:  # JPype's JVMNotFoundException
        raise JvmError(f"no JVM found ({e}); install a JDK 17") from None


def _jdk_home(jvm_path: str) -> str:
    d = os.path.dirname(os.path.realpath(jvm_path))
    for _ in range(4):
        if os.path.isfile(os.path.join(d, "release")):
            return d
        d = os.path.dirname(d)
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(jvm_path))))


def java_major(jvm_path: str) -> int | None:
    """The JDK's feature version from its ``release`` file (None if unknown)."""
    try:
        with open(os.path.join(_jdk_home(jvm_path), "release"), encoding="utf-8") as f:
            m = re.search(r'JAVA_VERSION="(\d+)', f.read())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _compile_helper(jvm_path: str) -> str:
    """Compile the Java helper once per source and JDK, in the user's cache; its directory."""
    src = os.path.join(_HELPER_DIR, _HELPER + ".java")
    with open(src, "rb") as f:
        key = hashlib.sha1(f.read() + jvm_path.encode()).hexdigest()[:16]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    out = os.path.join(cache, "mmsim", "java", key)
    if os.path.isfile(os.path.join(out, _HELPER + ".class")):
        return out
    javac = os.path.join(_jdk_home(jvm_path), "bin", "javac")
    if not os.path.isfile(javac):
        javac = shutil.which("javac") or "javac"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(out))
    try:
        res = subprocess.run([javac, "-nowarn", "-d", tmp, src], capture_output=True, text=True)
    except OSError as e:
        raise JvmError(f"cannot run javac ({e}); install a JDK 17") from None
    if res.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise JvmError(f"javac failed on {src}: {res.stderr.strip().splitlines()[-1:]}")
    try:
        os.rename(tmp, out)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# -- the singleton -----------------------------------------------------------------------------

_HOST: HostJvm | None = None
_LOCK = threading.Lock()


def current_jvm() -> HostJvm | None:
    """The process's JVM if one was started."""
    return _HOST


def start_jvm(options: Sequence[str], jvm_path: str | None = None,
              classpath: Sequence[str] = ()) -> HostJvm:
    """The process's JVM, started now with ``options`` (plus :data:`ADDED_OPTIONS`) if it is
    the first call; a later call must ask for the same options and JVM. ``classpath`` goes on
    the system class path if the JVM starts now, else is added to JPype's loader."""
    global _HOST
    opts = list(options)
    path = find_jvm_path(jvm_path)
    with _LOCK:
        if _HOST is not None:
            if _HOST.requested != opts or _HOST.jvm_path != path:
                raise JvmOptionsConflict(
                    "this process's JVM was started with "
                    f"'{' '.join(_HOST.requested) or '(no options)'}' ({_HOST.jvm_path}); a JVM "
                    "cannot be restarted, so run an image needing "
                    f"'{' '.join(opts) or '(no options)'}' in a new process")
            _HOST.add_classpath(classpath)
            return _HOST
        _HOST = HostJvm(opts, path, list(classpath))
        return _HOST


def _java_message(e: Any) -> str:
    try:
        msg = e.getMessage()
        return str(msg) if msg is not None else ""
    except Exception:
        return str(e)


def _java_class(e: Any) -> str:
    try:
        return str(e.getClass().getName())
    except Exception:
        return type(e).__name__


def _caused_by_oom(e: Any) -> bool:
    seen = 0
    while e is not None and seen < 16:
        if _java_class(e) == "java.lang.OutOfMemoryError":
            return True
        try:
            e = e.getCause()
        except Exception:
            return False
        seen += 1
    return False


def _check_options(jvm_path: str, options: Sequence[str], requested: Sequence[str]) -> None:
    """Refuse options the JVM would die of: HotSpot ends the whole process (``exit(1)`` from
    inside JNI_CreateJavaVM) on some bad options, e.g. two collectors or -Xms over -Xmx, so
    they are tried first in a throwaway ``java -version`` (about 50 ms)."""
    java = os.path.join(_jdk_home(jvm_path), "bin", "java")
    if not os.access(java, os.X_OK):
        return  # a bare libjvm: nothing to try them with
    try:
        res = subprocess.run([java, *options, "-version"], capture_output=True, text=True,
                             timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return
    if res.returncode != 0:
        said = [s.strip() for s in (res.stdout + res.stderr).splitlines() if s.strip()
                and not s.startswith("Error occurred during initialization")
                and not s.startswith("Error: Could not create the Java Virtual Machine")
                and not s.startswith("Error: A fatal exception")]
        raise JvmError(f"the JVM refuses '{' '.join(requested)}': "
                       f"{'; '.join(said[:2]) or f'exit {res.returncode}'}")


#: Suspend the application's threads between rounds while a side workload is pending
#: (:meth:`HostJvm.pause_app`). main() runs on a Java thread of its own (the helper's runMain),
#: so no suspended thread can hold Python's lock; when main() ran on a Python thread through
#: JPype, a suspension landing as it returned deadlocked the process (a CI run hung there,
#: 2026-12-06). What remains is Thread.suspend's own hazard: a thread suspended while it holds
#: a lock the simulator's next call into Java needs (a class being loaded, say).
PAUSE_APP = True


class HostJvm:
    """The started JVM and the management beans mmsim reads."""

    def __init__(self, options: list[str], jvm_path: str, classpath: list[str] | None = None
                 ) -> None:
        try:
            import jpype
        except ImportError:
            raise JvmError("JPype is not installed (pip install 'jpype1>=1.5,<2')") from None
        self._jp = jpype
        self.requested = list(options)
        self.jvm_path = jvm_path
        self.major = java_major(jvm_path)
        if self.major is not None and self.major >= 24:
            raise JvmError(f"{jvm_path} is JDK {self.major}: its SecurityManager is gone, so "
                           "System.exit could not be guarded; choose a JDK 17 (jvm_path)")
        helper = _compile_helper(jvm_path)
        extra = [o for o in ADDED_OPTIONS if not any(x.split("=")[0] == o.split("=")[0]
                                                      for x in options)]
        self.options = list(options) + extra
        _check_options(jvm_path, self.options, options)
        started = time.perf_counter()
        import jpype.config

        jpype.config.destroy_jvm = False  # a non-daemon app thread must not block our exit
        try:
            jpype.startJVM(*self.options, jvmpath=jvm_path, classpath=[helper, *(classpath or [])],
                           interrupt=False, convertStrings=False)
        except (RuntimeError, OSError) as e:
            raise JvmError(f"the JVM did not start with '{' '.join(options)}': {e}") from None
        self.start_seconds = time.perf_counter() - started
        self._init_beans()
        self._events: queue.Queue[GcEvent] = queue.Queue()
        self._py_gc: deque[tuple[float, float]] = deque(maxlen=256)
        self._own_gc: deque[tuple[float, float]] = deque(maxlen=256)
        self._gc_started = 0.0
        pygc.callbacks.append(self._on_python_gc)
        self._install_listener()
        self.NoExit = jpype.JClass(_HELPER)
        # JDK 17 prints a four-line deprecation notice on the process's stderr (not through
        # System.err) when a SecurityManager is installed: mute fd 2 for that call only
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                self.NoExit.install()
        finally:
            os.dup2(saved, 2)
            os.close(saved)

    # -- beans ---------------------------------------------------------------------------------
    def _init_beans(self) -> None:
        jp = self._jp
        # JClass, not `import java...`: JPype's import hook costs ~0.7 s of package probing
        cls = jp.JClass
        Object, String = cls("java.lang.Object"), cls("java.lang.String")
        ManagementFactory = cls("java.lang.management.ManagementFactory")
        MemoryType = cls("java.lang.management.MemoryType")
        ObjectName = cls("javax.management.ObjectName")

        self._mf = ManagementFactory
        self.memory = ManagementFactory.getMemoryMXBean()
        self.heap_pools = [p for p in ManagementFactory.getMemoryPoolMXBeans()
                           if p.getType() == MemoryType.HEAP]
        self.heap_pool_names = {str(p.getName()) for p in self.heap_pools}
        self.gc_beans = list(ManagementFactory.getGarbageCollectorMXBeans())
        self.gc_names = [str(b.getName()) for b in self.gc_beans]
        self._start_epoch_ms = float(ManagementFactory.getRuntimeMXBean().getStartTime())
        diag = jp.JClass("com.sun.management.HotSpotDiagnosticMXBean")
        self._hotspot = ManagementFactory.getPlatformMXBean(diag)
        self._server = ManagementFactory.getPlatformMBeanServer()
        self._dcmd_name = ObjectName("com.sun.management:type=DiagnosticCommand")
        self._dcmd_sig = jp.JArray(String)(["[Ljava.lang.String;"])
        self._Object = Object
        self._String = String
        unsafe_cls = jp.JClass("sun.misc.Unsafe")
        fld = unsafe_cls.class_.getDeclaredField("theUnsafe")
        fld.setAccessible(True)
        self._unsafe = fld.get(None)
        self._OA = jp.JArray(Object)
        self._oa_base = int(self._unsafe.arrayBaseOffset(self._OA.class_))
        self._oop_size = int(self._unsafe.arrayIndexScale(self._OA.class_))
        self.max_heap_bytes = int(self.vm_option("MaxHeapSize"))
        self.heap_range = self._heap_range()
        self._ByteArray = jp.JArray(jp.JByte)
        self._SoftReference = jp.JClass("java.lang.ref.SoftReference")
        self._System = cls("java.lang.System")
        self.Thread = cls("java.lang.Thread")

    @contextlib.contextmanager
    def app_output_to_stderr(self, to_stderr: bool = True) -> Iterator[None]:
        """While inside: the app's System.out goes to System.err (when ``to_stderr``), so that a
        command printing JSON on stdout keeps it clean; System.out is flushed on the way out."""
        system = self._System
        saved = system.out
        if to_stderr:
            system.setOut(system.err)
        try:
            yield
        finally:
            system.out.flush()
            if to_stderr:
                system.setOut(saved)

    def vm_option(self, name: str) -> str:
        return str(self._hotspot.getVMOption(name).getValue())

    def dcmd(self, op: str, *args: str) -> str:
        """A diagnostic command (what ``jcmd`` would run), e.g. ``vmNativeMemory summary``."""
        jp = self._jp
        params = jp.JArray(self._Object)([jp.JArray(self._String)(list(args))])
        return str(self._server.invoke(self._dcmd_name, op, params, self._dcmd_sig))

    def _heap_range(self) -> tuple[int, int] | None:
        text = self.dcmd("gcHeapInfo")
        lo = hi = None
        for group in re.findall(r"\[(0x[0-9a-f]+(?:,\s*0x[0-9a-f]+)+)\)", text):
            vals = [int(v, 16) for v in re.findall(r"0x[0-9a-f]+", group)]
            lo = vals[0] if lo is None else min(lo, vals[0])
            hi = vals[-1] if hi is None else max(hi, vals[-1])
        return (lo, hi) if lo is not None and hi is not None else None

    def heap(self) -> tuple[int, int, int]:
        """(used, committed, max) of the heap now."""
        h = self.memory.getHeapMemoryUsage()
        return int(h.getUsed()), int(h.getCommitted()), int(h.getMax())

    def gc_totals(self) -> tuple[int, int]:
        """(collections, milliseconds) since the JVM started, every collector."""
        n = t = 0
        for b in self.gc_beans:
            n += max(0, int(b.getCollectionCount()))
            t += max(0, int(b.getCollectionTime()))
        return n, t

    def native_committed(self) -> dict[str, int]:
        """Committed bytes by native-memory-tracking category (the heap's included)."""
        text = self.dcmd("vmNativeMemory", "summary")
        out: dict[str, int] = {}
        for name, kb in re.findall(r"-\s+([A-Za-z][\w ]*?)\s+\(reserved=\d+KB, committed=(\d+)KB",
                                   text):
            out[name.strip()] = int(kb) * 1024
        return out

    def file_rss(self) -> int:
        """Resident bytes of the JDK's own files in this process (libjvm.so, the module image,
        the class-data archive): the code the guest would load with the JVM."""
        home = _jdk_home(self.jvm_path)
        total = 0
        inside = False
        try:
            with open("/proc/self/smaps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line[0] in "0123456789abcdef" and "-" in line.split(" ", 1)[0]:
                        parts = line.split()
                        inside = len(parts) >= 6 and parts[5].startswith(home)
                    elif inside and line.startswith("Rss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            return 0
        return total

    def address_of(self, obj: Any) -> int:
        """The object's address in the real heap (to see a GC move it)."""
        holder = self._OA(1)
        holder[0] = obj
        if self._oop_size == 8:
            return int(self._unsafe.getLong(holder, self._oa_base))
        narrow = int(self._unsafe.getInt(holder, self._oa_base)) & 0xFFFF_FFFF
        hi = self.heap_range[1] if self.heap_range else 1 << 32
        if hi <= 1 << 32:
            return narrow  # unscaled compressed oops
        shift = (int(self.vm_option("ObjectAlignmentInBytes")) - 1).bit_length()
        if hi <= 1 << (32 + shift):
            return narrow << shift  # zero-based
        base = self.heap_range[0] if self.heap_range else 0
        return base + (narrow << shift)  # heap-based: close enough for moves

    def new_byte_array(self, nbytes: int) -> Any:
        """A real byte[] in the heap; raises MemoryError if the JVM has no room for it."""
        try:
            return self._ByteArray(nbytes)
        except self._jp.JException as e:
            if _caused_by_oom(e):
                raise MemoryError(_java_message(e)) from None
            raise

    def soft_reference(self, obj: Any) -> Any:
        """A java.lang.ref.SoftReference to ``obj``: the JVM clears every soft reference
        before it throws an OutOfMemoryError, so a balloon held only this way can never be
        why the application runs out of heap (``get()`` also keeps it recently used)."""
        return self._SoftReference(obj)

    def system_gc(self) -> None:
        """A full GC asked by the host (counted apart from the application's)."""
        t0 = time.time() * 1000
        self._System.gc()
        self._own_gc.append((t0, time.time() * 1000))

    # -- GC notifications ---------------------------------------------------------------------
    def _on_python_gc(self, phase: str, info: dict) -> None:
        # JPype runs System.gc() from Python's collector: remember when Python's collector ran
        now = time.time() * 1000
        if phase == "start":
            self._gc_started = now
        else:
            self._py_gc.append((self._gc_started, now))

    def _is_host(self, cause: str, start: float, end: float) -> bool:
        if cause != "System.gc()":
            return False
        for a, b in list(self._py_gc) + list(self._own_gc):
            if a - 2 <= end and start <= b + 2:
                return True
        return False

    def _install_listener(self) -> None:
        jp = self._jp
        Gcni = jp.JClass("com.sun.management.GarbageCollectionNotificationInfo")
        NotificationEmitter = jp.JClass("javax.management.NotificationEmitter")
        NotificationListener = jp.JClass("javax.management.NotificationListener")

        kind = str(Gcni.GARBAGE_COLLECTION_NOTIFICATION)
        host = self

        @jp.JImplements(NotificationListener)
        class _Listener:
            @jp.JOverride
            def handleNotification(self, n: Any, handback: Any) -> None:  # noqa: N802
                # runs on the JVM's notification thread: read, queue, return (no simulator work)
                try:
                    if str(n.getType()) != kind:
                        return
                    info = Gcni.from_(n.getUserData())
                    gi = info.getGcInfo()
                    used = committed = 0
                    for k, u in gi.getMemoryUsageAfterGc().items():
                        if str(k) in host.heap_pool_names:
                            used += int(u.getUsed())
                            committed += int(u.getCommitted())
                    before = sum(int(u.getUsed()) for k, u in gi.getMemoryUsageBeforeGc().items()
                                 if str(k) in host.heap_pool_names)
                    start = host._start_epoch_ms + int(gi.getStartTime())
                    end = host._start_epoch_ms + int(gi.getEndTime())
                    cause = str(info.getGcCause())
                    host._events.put(GcEvent(str(info.getGcName()), cause, start,
                                             int(gi.getDuration()), used, committed,
                                             host._is_host(cause, start, end), before))
                except Exception as e:  # else Java prints only "PyExceptionProxy"
                    host.listener_errors.append(repr(e))

        self.listener_errors: list[str] = []
        self._listener = _Listener()
        for b in self.gc_beans:
            jp.JObject(b, NotificationEmitter).addNotificationListener(self._listener, None, None)

    def poll_gc(self, timeout: float = 0.0) -> list[GcEvent]:
        """GC events since the last poll; waits up to ``timeout`` seconds for the first."""
        out: list[GcEvent] = []
        with contextlib.suppress(queue.Empty):
            out.append(self._events.get(timeout=timeout) if timeout > 0 else
                       self._events.get_nowait())
            while True:
                out.append(self._events.get_nowait())
        return out

    # -- running applications -------------------------------------------------------------------
    def add_classpath(self, entries: Sequence[str]) -> None:
        for e in entries:
            self._jp.addClassPath(e)

    def load_class(self, name: str) -> Any:
        try:
            return self._jp.JClass(name)
        except Exception as e:
            raise JvmError(f"cannot load class {name}: {e}") from None

    # -- the application's progress -------------------------------------------------------------
    def track_app_threads(self) -> None:
        """From now on, the threads alive now are not the application's: the JVM's own
        (Reference Handler, Finalizer, Notification Thread, Common-Cleaner, JPype's reference
        queue) and the threads the simulator calls Java from (this one: the balloon's arrays,
        the management beans). Every thread that starts later is the application's."""
        jp = self._jp
        if getattr(self, "_threads", None) is None:
            mf = jp.JClass("java.lang.management.ManagementFactory")
            self._threads = jp.JObject(mf.getThreadMXBean(),
                                       jp.JClass("com.sun.management.ThreadMXBean"))
            if not self._threads.isThreadAllocatedMemoryEnabled():
                self._threads.setThreadAllocatedMemoryEnabled(True)
        self._not_app = {int(i) for i in self._threads.getAllThreadIds()}
        self._not_app.add(int(self.Thread.currentThread().getId()))
        self._app_bytes: dict[int, int] = {}

    def app_allocated_bytes(self) -> int:
        """Bytes the application's threads (those started since :meth:`track_app_threads`)
        have allocated in the heap: ThreadMXBean.getThreadAllocatedBytes, the same for the
        same program whatever the host's load (about 25 µs a call with a few threads). A thread
        that ended keeps what it had allocated when last seen."""
        if getattr(self, "_threads", None) is None:
            self.track_app_threads()
        ids = [i for i in self._threads.getAllThreadIds() if int(i) not in self._not_app]
        if ids:
            jp = self._jp
            got = self._threads.getThreadAllocatedBytes(jp.JArray(jp.JLong)(ids))
            seen = self._app_bytes
            for i, n in zip(ids, got):
                i, n = int(i), int(n)
                if n > seen.get(i, 0):
                    seen[i] = n
        return sum(self._app_bytes.values())

    def _app_thread_objects(self) -> list[Any]:
        """The application's live java.lang.Thread objects (the root group's, no stacks)."""
        group = self.Thread.currentThread().getThreadGroup()
        while group.getParent() is not None:
            group = group.getParent()
        arr = self._jp.JArray(self.Thread)(int(group.activeCount()) + 8)
        n = int(group.enumerate(arr, True))
        return [t for t in arr[:n] if t is not None and int(t.getId()) not in self._not_app]

    def pause_app(self) -> None:
        """Suspend the application's threads that run Java code (Thread.suspend, a handshake:
        when it returns the thread is stopped at a safe point and allocates nothing), so that
        the simulator can catch up with it; :meth:`resume_app` undoes it. A thread in native
        code is left running (it allocates nothing there, and may hold a native lock)."""
        if (not PAUSE_APP or getattr(self, "_threads", None) is None
                or getattr(self, "_paused", None)):
            return
        jp = self._jp
        paused = []
        for t in self._app_thread_objects():
            info = self._threads.getThreadInfo(t.getId())
            if info is None or info.isInNative():
                continue
            with contextlib.suppress(Exception):  # it ended meanwhile
                t.suspend()
                paused.append(t)
        if paused:  # one that reached native code meanwhile goes on
            ids = jp.JArray(jp.JLong)([t.getId() for t in paused])
            infos = self._threads.getThreadInfo(ids)
            for t, info in zip(list(paused), infos):
                if info is None or info.isInNative():
                    paused.remove(t)
                    with contextlib.suppress(Exception):
                        t.resume()
        self._paused = paused

    def resume_app(self) -> None:
        """Let the threads :meth:`pause_app` suspended run again."""
        paused, self._paused = getattr(self, "_paused", None) or [], []
        for t in paused:
            with contextlib.suppress(Exception):
                t.resume()

    def app_blocked(self) -> bool:
        """True if the application has live threads and every one waits without a timeout
        (WAITING or BLOCKED): nothing in the guest can wake it, so it makes no more progress.
        A sleeping thread (TIMED_WAITING) or one in native code (RUNNABLE) is not blocked."""
        if getattr(self, "_threads", None) is None:
            return False
        ids = [i for i in self._threads.getAllThreadIds() if int(i) not in self._not_app]
        if not ids:
            return False
        jp = self._jp
        states = [str(t.getThreadState()) for t in
                  self._threads.getThreadInfo(jp.JArray(jp.JLong)(ids)) if t is not None]
        return bool(states) and all(s in ("WAITING", "BLOCKED") for s in states)


@dataclass
class AppThread:
    """An application's ``main(args)`` on a Java thread of its own, System.exit guarded.

    The simulator's thread keeps running beside it, so GC notifications, the balloon and the
    side workload proceed while the application runs; no Python thread runs the application,
    so pausing it (:meth:`HostJvm.pause_app`) never holds Python's lock.
    """

    jvm: HostJvm
    main_class: str
    args: list[str]
    outcome: AppOutcome = field(default_factory=AppOutcome)
    _java_thread: Any = None
    _done: bool = False

    def start(self) -> None:
        """Start main() on a Java thread (the helper's ``runMain``, as the java launcher
        does); a class without a static main(String[]) raises JvmError."""
        jp = self.jvm._jp
        cls = self.jvm.load_class(self.main_class)
        self.jvm.NoExit.arm()
        try:
            self._java_thread = self.jvm.NoExit.runMain(cls.class_,
                                                         jp.JArray(jp.JString)(self.args))
        except jp.JException as e:
            raise JvmError(f"{self.main_class}: no static main(String[]) ({_java_message(e)})"
                           ) from None
        self._done = False

    def _collect(self) -> None:
        """The outcome of main(), once its thread has ended."""
        if self._done:
            return
        self._done = True
        self.jvm.NoExit.disarm()
        out = self.outcome
        e = self.jvm.NoExit.failure
        status = int(self.jvm.NoExit.status)
        if e is not None:
            name = _java_class(e)
            if name == "java.lang.SecurityException" and status != -(2**31):
                out.exit_code = status
            elif _caused_by_oom(e):
                out.exit_code, out.error = 1, "OutOfMemoryError"
            else:
                out.exit_code, out.error = 1, "exception"
            out.exception_class, out.message = name, _java_message(e)
        if status != -(2**31) and out.error is None:
            out.exit_code = status  # System.exit from another thread, or caught by the app
        if out.exit_code and out.error is None:
            out.error, out.message = "exit", f"System.exit({out.exit_code})"

    @property
    def alive(self) -> bool:
        t = self._java_thread
        if t is None:
            return False
        if t.isAlive():
            return True
        self._collect()
        return False

    def join(self, timeout: float | None = None) -> None:
        """Wait for main() to end (up to ``timeout`` seconds), in Java: Python's lock is
        released meanwhile."""
        t = self._java_thread
        if t is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while t.isAlive():  # in slices, so that Ctrl-C still reaches Python
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                return
            t.join(max(1, int(left * 1000)))
        self._collect()

    def stop(self) -> None:
        """End a still-running application (the guest died): Thread.stop, JDK 17's last resort."""
        if self.alive and self._java_thread is not None:
            with contextlib.suppress(Exception):
                self._java_thread.stop()
            self.join(2.0)
