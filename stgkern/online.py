"""Real-time serving of the closed-form STG model: incremental states, top-k, explanations.

:class:`OnlineRecommender` holds, per user, the few past events that a
future event or an explanation can still need (the window graph is causal,
so an event's state never changes once computed) and each event's layer-1
state.  ``update(events)`` appends a batch of events of any users, finds
their window-graph in-edges among the retained events, and computes the
new events' states; ``recommend(users)`` ranks the catalogue from each
user's latest state; ``explain(user, item)`` splits one score into the
contributions of the retained past events.  ``save``/``load`` keep it
across restarts.

The contract, tested after every batch in ``tests/test_online.py``: the
states, scores and lists are **bit-identical** to rebuilding the whole log
received so far and scoring it with :meth:`ClosedFormModel.recommend`
(same users, same order).  Events enter in (user, time) order with ties in
arrival order, as :meth:`EventLog.sort` orders the concatenated log; an
event older than its user's latest one cannot be placed without
recomputing states already served, so the whole batch is refused
(``ValueError`` naming the first such event) before anything changes.

What is retained and why is in :mod:`stgkern._numba.online`.  Memory per
user: the retained events (a few more than ``window``), each with its
in-edges, its small node features and its layer-1 state (``dim`` floats),
plus 16 bytes per distinct item the user has seen (``exclude_seen`` needs
them all) and the hash tables' slack.
"""
import json
import os
import tempfile
from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from ._numba import online as K
from ._numba._twin import use_threads
from .model import _decay_weights, _RowsAt

FORMAT = "stgkern.online-state/1"

_STATE = ("u_keys", "u_vals", "head", "latest", "n_events", "seen_head",
          "e_item", "e_cat", "e_beh", "e_time", "e_prev", "e_nin", "e_src", "e_kind", "e_w", "e_F", "e_H1",
          "free", "s_keys", "s_vals", "s_item", "s_next")


def _grow(a, n, fill=0):
    """``a`` with its first axis at least ``n`` (doubling), new rows set to ``fill``."""
    if len(a) >= n:
        return a
    new = np.full((max(n, 2 * len(a)),) + a.shape[1:], fill, a.dtype)
    new[:len(a)] = a
    return new


def _table(n):
    return np.full(n, K.EMPTY, np.int64), np.full(n, -1, np.int64)


