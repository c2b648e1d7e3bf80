"""The main job: next-item and next-behaviour prediction on an event log.

One pipeline, used by ``stgkern demo`` and callable from Python:

1. :func:`prepare` -- k-core and minimum-length filters, then the
   chronological leave-one-out split (each user's last event is the test
   target, the one before the validation target, everything earlier trains).
2. The spatio-temporal GNN, :func:`fit_torch`: two ``stgkern.torch.STGConv``
   (or ``TemporalAttention``) layers over each user's window graph, then
   causal self-attention over the user's recent node states, trained by
   mini-batches of segments (runs of a user's consecutive events); without
   PyTorch, :func:`fit_closed_form` (fixed time-decayed propagation with
   :func:`stgkern.spmm`, closed-form :class:`Ridge` heads and transition
   components read off the same window graph, weighted on validation).
3. Baselines on the same split: most-popular, first-order Markov over items
   (:func:`behavior_markov` for the next behaviour), an SR-GNN-style
   session-graph GNN (:func:`fit_srgnn`, or :func:`srgnn_closed_form`) and a
   SASRec-style self-attentive model (:func:`fit_sasrec`), each trained with
   the same budget and early stopping on validation as the STG-GNN.
4. Evaluation: full-catalogue top-k with every item the user has already
   interacted with excluded (for every method alike); HR, NDCG and MRR for
   items, accuracy and macro precision/recall/F1 (and per class) for the
   next behaviour, whose class offsets are calibrated on validation.

No leakage by construction: the training graph holds the training events
only; the validation target is predicted from the state of the user's last
training event, the test target from a graph over training and validation
events (the test event is never a node).  Window graphs, node features and
the attention are causal (an event only sees earlier events), so the state
of event p never sees event p + 1, the target it is trained to predict.
Every choice made from data (early stopping, ridge strength, component
weights, behaviour offsets) uses the validation targets only.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import config
from . import metrics as M
from .data import EventLog, filter_min_length, k_core

#: Cut-offs reported for item ranking.
KS = (10, 20)
#: SR-GNN baseline (PyTorch): each prefix keeps at most this many most recent items (its session
#: graph grows with the prefix, and every prefix is its own example, so the cost is linear in it).
#: Chosen on validation NDCG@20 (mean of seeds 0-2) among 3, 5 and 10: 5 is the one at least as
#: good as 10 on all three logs (MovieLens 0.0838 vs 0.0820, Taobao sample 0.0060 vs 0.0056,
#: synthetic 0.0139 vs 0.0121; 3 led on the last two but fell to 0.0777 on MovieLens), and
#: MovieLens' step is 1.6x shorter (33.6 against 54.7 ms, same hour).  (10 had replaced 20
#: the same way: Taobao 0.0059 vs 0.0043, synthetic 0.0134 vs 0.0122.)
SRGNN_MAX_LEN = 5
#: SR-GNN closed form: the same cut-off for its prefixes; 10 stays (validation NDCG@20, seed 0:
#: MovieLens 0.0658 against 0.0652 at 5, Taobao 0.0201 against 0.0196; synthetic 0.0320 against
#: 0.0316, where 3 gave 0.0328).
SRGNN_CLOSED_FORM_MAX_LEN = 10
#: Closed-form path: width of the item / category spectral embeddings.
CLOSED_FORM_DIM = 48


# ---------------------------------------------------------------- data
@dataclass
class Prepared:
    """A filtered log and its leave-one-out split, ready for every method.

    ``log`` is compacted and sorted by (user, time) (stable).  ``train`` holds
    each evaluated user's events but the last two (users with fewer than 3
    events stay wholly in train, as :func:`stgkern.split_leave_one_out`
    does); ``history`` = train + validation events.  Per evaluated user
    (ascending id, arrays ``eval_user``): the validation and test targets
    (item, behaviour) and the items to exclude when ranking (everything the
    user touched before the target).
    """
    log: EventLog
    train: EventLog
    history: EventLog
    eval_user: np.ndarray
    valid_item: np.ndarray
    valid_behavior: np.ndarray
    test_item: np.ndarray
    test_behavior: np.ndarray
    seen_valid: sp.csr_matrix
    seen_test: sp.csr_matrix
    item_category: np.ndarray
    report: dict = field(default_factory=dict)

    @property
    def n_items(self):
        return self.log.n_items

    @property
    def n_behaviors(self):
        return self.log.n_behaviors


def _seen(log, users, n_items):
    """CSR (len(users), n_items) of the items each of ``users`` has in ``log``."""
    row_of = np.full(log.n_users, -1, np.int64)
    row_of[users] = np.arange(len(users))
    r = row_of[log.user]
    keep = r >= 0
    A = sp.csr_matrix((np.ones(int(keep.sum()), np.float32), (r[keep], log.item[keep])),
                      shape=(len(users), n_items))
    A.sum_duplicates()
    A.sort_indices()
    return A


def prepare(log, k_core_k=5, min_length=3):
    """Filter and split ``log`` the way sequential-recommendation work does.

    Parameters
    ----------
    log : EventLog
    k_core_k : int
        Users and items with fewer than ``k_core_k`` events are dropped,
        repeatedly, until none is left (1 keeps everything).
    min_length : int >= 3
        Users with fewer events are dropped after the k-core (a user needs
        one training, one validation and one test event).

    Returns
    -------
    Prepared

    Examples
    --------
    >>> from stgkern.data import synthetic_log
    >>> p = prepare(synthetic_log(n_users=50, n_items=100, seed=0), k_core_k=2)
    >>> len(p.eval_user) == p.log.n_users
    True
    """
    if int(min_length) < 3:
        raise ValueError(f"min_length must be >= 3 (train, validation and test event per user), got {min_length}")
    n0 = len(log)
    log, kc = k_core(log, user_k=k_core_k, item_k=k_core_k)
    log, ml = filter_min_length(log, min_length)
    if len(log) == 0:
        raise ValueError(f"no events left after the {k_core_k}-core and min_length={min_length} filters "
                         f"({n0} events before); lower --k-core or use a larger log")
    log = log.compact().sort()
    # the split of stgkern.split_leave_one_out, kept as row masks of the sorted log
    cnt = np.bincount(log.user, minlength=log.n_users)
    end = np.cumsum(cnt)
    from_end = end[log.user] - 1 - np.arange(len(log))
    held = cnt[log.user] >= 3
    is_test = held & (from_end == 0)
    is_valid = held & (from_end == 1)
    train = log.take(~(is_test | is_valid))
    history = log.take(~is_test)
    eval_user = log.user[is_test]
    assert np.array_equal(eval_user, log.user[is_valid])
    item_category = np.zeros(log.n_items, np.int64)
    item_category[log.item] = log.category      # an item with two categories keeps the last one seen
    return Prepared(
        log=log, train=train, history=history, eval_user=eval_user,
        valid_item=log.item[is_valid], valid_behavior=log.behavior[is_valid].astype(np.int64),
        test_item=log.item[is_test], test_behavior=log.behavior[is_test].astype(np.int64),
        seen_valid=_seen(train, eval_user, log.n_items), seen_test=_seen(history, eval_user, log.n_items),
        item_category=item_category,
        report={"events_in": n0, "k_core": kc, "min_length": ml, "events": len(log),
                "users": int(log.n_users), "items": int(log.n_items), "categories": int(log.n_categories),
                "train_events": len(train), "eval_users": int(len(eval_user))})


def transitions(log):
    """Consecutive pairs of each user's events in a (user, time)-sorted log: ``(src_row, dst_row)``."""
    same = log.user[1:] == log.user[:-1]
    src = np.flatnonzero(same)
    return src, src + 1


def last_rows(log, users):
    """Row of each of ``users``' last event in a (user, time)-sorted log."""
    end = np.cumsum(np.bincount(log.user, minlength=log.n_users)) - 1
    return end[users]


# ---------------------------------------------------------------- evaluation
def rank_dense(scores, k, exclude=None):
    """Top-k of a dense score matrix with ``exclude`` barred, ties to the lower item index.

    The same contract as :func:`stgkern.topk` (padding -1 when fewer than k
    candidates), for baselines whose scores are not a dot product.
    """
    S = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        ex = sp.csr_matrix(exclude)
        rows = np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr))
        S[rows, ex.indices] = -np.inf
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(S, idx, axis=1)
    idx[~np.isfinite(top) & (top < 0)] = -1
    return idx.astype(np.int64)


def item_metrics(topk_idx, target):
    """HR@10/20, NDCG@10/20, MRR@20 of top-k lists against one target per row."""
    out = {}
    for k in KS:
        out[f"HR@{k}"] = M.hit_rate(topk_idx, target, k)
        out[f"NDCG@{k}"] = M.ndcg(topk_idx, target, k)
    out[f"MRR@{KS[-1]}"] = M.mrr(topk_idx, target, KS[-1])
    return out


def behavior_metrics(y_true, y_pred, n_classes):
    p, r, f = M.precision_recall_f1(y_true, y_pred, n_classes=n_classes, average="macro")
    return {"accuracy": M.accuracy(y_true, y_pred), "precision": p, "recall": r, "F1": f}


def behavior_per_class(prep, behavior_pred):
    """Per-class precision, recall and F1 of test behaviour predictions, by behaviour name."""
    p, r, f = M.precision_recall_f1(prep.test_behavior, np.asarray(behavior_pred, np.int64),
                                    n_classes=prep.n_behaviors, average=None)
    return {name: {"precision": float(p[c]), "recall": float(r[c]), "F1": float(f[c]),
                   "support": int((prep.test_behavior == c).sum())}
            for c, name in enumerate(prep.log.behavior_names)}


def evaluate(prep, item_topk, behavior_pred=None):
    """Metrics of a method's test predictions (top-k lists, behaviour labels)."""
    out = item_metrics(item_topk, prep.test_item)
    if behavior_pred is not None:
        out.update(behavior_metrics(prep.test_behavior, np.asarray(behavior_pred, np.int64), prep.n_behaviors))
    return out


# ---------------------------------------------------------------- next behaviour
#: Upper edges (seconds) of the time-gap buckets: first event, < 1 min, < 1 h, < 1 day, longer.
GAP_EDGES = (60.0, 3600.0, 86400.0)


def gap_bucket(log, rows):
    """Bucket of the gap between each row's event and its user's previous event.

    0 for a user's first event, then 1 + the number of :data:`GAP_EDGES`
    the gap reaches (``< 1 min``, ``< 1 h``, ``< 1 day``, longer), so
    ``1 + len(GAP_EDGES) + 1`` buckets in all.  ``log`` is (user, time)-sorted.
    """
    rows = np.asarray(rows, np.int64)
    prev = np.maximum(rows - 1, 0)
    has_prev = (rows > 0) & (log.user[prev] == log.user[rows])
    gap = (log.time[rows] - log.time[prev]).astype(np.float64)
    b = 1 + np.searchsorted(np.asarray(GAP_EDGES), gap, side="right")
    return np.where(has_prev, b, 0).astype(np.int64)


N_GAP_BUCKETS = len(GAP_EDGES) + 2


def calibrate_offsets(scores, y, prior, grid=np.linspace(0.0, 1.0, 21)):
    """Per-class offsets ``-α log(prior)`` with the α in ``grid`` that maximises macro-F1.

    ``argmax(scores + offsets)`` with log-probability scores: α = 0 keeps
    the most probable class, α = 1 divides each probability by its class's
    prior (the balanced decision).  Class imbalance is why: the argmax of
    calibrated probabilities almost never names a rare class, which
    macro-F1 weighs as much as the common one.  One α rather than a free
    offset per class, because the validation split holds one target per
    user (a few hundred, a handful of each rare class): per-class offsets
    fitted there chased noise and lost test macro-F1 to the majority class.
    The first α reaching the best score wins (deterministic).

    Parameters
    ----------
    scores : ndarray (m, n_classes)
        Log-probabilities (or log-scaled scores) of the validation rows.
    y : ndarray (m,) int
        Their true classes.
    prior : ndarray (n_classes,)
        Class frequencies in training (positive).

    Returns
    -------
    ndarray (n_classes,) float64, to add to the test rows' scores.
    """
    logp = np.log(np.asarray(prior, np.float64) / np.sum(prior))
    n_classes = len(logp)
    if n_classes < 2 or len(y) == 0:
        return np.zeros(n_classes)
    f1 = [M.precision_recall_f1(y, (scores - a * logp).argmax(axis=1), n_classes=n_classes)[2] for a in grid]
    return -grid[int(np.argmax(f1))] * logp


def behavior_prior(log, n_behaviors):
    """Training frequencies of the behaviours (add-one), the ``prior`` of :func:`calibrate_offsets`."""
    return np.bincount(log.behavior, minlength=n_behaviors) + 1.0


def _behavior_table(log, n_behaviors):
    """log P(next behaviour | behaviour, gap bucket of the event) from a log's transitions (add-one)."""
    src, dst = transitions(log)
    C = np.ones((n_behaviors, N_GAP_BUCKETS, n_behaviors))
    np.add.at(C, (log.behavior[src], gap_bucket(log, src), log.behavior[dst]), 1.0)
    return np.log(C / C.sum(axis=2, keepdims=True))


def behavior_markov(prep):
    """Next-behaviour baseline: the last behaviour and its time-gap bucket, counts from training.

    ``P(b' | b, gap bucket)`` from the transitions of the training events
    scores the validation rows; per-class offsets calibrated there for
    macro-F1 (:func:`calibrate_offsets`) then apply to the test rows, whose
    table counts the training and validation events (as the item Markov
    baseline counts them).  Returns ``(predictions (m,), info)``.
    """
    B = prep.n_behaviors
    tr, h = prep.train, prep.history
    lv, lt = last_rows(tr, prep.eval_user), last_rows(h, prep.eval_user)
    Sv = _behavior_table(tr, B)[tr.behavior[lv], gap_bucket(tr, lv)]
    off = calibrate_offsets(Sv, prep.valid_behavior, behavior_prior(tr, B))
    St = _behavior_table(h, B)[h.behavior[lt], gap_bucket(h, lt)]
    valid_f1 = M.precision_recall_f1(prep.valid_behavior, (Sv + off).argmax(1), n_classes=B)[2]
    return (St + off).argmax(axis=1).astype(np.int64), {"offsets": off.tolist(), "valid_F1": valid_f1}


