/* The batch loop of kernel/sys_malloc.py (MallocFace._mallocs) in C: the same records applied
 * to the same Python state (the face's live blocks and quarantine, the sites' stats lists, the
 * pools' pages), so every Python reader of that state sees what the Python loop would have
 * left. The live blocks are this module's LiveBlocks (a mapping whose table holds each block
 * in one slot: see there) where it is built, a dict in the pure-Python build.
 *
 * What it does in C: Malloc.malloc's pool fast path (a page on the pool's list: pop a freed
 * object or bump), Malloc.free's same-CPU path unless the page goes back to the page
 * allocator (Pool.free, re-listing a page that was full), whole pages (1025..4096 bytes) while
 * the CPU's L1 page cache is between its marks, large sizes (a run of pages under 2 MiB) while
 * the page allocator is its C twin (mm/_page_ranges_c.c, called through its capsule) and
 * neither the reclaimer's wait for minimum memory nor its pressure hook has work, realloc of
 * those blocks (OSv's: allocate, free), the live blocks, the quarantine, the live-bytes peak,
 * the sites' counters and their live-peak snapshot. Everything else calls the Python methods
 * (a "call-out"): a pool with no page, a free that releases a page, cross-CPU frees, a large
 * size near the watermarks or with no run that fits, mapped sizes, the L1 cache at a mark,
 * realloc(NULL) and realloc(p, 0), bad frees. Counters of Python objects that C moves often
 * (Malloc.heap_bytes and its peak, LargeAllocator.run_pages) are held in the loop and written
 * back before any Python code runs (sync_out).
 *
 * Kernel.batch_call(i, line, kind) settles the kernel only if the fill threads were woken,
 * free memory moved or a wakeup is due. Only Python code wakes threads; free memory moves in
 * C only by a large run taken or given, after which c_settle does in C what batch_call(i + 1)
 * would if that is trivial (nothing but _hooks_free to follow free memory) and otherwise
 * leaves it to batch_call. So batch_call is called for record 0, for record i when
 * Kernel.batch_call's own test, made after record i-1 if that one called Python or
 * batch_call, says it would settle (or c_settle left it), and otherwise just before the first
 * call-out of record i (so that a reclaim or an OOM during it reports its event, line and
 * kind); the last record always gets one, so the kernel's line and op_kind end as the Python
 * loop leaves them (which is why its large runs are taken through Python).
 * AllocSites.entry, MallocFace._fail and _store are called without it: they only touch the
 * face's and the sites' own containers.
 *
 * The records are a list of 5-tuples or a MallocRecords (the same fields packed, five references
 * a record, as the C mtrace reader fills it: no tuple made or freed a record); the loop reads
 * a record's fields where either holds them (rec_at).
 *
 * run() returns the index of the first record it did not apply: the Python loop goes on from
 * there (a size beyond 2**50 or counters that C longs could not hold, a record that is not
 * a 5-tuple of an exact str kind and an exact int size). Where a live block's size is beyond
 * 2**50 this is found after the record's batch_call: the Python loop calls it again, which
 * settles nothing more unless a kernel thread left work behind.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdlib.h>
#include <string.h>

#include "../mm/page_ranges_c.h"
#include "malloc_records_c.h"
#include "host_tables_c.h"
#ifdef __linux__
#include <sys/mman.h>
#endif

#define LIMIT ((long long)1 << 50)     /* a record's size or a block's that C takes */
#define COUNTER_LIMIT ((long long)1 << 61)

static PyObject *VmError, *OutOfPages;
static PyTypeObject *PoolPageType, *PoolType;
static Py_ssize_t HALF;
static long long MEMPOOL_AREA, PAGE_AREA, MAIN_AREA, HUGE_PAGE, LARGE_OFFSET;
static int PAGE_SHIFT;
static Py_ssize_t L1_LO, L1_HI;

/* slot offsets of PoolPage and Pool */
static Py_ssize_t pg_cpu, pg_end, pg_fresh, pg_freed, pg_nalloc, pg_next, pg_prev, pg_pool, pg_pfn;
static Py_ssize_t pl_head, pl_tail, pl_size, pl_npages, pl_cpu;

static PyObject *s_malloc, *s_free, *s_realloc;
static PyObject *a_kernel, *a_live, *a__freed, *a__freed_old, *a_leaked, *a_malloc, *a_sites,
    *a_stats, *a_dirty, *a_snapshot_live_peak, *a_entry, *a_cpu, *a__by_size, *a__pages,
    *a_pool, *a_smp, *a_batch_call, *a__malloc, *a__free, *a_realloc, *a_live_bytes,
    *a_live_bytes_peak, *a_peak_pending, *a__store, *a__fail, *a_failed, *a__handlers,
    *a_heap_at_peak, *a_heap_bytes, *a__add_page, *a_batch_failed, *a_kind, *a_line,
    *a_handle, *a_size, *a_site, *a_woken, *a_ranges, *a_free_pages, *a__hooks_free,
    *a__wakeups, *a__l1, *a__whole, *a_heap_bytes_peak, *a__at_live_peak, *a__stale_live,
    *a__stale_use, *a_pool_pages_returned,
    *a_large, *a_runs, *a_run_pages, *a_mapped_bytes, *a_alloc, *a_wait_for_minimum_memory,
    *a__map, *a__cpu, *a__hooks_clock, *a_clock_ns, *a__armed, *a__after_op_memory,
    *a__memory_ops, *a__peak_pages, *a__c_wait_below, *a_op_kind;
static PyObject *one, *zero;
/* the pool pages found lately: pfn -> PoolPage (borrowed: Malloc._pages holds it), valid while
 * gen is page_gen. The loop releasing a page forgets its entry; page_gen moves when the cache
 * may be wrong: a run of another Malloc (or of another _pages), or Python code that released
 * pages since they were seen, which Malloc.pool_pages_returned counts (Python's two sites and
 * the loop's each add one per page leaving _pages). Runs are of 1024 records and a replay calls
 * Python every few hundred (perl's log: 2,272 times in 427 k lookups): forgetting the whole
 * cache at each, as a first version did, left 41 % of lookups to the dict; now 6 %, the pages
 * the table's 4096 entries cannot hold at once */
#define PAGES_SEEN 4096
static struct {
    long long pfn;
    PyObject *page;
    unsigned long long gen;
} pages_seen[PAGES_SEEN];
static unsigned long long page_gen = 1;
static PyObject *seen_malloc;    /* a weak reference to the Malloc the cache is of */
static PyObject *seen_pages;     /* its _pages, by identity (never dereferenced) */
static long long seen_returned;  /* its pool_pages_returned when last checked */
static void forget_page(PyObject *page);
static PageRangesAPI *ranges_api; /* the page allocator's C twin (NULL: not built) */

#define SLOT(o, off) (*(PyObject **)((char *)(o) + (off)))

/* an exact int's value if it has at most two 30-bit digits (3.11's layout; from 3.12 the
 * unstable API's compact ints), else the general call: 1 if *out holds it */
static inline int int_value(PyObject *o, long long *out)
{
#if PY_VERSION_HEX < 0x030C0000 && PYLONG_BITS_IN_DIGIT == 30
    Py_ssize_t n = Py_SIZE(o);
    const digit *d = ((PyLongObject *)o)->ob_digit;
    if (n >= -2 && n <= 2) {
        long long v = n == 0 ? 0 : (long long)d[0] | (n == 2 || n == -2 ? (long long)d[1] << 30 : 0);
        *out = n < 0 ? -v : v;
        return 1;
    }
#elif PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        *out = PyUnstable_Long_CompactValue((PyLongObject *)o);
        return 1;
    }
#endif
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(o, &overflow);
    return !overflow;
}

/* a slot's new value (a new reference, stolen) */
static inline void slot_put(PyObject *o, Py_ssize_t off, PyObject *v)
{
    PyObject *old = SLOT(o, off);
    SLOT(o, off) = v;
    Py_XDECREF(old);
}

static inline void slot_set(PyObject *o, Py_ssize_t off, PyObject *v)
{
    Py_INCREF(v);
    slot_put(o, off, v);
}

static int slot_offset(PyObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *d = PyObject_GetAttrString(type, name);
    if (d == NULL)
        return -1;
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(d);
        PyErr_Format(PyExc_TypeError, "%s is not an object slot", name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)d)->d_member->offset;
    Py_DECREF(d);
    return 0;
}

/* an int slot's value; -1 with an error set if it is not a C long */
static inline int slot_long(PyObject *o, Py_ssize_t off, long long *out)
{
    PyObject *v = SLOT(o, off);
    if (v == NULL || !PyLong_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError, "a pool slot is not an int");
        return -1;
    }
    if (!int_value(v, out)) {
        PyErr_SetString(PyExc_OverflowError, "a pool slot is beyond C's long long");
        return -1;
    }
    return 0;
}

static inline int slot_put_long(PyObject *o, Py_ssize_t off, long long v)
{
    PyObject *n = PyLong_FromLongLong(v);
    if (n == NULL)
        return -1;
    slot_put(o, off, n);
    return 0;
}

static PyObject *setup(PyObject *mod, PyObject *args)
{
    PyObject *pool_t, *page_t, *vm, *oop;
    Py_ssize_t half, lo, hi;
    long long area, page_area;
    int shift;
    if (!PyArg_ParseTuple(args, "O!O!OOnLiLnnLLL", &PyType_Type, &pool_t, &PyType_Type, &page_t,
                          &vm, &oop, &half, &area, &shift, &page_area, &lo, &hi, &MAIN_AREA,
                          &HUGE_PAGE, &LARGE_OFFSET))
        return NULL;
    if (slot_offset(page_t, "cpu", &pg_cpu) || slot_offset(page_t, "end", &pg_end)
        || slot_offset(page_t, "fresh", &pg_fresh) || slot_offset(page_t, "freed", &pg_freed)
        || slot_offset(page_t, "nalloc", &pg_nalloc) || slot_offset(page_t, "next", &pg_next)
        || slot_offset(page_t, "prev", &pg_prev) || slot_offset(page_t, "pool", &pg_pool)
        || slot_offset(page_t, "pfn", &pg_pfn) || slot_offset(pool_t, "npages", &pl_npages)
        || slot_offset(pool_t, "cpu", &pl_cpu)
        || slot_offset(pool_t, "head", &pl_head)
        || slot_offset(pool_t, "tail", &pl_tail) || slot_offset(pool_t, "size", &pl_size))
        return NULL;
    Py_INCREF(pool_t);
    Py_INCREF(page_t);
    Py_INCREF(vm);
    Py_INCREF(oop);
    Py_XSETREF(PoolType, (PyTypeObject *)pool_t);
    Py_XSETREF(PoolPageType, (PyTypeObject *)page_t);
    Py_XSETREF(VmError, vm);
    Py_XSETREF(OutOfPages, oop);
    ranges_api = PyCapsule_Import(PAGE_RANGES_CAPSULE, 0);
    if (ranges_api == NULL) /* not built (or turned off): large runs through Python's methods */
        PyErr_Clear();
    HALF = half;
    MEMPOOL_AREA = area;
    PAGE_SHIFT = shift;
    PAGE_AREA = page_area;
    L1_LO = lo;
    L1_HI = hi;
    Py_RETURN_NONE;
}

/* Pool.unlink(page) */
/* node.link = value, or pool.end = value if node is None (the list's end) */
static inline void relink(PyObject *pool, Py_ssize_t end, PyObject *node, Py_ssize_t link,
                          PyObject *value)
{
    slot_set(node == Py_None ? pool : node, node == Py_None ? end : link, value);
}

static void unlink_page(PyObject *pool, PyObject *page)
{
    PyObject *prev = SLOT(page, pg_prev), *next = SLOT(page, pg_next);
    relink(pool, pl_head, prev, pg_next, next);
    relink(pool, pl_tail, next, pg_prev, prev);
    slot_set(page, pg_prev, Py_None);
    slot_set(page, pg_next, Py_None);
}

/* Pool.push_front(page) (front) or Pool.push_back(page): the page becomes the list's end */
static void push(PyObject *pool, PyObject *page, int front)
{
    Py_ssize_t end = front ? pl_head : pl_tail, other_end = front ? pl_tail : pl_head;
    Py_ssize_t toward = front ? pg_next : pg_prev, away = front ? pg_prev : pg_next;
    PyObject *old = SLOT(pool, end);
    Py_INCREF(old);
    slot_set(page, away, Py_None);
    slot_set(page, toward, old);
    relink(pool, other_end, old, away, page);
    slot_set(pool, end, page);
    Py_DECREF(old);
}

/* a call site's counters (AllocSites.stats[site]: blocks and bytes allocated, freed) that the
 * loop has yet to add: they go into the Python list before any Python code runs, and the
 * site into the dirty set as Python's loop puts it there, at its first call since then */
#define SITE_DELTAS 64 /* a power of two */
typedef struct {
    PyObject *site, *st; /* held while pending; NULL: a free slot */
    long long d[4];
} SiteDelta;

/* the state of one run() */
typedef struct {
    PyObject *face, *k, *m, *records, *call;
    PyObject *live, *freed, *stats, *dirty, *snapshot, *entry, *cpu_obj, *row, *pages;
    PyObject *batch_call, *py_malloc, *py_free, *py_realloc;
    long long cpu;
    int smp;
    /* the loop's counters */
    long long live_bytes, peak, nm, nf, nr, nb, nbytes, unattributed;
    int pending;
    /* the record being applied */
    Py_ssize_t i;
    PyObject *kind, *line, *size_o;
    PyObject *at_live_peak, *stale_live, *stale_use; /* AllocSites' (NULL: its method) */
    PyObject *l1, *whole; /* the CPU's L1 page cache and Malloc._whole (NULL: Python's) */
    /* the page allocator's C twin when the large runs can be taken and given in C (NULL:
     * Python's methods), Malloc.large and its runs */
    PyObject *ranges, *large, *runs;
    long long wait_below; /* free bytes from which wait_for_minimum_memory has no work */
    /* counters of Python objects held here between Python calls (sync_out() writes them back):
     * LargeAllocator.run_pages to add, Malloc.heap_bytes and its peak (while hb_loaded),
     * and what face.heap_at_peak was last set to (while hap_valid) */
    long long rp_delta, hb, hbp, hap;
    int hb_loaded, hb_dirty, hbp_dirty, hap_valid;
    int pages_moved; /* record i took or gave pages, in C alone */
    int seen_check;  /* Python code ran: pool_pages_returned to be read before the cache is */
    /* the kernel's state that decides whether a settle is trivial (see c_settle), as read
     * after the last Python call (while quiet_valid) */
    int quiet_valid, quiet;
    long long peak_pages;
    int called;   /* batch_call was called for record i */
    int callout;  /* record i called Python code that may move the kernel */
    SiteDelta sd[SITE_DELTAS];
    int sd_used;
} Loop;

