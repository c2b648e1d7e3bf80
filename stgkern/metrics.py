"""Evaluation metrics for next-item ranking and next-behaviour classification.

Ranking, full-catalogue mode: take ``indices`` from :func:`stgkern.topk`
(shape (m, K)) and the held-out target item of each row (shape (m,)), or a
CSR of several relevant items per row.  Sampled-negatives mode: rank each
target's score against its sampled negatives with
:func:`rank_against_negatives`, then use the ``*_from_ranks`` functions.

Conventions
-----------
* Ranks are 0-based: rank 0 is the top of the list.
* Single target: HR@k = recall@k = [rank < k]; NDCG@k = 1/log2(rank + 2) if
  rank < k else 0; MRR@k = 1/(rank + 1) if rank < k else 0;
  precision@k = [rank < k] / k.
* Several relevant items (CSR): recall = hits/|relevant|, precision =
  hits/k, NDCG = DCG/IDCG with IDCG over min(|relevant|, k) slots, MRR from
  the first relevant position, HR = [hits > 0].  Rows with no relevant items
  are left out of the mean.  Lists are assumed to hold distinct items
  (``topk`` output does); padding ``-1`` never matches.
* Means over zero rows are NaN.
* Ties against sampled negatives are pessimistic: a negative scoring equal
  to the target ranks above it, so a constant scorer gets the worst rank,
  not the best.
* CuPy input: :func:`rank_against_negatives` ranks on the device (it reads
  the m x n_neg scores) and returns a CuPy array; the other functions copy
  their (m, K) lists, targets, ranks or labels to the host -- a transfer no
  larger than the top-k result itself -- and return the same Python floats
  and NumPy arrays as for NumPy input.
"""
from __future__ import annotations

import numpy as np

from . import _dispatch, _validate

__all__ = [
    "hit_rate", "recall", "precision", "ndcg", "mrr",
    "rank_against_negatives", "hit_rate_from_ranks", "ndcg_from_ranks", "mrr_from_ranks",
    "accuracy", "precision_recall_f1", "ranking_report",
]


# ---------------------------------------------------------------- helpers
def _host(a):
    """NumPy view of ``a``; a CuPy array is copied to the host (see the module docstring)."""
    return a.get() if _dispatch._is_cupy(a) else np.asarray(a)


def _topk_lists(topk_idx, k):
    topk_idx = _host(topk_idx)
    if topk_idx.ndim != 2:
        raise ValueError(f"topk_idx must be 2-D (n_queries, K), got shape {topk_idx.shape}")
    if topk_idx.dtype.kind not in "iu":
        raise TypeError(f"topk_idx must hold integer item ids, got dtype {topk_idx.dtype}; "
                        f"pass the indices returned by stgkern.topk")
    K = topk_idx.shape[1]
    k = K if k is None else _validate.nonneg_int(k, "k", minimum=1)
    if k > K:
        raise ValueError(f"k={k} exceeds the length of the top-k lists (K={K}); "
                         f"compute topk with k >= {k} or ask for k <= {K}")
    return topk_idx[:, :k], k


def _is_csr(target):
    return isinstance(target, tuple) or (hasattr(target, "indptr") and hasattr(target, "indices"))


def _single_target(target, m):
    target = _host(target)
    if target.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer item ids, got dtype {target.dtype}")
    if target.shape != (m,):
        raise ValueError(f"target has shape {target.shape}, expected ({m},): one target item per "
                         f"top-k list (pass a CSR of relevant items for several per row)")
    if target.size and target.min() < 0:
        raise ValueError(f"target holds negative item ids (min {target.min()}); item ids are >= 0")
    return target


def _csr_target(target, m):
    if isinstance(target, tuple):
        if len(target) != 2:
            raise ValueError("target as a tuple must be (indptr, indices)")
        indptr, indices = (_host(a) for a in target)
    else:
        if getattr(target, "format", "csr") != "csr":
            raise TypeError("target must be a CSR matrix; convert with .tocsr()")
        indptr, indices = _host(target.indptr), _host(target.indices)
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        raise TypeError("target indptr and indices must be integer arrays")
    if indptr.shape != (m + 1,):
        raise ValueError(f"target indptr has shape {indptr.shape}, expected ({m + 1},): one row of "
                         f"relevant items per top-k list")
    indptr = indptr.astype(np.int64)
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise ValueError(f"target indptr must start at 0, be non-decreasing and end at "
                         f"len(indices)={len(indices)}")
    if len(indices) and indices.min() < 0:
        raise ValueError("target holds negative item ids")
    return indptr, indices.astype(np.int64)


