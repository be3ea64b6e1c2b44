/* The C twin of mmsim.stack_distance.StackDistances' counting (see setup.py): the same
 * histogram of LRU stack distances, from the same stream of block ids in [0, 2^64).
 *
 * Each block's last reference holds a *slot*, handed out in time order; a Fenwick tree over
 * the slots has a 1 at each block's current one, so a request's distance (the distinct other
 * blocks referenced since its block's previous reference) is the number of live slots after
 * that block's slot. When the slots run out they are renumbered 0..live-1 in their order
 * (and the tree doubled if more than half of it would be live), so memory grows with the
 * distinct blocks, not with the trace's length. Blocks map to their slot in an open-addressing
 * hash table (linear probing, at most half full, never shrinks: blocks are never forgotten).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    uint64_t *keys;   /* the blocks, by table index */
    int64_t *slot;    /* slot[i]: the slot of keys[i]'s last reference */
    uint8_t *used;
    size_t table_cap; /* a power of two */
    int64_t distinct;
    int64_t *tree;    /* Fenwick tree over slots 0..tree_cap-1 (1-based: tree_cap + 1) */
    int64_t *owner;   /* owner[s]: the table index whose last reference is slot s, or -1 */
    int64_t tree_cap; /* a power of two */
    int64_t next_slot;
    int64_t *hist;    /* hist[d]: requests at distance d; distinct + 1 entries */
    int64_t hist_cap;
    int64_t requests;
} Counter;

