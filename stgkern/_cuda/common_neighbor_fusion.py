"""GPU common_neighbor_fusion (csrc/cuda/common_neighbor_fusion.cu).

``g`` square with strictly ascending rows (checked by the front door).  Row
intersections by per-lane binary search; grad_X pulled over the cached
transpose, grad_edge_weight per destination row; no atomics.
"""
from __future__ import annotations

from ._loader import launch

OP = "common_neighbor_fusion"


def forward(g, X, edge_weight):
    import cupy as cp

    F = X.shape[1]
    out = cp.empty((g.nnz, F), dtype=X.dtype)
    launch(OP, "cnf_fwd", X.dtype, g.indices.dtype, g.n_nodes,
           (g.indptr, g.indices, edge_weight, X, out, g.n_nodes, F))
    return out


def backward(g, grad_out, X, edge_weight):
    import cupy as cp

    t = g.transpose()
    # the kernels type both index arrays alike; a Graph gives them one dtype, but be safe
    t_idx = t.indices if t.indices.dtype == g.indices.dtype else t.indices.astype(g.indices.dtype)
    F = X.shape[1]
    grad_X = cp.empty_like(X)
    launch(OP, "cnf_bwd_x", X.dtype, g.indices.dtype, g.n_nodes,
           (g.indptr, g.indices, t.indptr, t_idx, t.edata["eid"], edge_weight, grad_out, grad_X, g.n_nodes, F))
    if edge_weight is None:
        return grad_X, None
    grad_w = cp.empty(g.nnz, dtype=X.dtype)
    launch(OP, "cnf_bwd_w", X.dtype, g.indices.dtype, g.n_nodes,
           (g.indptr, g.indices, t.indptr, t_idx, t.edata["eid"], edge_weight, grad_out, X, grad_w,
            g.n_nodes, F))
    return grad_X, grad_w
