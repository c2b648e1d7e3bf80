"""Event logs: the columnar container, loaders, preprocessing and the synthetic generator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import finite


def _dense(a, name):
    a = np.asarray(a)
    if a.dtype.kind not in "iuUSO":
        raise TypeError(f"{name} must hold integer or string ids, got dtype {a.dtype}; "
                        f"map labels to integers first (e.g. pandas.factorize)")
    ids, inv = np.unique(a, return_inverse=True)
    return inv.astype(np.int64).ravel(), ids


@dataclass(frozen=True)
class EventLog:
    """Columnar event log: dense int64 ``user``/``item``/``category``, int8 ``behavior``,
    ``time`` (int64 or float64 seconds), optional float64 ``value``; ``*_ids`` map dense
    id ``d`` back to the original id ``user_ids[d]``."""
    user: np.ndarray
    item: np.ndarray
    category: np.ndarray
    behavior: np.ndarray
    time: np.ndarray
    value: np.ndarray | None
    user_ids: np.ndarray
    item_ids: np.ndarray
    category_ids: np.ndarray
    behavior_names: tuple

    n_users = property(lambda s: len(s.user_ids))
    n_items = property(lambda s: len(s.item_ids))
    n_categories = property(lambda s: len(s.category_ids))
    n_behaviors = property(lambda s: len(s.behavior_names))

    def __len__(self):
        return len(self.user)

    @classmethod
    def from_arrays(cls, user, item, time, category=None, behavior=None, value=None, behavior_names=None):
        """Build a log from raw columns, remapping ids to dense 0..n-1 ranges.

        Validates equal lengths, finite times, integer/string ids and known
        behaviour labels before doing anything else.

        >>> log = EventLog.from_arrays([7, 7, 3], [10, 11, 10], [1, 2, 3])
        >>> log.n_users, log.n_items
        (2, 2)
        """
        cols = {"user": user, "item": item, "time": time, "category": category,
                "behavior": behavior, "value": value}
        cols = {k: np.asarray(v) for k, v in cols.items() if v is not None}
        lens = {k: len(v) for k, v in cols.items()}
        if len(set(lens.values())) > 1:
            raise ValueError("columns have different lengths: "
                             + ", ".join(f"{k}={n}" for k, n in lens.items()) + "; pass one entry per event")
        t = cols["time"]
        if t.dtype.kind not in "iuf":
            raise TypeError(f"time must be numeric seconds, got dtype {t.dtype}")
        t = finite(t, "time")
        t = t.astype(np.int64) if t.dtype.kind in "iu" else t.astype(np.float64)
        u, uids = _dense(cols["user"], "user")
        i, iids = _dense(cols["item"], "item")
        if "category" in cols:
            c, cids = _dense(cols["category"], "category")
        else:
            c, cids = np.zeros(len(t), np.int64), np.zeros(1 if len(t) else 0, np.int64)
        if "behavior" in cols:
            b = cols["behavior"]
            if behavior_names is None:
                if b.dtype.kind in "iu":
                    behavior_names = tuple(str(x) for x in range(int(b.max()) + 1 if b.size else 0))
                else:
                    behavior_names = tuple(str(x) for x in np.unique(b))
            behavior_names = tuple(behavior_names)
            if b.dtype.kind in "iu":
                bad = np.unique(b[(b < 0) | (b >= len(behavior_names))])
                code = b
            else:
                lut = {n: k for k, n in enumerate(behavior_names)}
                labels = np.unique(b)
                bad = [x for x in labels if str(x) not in lut]
                code = np.searchsorted(labels, b)
                code = np.array([lut.get(str(x), 0) for x in labels], np.int64)[code] if labels.size else code
            if len(bad):
                raise ValueError(f"behavior has unknown label(s) {list(bad)[:20]}; known: {list(behavior_names)}")
            b = np.asarray(code, np.int8)
        else:
            behavior_names = tuple(behavior_names or ("event",))
            b = np.zeros(len(t), np.int8)
        v = None if "value" not in cols else np.asarray(cols["value"], np.float64)
        return cls(u, i, c, b, t, v, uids, iids, cids, behavior_names)

    def take(self, index_or_mask, *, compact=False):
        """Subset of events; keeps the id mappings unless ``compact=True``."""
        ix = np.asarray(index_or_mask)
        f = lambda a: None if a is None else a[ix]
        out = EventLog(f(self.user), f(self.item), f(self.category), f(self.behavior), f(self.time),
                       f(self.value), self.user_ids, self.item_ids, self.category_ids, self.behavior_names)
        return out.compact() if compact else out

    def sort(self):
        """Stable sort by (user, time)."""
        return self.take(np.lexsort((self.time, self.user)))

    def compact(self):
        """Re-densify ids to the ones still present."""
        u, ku = np.unique(self.user, return_inverse=True)
        i, ki = np.unique(self.item, return_inverse=True)
        c, kc = np.unique(self.category, return_inverse=True)
        return EventLog(ku.astype(np.int64), ki.astype(np.int64), kc.astype(np.int64), self.behavior,
                        self.time, self.value, self.user_ids[u], self.item_ids[i], self.category_ids[c],
                        self.behavior_names)

    def to_dataframe(self):
        pd = _pandas()
        d = {"user_id": self.user_ids[self.user], "item_id": self.item_ids[self.item],
             "category_id": self.category_ids[self.category],
             "behavior": np.array(self.behavior_names, dtype=object)[self.behavior] if len(self) else [],
             "time": self.time}
        if self.value is not None:
            d["value"] = self.value
        return pd.DataFrame(d)

    def summary(self):
        s = {"events": len(self), "users": int(np.unique(self.user).size),
             "items": int(np.unique(self.item).size), "categories": int(np.unique(self.category).size)}
        cnt = np.bincount(self.behavior, minlength=self.n_behaviors)
        s.update({f"n_{n}": int(k) for n, k in zip(self.behavior_names, cnt)})
        return s


def _pandas():
    try:
        import pandas as pd
    except ImportError as e:  # pragma: no cover
        raise ImportError('loading files needs pandas: pip install "stgkern[io]"') from e
    return pd


def from_dataframe(df, user, item, time, category=None, behavior=None, value=None, behavior_names=None):
    """Build an :class:`EventLog` from any pandas DataFrame, naming its columns.

    Parameters
    ----------
    df : pandas.DataFrame
    user, item, time : str
        Column names (required).  Ids may be integers or strings; time numeric seconds.
    category, behavior, value : str, optional
        Column names; a missing category puts every item in category 0, a
        missing behaviour makes every event the single behaviour "event".
    behavior_names : sequence of str, optional
        Allowed behaviour labels, in code order.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"u": [1, 1], "i": ["a", "b"], "t": [10, 20]})
    >>> from_dataframe(df, "u", "i", "t").n_items
    2
    """
    named = {"user": user, "item": item, "time": time, "category": category, "behavior": behavior,
             "value": value}
    absent = {k: c for k, c in named.items() if c is not None and c not in df.columns}
    if absent:
        raise ValueError(f"column(s) not in the DataFrame: {absent}; it has {list(df.columns)}")
    g = lambda c: None if c is None else df[c].to_numpy()
    return EventLog.from_arrays(g(user), g(item), g(time), g(category), g(behavior), g(value), behavior_names)


def _read(path, names, sep=",", header=None, numeric=(), required=None):
    """Parse a delimited file with pandas, as strings, then check it.

    Every ``required`` column (default: all named ones) must be non-empty on
    every line and every ``numeric`` one must parse as a number; the first
    offending line is reported with its 1-based line number and column name.
    A line with too many fields is a pandas ParserError, re-raised with the
    path; a line with too few leaves its last columns empty and is reported
    as such.
    """
    pd = _pandas()
    try:
        df = pd.read_csv(path, sep=sep, header=header, names=names, dtype=str, keep_default_na=False,
                         index_col=False)
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: malformed file ({exc}); expected "
                         f"{len(names) if names else 'the header'}'s columns "
                         f"{names if names else ''} separated by {sep!r}") from None
    first_line = 1 if header is None else 2
    missing = [c for c in (names or []) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    for col in numeric:
        if col not in df.columns:
            raise ValueError(f"{path}: missing column {col!r}; found {list(df.columns)}")
    for col in (df.columns if required is None else required):
        empty = np.flatnonzero((df[col].str.strip() == "").to_numpy())
        if empty.size:
            raise ValueError(f"{path}: line {empty[0] + first_line}, column {col!r}: missing value "
                             f"(expected {len(df.columns)} fields separated by {sep!r}: {list(df.columns)})")
    for col in numeric:
        _numeric(df, col, path, first_line)
    return df


def _numeric(df, col, path, first_line):
    """Parse ``df[col]`` as numbers in place; the first failure names its line and column."""
    x = _pandas().to_numeric(df[col], errors="coerce")
    bad = np.flatnonzero(x.isna().to_numpy())
    if bad.size:
        raise ValueError(f"{path}: line {bad[0] + first_line}, column {col!r}: "
                         f"not a number: {df[col].iloc[bad[0]]!r}")
    df[col] = x


def _labels(df, col, known, path, first_line):
    """Check a label column against ``known``; report the first unknown one with its line."""
    ok = df[col].isin(known).to_numpy()
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        others = sorted(set(df[col][~ok].unique().tolist()))[:10]
        raise ValueError(f"{path}: line {k + first_line}, column {col!r}: unknown behaviour "
                         f"{df[col].iloc[k]!r} (unknown values: {others}); expected one of {list(known)}")


TAOBAO_BEHAVIORS = ("pv", "cart", "fav", "buy")


def load_taobao(path):
    """Load Taobao UserBehavior: a header-less CSV ``user_id,item_id,category_id,behavior_type,timestamp``.

    Behaviours are ``pv`` (page view), ``cart``, ``fav`` and ``buy``; ids are
    remapped to dense ranges (the originals are kept in ``*_ids``).  A line with
    a missing or non-numeric field or an unknown behaviour raises ValueError
    naming the line and the column.
    """
    cols = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    df = _read(path, cols, numeric=cols[:3] + ["timestamp"])
    _labels(df, "behavior_type", TAOBAO_BEHAVIORS, path, 1)
    return from_dataframe(df, "user_id", "item_id", "timestamp", "category_id", "behavior_type",
                          behavior_names=("pv", "cart", "fav", "buy"))


def load_movielens(ratings_path, movies_path=None):
    """MovieLens ratings.csv; category = first genre from movies.csv."""
    cols = ["userId", "movieId", "rating", "timestamp"]
    df = _read(ratings_path, None, header=0, numeric=cols, required=cols)
    cat = None
    if movies_path is not None:
        m = _pandas().read_csv(movies_path)
        g = dict(zip(m["movieId"], m["genres"].str.split("|").str[0]))
        df["genre"] = df["movieId"].map(g).fillna("(no genres listed)")
        cat = "genre"
    return from_dataframe(df, "userId", "movieId", "timestamp", cat, None, "rating", behavior_names=("rate",))


def _report(before, after):
    return {"events_removed": len(before) - len(after),
            "users_removed": int(np.unique(before.user).size - np.unique(after.user).size),
            "items_removed": int(np.unique(before.item).size - np.unique(after.item).size)}


def k_core(log, user_k=5, item_k=5):
    """k-core filtering: drop users with fewer than ``user_k`` and items with fewer than
    ``item_k`` events, repeated until nothing changes (removing an item can push a user
    under the threshold and back).

    Returns
    -------
    (EventLog, dict)
        The filtered log (ids keep their original mapping; call ``.compact()`` to
        re-densify) and a report ``{"events_removed", "users_removed", "items_removed"}``.
    """
    keep = np.ones(len(log), bool)
    while True:
        uc = np.bincount(log.user[keep], minlength=log.n_users)
        ic = np.bincount(log.item[keep], minlength=log.n_items)
        new = keep & (uc[log.user] >= user_k) & (ic[log.item] >= item_k)
        if new.sum() == keep.sum():
            break
        keep = new
    out = log.take(keep)
    return out, _report(log, out)


def filter_min_length(log, min_len):
    """Keep users (or sessions) with at least ``min_len`` events; returns ``(log, report)``."""
    uc = np.bincount(log.user, minlength=log.n_users)
    out = log.take(uc[log.user] >= min_len)
    return out, _report(log, out)


def filter_time(log, start=None, end=None):
    """Keep events with ``start <= time < end`` (either bound may be None); returns ``(log, report)``."""
    m = np.ones(len(log), bool)
    if start is not None:
        m &= log.time >= start
    if end is not None:
        m &= log.time < end
    out = log.take(m)
    return out, _report(log, out)


def split_leave_one_out(log):
    """Leave-one-out split as the sequential-recommendation literature does it.

    Each user's last event (by time, ties by input order) is the test event and
    the one before it the validation event; everything earlier is training.
    Users with fewer than 3 events stay wholly in train (they have nothing to
    hold out), so no user is dropped.  Returns ``(train, valid, test)`` logs in
    input order.
    """
    order = np.lexsort((np.arange(len(log)), log.time, log.user))
    u = log.user[order]
    cnt = np.bincount(u, minlength=log.n_users)
    end = np.cumsum(cnt)
    rank_from_end = end[u] - 1 - np.arange(len(u))
    ok = cnt[u] >= 3
    test = order[ok & (rank_from_end == 0)]
    valid = order[ok & (rank_from_end == 1)]
    train = order[~ok | (rank_from_end >= 2)]
    return log.take(np.sort(train)), log.take(np.sort(valid)), log.take(np.sort(test))


def split_last_period(log, period):
    """Last-period split: ``(train, test)`` at the global cut ``max(time) - period``
    (events at or after the cut are test), as session-based work (YOOCHOOSE,
    DIGINETICA) evaluates on the last day(s)."""
    cut = log.time.max() - period
    return log.take(log.time < cut), log.take(log.time >= cut)


def _draw_in_category(rng, cats, cat_ptr, cum, pop_sorted_order):
    """One item per entry of ``cats``, popularity-weighted within that category."""
    lo, hi = cat_ptr[cats], cat_ptr[cats + 1]
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    top = cum[np.maximum(hi - 1, 0)]
    u = base + rng.random(cats.shape) * (top - base)
    pos = np.clip(np.searchsorted(cum, u, side="right"), lo, np.maximum(hi - 1, lo))
    return pop_sorted_order[pos]


def synthetic_log(n_users=1000, n_items=5000, n_categories=50, events_per_user=50, seed=0,
                  zipf=1.1, n_successors=3, p_follow=0.7, n_category_successors=2, p_category_follow=0.8):
    """Seeded synthetic behaviour log: stgkern's built-in data.

    The generator has the structure a sequential recommender is meant to
    learn, so that models can be compared on it:

    * **activity and popularity**: user lengths and item popularity follow
      Zipf laws with exponent ``zipf`` (a few heavy users and blockbuster
      items, a long tail of both);
    * **item transitions**: every item has ``n_successors`` likely next items;
      each event after a user's first follows one of them with probability
      ``p_follow``, otherwise it is a popularity draw;
    * **category transitions**: every category has ``n_category_successors``
      successor categories; an item's successors lie in one of its category's
      successors with probability ``p_category_follow`` (else in any category),
      so category-to-category dependencies exist beyond single items;
    * **bursty time**: within-session gaps are lognormal (median ≈ 55 s), one
      gap in ten is a between-session gap (exponential, mean one day), and
      each user starts at a uniform offset within the first week;
    * **behaviour funnel**: views (pv) dominate, ~6 % cart, ~3 % fav, and a buy
      (~3 %) always re-targets the item the same user just interacted with;
    * ``value`` is a lognormal dwell time in seconds (intensity).

    Parameters
    ----------
    n_users, n_items, n_categories : int
    events_per_user : float
        Mean events per user (lengths are ≥ 1).
    seed : int
        Everything is deterministic for a given seed.

    Returns
    -------
    EventLog
        Sorted by (user, time); behaviours named ("pv", "cart", "fav", "buy");
        times are int64 seconds from 2017-07-14.

    Examples
    --------
    >>> log = synthetic_log(n_users=10, n_items=50, n_categories=5, events_per_user=5)
    >>> log.behavior_names
    ('pv', 'cart', 'fav', 'buy')
    """
    from ._numba.synthetic import follow_walk

    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_categories", n_categories)):
        if int(v) < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    if not events_per_user > 0:
        raise ValueError(f"events_per_user must be positive, got {events_per_user}")
    for name, v in (("p_follow", p_follow), ("p_category_follow", p_category_follow)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {v}")
    rng = np.random.default_rng(seed)
    act = (np.arange(1, n_users + 1) ** -float(zipf))
    lens = np.maximum(1, np.round(act / act.mean() * events_per_user)).astype(np.int64)
    rng.shuffle(lens)
    n = int(lens.sum())
    user = np.repeat(np.arange(n_users, dtype=np.int64), lens)

    pop = np.arange(1, n_items + 1) ** -float(zipf)
    pop = pop[rng.permutation(n_items)]          # popularity independent of item id
    pop /= pop.sum()
    cat_of = rng.integers(0, n_categories, n_items)
    by_cat = np.argsort(cat_of, kind="stable")
    cat_ptr = np.searchsorted(cat_of[by_cat], np.arange(n_categories + 1))
    cum = np.cumsum(pop[by_cat])
    cat_succ = rng.integers(0, n_categories, (n_categories, max(1, n_category_successors)))
    pick_c = rng.integers(0, cat_succ.shape[1], (n_items, n_successors))
    target = np.where(rng.random((n_items, n_successors)) < p_category_follow,
                      cat_succ[cat_of[:, None], pick_c], rng.integers(0, n_categories, (n_items, n_successors)))
    # an empty target category falls back to any category
    empty = cat_ptr[target + 1] == cat_ptr[target]
    anywhere = np.minimum(np.searchsorted(cum, rng.random(int(empty.sum())) * cum[-1]), n_items - 1)
    target[empty] = cat_of[by_cat[anywhere]]
    succ = _draw_in_category(rng, target, cat_ptr, cum, by_cat)

    start = np.concatenate(([0], np.cumsum(lens)[:-1]))
    first = np.zeros(n, bool)
    first[start] = True
    item = np.minimum(np.searchsorted(np.cumsum(pop), rng.random(n) * 1.0), n_items - 1).astype(np.int64)
    follow = (rng.random(n) < p_follow) & ~first
    pick = rng.integers(0, n_successors, n)
    item = follow_walk(item, follow, succ.astype(np.int64), pick)

    gaps = np.where(rng.random(n) < 0.9, rng.lognormal(4.0, 1.0, n), rng.exponential(86400.0, n))
    gaps[first] = rng.uniform(0, 7 * 86400, lens.size)
    t = np.cumsum(gaps)
    t = (t - np.repeat(t[start] - gaps[start], lens)).astype(np.int64) + 1_500_000_000
    beh = np.zeros(n, np.int8)
    r = rng.random(n)
    beh[r < 0.06] = 1
    beh[(r >= 0.06) & (r < 0.09)] = 2
    # buy = repeat of the previous (viewed) item by the same user
    buy = (rng.random(n) < 0.03) & ~first
    buy[1:] &= ~buy[:-1]  # the preceding event stays a non-buy of the same item
    item[buy] = item[np.flatnonzero(buy) - 1]
    beh[buy] = 3
    value = rng.lognormal(3.0, 1.0, n)
    return EventLog(user, item, cat_of[item].astype(np.int64), beh, t, value,
                    np.arange(n_users, dtype=np.int64), np.arange(n_items, dtype=np.int64),
                    np.arange(n_categories, dtype=np.int64), ("pv", "cart", "fav", "buy"))


def load_recbole(inter_path, item_path=None):
    """RecBole atomic files (tab-separated, ``name:type`` headers); category from ``.item``'s
    first token/token_seq field (first token)."""
    pd = _pandas()
    df = pd.read_csv(inter_path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":")[0] for c in df.columns]
    for col in ("user_id", "item_id", "timestamp"):
        if col not in df.columns:
            raise ValueError(f"{inter_path}: missing column {col!r}; found {list(df.columns)}")
    for col in ("timestamp", "rating"):
        if col in df.columns:
            _numeric(df, col, inter_path, 2)
    cat = None
    if item_path is not None:
        it = pd.read_csv(item_path, sep="\t", dtype=str, keep_default_na=False)
        fields = [c for c in it.columns[1:] if c.endswith(":token") or c.endswith(":token_seq")]
        if fields:
            g = dict(zip(it.iloc[:, 0], it[fields[0]].str.split(" ").str[0]))
            df["category"] = df["item_id"].map(g).fillna("")
            cat = "category"
    return from_dataframe(df, "user_id", "item_id", "timestamp", cat, None,
                          "rating" if "rating" in df.columns else None, behavior_names=("interact",))


def load_yoochoose(path):
    """YooChoose: GRU4Rec-style ``SessionId,ItemId,Time`` (tab or comma) or raw clicks.dat
    (session, ISO timestamp, item, category).  Sessions become users."""
    pd = _pandas()
    with open(path) as fh:
        head = fh.readline()
    sep = "\t" if "\t" in head else ","
    if head.startswith("SessionId"):
        df = _read(path, None, sep=sep, header=0, numeric=("SessionId", "ItemId", "Time"),
                   required=("SessionId", "ItemId", "Time"))
        return from_dataframe(df, "SessionId", "ItemId", "Time", behavior_names=("click",))
    df = _read(path, ["session", "timestamp", "item", "category"], numeric=("session", "item"),
               required=("session", "timestamp", "item"))
    t = pd.to_datetime(df["timestamp"], errors="coerce", utc=True)
    bad = np.flatnonzero(t.isna().to_numpy())
    if bad.size:
        raise ValueError(f"{path}: line {bad[0] + 1}, column 'timestamp': not a time: {df['timestamp'].iloc[bad[0]]!r}")
    df["t"] = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return from_dataframe(df, "session", "item", "t", "category", behavior_names=("click",))


_LOADERS = {"taobao": load_taobao, "movielens": load_movielens, "recbole": load_recbole,
            "yoochoose": load_yoochoose}


def load(path, format, categories=None):
    """Load ``path`` with the loader for ``format`` (taobao, movielens, recbole, yoochoose).

    ``categories`` names the side file that gives items their category where
    the format keeps it apart: MovieLens ``movies.csv`` (first genre) or a
    RecBole ``.item`` file.  Taobao and YOOCHOOSE logs carry the category on
    each line and take no side file.
    """
    if format not in _LOADERS:
        raise ValueError(f"format={format!r} is not known; choose one of {list(_LOADERS)}")
    if categories is None:
        return _LOADERS[format](path)
    if format not in ("movielens", "recbole"):
        raise ValueError(f"format={format!r} carries categories in the log itself; categories= applies to "
                         f"movielens (movies.csv) and recbole (.item) only")
    return _LOADERS[format](path, categories)


# ---------------------------------------------------------------- session benchmarks
@dataclass(frozen=True)
class SessionData:
    """A session-recommendation benchmark split, as CSR sequences of 0-based item ids.

    ``train_ptr``/``train_items``: the training sessions (session ``s`` is
    ``train_items[train_ptr[s]:train_ptr[s+1]]``, in click order).
    ``test_ptr``/``test_items``/``test_target``: the test examples (a prefix
    and the item that followed it).  Item ids are ``0 .. n_items - 1``
    (the files' ``1 .. n_items`` shifted down by one).
    """
    train_ptr: np.ndarray
    train_items: np.ndarray
    test_ptr: np.ndarray
    test_items: np.ndarray
    test_target: np.ndarray
    n_items: int
    name: str = ""

    def __repr__(self):
        return (f"SessionData({self.name or 'sessions'}: {len(self.train_ptr) - 1:,} training sessions, "
                f"{len(self.test_target):,} test examples, {self.n_items:,} items)")


def _read_id_lines(path, with_target):
    """Whitespace-separated positive item ids per line (``items<TAB>target`` when ``with_target``)."""
    import gzip
    opener = gzip.open if str(path).endswith(".gz") else open
    lens, vals, targets = [], [], []
    with opener(path, "rt") as fh:
        for line_no, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if with_target:
                parts = line.split("\t")
                if len(parts) != 2:
                    raise ValueError(f"{path}, line {line_no}: expected 'items<TAB>target', "
                                     f"found {len(parts) - 1} tab(s)")
                line, tgt = parts
            fields = line.split()
            try:
                ids = [int(f) for f in fields]
                if with_target:
                    targets.append(int(tgt))
            except ValueError:
                bad = next(f for f in fields + ([tgt] if with_target else []) if not f.lstrip("-").isdigit())
                raise ValueError(f"{path}, line {line_no}: item id {bad!r} is not an integer") from None
            if not ids:
                raise ValueError(f"{path}, line {line_no}: empty session")
            lens.append(len(ids))
            vals.extend(ids)
    ptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=ptr[1:])
    items = np.asarray(vals, np.int64)
    target = np.asarray(targets, np.int64) if with_target else None
    for name, a in (("item", items), ("target", target)):
        if a is not None and a.size and int(a.min()) < 1:
            line = int(np.searchsorted(ptr, int(np.argmin(a)), side="right")) if name == "item" else int(np.argmin(a)) + 1
            raise ValueError(f"{path}, line {line}: {name} id {int(a.min())}; ids start at 1 (0 is padding)")
    return ptr, items, target


def load_diginetica(folder):
    """The Diginetica session split used by SR-GNN and GCE-GNN (plain-text form).

    Reads ``train_sessions.txt[.gz]`` (one training session per line, item
    ids separated by spaces, in click order) and ``test.txt[.gz]`` (one test
    example per line: the prefix's ids, a tab, the target id) from ``folder``.
    Ids in the files start at 1; they are returned shifted to start at 0.
    The training examples of the published protocol are every proper prefix
    of every training session: ``stgkern.srgnn_prefixes(d.train_ptr,
    d.train_items)`` (719,470 on Diginetica).

    Returns
    -------
    SessionData
        ``n_items`` is the largest id seen in either file.

    Raises
    ------
    FileNotFoundError
        When either file is missing (the message lists what was looked for).
    ValueError
        For a malformed line (the message names the file and the line).
    """
    from pathlib import Path
    folder = Path(folder)
    paths = {}
    for stem in ("train_sessions.txt", "test.txt"):
        found = [folder / (stem + ext) for ext in (".gz", "") if (folder / (stem + ext)).is_file()]
        if not found:
            raise FileNotFoundError(f"{folder} has no {stem} or {stem}.gz (the Diginetica split: "
                                    f"train_sessions.txt.gz and test.txt.gz)")
        paths[stem] = found[0]
    tr_ptr, tr_items, _ = _read_id_lines(paths["train_sessions.txt"], False)
    te_ptr, te_items, te_target = _read_id_lines(paths["test.txt"], True)
    n_items = int(max(tr_items.max(initial=0), te_items.max(initial=0), te_target.max(initial=0)))
    return SessionData(tr_ptr, tr_items - 1, te_ptr, te_items - 1, te_target - 1, n_items, name=folder.name)