static int flush_sites(Loop *L);
static int sync_out(Loop *L);
static int get_counter(PyObject *o, PyObject *name, long long *out);
static int set_long(PyObject *o, PyObject *name, long long v);

static int batch(Loop *L)
{
    if (L->called)
        return 0;
    if (flush_sites(L) || sync_out(L)) /* the kernel's peak snapshot reads the sites, the heap */
        return -1;
    PyObject *i = PyLong_FromSsize_t(L->i);
    if (i == NULL)
        return -1;
    PyObject *r = PyObject_CallFunctionObjArgs(L->batch_call, i, L->line, L->kind, NULL);
    Py_DECREF(i);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    L->called = 1;
    return 0;
}

/* before Python code that may move the kernel: the record's batch_call first */
static inline int callout(Loop *L)
{
    if (flush_sites(L) || sync_out(L))
        return -1;
    L->callout = 1;
    return batch(L);
}

/* o.a, or o.a.b if b: a new reference */
static PyObject *attr_path(PyObject *o, PyObject *a, PyObject *b)
{
    PyObject *x = PyObject_GetAttr(o, a);
    if (x == NULL || b == NULL)
        return x;
    PyObject *y = PyObject_GetAttr(x, b);
    Py_DECREF(x);
    return y;
}

static int attr_true(PyObject *o, PyObject *a, PyObject *b)
{
    PyObject *x = attr_path(o, a, b);
    if (x == NULL)
        return -1;
    int t = PyObject_IsTrue(x);
    Py_DECREF(x);
    return t;
}

/* Kernel.batch_call's test: does the kernel have something to settle? */
static int moved(Loop *L)
{
    int t = attr_true(L->k, a_pool, a_woken);
    if (t)
        return t;
    PyObject *fp = attr_path(L->k, a_ranges, a_free_pages);
    PyObject *hf = fp ? attr_path(L->k, a__hooks_free, NULL) : NULL;
    t = hf ? PyObject_RichCompareBool(fp, hf, Py_NE) : -1;
    Py_XDECREF(fp);
    Py_XDECREF(hf);
    if (t)
        return t;
    return attr_true(L->k, a__wakeups, NULL);
}

enum { K_MALLOC, K_FREE, K_REALLOC, K_OTHER };

static int kind_of(PyObject *kind)
{
    if (kind == s_malloc)
        return K_MALLOC;
    if (kind == s_free)
        return K_FREE;
    if (kind == s_realloc)
        return K_REALLOC;
    if (PyUnicode_Compare(kind, s_malloc) == 0)
        return K_MALLOC;
    if (PyUnicode_Compare(kind, s_free) == 0)
        return K_FREE;
    if (PyUnicode_Compare(kind, s_realloc) == 0)
        return K_REALLOC;
    return K_OTHER;
}

/* the kernel's state that makes a settle after a memory-only call trivial (c_settle) */
static int load_quiet(Loop *L)
{
    PyObject *clock = NULL, *hooks_clock = NULL, *after = NULL, *ops = NULL;
    int t, r = -1;
    L->quiet = 0;
    if ((t = attr_true(L->k, a_pool, a_woken)) || (t = attr_true(L->k, a__wakeups, NULL))
        || (t = attr_true(L->k, a__armed, NULL))) {
        r = t < 0 ? -1 : 0;
        goto done;
    }
    if ((after = PyObject_GetAttr(L->k, a__after_op_memory)) == NULL
        || (ops = PyObject_GetAttr(L->k, a__memory_ops)) == NULL
        || (clock = PyObject_GetAttr(L->k, a_clock_ns)) == NULL
        || (hooks_clock = PyObject_GetAttr(L->k, a__hooks_clock)) == NULL)
        goto done;
    if (!PyList_CheckExact(after) || PyList_GET_SIZE(after) || !PyAnySet_CheckExact(ops)) {
        r = 0;
        goto done;
    }
    int in[3] = {PySet_Contains(ops, s_malloc), PySet_Contains(ops, s_free),
                 PySet_Contains(ops, s_realloc)};
    int eq = PyObject_RichCompareBool(clock, hooks_clock, Py_EQ);
    if (eq < 0 || in[0] < 0 || in[1] < 0 || in[2] < 0)
        goto done;
    if ((t = get_counter(L->k, a__peak_pages, &L->peak_pages)) < 0)
        goto done;
    L->quiet = t == 0 && eq && in[0] && in[1] && in[2]; /* t 1: a peak beyond C's longs */
    r = 0;
done:
    Py_XDECREF(clock);
    Py_XDECREF(hooks_clock);
    Py_XDECREF(after);
    Py_XDECREF(ops);
    if (r == 0)
        L->quiet_valid = 1;
    return r;
}

/* Kernel.batch_call(i + 1)'s settle after record i took or gave pages in C alone, in C when it
 * is trivial: with the fill threads asleep, the clock where the hooks last ran, no wakeup,
 * nothing armed, no thread that watches memory alone, a memory-only call next and no new peak
 * of used pages, settle() runs _run_memory_hooks with nothing to run, whose one effect is
 * _hooks_free = free pages (what batch_call then tests). 0 done, 1 for Python, -1 error */
static int c_settle(Loop *L, PyObject *const *next)
{
    if (next == NULL)
        return 1;
    PyObject *kind = next[0];
    if (!PyUnicode_CheckExact(kind) || kind_of(kind) == K_OTHER)
        return 1;
    if (!L->quiet_valid && load_quiet(L))
        return -1;
    const PageRangesHead *h = (const PageRangesHead *)L->ranges;
    if (L->quiet && h->peak_used_pages <= L->peak_pages)
        return set_long(L->k, a__hooks_free, h->free_pages) ? -1 : 0;
    /* Python settles, in batch_call(i + 1): the line and kind it reports (a peak's, a
     * reclaim's) are record i's, as batch_call(i) would have left them */
    if (PyObject_SetAttr(L->k, a_line, L->line) || PyObject_SetAttr(L->k, a_op_kind, L->kind))
        return -1;
    return 1;
}

/* MallocFace._store(...): the counters back into the face, and zeroed */
static int store(Loop *L)
{
    if (flush_sites(L) || sync_out(L))
        return -1;
    long long v[8] = {L->live_bytes, L->peak, 0, L->nm, L->nf, L->nr, L->nb, L->nbytes};
    PyObject *a[10] = {L->face};
    int i, ok = 1;
    for (i = 0; i < 8; i++)
        ok = ok && (a[i + 1] = i == 2 ? Py_NewRef(L->pending ? Py_True : Py_False)
                                      : PyLong_FromLongLong(v[i])) != NULL;
    ok = ok && (a[9] = PyLong_FromLongLong(L->unattributed)) != NULL;
    PyObject *r = ok ? PyObject_VectorcallMethod(a__store, a, 10,
                                                 NULL)
                     : NULL;
    for (i = 1; i < 10; i++)
        Py_XDECREF(a[i]);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    L->nm = L->nf = L->nr = L->nb = L->nbytes = L->unattributed = 0;
    return 0;
}

static int get_counter(PyObject *o, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    int overflow = 0;
    long long x = PyLong_CheckExact(v) ? PyLong_AsLongLongAndOverflow(v, &overflow) : 0;
    int ok = PyLong_CheckExact(v) && !overflow && x > -COUNTER_LIMIT && x < COUNTER_LIMIT;
    Py_DECREF(v);
    if (!ok)
        return 1; /* not for C */
    *out = x;
    return 0;
}

/* live_bytes, the peak and pending from the face (after the general path): 1 if C cannot
 * hold them */
static int load(Loop *L)
{
    int r = get_counter(L->face, a_live_bytes, &L->live_bytes);
    if (r)
        return r;
    r = get_counter(L->face, a_live_bytes_peak, &L->peak);
    if (r)
        return r;
    PyObject *p = PyObject_GetAttr(L->face, a_peak_pending);
    if (p == NULL)
        return -1;
    if (p != Py_True && p != Py_False) {
        Py_DECREF(p);
        return 1;
    }
    L->pending = p == Py_True;
    Py_DECREF(p);
    return 0;
}

/* a size a block or a record holds, if C takes it */
static inline int small_int(PyObject *o, long long *out)
{
    long long x;
    if (!PyLong_CheckExact(o) || !int_value(o, &x) || x <= -LIMIT || x >= LIMIT)
        return 0;
    *out = x;
    return 1;
}

/* an exact int that a C long long holds */
static inline int small_int_any(PyObject *o, long long *out)
{
    return PyLong_CheckExact(o) && int_value(o, out);
}

/* st[idx] += v for a site's stats list */
static inline int st_add(PyObject *st, Py_ssize_t idx, PyObject *v)
{
    if (PyList_CheckExact(st) && PyList_GET_SIZE(st) > idx) {
        PyObject *old = PyList_GET_ITEM(st, idx), *n;
        long long a, b;
        if (small_int(old, &a) && small_int(v, &b))
            n = PyLong_FromLongLong(a + b);
        else
            n = PyNumber_Add(old, v);
        if (n == NULL)
            return -1;
        PyList_SET_ITEM(st, idx, n);
        Py_DECREF(old);
        return 0;
    }
    PyObject *key = PyLong_FromSsize_t(idx);
    if (key == NULL)
        return -1;
    PyObject *old = PyObject_GetItem(st, key);
    PyObject *n = old ? PyNumber_InPlaceAdd(old, v) : NULL;
    int r = n ? PyObject_SetItem(st, key, n) : -1;
    Py_DECREF(key);
    Py_XDECREF(old);
    Py_XDECREF(n);
    return r;
}

static inline int dirty_add(Loop *L, PyObject *site)
{
    if (PySet_CheckExact(L->dirty))
        return PySet_Add(L->dirty, site);
    PyObject *r = PyObject_CallMethod(L->dirty, "add", "O", site);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* st[idx] += v (a list of ints) */
static int st_add_ll(PyObject *st, Py_ssize_t idx, long long v)
{
    PyObject *o = PyLong_FromLongLong(v);
    int r = o ? st_add(st, idx, o) : -1;
    Py_XDECREF(o);
    return r;
}

/* one site's pending counters into its list; the slot is free after (-1 if adding failed) */
static int flush_site(Loop *L, SiteDelta *e)
{
    int r = 0;
    for (int k = 0; k < 4; k++)
        if (e->d[k] && r == 0 && st_add_ll(e->st, k, e->d[k]))
            r = -1;
    memset(e->d, 0, sizeof e->d);
    Py_CLEAR(e->site);
    Py_CLEAR(e->st);
    L->sd_used--;
    return r;
}

/* every pending site's counters into its list (all are tried: -1 if one failed) */
static int flush_sites(Loop *L)
{
    int r = 0;
    for (int i = 0; L->sd_used && i < SITE_DELTAS; i++)
        if (L->sd[i].site != NULL && flush_site(L, &L->sd[i]))
            r = -1;
    return r;
}

/* the pending counters of site (st its stats list, looked up or made by the caller), taken at
 * its first call since the last flush: dirty.add(site) then, as Python's loop does each call */
static SiteDelta *site_delta(Loop *L, PyObject *site, PyObject *st)
{
    SiteDelta *e = &L->sd[((uintptr_t)site >> 4) & (SITE_DELTAS - 1)];
    if (e->site == site)
        return e;
    if (e->site != NULL && flush_site(L, e)) /* another site's: its counters go now */
        return NULL;
    if (dirty_add(L, site))
        return NULL;
    Py_INCREF(site);
    Py_INCREF(st);
    e->site = site;
    e->st = st;
    L->sd_used++;
    return e;
}

/* the slot of a site already pending, or NULL */
static inline SiteDelta *pending_site(Loop *L, PyObject *site)
{
    SiteDelta *e = &L->sd[((uintptr_t)site >> 4) & (SITE_DELTAS - 1)];
    return e->site == site ? e : NULL;
}

/* iterating over a set that the loop does not change meanwhile */
typedef struct {
    Py_ssize_t pos;
    PyObject *iter;
} SetIter;

static PyObject *set_next(PyObject *set, SetIter *it) /* a new reference, NULL at the end */
{
#if PY_VERSION_HEX < 0x030D0000
    PyObject *key;
    Py_hash_t hash;
    (void)it->iter;
    if (!_PySet_NextEntry(set, &it->pos, &key, &hash))
        return NULL;
    return Py_NewRef(key);
#else
    if (it->iter == NULL && (it->iter = PyObject_GetIter(set)) == NULL)
        return NULL;
    return PyIter_Next(it->iter);
#endif
}

static void set_iter_end(SetIter *it)
{
    Py_CLEAR(it->iter);
}

/* a - b of two ints (a new reference) */
static inline PyObject *subtract(PyObject *a, PyObject *b)
{
    long long x, y;
    if (small_int(a, &x) && small_int(b, &y))
        return PyLong_FromLongLong(x - y);
    return PyNumber_Subtract(a, b);
}

/* one site of a live-peak snapshot: its live blocks and bytes now, or none */
static int snapshot_site(Loop *L, PyObject *site)
{
    PyObject *st = PyDict_GetItemWithError(L->stats, site);
    if (st == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, site);
        return -1;
    }
    if (!PyList_CheckExact(st) || PyList_GET_SIZE(st) < 4) {
        PyErr_SetString(PyExc_TypeError, "a site's stats are not a list of 4");
        return -1;
    }
    PyObject *b = PyList_GET_ITEM(st, 0), *fb = PyList_GET_ITEM(st, 2);
    int ne = PyObject_RichCompareBool(b, fb, Py_NE);
    if (ne < 0)
        return -1;
    if (!ne) { /* snap.pop(site, None) */
        if (PyDict_DelItem(L->at_live_peak, site) == 0)
            return 0;
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    PyObject *v = PyTuple_New(2), *x;
    if (v == NULL)
        return -1;
    if ((x = subtract(b, fb)) == NULL) {
        Py_DECREF(v);
        return -1;
    }
    PyTuple_SET_ITEM(v, 0, x);
    if ((x = subtract(PyList_GET_ITEM(st, 1), PyList_GET_ITEM(st, 3))) == NULL) {
        Py_DECREF(v);
        return -1;
    }
    PyTuple_SET_ITEM(v, 1, x);
    int r = PyDict_SetItem(L->at_live_peak, site, v);
    Py_DECREF(v);
    return r;
}

/* AllocSites.snapshot_live_peak(), as AllocSites._snapshot does it: the sites changed since
 * (dirty, and the stale ones) into the live-peak snapshot, dirty into the use peak's stale */
static int snapshot(Loop *L)
{
    if (flush_sites(L))
        return -1;
    if (L->at_live_peak == NULL) { /* not the plain containers: the Python method */
        PyObject *r = PyObject_CallNoArgs(L->snapshot);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        L->pending = 0;
        return 0;
    }
    PyObject *sets[2] = {L->dirty, L->stale_live};
    for (int i = 0; i < 2; i++) {
        SetIter it = {0};
        PyObject *site;
        int r = 0;
        while (r == 0 && (site = set_next(sets[i], &it)) != NULL) {
            r = snapshot_site(L, site) || (i == 0 && PySet_Add(L->stale_use, site)); /* and
                other |= dirty */
            Py_DECREF(site);
        }
        set_iter_end(&it);
        if (r || PyErr_Occurred())
            return -1;
    }
    if (PySet_Clear(L->stale_live) || PySet_Clear(L->dirty))
        return -1;
    L->pending = 0;
    return 0;
}

/* a block of live (site's freed counters: the block left it) */
static int site_freed(Loop *L, PyObject *site, long long n)
{
    SiteDelta *e = pending_site(L, site);
    if (e == NULL) {
        PyObject *st = PyDict_GetItemWithError(L->stats, site); /* stats[site] */
        if (st == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, site);
            return -1;
        }
        if ((e = site_delta(L, site, st)) == NULL)
            return -1;
    }
    e->d[2] += 1;
    e->d[3] += n;
    return 0;
}