def _ranks(lists, target):
    """0-based position of each row's target in its list; K when absent."""
    m, K = lists.shape
    match = lists == target[:, None]
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1), K).astype(np.int64)


def _hits_matrix(lists, indptr, indices):
    """Boolean (m, k): lists[r, j] is relevant to row r; and |relevant| per row."""
    m = lists.shape[0]
    rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(indptr))
    # item ids ranked first, so that (row, item) keys stay small whatever the ids (near 2**62 too)
    uniq, inv = np.unique(np.concatenate([np.asarray(indices, np.int64).ravel(), lists.ravel()]),
                          return_inverse=True)
    inv = inv.ravel()
    rel_ids, list_ids = inv[:len(indices)], inv[len(indices):].reshape(lists.shape)
    width = len(uniq) + 1
    rel_keys = np.unique(rows * width + rel_ids)  # duplicates count once
    n_rel = np.bincount(rel_keys // width, minlength=m)
    keys = np.arange(m, dtype=np.int64)[:, None] * width + list_ids
    if rel_keys.size == 0:
        return np.zeros(lists.shape, dtype=bool), n_rel
    pos = np.minimum(np.searchsorted(rel_keys, keys), rel_keys.size - 1)
    return (rel_keys[pos] == keys) & (lists >= 0), n_rel


def _mean(v):
    return float(v.mean()) if v.size else float("nan")


def _discounts(k):
    return 1.0 / np.log2(np.arange(k) + 2.0)


def _multi(topk_idx, target, k):
    lists, k = _topk_lists(topk_idx, k)
    indptr, indices = _csr_target(target, lists.shape[0])
    hits, n_rel = _hits_matrix(lists, indptr, indices)
    keep = n_rel > 0
    return hits[keep], n_rel[keep], k


# ---------------------------------------------------------------- full ranking
def hit_rate(topk_idx, target, k=None):
    """Fraction of rows whose top-k holds the target (or any relevant item).

    ``mean_r [target_r in topk_idx[r, :k]]``; for one target per row this is
    recall@k.

    Parameters
    ----------
    topk_idx : ndarray (m, K) of int, e.g. the indices from ``stgkern.topk``
    target : ndarray (m,) of int, or a CSR (scipy or ``(indptr, indices)``)
        of relevant items per row
    k : int <= K, default K

    Examples
    --------
    >>> hit_rate(np.array([[3, 1], [0, 2]]), np.array([1, 5]))
    0.5
    """
    if _is_csr(target):
        hits, _, _ = _multi(topk_idx, target, k)
        return _mean(hits.any(axis=1))
    lists, k = _topk_lists(topk_idx, k)
    return hit_rate_from_ranks(_ranks(lists, _single_target(target, lists.shape[0])), k)


def recall(topk_idx, target, k=None):
    """Mean over rows of ``hits@k / |relevant|`` (= hit rate for one target).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> rel = sp.csr_matrix(np.array([[1, 1, 0, 0]]))
    >>> recall(np.array([[1, 3]]), rel)
    0.5
    """
    if _is_csr(target):
        hits, n_rel, _ = _multi(topk_idx, target, k)
        return _mean(hits.sum(axis=1) / n_rel)
    return hit_rate(topk_idx, target, k)


def precision(topk_idx, target, k=None):
    """Mean over rows of ``hits@k / k``.

    Examples
    --------
    >>> precision(np.array([[3, 1], [0, 2]]), np.array([1, 5]))
    0.25
    """
    if _is_csr(target):
        hits, _, k = _multi(topk_idx, target, k)
        return _mean(hits.sum(axis=1) / k)
    lists, k = _topk_lists(topk_idx, k)
    return hit_rate_from_ranks(_ranks(lists, _single_target(target, lists.shape[0])), k) / k


def ndcg(topk_idx, target, k=None):
    """Binary-relevance NDCG@k.

    One target: ``1/log2(rank + 2)`` when rank < k, else 0.  Several:
    ``Σ_{j<k, hit} 1/log2(j+2) / Σ_{j<min(|rel|,k)} 1/log2(j+2)``.

    Examples
    --------
    >>> ndcg(np.array([[3, 1]]), np.array([1]))   # rank 1: 1/log2(3)
    0.6309297535714575
    """
    if _is_csr(target):
        hits, n_rel, k = _multi(topk_idx, target, k)
        disc = _discounts(k)
        dcg = hits @ disc
        idcg = np.cumsum(disc)[np.minimum(n_rel, k) - 1] if n_rel.size else np.zeros(0)
        return _mean(dcg / idcg) if n_rel.size else float("nan")
    lists, k = _topk_lists(topk_idx, k)
    return ndcg_from_ranks(_ranks(lists, _single_target(target, lists.shape[0])), k)


def mrr(topk_idx, target, k=None):
    """Mean reciprocal rank of the (first) relevant item, 0 beyond k.

    Examples
    --------
    >>> mrr(np.array([[3, 1], [0, 2]]), np.array([1, 0]))
    0.75
    """
    if _is_csr(target):
        hits, _, k = _multi(topk_idx, target, k)
        first = np.where(hits.any(axis=1), hits.argmax(axis=1), k)
        return mrr_from_ranks(first, k)
    lists, k = _topk_lists(topk_idx, k)
    return mrr_from_ranks(_ranks(lists, _single_target(target, lists.shape[0])), k)


# ---------------------------------------------------------------- sampled negatives
def rank_against_negatives(target_scores, negative_scores):
    """0-based rank of each target among its sampled negatives.

    ``rank[r] = #{j : negative_scores[r, j] >= target_scores[r]}``: ties
    count against the target (pessimistic), so a model that scores
    everything alike ranks last, not first.

    Parameters
    ----------
    target_scores : ndarray (m,), float
    negative_scores : ndarray (m, n_neg), float

    Returns
    -------
    ranks : ndarray (m,), int64, in ``[0, n_neg]``

    Examples
    --------
    >>> rank_against_negatives(np.array([0.5, 2.0]), np.array([[0.9, 0.5], [1.0, 0.0]]))
    array([2, 0])
    """
    backend = _dispatch.backend_of(target_scores=target_scores, negative_scores=negative_scores) \
        if _dispatch._is_cupy(target_scores) or _dispatch._is_cupy(negative_scores) else _dispatch.CPU
    xp = _dispatch.array_module(backend)
    t = xp.asarray(target_scores)
    neg = xp.asarray(negative_scores)
    if t.ndim != 1:
        raise ValueError(f"target_scores must be 1-D (m,), got shape {t.shape}")
    if neg.ndim != 2 or neg.shape[0] != t.shape[0]:
        raise ValueError(f"negative_scores must be 2-D ({t.shape[0]}, n_neg) to match target_scores, "
                         f"got shape {neg.shape}")
    for a, name in ((t, "target_scores"), (neg, "negative_scores")):
        if a.dtype.kind not in "fiu":
            raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
        if a.dtype.kind == "f" and bool(xp.isnan(a).any()):
            raise ValueError(f"{name} contains NaN; ranks would be undefined")
    return (neg >= t[:, None]).sum(axis=1).astype(np.int64)


def _check_ranks(ranks, k, need_k=True):
    ranks = _host(ranks)
    if ranks.ndim != 1 or ranks.dtype.kind not in "iu":
        raise TypeError(f"ranks must be a 1-D integer array, got shape {ranks.shape} dtype {ranks.dtype}")
    if ranks.size and ranks.min() < 0:
        raise ValueError("ranks must be >= 0 (0 = top of the list)")
    if k is not None or need_k:
        k = _validate.nonneg_int(k, "k", minimum=1)
    return ranks, k


def hit_rate_from_ranks(ranks, k):
    """``mean [rank < k]`` for 0-based ranks.

    Examples
    --------
    >>> hit_rate_from_ranks(np.array([0, 3, 10]), 5)
    0.6666666666666666
    """
    ranks, k = _check_ranks(ranks, k)
    return _mean(ranks < k)


def ndcg_from_ranks(ranks, k):
    """``mean 1/log2(rank + 2)`` over rows with rank < k (0 elsewhere).

    Examples
    --------
    >>> ndcg_from_ranks(np.array([0, 1]), 1)
    0.5
    """
    ranks, k = _check_ranks(ranks, k)
    return _mean(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0))


