"""CPU kernels of ``score_cross_entropy``: softmax cross-entropy over the whole catalogue.

The (m, n_items) logits are never stored.  Items are cut into fixed blocks
(``config.score_block_items``, scaled to the row count); each block's logits
come from one BLAS call into a reused scratch tile, then

* forward: a parallel pass over rows reduces the tile to a per-row
  (max, Σ exp) pair, merged in block order into the log-sum-exp;
* backward: a parallel pass turns the tile into ``g_r (softmax - onehot)``
  in place and it feeds the two gradient products at once: the block's rows
  of ``grad_items`` are written whole, ``grad_Q`` adds one product per
  block in block order.

With ``keep`` the forward forms the whole (m, n_items) product in one BLAS
call and returns it (``Q @ items.T``, bias not added) for the backward to
turn into its gradient tile in place: one product fewer, at the cost of an
(m, n_items) store (the torch wrapper asks for it below
``config.score_keep_bytes``).

The BLAS calls are made from Python, not inside Numba's threads: once torch
is imported Numba runs on OpenMP, and OpenBLAS called from an OpenMP region
falls back to one thread with a warning per call.  float32 uses a
vectorisable ``exp`` (Cody-Waite range reduction and a degree-6 polynomial,
the classic single-precision scheme, within 2 ulp), since Numba's
``math.exp`` is a scalar libm call per element here (no SVML); float64
uses ``math.exp`` (gradient checks).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange, types
from numba.extending import overload

_F = np.float32
_LOG2E = _F(1.4426950408889634)
_LN2_HI = _F(0.693359375)          # ln 2 split so that n * _LN2_HI is exact
_LN2_LO = _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_LO = _F(-87.0)                    # exp(-87) ~ 1.6e-38: the smallest normal scale
_HALF, _ONE = _F(0.5), _F(1.0)


@numba.njit(cache=True, inline="always")
def _exp_poly(x):
    """``exp(x)`` of a float32 as two factors: the polynomial of the reduced argument
    and the power of two as float32 bits.  No fastmath: the Cody-Waite reduction
    needs its order of operations.

    Arguments below -87 give exp(-87) (1.6e-38) instead of a smaller value:
    every caller has subtracted the row maximum, so such terms are below
    float32's resolution of the row's sum anyway.
    """
    x = max(x, _LO)
    fx = np.floor(x * _LOG2E + _HALF)
    r = x - fx * _LN2_HI - fx * _LN2_LO
    z = r * r
    y = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * z + r + _ONE
    return y, (np.int32(fx) + np.int32(127)) << 23


@numba.njit(cache=True, inline="always")
def exp_f32(v, scale):
    """``v[:] = exp(v)`` for a float32 row, vectorised; ``scale`` is float32 scratch of ``len(v)``."""
    bits = scale.view(np.int32)
    for c in range(v.shape[0]):
        v[c], bits[c] = _exp_poly(v[c])
    for c in range(v.shape[0]):
        v[c] *= scale[c]


@numba.njit(cache=True, inline="always")
def exp_f64(v, scale):
    for c in range(v.shape[0]):
        v[c] = math.exp(v[c])


@numba.njit(cache=True, inline="always")
def sumexp_f32(src, off, v, scale):
    """``Σ exp(src - off)`` without storing the exponentials (``v``, ``scale``: float32
    scratch, neither of them ``src``: an overlap keeps the loop from vectorising)."""
    bits = scale.view(np.int32)
    for c in range(src.shape[0]):
        v[c], bits[c] = _exp_poly(src[c] - off)
    return _dot(v, scale)


@numba.njit(cache=True, inline="always")
def sumexp_f64(src, off, v, scale):
    s = 0.0
    for c in range(src.shape[0]):
        s += math.exp(src[c] - off)
    return s


# The kernels pick the float32 or float64 helpers through these overloads,
# resolved when a kernel is typed.  Passing the helper in as an argument
# instead made every process miss Numba's cache (a dispatcher argument is
# never the same cache key twice), recompile, and append to the cache index
# until loading it failed.
def exp_row(v, scale):
    """``v[:] = exp(v)`` (float32: :func:`exp_f32`; float64: ``math.exp``)."""
    raise NotImplementedError("only callable from Numba-compiled code")


def sumexp(src, off, v, scale):
    """``Σ exp(src - off)`` (float32: :func:`sumexp_f32`; float64: ``math.exp``)."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(exp_row, inline="never")
def _exp_row_impl(v, scale):
    if v.dtype == types.float32:
        return lambda v, scale: exp_f32(v, scale)
    return lambda v, scale: exp_f64(v, scale)


@overload(sumexp, inline="never")
def _sumexp_impl(src, off, v, scale):
    if src.dtype == types.float32:
        return lambda src, off, v, scale: sumexp_f32(src, off, v, scale)
    return lambda src, off, v, scale: sumexp_f64(src, off, v, scale)


# Reassociation lets LLVM keep vector partial sums; the order is fixed at
# compile time, so the result is the same on every run and thread count.
@numba.njit(cache=True, fastmath={"reassoc", "nsz", "nnan", "ninf", "contract"})
def _dot(a, b):
    s = 0.0
    for c in range(a.shape[0]):
        s += a[c] * b[c]
    return s


_LANES = 16


# A plain running max(m, v[c]) is a loop-carried dependence LLVM leaves
# scalar; sixteen independent lanes with a select vectorise (2x here).
@numba.njit(cache=True, fastmath={"nsz", "nnan", "ninf"})
def _row_max(v):
    n = v.shape[0]
    if n < _LANES:
        m = v[0]
        for c in range(1, n):
            m = v[c] if v[c] > m else m
        return m
    acc = v[:_LANES].copy()
    full = n - n % _LANES
    for c0 in range(_LANES, full, _LANES):
        for j in range(_LANES):
            a = v[c0 + j]
            acc[j] = a if a > acc[j] else acc[j]
    m = acc[0]
    for j in range(1, _LANES):
        m = acc[j] if acc[j] > m else m
    for c in range(full, n):
        m = v[c] if v[c] > m else m
    return m