/* the CPU's L1 page cache (PagePool._l1[cpu]) and Malloc._whole, if they are the plain list
 * and set: whole pages are then handed out and taken back here while the cache is between
 * its marks (otherwise PagePool wakes its fill thread: Python does it) */
static int page_cache(Loop *L, PyObject *pool)
{
    PyObject *l1s = PyObject_GetAttr(pool, a__l1);
    if (l1s == NULL)
        return -1;
    L->l1 = PyList_CheckExact(l1s) && L->cpu >= 0 && L->cpu < PyList_GET_SIZE(l1s)
                ? Py_NewRef(PyList_GET_ITEM(l1s, L->cpu)) : NULL;
    Py_DECREF(l1s);
    if ((L->whole = PyObject_GetAttr(L->m, a__whole)) == NULL)
        return -1;
    if (L->l1 == NULL || !PyList_CheckExact(L->l1) || !PySet_CheckExact(L->whole)) {
        Py_CLEAR(L->l1);
        Py_CLEAR(L->whole);
    }
    return 0;
}

/* o.name = v */
static int set_long(PyObject *o, PyObject *name, long long v)
{
    PyObject *n = PyLong_FromLongLong(v);
    int r = n ? PyObject_SetAttr(o, name, n) : -1;
    Py_XDECREF(n);
    return r;
}

/* Malloc.heap_bytes and its peak into the loop, if they are not there since the last Python
 * call */
static int hb_load(Loop *L)
{
    if (L->hb_loaded)
        return 0;
    int r = get_counter(L->m, a_heap_bytes, &L->hb);
    if (r == 0)
        r = get_counter(L->m, a_heap_bytes_peak, &L->hbp);
    if (r > 0)
        PyErr_SetString(PyExc_OverflowError, "Malloc.heap_bytes is beyond what C holds");
    if (r)
        return -1;
    L->hb_loaded = 1;
    return 0;
}

/* Malloc._grow_heap(delta) (heap_bytes and its peak); heap_bytes += delta alone where the
 * Python adds without a peak (a free). Held in the loop until sync_out() */
static int add_heap(Loop *L, long long delta, int peak_too)
{
    if (hb_load(L))
        return -1;
    L->hb += delta;
    L->hb_dirty = 1;
    if (peak_too && L->hb > L->hbp) {
        L->hbp = L->hb;
        L->hbp_dirty = 1;
    }
    return 0;
}

static int attr_add(PyObject *o, PyObject *name, long long delta);

/* before Python code runs: what the loop holds of Python objects' counters goes back into
 * them, and is read again after (the code may read or move it) */
static int sync_out(Loop *L)
{
    if (L->hb_dirty && set_long(L->m, a_heap_bytes, L->hb))
        return -1;
    L->hb_dirty = 0;
    if (L->hbp_dirty && set_long(L->m, a_heap_bytes_peak, L->hbp))
        return -1;
    L->hbp_dirty = 0;
    if (L->rp_delta && attr_add(L->large, a_run_pages, L->rp_delta))
        return -1;
    L->rp_delta = 0;
    L->hb_loaded = L->hap_valid = L->quiet_valid = 0;
    L->seen_check = 1;
    return 0;
}

static inline int grow_heap(Loop *L, long long delta) { return add_heap(L, delta, delta > 0); }

/* Malloc._std_malloc's whole page (1024 < size <= 4096 with SMP up), served from the L1
 * cache: a new reference to the address, or NULL with no error for Python */
static PyObject *page_malloc(Loop *L)
{
    Py_ssize_t n = PyList_GET_SIZE(L->l1);
    if (n < L1_LO) /* PagePool.alloc_page wakes the fill thread: Python */
        return NULL;
    PyObject *pfn = PyList_GET_ITEM(L->l1, n - 1); /* l1.pop(): its reference is ours */
    long long v;
    if (!small_int(pfn, &v))
        return NULL;
    Py_SET_SIZE(L->l1, n - 1);
    PyObject *addr = PySet_Add(L->whole, pfn) || grow_heap(L, 1LL << PAGE_SHIFT)
                         ? NULL : PyLong_FromLongLong(PAGE_AREA + (v << PAGE_SHIFT));
    Py_DECREF(pfn);
    return addr;
}

/* Malloc.free of a whole page, into the L1 cache: 0 done, 1 for Python, -1 error */
static int page_free(Loop *L, PyObject *addr_o)
{
    long long addr;
    if (L->l1 == NULL || !small_int_any(addr_o, &addr) || (addr >> 44) != (PAGE_AREA >> 44)
        || addr < PAGE_AREA || addr & ((1LL << PAGE_SHIFT) - 1)
        || PyList_GET_SIZE(L->l1) > L1_HI)
        return 1;
    PyObject *pfn = PyLong_FromLongLong((addr - PAGE_AREA) >> PAGE_SHIFT);
    if (pfn == NULL)
        return -1;
    int found = PySet_Discard(L->whole, pfn); /* 0: not a page malloc holds (Python raises) */
    int r = found < 0 ? -1 : found == 0 ? 1 : 0;
    if (r == 0 && (grow_heap(L, -(1LL << PAGE_SHIFT)) || PyList_Append(L->l1, pfn)))
        r = -1;
    Py_DECREF(pfn);
    return r;
}

/* o.name as a C long long (an int within LIMIT): -1 if it is not one (an error set) */
static int attr_long(PyObject *o, PyObject *name, long long *out)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (v == NULL)
        return -1;
    int ok = small_int_any(v, out);
    Py_DECREF(v);
    if (!ok)
        PyErr_SetString(PyExc_TypeError, "a large allocator's count is not a small int");
    return ok ? 0 : -1;
}

/* the bytes LargeAllocator holds, as Malloc counts them for heap_bytes */
static int large_bytes(PyObject *large, long long *out)
{
    long long pages, mapped;
    if (attr_long(large, a_run_pages, &pages) || attr_long(large, a_mapped_bytes, &mapped))
        return -1;
    *out = (pages << PAGE_SHIFT) + mapped;
    return 0;
}

/* o.name += delta (an int attribute) */
static int attr_add(PyObject *o, PyObject *name, long long delta)
{
    long long v;
    return attr_long(o, name, &v) ? -1 : set_long(o, name, v + delta);
}

/* Malloc._std_malloc's large path for malloc(size), a page < size (LargeAllocator.alloc
 * with malloc's alignment, 16): a run of pages, or the mapped path (LargeAllocator._map) if no
 * run fits. A new reference to the address; NULL with no error for Python (2 MiB or more) */
