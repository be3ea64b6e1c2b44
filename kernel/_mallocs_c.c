/* placeholder: see setup.py */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mallocs_c", NULL, 0, NULL};

PyMODINIT_FUNC PyInit__mallocs_c(void) { return PyModule_Create(&module); }