# ---------------------------------------------------------------- baselines
def popularity(prep, k=KS[-1]):
    """Most-popular baseline: training counts, ties to the lower item id; majority behaviour."""
    pop = np.bincount(prep.history.item, minlength=prep.n_items).astype(np.float64)
    S = np.broadcast_to(pop, (len(prep.eval_user), prep.n_items))
    beh = np.bincount(prep.history.behavior, minlength=prep.n_behaviors).argmax()
    return rank_dense(S, k, prep.seen_test), np.full(len(prep.eval_user), beh, np.int64)


def markov(prep, k=KS[-1]):
    """First-order Markov baseline over items, and :func:`behavior_markov` for the next behaviour.

    Score of item j after item i: the count of i -> j transitions in the
    users' histories, popularity breaking ties (so an unseen last item falls
    back to popularity).
    """
    h = prep.history
    src, dst = transitions(h)
    n = prep.n_items
    T = sp.csr_matrix((np.ones(len(src)), (h.item[src], h.item[dst])), shape=(n, n))
    pop = np.bincount(h.item, minlength=n).astype(np.float64)
    last = last_rows(h, prep.eval_user)
    S = T[h.item[last]].toarray() + pop / (pop.max() + 1.0)     # popularity < one transition
    return rank_dense(S, k, prep.seen_test), behavior_markov(prep)[0]


# ---------------------------------------------------------------- closed form (NumPy)
def _spectral(rows, cols, n_rows, n_cols, dim, seed):
    """Rows of a seeded randomized SVD of a log-scaled count matrix, L2-normalised."""
    A = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_rows, n_cols))
    A.sum_duplicates()
    A.data = np.log1p(A.data)
    dim = max(1, min(dim, min(n_rows, n_cols) - 1)) if min(n_rows, n_cols) > 1 else 1
    rng = np.random.default_rng(seed)
    Y = A @ rng.normal(size=(n_cols, dim + 8))
    for _ in range(2):
        Y, _ = np.linalg.qr(A @ (A.T @ Y))
    Q, _ = np.linalg.qr(Y)
    U, s, _ = np.linalg.svd(Q.T @ A, full_matrices=False)
    E = (Q @ U[:, :dim]) * np.sqrt(s[:dim])
    E /= np.linalg.norm(E, axis=1, keepdims=True) + 1e-12
    return E


def _decay_weights(graph, tau, dtype=np.float32, nodes=None):
    """The window graph's ``exp(-dt/τ)`` edge weights, normalised to sum 1 over each row; with
    ``nodes``, the edges of those rows only, in their order (the same values)."""
    from .features import time_decay
    if nodes is None:
        dt, deg = graph.edata["dt"], np.diff(graph.indptr)
    else:
        dt = graph.edata["dt"][_ranges(graph.indptr[nodes], graph.indptr[nodes + 1])]
        deg = graph.indptr[nodes + 1] - graph.indptr[nodes]
    w = time_decay(dt.astype(np.float64), tau, dtype=np.float64)
    rows = np.repeat(np.arange(len(deg)), deg)
    rs = np.bincount(rows, weights=w, minlength=len(deg))
    return (w / np.maximum(rs[rows], 1e-30)).astype(dtype)


def _propagate(graph, X, tau):
    """``[X, Â X, Â² X]`` with Â the window graph's time-decay weights normalised per row."""
    from .conv import spmm
    w = _decay_weights(graph, tau, X.dtype)
    H1 = spmm(graph, X, w)
    H2 = spmm(graph, H1, w)
    return np.hstack([X, H1, H2])


def _subgraph(graph, rows, cols):
    """The rows ``rows`` of ``graph`` with each neighbour renumbered to its position in ``cols``
    (sorted, holding every neighbour of ``rows``)."""
    from .graph import Graph
    lo, hi = graph.indptr[rows], graph.indptr[rows + 1]
    indptr = np.concatenate([[0], np.cumsum(hi - lo)]).astype(np.int64)
    return Graph(indptr, np.searchsorted(cols, graph.indices[_ranges(lo, hi)]), len(cols), check=False,
                 rows_sorted=graph.rows_sorted)


def _propagate_at(graph, inputs, tau, rows):
    """:func:`_propagate`'s rows ``rows`` only, from ``inputs(nodes)`` (the node inputs of the
    sorted ``nodes``) on the two-hop in-neighbourhood of ``rows``.

    Each output row is the same sum over the same neighbours in the same
    order, with the same weights (a row's decay weights are normalised over
    that row alone), so the values equal ``_propagate(...)[rows]`` bit for bit.
    """
    from .conv import spmm
    ip, ix = graph.indptr, graph.indices
    hop1 = np.unique(np.concatenate([rows, ix[_ranges(ip[rows], ip[rows + 1])]]))
    hop2 = np.unique(np.concatenate([hop1, ix[_ranges(ip[hop1], ip[hop1 + 1])]]))
    X2 = inputs(hop2)
    w = _decay_weights(graph, tau, X2.dtype, nodes=hop1)
    g1 = _subgraph(graph, hop1, hop2)
    H1 = spmm(g1, X2, w)                                    # at hop1
    g0 = _subgraph(graph, rows, hop1)
    pos = np.searchsorted(hop1, rows)
    w0 = w[_ranges(np.asarray(g1.indptr)[pos], np.asarray(g1.indptr)[pos + 1])]
    H2 = spmm(g0, H1, w0)
    return np.hstack([X2[np.searchsorted(hop2, rows)], H1[pos], H2])


def _gap_features(log, n_behaviors):
    """Per row: log1p of the gap to the user's previous event (scaled to ~[0, 1]) and its bucket one-hot."""
    rows = np.arange(len(log))
    prev = np.maximum(rows - 1, 0)
    has_prev = (rows > 0) & (log.user[prev] == log.user)
    gap = np.where(has_prev, (log.time - log.time[prev]).astype(np.float64), 0.0)
    onehot = np.eye(N_GAP_BUCKETS, dtype=np.float32)[gap_bucket(log, rows)]
    return np.hstack([(np.log1p(np.maximum(gap, 0.0)) / 16.0).astype(np.float32)[:, None], onehot])


def _behavior_context(log, n_behaviors, smoothing=5.0, prior=None):
    """Per row of a sorted log, what the next behaviour is predicted from besides the model's state.

    * one-hot of (the event's behaviour, its time-gap bucket), the cells of
      :func:`behavior_markov`'s table, so a linear behaviour head can express
      that baseline;
    * the user's behaviour propensity so far: ``log(rate_b / prior_b)`` with
      ``rate_b = (count_b + s prior_b) / (n + s)`` over the user's events up
      to and including the row (``prior`` = the log's behaviour shares, ``s``
      = ``smoothing`` pseudo-events).  Users differ in how much they cart,
      fav and buy (on Taobao their rates vary 4-9 times more than one shared
      rate gives); the rate is causal (the row's own event at most).
      ``prior`` (the add-one shares of a larger log, :func:`behavior_shares`)
      replaces the log's own: a group of users cut from a log gets that
      log's values.

    Width :func:`behavior_context_width`.
    """
    B, n = n_behaviors, len(log)
    cell = log.behavior.astype(np.int64) * N_GAP_BUCKETS + gap_bucket(log, np.arange(n))
    out = np.zeros((n, behavior_context_width(B)), np.float32)
    out[np.arange(n), cell] = 1.0
    if n:
        prior = behavior_shares(log, B) if prior is None else np.asarray(prior, np.float64)
        onehot = np.eye(B)[log.behavior]
        cum = np.cumsum(onehot, axis=0)
        start = np.concatenate([[0], np.cumsum(np.bincount(log.user, minlength=log.n_users))])[log.user]
        before = np.where(start[:, None] > 0, cum[np.maximum(start - 1, 0)], 0.0)
        counts = cum - before                                   # the user's counts up to the row
        seen = (np.arange(n) - start + 1.0)[:, None]
        rate = (counts + smoothing * prior) / (seen + smoothing)
        out[:, B * N_GAP_BUCKETS:] = np.log(rate / prior)
    return out


def behavior_shares(log, n_behaviors=None, counts=None):
    """The behaviours' add-one shares in ``log`` (or from their ``counts``): :func:`_behavior_context`'s prior."""
    c = np.bincount(log.behavior, minlength=n_behaviors) if counts is None else np.asarray(counts)
    return (c + 1.0) / (c.sum() + len(c))


def behavior_context_width(n_behaviors):
    """Columns of :func:`_behavior_context`."""
    return n_behaviors * N_GAP_BUCKETS + n_behaviors


def _node_inputs(log, graph, E_item, E_cat, n_behaviors, nodes=None):
    """The closed form's node inputs ``[E_item, E_cat, node features, gap features]`` (float32), of
    every node of ``graph`` or of ``nodes`` only (the same values)."""
    from .features import node_features
    order = graph.perm
    F = node_features(log, graph, n_behaviors=n_behaviors, dtype=np.float32)
    G = _gap_features(log, n_behaviors)[order]
    if nodes is not None:
        order, F, G = order[nodes], F[nodes], G[nodes]
    return np.hstack([E_item[log.item[order]], E_cat[log.category[order]], F, G]).astype(np.float32)


class _RowsAt:
    """Rows ``rows`` of a tall matrix given only those rows: what ``_rank`` indexes ``H`` by."""

    def __init__(self, rows, values, n):
        self.pos = np.full(n, -1, np.int64)
        self.pos[rows] = np.arange(len(rows))
        self.values = values

    def __getitem__(self, r):
        pos = self.pos[r]
        if np.any(pos < 0):
            raise IndexError("a row whose state was not computed")
        return self.values[pos]


class _Rows:
    """Rows ``rows`` of the side-by-side ``arrays``, gathered a slice at a time: what
    :class:`Ridge` fits on, without the whole gathered copy (``[:]`` or ``np.asarray`` gives it)."""

    def __init__(self, rows, *arrays):
        self.rows, self.arrays = np.asarray(rows), arrays
        self.shape = (len(self.rows), sum(a.shape[1] for a in arrays))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, sl):
        r = self.rows[sl]
        return self.arrays[0][r] if len(self.arrays) == 1 else np.hstack([a[r] for a in self.arrays])

    def __array__(self, dtype=None, copy=None):
        if dtype is None:
            return self[:]
        # each array's rows gathered and converted into their columns of one new array: no
        # side-by-side copy in the arrays' dtype first
        out = np.empty(self.shape, dtype)
        a = 0
        for arr in self.arrays:
            out[:, a:a + arr.shape[1]] = arr[self.rows]
            a += arr.shape[1]
        return out


class Ridge:
    """Ridge regression onto one-hot classes, ``W = (XᵀX + λI)⁻¹ XᵀY``, for any λ at once.

    One eigendecomposition of the (d, d) Gram matrix serves every λ, and
    ``XᵀY`` is a scatter of the rows into their classes, so fitting costs
    O(n d² + d³) whatever the number of classes: no (n, n_classes) matrix is
    ever formed.  The closed-form path's replacement for softmax regression,
    whose full-batch epochs materialised (n_train, n_items) probabilities.

    Parameters
    ----------
    X : ndarray (n, d)
    y : ndarray (n,) int, classes in ``0..n_classes-1``
    n_classes : int
    """

    #: Rows converted to float64 at a time: above this the Gram matrix and ``XᵀY`` are summed
    #: over row chunks, so a float32 X of millions of rows is never copied whole.
    CHUNK = 1 << 18

    def __init__(self, X, y, n_classes):
        y = np.asarray(y)
        if len(X) <= self.CHUNK:
            given = X
            X = np.asarray(X, np.float64)
            self.mean = X.mean(axis=0) if len(X) else np.zeros(X.shape[1])
            # centred in place when X is this call's own copy (a _Rows gather or a conversion)
            Xc = np.subtract(X, self.mean, out=X) if X is not given and X.base is None else X - self.mean
            G, YX = Xc.T @ Xc, self._class_sums(y, Xc, n_classes)
        else:                                   # the same sums, chunk by chunk (rounding differs in the last bits)
            d = X.shape[1]
            total = np.zeros(d)
            for a in range(0, len(X), self.CHUNK):
                total += np.asarray(X[a:a + self.CHUNK], np.float64).sum(axis=0)
            self.mean = total / len(X)
            G, YX = np.zeros((d, d)), np.zeros((d, n_classes))
            for a in range(0, len(X), self.CHUNK):
                Xc = np.asarray(X[a:a + self.CHUNK], np.float64) - self.mean
                G += Xc.T @ Xc
                YX += self._class_sums(y[a:a + self.CHUNK], Xc, n_classes)
        s, self.V = np.linalg.eigh(G)
        self.s = np.maximum(s, 0.0)
        self.VtB = self.V.T @ YX                              # (d, n_classes)
        self.prior = np.bincount(y, minlength=n_classes) / max(len(y), 1)
        self.scale = float(self.s.mean()) if len(self.s) else 1.0

    @staticmethod
    def _class_sums(y, Xc, n_classes):
        """``XᵀY`` (d, n_classes): each row of ``Xc`` scattered into its class."""
        Y = sp.csr_matrix((np.ones(len(y)), (y, np.arange(len(y)))), shape=(n_classes, len(y)))
        return np.asarray((Y @ Xc).T)

    def scores(self, X, lam):
        """``prior + (X - mean) W_λ`` with ``λ = lam`` times the mean eigenvalue (a relative scale)."""
        Wt = self.VtB / (self.s + lam * self.scale + 1e-12)[:, None]
        return self.prior + ((np.asarray(X, np.float64) - self.mean) @ self.V) @ Wt


def _ndcg20(S, exclude, target):
    """NDCG@20 of dense scores, from each target's rank alone (no sort).

    The rank counts the non-excluded items scoring higher, and those tied
    with a lower index: the order of :func:`rank_dense`, so the figure is
    the one its top-k lists give, at O(m n) instead of a sort per row.
    """
    S = np.array(S, dtype=np.float64, copy=True)
    ex = sp.csr_matrix(exclude)
    S[np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr)), ex.indices] = -np.inf
    r = np.arange(len(S))
    ts = S[r, target][:, None]
    cols = np.arange(S.shape[1])[None, :]
    rank = (S > ts).sum(1) + ((S == ts) & (cols < np.asarray(target)[:, None])).sum(1)
    hit = np.isfinite(ts[:, 0]) & (rank < KS[-1])
    return float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if len(S) else float("nan")


