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
#include <math.h>
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

/* dst = act((src + b) + r) (src may be dst).  The flags are the same for the whole row,
 * and the compiler unswitches the loop. */
NI_CLONES static void conv_tail_row(const float *src, float *dst, Py_ssize_t n, int has_bias,
                                    float b, const float *r, int act, float alpha)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = has_bias ? src[i] + b : src[i];
        if (r != NULL)
            v = v + r[i];
        dst[i] = tail_activation(v, act, alpha);
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

/* None, or a ValueError with the message `error` where it is set (each entry point ends
 * so, once its buffers are released). */
static PyObject *none_or_error(const char *error)
{
    if (error != NULL) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
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
    conv_tail_row((float *)rows[0], (float *)rows[0], n, rows[1] != NULL, b,
                  (const float *)rows[2], t->act, t->alpha);
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
    return none_or_error(error);
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
    return none_or_error(error);
}

/* ---------------------------------------------------------------------------------
 * 2-D convolution as an implicit GEMM over the zero-padded image, with its bias,
 * residual and activation applied while the product is still in registers or cache.
 *
 * At stride 1, with the image padded to (C, Hp, Wp), output (oh, ow) is numbered
 * q = oh * Wp + ow ("padded columns"): its window reads xp[c, oh + ky*dh, ow + kx*dw],
 * so column q of the GEMM operand is B[k][q] = xp[off[k] + q], off[k] = (c*Hp +
 * ky*dh)*Wp + kx*dw for k = (c, ky, kx).  Consecutive columns are consecutive floats,
 * and no im2col matrix is ever written.  The Wp - OW columns a row gains are computed
 * and dropped (2 of 58 on a 56-wide 3x3 layer).  An unpadded 1x1 convolution is the
 * same with xp the image itself.  At a stride s > 1, q = oh * OW + ow
 * and B[k][q] = xp[off[k] + oh*s*Wp + ow*s]: the panels gather their columns (at s = 2,
 * the outputs of a row are the even floats of twice as many).
 *
 * Blocks, for cores with 32 KB of L1 and 512 KB of L2: KC rows by NB columns of B are
 * copied into 24-wide panels (L2), and each 4x24 tile of the product keeps 12 AVX2
 * accumulators while it walks KC weights of four output channels, packed once per weight
 * as [panel][k][4] (``native.pack_weights``), against one panel (L1).  A 4x24 tile
 * broadcasts 4 weights per 12 multiply-adds where 6x16 broadcasts 6: in L1, 88-96
 * against 75-80 GFLOP/s on one core here.  Sums over several K blocks meet in a
 * per-thread buffer.  A tile's last K block goes straight to the output where its
 * columns are as many output columns; otherwise through the buffer and an epilogue that
 * writes each output row's run.
 *
 * Rounding: each output is one fused multiply-add chain over k = 0..K-1 in order,
 * whatever the blocks, the chunk or the thread, so splitting by rows, channels or images
 * changes no bit; then + bias, + residual and the activation as conv_tail_row rounds
 * them (the steps the unfused graph takes, in its order).  The sums are not OpenBLAS's,
 * so results differ from the numpy path (NEURON_IR_NATIVE=0) by float32 rounding.
 * --------------------------------------------------------------------------------- */
#if defined(__GNUC__) && defined(__x86_64__)
#define NI_HAVE_GEMM 1
#include <immintrin.h>
#define NI_FMA __attribute__((target("avx2,fma")))
#define NI_INLINE static inline __attribute__((always_inline))
#define GEMM_MR 4
#define GEMM_NR 24
#define GEMM_NB 240 /* columns in a block: ten panels */
#define GEMM_KC 256
#define GEMM_MB 4            /* panels of weights a panel of B meets before the next one */
#define GEMM_SUMS 65536      /* floats in the partial sums' buffer: half of L2 */

/* The activation of conv_tail_row on eight lanes, bit for bit: Relu keeps NaN and turns
 * -0.0 into +0.0; LeakyRelu is max(v, v * alpha) with a NaN operand the result. */
