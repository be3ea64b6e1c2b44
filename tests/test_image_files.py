"""What an image holds: its ``files``, the directories they imply, and the installed wheel.

A user relies on: a class path may name a directory that only the files under it make (as in a
Capstanfile, ``/app/Hello.class: Hello.class`` puts Hello in ``/app``), and the JVM then finds
exactly the image's classes, wherever on the host they come from; a jar named on the class path
keeps working; a plain ``pip install`` of mmsim boots Java images (the System.exit guard's Java
source ships in the wheel); a boot's readable summary names its image.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from conftest_jvm import (
    APP_OPTIONS,
    EXAMPLES,
    GUEST_CPUS,
    GUEST_MEMORY,
    ROOT,
    have_javac,
    start_host_jvm,
)

from mmsim.image import (
    EXIT_APP,
    EXIT_OK,
    ImageError,
    boot_image,
    check_files,
    classpath_host,
    load_manifest,
)
from mmsim.summary_text import format_summary

needs_javac = pytest.mark.skipif(not have_javac(), reason="no JDK (javac) on the PATH")


@pytest.fixture(scope="session")
def host_jvm():
    """The session's one JVM."""
    return start_host_jvm()


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The class path trees go to a cache of the test's own, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def manifest(d: Path, cmdline: str, files: dict[str, str], extra: str = "") -> Path:
    lines = "".join(f"  {img}: {host}\n" for img, host in files.items())
    p = d / "image.yaml"
    p.write_text(f"cmdline: {cmdline}\nfiles:\n{lines}{extra}")
    return p


def javac(d: Path, out: Path, *sources: tuple[str, str]) -> None:
    src = d / "src"
    src.mkdir(exist_ok=True)
    for name, text in sources:
        (src / f"{name}.java").write_text(textwrap.dedent(text))
    subprocess.run(["javac", "-d", str(out), *(str(src / f"{n}.java") for n, _ in sources)],
                   check=True, capture_output=True)


# -- the manifest's files, no JVM ----------------------------------------------------------------

def test_a_directory_is_implied_by_the_files_under_it(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "Main.class").write_bytes(b"main")
    (tmp_path / "b" / "helper-v2.class").write_bytes(b"helper")
    p = manifest(tmp_path, "/java.so -cp /app Main",
                 {"/app/Main.class": "a/Main.class", "/app/lib/Helper.class": "b/helper-v2.class"})
    m = load_manifest(str(p))
    check_files(m)  # '/app' is in the image: its files say so
    tree = Path(classpath_host(m, "/app"))
    # the JVM sees the image's directory: each file at its image path, whatever its host name
    found = {str(f.relative_to(tree)): os.path.realpath(f)
             for f in tree.rglob("*") if not f.is_dir()}
    assert found == {"Main.class": str(tmp_path / "a" / "Main.class"),
                     "lib/Helper.class": str(tmp_path / "b" / "helper-v2.class")}
    assert (tree / "lib" / "Helper.class").read_bytes() == b"helper"
    assert classpath_host(m, "/app") == str(tree)  # the same layout is laid out once
    assert str(tree).startswith(str(tmp_path / "cache" / "mmsim" / "classpath"))


def test_an_entry_inside_a_directory_entry_adds_to_it_or_replaces_its_file(tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "A.class").write_bytes(b"a")
    (classes / "Conf.class").write_bytes(b"old")
    (tmp_path / "Conf.class").write_bytes(b"new")
    (tmp_path / "B.class").write_bytes(b"b")
    p = manifest(tmp_path, "/java.so -cp /app Main",
                 {"/app": "classes", "/app/Conf.class": "Conf.class", "/app/x/B.class": "B.class"})
    m = load_manifest(str(p))
    check_files(m)
    tree = Path(classpath_host(m, "/app"))
    assert sorted(str(f.relative_to(tree)) for f in tree.rglob("*.class")) == [
        "A.class", "Conf.class", "x/B.class"]
    assert (tree / "Conf.class").read_bytes() == b"new"  # the deeper entry wins
    # a path without entries inside it is still the host path itself
    assert classpath_host(m, "/app/A.class") == str(classes / "A.class")


