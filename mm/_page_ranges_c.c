/* OSv's physical page allocator (mm/page_range_allocator.py) in C: the same free runs, the
 * same policy, the same choices in the same order, so every caller sees what the Python twin
 * (PyPageRangeAllocator) would give; tests/test_page_ranges_c.py holds the two equal.
 *
 * Why C: a replay's large mallocs (over a page, under 2 MiB) each take a run and give it back,
 * and the Python twin's dicts cost 1.3 us a pair where this costs a few tens of ns; the C
 * malloc loop (kernel/_mallocs_c.c) calls alloc and free through the capsule of
 * page_ranges_c.h and reads the counters from the object's head.
 *
 * A free run is a node: its start, its page count, its container and, for a list, its links.
 * Lists 0..15 are LIFO (head = the run inserted last, which the Python twin's dict gives as
 * next(reversed(d))); the size-ordered set (runs of 2**16 pages or more) is an array of node
 * indices sorted by (npages, start). Two open-addressed tables map a run's first page and its
 * exclusive end to its node, for the merges of free(). Every public operation first makes room
 * for the nodes and table slots it may add, so that it cannot fail half-way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "page_ranges_c.h"

#define TREE 16                       /* container index of the size-ordered set */
#define LISTS ((1u << TREE) - 1)      /* mask bits of the lists */
#define NIL (-1)
#define PAGE_SIZE 4096                /* checked against mm.constants by the Python module */
#define RUN_LIMIT ((long long)1 << 50) /* pages: a run's start or size that C takes */

typedef struct {
    long long start, npages;
    int prev, next; /* list links (node indices), or the free-node chain in next */
    int order;
} Run;

typedef struct {
    long long key; /* -1: empty */
    int val;
} Slot;

typedef struct {
    Slot *s;
    size_t mask, used;
    int shift;
} Map;

typedef struct {
    PageRangesHead h;
    PyObject *on_alloc;
    int percent; /* on_alloc_percent, -1 for None */
    Run *nodes;
    Py_ssize_t cap;
    int free_node, nruns;
    int head[TREE];
    int *tree; /* node indices by (npages, start) ascending */
    Py_ssize_t tree_len, tree_cap;
    Map by_start, by_end;
    unsigned mask;
} PageRanges;

/* -- the tables --------------------------------------------------------------------------- */
static inline size_t home(const Map *m, long long key)
{
    return (size_t)(((unsigned long long)key * 0x9E3779B97F4A7C15ULL) >> m->shift) & m->mask;
}

static int map_init(Map *m, size_t size)
{
    m->s = PyMem_Malloc(size * sizeof(Slot));
    if (m->s == NULL)
        return -1;
    for (size_t i = 0; i < size; i++)
        m->s[i].key = -1;
    m->mask = size - 1;
    m->used = 0;
    int bits = 0;
    while (((size_t)1 << bits) < size)
        bits++;
    m->shift = 64 - bits;
    return 0;
}

static inline int map_get(const Map *m, long long key)
{
    for (size_t i = home(m, key);; i = (i + 1) & m->mask) {
        if (m->s[i].key == key)
            return m->s[i].val;
        if (m->s[i].key < 0)
            return NIL;
    }
}

static inline void map_put(Map *m, long long key, int val)
{
    size_t i = home(m, key);
    while (m->s[i].key >= 0 && m->s[i].key != key)
        i = (i + 1) & m->mask;
    if (m->s[i].key < 0)
        m->used++;
    m->s[i].key = key;
    m->s[i].val = val;
}

/* delete key if present, shifting back the entries after it (no tombstones) */
static inline void map_del(Map *m, long long key)
{
    size_t i = home(m, key);
    while (m->s[i].key != key) {
        if (m->s[i].key < 0)
            return;
        i = (i + 1) & m->mask;
    }
    m->used--;
    for (size_t j = i;;) {
        j = (j + 1) & m->mask;
        if (m->s[j].key < 0)
            break;
        size_t h = home(m, m->s[j].key);
        /* s[j] may move to the hole at i unless its home lies cyclically in (i, j] */
        if (i <= j ? (h <= i || h > j) : (h <= i && h > j)) {
            m->s[i] = m->s[j];
            i = j;
        }
    }
    m->s[i].key = -1;
}