NI_FMA NI_INLINE __m256 act8(__m256 v, int act, __m256 alpha)
{
    if (act == TAIL_RELU) {
        __m256 keep = _mm256_or_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ),
                                   _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        return _mm256_and_ps(v, keep);
    }
    if (act == TAIL_LEAKY) {
        __m256 m = _mm256_mul_ps(v, alpha);
        __m256 r = _mm256_blendv_ps(m, v, _mm256_cmp_ps(v, m, _CMP_GE_OQ));
        r = _mm256_blendv_ps(r, m, _mm256_cmp_ps(m, m, _CMP_UNORD_Q));
        return _mm256_blendv_ps(r, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    return v;
}

/* Where a tile's sums go after its K block: back to the partial sums, or finished into
 * the output. */
enum { TILE_SUMS, TILE_OUT };
struct tile_dest {
    int mode;
    float *out;       /* TILE_OUT: the output at the panel's row 0, rows ld apart */
    const float *res; /* its residual, the same layout, or NULL */
    Py_ssize_t ld;
    const float *bias; /* the bias of the panel's row 0, or NULL */
    int act;
    float alpha;
};

/* Row i of a TILE_OUT tile: act((sums + bias) + residual) into the output. */
NI_FMA NI_INLINE void finish_row(const struct tile_dest *d, int i, const __m256 *sums)
{
    __m256 alpha = _mm256_set1_ps(d->alpha);
    for (int h = 0; h < 3; h++) {
        __m256 v = sums[h];
        if (d->bias != NULL)
            v = _mm256_add_ps(v, _mm256_broadcast_ss(d->bias + i));
        if (d->res != NULL)
            v = _mm256_add_ps(v, _mm256_loadu_ps(d->res + i * d->ld + 8 * h));
        _mm256_storeu_ps(d->out + i * d->ld + 8 * h, act8(v, d->act, alpha));
    }
}

/* One 4x24 tile over kc rows, or its first 8 * vecs columns: sums[i][j] (+)= a[k][i] *
 * b[k][j], one fused multiply-add at a time in k order (a: a weight panel, [k][4]; b: a
 * B panel, [k][24]); starting from zero, or from the partial sums (four rows, ldp apart).
 * TILE_OUT (whole tiles only) finishes rows [r0, r1) of the panel in registers;
 * TILE_SUMS stores all four back to the partial sums.  A panel's last columns take fewer vectors: 49 columns
 * (a 7x7 image) cost 2 x 24 + 8, not 3 x 24. */
NI_FMA NI_INLINE void gemm_tile(Py_ssize_t kc, const float *a, const float *b, int first,
                                float *partial, Py_ssize_t ldp, int r0, int r1,
                                const struct tile_dest *d, int vecs)
{
    __m256 acc[GEMM_MR][3];
    for (int i = 0; i < GEMM_MR; i++)
        for (int h = 0; h < vecs; h++)
            acc[i][h] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(partial + i * ldp + 8 * h);
#pragma GCC unroll 4
    for (Py_ssize_t k = 0; k < kc; k++, a += GEMM_MR, b += GEMM_NR) {
        __m256 bv[3];
        for (int h = 0; h < vecs; h++)
            bv[h] = _mm256_loadu_ps(b + 8 * h);
        for (int i = 0; i < GEMM_MR; i++) {
            __m256 w = _mm256_broadcast_ss(a + i);
            for (int h = 0; h < vecs; h++)
                acc[i][h] = _mm256_fmadd_ps(w, bv[h], acc[i][h]);
        }
    }
    if (d->mode == TILE_SUMS) {
        for (int i = 0; i < GEMM_MR; i++)
            for (int h = 0; h < vecs; h++)
                _mm256_storeu_ps(partial + i * ldp + 8 * h, acc[i][h]);
        return;
    }
    /* Constant indices: a loop the compiler did not unroll would keep the accumulators in
     * memory through the whole k loop. */
#define NI_FINISH(i)                                                                       \
    if (r0 <= i && i < r1)                                                                 \
        finish_row(d, i, acc[i]);
    NI_FINISH(0) NI_FINISH(1) NI_FINISH(2) NI_FINISH(3)
#undef NI_FINISH
}

/* A gathered panel's columns (their offsets col[0..w) in the image) as runs per group
 * of eight: group g's lanes come from masked loads at image offsets at[g][r]. */
struct panel_runs {
    int count[3];
    Py_ssize_t at[3][3];
    __m256i mask[3][3];
};

/* 0 where some group meets more than three runs (rows under three columns wide). */
NI_FMA static int gather_runs(const Py_ssize_t *col, Py_ssize_t w, struct panel_runs *runs)
{
    for (int g = 0; g < 3; g++) {
        int lanes[8], n = 0;
        runs->count[g] = 0;
        for (int l = 0; l < 8; l++) {
            Py_ssize_t c = 8 * g + l;
            /* which run lane l is in: a new one where the columns stop being consecutive */
            if (c < w && (l == 0 || c == 0 || col[c] != col[c - 1] + 1 || lanes[l - 1] < 0)) {
                if (n == 3)
                    return 0;
                runs->at[g][n] = col[c] - l;
                n++;
            }
            lanes[l] = c < w ? n - 1 : -1;
        }
        for (int r = 0; r < n; r++) {
            int m[8];
            for (int l = 0; l < 8; l++)
                m[l] = lanes[l] == r ? -1 : 0;
            runs->mask[g][r] = _mm256_loadu_si256((const __m256i *)m);
        }
        runs->count[g] = n;
    }
    return 1;
}

/* Rows [0, kc) of B (offsets off), columns [q, q + n), as 24-wide panels (panel p: kc
 * rows of 24 floats), the last one zero-filled past n.  Padded columns (wq == wp, stride
 * 1) start at xp + q; gathered ones (wq == ow) at xp + (q / ow) * s * wp + (q % ow) * s. */
NI_FMA static void gemm_pack(const float *xp, const Py_ssize_t *off, Py_ssize_t kc,
                             Py_ssize_t stride, Py_ssize_t wp, Py_ssize_t ow, Py_ssize_t wq,
                             int pairs, Py_ssize_t q, Py_ssize_t n, float *panels)
{
    const __m256i evens = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for (Py_ssize_t j = 0; j < n; j += GEMM_NR) {
        float *dst = panels + j * kc;
        Py_ssize_t w = n - j < GEMM_NR ? n - j : GEMM_NR;
        if (wq == wp && stride == 1) {
            const float *src = xp + q + j;
            if (w == GEMM_NR) {
                for (Py_ssize_t k = 0; k < kc; k++, dst += GEMM_NR)
                    for (int h = 0; h < GEMM_NR / 8; h++)
                        _mm256_storeu_ps(dst + 8 * h, _mm256_loadu_ps(src + off[k] + 8 * h));
            } else {
                for (Py_ssize_t k = 0; k < kc; k++, dst += GEMM_NR) {
                    Py_ssize_t c = 0;
                    for (; c < w; c++)
                        dst[c] = src[off[k] + c];
                    for (; c < GEMM_NR; c++)
                        dst[c] = 0.0f;
                }
            }
            continue;
        }
        Py_ssize_t col[GEMM_NR];
        struct panel_runs runs;
        for (Py_ssize_t c = 0; c < w; c++) {
            Py_ssize_t y = (q + j + c) / ow;
            col[c] = y * stride * wp + (q + j + c - y * ow) * stride;
        }
        if (stride == 2 && pairs && w == GEMM_NR && col[GEMM_NR - 1] - col[0] == 2 * (GEMM_NR - 1)) {
            /* One output row: the even floats of twice as many (the last odd one is read,
             * not used). */
            for (Py_ssize_t k = 0; k < kc; k++, dst += GEMM_NR) {
                const float *s = xp + off[k] + col[0];
                for (int h = 0; h < GEMM_NR / 8; h++) {
                    __m256 lo = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s + 16 * h), evens);
                    __m256 hi = _mm256_permutevar8x32_ps(_mm256_loadu_ps(s + 16 * h + 8), evens);
                    _mm256_storeu_ps(dst + 8 * h, _mm256_permute2f128_ps(lo, hi, 0x20));
                }
            }
        } else if (stride == 1 && gather_runs(col, w, &runs)) {
            /* Gathered at stride 1: each 8-column group of the panel is at most three runs
             * of consecutive floats (one per output row it meets), each a masked load
             * (lanes outside it read nothing and are zero). */
            for (Py_ssize_t k = 0; k < kc; k++, dst += GEMM_NR) {
                const float *s = xp + off[k];
                for (int g = 0; g < 3; g++) {
                    __m256 v = _mm256_setzero_ps();
                    for (int r = 0; r < runs.count[g]; r++)
                        v = _mm256_or_ps(v, _mm256_maskload_ps(s + runs.at[g][r],
                                                               runs.mask[g][r]));
                    _mm256_storeu_ps(dst + 8 * g, v);
                }
            }
        } else {
            for (Py_ssize_t k = 0; k < kc; k++, dst += GEMM_NR) {
                const float *s = xp + off[k];
                Py_ssize_t c = 0;
                for (; c < w; c++)
                    dst[c] = s[col[c]];
                for (; c < GEMM_NR; c++)
                    dst[c] = 0.0f;
            }
        }
    }
}

