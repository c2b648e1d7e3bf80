"""Segment reductions over contiguous row ranges ``ptr[s]:ptr[s+1]``.

Parallel over segments: each output row is written by exactly one loop
iteration, and within a segment rows are combined in ascending order, so the
result does not depend on the thread count.
"""
import numba as nb
import numpy as np

SUM, MEAN, MAX, LAST = 0, 1, 2, 3
_CODES = {"sum": SUM, "mean": MEAN, "max": MAX, "last": LAST}


@nb.njit(parallel=True, cache=True)
def _forward(X, ptr, code, out, arg):
    n_seg = ptr.shape[0] - 1
    F = X.shape[1]
    for s in nb.prange(n_seg):
        a = ptr[s]
        b = ptr[s + 1]
        if b == a:
            continue  # out is 0, arg is -1
        if code == LAST:
            for f in range(F):
                out[s, f] = X[b - 1, f]
                arg[s, f] = b - 1
        elif code == MAX:
            for f in range(F):
                out[s, f] = X[a, f]
                arg[s, f] = a
            for r in range(a + 1, b):
                for f in range(F):
                    # strict '>' keeps the lowest row on ties; a NaN wins over a number and
                    # is never replaced (NumPy's max: NaN anywhere gives NaN)
                    v, cur = X[r, f], out[s, f]
                    if cur == cur and (v > cur or v != v):
                        out[s, f] = v
                        arg[s, f] = r
        else:
            for r in range(a, b):
                for f in range(F):
                    out[s, f] += X[r, f]
            if code == MEAN:
                inv = 1.0 / (b - a)
                for f in range(F):
                    out[s, f] = out[s, f] * inv


@nb.njit(parallel=True, cache=True)
def _backward(grad_out, ptr, code, arg, grad_X):
    n_seg = ptr.shape[0] - 1
    F = grad_out.shape[1]
    for s in nb.prange(n_seg):
        a = ptr[s]
        b = ptr[s + 1]
        if b == a:
            continue
        if code == SUM or code == MEAN:
            scale = 1.0 if code == SUM else 1.0 / (b - a)
            for r in range(a, b):
                for f in range(F):
                    grad_X[r, f] = grad_out[s, f] * scale
        else:
            # arg rows lie inside segment s (checked by the front door), so
            # no two iterations write the same element.
            for f in range(F):
                r = arg[s, f]
                if r >= 0:
                    grad_X[r, f] += grad_out[s, f]


def forward(X, ptr, reduce):
    """``X`` (n, F) C-contiguous, ``ptr`` int64 (n_seg + 1,). Returns ``(out, arg)``;
    ``arg`` is (n_seg, F) int64 for max/last, else None."""
    code = _CODES[reduce]
    n_seg = ptr.shape[0] - 1
    out = np.zeros((n_seg, X.shape[1]), dtype=X.dtype)
    with_arg = code in (MAX, LAST)
    arg = np.full((n_seg, X.shape[1]) if with_arg else (0, 0), -1, dtype=np.int64)
    _forward(X, ptr, code, out, arg)
    return out, (arg if with_arg else None)


def backward(grad_out, X, ptr, reduce, arg):
    """Gradient w.r.t. ``X`` (n, F); ``arg`` (n_seg, F) int64 for max/last."""
    code = _CODES[reduce]
    grad_X = np.zeros(X.shape, dtype=grad_out.dtype)
    if arg is None:
        arg = np.empty((0, 0), dtype=np.int64)
    _backward(grad_out, ptr, code, arg, grad_X)
    return grad_X
