"""An in-place ascending sort for the short integer runs a few kernels sort (a session's items,
a user's seen items).

``np.sort`` inside a Numba kernel compiles Numba's quicksort for that dtype the first time a
process needs it: 1.3-2.3 s in a fresh install (measured in the default demo, where the session
graphs and the online replay each paid it in their process).  This is an insertion sort for
short runs and a heapsort above: a few lines to compile, no recursion, no allocation, and
O(n log n) for the long runs a power user has.  Equal values are indistinguishable, so the
result is the one ``np.sort`` gives.
"""
import numba as nb

#: Runs up to this long are insertion-sorted.
INSERTION_MAX = 16


@nb.njit(cache=True)
def _sift(a, lo, root, end):
    """Restore the max-heap below ``root`` in ``a[lo:lo + end]`` (heap positions from 0)."""
    x = a[lo + root]
    while True:
        c = 2 * root + 1
        if c >= end:
            break
        if c + 1 < end and a[lo + c + 1] > a[lo + c]:
            c += 1
        if a[lo + c] > x:
            a[lo + root] = a[lo + c]
            root = c
        else:
            break
    a[lo + root] = x


@nb.njit(cache=True)
def sort_range(a, lo, hi):
    """Sort ``a[lo:hi]`` ascending in place."""
    n = hi - lo
    if n <= INSERTION_MAX:
        for i in range(lo + 1, hi):
            x = a[i]
            j = i - 1
            while j >= lo and a[j] > x:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = x
        return
    for root in range(n // 2 - 1, -1, -1):
        _sift(a, lo, root, n)
    for end in range(n - 1, 0, -1):
        x = a[lo]
        a[lo] = a[lo + end]
        a[lo + end] = x
        _sift(a, lo, 0, end)