static inline uint64_t mix(uint64_t h) { /* murmur3's 64-bit finalizer */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static int table_grow(Counter *c) {
    size_t cap = c->table_cap * 2, mask = cap - 1;
    uint64_t *keys = malloc(cap * sizeof *keys);
    int64_t *slot = malloc(cap * sizeof *slot);
    uint8_t *used = calloc(cap, 1);
    if (!keys || !slot || !used) {
        free(keys), free(slot), free(used);
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < c->table_cap; i++) {
        if (!c->used[i]) continue;
        size_t j = mix(c->keys[i]) & mask;
        while (used[j]) j = (j + 1) & mask;
        used[j] = 1, keys[j] = c->keys[i], slot[j] = c->slot[i];
        c->owner[slot[j]] = (int64_t)j;
    }
    free(c->keys), free(c->slot), free(c->used);
    c->keys = keys, c->slot = slot, c->used = used, c->table_cap = cap;
    return 0;
}

/* Renumber the live slots 0..live-1 in order, in a tree of at least twice as many slots. */
static int renumber(Counter *c) {
    int64_t cap = c->tree_cap;
    while (cap < 2 * c->distinct + 2) cap *= 2;
    int64_t *owner = malloc(cap * sizeof *owner);
    int64_t *tree = calloc(cap + 1, sizeof *tree);
    if (!owner || !tree) {
        free(owner), free(tree);
        PyErr_NoMemory();
        return -1;
    }
    int64_t n = 0;
    for (int64_t s = 0; s < c->next_slot; s++) {
        int64_t i = c->owner[s];
        if (i < 0) continue;
        c->slot[i] = n;
        owner[n++] = i;
    }
    for (int64_t s = n; s < cap; s++) owner[s] = -1;
    for (int64_t j = 1; j <= n; j++) tree[j] = 1;
    for (int64_t j = 1; j <= cap; j++) { /* each node adds itself to its parent */
        int64_t up = j + (j & -j);
        if (up <= cap) tree[up] += tree[j];
    }
    free(c->owner), free(c->tree);
    c->owner = owner, c->tree = tree, c->tree_cap = cap, c->next_slot = n;
    return 0;
}

static int count(Counter *c, uint64_t b) {
    if (c->next_slot == c->tree_cap && renumber(c) < 0) return -1;
    if ((size_t)(c->distinct + 1) * 2 > c->table_cap && table_grow(c) < 0) return -1;
    size_t mask = c->table_cap - 1, i = mix(b) & mask;
    while (c->used[i] && c->keys[i] != b) i = (i + 1) & mask;
    int64_t *tree = c->tree, cap = c->tree_cap;
    if (c->used[i]) { /* seen: its distance, and its old slot freed */
        int64_t p = c->slot[i], before = 0;
        for (int64_t j = p + 1; j > 0; j &= j - 1) before += tree[j];
        c->hist[c->distinct - before] += 1;
        for (int64_t j = p + 1; j <= cap; j += j & -j) tree[j] -= 1;
        c->owner[p] = -1;
    } else { /* a first reference: one more block, distances can reach one further */
        if (c->distinct + 2 > c->hist_cap) {
            int64_t n = c->hist_cap * 2;
            int64_t *h = realloc(c->hist, n * sizeof *h);
            if (!h) {
                PyErr_NoMemory();
                return -1;
            }
            c->hist = h, c->hist_cap = n;
        }
        c->used[i] = 1, c->keys[i] = b;
        c->distinct += 1;
        c->hist[c->distinct] = 0;
    }
    int64_t s = c->next_slot++;
    c->slot[i] = s;
    c->owner[s] = (int64_t)i;
    for (int64_t j = s + 1; j <= cap; j += j & -j) tree[j] += 1;
    c->requests += 1;
    return 0;
}

static PyObject *Counter_feed(Counter *c, PyObject *blocks) {
    if (!c->tree) {
        PyErr_SetString(PyExc_RuntimeError, "Counter not initialized");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(blocks, "blocks must be iterable");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) { /* all converted before any is counted */
        ids[k] = PyLong_AsUnsignedLongLong(items[k]);
        if (ids[k] == (uint64_t)-1 && PyErr_Occurred()) {
            free(ids);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    for (Py_ssize_t k = 0; k < n; k++) {
        if (count(c, ids[k]) < 0) {
            free(ids);
            return NULL;
        }
    }
    free(ids);
    Py_RETURN_NONE;
}

static PyObject *Counter_hist(Counter *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(c->distinct + 1);
    if (!out) return NULL;
    for (int64_t d = 0; d <= c->distinct; d++) {
        PyObject *v = PyLong_FromLongLong(c->hist[d]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, d, v);
    }
    return out;
}

static PyObject *Counter_get_requests(Counter *c, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(c->requests);
}

static PyObject *Counter_get_distinct(Counter *c, void *Py_UNUSED(closure)) {
    return PyLong_FromLongLong(c->distinct);
}

static int Counter_init(Counter *c, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"slots", NULL};
    Py_ssize_t slots = 1024; /* the tree's first size (a power of two; tests make it small) */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", kw, &slots)) return -1;
    if (slots < 2 || (slots & (slots - 1))) {
        PyErr_SetString(PyExc_ValueError, "slots must be a power of two, at least 2");
        return -1;
    }
    free(c->keys), free(c->slot), free(c->used), free(c->tree), free(c->owner), free(c->hist);
    c->table_cap = 16;
    c->keys = malloc(c->table_cap * sizeof *c->keys);
    c->slot = malloc(c->table_cap * sizeof *c->slot);
    c->used = calloc(c->table_cap, 1);
    c->tree_cap = slots;
    c->tree = calloc(slots + 1, sizeof *c->tree);
    c->owner = malloc(slots * sizeof *c->owner);
    c->hist_cap = 16;
    c->hist = calloc(c->hist_cap, sizeof *c->hist);
    c->distinct = c->next_slot = c->requests = 0;
    if (!c->keys || !c->slot || !c->used || !c->tree || !c->owner || !c->hist) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Counter_dealloc(Counter *c) {
    free(c->keys), free(c->slot), free(c->used), free(c->tree), free(c->owner), free(c->hist);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyMethodDef Counter_methods[] = {
    {"feed", (PyCFunction)Counter_feed, METH_O,
     "Count the distances of a sequence of block ids in [0, 2**64)."},
    {"hist", (PyCFunction)Counter_hist, METH_NOARGS,
     "The histogram: hist[d] requests at distance d (distinct + 1 entries)."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Counter_getset[] = {
    {"requests", (getter)Counter_get_requests, NULL, "requests counted", NULL},
    {"distinct", (getter)Counter_get_distinct, NULL, "distinct blocks seen", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyTypeObject CounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmsim._stack_distance_c.Counter",
    .tp_basicsize = sizeof(Counter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LRU stack distances of a stream of block ids (StackDistances' C twin).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Counter_init,
    .tp_dealloc = (destructor)Counter_dealloc,
    .tp_methods = Counter_methods,
    .tp_getset = Counter_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_stack_distance_c",
                                    "StackDistances' C twin (see setup.py).", -1, NULL};

PyMODINIT_FUNC PyInit__stack_distance_c(void) {
    if (PyType_Ready(&CounterType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&CounterType);
    if (PyModule_AddObject(m, "Counter", (PyObject *)&CounterType) < 0) {
        Py_DECREF(&CounterType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