static PyObject *large_malloc(Loop *L, long long size)
{
    long long page = 1LL << PAGE_SHIFT, before, after, v;
    long long total = (size + LARGE_OFFSET + page - 1) & ~(page - 1);
    if (total >= HUGE_PAGE)
        return NULL;
    /* a run of pages, if the wait and the pressure hook have no work (not for the last
     * record: its batch_call comes after it, and would settle it with its line unset) */
    if (L->ranges != NULL && L->i + 1 < PyList_GET_SIZE(L->records)) {
        long long npages = total >> PAGE_SHIFT, pfn;
        if ((((PageRangesHead *)L->ranges)->free_pages << PAGE_SHIFT) >= L->wait_below
            && !ranges_api->hook_due(L->ranges, npages)) {
            if (ranges_api->alloc(L->ranges, npages, 0, &pfn))
                return NULL;
            if (pfn >= 0) { /* runs[pfn] = npages, run_pages += npages, heap_bytes grows */
                PyObject *k = PyLong_FromLongLong(pfn), *v = PyLong_FromLongLong(npages);
                int r = k && v ? PyDict_SetItem(L->runs, k, v) : -1;
                Py_XDECREF(k);
                Py_XDECREF(v);
                if (r || add_heap(L, total, 1))
                    return NULL;
                L->rp_delta += npages;
                L->pages_moved = 1;
                return PyLong_FromLongLong(MAIN_AREA + (pfn << PAGE_SHIFT) + LARGE_OFFSET);
            } /* none fits: the mapped path, in Python (its alloc fails again, as nothing moved) */
        }
    }
    if (callout(L) || PyObject_SetAttr(L->m, a__cpu, L->cpu_obj))
        return NULL;
    PyObject *large = PyObject_GetAttr(L->m, a_large), *wait = NULL, *ranges = NULL;
    PyObject *npages = NULL, *pfn = NULL, *runs = NULL, *base = NULL, *addr = NULL;
    if (large == NULL || large_bytes(large, &before))
        goto done;
    wait = PyObject_GetAttr(large, a_wait_for_minimum_memory);
    if (wait == NULL)
        goto done;
    if (wait != Py_None) {
        PyObject *r = PyObject_CallNoArgs(wait);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    ranges = PyObject_GetAttr(large, a_ranges);
    npages = PyLong_FromLongLong(total >> PAGE_SHIFT);
    pfn = ranges && npages ? PyObject_CallMethodObjArgs(ranges, a_alloc, npages, Py_False, NULL)
                           : NULL;
    if (pfn == NULL)
        goto done;
    if (pfn == Py_None) {
        PyObject *t = PyLong_FromLongLong(total);
        base = t ? PyObject_CallMethodOneArg(large, a__map, t) : NULL;
        Py_XDECREF(t);
        if (base == NULL || !small_int_any(base, &v)) {
            if (base != NULL)
                PyErr_SetString(PyExc_TypeError, "a mapping's address is not a small int");
            goto done;
        }
    } else {
        runs = PyObject_GetAttr(large, a_runs);
        if (runs == NULL || PyObject_SetItem(runs, pfn, npages)
            || attr_add(large, a_run_pages, total >> PAGE_SHIFT))
            goto done;
        if (!small_int_any(pfn, &v)) {
            PyErr_SetString(PyExc_TypeError, "a run's pfn is not a small int");
            goto done;
        }
        v = MAIN_AREA + (v << PAGE_SHIFT);
    }
    if (large_bytes(large, &after) || add_heap(L, after - before, 1))
        goto done;
    addr = PyLong_FromLongLong(v + LARGE_OFFSET);
done:
    Py_XDECREF(large);
    Py_XDECREF(wait);
    Py_XDECREF(ranges);
    Py_XDECREF(npages);
    Py_XDECREF(pfn);
    Py_XDECREF(runs);
    Py_XDECREF(base);
    return addr;
}

/* the page frame of a large block's header: the page below the object, in the main area */
static inline long long header_pfn(long long addr)
{
    return (((addr - 1) & ~((1LL << PAGE_SHIFT) - 1)) - MAIN_AREA) >> PAGE_SHIFT;
}

/* the run of pages LargeAllocator holds at addr (a new reference to its header's pfn and a
 * borrowed one to its page count), or none: 1 (not a run: Python's path), -1 error */
static int large_run(Loop *L, long long addr, PyObject **large, PyObject **runs, PyObject **pfn,
                     PyObject **npages)
{
    long long header = (addr - 1) & ~((1LL << PAGE_SHIFT) - 1);
    *large = *runs = *pfn = *npages = NULL;
    if ((addr >> 44) != (MAIN_AREA >> 44) || header < MAIN_AREA)
        return 1;
    if (L->ranges != NULL) { /* held by the loop (none of it changes while C runs) */
        *large = Py_NewRef(L->large);
        *runs = Py_NewRef(L->runs);
    } else if ((*large = PyObject_GetAttr(L->m, a_large)) == NULL
               || (*runs = PyObject_GetAttr(*large, a_runs)) == NULL) {
        return -1;
    }
    if ((*pfn = PyLong_FromLongLong(header_pfn(addr))) == NULL)
        return -1;
    if (!PyDict_CheckExact(*runs))
        return 1;
    *npages = PyDict_GetItemWithError(*runs, *pfn);
    return *npages != NULL ? 0 : PyErr_Occurred() ? -1 : 1;
}

/* Malloc.free of a run of pages (LargeAllocator.free's run path): 0 done, 1 for Python, -1
 * error */
static int large_free(Loop *L, PyObject *addr_o)
{
    long long addr, before, after, n;
    PyObject *large, *runs, *pfn, *npages;
    if (!small_int_any(addr_o, &addr))
        return 1;
    int r = large_run(L, addr, &large, &runs, &pfn, &npages);
    if (r == 0 && !small_int_any(npages, &n)) {
        PyErr_SetString(PyExc_TypeError, "a run's page count is not a small int");
        r = -1;
    }
    if (r == 0 && L->ranges != NULL && L->i + 1 < PyList_GET_SIZE(L->records)) {
        /* the same in C (the page allocator's free calls nothing; as for a malloc, not for
         * the last record) */
        if (PyDict_DelItem(runs, pfn)
            || ranges_api->free(L->ranges, header_pfn(addr), n)
            || add_heap(L, -(n << PAGE_SHIFT), 0)) {
            r = -1;
        } else {
            L->rp_delta -= n;
            L->pages_moved = 1;
        }
    } else if (r == 0) { /* runs.pop(pfn), run_pages -= n, ranges.free(pfn, n), heap_bytes moves */
        PyObject *ranges = NULL, *res = NULL;
        Py_INCREF(npages);
        if (callout(L) || large_bytes(large, &before)
            || PyObject_SetAttr(L->m, a__cpu, L->cpu_obj) || PyDict_DelItem(runs, pfn)
            || attr_add(large, a_run_pages, -n)
            || (ranges = PyObject_GetAttr(large, a_ranges)) == NULL
            || (res = PyObject_CallMethodObjArgs(ranges, s_free, pfn, npages, NULL)) == NULL
            || large_bytes(large, &after) || add_heap(L, after - before, 0))
            r = -1;
        Py_XDECREF(ranges);
        Py_XDECREF(res);
        Py_DECREF(npages);
    }
    Py_XDECREF(large);
    Py_XDECREF(runs);
    Py_XDECREF(pfn);
    return r;
}

/* a slot's int += delta */
static inline int slot_add(PyObject *o, Py_ssize_t off, long long delta)
{
    long long v;
    return slot_long(o, off, &v) || slot_put_long(o, off, v + delta) ? -1 : 0;
}

/* Malloc._add_page(pool, cpu) with its page from the L1 cache (between its marks: nothing
 * to wake): the new page (a new reference), or NULL with no error for Python */
static PyObject *add_page(Loop *L, PyObject *pool)
{
    if (L->l1 == NULL || PyList_GET_SIZE(L->l1) < L1_LO)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(L->l1);
    PyObject *pfn = PyList_GET_ITEM(L->l1, n - 1); /* PagePool.alloc_page: l1.pop() */
    if (!PyLong_CheckExact(pfn))
        return NULL;
    Py_SET_SIZE(L->l1, n - 1);
    /* Pool.add_page(pfn): PoolPage(pool, pfn, pool.cpu) at the back of the list */
    PyObject *page = PyObject_CallFunctionObjArgs((PyObject *)PoolPageType, pool, pfn,
                                                  SLOT(pool, pl_cpu), NULL);
    if (page != NULL && Py_TYPE(page) != PoolPageType) {
        Py_CLEAR(page);
        PyErr_SetString(PyExc_TypeError, "PoolPage() made no PoolPage");
    }
    if (page != NULL) {
        push(pool, page, 0);
        if (slot_add(pool, pl_npages, 1) || PyDict_SetItem(L->pages, pfn, page)
            || grow_heap(L, 1LL << PAGE_SHIFT))
            Py_CLEAR(page);
    }
    Py_DECREF(pfn);
    return page;
}

/* Malloc._free_same_cpu's release of an empty page (Pool.free said so): the page leaves its
 * list and malloc, its frame goes to the CPU's L1 cache (between its marks); 1 for Python */
static int release_page(Loop *L, PyObject *pool, PyObject *page, int listed)
{
    if (L->l1 == NULL || PyList_GET_SIZE(L->l1) > L1_HI)
        return 1;
    PyObject *pfn = SLOT(page, pg_pfn), *n = NULL, *r = NULL;
    Py_INCREF(page);
    Py_INCREF(pfn);
    int err = slot_put_long(page, pg_nalloc, 0);
    if (!err && listed)
        unlink_page(pool, page);
    forget_page(page); /* it leaves _pages */
    err = err || slot_add(pool, pl_npages, -1) || PyDict_DelItem(L->pages, pfn);
    if (!err) { /* self.pool_pages_returned += 1 */
        r = PyObject_GetAttr(L->m, a_pool_pages_returned);
        n = r ? PyNumber_Add(r, one) : NULL;
        err = n == NULL || PyObject_SetAttr(L->m, a_pool_pages_returned, n);
        seen_returned++;
    }
    err = err || grow_heap(L, -(1LL << PAGE_SHIFT)) || PyList_Append(L->l1, pfn);
    Py_XDECREF(r);
    Py_XDECREF(n);
    Py_DECREF(pfn);
    Py_DECREF(page);
    return err ? -1 : 0;
}

/* Malloc.malloc(size, cpu): a new reference to the address (0 where Python's gives NULL) */
static PyObject *do_malloc(Loop *L, long long size)
{
    if (size >= 0 && size <= 1024 && L->smp) {
        PyObject *pool = PyList_GET_ITEM(L->row, size);
        if (Py_TYPE(pool) != PoolType)
            goto python;
        PyObject *page = SLOT(pool, pl_head);
        Py_INCREF(page);
        if (page == Py_None) {
            Py_DECREF(page);
            page = add_page(L, pool);
            if (page == NULL && !PyErr_Occurred()) {
                if (callout(L))
                    return NULL;
                page = PyObject_CallMethodObjArgs(L->m, a__add_page, pool, L->cpu_obj, NULL);
            }
            if (page == NULL)
                return NULL;
        }
        if (Py_TYPE(page) != PoolPageType) {
            Py_DECREF(page);
            PyErr_SetString(PyExc_TypeError, "a pool's page is not a PoolPage");
            return NULL;
        }
        /* the page's fresh and end, and the pool's size, are read only where the path needs
         * them, as Python's `freed or page.fresh < page.end` reads them: with a freed object
         * to spare they are not (each is an int object of its own, likely out of the cache in
         * a log of many pages; perl's kernel side 0-6 % faster, within the noise) */
        long long nalloc, fresh = 0, end = 0, psize = 0;
        PyObject *freed = SLOT(page, pg_freed), *addr;
        if (!PyList_CheckExact(freed)) {
            PyErr_SetString(PyExc_TypeError, "a page's freed objects are not a list");
            goto error;
        }
        Py_ssize_t n = PyList_GET_SIZE(freed);
        if (slot_long(page, pg_nalloc, &nalloc)
            || (n <= 1 && (slot_long(page, pg_fresh, &fresh) || slot_long(page, pg_end, &end)))
            || (n == 0 && slot_long(pool, pl_size, &psize))
            || slot_put_long(page, pg_nalloc, nalloc + 1))
            goto error;
        if (n) {
            addr = PyList_GET_ITEM(freed, n - 1); /* freed.pop(): its reference is ours */
            Py_SET_SIZE(freed, n - 1);
            if (n > 1 || fresh < end) {
                Py_DECREF(page);
                return addr;
            }
        } else {
            addr = SLOT(page, pg_fresh);
            Py_INCREF(addr);
            if (slot_put_long(page, pg_fresh, fresh + psize)) {
                Py_DECREF(addr);
                goto error;
            }
            if (fresh + psize < end) {
                Py_DECREF(page);
                return addr;
            }
        }
        unlink_page(pool, page); /* full: it leaves the list */
        Py_DECREF(page);
        return addr;
    error:
        Py_DECREF(page);
        return NULL;
    }
    if (size > 1024 && size <= (1LL << PAGE_SHIFT) && L->smp && L->l1 != NULL) {
        PyObject *addr = page_malloc(L);
        if (addr != NULL || PyErr_Occurred())
            return addr;
    }
    if (size > (1LL << PAGE_SHIFT)) {
        PyObject *addr = large_malloc(L, size);
        if (addr != NULL || PyErr_Occurred())
            return addr;
    }
python:
    if (callout(L))
        return NULL;
    return PyObject_CallFunctionObjArgs(L->py_malloc, L->size_o, L->cpu_obj, NULL);
}

/* the cache's check, at a run's start (start) or after Python code ran: page_gen moves
 * unless the cache is of this run's Malloc and _pages and no page left them since */
static int pages_seen_check(Loop *L, int start)
{
    long long returned;
    int rc = get_counter(L->m, a_pool_pages_returned, &returned);
    if (rc) { /* not an int C holds: the cache is of no run */
        Py_CLEAR(seen_malloc);
        page_gen++;
        return rc < 0 ? -1 : 0;
    }
    if (start && (seen_malloc == NULL || PyWeakref_GET_OBJECT(seen_malloc) != L->m
                  || seen_pages != L->pages)) {
        PyObject *ref = PyWeakref_NewRef(L->m, NULL);
        if (ref == NULL) { /* a Malloc that takes no weak reference: the cache is of no run */
            if (!PyErr_ExceptionMatches(PyExc_TypeError))
                return -1;
            PyErr_Clear();
        }
        Py_XSETREF(seen_malloc, ref);
        seen_pages = L->pages;
        page_gen++;
    } else if (returned != seen_returned) {
        page_gen++;
    }
    seen_returned = returned;
    L->seen_check = 0;
    return 0;
}

/* the page's entry, if the cache holds it (the page leaves _pages) */
static void forget_page(PyObject *page)
{
    long long v;
    if (int_value(SLOT(page, pg_pfn), &v)) {
        size_t c = (size_t)v & (PAGES_SEEN - 1);
        if (pages_seen[c].page == page)
            pages_seen[c].gen = 0;
    } else {
        page_gen++;
    }
}

/* the PoolPage of a pool object's address (Malloc._pages), or NULL: -1 on an error */
static int pool_page_of(Loop *L, PyObject *addr_o, PyObject **page)
{
    *page = NULL;
    if (L->seen_check && pages_seen_check(L, 0))
        return -1;
    if (!PyLong_CheckExact(addr_o))
        return 0;
    int overflow;
    long long addr = PyLong_AsLongLongAndOverflow(addr_o, &overflow);
    if (overflow || addr < MEMPOOL_AREA || (addr >> 44) != (MEMPOOL_AREA >> 44))
        return 0;
    long long v = (addr - MEMPOOL_AREA) >> PAGE_SHIFT;
    size_t c = (size_t)v & (PAGES_SEEN - 1);
    if (pages_seen[c].gen == page_gen && pages_seen[c].pfn == v) {
        *page = pages_seen[c].page;
        return 0;
    }
    PyObject *pfn = PyLong_FromLongLong(v);
    if (pfn == NULL)
        return -1;
    PyObject *p = PyDict_GetItemWithError(L->pages, pfn);
    Py_DECREF(pfn);
    if (p == NULL && PyErr_Occurred())
        return -1;
    if (p != NULL && Py_TYPE(p) == PoolPageType) {
        *page = p;
        pages_seen[c].pfn = v;
        pages_seen[c].page = p;
        pages_seen[c].gen = page_gen;
    }
    return 0;
}

/* Malloc.free's same-CPU path when the page stays (Pool.free, without a release): 0 done,
 * 1 for Python (another CPU's page, a page that goes back to the page allocator), -1 error */
static int free_in_page(Loop *L, PyObject *page, PyObject *addr_o)
{
    long long pcpu, nalloc, fresh, end, tail_nalloc;
    PyObject *freed = SLOT(page, pg_freed), *pool = SLOT(page, pg_pool);
    if (slot_long(page, pg_cpu, &pcpu) || slot_long(page, pg_nalloc, &nalloc))
        return -1;
    if ((pcpu != L->cpu && L->smp) || !PyList_CheckExact(freed) || Py_TYPE(pool) != PoolType)
        return 1;
    /* fresh and end only if no object was freed (do_malloc's reads) */
    int listed = PyList_GET_SIZE(freed) != 0;
    if (!listed) {
        if (slot_long(page, pg_fresh, &fresh) || slot_long(page, pg_end, &end))
            return -1;
        listed = fresh < end;
    }
    if (nalloc == 1) { /* the page empties: released if the list's back page is empty */
        PyObject *tail = SLOT(pool, pl_tail);
        if (tail == page)
            return L->smp ? release_page(L, pool, page, listed) : 1;
        if (tail != Py_None) {
            if (Py_TYPE(tail) != PoolPageType)
                return 1;
            if (slot_long(tail, pg_nalloc, &tail_nalloc))
                return -1;
            if (!tail_nalloc)
                return L->smp ? release_page(L, pool, page, listed) : 1;
        }
    }
    if (slot_put_long(page, pg_nalloc, nalloc - 1))
        return -1;
    if (!listed) /* it was full: back on the list (at the back if now empty) */
        push(pool, page, nalloc - 1 != 0);
    return PyList_Append(freed, addr_o);
}

/* Malloc.free(addr, cpu) */
static int do_free(Loop *L, PyObject *addr_o)
{
    PyObject *page;
    if (pool_page_of(L, addr_o, &page))
        return -1;
    int r = page != NULL ? free_in_page(L, page, addr_o) : page_free(L, addr_o);
    if (r == 1 && page == NULL)
        r = large_free(L, addr_o);
    if (r <= 0)
        return r;
    if (callout(L))
        return -1;
    PyObject *res = PyObject_CallFunctionObjArgs(L->py_free, addr_o, L->cpu_obj, NULL);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Malloc.realloc(addr, size, cpu) of a live block (addr and size not 0): a new reference to
 * the new address (0 if none: the old block stays) */
static PyObject *do_realloc(Loop *L, PyObject *addr_o, long long size)
{
    /* usable_size(addr) validates a pool object by its page alone */
    PyObject *page;
    if (pool_page_of(L, addr_o, &page))
        return NULL;
    int inline_ok = page != NULL && Py_TYPE(SLOT(page, pg_pool)) == PoolType;
    long long a;
    if (!inline_ok && L->whole != NULL && small_int_any(addr_o, &a) && a >= PAGE_AREA
        && (a >> 44) == (PAGE_AREA >> 44)) { /* or a whole page malloc holds */
        PyObject *pfn = PyLong_FromLongLong((a - PAGE_AREA) >> PAGE_SHIFT);
        if (pfn == NULL || (inline_ok = PySet_Contains(L->whole, pfn)) < 0) {
            Py_XDECREF(pfn);
            return NULL;
        }
        Py_DECREF(pfn);
    }
    if (!inline_ok && small_int_any(addr_o, &a)) { /* or a run of pages */
        PyObject *large, *runs, *pfn, *npages;
        int r = large_run(L, a, &large, &runs, &pfn, &npages);
        Py_XDECREF(large);
        Py_XDECREF(runs);
        Py_XDECREF(pfn);
        if (r < 0)
            return NULL;
        inline_ok = r == 0;
    }
    if (!inline_ok) {
        if (callout(L))
            return NULL;
        return PyObject_CallFunctionObjArgs(L->py_realloc, addr_o, L->size_o, L->cpu_obj, NULL);
    }
    PyObject *addr = do_malloc(L, size);
    if (addr == NULL)
        return NULL;
    int t = PyObject_IsTrue(addr);
    if (t < 0 || (t && do_free(L, addr_o))) {
        Py_DECREF(addr);
        return NULL;
    }
    return addr;
}

/* ---- LiveBlocks: MallocFace.live, handle -> (address, requested size, site) ----------------
 *
 * A dict would hold a tuple and an int object a block, and a lookup reads its index, its entry
 * and the tuple: in a replay with 100 k blocks live (perl's log) each is a cache miss. Here a
 * block is one slot of an open-addressed table (linear probing, deletion by backward shift),
 * the handle's hash, address, size and site in it. To Python it is a mapping whose values are
 * the same (address, size, site) tuples, built when asked for, and whose order is a dict's
 * (insertion order, a key set again keeping its place). Keys are exact str (handles). */
typedef struct {
    PyObject *key; /* NULL: an empty slot */
    Py_hash_t hash;
    long long addr, size;
    PyObject *site;
    unsigned long long seq; /* insertion order */
} LBSlot;

typedef struct {
    PyObject_HEAD
    LBSlot *slots;
    size_t mask, used;
    size_t reserved; /* the table's mapping (table_grow), 0: from malloc */
    unsigned long long seq;
} LiveBlocks;

static PyTypeObject LiveBlocksType;

#define LB_MIN 8

static inline int str_eq(PyObject *a, PyObject *b)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(a);
    return n == PyUnicode_GET_LENGTH(b) && PyUnicode_KIND(a) == PyUnicode_KIND(b)
           && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)n * PyUnicode_KIND(a)) == 0;
}

