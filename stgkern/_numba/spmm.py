"""Numba CPU kernels for ``spmm`` (row-parallel pull, deterministic; sum/mean fold edges pairwise).

Backend contract (identical for ``stgkern._cuda.spmm``):

``forward(g, X, edge_weight, reduce, out=None) -> (out, arg)``
    ``out`` (n_nodes, F) in X's dtype; ``arg`` (n_nodes, F) int64 winning CSR
    edge id (-1 for empty rows) for max/min, else None.
``backward(g, grad_out, X, edge_weight, reduce, arg, out=None, accumulate=False) -> (grad_X, grad_edge_weight)``
    ``grad_X`` (n_src, F), written into ``out`` when given (added to it with
    ``accumulate``); ``grad_edge_weight`` (nnz,) or None when
    ``edge_weight`` is None.

Inputs arrive validated and C-contiguous; ``edge_weight`` already has X's dtype.
Each output row is written by exactly one ``prange`` iteration, so results are
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
from ._simd import gather_max, gather_min, gather_won, gather_wsum
from ._twin import twin, use_threads

_REDUCE = {"sum": 0, "mean": 1, "max": 2, "min": 3}


_CHUNK = 256  # rows per parallel task: contiguous ranges


@numba.njit(cache=True, parallel=True)
def _fwd_arg(indptr, indices, X, w, mode, out, arg):
    """max/min: each row's winner per feature and its edge id, in vector
    registers (``_simd.gather_max``/``gather_min``: lowest id on ties, 0 and
    -1 for empty rows)."""
    n = indptr.shape[0] - 1
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
            if mode == 2:
                gather_max(out[i], X, indices, w, None, indptr[i], indptr[i + 1], None, arg[i])
            else:
                gather_min(out[i], X, indices, w, None, indptr[i], indptr[i + 1], None, arg[i])


@numba.njit(cache=True, inline="always")
def row_sum(indptr, indices, X, w, mean, pf, i, o):
    """``o[:] = Σ_{k in row i} w[k]·X[indices[k]]`` (``w`` None: plain sum;
    ``w`` (nnz, F): ``w[k] ∘ X[indices[k]]``, message_passing's mul; / in-degree
    with ``mean``).

    Edges folded two at a time in CSR order (``_simd.gather_wsum``: the
    partial sums stay in vector registers), so the bits do not depend on who
    calls it or on the thread count; ``pf`` as in ``_fwd_sum``.  Shared by
    spmm's forward and backward and the fused graph_conv forward and
    backward (the backward passes the transpose with ``transposed_coef``).
    """
    s = indptr[i]
    e = indptr[i + 1]
    gather_wsum(o, X, indices, w, None, s, e, pf)
    if mean:
        divide_row(o, e - s)


@numba.njit(cache=True, inline="always")
def divide_row(o, d):
    """``o /= d`` for a row sum over ``d`` edges (nothing for an empty row)."""
    if d > 0:
        for f in range(o.shape[0]):
            o[f] = o[f] / d  # float64 divide of the sum: correctly rounded


@numba.njit(cache=True, parallel=True)
def _t_coef(t_indices, eid, w, has_w, deg, mean, one, out):
    for t in prange(out.shape[0]):
        c = w[eid[t]] if has_w else one[0]
        if mean:
            c = c / deg[t_indices[t]]
        out[t] = c


def transposed_coef(g, t, w, mean, dtype):
    """What each edge of the transpose ``t`` of ``g`` multiplies its row by
    in a backward pull: ``w[eid]`` (1 without weights), divided by the
    in-degree of the edge's destination in ``g`` with ``mean``, in ``dtype``
    (float32 arithmetic stays float32); None when every coefficient is 1."""
    if w is None and not mean:
        return None
    c = np.empty(t.nnz, dtype=dtype)
    deg = np.diff(g.indptr).astype(dtype)
    _t_coef(t.indices, t.edata["eid"], w if w is not None else np.empty(1, dtype), w is not None, deg, bool(mean),
            np.ones(1, dtype), c)
    return c


@twin()
def _fwd_sum(indptr, indices, X, w, mean, pf, out, parallel):
    """sum/mean: each output row formed in vector registers and stored once.

    ``row_sum`` folds the row's edges two at a time (``o += w0*x0 + w1*x1``)
    with the partial sums in registers (``_simd``); the pairing is fixed by
    the CSR order, so every run and thread count gives the same bits.  Before,
    the partial sums lived in an L1 scratch row: 44 against 32 ms on the
    2M-event window graph, 131 against 104 ms on the 500k/8M power-law graph
    (F = 64 float32, two threads, same process, bit-identical output).
    ``pf`` (an int) prefetches the rows that edges ``pf`` ahead will read
    (``_prefetch.distance_for``); None compiles a version without the
    prefetch.  A twin (``_twin``): with ``parallel`` false the same loop runs
    serially, from a compilation without the parfor passes (the demo's
    closed form calls it on one thread).
    """
    n = indptr.shape[0] - 1
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    if parallel:
        for c in prange(n_chunks):
            _fwd_sum_chunk(indptr, indices, X, w, mean, pf, out, np.int64(c), n)
    else:
        for c in range(n_chunks):
            _fwd_sum_chunk(indptr, indices, X, w, mean, pf, out, c, n)


@numba.njit(cache=True)
def _fwd_sum_chunk(indptr, indices, X, w, mean, pf, out, c, n):
    """Rows ``[c * _CHUNK, (c + 1) * _CHUNK)`` of ``_fwd_sum``: called from both of its loops, not
    inlined into each (as window_graph's chunk functions; the same speed on 200k rows × 64, one
    and two threads)."""
    for i in range(c * _CHUNK, min(n, (c + 1) * _CHUNK)):
        row_sum(indptr, indices, X, w, mean, pf, i, out[i])


@numba.njit(cache=True, parallel=True)
def _bwd_x_sum(t_indptr, t_indices, coef, G, pf, accumulate, gX):
    """grad_X rows over the transpose, as ``_fwd_sum`` does the forward, with
    ``coef = transposed_coef(...)``; with ``accumulate`` the row is formed in
    a scratch row and added."""
    n_src = t_indptr.shape[0] - 1
    F = G.shape[1]
    n_chunks = (n_src + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        o = np.empty(F, dtype=gX.dtype)
        for j in range(c * _CHUNK, min(n_src, (c + 1) * _CHUNK)):
            if accumulate:
                row_sum(t_indptr, t_indices, G, coef, False, pf, j, o)
                dst = gX[j]
                for f in range(F):
                    dst[f] += o[f]
            else:
                row_sum(t_indptr, t_indices, G, coef, False, pf, j, gX[j])


@numba.njit(cache=True, parallel=True)
def _bwd_x_arg(t_indptr, t_indices, eid, G, w, arg, accumulate, gX):
    """max/min grad_X over the transpose: each edge passes ``w·grad_out`` on
    for the features it won (``_simd.gather_won``, in registers)."""
    n_src = t_indptr.shape[0] - 1
    n_chunks = (n_src + _CHUNK - 1) // _CHUNK
    for c in prange(n_chunks):
        for j in range(c * _CHUNK, min(n_src, (c + 1) * _CHUNK)):
            o = gX[j]
            if not accumulate:
                o[:] = 0
            gather_won(o, G, t_indices, w, eid, t_indptr[j], t_indptr[j + 1], None, arg)


@numba.njit(cache=True, parallel=True, fastmath=_sddmm._FAST)
def _bwd_w_arg(indptr, indices, G, X, arg, gw):
    """max/min: ``gw[k] = Σ_{f won by edge k} G[i, f]·X[j, f]``, reassociated
    in a fixed compile-time order so it vectorises, as sddmm's dot (a
    sequential float64 sum took 660 ms on the 2M-event window graph)."""
    n = indptr.shape[0] - 1
    F = X.shape[1]
    zero = X.dtype.type(0)
    for i in prange(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            acc = zero
            for f in range(F):
                acc += G[i, f] * X[j, f] if arg[i, f] == k else zero
            gw[k] = acc


@numba.njit(cache=True, parallel=True)
def _per_in_degree(indptr, gw):
    """``gw[k] /= in-degree of edge k's destination`` (mean)."""
    n = indptr.shape[0] - 1
    for i in prange(n):
        s = indptr[i]
        e = indptr[i + 1]
        for k in range(s, e):
            gw[k] = gw[k] / (e - s)


