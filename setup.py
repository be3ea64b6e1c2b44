"""The C fast paths of a replay (issue 17). Each has a pure-Python twin that gives the same
results: if a machine cannot compile them, mmsim installs and runs without them, only slower
(MMSIM_PURE_PYTHON=1 also turns them off). The rest of the build is in pyproject.toml."""

from setuptools import Extension, setup

_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wno-unused-function"]

setup(ext_modules=[
    Extension("mmsim.mm._page_ranges_c", ["mm/_page_ranges_c.c"], depends=["mm/page_ranges_c.h"],
              extra_compile_args=_FLAGS, optional=True),
    Extension("mmsim.trace._mtrace_c", ["mmsim/trace/_mtrace_c.c"],
              depends=["kernel/malloc_records_c.h", "kernel/host_tables_c.h"],
              extra_compile_args=_FLAGS, optional=True),
    Extension("mmsim.kernel._mallocs_c", ["kernel/_mallocs_c.c"],
              depends=["mm/page_ranges_c.h", "kernel/malloc_records_c.h", "kernel/host_tables_c.h"],
              extra_compile_args=_FLAGS, optional=True),
    Extension("mmsim._stack_distance_c", ["mmsim/_stack_distance_c.c"],
              extra_compile_args=_FLAGS, optional=True),
    Extension("mmsim.fs.zfs_arc._arc_c", ["fs/zfs_arc/_arc_c.c"],
              extra_compile_args=_FLAGS, optional=True),
])
