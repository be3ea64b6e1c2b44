/* The hot loop of the mtrace reader (mmsim/trace/mtrace.py, MtraceReader._records) in C.

ChunkParser(stats, records).parse(chunk, base) reads one chunk of lines (a list of str, the
first one line base + 1) and returns (records, status, index): the chunk's records, the same
5-tuples as the pure-Python loop gives (in a list, or packed in the kernel's MallocRecords if
records is its capsule: kernel/malloc_records_c.h), and what went wrong, if anything, for the
Python side to report with its own messages (status 0: nothing; 1: a '+' or '>' pointer is not
0x and hex, so the chunk is checked again line by line; 2: the record at chunk[index] fails
_check_record; 3: its size is bad; 4: it is not a record). Every rule is the pure loop's, in the same order; the state is
kept in Python dicts, keyed by "p" + pointer (the pointer's handle name) instead of the
pointer, which is the same mapping and saves a string per line. stats (a Counter) is updated in
place at the same moments as the pure loop does it, so its keys come in the same order. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "../../kernel/host_tables_c.h"
#include "../../kernel/malloc_records_c.h"

#define DEAD_HALF (1 << 15) /* as _DEAD_HALF */
#define SMALL_SIZES 4096    /* sizes below this get one shared int object */
#define SITE_SLOTS 4096     /* callers remembered (ASCII ones), direct-mapped */

enum { OK = 0, PTRS = 1, CHECK = 2, SIZE = 3, JUNK = 4 };

static PyObject *s_malloc, *s_realloc, *s_free, *s_p, *s_zero, *s_one, *s_popleft, *s_append;
static PyObject *k_null_results, *k_reused, *k_unpaired_results, *k_failed, *k_null_frees,
    *k_unpaired_frees, *k_truncated;
static PyObject *deque_type;

typedef struct {
    uint64_t key;
    uintptr_t val; /* the value, a PyObject *, with MOVED in its low bit; 0: an empty slot */
} Slot;

/* the live map's mark that its value is in the moved set (a handle a realloc moved off its
   pointer), so a free need not look it up there; objects are aligned, the bit is free */
#define MOVED ((uintptr_t)1)
#define VAL(slot) ((PyObject *)((slot).val & ~MOVED))

typedef struct {
    Slot *slots;
    size_t mask, count;
    size_t reserved; /* the slots' mapping (kernel/host_tables_c.h), 0: from malloc */
    uint64_t finds, steps; /* lookups, and slots stepped past in them (the hash's quality) */
    PyObject *other; /* dict: "p" + text -> handle */
} PtrMap;

typedef struct {
    PyObject_HEAD
    PyObject *stats, *later, *moved;
    PtrMap live, dead, dead_old;
    PyObject *pending; /* handle of a realloc whose '>' line is next, or NULL */
    int packed;        /* records go in the kernel's packed batches, not lists */
    Py_ssize_t pending_line, serial;
    Py_ssize_t *ends, ends_size; /* where parse_text's lines end */
    PyObject *sizes[SMALL_SIZES];
    PyObject *sites[SITE_SLOTS];
} ChunkParser;

/* What the loop needs of str.split()'s tokens of a line: the first, where the second starts,
   the last three and where the fourth from the end ends; n counts them up to 5 (5: five or
   more). The last ones are found from the line's end, so a caller's text is never scanned. */
typedef struct {
    Py_ssize_t n;
    Py_ssize_t s0, e0;       /* t[0] */
    Py_ssize_t s1;           /* t[1] starts there (n > 1) */
    Py_ssize_t ls[3], le[3]; /* t[-1], t[-2], t[-3] */
    Py_ssize_t e4;           /* t[-4] ends there (n > 3) */
} Tokens;

static unsigned char ws1[256]; /* Py_UNICODE_ISSPACE of each 1-byte character */

#define ISWS(kind, data, i)                                                                  \
    ((kind) == PyUnicode_1BYTE_KIND ? ws1[((const Py_UCS1 *)(data))[i]]                     \
                                    : Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i)))

static inline void tokenize(int kind, const void *data, Py_ssize_t start, Py_ssize_t len, Tokens *t) {
    Py_ssize_t i = start, j = len;
    int k;
    while (i < len && ISWS(kind, data, i))
        i++;
    if (i >= len) {
        t->n = 0;
        return;
    }
    t->s0 = i;
    while (i < len && !ISWS(kind, data, i))
        i++;
    t->e0 = i;
    while (i < len && ISWS(kind, data, i))
        i++;
    t->s1 = i;
    for (k = 0; k < 3; k++) {
        while (j > start && ISWS(kind, data, j - 1))
            j--;
        if (j == start)
            break;
        t->le[k] = j;
        while (j > start && !ISWS(kind, data, j - 1))
            j--;
        t->ls[k] = j;
    }
    if (k < 3) {
        t->n = k;
        return;
    }
    while (j > start && ISWS(kind, data, j - 1))
        j--;
    t->e4 = j;
    /* tokens are maximal: the one ending at j is t[0] itself or one after it */
    t->n = j == start ? 3 : j == t->e0 ? 4 : 5;
}

/* t[-k] (k = 1..3) */
#define TS(t, k) ((t)->ls[(k) - 1])
#define TE(t, k) ((t)->le[(k) - 1])

static inline int tok_is(int kind, const void *data, Py_ssize_t s, Py_ssize_t e, const char *lit) {
    Py_ssize_t len = (Py_ssize_t)strlen(lit);
    if (e - s != len)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (PyUnicode_READ(kind, data, s + i) != (Py_UCS4)(unsigned char)lit[i])
            return 0;
    return 1;
}

static signed char hex_digit[256]; /* each character's hex value, -1 if not a hex digit */

static inline int hexval(Py_UCS4 c) { return c < 256 ? hex_digit[c] : -1; }

