"""GPU twin of ``stgkern._numba.graph_conv``: the dense and elementwise parts of ``graph_conv``.

Same five names and contracts as the CPU module (see its docstring):

``matmul(A, W, out=None)`` / ``matmul_tn(A, B, colsum=False)``
    cuBLAS through CuPy (``A @ W``, ``A.T @ B`` on the transposed view: no
    copy).  Tall-skinny products with small weights are what cuBLAS does
    well; nothing here is worth hand-writing.
``linear2(A1, W1, A2, W2, bias=None, act=None)``
    ``A1 @ W1``, ``+= A2 @ W2``, then ``epilogue``: the CPU module does it in
    one pass; a cuBLAS gemm with beta=1 and a fused tail would here.
``epilogue(S, Z, bias, act)``
    One fused pass (csrc/cuda/graph_conv.cu ``gc_epilogue``) instead of the
    two to five CuPy passes of add, add bias and activation.
``activation_backward(grad_out, out, act, want_bias)``
    One pass (``gc_act_bwd``) forms ``G`` and per-tile bias partials; the
    tiles' partials are then summed by one CuPy reduction of a
    (n_tiles, F_out) array -- fixed shape, fixed order, so the bias gradient
    is reproducible run to run.
"""
from __future__ import annotations

import numpy as np

from ._loader import _threads, launch, launch_blocks

#: Activation codes shared with csrc/cuda/graph_conv.cu and stgkern._numba.graph_conv.
ACT = {None: 0, "relu": 1, "sigmoid": 2, "tanh": 3}
_IDX = np.int32  # no index arrays; one instantiation per value type
#: Rows per bias-gradient tile (one block each).
TILE_ROWS = 256


def matmul(A, W, out=None):
    import cupy as cp

    if out is None:
        return A @ W
    return cp.matmul(A, W, out=out)


def linear2(A1, W1, A2, W2, bias=None, act=None):
    out = A1 @ W1
    out += A2 @ W2    # cuBLAS has beta=1, but CuPy's matmul does not expose it
    return epilogue(out, None, bias, act)


def fused_forward(g, X, W_self, W_neigh, bias, w, mean, act):
    """Composition here (spmm, then ``linear2``); the CPU module fuses it."""
    from . import spmm

    agg, _ = spmm.forward(g, X, w, "mean" if mean else "sum")
    return linear2(X, W_self, agg, W_neigh, bias, act)


def fused_backward(g, G, X, W_self, W_neigh, want_bias, mean):
    """Composition here (AᵀG by spmm's backward, two ``matmul_tn``, ``linear2``)."""
    from . import spmm

    # spmm's backward reads its X argument only for edge-weight gradients: none here, G stands in
    AtG, _ = spmm.backward(g, G, G, None, "mean" if mean else "sum", None)
    grad_W_self, grad_bias = matmul_tn(X, G, colsum=want_bias)
    grad_W_neigh, _ = matmul_tn(X, AtG)
    return linear2(G, W_self.T, AtG, W_neigh.T), grad_W_self, grad_W_neigh, grad_bias


def matmul_tn(A, B, colsum=False):
    return A.T @ B, (B.sum(axis=0) if colsum else None)


def epilogue(S, Z, bias, act):
    import cupy as cp

    n, F = S.shape
    if n * F and (Z is not None or bias is not None or ACT[act]):
        if bias is not None:
            bias = cp.ascontiguousarray(bias)
        if Z is not None:
            Z = cp.ascontiguousarray(Z)
        launch("graph_conv", "gc_epilogue", S.dtype, _IDX, (n * F + 31) // 32,
               (S, Z, bias, n, F, np.int32(ACT[act])))
    return S


def activation_backward(grad_out, out, act, want_bias):
    import cupy as cp

    code = ACT[act]
    if code == 0 and not want_bias:
        return grad_out, None
    grad_out = cp.ascontiguousarray(grad_out)
    n, F = grad_out.shape
    G = cp.empty_like(grad_out) if code else grad_out
    n_tiles = (n + TILE_ROWS - 1) // TILE_ROWS
    partial = cp.empty((n_tiles, F), dtype=grad_out.dtype) if want_bias else None
    if n and F:
        threads = min(_threads(), (F + 31) // 32 * 32)
        launch_blocks("graph_conv", "gc_act_bwd", grad_out.dtype, _IDX, n_tiles,
                      (grad_out, cp.ascontiguousarray(out) if code else None, G, partial, n, F, np.int32(code),
                       np.int32(code != 0), TILE_ROWS), threads=threads)
    grad_bias = None
    if want_bias:
        grad_bias = partial.sum(axis=0) if n_tiles else cp.zeros(F, dtype=grad_out.dtype)
    return G, grad_bias