/* Per-thread scratch, grown as needed and kept: a fresh buffer a call would page-fault
 * its way in each time. */
static _Thread_local float *gemm_scratch = NULL;
static _Thread_local Py_ssize_t gemm_scratch_floats = 0;
static _Thread_local Py_ssize_t *gemm_offsets = NULL;
static _Thread_local Py_ssize_t gemm_offsets_count = 0;

struct conv_job {
    const float *xp, *packed, *bias, *res;
    float *out;
    Py_ssize_t channels, hp, wp, stride, kh, kw, dh, dw, oh, ow, row0, row1, ch0, ch1;
    Py_ssize_t wq; /* columns numbered per output row: Wp (padded) or OW (gathered) */
    int act;
    float alpha;
};

/* act((sums + bias) + residual) into the output for the sums of channels [m0, m1) at
 * padded columns [q, q + n) (row m at sums + (m - m0) * ldp), one run of an output row's
 * real columns at a time. */
NI_FMA static void conv_epilogue(const struct conv_job *j, const float *sums, Py_ssize_t ldp,
                                 Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t q, Py_ssize_t n)
{
    Py_ssize_t plane = j->oh * j->ow, wq = j->wq;
    for (Py_ssize_t c = 0; c < n;) {
        Py_ssize_t p = q + c, y = p / wq, x = p - y * wq;
        if (x >= j->ow) { /* a padded row's extra columns */
            c += wq - x;
            continue;
        }
        Py_ssize_t len = j->ow - x < n - c ? j->ow - x : n - c;
        for (Py_ssize_t m = m0; m < m1; m++) {
            Py_ssize_t at = m * plane + y * j->ow + x;
            conv_tail_row(sums + (m - m0) * ldp + c, j->out + at, len, j->bias != NULL,
                          j->bias ? j->bias[m] : 0.0f, j->res ? j->res + at : NULL, j->act,
                          j->alpha);
        }
        c += len;
    }
}

