/* The C loops' own large hash tables (kernel/_mallocs_c.c's live blocks, the mtrace reader's
 * pointers, mmsim/trace/_mtrace_c.c): where their slots live and how they grow. Each module
 * includes its own copy of these static functions. */
#ifndef MMSIM_HOST_TABLES_C_H
#define MMSIM_HOST_TABLES_C_H

#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

/* A hash table's slots, grown: n slots of size bytes at t become 2n, the first n kept and the
 * others zeroed. Once 2 MiB, the table is the start of a mapping of its own that reserves
 * TABLE_RESERVE bytes of address space (no memory: MAP_NORESERVE, and a page is only backed
 * when first touched), aligned to 2 MiB and asked to be backed by huge pages (Linux's
 * transparent huge pages in their "madvise" mode, the common default) before it is touched:
 * a probe is then a cache miss without a TLB miss, and the table doubles in place, its
 * entries moving within it (the kernel's lb_grow, the mtrace reader's pm_grow). A new table
 * each time, the old one copied and dropped, faulted in twice the final table's memory
 * (perl's replay: 48 MiB for a live-block table of 24 MiB), a cost this machine's busy spells
 * made 10-100 ms. *reserved is the mapping's size, 0 for a table from malloc (below 2 MiB, as
 * a small table stays cached whatever its pages). NULL if there is no memory (t is then
 * unchanged). */
#define HUGE_BYTES ((size_t)2 << 20)
#define TABLE_RESERVE ((size_t)16 << 30)
static inline void *table_grow(void *t, size_t n, size_t size, size_t *reserved)
{
    size_t bytes = 2 * n * size;
    if (*reserved >= bytes)
        return t; /* in its mapping: the second half was never touched, so zero */
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= HUGE_BYTES) {
        size_t len = (bytes + HUGE_BYTES - 1) & ~(HUGE_BYTES - 1);
        char *p = MAP_FAILED;
        if (len < TABLE_RESERVE) { /* refused where memory is not overcommitted: just len */
            p = mmap(NULL, TABLE_RESERVE + HUGE_BYTES, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p != MAP_FAILED)
                len = TABLE_RESERVE;
        }
        if (p == MAP_FAILED)
            p = mmap(NULL, len + HUGE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        char *a = (char *)(((uintptr_t)p + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
        if (a > p)
            munmap(p, (size_t)(a - p));
        if (a + len < p + len + HUGE_BYTES)
            munmap(a + len, (size_t)(p + len + HUGE_BYTES - (a + len)));
        madvise(a, len, MADV_HUGEPAGE); /* advice: without it, ordinary pages */
        memcpy(a, t, n * size);
        if (*reserved)
            munmap(t, *reserved);
        else
            PyMem_Free(t);
        *reserved = len;
        return a;
    }
#endif
    char *g = PyMem_Realloc(t, bytes);
    if (g != NULL)
        memset(g + n * size, 0, n * size);
    return g;
}

static inline void table_free(void *t, size_t reserved)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (reserved) {
        munmap(t, reserved);
        return;
    }
#endif
    PyMem_Free(t);
}


/* What table_double needs of a table's slots. */
typedef struct {
    size_t size;                                   /* a slot's bytes, at most 64 */
    int (*used)(const void *slot);                 /* it holds an entry */
    size_t (*home)(const void *slot, size_t mask); /* its entry's home in mask + 1 slots */
    void (*empty)(void *slot);                     /* it holds none now */
} SlotKind;

/* A table of n slots at *slots (linear probing), doubled in place (table_grow) and each entry
 * moved to where its hash puts it now. The old slots are taken in order, each emptied and its
 * entry put back from its new home: one whose home is in the first half lands at or before the
 * slot it left (the slots between its home and that one were all taken, and are this pass's
 * own now), one whose home is in the second half lands there or, past the end, at or before the
 * slot it left too, so no entry ever lands among or beyond those not yet taken. The exception
 * is a run of entries that wrapped around from the end to the table's start (their home is past
 * their slot): they are set aside first and put back last. Only this pass's moves touch the
 * table's memory: from its start and from its middle on, two streams. 0, or -1 with no memory
 * (the table unchanged); the caller sets its mask to 2n - 1. */
static inline int table_double(void **slots, size_t n, size_t *reserved, const SlotKind *k)
{
    size_t sz = k->size, run = 0, nw = 0, w = 0, mask = 2 * n - 1;
    char *t = *slots, e[64];
    while (run < n && k->used(t + run * sz))
        run++;
    for (size_t i = 0; i < run; i++)
        nw += k->home(t + i * sz, n - 1) > i;
    char *wrapped = nw ? PyMem_Malloc(nw * sz) : NULL;
    if (nw && wrapped == NULL)
        return -1;
    if ((t = table_grow(t, n, sz, reserved)) == NULL) {
        PyMem_Free(wrapped);
        return -1;
    }
    *slots = t;
    for (size_t i = 0; i < run; i++)
        if (k->home(t + i * sz, n - 1) > i) {
            memcpy(wrapped + w++ * sz, t + i * sz, sz);
            k->empty(t + i * sz);
        }
    for (size_t i = 0; i < n + nw; i++) { /* the old slots, then the ones set aside */
        char *from = i < n ? t + i * sz : wrapped + (i - n) * sz;
        if (!k->used(from))
            continue;
        memcpy(e, from, sz);
        if (i < n)
            k->empty(from);
        size_t j = k->home(e, mask);
        while (k->used(t + j * sz))
            j = (j + 1) & mask;
        memcpy(t + j * sz, e, sz);
    }
    PyMem_Free(wrapped);
    return 0;
}


#endif
