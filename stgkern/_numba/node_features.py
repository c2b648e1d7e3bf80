"""Node features for events in graph node order (behaviour one-hot, intensity, context).

Backends assume validated input: ``order`` (int64) lists the input row of
every node, ``same_prev[r]`` says whether node r-1 belongs to node r's user,
``behavior`` ids lie in [0, n_behaviors).
"""
import numba as nb
import numpy as np

from ._twin import twin, use_threads


@twin()
def _fill(order, user, behavior, value, has_value, B, intensity, context, future, out, parallel):
    n = order.shape[0]
    if parallel:
        for r in nb.prange(n):
            _row(np.int64(r), order, user, behavior, value, has_value, B, intensity, context, future, out)
    else:
        for r in range(n):
            _row(r, order, user, behavior, value, has_value, B, intensity, context, future, out)


@nb.njit(cache=True)
def _row(r, order, user, behavior, value, has_value, B, intensity, context, future, out):
    n = order.shape[0]
    e = order[r]
    for c in range(out.shape[1]):
        out[r, c] = 0
    out[r, behavior[e]] = 1
    col = B
    if intensity:
        if has_value:
            out[r, col] = np.log1p(np.float64(value[e]))
        col += 1
    if context:
        if r > 0 and user[order[r - 1]] == user[e]:
            out[r, col + behavior[order[r - 1]]] = 1
        col += B
        if future:
            if r + 1 < n and user[order[r + 1]] == user[e]:
                out[r, col + behavior[order[r + 1]]] = 1


def node_features(order, user, behavior, value, n_behaviors, intensity, context, causal, dtype):
    n = order.shape[0]
    B = n_behaviors
    d = B + (1 if intensity else 0) + (B if context else 0) + (B if context and not causal else 0)
    out = np.empty((n, d), dtype=dtype)
    has_value = value is not None
    if value is None:
        value = np.zeros(0, dtype=np.float64)
    if n:
        _fill(order, user, behavior, value, has_value, np.int64(B), bool(intensity), bool(context),
              bool(context and not causal), out, use_threads(n))
    return out