def mrr_from_ranks(ranks, k=None):
    """``mean 1/(rank + 1)`` over rows with rank < k (0 elsewhere; no cut-off if k is None).

    Examples
    --------
    >>> mrr_from_ranks(np.array([0, 1, 7]), 5)
    0.5
    """
    ranks, k = _check_ranks(ranks, k, need_k=False)
    rr = 1.0 / (ranks + 1.0)
    if k is not None:
        rr = np.where(ranks < k, rr, 0.0)
    return _mean(rr)


# ---------------------------------------------------------------- classification
def _labels(y_true, y_pred, n_classes):
    y_true = _host(y_true)
    y_pred = _host(y_pred)
    for a, name in ((y_true, "y_true"), (y_pred, "y_pred")):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integer class labels, got dtype {a.dtype}; "
                            f"map labels to 0..n_classes-1 first (e.g. pandas.factorize)")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} holds negative labels (min {a.min()}); labels are 0..n_classes-1")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    top = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    if n_classes is None:
        n_classes = top
        # three per-class count arrays of n_classes: refuse a sparse label space before allocating
        _validate.fits(3 * 8 * n_classes, f"per-class counts for labels up to {top - 1} "
                       f"(renumber the labels densely, e.g. np.unique(labels, return_inverse=True)[1])")
    else:
        n_classes = _validate.nonneg_int(n_classes, "n_classes", minimum=1)
        if top > n_classes:
            raise ValueError(f"labels go up to {top - 1} but n_classes={n_classes}; "
                             f"labels must lie in 0..n_classes-1")
    return y_true.astype(np.int64), y_pred.astype(np.int64), n_classes


