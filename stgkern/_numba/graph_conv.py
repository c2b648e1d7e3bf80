"""Numba CPU kernels for the dense and elementwise parts of ``graph_conv``.

``graph_conv`` itself is a composition (``stgkern.layer``; the sparse step
goes through ``spmm``).  This module gives it:

``matmul(A, W)`` / ``matmul_tn(A, B)``
    ``A @ W`` and ``A.T @ B`` for tall (n, K) operands and small weights,
    row-parallel in Numba's pool (no second BLAS thread pool).

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
exposes the same four names.
"""
import numba
import numpy as np
from numba import prange

#: Activation codes shared with ``stgkern.layer``.
ACT = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}

#: Rows per parallel block (fixed, so bias-gradient partials are
#: thread-count independent).
_BLOCK = 512


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
                if act == 1:
                    if not v > 0:
                        v = v - v          # +0 in S's dtype; NaN stays NaN
                elif act == 2:
                    # exp of a non-positive number only: no overflow warning, exact tails
                    if v >= 0:
                        v = 1 / (1 + np.exp(-v))
                    else:
                        ev = np.exp(v)
                        v = ev / (1 + ev)
                elif act == 3:
                    v = np.tanh(v)
                S[i, f] = v


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
# Small dense products (F_in x F_out weights) run in the same Numba thread
# pool as the sparse kernels: interleaving them with a second pool (OpenBLAS)
# made the layer several times slower on a shared 2-core machine, where
# idle-spinning BLAS workers and Numba workers fought for the cores
# (see benchmarks/bench_graph_conv.py).

@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _mm(A, W, out):
    # four rows at a time: each W[k, f] load feeds four multiply-adds
    n = A.shape[0]
    K = A.shape[1]
    F = W.shape[1]
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for c in prange(n_blocks):
        acc = np.empty((4, F), dtype=out.dtype)
        e = min(n, (c + 1) * _BLOCK)
        for i in range(c * _BLOCK, e, 4):
            r = min(4, e - i)
            acc[:, :] = 0
            if r == 4:
                for k in range(K):
                    a0 = A[i, k]
                    a1 = A[i + 1, k]
                    a2 = A[i + 2, k]
                    a3 = A[i + 3, k]
                    for f in range(F):
                        w = W[k, f]
                        acc[0, f] += a0 * w
                        acc[1, f] += a1 * w
                        acc[2, f] += a2 * w
                        acc[3, f] += a3 * w
            else:
                for q in range(r):
                    for k in range(K):
                        a = A[i + q, k]
                        for f in range(F):
                            acc[q, f] += a * W[k, f]
            for q in range(r):
                for f in range(F):
                    out[i + q, f] = acc[q, f]


@numba.njit(cache=True, parallel=True, fastmath={"contract"})
def _mm_tn(A, B, partial):
    n = A.shape[0]
    K = A.shape[1]
    F = B.shape[1]
    rows = (n + partial.shape[0] - 1) // max(partial.shape[0], 1)
    for c in prange(partial.shape[0]):
        P = partial[c]
        P[:, :] = 0
        e = min(n, (c + 1) * rows)
        for i in range(c * rows, e, 4):
            if i + 4 <= e:
                # four rows per pass over P: one load/store of P[k, f] per four products
                for k in range(K):
                    a0 = A[i, k]
                    a1 = A[i + 1, k]
                    a2 = A[i + 2, k]
                    a3 = A[i + 3, k]
                    for f in range(F):
                        P[k, f] += (a0 * B[i, f] + a1 * B[i + 1, f]) + (a2 * B[i + 2, f] + a3 * B[i + 3, f])
            else:
                for q in range(i, e):
                    for k in range(K):
                        a = A[q, k]
                        for f in range(F):
                            P[k, f] += a * B[q, f]


def matmul(A, W):
    """``A @ W`` for a tall A (n, K) and a small W (K, F); C-contiguous inputs."""
    out = np.empty((A.shape[0], W.shape[1]), dtype=A.dtype)
    _mm(A, np.ascontiguousarray(W), out)
    return out


#: Row blocks of ``matmul_tn``; fixed (not the thread count) so the result
#: is identical for any number of threads.
TN_BLOCKS = 64


def matmul_tn(A, B):
    """``A.T @ B`` for tall A (n, K), B (n, F): fixed row blocks, partials added in block order."""
    n_blocks = min(TN_BLOCKS, A.shape[0]) if A.shape[0] else 0
    partial = np.empty((n_blocks, A.shape[1], B.shape[1]), dtype=A.dtype)
    _mm_tn(A, B, partial)
    return partial.sum(axis=0) if n_blocks else np.zeros((A.shape[1], B.shape[1]), dtype=A.dtype)
