"""The main job: next-item and next-behaviour prediction on an event log.

One pipeline, used by ``stgkern demo`` and callable from Python:

1. :func:`prepare` -- k-core and minimum-length filters, then the
   chronological leave-one-out split (each user's last event is the test
   target, the one before the validation target, everything earlier trains).
2. A spatio-temporal GNN over each user's window graph: :class:`STGModel`
   (two ``stgkern.torch.STGConv`` or ``TemporalAttention`` layers, trained
   with PyTorch), or without PyTorch :func:`fit_closed_form` (fixed
   time-decayed propagation with :func:`stgkern.spmm`, then softmax
   regression heads trained with NumPy).
3. Baselines on the same split: most-popular, first-order Markov over items
   and an SR-GNN-style session-graph GNN.
4. Evaluation: full-catalogue top-k with every item the user has already
   interacted with excluded (for every method alike); HR, NDCG and MRR for
   items, accuracy and macro precision/recall/F1 for the next behaviour.

No leakage by construction: the training graph holds the training events
only; the validation target is predicted from the state of the user's last
training event, the test target from a graph over training and validation
events (the test event is never a node).  Window graphs are causal (an event
only receives edges from earlier events), so the state of event p never sees
event p + 1, the target it is trained to predict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import metrics as M
from .data import EventLog, filter_min_length, k_core

#: Cut-offs reported for item ranking.
KS = (10, 20)
#: SR-GNN baseline: each prefix keeps at most this many most recent items
#: (its session graph grows with the prefix; long Taobao users would dominate).
SRGNN_MAX_LEN = 20
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


def evaluate(prep, item_topk, behavior_pred=None):
    """Metrics of a method's test predictions (top-k lists, behaviour labels)."""
    out = item_metrics(item_topk, prep.test_item)
    if behavior_pred is not None:
        out.update(behavior_metrics(prep.test_behavior, np.asarray(behavior_pred, np.int64), prep.n_behaviors))
    return out


# ---------------------------------------------------------------- baselines
def popularity(prep, k=KS[-1]):
    """Most-popular baseline: training counts, ties to the lower item id; majority behaviour."""
    pop = np.bincount(prep.history.item, minlength=prep.n_items).astype(np.float64)
    S = np.broadcast_to(pop, (len(prep.eval_user), prep.n_items))
    beh = np.bincount(prep.history.behavior, minlength=prep.n_behaviors).argmax()
    return rank_dense(S, k, prep.seen_test), np.full(len(prep.eval_user), beh, np.int64)


def markov(prep, k=KS[-1]):
    """First-order Markov baseline over items (and over behaviours).

    Score of item j after item i: the count of i -> j transitions in the
    users' histories, popularity breaking ties (so an unseen last item falls
    back to popularity).  The next behaviour is the most frequent successor
    of the last behaviour (majority class for an unseen one).
    """
    h = prep.history
    src, dst = transitions(h)
    n = prep.n_items
    T = sp.csr_matrix((np.ones(len(src)), (h.item[src], h.item[dst])), shape=(n, n))
    pop = np.bincount(h.item, minlength=n).astype(np.float64)
    last = last_rows(h, prep.eval_user)
    S = T[h.item[last]].toarray() + pop / (pop.max() + 1.0)     # popularity < one transition
    B = prep.n_behaviors
    TB = np.zeros((B, B))
    np.add.at(TB, (h.behavior[src], h.behavior[dst]), 1.0)
    TB += np.bincount(h.behavior, minlength=B) / (len(h) + 1.0)
    return rank_dense(S, k, prep.seen_test), TB[h.behavior[last]].argmax(axis=1)


# ---------------------------------------------------------------- closed form (NumPy)
def _adam_softmax(X, y, n_classes, *, epochs=100, lr=0.05, l2=1e-4, seed=0, val_metric=None, every=10):
    """Softmax regression ``softmax(X W + b)`` by full-batch Adam in NumPy.

    With ``val_metric(W, b)`` it keeps the weights with the best validation
    score (checked every ``every`` epochs).
    """
    rng = np.random.default_rng(seed)
    n, d = X.shape
    W = rng.normal(0, 0.01, (d, n_classes)).astype(X.dtype)
    b = np.zeros(n_classes, X.dtype)
    m = [np.zeros_like(W), np.zeros_like(b)]
    v = [np.zeros_like(W), np.zeros_like(b)]
    best, best_wb = -np.inf, (W.copy(), b.copy())
    onehot_rows = np.arange(n)
    for t in range(1, epochs + 1):
        Z = X @ W + b
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        P[onehot_rows, y] -= 1.0
        P /= n
        gW = X.T @ P + l2 * W
        gb = P.sum(axis=0)
        for i, (p, g) in enumerate(((W, gW), (b, gb))):
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            p -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
        if val_metric is not None and (t % every == 0 or t == epochs):
            s = val_metric(W, b)
            if s > best:
                best, best_wb = s, (W.copy(), b.copy())
    return best_wb if val_metric is not None else (W, b)