/* 0x and hex digits (what _pointers_ok accepts) */
static int hex_token(int kind, const void *data, Py_ssize_t s, Py_ssize_t e) {
    if (e - s < 3 || PyUnicode_READ(kind, data, s) != '0' || PyUnicode_READ(kind, data, s + 1) != 'x')
        return 0;
    for (Py_ssize_t i = s + 2; i < e; i++)
        if (hexval(PyUnicode_READ(kind, data, i)) < 0)
            return 0;
    return 1;
}

static int ptr_token(int kind, const void *data, Py_ssize_t s, Py_ssize_t e) {
    return hex_token(kind, data, s, e) || tok_is(kind, data, s, e, "(nil)");
}

/* Whether MtraceReader._check_record(t, n) raises. */
static int check_fails(int kind, const void *data, const Tokens *t) {
    int fields = (tok_is(kind, data, TS(t, 2), TE(t, 2), "-") ||
                  tok_is(kind, data, TS(t, 2), TE(t, 2), "<")) ? 2 : 3;
    Py_ssize_t ps = fields == 2 ? TS(t, 1) : TS(t, 2), pe = fields == 2 ? TE(t, 1) : TE(t, 2);
    if (!ptr_token(kind, data, ps, pe))
        return 1;
    return t->n > fields && !tok_is(kind, data, t->s0, t->e0, "@");
}

/* int(text, 16) of a size token, or NULL without an exception if it is not 0 or 0x and hex
   digits (_size's rule); a new reference. */
static PyObject *size_of(ChunkParser *self, int kind, const void *data, Py_ssize_t s,
                         Py_ssize_t e, int *bad) {
    if (e - s == 1 && PyUnicode_READ(kind, data, s) == '0') {
        Py_INCREF(s_zero);
        return s_zero;
    }
    /* 0x and hex digits, read in one pass; more than 16 of them after the leading zeros:
       Python's own conversion, beyond 64 bits */
    if (e - s < 3 || PyUnicode_READ(kind, data, s) != '0' || PyUnicode_READ(kind, data, s + 1) != 'x') {
        *bad = 1;
        return NULL;
    }
    unsigned long long v = 0;
    int digits = 0;
    for (Py_ssize_t i = s + 2; i < e; i++) {
        int d = hexval(PyUnicode_READ(kind, data, i));
        if (d < 0) {
            *bad = 1;
            return NULL;
        }
        v = (v << 4) | (unsigned long long)d;
        digits += digits || d;
    }
    if (digits > 16) {
        char *buf = PyMem_Malloc((size_t)(e - s + 1));
        if (!buf)
            return PyErr_NoMemory();
        for (Py_ssize_t j = s; j < e; j++)
            buf[j - s] = (char)PyUnicode_READ(kind, data, j);
        buf[e - s] = 0;
        PyObject *o = PyLong_FromString(buf, NULL, 16);
        PyMem_Free(buf);
        return o;
    }
    if (v < SMALL_SIZES) {
        PyObject *o = self->sizes[v];
        if (!o) {
            o = PyLong_FromUnsignedLongLong(v);
            if (!o)
                return NULL;
            self->sizes[v] = o;
        }
        Py_INCREF(o);
        return o;
    }
    return PyLong_FromUnsignedLongLong(v);
}

/* "p" + line[s:e], a new reference */
static PyObject *handle_of(PyObject *line, int ascii, Py_ssize_t s, Py_ssize_t e) {
    if (ascii) {
        PyObject *h = PyUnicode_New(e - s + 1, 127);
        if (!h)
            return NULL;
        Py_UCS1 *d = PyUnicode_1BYTE_DATA(h);
        d[0] = 'p';
        memcpy(d + 1, PyUnicode_1BYTE_DATA(line) + s, (size_t)(e - s));
        return h;
    }
    PyObject *p = PyUnicode_Substring(line, s, e);
    if (!p)
        return NULL;
    PyObject *h = PyUnicode_Concat(s_p, p);
    Py_DECREF(p);
    return h;
}

/* line[s:e] (a caller's text), a new reference; ASCII ones are shared */
static PyObject *site_of(ChunkParser *self, PyObject *line, int ascii, Py_ssize_t s, Py_ssize_t e) {
    if (!ascii)
        return PyUnicode_Substring(line, s, e);
    const Py_UCS1 *d = PyUnicode_1BYTE_DATA(line) + s;
    size_t len = (size_t)(e - s);
    uint64_t h = len, w[3];
    if (len >= 16) { /* a caller's length, start and end (its address) tell it apart */
        memcpy(&w[0], d, 8);
        memcpy(&w[1], d + len - 16, 8);
        memcpy(&w[2], d + len - 8, 8);
        h = ((h * 0x9E3779B97F4A7C15ull ^ w[0]) * 0x9E3779B97F4A7C15ull ^ w[1]) * 0x9E3779B97F4A7C15ull ^ w[2];
    } else {
        for (size_t i = 0; i < len; i++)
            h = h * 31 + d[i];
    }
    h *= 0x9E3779B97F4A7C15ull;
    h >>= 40;
    PyObject **slot = &self->sites[h & (SITE_SLOTS - 1)];
    PyObject *o = *slot;
    if (o && (size_t)PyUnicode_GET_LENGTH(o) == len && memcmp(PyUnicode_1BYTE_DATA(o), d, len) == 0) {
        Py_INCREF(o);
        return o;
    }
    o = PyUnicode_New((Py_ssize_t)len, 127);
    if (!o)
        return NULL;
    memcpy(PyUnicode_1BYTE_DATA(o), d, len);
    Py_XSETREF(*slot, o);
    Py_INCREF(o);
    return o;
}

/* The caller of a '+' or '>' record (t[1] or _caller's rule), a new reference (None if none). */
static PyObject *caller_of(ChunkParser *self, PyObject *line, int ascii, int kind, const void *data,
                           const Tokens *t) {
    if (t->n > 4 && tok_is(kind, data, t->s0, t->e0, "@"))
        return site_of(self, line, ascii, t->s1, t->e4);
    Py_RETURN_NONE;
}