class OnlineRecommender:
    """Incremental serving state of a fitted :class:`stgkern.model.ClosedFormModel`.

    Parameters
    ----------
    model : ClosedFormModel
        With its component tables set (:meth:`ClosedFormModel.with_counts`);
        ``fit_closed_form(..., return_model=True)`` returns one.  Its graph
        settings need an integer ``window`` (``horizon`` may be None).

    Examples
    --------
    >>> from stgkern.online import OnlineRecommender               # doctest: +SKIP
    >>> rec = OnlineRecommender(model)                               # doctest: +SKIP
    >>> rec.update(first_events).update(more_events)                 # doctest: +SKIP
    >>> items, scores = rec.recommend([user_id], k=20)               # doctest: +SKIP
    >>> print("\n".join(describe(rec.explain(user_id, items[0, 0]))))  # doctest: +SKIP
    """

    def __init__(self, model, *, capacity=1024):
        self._set_model(model)
        ga = model.graph_args
        if ga.get("window") is None:
            raise ValueError("online serving needs a window graph with an integer window (window=None has no "
                             "bound on the in-degree)")
        self.window, self.cwin = int(ga["window"]), int(ga.get("category_window", 0))
        self._horizon = ga.get("horizon")
        self.n_edges = self.window + self.cwin
        cap = max(int(capacity), 16)
        self.n_users = 0
        self.n_seen = 0
        self.n_pool = 0                              # pool slots ever handed out (free ones included)
        self.n_free = 0
        self.time_dtype = None
        self.u_keys, self.u_vals = _table(2 * cap)
        self.s_keys, self.s_vals = _table(4 * cap)
        for name in ("head", "seen_head"):
            setattr(self, name, np.full(cap, -1, np.int64))
        self.latest = np.zeros(cap, np.float64)
        self.n_events = np.zeros(cap, np.int64)
        self._pool_arrays(cap)
        self.s_item = np.zeros(cap, np.int64)
        self.s_next = np.full(cap, -1, np.int64)

    # ---------------------------------------------------------------- model
    def _set_model(self, model):
        if getattr(model, "tables", None) is None:
            raise ValueError("the model has no component tables: call model.with_counts(counts) first")
        self.model = model
        self.n_items = model.n_items
        self.E_item = np.ascontiguousarray(model.E_item, np.float32)
        self.E_cat = np.ascontiguousarray(model.E_cat, np.float32)
        self._item_map = self._id_map(model.item_ids)
        self._cat_map = self._id_map(model.category_ids)
        from .model import N_GAP_BUCKETS
        B = model.n_behaviors
        self.n_small = 2 * B + 1 + 1 + N_GAP_BUCKETS              # node_features (B + 1 + B) + gap features
        self.dim = self.E_item.shape[1] + self.E_cat.shape[1] + self.n_small

    def fingerprint(self):
        """What a saved state depends on: the embeddings and the graph settings (not the heads)."""
        import hashlib
        h = hashlib.sha256()
        for a in (self.E_item, self.E_cat, np.asarray(self.model.item_ids), np.asarray(self.model.category_ids)):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps([self.model.graph_args, self.model.tau, self.model.n_behaviors], sort_keys=True,
                            default=str).encode())
        return h.hexdigest()

    def refresh(self, model=None, counts=None):
        """Swap in new heads or item tables without a restart (returns self).

        ``counts`` (:func:`stgkern.model.transition_counts` of a newer log, in
        the model's ids: ``model.counts(log)``) refreshes the transition and
        category tables; ``model`` replaces the whole model, which must share
        the embeddings and graph settings the states were computed with
        (:meth:`fingerprint`), e.g. a refit of the heads.
        """
        if model is not None:
            old = self.fingerprint()
            keep = self.model
            self._set_model(model)
            if self.fingerprint() != old:
                self._set_model(keep)
                raise ValueError("the new model's embeddings or graph settings differ from the ones the states "
                                 "were computed with: rebuild the state from the log instead")
        if counts is not None:
            self.model.with_counts(counts)
        return self

    # ---------------------------------------------------------------- storage
    def _pool_arrays(self, cap):
        E, dx = self.n_edges, self.dim
        self.e_item = np.zeros(cap, np.int32)
        self.e_cat = np.zeros(cap, np.int32)
        self.e_beh = np.zeros(cap, np.int8)
        self.e_time = np.zeros(cap, np.float64)
        self.e_prev = np.full(cap, -1, np.int64)
        self.e_nin = np.zeros(cap, np.int32)
        self.e_src = np.zeros((cap, max(E, 1)), np.int32)
        self.e_kind = np.zeros((cap, max(E, 1)), np.uint8)
        self.e_w = np.zeros((cap, max(E, 1)), np.float32)
        self.e_F = np.zeros((cap, self.n_small), np.float32)
        self.e_H1 = np.zeros((cap, dx), np.float32)
        self.free = np.zeros(cap, np.int64)
        self._mark = np.zeros(cap, np.int8)

    def _set_time_dtype(self, dt):
        self.time_dtype = np.dtype(dt)
        self.latest = self.latest.astype(dt)
        self.e_time = self.e_time.astype(dt)
        from .construct import _check_params     # window_graph's reading of the horizon for this time kind
        _, self.horizon, _ = _check_params(np.zeros(0, dt), self.window, self._horizon, self.cwin)

    def _h(self):
        """The horizon as the kernels take it (a value of the time's kind; unused when None)."""
        if self.horizon is None:
            return self.time_dtype.type(0)
        return self.time_dtype.type(self.horizon)

    def _reserve(self, n_users, n_new, n_seen_new):
        for name in ("head", "seen_head"):
            setattr(self, name, _grow(getattr(self, name), n_users, -1))
        self.latest = _grow(self.latest, n_users)
        self.n_events = _grow(self.n_events, n_users)
        if self.n_free + (len(self.e_item) - self.n_pool) < n_new:
            need = self.n_pool - self.n_free + n_new
            for name in ("e_item", "e_cat", "e_beh", "e_time", "e_nin", "e_src", "e_kind", "e_w", "e_F", "e_H1",
                         "free", "_mark"):
                setattr(self, name, _grow(getattr(self, name), need))
            self.e_prev = _grow(self.e_prev, need, -1)
        self.s_item = _grow(self.s_item, self.n_seen + n_seen_new)
        self.s_next = _grow(self.s_next, self.n_seen + n_seen_new, -1)
        if 2 * (self.n_seen + n_seen_new) > len(self.s_keys):
            self.s_keys, self.s_vals = self._rehash(self.s_keys, self.s_vals, 2 * (self.n_seen + n_seen_new))

    @staticmethod
    def _rehash(keys, vals, at_least):
        n = len(keys)
        while n < 2 * at_least:
            n *= 2
        nk, nv = _table(n)
        K.ht_rehash(keys, vals, nk, nv)
        return nk, nv

    def _dt(self, slots, nin):
        """``t(event) - t(source)`` of the in-edges of ``slots`` (``nin`` each), row after row."""
        mask = np.arange(self.e_src.shape[1])[None, :] < np.asarray(nin)[:, None]
        return (self.e_time[slots][:, None] - self.e_time[self.e_src[slots]])[mask]

    def _take_slots(self, n):
        """``n`` pool slots: freed ones first, then fresh ones."""
        a = min(n, self.n_free)
        out = np.empty(n, np.int64)
        out[:a] = self.free[self.n_free - a:self.n_free]
        self.n_free -= a
        out[a:] = np.arange(self.n_pool, self.n_pool + n - a)
        self.n_pool += n - a
        return out

    # ---------------------------------------------------------------- ids
    @staticmethod
    def _id_map(ids):
        """A hash table from integer ids to their positions (None for other id types)."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu" or (len(ids) and (ids.min() == K.EMPTY)):
            return None
        n = 16
        while n < 2 * len(ids):
            n *= 2
        keys, vals = _table(n)
        K.ht_insert(keys, vals, ids.astype(np.int64), 0, np.empty(len(ids), np.int64))
        return keys, vals

    def _model_codes(self, ids, table, model_ids, n):
        """The model's codes of original ``ids`` (``n`` for an id the model does not know)."""
        ids = np.asarray(ids)
        if table is not None and ids.dtype.kind in "iu":
            out = np.empty(len(ids), np.int64)
            K.ht_lookup(table[0], table[1], ids.astype(np.int64), out)
            return np.where(out >= 0, out, n)
        from .model import model_positions
        return model_positions(ids, model_ids)

    def _columns(self, events):
        """The batch as arrays in the caller's ids (user, item, category, behavior, time, value)."""
        from .data import EventLog
        if isinstance(events, EventLog):
            return {"user": events.user_ids[events.user], "item": events.item_ids[events.item],
                    "category": events.category_ids[events.category], "behavior": events.behavior,
                    "time": events.time, "value": events.value}
        try:
            cols = {k: events[k] for k in ("user", "item", "category", "behavior", "time")}
        except (KeyError, TypeError, IndexError):
            raise TypeError("events must be an EventLog or a mapping with 'user', 'item', 'category', 'behavior' "
                            "and 'time' arrays (optional 'value')") from None
        cols["value"] = events.get("value") if hasattr(events, "get") else None
        return cols

    def _user_slots(self, user_ids, insert):
        q = np.ascontiguousarray(user_ids, np.int64)
        out = np.empty(len(q), np.int64)
        if insert:
            if 2 * (self.n_users + len(q)) > len(self.u_keys):
                self.u_keys, self.u_vals = self._rehash(self.u_keys, self.u_vals, self.n_users + len(q))
            self.n_users = K.ht_insert(self.u_keys, self.u_vals, q, self.n_users, out)
        else:
            K.ht_lookup(self.u_keys, self.u_vals, q, out)
        return out

    # ---------------------------------------------------------------- update
    def update(self, events):
        """Add a batch of events (any users, any order within the batch); returns self.

        ``events``: an :class:`stgkern.EventLog` or a mapping of arrays with
        the caller's ids (``user`` any int64, ``item`` and ``category`` the
        model's original ids, ``behavior`` codes ``0..n_behaviors-1``,
        ``time`` int64 or float64 and the same kind in every batch, optional
        ``value``).  An item or category the model never saw gets a zero
        embedding and no transitions, as in :meth:`ClosedFormModel.recommend`.
        The batch is validated whole before anything changes: an event older
        than its user's latest one already received is refused.
        """
        from ._validate import integer_ids
        from ._numba.node_features import node_features
        from .model import _gap_features
        c = self._columns(events)
        n = len(c["user"])
        user = integer_ids(np.asarray(c["user"]), "user").astype(np.int64)
        if np.any(user == K.EMPTY):
            raise ValueError(f"user id {K.EMPTY} is reserved")
        time = np.asarray(c["time"])
        if time.dtype.kind not in "iuf":
            raise TypeError(f"time must be int64 or float64, got {time.dtype}")
        time = time.astype(np.int64 if time.dtype.kind in "iu" else np.float64)
        if self.time_dtype is not None and time.dtype != self.time_dtype:
            raise TypeError(f"time is {time.dtype} in this batch but {self.time_dtype} in earlier ones; "
                            f"pass one kind throughout")
        if time.dtype.kind == "f" and not np.all(np.isfinite(time)):
            raise ValueError(f"time holds NaN or inf at row {int(np.flatnonzero(~np.isfinite(time))[0])}")
        beh = np.asarray(c["behavior"]).astype(np.int64)
        if n and (beh.min() < 0 or beh.max() >= self.model.n_behaviors):
            bad = int(np.flatnonzero((beh < 0) | (beh >= self.model.n_behaviors))[0])
            raise ValueError(f"behavior[{bad}] = {beh[bad]} is outside 0..{self.model.n_behaviors - 1}")
        value = c["value"]
        value = np.zeros(n) if value is None else np.asarray(value, np.float64)
        for name, a in (("item", c["item"]), ("category", c["category"]), ("behavior", beh), ("time", time),
                        ("value", value)):
            if len(a) != n:
                raise ValueError(f"{name} has {len(a)} events but user has {n}")
        if n and (not np.all(np.isfinite(value)) or value.min() <= -1):
            raise ValueError("value must be finite and > -1 (node features take log1p of it)")
        if n == 0:
            return self
        if self.time_dtype is None:
            self._set_time_dtype(time.dtype)
        item = self._model_codes(c["item"], self._item_map, self.model.item_ids, self.n_items)
        cat = self._model_codes(c["category"], self._cat_map, self.model.category_ids, self.model.n_categories)

        # ---- validate against the state before changing anything
        known = self._user_slots(user, insert=False)
        seen_before = known >= 0
        latest = np.where(seen_before, self.latest[np.maximum(known, 0)], time)
        late = seen_before & (time < latest)
        if late.any():
            b = int(np.flatnonzero(late)[0])
            raise ValueError(f"event {b} of the batch (user {user[b]}, time {time[b]}) is older than that user's "
                             f"latest event ({latest[b]}): states already served would change; nothing was added")

        # ---- (user, time) order, ties in arrival order as EventLog.sort gives them
        uidx = self._user_slots(user, insert=True)
        order = np.lexsort((time, uidx))
        uidx, item, cat, beh, time, value = (a[order] for a in (uidx, item, cat, beh, time, value))
        self._reserve(self.n_users, n, n)

        # ---- small node features from each user's previous event and the batch
        first = np.r_[True, uidx[1:] != uidx[:-1]]
        prev_slot = np.where(first, self.head[uidx], -1)
        ins = np.flatnonzero(first & (prev_slot >= 0))       # rows before which the previous event goes
        at = ins + np.arange(len(ins))
        total = n + len(ins)
        is_new = np.ones(total, bool)
        is_new[at] = False
        mu = np.empty(total, np.int64)
        mt = np.empty(total, time.dtype)
        mb = np.empty(total, np.int64)
        mv = np.zeros(total)
        mu[is_new], mt[is_new], mb[is_new], mv[is_new] = uidx, time, beh, value
        ps = prev_slot[ins]
        mu[at], mt[at], mb[at] = uidx[ins], self.e_time[ps], self.e_beh[ps]
        mu = np.cumsum(np.r_[True, mu[1:] != mu[:-1]]) - 1     # 0, 1, ...: the helpers size by the largest id
        # node_features' own kernel on rows already in (user, time) order (validated above)
        F = node_features(np.arange(total, dtype=np.int64), mu, mb, mv, self.model.n_behaviors, True, True, True,
                          np.float32)
        gap = _gap_features(_Cols(mu, mt), self.model.n_behaviors)
        small = np.hstack([F, gap])[is_new]

        # ---- link, in-edges, decay weights, layer-1 states
        slots = self._take_slots(n)
        self.e_F[slots] = small
        E = max(self.n_edges, 1)
        dt_buf = np.zeros(n * E, time.dtype)                # event b's edges at b * E + q
        runs = np.flatnonzero(np.r_[first, True]).astype(np.int64)
        par = use_threads(n)
        K.insert(runs, uidx, item, cat, beh, time, slots, self.window, self.cwin, self._h(), self.horizon is not None,
                 self.head, self.latest, self.n_events, self.e_item, self.e_cat, self.e_beh, self.e_time, self.e_prev,
                 self.e_nin, self.e_src, self.e_kind, dt_buf, par)
        self.n_seen = K.insert_seen(uidx, item, self.n_items + 1, self.s_keys, self.s_vals, self.seen_head,
                                    self.s_item, self.s_next, self.n_seen)
        from .features import time_decay
        w64 = time_decay(dt_buf.astype(np.float64), self.model.tau, dtype=np.float64)   # _decay_weights' values
        K.layer1(slots, np.arange(0, n * E + 1, E, dtype=np.int64), w64, self.e_nin, self.e_src, self.e_w,
                 self.e_item, self.e_cat, self.e_F, self.E_item, self.E_cat, self.e_H1, par)

        # ---- forget what no future event or explanation needs
        users = uidx[first]
        lens = np.empty(len(users), np.int64)
        K.chain_lengths(users, self.head, self.e_prev, lens, par)
        offsets = np.concatenate([[0], np.cumsum(lens)])
        chain = np.empty(offsets[-1], np.int64)
        freed = np.empty(offsets[-1], np.int64)
        n_freed = np.zeros(len(users), np.int64)
        K.retain(users, offsets, self.window, self.cwin, self._h(), self.horizon is not None,
                 self.model.n_categories + 1, self.head, self.latest, self.e_cat, self.e_time, self.e_prev,
                 self.e_nin, self.e_src, self._mark, chain, freed, n_freed, numba.get_num_threads() if par else 1)
        keep = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lens) < np.repeat(n_freed, lens)
        out = freed[keep]
        self.free[self.n_free:self.n_free + len(out)] = out
        self.n_free += len(out)
        return self

    def retained(self):
        """Every retained event as columns ``{"user", "item", "category", "behavior", "time"}`` (the
        caller's user ids, model item and category codes), oldest first per user: what the state
        holds, for inspection and tests."""
        keys = self._keys_of(np.arange(self.n_users))
        slots, owner = [], []
        for u in range(self.n_users):
            j, chain = self.head[u], []
            while j >= 0:
                chain.append(j)
                j = self.e_prev[j]
            slots.extend(chain[::-1])
            owner.extend([u] * len(chain))
        s = np.asarray(slots, np.int64)
        return {"user": keys[np.asarray(owner, np.int64)], "item": self.e_item[s], "category": self.e_cat[s],
                "behavior": self.e_beh[s], "time": self.e_time[s]}

    # ---------------------------------------------------------------- states and scoring
    def _known(self, users):
        users = np.atleast_1d(np.asarray(users))
        if users.ndim != 1:
            raise ValueError(f"users must be 1-D, got shape {users.shape}")
        uidx = self._user_slots(users.astype(np.int64), insert=False) if len(users) else np.zeros(0, np.int64)
        if np.any(uidx < 0):
            bad = users[uidx < 0][:5].tolist()
            raise KeyError(f"no events received for user(s) {bad}: a user is served after its first update")
        return uidx

    def states(self, users):
        """``{"X", "H1", "H2", "H"}`` of each user's latest event: the node input, the two
        propagated layers and the row-normalised state the heads read (float32)."""
        st = self._states(self._known(users))
        del st["divisor"]
        return st

    def _states(self, uidx):
        """:meth:`states` by internal user slot, with the normalisation's ``divisor`` (m, 1)."""
        from .model import rms_divisor
        latest = self.head[uidx]
        X = self._inputs(latest)
        H1 = self.e_H1[latest]
        H2 = np.empty_like(H1)
        K.layer2(latest, self.e_nin, self.e_src, self.e_w, self.e_H1, H2)
        H = np.hstack([X, H1, H2])
        divisor = rms_divisor(H)
        H /= divisor
        return {"X": X, "H1": H1, "H2": H2, "H": H, "divisor": divisor}

    def _inputs(self, slots):
        """The node inputs ``[E_item, E_cat, F]`` of the events in ``slots`` (float32, as the batch path's)."""
        return np.hstack([self.E_item[self.e_item[slots]], self.E_cat[self.e_cat[slots]], self.e_F[slots]])

    def _context(self, uidx):
        """A small log and graph standing for ``uidx``'s histories: per user the latest event's
        in-neighbours, its previous event and itself, the latest row carrying its in-edges.
        Returns ``(log, graph, rows)``."""
        from .graph import Graph
        latest = self.head[uidx]
        prev = self.e_prev[latest]
        nin = self.e_nin[latest]
        srcs = [self.e_src[s, :d] for s, d in zip(latest, nin)]
        lists, owner, latest_row, edge_rows = [], [], [], []
        r = 0
        for i, (s, p, src) in enumerate(zip(latest, prev, srcs)):
            ev = list(src) + ([p] if p >= 0 and (len(src) == 0 or src[-1] != p) else []) + [s]
            lists.extend(ev)
            owner.extend([i] * len(ev))
            latest_row.append(r + len(ev) - 1)
            edge_rows.append(np.arange(r, r + len(src)))
            r += len(ev)
        ev = np.asarray(lists, np.int64)
        rows = np.asarray(latest_row, np.int64)
        indptr = np.zeros(len(ev) + 1, np.int64)
        indptr[rows + 1] = nin
        indptr = np.cumsum(indptr)
        indices = np.concatenate(edge_rows) if edge_rows else np.zeros(0, np.int64)
        dt = self._dt(latest, nin)
        kind = np.concatenate([self.e_kind[s, :d] for s, d in zip(latest, nin)]) if len(latest) else \
            self.e_kind[:0, 0]
        log = _Cols(np.asarray(owner, np.int64), self.e_time[ev], item=self.e_item[ev], category=self.e_cat[ev],
                    behavior=self.e_beh[ev])
        g = Graph(indptr, indices.astype(np.int64), edata={"dt": dt, "kind": kind}, perm=np.arange(len(ev)),
                  check=False, rows_sorted=True)
        return log, g, rows

    def _exclude(self, uidx):
        """CSR (len(uidx), n_items) of each user's seen items (an unknown item is never ranked)."""
        indptr, indices = K.seen_rows(np.asarray(uidx, np.int64), self.seen_head, self.s_item, self.s_next,
                                      self.n_items)
        return sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(len(uidx), self.n_items))

    def recommend(self, users, k=20, exclude_seen=True, method="threshold", block=1024):
        """Top-``k`` items for ``users`` (the caller's ids, each with at least one event received).

        Returns ``(items, scores)``, (len(users), k): the model's original
        item ids (-1 pads a row with fewer candidates) and their scores, as
        :meth:`ClosedFormModel.recommend` gives them for the same users in
        the same order on the whole log received so far.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        uidx = self._known(users)
        idx = np.full((len(uidx), k), -1, np.int64)
        scores = np.full((len(uidx), k), -np.inf)
        chunk = 8 * int(block)                        # a multiple of block: the same blocks as a whole-log call
        for a in range(0, len(uidx), chunk):
            u = uidx[a:a + chunk]
            log, g, rows = self._context(u)
            H = _RowsAt(rows, self._states(u)["H"], len(log))
            ex = self._exclude(u) if exclude_seen else None
            idx[a:a + chunk], scores[a:a + chunk] = self.model._rank(log, rows, H, g, k, ex, method, block)
        items = np.where(idx >= 0, self.model.item_ids[np.maximum(idx, 0)], -1)
        return items, scores

    def _keys_of(self, uidx):
        """The caller's ids of internal user slots."""
        if not hasattr(self, "_key_cache") or self._key_cache[0] != self.n_users:
            keys = np.empty(self.n_users, np.int64)
            used = self.u_keys != K.EMPTY
            keys[self.u_vals[used]] = self.u_keys[used]
            self._key_cache = (self.n_users, keys)
        return self._key_cache[1][uidx]

    # ---------------------------------------------------------------- explanations
    def explain(self, user, item):
        """Why ``item`` scores what it does for ``user``: :class:`Explanation`.

        The closed form's score is linear in the past events given the
        state's normalisation, so each retained event's contribution is
        exact and they sum, with the bias, to the score (float64 rounding):

        * the ridge part ``prior + (H - mean) V W``, with ``H = r [X, H1, H2]``:
          the latest event through ``X`` (route ``self``), each in-neighbour
          ``q`` through ``H1`` (weight ``ŵ_qi``, route = that edge's kind) and
          each two-hop source ``p`` through ``H2`` (``ŵ_qi ŵ_pq``, route
          ``2-hop``); the prior minus ``mean · V W`` is the bias;
        * ``last`` (the latest event), ``window`` (the decayed bag: the
          latest event and each in-neighbour by its bag weight), ``skip``
          (the previous event) and ``category`` (the latest event).
        """
        m = self.model
        u = self._known([user])
        code = int(self._model_codes(np.asarray([item]), self._item_map, m.item_ids, self.n_items)[0])
        if code >= self.n_items:
            raise KeyError(f"item {item!r} is not in the model's catalogue")
        st = self._states(u)
        i = int(self.head[u[0]])
        X = st["X"][0].astype(np.float64)
        r = 1.0 / float(st["divisor"][0, 0])
        ridge = m.ridge
        Wt = ridge.VtB[:, code] / (ridge.s + m.lam * ridge.scale + 1e-12)
        M = ridge.V @ Wt                                  # d: the score's gradient in H
        d = self.dim
        Mx, M1, M2 = M[:d], M[d:2 * d], M[2 * d:]
        contrib = {}                                      # (slot, route, part) -> value

        def add(slot, route, part, v):
            key = (int(slot), route, part)
            contrib[key] = contrib.get(key, 0.0) + float(v)

        def x_of(s):
            return self._inputs(np.array([s]))[0].astype(np.float64)

        add(i, "self", "ridge", r * X @ Mx)
        kind_name = {1: "temporal", 2: "category", 3: "both"}
        for q in range(self.e_nin[i]):
            a, wq = self.e_src[i, q], float(self.e_w[i, q])
            route = kind_name[int(self.e_kind[i, q])]
            xa = x_of(a)
            add(a, route, "ridge", r * wq * (xa @ M1))
            for p in range(self.e_nin[a]):
                b, wp = self.e_src[a, p], float(self.e_w[a, p])
                add(b, "2-hop", "ridge", r * wq * wp * (x_of(b) @ M2))
        bias = float(ridge.prior[code] - ridge.mean @ M)
        # transitions: the same arithmetic as _components, split by event
        t = m.tables
        T1, T2 = t["T1"], t["T2"]
        mix = m.mix
        add(i, "self", "last", mix.get("last", 0.0) * T1[self.e_item[i], code])
        # _bag's weights: the context graph's float64 decay weights, with the event's own 1
        log, g, rows = self._context(u)
        wd = _decay_weights(g, m.tau, np.float64)[g.indptr[rows[0]]:g.indptr[rows[0] + 1]]
        w_bag = [(i, 1.0, "self")] + [(self.e_src[i, q], wd[q], kind_name[int(self.e_kind[i, q])])
                                      for q in range(self.e_nin[i])]
        Zb = sum(w for _, w, _ in w_bag)
        for s, w, route in w_bag:
            add(s, route, "window", mix.get("window", 0.0) * (w / Zb) * T1[self.e_item[s], code])
        p = self.e_prev[i]
        if p >= 0:
            add(p, "previous", "skip", mix.get("skip", 0.0) * T2[self.e_item[p], code])
        ic = t["item_category"]
        add(i, "self", "category", mix.get("category", 0.0) * t["TC"][self.e_cat[i], ic[code]] * t["share"][code])
        # the score itself, by the dense path on the same context
        score = float(m.item_scores(log, rows, _RowsAt(rows, st["H"], len(log)), g)[0, code])
        return Explanation(self, user, item, score, bias, contrib)

    # ---------------------------------------------------------------- persistence
    def nbytes(self):
        """Bytes held: ``{"total", "events", "retained_events", "users", "seen", "floor"}``; the floor is
        what the retained events, their states and the seen items need at the least."""
        pool = sum(getattr(self, a).nbytes for a in ("e_item", "e_cat", "e_beh", "e_time", "e_prev", "e_nin",
                                                     "e_src", "e_kind", "e_w", "e_F", "e_H1", "free",
                                                     "_mark"))
        users = sum(getattr(self, a).nbytes for a in ("u_keys", "u_vals", "head", "latest", "n_events",
                                                      "seen_head"))
        seen = sum(getattr(self, a).nbytes for a in ("s_keys", "s_vals", "s_item", "s_next"))
        retained = self.n_pool - self.n_free
        per_event = 4 * self.dim + 4 * self.n_small + 8 + 4 * 2     # H1, features, time, item + category
        floor = retained * per_event + self.n_seen * 4
        return {"total": pool + users + seen, "events": pool, "retained_events": int(retained),
                "users": users, "seen": seen, "floor": int(floor)}

    def save(self, path):
        """Write the state to ``path`` (an ``.npz`` file): written under a temporary name in the
        same directory, flushed, then renamed, so ``path`` always holds a whole state."""
        path = os.fspath(path)
        meta = {"format": FORMAT, "fingerprint": self.fingerprint(), "n_users": self.n_users,
                "n_seen": self.n_seen, "n_pool": self.n_pool, "n_free": self.n_free,
                "time_dtype": None if self.time_dtype is None else self.time_dtype.str}
        arrays = {name: getattr(self, name) for name in _STATE}
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                   dir=os.path.dirname(os.path.abspath(path)))
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, _meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path, model):
        """A state saved by :meth:`save`, served with ``model`` (whose embeddings and graph settings
        must be the ones it was computed with)."""
        with np.load(path, allow_pickle=False) as z:
            try:
                meta = json.loads(bytes(z["_meta"]).decode())
            except KeyError:
                raise ValueError(f"{path} is not an stgkern online state (no _meta)") from None
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} holds format {meta.get('format')!r}, this version reads {FORMAT!r}")
            rec = cls(model)
            if meta["fingerprint"] != rec.fingerprint():
                raise ValueError(f"{path} was computed with another model's embeddings or graph settings")
            if meta["time_dtype"] is not None:
                rec._set_time_dtype(np.dtype(meta["time_dtype"]))
            for name in _STATE:
                setattr(rec, name, z[name].copy())
        rec._mark = np.zeros(len(rec.e_item), np.int8)
        rec.n_users, rec.n_seen, rec.n_pool, rec.n_free = (int(meta[k]) for k in ("n_users", "n_seen", "n_pool",
                                                                                   "n_free"))
        return rec