/* the slot of key (an exact str with its hash), or of the empty slot where it would go */
static inline LBSlot *lb_probe(LiveBlocks *lb, PyObject *key, Py_hash_t hash)
{
    size_t i = (size_t)hash & lb->mask;
    for (;;) {
        LBSlot *s = &lb->slots[i];
        if (s->key == NULL || s->key == key || (s->hash == hash && str_eq(s->key, key)))
            return s;
        i = (i + 1) & lb->mask;
    }
}

/* key's hash if it can be a key (an exact str), else -1 (a str's is never -1) */
static inline Py_hash_t lb_hash(PyObject *key)
{
    return PyUnicode_CheckExact(key) ? PyObject_Hash(key) : -1; /* a str's: cached, no error */
}

/* the live slot of key, or NULL */
static inline LBSlot *lb_find(LiveBlocks *lb, PyObject *key)
{
    Py_hash_t h = lb_hash(key);
    if (h == -1)
        return NULL;
    LBSlot *s = lb_probe(lb, key, h);
    return s->key ? s : NULL;
}

static int lb_used(const void *s) { return ((const LBSlot *)s)->key != NULL; }
static size_t lb_home(const void *s, size_t mask) { return (size_t)((const LBSlot *)s)->hash & mask; }
static void lb_empty(void *s) { ((LBSlot *)s)->key = NULL; }
static const SlotKind lb_slots = {sizeof(LBSlot), lb_used, lb_home, lb_empty};

/* the table doubled in place, each block moved to its new home (table_double) */
static int lb_grow(LiveBlocks *lb)
{
    if (table_double((void **)&lb->slots, lb->mask + 1, &lb->reserved, &lb_slots)) {
        PyErr_NoMemory();
        return -1;
    }
    lb->mask = 2 * lb->mask + 1;
    return 0;
}

/* a new block for key (not in the table): its slot, filled in; NULL on error */
static LBSlot *lb_add(LiveBlocks *lb, PyObject *key, Py_hash_t hash, long long addr,
                      long long size, PyObject *site)
{
    if ((lb->used + 1) * 3 > (lb->mask + 1) * 2 && lb_grow(lb))
        return NULL;
    LBSlot *s = lb_probe(lb, key, hash);
    Py_INCREF(key);
    Py_INCREF(site);
    s->key = key;
    s->hash = hash;
    s->addr = addr;
    s->size = size;
    s->site = site;
    s->seq = lb->seq++;
    lb->used++;
    return s;
}

/* empty slot s (its references are the caller's now), moving later ones back */
static void lb_remove(LiveBlocks *lb, LBSlot *s)
{
    size_t i = (size_t)(s - lb->slots), j = i;
    for (;;) {
        j = (j + 1) & lb->mask;
        if (lb->slots[j].key == NULL)
            break;
        size_t k = (size_t)lb->slots[j].hash & lb->mask; /* where it would be */
        /* it may move to i unless its home is cyclically in (i, j] */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        lb->slots[i] = lb->slots[j];
        i = j;
    }
    lb->slots[i].key = NULL;
    lb->used--;
}

static PyObject *lb_tuple(LBSlot *s)
{
    PyObject *a = PyLong_FromLongLong(s->addr), *n = a ? PyLong_FromLongLong(s->size) : NULL;
    PyObject *t = n ? PyTuple_Pack(3, a, n, s->site) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(n);
    return t;
}

/* value as a block: (int, int, site) with both ints within a C long long */
static int lb_unpack(PyObject *value, long long *addr, long long *size, PyObject **site)
{
    if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) != 3) {
        PyErr_SetString(PyExc_TypeError, "a live block is (address, size, site)");
        return -1;
    }
    *addr = PyLong_AsLongLong(PyTuple_GET_ITEM(value, 0));
    if (*addr == -1 && PyErr_Occurred())
        return -1;
    *size = PyLong_AsLongLong(PyTuple_GET_ITEM(value, 1));
    if (*size == -1 && PyErr_Occurred())
        return -1;
    *site = PyTuple_GET_ITEM(value, 2);
    return 0;
}

/* live[key] = (addr, size, site) */
static int lb_set(LiveBlocks *lb, PyObject *key, long long addr, long long size, PyObject *site)
{
    Py_hash_t h = lb_hash(key);
    if (h == -1) {
        PyErr_Format(PyExc_TypeError, "a handle is a str, not %.100s", Py_TYPE(key)->tp_name);
        return -1;
    }
    LBSlot *s = lb_probe(lb, key, h);
    if (s->key == NULL)
        return lb_add(lb, key, h, addr, size, site) ? 0 : -1;
    s->addr = addr;
    s->size = size;
    Py_INCREF(site);
    Py_SETREF(s->site, site);
    return 0;
}

static void key_error(PyObject *key)
{
    PyObject *t = PyTuple_Pack(1, key);
    if (t != NULL) {
        PyErr_SetObject(PyExc_KeyError, t);
        Py_DECREF(t);
    }
}

static PyObject *lb_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "LiveBlocks() takes no arguments");
        return NULL;
    }
    LiveBlocks *lb = (LiveBlocks *)type->tp_alloc(type, 0);
    if (lb == NULL)
        return NULL;
    lb->mask = LB_MIN - 1;
    if ((lb->slots = PyMem_Calloc(LB_MIN, sizeof(LBSlot))) == NULL) {
        Py_DECREF(lb);
        return PyErr_NoMemory();
    }
    return (PyObject *)lb;
}

/* the slot a record's handle would be looked up at, on its way to the cache; in a table past
 * PREFETCH_FROM slots only, as a smaller one stays cached and the look would only cost. The
 * look reads the handle's hash: the handle is fetched further ahead, PREFETCH_HANDLE records
 * (the reader touched it, but a batch of records and their tables ago; reading it here was
 * half the loop's own time in perl's replay, its kernel side 6-10 % faster since) */
#define PREFETCH 8
#define PREFETCH_HANDLE 32
#define PREFETCH_FROM (((size_t)1 << 16) - 1) /* a mask: 3 MiB of slots, past a core's L2 */
static inline void lb_prefetch(LiveBlocks *lb, PyObject *const *rec)
{
    if (rec == NULL)
        return;
    PyObject *h = rec[2];
#if defined(__GNUC__)
    if (PyUnicode_CheckExact(h)) { /* a str's hash: computed once, kept in it, never fails */
        LBSlot *sl = &lb->slots[(size_t)PyObject_Hash(h) & lb->mask];
        __builtin_prefetch(sl);
        __builtin_prefetch((char *)sl + sizeof(LBSlot) - 1); /* its end: 48 bytes, it may
                                                                 straddle two lines */
    }
#endif
}

static void lb_clear_slots(LiveBlocks *lb)
{
    for (size_t i = 0; lb->slots && i <= lb->mask; i++)
        if (lb->slots[i].key) {
            Py_CLEAR(lb->slots[i].key);
            Py_CLEAR(lb->slots[i].site);
        }
    lb->used = 0;
}

static void lb_dealloc(LiveBlocks *lb)
{
    lb_clear_slots(lb);
    if (lb->slots)
        table_free(lb->slots, lb->reserved);
    Py_TYPE(lb)->tp_free((PyObject *)lb);
}

static Py_ssize_t lb_len(LiveBlocks *lb) { return (Py_ssize_t)lb->used; }

static PyObject *lb_getitem(LiveBlocks *lb, PyObject *key)
{
    LBSlot *s = lb_find(lb, key);
    if (s == NULL) {
        if (!PyErr_Occurred())
            key_error(key);
        return NULL;
    }
    return lb_tuple(s);
}

static int lb_setitem(LiveBlocks *lb, PyObject *key, PyObject *value)
{
    if (value == NULL) {
        LBSlot *s = lb_find(lb, key);
        if (s == NULL) {
            key_error(key);
            return -1;
        }
        PyObject *k = s->key, *site = s->site;
        lb_remove(lb, s);
        Py_DECREF(k);
        Py_DECREF(site);
        return 0;
    }
    long long addr, size;
    PyObject *site;
    if (lb_unpack(value, &addr, &size, &site))
        return -1;
    return lb_set(lb, key, addr, size, site);
}

static int lb_contains(LiveBlocks *lb, PyObject *key) { return lb_find(lb, key) != NULL; }

static PyObject *lb_get(LiveBlocks *lb, PyObject *const *args, Py_ssize_t n)
{
    if (n < 1 || n > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    LBSlot *s = lb_find(lb, args[0]);
    if (s)
        return lb_tuple(s);
    return Py_NewRef(n > 1 ? args[1] : Py_None);
}

static PyObject *lb_pop(LiveBlocks *lb, PyObject *const *args, Py_ssize_t n)
{
    if (n < 1 || n > 2) {
        PyErr_SetString(PyExc_TypeError, "pop(key[, default])");
        return NULL;
    }
    LBSlot *s = lb_find(lb, args[0]);
    if (s == NULL) {
        if (n > 1)
            return Py_NewRef(args[1]);
        key_error(args[0]);
        return NULL;
    }
    PyObject *t = lb_tuple(s);
    if (t != NULL) {
        PyObject *k = s->key, *site = s->site;
        lb_remove(lb, s);
        Py_DECREF(k);
        Py_DECREF(site);
    }
    return t;
}

/* dict.setdefault: the block there, or value itself once it is put there */
static PyObject *lb_setdefault(LiveBlocks *lb, PyObject *const *args, Py_ssize_t n)
{
    if (n != 2) {
        PyErr_SetString(PyExc_TypeError, "setdefault(handle, block)");
        return NULL;
    }
    LBSlot *s = lb_find(lb, args[0]);
    if (s)
        return lb_tuple(s);
    long long addr, size;
    PyObject *site;
    if (lb_unpack(args[1], &addr, &size, &site) || lb_set(lb, args[0], addr, size, site))
        return NULL;
    return Py_NewRef(args[1]);
}

static int seq_order(const void *a, const void *b)
{
    unsigned long long x = (*(LBSlot *const *)a)->seq, y = (*(LBSlot *const *)b)->seq;
    return x < y ? -1 : x > y;
}

/* a list of the keys (what 0), values (1) or items (2), in insertion order */
static PyObject *lb_list(LiveBlocks *lb, int what)
{
    LBSlot **order = PyMem_Malloc((lb->used ? lb->used : 1) * sizeof(LBSlot *));
    if (order == NULL)
        return PyErr_NoMemory();
    size_t n = 0;
    for (size_t i = 0; i <= lb->mask; i++)
        if (lb->slots[i].key)
            order[n++] = &lb->slots[i];
    qsort(order, n, sizeof(LBSlot *), seq_order);
    PyObject *out = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; out && i < n; i++) {
        PyObject *x = what == 0 ? Py_NewRef(order[i]->key) : lb_tuple(order[i]);
        if (x && what == 2)
            Py_SETREF(x, PyTuple_Pack(2, order[i]->key, x));
        if (x == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, (Py_ssize_t)i, x);
    }
    PyMem_Free(order);
    return out;
}

static PyObject *lb_keys(LiveBlocks *lb, PyObject *unused) { return lb_list(lb, 0); }
static PyObject *lb_values(LiveBlocks *lb, PyObject *unused) { return lb_list(lb, 1); }
static PyObject *lb_items(LiveBlocks *lb, PyObject *unused) { return lb_list(lb, 2); }

static PyObject *lb_iter(LiveBlocks *lb)
{
    PyObject *keys = lb_list(lb, 0), *it = keys ? PyObject_GetIter(keys) : NULL;
    Py_XDECREF(keys);
    return it;
}

static PyObject *lb_clear(LiveBlocks *lb, PyObject *unused)
{
    lb_clear_slots(lb);
    Py_RETURN_NONE;
}

static PyObject *lb_repr(LiveBlocks *lb)
{
    PyObject *items = lb_list(lb, 2), *d = items ? PyDict_New() : NULL;
    for (Py_ssize_t i = 0; d && i < PyList_GET_SIZE(items); i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(kv, 0), PyTuple_GET_ITEM(kv, 1)))
            Py_CLEAR(d);
    }
    PyObject *r = d ? PyUnicode_FromFormat("LiveBlocks(%R)", d) : NULL;
    Py_XDECREF(items);
    Py_XDECREF(d);
    return r;
}

static PyMappingMethods lb_mapping = {(lenfunc)lb_len, (binaryfunc)lb_getitem,
                                      (objobjargproc)lb_setitem};
