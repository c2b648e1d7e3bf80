"""Validation passes that would cost more as NumPy expressions than the kernel they guard."""
import numba as nb
import numpy as np


@nb.njit(cache=True, parallel=True)
def first_bad_arg_row(arg, indptr):
    """First row ``i`` of a max/min ``arg`` (n, F) holding an entry that is neither an
    edge id of row ``i`` (``indptr[i] <= a < indptr[i + 1]``) nor ``-1`` for an
    empty row; ``-1`` if every row is valid.  One read of ``arg``, no temporaries
    (the broadcast NumPy form made four (n, F) arrays: a fifth of a large max
    backward)."""
    n = arg.shape[0]
    bad = np.zeros(n, np.bool_)
    for i in nb.prange(n):
        lo, hi = indptr[i], indptr[i + 1]
        empty = lo == hi
        for f in range(arg.shape[1]):
            a = arg[i, f]
            if not ((lo <= a and a < hi) or (empty and a == -1)):
                bad[i] = True
                break
    for i in range(n):
        if bad[i]:
            return i
    return -1
