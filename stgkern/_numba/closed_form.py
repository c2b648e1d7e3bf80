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

from .topk import _sift_down, _worse


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
    """Offer (s, i) to the min-heap of the k best (score desc, index asc); returns its new size."""
    if n < k:
        pos = n
        hs[pos] = s
        hi[pos] = i
        while pos > 0:                       # sift up
            par = (pos - 1) >> 1
            if _worse(hs[pos], hi[pos], hs[par], hi[par]):
                ts, ti = hs[pos], hi[pos]
                hs[pos], hi[pos] = hs[par], hi[par]
                hs[par], hi[par] = ts, ti
                pos = par
            else:
                break
        return n + 1
    if _worse(hs[0], hi[0], s, i):
        hs[0] = s
        hi[0] = i
        _sift_down(hs, hi, n, 0)
    return n


@nb.njit(cache=True)
def rerank(t_idx, l_k, Q, I, s_ptr, s_idx, s_val, tc_ptr, tc_cat, tc_val, w_cat, cat_ptr, cat_items, share,
           item_category, seen_ptr, seen_idx, tol, out_idx, out_score):
    """Exact top-k per row (see the module docstring); writes ``out_idx``/``out_score`` (k columns)
    and returns the number of items scored exactly."""
    m, k = t_idx.shape
    n_items, d = I.shape
    mark = np.full(n_items, -1, np.int64)
    hs = np.empty(k, np.float64)
    hi = np.empty(k, np.int64)
    scored = 0
    for r in range(m):
        n = 0
        full = t_idx[r, k - 1] >= 0               # T padded: every unseen item is already in T
        lk = l_k[r]
        for j in range(k):                         # T, exactly
            i = t_idx[r, j]
            if i < 0 or i >= n_items or mark[i] == r:
                continue
            mark[i] = r
            if _find(seen_idx, seen_ptr[r], seen_ptr[r + 1], i) >= 0:
                continue
            n = _push(hs, hi, n, k, _score(r, i, Q, I, s_ptr, s_idx, s_val, tc_ptr, tc_cat, tc_val, w_cat,
                                           share, item_category, d), i)
            scored += 1
        for j in range(s_ptr[r], s_ptr[r + 1]):    # the transitions' support: the dot only where the bound reaches
            i = s_idx[j]
            if i < 0 or i >= n_items or mark[i] == r:
                continue
            mark[i] = r
            if _find(seen_idx, seen_ptr[r], seen_ptr[r + 1], i) >= 0:
                continue
            if full and n == k:
                p = _find(tc_cat, tc_ptr[r], tc_ptr[r + 1], item_category[i])
                tc = tc_val[p] if p >= 0 else 0.0
                theta = hs[0]
                if lk + (s_val[j] + w_cat * (tc * share[i])) < theta - tol * (abs(theta) + 1.0):
                    continue                       # L(i) <= L_k outside T: it cannot reach theta
            n = _push(hs, hi, n, k, _score(r, i, Q, I, s_ptr, s_idx, s_val, tc_ptr, tc_cat, tc_val, w_cat,
                                           share, item_category, d), i)
            scored += 1
        if full and n == k:
            for p in range(tc_ptr[r], tc_ptr[r + 1]):
                a = w_cat * tc_val[p]
                c = tc_cat[p]
                if a <= 0.0 or c < 0 or c + 1 >= len(cat_ptr):
                    continue
                for q in range(cat_ptr[c], cat_ptr[c + 1]):
                    i = cat_items[q]
                    theta = hs[0]
                    if lk + a * share[i] < theta - tol * (abs(theta) + 1.0):
                        break                        # shares only fall from here: none can reach theta
                    if mark[i] == r:
                        continue
                    mark[i] = r
                    if _find(seen_idx, seen_ptr[r], seen_ptr[r + 1], i) >= 0:
                        continue
                    n = _push(hs, hi, n, k, _score(r, i, Q, I, s_ptr, s_idx, s_val, tc_ptr, tc_cat, tc_val,
                                                   w_cat, share, item_category, d), i)
                    scored += 1
        # the heap, best first
        for j in range(k):
            out_idx[r, j] = -1
            out_score[r, j] = -np.inf
        while n > 0:
            out_idx[r, n - 1] = hi[0]
            out_score[r, n - 1] = hs[0]
            n -= 1
            hs[0] = hs[n]
            hi[0] = hi[n]
            _sift_down(hs, hi, n, 0)
    return scored


@nb.njit(inline="always")
def _score(r, i, Q, I, s_ptr, s_idx, s_val, tc_ptr, tc_cat, tc_val, w_cat, share, item_category, d):
    L = 0.0
    for f in range(d):
        L += Q[r, f] * I[i, f]
    p = _find(s_idx, s_ptr[r], s_ptr[r + 1], i)
    s = s_val[p] if p >= 0 else 0.0
    p = _find(tc_cat, tc_ptr[r], tc_ptr[r + 1], item_category[i])
    tc = tc_val[p] if p >= 0 else 0.0
    return L + (s + w_cat * (tc * share[i]))