static PySequenceMethods lb_sequence = {.sq_contains = (objobjproc)lb_contains};
static PyMethodDef lb_methods[] = {
    {"get", (PyCFunction)(void (*)(void))lb_get, METH_FASTCALL, "get(handle, default=None)"},
    {"pop", (PyCFunction)(void (*)(void))lb_pop, METH_FASTCALL, "pop(handle[, default])"},
    {"setdefault", (PyCFunction)(void (*)(void))lb_setdefault, METH_FASTCALL,
     "setdefault(handle, block): the block there, or block once it is put there"},
    {"keys", (PyCFunction)lb_keys, METH_NOARGS, "the handles, in insertion order (a list)"},
    {"values", (PyCFunction)lb_values, METH_NOARGS, "the blocks, in insertion order (a list)"},
    {"items", (PyCFunction)lb_items, METH_NOARGS, "(handle, block) pairs, in insertion order"},
    {"clear", (PyCFunction)lb_clear, METH_NOARGS, "forget every block"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject LiveBlocksType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmsim.kernel._mallocs_c.LiveBlocks",
    .tp_basicsize = sizeof(LiveBlocks),
    .tp_dealloc = (destructor)lb_dealloc,
    .tp_repr = (reprfunc)lb_repr,
    .tp_as_sequence = &lb_sequence,
    .tp_as_mapping = &lb_mapping,
    .tp_iter = (getiterfunc)lb_iter,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MallocFace.live in C: handle -> (address, size, site), a slot a block",
    .tp_methods = lb_methods,
    .tp_new = lb_new,
};

/* -- the freed handles' quarantine ------------------------------------------------------------
 * MallocFace._freed (and _freed_old): handle -> line of its free, for the last QUARANTINE frees.
 * A dict held each handle and its line as objects until its half of the quarantine was dropped,
 * 32 k to 64 k frees later: the line's int lived on, and the drop decref'd every key and value,
 * long out of the cache (perl's replay: 12 % of the kernel side). Here a slot holds the handle's
 * text itself (up to FH_INLINE ASCII characters, a longer or wider one by reference) with its
 * hash and the line as a C long long, so nothing outlives the record that freed it and a drop
 * frees one table. To Python: a mapping str -> int (in, [], get, []=, len, iteration in no set
 * order); the Python loop and the bad-free reports use it as they used the dict. */
#define FH_INLINE 23
#define FH_OBJ 255 /* the tag of a slot whose key is held by reference */

typedef struct {
    Py_hash_t hash;
    long long line;
    union {
        char s[FH_INLINE + 1]; /* the text, then the tag: 0 empty, n + 1 for n characters */
        PyObject *o;
    } k;
} FHSlot; /* 40 bytes */

#define FH_TAG(slot) (((unsigned char *)(slot)->k.s)[FH_INLINE])

typedef struct {
    PyObject_HEAD
    FHSlot *slots;
    size_t mask, used;
} FreedHandles;

static PyTypeObject FreedHandlesType;

static inline int fh_inline(PyObject *key)
{
    return PyUnicode_IS_COMPACT_ASCII(key) && PyUnicode_GET_LENGTH(key) <= FH_INLINE;
}

/* the slot of key (an exact str, hash its hash), or the empty slot where it would go */
_Static_assert(sizeof(FHSlot) == 40, "a slot is two words and the key's 24 bytes");

static FHSlot *fh_probe(FreedHandles *fh, PyObject *key, Py_hash_t hash)
{
    int in = fh_inline(key);
    Py_ssize_t n = PyUnicode_GET_LENGTH(key);
    for (size_t i = (size_t)hash & fh->mask;; i = (i + 1) & fh->mask) {
        FHSlot *s = &fh->slots[i];
        if (FH_TAG(s) == 0)
            return s;
        if (s->hash != hash)
            continue;
        if (FH_TAG(s) == FH_OBJ ? !in && (s->k.o == key || str_eq(s->k.o, key))
                             : in && FH_TAG(s) == n + 1 && memcmp(s->k.s, PyUnicode_DATA(key), n) == 0)
            return s;
    }
}

/* the slot a free record's handle goes to, on its way to the cache (with lb_prefetch: the
 * quarantine's half is up to 2.5 MiB, past a core's L2, and each free writes a slot of it) */
static inline void fh_prefetch(PyObject *freed, PyObject *const *rec)
{
#if defined(__GNUC__)
    if (!Py_IS_TYPE(freed, &FreedHandlesType) || rec == NULL || rec[0] != s_free)
        return;
    PyObject *h = rec[2];
    FreedHandles *fh = (FreedHandles *)freed;
    if (PyUnicode_CheckExact(h))
        __builtin_prefetch(&fh->slots[(size_t)PyObject_Hash(h) & fh->mask], 1);
#endif
}

static int fh_resize(FreedHandles *fh, size_t nslots)
{
    FHSlot *old = fh->slots, *slots = PyMem_Calloc(nslots, sizeof(FHSlot));
    size_t oldn = old ? fh->mask + 1 : 0;
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < oldn; i++)
        if (FH_TAG(&old[i])) {
            size_t j = (size_t)old[i].hash & (nslots - 1);
            while (FH_TAG(&slots[j]))
                j = (j + 1) & (nslots - 1);
            slots[j] = old[i];
        }
    PyMem_Free(old);
    fh->slots = slots;
    fh->mask = nslots - 1;
    return 0;
}

/* fh[key] = line (key an exact str) */
static int fh_set(FreedHandles *fh, PyObject *key, long long line)
{
    if ((fh->used + 1) * 2 > fh->mask + 1 && fh_resize(fh, (fh->mask + 1) * 2))
        return -1;
    Py_hash_t hash = PyObject_Hash(key); /* a str's: cached, no error */
    FHSlot *s = fh_probe(fh, key, hash);
    if (FH_TAG(s) == 0) {
        s->hash = hash;
        if (fh_inline(key)) {
            memcpy(s->k.s, PyUnicode_DATA(key), (size_t)PyUnicode_GET_LENGTH(key));
            FH_TAG(s) = (unsigned char)(PyUnicode_GET_LENGTH(key) + 1);
        } else {
            s->k.o = Py_NewRef(key);
            FH_TAG(s) = FH_OBJ;
        }
        fh->used++;
    }
    s->line = line;
    return 0;
}

/* the slot of key, or NULL (not a str, or not there) */
static FHSlot *fh_find(FreedHandles *fh, PyObject *key)
{
    if (!PyUnicode_CheckExact(key))
        return NULL;
    FHSlot *s = fh_probe(fh, key, PyObject_Hash(key));
    return FH_TAG(s) ? s : NULL;
}

static PyObject *fh_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args) || (kw != NULL && PyDict_GET_SIZE(kw))) {
        PyErr_SetString(PyExc_TypeError, "FreedHandles() takes no arguments");
        return NULL;
    }
    FreedHandles *fh = (FreedHandles *)type->tp_alloc(type, 0);
    if (fh != NULL && fh_resize(fh, 16))
        Py_CLEAR(fh);
    return (PyObject *)fh;
}

/* forget every handle, keeping the table */
static void fh_empty(FreedHandles *fh)
{
    for (size_t i = 0; fh->slots && i <= fh->mask; i++)
        if (FH_TAG(&fh->slots[i]) == FH_OBJ)
            Py_DECREF(fh->slots[i].k.o);
    if (fh->slots)
        memset(fh->slots, 0, (fh->mask + 1) * sizeof(FHSlot));
    fh->used = 0;
}

static void fh_dealloc(FreedHandles *fh)
{
    fh_empty(fh);
    PyMem_Free(fh->slots);
    Py_TYPE(fh)->tp_free((PyObject *)fh);
}

static Py_ssize_t fh_len(FreedHandles *fh) { return (Py_ssize_t)fh->used; }

static PyObject *fh_subscript(FreedHandles *fh, PyObject *key)
{
    FHSlot *s = fh_find(fh, key);
    if (s == NULL) {
        key_error(key);
        return NULL;
    }
    return PyLong_FromLongLong(s->line);
}

static int fh_ass_subscript(FreedHandles *fh, PyObject *key, PyObject *value)
{
    long long line;
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "freed handles are never deleted, only dropped whole");
        return -1;
    }
    if (!PyUnicode_CheckExact(key) || !small_int_any(value, &line)) {
        PyErr_SetString(PyExc_TypeError, "a freed handle is a str and its line an int");
        return -1;
    }
    return fh_set(fh, key, line);
}

static int fh_contains(FreedHandles *fh, PyObject *key) { return fh_find(fh, key) != NULL; }

static PyObject *fh_get(FreedHandles *fh, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(handle, default=None)");
        return NULL;
    }
    FHSlot *s = fh_find(fh, args[0]);
    return s ? PyLong_FromLongLong(s->line) : Py_NewRef(nargs == 2 ? args[1] : Py_None);
}

static PyObject *fh_key(const FHSlot *s)
{
    return FH_TAG(s) == FH_OBJ ? Py_NewRef(s->k.o)
                               : PyUnicode_FromStringAndSize(s->k.s, FH_TAG(s) - 1);
}

static PyObject *fh_iter(FreedHandles *fh)
{
    PyObject *keys = PyList_New(0);
    for (size_t i = 0; keys && i <= fh->mask; i++)
        if (FH_TAG(&fh->slots[i])) {
            PyObject *k = fh_key(&fh->slots[i]);
            if (k == NULL || PyList_Append(keys, k))
                Py_CLEAR(keys);
            Py_XDECREF(k);
        }
    PyObject *it = keys ? PyObject_GetIter(keys) : NULL;
    Py_XDECREF(keys);
    return it;
}

static PyMappingMethods fh_mapping = {
    .mp_length = (lenfunc)fh_len,
    .mp_subscript = (binaryfunc)fh_subscript,
    .mp_ass_subscript = (objobjargproc)fh_ass_subscript,
};

static PySequenceMethods fh_sequence = {.sq_contains = (objobjproc)fh_contains};

static PyMethodDef fh_methods[] = {
    {"get", (PyCFunction)(void (*)(void))fh_get, METH_FASTCALL, "the line of handle's free"},
    {NULL},
};

static PyTypeObject FreedHandlesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmsim.kernel._mallocs_c.FreedHandles",
    .tp_basicsize = sizeof(FreedHandles),
    .tp_dealloc = (destructor)fh_dealloc,
    .tp_as_sequence = &fh_sequence,
    .tp_as_mapping = &fh_mapping,
    .tp_iter = (getiterfunc)fh_iter,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MallocFace._freed in C: handle -> line of its free, the handle's text in its slot",
    .tp_methods = fh_methods,
    .tp_new = fh_new,
};

/* The quarantine's new half (the full one is about to become the old one): as large as the
 * full one, as growing it from 16 slots again cost perl's kernel side 4-8 %, and in the table
 * of the old half being dropped when nothing but the face holds that half. A new table each
 * 32 k frees (2.5 MiB from malloc, so mapped afresh) was a page fault each 4 KiB of it: 7 k of
 * the 20 k faults of perl's replay. */
static PyObject *fh_fresh_half(Loop *L)
{
    size_t nslots = ((FreedHandles *)L->freed)->mask + 1;
    PyObject *old = PyObject_GetAttr(L->face, a__freed_old);
    if (old == NULL)
        return NULL;
    /* two references, the face's and this one: no one else can see it emptied */
    if (Py_IS_TYPE(old, &FreedHandlesType) && Py_REFCNT(old) == 2
        && ((FreedHandles *)old)->mask + 1 == nslots) {
        fh_empty((FreedHandles *)old);
        return old;
    }
    Py_DECREF(old);
    PyObject *fresh = PyObject_CallNoArgs((PyObject *)&FreedHandlesType);
    if (fresh != NULL && fh_resize((FreedHandles *)fresh, nslots))
        Py_CLEAR(fresh);
    return fresh;
}

/* -- MallocRecords: a batch's records packed (malloc_records_c.h) -------------------------------
 * Made by the mtrace reader's C loop through the capsule, or from Python out of 5-tuples whose
 * fields are a kind, a line, a handle, a size and a site (str, int, str, int, str or None, so
 * that it holds no container and needs no garbage collection). To Python a read-only sequence
 * of the records' tuples, equal to a list of the same tuples. */
#define REC_FIELDS 5

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, cap;
    PyObject **f; /* REC_FIELDS references a record */
} MallocRecords;

static PyTypeObject MallocRecordsType;

static PyObject *mr_create(Py_ssize_t hint)
{
    MallocRecords *r = PyObject_New(MallocRecords, &MallocRecordsType);
    if (r == NULL)
        return NULL;
    r->n = 0;
    r->cap = hint > 0 ? hint : 0;
    r->f = r->cap ? PyMem_Malloc((size_t)r->cap * REC_FIELDS * sizeof(PyObject *)) : NULL;
    if (r->cap && r->f == NULL) {
        r->cap = 0;
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    return (PyObject *)r;
}

static int mr_append(PyObject *self, PyObject *kind, PyObject *line, PyObject *handle,
                     PyObject *size, PyObject *site)
{
    MallocRecords *r = (MallocRecords *)self;
    if (r->n == r->cap) {
        Py_ssize_t cap = r->cap ? r->cap * 2 : 64;
        PyObject **f = PyMem_Realloc(r->f, (size_t)cap * REC_FIELDS * sizeof(PyObject *));
        if (f == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        r->f = f;
        r->cap = cap;
    }
    PyObject **p = r->f + r->n * REC_FIELDS;
    p[0] = Py_NewRef(kind);
    p[1] = Py_NewRef(line);
    p[2] = Py_NewRef(handle);
    p[3] = Py_NewRef(size);
    p[4] = Py_NewRef(site);
    r->n++;
    return 0;
}

static MallocRecordsAPI records_api = {&MallocRecordsType, mr_create, mr_append};

static PyObject *mr_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    PyObject *src = NULL;
    if (kw != NULL && PyDict_GET_SIZE(kw)) {
        PyErr_SetString(PyExc_TypeError, "MallocRecords() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "|O:MallocRecords", &src))
        return NULL;
    PyObject *r = mr_create(0), *seq = src ? PySequence_Fast(src, "records are an iterable") : NULL;
    if (r == NULL || (src != NULL && seq == NULL)) {
        Py_XDECREF(r);
        return NULL;
    }
    for (Py_ssize_t i = 0; seq != NULL && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i), **x;
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != REC_FIELDS
            || !PyUnicode_CheckExact((x = &PyTuple_GET_ITEM(t, 0))[0]) || !PyLong_CheckExact(x[1])
            || !PyUnicode_CheckExact(x[2]) || !PyLong_CheckExact(x[3])
            || !(PyUnicode_CheckExact(x[4]) || x[4] == Py_None)) {
            PyErr_Format(PyExc_TypeError, "record %zd is not (kind: str, line: int, handle: str, "
                         "size: int, site: str | None)", i);
            goto fail;
        }
        if (mr_append(r, x[0], x[1], x[2], x[3], x[4]))
            goto fail;
    }
    Py_XDECREF(seq);
    return r;
fail:
    Py_XDECREF(seq);
    Py_DECREF(r);
    return NULL;
}

static void mr_dealloc(MallocRecords *r)
{
    for (Py_ssize_t i = 0; i < r->n * REC_FIELDS; i++)
        Py_DECREF(r->f[i]);
    PyMem_Free(r->f);
    PyObject_Free(r);
}

static Py_ssize_t mr_len(MallocRecords *r) { return r->n; }

static PyObject *mr_item(MallocRecords *r, Py_ssize_t i)
{
    if (i < 0 || i >= r->n) {
        PyErr_SetString(PyExc_IndexError, "record index out of range");
        return NULL;
    }
    PyObject **p = r->f + i * REC_FIELDS;
    return PyTuple_Pack(REC_FIELDS, p[0], p[1], p[2], p[3], p[4]);
}

static PyObject *mr_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE)
        || !(PyList_Check(b) || Py_IS_TYPE(b, &MallocRecordsType))
        || !(PyList_Check(a) || Py_IS_TYPE(a, &MallocRecordsType)))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *la = PySequence_List(a), *lb = la ? PySequence_List(b) : NULL;
    PyObject *r = lb ? PyObject_RichCompare(la, lb, op) : NULL;
    Py_XDECREF(la);
    Py_XDECREF(lb);
    return r;
}

