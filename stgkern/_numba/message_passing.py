"""Numba CPU kernels for fused ``message_passing`` (row-parallel pull, deterministic).

``out[i, f] = REDUCE_{k in row i} X[indices[k], f] (op) E(k, f)`` with op mul/add
and ``E(k, f) = E[k, f]`` (E of width F) or ``E[k]`` (width 1, broadcast).
The nnz x F messages are never stored: each message is formed and folded in
vector registers (``_simd``), and the output row is stored once.

Backend contract (identical for ``stgkern._cuda.message_passing``):

``forward(g, X, E, op, reduce, out=None) -> (out, arg)``
    ``out`` (n_nodes, F) in X's dtype (written into ``out`` when given); ``arg`` (n_nodes, F) int64 winning CSR
    edge id (lowest on ties, -1 for empty rows) for max/min, else None.
``backward(g, grad_out, X, E, op, reduce, arg) -> (grad_X, grad_E)``
    ``grad_X`` (n_src, F) pulled over the cached ``g.transpose()`` (its
    ``edata['eid']`` maps transpose positions to forward edge ids);
    ``grad_E`` shaped like ``E``, written per edge (width-1 E sums over f).

Inputs arrive validated and C-contiguous; ``E`` already has X's dtype.  Every
output element is written by exactly one ``prange`` iteration and summed in
a fixed order (CSR order, sum/mean folded pairwise), so results are
bit-identical for any thread count.
"""
import numba
import numpy as np
from numba import prange

from ._prefetch import distance_for
from ._simd import gather_add, gather_wsum

_REDUCE = {"sum": 0, "mean": 1, "max": 2, "min": 3}
_OP = {"mul": 0, "add": 1}

#: Rows per parallel task (contiguous ranges keep a banded graph's X rows in cache).
MP_CHUNK = 256


