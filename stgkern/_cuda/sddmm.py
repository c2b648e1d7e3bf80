"""GPU sddmm (csrc/cuda/sddmm.cu): per-edge dot/cosine scores or add/sub/mul features.

The backward reuses the spmm, message_passing and segment_reduce kernels:
grad_X pulls over the rows of ``g``, grad_Y over the cached transpose, with
per-edge coefficients computed by CuPy elementwise ops (deterministic).
"""
from __future__ import annotations

import numpy as np

from . import message_passing, segment_reduce, spmm
from ._loader import launch

OP = {"dot": 0, "cosine": 1, "add": 2, "sub": 3, "mul": 4}


def forward(g, X, Y, op):
    import cupy as cp

    F = X.shape[1]
    shape = (g.nnz,) if op in ("dot", "cosine") else (g.nnz, F)
    out = cp.empty(shape, dtype=X.dtype)
    launch("sddmm", "sddmm_fwd", X.dtype, g.indices.dtype, g.n_nodes,
           (g.indptr, g.indices, X, Y, out, g.n_nodes, F, np.int32(OP[op])))
    return out


def _row_sum(values, ptr):
    """Per-row sum of per-edge scalars, in edge order (segment_reduce kernel)."""
    return segment_reduce.forward(values.reshape(-1, 1), ptr, "sum")[0]


def backward(g, grad_out, X, Y, op):
    import cupy as cp

    t = g.transpose()
    eid = t.edata["eid"]
    if op == "dot":
        grad_X = spmm.forward(g, Y, grad_out, "sum")[0]
        grad_Y = spmm.forward(t, X, cp.ascontiguousarray(grad_out[eid]), "sum")[0]
        return grad_X, grad_Y
    if op == "cosine":
        c = forward(g, X, Y, "cosine")
        nx = cp.sqrt((X * X).sum(axis=1))
        ny = cp.sqrt((Y * Y).sum(axis=1))
        i = g.dst().astype(np.int64)
        j = g.indices.astype(np.int64)
        a, b = nx[i], ny[j]
        ok = (a > 0) & (b > 0)
        one = cp.ones((), dtype=X.dtype)
        a_s, b_s = cp.where(ok, a, one), cp.where(ok, b, one)
        alpha = cp.where(ok, grad_out / (a_s * b_s), 0).astype(X.dtype)
        beta_x = cp.where(ok, -grad_out * c / (a_s * a_s), 0).astype(X.dtype)
        beta_y = cp.where(ok, -grad_out * c / (b_s * b_s), 0).astype(X.dtype)
        grad_X = spmm.forward(g, Y, alpha, "sum")[0] + _row_sum(beta_x, g.indptr) * X
        grad_Y = (spmm.forward(t, X, cp.ascontiguousarray(alpha[eid]), "sum")[0]
                  + _row_sum(cp.ascontiguousarray(beta_y[eid]), t.indptr) * Y)
        return grad_X, grad_Y
    go_t = cp.ascontiguousarray(grad_out[eid])
    if op == "mul":
        grad_X = message_passing.forward(g, Y, grad_out, "mul", "sum")[0]
        grad_Y = message_passing.forward(t, X, go_t, "mul", "sum")[0]
        return grad_X, grad_Y
    grad_X = segment_reduce.forward(grad_out, g.indptr, "sum")[0]
    grad_Y = segment_reduce.forward(go_t, t.indptr, "sum")[0]
    if op == "sub":
        grad_Y = -grad_Y
    return grad_X, grad_Y
