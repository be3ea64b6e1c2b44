/* A batch of malloc records packed (kernel/_mallocs_c.c's MallocRecords), as a reader's C code
 * builds it through a capsule: a record is five references in a row, in the order of its
 * tuple (kind, line, handle, size, site), so the kernel's C loop reads it where a tuple would
 * hold it and no tuple is made or freed for it (a fifth of the mtrace reader's time on perl's
 * log). To Python it is a read-only sequence of those tuples. */
#ifndef MMSIM_MALLOC_RECORDS_C_H
#define MMSIM_MALLOC_RECORDS_C_H

#include <Python.h>

typedef struct {
    PyTypeObject *type;
    /* an empty batch with room for hint records, a new reference (NULL with an error set) */
    PyObject *(*create)(Py_ssize_t hint);
    /* one record appended (the references are borrowed): 0, or -1 with an error set */
    int (*append)(PyObject *self, PyObject *kind, PyObject *line, PyObject *handle,
                  PyObject *size, PyObject *site);
} MallocRecordsAPI;

#define MALLOC_RECORDS_CAPSULE "mmsim.kernel._mallocs_c._RECORDS"

#endif
