# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CPU backend: Cython + OpenMP kernels of table-lookup GEMM and convolution.

Implements the kernel contract of :mod:`axkern.backends`. Work is split over OpenMP threads
(``num_threads``, default: OpenMP's, which honours ``OMP_NUM_THREADS``) with the GIL released.

Both kernels work on tiles of P output pixels (GEMM rows). For each pixel the kernel finds
the input pixel under every tap (or a thread-local row filled with ``pad_code`` when the tap
falls into the padding, so padded positions are looked up like any other) and copies the
receptive field into a thread-local, transposed im2col tile ``cols[k][p]`` (never the whole
batch). :func:`_tile8` then computes blocks of eight output channels: for each reduction index
``k`` the eight weight codes are fixed, so the sweep over the P pixels reads only eight
columns of the table. A transposed copy of the table makes each column contiguous (1 KB), so
they stay in L1, where rows ``T[a]`` picked by random activations would miss. Channels that
do not fill a block of eight (per group: depthwise convolutions, small layers) go through
:func:`_pixel`, which keeps up to eight accumulators in registers per output pixel.

Grouped and depthwise convolutions run the same loops with ``C // groups`` input and
``COUT // groups`` output channels per group; 1x1 and full-size filters take this path too.
Accumulators are int64, or int32 when the caller asks for int32 output, which the Python
checks allow only when no sum can overflow.
"""
import numpy as np

from cython.parallel cimport parallel, prange
cimport openmp
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from axkern.backends import check_conv_args, check_gemm_args

__all__ = ["gemm", "conv2d", "max_threads"]


def max_threads():
    """The number of threads a call with ``num_threads=None`` uses (OpenMP's default)."""
    return openmp.omp_get_max_threads()


cdef int _nthreads(object num_threads):
    if num_threads is None:
        return openmp.omp_get_max_threads()
    return <int> num_threads


ctypedef fused acc_t:
    int32_t
    int64_t


cdef inline uint64_t _load8(const uint8_t* p) noexcept nogil:
    # Eight weight indices in one (unaligned) load; bytes are peeled off with shifts, which
    # leaves the load ports to the table lookups.
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline void _dot8(const uint8_t** srcs, Py_ssize_t ntaps, Py_ssize_t coff,
                       const uint8_t* w, Py_ssize_t Cg, Py_ssize_t COUT, const int32_t* t,
                       acc_t* res) noexcept nogil:
    # Eight adjacent output channels at once: the accumulators stay in registers and each
    # table row pointer T[a] is reused for eight lookups. acc_t is int32 only when the caller
    # guarantees that no sum can overflow it.
    cdef acc_t r0 = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0, r5 = 0, r6 = 0, r7 = 0
    cdef Py_ssize_t tap, c
    cdef const uint8_t* s
    cdef const uint8_t* wk
    cdef const int32_t* row
    cdef uint64_t v
    for tap in range(ntaps):
        s = srcs[tap] + coff
        wk = w + tap * Cg * COUT
        for c in range(Cg):
            row = t + (<Py_ssize_t> s[c]) * 256
            v = _load8(wk)
            r0 += row[v & 0xFF]
            r1 += row[(v >> 8) & 0xFF]
            r2 += row[(v >> 16) & 0xFF]
            r3 += row[(v >> 24) & 0xFF]
            r4 += row[(v >> 32) & 0xFF]
            r5 += row[(v >> 40) & 0xFF]
            r6 += row[(v >> 48) & 0xFF]
            r7 += row[v >> 56]
            wk += COUT
    res[0] = r0
    res[1] = r1
    res[2] = r2
    res[3] = r3
    res[4] = r4
    res[5] = r5
    res[6] = r6
    res[7] = r7


cdef inline void _dot4(const uint8_t** srcs, Py_ssize_t ntaps, Py_ssize_t coff,
                       const uint8_t* w, Py_ssize_t Cg, Py_ssize_t COUT, const int32_t* t,
                       acc_t* res) noexcept nogil:
    cdef acc_t r0 = 0, r1 = 0, r2 = 0, r3 = 0
    cdef Py_ssize_t tap, c
    cdef const uint8_t* s
    cdef const uint8_t* wk
    cdef const int32_t* row
    for tap in range(ntaps):
        s = srcs[tap] + coff
        wk = w + tap * Cg * COUT
        for c in range(Cg):
            row = t + (<Py_ssize_t> s[c]) * 256
            r0 += row[wk[0]]
            r1 += row[wk[1]]
            r2 += row[wk[2]]
            r3 += row[wk[3]]
            wk += COUT
    res[0] = r0
    res[1] = r1
    res[2] = r2
    res[3] = r3


cdef inline void _dot1(const uint8_t** srcs, Py_ssize_t ntaps, Py_ssize_t coff,
                       const uint8_t* w, Py_ssize_t Cg, Py_ssize_t COUT,
                       const int32_t* t, acc_t* res) noexcept nogil:
    cdef acc_t r0 = 0
    cdef Py_ssize_t tap, c
    cdef const uint8_t* s
    cdef const uint8_t* wk
    for tap in range(ntaps):
        s = srcs[tap] + coff
        wk = w + tap * Cg * COUT
        for c in range(Cg):
            r0 += t[(<Py_ssize_t> s[c]) * 256 + wk[0]]
            wk += COUT
    res[0] = r0


cdef inline void _pixel(const uint8_t** srcs, Py_ssize_t ntaps, const uint8_t* w,
                        Py_ssize_t Cg, Py_ssize_t COUT, Py_ssize_t groups, const int32_t* t,
                        acc_t* out, Py_ssize_t first=0) noexcept nogil:
    # All COUT outputs of one output pixel (or one GEMM row), written to out[0 .. COUT-1]:
    # srcs[tap] points at the activation indices seen by each tap; group g reads its Cg
    # channels from offset g * Cg and writes its COUT // groups outputs.
    cdef Py_ssize_t Og = COUT // groups
    cdef Py_ssize_t g, o, end
    for g in range(groups):
        o = g * Og + first  # channels below `first` of each group were done by _tile8
        end = g * Og + Og
        while o + 8 <= end:
            _dot8(srcs, ntaps, g * Cg, w + o, Cg, COUT, t, out + o)
            o = o + 8
        if o + 4 <= end:
            _dot4(srcs, ntaps, g * Cg, w + o, Cg, COUT, t, out + o)
            o = o + 4
        while o < end:
            _dot1(srcs, ntaps, g * Cg, w + o, Cg, COUT, t, out + o)
            o = o + 1


cdef inline void _tile8(const uint8_t* cols, Py_ssize_t P, Py_ssize_t ntaps, Py_ssize_t C,
                        Py_ssize_t Cg, Py_ssize_t COUT, Py_ssize_t groups, const uint8_t* w,
                        const int32_t* tt, acc_t* acc, acc_t* out) noexcept nogil:
    # P output pixels (or GEMM rows) x blocks of 8 output channels. cols[k * P + p] is the
    # activation index of pixel p at reduction index k = tap * C + channel (an im2col tile,
    # transposed). For one k the 8 weight codes are fixed, so only 8 columns of the table
    # are read while sweeping the P pixels: with the transposed table tt (tt[b * 256 + a] =
    # T[a, b]) that is 8 KB, which stays in L1 instead of missing on random rows of T.
    cdef Py_ssize_t Og = COUT // groups
    cdef Py_ssize_t g, ob, o, tap, c, p, j
    cdef const uint8_t* colrow
    cdef const uint8_t* wk
    cdef const int32_t* c0
    cdef const int32_t* c1
    cdef const int32_t* c2
    cdef const int32_t* c3
    cdef const int32_t* c4
    cdef const int32_t* c5
    cdef const int32_t* c6
    cdef const int32_t* c7
    cdef acc_t* ap
    cdef Py_ssize_t a
    for g in range(groups):
        for ob in range(Og // 8):
            o = g * Og + ob * 8
            memset(acc, 0, P * 8 * sizeof(acc_t))
            for tap in range(ntaps):
                for c in range(Cg):
                    colrow = cols + (tap * C + g * Cg + c) * P
                    wk = w + (tap * Cg + c) * COUT + o
                    c0 = tt + (<Py_ssize_t> wk[0]) * 256
                    c1 = tt + (<Py_ssize_t> wk[1]) * 256
                    c2 = tt + (<Py_ssize_t> wk[2]) * 256
                    c3 = tt + (<Py_ssize_t> wk[3]) * 256
                    c4 = tt + (<Py_ssize_t> wk[4]) * 256
                    c5 = tt + (<Py_ssize_t> wk[5]) * 256
                    c6 = tt + (<Py_ssize_t> wk[6]) * 256
                    c7 = tt + (<Py_ssize_t> wk[7]) * 256
                    ap = acc
                    for p in range(P):
                        a = colrow[p]
                        ap[0] += c0[a]
                        ap[1] += c1[a]
                        ap[2] += c2[a]
                        ap[3] += c3[a]
                        ap[4] += c4[a]
                        ap[5] += c5[a]
                        ap[6] += c6[a]
                        ap[7] += c7[a]
                        ap += 8
            for p in range(P):
                for j in range(8):
                    out[p * COUT + o + j] = acc[p * 8 + j]


cdef void _gemm(const uint8_t* a, const uint8_t* b, const int32_t* t, const int32_t* tt,
                Py_ssize_t M, Py_ssize_t K, Py_ssize_t N,
                int64_t* o64, int32_t* o32, int nt, int* fail) noexcept nogil:
    # A GEMM row is a one-tap, one-group convolution pixel: same tiles as _conv.
    cdef Py_ssize_t P = _tile_size(M, nt)
    cdef Py_ssize_t ntiles = (M + P - 1) // P
    cdef Py_ssize_t first = (N // 8) * 8
    cdef Py_ssize_t tile, m0, pn, p, k
    cdef const uint8_t** src
    cdef uint8_t* cols
    cdef int64_t* acc
    src = NULL
    cols = NULL
    acc = NULL
    with parallel(num_threads=nt):
        src = <const uint8_t**> malloc(sizeof(uint8_t*))
        cols = <uint8_t*> malloc(K * P + 1)
        acc = <int64_t*> malloc(P * 8 * sizeof(int64_t))
        if src == NULL or cols == NULL or acc == NULL:
            fail[0] = 1
        for tile in prange(ntiles, schedule="static"):
            if src != NULL and cols != NULL and acc != NULL:
                m0 = tile * P
                pn = P if m0 + P <= M else M - m0
                for p in range(pn):
                    src[0] = a + (m0 + p) * K
                    if first > 0:
                        for k in range(K):
                            cols[k * pn + p] = src[0][k]
                    if first < N:
                        if o64 != NULL:
                            _pixel(src, 1, b, K, N, 1, t, o64 + (m0 + p) * N, first)
                        else:
                            _pixel(src, 1, b, K, N, 1, t, o32 + (m0 + p) * N, first)
                if first > 0:
                    if o64 != NULL:
                        _tile8(cols, pn, 1, K, K, N, 1, b, tt, acc, o64 + m0 * N)
                    else:
                        _tile8(cols, pn, 1, K, K, N, 1, b, tt, <int32_t*> acc, o32 + m0 * N)
        free(src)
        free(cols)
        free(acc)


def gemm(a, b, table, out_dtype=np.int64, num_threads=None):
    """``out[m, n] = sum_k table[a[m, k], b[k, n]]`` (see :mod:`axkern.backends`).

    Parameters
    ----------
    a : ndarray of uint8, shape (M, K)
    b : ndarray of uint8, shape (K, N)
    table : ndarray of int32, shape (256, 256)
    out_dtype : {numpy.int32, numpy.int64}
    num_threads : int, optional

    Returns
    -------
    ndarray of out_dtype, shape (M, N)
    """
    a, b, table, out_dtype, num_threads = check_gemm_args(a, b, table, out_dtype, num_threads)
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], N = b.shape[1]
    out = np.zeros((M, N), out_dtype)
    if M == 0 or N == 0 or K == 0:
        return out
    cdef const uint8_t[:, ::1] av = a
    cdef const uint8_t[:, ::1] bv = b
    cdef const int32_t[:, ::1] tv = table
    tt_arr = np.ascontiguousarray(table.T)  # column-major copy for _tile8
    cdef const int32_t[:, ::1] ttv = tt_arr
    cdef int64_t[:, ::1] o64v
    cdef int32_t[:, ::1] o32v
    cdef int64_t* o64 = NULL
    cdef int32_t* o32 = NULL
    if out_dtype == np.int64:
        o64v = out
        o64 = &o64v[0, 0]
    else:
        o32v = out
        o32 = &o32v[0, 0]
    cdef int nt = _nthreads(num_threads)
    cdef int fail = 0
    with nogil:
        _gemm(&av[0, 0], &bv[0, 0], &tv[0, 0], &ttv[0, 0], M, K, N, o64, o32, nt, &fail)
    if fail:
        raise MemoryError("axkern._cpu.gemm: could not allocate a thread-local buffer")
    return out


cdef Py_ssize_t _tile_size(Py_ssize_t M, int nt) noexcept nogil:
    # 64 pixels per tile keeps the transposed im2col tile and the accumulators in L1/L2;
    # smaller tiles when there would be too few of them to keep every thread busy.
    cdef Py_ssize_t P = 64
    while P > 8 and (M + P - 1) // P < 4 * nt:
        P = P // 2
    return P


cdef void _conv(const uint8_t* x, const uint8_t* w, const int32_t* t, const int32_t* tt,
                Py_ssize_t NB, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t Cg, Py_ssize_t COUT,
                Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t sh, Py_ssize_t sw,
                Py_ssize_t top, Py_ssize_t left, Py_ssize_t dh, Py_ssize_t dw,
                Py_ssize_t groups, uint8_t pad_code,
                int64_t* o64, int32_t* o32, int nt, int* fail) noexcept nogil:
    cdef Py_ssize_t M = NB * OH * OW
    cdef Py_ssize_t P = _tile_size(M, nt)
    cdef Py_ssize_t ntiles = (M + P - 1) // P
    cdef Py_ssize_t ntaps = KH * KW
    cdef Py_ssize_t first = ((COUT // groups) // 8) * 8  # channels per group done by _tile8
    cdef Py_ssize_t tile, m0, pn, p, m, r, nb, oy, ox, ky, kx, iy, ix, tap, c
    cdef const uint8_t** srcs
    cdef const uint8_t* src
    cdef uint8_t* padrow
    cdef uint8_t* cols
    cdef int64_t* acc
    srcs = NULL
    padrow = NULL
    cols = NULL
    acc = NULL
    with parallel(num_threads=nt):
        # Thread-local: tap pointers of the current pixel, a row of pad_code indices, the
        # transposed im2col tile and the accumulators of _tile8.
        srcs = <const uint8_t**> malloc(ntaps * sizeof(uint8_t*))
        padrow = <uint8_t*> malloc(C)
        cols = <uint8_t*> malloc(ntaps * C * P + 1)
        acc = <int64_t*> malloc(P * 8 * sizeof(int64_t))
        if srcs == NULL or padrow == NULL or cols == NULL or acc == NULL:
            fail[0] = 1
        else:
            memset(padrow, pad_code, C)
        for tile in prange(ntiles, schedule="static"):
            if srcs != NULL and padrow != NULL and cols != NULL and acc != NULL:
                m0 = tile * P
                pn = P if m0 + P <= M else M - m0
                for p in range(pn):
                    m = m0 + p
                    nb = m // (OH * OW)
                    r = m % (OH * OW)
                    oy = r // OW
                    ox = r % OW
                    for ky in range(KH):
                        iy = oy * sh - top + ky * dh
                        for kx in range(KW):
                            ix = ox * sw - left + kx * dw
                            if iy >= 0 and iy < H and ix >= 0 and ix < W:
                                srcs[ky * KW + kx] = x + ((nb * H + iy) * W + ix) * C
                            else:
                                srcs[ky * KW + kx] = padrow
                    if first > 0:
                        for tap in range(ntaps):
                            src = srcs[tap]
                            for c in range(C):
                                cols[(tap * C + c) * pn + p] = src[c]
                    if first < COUT // groups:
                        if o64 != NULL:
                            _pixel(srcs, ntaps, w, Cg, COUT, groups, t, o64 + m * COUT, first)
                        else:
                            _pixel(srcs, ntaps, w, Cg, COUT, groups, t, o32 + m * COUT, first)
                if first > 0:
                    if o64 != NULL:
                        _tile8(cols, pn, ntaps, C, Cg, COUT, groups, w, tt, acc, o64 + m0 * COUT)
                    else:
                        _tile8(cols, pn, ntaps, C, Cg, COUT, groups, w, tt, <int32_t*> acc,
                               o32 + m0 * COUT)
        free(srcs)
        free(padrow)
        free(cols)
        free(acc)


def conv2d(x, w, table, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1,
           pad_code=0, out_dtype=np.int64, num_threads=None):
    """Grouped 2-D convolution of table lookups (see :mod:`axkern.backends`).

    Parameters
    ----------
    x : ndarray of uint8, shape (N, H, W, C)
    w : ndarray of uint8, shape (KH, KW, C // groups, COUT)
    table : ndarray of int32, shape (256, 256)
    stride, dilation : (int, int)
    padding : (top, bottom, left, right)
    groups : int
    pad_code : int
        Table index of padded input positions.
    out_dtype : {numpy.int32, numpy.int64}
    num_threads : int, optional

    Returns
    -------
    ndarray of out_dtype, shape (N, OH, OW, COUT)
    """
    (x, w, table, stride, padding, dilation, groups, pad_code, out_dtype, num_threads,
     (OH, OW)) = check_conv_args(x, w, table, stride, padding, dilation, groups, pad_code,
                                 out_dtype, num_threads)
    cdef Py_ssize_t NB = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t KH = w.shape[0], KW = w.shape[1], Cg = w.shape[2], COUT = w.shape[3]
    out = np.zeros((NB, OH, OW, COUT), out_dtype)
    if out.size == 0:
        return out
    if C == 0:  # no channels: every sum is empty
        return out
    cdef const uint8_t[:, :, :, ::1] xv = x
    cdef const uint8_t[:, :, :, ::1] wv = w
    cdef const int32_t[:, ::1] tv = table
    tt_arr = np.ascontiguousarray(table.T)  # column-major copy for _tile8
    cdef const int32_t[:, ::1] ttv = tt_arr
    cdef int64_t[:, :, :, ::1] o64v
    cdef int32_t[:, :, :, ::1] o32v
    cdef int64_t* o64 = NULL
    cdef int32_t* o32 = NULL
    if out_dtype == np.int64:
        o64v = out
        o64 = &o64v[0, 0, 0, 0]
    else:
        o32v = out
        o32 = &o32v[0, 0, 0, 0]
    cdef int nt = _nthreads(num_threads)
    cdef int fail = 0
    cdef Py_ssize_t sh = stride[0], sw = stride[1], dh = dilation[0], dw = dilation[1]
    cdef Py_ssize_t top = padding[0], left = padding[2], G = groups
    cdef uint8_t pc = pad_code
    cdef Py_ssize_t oh = OH, ow = OW
    with nogil:
        _conv(&xv[0, 0, 0, 0], &wv[0, 0, 0, 0], &tv[0, 0], &ttv[0, 0], NB, H, W, C, KH, KW, Cg, COUT,
              oh, ow, sh, sw, top, left, dh, dw, G, pc, o64, o32, nt, &fail)
    if fail:
        raise MemoryError("axkern._cpu.conv2d: could not allocate thread-local buffers")
    return out
