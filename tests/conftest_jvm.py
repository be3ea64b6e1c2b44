"""The one JVM of the test process (a JVM cannot be restarted), shared by the JVM tests.

Each JVM test file defines a session fixture returning :func:`start_host_jvm` (the JVM is a
process singleton, so they all get the same one). Tests that need other JVM options run in a
spawned subprocess. The options match examples/images/ test manifests built by ``java_image`` below, so
in-process boots of those images reuse this JVM.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

#: memory and CPUs of the in-process test guests; boot_image adds MaxRAM/ActiveProcessorCount
GUEST_MEMORY = 2 << 30
GUEST_CPUS = 2
APP_OPTIONS = ["-Xmx1g", "-Xms64m", "-XX:+UseG1GC"]
JVM_OPTIONS = APP_OPTIONS + [f"-XX:MaxRAM={GUEST_MEMORY}", f"-XX:ActiveProcessorCount={GUEST_CPUS}"]
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "images"


def start_host_jvm():
    """The process's JVM, started once with :data:`JVM_OPTIONS` and the alloc example."""
    from mmsim.balloon.jvm import start_jvm

    from mmsim.image import load_manifest, run_build

    alloc = load_manifest(str(EXAMPLES / "alloc" / "alloc.yaml"))
    run_build(alloc)
    return start_jvm(JVM_OPTIONS, classpath=[str(EXAMPLES / "alloc" / "build" / "classes")])


def java_image(tmp: Path, name: str, source: str, args: str = "", extra: str = "") -> Path:
    """A one-class image in ``tmp`` whose JVM options match :data:`JVM_OPTIONS`."""
    d = tmp / name.lower()
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.java").write_text(textwrap.dedent(source))
    (d / "image.yaml").write_text(textwrap.dedent(f"""\
        cmdline: /java.so {' '.join(APP_OPTIONS)} -cp /app {name} {args}
        build: javac -d build/classes {name}.java
        files:
          /app: build/classes
        memory: {GUEST_MEMORY >> 20}M
        cpus: {GUEST_CPUS}
        """) + extra)
    return d / "image.yaml"


def have_javac() -> bool:
    return shutil.which("javac") is not None or bool(os.environ.get("MMSIM_JVM"))