static int count(ChunkParser *self, PyObject *key) {
    PyObject *v = PyDict_GetItemWithError(self->stats, key);
    if (!v && PyErr_Occurred())
        return -1;
    PyObject *w = v ? PyNumber_Add(v, s_one) : PyLong_FromLong(1);
    if (!w)
        return -1;
    int r = PyDict_SetItem(self->stats, key, w);
    Py_DECREF(w);
    return r;
}

/* The kernel's packed batch of records (kernel/malloc_records_c.h), from the capsule a
   ChunkParser was given (there is one kernel module a process, so one capsule) */
static MallocRecordsAPI *packed_api;

/* an empty batch for up to about n records: the kernel's packed one if packed, else a list */
static PyObject *new_batch(int packed, Py_ssize_t n) {
    return packed ? packed_api->create(n) : PyList_New(0);
}

static int emit(PyObject *out, PyObject *kind, Py_ssize_t n, PyObject *h, PyObject *size,
                PyObject *site) {
    PyObject *line = PyLong_FromSsize_t(n);
    if (!line)
        return -1;
    if (!PyList_CheckExact(out)) { /* the kernel's packed batch (new_batch) */
        int rc = packed_api->append(out, kind, line, h, size, site);
        Py_DECREF(line);
        return rc;
    }
    PyObject *r = PyTuple_New(5);
    if (!r) {
        Py_DECREF(line);
        return -1;
    }
    Py_INCREF(kind);
    Py_INCREF(h);
    Py_INCREF(size);
    Py_INCREF(site);
    PyTuple_SET_ITEM(r, 0, kind);
    PyTuple_SET_ITEM(r, 1, line);
    PyTuple_SET_ITEM(r, 2, h);
    PyTuple_SET_ITEM(r, 3, size);
    PyTuple_SET_ITEM(r, 4, site);
    PyObject_GC_UnTrack(r); /* str, int and None only: no cycle to look for */
    int rc = PyList_Append(out, r);
    Py_DECREF(r);
    return rc;
}

/* A '<' whose '>' never came: replayed as a free (_lost_realloc). */
static int lost_realloc(ChunkParser *self, PyObject *out) {
    if (!self->pending)
        return 0;
    PyObject *h = self->pending;
    self->pending = NULL;
    int rc = count(self, k_unpaired_frees);
    if (rc == 0)
        rc = emit(out, s_free, self->pending_line, h, s_zero, Py_None);
    Py_DECREF(h);
    return rc;
}

/* kp + "." + serial, after serial += 1 (f"p{p}.{serial}") */
static PyObject *serial_handle(ChunkParser *self, PyObject *kp) {
    self->serial++;
    return PyUnicode_FromFormat("%U.%zd", kp, self->serial);
}

