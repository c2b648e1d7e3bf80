"""GPU edge_softmax over each destination row (csrc/cuda/edge_softmax.cu); scores (nnz,) or (nnz, H)."""
from __future__ import annotations

from ._loader import launch


def _heads(a):
    return 1 if a.ndim == 1 else a.shape[1]


def forward(g, scores):
    import cupy as cp

    out = cp.empty_like(scores)
    H = _heads(scores)
    launch("edge_softmax", "edge_softmax_fwd", scores.dtype, g.indices.dtype, g.n_nodes * H,
           (g.indptr, scores, out, g.n_nodes, H))
    return out


def backward(g, grad_out, out):
    import cupy as cp

    grad = cp.empty_like(out)
    H = _heads(out)
    launch("edge_softmax", "edge_softmax_bwd", out.dtype, g.indices.dtype, g.n_nodes * H,
           (g.indptr, grad_out, out, grad, g.n_nodes, H))
    return grad