/* 0 when out of memory. */
NI_FMA static int conv_run(const struct conv_job *j)
{
    Py_ssize_t K = j->channels * j->kh * j->kw;
    if (K > gemm_offsets_count) {
        Py_ssize_t *grown = realloc(gemm_offsets, K * sizeof(Py_ssize_t));
        if (grown == NULL)
            return 0;
        gemm_offsets = grown;
        gemm_offsets_count = K;
    }
    Py_ssize_t *off = gemm_offsets, k = 0;
    for (Py_ssize_t c = 0; c < j->channels; c++)
        for (Py_ssize_t ky = 0; ky < j->kh; ky++)
            for (Py_ssize_t kx = 0; kx < j->kw; kx++)
                off[k++] = (c * j->hp + ky * j->dh) * j->wp + kx * j->dw;
    /* Channels by weight panel: [p0, p1) covers [ch0, ch1), its rows outside not kept. */
    Py_ssize_t p0 = j->ch0 / GEMM_MR, p1 = (j->ch1 + GEMM_MR - 1) / GEMM_MR;
    Py_ssize_t rows = (p1 - p0) * GEMM_MR, base = p0 * GEMM_MR;
    Py_ssize_t wq = j->wq, plane = j->oh * j->ow;
    /* Padded columns are output columns when rows gain none. */
    int straight = wq == j->ow;
    /* K in equal blocks of at most GEMM_KC (a short last block costs a pass over the
     * partial sums for little work). */
    Py_ssize_t blocks = (K + GEMM_KC - 1) / GEMM_KC, kb = (K + blocks - 1) / blocks;
    /* Columns in blocks that keep the partial sums in L2 (only the last panel's columns
     * use them when a single K block goes straight to the output). */
    Py_ssize_t nb = blocks > 1 || !straight ? GEMM_SUMS / rows / GEMM_NR * GEMM_NR : GEMM_NB;
    nb = nb < GEMM_NR ? GEMM_NR : (nb > GEMM_NB ? GEMM_NB : nb);
    /* the B panels kb x nb, then the partial sums rows x nb */
    Py_ssize_t need = kb * nb + rows * nb;
    if (need > gemm_scratch_floats) {
        free(gemm_scratch);
        /* aligned_alloc wants a multiple of the alignment */
        gemm_scratch = aligned_alloc(64, (need * sizeof(float) + 63) & ~(size_t)63);
        gemm_scratch_floats = gemm_scratch ? need : 0;
        if (gemm_scratch == NULL)
            return 0;
    }
    float *panels = gemm_scratch, *sums = gemm_scratch + kb * nb;
    Py_ssize_t q0 = j->row0 * wq, q1 = (j->row1 - 1) * wq + j->ow;
    /* Stride 2 loads pairs and keeps the even floats: the last pair's odd float
     * must be inside the image (the interpreter pads one spare row for it). */
    Py_ssize_t last_col = (j->row1 - 1) * j->stride * j->wp + (j->ow - 1) * j->stride;
    int pairs = last_col + 1 + off[K - 1] < j->channels * j->hp * j->wp;
    for (Py_ssize_t q = q0; q < q1; q += nb) {
        Py_ssize_t n = q1 - q < nb ? q1 - q : nb;
        for (Py_ssize_t k0 = 0; k0 < K; k0 += kb) {
            Py_ssize_t kc = K - k0 < kb ? K - k0 : kb;
            int first = k0 == 0, last = k0 + kc == K;
            gemm_pack(j->xp, off + k0, kc, j->stride, j->wp, j->ow, wq, pairs, q, n, panels);
            for (Py_ssize_t pb = p0; pb < p1; pb += GEMM_MB) {
                Py_ssize_t pe = pb + GEMM_MB < p1 ? pb + GEMM_MB : p1;
                for (Py_ssize_t c = 0; c < n; c += GEMM_NR) {
                    const float *panel = panels + c * kc;
                    for (Py_ssize_t p = pb; p < pe; p++) {
                        Py_ssize_t m = p * GEMM_MR;
                        const float *a = j->packed + (p * K + k0) * GEMM_MR;
                        float *partial = sums + (m - base) * nb + c;
                        int r0 = j->ch0 > m ? (int)(j->ch0 - m) : 0;
                        int r1 = j->ch1 - m < GEMM_MR ? (int)(j->ch1 - m) : GEMM_MR;
                        if (last && straight && n - c >= GEMM_NR) {
                            Py_ssize_t at = m * plane + q + c;
                            struct tile_dest d = {TILE_OUT, j->out + at,
                                                  j->res ? j->res + at : NULL, plane,
                                                  j->bias ? j->bias + m : NULL, j->act,
                                                  j->alpha};
                            gemm_tile(kc, a, panel, first, partial, nb, r0, r1, &d, 3);
                        } else {
                            struct tile_dest d = {TILE_SUMS, NULL, NULL, 0, NULL, 0, 0.0f};
                            Py_ssize_t cols = n - c;
                            if (cols > 16)
                                gemm_tile(kc, a, panel, first, partial, nb, r0, r1, &d, 3);
                            else if (cols > 8)
                                gemm_tile(kc, a, panel, first, partial, nb, r0, r1, &d, 2);
                            else
                                gemm_tile(kc, a, panel, first, partial, nb, r0, r1, &d, 1);
                        }
                    }
                }
            }
        }
        if (!straight) {
            conv_epilogue(j, sums + (j->ch0 - base) * nb, nb, j->ch0, j->ch1, q, n);
        } else if (n % GEMM_NR) { /* the last columns went through the sums */
            Py_ssize_t c = n - n % GEMM_NR;
            conv_epilogue(j, sums + (j->ch0 - base) * nb + c, nb, j->ch0, j->ch1, q + c,
                          n - c);
        }
    }
    return 1;
}

/* Whether stride-1 columns are numbered padded (consecutive floats, copied by vectors)
 * rather than gathered (each output row's run copied apart, no extra columns): padded
 * wherever its extra columns add under 1/16 of the tiles' columns.  With 3x3 windows
 * (one column of pads a side) that keeps 56x56 padded (4% more) and gathers 28x28 (7%),
 * 14x14 (12%) and 7x7 (14%). */
static int padded_columns(Py_ssize_t stride, Py_ssize_t wp, Py_ssize_t ow, Py_ssize_t oh)
{
    if (stride != 1)
        return 0;
    Py_ssize_t padded = (oh - 1) * wp + ow, gathered = oh * ow;
    /* the tiles compute whole panels of 24 and a last one of 8, 16 or 24 */
    padded = (padded + 7) / 8 * 8;
    gathered = (gathered + 7) / 8 * 8;
    return 16 * (padded - gathered) < gathered;
}

static int gemm_supported(void)
{
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known;
}
#else
#define NI_HAVE_GEMM 0
#endif

/* Padded rows [r0, r1) of every channel: xp[c, r, :] = x[c, r - top, : - left], zeros
 * outside x. */
struct pad_job {
    const char *x; /* (C, H, W), rows xs1 bytes apart, channels xs0 */
    float *xp;     /* (C, Hp, Wp), C-contiguous */
    Py_ssize_t channels, h, w, xs0, xs1, hp, wp, top, left, r0, r1;
};

static void pad_run(const struct pad_job *p)
{
    for (Py_ssize_t c = 0; c < p->channels; c++)
        for (Py_ssize_t r = p->r0; r < p->r1; r++) {
            float *dst = p->xp + (c * p->hp + r) * p->wp;
            Py_ssize_t y = r - p->top;
            if (y < 0 || y >= p->h) {
                memset(dst, 0, p->wp * sizeof(float));
                continue;
            }
            const char *src = p->x + c * p->xs0 + y * p->xs1;
            memset(dst, 0, p->left * sizeof(float));
            memcpy(dst + p->left, src, p->w * sizeof(float));
            memset(dst + p->left + p->w, 0, (p->wp - p->left - p->w) * sizeof(float));
        }
}