/* room for `more` new keys at a load of at most one half */
static int map_reserve(Map *m, size_t more)
{
    if ((m->used + more) * 2 <= m->mask + 1)
        return 0;
    Map old = *m;
    size_t size = old.mask + 1;
    while ((old.used + more) * 2 > size)
        size *= 2;
    if (map_init(m, size)) {
        *m = old;
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= old.mask; i++)
        if (old.s[i].key >= 0)
            map_put(m, old.s[i].key, old.s[i].val);
    PyMem_Free(old.s);
    return 0;
}

/* -- the containers ----------------------------------------------------------------------- */
/* *p, an array of *cap elements of size bytes, holding at least need (doubling): 0, or -1 */
static int grow(void **p, Py_ssize_t *cap, Py_ssize_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    Py_ssize_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *q = PyMem_Realloc(*p, (size_t)n * size);
    if (q == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

/* room for `more` new runs: nodes, the set's array and the tables */
static int reserve(PageRanges *r, int more)
{
    Py_ssize_t old = r->cap;
    if (grow((void **)&r->nodes, &r->cap, r->nruns + more, sizeof(Run))
        || grow((void **)&r->tree, &r->tree_cap, r->tree_len + more, sizeof(int)))
        return -1;
    for (Py_ssize_t i = old; i < r->cap; i++) /* the new nodes onto the free chain */
        r->nodes[i].next = i + 1 < r->cap ? (int)i + 1 : r->free_node;
    if (old < r->cap)
        r->free_node = (int)old;
    return map_reserve(&r->by_start, more) || map_reserve(&r->by_end, more) ? -1 : 0;
}

static inline int order_of(long long npages)
{
    int order = 63 - __builtin_clzll((unsigned long long)npages);
    return order >= TREE ? TREE : order;
}

/* node a's (npages, start) before node b's */
static inline int tree_less(const PageRanges *r, int a, int b)
{
    const Run *x = &r->nodes[a], *y = &r->nodes[b];
    return x->npages < y->npages || (x->npages == y->npages && x->start < y->start);
}

/* the set's position of node i: the first entry not below it (its own, if it is there) */
static Py_ssize_t tree_pos(const PageRanges *r, int i)
{
    Py_ssize_t lo = 0, hi = r->tree_len;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (tree_less(r, r->tree[mid], i))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* a new free run (room made by reserve) */
static void insert(PageRanges *r, long long start, long long npages)
{
    int i = r->free_node, order = order_of(npages);
    Run *n = &r->nodes[i];
    r->free_node = n->next;
    n->start = start;
    n->npages = npages;
    n->order = order;
    if (order == TREE) {
        Py_ssize_t p = tree_pos(r, i);
        memmove(r->tree + p + 1, r->tree + p, (size_t)(r->tree_len - p) * sizeof(int));
        r->tree[p] = i;
        r->tree_len++;
    } else { /* the front of its list */
        n->prev = NIL;
        n->next = r->head[order];
        if (n->next != NIL)
            r->nodes[n->next].prev = i;
        r->head[order] = i;
    }
    r->mask |= 1u << order;
    r->nruns++;
    map_put(&r->by_start, start, i);
    map_put(&r->by_end, start + npages, i);
}

static void remove_run(PageRanges *r, int i)
{
    Run *n = &r->nodes[i];
    if (n->order == TREE) {
        Py_ssize_t lo = tree_pos(r, i);
        memmove(r->tree + lo, r->tree + lo + 1, (size_t)(r->tree_len - lo - 1) * sizeof(int));
        if (--r->tree_len == 0)
            r->mask &= ~(1u << TREE);
    } else {
        if (n->prev != NIL)
            r->nodes[n->prev].next = n->next;
        else
            r->head[n->order] = n->next;
        if (n->next != NIL)
            r->nodes[n->next].prev = n->prev;
        if (r->head[n->order] == NIL)
            r->mask &= ~(1u << n->order);
    }
    map_del(&r->by_start, n->start);
    map_del(&r->by_end, n->start + n->npages);
    r->nruns--;
    n->next = r->free_node;
    r->free_node = i;
}

/* whether the hook is called when free memory is `free` pages after an allocation */
static inline int hook_at(const PageRanges *r, long long free)
{
    return r->on_alloc != NULL && r->on_alloc != Py_None
           && (r->percent < 0
               || (__int128)free * PAGE_SIZE
                      < (__int128)r->h.total_pages * PAGE_SIZE * r->percent / 100);
}

static int c_hook_due(PyObject *self, long long npages)
{
    return hook_at((PageRanges *)self, ((PageRanges *)self)->h.free_pages - npages);
}

/* npages left the free runs: the counts, the peak and the pressure hook (-1 if it raised) */
static int taken(PageRanges *r, long long npages)
{
    r->h.free_pages -= npages;
    if (r->h.total_pages - r->h.free_pages > r->h.peak_used_pages)
        r->h.peak_used_pages = r->h.total_pages - r->h.free_pages;
    if (!hook_at(r, r->h.free_pages))
        return 0;
    PyObject *n = PyLong_FromLongLong(npages);
    PyObject *res = n ? PyObject_CallOneArg(r->on_alloc, n) : NULL;
    Py_XDECREF(n);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

/* remove the piece [ps, ps + pn) from the free run i; the parts around it stay free */
static int take(PageRanges *r, int i, long long ps, long long pn)
{
    long long start = r->nodes[i].start, end = start + r->nodes[i].npages;
    remove_run(r, i);
    if (ps > start)
        insert(r, start, ps - start);
    if (ps + pn < end)
        insert(r, ps + pn, end - (ps + pn));
    return taken(r, pn);
}

/* -- the allocator's interface ------------------------------------------------------------ */
static int c_alloc(PyObject *self, long long npages, int contiguous, long long *pfn)
{
    PageRanges *r = (PageRanges *)self;
    *pfn = -1;
    if (reserve(r, 2))
        return -1;
    int e = npages > 1 ? 64 - __builtin_clzll((unsigned long long)(npages - 1)) : 0;
    if (e > TREE)
        e = TREE;
    unsigned eligible = r->mask >> e << e;
    int i;
    if (eligible & LISTS) {
        i = r->head[__builtin_ctz(eligible)];
    } else if (eligible) {
        i = r->tree[r->tree_len - 1];
        if (r->nodes[i].npages < npages)
            return 0;
    } else if (contiguous && e > 0 && (r->mask >> (e - 1) & 1)) {
        for (i = r->head[e - 1]; i != NIL && r->nodes[i].npages < npages; i = r->nodes[i].next)
            ;
        if (i == NIL)
            return 0;
    } else {
        return 0;
    }
    *pfn = r->nodes[i].start;
    return take(r, i, *pfn, npages);
}

static int c_free(PyObject *self, long long start, long long npages)
{
    PageRanges *r = (PageRanges *)self;
    if (npages <= 0)
        return 0;
    if (reserve(r, 1))
        return -1;
    r->h.free_pages += npages;
    int prev = map_get(&r->by_end, start);
    if (prev != NIL) {
        start = r->nodes[prev].start;
        npages += r->nodes[prev].npages;
        remove_run(r, prev);
    }
    int next = map_get(&r->by_start, start + npages);
    if (next != NIL) {
        npages += r->nodes[next].npages;
        remove_run(r, next);
    }
    insert(r, start, npages);
    return 0;
}

static PageRangesAPI api;

/* a page number or count from Python, within what C takes */
static int arg_pages(PyObject *o, long long *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow || v >= RUN_LIMIT || v <= -RUN_LIMIT) {
        PyErr_SetString(PyExc_OverflowError, "a page number or count beyond 2**50");
        return -1;
    }
    *out = v;
    return 0;
}

static PyObject *pr_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw != NULL && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "PageRanges() takes no arguments");
        return NULL;
    }
    PageRanges *r = (PageRanges *)type->tp_alloc(type, 0);
    if (r == NULL)
        return NULL;
    r->percent = -1;
    r->free_node = NIL;
    for (int k = 0; k < TREE; k++)
        r->head[k] = NIL;
    if (map_init(&r->by_start, 16) || map_init(&r->by_end, 16)) {
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    return (PyObject *)r;
}

static int pr_traverse(PageRanges *r, visitproc visit, void *arg)
{
    Py_VISIT(r->on_alloc);
    return 0;
}

static int pr_clear(PageRanges *r)
{
    Py_CLEAR(r->on_alloc);
    return 0;
}

static void pr_dealloc(PageRanges *r)
{
    PyObject_GC_UnTrack(r);
    pr_clear(r);
    PyMem_Free(r->nodes);
    PyMem_Free(r->tree);
    PyMem_Free(r->by_start.s);
    PyMem_Free(r->by_end.s);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyObject *pr_alloc(PageRanges *r, PyObject *const *args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = {"npages", "contiguous"};
    PyObject *vals[2] = {NULL, Py_True};
    Py_ssize_t n = nargs + (kw ? PyTuple_GET_SIZE(kw) : 0);
    if (nargs > 2 || n > 2 || n < 1) {
        PyErr_SetString(PyExc_TypeError, "alloc(npages, contiguous=True)");
        return NULL;
    }
    for (Py_ssize_t k = 0; k < nargs; k++)
        vals[k] = args[k];
    for (Py_ssize_t k = 0; kw && k < PyTuple_GET_SIZE(kw); k++) {
        PyObject *name = PyTuple_GET_ITEM(kw, k);
        int which = PyUnicode_CompareWithASCIIString(name, names[0]) == 0 ? 0
                    : PyUnicode_CompareWithASCIIString(name, names[1]) == 0 ? 1 : -1;
        if (which < 0 || (which < nargs)) {
            PyErr_Format(PyExc_TypeError, "alloc() got an unexpected or repeated argument %R",
                         name);
            return NULL;
        }
        vals[which] = args[nargs + k];
    }
    if (vals[0] == NULL) {
        PyErr_SetString(PyExc_TypeError, "alloc() missing npages");
        return NULL;
    }
    long long npages, pfn;
    if (arg_pages(vals[0], &npages))
        return NULL;
    if (npages <= 0) {
        PyErr_SetString(PyExc_ValueError, "alloc of no pages");
        return NULL;
    }
    int contiguous = PyObject_IsTrue(vals[1]);
    if (contiguous < 0 || c_alloc((PyObject *)r, npages, contiguous, &pfn))
        return NULL;
    return pfn < 0 ? Py_NewRef(Py_None) : PyLong_FromLongLong(pfn);
}

static PyObject *pr_free(PageRanges *r, PyObject *const *args, Py_ssize_t nargs)
{
    long long start, npages;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "free(start, npages)");
        return NULL;
    }
    if (arg_pages(args[0], &start) || arg_pages(args[1], &npages)
        || c_free((PyObject *)r, start, npages))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *pr_add_initial_range(PageRanges *r, PyObject *const *args, Py_ssize_t nargs)
{
    long long start, npages;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_initial_range(start, npages)");
        return NULL;
    }
    if (arg_pages(args[0], &start) || arg_pages(args[1], &npages))
        return NULL;
    if (npages > 0) {
        if (r->h.total_pages + npages >= RUN_LIMIT) {
            PyErr_SetString(PyExc_OverflowError, "more than 2**50 pages in all");
            return NULL;
        }
        r->h.total_pages += npages;
        if (c_free((PyObject *)r, start, npages))
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *pr_alloc_pages_bulk(PageRanges *r, PyObject *arg)
{
    long long npages;
    if (arg_pages(arg, &npages))
        return NULL;
    PyObject *out = PyList_New(0);
    while (out != NULL && npages > 0 && r->mask) {
        if (reserve(r, 2)) {
            Py_CLEAR(out);
            break;
        }
        int i = r->mask & LISTS ? r->head[__builtin_ctz(r->mask)] : r->tree[r->tree_len - 1];
        long long start = r->nodes[i].start;
        long long n = r->nodes[i].npages < npages ? r->nodes[i].npages : npages;
        PyObject *t = Py_BuildValue("(LL)", start, n);
        if (t == NULL || PyList_Append(out, t) || take(r, i, start, n))
            Py_CLEAR(out);
        Py_XDECREF(t);
        npages -= n;
    }
    return out;
}

/* the start of the highest piece of npages in run i with start + offset aligned, or -1 */
static long long fit(const Run *n, long long npages, long long align, long long offset)
{
    long long x = n->start + n->npages - npages + offset; /* >= 0: the run holds npages */
    long long s = x / align * align - offset;
    return s >= n->start ? s : -1;
}

static PyObject *pr_alloc_aligned(PageRanges *r, PyObject *const *args, Py_ssize_t nargs)
{
    long long npages, align, offset = 0;
    if (nargs < 2 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "alloc_aligned(npages, align_pages, offset_pages=0)");
        return NULL;
    }
    if (arg_pages(args[0], &npages) || arg_pages(args[1], &align)
        || (nargs == 3 && arg_pages(args[2], &offset)))
        return NULL;
    if (npages <= 0 || align <= 0 || (align & (align - 1)) || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "bad aligned allocation");
        return NULL;
    }
    if (reserve(r, 2))
        return NULL;
    for (Py_ssize_t k = 0; k < r->tree_len; k++) {
        int i = r->tree[k];
        long long s = r->nodes[i].npages >= npages ? fit(&r->nodes[i], npages, align, offset) : -1;
        if (s >= 0)
            return take(r, i, s, npages) ? NULL : PyLong_FromLongLong(s);
    }
    int low = (63 - __builtin_clzll((unsigned long long)npages));
    low = (low > 1 ? low : 1) - 1;
    for (int order = TREE - 1; order >= low; order--) {
        if (!(r->mask >> order & 1))
            continue;
        for (int i = r->head[order]; i != NIL; i = r->nodes[i].next) {
            long long s = r->nodes[i].npages >= npages ? fit(&r->nodes[i], npages, align, offset)
                                                       : -1;
            if (s >= 0)
                return take(r, i, s, npages) ? NULL : PyLong_FromLongLong(s);
        }
    }
    Py_RETURN_NONE;
}

