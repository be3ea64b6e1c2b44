/* The C twin of policy_arc.PyArcPolicy's state and replay loop (issue 17): ARC's four lists
 * (T1, T2, B1, B2) as doubly linked lists of nodes indexed by one open-addressing hash table
 * of 64-bit keys, with the byte count of each list and the target p. The same machinery with
 * one list (T1 as the LRU list) is the twin of policy_lru.PyLruPolicy (the Lru type, below).
 *
 * Every decision mirrors PyArcPolicy._replay and _make_room line for line (p is a double and
 * every comparison of a byte count with p is done in double, as Python does it exactly for
 * counts below 2**53), so both give the same hits, lists, ghosts and p. The Python class
 * (CArcPolicy) keeps the counters and the interface; this module keeps the lists.
 *
 * A key that does not fit in 64 bits stops a replay before it is looked at (``overflow`` in
 * its result): the caller then moves the state to the pure-Python twin and carries on there. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <limits.h>
#include <string.h>

enum { T1, T2, B1, B2, NLISTS, DETACHED = NLISTS };

typedef struct {
    int64_t key;
    int64_t size;
    PyObject *obj;  /* the key as the caller gave it: payload moves and on_evict get it back */
    int32_t prev, next;
    int32_t list;
} Node;

typedef struct {
    PyObject_HEAD
    Node *nodes;       /* 0..3: the lists' sentinels (circular lists, oldest after the head) */
    int32_t nnodes, capnodes, free_node;
    int32_t *slots;    /* node index or -1; linear probing, deletion by backward shift */
    uint64_t mask;
    int64_t used;
    int64_t bytes[NLISTS];
    Py_ssize_t count[NLISTS];
    double p;
    int64_t c;
} Arc;

