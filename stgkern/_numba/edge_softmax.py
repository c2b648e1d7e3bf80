"""Edge softmax on the CPU: softmax over each destination row's edges.

Backend contract (same for ``stgkern._cuda.edge_softmax``)::

    forward(g, scores)            -> out        # shape of scores
    backward(g, grad_out, out)    -> grad_scores  # shape of out

``scores``/``out``/``grad_out`` are C-contiguous float32 or float64 arrays of
shape (nnz,) or (nnz, H) in the graph's CSR edge order; heads are
independent.  Forward: ``out[k] = exp(s[k] - max_row) / sum_row exp(...)``;
backward: ``grad_s[k] = out[k] * (grad_out[k] - sum_row grad_out * out)``.
Rows without edges produce nothing.

Rows are processed in fixed chunks under ``prange``; each row is swept in
cache (max, exp + sum, scale), written by one iteration only, so results
do not depend on the thread count.
"""
import numba as nb
import numpy as np

#: Destination rows per parallel chunk (per-chunk scratch holds H values).
CHUNK_ROWS = 1024


@nb.njit(parallel=True, cache=True)
def _fwd(indptr, S, out, chunk):
    n = indptr.shape[0] - 1
    H = S.shape[1]
    n_chunks = (n + chunk - 1) // chunk
    for c in nb.prange(n_chunks):
        mx = np.empty(H, dtype=S.dtype)
        # float64 sums: a hub row of thousands of edges stays accurate in float32.
        sm = np.empty(H, dtype=np.float64)
        inv = np.empty(H, dtype=S.dtype)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            a, b = indptr[i], indptr[i + 1]
            if a == b:
                continue
            for h in range(H):
                mx[h] = S[a, h]
                sm[h] = 0
            for k in range(a + 1, b):
                for h in range(H):
                    if S[k, h] > mx[h]:
                        mx[h] = S[k, h]
            for k in range(a, b):
                for h in range(H):
                    e = np.exp(S[k, h] - mx[h])
                    out[k, h] = e
                    sm[h] += e
            for h in range(H):
                inv[h] = 1 / sm[h]
            for k in range(a, b):
                for h in range(H):
                    out[k, h] *= inv[h]


@nb.njit(parallel=True, cache=True)
def _bwd(indptr, G, O, out, chunk):
    n = indptr.shape[0] - 1
    H = G.shape[1]
    n_chunks = (n + chunk - 1) // chunk
    for c in nb.prange(n_chunks):
        dot = np.empty(H, dtype=np.float64)
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            a, b = indptr[i], indptr[i + 1]
            for h in range(H):
                dot[h] = 0
            for k in range(a, b):
                for h in range(H):
                    dot[h] += G[k, h] * O[k, h]
            for k in range(a, b):
                for h in range(H):
                    out[k, h] = O[k, h] * (G[k, h] - G.dtype.type(dot[h]))


@nb.njit(parallel=True, cache=True)
def _fwd1(indptr, s, out, chunk):
    """One head: scalar row state, contiguous sweeps the compiler can vectorise."""
    n = indptr.shape[0] - 1
    n_chunks = (n + chunk - 1) // chunk
    for c in nb.prange(n_chunks):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            a, b = indptr[i], indptr[i + 1]
            if a == b:
                continue
            mx = s[a]
            for k in range(a + 1, b):
                if s[k] > mx:  # same NaN behaviour as the multi-head kernel
                    mx = s[k]
            sm = 0.0  # float64: a hub row of thousands of edges stays accurate in float32
            for k in range(a, b):
                e = np.exp(s[k] - mx)
                out[k] = e
                sm += e
            inv = out.dtype.type(1 / sm)
            for k in range(a, b):
                out[k] *= inv


@nb.njit(parallel=True, cache=True)
def _bwd1(indptr, G, O, out, chunk):
    n = indptr.shape[0] - 1
    n_chunks = (n + chunk - 1) // chunk
    for c in nb.prange(n_chunks):
        for i in range(c * chunk, min(n, (c + 1) * chunk)):
            a, b = indptr[i], indptr[i + 1]
            dot = 0.0
            for k in range(a, b):
                dot += G[k] * O[k]
            d = G.dtype.type(dot)
            for k in range(a, b):
                out[k] = O[k] * (G[k] - d)


def _as2d(a):
    return a.reshape(a.shape[0], 1) if a.ndim == 1 else a


def forward(g, scores):
    out = np.empty_like(scores)
    if scores.ndim == 1:
        _fwd1(g.indptr, scores, out, CHUNK_ROWS)
        return out
    _fwd(g.indptr, _as2d(scores), _as2d(out), CHUNK_ROWS)
    return out


def backward(g, grad_out, out):
    grad = np.empty_like(out)
    if out.ndim == 1:
        _bwd1(g.indptr, grad_out, out, grad, CHUNK_ROWS)
        return grad
    _bwd(g.indptr, _as2d(grad_out), _as2d(out), _as2d(grad), CHUNK_ROWS)
    return grad