def _rank_linear(X, W, b, exclude):
    """Top-k of ``X W + b`` through :func:`stgkern.topk` (the bias as one more column)."""
    from .readout import topk
    Q = np.hstack([X, np.ones((len(X), 1), X.dtype)])
    items = np.ascontiguousarray(np.vstack([W, b[None]]).T, dtype=X.dtype)
    return topk(np.ascontiguousarray(Q), items, KS[-1], exclude)[0]


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


def _propagate(graph, X, tau):
    """``[X, Â X, Â² X]`` with Â the window graph's time-decay weights normalised per row."""
    from .conv import spmm
    from .features import time_decay
    w = time_decay(graph.edata["dt"].astype(np.float64), tau, dtype=X.dtype)
    rows = np.repeat(np.arange(graph.n_nodes), np.diff(graph.indptr))
    rs = np.bincount(rows, weights=w, minlength=graph.n_nodes)
    w = (w / np.maximum(rs[rows], 1e-30)).astype(X.dtype)
    H1 = spmm(graph, X, w)
    H2 = spmm(graph, H1, w)
    return np.hstack([X, H1, H2])


def _node_inputs(log, graph, E_item, E_cat):
    from .features import node_features
    order = graph.perm
    F = node_features(log, graph, dtype=np.float32)
    return np.hstack([E_item[log.item[order]], E_cat[log.category[order]], F]).astype(np.float32)


