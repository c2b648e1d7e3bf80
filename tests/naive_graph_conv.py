"""Slow, obviously-correct references for ``graph_conv`` (dense NumPy, float64).

Sum/mean aggregation is a dense matrix A (A[i, j] accumulates w[k] for every
edge k = j -> i, divided by the in-degree of i for mean); max/min loop over
each row's edges, ties to the lowest edge id.
"""
import numpy as np


def naive_gc_dense_adjacency(indptr, indices, n_src, w=None, mean=False):
    n = len(indptr) - 1
    A = np.zeros((n, n_src))
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            c = 1.0 if w is None else float(w[k])
            A[i, indices[k]] += c / deg if mean else c
    return A


def naive_gc_aggregate(indptr, indices, X, w, reduce):
    """``(agg, arg)``: agg (n, F) float64; arg winning edge id for max/min (-1 for empty rows)."""
    X = np.asarray(X, dtype=np.float64)
    n = len(indptr) - 1
    F = X.shape[1]
    if reduce in ("sum", "mean"):
        A = naive_gc_dense_adjacency(indptr, indices, X.shape[0], w, reduce == "mean")
        return A @ X, None
    agg = np.zeros((n, F))
    arg = np.full((n, F), -1, dtype=np.int64)
    for i in range(n):
        for f in range(F):
            best = None
            for k in range(indptr[i], indptr[i + 1]):
                v = (1.0 if w is None else float(w[k])) * X[indices[k], f]
                if best is None or (v > best if reduce == "max" else v < best):
                    best, arg[i, f] = v, k
            if best is not None:
                agg[i, f] = best
    return agg, arg


def naive_gc_activation(pre, activation):
    if activation is None:
        return pre.copy()
    if activation == "relu":
        return np.maximum(pre, 0.0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-pre))
    if activation == "tanh":
        return np.tanh(pre)
    raise ValueError(activation)


def naive_gc_activation_grad(pre, activation):
    """dσ/dpre, elementwise."""
    if activation is None:
        return np.ones_like(pre)
    if activation == "relu":
        return (pre > 0).astype(np.float64)
    s = naive_gc_activation(pre, activation)
    return s * (1 - s) if activation == "sigmoid" else 1 - s * s


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def naive_graph_conv(indptr, indices, X, W_self, W_neigh=None, bias=None, w=None, reduce="sum",
                     activation=None, return_pre=False):
    X, W_self, W_neigh, bias, w = map(_f64, (X, W_self, W_neigh, bias, w))
    agg, _ = naive_gc_aggregate(indptr, indices, X, w, reduce)
    pre = X @ W_self + (agg if W_neigh is None else agg @ W_neigh)
    if bias is not None:
        pre = pre + bias
    out = naive_gc_activation(pre, activation)
    return (out, pre) if return_pre else out


def naive_graph_conv_backward(indptr, indices, grad_out, X, W_self, W_neigh=None, bias=None, w=None,
                              reduce="sum", activation=None):
    """``(grad_X, grad_W_self, grad_W_neigh, grad_bias, grad_w)`` in float64, None where the input was None."""
    grad_out, X, W_self, W_neigh, bias, w = map(_f64, (grad_out, X, W_self, W_neigh, bias, w))
    _, pre = naive_graph_conv(indptr, indices, X, W_self, W_neigh, bias, w, reduce, activation, return_pre=True)
    G = grad_out * naive_gc_activation_grad(pre, activation)
    agg, arg = naive_gc_aggregate(indptr, indices, X, w, reduce)
    G_agg = G if W_neigh is None else G @ W_neigh.T
    gX = G @ W_self.T
    gw = np.zeros(len(indices))
    n = len(indptr) - 1
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            c = 1.0 if w is None else w[k]
            if reduce in ("sum", "mean"):
                m = G_agg[i] / (deg if reduce == "mean" else 1)
            else:
                m = np.where(arg[i] == k, G_agg[i], 0.0)
            gX[j] += c * m
            gw[k] = m @ X[j]
    return (gX, X.T @ G, None if W_neigh is None else agg.T @ G,
            None if bias is None else G.sum(axis=0), None if w is None else gw)
