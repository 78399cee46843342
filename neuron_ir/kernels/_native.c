/* Compiled elementwise kernels of the interpreter, for float32 work that numpy can only
 * do in many array passes (see neuron_ir/kernels/native.py, which falls back to numpy
 * when this module is not built).
 *
 * Each kernel performs, element by element, the same IEEE float32 operations in the same
 * order as the numpy code it replaces, so the results are bit-identical to it.  That
 * holds because the build turns off floating-point contraction (no fused multiply-add)
 * and does not allow reassociation (no -ffast-math); -fno-trapping-math only lets the
 * compiler turn the clamps' branches into vector selects, which changes no result.
 *
 * Arrays come through the buffer protocol: float32 ('f'), any shape, strided in every
 * axis but the last, which must be contiguous.  The loops release the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* An AVX2 copy of each loop, chosen at load time where the CPU has it (twice the
 * lanes of the x86-64 baseline); the arithmetic is the same in both copies. */
#define NI_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NI_CLONES
#endif

/* erf(x) = x P(x^2) / Q(x^2) on x clamped to +-3.92, then clamped to [-1, 1]: the
 * coefficients of neuron_ir.kernels.tensor._ERF32_P / _ERF32_Q (constant term first),
 * rounded to float32 from the same double values numpy rounds (decimal -> double ->
 * float, as np.float32 does). */
static const float ERF_P[6] = {(float)1.1283791545894972, (float)0.18865009058596177,
                               (float)0.05252710077675409, (float)0.003694076530919144,
                               (float)0.0002839290671570356, (float)2.0716038263146608e-06};
static const float ERF_Q[6] = {(float)1.0, (float)0.5005197236729658,
                               (float)0.11339305659765592, (float)0.014824300554488063,
                               (float)0.0011464793775741774, (float)3.82660668299048e-05};
static const float ERF_CLAMP = (float)3.92;

/* Horner's rule in tensor._erf32_chunk's order: c5 t + c4, times t, + c3, ... + c0. */
static inline float horner5(float t, const float *c)
{
    float p = t * c[5];
    for (int k = 4; k >= 1; k--) {
        p += c[k];
        p *= t;
    }
    return p + c[0];
}

static inline float erf1(float v)
{
    /* np.clip keeps NaN and -0.0, as these selects do. */
    float xc = v < -ERF_CLAMP ? -ERF_CLAMP : (v > ERF_CLAMP ? ERF_CLAMP : v);
    float t = xc * xc;
    float r = (horner5(t, ERF_P) * xc) / horner5(t, ERF_Q);
    return r < -1.0f ? -1.0f : (r > 1.0f ? 1.0f : r);
}

NI_CLONES static void erf_row(const float *restrict src, float *restrict dst, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        dst[i] = erf1(src[i]);
}

/* In place: one pointer read and written, so the loop vectorizes without an aliasing
 * check. */
NI_CLONES static void erf_row_in_place(float *x, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        x[i] = erf1(x[i]);
}

/* Gelu as the decomposed graph computes it: d = x / c (or x * c), e = erf(d),
 * a = e + one, then y = (x * a) * half (as Hugging Face's code is traced), or
 * y = x * (a * half) when half_first (as torch's dynamo exporter writes it).  The flags
 * are the same for the whole loop, which the compiler unswitches. */
NI_CLONES static void gelu_row(float *x, Py_ssize_t n, int divide, int half_first, float c,
                               float one, float half)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        float a = erf1(divide ? v / c : v * c) + one;
        x[i] = half_first ? v * (a * half) : (v * a) * half;
    }
}

/* A convolution's tail as the unfused steps compute it, one after the other: v = x + b
 * (no add at all without a bias: x + 0.0f would turn -0.0 into +0.0), then v + r, then
 * the activation, each as numpy rounds it:
 *   TAIL_RELU:  max(v, 0) as numpy's maximum against zeros (NaN kept, -0.0 to +0.0);
 *   TAIL_LEAKY: numpy's maximum(v, v * alpha), LeakyRelu's kernel for 0 <= alpha <= 1
 *               (a NaN operand is the result; ties are equal bits). */
enum { TAIL_NONE = 0, TAIL_RELU = 1, TAIL_LEAKY = 2 };