def forward(g, X, edge_weight, reduce, out=None):
    mode = _REDUCE[reduce]
    n, F = g.n_nodes, X.shape[1]
    out = np.empty((n, F), dtype=X.dtype) if out is None else out
    if mode <= 1:
        _fwd_sum(g.indptr, g.indices, X, edge_weight, mode == 1, distance_for(g, X.shape[1] * X.itemsize) or None, out,
                 use_threads(n))
        return out, None
    arg = np.empty((n, F), dtype=np.int64)
    _fwd_arg(g.indptr, g.indices, X, edge_weight, mode, out, arg)
    return out, arg


def backward(g, grad_out, X, edge_weight, reduce, arg, out=None, accumulate=False):
    mode = _REDUCE[reduce]
    t = g.transpose()
    has_w = edge_weight is not None
    gX = np.empty((g.n_src, X.shape[1]), dtype=X.dtype) if out is None else out
    if mode <= 1:
        _bwd_x_sum(t.indptr, t.indices, transposed_coef(g, t, edge_weight, mode == 1, X.dtype), grad_out,
                   distance_for(t, grad_out.shape[1] * grad_out.itemsize) or None, accumulate, gX)
    else:
        _bwd_x_arg(t.indptr, t.indices, t.edata["eid"], grad_out, edge_weight, arg, accumulate, gX)
    gw = None
    if has_w:
        gw = np.empty(g.nnz, dtype=X.dtype)
        if mode <= 1:
            # grad_w[k] = grad_out[i]·X[j]: sddmm's dot, vectorised in a fixed order
            none = np.empty(0, dtype=X.dtype)
            _sddmm._dot_fwd(g.indptr, g.indices, grad_out, X, none, none, False, gw)
            if mode == 1:
                _per_in_degree(g.indptr, gw)
        else:
            _bwd_w_arg(g.indptr, g.indices, grad_out, X, arg, gw)
    return gX, gw
