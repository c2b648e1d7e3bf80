"""GPU spmm: ``out[i] = REDUCE_{k in row i} w[k] * X[indices[k]]`` (csrc/cuda/spmm.cu).

Forward: short rows take the 16-byte vector kernel where F and alignment
allow (a group of lanes per row, ``vector_group``), else one warp per row;
one block per row longer than ``config.cuda_long_row``.  Backward: grad_X pulled over the
cached transpose ``g.transpose()`` (no atomics), grad_w one warp-dot per edge.
"""
from __future__ import annotations

import numpy as np

from .. import config
from ._loader import launch, launch_blocks, long_rows

REDUCE = {"sum": 0, "mean": 1, "max": 2, "min": 3}


def _address(a) -> int:
    iface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    return int(iface["data"][0])


def vector_group(X, out) -> int:
    """Lanes per row for the vector kernel (a power of two <= 32, about F / width), or 0 when
    it does not apply (F not a multiple of 16 bytes, a misaligned X view, config.cuda_vector_loads off)."""
    F = X.shape[1]
    width = 16 // X.dtype.itemsize
    if not config.cuda_vector_loads or F == 0 or F % width or _address(X) % 16 or _address(out) % 16:
        return 0
    group = 1
    while group < F // width and group < 32:
        group *= 2
    return group


def launch_vec(op, kernel, dtype, g, group, args) -> None:
    """Launch the vector kernel ``kernel`` over g's rows, ``group`` lanes a row (32 / group rows a warp)."""
    rows_per_warp = 32 // group
    launch(op, kernel, dtype, g.indices.dtype, (g.n_nodes + rows_per_warp - 1) // rows_per_warp,
           (*args, np.int32(group)))


def forward(g, X, edge_weight, reduce, out=None):
    import cupy as cp

    n, F = g.n_nodes, X.shape[1]
    out = cp.empty((n, F), dtype=X.dtype) if out is None else out
    arg = cp.empty((n, F), dtype=np.int64) if reduce in ("max", "min") else None
    code = np.int32(REDUCE[reduce])
    threshold, rows = long_rows(g)
    group = vector_group(X, out)
    if group:
        launch_vec("spmm", "spmm_fwd_vec", X.dtype, g, group,
                   (g.indptr, g.indices, X, edge_weight, out, arg, n, F, code, threshold))
    else:
        launch("spmm", "spmm_fwd", X.dtype, g.indices.dtype, n,
               (g.indptr, g.indices, X, edge_weight, out, arg, n, F, code, threshold))
    launch_blocks("spmm", "spmm_fwd_long", X.dtype, g.indices.dtype, rows.shape[0],
                  (rows, g.indptr, g.indices, X, edge_weight, out, arg, F, code))
    return out, arg


def backward(g, grad_out, X, edge_weight, reduce, arg, out=None, accumulate=False):
    import cupy as cp

    t = g.transpose()
    F = grad_out.shape[1]
    grad_X = cp.empty((g.n_src, F), dtype=grad_out.dtype) if out is None or accumulate else out
    launch("spmm", "spmm_bwd_x", grad_out.dtype, t.indices.dtype, g.n_src,
           (g.indptr, t.indptr, t.indices, t.edata["eid"], grad_out, edge_weight, arg, grad_X, g.n_src, F,
            np.int32(REDUCE[reduce])))
    grad_w = None
    if edge_weight is not None:
        grad_w = cp.empty(g.nnz, dtype=grad_out.dtype)
        launch("spmm", "spmm_bwd_w", grad_out.dtype, g.indices.dtype, g.n_nodes,
               (g.indptr, g.indices, X, grad_out, arg, grad_w, g.n_nodes, F, np.int32(REDUCE[reduce])))
    if accumulate:
        out += grad_X
        grad_X = out
    return grad_X, grad_w
