"""GPU score_cross_entropy (csrc/cuda/score_cross_entropy.cu): cuBLAS forms a logit tile, a CUDA kernel reduces it.

Items are cut into tiles of ``w`` columns, ``w = min(n_items, TILE_VALUES // m)``,
so the only temporary of size m·n is one reused (m, w) tile of at most
``TILE_VALUES`` (64M) values — 256 MiB in float32 — however large the
catalogue.  (``block``, ``config.score_block_items``, sizes the CPU's
cache-resident blocks; on the GPU a tile that small would leave cuBLAS idle,
so it is not used here.)  For each tile, in ascending item order:

* forward: ``cupy.matmul`` writes the tile, ``sce_tile_lse`` (one warp per
  row) reduces it to a per-row (max, Σ exp(· - max)) pair in float64, and
  the pairs of all tiles are merged with CuPy in tile order into the
  log-sum-exp — the same merge as the CPU kernel, and deterministic;
* backward: the tile is formed again, ``sce_tile_grad`` turns it into
  ``g_r (softmax - onehot)`` in place, and it feeds the three products:
  ``tile.T @ Q`` is this tile's rows of ``grad_items`` (written once),
  ``tile @ items[s:e]`` is added into ``grad_Q`` in tile order, and
  ``tile.sum(0)`` is this tile's slice of ``grad_bias``.

The (m, n_items) score matrix is never stored (unless ``keep`` asks the
forward to return it: then it is one tile of width n_items, and the backward
turns that tile into its gradient in place instead of forming it again) and
no atomics are used.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch

#: Largest logit tile, in values (64M: 256 MiB float32, 512 MiB float64).
TILE_VALUES = 1 << 26


def _width(m: int, n: int) -> int:
    return max(1, min(n, TILE_VALUES // max(1, m)))


def _tiles(n: int, w: int):
    return [(s, min(n, s + w)) for s in range(0, n, w)]


def forward(Q, items, target, bias, block, keep=False):
    """``(loss, lse, logits)``: per-row loss (Q's dtype), log-sum-exp (float64) and, with
    ``keep``, the (m, n_items) product ``Q @ items.T`` (else None); inputs validated and contiguous."""
    import cupy as cp

    m, n = Q.shape[0], items.shape[0]
    if m == 0:
        return cp.zeros(0, Q.dtype), cp.zeros(0, np.float64), (cp.zeros((0, n), Q.dtype) if keep else None)
    w = n if keep else _width(m, n)
    tiles = _tiles(n, w)
    tmax = cp.empty((len(tiles), m), np.float64)
    tsum = cp.empty((len(tiles), m), np.float64)
    buf = cp.empty(m * w, Q.dtype)
    for k, (s, e) in enumerate(tiles):
        L = buf[:m * (e - s)].reshape(m, e - s)
        cp.matmul(Q, items[s:e].T, out=L)
        launch("score_cross_entropy", "sce_tile_lse", Q.dtype, np.int64, m,
               (L, bias, s, tmax[k], tsum[k], m, e - s))
    top = tmax.max(axis=0)
    lse = top + cp.log((tsum * cp.exp(tmax - top)).sum(axis=0))
    # the target's logit as a float64 dot, as on the CPU (the tile's value up to rounding)
    t_logit = (Q.astype(np.float64) * items[target].astype(np.float64)).sum(axis=1)
    if bias is not None:
        t_logit += bias[target]
    return (lse - t_logit).astype(Q.dtype), lse, (buf.reshape(m, n) if keep else None)


def backward(grad_loss, Q, items, target, lse, bias, block, logits=None):
    """``(grad_Q, grad_items, grad_bias or None)``; ``grad_loss`` in Q's dtype, ``lse`` float64;
    ``logits`` (m, n_items), when given, is ``Q @ items.T`` from the forward, overwritten in place."""
    import cupy as cp

    m, n = Q.shape[0], items.shape[0]
    gQ = cp.zeros_like(Q)
    gE = cp.empty_like(items)
    gb = None if bias is None else cp.empty(n, Q.dtype)
    if m == 0:
        gE[...] = 0
        if gb is not None:
            gb[...] = 0
        return gQ, gE, gb
    if logits is not None:
        launch("score_cross_entropy", "sce_tile_grad", Q.dtype, np.int64, m,
               (logits, bias, target, lse, grad_loss, 0, m, n))
        cp.matmul(logits.T, Q, out=gE)
        cp.matmul(logits, items, out=gQ)
        if gb is not None:
            logits.sum(axis=0, out=gb)
        return gQ, gE, gb
    w = _width(m, n)
    buf = cp.empty(m * w, Q.dtype)
    tmp = cp.empty_like(Q)
    for s, e in _tiles(n, w):
        L = buf[:m * (e - s)].reshape(m, e - s)
        cp.matmul(Q, items[s:e].T, out=L)
        launch("score_cross_entropy", "sce_tile_grad", Q.dtype, np.int64, m,
               (L, bias, target, lse, grad_loss, s, m, e - s))
        cp.matmul(L.T, Q, out=gE[s:e])
        cp.matmul(L, items[s:e], out=tmp)
        gQ += tmp                                  # tile order: fixed
        if gb is not None:
            L.sum(axis=0, out=gb[s:e])
    return gQ, gE, gb
