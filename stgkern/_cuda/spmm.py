"""GPU spmm: ``out[i] = REDUCE_{k in row i} w[k] * X[indices[k]]`` (csrc/cuda/spmm.cu).

Forward: one warp per destination row, one block per row longer than
``config.cuda_long_row``.  Backward: grad_X pulled over the
cached transpose ``g.transpose()`` (no atomics), grad_w one warp-dot per edge.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch, launch_blocks, long_rows

REDUCE = {"sum": 0, "mean": 1, "max": 2, "min": 3}


def forward(g, X, edge_weight, reduce):
    import cupy as cp

    n, F = g.n_nodes, X.shape[1]
    out = cp.empty((n, F), dtype=X.dtype)
    arg = cp.empty((n, F), dtype=np.int64) if reduce in ("max", "min") else None
    code = np.int32(REDUCE[reduce])
    threshold, rows = long_rows(g)
    launch("spmm", "spmm_fwd", X.dtype, g.indices.dtype, n,
           (g.indptr, g.indices, X, edge_weight, out, arg, n, F, code, threshold))
    launch_blocks("spmm", "spmm_fwd_long", X.dtype, g.indices.dtype, rows.shape[0],
                  (rows, g.indptr, g.indices, X, edge_weight, out, arg, F, code))
    return out, arg


def backward(g, grad_out, X, edge_weight, reduce, arg):
    import cupy as cp

    t = g.transpose()
    F = grad_out.shape[1]
    grad_X = cp.empty((g.n_src, F), dtype=grad_out.dtype)
    launch("spmm", "spmm_bwd_x", grad_out.dtype, t.indices.dtype, g.n_src,
           (g.indptr, t.indptr, t.indices, t.edata["eid"], grad_out, edge_weight, arg, grad_X, g.n_src, F,
            np.int32(REDUCE[reduce])))
    grad_w = None
    if edge_weight is not None:
        grad_w = cp.empty(g.nnz, dtype=grad_out.dtype)
        launch("spmm", "spmm_bwd_w", grad_out.dtype, g.indices.dtype, g.n_nodes,
               (g.indptr, g.indices, X, grad_out, arg, grad_w, g.n_nodes, F, np.int32(REDUCE[reduce])))
    return grad_X, grad_w
