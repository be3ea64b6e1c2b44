/* The C page range allocator (mm/_page_ranges_c.c) as other C code sees it: the counters at
 * the head of the object, and alloc/free through a capsule, so a C loop that takes pages
 * (kernel/_mallocs_c.c's large mallocs) calls no Python to do it. */
#ifndef MMSIM_PAGE_RANGES_C_H
#define MMSIM_PAGE_RANGES_C_H

#include <Python.h>

typedef struct {
    PyObject_HEAD
    long long free_pages, total_pages, peak_used_pages;
} PageRangesHead;

typedef struct {
    PyTypeObject *type;
    /* PageRangeAllocator.alloc: 0 with *pfn the run's first page (-1 if none fits), -1 with an
     * error set (the on_alloc hook raised: the pages were taken, as in Python) */
    int (*alloc)(PyObject *self, long long npages, int contiguous, long long *pfn);
    /* PageRangeAllocator.free: 0, or -1 with an error set (no memory for the tables) */
    int (*free)(PyObject *self, long long start, long long npages);
    /* whether taking npages now would call the on_alloc hook (Python code) */
    int (*hook_due)(PyObject *self, long long npages);
} PageRangesAPI;

#define PAGE_RANGES_CAPSULE "mmsim.mm._page_ranges_c._API"

#endif
