"""Harmonic time encoding cos(omega * dt + phase) (TGAT / TGN convention).

Backends assume validated input: ``dt`` float64 C-contiguous, ``omega`` and
``phase`` float64 of length ``dim``.  The argument is formed in float64 (dt
in seconds times omega = 1 would lose all phase in float32) and only the
cosine is stored in the output dtype.
"""
import numba as nb
import numpy as np

from ._twin import twin, use_threads


@twin()
def _fill(dt, omega, phase, out, parallel):
    n = dt.shape[0]
    dim = omega.shape[0]
    if parallel:
        for e in nb.prange(n):
            for k in range(dim):
                out[e, k] = np.cos(omega[k] * dt[e] + phase[k])
    else:
        for e in range(n):
            for k in range(dim):
                out[e, k] = np.cos(omega[k] * dt[e] + phase[k])


def time_encoding(dt, omega, phase, dtype):
    out = np.empty((dt.shape[0], omega.shape[0]), dtype=dtype)
    if dt.shape[0]:
        _fill(dt, omega, phase, out, use_threads(dt.shape[0] * omega.shape[0] // 8))   # rows of 8 cosines
    return out
