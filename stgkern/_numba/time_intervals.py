"""TiSASRec time rescaling and clipped interval matrices (one user per task)."""
import numba as nb
import numpy as np


@nb.njit(cache=True, parallel=True)
def _rescale(ptr, times, out):
    """``round((t - t_min) / s) + 1`` per user, ``s`` the smallest non-zero
    gap between consecutive (time-sorted) events, 1 if there is none.

    ``np.round`` rounds half to even, as Python's ``round`` does.  Integer
    times subtract exactly before the (float64) division, as Python ints do.
    """
    n_seq = ptr.shape[0] - 1
    for s in nb.prange(n_seq):
        p0 = ptr[s]
        p1 = ptr[s + 1]
        if p1 == p0:
            continue
        t_min = times[p0]
        scale = times[p0] - times[p0]  # zero of the input's type
        have = False
        for p in range(p0, p1):
            if times[p] < t_min:
                t_min = times[p]
            if p + 1 < p1:
                d = times[p + 1] - times[p]
                if d != 0 and (not have or d < scale):
                    scale = d
                    have = True
        sc = np.float64(scale) if have else 1.0
        for p in range(p0, p1):
            out[p] = np.round(np.float64(times[p] - t_min) / sc) + 1.0


@nb.njit(cache=True, parallel=True)
def _matrices(ptr, resc, drop, maxlen, span, seqs, mats):
    n_seq = ptr.shape[0] - 1
    for s in nb.prange(n_seq):
        p0 = ptr[s]
        p1 = ptr[s + 1] - drop[s]
        n = min(maxlen, max(p1 - p0, 0))
        # left padding with time 0 (row already zero)
        for i in range(n):
            seqs[s, maxlen - n + i] = np.int32(resc[p1 - n + i])
        row = seqs[s]
        M = mats[s]
        for i in range(maxlen):
            ti = np.int64(row[i])
            for j in range(maxlen):
                d = ti - np.int64(row[j])
                if d < 0:
                    d = -d
                M[i, j] = np.int32(d if d < span else span)


def rescale(ptr, times):
    """Rescaled times as float64 (whole numbers); the front door checks range."""
    out = np.zeros(times.shape[0], dtype=np.float64)
    _rescale(ptr, times, out)
    return out


def time_intervals(ptr, resc, drop, maxlen, span):
    n_seq = ptr.shape[0] - 1
    seqs = np.zeros((n_seq, maxlen), dtype=np.int32)
    mats = np.empty((n_seq, maxlen, maxlen), dtype=np.int32)
    _matrices(ptr, resc, drop, maxlen, span, seqs, mats)
    return mats, seqs