static PyObject *mr_reduce(PyObject *r, PyObject *unused)
{
    PyObject *l = PySequence_List(r);
    return l ? Py_BuildValue("(O(N))", Py_TYPE(r), l) : NULL;
}

static PyObject *mr_repr(PyObject *r)
{
    PyObject *l = PySequence_List(r);
    PyObject *s = l ? PyUnicode_FromFormat("MallocRecords(%R)", l) : NULL;
    Py_XDECREF(l);
    return s;
}

static PySequenceMethods mr_sequence = {.sq_length = (lenfunc)mr_len,
                                        .sq_item = (ssizeargfunc)mr_item};
static PyMethodDef mr_methods[] = {{"__reduce__", mr_reduce, METH_NOARGS, NULL}, {NULL}};

static PyTypeObject MallocRecordsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmsim.kernel._mallocs_c.MallocRecords",
    .tp_basicsize = sizeof(MallocRecords),
    .tp_dealloc = (destructor)mr_dealloc,
    .tp_repr = mr_repr,
    .tp_as_sequence = &mr_sequence,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "MallocRecords(records=()): a batch's (kind, line, handle, size, site) records, "
              "packed",
    .tp_richcompare = mr_richcompare,
    .tp_methods = mr_methods,
    .tp_new = mr_new,
};

/* the fields of record i of a batch (a list of tuples or MallocRecords), borrowed; NULL if a
 * list's item is not a 5-tuple */
static inline PyObject *const *rec_at(PyObject *records, Py_ssize_t i)
{
    if (Py_IS_TYPE(records, &MallocRecordsType))
        return ((MallocRecords *)records)->f + i * REC_FIELDS;
    PyObject *rec = PyList_GET_ITEM(records, i);
    return PyTuple_CheckExact(rec) && PyTuple_GET_SIZE(rec) == REC_FIELDS ? &PyTuple_GET_ITEM(rec, 0)
                                                                        : NULL;
}

/* the records of a batch now (a list may change while Python code runs) */
static inline Py_ssize_t rec_count(PyObject *records)
{
    return Py_IS_TYPE(records, &MallocRecordsType) ? ((MallocRecords *)records)->n
                                                   : PyList_GET_SIZE(records);
}

/* sys_malloc._hashed_dict(): an empty dict whose table keeps its keys' hashes (a key not a
 * str has been in it) */
static PyObject *hashed_dict(void)
{
    PyObject *d = PyDict_New();
    if (d != NULL && (PyDict_SetItem(d, zero, Py_None) || PyDict_DelItem(d, zero)))
        Py_CLEAR(d);
    return d;
}

