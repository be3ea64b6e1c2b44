/* placeholder: see setup.py */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_mtrace_c", NULL, 0, NULL};

PyMODINIT_FUNC PyInit__mtrace_c(void) { return PyModule_Create(&module); }
