"""SDDMM on the CPU: per-edge scores/features from the two end nodes.

Backend contract (same for ``stgkern._cuda.sddmm``)::

    forward(g, X, Y, op)            -> out
    backward(g, grad_out, X, Y, op) -> (grad_X, grad_Y)

``g`` is a validated CSR-by-destination ``Graph``; ``X`` (n_nodes, F) and
``Y`` (n_src, F) are C-contiguous and share one float dtype; ``op`` is one of
``"dot"``, ``"cosine"`` (out (nnz,)) or ``"add"``, ``"sub"``, ``"mul"``
(out (nnz, F)); ``grad_out`` has the shape of ``out``.  Edge k of row i is
``j -> i`` with ``j = g.indices[k]`` and pairs ``X[i]`` with ``Y[j]``.

Every kernel pulls over rows: the forward over the destination rows, the
``grad_X`` half of the backward over the destination rows, the ``grad_Y``
half over the cached transpose ``g.transpose()`` (``edata['eid']`` maps its
edges back).  Each output element is written by one iteration only, in a
fixed order, so results do not depend on the thread count.
"""
import numba as nb
import numpy as np

#: Let LLVM reassociate the per-edge dot products so they vectorise.  The
#: order is fixed at compile time (same for every thread count); NaN and inf
#: keep their IEEE meaning (no 'nnan'/'ninf').
_FAST = {"reassoc", "contract", "nsz"}

SCALAR_OPS = ("dot", "cosine")
ELEMENTWISE_OPS = ("add", "sub", "mul")
_OPCODE = {"add": 0, "sub": 1, "mul": 2}


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def _row_norms(A):
    n, F = A.shape
    out = np.empty(n, dtype=A.dtype)
    for r in nb.prange(n):
        s = 0.0  # float64 accumulation: norms feed a division
        for f in range(F):
            s += A[r, f] * A[r, f]
        out[r] = np.sqrt(s)
    return out


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def _dot_fwd(indptr, indices, X, Y, nX, nY, cosine, out):
    n = indptr.shape[0] - 1
    F = X.shape[1]
    for i in nb.prange(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            s = X.dtype.type(0)
            for f in range(F):
                s += X[i, f] * Y[j, f]
            if cosine:
                d = nX[i] * nY[j]
                s = s / d if d > 0 else X.dtype.type(0)
            out[k] = s


@nb.njit(parallel=True, cache=True)
def _elementwise_fwd(indptr, indices, X, Y, opcode, out):
    n = indptr.shape[0] - 1
    F = X.shape[1]
    for i in nb.prange(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if opcode == 0:
                for f in range(F):
                    out[k, f] = X[i, f] + Y[j, f]
            elif opcode == 1:
                for f in range(F):
                    out[k, f] = X[i, f] - Y[j, f]
            else:
                for f in range(F):
                    out[k, f] = X[i, f] * Y[j, f]


@nb.njit(parallel=True, cache=True)
def _scalar_pull(indptr, nbr, eid, use_eid, coef, V, out):
    """out[r] = sum_{p in row r} coef[e(p)] * V[nbr[p]]  (dot backward)."""
    n = indptr.shape[0] - 1
    F = V.shape[1]
    for r in nb.prange(n):
        for f in range(F):
            out[r, f] = 0
        for p in range(indptr[r], indptr[r + 1]):
            e = eid[p] if use_eid else p
            c = coef[e]
            v = nbr[p]
            for f in range(F):
                out[r, f] += c * V[v, f]


@nb.njit(parallel=True, cache=True)
def _vector_pull(indptr, nbr, eid, use_eid, G, V, multiply, sign, out):
    """out[r] = sign * sum_{p in row r} G[e(p)] (* V[nbr[p]] if multiply)."""
    n = indptr.shape[0] - 1
    F = G.shape[1]
    for r in nb.prange(n):
        for f in range(F):
            out[r, f] = 0
        for p in range(indptr[r], indptr[r + 1]):
            e = eid[p] if use_eid else p
            if multiply:
                v = nbr[p]
                for f in range(F):
                    out[r, f] += G[e, f] * V[v, f]
            else:
                for f in range(F):
                    out[r, f] += G[e, f]
        if sign < 0:
            for f in range(F):
                out[r, f] = -out[r, f]


@nb.njit(parallel=True, cache=True, fastmath=_FAST)
def _cosine_pull(indptr, nbr, eid, use_eid, go, A, B, nA, nB, out):
    """Cosine gradient w.r.t. the row-side vectors A.

    With c = a.b / (|a||b|):  dc/da = b / (|a||b|) - c a / |a|^2.
    Edges with a zero norm on either side contribute nothing.
    """
    n = indptr.shape[0] - 1
    F = A.shape[1]
    for r in nb.prange(n):
        for f in range(F):
            out[r, f] = 0
        na = nA[r]
        if na == 0:
            continue
        self_coef = A.dtype.type(0)
        for p in range(indptr[r], indptr[r + 1]):
            e = eid[p] if use_eid else p
            v = nbr[p]
            nb_ = nB[v]
            if nb_ == 0:
                continue
            d = na * nb_
            s = A.dtype.type(0)
            for f in range(F):
                s += A[r, f] * B[v, f]
            c = s / d
            g = go[e] / d
            self_coef += go[e] * c
            for f in range(F):
                out[r, f] += g * B[v, f]
        self_coef /= na * na
        for f in range(F):
            out[r, f] -= self_coef * A[r, f]


_NO_EID = np.empty(0, dtype=np.int64)


def forward(g, X, Y, op):
    indptr, indices = g.indptr, g.indices
    if op in SCALAR_OPS:
        out = np.empty(g.nnz, dtype=X.dtype)
        cosine = op == "cosine"
        if cosine:
            nX, nY = _row_norms(X), _row_norms(Y)
        else:
            nX = nY = np.empty(0, dtype=X.dtype)
        _dot_fwd(indptr, indices, X, Y, nX, nY, cosine, out)
        return out
    out = np.empty((g.nnz, X.shape[1]), dtype=X.dtype)
    _elementwise_fwd(indptr, indices, X, Y, _OPCODE[op], out)
    return out


def backward(g, grad_out, X, Y, op):
    t = g.transpose()
    teid = t.edata["eid"]
    gX = np.empty_like(X)
    gY = np.empty_like(Y)
    if op == "dot":
        _scalar_pull(g.indptr, g.indices, _NO_EID, False, grad_out, Y, gX)
        _scalar_pull(t.indptr, t.indices, teid, True, grad_out, X, gY)
    elif op == "cosine":
        nX, nY = _row_norms(X), _row_norms(Y)
        _cosine_pull(g.indptr, g.indices, _NO_EID, False, grad_out, X, Y, nX, nY, gX)
        _cosine_pull(t.indptr, t.indices, teid, True, grad_out, Y, X, nY, nX, gY)
    else:
        mul = op == "mul"
        _vector_pull(g.indptr, g.indices, _NO_EID, False, grad_out, Y, mul, 1, gX)
        _vector_pull(t.indptr, t.indices, teid, True, grad_out, X, mul, -1 if op == "sub" else 1, gY)
    return gX, gY
