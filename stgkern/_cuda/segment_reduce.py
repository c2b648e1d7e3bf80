"""GPU segment_reduce over row ranges ``ptr[s]:ptr[s+1]`` (csrc/cuda/segment_reduce.cu).

``arg`` is (n_seg, F) int64 for max and last (winning row, -1 when empty), as on the CPU.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch

REDUCE = {"sum": 0, "mean": 1, "max": 2, "last": 3}
_IDX = np.int32  # the kernels read no column indices; one instantiation serves all graphs


def forward(X, ptr, reduce):
    import cupy as cp

    n_seg, F = ptr.shape[0] - 1, X.shape[1]
    out = cp.empty((n_seg, F), dtype=X.dtype)
    arg = cp.empty((n_seg, F), dtype=np.int64) if reduce in ("max", "last") else None
    launch("segment_reduce", "segment_reduce_fwd", X.dtype, _IDX, n_seg,
           (ptr, X, out, arg, n_seg, F, np.int32(REDUCE[reduce])))
    return out, arg


def backward(grad_out, X, ptr, reduce, arg):
    import cupy as cp

    n_seg, F = ptr.shape[0] - 1, grad_out.shape[1]
    grad_X = cp.zeros(X.shape, dtype=grad_out.dtype)
    launch("segment_reduce", "segment_reduce_bwd", grad_out.dtype, _IDX, n_seg,
           (ptr, grad_out, arg, grad_X, n_seg, F, np.int32(REDUCE[reduce])))
    return grad_X