/* pad_f32's arguments as a job, holding the two buffers (released by the caller where
 * it returns 1); 0 with an exception set otherwise. */
static int pad_take(PyObject *args, struct pad_job *job, Py_buffer *views)
{
    PyObject *x_obj, *xp_obj;
    Py_ssize_t top, left, r0, r1;
    if (!PyArg_ParseTuple(args, "OO(nn)(nn):pad_f32", &x_obj, &xp_obj, &top, &left, &r0, &r1))
        return 0;
    Py_buffer *x = &views[0], *xp = &views[1];
    if (!get_floats(x_obj, x, 0))
        return 0;
    if (PyObject_GetBuffer(xp_obj, xp, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(x);
        return 0;
    }
    if (x->ndim != 3 || xp->ndim != 3 || xp->itemsize != 4 || strcmp(xp->format, "f") != 0 ||
        xp->shape[0] != x->shape[0] || top < 0 || left < 0 || top + x->shape[1] > xp->shape[1] ||
        left + x->shape[2] > xp->shape[2] || r0 < 0 || r1 > xp->shape[1] || r0 > r1) {
        PyBuffer_Release(x);
        PyBuffer_Release(xp);
        PyErr_SetString(PyExc_ValueError,
                        "pad_f32: x (C, H, W) must fit in xp (C, Hp, Wp) float32 at (top, left)");
        return 0;
    }
    struct pad_job j = {(const char *)x->buf, (float *)xp->buf, x->shape[0], x->shape[1],
                        x->shape[2], x->strides[0], x->strides[1], xp->shape[1], xp->shape[2],
                        top, left, r0, r1};
    *job = j;
    return 1;
}

static PyObject *py_pad_f32(PyObject *self, PyObject *args)
{
    (void)self;
    struct pad_job job;
    Py_buffer views[2];
    if (!pad_take(args, &job, views))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    pad_run(&job);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&views[0]);
    PyBuffer_Release(&views[1]);
    Py_RETURN_NONE;
}

static int get_c_floats(PyObject *obj, Py_buffer *view, int writable, int ndim)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return 0;
    if (view->itemsize != 4 || strcmp(view->format, "f") != 0 || view->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "expected a C-contiguous float32 array of %d axes",
                     ndim);
        PyBuffer_Release(view);
        return 0;
    }
    return 1;
}

#if NI_HAVE_GEMM
/* conv2d_f32's arguments as a job holding its buffers (views[k] held where objs[k] is
 * not None; released by conv_release); 0 with an exception set, and nothing held,
 * otherwise. */
static int conv_take(PyObject *args, struct conv_job *job, PyObject **objs, Py_buffer *views)
{
    Py_ssize_t kh, kw, dh, dw, stride, row0, row1, ch0, ch1;
    int act;
    float alpha;
    if (!PyArg_ParseTuple(args, "OOO(nn)(nn)n(nn)(nn)OOif:conv2d_f32", &objs[0], &objs[1],
                          &objs[2], &kh, &kw, &dh, &dw, &stride, &row0, &row1, &ch0, &ch1,
                          &objs[3], &objs[4], &act, &alpha))
        return 0;
    static const int axes[5] = {3, 3, 3, 1, 3};
    int held = 0;
    for (; held < 5; held++) {
        if (objs[held] == Py_None && held >= 3)
            continue;
        if (!get_c_floats(objs[held], &views[held], held == 2, axes[held]))
            break;
    }
    const char *error = NULL;
    Py_buffer *xp = &views[0], *packed = &views[1], *out = &views[2];
    int has_bias = objs[3] != Py_None, has_res = objs[4] != Py_None;
    if (held == 5) {
        Py_ssize_t m = out->shape[0], oh = out->shape[1], ow = out->shape[2];
        Py_ssize_t hp = xp->shape[1], wp = xp->shape[2];
        if (kh < 1 || kw < 1 || dh < 1 || dw < 1 || stride < 1 || act < TAIL_NONE ||
            act > TAIL_LEAKY)
            error = "conv2d_f32: bad kernel, dilation, stride or activation";
        else if (xp->shape[0] < 1 || m < 1)
            error = "conv2d_f32: no input or no output channels";
        else if (packed->shape[0] != (m + GEMM_MR - 1) / GEMM_MR ||
                 packed->shape[1] != xp->shape[0] * kh * kw || packed->shape[2] != GEMM_MR)
            error = "conv2d_f32: packed weights must be (ceil(M/4), C*kh*kw, 4)";
        else if (oh < 1 || ow < 1 ||
                 (oh - 1) * stride + (kh - 1) * dh >= hp ||
                 (ow - 1) * stride + (kw - 1) * dw >= wp || (kw - 1) * dw >= wp)
            error = "conv2d_f32: out (M, OH, OW) does not fit the padded image (C, Hp, Wp)";
        else if ((has_bias && views[3].shape[0] != m) ||
                 (has_res && !same_shape(&views[4], out)))
            error = "conv2d_f32: bias must be (M,) and the residual shaped like out";
        else if (row0 < 0 || row1 > oh || row0 >= row1 || ch0 < 0 || ch1 > m || ch0 >= ch1)
            error = "conv2d_f32: empty or out-of-range rows or channels";
        else if (has_res && views[4].buf == out->buf)
            error = "conv2d_f32: the residual cannot be the output";
        if (error == NULL) {
            struct conv_job j = {
                (const float *)xp->buf, (const float *)packed->buf,
                has_bias ? (const float *)views[3].buf : NULL,
                has_res ? (const float *)views[4].buf : NULL, (float *)out->buf,
                xp->shape[0], hp, wp, stride, kh, kw, dh, dw, oh, ow, row0, row1, ch0, ch1,
                padded_columns(stride, wp, ow, oh) ? wp : ow, act, alpha};
            *job = j;
            return 1;
        }
    }
    for (int k = 0; k < held; k++)
        if (objs[k] != Py_None || k < 3)
            PyBuffer_Release(&views[k]);
    if (error != NULL)
        PyErr_SetString(PyExc_ValueError, error);
    return 0;
}