def test_a_jar_entry_is_its_host_file(tmp_path: Path) -> None:
    (tmp_path / "lib.jar").write_bytes(b"PK")
    m = load_manifest(str(manifest(tmp_path, "/java.so -cp /app/lib.jar Main",
                                   {"/app/lib.jar": "lib.jar"})))
    check_files(m)
    assert classpath_host(m, "/app/lib.jar") == str(tmp_path / "lib.jar")


@pytest.mark.parametrize("cmdline,files,message", [
    ("/java.so -cp /other Main", {"/app/Main.class": "Main.class"},
     "cmdline: '/other' is not in the image's files"),
    ("/java.so -cp /ap Main", {"/app/Main.class": "Main.class"},  # a prefix, not a directory
     "cmdline: '/ap' is not in the image's files"),
    ("/tools/app.so /traces", {"/traces/app.trace": "Main.class"},  # a trace is a file
     "cmdline: '/traces' is not in the image's files"),
    ("/java.so -cp /app Main", {"/app": "Main.class", "/app/X.class": "Main.class"},
     "files: /app/X.class: '/app' is a file"),
])
def test_what_the_image_does_not_hold_is_refused(tmp_path: Path, cmdline: str,
                                                 files: dict[str, str], message: str) -> None:
    (tmp_path / "Main.class").write_bytes(b"main")
    m = load_manifest(str(manifest(tmp_path, cmdline, files)))
    with pytest.raises(ImageError, match=message):
        check_files(m)


# -- booting -------------------------------------------------------------------------------------

MAIN = """\
public class ImpliedMain {
    public static void main(String[] args) {
        System.out.println("ImpliedMain sees " + ImpliedDep.WORD);
        System.exit(ImpliedDep.CODE);
    }
}
"""
DEP = """\
public class ImpliedDep {
    public static final String WORD = "its dependency";
    public static final int CODE = 42;
}
"""


def implied_image(tmp_path: Path) -> Path:
    """ImpliedMain and ImpliedDep in /app, from two host folders, one under another name."""
    javac(tmp_path, tmp_path / "out", ("ImpliedMain", MAIN), ("ImpliedDep", DEP))
    (tmp_path / "main").mkdir()
    (tmp_path / "dep").mkdir()
    (tmp_path / "out" / "ImpliedMain.class").rename(tmp_path / "main" / "ImpliedMain.class")
    (tmp_path / "out" / "ImpliedDep.class").rename(tmp_path / "dep" / "dep-1.0.class")
    return manifest(tmp_path, f"/java.so {' '.join(APP_OPTIONS)} -cp /app ImpliedMain",
                    {"/app/ImpliedMain.class": "main/ImpliedMain.class",
                     "/app/ImpliedDep.class": "dep/dep-1.0.class"},
                    f"memory: {GUEST_MEMORY >> 20}M\ncpus: {GUEST_CPUS}\n")


@needs_javac
def test_the_jvm_finds_classes_in_an_implied_directory(host_jvm, tmp_path: Path) -> None:
    out = boot_image(load_manifest(str(implied_image(tmp_path))))
    s = out.summary
    # main ran and loaded its dependency from the other host folder: System.exit(42) says so
    assert out.status == EXIT_APP and s["jvm"]["exit_code"] == 42, s["app"]
    assert s["app_errors"]["by_kind"] == {"System.exit": 1}
    assert s["arc"]["read_bytes"] > 0  # the class path was read from the image's file system


JARRED = """\
public class JarredMain {
    public static void main(String[] args) { System.out.println("JarredMain ran"); }
}
"""


@needs_javac
def test_a_jar_on_the_class_path_keeps_working(host_jvm, tmp_path: Path) -> None:
    javac(tmp_path, tmp_path / "out", ("JarredMain", JARRED))
    with zipfile.ZipFile(tmp_path / "app.jar", "w") as jar:
        jar.write(tmp_path / "out" / "JarredMain.class", "JarredMain.class")
    p = manifest(tmp_path, f"/java.so {' '.join(APP_OPTIONS)} -cp /app/lib.jar JarredMain",
                 {"/app/lib.jar": "app.jar"},
                 f"memory: {GUEST_MEMORY >> 20}M\ncpus: {GUEST_CPUS}\n")
    out = boot_image(load_manifest(str(p)))
    assert out.status == EXIT_OK and out.summary["jvm"]["exit_code"] == 0, out.summary["app"]