class _Cols:
    """The columns of a small log the model's helpers read (user, time, and what is given)."""

    def __init__(self, user, time, **cols):
        self.user, self.time = user, time
        for k, v in cols.items():
            setattr(self, k, v)

    def __len__(self):
        return len(self.user)


@dataclass
class Explanation:
    """One score split into its past events' contributions (:meth:`OnlineRecommender.explain`).

    ``contributions``: ``{(slot, route, part): value}``; ``score`` the
    model's score of the item; ``bias`` the part no event carries.
    """

    rec: OnlineRecommender
    user: object
    item: object
    score: float
    bias: float
    contributions: dict

    def total(self):
        """Bias plus every contribution (equals ``score`` up to float64 rounding)."""
        return self.bias + sum(self.contributions.values())

    def by_event(self):
        """``[(slot, contribution, {part: value}, {route: value})]``, largest contribution first."""
        ev = {}
        for (s, route, part), v in self.contributions.items():
            e = ev.setdefault(s, [0.0, {}, {}])
            e[0] += v
            e[1][part] = e[1].get(part, 0.0) + v
            e[2][route] = e[2].get(route, 0.0) + v
        return sorted(((s, v[0], v[1], v[2]) for s, v in ev.items()), key=lambda t: -t[1])

    def events(self):
        """Per contributing event: dict of item (original id), category, behavior, time, contribution,
        parts and routes, largest contribution first."""
        r, m = self.rec, self.rec.model
        out = []
        for s, v, parts, routes in self.by_event():
            it = int(r.e_item[s])
            ca = int(r.e_cat[s])
            out.append({"item": m.item_ids[it] if it < m.n_items else None,
                        "category": m.category_ids[ca] if ca < m.n_categories else None,
                        "behavior": int(r.e_beh[s]), "time": r.e_time[s].item(), "contribution": v,
                        "parts": parts, "routes": routes})
        return out


