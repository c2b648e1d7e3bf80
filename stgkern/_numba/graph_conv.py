"""Numba CPU kernels for the dense and elementwise parts of ``graph_conv``.

``graph_conv`` itself is a composition (``stgkern.layer``; the sparse step
goes through ``spmm``).  This module gives it:

``matmul(A, W, out=None)`` / ``matmul_tn(A, B, colsum=False)``
    ``A @ W`` and ``(A.T @ B, B's column sums or None)`` for tall (n, K)
    operands and small weights: BLAS gemm on fixed row blocks, row-parallel in Numba's
    pool (no second BLAS thread pool; see "dense products" below).

``linear2(A1, W1, A2, W2, bias=None, act=None) -> out``
    ``σ(A1 @ W1 + A2 @ W2 + bias)`` in one pass: the second product is added
    block by block while it is in cache (no (n, F) temporary, out written
    once).
``epilogue(S, Z, bias, act) -> S``
    ``S[i, f] = σ(S[i, f] + Z[i, f] + bias[f])`` in place (``Z``/``bias``
    may be None); returns ``S``.
``activation_backward(grad_out, out, act, want_bias) -> (G, grad_bias)``
    ``G = grad_out ∘ σ'`` with σ' computed from the forward output ``out``
    (relu: out > 0; sigmoid: out(1 - out); tanh: 1 - out²), and
    ``grad_bias = Σ_i G[i]`` (None unless ``want_bias``).

Inputs arrive validated, C-contiguous and of one dtype.  Every element is
written by exactly one ``prange`` iteration; the bias gradient is summed per
fixed row block and the block partials are added in block order, so results
do not depend on the thread count.

The elementwise tail, several full NumPy passes over an (n_nodes, F_out)
array, is one pass each way here.  The GPU twin, ``stgkern._cuda.graph_conv``,
exposes the same five names.
"""
import numba
import numpy as np
from numba import prange

from .. import config
from ._prefetch import distance_for
from .spmm import row_sum, transposed_coef

#: Activation codes shared with ``stgkern.layer``.
ACT = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}

#: Rows per parallel block (fixed, so bias-gradient partials are
#: thread-count independent).
_BLOCK = 512


@numba.njit(cache=True, inline="always")
def _activate(v, act):
    if act == 1:
        if not v > 0:
            v = v - v          # +0 in v's dtype; NaN stays NaN
    elif act == 2:
        # exp of a non-positive number only: no overflow warning, exact tails
        if v >= 0:
            v = 1 / (1 + np.exp(-v))
        else:
            ev = np.exp(v)
            v = ev / (1 + ev)
    elif act == 3:
        v = np.tanh(v)
    return v


@numba.njit(cache=True, parallel=True)
def _epilogue(S, Z, has_z, b, has_b, act):
    n = S.shape[0]
    F = S.shape[1]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for c in prange(n_blocks):
        for i in range(c * _BLOCK, min(n, (c + 1) * _BLOCK)):
            for f in range(F):
                v = S[i, f]
                if has_z:
                    v += Z[i, f]
                if has_b:
                    v += b[f]
                S[i, f] = _activate(v, act)


@numba.njit(cache=True, parallel=True)
def _act_bwd(GO, out, act, G, write_g, partial):
    n = GO.shape[0]
    F = GO.shape[1]
    n_blocks = partial.shape[0]
    for c in prange(n_blocks):
        for f in range(F):
            partial[c, f] = 0
        for i in range(c * _BLOCK, min(n, (c + 1) * _BLOCK)):
            for f in range(F):
                g = GO[i, f]
                if act == 1:
                    if not out[i, f] > 0:
                        g = g * 0
                elif act == 2:
                    o = out[i, f]
                    g = g * (o * (1 - o))
                elif act == 3:
                    o = out[i, f]
                    g = g * (1 - o * o)
                if write_g:
                    G[i, f] = g
                partial[c, f] += g


def epilogue(S, Z, bias, act):
    has_z = Z is not None
    has_b = bias is not None
    if not (has_z or has_b or ACT[act]):
        return S            # nothing to add or apply: no pass over S
    _epilogue(S, Z if has_z else S, has_z, bias if has_b else np.zeros(0, S.dtype), has_b, ACT[act])
    return S


