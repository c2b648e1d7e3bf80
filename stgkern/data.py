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
    g = lambda c: None if c is None else df[c].to_numpy()
    return EventLog.from_arrays(g(user), g(item), g(time), g(category), g(behavior), g(value), behavior_names)


def _read(path, names, sep=",", header=None, numeric=()):
    pd = _pandas()
    df = pd.read_csv(path, sep=sep, header=header, names=names, dtype=str, keep_default_na=False)
    first_line = 1 if header is None else 2
    for col in numeric:
        x = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(x.isna().to_numpy())
        if bad.size:
            raise ValueError(f"{path}: line {bad[0] + first_line}, column {col!r}: "
                             f"not a number: {df[col].iloc[bad[0]]!r}")
        df[col] = x
    return df


def load_taobao(path):
    """Taobao UserBehavior CSV (no header: user,item,category,behavior,timestamp)."""
    cols = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    df = _read(path, cols, numeric=cols[:3] + ["timestamp"])
    return from_dataframe(df, "user_id", "item_id", "timestamp", "category_id", "behavior_type",
                          behavior_names=("pv", "cart", "fav", "buy"))


def load_movielens(ratings_path, movies_path=None):
    """MovieLens ratings.csv; category = first genre from movies.csv."""
    cols = ["userId", "movieId", "rating", "timestamp"]
    df = _read(ratings_path, None, header=0, numeric=cols)
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
    """Drop events of users with < user_k and items with < item_k events, to a fixed point."""
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
    uc = np.bincount(log.user, minlength=log.n_users)
    out = log.take(uc[log.user] >= min_len)
    return out, _report(log, out)


def filter_time(log, start=None, end=None):
    """Keep events with start <= time < end."""
    m = np.ones(len(log), bool)
    if start is not None:
        m &= log.time >= start
    if end is not None:
        m &= log.time < end
    out = log.take(m)
    return out, _report(log, out)


def split_leave_one_out(log):
    """(train, valid, test): each user's last event is test, the one before valid.
    Users with fewer than 3 events stay wholly in train."""
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
    """(train, test) by a global cut at max(time) - period."""
    cut = log.time.max() - period
    return log.take(log.time < cut), log.take(log.time >= cut)


def synthetic_log(n_users=1000, n_items=5000, n_categories=50, events_per_user=50, seed=0,
                  zipf=1.1, n_successors=3, p_follow=0.7):
    """Synthetic behaviour log: Zipf user activity and item popularity, sessions with
    lognormal within-session gaps and exponential between-session gaps, each item with
    ``n_successors`` likely successors (followed with prob ``p_follow``), and a
    pv -> cart/fav -> buy funnel where buys only re-target items the user already viewed.
    Deterministic for a given seed.  ``value`` is dwell seconds."""
    rng = np.random.default_rng(seed)
    act = (np.arange(1, n_users + 1) ** -zipf)
    lens = np.maximum(1, np.round(act / act.mean() * events_per_user)).astype(np.int64)
    rng.shuffle(lens)
    n = int(lens.sum())
    user = np.repeat(np.arange(n_users, dtype=np.int64), lens)
    pop = np.arange(1, n_items + 1) ** -zipf
    pop /= pop.sum()
    succ = rng.choice(n_items, size=(n_items, n_successors), p=pop)
    cat_of = rng.integers(0, n_categories, n_items)
    start = np.concatenate(([0], np.cumsum(lens)[:-1]))
    first = np.zeros(n, bool)
    first[start] = True
    rand_item = rng.choice(n_items, size=n, p=pop)
    follow = (rng.random(n) < p_follow) & ~first
    pick = rng.integers(0, n_successors, n)
    item = rand_item.copy()
    # walk: each following event takes a successor of the previous item (sequential by nature)
    for k in np.flatnonzero(follow):
        item[k] = succ[item[k - 1], pick[k]]
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
            x = pd.to_numeric(df[col], errors="coerce")
            bad = np.flatnonzero(x.isna().to_numpy())
            if bad.size:
                raise ValueError(f"{inter_path}: line {bad[0] + 2}, column {col!r}: "
                                 f"not a number: {df[col].iloc[bad[0]]!r}")
            df[col] = x
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
        df = _read(path, None, sep=sep, header=0, numeric=("SessionId", "ItemId", "Time"))
        return from_dataframe(df, "SessionId", "ItemId", "Time", behavior_names=("click",))
    df = _read(path, ["session", "timestamp", "item", "category"], numeric=("session", "item"))
    t = pd.to_datetime(df["timestamp"], errors="coerce", utc=True)
    bad = np.flatnonzero(t.isna().to_numpy())
    if bad.size:
        raise ValueError(f"{path}: line {bad[0] + 1}, column 'timestamp': not a time: {df['timestamp'].iloc[bad[0]]!r}")
    df["t"] = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return from_dataframe(df, "session", "item", "t", "category", behavior_names=("click",))


_LOADERS = {"taobao": load_taobao, "movielens": load_movielens, "recbole": load_recbole,
            "yoochoose": load_yoochoose}


def load(path, format):
    """Load ``path`` with the loader for ``format`` (taobao, movielens, recbole, yoochoose)."""
    if format not in _LOADERS:
        raise ValueError(f"format={format!r} is not known; choose one of {list(_LOADERS)}")
    return _LOADERS[format](path)
