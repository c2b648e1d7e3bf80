"""Exact top-k of the closed-form model's scores without the dense score matrix.

A user's score of item i is ``L(i) + S(i) + C(i)``: the ridge's low-rank
part ``L`` (a dot product, plus the item prior), the sparse transition
components ``S >= 0`` (first-order, window and skip transitions: nonzero
only on the successors of the user's recent items) and the category
component ``C(i) = w * TC[c_u, cat(i)] * share(i) >= 0`` (next-category
probability times the item's share of its category).

Given ``T``, the exact top-k of ``L`` over the user's unseen items (from
:func:`stgkern.topk`, one GEMM pass over the catalogue) with k-th score
``L_k``, an unseen item outside ``T`` and outside the support of ``S`` has
``L(i) <= L_k`` and so scores at most ``L_k + w * TC[c_u, cat(i)] * share(i)``.
The kernel scores ``T`` exactly and takes the k-th of those scores as the
threshold ``theta`` (raised as better items are found).  An item of the
support of ``S`` gets its dot product only where its bound
``L_k + S(i) + C(i)`` reaches ``theta``; then each next category's items
are walked by share, largest first, and a category stops at the first item
whose bound falls below ``theta``.  Every item skipped provably cannot
enter the top-k (``tol`` covers the rounding of the dot products).  Scores are summed in the order of the dense path
(``L + (((last + window) + skip) + category)``).
"""
import numba as nb
import numpy as np

from .topk import _finish, _sift_down, _sift_up, _worse


@nb.njit(inline="always")
def _find(idx, lo, hi, x):
    """Position of ``x`` in the sorted ``idx[lo:hi]``, or -1."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = idx[mid]
        if v < x:
            lo = mid + 1
        elif v > x:
            hi = mid
        else:
            return mid
    return -1


@nb.njit(inline="always")
def _push(hs, hi, n, k, s, i):
    """Offer (s, i) to the row's min-heap of its k best (:mod:`.topk`'s order); returns its size."""
    if n < k:
        hs[n] = s
        hi[n] = i
        _sift_up(hs, hi, n)
        return n + 1
    if _worse(hs[0], hi[0], s, i):
        hs[0] = s
        hi[0] = i
        _sift_down(hs, hi, n, 0)
    return n


@nb.njit(inline="always")
def _fresh(i, r, mark, seen_ptr, seen_idx):
    """Whether item ``i`` is met for the first time in row ``r`` and not one of its seen items
    (it is marked either way: an item is looked at once per row)."""
    if mark[i] == r:
        return False
    mark[i] = r
    return _find(seen_idx, seen_ptr[r], seen_ptr[r + 1], i) < 0


@nb.njit(inline="always")
def _exact(Q, I, r, i, s, tc, w_cat, share_i):
    """The score in the dense path's order: ``L + (transitions + category)``."""
    L = 0.0
    for f in range(I.shape[1]):
        L += Q[r, f] * I[i, f]
    return L + (s + w_cat * (tc * share_i))


@nb.njit(cache=True)
def rerank(t_idx, l_k, Q, I, s_ptr, s_idx, s_val, tc_ptr, tc_cat, tc_val, w_cat, cat_ptr, cat_items, share,
           item_category, seen_ptr, seen_idx, tol, out_idx, out_score):
    """Exact top-k per row (see the module docstring); writes ``out_idx``/``out_score`` (k columns,
    best first, -1/-inf padding) and returns the number of items scored exactly."""
    m, k = t_idx.shape
    n_items = I.shape[0]
    mark = np.full(n_items, -1, np.int64)
    heap_n = np.zeros(m, np.int64)
    scored = 0
    for r in range(m):
        hs, hi = out_score[r], out_idx[r]            # the row's heap, sorted in place by _finish
        n = 0
        full = t_idx[r, k - 1] >= 0               # T padded: every unseen item is already in T
        lk = l_k[r]
        lo, hi_s, lo_c, hi_c = s_ptr[r], s_ptr[r + 1], tc_ptr[r], tc_ptr[r + 1]
        for j in range(k):                         # T, exactly
            i = t_idx[r, j]
            if i < 0 or not _fresh(i, r, mark, seen_ptr, seen_idx):
                continue
            p = _find(s_idx, lo, hi_s, i)
            q = _find(tc_cat, lo_c, hi_c, item_category[i])
            n = _push(hs, hi, n, k, _exact(Q, I, r, i, s_val[p] if p >= 0 else 0.0,
                                           tc_val[q] if q >= 0 else 0.0, w_cat, share[i]), i)
            scored += 1
        for j in range(lo, hi_s):                  # the transitions' support: the dot only where the bound reaches
            i = s_idx[j]
            if i >= n_items or not _fresh(i, r, mark, seen_ptr, seen_idx):
                continue
            q = _find(tc_cat, lo_c, hi_c, item_category[i])
            rest = s_val[j] + w_cat * ((tc_val[q] if q >= 0 else 0.0) * share[i])
            if full and n == k and lk + rest < hs[0] - tol * (abs(hs[0]) + 1.0):
                continue                           # L(i) <= L_k outside T: it cannot reach theta
            n = _push(hs, hi, n, k, _exact(Q, I, r, i, s_val[j], tc_val[q] if q >= 0 else 0.0, w_cat, share[i]), i)
            scored += 1
        if full and n == k:
            for p in range(lo_c, hi_c):            # each next category's items, largest share first
                a = w_cat * tc_val[p]
                c = tc_cat[p]
                if a <= 0.0 or c < 0 or c + 1 >= len(cat_ptr):
                    continue
                for q in range(cat_ptr[c], cat_ptr[c + 1]):
                    i = cat_items[q]
                    if lk + a * share[i] < hs[0] - tol * (abs(hs[0]) + 1.0):
                        break                        # shares only fall from here: none can reach theta
                    if not _fresh(i, r, mark, seen_ptr, seen_idx):
                        continue
                    # not in the support (those were all marked above): no transition part
                    n = _push(hs, hi, n, k, _exact(Q, I, r, i, 0.0, tc_val[p], w_cat, share[i]), i)
                    scored += 1
        heap_n[r] = n
    _finish(out_score, out_idx, heap_n)
    return scored