def transition_counts(log, n_items, n_categories):
    """Item-level counts of a (user, time)-sorted log, the reductions behind :func:`_component_tables`.

    ``T1`` (item -> next item), ``T2`` (item -> item two events later) and
    ``TC`` (category -> next category) count pairs of consecutive events of
    one user; ``pop`` counts events per item.  Every pair lies within one
    user, so the counts of a log are the sums of its partitions' counts (in
    any order: they are integers).  Sparse CSR (float64) except ``pop``.
    """
    src, dst = transitions(log)
    two = np.flatnonzero(log.user[:-2] == log.user[2:])

    def count(a, b, n):
        T = sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
        T.sum_duplicates()
        return T
    return {"T1": count(log.item[src], log.item[dst], n_items), "T2": count(log.item[two], log.item[two + 2], n_items),
            "TC": count(log.category[src], log.category[dst], n_categories),
            "pop": np.bincount(log.item, minlength=n_items).astype(np.float64)}


def add_counts(a, b):
    """The sum of two :func:`transition_counts` results."""
    return {k: a[k] + b[k] for k in a}


def _rownorm(T):
    rs = np.asarray(T.sum(axis=1)).ravel()
    return sp.diags(1.0 / np.maximum(rs, 1.0)) @ T


def _component_tables(counts, item_category, n_categories):
    """Row-stochastic transition tables and each item's share of its category, from counts."""
    pop = counts["pop"]
    cat_pop = np.bincount(item_category, weights=pop, minlength=n_categories)
    return {"T1": _rownorm(counts["T1"]), "T2": _rownorm(counts["T2"]), "TC": _rownorm(counts["TC"]).toarray(),
            "share": pop / np.maximum(cat_pop[item_category], 1.0), "item_category": item_category}


def _bag(log, graph, tau, rows, n_items, w=None):
    """The time-decayed bag of each row's window -- the event itself (weight 1) plus Â's row of
    it (weight 1 in all), normalised -- as CSR (m, n_items); and each row's previous row and
    whether it is the same user's."""
    m = len(rows)
    w = _decay_weights(graph, tau, np.float64) if w is None else w      # the caller's, once per graph
    lo, hi = graph.indptr[rows], graph.indptr[rows + 1]
    cnt = hi - lo
    eids = np.repeat(lo - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(cnt.sum())
    r = np.concatenate([np.arange(m), np.repeat(np.arange(m), cnt)])
    c = np.concatenate([log.item[rows], log.item[graph.perm[graph.indices[eids]]]])
    v = np.concatenate([np.ones(m), w[eids]])
    bag = sp.csr_matrix((v, (r, c)), shape=(m, n_items))
    bag = sp.diags(1.0 / np.asarray(bag.sum(axis=1)).ravel()) @ bag
    prev = np.maximum(rows - 1, 0)
    has_prev = (rows > 0) & (log.user[prev] == log.user[rows])
    return bag, prev, has_prev


def _components(log, graph, tau, rows, tables, w=None):
    """Transition-based score components of the given (last) rows, each row-stochastic (m, n_items).

    ``last``: first-order transitions from the last item; ``window``: the
    same from the time-decayed bag of the user's window (the last event and
    its window-graph in-neighbours weighted by Â, the multi-order part);
    ``skip``: transitions two steps apart (item at p-1 -> item at p+1) from
    the item before the last; ``category``: next-category transitions times
    popularity within the category.  The tables (:func:`_component_tables`)
    come from the counts of a log (this one, the training log, or the sum
    over a partitioned log's parts); the rows' own events pick them.
    """
    TC, share, item_category = (tables[k] for k in ("TC", "share", "item_category"))
    out = {k: v.toarray() for k, v in _sparse_parts(log, graph, tau, rows, tables, w).items()}
    out["category"] = TC[log.category[rows]][:, item_category] * share
    return out


def _sparse_parts(log, graph, tau, rows, tables, w=None):
    """:func:`_components`' sparse parts (last, window, skip), unweighted, as CSR (m, n_items + 1)."""
    T1, T2 = tables["T1"], tables["T2"]
    bag, prev, has_prev = _bag(log, graph, tau, rows, T1.shape[0], w)
    return {"last": T1[log.item[rows]], "window": bag @ T1,
            "skip": sp.diags(has_prev.astype(np.float64)) @ T2[log.item[prev]]}


def _transition_inputs(log, graph, tau, rows, n_items, w=None):
    """What the threshold top-k reads of each row's transitions, :func:`_sparse_parts`' inputs
    without their products: the last item, the previous item (-1: none) and :func:`_bag`'s CSR
    as SciPy stores it (its entry order is ``bag @ T1``'s summation order)."""
    bag, prev, has_prev = _bag(log, graph, tau, rows, n_items, w)
    i64 = lambda a: np.ascontiguousarray(a, np.int64)
    return {"last": i64(log.item[rows]), "prev": i64(np.where(has_prev, log.item[prev], -1)),
            "bag_ptr": i64(bag.indptr), "bag_idx": i64(bag.indices),
            "bag_val": np.ascontiguousarray(bag.data, np.float64)}


#: Validation grid of the closed form: ridge strengths (relative to the mean eigenvalue) and
#: the weights of the transition components.
RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0)
MIX_GRID = (0.0, 0.1, 0.3, 1.0, 3.0)


#: Score matrices of at least this many entries take :func:`_choose_mix`'s Numba pass; smaller ones
#: the NumPy expression, which there costs less than compiling the kernel in a fresh install (the
#: default demo's 275 x 1,084: ~0.4 s for the ascent in NumPy against ~1.4 s of compilation).
MIX_KERNEL_MIN = 1 << 20


def _choose_mix(base, comps, exclude, target, grid=MIX_GRID, rounds=2):
    """Weights of ``comps`` added to ``base`` that maximise validation NDCG@20 (coordinate ascent).

    Each trial's figure is :func:`_ndcg20` of ``base + sum(w[j] * comps[j] for j in comps)``;
    from ``MIX_KERNEL_MIN`` scores up it is computed without forming that matrix
    (:func:`stgkern._numba.closed_form.mix_ndcg20`, the same bits)."""
    names = list(comps)
    if not names or np.size(base) < MIX_KERNEL_MIN:
        return _ascend(names, lambda w: _ndcg20(base + sum(w[j] * comps[j] for j in comps), exclude, target),
                       grid, rounds)
    from ._numba.closed_form import mix_ndcg20
    base = np.ascontiguousarray(base, np.float64)
    arrays = tuple(np.ascontiguousarray(comps[j], np.float64) for j in names)
    ex = sp.csr_matrix(exclude)
    ptr, idx = ex.indptr.astype(np.int64), ex.indices.astype(np.int64)
    tgt = np.asarray(target, np.int64)
    gain = np.empty(len(tgt))

    def score(w):
        mix_ndcg20(base, arrays, np.array([float(w[j]) for j in names]), ptr, idx, tgt, KS[-1], gain)
        return float(gain.mean()) if len(gain) else float("nan")
    return _ascend(names, score, grid, rounds)


def _ascend(names, score, grid=MIX_GRID, rounds=2):
    """Coordinate ascent of ``score(weights)`` over ``grid`` per name, from all zeros."""
    wts = {k: 0.0 for k in names}
    best = score(wts)
    for _ in range(rounds):
        moved = False
        for k in names:
            for g in grid:
                trial = dict(wts, **{k: g})
                s = score(trial)
                if s > best + 1e-12:
                    best, wts, moved = s, trial, True
        if not moved:
            break
    return wts, best


def _ndcg20_lists(idx, target):
    """NDCG@20 from top-k lists (the target's position in its row's list, ties already ordered)."""
    hit = idx[:, :KS[-1]] == np.asarray(target)[:, None]
    pos = np.where(hit.any(1), hit.argmax(1), -1)
    return float(np.where(pos >= 0, 1.0 / np.log2(np.maximum(pos, 0) + 2.0), 0.0).mean()) if len(idx) else float("nan")


#: Above this many (user, item) pairs, :func:`fit_closed_form` chooses its weights and ranks
#: the test users through the threshold top-k instead of dense score matrices (whose ten or so
#: copies made the fit's memory grow as users x items: 4 GB at 2.5k users x 11.6k items).
DENSE_LIMIT = 1 << 24


def model_positions(ids, model_ids):
    """Position of each of ``ids`` in ``model_ids`` (original ids), ``len(model_ids)`` where absent."""
    ids, model_ids = np.asarray(ids), np.asarray(model_ids)
    if len(model_ids) == 0:
        return np.full(len(ids), 0, np.int64)
    order = np.argsort(model_ids, kind="stable")
    hit = order[np.minimum(np.searchsorted(model_ids, ids, sorter=order), len(model_ids) - 1)]
    return np.where(model_ids[hit] == ids, hit, len(model_ids)).astype(np.int64)


def in_model_ids(log, item_ids, category_ids):
    """``log`` with its items and categories renumbered to positions in a model's ``item_ids`` and
    ``category_ids`` (original ids); one it lacks becomes ``len(item_ids)`` / ``len(category_ids)``,
    whose id reads -1."""
    import dataclasses
    item = model_positions(log.item_ids, item_ids)[log.item]
    cat = model_positions(log.category_ids, category_ids)[log.category]
    return dataclasses.replace(log, item=item, category=cat, item_ids=np.append(item_ids, -1),
                               category_ids=np.append(category_ids, -1))


def rms_divisor(H):
    """The closed form's state normalisation: each row of ``H`` is divided by this (m, 1) column."""
    return np.sqrt((H * H).sum(axis=1, keepdims=True) / H.shape[1]) + 1e-6


