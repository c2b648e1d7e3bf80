"""GPU time_encoding ``cos(omega * dt + phase)`` (csrc/cuda/time_encoding.cu).

Same contract as ``stgkern._numba.time_encoding``: ``dt`` float64
C-contiguous (CuPy), ``omega``/``phase`` float64 (dim,) (NumPy or CuPy; moved
to the device here, they are tiny).  One thread per output element.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch

_IDX = np.int32


def time_encoding(dt, omega, phase, dtype):
    import cupy as cp

    omega = cp.ascontiguousarray(cp.asarray(omega), dtype=np.float64)
    phase = cp.ascontiguousarray(cp.asarray(phase), dtype=np.float64)
    n, dim = dt.shape[0], omega.shape[0]
    out = cp.empty((n, dim), dtype=dtype)
    launch("time_encoding", "time_encoding_fwd", dtype, _IDX, (n * dim + 31) // 32, (dt, omega, phase, out, n, dim))
    return out