static inline uint64_t mix(int64_t key) {
    uint64_t z = (uint64_t)key + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int32_t find(Arc *a, int64_t key) {
    uint64_t i = mix(key) & a->mask;
    for (;;) {
        int32_t n = a->slots[i];
        if (n < 0 || a->nodes[n].key == key)
            return n;
        i = (i + 1) & a->mask;
    }
}

static int grow_table(Arc *a) {
    uint64_t size = (a->mask + 1) * 2;
    int32_t *slots = PyMem_Malloc(size * sizeof(int32_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(slots, 0xff, size * sizeof(int32_t));
    for (uint64_t j = 0; j <= a->mask; j++) {
        int32_t n = a->slots[j];
        if (n >= 0) {
            uint64_t i = mix(a->nodes[n].key) & (size - 1);
            while (slots[i] >= 0)
                i = (i + 1) & (size - 1);
            slots[i] = n;
        }
    }
    PyMem_Free(a->slots);
    a->slots = slots;
    a->mask = size - 1;
    return 0;
}

static void table_delete(Arc *a, int64_t key) {
    uint64_t i = mix(key) & a->mask;
    while (a->nodes[a->slots[i]].key != key)
        i = (i + 1) & a->mask;
    uint64_t j = i;
    for (;;) {  /* backward shift: keep every later entry of the run reachable */
        j = (j + 1) & a->mask;
        int32_t n = a->slots[j];
        if (n < 0)
            break;
        uint64_t home = mix(a->nodes[n].key) & a->mask;
        if (((j - home) & a->mask) >= ((j - i) & a->mask)) {
            a->slots[i] = n;
            i = j;
        }
    }
    a->slots[i] = -1;
    a->used--;
}

static inline void unlink_node(Arc *a, int32_t n) {
    Node *x = &a->nodes[n];
    a->nodes[x->prev].next = x->next;
    a->nodes[x->next].prev = x->prev;
    a->bytes[x->list] -= x->size;
    a->count[x->list]--;
    x->list = DETACHED;
}

static inline void append(Arc *a, int list, int32_t n) {  /* as the most recent */
    Node *x = &a->nodes[n];
    int32_t last = a->nodes[list].prev;
    x->prev = last;
    x->next = list;
    a->nodes[last].next = n;
    a->nodes[list].prev = n;
    x->list = list;
    a->bytes[list] += x->size;
    a->count[list]++;
}

/* A new node for key (not in the table), detached; -1 with an exception set. */
static int32_t new_node(Arc *a, int64_t key, PyObject *obj, int64_t size) {
    if ((uint64_t)(a->used + 1) * 2 > a->mask + 1 && grow_table(a) < 0)
        return -1;
    int32_t n = a->free_node;
    if (n >= 0) {
        a->free_node = a->nodes[n].next;
    } else {
        if (a->nnodes == a->capnodes) {
            if (a->capnodes > INT32_MAX / 2) {
                PyErr_SetString(PyExc_MemoryError, "ARC: too many records");
                return -1;
            }
            int32_t cap = a->capnodes * 2;
            Node *nodes = PyMem_Realloc(a->nodes, (size_t)cap * sizeof(Node));
            if (nodes == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            a->nodes = nodes;
            a->capnodes = cap;
        }
        n = a->nnodes++;
    }
    Node *x = &a->nodes[n];
    x->key = key;
    x->size = size;
    Py_INCREF(obj);
    x->obj = obj;
    x->list = DETACHED;
    uint64_t i = mix(key) & a->mask;
    while (a->slots[i] >= 0)
        i = (i + 1) & a->mask;
    a->slots[i] = n;
    a->used++;
    return n;
}

/* Forget node n (detached) entirely; returns its key object (a new reference). */
static PyObject *drop_node(Arc *a, int32_t n) {
    Node *x = &a->nodes[n];
    table_delete(a, x->key);
    PyObject *obj = x->obj;
    x->obj = NULL;
    x->next = a->free_node;
    a->free_node = n;
    return obj;
}

static inline int32_t oldest(Arc *a, int list) {
    int32_t n = a->nodes[list].next;
    return n == list ? -1 : n;
}

/* The key of a record moved from T1 or T2 to its ghost list (a borrowed reference). */
static int32_t replace_one(Arc *a, int in_b2) {
    int64_t t1b = a->bytes[T1];
    int from, to;
    if (t1b && ((double)t1b > a->p || (in_b2 && (double)t1b == a->p) || a->count[T2] == 0)) {
        from = T1;
        to = B1;
    } else {
        from = T2;
        to = B2;
    }
    int32_t n = oldest(a, from);
    if (n < 0) {
        PyErr_SetString(PyExc_KeyError, "popitem(): dictionary is empty");
        return -1;
    }
    unlink_node(a, n);
    append(a, to, n);
    return n;
}

static int call_evict(PyObject *on_evict, PyObject *key) {
    PyObject *r = PyObject_CallOneArg(on_evict, key);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* REPLACE until size fits (PyArcPolicy._make_room); evictions, or -1 with an exception. */
static Py_ssize_t make_room(Arc *a, int64_t size, int in_b2, PyObject *on_evict) {
    Py_ssize_t evictions = 0;
    while (a->bytes[T1] + a->bytes[T2] + size > a->c) {
        int32_t n = replace_one(a, in_b2);
        if (n < 0)
            return -1;
        evictions++;
        PyObject *k = a->nodes[n].obj;
        Py_INCREF(k);
        int err = call_evict(on_evict, k);
        Py_DECREF(k);
        if (err < 0)
            return -1;
    }
    return evictions;
}

static PyObject *Arc_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    long long c;
    static char *names[] = {"capacity", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L", names, &c))
        return NULL;
    if (c <= 0 || c > ((long long)1 << 53)) {
        PyErr_SetString(PyExc_ValueError, "cache capacity must be in 1..2**53");
        return NULL;
    }
    Arc *a = (Arc *)type->tp_alloc(type, 0);
    if (a == NULL)
        return NULL;
    a->capnodes = 1024;
    a->nodes = PyMem_Malloc((size_t)a->capnodes * sizeof(Node));
    a->mask = 1023;
    a->slots = PyMem_Malloc((a->mask + 1) * sizeof(int32_t));
    if (a->nodes == NULL || a->slots == NULL) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    memset(a->slots, 0xff, (a->mask + 1) * sizeof(int32_t));
    for (int l = 0; l < NLISTS; l++) {
        a->nodes[l].prev = a->nodes[l].next = l;
        a->nodes[l].obj = NULL;
        a->nodes[l].list = l;
        a->nodes[l].key = 0;
        a->nodes[l].size = 0;
    }
    a->nnodes = NLISTS;
    a->free_node = -1;
    a->c = c;
    return (PyObject *)a;
}

static void Arc_dealloc(Arc *a) {
    if (a->nodes != NULL) {
        for (int32_t n = NLISTS; n < a->nnodes; n++)
            Py_XDECREF(a->nodes[n].obj);
        PyMem_Free(a->nodes);
    }
    PyMem_Free(a->slots);
    Py_TYPE(a)->tp_free((PyObject *)a);
}

/* A key as int64; 1 if it does not fit (no exception), -1 on an error. */
static inline int as_key(PyObject *obj, int64_t *key) {
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow)
        return 1;
    if (v == -1 && PyErr_Occurred())
        return -1;
    *key = v;
    return 0;
}

/* The arguments of Arc.replay and Lru.replay: (keys, size, start, budget, payload,
 * on_evict); payload NULL for None. 0, or -1 with an exception set; seq is a new reference. */
typedef struct {
    PyObject *seq, **items, *payload, *on_evict;
    Py_ssize_t n, start;
    long long size, budget;
} ReplayArgs;

static int replay_args(PyObject *const *args, Py_ssize_t nargs, ReplayArgs *r) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "replay takes 6 arguments");
        return -1;
    }
    r->size = PyLong_AsLongLong(args[1]);
    r->start = PyLong_AsSsize_t(args[2]);
    int big;
    r->budget = PyLong_AsLongLongAndOverflow(args[3], &big);
    if (PyErr_Occurred())
        return -1;
    if (big)
        r->budget = big > 0 ? LLONG_MAX : 0;
    if (r->start < 0)
        r->start = 0;
    r->payload = args[4] == Py_None ? NULL : args[4];
    r->on_evict = args[5];
    if (r->payload != NULL && !PyDict_Check(r->payload)) {
        PyErr_SetString(PyExc_TypeError, "replay: payload must be a dict or None");
        return -1;
    }
    r->seq = PySequence_Fast(args[0], "replay: keys must be a sequence");
    if (r->seq == NULL)
        return -1;
    r->items = PySequence_Fast_ITEMS(r->seq);
    r->n = PySequence_Fast_GET_SIZE(r->seq);
    return 0;
}

/* access_many's buffer move: payload[new] = payload.pop(old); 0, or -1 with an exception. */
static int move_payload(PyObject *payload, PyObject *old, PyObject *new) {
    PyObject *buf = PyDict_GetItemWithError(payload, old);
    if (buf == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, old);
        return -1;
    }
    Py_INCREF(buf);
    int err = PyDict_DelItem(payload, old) < 0 || PyDict_SetItem(payload, new, buf) < 0;
    Py_DECREF(buf);
    return err ? -1 : 0;
}