class ClosedFormModel:
    """A fitted closed-form STG model (:func:`fit_closed_form`), ready to score any log's users.

    It holds what training chose: the item and category embeddings, the
    next-item :class:`Ridge` and its λ, the component weights, the behaviour
    ridge, its λ and offsets, and the graph settings.  What it scores comes
    from the log it is given: a user's state is a function of that user's
    own events (window graph, node features, propagation), so the users of
    one part of a log partitioned by user are scored exactly as in the whole
    log.  The item-level tables of the transition components come from
    counts (:func:`transition_counts`), additive over parts; they are set by
    :meth:`with_counts` (at fit time: the training log's).

    Items and categories are the training log's (``item_ids``,
    ``category_ids``, the original ids).  A log in other ids (a partition
    read from disk) is mapped onto them; an item or category training never
    saw gets a zero embedding and no transitions, and is never recommended.
    """

    def __init__(self, *, item_ids, category_ids, item_category, n_behaviors, E_item, E_cat, graph_args, tau,
                 ridge, lam, mix, bridge, blam, offsets):
        self.item_ids, self.category_ids = np.asarray(item_ids), np.asarray(category_ids)
        self.item_category = np.asarray(item_category, np.int64)
        self.n_items, self.n_categories = len(self.item_ids), len(self.category_ids)
        self.n_behaviors = int(n_behaviors)
        # one extra zero row: the "unknown" item / category of a foreign log
        self.E_item = np.vstack([E_item, np.zeros((1, E_item.shape[1]), E_item.dtype)])
        self.E_cat = np.vstack([E_cat, np.zeros((1, E_cat.shape[1]), E_cat.dtype)])
        self.graph_args, self.tau = dict(graph_args), float(tau)
        self.ridge, self.lam, self.mix = ridge, lam, dict(mix)
        self.bridge, self.blam, self.offsets = bridge, blam, np.asarray(offsets, np.float64)
        self.tables = None

    # ---- item-level tables
    def counts(self, log):
        """:func:`transition_counts` of ``log`` (in any row order: it is sorted by user, time) in
        this model's ids (unknown items and categories counted under one extra id each, whose
        transitions :meth:`with_counts` drops); sum them over a log's parts."""
        lg = self.to_model_ids(log).sort()
        return transition_counts(lg, self.n_items + 1, self.n_categories + 1)

    def with_counts(self, counts):
        """This model with its component tables taken from ``counts`` (returns self)."""
        ic = np.append(self.item_category, self.n_categories)
        t = _component_tables(counts, ic, self.n_categories + 1)
        # An unknown item or category has no transitions of its own: its extra row pools every
        # item training never saw, and would hand a user whose last item is one of them the
        # successors of all of them (a nearly dense row on a large log).
        for key, n in (("T1", self.n_items), ("T2", self.n_items)):
            keep = np.ones(n + 1)
            keep[n] = 0.0
            t[key] = (sp.diags(keep) @ t[key]).tocsr()
            t[key].eliminate_zeros()
        t["TC"][self.n_categories] = 0.0
        self.tables = t
        return self

    # ---- ids
    def to_model_ids(self, log):
        """``log`` with items and categories in this model's ids (unknown ones: ``n_items``, ``n_categories``)."""
        same = (len(log.item_ids) == self.n_items and np.array_equal(log.item_ids, self.item_ids)
                and len(log.category_ids) == self.n_categories and np.array_equal(log.category_ids, self.category_ids))
        return log if same else in_model_ids(log, self.item_ids, self.category_ids)

    # ---- scoring
    def states(self, log, rows=None):
        """``(H, graph)``: the propagated, row-normalised state of every row of a sorted log (model ids).

        With ``rows``, ``H`` holds those rows' states only (``H[i]`` is row
        ``rows[i]``'s), computed over their two-hop in-neighbourhood
        (:func:`_propagate_at`): the same bits as the whole log's rows, for a
        fraction of the work and memory (a user's last event reaches ~14 of
        their rows, where the whole log's ``H`` is ~1 kB an event).
        """
        from .construct import window_graph
        g = window_graph(log, **self.graph_args)
        if rows is None:
            H = _propagate(g, _node_inputs(log, g, self.E_item, self.E_cat, self.n_behaviors), self.tau)
        else:
            H = _propagate_at(g, lambda at: _node_inputs(log, g, self.E_item, self.E_cat, self.n_behaviors, at),
                              self.tau, np.asarray(rows, np.int64))
        H /= rms_divisor(H)
        return H, g

    def item_scores(self, log, rows, H, g, w=None):
        """Dense next-item scores (len(rows), n_items) after ``rows`` of ``log`` (model ids);
        ``w``: the graph's decay weights if the caller has them (``_decay_weights``)."""
        if self.tables is None:
            raise ValueError("the model has no component tables: call with_counts(counts) first")
        comps = _components(log, g, self.tau, rows, self.tables, w)
        return self.ridge.scores(H[rows], self.lam) + sum(self.mix[k] * comps[k][:, :self.n_items] for k in comps)

    def behavior_scores(self, log, rows, H):
        """Offset log-scores of the next behaviour after ``rows`` (argmax = the prediction)."""
        X = _Rows(rows, H, _behavior_context(log, self.n_behaviors))[:]
        return np.log(np.clip(self.bridge.scores(X, self.blam), 1e-4, None)) + self.offsets

    def recommend(self, log, k=KS[-1], exclude_seen=True, block=1024, method="threshold"):
        """Top-``k`` items after each user's last event in ``log`` (sorted by user, time).

        Returns ``(users, items, scores)``: the users present (their ids in
        ``log.user_ids``), and (n_users, k) arrays of recommended items (the
        model's original item ids; -1 pads a row with fewer than ``k``
        candidates) and their scores; a user's own items are excluded with
        ``exclude_seen``.  Users are scored ``block`` at a time.

        ``method="threshold"`` (the default) never forms a user's full score
        row: one :func:`stgkern.topk` pass over the catalogue ranks the
        ridge's low-rank part, and the transition and category components,
        which are non-negative, are added exactly to those k items, to the
        support of the sparse transitions and to the category items whose
        upper bound reaches the k-th score (:mod:`stgkern._numba.closed_form`
        proves the skipped ones cannot enter).  Its lists equal
        ``method="dense"`` (every score of every item, ``block * n_items``
        memory) up to the rounding of the dot products: an item order can
        differ only between scores within ~1e-12 of each other.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if method not in ("threshold", "dense"):
            raise ValueError(f"method must be 'threshold' or 'dense', got {method!r}")
        if len(log) == 0:
            return log.user_ids[:0], np.zeros((0, k), np.int64), np.zeros((0, k))
        lg = self.to_model_ids(log).sort()
        users = np.unique(lg.user)
        rows = last_rows(lg, users)
        H, g = self.states(lg, rows)
        assert np.array_equal(g.perm, np.arange(len(lg)))        # sorted: node == row
        H = _RowsAt(rows, H, len(lg))
        seen = _seen(lg, users, self.n_items + 1)[:, :self.n_items] if exclude_seen else None
        idx, scores = self._rank(lg, rows, H, g, k, seen, method, block)
        items = np.where(idx >= 0, self.item_ids[np.maximum(idx, 0)], -1)
        return log.user_ids[users], items, scores

    def _rank(self, log, rows, H, g, k, exclude, method="threshold", block=1024):
        """Top-``k`` (model item ids, scores; -1 / -inf padding) after ``rows`` of a sorted log in
        model ids, ``block`` rows at a time, by either method (see :meth:`recommend`)."""
        idx = np.full((len(rows), k), -1, np.int64)
        scores = np.full((len(rows), k), -np.inf)
        w = _decay_weights(g, self.tau, np.float64)                 # once per graph, not per block
        for a in range(0, len(rows), block):
            ex = exclude[a:a + block] if exclude is not None else None
            if method == "threshold":
                i, sc = self._threshold_topk(log, rows[a:a + block], H, g, k, ex, w)
            else:
                S = self.item_scores(log, rows[a:a + block], H, g, w)
                i = rank_dense(S, k, ex)
                sc = np.take_along_axis(S, np.maximum(i, 0), 1)
            got = i >= 0
            idx[a:a + block, :i.shape[1]] = i                       # k past the catalogue: padded
            scores[a:a + block, :i.shape[1]] = np.where(got, sc, -np.inf)
        return idx, scores

    def _threshold_tables(self):
        """Per-model inputs of the threshold top-k, built once per (λ, tables)."""
        key = getattr(self, "_tt_for", None)         # the objects themselves: an id can be reused
        if key is None or key[0] is not self.tables or key[1] is not self.ridge or key[2] != self.lam:
            r, n = self.ridge, self.n_items
            Wt = r.VtB / (r.s + self.lam * r.scale + 1e-12)[:, None]
            items = np.ascontiguousarray(np.vstack([Wt, r.prior[None, :]]).T)          # (n_items, d + 1)
            if not np.isfinite(items).all():
                raise ValueError("the ridge's item weights hold NaN or infinite values")
            # float32 copy for the first scan of a large catalogue, with each item's norm for the
            # rounding bound; none where float32 would overflow (the float64 scan alone then)
            vnorm = np.linalg.norm(items, axis=1)
            items32 = items.astype(np.float32) if np.abs(items).max(initial=0.0) < 1e30 else None
            share = np.ascontiguousarray(self.tables["share"][:n], np.float64)
            cat = self.item_category[:n]
            order = np.lexsort((np.arange(n), -share, cat))       # by category, then share desc, then id
            cat_ptr = np.concatenate([[0], np.cumsum(np.bincount(cat, minlength=self.n_categories + 1))])
            TC = sp.csr_matrix(self.tables["TC"])
            TC.sort_indices()
            self._tt = {"items": items, "items32": items32, "vmax": float(vnorm.max(initial=0.0)), "share": share,
                        "cat": np.ascontiguousarray(cat, np.int64), "cat_ptr": cat_ptr.astype(np.int64),
                        "cat_items": order.astype(np.int64), "TC": TC}
            self._tt_for = (self.tables, self.ridge, self.lam)
        return self._tt

    def _threshold_topk(self, log, rows, H, g, k, exclude, w=None):
        """Exact top-k of :meth:`item_scores`' rows without forming them (see :meth:`recommend`)."""
        if self.tables is None:
            raise ValueError("the model has no component tables: call with_counts(counts) first")
        low = self._lowrank_topk(H[rows], k, exclude)
        trans = _transition_inputs(log, g, self.tau, rows, self.tables["T1"].shape[0], w)
        return self._rerank(low, trans, log.category[rows], exclude)

    def _lowrank_topk(self, X, k, exclude):
        """``(Q, T, L_k)``: the ridge's query rows (with the prior's 1), the top-k of its
        low-rank scores over the unseen items (padded with -1) and each row's k-th score."""
        from . import _dispatch
        from .readout import _exclude_csr
        r, tt, m = self.ridge, self._threshold_tables(), len(X)
        Q = np.hstack([fixed_shape_matmul(np.asarray(X, np.float64) - r.mean, r.V), np.ones((m, 1))])
        if not np.isfinite(Q).all():
            raise ValueError("the states hold NaN or infinite values; scores would be undefined")
        kk = min(k, self.n_items)
        # stgkern.topk's kernel without its per-call scan of the item table (checked once, when built):
        # a served user's request would read the table twice
        kernel = _dispatch.kernels("topk", _dispatch.CPU).topk
        if self.n_items >= config.lowrank_f32_min_items and tt["items32"] is not None and m:
            t_idx, t_sc = topk_f32_certified(Q, tt["items"], tt["items32"], tt["vmax"], kk, exclude)
        else:
            t_idx, t_sc = kernel(Q, tt["items"], kk, _exclude_csr(exclude, m, self.n_items, np))
        if kk < k:
            t_idx = np.hstack([t_idx, np.full((m, k - kk), -1, np.int64)])
            t_sc = np.hstack([t_sc, np.full((m, k - kk), -np.inf)])
        return Q, np.ascontiguousarray(t_idx, np.int64), np.ascontiguousarray(t_sc[:, k - 1], np.float64)

    def _rerank(self, low, trans, last_category, exclude):
        """The exact top-k (``mix``-weighted) from :meth:`_lowrank_topk`'s output and the rows'
        :func:`_transition_inputs` (:func:`stgkern._numba.closed_form.rerank`)."""
        import numba

        from ._numba.closed_form import rerank
        i64 = lambda a: np.ascontiguousarray(a, np.int64)
        Q, t_idx, l_k = low
        tt, n, (m, k) = self._threshold_tables(), self.n_items, t_idx.shape
        csr = lambda T: (i64(T.indptr), T.indices, np.ascontiguousarray(T.data, np.float64))
        tc = tt["TC"][last_category]
        tc.sort_indices()
        ex = sp.csr_matrix((m, n)) if exclude is None else sp.csr_matrix(exclude)
        ex.sort_indices()
        out_idx = np.empty((m, k), np.int64)
        out_sc = np.empty((m, k), np.float64)
        mix = lambda key: float(self.mix.get(key, 0.0))
        n_chunks = max(1, min(m, numba.get_num_threads()))
        n_cols = max(n, self.tables["T1"].shape[0], self.tables["T2"].shape[0])
        with self._rerank_scratch(n_chunks, n_cols, m) as (mark, acc, base):
            rerank(t_idx, l_k, Q, tt["items"], trans["last"], trans["prev"], trans["bag_ptr"], trans["bag_idx"],
                   trans["bag_val"], mix("last"), mix("window"), mix("skip"), *csr(self.tables["T1"]),
                   *csr(self.tables["T2"]),
                   i64(tc.indptr), i64(tc.indices), np.ascontiguousarray(tc.data, np.float64), mix("category"),
                   tt["cat_ptr"], tt["cat_items"], tt["share"], tt["cat"], i64(ex.indptr), i64(ex.indices), 1e-9,
                   n_chunks, mark, acc, base, out_idx, out_sc)
        return out_idx, out_sc

    @contextlib.contextmanager
    def _rerank_scratch(self, n_chunks, n_cols, m):
        """The rerank kernel's per-chunk stamps and accumulators (40 bytes an item a chunk) and the
        stamp base of this call: kept on the model, so a served user's request does not fill
        40 MB at a million items.  Another thread holding them gets fresh ones."""
        lock = self.__dict__.setdefault("_rr_lock", threading.Lock())
        mine = lock.acquire(blocking=False)
        rr = getattr(self, "_rr", None) if mine else None
        if rr is None or rr[0].shape[0] < n_chunks or rr[0].shape[1] != n_cols:
            rr = [np.full((n_chunks, n_cols), -1, np.int64), np.full((n_chunks, n_cols, 4), -1.0), 0]
            if mine:
                self._rr = rr
        try:
            yield rr[0], rr[1], rr[2]
        finally:
            rr[2] += m                          # every stamp this call wrote stays below the next base
            if mine:
                lock.release()

    def __getstate__(self):
        """Pickles (Dask ships models to workers) leave out the caches; they are rebuilt on use."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_rr", "_rr_lock", "_tt", "_tt_for")}


def fixed_shape_matmul(A, B, rows=256):
    """``A @ B`` as products of exactly ``rows`` rows of ``A`` (the last block zero-padded),
    each computed as ``(B.T @ block.T).T``, the orientation of :func:`stgkern.topk`'s tiles.

    BLAS rounds an element by the shape of the product it sits in (a short
    or ragged block takes other kernels), so a fixed shape gives each row of
    ``A`` the same result, bit for bit, whatever rows it is multiplied with:
    a user's projection is the same in any batch, part or worker with the
    same number of BLAS threads (tests/test_model.py).
    """
    m, d = A.shape
    out = np.empty((m, B.shape[1]), np.result_type(A, B))
    BT = np.ascontiguousarray(B.T)
    block = np.zeros((rows, d), A.dtype)
    tile = np.empty((B.shape[1], rows), out.dtype)
    for a in range(0, m, rows):
        b = min(m, a + rows)
        block[:b - a] = A[a:b]
        block[b - a:] = 0
        np.matmul(BT, block.T, out=tile)
        out[a:b] = tile[:, :b - a].T
    return out


def topk_f32_certified(Q, items, items32, vmax, k, exclude):
    """The float64 top-``k`` of ``Q @ items.T`` (unseen items; ``exclude`` a CSR or None) from
    a float32 scan of ``items32`` and a float64 rescoring; ``vmax`` bounds the item norms.

    A float32 dot product of length ``d`` is within ``ε = (d + 3) u ‖q‖ ‖v‖``
    (``u = 2⁻²⁴``; input rounding and any summation order) of the exact one,
    and the float64 one closer still.  So with ``L`` the float32 k-th best
    score, every item of the float64 top-k scores at least ``L - 2ε`` in
    float32 (``k`` items score ``≥ L`` there, so the float64 k-th best is
    ``≥ L - ε``).  The scan keeps ``k2 = k + max(k, config.lowrank_f32_extra)``
    items a row; where its last one is already below ``L - 2ε``, the kept
    ones from ``L - 2ε`` up are all the candidates; other rows take the
    float64 scan's top ``k2`` as theirs.  Every row's candidates are then
    scored by one product of a fixed shape, ``(k2, d) @ q`` in float64, and
    the top ``k`` of those scores (ties to the lower id) are the result.

    So a row's scores are the same bits whichever rows it is ranked with and
    whichever way its candidates were found, and neither scan needs
    ``topk``'s fixed-shape panels (they only choose candidates): one served
    query scans at BLAS's GEMV speed.  The lists are the float64 scan's.
    """
    from . import _dispatch
    from .readout import _exclude_csr
    (m, d), n = Q.shape, items.shape[0]
    kernel = _dispatch.kernels("topk", _dispatch.CPU).topk
    qn = np.linalg.norm(Q, axis=1)
    safe = qn * vmax < 1e30                                 # no float32 overflow in the products
    k2 = min(n, k + max(k, int(config.lowrank_f32_extra)))
    i32, s32 = kernel(np.ascontiguousarray(Q, np.float32), items32, k2, _exclude_csr(exclude, m, n, np),
                      fixed_shape=False)
    s = s32.astype(np.float64)
    # relative rounding, plus an absolute term for float32's subnormal range
    eps = (d + 3) * 2.0 ** -24 * 1.01 * qn * vmax + (d + 3) * 2.0 ** -126
    thr = s[:, k - 1] - 2 * eps
    complete = safe & ((k2 == n) | (i32[:, k2 - 1] < 0) | (s[:, k2 - 1] < thr))
    C = np.where((i32 >= 0) & (s >= thr[:, None]), i32, -1)
    rest = np.flatnonzero(~complete)
    if len(rest):
        ex = None if exclude is None else sp.csr_matrix(exclude)[rest]
        C[rest] = kernel(Q[rest], items, k2, _exclude_csr(ex, len(rest), n, np), fixed_shape=False)[0]
    S = np.matmul(items[np.maximum(C, 0)], Q[:, :, None])[:, :, 0]
    S[C < 0] = -np.inf
    order = np.lexsort((np.where(C < 0, n, C), -S), axis=-1)[:, :k]
    S = np.take_along_axis(S, order, 1)
    out_idx = np.where(np.isfinite(S), np.take_along_axis(C, order, 1), -1)
    return out_idx, np.where(np.isfinite(S), S, -np.inf)


def fit_closed_form(prep, *, window=8, horizon=86400.0, category_window=2, tau=3600.0, dim=CLOSED_FORM_DIM,
                    seed=0, progress=None, return_model=False, dense_limit=DENSE_LIMIT):
    """The method without PyTorch: fixed spatio-temporal propagation, then closed-form heads.

    Item and category embeddings are a randomized SVD of the training
    item -> next-item / item -> category / category -> next-category counts;
    node inputs are ``[item emb, category emb, node_features, time-gap
    features]``; the state of an event is ``[X, ÂX, Â²X]`` over its window
    graph (Â = row-normalised ``exp(-dt/τ)``, computed with
    :func:`stgkern.spmm`).  A :class:`Ridge` regression of the states onto
    the next item (new items only: seen ones are never ranked) is added to
    transition components read off the same window graph (first order,
    the time-decayed window bag, skip-one, category; :func:`_components`);
    the ridge strength and the component weights are chosen on validation
    NDCG@20.  The next behaviour is a ridge on the same states with
    per-class offsets calibrated on validation macro-F1.  The test targets
    are predicted from the training + validation events, the component
    tables counted over them.

    Where the validation or test users times the items exceed
    ``dense_limit``, the weights are chosen and the test users ranked from
    exact top-20 lists (:meth:`ClosedFormModel.recommend`'s threshold
    top-k) instead of dense score matrices, so memory stays bounded by
    1,024 users' lists; the choice is the same but for near-ties of
    NDCG (tests/test_model.py compares both).

    Returns ``(topk (m, 20), behaviour (m,), info)`` for the test targets,
    and with ``return_model`` also the :class:`ClosedFormModel` (its tables
    from the training + validation events).
    """
    tr = prep.train
    src, dst = transitions(tr)
    n, C, B = prep.n_items, prep.log.n_categories, prep.n_behaviors
    # item context: next items, previous items (offset n), own category (offset 2n)
    E_item = _spectral(np.concatenate([tr.item[src], tr.item[dst], tr.item]),
                       np.concatenate([tr.item[dst] + n, tr.item[src], tr.category + 2 * n]),
                       n, 2 * n + C, dim, seed)
    E_cat = _spectral(np.concatenate([tr.category[src], tr.category[dst]]),
                      np.concatenate([tr.category[dst], tr.category[src] + C]), C, 2 * C, dim // 2, seed + 1)
    model = ClosedFormModel(item_ids=prep.log.item_ids, category_ids=prep.log.category_ids,
                            item_category=prep.item_category, n_behaviors=B, E_item=E_item.astype(np.float32),
                            E_cat=E_cat.astype(np.float32),
                            graph_args=dict(window=window, horizon=horizon, category_window=category_window),
                            tau=tau, ridge=None, lam=None, mix={}, bridge=None, blam=None, offsets=np.zeros(B))
    H, g = model.states(tr)
    assert np.array_equal(g.perm, np.arange(len(tr)))        # tr is sorted, so node == row
    new = _new_item_mask(tr, src, dst)
    ridge = Ridge(_Rows(src[new], H), tr.item[dst[new]], n)
    lv = last_rows(tr, prep.eval_user)
    model.with_counts(model.counts(tr))
    model.ridge = ridge
    if len(lv) * n <= dense_limit:
        comps_v = {k: v[:, :n] for k, v in _components(tr, g, tau, lv, model.tables).items()}
        scores_v = {lam: ridge.scores(H[lv], lam) for lam in RIDGE_GRID}
        lam = max(RIDGE_GRID, key=lambda l: _ndcg20(scores_v[l], prep.seen_valid, prep.valid_item))
        wts, valid_ndcg = _choose_mix(scores_v[lam], comps_v, prep.seen_valid, prep.valid_item)
    else:                               # bounded: the same choice from top-20 lists, never a score matrix
        blocks = [slice(a, a + 1024) for a in range(0, len(lv), 1024)]
        zero = {k: 0.0 for k in ("last", "window", "skip", "category")}
        low = {}
        for l in RIDGE_GRID:            # the low-rank top-20 alone ranks for the ridge strength
            model.lam = l
            low[l] = [model._lowrank_topk(H[lv[b]], KS[-1], prep.seen_valid[b]) for b in blocks]
        lam = max(RIDGE_GRID, key=lambda l: _ndcg20_lists(np.vstack([t for _, t, _ in low[l]]), prep.valid_item))
        model.lam, low = lam, low[lam]
        w = _decay_weights(g, tau, np.float64)
        trans = [_transition_inputs(tr, g, tau, lv[b], model.tables["T1"].shape[0], w) for b in blocks]

        def ndcg(mix):                  # each weighting re-ranks the same candidates: no new GEMM
            model.mix = mix
            return _ndcg20_lists(np.vstack([model._rerank(low[i], trans[i], tr.category[lv[b]], prep.seen_valid[b])[0]
                                            for i, b in enumerate(blocks)]), prep.valid_item)
        wts, valid_ndcg = _ascend(list(zero), ndcg)
        del low, trans

    ctx = _behavior_context(tr, B)
    bridge = Ridge(_Rows(src, H, ctx), tr.behavior[dst].astype(np.int64), B)
    Hb_v = _Rows(lv, H, ctx)[:]
    del H, ctx                      # the history's states come next: never hold both logs' states
    blam, off, best = RIDGE_GRID[0], np.zeros(B), -1.0
    logs = lambda S: np.log(np.clip(S, 1e-4, None))          # the ridge's probability-like scores, log-scaled
    for l in RIDGE_GRID:
        Sb = logs(bridge.scores(Hb_v, l))
        o = calibrate_offsets(Sb, prep.valid_behavior, behavior_prior(tr, B))
        f = M.precision_recall_f1(prep.valid_behavior, (Sb + o).argmax(1), n_classes=B)[2]
        if f > best + 1e-12:
            blam, off, best = l, o, f
    model.ridge, model.lam, model.mix = ridge, lam, wts
    model.bridge, model.blam, model.offsets = bridge, blam, off

    h = prep.history
    model.with_counts(model.counts(h))
    Ht, gt = model.states(h)
    lt = last_rows(h, prep.eval_user)
    if len(lt) * n <= dense_limit:
        top = rank_dense(model.item_scores(h, lt, Ht, gt), KS[-1], prep.seen_test)
    else:
        top = model._rank(h, lt, Ht, gt, KS[-1], prep.seen_test)[0]
    beh = model.behavior_scores(h, lt, Ht).argmax(axis=1)
    out = (top, beh, {
        "valid_NDCG@20": valid_ndcg, "ridge_lambda": lam, "mix": wts, "behavior_offsets": off.tolist(),
        "valid_behavior_F1": best, "state_dim": int(Ht.shape[1])})
    return out + (model,) if return_model else out


def srgnn_closed_form(prep, *, dim=CLOSED_FORM_DIM, max_len=SRGNN_CLOSED_FORM_MAX_LEN, seed=0):
    """SR-GNN-style baseline without PyTorch: one step over the session graph on fixed spectral
    item embeddings, ``[last, mean]`` session readout, the same :class:`Ridge` head (λ on
    validation NDCG@20) as :func:`fit_closed_form`."""
    from .conv import spmm
    tr = prep.train
    src, dst = transitions(tr)
    n = prep.n_items
    E = _spectral(np.concatenate([tr.item[src], tr.item[dst]]), np.concatenate([tr.item[dst] + n, tr.item[src]]),
                  n, 2 * n, dim, seed).astype(np.float32)

    def states(log, end_rows):
        from .compat import session_graph
        ptr, items = _prefixes(log, end_rows, max_len)
        g, node_item, alias = session_graph(ptr, items)
        h = E[node_item]
        h = np.hstack([h, spmm(g, h, g.edata["w_in"]),
                       spmm(g.transpose(), h, g.edata["w_out"][g.transpose().edata["eid"]])])
        hp = h[alias]
        seq = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        mean = np.zeros((len(ptr) - 1, h.shape[1]), np.float32)
        np.add.at(mean, seq, hp)
        mean /= np.diff(ptr)[:, None]
        return np.hstack([h[alias[ptr[1:] - 1]], mean])

    new = _new_item_mask(tr, src, dst)
    ridge = Ridge(states(tr, src[new]), tr.item[dst[new]], n)
    Sv = {lam: ridge.scores(states(tr, last_rows(tr, prep.eval_user)), lam) for lam in RIDGE_GRID}
    lam = max(RIDGE_GRID, key=lambda l: _ndcg20(Sv[l], prep.seen_valid, prep.valid_item))
    St = ridge.scores(states(prep.history, last_rows(prep.history, prep.eval_user)), lam)
    return rank_dense(St, KS[-1], prep.seen_test), {"valid_NDCG@20": _ndcg20(Sv[lam], prep.seen_valid,
                                                                              prep.valid_item),
                                                     "ridge_lambda": lam}


# ---------------------------------------------------------------- PyTorch
def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised through backend selection
        raise ImportError("the PyTorch model needs torch: pip install 'stgkern[torch]', "
                          "or run the NumPy closed form (backend='numpy')") from exc
    return torch


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def default_conv(kind, dim, tau):
    """The model's graph layer: ``stgkern.torch.STGConv`` or ``TemporalAttention``."""
    from . import torch as stgtorch
    if kind == "stgconv":
        return stgtorch.STGConv(dim, dim, n_kinds=3, tau_init=tau, normalize=True)
    if kind == "attention":
        return stgtorch.TemporalAttention(dim, dim, heads=1, time_dim=16)
    raise ValueError(f"model={kind!r} is not known; choose 'stgconv' or 'attention'")


