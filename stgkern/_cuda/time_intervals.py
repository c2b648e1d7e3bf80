"""GPU TiSASRec time rescaling and interval matrices (csrc/cuda/time_intervals.cu).

Same functions and results as ``stgkern._numba.time_intervals``: ``rescale``
(float64 whole numbers, one warp per user) and ``time_intervals`` (int32
matrices and padded rows, one block per user), on validated CuPy input.
``times`` is int64 or float64 (the kernel's template type), ``drop`` int64
already clipped to each length.  CuPy is imported on first use.
"""
from __future__ import annotations

import numpy as np

from ._loader import launch, launch_blocks

_OP = "time_intervals"
_IDX = np.int64  # the kernels read no column indices
_MATRIX_T = np.int64  # the matrix kernel reads no times: share the integer-time instantiation


def rescale(ptr, times):
    """Rescaled times as float64 (whole numbers); the front door checks range."""
    import cupy as cp

    n_seq = ptr.shape[0] - 1
    out = cp.empty(times.shape[0], dtype=np.float64)  # every position belongs to a sequence
    launch(_OP, "time_intervals_rescale", times.dtype, _IDX, n_seq, (ptr, n_seq, times, out))
    return out


def time_intervals(ptr, resc, drop, maxlen, span):
    import cupy as cp

    n_seq = ptr.shape[0] - 1
    seqs = cp.empty((n_seq, maxlen), dtype=np.int32)
    mats = cp.empty((n_seq, maxlen, maxlen), dtype=np.int32)
    launch_blocks(_OP, "time_intervals_matrices", _MATRIX_T, _IDX, n_seq,
                  (ptr, n_seq, resc, drop, maxlen, span, seqs, mats))
    return mats, seqs