def _ago(seconds):
    s = float(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.1f} {unit} ago"
    return f"{s:.0f} s ago" if s >= 1 else "just now"


def describe(explanation, behavior_names=None, top=3):
    """Lines saying which past events drove a recommendation ("viewed A 2.0 h ago, same category")."""
    e, r = explanation, explanation.rec
    names = behavior_names or [f"behaviour {b}" for b in range(r.model.n_behaviors)]
    now = r.latest[r._known([e.user])[0]]
    item_cat = r.model.category_ids[r.model.item_category[
        r._model_codes(np.asarray([e.item]), r._item_map, r.model.item_ids, r.n_items)[0]]]
    lines = []
    for ev in e.events()[:top]:
        where = "same category" if ev["category"] == item_cat else f"category {ev['category']}"
        route = max(ev["routes"], key=lambda k: abs(ev["routes"][k]))
        via = {"self": "the latest event", "temporal": "a recent event", "category": "a category edge",
               "both": "a recent same-category event", "2-hop": "two hops back",
               "previous": "the event before the latest"}[route]
        lines.append(f"{names[ev['behavior']]} item {ev['item']} {_ago(now - ev['time'])} ({where}, via {via}): "
                     f"{ev['contribution']:+.4f}")
    return lines


def replay(model, log, score_rows, *, k=20, progress=None):
    """Stream ``log`` through an :class:`OnlineRecommender` in time order and, just before each
    event of ``score_rows`` (row indices of ``log``), recommend for its user and note whether
    the event's item is in the list.

    A user's state depends on their own events alone and :meth:`OnlineRecommender.update`
    takes any number of events per user, so the stream is cut as rarely as that allows: a
    scored event and every later event of its user are held back while other users' events go
    on into the batch; the batch is applied and every held user recommended for in one call
    only when the end is reached or a held user's next scored event arrives.  Each list is
    still the one made after all of the user's earlier events and before the scored one.
    Returns ``{"events", "batches", "scored", "hits", "hit_rate", "seconds", "events_per_s",
    "recommender"}``.
    """
    import time as _time
    rec = OnlineRecommender(model)
    order = np.lexsort((np.arange(len(log)), log.time))        # time order, ties by row
    target = np.zeros(len(log), bool)
    target[np.asarray(score_rows, np.int64)] = True
    t0 = _time.perf_counter()
    tally = {"hits": 0, "scored": 0, "batches": 0, "done": 0}
    batch, held, held_users, pending = [], [], set(), []

    def flush():
        if batch:
            rec.update(log.take(np.asarray(batch, np.int64)))
            tally["batches"] += 1
            tally["done"] += len(batch)
        if progress is not None:
            progress(tally["done"], len(log))
        if not pending:
            return
        rows = np.asarray(pending, np.int64)
        users = log.user_ids[log.user[rows]]
        known = rec._user_slots(users.astype(np.int64), insert=False) >= 0
        if known.any():
            items, _ = rec.recommend(users[known], k=k)
            tally["hits"] += int((items == log.item_ids[log.item[rows[known]]][:, None]).any(1).sum())
            tally["scored"] += int(known.sum())

    for r, u, scored in zip(order.tolist(), log.user[order].tolist(), target[order].tolist()):
        if u in held_users:
            if not scored:
                held.append(r)
                continue
            flush()                                  # the held user's next scored event
            batch, held, held_users, pending = held, [], set(), []
        if scored:
            held_users.add(u)
            held.append(r)
            pending.append(r)
        else:
            batch.append(r)
    flush()
    batch, pending = held, []
    if batch:
        rec.update(log.take(np.asarray(batch, np.int64)))
        tally["batches"] += 1
    hits, scored, batches = tally["hits"], tally["scored"], tally["batches"]
    sec = _time.perf_counter() - t0
    return {"events": int(len(log)), "batches": batches, "scored": scored, "hits": hits,
            "hit_rate": hits / scored if scored else float("nan"), "seconds": sec,
            "events_per_s": len(log) / sec if sec > 0 else float("nan"), "recommender": rec}