@numba.njit(cache=True, parallel=True)
def block_max_sumexp(L, bias, has_bias, s, bmax, bsum):
    """Rows of the logit block ``L`` (items ``s:s+L.shape[1]``): ``bmax[r]`` = max, ``bsum[r]`` = Σ exp(· - max).

    ``L`` is left as it is (the backward reads it again when the forward
    keeps the logits).  The scratch row ``v`` is never ``L``'s: with ``src``
    and ``v`` the same row the exp loop did not vectorise (LLVM cannot rule
    out a shifted overlap) and took 4x longer."""
    w = L.shape[1]
    for r in prange(L.shape[0]):
        row = L[r]
        scale = np.empty(w, L.dtype)
        v = np.empty(w, L.dtype)
        src = row
        if has_bias:
            for c in range(w):
                v[c] = row[c] + bias[s + c]
            src = v
        mx = _row_max(src)
        bmax[r] = mx
        bsum[r] = sumexp(src, mx, v, scale)


@numba.njit(cache=True, parallel=True)
def block_grad_logits(L, bias, has_bias, s, lse, g, target):
    """The logit block ``L`` becomes ``g_r (softmax - onehot)`` in place."""
    w = L.shape[1]
    for r in prange(L.shape[0]):
        row = L[r]
        scale = np.empty(w, np.float32)
        off = lse[r]
        if has_bias:
            for c in range(w):
                row[c] += bias[s + c] - off
        else:
            for c in range(w):
                row[c] -= off
        exp_row(row, scale)
        gr = g[r]
        for c in range(w):
            row[c] *= gr
        t = target[r] - s
        if 0 <= t < w:
            row[t] -= gr


def _block(m, n, block):
    """Items per block: ``block`` (config.score_block_items) scaled so an (m, block)
    tile holds about 256 x block values, and never more than the catalogue."""
    return int(max(1, min(n, int(block) * max(1, 256 // max(1, m)))))


def forward(Q, items, target, bias, block, keep=False):
    """``(loss, lse, logits)``: per-row loss (Q's dtype), log-sum-exp (float64) and, with
    ``keep``, the (m, n_items) product ``Q @ items.T`` (else None); inputs validated and contiguous."""
    m, n = Q.shape[0], items.shape[0]
    if m == 0:
        return np.zeros(0, Q.dtype), np.zeros(0), (np.zeros((0, n), Q.dtype) if keep else None)
    w = n if keep else _block(m, n, block)
    nb = (n + w - 1) // w
    bmax = np.empty((nb, m), np.float64)
    bsum = np.empty((nb, m), np.float64)
    has_bias = bias is not None
    b_arr = bias if has_bias else np.zeros(1, Q.dtype)
    buf = np.empty(m * w, Q.dtype)
    for b in range(nb):
        s, e = b * w, min(n, (b + 1) * w)
        L = buf[:m * (e - s)].reshape(m, e - s)
        np.matmul(Q, items[s:e].T, out=L)        # BLAS, its own threads
        block_max_sumexp(L, b_arr, has_bias, s, bmax[b], bsum[b])
    top = bmax.max(axis=0)
    lse = top + np.log((bsum * np.exp(bmax - top)).sum(axis=0))
    # the target's logit as a float64 dot (the value in the blocks, up to rounding)
    t_logit = np.einsum("ij,ij->i", Q.astype(np.float64), items[target].astype(np.float64))
    if has_bias:
        t_logit += bias[target]
    return (lse - t_logit).astype(Q.dtype), lse, (buf.reshape(m, n) if keep else None)


def backward(grad_loss, Q, items, target, lse, bias, block, logits=None):
    """``(grad_Q, grad_items, grad_bias or None)``; ``logits`` (m, n_items), when given, is
    ``Q @ items.T`` from the forward and is overwritten instead of forming the products again."""
    m, n = Q.shape[0], items.shape[0]
    has_bias = bias is not None
    gE = np.empty_like(items)
    gb = np.empty(n, Q.dtype) if has_bias else None
    gQ = np.zeros_like(Q)
    if m == 0:
        gE[:] = 0
        if has_bias:
            gb[:] = 0
        return gQ, gE, gb
    b_arr = bias if has_bias else np.zeros(1, Q.dtype)
    lse_t, g_t = lse.astype(Q.dtype), grad_loss.astype(Q.dtype)
    if logits is not None:
        block_grad_logits(logits, b_arr, has_bias, 0, lse_t, g_t, target)
        np.matmul(logits.T, Q, out=gE)
        np.matmul(logits, items, out=gQ)
        if has_bias:
            logits.sum(axis=0, out=gb)
        return gQ, gE, gb
    w = _block(m, n, block)
    buf = np.empty(m * w, Q.dtype)
    tmp = np.empty_like(Q)
    for s in range(0, n, w):
        e = min(n, s + w)
        L = buf[:m * (e - s)].reshape(m, e - s)
        np.matmul(Q, items[s:e].T, out=L)
        block_grad_logits(L, b_arr, has_bias, s, lse_t, g_t, target)
        np.matmul(L.T, Q, out=gE[s:e])              # this block's rows of grad_items, written once
        np.matmul(L, items[s:e], out=tmp)
        gQ += tmp                                    # block order: fixed
        if has_bias:
            L.sum(axis=0, out=gb[s:e])
    return gQ, gE, gb