/* the general path: the face's handler of the record's kind (a realloc, a bad free) */
static int general(Loop *L, PyObject *handle, PyObject *site)
{
    if (callout(L) || store(L))
        return -1;
    if (PyObject_SetAttr(L->call, a_kind, L->kind) || PyObject_SetAttr(L->call, a_line, L->line)
        || PyObject_SetAttr(L->call, a_handle, handle)
        || PyObject_SetAttr(L->call, a_size, L->size_o) || PyObject_SetAttr(L->call, a_site, site))
        return -1;
    PyObject *handlers = PyObject_GetAttr(L->face, a__handlers);
    if (handlers == NULL)
        return -1;
    PyObject *h = PyObject_GetItem(handlers, L->kind);
    Py_DECREF(handlers);
    if (h == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(h, L->call);
    Py_DECREF(h);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    PyObject *freed = PyObject_GetAttr(L->face, a__freed);
    if (freed == NULL)
        return -1;
    Py_SETREF(L->freed, freed);
    return load(L); /* 1: the counters are beyond C's: the Python loop goes on */
}

/* record i, of an exact str kind and a size within LIMIT: 0 applied, 1 not for C (nothing
 * done: a live block of another shape or size), 2 applied but the counters are beyond C's
 * now, -1 error */
static int apply(Loop *L, PyObject *const *rec, long long size)
{
    PyObject *handle = rec[2], *site = rec[4], *addr;
    LBSlot *bs;
    long long grown, bsize;
    int k = kind_of(L->kind);
    if (k == K_MALLOC) { /* op_malloc, inlined */
        L->nm++;
        addr = do_malloc(L, size);
        if (addr == NULL) {
            if (!PyErr_ExceptionMatches(VmError))
                return -1;
            PyErr_Clear();
            addr = PyLong_FromLong(0);
        }
        int t = PyObject_IsTrue(addr);
        if (t <= 0) {
            Py_DECREF(addr);
            if (t < 0)
                return -1;
            PyObject *r = PyObject_CallMethodObjArgs(L->face, a__fail, handle, L->line, NULL);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
            return 0;
        }
        long long a;
        if (!small_int_any(addr, &a)) {
            Py_DECREF(addr);
            PyErr_SetString(PyExc_TypeError, "an address is not a small int");
            return -1;
        }
        Py_DECREF(addr);
        LiveBlocks *lb = (LiveBlocks *)L->live;
        LBSlot *s = lb_find(lb, handle);
        if (s != NULL) { /* live.setdefault(handle, block) is not block: the old one leaks */
            PyObject *leaked = PyObject_GetAttr(L->face, a_leaked), *x = NULL;
            PyObject *old = leaked ? lb_tuple(s) : NULL;
            int r = -1;
            if (old != NULL && PyList_CheckExact(leaked))
                r = PyList_Append(leaked, old);
            else if (old != NULL && (x = PyObject_CallMethod(leaked, "append", "O", old)))
                r = 0;
            Py_XDECREF(x);
            Py_XDECREF(old);
            Py_XDECREF(leaked);
            if (r || lb_set(lb, handle, a, size, site))
                return -1;
        } else if (lb_set(lb, handle, a, size, site)) {
            return -1;
        }
        grown = L->live_bytes + size;
    } else if (k == K_REALLOC && size && (bs = lb_find((LiveBlocks *)L->live, handle)) != NULL) {
        /* op_realloc, inlined */
        if (bs->size >= LIMIT || bs->size < 0)
            return 1;
        long long baddr = bs->addr;
        PyObject *bsite = Py_NewRef(bs->site), *baddr_o = PyLong_FromLongLong(baddr);
        bsize = bs->size;
        if (baddr_o == NULL) {
            Py_DECREF(bsite);
            return -1;
        }
        L->nr++;
        addr = do_realloc(L, baddr_o, size);
        Py_DECREF(baddr_o);
        if (addr == NULL) {
            if (!PyErr_ExceptionMatches(VmError))
                goto realloc_error;
            PyErr_Clear();
            addr = PyLong_FromLong(0);
        }
        int t = PyObject_IsTrue(addr);
        if (t <= 0) {
            Py_DECREF(addr);
            Py_DECREF(bsite);
            if (t < 0)
                return -1;
            PyObject *f = PyObject_GetAttr(L->face, a_failed);
            PyObject *f1 = f ? PyNumber_Add(f, one) : NULL;
            int r = f1 ? PyObject_SetAttr(L->face, a_failed, f1) : -1;
            Py_XDECREF(f);
            Py_XDECREF(f1);
            return r;
        }
        grown = L->live_bytes + size - bsize;
        if (bsite != Py_None) { /* the new block is the realloc's caller's */
            if (L->pending && grown <= L->peak && snapshot(L)) /* before the old block leaves */
                goto realloc_addr_error;
            if (site_freed(L, bsite, bsize))
                goto realloc_addr_error;
        }
        long long a;
        if (!small_int_any(addr, &a)) {
            PyErr_SetString(PyExc_TypeError, "an address is not a small int");
            goto realloc_addr_error;
        }
        Py_DECREF(addr);
        Py_DECREF(bsite);
        if (lb_set((LiveBlocks *)L->live, handle, a, size, site)) /* found again: Python ran */
            return -1;
        goto added;
    realloc_addr_error:
        Py_DECREF(addr);
    realloc_error:
        Py_DECREF(bsite);
        return -1;
    } else {
        if (PyErr_Occurred())
            return -1;
        bs = k == K_FREE ? lb_find((LiveBlocks *)L->live, handle) : NULL;
        if (bs != NULL) { /* op_free, inlined */
            if (bs->size >= LIMIT || bs->size < 0)
                return 1;
            PyObject *bkey = bs->key, *bsite = bs->site; /* the slot's references, ours now */
            long long baddr = bs->addr;
            bsize = bs->size;
            lb_remove((LiveBlocks *)L->live, bs);
            Py_DECREF(bkey);
            PyObject *baddr_o = PyLong_FromLongLong(baddr);
            if (baddr_o == NULL)
                goto free_error;
            L->nf++;
            if (L->pending && snapshot(L))
                goto free_error;
            if (do_free(L, baddr_o))
                goto free_error;
            L->live_bytes -= bsize;
            if (bsite != Py_None && site_freed(L, bsite, bsize))
                goto free_error;
            Py_DECREF(baddr_o);
            Py_DECREF(bsite);
            long long line;
            int fh = Py_IS_TYPE(L->freed, &FreedHandlesType);
            if (fh && small_int_any(L->line, &line)
                    ? fh_set((FreedHandles *)L->freed, handle, line)
                    : PyObject_SetItem(L->freed, handle, L->line))
                return -1;
            if (PyObject_Length(L->freed) >= HALF) {
                PyObject *fresh = fh ? fh_fresh_half(L) : hashed_dict();
                if (fresh == NULL || PyObject_SetAttr(L->face, a__freed_old, L->freed)
                    || PyObject_SetAttr(L->face, a__freed, fresh)) {
                    Py_XDECREF(fresh);
                    return -1;
                }
                Py_SETREF(L->freed, fresh);
            }
            return 0;
        free_error:
            Py_XDECREF(baddr_o);
            Py_DECREF(bsite);
            return -1;
        }
        if (PyErr_Occurred())
            return -1;
        int r = general(L, handle, site); /* a realloc or a bad free */
        return r < 0 ? -1 : r ? 2 : 0;
    }
added: /* a new block is live (a malloc's, or a realloc's): _added, inlined */
    if (grown > L->peak) {
        L->peak = grown;
        L->pending = 1;
        /* self.heap_at_peak = self.malloc.heap_bytes: only Python code changes either */
        if (hb_load(L))
            return -1;
        if (!L->hap_valid || L->hap != L->hb) {
            if (set_long(L->face, a_heap_at_peak, L->hb))
                return -1;
            L->hap = L->hb;
            L->hap_valid = 1;
        }
    } else if (L->pending && snapshot(L)) { /* not a new peak: before its site counts it */
        return -1;
    }
    L->live_bytes = grown;
    L->nb++;
    L->nbytes += size;
    if (site != Py_None) {
        SiteDelta *e = pending_site(L, site);
        if (e == NULL) {
            PyObject *st = PyDict_GetItemWithError(L->stats, site);
            if (st == NULL && PyErr_Occurred())
                return -1;
            if (st != NULL && PyObject_IsTrue(st) > 0) {
                Py_INCREF(st);
            } else {
                if (PyErr_Occurred())
                    return -1;
                st = PyObject_CallOneArg(L->entry, site);
                if (st == NULL)
                    return -1;
            }
            e = site_delta(L, site, st);
            Py_DECREF(st);
            if (e == NULL)
                return -1;
        }
        e->d[0] += 1;
        e->d[1] += size;
    } else {
        L->unattributed += size;
    }
    return 0;
}

static PyObject *attr(PyObject *o, PyObject *name)
{
    return o ? PyObject_GetAttr(o, name) : NULL;
}

/* L->ranges (and large, runs, wait_below) if the large runs can be taken in C: the kernel's
 * and the large allocator's page allocator is the C twin, the runs a dict, and the face says
 * from which free memory wait_for_minimum_memory has no work (None: unknown, Python's path) */
static int large_in_c(Loop *L)
{
    PyObject *kr = attr(L->k, a_ranges), *lr = NULL, *wb = NULL;
    int r = -1;
    L->large = attr(L->m, a_large);
    if (kr == NULL || L->large == NULL || (lr = attr(L->large, a_ranges)) == NULL
        || (L->runs = attr(L->large, a_runs)) == NULL
        || (wb = attr(L->face, a__c_wait_below)) == NULL)
        goto done;
    r = 0;
    if (kr == lr && Py_TYPE(kr) == ranges_api->type && PyDict_CheckExact(L->runs)
        && small_int_any(wb, &L->wait_below) && L->wait_below >= 0)
        L->ranges = Py_NewRef(kr);
done:
    Py_XDECREF(kr);
    Py_XDECREF(lr);
    Py_XDECREF(wb);
    return r;
}

static PyObject *run(PyObject *mod, PyObject *args)
{
    Loop L;
    memset(&L, 0, sizeof L);
    if (!PyArg_ParseTuple(args, "OOO", &L.face, &L.records, &L.call))
        return NULL;
    if (PoolType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_mallocs_c.setup() was not called");
        return NULL;
    }
    int packed = Py_IS_TYPE(L.records, &MallocRecordsType);
    if (!packed && !PyList_CheckExact(L.records))
        return PyLong_FromLong(0);
    PyObject *result = NULL, *sites = NULL, *by_size = NULL, *pool = NULL, *smp = NULL;
    L.k = attr(L.face, a_kernel);
    L.m = attr(L.face, a_malloc);
    L.live = attr(L.face, a_live);
    L.freed = attr(L.face, a__freed);
    sites = attr(L.face, a_sites);
    L.stats = attr(sites, a_stats);
    L.dirty = attr(sites, a_dirty);
    L.snapshot = attr(sites, a_snapshot_live_peak);
    L.entry = attr(sites, a_entry);
    L.at_live_peak = attr(sites, a__at_live_peak);
    L.stale_live = attr(sites, a__stale_live);
    L.stale_use = attr(sites, a__stale_use);
    if (L.stale_use == NULL)
        goto done;
    if (!PyDict_CheckExact(L.at_live_peak) || !PySet_CheckExact(L.stale_live)
        || !PySet_CheckExact(L.stale_use) || !PySet_CheckExact(L.dirty))
        Py_CLEAR(L.at_live_peak);
    L.cpu_obj = attr(L.k, a_cpu);
    by_size = attr(L.m, a__by_size);
    L.pages = attr(L.m, a__pages);
    pool = attr(L.m, a_pool);
    smp = attr(pool, a_smp);
    L.batch_call = attr(L.k, a_batch_call);
    L.py_malloc = attr(L.face, a__malloc);
    L.py_free = attr(L.face, a__free);
    L.py_realloc = attr(L.m, a_realloc);
    if (L.py_realloc == NULL)
        goto done;
    if (!Py_IS_TYPE(L.live, &LiveBlocksType)
        || !(PyDict_CheckExact(L.freed) || Py_IS_TYPE(L.freed, &FreedHandlesType))
        || !PyDict_CheckExact(L.stats) || !PyDict_CheckExact(L.pages)
        || !PyLong_CheckExact(L.cpu_obj) || !PyList_CheckExact(by_size)) {
        result = PyLong_FromLong(0); /* not what C knows: the Python loop */
        goto done;
    }
    if (pages_seen_check(&L, 1))
        goto done;
    if ((L.smp = PyObject_IsTrue(smp)) < 0)
        goto done;
    L.cpu = PyLong_AsLongLong(L.cpu_obj);
    if (L.cpu == -1 && PyErr_Occurred())
        goto done;
    if (L.smp && page_cache(&L, pool))
        goto done;
    L.row = PyObject_GetItem(by_size, L.cpu_obj); /* IndexError as Python's would be */
    if (L.row == NULL)
        goto done;
    if (!PyList_CheckExact(L.row) || PyList_GET_SIZE(L.row) <= 1024) {
        result = PyLong_FromLong(0);
        goto done;
    }
    if (ranges_api != NULL && large_in_c(&L))
        goto done;
    int r = load(&L);
    if (r) {
        if (r > 0)
            result = PyLong_FromLong(0);
        goto done;
    }
    int need = 1; /* batch_call for record i */
    Py_ssize_t n = rec_count(L.records);
    int ahead_on = ((LiveBlocks *)L.live)->mask >= PREFETCH_FROM;
#if defined(__GNUC__)
    for (Py_ssize_t j = 0; ahead_on && j < PREFETCH_HANDLE && j < n; j++) {
        PyObject *const *ahead = rec_at(L.records, j);
        if (ahead != NULL)
            __builtin_prefetch(ahead[2]);
    }
#endif
    for (L.i = 0; L.i < (n = rec_count(L.records)); L.i++) { /* a list may have changed */
        PyObject *const *rec = rec_at(L.records, L.i);
        if (rec == NULL || L.nbytes >= COUNTER_LIMIT
            || L.unattributed >= COUNTER_LIMIT || L.live_bytes >= COUNTER_LIMIT
            || L.live_bytes <= -COUNTER_LIMIT || L.nbytes <= -COUNTER_LIMIT
            || L.unattributed <= -COUNTER_LIMIT || L.peak >= COUNTER_LIMIT) {
            if (store(&L))
                goto failed;
            result = PyLong_FromSsize_t(L.i);
            goto done;
        }
        if (L.i + PREFETCH < n && ((LiveBlocks *)L.live)->mask >= PREFETCH_FROM) {
            PyObject *const *ahead = rec_at(L.records, L.i + PREFETCH);
            lb_prefetch((LiveBlocks *)L.live, ahead);
            fh_prefetch(L.freed, ahead);
#if defined(__GNUC__)
            if (L.i + PREFETCH_HANDLE < n && (ahead = rec_at(L.records, L.i + PREFETCH_HANDLE)))
                __builtin_prefetch(ahead[2]); /* its hash, read at PREFETCH */
#endif
        }
        /* a list's tuple is held while its record is applied, as Python code may change the
         * list; a packed batch has no method that changes it */
        PyObject *hold = packed ? NULL : Py_NewRef(PyList_GET_ITEM(L.records, L.i));
        L.kind = rec[0];
        L.line = rec[1];
        L.size_o = rec[3];
        L.called = L.callout = L.pages_moved = 0;
        long long size;
        if (!PyUnicode_CheckExact(L.kind) || !small_int(L.size_o, &size)) {
            Py_XDECREF(hold); /* not for C: the Python loop goes on from this record */
            if (store(&L))
                goto failed;
            result = PyLong_FromSsize_t(L.i);
            goto done;
        }
        if (need && batch(&L)) {
            Py_XDECREF(hold);
            goto failed;
        }
        r = apply(&L, rec, size);
        if (r < 0) {
            Py_XDECREF(hold);
            goto failed;
        }
        if (r == 1) { /* not for C: the Python loop goes on from this record */
            Py_XDECREF(hold);
            if (store(&L))
                goto failed;
            result = PyLong_FromSsize_t(L.i);
            goto done;
        }
        if (r == 2) { /* applied, but the counters are beyond C's now */
            Py_XDECREF(hold);
            result = PyLong_FromSsize_t(L.i + 1);
            goto done;
        }
        if (L.callout || L.called) { /* does batch_call(i + 1) have something to settle? */
            if ((need = moved(&L)) < 0) {
                Py_XDECREF(hold);
                goto failed;
            }
        } else if (L.pages_moved && L.i + 1 < n) { /* settled here if that is trivial */
            if ((need = c_settle(&L, rec_at(L.records, L.i + 1))) < 0) {
                Py_XDECREF(hold);
                goto failed;
            }
        } else {
            need = 0;
        }
        if (L.i == n - 1 && !L.called && batch(&L)) { /* the last record's line and kind */
            Py_XDECREF(hold);
            goto failed;
        }
        Py_XDECREF(hold);
    }
    if (store(&L))
        goto done;
    result = PyLong_FromSsize_t(L.i);
    goto done;
failed:
    /* as the Python loop's except and finally: an OutOfPages is the batch's OOM report */
    if (PyErr_ExceptionMatches(OutOfPages)) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL)
            PyException_SetTraceback(value, tb);
        if (store(&L) == 0) {
            PyObject *r2 = PyObject_CallMethodObjArgs(L.k, a_batch_failed, value, L.kind, L.line,
                                                      L.size_o, NULL);
            Py_XDECREF(r2); /* it raises (NoReturn) */
            if (r2 != NULL)
                PyErr_SetString(PyExc_RuntimeError, "Kernel.batch_failed returned");
            PyObject *t2, *v2, *tb2;
            PyErr_Fetch(&t2, &v2, &tb2);
            PyErr_NormalizeException(&t2, &v2, &tb2);
            if (v2 != NULL && v2 != value) {
                Py_INCREF(value);
                PyException_SetContext(v2, value); /* raised while handling it, as in Python */
            }
            PyErr_Restore(t2, v2, tb2);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        int s = store(&L); /* finally: the counters go back whatever happened */
        if (s)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
done:
    if (L.sd_used || L.hb_dirty || L.hbp_dirty || L.rp_delta) {
        /* an error (or counters beyond C's) left counters here: back if it can be done */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (flush_sites(&L) | sync_out(&L))
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
    }
    Py_XDECREF(L.k);
    Py_XDECREF(L.m);
    Py_XDECREF(L.live);
    Py_XDECREF(L.freed);
    Py_XDECREF(sites);
    Py_XDECREF(L.stats);
    Py_XDECREF(L.dirty);
    Py_XDECREF(L.snapshot);
    Py_XDECREF(L.entry);
    Py_XDECREF(L.at_live_peak);
    Py_XDECREF(L.l1);
    Py_XDECREF(L.whole);
    Py_XDECREF(L.stale_live);
    Py_XDECREF(L.stale_use);
    Py_XDECREF(L.cpu_obj);
    Py_XDECREF(by_size);
    Py_XDECREF(L.pages);
    Py_XDECREF(pool);
    Py_XDECREF(smp);
    Py_XDECREF(L.batch_call);
    Py_XDECREF(L.py_malloc);
    Py_XDECREF(L.py_free);
    Py_XDECREF(L.py_realloc);
    Py_XDECREF(L.row);
    Py_XDECREF(L.ranges);
    Py_XDECREF(L.large);
    Py_XDECREF(L.runs);
    return result;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Pool, PoolPage, VmError, OutOfPages, half, mempool_area, page_shift, page_area, "
     "l1_lo, l1_hi)"},
    {"run", run, METH_VARARGS,
     "run(face, records, call) -> index of the first record not applied"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mallocs_c",
                                    "MallocFace's batch loop in C (kernel/sys_malloc.py)", -1,
                                    methods};

#define INTERN(var, text)                                                                    \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                    \
        return NULL;

PyMODINIT_FUNC PyInit__mallocs_c(void)
{
    INTERN(s_malloc, "malloc");
    INTERN(s_free, "free");
    INTERN(s_realloc, "realloc");
    INTERN(a_kernel, "kernel");
    INTERN(a_live, "live");
    INTERN(a__freed, "_freed");
    INTERN(a__freed_old, "_freed_old");
    INTERN(a_leaked, "leaked");
    INTERN(a_malloc, "malloc");
    INTERN(a_sites, "sites");
    INTERN(a_stats, "stats");
    INTERN(a_dirty, "dirty");
    INTERN(a_snapshot_live_peak, "snapshot_live_peak");
    INTERN(a_entry, "entry");
    INTERN(a_cpu, "cpu");
    INTERN(a__by_size, "_by_size");
    INTERN(a__pages, "_pages");
    INTERN(a_pool, "pool");
    INTERN(a_smp, "smp");
    INTERN(a_batch_call, "batch_call");
    INTERN(a__malloc, "_malloc");
    INTERN(a__free, "_free");
    INTERN(a_realloc, "realloc");
    INTERN(a_live_bytes, "live_bytes");
    INTERN(a_live_bytes_peak, "live_bytes_peak");
    INTERN(a_peak_pending, "peak_pending");
    INTERN(a__store, "_store");
    INTERN(a__fail, "_fail");
    INTERN(a_failed, "failed");
    INTERN(a__handlers, "_handlers");
    INTERN(a_heap_at_peak, "heap_at_peak");
    INTERN(a_heap_bytes, "heap_bytes");
    INTERN(a__add_page, "_add_page");
    INTERN(a_batch_failed, "batch_failed");
    INTERN(a_kind, "kind");
    INTERN(a_line, "line");
    INTERN(a_handle, "handle");
    INTERN(a_size, "size");
    INTERN(a_site, "site");
    INTERN(a_woken, "woken");
    INTERN(a_ranges, "ranges");
    INTERN(a_free_pages, "free_pages");
    INTERN(a__hooks_free, "_hooks_free");
    INTERN(a__wakeups, "_wakeups");
    INTERN(a__hooks_clock, "_hooks_clock");
    INTERN(a_op_kind, "op_kind");
    INTERN(a_clock_ns, "clock_ns");
    INTERN(a__armed, "_armed");
    INTERN(a__after_op_memory, "_after_op_memory");
    INTERN(a__memory_ops, "_memory_ops");
    INTERN(a__peak_pages, "_peak_pages");
    INTERN(a__c_wait_below, "_c_wait_below");
    INTERN(a__at_live_peak, "_at_live_peak");
    INTERN(a__l1, "_l1");
    INTERN(a_pool_pages_returned, "pool_pages_returned");
    INTERN(a__whole, "_whole");
    INTERN(a_heap_bytes_peak, "heap_bytes_peak");
    INTERN(a__stale_live, "_stale_live");
    INTERN(a__stale_use, "_stale_use");
    INTERN(a_large, "large");
    INTERN(a_runs, "runs");
    INTERN(a_run_pages, "run_pages");
    INTERN(a_mapped_bytes, "mapped_bytes");
    INTERN(a_alloc, "alloc");
    INTERN(a_wait_for_minimum_memory, "wait_for_minimum_memory");
    INTERN(a__map, "_map");
    INTERN(a__cpu, "_cpu");
    if ((one = PyLong_FromLong(1)) == NULL || (zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    if (PyType_Ready(&LiveBlocksType) < 0 || PyType_Ready(&FreedHandlesType) < 0
        || PyType_Ready(&MallocRecordsType) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&module);
    PyObject *cap = mod ? PyCapsule_New(&records_api, MALLOC_RECORDS_CAPSULE, NULL) : NULL;
    int bad = cap == NULL || PyModule_AddObjectRef(mod, "_RECORDS", cap);
    Py_XDECREF(cap);
    if (mod != NULL && (bad
                        || PyModule_AddObjectRef(mod, "LiveBlocks", (PyObject *)&LiveBlocksType)
                        || PyModule_AddObjectRef(mod, "FreedHandles",
                                                 (PyObject *)&FreedHandlesType)
                        || PyModule_AddObjectRef(mod, "MallocRecords",
                                                 (PyObject *)&MallocRecordsType))) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
