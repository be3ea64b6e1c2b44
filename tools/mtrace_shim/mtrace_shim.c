/*
 * mtrace_shim: start glibc's malloc tracing in a program that does not call mtrace() itself.
 *
 * glibc only writes a malloc trace (MALLOC_TRACE=file) after the program calls mtrace(), and
 * since glibc 2.34 the tracing hooks live in libc_malloc_debug.so, which must be preloaded too.
 * Preloading this library after libc_malloc_debug.so makes mtrace() run before main() and
 * muntrace() at exit, so any dynamically linked program can be traced unchanged:
 *
 *   LD_PRELOAD=/lib/x86_64-linux-gnu/libc_malloc_debug.so:$PWD/mtrace_shim.so \
 *   MALLOC_TRACE=/tmp/prog.mtrace  prog args...
 *
 * Build: gcc -O2 -fPIC -shared -o mtrace_shim.so mtrace_shim.c
 */
#include <mcheck.h>

__attribute__((constructor)) static void mtrace_shim_start(void)
{
    mtrace();
}

__attribute__((destructor)) static void mtrace_shim_stop(void)
{
    muntrace();
}