static void conv_release(PyObject **objs, Py_buffer *views)
{
    for (int k = 0; k < 5; k++)
        if (objs[k] != Py_None || k < 3)
            PyBuffer_Release(&views[k]);
}
#endif

static PyObject *py_conv2d_f32(PyObject *self, PyObject *args)
{
    (void)self;
#if NI_HAVE_GEMM
    if (!gemm_supported())
        Py_RETURN_FALSE;
    PyObject *objs[5]; /* xp, packed, out, bias, residual */
    Py_buffer views[5];
    struct conv_job job;
    if (!conv_take(args, &job, objs, views))
        return NULL;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = conv_run(&job);
    Py_END_ALLOW_THREADS
    conv_release(objs, views);
    if (!ok)
        return PyErr_NoMemory();
    Py_RETURN_TRUE;
#else
    (void)args;
    Py_RETURN_FALSE;
#endif
}

/* 2-D max pooling of channels [c0, c1) of one float32 (C, H, W) image into (C, OH, OW):
 * the separable order of nn._window_reduce (each window's rows, then its columns, each
 * max taken as np.maximum's: a NaN operand is the result).  Taps in the padding are
 * skipped rather than read as -inf, which gives the same maxima; a window wholly in the
 * padding is -inf. */
struct maxpool_job {
    const float *x;
    float *y;
    Py_ssize_t h, w, oh, ow, kh, kw, sh, sw, dh, dw, top, left, c0, c1;
};

static inline float max_nan(float a, float b)
{
    return a != a ? a : (b != b ? b : (a >= b ? a : b));
}

/* 0 when out of memory. */
static int maxpool_run(const struct maxpool_job *p)
{
    float *rows = malloc((p->w > 0 ? p->w : 1) * sizeof(float));
    if (rows == NULL)
        return 0;
    for (Py_ssize_t c = p->c0; c < p->c1; c++)
        for (Py_ssize_t oy = 0; oy < p->oh; oy++) {
            int any_row = 0;
            for (Py_ssize_t ky = 0; ky < p->kh; ky++) {
                Py_ssize_t iy = oy * p->sh - p->top + ky * p->dh;
                if (iy < 0 || iy >= p->h)
                    continue;
                const float *src = p->x + (c * p->h + iy) * p->w;
                if (!any_row)
                    memcpy(rows, src, p->w * sizeof(float));
                else
                    for (Py_ssize_t i = 0; i < p->w; i++)
                        rows[i] = max_nan(rows[i], src[i]);
                any_row = 1;
            }
            float *dst = p->y + (c * p->oh + oy) * p->ow;
            for (Py_ssize_t ox = 0; ox < p->ow; ox++) {
                float v = -INFINITY;
                int any = 0;
                for (Py_ssize_t kx = 0; any_row && kx < p->kw; kx++) {
                    Py_ssize_t ix = ox * p->sw - p->left + kx * p->dw;
                    if (ix < 0 || ix >= p->w)
                        continue;
                    v = any ? max_nan(v, rows[ix]) : rows[ix];
                    any = 1;
                }
                dst[ox] = v;
            }
        }
    free(rows);
    return 1;
}

/* maxpool_f32's arguments (x, y, (kh, kw), (sh, sw), (dh, dw), (top, left), (c0, c1)) as
 * a job holding the two buffers; 0 with an exception set otherwise. */
static int maxpool_take(PyObject *args, struct maxpool_job *job, Py_buffer *views)
{
    PyObject *x_obj, *y_obj;
    Py_ssize_t kh, kw, sh, sw, dh, dw, top, left, c0, c1;
    if (!PyArg_ParseTuple(args, "OO(nn)(nn)(nn)(nn)(nn):maxpool_f32", &x_obj, &y_obj, &kh, &kw,
                          &sh, &sw, &dh, &dw, &top, &left, &c0, &c1))
        return 0;
    if (!get_c_floats(x_obj, &views[0], 0, 3))
        return 0;
    if (!get_c_floats(y_obj, &views[1], 1, 3)) {
        PyBuffer_Release(&views[0]);
        return 0;
    }
    Py_buffer *x = &views[0], *y = &views[1];
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || top < 0 || left < 0 ||
        y->shape[0] != x->shape[0] || c0 < 0 || c1 > x->shape[0] || c0 > c1 ||
        x->buf == y->buf) {
        PyBuffer_Release(&views[0]);
        PyBuffer_Release(&views[1]);
        PyErr_SetString(PyExc_ValueError,
                        "maxpool_f32: bad window, or y (C, OH, OW) not beside x (C, H, W)");
        return 0;
    }
    struct maxpool_job j = {(const float *)x->buf, (float *)y->buf, x->shape[1], x->shape[2],
                            y->shape[1], y->shape[2], kh, kw, sh, sw, dh, dw, top, left, c0, c1};
    *job = j;
    return 1;
}