static inline float tail_activation(float v, int act, float alpha)
{
    if (act == TAIL_RELU)
        return (v > 0.0f || v != v) ? v : 0.0f;
    if (act == TAIL_LEAKY) {
        float m = v * alpha;
        return v != v ? v : (m != m ? m : (v >= m ? v : m));
    }
    return v;
}

/* The flags are the same for the whole row, and the compiler unswitches the loop. */
NI_CLONES static void conv_tail_row(float *x, Py_ssize_t n, int has_bias, float b,
                                    const float *r, int act, float alpha)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = has_bias ? x[i] + b : x[i];
        if (r != NULL)
            v = v + r[i];
        x[i] = tail_activation(v, act, alpha);
    }
}

#define MAX_AXES 64 /* numpy's limit */

/* A float32 array whose last axis is contiguous; 0 with an exception set otherwise. */
static int get_floats(PyObject *obj, Py_buffer *view, int writable)
{
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return 0;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0) {
        PyErr_SetString(PyExc_TypeError, "expected a float32 array");
        PyBuffer_Release(view);
        return 0;
    }
    if (view->ndim > MAX_AXES) {
        PyErr_SetString(PyExc_ValueError, "too many axes");
        PyBuffer_Release(view);
        return 0;
    }
    if (view->ndim > 0 && view->shape[view->ndim - 1] > 1 && view->strides[view->ndim - 1] != 4) {
        PyErr_SetString(PyExc_ValueError, "the last axis must be contiguous");
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

/* Calls fn(rows, n, ctx) for every row along the last axis of an nd-axis array of
 * `shape`, rows[k] being where that row starts in buffer k of `bufs` (NULL: none, and
 * rows[k] NULL).  Each buffer has the array's shape on the first nd - 1 axes, with its
 * own strides (a bias may have stride 0); the rows themselves are contiguous. */
typedef void (*rows_fn)(char **rows, Py_ssize_t n, void *ctx);
#define MAX_BUFFERS 3
#if defined(__GNUC__)
/* Inlined into each caller, where fn is a known function the compiler calls directly:
 * the rows can be short (56 floats on ResNet's layer 1), so a row's overhead counts. */
#define NI_WALK static inline __attribute__((always_inline))
#else
#define NI_WALK static inline
#endif

NI_WALK void for_each_row(int nd, const Py_ssize_t *shape, Py_buffer **bufs, int count,
                          rows_fn fn, void *ctx)
{
    char *base[MAX_BUFFERS], *rows[MAX_BUFFERS];
    const Py_ssize_t *strides[MAX_BUFFERS];
    Py_ssize_t offset[MAX_BUFFERS] = {0};
    for (int k = 0; k < count; k++) {
        base[k] = bufs[k] ? (char *)bufs[k]->buf : NULL;
        strides[k] = bufs[k] ? bufs[k]->strides : NULL;
        rows[k] = base[k];
    }
    if (nd == 0) {
        fn(rows, 1, ctx);
        return;
    }
    Py_ssize_t n = shape[nd - 1], outer = 1;
    for (int d = 0; d < nd - 1; d++)
        outer *= shape[d];
    if (n == 0)
        return;
    /* An odometer over the outer axes, each buffer's offset kept up to date as it
     * turns (a row costs a few adds, not a sum over the axes). */
    Py_ssize_t index[MAX_AXES] = {0};
    for (Py_ssize_t r = 0; r < outer; r++) {
        for (int k = 0; k < count; k++)
            rows[k] = base[k] ? base[k] + offset[k] : NULL;
        fn(rows, n, ctx);
        for (int d = nd - 2; d >= 0; d--) {
            int more = ++index[d] < shape[d];
            for (int k = 0; k < count; k++)
                if (base[k])
                    offset[k] += more ? strides[k][d] : -(shape[d] - 1) * strides[k][d];
            if (more)
                break;
            index[d] = 0;
        }
    }
}

static int same_shape(Py_buffer *a, Py_buffer *b)
{
    if (a->ndim != b->ndim)
        return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

static void erf_rows(char **rows, Py_ssize_t n, void *ctx)
{
    (void)ctx;
    if (rows[0] == rows[1])
        erf_row_in_place((float *)rows[0], n);
    else
        erf_row((const float *)rows[0], (float *)rows[1], n);
}

static PyObject *py_erf_f32(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *src_obj, *dst_obj;
    if (!PyArg_ParseTuple(args, "OO:erf_f32", &src_obj, &dst_obj))
        return NULL;
    Py_buffer src, dst;
    if (!get_floats(src_obj, &src, 0))
        return NULL;
    if (!get_floats(dst_obj, &dst, 1)) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (!same_shape(&src, &dst)) {
        PyErr_SetString(PyExc_ValueError, "erf_f32: source and destination shapes differ");
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        return NULL;
    }
    Py_buffer *bufs[2] = {&src, &dst};
    Py_BEGIN_ALLOW_THREADS
    for_each_row(src.ndim, src.shape, bufs, 2, erf_rows, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

struct gelu_ctx {
    int divide, half_first;
    float c, one, half;
};

static void gelu_rows(char **rows, Py_ssize_t n, void *ctx)
{
    struct gelu_ctx *g = (struct gelu_ctx *)ctx;
    gelu_row((float *)rows[0], n, g->divide, g->half_first, g->c, g->one, g->half);
}

static PyObject *py_gelu_erf_f32(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *obj;
    struct gelu_ctx g;
    if (!PyArg_ParseTuple(args, "Oppfff:gelu_erf_f32", &obj, &g.divide, &g.half_first, &g.c,
                          &g.one, &g.half))
        return NULL;
    Py_buffer x;
    if (!get_floats(obj, &x, 1))
        return NULL;
    Py_buffer *bufs[1] = {&x};
    Py_BEGIN_ALLOW_THREADS
    for_each_row(x.ndim, x.shape, bufs, 1, gelu_rows, &g);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&x);
    Py_RETURN_NONE;
}

struct tail_ctx {
    int act;
    float alpha;
};

/* rows: x, its bias (one value a row) or NULL, its residual or NULL */
static void tail_rows(char **rows, Py_ssize_t n, void *ctx)
{
    struct tail_ctx *t = (struct tail_ctx *)ctx;
    float b = rows[1] ? *(const float *)rows[1] : 0.0f;
    conv_tail_row((float *)rows[0], n, rows[1] != NULL, b, (const float *)rows[2], t->act,
                  t->alpha);
}

static PyObject *py_conv_tail_f32(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *bias_obj, *res_obj;
    struct tail_ctx t;
    if (!PyArg_ParseTuple(args, "OOOif:conv_tail_f32", &x_obj, &bias_obj, &res_obj, &t.act,
                          &t.alpha))
        return NULL;
    if (t.act < TAIL_NONE || t.act > TAIL_LEAKY) {
        PyErr_SetString(PyExc_ValueError, "conv_tail_f32: unknown activation");
        return NULL;
    }
    Py_buffer x, bias, res;
    int has_bias = bias_obj != Py_None, has_res = res_obj != Py_None;
    if (!get_floats(x_obj, &x, 1))
        return NULL;
    if (has_bias && PyObject_GetBuffer(bias_obj, &bias, PyBUF_STRIDES | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    if (has_res && !get_floats(res_obj, &res, 0)) {
        PyBuffer_Release(&x);
        if (has_bias)
            PyBuffer_Release(&bias);
        return NULL;
    }
    int nd = x.ndim;
    const char *error = NULL;
    if (nd < 1)
        error = "conv_tail_f32: x needs an axis";
    else if (has_res && !same_shape(&x, &res))
        error = "conv_tail_f32: residual and x shapes differ";
    else if (has_bias) {
        /* One bias value a row: shape x.shape[:-1], any strides. */
        int ok = bias.itemsize == 4 && bias.format != NULL && strcmp(bias.format, "f") == 0 &&
                 bias.ndim == nd - 1;
        for (int d = 0; ok && d < nd - 1; d++)
            ok = bias.shape[d] == x.shape[d];
        if (!ok)
            error = "conv_tail_f32: bias must be float32 of shape x.shape[:-1]";
    }
    if (error == NULL) {
        Py_buffer *bufs[3] = {&x, has_bias ? &bias : NULL, has_res ? &res : NULL};
        Py_BEGIN_ALLOW_THREADS
        for_each_row(nd, x.shape, bufs, 3, tail_rows, &t);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    if (has_bias)
        PyBuffer_Release(&bias);
    if (has_res)
        PyBuffer_Release(&res);
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* im2col of output rows [h0, h1) of one image x (C, H, W; last axis contiguous) into
 * cols (C*kh*kw, (h1-h0)*ow; C-contiguous): cols[(c, ky, kx), (r, ox)] =
 * x[c, (h0+r)*sh + ky*dh - top, ox*sw + kx*dw - left], zero outside the image.  A copy:
 * the same values as numpy's strided copy of the padded windows. */
static PyObject *py_im2col_f32(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *x_obj, *cols_obj;
    Py_ssize_t kh, kw, sh, sw, dh, dw, top, left, h0, h1, ow;
    if (!PyArg_ParseTuple(args, "OO(nn)(nn)(nn)(nn)(nn)n:im2col_f32", &x_obj, &cols_obj, &kh,
                          &kw, &sh, &sw, &dh, &dw, &top, &left, &h0, &h1, &ow))
        return NULL;
    Py_buffer x, cols;
    if (!get_floats(x_obj, &x, 0))
        return NULL;
    if (PyObject_GetBuffer(cols_obj, &cols, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) <
        0) {
        PyBuffer_Release(&x);
        return NULL;
    }
    Py_ssize_t rows = h1 - h0, n = rows * ow;
    const char *error = NULL;
    if (x.ndim != 3 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || rows < 0 ||
        ow < 0)
        error = "im2col_f32: bad geometry";
    else if (cols.itemsize != 4 || cols.format == NULL || strcmp(cols.format, "f") != 0 ||
             cols.len != x.shape[0] * kh * kw * n * 4)
        error = "im2col_f32: cols must be float32 of C*kh*kw x rows*ow";
    if (error == NULL) {
        Py_ssize_t channels = x.shape[0], height = x.shape[1], width = x.shape[2];
        Py_BEGIN_ALLOW_THREADS
        float *out = (float *)cols.buf;
        for (Py_ssize_t c = 0; c < channels; c++)
            for (Py_ssize_t ky = 0; ky < kh; ky++)
                for (Py_ssize_t kx = 0; kx < kw; kx++) {
                    Py_ssize_t shift = kx * dw - left;
                    /* output columns whose input column is inside the image: [lo, hi) */
                    Py_ssize_t lo = 0, hi = ow;
                    while (lo < ow && lo * sw + shift < 0)
                        lo++;
                    while (hi > lo && (hi - 1) * sw + shift >= width)
                        hi--;
                    for (Py_ssize_t r = 0; r < rows; r++, out += ow) {
                        Py_ssize_t iy = (h0 + r) * sh + ky * dh - top;
                        if (iy < 0 || iy >= height) {
                            memset(out, 0, ow * sizeof(float));
                            continue;
                        }
                        const float *row = (const float *)((const char *)x.buf +
                                                           c * x.strides[0] + iy * x.strides[1]);
                        for (Py_ssize_t o = 0; o < lo; o++)
                            out[o] = 0.0f;
                        if (sw == 1)
                            memcpy(out + lo, row + lo + shift, (hi - lo) * sizeof(float));
                        else
                            for (Py_ssize_t o = lo; o < hi; o++)
                                out[o] = row[o * sw + shift];
                        for (Py_ssize_t o = hi; o < ow; o++)
                            out[o] = 0.0f;
                    }
                }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&x);
    PyBuffer_Release(&cols);
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"erf_f32", py_erf_f32, METH_VARARGS,
     "erf_f32(src, dst): dst = erf(src), float32, the interpreter's rational form."},
    {"gelu_erf_f32", py_gelu_erf_f32, METH_VARARGS,
     "gelu_erf_f32(x, divide, half_first, c, one, half): x = (x * a) * half, or"
     " x * (a * half), with a = erf(x / c or x * c) + one, in place."},
    {"conv_tail_f32", py_conv_tail_f32, METH_VARARGS,
     "conv_tail_f32(x, bias, residual, act, alpha): x = act((x + bias) + residual) in"
     " place, act 0 none, 1 Relu, 2 LeakyRelu(alpha); bias one value a row (shape"
     " x.shape[:-1]) or None, residual like x or None."},
    {"im2col_f32", py_im2col_f32, METH_VARARGS,
     "im2col_f32(x, cols, (kh, kw), (sh, sw), (dh, dw), (top, left), (h0, h1), ow):"
     " output rows [h0, h1) of one (C, H, W) image into cols, zero-padded."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Compiled float32 elementwise kernels.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&module);
}