def fit_closed_form(prep, *, window=8, horizon=86400.0, category_window=2, tau=3600.0, dim=CLOSED_FORM_DIM,
                    epochs=100, seed=0):
    """The method without PyTorch: fixed propagation, then softmax-regression heads.

    Item and category embeddings are a randomized SVD of the training
    item -> next-item / item -> category / category -> next-category counts;
    node inputs are ``[item emb, category emb, node_features]``; the state of
    an event is ``[X, ÂX, Â²X]`` over its window graph (Â = row-normalised
    ``exp(-dt/τ)``, computed with :func:`stgkern.spmm`).  Softmax regressions
    on the states predict the next item (full catalogue) and the next
    behaviour; the item head keeps the epoch with the best validation HR@20.

    Returns ``(topk (m, 20), behaviour (m,), info)`` for the test targets.
    """
    from .construct import window_graph
    tr = prep.train
    src, dst = transitions(tr)
    n, C = prep.n_items, prep.log.n_categories
    # item context: next items, previous items (offset n), own category (offset 2n)
    E_item = _spectral(np.concatenate([tr.item[src], tr.item[dst], tr.item]),
                       np.concatenate([tr.item[dst] + n, tr.item[src], tr.category + 2 * n]),
                       n, 2 * n + C, dim, seed)
    E_cat = _spectral(np.concatenate([tr.category[src], tr.category[dst]]),
                      np.concatenate([tr.category[dst], tr.category[src] + C]), C, 2 * C, dim // 2, seed + 1)
    E_item, E_cat = E_item.astype(np.float32), E_cat.astype(np.float32)

    def states(log):
        g = window_graph(log, window=window, horizon=horizon, category_window=category_window)
        H = _propagate(g, _node_inputs(log, g, E_item, E_cat), tau)
        H /= np.sqrt((H * H).sum(axis=1, keepdims=True) / H.shape[1]) + 1e-6
        return H, g

    H, g = states(tr)
    node_row = g.perm
    nxt_src, nxt_dst = transitions(tr)        # tr is sorted, so node == row
    assert np.array_equal(node_row, np.arange(len(tr)))
    X, y_item, y_beh = H[nxt_src], tr.item[nxt_dst], tr.behavior[nxt_dst].astype(np.int64)
    Hv = H[last_rows(tr, prep.eval_user)]

    def val_hr(W, b):
        return M.hit_rate(_rank_linear(Hv, W, b, prep.seen_valid), prep.valid_item, KS[-1])

    Wi, bi = _adam_softmax(X, y_item, n, epochs=epochs, seed=seed, val_metric=val_hr)
    Wb, bb = _adam_softmax(X, y_beh, prep.n_behaviors, epochs=epochs, seed=seed)
    Ht, _ = states(prep.history)
    Ht = Ht[last_rows(prep.history, prep.eval_user)]
    idx = _rank_linear(Ht, Wi, bi, prep.seen_test)
    beh = (Ht @ Wb + bb).argmax(axis=1)
    return idx, beh, {"valid_HR@20": val_hr(Wi, bi), "state_dim": int(H.shape[1])}


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
    """The two-layer model's graph layer: ``stgkern.torch.STGConv`` or ``TemporalAttention``."""
    from . import torch as stgtorch
    if kind == "stgconv":
        return stgtorch.STGConv(dim, dim, n_kinds=3, tau_init=tau, normalize=True)
    if kind == "attention":
        return stgtorch.TemporalAttention(dim, dim, heads=1, time_dim=16)
    raise ValueError(f"model={kind!r} is not known; choose 'stgconv' or 'attention'")


def _graph_inputs(log, prep, window, horizon, category_window):
    """Window graph of a sorted log and its per-node tensors (inputs only, no targets)."""
    torch = _torch()
    from .construct import window_graph
    from .features import node_features
    g = window_graph(log, window=window, horizon=horizon, category_window=category_window)
    order = g.perm
    return {
        "graph": g,
        "item": torch.from_numpy(log.item[order]),
        "category": torch.from_numpy(log.category[order]),
        "behavior": torch.from_numpy(log.behavior[order].astype(np.int64)),
        "features": torch.from_numpy(node_features(log, g, n_behaviors=prep.n_behaviors, dtype=np.float32)),
        "dt": torch.from_numpy(g.edata["dt"].astype(np.float32)),
        # window-graph kind bitmask: 1 temporal, 2 category, 3 both (STGConv learns one tau per kind)
        "kind": torch.from_numpy(g.edata["kind"].astype(np.int64)),
    }


def build_stg_model(prep, *, dim=32, conv="stgconv", tau=3600.0, dropout=0.2, conv_factory=None):
    """The spatio-temporal GNN (a ``torch.nn.Module``).

    Node input = item + category + behaviour embeddings + a linear map of
    :func:`stgkern.node_features`; two graph layers with residual
    connections; an event's state scores every item against the same
    (tied) item + category embeddings plus an item bias, and a linear head
    predicts the next behaviour.  ``conv_factory(kind, dim, tau)`` builds
    each layer (default :func:`default_conv`, the ``stgkern.torch`` layers).
    """
    torch = _torch()
    nn = torch.nn
    factory = conv_factory or default_conv
    item_category = torch.from_numpy(prep.item_category)
    n_feat = 2 * prep.n_behaviors + 1      # node_features: behaviour one-hot, log1p value, previous behaviour

    class STGModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.item = nn.Embedding(prep.n_items, dim)
            self.category = nn.Embedding(prep.log.n_categories, dim)
            self.behavior = nn.Embedding(prep.n_behaviors, dim)
            self.features = nn.Linear(n_feat, dim)
            self.convs = nn.ModuleList([factory(conv, dim, tau) for _ in range(2)])
            self.norm = nn.LayerNorm(dim)
            self.item_bias = nn.Parameter(torch.zeros(prep.n_items))
            self.next_behavior = nn.Linear(dim, prep.n_behaviors)
            self.drop = nn.Dropout(dropout)
            self.conv_kind = conv
            for emb in (self.item, self.category, self.behavior):
                nn.init.normal_(emb.weight, std=0.1)

        def _conv(self, layer, h, inp):
            if self.conv_kind == "attention":
                return layer(h, inp["graph"], dt=inp["dt"])
            return layer(h, inp["graph"], dt=inp["dt"], kind=inp["kind"])

        def forward(self, inp):
            h = (self.item(inp["item"]) + self.category(inp["category"]) + self.behavior(inp["behavior"])
                 + self.features(inp["features"]))
            h = self.drop(h)
            h = h + self.drop(torch.relu(self._conv(self.convs[0], h, inp)))
            h = h + self.drop(self._conv(self.convs[1], h, inp))
            return self.norm(h)

        def item_vectors(self):
            return self.item.weight + self.category(item_category)

        def item_scores(self, states):
            return states @ self.item_vectors().T + self.item_bias

    return STGModel()


def _torch_rank(states, model, k, exclude):
    """Top-k items for each state through :func:`stgkern.topk` (bias folded in as a column)."""
    torch = _torch()
    from .readout import topk
    with torch.no_grad():
        V = model.item_vectors()
        Q = torch.cat([states, torch.ones(len(states), 1)], 1).numpy().astype(np.float32)
        items = torch.cat([V, model.item_bias[:, None]], 1).numpy().astype(np.float32)
    idx, _ = topk(np.ascontiguousarray(Q), np.ascontiguousarray(items), k, exclude)
    return idx


def _new_item_mask(log, src, dst):
    """True where the target event's item is new for its user (not among their earlier events)."""
    key = log.user * log.n_items + log.item
    order = np.lexsort((np.arange(len(log)), key))
    first = np.ones(len(log), bool)
    ks = key[order]
    first[order[1:]] = ks[1:] != ks[:-1]
    return first[dst]


def _train_early_stopping(model, opt, loss_fn, valid_hr, epochs, patience, progress):
    """Full-batch training with early stopping on validation HR@20; leaves ``model`` at its
    best epoch, in eval mode.  Returns ``{"best_epoch", "epochs_run", "valid_HR@20", "train_curve"}``."""
    torch = _torch()
    best, best_epoch, best_state, curve = -1.0, 0, None, []
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            hr = valid_hr()
        curve.append({"epoch": epoch, "loss": float(loss.detach()), "valid_HR@20": hr})
        if progress:
            progress(epoch, epochs)
        if hr > best:
            best, best_epoch = hr, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "epochs_run": len(curve), "valid_HR@20": best, "train_curve": curve}