def test_the_readable_summary_names_the_image(tmp_path: Path) -> None:
    (tmp_path / "app.trace").write_text("# mmsim-trace v1\nmmap h 4M\ntouch h 0 4M\n")
    p = manifest(tmp_path, "/tools/app.so /traces/app.trace", {"/traces/app.trace": "app.trace"},
                 "memory: 256M\n")
    out = boot_image(load_manifest(str(p)))
    assert out.status == EXIT_OK
    text = format_summary(out.summary).splitlines()
    assert text[0].startswith(f"image {p}: ")
    assert not any(line.startswith("trace ") for line in text)


@needs_javac
def test_boot_prints_the_app_output_and_names_the_image(tmp_path: Path) -> None:
    p = implied_image(tmp_path)
    res = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(p)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == EXIT_APP, res.stderr[-2000:]  # System.exit(42)
    assert res.stdout.startswith("ImpliedMain sees its dependency\n")
    assert f"\nimage {p}: " in res.stdout


# -- the wheel -----------------------------------------------------------------------------------

SOURCES = ("pyproject.toml", "setup.py", "README.md", "mm", "shrinker", "balloon", "kernel", "fs",
           "drivers", "mmsim")


def _backend_here() -> bool:
    """The venv's setuptools can build the wheel without fetching one (pyproject's >=77)."""
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= 77
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


@pytest.mark.slow
@needs_javac
def test_the_installed_wheel_boots_a_java_image(tmp_path: Path) -> None:
    """Build the wheel from a copy of the sources, install it alone in a new venv that sees
    this venv's dependencies (not the checkout), and boot the hello image with it."""
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc", "*.so")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, src / name)
    packages = sorted(p.relative_to(src).as_posix() for p in src.glob("**/__init__.py"))
    dist = tmp_path / "dist"
    isolation = ["--no-build-isolation"] if _backend_here() else []
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q",
                          "-w", str(dist), *isolation],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = dist.glob("mmsim-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    # one import namespace: nothing but mmsim at the top (PyPI's fs, a user's kernel.py)
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"mmsim"}
    assert "mmsim/balloon/java/MmsimNoExit.java" in names
    # the C fast paths, compiled by pip from the sources (a fresh machine has gcc and headers)
    for ext in re.findall(r'Extension\(\s*"([\w.]+)"', (ROOT / "setup.py").read_text()):
        stem = ext.replace(".", "/")
        assert any(n.startswith(stem + ".") and n.endswith(".so") for n in names), ext
    # every package of the checkout is in the wheel, where its folder says
    for rel in packages:
        assert (rel if rel.startswith("mmsim/") else f"mmsim/{rel}") in names, rel

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                          "--no-deps", "--no-index", str(wheel)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    # the dependencies from this venv, after the new venv's own site-packages (so the wheel's
    # mmsim comes first); the checkout is not on the path: the commands run in tmp_path
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site.stdout.strip()) / "mmsim-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # compile the guard from the wheel's source
    where = subprocess.run([str(py), "-c", "import mmsim.balloon.jvm, mmsim.image; "
                            "print(mmsim.balloon.jvm.__file__); print(mmsim.image.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr[-2000:]
    assert all(f.startswith(str(venv)) for f in where.stdout.split()), where.stdout

    hello = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", hello, ignore=shutil.ignore_patterns("build"))
    res = subprocess.run([str(venv / "bin" / "mmsim"), "boot", str(hello / "hello.yaml")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("Hello from Java 17")
    assert f"\nimage {hello / 'hello.yaml'}: " in res.stdout
    assert list((tmp_path / "cache" / "mmsim" / "java").glob("*/MmsimNoExit.class"))


def test_boot_fail_on_app_errors_exits_1(tmp_path: Path) -> None:
    """A native image whose trace frees twice boots fine, unless CI asks it to fail on that."""
    (tmp_path / "app.trace").write_text("# mmsim-trace v1\nmalloc a 1K\nfree a\nfree a\n")
    p = manifest(tmp_path, "/tools/app.so /traces/app.trace", {"/traces/app.trace": "app.trace"},
                 "memory: 256M\n")
    for extra, code in (([], 0), (["--fail-on", "app-errors"], 1)):
        res = subprocess.run([sys.executable, "-m", "mmsim", "boot", str(p), "-q", *extra],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.returncode == code, res.stderr
    assert res.stderr.endswith(": 1 application errors (--fail-on app-errors)\n"), res.stderr