/* ---------------------------------------------------------------------------------
 * Parts side by side.  run_parts takes one list of pad and convolution jobs a part and
 * runs part 0 on the calling thread, the others on a pool of worker threads, all with
 * the GIL released.  The interpreter used to hand each part to a Python thread pool:
 * submitting, the worker waking, and the caller waking when the worker was done cost
 * ~170 us a split here (42 us to submit, 40 to start, 84 to notice the end; 29 splits
 * in a ResNet-50 run), since a sleeping thread's virtual CPU halts and takes ~50-80 us
 * to run again, and a Python worker must also take the GIL.  So the workers here are
 * plain threads that never touch Python: after a part they spin for POOL_SPIN_NS
 * waiting for the next one (the gaps between a run's splits are 0.1-0.3 ms), then
 * sleep on a condition variable; the caller spins while it waits (a part is ~0.1-4 ms).
 * --------------------------------------------------------------------------------- */
#if NI_HAVE_GEMM
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#define POOL_MAX 7               /* worker threads: parallel.WORKERS is at most 8 */
#define POOL_SPIN_NS 500000      /* how long an idle worker spins before it sleeps */

enum { JOB_PAD, JOB_CONV, JOB_MAXPOOL };
struct job {
    int kind; /* which member holds it */
    union {
        struct pad_job pad;
        struct conv_job conv;
        struct maxpool_job maxpool;
    };
};
struct part {
    const struct job *jobs;
    Py_ssize_t count;
    int ok; /* 0: a convolution ran out of memory */
};

static struct slot {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_uint posted, done; /* tickets: a part is posted, and done */
    int sleeping;             /* under lock */
    int started;
    struct part *part;
} pool[POOL_MAX];
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* one caller's parts at once */

static void part_run(struct part *p)
{
    p->ok = 1;
    for (Py_ssize_t i = 0; i < p->count; i++) {
        const struct job *j = &p->jobs[i];
        if (j->kind == JOB_PAD)
            pad_run(&j->pad);
        else if (j->kind == JOB_MAXPOOL ? !maxpool_run(&j->maxpool) : !conv_run(&j->conv))
            p->ok = 0;
    }
}

static unsigned long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

static void *worker(void *arg)
{
    struct slot *me = arg;
    unsigned seen = atomic_load(&me->done);
    for (;;) {
        unsigned long long since = now_ns();
        unsigned ticket;
        for (int spins = 1;; spins++) {
            ticket = atomic_load_explicit(&me->posted, memory_order_acquire);
            if (ticket != seen)
                break;
            _mm_pause();
            if (spins % 64 != 0)
                continue;
            /* a thread waiting for this CPU (the caller itself, where both landed on
             * one) gets it at once */
            sched_yield();
            if (now_ns() - since > POOL_SPIN_NS) {
                pthread_mutex_lock(&me->lock);
                me->sleeping = 1;
                while ((ticket = atomic_load(&me->posted)) == seen)
                    pthread_cond_wait(&me->wake, &me->lock);
                me->sleeping = 0;
                pthread_mutex_unlock(&me->lock);
                break;
            }
        }
        seen = ticket;
        part_run(me->part);
        atomic_store_explicit(&me->done, ticket, memory_order_release);
    }
    return NULL;
}

/* A forked child has none of the parent's workers (and its locks may have been held by
 * one): it starts again from an empty pool. */
static void pool_after_fork(void)
{
    pthread_mutex_init(&pool_busy, NULL); /* held, maybe, by a thread the child lacks */
    for (int i = 0; i < POOL_MAX; i++) {
        pthread_mutex_init(&pool[i].lock, NULL);
        pthread_cond_init(&pool[i].wake, NULL);
        atomic_store(&pool[i].posted, 0);
        atomic_store(&pool[i].done, 0);
        pool[i].sleeping = pool[i].started = 0;
    }
}

static void pool_init(void)
{
    pool_after_fork();
    pthread_atfork(NULL, NULL, pool_after_fork);
}

/* Worker i, started if need be (signals blocked: Python handles them in its own
 * threads); 0 where the thread could not be made. */
static int pool_start(int i)
{
    if (pool[i].started)
        return 1;
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    pthread_t thread;
    int made = pthread_create(&thread, NULL, worker, &pool[i]) == 0;
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (!made)
        return 0;
    pthread_detach(thread);
    pool[i].started = 1;
    return 1;
}

/* Parts 1.. on the workers, part 0 here, back when all are done.  Called with the GIL
 * released, from one thread at a time (run_parts holds pool_busy). */
static void parts_run(struct part *parts, int count)
{
    int posted = 0;
    unsigned tickets[POOL_MAX];
    for (int i = 0; i + 1 < count; i++) {
        struct slot *s = &pool[posted];
        if (!pool_start(posted)) { /* no thread: the part runs here */
            part_run(&parts[i + 1]);
            continue;
        }
        s->part = &parts[i + 1];
        tickets[posted] = atomic_load(&s->posted) + 1;
        atomic_store_explicit(&s->posted, tickets[posted], memory_order_release);
        pthread_mutex_lock(&s->lock);
        if (s->sleeping)
            pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->lock);
        posted++;
    }
    part_run(&parts[0]);
    for (int i = 0; i < posted; i++)
        for (int spins = 1;
             atomic_load_explicit(&pool[i].done, memory_order_acquire) != tickets[i]; spins++) {
            _mm_pause();
            if (spins % 64 == 0) /* a worker waiting for our CPU gets it */
                sched_yield();
        }
}

#endif

/* run_parts([[(kind, args), ...], ...]): each part's jobs in order (kind 0: pad_f32's
 * arguments, 1: conv2d_f32's, 2: a max pool's, see maxpool_take), the parts side by
 * side. */
