"""GPU message_passing: ``out[i] = REDUCE_{k in row i} X[indices[k]] (op) E[k]`` (csrc/cuda/message_passing.cu).

E is (nnz, F) or (nnz,)/(nnz, 1), broadcast over features.  Same geometry as
spmm (the vector kernel for a per-edge scalar E only); grad_X is pulled over the cached transpose, grad_E is written per edge.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch, launch_blocks, long_rows
from .spmm import REDUCE, launch_vec, vector_group

OP = {"mul": 0, "add": 1}


def _e_width(E, F):
    return 1 if E.ndim == 1 or E.shape[1] == 1 else F


def forward(g, X, E, op, reduce, out=None):
    import cupy as cp

    n, F = g.n_nodes, X.shape[1]
    out = cp.empty((n, F), dtype=X.dtype) if out is None else out
    arg = cp.empty((n, F), dtype=np.int64) if reduce in ("max", "min") else None
    width, code, opc = np.int32(_e_width(E, F)), np.int32(REDUCE[reduce]), np.int32(OP[op])
    threshold, rows = long_rows(g)
    group = vector_group(X, out) if width == 1 else 0  # the vector kernel takes one E value per edge
    if group:
        launch_vec("message_passing", "mp_fwd_vec", X.dtype, g, group,
                   (g.indptr, g.indices, X, E, opc, out, arg, n, F, code, threshold))
    else:
        launch("message_passing", "mp_fwd", X.dtype, g.indices.dtype, n,
               (g.indptr, g.indices, X, E, width, opc, out, arg, n, F, code, threshold))
    launch_blocks("message_passing", "mp_fwd_long", X.dtype, g.indices.dtype, rows.shape[0],
                  (rows, g.indptr, g.indices, X, E, width, opc, out, arg, F, code))
    return out, arg


def backward(g, grad_out, X, E, op, reduce, arg):
    import cupy as cp

    t = g.transpose()
    F = grad_out.shape[1]
    width = np.int32(_e_width(E, F))
    code = np.int32(REDUCE[reduce])
    grad_X = cp.empty((g.n_src, F), dtype=grad_out.dtype)
    launch("message_passing", "mp_bwd_x", grad_out.dtype, t.indices.dtype, g.n_src,
           (g.indptr, t.indptr, t.indices, t.edata["eid"], grad_out, E, width, np.int32(OP[op]), arg, grad_X,
            g.n_src, F, code))
    grad_E = cp.empty(E.shape, dtype=grad_out.dtype)
    launch("message_passing", "mp_bwd_e", grad_out.dtype, g.indices.dtype, g.n_nodes,
           (g.indptr, g.indices, X, grad_out, width, np.int32(OP[op]), arg, grad_E, g.n_nodes, F, code))
    return grad_X, grad_E
