"""CPU kernels of ``stgkern.torch.STGConv``'s fused aggregation (float32 batches).

The layer's composite is ``w = exp(-dt / τ[κ])``, ``spmm(W_neigh x, w)``,
``segment_reduce(w)``, a division and two additions, each a torch op or a
kernel call with its own pass and autograd node, and the backward mirrors
them (a gather and scatter of the per-edge ``w`` and its gradient, the
transposed pull, the segment sum's backward, the division's two terms).  On
a training batch (~1,300 nodes, ~9,000 edges) the arithmetic is tens of
microseconds and the passes and calls are the cost, so here it is one pass
forward and one backward:

``forward``
    per row ``i``: ``w_k = exp(-dt_k · inv_tau[κ_k])`` for its in-edges,
    ``Z_i = Σ w_k + eps`` (1 without normalisation), ``agg_i = Σ w_k
    Yn[src_k] / Z_i`` and ``out_i = agg_i + Ys_i + bias``, where ``Y = [Yn |
    Ys]`` is ``x @ [W_neigh; W_self]ᵀ`` (one GEMM for both transforms).
``backward``
    rows: ``Gs_i = G_i / Z_i``; each edge's ``dw_k = Gs_i · Yn[src_k] - Gs_i ·
    agg_i`` (the second term only with normalisation), its share of
    ``d log τ[κ] = Σ dw_k w_k dt_k inv_tau[κ]`` (float64 sums) and of
    ``d dt_k = -dw_k w_k inv_tau[κ]``; ``dYs = G``; ``dYn[src_k] += w_k Gs_i``
    (a scatter: the loop is serial, so no transpose is needed).

Serial loops: the layer takes this path for graphs of up to
``stgkern.torch.STGCONV_FUSED_MAX_NNZ`` edges, where threads cost more than
the work; larger graphs keep the parallel spmm path.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .sddmm import _FAST          # the edge dot products reassociated (in a fixed order) so they vectorise


@numba.njit(cache=True)
def forward(indptr, indices, dt, kappa, inv_tau, Y, bias, normalize, eps, out, agg, w, Z):
    n, F = out.shape
    acc = np.empty(F, out.dtype)
    one = out.dtype.type(1.0)
    for i in range(n):
        acc[:] = 0
        z = out.dtype.type(0.0)
        for k in range(indptr[i], indptr[i + 1]):
            wk = math.exp(-dt[k] * inv_tau[kappa[k]])
            w[k] = wk
            z += wk
            src = Y[indices[k]]
            for f in range(F):
                acc[f] += wk * src[f]
        zi = z + eps if normalize else one
        Z[i] = zi
        for f in range(F):
            a = acc[f] / zi
            agg[i, f] = a
            out[i, f] = a + Y[i, F + f] + bias[f]


@numba.njit(cache=True, fastmath=_FAST)
def backward(indptr, indices, dt, kappa, inv_tau, Y, agg, w, Z, G, normalize, Gs, dY, ddt, dlt):
    n, F = G.shape
    dY[:, :F] = 0
    for i in range(n):
        zi = Z[i]
        c = G.dtype.type(0.0)
        for f in range(F):
            g = G[i, f] / zi
            Gs[f] = g
            dY[i, F + f] = G[i, f]
            c += g * agg[i, f]
        if not normalize:
            c = G.dtype.type(0.0)
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            src = Y[j]
            dot = G.dtype.type(0.0)
            for f in range(F):
                dot += Gs[f] * src[f]
            d = dot - c
            q = kappa[k]
            s = d * w[k] * inv_tau[q]
            ddt[k] = -s
            dlt[q] += np.float64(s) * np.float64(dt[k])
            wk = w[k]
            dst = dY[j]
            for f in range(F):
                dst[f] += wk * Gs[f]
