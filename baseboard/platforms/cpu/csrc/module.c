/* The kernels as a CPython extension module, `_baseboard_cpu`: the same functions, names
 * and arguments as through ctypes, at a fraction of ctypes' call cost, which is a few
 * percent of a small model's decode step (docs/benchmarks.md).
 * Built only where the Python headers are installed; native.py falls back to ctypes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include "kernels.h"

typedef union {
    void *p;
    long l;
    double d;
} arg;

/* Convert every argument by its kind ('p' pointer as int or None, 'l' integer, 'f' float)
 * before anything runs: a bad argument raises and the kernel is never called. */
static int convert(PyObject *const *args, Py_ssize_t n, const char *kinds, arg *out,
                   const char *name) {
    Py_ssize_t want = (Py_ssize_t)strlen(kinds);
    if (n != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments (%zd given)", name, want, n);
        return 0;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (kinds[i] == 'p')
            out[i].p = args[i] == Py_None ? NULL : PyLong_AsVoidPtr(args[i]);
        else if (kinds[i] == 'l')
            out[i].l = PyLong_AsLong(args[i]);
        else
            out[i].d = PyFloat_AsDouble(args[i]);
    }
    return !PyErr_Occurred();
}

#define BIND(NAME, KINDS, ...)                                                               \
static PyObject *py_##NAME(PyObject *self, PyObject *const *args, Py_ssize_t n) {            \
    arg a[24];                                                                               \
    (void)self;                                                                              \
    if (!convert(args, n, KINDS, a, #NAME)) return NULL;                                     \
    NAME(__VA_ARGS__);                                                                       \
    Py_RETURN_NONE;                                                                          \
}

BIND(bb_gemm_pack, "plllpl", a[0].p, a[1].l, a[2].l, a[3].l, a[4].p, (int)a[5].l)
BIND(bb_gemm, "plpppllllll", a[0].p, a[1].l, a[2].p, a[3].p, a[4].p, a[5].l, a[6].l, a[7].l,
     a[8].l, (int)a[9].l, (int)a[10].l)
BIND(bb_gemm_pack_f32, "plllpl", a[0].p, a[1].l, a[2].l, a[3].l, a[4].p, (int)a[5].l)
BIND(bb_gemm_f32, "plppplllll", a[0].p, a[1].l, a[2].p, a[3].p, a[4].p, a[5].l, a[6].l, a[7].l,
     a[8].l, (int)a[9].l)
BIND(bb_qgemm_pack, "plllllpl", a[0].p, a[1].l, a[2].l, a[3].l, (int)a[4].l, (int)a[5].l, a[6].p,
     (int)a[7].l)
BIND(bb_qgemm, "pllppplpplllllllllpl", a[0].p, a[1].l, (int)a[2].l, a[3].p, a[4].p, a[5].p,
     (int)a[6].l, a[7].p, a[8].p, a[9].l, (int)a[10].l, a[11].l, a[12].l, a[13].l, a[14].l,
     (int)a[15].l, a[16].l, (int)a[17].l, a[18].p, (int)a[19].l)
BIND(bb_attention, "pplplplplpll", a[0].p, a[1].p, a[2].l, a[3].p, a[4].l, a[5].p, a[6].l,
     a[7].p, a[8].l, a[9].p, a[10].l, (int)a[11].l)
BIND(bb_rms_norm, "plplpllflll", a[0].p, a[1].l, a[2].p, a[3].l, a[4].p, a[5].l, a[6].l,
     (float)a[7].d, (int)a[8].l, (int)a[9].l, (int)a[10].l)
BIND(bb_fused_add_rms_norm, "plplpllflll", a[0].p, a[1].l, a[2].p, a[3].l, a[4].p, a[5].l,
     a[6].l, (float)a[7].d, (int)a[8].l, (int)a[9].l, (int)a[10].l)
BIND(bb_silu_and_mul, "plplllll", a[0].p, a[1].l, a[2].p, a[3].l, a[4].l, a[5].l, (int)a[6].l,
     (int)a[7].l)
BIND(bb_rotary_embedding, "ppllplllplll", a[0].p, a[1].p, a[2].l, a[3].l, a[4].p, a[5].l,
     a[6].l, a[7].l, a[8].p, a[9].l, (int)a[10].l, (int)a[11].l)
BIND(bb_argmax, "plllpl", a[0].p, a[1].l, a[2].l, a[3].l, a[4].p, (int)a[5].l)

#define METHOD(NAME) {#NAME, (PyCFunction)(void (*)(void))py_##NAME, METH_FASTCALL, NULL}
static PyMethodDef methods[] = {
    METHOD(bb_gemm_pack), METHOD(bb_gemm), METHOD(bb_gemm_pack_f32), METHOD(bb_gemm_f32),
    METHOD(bb_qgemm_pack), METHOD(bb_qgemm),
    METHOD(bb_attention), METHOD(bb_rms_norm),
    METHOD(bb_fused_add_rms_norm), METHOD(bb_silu_and_mul), METHOD(bb_rotary_embedding),
    METHOD(bb_argmax), {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_baseboard_cpu", NULL, -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__baseboard_cpu(void) { return PyModule_Create(&module); }