def accuracy(y_true, y_pred):
    """Fraction of equal labels (NaN for no samples).

    Examples
    --------
    >>> accuracy(np.array([0, 1, 2, 1]), np.array([0, 2, 2, 1]))
    0.75
    """
    y_true, y_pred, _ = _labels(y_true, y_pred, None)
    return _mean(y_true == y_pred)


def precision_recall_f1(y_true, y_pred, n_classes=None, average="macro"):
    """Per-class precision, recall and F1 for single-label classification.

    Per class c: precision = TP/(TP+FP), recall = TP/(TP+FN),
    F1 = 2PR/(P+R).  A class that is never predicted gets precision 0; a
    class that never occurs gets recall 0; F1 is 0 when P + R = 0.

    Parameters
    ----------
    y_true, y_pred : ndarray (n,), int labels in ``0..n_classes-1``
    n_classes : int, default max label + 1
    average : "macro", "micro" or None
        ``"macro"``: unweighted mean over the classes that occur in y_true
        or y_pred (classes absent from both are ignored); ``"micro"``:
        pooled counts, which for single-label data all equal accuracy;
        None: per-class arrays of length n_classes.

    Returns
    -------
    (precision, recall, f1) : floats, or ndarrays (n_classes,) when average is None

    Examples
    --------
    >>> precision_recall_f1(np.array([0, 0, 1]), np.array([0, 1, 1]), average=None)
    (array([1. , 0.5]), array([0.5, 1. ]), array([0.66666667, 0.66666667]))
    """
    _validate.choice(average, "average", ("macro", "micro", None))
    y_true, y_pred, n = _labels(y_true, y_pred, n_classes)
    if average == "micro":
        a = _mean(y_true == y_pred)
        return a, a, a
    tp = np.bincount(y_true[y_true == y_pred], minlength=n).astype(np.float64)
    n_pred = np.bincount(y_pred, minlength=n).astype(np.float64)
    n_true = np.bincount(y_true, minlength=n).astype(np.float64)
    p = np.divide(tp, n_pred, out=np.zeros(n), where=n_pred > 0)
    r = np.divide(tp, n_true, out=np.zeros(n), where=n_true > 0)
    f = np.divide(2 * p * r, p + r, out=np.zeros(n), where=(p + r) > 0)
    if average is None:
        return p, r, f
    present = (n_pred > 0) | (n_true > 0)
    return _mean(p[present]), _mean(r[present]), _mean(f[present])


# ---------------------------------------------------------------- convenience
def ranking_report(topk_idx, target, ks=(10, 20)):
    """All ranking metrics at several cut-offs.

    Returns a dict ``{"hit@k", "recall@k", "precision@k", "ndcg@k", "mrr@k"}``
    for every k in ``ks`` (each k must be <= the list length K).

    Examples
    --------
    >>> ranking_report(np.array([[3, 1], [0, 2]]), np.array([1, 5]), ks=(1, 2))["hit@2"]
    0.5
    """
    out = {}
    for k in ks:
        for name, fn in (("hit", hit_rate), ("recall", recall), ("precision", precision),
                         ("ndcg", ndcg), ("mrr", mrr)):
            out[f"{name}@{k}"] = fn(topk_idx, target, k)
    return out