static int by_start_key(const void *a, const void *b)
{
    long long x = ((const long long *)a)[0], y = ((const long long *)b)[0];
    return (x > y) - (x < y);
}

/* every run as (start, npages) pairs, in address order (a PyMem block of 2 * nruns) */
static long long *sorted_runs(PageRanges *r)
{
    long long *v = PyMem_Malloc(((size_t)r->nruns * 2 + 1) * sizeof(long long));
    if (v == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    int k = 0;
    for (size_t s = 0; s <= r->by_start.mask; s++)
        if (r->by_start.s[s].key >= 0) {
            const Run *n = &r->nodes[r->by_start.s[s].val];
            v[2 * k] = n->start;
            v[2 * k + 1] = n->npages;
            k++;
        }
    qsort(v, (size_t)k, 2 * sizeof(long long), by_start_key);
    return v;
}

static PyObject *pairs_iter(const long long *v, int n)
{
    PyObject *l = PyList_New(n);
    for (int k = 0; l != NULL && k < n; k++) {
        PyObject *t = Py_BuildValue("(LL)", v[2 * k], v[2 * k + 1]);
        if (t == NULL)
            Py_CLEAR(l);
        else
            PyList_SET_ITEM(l, k, t);
    }
    PyObject *it = l ? PyObject_GetIter(l) : NULL;
    Py_XDECREF(l);
    return it;
}

static PyObject *pr_runs(PageRanges *r, PyObject *unused)
{
    long long *v = sorted_runs(r);
    if (v == NULL)
        return NULL;
    PyObject *it = pairs_iter(v, r->nruns);
    PyMem_Free(v);
    return it;
}

static PyObject *pr_runs_by_size(PageRanges *r, PyObject *unused)
{
    long long *v = PyMem_Malloc(((size_t)r->nruns * 2 + 1) * sizeof(long long));
    if (v == NULL)
        return PyErr_NoMemory();
    int k = 0;
    for (Py_ssize_t t = 0; t < r->tree_len; t++, k++) {
        v[2 * k] = r->nodes[r->tree[t]].start;
        v[2 * k + 1] = r->nodes[r->tree[t]].npages;
    }
    for (int order = TREE - 1; order >= 0; order--)
        for (int i = r->head[order]; i != NIL; i = r->nodes[i].next, k++) {
            v[2 * k] = r->nodes[i].start;
            v[2 * k + 1] = r->nodes[i].npages;
        }
    PyObject *it = pairs_iter(v, k);
    PyMem_Free(v);
    return it;
}

static PyObject *pr_largest_run(PageRanges *r, PyObject *unused)
{
    if (r->tree_len)
        return PyLong_FromLongLong(r->nodes[r->tree[r->tree_len - 1]].npages);
    for (int order = TREE - 1; order >= 0; order--) {
        long long best = 0;
        for (int i = r->head[order]; i != NIL; i = r->nodes[i].next)
            if (r->nodes[i].npages > best)
                best = r->nodes[i].npages;
        if (best)
            return PyLong_FromLongLong(best);
    }
    return PyLong_FromLong(0);
}

static PyObject *fail(const char *fmt, long long a, long long b)
{
    PyErr_Format(PyExc_AssertionError, fmt, a, b);
    return NULL;
}

/* the structural invariants (PyPageRangeAllocator.check's) */
static PyObject *pr_check(PageRanges *r, PyObject *unused)
{
    long long *v = sorted_runs(r), seen = 0, prev_end = -1;
    if (v == NULL)
        return NULL;
    PyObject *res = NULL;
    int counts[TREE + 1] = {0};
    for (int k = 0; k < r->nruns; k++) {
        long long start = v[2 * k], npages = v[2 * k + 1];
        int i = map_get(&r->by_start, start);
        if (npages <= 0) {
            fail("empty run at %lld (%lld pages)", start, npages);
            goto done;
        }
        if (start <= prev_end) {
            fail("run %lld overlaps or touches the previous one (%lld)", start, prev_end);
            goto done;
        }
        prev_end = start + npages;
        if (r->nodes[i].order != order_of(npages)) {
            fail("run %lld of %lld pages is in the wrong container", start, npages);
            goto done;
        }
        if (map_get(&r->by_end, start + npages) != i) {
            fail("run %lld (%lld pages) is not found by its end", start, npages);
            goto done;
        }
        counts[r->nodes[i].order]++;
        seen += npages;
    }
    if (seen != r->h.free_pages) {
        fail("free count %lld != pages in runs %lld", r->h.free_pages, seen);
        goto done;
    }
    for (int order = 0; order < TREE; order++) {
        int n = 0, prev = NIL;
        for (int i = r->head[order]; i != NIL; prev = i, i = r->nodes[i].next, n++)
            if (r->nodes[i].prev != prev || r->nodes[i].order != order) {
                fail("list %lld is broken at %lld", order, r->nodes[i].start);
                goto done;
            }
        if (n != counts[order]) {
            fail("list %lld holds %lld runs of another size or none", order, n);
            goto done;
        }
    }
    for (Py_ssize_t t = 0; t < r->tree_len; t++)
        if (r->nodes[r->tree[t]].order != TREE
            || (t && !tree_less(r, r->tree[t - 1], r->tree[t]))) {
            fail("the size-ordered set is out of order at %lld (%lld)", t,
                 r->nodes[r->tree[t]].start);
            goto done;
        }
    if (r->tree_len != counts[TREE] || r->by_start.used != (size_t)r->nruns
        || r->by_end.used != (size_t)r->nruns) {
        fail("the set or the tables hold %lld runs of %lld", (long long)r->tree_len, r->nruns);
        goto done;
    }
    for (int order = 0; order <= TREE; order++) {
        int nonempty = order == TREE ? r->tree_len > 0 : r->head[order] != NIL;
        if ((int)(r->mask >> order & 1) != nonempty) {
            fail("mask bit %lld is stale (%lld)", order, nonempty);
            goto done;
        }
    }
    res = Py_NewRef(Py_None);
done:
    PyMem_Free(v);
    return res;
}

static PyObject *get_nr_runs(PageRanges *r, void *unused) { return PyLong_FromLong(r->nruns); }

static PyObject *get_percent(PageRanges *r, void *unused)
{
    return r->percent < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(r->percent);
}

static int set_percent(PageRanges *r, PyObject *v, void *unused)
{
    if (v == NULL || v == Py_None) {
        r->percent = -1;
        return 0;
    }
    long p = PyLong_AsLong(v);
    if (p == -1 && PyErr_Occurred())
        return -1;
    if (p < 0 || p > 100) {
        PyErr_SetString(PyExc_ValueError, "on_alloc_percent is None or 0..100");
        return -1;
    }
    r->percent = (int)p;
    return 0;
}

static PyMethodDef pr_methods[] = {
    {"alloc", (PyCFunction)(void (*)(void))pr_alloc, METH_FASTCALL | METH_KEYWORDS,
     "Allocate npages; the caller gets the low part of the chosen run."},
    {"free", (PyCFunction)(void (*)(void))pr_free, METH_FASTCALL,
     "Return a run, merging it with free neighbours on both sides."},
    {"add_initial_range", (PyCFunction)(void (*)(void))pr_add_initial_range, METH_FASTCALL,
     "Hand boot memory to the allocator; it counts in total."},
    {"alloc_pages_bulk", (PyCFunction)pr_alloc_pages_bulk, METH_O,
     "The pages npages successive single-page allocs would get, as (pfn, n) extents."},
    {"alloc_aligned", (PyCFunction)(void (*)(void))pr_alloc_aligned, METH_FASTCALL,
     "Carve npages from the high end of a run so that start + offset is aligned."},
    {"runs", (PyCFunction)pr_runs, METH_NOARGS, "Free runs as (start, npages), by address."},
    {"runs_by_size", (PyCFunction)pr_runs_by_size, METH_NOARGS,
     "Runs in OSv's wake_waiters order: the set ascending, then lists high to low."},
    {"largest_run", (PyCFunction)pr_largest_run, METH_NOARGS, "Pages in the largest free run."},
    {"check", (PyCFunction)pr_check, METH_NOARGS, "Assert the structural invariants."},
    {NULL},
};

static PyMemberDef pr_members[] = {
    {"free_pages", T_LONGLONG, offsetof(PageRangesHead, free_pages), 0, NULL},
    {"total_pages", T_LONGLONG, offsetof(PageRangesHead, total_pages), 0, NULL},
    {"peak_used_pages", T_LONGLONG, offsetof(PageRangesHead, peak_used_pages), 0,
     "the most pages ever out of the runs (used, cached or in page tables)"},
    {"on_alloc", T_OBJECT, offsetof(PageRanges, on_alloc), 0,
     "called with the number of pages each time the runs lose pages (OSv's on_alloc)"},
    {NULL},
};

static PyGetSetDef pr_getset[] = {
    {"nr_runs", (getter)get_nr_runs, NULL, NULL, NULL},
    {"on_alloc_percent", (getter)get_percent, (setter)set_percent,
     "on_alloc only while free memory is under this % of the total (None: always)", NULL},
    {NULL},
};

static PyTypeObject PageRangesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmsim.mm._page_ranges_c.PageRanges",
    .tp_doc = "Free physical memory as coalesced runs of pages, with OSv's allocation policy.",
    .tp_basicsize = sizeof(PageRanges),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = pr_new,
    .tp_dealloc = (destructor)pr_dealloc,
    .tp_traverse = (traverseproc)pr_traverse,
    .tp_clear = (inquiry)pr_clear,
    .tp_methods = pr_methods,
    .tp_members = pr_members,
    .tp_getset = pr_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_page_ranges_c",
    .m_doc = "OSv's page range allocator in C (the twin of mm/page_range_allocator.py's).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__page_ranges_c(void)
{
    if (PyType_Ready(&PageRangesType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    api.type = &PageRangesType;
    api.alloc = c_alloc;
    api.free = c_free;
    api.hook_due = c_hook_due;
    PyObject *cap = PyCapsule_New(&api, PAGE_RANGES_CAPSULE, NULL);
    int err = cap == NULL || PyModule_AddObjectRef(m, "_API", cap)
              || PyModule_AddObjectRef(m, "PageRanges", (PyObject *)&PageRangesType)
              || PyModule_AddIntConstant(m, "PAGE_SIZE", PAGE_SIZE)
              || PyModule_AddIntConstant(m, "TREE", TREE);
    Py_XDECREF(cap);
    if (err) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