static PyObject *py_run_parts(PyObject *self, PyObject *arg)
{
    (void)self;
#if NI_HAVE_GEMM
    if (!gemm_supported())
        Py_RETURN_FALSE;
    PyObject *parts_seq = PySequence_Fast(arg, "run_parts: expected a list of parts");
    if (parts_seq == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(parts_seq), jobs_total = 0;
    if (count < 1 || count > POOL_MAX + 1) {
        Py_DECREF(parts_seq);
        PyErr_SetString(PyExc_ValueError, "run_parts: 1 to 8 parts");
        return NULL;
    }
    PyObject *lists[POOL_MAX + 1];
    for (Py_ssize_t i = 0; i < count; i++) {
        lists[i] = PySequence_Fast(PySequence_Fast_GET_ITEM(parts_seq, i),
                                   "run_parts: a part is a list of jobs");
        if (lists[i] == NULL) {
            while (i-- > 0)
                Py_DECREF(lists[i]);
            Py_DECREF(parts_seq);
            return NULL;
        }
        jobs_total += PySequence_Fast_GET_SIZE(lists[i]);
    }
    struct job *jobs = PyMem_Calloc(jobs_total ? jobs_total : 1, sizeof(struct job));
    /* each job's buffers: up to five (a convolution's), and their objects */
    Py_buffer *views = PyMem_Calloc(5 * (jobs_total ? jobs_total : 1), sizeof(Py_buffer));
    PyObject **objs = PyMem_Calloc(5 * (jobs_total ? jobs_total : 1), sizeof(PyObject *));
    struct part parts[POOL_MAX + 1];
    Py_ssize_t taken = 0;
    int failed = jobs == NULL || views == NULL || objs == NULL;
    if (failed)
        PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        parts[i].jobs = jobs + taken;
        parts[i].count = PySequence_Fast_GET_SIZE(lists[i]);
        for (Py_ssize_t k = 0; k < parts[i].count && !failed; k++) {
            PyObject *item = PySequence_Fast_GET_ITEM(lists[i], k);
            int kind;
            if (!PyTuple_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "run_parts: a job is (kind, arguments)");
                failed = 1;
                break;
            }
            PyObject *job_args;
            if (!PyArg_ParseTuple(item, "iO!:run_parts job", &kind, &PyTuple_Type, &job_args)) {
                failed = 1;
                break;
            }
            struct job *j = &jobs[taken];
            j->kind = kind;
            if (kind == JOB_PAD)
                failed = !pad_take(job_args, &j->pad, views + 5 * taken);
            else if (kind == JOB_CONV)
                failed = !conv_take(job_args, &j->conv, objs + 5 * taken, views + 5 * taken);
            else if (kind == JOB_MAXPOOL)
                failed = !maxpool_take(job_args, &j->maxpool, views + 5 * taken);
            else {
                PyErr_SetString(PyExc_ValueError, "run_parts: a job's kind is 0, 1 or 2");
                failed = 1;
            }
            if (!failed)
                taken++;
        }
    }
    int ok = 1;
    if (!failed) {
        Py_BEGIN_ALLOW_THREADS
        if (count == 1) { /* no worker: callers on several threads run side by side */
            part_run(&parts[0]);
        } else {
            pthread_once(&pool_once, pool_init);
            pthread_mutex_lock(&pool_busy); /* one caller's parts at a time */
            parts_run(parts, (int)count);
            pthread_mutex_unlock(&pool_busy);
        }
        Py_END_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < count; i++)
            ok = ok && parts[i].ok;
    }
    for (Py_ssize_t t = 0; t < taken; t++) {
        if (jobs[t].kind != JOB_CONV) {
            PyBuffer_Release(&views[5 * t]);
            PyBuffer_Release(&views[5 * t + 1]);
        } else {
            conv_release(objs + 5 * t, views + 5 * t);
        }
    }
    PyMem_Free(jobs);
    PyMem_Free(views);
    PyMem_Free(objs);
    for (Py_ssize_t i = 0; i < count; i++)
        Py_DECREF(lists[i]);
    Py_DECREF(parts_seq);
    if (failed)
        return NULL;
    if (!ok)
        return PyErr_NoMemory();
    Py_RETURN_TRUE;
#else
    (void)arg;
    Py_RETURN_FALSE;
#endif
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
    {"pad_f32", py_pad_f32, METH_VARARGS,
     "pad_f32(x, xp, (top, left), (r0, r1)): rows [r0, r1) of xp (C, Hp, Wp) from the"
     " (C, H, W) image x placed at (top, left), zeros around it."},
    {"conv2d_f32", py_conv2d_f32, METH_VARARGS,
     "conv2d_f32(xp, packed, out, (kh, kw), (dh, dw), stride, (row0, row1), (ch0, ch1),"
     " bias, residual, act, alpha): output rows [row0, row1) and channels [ch0, ch1) of"
     " the convolution of the padded image xp (C, Hp, Wp) by"
     " the packed weights (ceil(M/4), C*kh*kw, 4) into out (M, OH, OW), then"
     " act((v + bias) + residual); False, with nothing written, where the CPU has no AVX2"
     " and FMA."},
    {"run_parts", py_run_parts, METH_O,
     "run_parts(parts): each part a list of jobs (0, pad_f32's arguments), (1,"
     " conv2d_f32's arguments) or (2, (x, y, (kh, kw), (sh, sw), (dh, dw), (top, left),"
     " (c0, c1))) (the max pool of channels [c0, c1) of x (C, H, W) into y), run in order; the parts side by side on worker threads"
     " (part 0 on the caller's); False, with nothing run, where the CPU has no AVX2 and"
     " FMA."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native", "Compiled float32 elementwise kernels.", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module);
#if NI_HAVE_GEMM
    int gemm = gemm_supported();
#else
    int gemm = 0;
#endif
    /* 1 where conv2d_f32 computes (x86-64 with AVX2 and FMA), 0 where it declines. */
    if (m != NULL && PyModule_AddIntConstant(m, "HAVE_CONV2D", gemm) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
