"""GPU node_features (csrc/cuda/node_features.cu): one thread per output element.

Same contract as ``stgkern._numba.node_features.node_features``: ``order``,
``user``, ``behavior`` int64 C-contiguous CuPy arrays, ``value`` float64 or
None, behaviour ids in [0, n_behaviors).
"""
from __future__ import annotations

import numpy as np

from ._loader import launch

_IDX = np.int32


def node_features(order, user, behavior, value, n_behaviors, intensity, context, causal, dtype):
    import cupy as cp

    n, B = order.shape[0], int(n_behaviors)
    future = bool(context and not causal)
    d = B + (1 if intensity else 0) + (B if context else 0) + (B if future else 0)
    out = cp.empty((n, d), dtype=dtype)
    launch("node_features", "node_features_fwd", dtype, _IDX, (n * d + 31) // 32,
           (order, user, behavior, value if intensity else None, out, n, d, B, np.int32(bool(intensity)),
            np.int32(bool(context)), np.int32(future)))
    return out