def _ranges(lo, hi):
    """Concatenation of ``arange(lo[i], hi[i])`` over i."""
    lens = hi - lo
    if lens.sum() == 0:
        return np.zeros(0, np.int64)
    return np.repeat(lo - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())


def _segments(log, seq_len, users=None):
    """Row ranges ``(start, end)`` of runs of at most ``seq_len`` consecutive events of one user.

    Each user's events are cut from the end backwards, so the last segment
    holds the most recent ``seq_len`` events, the state the predictions are
    made from.  With ``users``, only those users' last segments, in that order.
    """
    cnt = np.bincount(log.user, minlength=log.n_users)
    end = np.cumsum(cnt)
    begin = end - cnt
    if users is not None:
        e = end[users]
        return np.maximum(begin[users], e - seq_len), e
    nseg = -(-cnt // seq_len)
    u = np.repeat(np.arange(log.n_users), nseg)
    k = np.arange(nseg.sum()) - np.repeat(np.cumsum(nseg) - nseg, nseg)
    e = end[u] - k * seq_len
    return np.maximum(begin[u], e - seq_len), e


class _SegmentData:
    """A sorted log's per-row inputs and its window graph cut at segment boundaries.

    Every model sees a user through segments of at most ``seq_len`` events
    (training) or the last such segment (prediction), so the window graph
    drops the edges that cross a segment start: a training segment then
    looks exactly like a prediction one.  Batches of segments are
    block-diagonal slices of this one graph, built by index arithmetic
    (the graph is constructed once per log, never per batch).

    Every input is a function of one user's events (``prior``: the
    behaviour shares of the log a group of users was cut from), so the data
    of a group of whole users gives their segments the same inputs, bit for
    bit, as the data of the whole log: what training over groups of users
    (:func:`fit_torch`'s ``graph_users``) builds on.
    """

    def __init__(self, log, n_behaviors, seq_len, window=None, horizon=None, category_window=0, prior=None):
        torch = _torch()
        self.seq_len = int(seq_len)
        self.item = torch.from_numpy(log.item)
        self.category = torch.from_numpy(log.category)
        self.behavior = torch.from_numpy(log.behavior.astype(np.int64))
        self.cross = torch.from_numpy(_behavior_context(log, n_behaviors, prior=prior))
        self.indptr = None
        if window is None:
            return
        from .construct import window_graph
        from .features import node_features
        g = window_graph(log, window=window, horizon=horizon, category_window=category_window)
        assert np.array_equal(g.perm, np.arange(len(log)))         # sorted log: node == row
        self.features = torch.from_numpy(np.hstack([node_features(log, g, n_behaviors=n_behaviors,
                                                                  dtype=np.float32),
                                                    _gap_features(log, n_behaviors)]))
        s, e = _segments(log, self.seq_len)
        seg_start = np.zeros(len(log), np.int64)
        seg_start[_ranges(s, e)] = np.repeat(s, e - s)
        rows = np.repeat(np.arange(len(log)), np.diff(g.indptr))
        keep = g.indices.astype(np.int64) >= seg_start[rows]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=len(log)))])
        self.indices = g.indices.astype(np.int64)[keep]
        self.dt = g.edata["dt"].astype(np.float32)[keep]
        self.kind = g.edata["kind"].astype(np.int64)[keep]

    def batch(self, s, e):
        """Inputs of the segments ``[s[i], e[i])``: node rows, the sub-graph, the padded layout."""
        torch = _torch()
        from .graph import Graph
        lens = e - s
        L = self.seq_len
        rows = _ranges(s, e)
        off = np.concatenate([[0], np.cumsum(lens)])
        # right-aligned (B, L) layout: slot L-1 is each segment's last event; padding points at row n
        slot = np.arange(len(rows)) - np.repeat(off[:-1], lens) + np.repeat(L - lens, lens)
        pad = np.full((len(s), L), len(rows), np.int64)
        pad[np.repeat(np.arange(len(s)), lens), slot] = np.arange(len(rows))
        out = {"rows": rows, "pad": torch.from_numpy(pad), "valid": torch.from_numpy(pad < len(rows)),
               "item": self.item[rows], "category": self.category[rows], "behavior": self.behavior[rows]}
        if self.indptr is not None:
            lo, hi = self.indptr[rows], self.indptr[rows + 1]
            eids = _ranges(lo, hi)
            shift = np.repeat(np.repeat(off[:-1] - s, lens), hi - lo)
            out["graph"] = Graph(np.concatenate([[0], np.cumsum(hi - lo)]), self.indices[eids] + shift,
                                 check=False, rows_sorted=True)
            out["dt"] = torch.from_numpy(self.dt[eids])
            out["kind"] = torch.from_numpy(self.kind[eids])
            out["features"] = self.features[rows]
        return out