def activation_backward(grad_out, out, act, want_bias):
    n, F = grad_out.shape
    code = ACT[act]
    if code == 0 and not want_bias:
        return grad_out, None
    # identity: G is grad_out itself; only the column sums are computed
    G = np.empty_like(grad_out) if code else grad_out
    partial = np.empty(((n + _BLOCK - 1) // _BLOCK, F), dtype=grad_out.dtype)
    _act_bwd(grad_out, out if code else grad_out, code, G, code != 0, partial)
    # partials are per fixed row block and added in block order (one NumPy
    # thread): independent of the Numba thread count
    grad_bias = partial.sum(axis=0) if want_bias else None
    return G, grad_bias


# ------------------------------------------------------------- dense products
# The products are BLAS gemm calls (scipy's BLAS, reached through Numba's
# ``np.dot``) on fixed row blocks inside Numba's thread pool.  Each call is
# kept at most ``config.cpu_gemm_call_mnk`` multiply-adds, small enough that
# it runs on the Numba thread that made it (no second thread pool; see the
# measurements with that setting) and its blocks stay in L1/L2.  One whole-array NumPy
# matmul (OpenBLAS's own threads) is as fast alone, but between Numba's
# parallel kernels its idle-spinning workers and Numba's fought for the
# cores and the layer got slower (benchmarks/bench_graph_conv.py).  A
# hand-written Numba product (four rows per W load) reached 74 GFLOP/s on
# 2M x 64 @ 64 x 64 float32; the blocked BLAS calls reach 213-216 GFLOP/s
# there, the machine's square-sgemm rate.  Fixed blocks also make the
# results independent of the thread count.

@numba.njit(cache=True, parallel=True)
def _mm_blocks(A, W, out, rows):
    n = A.shape[0]
    for b in prange((n + rows - 1) // rows):
        s = b * rows
        e = min(n, s + rows)
        np.dot(A[s:e], W, out[s:e])


@numba.njit(cache=True, inline="always")
def _linear2_block(A1, W1, A2, W2, o, t, b, has_b, act):
    """One row block of ``linear2``: ``o = σ(A1 @ W1 + A2 @ W2 + b)``, the
    second product in the scratch block ``t`` (same shape as ``o``)."""
    np.dot(A1, W1, o)
    np.dot(A2, W2, t)
    for i in range(o.shape[0]):
        for f in range(o.shape[1]):
            v = o[i, f] + t[i, f]
            if has_b:
                v += b[f]
            o[i, f] = _activate(v, act)


#: gemm call pairs per parallel task of ``_linear2_blocks`` (one scratch block each).
_GROUP = 8


@numba.njit(cache=True, parallel=True)
def _linear2_blocks(A1, W1, A2, W2, out, rows, b, has_b, act):
    """``out = σ(A1 @ W1 + A2 @ W2 + b)`` block by block: the second product
    goes to an L1/L2-sized scratch block and is added, with bias and
    activation, while both are in cache; ``out`` is written once."""
    n = A1.shape[0]
    F = W1.shape[1]
    n_calls = (n + rows - 1) // rows
    for g in prange((n_calls + _GROUP - 1) // _GROUP):
        tmp = np.empty((rows, F), dtype=out.dtype)
        for c in range(g * _GROUP, min(n_calls, (g + 1) * _GROUP)):
            s = c * rows
            e = min(n, s + rows)
            _linear2_block(A1[s:e], W1, A2[s:e], W2, out[s:e], tmp[:e - s], b, has_b, act)


@numba.njit(cache=True, parallel=True)
def _mm_tn_blocks(A, B, partial, rows, colsum, want_colsum):
    n = A.shape[0]
    F = B.shape[1]
    n_blocks = partial.shape[0]
    per = (n + n_blocks - 1) // n_blocks
    for c in prange(n_blocks):
        P = partial[c]
        P[:, :] = 0
        cs = colsum[c]
        cs[:] = 0
        tmp = np.empty_like(P)
        e = min(n, (c + 1) * per)
        for s in range(c * per, e, rows):
            t = min(e, s + rows)
            np.dot(A[s:t].T, B[s:t], tmp)
            P += tmp
            if want_colsum:          # B's rows are still in L1/L2 from the product
                for i in range(s, t):
                    for f in range(F):
                        cs[f] += B[i, f]


def _rows_per_call(m_or_k: int, F: int) -> int:
    """Rows per gemm call: as many as keep m*n*k within ``config.cpu_gemm_call_mnk`` (at most 256)."""
    return max(1, min(256, int(config.cpu_gemm_call_mnk) // max(m_or_k * F, 1)))


def matmul(A, W, out=None):
    """``A @ W`` for a tall A (n, K) and a small W (K, F); C-contiguous A.
    ``out`` (n, F), when given, receives the product."""
    n, K = A.shape
    F = W.shape[1]
    if out is None:
        out = np.empty((n, F), dtype=A.dtype)
    if n == 0 or F == 0:
        return out
    if K == 0:
        out[...] = 0
        return out
    _mm_blocks(A, np.ascontiguousarray(W), out, _rows_per_call(K, F))
    return out


def linear2(A1, W1, A2, W2, bias=None, act=None):
    """``σ(A1 @ W1 + A2 @ W2 + bias)`` as a new (n, F) array, in one pass.

    graph_conv's forward (``X·W_self + agg·W_neigh``) and its input gradient
    (``G·W_selfᵀ + (AᵀG)·W_neighᵀ``): neither product is stored on its own.
    """
    n, K1 = A1.shape
    K2 = A2.shape[1]
    F = W1.shape[1]
    if min(n, F, K1, K2) == 0:      # an empty product: compose (zeros where K is 0)
        out = matmul(A1, W1)
        out += matmul(A2, W2)
        return epilogue(out, None, bias, act)
    out = np.empty((n, F), dtype=A1.dtype)
    has_b = bias is not None
    _linear2_blocks(A1, np.ascontiguousarray(W1), A2, np.ascontiguousarray(W2), out,
                    _rows_per_call(max(K1, K2), F), bias if has_b else np.zeros(0, out.dtype), has_b, ACT[act])
    return out


#: Row blocks of ``matmul_tn``; fixed (not the thread count) so the result
#: is identical for any number of threads.
TN_BLOCKS = 64


def matmul_tn(A, B, colsum=False):
    """``(A.T @ B, column sums of B or None)`` for tall A (n, K), B (n, F).

    Fixed row blocks, partials added in block order.  ``colsum=True`` also
    sums B's columns in the same pass (graph_conv's bias gradient).
    """
    n, K = A.shape
    F = B.shape[1]
    n_blocks = min(TN_BLOCKS, n)
    if n_blocks == 0 or F == 0:
        return np.zeros((K, F), dtype=A.dtype), (np.zeros(F, dtype=A.dtype) if colsum else None)
    if K == 0:
        return np.zeros((0, F), dtype=A.dtype), (B.sum(axis=0) if colsum else None)
    partial = np.empty((n_blocks, K, F), dtype=A.dtype)
    sums = np.empty((n_blocks, F), dtype=A.dtype)
    _mm_tn_blocks(A, B, partial, _rows_per_call(K, F), sums, bool(colsum))
    return partial.sum(axis=0), (sums.sum(axis=0) if colsum else None)


# ------------------------------------------------- fused layer (sum / mean)
# graph_conv with W_neigh and a linear aggregation, each direction in one
# pass over row blocks: the block's aggregation (AX in the forward, AᵀG in
# the backward) is formed in a scratch block that stays in cache and goes
# straight into the block's gemm calls, so neither (n, F) aggregate is ever
# stored.  On the 2M-event window graph (64 -> 64, float32) that is 1 GB of
# writes and 1 GB of reads fewer per training step than the composition.

@numba.njit(cache=True, parallel=True)
def _fused_fwd(indptr, indices, X, Ws, Wn, w, mean, pf, b, has_b, act, rows, out):
    n = out.shape[0]
    F_in = X.shape[1]
    F_out = Ws.shape[1]
    n_calls = (n + rows - 1) // rows
    for g in prange((n_calls + _GROUP - 1) // _GROUP):
        agg = np.empty((rows, F_in), dtype=out.dtype)
        tmp = np.empty((rows, F_out), dtype=out.dtype)
        for c in range(g * _GROUP, min(n_calls, (g + 1) * _GROUP)):
            s = c * rows
            e = min(n, s + rows)
            a = agg[:e - s]
            for r in range(e - s):
                row_sum(indptr, indices, X, w, mean, pf, s + r, a[r])
            _linear2_block(X[s:e], Ws, a, Wn, out[s:e], tmp[:e - s], b, has_b, act)


@numba.njit(cache=True, parallel=True)
def _fused_bwd(t_indptr, t_indices, coef, G, X, WsT, WnT, pf, rows, want_b, gX, p_ws, p_wn, p_b):
    n = X.shape[0]
    F_in = X.shape[1]
    F_out = G.shape[1]
    n_tasks = p_ws.shape[0]
    per = (n + n_tasks - 1) // n_tasks
    for task in prange(n_tasks):
        atg = np.empty((rows, F_out), dtype=gX.dtype)
        tmp = np.empty((rows, F_in), dtype=gX.dtype)
        prod = np.empty((F_in, F_out), dtype=gX.dtype)
        no_bias = np.zeros(0, dtype=gX.dtype)
        Pws = p_ws[task]
        Pwn = p_wn[task]
        Pb = p_b[task]
        Pws[:, :] = 0
        Pwn[:, :] = 0
        Pb[:] = 0
        end = min(n, (task + 1) * per)
        for s in range(task * per, end, rows):
            e = min(end, s + rows)
            a = atg[:e - s]
            for r in range(e - s):
                row_sum(t_indptr, t_indices, G, coef, False, pf, s + r, a[r])
            # grad_X = G·W_selfᵀ + (AᵀG)·W_neighᵀ
            _linear2_block(G[s:e], WsT, a, WnT, gX[s:e], tmp[:e - s], no_bias, False, 0)
            np.dot(X[s:e].T, G[s:e], prod)       # grad_W_self += Xᵀ·G
            Pws += prod
            np.dot(X[s:e].T, a, prod)            # grad_W_neigh += Xᵀ·(AᵀG)
            Pwn += prod
            if want_b:
                for i in range(s, e):
                    for f in range(F_out):
                        Pb[f] += G[i, f]


def fused_forward(g, X, W_self, W_neigh, bias, w, mean, act):
    """``σ(X·W_self + agg(X)·W_neigh + bias)`` for sum/mean aggregation, one pass (see above)."""
    n, F_in = X.shape
    F_out = W_self.shape[1]
    out = np.empty((n, F_out), dtype=X.dtype)
    if n == 0 or F_out == 0:
        return out
    if F_in == 0:
        out[...] = 0
        return epilogue(out, None, bias, act)
    has_b = bias is not None
    pf = distance_for(g, F_in * X.itemsize) or None
    _fused_fwd(g.indptr, g.indices, X, np.ascontiguousarray(W_self), np.ascontiguousarray(W_neigh), w, bool(mean), pf,
               bias if has_b else np.zeros(0, X.dtype), has_b, ACT[act], _rows_per_call(max(F_in, F_out), F_out), out)
    return out


def fused_backward(g, G, X, W_self, W_neigh, want_bias, mean):
    """``(grad_X, grad_W_self, grad_W_neigh, grad_bias or None)`` of the layer
    without edge weights, given ``G`` = the gradient at the pre-activation;
    one pass over row blocks of the transpose (see above)."""
    n, F_in = X.shape
    F_out = G.shape[1]
    gX = np.empty((n, F_in), dtype=X.dtype)
    n_tasks = min(TN_BLOCKS, n)
    if n_tasks == 0 or F_in == 0 or F_out == 0:
        gX[...] = 0
        z = np.zeros((F_in, F_out), dtype=X.dtype)
        return gX, z, z.copy(), (G.sum(axis=0) if want_bias else None)
    t = g.transpose()
    p_ws = np.empty((n_tasks, F_in, F_out), dtype=X.dtype)
    p_wn = np.empty_like(p_ws)
    p_b = np.empty((n_tasks, F_out), dtype=X.dtype)
    pf = distance_for(t, F_out * G.itemsize) or None
    _fused_bwd(t.indptr, t.indices, transposed_coef(g, t, None, mean, X.dtype), G, X, np.ascontiguousarray(W_self.T),
               np.ascontiguousarray(W_neigh.T), pf, _rows_per_call(max(F_in, F_out), F_in), bool(want_bias),
               gX, p_ws, p_wn, p_b)
    # partials per fixed row range, added in range order: independent of the thread count
    return gX, p_ws.sum(axis=0), p_wn.sum(axis=0), (p_b.sum(axis=0) if want_bias else None)
