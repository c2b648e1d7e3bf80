"""GPU time_decay ``exp(-dt / tau)`` (csrc/cuda/time_decay.cu), one thread per edge.

Not in ``docs/ops.md``'s kernel table: the CPU computes it with NumPy
expressions in ``stgkern/features.py``; on the GPU one fused kernel replaces
the three passes (cast, scale, exp) and their temporaries, except for the
float64 cast of integer or float32 gaps.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch

_IDX = np.int32  # no index arrays; one instantiation per value type


def time_decay(dt, tau, dtype):
    """``dt`` 1-D CuPy array of finite gaps, ``tau`` > 0 (validated); returns (n,) of ``dtype``."""
    import cupy as cp

    dt = cp.ascontiguousarray(dt, dtype=np.float64)
    n = dt.shape[0]
    out = cp.empty(n, dtype=dtype)
    launch("time_decay", "time_decay_fwd", dtype, _IDX, (n + 31) // 32, (dt, np.float64(-1.0 / tau), out, n))
    return out
