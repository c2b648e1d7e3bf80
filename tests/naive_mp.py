"""Slow references for fused message_passing (plain loops, float64)."""
import numpy as np


def _edge_matrix(E, nnz, F):
    E = np.asarray(E, dtype=np.float64)
    E = E.reshape(nnz, 1) if E.ndim == 1 else E
    return np.broadcast_to(E, (nnz, F))


def naive_message_passing(indptr, indices, X, E, op, reduce):
    """(out (n, F) float64, arg (n, F) int64 or None); arg = lowest winning edge id, -1 empty."""
    n, F = len(indptr) - 1, X.shape[1]
    Ev = _edge_matrix(E, len(indices), F)
    out = np.zeros((n, F))
    arg = np.full((n, F), -1, np.int64)
    for i in range(n):
        for f in range(F):
            best = None
            total = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                x = float(X[indices[k], f])
                m = x * Ev[k, f] if op == "mul" else x + Ev[k, f]
                total += m
                if best is None or (m > best[0] if reduce == "max" else m < best[0]):
                    best = (m, k)
            deg = indptr[i + 1] - indptr[i]
            if reduce == "sum":
                out[i, f] = total
            elif reduce == "mean":
                out[i, f] = total / deg if deg else 0.0
            elif best is not None:
                out[i, f], arg[i, f] = best
    return out, (arg if reduce in ("max", "min") else None)


def naive_message_passing_backward(indptr, indices, grad_out, X, E, op, reduce, arg):
    """(grad_X (n_src, F), grad_E shaped like E), float64."""
    n, F = len(indptr) - 1, grad_out.shape[1]
    nnz = len(indices)
    Ev = _edge_matrix(E, nnz, F)
    gX = np.zeros(X.shape)
    gE = np.zeros((nnz, F))
    for i in range(n):
        deg = indptr[i + 1] - indptr[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            for f in range(F):
                c = float(grad_out[i, f])
                if reduce == "mean":
                    c /= deg
                if reduce in ("max", "min") and arg[i, f] != k:
                    c = 0.0
                gX[j, f] += c * (Ev[k, f] if op == "mul" else 1.0)
                gE[k, f] = c * (float(X[j, f]) if op == "mul" else 1.0)
    E = np.asarray(E)
    if E.ndim == 1 or E.shape[1] == 1:
        return gX, gE.sum(axis=1).reshape(E.shape)
    return gX, gE