/* later.setdefault(kp, deque()).append(h) */
static int later_append(ChunkParser *self, PyObject *kp, PyObject *h) {
    PyObject *dq = PyDict_GetItemWithError(self->later, kp);
    if (!dq) {
        if (PyErr_Occurred())
            return -1;
        dq = PyObject_CallNoArgs(deque_type);
        if (!dq)
            return -1;
        int rc = PyDict_SetItem(self->later, kp, dq);
        Py_DECREF(dq);
        if (rc < 0)
            return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(dq, s_append, h);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* A pointer's maps (live, dead, dead_old): a pointer written as glibc's %p does (0x, 1 to 16
   lowercase hex digits, no leading zero) is one 64-bit value, kept in a C table (open
   addressing, linear probing, deletion by backward shift); any other text (uppercase, leading
   zeros, (nil), longer, not hex at all) in a dict keyed by "p" + text. The two sets of texts
   are disjoint and each maps one to one onto its keys, so the pair is the pure loop's dict. */
typedef struct {
    int canon;
    uint64_t v;
    PyObject *kp; /* "p" + text, made when needed */
    PyObject *line;
    int ascii;
    Py_ssize_t s, e;
} Key;

static PyObject *key_str(Key *k) {
    if (!k->kp)
        k->kp = handle_of(k->line, k->ascii, k->s, k->e);
    return k->kp;
}

static inline size_t slot_of(uint64_t key, size_t mask) {
    /* keyed by the process's str hash secret (PYTHONHASHSEED), as Python's dicts are: a log
       cannot be made of pointers that all collide. Every bit of the pointer is mixed: a hash
       that kept a page's pointers together (for the cache) made a page of unaligned pointers
       one run of 4096 slots to probe through, 27x slower (tests/test_mtrace_c.py) */
    key ^= (uint64_t)_Py_HashSecret.siphash.k0;
    key ^= key >> 33; /* murmur3's finalizer: each bit of the pointer moves the low ones */
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    key ^= key >> 33;
    return (size_t)key & mask;
}

static int pm_init(PtrMap *m) {
    m->mask = 1023;
    m->count = 0;
    m->reserved = 0;
    m->slots = PyMem_Calloc(m->mask + 1, sizeof(Slot));
    m->other = PyDict_New();
    if (!m->slots || !m->other) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A dead map's half is dropped whole, 32 k handles freed long before (so out of the cache), each
   released here: they are fetched CLEAR_AHEAD slots ahead, many misses at once rather than one
   after another (4 % of perl's reader was this loop waiting on them). */
#define CLEAR_AHEAD 32
static void pm_clear(PtrMap *m) {
    if (m->slots && m->count)
        for (size_t i = 0; i <= m->mask; i++) {
#if defined(__GNUC__)
            if (i + CLEAR_AHEAD <= m->mask && m->slots[i + CLEAR_AHEAD].val)
                __builtin_prefetch(VAL(m->slots[i + CLEAR_AHEAD]), 1);
#endif
            if (m->slots[i].val) {
                Py_DECREF(VAL(m->slots[i]));
                m->slots[i].val = 0;
            }
        }
    m->count = 0;
}

static void pm_free(PtrMap *m) {
    pm_clear(m);
    if (m->slots)
        table_free(m->slots, m->reserved);
    m->slots = NULL;
    Py_CLEAR(m->other);
}

static inline size_t pm_find(PtrMap *m, uint64_t key) {
    size_t i = slot_of(key, m->mask);
    m->finds++;
    while (m->slots[i].val && m->slots[i].key != key) {
        i = (i + 1) & m->mask;
        m->steps++;
    }
    return i;
}

static int pm_used(const void *s) { return ((const Slot *)s)->val != 0; }
static size_t pm_home(const void *s, size_t mask) { return slot_of(((const Slot *)s)->key, mask); }
static void pm_empty(void *s) { ((Slot *)s)->val = 0; }
static const SlotKind pm_slots = {sizeof(Slot), pm_used, pm_home, pm_empty};

/* the table doubled in place, each entry moved to where its key's mix puts it now
   (kernel/host_tables_c.h's table_double, as the kernel's live blocks grow) */
static int pm_grow(PtrMap *m) {
    if (table_double((void **)&m->slots, m->mask + 1, &m->reserved, &pm_slots)) {
        PyErr_NoMemory();
        return -1;
    }
    m->mask = 2 * m->mask + 1;
    return 0;
}

static void pm_delete_at(PtrMap *m, size_t i) {
    size_t j = i;
    while (1) {
        j = (j + 1) & m->mask;
        if (!m->slots[j].val)
            break;
        size_t h = slot_of(m->slots[j].key, m->mask);
        /* the entry at j stays if its home is cyclically in (i, j] */
        int stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].val = 0;
    m->count--;
}

static Py_ssize_t pm_len(const PtrMap *m) { return (Py_ssize_t)m->count + PyDict_GET_SIZE(m->other); }

/* m[k] (borrowed), NULL if none (an exception set if one failed) */
static PyObject *pm_get(PtrMap *m, Key *k) {
    if (k->canon)
        return VAL(m->slots[pm_find(m, k->v)]);
    PyObject *kp = key_str(k);
    return kp ? PyDict_GetItemWithError(m->other, kp) : NULL;
}

/* m[k] = v, with the MOVED mark if moved (kept for a pointer of glibc's form only) */
static int pm_set_mark(PtrMap *m, Key *k, PyObject *v, int moved) {
    if (!k->canon) {
        PyObject *kp = key_str(k);
        return kp ? PyDict_SetItem(m->other, kp, v) : -1;
    }
    size_t i = pm_find(m, k->v);
    if (!m->slots[i].val) {
        if ((m->count + 1) * 2 > m->mask + 1) { /* at most half full: short runs to probe */
            if (pm_grow(m) < 0)
                return -1;
            i = pm_find(m, k->v);
        }
        m->count++;
        m->slots[i].key = k->v;
    } else {
        Py_DECREF(VAL(m->slots[i]));
    }
    Py_INCREF(v);
    m->slots[i].val = (uintptr_t)v | (moved ? MOVED : 0);
    return 0;
}

static int pm_set(PtrMap *m, Key *k, PyObject *v) { return pm_set_mark(m, k, v, 0); }

/* m.pop(k, None): a new reference, or NULL (an exception set if one failed); *moved is its
   MOVED mark, -1 if the map does not know (a pointer not of glibc's form) */
static PyObject *pm_pop(PtrMap *m, Key *k, int *moved) {
    *moved = -1;
    if (k->canon) {
        size_t i = pm_find(m, k->v);
        PyObject *v = VAL(m->slots[i]);
        *moved = (m->slots[i].val & MOVED) != 0;
        if (v)
            pm_delete_at(m, i);
        return v;
    }
    PyObject *kp = key_str(k);
    if (!kp)
        return NULL;
    PyObject *v = PyDict_GetItemWithError(m->other, kp);
    if (!v)
        return NULL;
    Py_INCREF(v);
    if (PyDict_DelItem(m->other, kp) < 0) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

/* the pointer token line[s:e] as a Key (canon: glibc's %p form, its value in v) */
static void key_of(Key *k, PyObject *line, int ascii, int kind, const void *data, Py_ssize_t s,
                   Py_ssize_t e) {
    k->line = line;
    k->ascii = ascii;
    k->s = s;
    k->e = e;
    k->kp = NULL;
    k->canon = 0;
    k->v = 0;
    if (e - s < 3 || e - s > 18 || PyUnicode_READ(kind, data, s) != '0' ||
        PyUnicode_READ(kind, data, s + 1) != 'x' ||
        (e - s > 3 && PyUnicode_READ(kind, data, s + 2) == '0'))
        return;
    uint64_t v = 0;
    for (Py_ssize_t i = s + 2; i < e; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        int d = hexval(c);
        if (d < 0 || (c >= 'A' && c <= 'F'))
            return;
        v = (v << 4) | (uint64_t)d;
    }
    k->canon = 1;
    k->v = v;
}

/* h == "p" + the key's text */
static int handle_is(PyObject *h, Key *k) {
    int kind = PyUnicode_KIND(k->line);
    const void *data = PyUnicode_DATA(k->line);
    if (PyUnicode_GET_LENGTH(h) != k->e - k->s + 1 || PyUnicode_READ_CHAR(h, 0) != 'p')
        return 0;
    int hkind = PyUnicode_KIND(h);
    const void *hdata = PyUnicode_DATA(h);
    for (Py_ssize_t i = k->s; i < k->e; i++)
        if (PyUnicode_READ(hkind, hdata, i - k->s + 1) != PyUnicode_READ(kind, data, i))
            return 0;
    return 1;
}

static int in_moved(ChunkParser *self, PyObject *h) {
    return PySet_GET_SIZE(self->moved) ? PySet_Contains(self->moved, h) : 0;
}

#define TRY(x)              \
    do {                    \
        if ((x) < 0)        \
            goto fail;      \
    } while (0)

/* a new reference to the key's handle name "p" + text */
#define KP_NEW(k) (key_str(k) ? (Py_INCREF((k)->kp), (k)->kp) : NULL)

/* One line (the pure loop's body); returns OK, an error status, or -1 (an exception). */
/* One line, line[start:end] (positions are line's: it may be a block of many lines). */
static int parse_line(ChunkParser *self, PyObject *out, PyObject *line, Py_ssize_t start,
                      Py_ssize_t end, Py_ssize_t n, int *ptrs_bad) {
    int kind = PyUnicode_KIND(line), ascii = PyUnicode_IS_ASCII(line);
    const void *data = PyUnicode_DATA(line);
    Tokens tk, *t = &tk;
    Key key = {0}, *k = &key;
    PyObject *h = NULL, *size = NULL, *site = NULL;
    int status = OK, bad = 0;
    switch (kind) { /* the same loop, compiled for each width */
    case PyUnicode_1BYTE_KIND:
        tokenize(PyUnicode_1BYTE_KIND, data, start, end, t);
        break;
    case PyUnicode_2BYTE_KIND:
        tokenize(PyUnicode_2BYTE_KIND, data, start, end, t);
        break;
    default:
        tokenize(PyUnicode_4BYTE_KIND, data, start, end, t);
    }
    Py_ssize_t nt = t->n;
    int at = nt > 0 && tok_is(kind, data, t->s0, t->e0, "@");
    if (nt > 2) {
        int plus = tok_is(kind, data, TS(t, 3), TE(t, 3), "+");
        if (plus || tok_is(kind, data, TS(t, 3), TE(t, 3), ">")) {
            if (plus)
                TRY(lost_realloc(self, out));
            Py_ssize_t ps = TS(t, 2), pe = TE(t, 2);
            key_of(k, line, ascii, kind, data, ps, pe);
            if (!k->canon && !hex_token(kind, data, ps, pe))
                *ptrs_bad = 1; /* checked with the chunk's others, at its end */
            if (nt > 3 && !at)
                return CHECK;
            size = size_of(self, kind, data, TS(t, 1), TE(t, 1), &bad);
            if (bad)
                return SIZE;
            if (!size)
                goto fail;
            int nil = !k->canon && tok_is(kind, data, ps, pe, "(nil)");
            PyObject *old = pm_get(&self->live, k);
            if (!old && PyErr_Occurred())
                goto fail;
            if (plus) {
                if (old) { /* live.setdefault(p, h) is not h */
                    if (nil) {
                        TRY(count(self, k_null_results));
                        goto done;
                    }
                    if (!key_str(k))
                        goto fail;
                    h = serial_handle(self, k->kp);
                    if (!h)
                        goto fail;
                    TRY(later_append(self, k->kp, h));
                    TRY(count(self, k_reused));
                } else {
                    if (!key_str(k))
                        goto fail;
                    int mv = in_moved(self, k->kp);
                    TRY(mv);
                    if (mv) {
                        h = serial_handle(self, k->kp);
                        if (!h)
                            goto fail;
                        TRY(pm_set(&self->live, k, h));
                    } else if (nil) {
                        TRY(count(self, k_null_results));
                        goto done;
                    } else {
                        h = KP_NEW(k);
                        TRY(pm_set(&self->live, k, h));
                    }
                }
                site = caller_of(self, line, ascii, kind, data, t);
                if (!site)
                    goto fail;
                TRY(emit(out, s_malloc, n, h, size, site));
                goto done;
            }
            /* '>' */
            h = self->pending;
            self->pending = NULL;
            if (!h) { /* a '>' without its '<': a realloc(NULL) */
                TRY(count(self, k_unpaired_results));
                if (!key_str(k))
                    goto fail;
                int mv = old ? 0 : in_moved(self, k->kp);
                TRY(mv);
                h = (old || mv) ? serial_handle(self, k->kp) : KP_NEW(k);
                if (!h)
                    goto fail;
            }
            int home = handle_is(h, k);
            if (old) {
                if (!key_str(k))
                    goto fail;
                TRY(later_append(self, k->kp, h));
                TRY(count(self, k_reused));
            } else {
                TRY(pm_set_mark(&self->live, k, h, !home));
            }
            if (!home) {
                TRY(PySet_Add(self->moved, h));
            } else if (PySet_GET_SIZE(self->moved)) {
                TRY(PySet_Discard(self->moved, h));
            }
            site = caller_of(self, line, ascii, kind, data, t);
            if (!site)
                goto fail;
            TRY(emit(out, s_realloc, n, h, size, site));
            goto done;
        }
        if (tok_is(kind, data, TS(t, 3), TE(t, 3), "!")) {
            if (check_fails(kind, data, t))
                return CHECK;
            TRY(lost_realloc(self, out));
            size = size_of(self, kind, data, TS(t, 1), TE(t, 1), &bad);
            if (bad)
                return SIZE;
            if (!size)
                goto fail;
            TRY(count(self, k_failed));
            goto done;
        }
    }
    if (nt > 1) {
        int minus = tok_is(kind, data, TS(t, 2), TE(t, 2), "-");
        if (minus || tok_is(kind, data, TS(t, 2), TE(t, 2), "<")) {
            TRY(lost_realloc(self, out));
            Py_ssize_t ps = TS(t, 1), pe = TE(t, 1);
            if (nt > 2 && !at)
                return CHECK;
            key_of(k, line, ascii, kind, data, ps, pe);
            int was_moved;
            h = pm_pop(&self->live, k, &was_moved);
            if (h) {
                if (PyDict_GET_SIZE(self->later)) {
                    if (!key_str(k))
                        goto fail;
                    PyObject *younger = PyDict_GetItemWithError(self->later, k->kp);
                    if (!younger && PyErr_Occurred())
                        goto fail;
                    if (younger && PyObject_Length(younger) > 0) {
                        Py_INCREF(younger);
                        PyObject *y = PyObject_CallMethodNoArgs(younger, s_popleft);
                        Py_ssize_t left = PyObject_Length(younger);
                        Py_DECREF(younger);
                        if (!y)
                            goto fail;
                        int mv = PySet_GET_SIZE(self->moved) ? PySet_Contains(self->moved, y) : 0;
                        int rc = mv < 0 ? -1 : pm_set_mark(&self->live, k, y, mv);
                        Py_DECREF(y);
                        TRY(rc);
                        TRY(left);
                        if (left == 0)
                            TRY(PyDict_DelItem(self->later, k->kp));
                    }
                }
                if (was_moved && PySet_GET_SIZE(self->moved)) /* -1: not known, look */
                    TRY(PySet_Discard(self->moved, h));
                if (minus) {
                    TRY(pm_set(&self->dead, k, h));
                    if (pm_len(&self->dead) >= DEAD_HALF) { /* dead_old = dead; dead = {} */
                        PyObject *fresh = PyDict_New();
                        if (!fresh)
                            goto fail;
                        PtrMap gone = self->dead_old;
                        pm_clear(&gone);
                        Py_SETREF(gone.other, fresh);
                        self->dead_old = self->dead;
                        self->dead = gone;
                    }
                    TRY(emit(out, s_free, n, h, s_zero, Py_None));
                    goto done;
                }
            } else if (PyErr_Occurred()) {
                goto fail;
            } else if (tok_is(kind, data, ps, pe, "(nil)")) {
                TRY(count(self, k_null_frees));
                goto done;
            } else {
                if (check_fails(kind, data, t)) {
                    status = CHECK;
                    goto done;
                }
                /* not live: the block free() last released at p, or a handle never allocated */
                h = pm_get(&self->dead, k);
                if (!h && !PyErr_Occurred())
                    h = pm_get(&self->dead_old, k);
                if (!h && PyErr_Occurred())
                    goto fail;
                int mv = 0;
                if (h) {
                    mv = in_moved(self, h);
                    TRY(mv);
                }
                if (!h || mv) {
                    if (!key_str(k))
                        goto fail;
                    mv = in_moved(self, k->kp);
                    TRY(mv);
                    h = mv ? serial_handle(self, k->kp) : KP_NEW(k);
                    if (!h)
                        goto fail;
                } else {
                    Py_INCREF(h);
                }
                if (minus) {
                    TRY(emit(out, s_free, n, h, s_zero, Py_None));
                    goto done;
                }
                int unused;
                PyObject *gone = pm_pop(&self->dead, k, &unused);
                if (!gone && PyErr_Occurred())
                    goto fail;
                Py_XDECREF(gone);
                gone = pm_pop(&self->dead_old, k, &unused);
                if (!gone && PyErr_Occurred())
                    goto fail;
                Py_XDECREF(gone);
            }
            self->pending = h; /* takes the reference */
            h = NULL;
            self->pending_line = n;
            goto done;
        }
        if (nt == 2 && tok_is(kind, data, t->s0, t->e0, "=") && TS(t, 1) == t->e0 + 1 &&
            PyUnicode_READ(kind, data, t->e0) == ' ' &&
            (tok_is(kind, data, TS(t, 1), TE(t, 1), "Start") || tok_is(kind, data, TS(t, 1), TE(t, 1), "End")))
            goto done;
    }
    if (nt == 0)
        goto done;
    return JUNK;
fail:
    status = -1;
done:
    Py_XDECREF(k->kp);
    Py_XDECREF(h);
    Py_XDECREF(size);
    Py_XDECREF(site);
    return status;
}
static PyObject *ChunkParser_parse(ChunkParser *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "parse(chunk: list[str], base: int)");
        return NULL;
    }
    PyObject *chunk = args[0];
    Py_ssize_t base = PyLong_AsSsize_t(args[1]);
    if (base == -1 && PyErr_Occurred())
        return NULL;
    PyObject *out = new_batch(self->packed, PyList_GET_SIZE(args[0]));
    if (!out)
        return NULL;
    int status = OK, ptrs_bad = 0;
    Py_ssize_t i, len = PyList_GET_SIZE(chunk);
    for (i = 0; i < len; i++) {
        PyObject *line = PyList_GET_ITEM(chunk, i);
        if (!PyUnicode_Check(line)) {
            PyErr_SetString(PyExc_TypeError, "a chunk holds str lines");
            goto fail;
        }
        Py_INCREF(line); /* the list may change under a deque's or dict's callback */
        status = parse_line(self, out, line, 0, PyUnicode_GET_LENGTH(line), base + 1 + i, &ptrs_bad);
        Py_DECREF(line);
        if (status < 0)
            goto fail;
        if (status != OK)
            break;
        len = PyList_GET_SIZE(chunk);
    }
    if (status == OK) {
        i = 0;
        if (ptrs_bad)
            status = PTRS;
    }
    return Py_BuildValue("(Nin)", out, status, i);
fail:
    Py_DECREF(out);
    return NULL;
}

/* Where the line starting at i ends (after its newline; len if it has none). */
static Py_ssize_t line_end(int kind, const void *data, Py_ssize_t i, Py_ssize_t len) {
    if (kind == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *d = data, *nl = memchr(d + i, '\n', (size_t)(len - i));
        return nl ? nl - d + 1 : len;
    }
    for (; i < len; i++)
        if (PyUnicode_READ(kind, data, i) == '\n')
            return i + 1;
    return len;
}

/* The arguments (text: str, pos, ...: int) of ready() and parse_text() into v (want of them
   in all); 0 <= pos <= len(text). */
static int text_args(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
                     Py_ssize_t *v) {
    if (nargs != want || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    for (Py_ssize_t i = 1; i < want; i++)
        if ((v[i - 1] = PyLong_AsSsize_t(args[i])) == -1 && PyErr_Occurred())
            return -1;
    if (v[0] < 0 || v[0] > PyUnicode_GET_LENGTH(args[0])) {
        PyErr_SetString(PyExc_ValueError, "pos out of the text");
        return -1;
    }
    return 0;
}

/* ready(text, pos, every): text[pos:] holds every whole lines */
static PyObject *ChunkParser_ready(ChunkParser *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t v[2];
    if (text_args(args, nargs, 3, "ready(text: str, pos: int, every: int)", v) < 0)
        return NULL;
    Py_ssize_t pos = v[0], every = v[1];
    PyObject *text = args[0];
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text), lines = 0;
    while (lines < every && pos < len) {
        pos = line_end(kind, data, pos, len);
        if (PyUnicode_READ(kind, data, pos - 1) != '\n')
            break;
        lines++;
    }
    return PyBool_FromLong(lines >= every);
}

/* Looks ahead, so that a line's lookup in a large live table does not wait for memory (perl's
   log keeps 286 k pointers live: each lookup was a cache miss, and the handle it found another).
   AHEAD_SLOT lines ahead the slot of the line's pointer is fetched; AHEAD_HANDLE lines ahead
   that slot, in the cache by then, is read and the handle it holds is fetched (a free or a
   realloc hands it on). Only looks: nothing is counted or changed, and a line that is not a
   record with a pointer in canonical form is passed over, so no result depends on them. A
   table under AHEAD_FROM slots (2 MiB: the L2 of this machine's two cores) is not looked at:
   its slots are cached, and the looks would cost a log of few live blocks (git-log's) 14 %. */
#define AHEAD_FROM (((size_t)1 << 17) - 1) /* a mask */
#define AHEAD_SLOT 12
#define AHEAD_HANDLE 4
#define AHEAD_RING 16 /* > AHEAD_SLOT */

/* the pointer of the line from s to e (1-byte text), or 0; its slot on its way to the cache,
   and for a free the dead map's slot it is written to (the map's two halves are 2 MiB, past a
   core's L2: perl's replay 4 % faster with this look) */
static inline uint64_t look_slot(PtrMap *m, PtrMap *dead, const Py_UCS1 *c, Py_ssize_t s,
                                 Py_ssize_t e) {
    Py_ssize_t j = e, ps, pe;
    int minus = 0;
    while (j > s && ws1[c[j - 1]])
        j--;
    pe = j; /* the last token: the pointer of '-' and '<', the size of '+' and '>' */
    while (j > s && !ws1[c[j - 1]])
        j--;
    ps = j;
    while (j > s && ws1[c[j - 1]])
        j--;
    if (j - 1 > s && !ws1[c[j - 2]]) { /* the token before it is longer than '-': the pointer */
        pe = j;
        while (j > s && !ws1[c[j - 1]])
            j--;
        ps = j;
    } else if (!(j > s && (c[j - 1] == '-' || c[j - 1] == '<'))) {
        return 0;
    } else {
        minus = c[j - 1] == '-';
    }
    if (pe - ps < 4 || pe - ps > 18 || c[ps] != '0' || c[ps + 1] != 'x' || c[ps + 2] == '0')
        return 0;
    uint64_t v = 0;
    for (Py_ssize_t i = ps + 2; i < pe; i++) {
        int d = hex_digit[c[i]];
        if (d < 0)
            return 0;
        v = (v << 4) | (uint64_t)d;
    }
#if defined(__GNUC__)
    __builtin_prefetch(&m->slots[slot_of(v, m->mask)]);
    if (minus)
        __builtin_prefetch(&dead->slots[slot_of(v, dead->mask)], 1);
#endif
    return v;
}

/* the handle live at pointer v (if any) on its way to the cache: pm_find, without its counts */
static inline void look_handle(PtrMap *m, uint64_t v) {
#if defined(__GNUC__)
    if (!v)
        return;
    size_t i = slot_of(v, m->mask);
    while (m->slots[i].val && m->slots[i].key != v)
        i = (i + 1) & m->mask;
    if (m->slots[i].val)
        __builtin_prefetch(VAL(m->slots[i]));
#else
    (void)m;
    (void)v;
#endif
}

/* parse_text(text, pos, base, every) -> (records, status, index, end, lines): parse()
   of the chunk of the next every lines of text (a block of the log, newlines translated),
   which ends at end and, the log's cut last line dropped (stats["truncated_at_line"] set, as
   _cut_last_line does), holds lines lines. The caller makes sure text holds every whole lines
   unless it is the log's end (ready()). */
static PyObject *ChunkParser_parse_text(ChunkParser *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t v[3];
    if (text_args(args, nargs, 4, "parse_text(text: str, pos: int, base: int, every: int)", v) < 0)
        return NULL;
    Py_ssize_t pos = v[0], base = v[1], every = v[2];
    PyObject *text = args[0];
    Py_INCREF(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t len = PyUnicode_GET_LENGTH(text), lines = 0, end = pos, i, last = pos;
    if (every > self->ends_size) {
        Py_ssize_t *ends = PyMem_Realloc(self->ends, (size_t)every * sizeof(Py_ssize_t));
        if (!ends) {
            Py_DECREF(text);
            return PyErr_NoMemory();
        }
        self->ends = ends;
        self->ends_size = every;
    }
    while (lines < every && end < len) {
        last = end;
        end = line_end(kind, data, end, len);
        self->ends[lines++] = end;
    }
    if (lines && PyUnicode_READ(kind, data, end - 1) != '\n') {
        /* the log's last line has no newline: glibc ends every record with one, so the
           program died while writing it (a blank one is read as the others) */
        for (i = last; i < end && ISWS(kind, data, i); i++)
            ;
        if (i < end) {
            PyObject *at = PyLong_FromSsize_t(base + lines);
            int rc = at ? PyDict_SetItem(self->stats, k_truncated, at) : -1;
            Py_XDECREF(at);
            if (rc < 0) {
                Py_DECREF(text);
                return NULL;
            }
            lines--;
        }
    }
    PyObject *out = new_batch(self->packed, lines);
    if (!out) {
        Py_DECREF(text);
        return NULL;
    }
    int status = OK, ptrs_bad = 0;
    Py_ssize_t start = pos;
    uint64_t ahead[AHEAD_RING] = {0}; /* the pointers of the lines ahead (0: none) */
    const Py_UCS1 *bytes = kind == PyUnicode_1BYTE_KIND && self->live.mask >= AHEAD_FROM
                               ? (const Py_UCS1 *)data : NULL;
    for (i = 0; bytes && i < AHEAD_SLOT && i < lines; i++)
        ahead[i] = look_slot(&self->live, &self->dead, bytes, i ? self->ends[i - 1] : pos,
                             self->ends[i]);
    for (i = 0; i < lines; i++) {
        Py_ssize_t stop = self->ends[i];
        if (bytes && i + AHEAD_SLOT < lines)
            ahead[(i + AHEAD_SLOT) % AHEAD_RING] =
                look_slot(&self->live, &self->dead, bytes, self->ends[i + AHEAD_SLOT - 1],
                          self->ends[i + AHEAD_SLOT]);
        if (bytes && i + AHEAD_HANDLE < lines)
            look_handle(&self->live, ahead[(i + AHEAD_HANDLE) % AHEAD_RING]);
        status = parse_line(self, out, text, start, stop, base + 1 + i, &ptrs_bad);
        if (status < 0) {
            Py_DECREF(out);
            Py_DECREF(text);
            return NULL;
        }
        if (status != OK)
            break;
        start = stop;
    }
    Py_DECREF(text);
    if (status == OK) {
        i = 0;
        if (ptrs_bad)
            status = PTRS;
    }
    return Py_BuildValue("(Ninnn)", out, status, i, end, lines);
}

static PyObject *ChunkParser_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *stats, *records = Py_None;
    if (!PyArg_ParseTuple(args, "O!|O:ChunkParser", &PyDict_Type, &stats, &records))
        return NULL;
    if (records != Py_None) {
        MallocRecordsAPI *api = PyCapsule_GetPointer(records, MALLOC_RECORDS_CAPSULE);
        if (!api)
            return NULL;
        packed_api = api;
    }
    ChunkParser *self = (ChunkParser *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    self->packed = records != Py_None;
    Py_INCREF(stats);
    self->stats = stats;
    self->later = PyDict_New();
    self->moved = PySet_New(NULL);
    if (!self->later || !self->moved || pm_init(&self->live) < 0 || pm_init(&self->dead) < 0 ||
        pm_init(&self->dead_old) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void ChunkParser_dealloc(ChunkParser *self) {
    Py_XDECREF(self->stats);
    Py_XDECREF(self->later);
    Py_XDECREF(self->moved);
    pm_free(&self->live);
    pm_free(&self->dead);
    pm_free(&self->dead_old);
    Py_XDECREF(self->pending);
    PyMem_Free(self->ends);
    for (int i = 0; i < SMALL_SIZES; i++)
        Py_XDECREF(self->sizes[i]);
    for (int i = 0; i < SITE_SLOTS; i++)
        Py_XDECREF(self->sites[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *ChunkParser_pending(ChunkParser *self, void *closure) {
    return PyBool_FromLong(self->pending != NULL);
}

static PyMethodDef ChunkParser_methods[] = {
    {"parse", (PyCFunction)(void (*)(void))ChunkParser_parse, METH_FASTCALL,
     "parse(chunk, base) -> (records, status, index): the records of a chunk of lines"},
    {"parse_text", (PyCFunction)(void (*)(void))ChunkParser_parse_text, METH_FASTCALL,
     "parse_text(text, pos, base, every) -> (records, status, index, end, lines)"},
    {"ready", (PyCFunction)(void (*)(void))ChunkParser_ready, METH_FASTCALL,
     "ready(text, pos, every) -> whether text[pos:] holds every whole lines"},
    {NULL}};

/* (lookups, slots stepped past) in the pointer tables so far: a test of their hash */
static PyObject *ChunkParser_probes(ChunkParser *self, void *closure) {
    PtrMap *m[3] = {&self->live, &self->dead, &self->dead_old};
    unsigned long long finds = 0, steps = 0;
    for (int i = 0; i < 3; i++) {
        finds += m[i]->finds;
        steps += m[i]->steps;
    }
    return Py_BuildValue("(KK)", finds, steps);
}

static PyGetSetDef ChunkParser_getset[] = {
    {"pending", (getter)ChunkParser_pending, NULL, "a '<' waits for its '>'", NULL},
    {"probes", (getter)ChunkParser_probes, NULL, "(lookups, slots stepped past) so far", NULL},
    {NULL}};

static PyTypeObject ChunkParserType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mmsim.trace._mtrace_c.ChunkParser",
    .tp_basicsize = sizeof(ChunkParser),
    .tp_dealloc = (destructor)ChunkParser_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "ChunkParser(stats, records=None): the state of one read of an mtrace log "
              "(records: the kernel's capsule of packed batches, else lists)",
    .tp_new = ChunkParser_new,
    .tp_methods = ChunkParser_methods,
    .tp_getset = ChunkParser_getset,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mtrace_c",
                                    "The C hot loop of the mtrace reader (mmsim.trace.mtrace).", -1, NULL};

static PyObject *intern(const char *s) { return PyUnicode_InternFromString(s); }

PyMODINIT_FUNC PyInit__mtrace_c(void) {
    for (int c = 0; c < 256; c++) {
        ws1[c] = Py_UNICODE_ISSPACE(c) ? 1 : 0;
        hex_digit[c] = (signed char)(c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                     : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1);
    }
    if (PyType_Ready(&ChunkParserType) < 0)
        return NULL;
    PyObject *collections = PyImport_ImportModule("collections");
    if (!collections)
        return NULL;
    deque_type = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (!deque_type)
        return NULL;
    s_malloc = intern("malloc");
    s_realloc = intern("realloc");
    s_free = intern("free");
    s_p = intern("p");
    s_popleft = intern("popleft");
    s_append = intern("append");
    s_zero = PyLong_FromLong(0);
    s_one = PyLong_FromLong(1);
    k_null_results = intern("null_results");
    k_reused = intern("reused_live_pointers");
    k_unpaired_results = intern("unpaired_realloc_results");
    k_failed = intern("failed_reallocs");
    k_null_frees = intern("null_frees");
    k_unpaired_frees = intern("unpaired_realloc_frees");
    k_truncated = intern("truncated_at_line");
    if (!s_malloc || !s_realloc || !s_free || !s_p || !s_popleft || !s_append || !s_zero || !s_one ||
        !k_null_results || !k_reused || !k_unpaired_results || !k_failed || !k_null_frees ||
        !k_unpaired_frees || !k_truncated)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    Py_INCREF(&ChunkParserType);
    if (PyModule_AddObject(m, "ChunkParser", (PyObject *)&ChunkParserType) < 0) {
        Py_DECREF(&ChunkParserType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