@numba.njit(cache=True, parallel=True)
def _fwd_sum(indptr, indices, X, E, op, mean, pf, out):
    """sum/mean: each row's messages formed and folded two at a time in vector
    registers (``_simd``: ``o += m0 + m1`` in CSR order, so the bits are the
    same for every run and thread count) and the row stored once.  ``E`` is
    (nnz, F) or, for one value per edge, (nnz,)."""
    n = indptr.shape[0] - 1
    n_chunks = (n + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for i in range(c * MP_CHUNK, min(n, (c + 1) * MP_CHUNK)):
            s = indptr[i]
            e = indptr[i + 1]
            o = out[i]
            if op == 0:
                gather_wsum(o, X, indices, E, s, e, pf)
            else:
                gather_add(o, X, indices, E, s, e, pf)
            if mean and e > s:
                for f in range(o.shape[0]):
                    o[f] = o[f] / (e - s)  # exact-rounded: float64 divide of a float32


@numba.njit(cache=True, parallel=True)
def _fwd_arg(indptr, indices, X, E, wide, op, mode, out, arg):
    """max/min: the winning message per feature and its edge id (lowest on ties)."""
    n = indptr.shape[0] - 1
    F = X.shape[1]
    n_chunks = (n + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for i in range(c * MP_CHUNK, min(n, (c + 1) * MP_CHUNK)):
            s = indptr[i]
            e = indptr[i + 1]
            o = out[i]
            a = arg[i]
            if e == s:
                for f in range(F):
                    o[f] = 0
                    a[f] = -1
                continue
            for k in range(s, e):
                xr = X[indices[k]]
                for f in range(F):
                    ev = E[k, f] if wide else E[k, 0]
                    v = xr[f] * ev if op == 0 else xr[f] + ev
                    if k == s or (mode == 2 and v > o[f]) or (mode == 3 and v < o[f]):
                        o[f] = v
                        a[f] = k


@numba.njit(cache=True, parallel=True)
def _bwd_x(t_indptr, t_indices, eid, deg, G, E, wide, op, mode, arg, unit, gX):
    n_src = t_indptr.shape[0] - 1
    F = G.shape[1]
    n_chunks = (n_src + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for j in range(c * MP_CHUNK, min(n_src, (c + 1) * MP_CHUNK)):
            gx = gX[j]
            for f in range(F):
                gx[f] = 0
            for t in range(t_indptr[j], t_indptr[j + 1]):
                i = t_indices[t]
                k = eid[t]
                sc = E[k, 0] if (op == 0 and not wide) else unit[0]
                if mode == 1:
                    sc = sc / deg[i]
                gi = G[i]
                if mode <= 1:
                    if op == 0 and wide:
                        er = E[k]
                        for f in range(F):
                            gx[f] += gi[f] * (sc * er[f])
                    else:
                        for f in range(F):
                            gx[f] += gi[f] * sc
                else:
                    ai = arg[i]
                    for f in range(F):
                        if ai[f] == k:
                            d = sc * E[k, f] if (op == 0 and wide) else sc
                            gx[f] += gi[f] * d


@numba.njit(cache=True, parallel=True)
def _bwd_e(indptr, indices, X, G, wide, op, mode, arg, scale, unit, gE):
    n = indptr.shape[0] - 1
    F = G.shape[1]
    n_chunks = (n + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for i in range(c * MP_CHUNK, min(n, (c + 1) * MP_CHUNK)):
            gi = G[i]
            sc = scale[i]
            for k in range(indptr[i], indptr[i + 1]):
                xr = X[indices[k]]
                ge = gE[k]
                if mode <= 1:
                    if wide:
                        if op == 0:
                            for f in range(F):
                                ge[f] = (gi[f] * sc) * xr[f]
                        else:
                            for f in range(F):
                                ge[f] = gi[f] * sc
                    else:
                        part = unit[1]
                        if op == 0:
                            for f in range(F):
                                part += (gi[f] * sc) * xr[f]
                        else:
                            for f in range(F):
                                part += gi[f] * sc
                        ge[0] = part
                else:
                    ai = arg[i]
                    part = unit[1]
                    for f in range(F):
                        cf = gi[f] * sc if ai[f] == k else unit[1]
                        if op == 0:
                            cf = cf * xr[f]
                        if wide:
                            ge[f] = cf
                        else:
                            part += cf
                    if not wide:
                        ge[0] = part


def _as2d(E):
    return E.reshape(E.shape[0], 1) if E.ndim == 1 else E


def forward(g, X, E, op, reduce, out=None):
    mode = _REDUCE[reduce]
    n, F = g.n_nodes, X.shape[1]
    E2 = _as2d(E)
    wide = E2.shape[1] != 1 or F == 1
    out = np.empty((n, F), dtype=X.dtype) if out is None else out
    if mode <= 1:
        pf = distance_for(g, F * X.itemsize) or None  # None: no prefetch code
        _fwd_sum(g.indptr, g.indices, X, E2 if wide else E2.reshape(-1), _OP[op], mode == 1, pf, out)
        return out, None
    arg = np.empty((n, F), dtype=np.int64)
    _fwd_arg(g.indptr, g.indices, X, E2, wide, _OP[op], mode, out, arg)
    return out, arg


def backward(g, grad_out, X, E, op, reduce, arg):
    mode = _REDUCE[reduce]
    F = grad_out.shape[1]
    E2 = _as2d(E)
    wide = E2.shape[1] != 1 or F == 1
    t = g.transpose()
    dt = grad_out.dtype
    deg_i = np.diff(g.indptr)
    deg = deg_i.astype(dt) if mode == 1 else np.ones(max(g.n_nodes, 1), dtype=dt)
    a = arg if mode >= 2 else np.empty((1, 1), dtype=np.int64)
    unit = np.array([1, 0], dtype=dt)  # typed one/zero: keeps float32 arithmetic in float32
    gX = np.empty((g.n_src, F), dtype=dt)
    _bwd_x(t.indptr, t.indices, t.edata["eid"], deg, grad_out, E2, wide, _OP[op], mode, a, unit, gX)
    scale = np.ones(g.n_nodes, dtype=dt)
    if mode == 1:
        nz = deg_i > 0
        scale[nz] = dt.type(1) / deg_i[nz].astype(dt)
    gE = np.empty(E2.shape, dtype=dt)
    _bwd_e(g.indptr, g.indices, X, grad_out, wide, _OP[op], mode, a, scale, unit, gE)
    return gX, gE.reshape(E.shape)