def _blocks_class():
    torch = _torch()
    nn = torch.nn
    from ._train_step import Dropout, attention_softmax, dropout_add

    class CausalBlocks(nn.Module):
        """Pre-norm causal self-attention blocks over right-aligned (B, L, d) sequences.

        Position ``q`` attends to positions ``k <= q`` that hold an event (a
        padding position attends to itself only, so no row is all-masked),
        then a position-wise feed-forward layer; learned positional
        embeddings per slot.  The sequence part shared by the SASRec-style
        baseline and the STG-GNN's readout, so that both get the same capacity.
        """

        def __init__(self, dim, seq_len, n_blocks, heads, dropout):
            super().__init__()
            self.pos = nn.Embedding(seq_len, dim)
            nn.init.normal_(self.pos.weight, std=0.02)
            self.attn = nn.ModuleList([nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
                                       for _ in range(n_blocks)])
            self.ffn = nn.ModuleList([nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), Dropout(dropout),
                                                    nn.Linear(2 * dim, dim)) for _ in range(n_blocks)])
            self.ln1 = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n_blocks)])
            self.ln2 = nn.ModuleList([nn.LayerNorm(dim) for _ in range(n_blocks)])
            self.final = nn.LayerNorm(dim)
            self.drop = Dropout(dropout)
            self.heads = heads

        def attention(self, attn, h, blocked, last=False):
            """``attn(h, h, h, attn_mask=blocked)`` of a batch-first ``nn.MultiheadAttention``, from its
            own weights: no transposes to (L, B, d) and back, and the scale, key mask, softmax and the
            weights' dropout in one pass (:func:`stgkern._train_step.attention_softmax`, the masks
            drawn as ``dropout`` draws them, not by ``bernoulli_``).  With ``last``, the output of
            the last slot only, (B, 1, d): every slot's keys and values, one query."""
            F = torch.nn.functional
            B, L, d = h.shape
            H = self.heads
            W, b = attn.in_proj_weight, attn.in_proj_bias
            if last:
                q = F.linear(h[:, -1:], W[:d], b[:d]).view(B, 1, H, d // H).transpose(1, 2)
                k, v = (t.transpose(1, 2) for t in F.linear(h, W[d:], b[d:]).view(B, L, 2, H, d // H).unbind(2))
                blocked = blocked[:, -1:]
            else:
                # (B, H, L, d / H) views; unbind's backward stacks the three gradients into one array
                # (indexing qkv[:, :, i] would zero-fill a whole (B, L, 3d) gradient for each of them)
                q, k, v = (t.transpose(1, 2) for t in F.linear(h, W, b).view(B, L, 3, H, d // H).unbind(2))
            w = attention_softmax(torch.matmul(q, k.transpose(-1, -2)), blocked, (d // H) ** -0.5, attn.dropout,
                                  self.training)
            o = torch.matmul(w, v)
            return F.linear(o.transpose(1, 2).reshape(B, -1, d), attn.out_proj.weight, attn.out_proj.bias)

        def forward(self, x, valid, last=False):
            """(B, L, d) outputs; with ``last``, the last slot's only, (B, 1, d) (what a prediction
            reads): the last block then attends from that slot alone and its feed-forward layer
            and the final norm see one row a sequence."""
            B, L, _ = x.shape
            x = self.drop(x + self.pos.weight[:L])
            q = torch.arange(L)
            blocked = ~((q[None, :, None] >= q[None, None, :]) & (valid[:, None, :] | (q[:, None] == q[None, :])))
            p, on = self.drop.p, self.training
            n = len(self.attn)
            for i, (attn, ffn, ln1, ln2) in enumerate(zip(self.attn, self.ffn, self.ln1, self.ln2)):
                if last and i == n - 1:
                    x = dropout_add(x[:, -1:], self.attention(attn, ln1(x), blocked, last=True), p, on)
                else:
                    x = dropout_add(x, self.attention(attn, ln1(x), blocked), p, on)
                x = dropout_add(x, ffn(ln2(x)), p, on)
            return self.final(x)

    return CausalBlocks


def _padded(h, pad):
    """``h``'s rows in the (B, L) layout ``pad`` (index ``len(h)``: a zero row): a gather whose
    backward is an ``index_add`` (advanced indexing's is an accumulating ``index_put``)."""
    torch = _torch()
    table = torch.cat([h, h.new_zeros(1, h.shape[1])])
    return table.index_select(0, pad.reshape(-1)).view(*pad.shape, h.shape[1])


def build_stg_model(prep, *, dim=64, conv="stgconv", tau=3600.0, dropout=0.2, seq_len=50, n_blocks=1,
                    heads=1, conv_factory=None):
    """The spatio-temporal GNN (a ``torch.nn.Module``).

    Node input = item + category + behaviour embeddings + a linear map of
    :func:`stgkern.node_features` and the time-gap features; two graph
    layers over the window graph (time-decayed temporal and category edges,
    one learnable τ per edge kind) with residual connections; then causal
    self-attention over the user's last ``seq_len`` node states (the
    readout over the recent window).  Each position's output scores every
    item against the tied item + category embeddings plus an item bias; a
    linear head predicts the next behaviour.  ``conv_factory(kind, dim, tau)``
    builds each graph layer (default :func:`default_conv`).
    """
    torch = _torch()
    nn = torch.nn
    factory = conv_factory or default_conv
    from ._train_step import Dropout, dropout_add
    item_category = torch.from_numpy(prep.item_category)
    n_feat = 2 * prep.n_behaviors + 1 + 1 + N_GAP_BUCKETS     # node_features + gap (log1p, bucket one-hot)
    Blocks = _blocks_class()

    class STGModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.item = nn.Embedding(prep.n_items, dim)
            self.category = nn.Embedding(prep.log.n_categories, dim)
            self.behavior = nn.Embedding(prep.n_behaviors, dim)
            self.features = nn.Linear(n_feat, dim)
            self.convs = nn.ModuleList([factory(conv, dim, tau) for _ in range(2)])
            self.norm = nn.LayerNorm(dim)
            self.blocks = Blocks(dim, seq_len, n_blocks, heads, dropout)
            self.item_bias = nn.Parameter(torch.zeros(prep.n_items))
            # the behaviour head also sees the last event's (behaviour, gap bucket) cell and the user's
            # behaviour propensity so far directly (_behavior_context)
            self.next_behavior = nn.Linear(dim + behavior_context_width(prep.n_behaviors), prep.n_behaviors)
            self.drop = Dropout(dropout)
            self.conv_kind = conv
            for emb in (self.item, self.category, self.behavior):
                nn.init.normal_(emb.weight, std=0.1)

        def _conv(self, layer, h, b):
            if self.conv_kind == "attention":
                return layer(h, b["graph"], dt=b["dt"])
            return layer(h, b["graph"], dt=b["dt"], kind=b["kind"])

        def forward(self, b, last=False):
            h = (self.item(b["item"]) + self.category(b["category"]) + self.behavior(b["behavior"])
                 + self.features(b["features"]))
            h = self.drop(h)
            h = dropout_add(h, torch.relu(self._conv(self.convs[0], h, b)), self.drop.p, self.training)
            h = dropout_add(h, self._conv(self.convs[1], h, b), self.drop.p, self.training)
            h = self.norm(h)
            return self.blocks(_padded(h, b["pad"]), b["valid"], last=last)

        def item_vectors(self):
            return self.item.weight + self.category(item_category)

        def behavior_logits(self, states, cross):
            return self.next_behavior(torch.cat([states, cross], 1))

        def item_scores(self, states):
            return states @ self.item_vectors().T + self.item_bias

    return STGModel()


class _Vocabulary:
    """What :func:`build_stg_model` reads from a :class:`Prepared`: the catalogue's sizes and item
    categories (for a model trained from parts, whose log is never held whole)."""

    def __init__(self, n_items, n_categories, n_behaviors, item_category):
        from types import SimpleNamespace
        self.n_items, self.n_behaviors = int(n_items), int(n_behaviors)
        self.item_category = np.asarray(item_category, np.int64)
        self.log = SimpleNamespace(n_categories=int(n_categories))


class TorchRecommender:
    """A trained STG-GNN (PyTorch, :func:`build_stg_model`) ready to score any log's users.

    It holds the weights, the settings the model was built with, and the
    catalogue in original ids: ``item_ids`` (the items it ranks),
    ``category_ids`` and each item's category.  One extra item and one extra
    category stand for everything training did not keep: an event on such
    an item still feeds the user's state, but the item is never recommended.
    A user's state is a function of that user's own events (window graph,
    node features, last ``seq_len`` events), so a part of a log partitioned
    by user is scored exactly as in the whole log; groups of ``graph_users``
    users at a time bound the memory.  Pickles rebuild the module from the
    settings and weights (what :func:`stgkern.pipeline.recommend_partitions`
    and Dask ship).
    """

    def __init__(self, *, model, settings, item_ids, category_ids, item_category, n_behaviors, prior,
                 graph_users=1024):
        self.settings = dict(settings)
        self.item_ids, self.category_ids = np.asarray(item_ids), np.asarray(category_ids)
        self.item_category = np.asarray(item_category, np.int64)
        self.n_items, self.n_categories = len(self.item_ids), len(self.category_ids)
        self.n_behaviors, self.prior = int(n_behaviors), np.asarray(prior, np.float64)
        self.graph_users = int(graph_users)
        self.model = model.eval()

    @staticmethod
    def build(settings, n_items, n_categories, n_behaviors, item_category):
        """The untrained module for a catalogue of ``n_items`` + 1 items and ``n_categories`` + 1 categories."""
        keys = ("dim", "conv", "tau", "dropout", "seq_len", "n_blocks", "heads")
        vocab = _Vocabulary(n_items + 1, n_categories + 1, n_behaviors, np.append(item_category, n_categories))
        return build_stg_model(vocab, **{k: settings[k] for k in keys})

    def make_data(self, log, prior=None):
        """:class:`_SegmentData` of a sorted log in model ids, with the training log's behaviour prior."""
        s = self.settings
        return _SegmentData(log, self.n_behaviors, s["seq_len"], window=s["window"], horizon=s["horizon"],
                            category_window=s["category_window"], prior=self.prior if prior is None else prior)

    def to_model_ids(self, log):
        """``log`` with items and categories in this model's ids (unknown ones: ``n_items``,
        ``n_categories``), sorted by (user, time)."""
        if log.n_behaviors > self.n_behaviors:
            raise ValueError(f"the log has {log.n_behaviors} behaviours; the model was trained on "
                             f"{self.n_behaviors}")
        return in_model_ids(log, self.item_ids, self.category_ids).sort()

    def states(self, log, users):
        """Output states of ``users``' last events in a sorted log in model ids (float32 tensor)."""
        torch = _torch()
        with torch.no_grad(), _numba_threads(1):
            return user_states(self.model, self.make_data, log, users, prior=self.prior,
                               graph_users=self.graph_users)[0]

    def rank(self, states, k, exclude=None):
        """Top-``k`` model item ids and scores of each state over the catalogue (never the
        extra item), ``exclude`` (CSR over the catalogue) barred."""
        return _torch_topk(states, self.model, k, exclude, self.n_items)

    def recommend(self, log, k=KS[-1], exclude_seen=True):
        """Top-``k`` items after each user's last event in ``log``: ``(users, items, scores)`` as
        :meth:`ClosedFormModel.recommend` gives them (original ids, -1 padding)."""
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if len(log) == 0:
            return log.user_ids[:0], np.zeros((0, k), np.int64), np.zeros((0, k))
        lg = self.to_model_ids(log)
        users = np.unique(lg.user)
        seen = _seen(lg, users, self.n_items + 1)[:, :self.n_items] if exclude_seen else None
        kk = min(k, self.n_items)
        idx = np.full((len(users), k), -1, np.int64)
        scores = np.full((len(users), k), -np.inf)
        step = max(self.graph_users, 1)
        for a in range(0, len(users), step):
            i, sc = self.rank(self.states(lg, users[a:a + step]), kk,
                              None if seen is None else seen[a:a + step])
            idx[a:a + step, :kk], scores[a:a + step, :kk] = i, np.where(i >= 0, sc, -np.inf)
        items = np.where(idx >= 0, self.item_ids[np.maximum(idx, 0)], -1)
        return log.user_ids[users], items, scores

    def __getstate__(self):
        st = {k: v for k, v in self.__dict__.items() if k != "model"}
        st["state_dict"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return st

    def __setstate__(self, st):
        weights = st.pop("state_dict")
        self.__dict__.update(st)
        self.model = self.build(self.settings, self.n_items, self.n_categories, self.n_behaviors,
                                self.item_category)
        self.model.load_state_dict(weights)
        self.model.eval()


def build_sasrec(prep, *, dim=64, seq_len=50, n_blocks=1, heads=1, dropout=0.2):
    """SASRec-style baseline (Kang & McAuley, ICDM 2018): causal self-attention over item ids.

    Item embeddings (tied with the output layer, plus an item bias) and
    learned positions into the same :class:`CausalBlocks` as the STG-GNN's
    readout; no time, behaviour, category or graph.
    """
    torch = _torch()
    nn = torch.nn
    Blocks = _blocks_class()

    class SASRec(nn.Module):
        def __init__(self):
            super().__init__()
            self.item = nn.Embedding(prep.n_items, dim)
            nn.init.normal_(self.item.weight, std=0.1)
            self.blocks = Blocks(dim, seq_len, n_blocks, heads, dropout)
            self.item_bias = nn.Parameter(torch.zeros(prep.n_items))

        def forward(self, b, last=False):
            h = self.item(b["item"])
            return self.blocks(_padded(h, b["pad"]), b["valid"], last=last)

        def item_vectors(self):
            return self.item.weight

        def item_scores(self, states):
            return states @ self.item_vectors().T + self.item_bias

    return SASRec()


def _torch_topk(states, model, k, exclude, n_items=None):
    """``(items, scores)``: the top-k of each state over the model's first ``n_items`` item
    vectors (all by default) through :func:`stgkern.topk`, the item bias folded in as a column."""
    torch = _torch()
    from .readout import topk
    with torch.no_grad():
        V = model.item_vectors()[:n_items]
        bias = getattr(model, "item_bias", None)
        bias = torch.zeros(len(V)) if bias is None else bias[:n_items]
        Q = torch.cat([states, torch.ones(len(states), 1)], 1).numpy().astype(np.float32)
        items = torch.cat([V, bias[:, None]], 1).numpy().astype(np.float32)
    return topk(np.ascontiguousarray(Q), np.ascontiguousarray(items), k, exclude)


def _torch_rank(states, model, k, exclude):
    """Top-k item ids for each state (:func:`_torch_topk` over the whole catalogue)."""
    return _torch_topk(states, model, k, exclude)[0]


def _new_item_mask(log, src, dst):
    """True where the target event's item is new for its user (not among their earlier events)."""
    key = log.user * log.n_items + log.item
    order = np.lexsort((np.arange(len(log)), key))
    first = np.ones(len(log), bool)
    ks = key[order]
    first[order[1:]] = ks[1:] != ks[:-1]
    return first[dst]


def _targets(log, n_items, new_items_only):
    """Per row of a sorted log: the next event's item (-1 for a user's last event, and with
    ``new_items_only`` for an item the user had before) and behaviour (-1 for a last event)."""
    src, dst = transitions(log)
    y_item = np.full(len(log), -1, np.int64)
    y_beh = np.full(len(log), -1, np.int64)
    keep = _new_item_mask(log, src, dst) if new_items_only else np.ones(len(src), bool)
    y_item[src[keep]] = log.item[dst[keep]]
    y_beh[src] = log.behavior[dst]
    return y_item, y_beh


#: With an int, the neural models (all three alike) train on each user's most recent events only, as
#: SASRec trains on the last ``maxlen`` = 200 items per MovieLens user.  Off by default: on MovieLens
#: latest-small a cap of 200 cut training time by 35 % but validation NDCG@20 by 16 % (SASRec).
MAX_EVENTS_PER_USER = None


def _recent_start(log, max_events):
    """Per user, the first row of their last ``max_events`` events in a sorted log."""
    cnt = np.bincount(log.user, minlength=log.n_users)
    end = np.cumsum(cnt)
    return np.maximum(end - cnt, end - (max_events if max_events else 1 << 62))


def _item_loss(model, states, y, n_negatives, gen):
    """Cross-entropy of the next item: over the whole catalogue, or sampled.

    With ``n_negatives`` under half the catalogue, each step draws that many
    items from ``model.sample_q`` (training counts ** 0.75, shared by the
    batch; a draw equal to a row's target is masked) and the softmax runs
    over the target and the draws, logits corrected by ``-log(K q)``
    (sampled softmax, Bengio & Senecal; Yi et al. 2019).  The step costs
    ``K`` instead of ``n_items`` dot products per row: on MovieLens (3.6k
    items) the full softmax was 70 % of a step.  Uniform draws without the
    popularity proposal lost a quarter of validation NDCG@20 there.

    The draws are with replacement, so an item can come up several times;
    its ``c`` copies have one logit and add ``c exp(s - log Kq) = exp(s -
    log Kq + log c)`` to the denominator, so each distinct item is one
    column with ``log c`` in its correction: the same loss and gradients
    with fewer dot products (1,024 draws over MovieLens' catalogue are
    ~830 distinct items).
    """
    torch = _torch()
    F = torch.nn.functional
    V = model.item_vectors()
    n = V.shape[0]
    if n_negatives is None or 2 * n_negatives >= n:
        return F.cross_entropy(states @ V.T + model.item_bias, y)
    from ._train_step import sampled_softmax_loss
    q = model.sample_q
    neg, count = torch.unique(torch.multinomial(q, n_negatives, replacement=True, generator=gen),
                              return_counts=True)
    logq = torch.log(q * n_negatives)
    # index_select: the backward is an index_add (indexing's is an accumulating index_put)
    pick = lambda t, i: t.index_select(0, i)
    return sampled_softmax_loss(states, pick(V, y), pick(model.item_bias, y) - pick(logq, y), pick(V, neg),
                                pick(model.item_bias, neg) - (pick(logq, neg) - torch.log(count.to(q.dtype))), y, neg)


class _numba_threads:
    """Run a block with Numba's thread count set to ``n`` (restored after).

    A training step calls the graph kernels on one batch (~1,600 events) a
    dozen times forward and backward; at that size thread start-up and
    joins cost more than the work: the default demo's STG-GNN trained in
    15.6 s with 2 Numba threads and 4.1 s with 1.  Results do not change
    (the kernels are bit-identical across thread counts).
    """

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import numba
        self.old = numba.get_num_threads()
        numba.set_num_threads(min(self.n, self.old))

    def __exit__(self, *exc):
        import numba
        numba.set_num_threads(self.old)


class _Adam:
    """Adam with L2 folded into the gradient, as ``torch.optim.Adam(lr=, weight_decay=)``
    computes it on the CPU, op for op, so the weights it trains are bit-identical
    (``tests/test_model.py`` checks that against torch's).

    Why not torch's: constructing the first torch optimiser in a process
    imports ``torch._dynamo``, 1.0-1.4 s of the default demo's ~10 s, paid
    again in every worker process.  Per parameter: its own step count (a
    parameter without a gradient this step is skipped, as torch skips it) and
    the two moment estimates.  The update runs as torch's multi-tensor
    (``_foreach_*``) ops over the parameters that share a step count: seven
    calls a step instead of seven per parameter (the STG-GNN has 33), the
    same arithmetic element for element.
    """

    def __init__(self, params, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.eps = float(lr), float(weight_decay), float(eps)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.state = {}

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        torch = _torch()
        b1, b2 = self.beta1, self.beta2
        groups = {}                      # step count -> (params, grads, m, v): one multi-tensor update each
        with torch.no_grad():
            for p in self.params:
                if p.grad is None:
                    continue
                st = self.state.get(p)
                if st is None:
                    st = self.state[p] = [0, torch.zeros_like(p, memory_format=torch.preserve_format),
                                          torch.zeros_like(p, memory_format=torch.preserve_format)]
                st[0] += 1
                grp = groups.setdefault(st[0], ([], [], [], []))
                for lst, t in zip(grp, (p, p.grad, st[1], st[2])):
                    lst.append(t)
            for t, (ps, gs, ms, vs) in groups.items():
                if self.weight_decay != 0:
                    gs = torch._foreach_add(gs, ps, alpha=self.weight_decay)
                torch._foreach_lerp_(ms, gs, 1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, gs, gs, 1 - b2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_div_(denom, (1 - b2 ** t) ** 0.5)
                torch._foreach_add_(denom, self.eps)
                torch._foreach_addcdiv_(ps, ms, denom, -(self.lr / (1 - b1 ** t)))


def _fit_minibatch(model, n_units, batch_size, loss_fn, valid_score, *, epochs, patience, lr, weight_decay,
                   seed, progress=None):
    """Mini-batch Adam over shuffled units (segments or examples), early stopping on validation.

    Each epoch visits every unit once in a seeded random order,
    ``ceil(n_units / batch_size)`` optimiser steps; ``loss_fn(indices)``
    gives a step's loss.  See :func:`_fit_loop` for the rest.
    """
    return _fit_loop(model, _shuffled(n_units, batch_size), loss_fn, valid_score, epochs=epochs,
                     patience=patience, lr=lr, weight_decay=weight_decay, seed=seed, progress=progress)


def _shuffled(n_units, batch_size):
    """``epoch(rng)`` for :func:`_fit_loop`: ``ceil(n_units / batch_size)`` batches of indices
    of ``range(n_units)`` in a new random order each epoch."""
    per_epoch = max(1, -(-n_units // batch_size))

    def epoch(rng):
        order = rng.permutation(n_units)
        return per_epoch, (order[k * batch_size:(k + 1) * batch_size] for k in range(per_epoch))
    return epoch


def _fit_loop(model, epoch, loss_fn, valid_score, *, epochs, patience, lr, weight_decay, seed, progress=None):
    """Adam over the batches ``epoch(rng)`` gives, early stopping on validation.

    ``epoch(rng)`` returns ``(steps, batches)`` for one epoch (``steps`` an
    estimate, for progress only); each batch's loss is ``loss_fn(batch)``.
    After each epoch ``valid_score()`` (higher is better) runs in eval mode.
    Training stops after ``patience`` epochs without a better score and the
    best epoch's weights are restored.  ``progress(step, total_steps)`` is
    called after every step (total = the epoch cap's steps, so an ETA is an
    upper bound).  Numba runs one thread meanwhile (:class:`_numba_threads`).

    Returns ``{"best_epoch", "epochs_run", "steps", "valid_score", "train_curve"}``.
    """
    with _numba_threads(1):
        torch = _torch()
        rng = np.random.default_rng(seed)
        opt = _Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_epoch, best_state, curve, step = -np.inf, 0, None, [], 0
        for ep in range(1, epochs + 1):
            model.train()
            n_steps, batches = epoch(rng)
            total, count = 0.0, 0
            for batch in batches:
                loss = loss_fn(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
                step += 1
                count += 1
                if progress:
                    progress(step, max(step, (ep - 1) * n_steps + count, epochs * n_steps))
            model.eval()
            with torch.no_grad():
                score = valid_score()
            curve.append({"epoch": ep, "loss": total / max(count, 1), "valid": score})
            if score > best:
                best, best_epoch = score, ep
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif ep - best_epoch >= patience:
                break
        model.load_state_dict(best_state)
        model.eval()
    return {"best_epoch": best_epoch, "epochs_run": len(curve), "steps": step, "valid_score": best,
            "train_curve": curve}


#: Validation metric of early stopping and of every choice made on validation.
VALID_METRIC = "NDCG@20"


def _last_states(model, data, log, users, chunk=512):
    """Output state of each user's last event (in ``users`` order), from their last segment."""
    torch = _torch()
    s, e = _segments(log, data.seq_len, users)
    out = []
    with torch.no_grad():
        for k in range(0, len(s), chunk):
            out.append(model(data.batch(s[k:k + chunk], e[k:k + chunk]), last=True)[:, -1])
    return torch.cat(out) if out else torch.zeros(0, 1)


def sub_log(log, users):
    """The events of ``users`` in a (user, time)-sorted log, ids kept (still sorted)."""
    mask = np.zeros(log.n_users, bool)
    mask[users] = True
    return log.take(np.flatnonzero(mask[log.user]))


def user_groups(log, rng, size):
    """The users of a sorted log in a random order (``rng``), cut into groups of ``size``:
    ``(users, sub_log(log, users))`` per group, made when the iteration reaches it."""
    users = rng.permutation(np.flatnonzero(np.bincount(log.user, minlength=log.n_users)))
    for a in range(0, len(users), size):
        u = np.sort(users[a:a + size])
        yield u, sub_log(log, u)


def user_states(model, make_data, log, users, *, prior=None, graph_users=None, data=None):
    """``(states, context)`` of ``users``' last events in a sorted log (``users`` order): the
    sequence model's output state and the behaviour context (:func:`_behavior_context`).

    From ``data`` (the whole log's :class:`_SegmentData`) when given; else the
    users are taken ``graph_users`` at a time and each group's data is built
    by ``make_data(sub_log, prior)`` (the same values: the inputs are per user).
    """
    torch = _torch()
    users = np.asarray(users, np.int64)
    if data is not None:
        return _last_states(model, data, log, users), data.cross[torch.from_numpy(last_rows(log, users))]
    H, C = [], []
    for a in range(0, len(users), graph_users or max(len(users), 1)):
        u = users[a:a + (graph_users or len(users))]
        sub = sub_log(log, u)
        d = make_data(sub, prior)
        H.append(_last_states(model, d, sub, u))
        C.append(d.cross[torch.from_numpy(last_rows(sub, u))])
    if not H:
        return torch.zeros(0, 1), torch.zeros(0, 1)
    return torch.cat(H), torch.cat(C)


class _SequenceTrainer:
    """A sequence model's loss and batches: next item (sampled softmax over the catalogue) and,
    for a model with a behaviour head, the class-weighted next behaviour.

    Batches come from one :class:`_SegmentData` of the whole training log
    (:meth:`whole_log_epoch`) or from groups of whole users whose data is
    built when their turn comes (:meth:`groups_epoch`): memory then follows
    the group, not the log, and each segment's inputs are the same bits.
    """

    def __init__(self, model, *, n_items, n_behaviors, behavior_counts, behavior_weight, new_items_only,
                 n_negatives, max_events_per_user, seed, ignore_item=None):
        torch = _torch()
        self.model, self.n_items, self.n_behaviors = model, int(n_items), int(n_behaviors)
        self.ignore_item = ignore_item          # an item id that is never a target (a catalogue's "other")
        self.behavior_weight, self.new_items_only = float(behavior_weight), bool(new_items_only)
        self.n_negatives, self.max_events_per_user = n_negatives, max_events_per_user
        self.with_behavior = behavior_weight > 0 and hasattr(model, "next_behavior")
        # one behaviour (MovieLens' ratings): its cross-entropy is 0 with a zero gradient, and Adam
        # leaves a parameter with a zero gradient where it is, so the term is skipped, not computed
        self.train_behavior = self.with_behavior and self.n_behaviors > 1
        if self.with_behavior:
            # class weights ~ 1/sqrt(frequency): rare behaviours count without swamping the common one
            freq = np.asarray(behavior_counts, np.float64) + 1.0
            self.cw = torch.tensor((freq.sum() / freq) ** 0.5, dtype=torch.float32)
            self.cw /= self.cw.mean()
        self.gen = torch.Generator().manual_seed(seed)

    def targets(self, log):
        torch = _torch()
        y_item, y_beh = _targets(log, self.n_items, self.new_items_only)
        if self.ignore_item is not None:
            y_item[y_item == self.ignore_item] = -1
        return torch.from_numpy(y_item), torch.from_numpy(y_beh)

    def segments(self, log, seq_len):
        s, e = _segments(log, seq_len)
        keep = e > _recent_start(log, self.max_events_per_user)[log.user[e - 1]]
        return s[keep], e[keep]

    def loss(self, batch):
        torch = _torch()
        F = torch.nn.functional
        data, y_item, y_beh, s, e = batch
        model = self.model
        b = data.batch(s, e)
        out = model(b)
        out = out.reshape(-1, out.shape[-1])
        # the (B * L) slot of each row: the valid slots, row-major, enumerate the rows in order
        rows, slot = b["rows"], np.flatnonzero(b["valid"].numpy().reshape(-1))
        yi = y_item.numpy()[rows]
        m = yi >= 0
        loss = (_item_loss(model, out.index_select(0, torch.from_numpy(slot[m])), torch.from_numpy(yi[m]),
                           self.n_negatives, self.gen) if m.any() else out.sum() * 0)
        if self.train_behavior:
            yb = y_beh.numpy()[rows]
            mb = yb >= 0
            if mb.any():
                loss = loss + self.behavior_weight * F.cross_entropy(
                    model.behavior_logits(out.index_select(0, torch.from_numpy(slot[mb])),
                                          data.cross[torch.from_numpy(rows[mb])]),
                    torch.from_numpy(yb[mb]), weight=self.cw)
        return loss

    def whole_log_epoch(self, data, log, batch_size):
        """``epoch(rng)`` for :func:`_fit_loop`: every segment of ``log`` once, shuffled, ``batch_size`` a step."""
        y_item, y_beh = self.targets(log)
        s, e = self.segments(log, data.seq_len)
        units = _shuffled(len(s), batch_size)

        def epoch(rng):
            steps, batches = units(rng)
            return steps, ((data, y_item, y_beh, s[j], e[j]) for j in batches)
        return epoch

    def groups_epoch(self, groups, make_data, prior, batch_size, steps):
        """``epoch(rng)`` over ``groups(rng)`` (sorted sub-logs of whole users, made lazily): per
        group, its data (``make_data(sub, prior)``), then its segments shuffled, ``batch_size`` a step."""
        def epoch(rng):
            def batches():
                for sub in groups(rng):
                    data = make_data(sub, prior)
                    y_item, y_beh = self.targets(sub)
                    s, e = self.segments(sub, data.seq_len)
                    order = rng.permutation(len(s))
                    for k in range(0, len(s), batch_size):
                        j = order[k:k + batch_size]
                        yield data, y_item, y_beh, s[j], e[j]
            return steps, batches()
        return epoch


def _fit_sequence_model(prep, model, make_data, *, seq_len, graph_users, behavior_weight, new_items_only, epochs, patience,
                        lr, weight_decay, batch_size, n_negatives, max_events_per_user, seed, progress):
    """Train a (B, L, d) sequence model on next item (and next behaviour) over training segments.

    ``make_data(log, prior)`` builds a log's :class:`_SegmentData`.  With
    ``graph_users`` None it is built once for the training log and once for
    the history; with an int, for ``graph_users`` users at a time, shuffled
    each epoch (:func:`user_groups`), so no graph of the whole log is held.
    """
    torch = _torch()
    tr, B = prep.train, prep.n_behaviors
    trainer = _SequenceTrainer(model, n_items=prep.n_items, n_behaviors=B,
                               behavior_counts=np.bincount(tr.behavior, minlength=B),
                               behavior_weight=behavior_weight, new_items_only=new_items_only,
                               n_negatives=n_negatives, max_events_per_user=max_events_per_user, seed=seed)
    if graph_users is None:
        data_tr = make_data(tr, None)
        data_h = make_data(prep.history, None)
        prior_tr = prior_h = None
        epoch = trainer.whole_log_epoch(data_tr, tr, batch_size)
    else:
        graph_users = int(graph_users)
        if graph_users < 1:
            raise ValueError(f"graph_users must be at least 1, got {graph_users}")
        data_tr = data_h = None
        prior_tr, prior_h = behavior_shares(tr, B), behavior_shares(prep.history, B)
        steps = len(trainer.segments(tr, seq_len)[0]) // batch_size + -(-tr.n_users // graph_users)
        epoch = trainer.groups_epoch(lambda rng: (sub for _, sub in user_groups(tr, rng, graph_users)),
                                     make_data, prior_tr, batch_size, steps)

    def states(log, data, prior):
        return user_states(model, make_data, log, prep.eval_user, prior=prior, graph_users=graph_users, data=data)

    def valid_score():
        Hv = states(tr, data_tr, prior_tr)[0]
        return M.ndcg(_torch_rank(Hv, model, KS[-1], prep.seen_valid), prep.valid_item, KS[-1])

    torch.manual_seed(seed)
    cnt = np.bincount(tr.item, minlength=prep.n_items) + 1.0
    model.sample_q = torch.tensor(cnt ** 0.75 / (cnt ** 0.75).sum(), dtype=torch.float32)
    fit = _fit_loop(model, epoch, trainer.loss, valid_score, epochs=epochs, patience=patience, lr=lr,
                    weight_decay=weight_decay, seed=seed, progress=progress)
    fit["valid_" + VALID_METRIC] = fit.pop("valid_score")
    if graph_users is not None:
        fit["graph_users"] = graph_users
    with torch.no_grad():
        Hv, cv = states(tr, data_tr, prior_tr)
        Ht, ct = states(prep.history, data_h, prior_h)
        beh = None
        if trainer.with_behavior:
            Sv = torch.log_softmax(model.behavior_logits(Hv, cv), 1).numpy().astype(np.float64)
            off = calibrate_offsets(Sv, prep.valid_behavior, behavior_prior(tr, prep.n_behaviors))
            St = torch.log_softmax(model.behavior_logits(Ht, ct), 1).numpy().astype(np.float64)
            beh = (St + off).argmax(1).astype(np.int64)
            fit["behavior_offsets"] = off.tolist()
            fit["valid_behavior_F1"] = M.precision_recall_f1(prep.valid_behavior, (Sv + off).argmax(1),
                                                             n_classes=prep.n_behaviors)[2]
    return _torch_rank(Ht, model, KS[-1], prep.seen_test), beh, fit


def fit_torch(prep, *, conv="stgconv", window=8, horizon=86400.0, category_window=2, tau=3600.0, dim=64,
              seq_len=50, n_blocks=1, heads=1, epochs=20, lr=0.005, weight_decay=0.0, dropout=0.2,
              batch_size=32, behavior_weight=0.5, patience=3, n_negatives=1024,
              max_events_per_user=MAX_EVENTS_PER_USER, new_items_only=True, seed=0, conv_factory=None,
              graph_users=None, progress=None):
    """Train the spatio-temporal GNN (:func:`build_stg_model`) on next-item / next-behaviour prediction.

    Mini-batch training over segments of at most ``seq_len`` consecutive
    training events (``batch_size`` segments a step, shuffled each epoch):
    every position whose next event is a training event predicts it (full
    softmax over the catalogue; with ``new_items_only`` only targets the user
    had not touched, the only kind the evaluation can count, since seen
    items are excluded from every ranking), plus the class-weighted
    behaviour head weighted by ``behavior_weight``.  Early stopping on
    validation NDCG@20 (``patience`` epochs), best weights restored; the
    behaviour offsets are calibrated on validation macro-F1.

    The window graph of the training events is built once; the validation
    targets are predicted from it, the test targets from the graph of the
    training and validation events (the test event is never a node).  With
    ``graph_users``, no graph of the whole log is built: each epoch takes
    the users in a new random order, ``graph_users`` at a time, builds that
    group's window graph and features, and trains on its segments (shuffled
    within the group), so memory follows the group; predictions are made
    group by group too.

    Returns ``(topk (m, 20), behaviour (m,), info)`` for the test targets.
    """
    torch = _torch()
    torch.manual_seed(seed)
    model = build_stg_model(prep, dim=dim, conv=conv, tau=tau, dropout=dropout, seq_len=seq_len,
                            n_blocks=n_blocks, heads=heads, conv_factory=conv_factory)
    graph_args = dict(window=window, horizon=horizon, category_window=category_window)

    def make_data(log, prior):
        return _SegmentData(log, prep.n_behaviors, seq_len, prior=prior, **graph_args)
    return _fit_sequence_model(prep, model, make_data, seq_len=seq_len, graph_users=graph_users, behavior_weight=behavior_weight,
                               new_items_only=new_items_only, epochs=epochs, patience=patience, lr=lr,
                               weight_decay=weight_decay, batch_size=batch_size, n_negatives=n_negatives,
                               max_events_per_user=max_events_per_user, seed=seed, progress=progress)


def fit_sasrec(prep, *, dim=64, seq_len=50, n_blocks=1, heads=1, epochs=20, lr=0.005, weight_decay=0.0,
               dropout=0.2, batch_size=32, patience=3, n_negatives=1024, max_events_per_user=MAX_EVENTS_PER_USER,
               new_items_only=True, seed=0, graph_users=None, progress=None):
    """SASRec-style baseline (:func:`build_sasrec`), trained exactly as :func:`fit_torch`
    (same segments, batches, loss, early stopping).  Returns ``(topk (m, 20), info)``."""
    torch = _torch()
    torch.manual_seed(seed)
    model = build_sasrec(prep, dim=dim, seq_len=seq_len, n_blocks=n_blocks, heads=heads, dropout=dropout)
    idx, _, fit = _fit_sequence_model(
        prep, model, lambda log, prior: _SegmentData(log, prep.n_behaviors, seq_len, prior=prior),
        seq_len=seq_len, graph_users=graph_users, behavior_weight=0.0,
        new_items_only=new_items_only, epochs=epochs, patience=patience, lr=lr, weight_decay=weight_decay,
        batch_size=batch_size, n_negatives=n_negatives, max_events_per_user=max_events_per_user, seed=seed,
        progress=progress)
    return idx, fit


# ---------------------------------------------------------------- SR-GNN-style baseline
def _prefixes(log, end_rows, max_len):
    """CSR of each prefix ``log.item[max(user start, e - max_len + 1) : e + 1]`` for e in ``end_rows``."""
    starts = np.concatenate([[0], np.cumsum(np.bincount(log.user, minlength=log.n_users))])[log.user[end_rows]]
    lo = np.maximum(starts, end_rows - max_len + 1)
    lens = end_rows - lo + 1
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pos = np.arange(ptr[-1]) - np.repeat(ptr[:-1], lens) + np.repeat(lo, lens)
    return ptr, log.item[pos].astype(np.int64)


def fit_srgnn(prep, *, dim=64, epochs=20, lr=0.005, weight_decay=0.0, dropout=0.2, patience=3,
              batch_size=1024, n_negatives=1024, max_events_per_user=MAX_EVENTS_PER_USER, max_len=SRGNN_MAX_LEN,
              new_items_only=True, seed=0, progress=None):
    """SR-GNN-style baseline (Wu et al., AAAI 2019), with :func:`fit_torch`'s budget and early stopping.

    Each example is a user's last ``max_len`` items before the target, as an
    SR-GNN session graph (built per mini-batch of ``batch_size`` examples);
    one gated GNN step over ``A_in``/``A_out``, the session vector from the
    last item and a soft-attention readout, scored against the item
    embeddings plus an item bias.  Items only: no time, behaviour or
    category.  Returns ``(topk (m, 20), info)`` for the test targets.

    The step runs on stgkern's fused kernels (:mod:`stgkern._train_step`,
    ``nn.GRUCell``'s and the ``nn.Linear`` layers' parameters, their
    arithmetic up to float32 rounding): one pull gives ``[A_in h, A_out h]``
    and the rows' weight sums, so the GRU's input is one GEMM by weights
    folded per step (``W_ih1 W_in``, ``W_ih2 W_out``; the two biases through
    ``W_ih`` ride on the weight sums) instead of a GEMM before the pull and
    one after; :func:`stgkern._train_step.gru_cell` takes the r and z gates'
    two sides from one GEMM of ``[pulled | h]`` and adds the biases in its
    gates' pass; the attention readout is one pass over the positions.  A
    MovieLens step is GEMMs and a pass per tensor.
    """
    torch = _torch()
    nn = torch.nn
    from ._train_step import Dropout, attention_readout, gru_cell, session_pull
    from .models.batch import make_batch
    torch.manual_seed(seed)
    tr = prep.train
    src, dst = transitions(tr)
    keep = _new_item_mask(tr, src, dst) if new_items_only else np.ones(len(src), bool)
    keep &= src >= _recent_start(tr, max_events_per_user)[tr.user[src]]

    class SRGNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(prep.n_items, dim)
            nn.init.normal_(self.emb.weight, std=0.1)
            self.w_in, self.w_out = nn.Linear(dim, dim), nn.Linear(dim, dim)
            self.gru = nn.GRUCell(2 * dim, dim)
            self.att_last, self.att_pos = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
            self.att_q = nn.Linear(dim, 1, bias=False)
            self.out = nn.Linear(2 * dim, dim, bias=False)
            self.item_bias = nn.Parameter(torch.zeros(prep.n_items))
            self.drop = Dropout(dropout)

        def forward(self, b):
            h = self.drop(self.emb(b.node_item))
            g = self.gru
            # GRU input [A_in (h W_in^T + b_in), A_out (h W_out^T + b_out)] W_ih^T as one GEMM of the
            # pulled states [A_in h, A_out h] (A_out: along reversed edges) plus their rows' weight sums
            # [A_in 1, A_out 1] times the biases' images
            w1, w2 = g.weight_ih[:, :dim], g.weight_ih[:, dim:]
            M = torch.cat([w1 @ self.w_in.weight, w2 @ self.w_out.weight], 1)
            C = torch.stack([w1 @ self.w_in.bias, w2 @ self.w_out.bias])      # (2, 3d): the biases' images
            q, s = session_pull((b.graph, b.w_in, b.graph_t, b.w_in_t), (b.graph_t, b.w_out_t, b.graph, b.w_out), h)
            # the gates add the second term: the GEMM's K stays 2d (K = 2d + 2 cost ~1 ms a step more);
            # gru_cell takes the r and z gates' two sides from one GEMM of [q | h]
            h = gru_cell(q, h, M, g.weight_hh, g.bias_ih, g.bias_hh, rows=s, coef=C)
            last = h[b.last]
            # Σ_p att_q(σ(att_last(last) + att_pos(h_p))) h_p per sequence, att_pos per node, not per position
            glob = attention_readout(h, torch.mm(h, self.att_pos.weight.T), self.att_last(last), self.att_q.weight,
                                     b.alias, b.seq, b.pos_ptr)
            return self.out(torch.cat([last, glob], 1))

        def item_vectors(self):
            return self.emb.weight

    def inputs(log, end_rows):
        return make_batch(*_prefixes(log, end_rows, max_len))

    ex_src, y = src[keep], torch.from_numpy(tr.item[dst[keep]].astype(np.int64))
    valid_in = inputs(tr, last_rows(tr, prep.eval_user))
    model = SRGNN()
    cnt = np.bincount(tr.item, minlength=prep.n_items) + 1.0
    model.sample_q = torch.tensor(cnt ** 0.75 / (cnt ** 0.75).sum(), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)

    def loss_fn(idx):
        return _item_loss(model, model(inputs(tr, ex_src[idx])), y[idx], n_negatives, gen)

    def valid_score():
        return M.ndcg(_torch_rank(model(valid_in), model, KS[-1], prep.seen_valid), prep.valid_item, KS[-1])

    fit = _fit_minibatch(model, len(ex_src), batch_size, loss_fn, valid_score, epochs=epochs, patience=patience,
                         lr=lr, weight_decay=weight_decay, seed=seed, progress=progress)
    fit["valid_" + VALID_METRIC] = fit.pop("valid_score")
    fit.pop("train_curve")
    with torch.no_grad():
        St = model(inputs(prep.history, last_rows(prep.history, prep.eval_user)))
    return _torch_rank(St, model, KS[-1], prep.seen_test), fit