def fit_torch(prep, *, conv="stgconv", window=8, horizon=86400.0, category_window=2, tau=3600.0, dim=32,
              epochs=40, lr=0.005, weight_decay=1e-5, dropout=0.4, behavior_weight=0.5, patience=15,
              new_items_only=True, seed=0, conv_factory=None, progress=None):
    """Train the spatio-temporal GNN on next-item / next-behaviour prediction.

    Full-batch training over the training events' window graph: the state of
    every training event but each user's last predicts the user's next event
    (full softmax over the catalogue, plus the behaviour head weighted by
    ``behavior_weight``).  With ``new_items_only`` the item loss uses only
    targets the user had not touched before, the only kind the evaluation
    can count (seen items are excluded from every ranking).  Early stopping
    on validation HR@20 (``patience`` epochs); the best epoch's weights are
    restored.

    Returns ``(topk (m, 20), behaviour (m,), info)`` for the test targets.
    """
    torch = _torch()
    torch.manual_seed(seed)
    F = torch.nn.functional
    tr = prep.train
    inp = _graph_inputs(tr, prep, window, horizon, category_window)
    assert np.array_equal(inp["graph"].perm, np.arange(len(tr)))     # sorted log: node == row
    src, dst = transitions(tr)
    item_rows = _new_item_mask(tr, src, dst) if new_items_only else np.ones(len(src), bool)
    src_t = torch.from_numpy(src)
    isrc_t = torch.from_numpy(src[item_rows])
    y_item = torch.from_numpy(tr.item[dst[item_rows]])
    y_beh = torch.from_numpy(tr.behavior[dst].astype(np.int64))
    vq = torch.from_numpy(last_rows(tr, prep.eval_user))

    model = build_stg_model(prep, dim=dim, conv=conv, tau=tau, dropout=dropout, conv_factory=conv_factory)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    def loss_fn():
        H = model(inp)
        loss = F.cross_entropy(model.item_scores(H[isrc_t]), y_item)
        return loss + behavior_weight * F.cross_entropy(model.next_behavior(H[src_t]), y_beh)

    def valid_hr():
        Hv = model(inp)[vq]
        return M.hit_rate(_torch_rank(Hv, model, KS[-1], prep.seen_valid), prep.valid_item, KS[-1])

    fit = _train_early_stopping(model, opt, loss_fn, valid_hr, epochs, patience, progress)
    te = _graph_inputs(prep.history, prep, window, horizon, category_window)
    with torch.no_grad():
        Ht = model(te)[torch.from_numpy(last_rows(prep.history, prep.eval_user))]
        beh = model.next_behavior(Ht).argmax(1).numpy()
    idx = _torch_rank(Ht, model, KS[-1], prep.seen_test)
    return idx, beh, fit


# ---------------------------------------------------------------- SR-GNN-style baseline
def _prefixes(log, end_rows, max_len):
    """CSR of each prefix ``log.item[max(user start, e - max_len + 1) : e + 1]`` for e in ``end_rows``."""
    starts = np.concatenate([[0], np.cumsum(np.bincount(log.user, minlength=log.n_users))])[log.user[end_rows]]
    lo = np.maximum(starts, end_rows - max_len + 1)
    lens = end_rows - lo + 1
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pos = np.arange(ptr[-1]) - np.repeat(ptr[:-1], lens) + np.repeat(lo, lens)
    return ptr, log.item[pos].astype(np.int64)