/* replay(keys, size, start, budget, payload, on_evict) -> (end, hits, mru_hits, evictions,
 * b1_hits, b2_hits, budget_left, overflow): PyArcPolicy._replay (payload None: every key,
 * on_evict told of each eviction; a dict: access_many's batch). */
static PyObject *Arc_replay(Arc *a, PyObject *const *args, Py_ssize_t nargs) {
    ReplayArgs ra;
    if (replay_args(args, nargs, &ra) < 0)
        return NULL;
    PyObject *seq = ra.seq;
    PyObject **items = ra.items;
    Py_ssize_t n = ra.n, start = ra.start;
    long long budget = ra.budget;
    PyObject *payload = ra.payload;
    PyObject *on_evict = ra.on_evict;
    int batch = payload != NULL;
    int64_t size = ra.size;
    int64_t c = a->c;
    int64_t room = c - size;
    long long first_budget = budget;
    Py_ssize_t hits = 0, mru_hits = 0, evictions = 0, b1_hits = 0, b2_hits = 0;
    Py_ssize_t end = n;
    int overflow = 0;
    PyObject *k = NULL;  /* the last record pushed out (a new reference) */
    Node *nodes;

#define FAIL goto error
#define SET_K(obj) do { PyObject *o_ = (obj); Py_INCREF(o_); Py_XSETREF(k, o_); } while (0)
    for (Py_ssize_t i = start; i < n; i++) {
        PyObject *kobj = items[i];
        int64_t key;
        int r = as_key(kobj, &key);
        if (r) {
            if (r < 0)
                FAIL;
            overflow = 1;
            end = i;
            break;
        }
        int32_t x = find(a, key);
        nodes = a->nodes;
        if (x >= 0 && nodes[x].list == T2) {  /* case I, frequent */
            if (nodes[T2].prev != x) {
                unlink_node(a, x);
                append(a, T2, x);
            }
            hits++;
            continue;
        }
        if (x >= 0 && nodes[x].list == T1) {  /* case I, recent: promote to T2 */
            unlink_node(a, x);
            append(a, T2, x);
            hits++;
            mru_hits++;
            continue;
        }
        if (room < 0) {  /* can never fit: served without being cached */
            if (batch) {
                end = i + 1;
                break;
            }
            continue;
        }
        int full = a->bytes[T1] + a->bytes[T2] > room;
        if (full && batch) {
            if (!budget) {
                end = i;
                break;
            }
            budget--;
        }
        int in_b2 = 0;
        int dest;
        if (x >= 0 && nodes[x].list == B1) {  /* case II: recency was undervalued */
            b1_hits++;
            int64_t b1b = a->bytes[B1], b2b = a->bytes[B2];
            double step = b2b > b1b ? (double)b2b / (double)b1b : 1.0;
            unlink_node(a, x);
            a->p += step * (double)size;
            if (a->p > (double)c)
                a->p = (double)c;
            dest = T2;
        } else if (x >= 0 && nodes[x].list == B2) {  /* case III */
            b2_hits++;
            int64_t b1b = a->bytes[B1], b2b = a->bytes[B2];
            double step = b1b > b2b ? (double)b1b / (double)b2b : 1.0;
            unlink_node(a, x);
            a->p -= step * (double)size;
            if (a->p < 0.0)
                a->p = 0.0;
            dest = T2;
            in_b2 = 1;
        } else {  /* case IV, a new key: first the ghosts' part */
            dest = T1;
            if (a->bytes[T1] + a->bytes[B1] > room) {
                if (a->bytes[T1] <= room) {  /* drop B1's oldest */
                    while (a->count[B1] && a->bytes[T1] + a->bytes[B1] > room) {
                        int32_t o = oldest(a, B1);
                        unlink_node(a, o);
                        Py_DECREF(drop_node(a, o));
                    }
                } else {  /* T1 fills the cache: its oldest leaves without a ghost */
                    while (a->count[T1] && a->bytes[T1] + a->bytes[T2] > room) {
                        int32_t o = oldest(a, T1);
                        unlink_node(a, o);
                        Py_XSETREF(k, drop_node(a, o));
                        if (!batch) {
                            evictions++;
                            if (call_evict(on_evict, k) < 0)
                                FAIL;
                        }
                    }
                }
            } else if (full) {  /* B with a full cache */
                int64_t total = a->bytes[T1] + a->bytes[T2] + a->bytes[B1] + a->bytes[B2];
                while (a->count[B2] && total + size > 2 * c) {
                    int32_t o = oldest(a, B2);
                    total -= a->nodes[o].size;
                    unlink_node(a, o);
                    Py_DECREF(drop_node(a, o));
                }
            }
        }
        if (a->bytes[T1] + a->bytes[T2] > room) {  /* REPLACE */
            int32_t o = replace_one(a, in_b2);
            if (o < 0)
                FAIL;
            SET_K(a->nodes[o].obj);
            if (!batch) {
                evictions++;
                if (call_evict(on_evict, k) < 0)
                    FAIL;
            }
            if (a->bytes[T1] + a->bytes[T2] > room) {  /* records of other sizes */
                if (batch) {
                    PyErr_SetString(PyExc_ValueError,
                                    "access_many: a resident record of another size");
                    FAIL;
                }
                Py_ssize_t e = make_room(a, size, in_b2, on_evict);
                if (e < 0)
                    FAIL;
                evictions += e;
            }
        }
        if (dest == T2) {  /* the ghost's node (x, still in the table) with the new size */
            a->nodes[x].size = size;
        } else {
            x = new_node(a, key, kobj, size);
            if (x < 0)
                FAIL;
        }
        append(a, dest, x);
        if (batch) {
            if (!full) {
                end = i + 1;
                break;
            }
            if (k == NULL) {
                PyErr_SetString(PyExc_RuntimeError, "access_many: nothing was evicted");
                FAIL;
            }
            if (move_payload(payload, k, kobj) < 0)
                FAIL;
        }
    }
#undef FAIL
#undef SET_K
    Py_XDECREF(k);
    Py_DECREF(seq);
    return Py_BuildValue("nnnnnnLi", end, hits, mru_hits, evictions + (first_budget - budget),
                         b1_hits, b2_hits, budget, overflow);
error:
    Py_XDECREF(k);
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Arc_make_room(Arc *a, PyObject *args) {
    long long size;
    int in_b2;
    PyObject *on_evict;
    if (!PyArg_ParseTuple(args, "LpO", &size, &in_b2, &on_evict))
        return NULL;
    Py_ssize_t e = make_room(a, size, in_b2, on_evict);
    return e < 0 ? NULL : PyLong_FromSsize_t(e);
}

/* remove(key) -> 0 absent, 1 resident (T1/T2), 2 a ghost */
static PyObject *Arc_remove(Arc *a, PyObject *obj) {
    int64_t key;
    int r = as_key(obj, &key);
    if (r < 0)
        return NULL;
    int32_t x = r ? -1 : find(a, key);
    if (x < 0 || a->nodes[x].list == DETACHED)
        return PyLong_FromLong(0);
    int list = a->nodes[x].list;
    unlink_node(a, x);
    Py_DECREF(drop_node(a, x));
    return PyLong_FromLong(list == T1 || list == T2 ? 1 : 2);
}

static int Arc_contains(Arc *a, PyObject *obj) {
    int64_t key;
    int r = as_key(obj, &key);
    if (r)
        return r < 0 ? -1 : 0;
    int32_t x = find(a, key);
    return x >= 0 && (a->nodes[x].list == T1 || a->nodes[x].list == T2);
}

/* sizes() -> (T1 bytes, T2 bytes, B1 bytes, B2 bytes, T1 count, T2, B1, B2) */
static PyObject *Arc_sizes(Arc *a, PyObject *unused) {
    return Py_BuildValue("LLLLnnnn", (long long)a->bytes[T1], (long long)a->bytes[T2],
                         (long long)a->bytes[B1], (long long)a->bytes[B2], a->count[T1],
                         a->count[T2], a->count[B1], a->count[B2]);
}

/* dump() -> ([(key, size), ...] of T1, T2, B1, B2, oldest first) */
static PyObject *Arc_dump(Arc *a, PyObject *unused) {
    PyObject *out = PyTuple_New(NLISTS);
    if (out == NULL)
        return NULL;
    for (int l = 0; l < NLISTS; l++) {
        PyObject *lst = PyList_New(0);
        if (lst == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, l, lst);
        for (int32_t x = a->nodes[l].next; x != l; x = a->nodes[x].next) {
            PyObject *pair = Py_BuildValue("OL", a->nodes[x].obj, (long long)a->nodes[x].size);
            if (pair == NULL || PyList_Append(lst, pair) < 0) {
                Py_XDECREF(pair);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(pair);
        }
    }
    return out;
}

static PyObject *Arc_get_p(Arc *a, void *closure) { return PyFloat_FromDouble(a->p); }

static int Arc_set_p(Arc *a, PyObject *v, void *closure) {
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete p");
        return -1;
    }
    double p = PyFloat_AsDouble(v);
    if (p == -1.0 && PyErr_Occurred())
        return -1;
    a->p = p;
    return 0;
}

static PyObject *Arc_get_capacity(Arc *a, void *closure) { return PyLong_FromLongLong(a->c); }

static PyMethodDef Arc_methods[] = {
    {"replay", (PyCFunction)(void (*)(void))Arc_replay, METH_FASTCALL,
     "replay(keys, size, start, budget, payload, on_evict) -> (end, hits, mru_hits, "
     "evictions, b1_hits, b2_hits, budget_left, overflow)"},
    {"make_room", (PyCFunction)Arc_make_room, METH_VARARGS,
     "make_room(size, in_b2, on_evict) -> evictions"},
    {"remove", (PyCFunction)Arc_remove, METH_O, "remove(key) -> 0 absent, 1 resident, 2 ghost"},
    {"sizes", (PyCFunction)Arc_sizes, METH_NOARGS, "bytes and counts of T1, T2, B1, B2"},
    {"dump", (PyCFunction)Arc_dump, METH_NOARGS, "the four lists' (key, size), oldest first"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Arc_getset[] = {
    {"p", (getter)Arc_get_p, (setter)Arc_set_p, "the target bytes of T1", NULL},
    {"capacity", (getter)Arc_get_capacity, NULL, "c in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Arc_as_sequence = {.sq_contains = (objobjproc)Arc_contains};

static PyTypeObject ArcType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmsim.fs.zfs_arc._arc_c.Arc",
    .tp_basicsize = sizeof(Arc),
    .tp_dealloc = (destructor)Arc_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ARC's lists T1, T2, B1, B2 and target p (the state of policy_arc.CArcPolicy)",
    .tp_methods = Arc_methods,
    .tp_getset = Arc_getset,
    .tp_as_sequence = &Arc_as_sequence,
    .tp_new = Arc_new,
};

/* ---- LRU: the same nodes and table, one list (LRU, oldest after its head) ---------------- */

enum { LRU = T1 };

typedef struct {
    Py_ssize_t end, hits, misses, evictions;
    int overflow;
} LruRun;

/* Push out the oldest records until at most limit bytes stay (PyLruPolicy._evict_until),
 * on_evict told of each; -1 with an exception set. */
static int lru_evict_until(Arc *a, int64_t limit, PyObject *on_evict, int64_t *freed,
                           Py_ssize_t *evictions) {
    while (a->bytes[LRU] > limit && a->count[LRU]) {
        int32_t o = oldest(a, LRU);
        *freed += a->nodes[o].size;
        unlink_node(a, o);
        PyObject *old = drop_node(a, o);
        (*evictions)++;
        int err = call_evict(on_evict, old);
        Py_DECREF(old);
        if (err < 0)
            return -1;
    }
    return 0;
}

/* PyLruPolicy._replay over items[start:n] (payload NULL: every key, on_evict told of each
 * eviction; a dict: access_many's batch, *budget its evictions left); 0, or -1 with an
 * exception set. A key beyond 64 bits stops it before being looked at (run->overflow). */
static int lru_run(Arc *a, PyObject *const *items, Py_ssize_t start, Py_ssize_t n,
                   int64_t size, long long *budget, PyObject *payload, PyObject *on_evict,
                   LruRun *run) {
    int64_t cap = a->c;
    run->end = n;
    for (Py_ssize_t i = start; i < n; i++) {
        PyObject *kobj = items[i];
        int64_t key;
        int r = as_key(kobj, &key);
        if (r) {
            if (r < 0)
                return -1;
            run->overflow = 1;
            run->end = i;
            return 0;
        }
        int32_t x = find(a, key);
        if (x >= 0) {  /* a hit: to the most recent end */
            if (a->nodes[LRU].prev != x) {
                unlink_node(a, x);
                append(a, LRU, x);
            }
            run->hits++;
            continue;
        }
        if (a->bytes[LRU] + size <= cap || size > cap) {  /* room for it, or never */
            run->misses++;
            if (size <= cap) {
                x = new_node(a, key, kobj, size);
                if (x < 0)
                    return -1;
                append(a, LRU, x);
            }
            if (payload != NULL) {  /* the caller gives it a buffer before the next key */
                run->end = i + 1;
                return 0;
            }
            continue;
        }
        if (payload != NULL) {
            if (!*budget) {  /* not served: the caller's next call starts with it */
                run->end = i;
                return 0;
            }
            (*budget)--;
        }
        run->misses++;
        int32_t o = oldest(a, LRU);
        if (o < 0) {
            PyErr_SetString(PyExc_KeyError, "dictionary is empty");
            return -1;
        }
        unlink_node(a, o);
        PyObject *old = drop_node(a, o);
        run->evictions++;
        /* on_evict told, or the evicted record's buffer passes to the new key */
        int err = payload == NULL ? call_evict(on_evict, old) : move_payload(payload, old, kobj);
        Py_DECREF(old);
        if (err < 0)
            return -1;
        x = new_node(a, key, kobj, size);
        if (x < 0)
            return -1;
        append(a, LRU, x);
        if (a->bytes[LRU] > cap) {  /* records of other sizes: more to push out */
            if (payload != NULL) {
                PyErr_SetString(PyExc_ValueError,
                                "access_many: a resident record of another size");
                return -1;
            }
            int64_t freed = 0;
            if (lru_evict_until(a, cap, on_evict, &freed, &run->evictions) < 0)
                return -1;
        }
    }
    return 0;
}

/* replay(keys, size, start, budget, payload, on_evict) -> (end, hits, misses, evictions,
 * budget_left, overflow): PyLruPolicy._replay (payload None: every key, on_evict told of each
 * eviction; a dict: access_many's batch). */
static PyObject *Lru_replay(Arc *a, PyObject *const *args, Py_ssize_t nargs) {
    ReplayArgs ra;
    if (replay_args(args, nargs, &ra) < 0)
        return NULL;
    LruRun run = {0, 0, 0, 0, 0};
    int err = lru_run(a, ra.items, ra.start, ra.n, ra.size, &ra.budget, ra.payload,
                      ra.on_evict, &run);
    Py_DECREF(ra.seq);
    if (err < 0)
        return NULL;
    return Py_BuildValue("nnnnLi", run.end, run.hits, run.misses, run.evictions, ra.budget,
                         run.overflow);
}

/* access(key, size, on_evict) -> -1 a hit, else the evictions of the miss; None if the key
 * does not fit in 64 bits (nothing done). One request without replay's tuples. */
static PyObject *Lru_access(Arc *a, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "access takes 3 arguments");
        return NULL;
    }
    long long size = PyLong_AsLongLong(args[1]);
    if (size == -1 && PyErr_Occurred())
        return NULL;
    long long budget = 0;
    LruRun run = {0, 0, 0, 0, 0};
    if (lru_run(a, args, 0, 1, size, &budget, NULL, args[2], &run) < 0)
        return NULL;
    if (run.overflow)
        Py_RETURN_NONE;
    return PyLong_FromSsize_t(run.hits ? -1 : run.evictions);
}

/* evict_until(limit, on_evict) -> (bytes freed, evictions) */
static PyObject *Lru_evict_until(Arc *a, PyObject *args) {
    long long limit;
    PyObject *on_evict;
    if (!PyArg_ParseTuple(args, "LO", &limit, &on_evict))
        return NULL;
    int64_t freed = 0;
    Py_ssize_t evictions = 0;
    if (lru_evict_until(a, limit, on_evict, &freed, &evictions) < 0)
        return NULL;
    return Py_BuildValue("Ln", (long long)freed, evictions);
}

/* remove(key) -> whether it was cached */
static PyObject *Lru_remove(Arc *a, PyObject *obj) {
    PyObject *r = Arc_remove(a, obj);
    if (r == NULL)
        return NULL;
    long v = PyLong_AsLong(r);
    Py_DECREF(r);
    return PyBool_FromLong(v);
}

/* sizes() -> (bytes, records) */
static PyObject *Lru_sizes(Arc *a, PyObject *unused) {
    return Py_BuildValue("Ln", (long long)a->bytes[LRU], a->count[LRU]);
}

/* dump() -> [(key, size), ...] oldest first */
static PyObject *Lru_dump(Arc *a, PyObject *unused) {
    PyObject *lists = Arc_dump(a, unused);
    if (lists == NULL)
        return NULL;
    PyObject *lst = PyTuple_GET_ITEM(lists, LRU);
    Py_INCREF(lst);
    Py_DECREF(lists);
    return lst;
}

static PyMethodDef Lru_methods[] = {
    {"replay", (PyCFunction)(void (*)(void))Lru_replay, METH_FASTCALL,
     "replay(keys, size, start, budget, payload, on_evict) -> (end, hits, misses, evictions, "
     "budget_left, overflow)"},
    {"access", (PyCFunction)(void (*)(void))Lru_access, METH_FASTCALL,
     "access(key, size, on_evict) -> -1 a hit, else the miss's evictions; None: key > 64 bits"},
    {"evict_until", (PyCFunction)Lru_evict_until, METH_VARARGS,
     "evict_until(limit, on_evict) -> (bytes freed, evictions)"},
    {"remove", (PyCFunction)Lru_remove, METH_O, "remove(key) -> whether it was cached"},
    {"sizes", (PyCFunction)Lru_sizes, METH_NOARGS, "(bytes, records)"},
    {"dump", (PyCFunction)Lru_dump, METH_NOARGS, "the list's (key, size), oldest first"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LruType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mmsim.fs.zfs_arc._arc_c.Lru",
    .tp_basicsize = sizeof(Arc),
    .tp_dealloc = (destructor)Arc_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "an LRU list of (key, size) records (the state of policy_lru.CLruPolicy)",
    .tp_methods = Lru_methods,
    .tp_getset = Arc_getset + 1,  /* capacity only */
    .tp_as_sequence = &Arc_as_sequence,
    .tp_new = Arc_new,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_arc_c",
                                    "ARC's and LRU's lists and replay loops in C", -1, NULL};

static int add_type(PyObject *m, const char *name, PyTypeObject *type) {
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__arc_c(void) {
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (add_type(m, "Arc", &ArcType) < 0 || add_type(m, "Lru", &LruType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
