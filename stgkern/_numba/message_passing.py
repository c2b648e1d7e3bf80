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
# Numba's on-disk cache keys on this file's stamp, not on _simd.py's: the generated
# gather code is part of these kernels, so a change there is recorded here too.
# _simd revision: 2 (max/min propagate NaN as NumPy does)

import numba
import numpy as np
from numba import prange

from . import sddmm as _sddmm
from ._prefetch import distance_for
from ._simd import (
    gather_add,
    gather_max,
    gather_max_add,
    gather_min,
    gather_min_add,
    gather_won,
    gather_wsum,
)
from .spmm import divide_row, row_sum

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
            o = out[i]
            if op == 0:                  # spmm's row with E as the edge weights
                row_sum(indptr, indices, X, E, mean, pf, i, o)
            else:
                gather_add(o, X, indices, E, None, indptr[i], indptr[i + 1], pf)
                if mean:
                    divide_row(o, indptr[i + 1] - indptr[i])


@numba.njit(cache=True, parallel=True)
def _fwd_arg(indptr, indices, X, E, op, mode, out, arg):
    """max/min: the winning message per feature and its edge id (lowest on
    ties), in vector registers (``_simd.gather_max`` and kin)."""
    n = indptr.shape[0] - 1
    n_chunks = (n + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for i in range(c * MP_CHUNK, min(n, (c + 1) * MP_CHUNK)):
            s = indptr[i]
            e = indptr[i + 1]
            if op == 0:
                if mode == 2:
                    gather_max(out[i], X, indices, E, None, s, e, None, arg[i])
                else:
                    gather_min(out[i], X, indices, E, None, s, e, None, arg[i])
            else:
                if mode == 2:
                    gather_max_add(out[i], X, indices, E, None, s, e, None, arg[i])
                else:
                    gather_min_add(out[i], X, indices, E, None, s, e, None, arg[i])


@numba.njit(cache=True, parallel=True)
def _bwd_x_sum(t_indptr, t_indices, Gs, E, eid, pf, gX):
    """sum/mean grad_X over the transpose: ``gX[j] = Σ_{t in row j} Gs[i_t] ∘ E(eid[t])``
    (``E`` None: the plain sum of the rows, op add), ``Gs`` being grad_out
    already divided by the in-degree for mean; register gathers (``_simd``)."""
    n_src = t_indptr.shape[0] - 1
    n_chunks = (n_src + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for j in range(c * MP_CHUNK, min(n_src, (c + 1) * MP_CHUNK)):
            gather_wsum(gX[j], Gs, t_indices, E, eid, t_indptr[j], t_indptr[j + 1], pf)


@numba.njit(cache=True, parallel=True)
def _bwd_x_arg(t_indptr, t_indices, eid, G, E, arg, gX):
    """max/min grad_X: each edge passes ``grad_out ∘ E`` (op mul; ``E`` None
    for op add) on for the features it won (``_simd.gather_won``)."""
    n_src = t_indptr.shape[0] - 1
    n_chunks = (n_src + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for j in range(c * MP_CHUNK, min(n_src, (c + 1) * MP_CHUNK)):
            o = gX[j]
            o[:] = 0
            gather_won(o, G, t_indices, E, eid, t_indptr[j], t_indptr[j + 1], None, arg)


@numba.njit(cache=True, parallel=True, fastmath=_sddmm._FAST)
def _bwd_e_arg(indptr, indices, X, G, wide, op, arg, unit, gE):
    """max/min grad_E: the gradient of the features each edge won (for E of
    width 1 summed over them, reassociated in a fixed order as sddmm's dot)."""
    n = indptr.shape[0] - 1
    F = G.shape[1]
    n_chunks = (n + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for i in range(c * MP_CHUNK, min(n, (c + 1) * MP_CHUNK)):
            gi = G[i]
            ai = arg[i]
            for k in range(indptr[i], indptr[i + 1]):
                xr = X[indices[k]]
                ge = gE[k]
                part = unit[1]
                for f in range(F):
                    cf = gi[f] if ai[f] == k else unit[1]
                    if op == 0:
                        cf = cf * xr[f]
                    if wide:
                        ge[f] = cf
                    else:
                        part += cf
                if not wide:
                    ge[0] = part


@numba.njit(cache=True, parallel=True)
def _rows_per_edge(indptr, G, out):
    """``out[k] = G[i]`` for every edge k of row i."""
    n = indptr.shape[0] - 1
    F = G.shape[1]
    n_chunks = (n + MP_CHUNK - 1) // MP_CHUNK
    for c in prange(n_chunks):
        for i in range(c * MP_CHUNK, min(n, (c + 1) * MP_CHUNK)):
            gi = G[i]
            for k in range(indptr[i], indptr[i + 1]):
                o = out[k]
                for f in range(F):
                    o[f] = gi[f]


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
    _fwd_arg(g.indptr, g.indices, X, E2 if wide else E2.reshape(-1), _OP[op], mode, out, arg)
    return out, arg


def backward(g, grad_out, X, E, op, reduce, arg):
    mode = _REDUCE[reduce]
    F = grad_out.shape[1]
    E2 = _as2d(E)
    wide = E2.shape[1] != 1 or F == 1
    t = g.transpose()
    dt = grad_out.dtype
    if mode >= 2:
        unit = np.array([1, 0], dtype=dt)  # typed one/zero: keeps float32 arithmetic in float32
        gX = np.empty((g.n_src, F), dtype=dt)
        Ec = (E2 if wide else E2.reshape(-1)) if op == "mul" else None
        _bwd_x_arg(t.indptr, t.indices, t.edata["eid"], grad_out, Ec, arg, gX)
        gE = np.empty(E2.shape, dtype=dt)
        _bwd_e_arg(g.indptr, g.indices, X, grad_out, wide, _OP[op], arg, unit, gE)
        return gX, gE.reshape(E.shape)
    # sum/mean.  Gs = grad_out / in-degree (mean), the same bits as scaling each
    # product by 1/deg: then every gradient is a plain pull or a per-edge product.
    deg = np.diff(g.indptr)
    Gs = grad_out
    if mode == 1:
        scale = np.ones(g.n_nodes, dtype=dt)
        nz = deg > 0
        scale[nz] = dt.type(1) / deg[nz].astype(dt)
        Gs = grad_out * scale[:, None]
    Ec = (E2 if wide else E2.reshape(-1)) if op == "mul" else None
    gX = np.empty((g.n_src, F), dtype=dt)
    _bwd_x_sum(t.indptr, t.indices, Gs, Ec, t.edata["eid"], distance_for(t, F * grad_out.itemsize) or None, gX)
    if op == "add":                 # d(x + e)/de = 1: each edge gets its destination's gradient
        if wide:
            gE = np.empty(E2.shape, dtype=dt)
            _rows_per_edge(g.indptr, Gs, gE)
        else:
            gE = np.repeat(Gs.sum(axis=1), deg)
    elif wide:                      # gE[k] = Gs[i] ∘ X[j]
        gE = np.empty(E2.shape, dtype=dt)
        _sddmm._elementwise_fwd(g.indptr, g.indices, Gs, X, 2, gE)
    else:                           # gE[k] = Gs[i] · X[j]: sddmm's fixed-order vectorised dot
        gE = np.empty(g.nnz, dtype=dt)
        none = np.empty(0, dtype=dt)
        _sddmm._dot_fwd(g.indptr, g.indices, Gs, X, none, none, False, gE)
    return gX, gE.reshape(E.shape)