def _session_inputs(log, end_rows, max_len):
    """SR-GNN session graphs (:func:`stgkern.compat.session_graph`) of the given prefixes."""
    from .compat import session_graph
    ptr, items = _prefixes(log, end_rows, max_len)
    g, node_item, alias = session_graph(ptr, items)
    rows = np.repeat(np.arange(g.n_nodes), np.diff(g.indptr))
    return {"ptr": ptr, "node_item": node_item, "alias": alias, "rows": rows,
            "cols": g.indices.astype(np.int64), "w_in": g.edata["w_in"], "w_out": g.edata["w_out"],
            "last": alias[ptr[1:] - 1], "n_nodes": g.n_nodes}


def fit_srgnn(prep, *, dim=32, epochs=40, lr=0.005, weight_decay=1e-5, dropout=0.4, patience=15,
              max_len=SRGNN_MAX_LEN, new_items_only=True, seed=0, progress=None):
    """SR-GNN-style baseline (Wu et al., AAAI 2019), trained like :func:`fit_torch`.

    Each example is a user's last ``max_len`` items before the target, as an
    SR-GNN session graph; one gated GNN step over ``A_in``/``A_out``, the
    session vector from the last item and a soft-attention readout, scored
    against the item embeddings.  Items only: no time, behaviour or
    category.  Returns ``(topk (m, 20), info)`` for the test targets.
    """
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional
    torch.manual_seed(seed)
    tr = prep.train
    src, dst = transitions(tr)
    keep = _new_item_mask(tr, src, dst) if new_items_only else np.ones(len(src), bool)
    T = lambda a: torch.from_numpy(np.ascontiguousarray(a))

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
            self.drop = nn.Dropout(dropout)

        def forward(self, s):
            h = self.drop(self.emb(s["node_item"]))
            a_in = torch.zeros_like(h).index_add_(0, s["rows"], s["w_in"][:, None] * self.w_in(h)[s["cols"]])
            # A_out pulls along reversed edges: node u gathers from v for every edge u -> v
            a_out = torch.zeros_like(h).index_add_(0, s["cols"], s["w_out"][:, None] * self.w_out(h)[s["rows"]])
            h = self.gru(torch.cat([a_in, a_out], 1), h)
            hp = h[s["alias"]]
            last = h[s["last"]]
            a = self.att_q(torch.sigmoid(self.att_last(last)[s["seq"]] + self.att_pos(hp)))
            glob = torch.zeros_like(last).index_add_(0, s["seq"], a * hp)
            return self.out(torch.cat([last, glob], 1))

    def inputs(log, end_rows):
        d = _session_inputs(log, end_rows, max_len)
        d["seq"] = np.repeat(np.arange(len(d["ptr"]) - 1), np.diff(d["ptr"]))
        return {k: (T(v) if isinstance(v, np.ndarray) else v) for k, v in d.items()}

    train_in = inputs(tr, src[keep])
    y = T(tr.item[dst[keep]])
    valid_in = inputs(tr, last_rows(tr, prep.eval_user))
    model = SRGNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    def rank(states, exclude):
        from .readout import topk
        with torch.no_grad():
            items = model.emb.weight.numpy().astype(np.float32)
        return topk(np.ascontiguousarray(states.numpy(), dtype=np.float32), items, KS[-1], exclude)[0]

    def valid_hr():
        return M.hit_rate(rank(model(valid_in), prep.seen_valid), prep.valid_item, KS[-1])

    fit = _train_early_stopping(model, opt, lambda: F.cross_entropy(model(train_in) @ model.emb.weight.T, y),
                                valid_hr, epochs, patience, progress)
    fit.pop("train_curve")
    with torch.no_grad():
        St = model(inputs(prep.history, last_rows(prep.history, prep.eval_user)))
    return rank(St, prep.seen_test), fit


def srgnn_closed_form(prep, *, dim=CLOSED_FORM_DIM, max_len=SRGNN_MAX_LEN, epochs=100, seed=0):
    """SR-GNN-style baseline without PyTorch: one mean step over the session graph on fixed
    spectral item embeddings, ``[last, mean]`` session readout, softmax-regression head."""
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

    X = states(tr, src)
    Xv = states(tr, last_rows(tr, prep.eval_user))

    def val_hr(W, b):
        return M.hit_rate(_rank_linear(Xv, W, b, prep.seen_valid), prep.valid_item, KS[-1])

    W, b = _adam_softmax(X, tr.item[dst], n, epochs=epochs, seed=seed, val_metric=val_hr)
    Xt = states(prep.history, last_rows(prep.history, prep.eval_user))
    return _rank_linear(Xt, W, b, prep.seen_test), {"valid_HR@20": val_hr(W, b)}
