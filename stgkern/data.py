"""Event logs: the columnar container, loaders, preprocessing and the synthetic generator."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import finite


def _one_type(a, name):
    """An object column must hold one kind of label (all strings or all integers): NumPy
    cannot order a mix, and 1 and "1" would be two ids."""
    if a.dtype.kind == "O" and a.size:
        kinds = {"str" if isinstance(x, str) else "int" if isinstance(x, (int, np.integer)) else type(x).__name__
                 for x in a.ravel()}
        if len(kinds) > 1 or not kinds <= {"str", "int"}:
            raise TypeError(f"{name} mixes {', '.join(sorted(kinds))} values; use one type per column "
                            f"(all strings or all integers)")


def _dense(a, name):
    a = np.asarray(a)
    if a.dtype.kind not in "iuUSO":
        raise TypeError(f"{name} must hold integer or string ids, got dtype {a.dtype}; "
                        f"map labels to integers first (e.g. pandas.factorize)")
    _one_type(a, name)
    ids, inv = np.unique(a, return_inverse=True)
    return inv.astype(np.int64).ravel(), ids


#: Behaviour codes are int8.
_MAX_BEHAVIORS = 127


def _time_seconds(t):
    """Event times as seconds: numbers as they are; ``datetime64`` of any unit as int64 seconds
    since the epoch (float64 where some time has a fraction of a second); ISO-8601 strings and
    pandas ``Timestamp`` objects (timezone-aware ones at their UTC instant) through pandas."""
    if t.dtype.kind in "OUS":
        try:
            pd = _pandas()
        except ImportError:
            raise TypeError(f"time holds {t.dtype} values; pass seconds or numpy datetime64 "
                            f"(numpy.array(times, 'datetime64[s]')), or install pandas to parse "
                            f"date strings") from None
        try:
            d = pd.to_datetime(pd.Series(t, dtype=object), utc=True, format="ISO8601")
        except (ValueError, TypeError, OverflowError) as exc:
            raise TypeError(f"time holds {t.dtype} values that are not dates or times in ISO 8601 "
                            f"(e.g. '2017-11-25T09:30:00+08:00') ({exc}); pass seconds or numpy "
                            f"datetime64") from None
        t = d.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    if t.dtype.kind == "M":
        nat = np.flatnonzero(np.isnat(t))
        if nat.size:
            raise ValueError(f"time has {nat.size} missing date(s) (NaT), first at position {nat[0]}; "
                             f"drop or fill them first")
        unit, count = np.datetime_data(t.dtype)
        per_s = np.timedelta64(1, "s") / np.timedelta64(count, unit)   # ticks per second
        ticks = t.view(np.int64)
        if per_s <= 1:                                  # seconds or coarser: exact whole seconds
            return t.astype("datetime64[s]").view(np.int64)
        per_s = int(round(per_s))
        if not (ticks % per_s).any():
            return ticks // per_s
        return ticks / per_s
    if t.dtype.kind not in "iuf":
        raise TypeError(f"time must be numeric seconds, datetime64 or ISO 8601 strings, got dtype {t.dtype}")
    return t


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

    def __repr__(self):
        """A summary (counts, behaviour mix, time span), not the arrays."""
        n = len(self)
        head = (f"EventLog({n:,} events: {self.n_users:,} users, {self.n_items:,} items, "
                f"{self.n_categories:,} categories")
        if n == 0:
            return head + ")"
        cnt = np.bincount(self.behavior, minlength=self.n_behaviors)
        mix = ", ".join(f"{name} {k:,}" for name, k in zip(self.behavior_names, cnt))
        lo, hi = self.time.min(), self.time.max()
        span = f"{lo} .. {hi} s"
        if 0 <= lo and hi < 4.1e9:                      # plausible seconds since the epoch: show dates too
            d = lambda x: str(np.datetime64(int(x), "s")).replace("T", " ")  # noqa: E731
            span += f" ({d(lo)} .. {d(hi)} UTC)"
        return f"{head}; behaviours {mix}; time {span})"

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
        for k, v in cols.items():
            if v.ndim != 1:
                raise ValueError(f"{k} must be 1-D with one entry per event, got shape {v.shape}")
        lens = {k: len(v) for k, v in cols.items()}
        if len(set(lens.values())) > 1:
            raise ValueError("columns have different lengths: "
                             + ", ".join(f"{k}={n}" for k, n in lens.items()) + "; pass one entry per event")
        t = _time_seconds(cols["time"])
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
            if b.dtype.kind not in "iuUSO":         # the rule of the id columns: no float codes
                raise TypeError(f"behavior must hold integer codes or string labels, got dtype {b.dtype}")
            _one_type(b, "behavior")
            if behavior_names is None:
                if b.dtype.kind in "iu":
                    behavior_names = tuple(str(x) for x in range(int(b.max()) + 1 if b.size else 0))
                else:
                    labels = tuple(str(x) for x in np.unique(b))
                    # Taobao's labels keep the published code order whatever the source
                    behavior_names = TAOBAO_BEHAVIORS if set(labels) <= set(TAOBAO_BEHAVIORS) else labels
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
            if len(behavior_names) > _MAX_BEHAVIORS:
                raise ValueError(f"{len(behavior_names)} behaviour types; at most {_MAX_BEHAVIORS} fit the int8 "
                                 f"behaviour codes (behaviours are a few kinds such as view, cart, buy)")
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
        Column names (required).  Ids may be integers or strings; time numeric seconds,
        datetimes (timezone-aware ones taken at their UTC instant) or ISO 8601 strings.
    category, behavior, value : str, optional
        Column names; a missing category puts every item in category 0, a
        missing behaviour makes every event the single behaviour "event".
    behavior_names : sequence of str, optional
        Allowed behaviour labels, in code order.  Default: the labels found,
        sorted, except that Taobao's (a subset of pv, cart, fav, buy) keep
        that published order, as :func:`load_taobao` codes them.

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


def _read(path, names, sep=",", header=None, numeric=(), required=None, integer=()):
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
    except pd.errors.EmptyDataError:
        want = names or required or numeric
        raise ValueError(f"{path}: empty file; expected {'a header and ' if header is not None else ''}"
                         f"lines of {list(want)} separated by {sep!r}") from None
    return _check_frame(df, path, names, sep, header, numeric, required, integer, 1 if header is None else 2)


def _check_frame(df, path, names, sep, header, numeric, required, integer, first_line):
    """The checks of :func:`_read` on a parsed frame whose first row is line ``first_line`` of
    ``path`` (a whole file, or one chunk of it); numeric columns are converted in place."""
    if header is None and first_line == 1 and numeric and len(df) and all(
            _pandas().isna(_pandas().to_numeric(df[c].iloc[:1], errors="coerce")).all() for c in numeric):
        row = ",".join(df.iloc[0].astype(str).tolist())
        raise ValueError(f"{path}: line 1 looks like a header row ({row!r}): this format has no header, its "
                         f"columns are {list(names)}; drop that line (e.g. tail -n +2 FILE > NEW_FILE)")
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
        _numeric(df, col, path, first_line, integer=col in integer)
    return df


def _numeric(df, col, path, first_line, integer=False):
    """Parse ``df[col]`` as finite numbers in place (whole ones with ``integer``); the first
    failure names its line and column."""
    x = _pandas().to_numeric(df[col], errors="coerce")
    v = x.to_numpy(dtype=np.float64, na_value=np.nan)
    for bad, what in ((np.flatnonzero(np.isnan(v)), "not a number"),
                      (np.flatnonzero(np.isinf(v)), "not a finite number"),
                      (np.flatnonzero(np.isfinite(v) & (v != np.floor(v))) if integer else np.zeros(0, int),
                       "not a whole-number id")):
        if bad.size:
            raise ValueError(f"{path}: line {bad[0] + first_line}, column {col!r}: {what}: {df[col].iloc[bad[0]]!r}")
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
    df = _read(path, cols, numeric=cols[:3] + ["timestamp"], integer=cols[:3])
    _labels(df, "behavior_type", TAOBAO_BEHAVIORS, path, 1)
    return from_dataframe(df, "user_id", "item_id", "timestamp", "category_id", "behavior_type",
                          behavior_names=("pv", "cart", "fav", "buy"))


def load_movielens(ratings_path, movies_path=None):
    """MovieLens ratings.csv; category = first genre from movies.csv."""
    cols = ["userId", "movieId", "rating", "timestamp"]
    df = _read(ratings_path, None, header=0, numeric=cols, required=cols, integer=cols[:2])
    cat = None
    if movies_path is not None:
        df["genre"] = _movie_genres(df["movieId"], _movielens_genres(movies_path))
        cat = "genre"
    return from_dataframe(df, "userId", "movieId", "timestamp", cat, None, "rating", behavior_names=("rate",))


def _movielens_genres(movies_path):
    """movieId -> first genre, from a MovieLens ``movies.csv``."""
    m = _read(movies_path, None, header=0, required=["movieId"], numeric=["movieId"], integer=["movieId"])
    if "genres" not in m.columns:
        raise ValueError(f"{movies_path}: no 'genres' column (found {list(m.columns)}); the category is "
                         f"a movie's first genre: pass a MovieLens movies.csv, or no movies file")
    return dict(zip(m["movieId"], m["genres"].str.split("|").str[0]))


def _movie_genres(movie_ids, genres):
    """Each movie's category from :func:`_movielens_genres`' map (a movie it lacks: ``(no genres listed)``)."""
    return movie_ids.map(genres).fillna("(no genres listed)")


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
    if len(log) == 0:
        raise ValueError("split_last_period needs a log with events; this one is empty")
    if not period >= 0:
        raise ValueError(f"period must be a non-negative number of seconds, got {period}")
    cut = log.time.max() - period
    return log.take(log.time < cut), log.take(log.time >= cut)


def log_marginals(log):
    """Summary statistics of an event log, to compare a synthetic log with a real one.

    Events are taken in (user, time) order (stable for ties).  All shares are
    fractions in [0, 1]; a statistic that needs something the log lacks (two
    events of one user, a ``cart`` behaviour) is ``None``.

    Parameters
    ----------
    log : EventLog

    Returns
    -------
    dict
        ``events``, ``users``, ``items``, ``categories``;
        ``behavior_mix`` {name: share of events};
        ``repeat_rate``: share of events whose item the same user touched earlier;
        ``category_persistence``: share of consecutive same-user event pairs in one category;
        ``gap_quantiles_s`` {"q10".."q90"}: quantiles of within-user gaps t_{n+1} - t_n, seconds;
        ``gap_share_over_30min``: share of those gaps longer than 1800 s;
        ``events_per_user`` and ``items_per_user`` {"mean", "q10", "median", "q90", "max"}
        (items = distinct items);
        ``top1pct_item_share``: share of events on the most popular 1 % of the items that
        occur (at least one item); ``item_gini``: Gini coefficient of the events per
        occurring item (0 = uniform, towards 1 = concentrated);
        ``buy_after_cart``: share of ``cart`` events that the same user follows later
        with a ``buy`` of the same item;
        ``behavior_transitions`` {previous: {next: share}}: the next behaviour of the
        same user given the previous one;
        ``behavior_overdispersion`` {name: ratio}: over users with at least 20 events,
        the variance of their rates of that behaviour divided by what one shared
        rate would give (1: no per-user propensity).

    Examples
    --------
    >>> log = EventLog.from_arrays([0, 0, 0, 1], [5, 6, 5, 5], [0, 10, 4000, 7])
    >>> log_marginals(log)["repeat_rate"]
    0.25
    """
    n = len(log)
    if n == 0:
        raise ValueError("log_marginals needs a log with at least one event, got an empty log")
    out = {"events": n, "users": int(np.unique(log.user).size), "items": int(np.unique(log.item).size),
           "categories": int(np.unique(log.category).size)}
    order = np.lexsort((np.arange(n), log.time, log.user))
    u, it, c, b = log.user[order], log.item[order], log.category[order], log.behavior[order]
    t = log.time[order].astype(np.float64)
    out["behavior_mix"] = {name: float(s) for name, s in
                           zip(log.behavior_names, np.bincount(b, minlength=log.n_behaviors) / n)}
    key = u.astype(np.int64) * (int(log.item.max()) + 1) + it        # one key per (user, item)
    _, first, kb = np.unique(key, return_index=True, return_inverse=True)
    kb = kb.ravel()
    out["repeat_rate"] = 1.0 - first.size / n
    same = u[1:] == u[:-1]
    if same.any():
        gaps = (t[1:] - t[:-1])[same]
        out["category_persistence"] = float((c[1:] == c[:-1])[same].mean())
        out["gap_quantiles_s"] = {f"q{q}": float(v) for q, v in
                                  zip((10, 25, 50, 75, 90), np.percentile(gaps, [10, 25, 50, 75, 90]))}
        out["gap_share_over_30min"] = float((gaps > 1800).mean())
    else:
        out["category_persistence"] = out["gap_quantiles_s"] = out["gap_share_over_30min"] = None

    def spread(x):
        x = np.asarray(x, np.float64)
        return {"mean": float(x.mean()), "q10": float(np.percentile(x, 10)), "median": float(np.median(x)),
                "q90": float(np.percentile(x, 90)), "max": float(x.max())}
    per_user = np.bincount(u)
    out["events_per_user"] = spread(per_user[per_user > 0])
    items_per_user = np.bincount(u[first])    # one first touch per (user, item)
    out["items_per_user"] = spread(items_per_user[per_user > 0])
    cnt = np.sort(np.bincount(it))[::-1]
    cnt = cnt[cnt > 0]
    top = max(1, int(np.ceil(0.01 * cnt.size)))
    out["top1pct_item_share"] = float(cnt[:top].sum() / n)
    asc = cnt[::-1].astype(np.float64)
    k = asc.size
    out["item_gini"] = float((2.0 * np.sum(np.arange(1, k + 1) * asc)) / (k * asc.sum()) - (k + 1.0) / k)
    names = list(log.behavior_names)
    if "cart" in names and "buy" in names and (b == names.index("cart")).any():
        pos = np.arange(n)
        last_buy = np.full(first.size, -1, np.int64)
        is_buy = b == names.index("buy")
        np.maximum.at(last_buy, kb[is_buy], pos[is_buy])
        carts = np.flatnonzero(b == names.index("cart"))
        out["buy_after_cart"] = float((last_buy[kb[carts]] > carts).mean())
    else:
        out["buy_after_cart"] = None
    nb = log.n_behaviors
    if same.any():
        T = np.zeros((nb, nb))
        np.add.at(T, (b[:-1][same], b[1:][same]), 1.0)
        rows = T.sum(axis=1, keepdims=True)
        out["behavior_transitions"] = {names[i]: {names[j]: (float(T[i, j] / rows[i, 0]) if rows[i, 0] else None)
                                                  for j in range(nb)} for i in range(nb)}
    else:
        out["behavior_transitions"] = None
    # per-user behaviour rates against one shared rate: variance ratio over users with >= 20 events
    big = per_user >= 20
    out["behavior_overdispersion"] = None
    if big.sum() >= 2:
        out["behavior_overdispersion"] = {}
        n_u = per_user[big].astype(np.float64)
        for i in range(nb):
            x = np.bincount(u, weights=(b == i), minlength=per_user.size)[big]
            p = x.sum() / n_u.sum()
            binom = np.mean(p * (1 - p) / n_u)
            out["behavior_overdispersion"][names[i]] = float(np.var(x / n_u) / binom) if binom > 0 else None
    return out


def _draw_in_category(rng, cats, cat_ptr, cum, pop_sorted_order):
    """One item per entry of ``cats``, popularity-weighted within that category."""
    lo, hi = cat_ptr[cats], cat_ptr[cats + 1]
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    top = cum[np.maximum(hi - 1, 0)]
    u = base + rng.random(cats.shape) * (top - base)
    pos = np.clip(np.searchsorted(cum, u, side="right"), lo, np.maximum(hi - 1, lo))
    return pop_sorted_order[pos]


#: Parameters of the old process="markov" generator with their defaults.
_MARKOV_DEFAULTS = {"zipf": 1.1, "n_successors": 3, "p_follow": 0.7, "n_category_successors": 2,
                    "p_category_follow": 0.8}


@dataclass(frozen=True)
class STGParams:
    """Knobs of the spatio-temporal synthetic process (``synthetic_log(process="stg")``).

    The defaults are fitted so that the log's marginals (:func:`log_marginals`)
    lie near those of the Taobao UserBehavior sample; see docs/synthetic.md.
    Behaviour vectors and rows are over ``("pv", "cart", "fav", "buy")``.

    Attributes
    ----------
    tau : float
        Decay time (s) of a past event's influence: exp(-elapsed / tau).
    eta : float
        Short-term strength: the chance that the next event is triggered by a
        recent one when no time at all has passed.
    psi : float
        Recency factor: the event ``a`` steps back triggers with weight
        psi**a * exp(-(t_last - t_{last-a}) / tau).
    window : int
        How many recent events can trigger.
    rho : 4 floats
        Chance that a trigger of each behaviour is followed by the same item again.
    related : float
        Given a trigger and no repeat: chance of one of the trigger item's related
        items (else a popularity draw within the trigger's category).
    n_related : int
        Related items per item (drawn by popularity within its category).
    ret, interest : float
        Long-term event: chance of returning to an earlier item of the user
        (uniform over its past events) and of an item from an interest category;
        the rest is a global popularity draw.
    k_drift, k_profile : float
        Interest category: chance of a successor of the last event's category
        (drift), of one of the user's profile categories; the rest returns to
        the category of a uniformly drawn past event.
    n_category_successors : int
        Successor categories per category (drawn by category popularity, Dirichlet(1) weights).
    n_profile : int
        Profile categories per user (by category popularity, Dirichlet(1) weights).
    first_profile : float
        Chance that a user's first event comes from a profile category (else popularity).
    item_zipf, category_zipf : float
        Popularity of the item of rank r ∝ r**-item_zipf; category sizes ∝ r**-category_zipf.
    F_new, F_ret : 4 x 4 floats (or 4, the same row for every previous behaviour)
        Behaviour of an event on a new item / of a return to an earlier item,
        one row per behaviour of the user's previous event (behaviour modes
        persist: on Taobao a fav is followed by a fav 24 % of the time, against
        3 % overall); a user's first event uses the pv row.
    F_rep : 4 x 4 floats
        Behaviour of a repeat, one row per trigger behaviour (the funnel: a cart
        is often followed by a buy of the same item).
    behavior_sigma : 4 floats
        Per-user propensity of each behaviour: the behaviour draw of a new or
        returning item of user u scales its ``F_new`` / ``F_ret`` row by
        ``lam_u[b] = exp(sigma[b] Z - sigma[b]**2 / 2)`` (mean 1) and
        renormalises (a repeat's ``F_rep`` row, the funnel on the item at
        hand, is not scaled); Taobao's per-user cart, fav and buy rates
        vary 4-9 times more than a shared rate would give.
    p_break : 4 floats
        Chance that the gap after an event of each behaviour ends the session.
    gap_in : (q, mean1, mean2)
        In-session gap (s): Exp(mean1) with chance q, else Exp(mean2).
    gap_out : (offset, q, mean1, mean2)
        Between-session gap (s): offset + Exp(mean1) with chance q, else offset + Exp(mean2).
    length_sigma : float
        Events per user: max(1, round(exp(mu + length_sigma Z))), mu set so the mean is ``events_per_user``.
    t0, t0_spread : int
        A user's first event falls uniformly in [t0, t0 + t0_spread) (unix seconds).
    """
    tau: float = 900.0
    eta: float = 0.65
    psi: float = 0.5
    window: int = 8
    rho: tuple = (0.05, 0.3, 0.2, 0.1)
    related: float = 0.5
    n_related: int = 6
    ret: float = 0.05
    interest: float = 0.7
    k_drift: float = 0.3
    k_profile: float = 0.5
    n_category_successors: int = 3
    n_profile: int = 3
    first_profile: float = 0.9
    item_zipf: float = 0.35
    category_zipf: float = 0.6
    F_new: tuple = ((0.9004, 0.0526, 0.0292, 0.0178), (0.9025, 0.0893, 0.0082, 0.0),
                    (0.933, 0.0036, 0.063, 0.0004), (0.8558, 0.0509, 0.0128, 0.0805))
    F_ret: tuple = (0.75, 0.1, 0.05, 0.1)
    F_rep: tuple = ((0.75, 0.12, 0.06, 0.07), (0.55, 0.12, 0.05, 0.28),
                    (0.60, 0.20, 0.05, 0.15), (0.90, 0.05, 0.02, 0.03))
    behavior_sigma: tuple = (0.0, 0.972, 1.747, 1.293)
    p_break: tuple = (0.15, 0.12, 0.15, 0.35)
    gap_in: tuple = (0.5, 45.0, 220.0)
    gap_out: tuple = (1800.0, 0.5, 10_800.0, 72_000.0)
    length_sigma: float = 0.85
    t0: int = 1_511_539_200          # 2017-11-24 16:00 UTC, Taobao's first day in UTC+8
    t0_spread: int = 2 * 86_400

    def check(self):
        """Raise ValueError naming the first parameter out of its range."""
        def prob(name, v):
            v = np.asarray(v, np.float64)
            if not np.all((v >= 0) & (v <= 1)):
                raise ValueError(f"STGParams.{name} must be probabilities in [0, 1], got {v.tolist()}")
        def dist(name, v, shape):
            v = np.asarray(v, np.float64)
            if v.shape != shape:
                raise ValueError(f"STGParams.{name} must have shape {shape}, got {v.shape}")
            prob(name, v)
            if not np.allclose(v.reshape(-1, 4).sum(axis=1), 1.0):
                raise ValueError(f"STGParams.{name} rows must sum to 1 (one share per behaviour "
                                 f"pv, cart, fav, buy), got sums {v.reshape(-1, 4).sum(axis=1).tolist()}")
        for name in ("eta", "psi", "related", "ret", "interest", "k_drift", "k_profile", "first_profile"):
            prob(name, getattr(self, name))
        for name in ("rho", "p_break"):
            if np.shape(getattr(self, name)) != (4,):
                raise ValueError(f"STGParams.{name} must hold 4 values (pv, cart, fav, buy), "
                                 f"got {getattr(self, name)}")
            prob(name, getattr(self, name))
        if self.ret + self.interest > 1:
            raise ValueError(f"STGParams.ret + interest must be at most 1, got {self.ret} + {self.interest}")
        if self.k_drift + self.k_profile > 1:
            raise ValueError(f"STGParams.k_drift + k_profile must be at most 1, got {self.k_drift} + {self.k_profile}")
        for name in ("F_new", "F_ret"):
            dist(name, getattr(self, name), (4,) if np.ndim(getattr(self, name)) == 1 else (4, 4))
        dist("F_rep", self.F_rep, (4, 4))
        sig = np.asarray(self.behavior_sigma, np.float64)
        if sig.shape != (4,) or not np.all(np.isfinite(sig) & (sig >= 0)):
            raise ValueError(f"STGParams.behavior_sigma must hold 4 finite values >= 0 (pv, cart, fav, buy), "
                             f"got {self.behavior_sigma}")
        for name in ("window", "n_related", "n_category_successors", "n_profile"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"STGParams.{name} must be at least 1, got {getattr(self, name)}")
        if not self.tau > 0:
            raise ValueError(f"STGParams.tau must be positive seconds, got {self.tau}")
        if len(self.gap_in) != 3 or not (0 <= self.gap_in[0] <= 1 and min(self.gap_in[1:]) > 0):
            raise ValueError(f"STGParams.gap_in must be (q in [0, 1], mean1 > 0, mean2 > 0), got {self.gap_in}")
        if len(self.gap_out) != 4 or not (self.gap_out[0] >= 0 and 0 <= self.gap_out[1] <= 1
                                          and min(self.gap_out[2:]) > 0):
            raise ValueError(f"STGParams.gap_out must be (offset >= 0, q in [0, 1], mean1 > 0, mean2 > 0), "
                             f"got {self.gap_out}")
        if not self.length_sigma >= 0 or not self.t0_spread >= 1:
            raise ValueError(f"STGParams.length_sigma must be >= 0 and t0_spread >= 1, "
                             f"got {self.length_sigma}, {self.t0_spread}")
        return self

    def behavior_tables(self):
        """``(F_rep, F_new, F_ret)`` as contiguous 4 x 4 float64 arrays (a 4-row repeated)."""
        as4 = lambda a: np.ascontiguousarray(np.broadcast_to(np.asarray(a, np.float64), (4, 4)))
        return as4(self.F_rep), as4(self.F_new), as4(self.F_ret)

    def vector(self, events_per_user):
        """The scalar parameters in the order of stgkern._numba.synthetic_stg's P_* indices."""
        from ._numba import synthetic_stg as K
        P = np.zeros(K.N_P)
        q, m1, m2 = self.gap_in
        off, qo, o1, o2 = self.gap_out
        tau = float(self.tau)
        # E[exp(-dt/tau)] of an in-session and of a between-session gap (Laplace transforms
        # of the exponential mixtures): what the oracle uses in place of the unknown gap
        P[K.P_E_IN] = q / (1 + m1 / tau) + (1 - q) / (1 + m2 / tau)
        P[K.P_E_OUT] = np.exp(-off / tau) * (qo / (1 + o1 / tau) + (1 - qo) / (1 + o2 / tau))
        for idx, v in ((K.P_TAU, tau), (K.P_ETA, self.eta), (K.P_PSI, self.psi), (K.P_REL, self.related),
                       (K.P_RET, self.ret), (K.P_INT, self.interest), (K.P_K_DRIFT, self.k_drift),
                       (K.P_K_PROFILE, self.k_profile), (K.P_FIRST_PROFILE, self.first_profile),
                       (K.P_Q_IN, q), (K.P_MEAN_IN1, m1), (K.P_MEAN_IN2, m2), (K.P_BREAK, off),
                       (K.P_Q_OUT, qo), (K.P_MEAN_OUT1, o1), (K.P_MEAN_OUT2, o2),
                       (K.P_LEN_MU, np.log(events_per_user) - self.length_sigma ** 2 / 2),
                       (K.P_LEN_SIGMA, self.length_sigma), (K.P_T0, self.t0), (K.P_T0_SPREAD, self.t0_spread)):
            P[idx] = v
        return P


def _zipf_weights(rng, n, a):
    """Weights ∝ rank**-a over n entries in a random order (so weight is independent of id)."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -float(a)
    return (w / w.sum())[rng.permutation(n)]


@dataclass(frozen=True)
class _Tables:
    """Global tables of the stg process: functions of (seed, sizes, params) alone."""
    cat_of: np.ndarray        # item -> category
    pop: np.ndarray           # item popularity, sums to 1
    popc: np.ndarray          # popularity within the item's category, sums to 1 per category
    by_cat: np.ndarray        # items sorted by category (stable)
    cat_ptr: np.ndarray       # category c's items are by_cat[cat_ptr[c]:cat_ptr[c+1]]
    pop_cum: np.ndarray       # cumsum of pop[by_cat]
    cat_cum: np.ndarray       # cumsum of the category popularities
    related: np.ndarray       # (n_items, n_related) related items, same category
    csucc: np.ndarray         # (n_categories, n_category_successors) successor categories
    csucc_p: np.ndarray       # their probabilities (rows sum to 1)


#: The last global tables built, ``(key, _Tables)``: a log generated chunk by chunk (``users=``)
#: builds them once instead of once a chunk (at the Taobao sample's 4.16M items, 9.4 s a chunk).
_TABLES_CACHE = [None, None]


def _stg_tables(n_items, n_categories, seed, prm):
    key = (int(n_items), int(n_categories), int(seed), repr(prm))
    if _TABLES_CACHE[0] == key:
        return _TABLES_CACHE[1]
    tab = _build_stg_tables(n_items, n_categories, seed, prm)
    _TABLES_CACHE[:] = [key, tab]
    return tab


def _build_stg_tables(n_items, n_categories, seed, prm):
    rng = np.random.default_rng([int(seed), 17])
    cat_of = rng.choice(n_categories, n_items, p=_zipf_weights(rng, n_categories, prm.category_zipf))
    cat_of = cat_of.astype(np.int64)
    pop = _zipf_weights(rng, n_items, prm.item_zipf)
    catpop = np.bincount(cat_of, weights=pop, minlength=n_categories)
    by_cat = np.argsort(cat_of, kind="stable").astype(np.int64)
    cat_ptr = np.searchsorted(cat_of[by_cat], np.arange(n_categories + 1)).astype(np.int64)
    pop_cum = np.cumsum(pop[by_cat])
    related = _draw_in_category(rng, np.repeat(cat_of, prm.n_related).reshape(n_items, prm.n_related),
                                cat_ptr, pop_cum, by_cat).astype(np.int64)
    cat_cum = np.cumsum(catpop)
    S = prm.n_category_successors
    csucc = np.minimum(np.searchsorted(cat_cum, rng.random((n_categories, S)) * cat_cum[-1], side="right"),
                       n_categories - 1)
    # a zero-popularity (empty) category is never chosen by a search on the open interval above,
    # except through rounding at the top end, which the clip to the last non-empty one covers
    csucc = np.where(catpop[csucc] > 0, csucc, np.flatnonzero(catpop > 0)[-1]).astype(np.int64)
    csucc_p = rng.exponential(1.0, (n_categories, S))
    csucc_p /= csucc_p.sum(axis=1, keepdims=True)
    return _Tables(cat_of, pop, pop / catpop[cat_of], by_cat, cat_ptr, pop_cum, cat_cum,
                   related, csucc, np.ascontiguousarray(csucc_p))


def _seed_key(seed):
    return np.random.SeedSequence([int(seed), 17]).generate_state(1, np.uint64)[0]


def _user_range(users, n_users):
    if users is None:
        return np.arange(n_users, dtype=np.int64)
    if isinstance(users, slice):
        users = range(*users.indices(n_users))
    u = np.asarray(users)
    if u.ndim != 1 or (u.size and u.dtype.kind not in "iu"):
        raise ValueError(f"users must be a slice, a range or a 1-d array of user ids, got {users!r}")
    u = u.astype(np.int64)
    if u.size and (u.min() < 0 or u.max() >= n_users or np.any(np.diff(u) <= 0)):
        raise ValueError(f"users must be strictly increasing ids in [0, n_users={n_users}); "
                         f"got ids from {u.min()} to {u.max()}")
    return u


def _synthetic_stg(n_users, n_items, n_categories, events_per_user, seed, prm, users, return_truth):
    from ._numba import synthetic_stg as K
    tab = _stg_tables(n_items, n_categories, seed, prm)
    P = prm.vector(events_per_user)
    key = _seed_key(seed)
    users = _user_range(users, n_users)
    lens = K.user_lengths(key, users, P[K.P_LEN_MU], P[K.P_LEN_SIGMA])
    offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    n = int(offsets[-1])
    item = np.empty(n, np.int64); beh = np.empty(n, np.int8)
    t = np.empty(n, np.int64); value = np.empty(n, np.float64)
    prof_cat = np.empty((users.size, prm.n_profile), np.int64)
    prof_w = np.empty((users.size, prm.n_profile), np.float64)
    lam = np.empty((users.size, K.NB), np.float64)
    K.user_propensities(key, users, np.asarray(prm.behavior_sigma, np.float64), lam)
    cum = lambda a: np.ascontiguousarray(np.cumsum(np.asarray(a, np.float64), axis=-1))
    K.generate(key, users, offsets, P, np.asarray(prm.p_break, np.float64), np.asarray(prm.rho, np.float64),
               *prm.behavior_tables(), lam, tab.pop_cum, tab.by_cat, tab.cat_ptr,
               tab.cat_of, tab.related, tab.cat_cum, tab.csucc, cum(tab.csucc_p), prm.n_profile, prm.window,
               item, beh, t, value, prof_cat, prof_w)
    log = EventLog(np.repeat(users, lens), item, tab.cat_of[item], beh, t, value,
                   np.arange(n_users, dtype=np.int64), np.arange(n_items, dtype=np.int64),
                   np.arange(n_categories, dtype=np.int64), TAOBAO_BEHAVIORS)
    if not return_truth:
        return log
    # the truth exposes the tables as attributes: its own copies, so that nothing done to them
    # reaches the cached ones
    tab = _Tables(*(np.array(getattr(tab, f)) for f in tab.__dataclass_fields__))
    return log, SyntheticTruth(log, tab, prm, P, offsets, prof_cat, prof_w, lam)


class SyntheticTruth:
    """The exact next-event distribution of a ``synthetic_log(process="stg")`` log.

    For a row r of the log (sorted by user, time), "next" is the event that
    the process would draw after r for r's user, given that user's events up
    to and including r, the user's profile and the global tables, with the gap
    to it unknown (integrated out).  No learner that sees only the log can
    beat these probabilities in expectation: they are the generator's own
    ceiling.

    Attributes
    ----------
    log : EventLog
    item_category, popularity, popularity_in_category : ndarray (n_items,)
    related : ndarray (n_items, n_related)
    category_successors, category_successor_p : ndarray (n_categories, n_category_successors)
    profile_category, profile_weight : ndarray (generated users, n_profile)
        One row per generated user, in user order (``profile_index[r]`` is row r's).
    behavior_propensity : ndarray (generated users, 4)
        Each user's behaviour propensities (``STGParams.behavior_sigma``), rows as above.
    params : STGParams
    """

    def __init__(self, log, tab, prm, P, offsets, prof_cat, prof_w, lam):
        self.log, self.params, self._tab, self._P = log, prm, tab, P
        self.behavior_propensity = lam
        self.item_category, self.popularity, self.popularity_in_category = tab.cat_of, tab.pop, tab.popc
        self.related, self.category_successors, self.category_successor_p = tab.related, tab.csucc, tab.csucc_p
        self.profile_category, self.profile_weight = prof_cat, prof_w
        lens = np.diff(offsets)
        self.profile_index = np.repeat(np.arange(lens.size, dtype=np.int64), lens)
        self.user_start = np.repeat(offsets[:-1], lens)
        self._end = np.repeat(offsets[1:], lens)

    def _rows(self, rows):
        r = np.asarray(rows)
        if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
            raise ValueError(f"rows must be a 1-d array of integer row indices of the log, got {r.dtype} "
                             f"with shape {r.shape}")
        r = r.astype(np.int64)
        if r.size and (r.min() < 0 or r.max() >= len(self.log)):
            raise ValueError(f"rows must lie in [0, {len(self.log)}) (the log's rows), got {r.min()}..{r.max()}")
        return r

    def _common(self, r):
        prm, tab = self.params, self._tab
        lg = self.log
        return (self.user_start[r], self.profile_index[r], self._P, np.asarray(prm.p_break, np.float64),
                np.asarray(prm.rho, np.float64), lg.item, lg.behavior, lg.time, prm.window,
                tab.popc, tab.pop, tab.cat_of, tab.related, tab.csucc, tab.csucc_p, self.profile_category,
                self.profile_weight, lg.n_categories)

    def next_item_topk(self, rows, k, exclude=None):
        """The k most probable next items after each of ``rows``.

        Parameters
        ----------
        rows : int array (q,)
            Row indices of the log.
        k : int
        exclude : scipy.sparse matrix (q, n_items), optional
            Items barred per row (e.g. the items the user has already seen).

        Returns
        -------
        int64 array (q, k)
            Items by descending true probability, ties to the lower item id;
            -1 pads rows with fewer than k items left.
        """
        from ._numba import synthetic_stg as K
        r = self._rows(rows)
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        n_items = self.log.n_items
        if exclude is None:
            ptr, idx = np.zeros(r.size + 1, np.int64), np.zeros(0, np.int64)
        else:
            import scipy.sparse as sp
            ex = sp.csr_matrix(exclude)
            if ex.shape != (r.size, n_items):
                raise ValueError(f"exclude must have shape (len(rows), n_items) = {(r.size, n_items)}, "
                                 f"got {ex.shape}")
            ptr, idx = ex.indptr.astype(np.int64), ex.indices.astype(np.int64)
        return K.item_topk(r, *self._common(r), ptr, idx, int(k))

    def next_item_prob(self, rows):
        """True probability of the item the log actually has next after each row (NaN after a user's last row)."""
        from ._numba import synthetic_stg as K
        r = self._rows(rows)
        has = r + 1 < self._end[r]
        out = np.full(r.size, np.nan)
        rr = r[has]
        out[has] = K.item_prob(rr, *self._common(rr), self.log.item[rr + 1])
        return out

    def next_item_probs(self, rows):
        """Dense true next-item distribution, shape (len(rows), n_items); for small checks."""
        from ._numba import synthetic_stg as K
        r = self._rows(rows)
        return K.item_dists(r, *self._common(r))

    def next_behavior_probs(self, rows):
        """True next-behaviour distribution after each row, shape (len(rows), 4) over log.behavior_names."""
        from ._numba import synthetic_stg as K
        r = self._rows(rows)
        prm = self.params
        F = lambda a: np.ascontiguousarray(np.asarray(a, np.float64))
        return K.behavior_probs(r, self.user_start[r], self.profile_index[r], self._P, F(prm.p_break), F(prm.rho),
                                *prm.behavior_tables(), self.behavior_propensity, self.log.item,
                                self.log.behavior, self.log.time, prm.window)


def synthetic_log(n_users=1000, n_items=5000, n_categories=50, events_per_user=50, seed=0,
                  zipf=None, n_successors=None, p_follow=None, n_category_successors=None,
                  p_category_follow=None, *, process="stg", params=None, users=None, return_truth=False):
    r"""Seeded synthetic behaviour log: stgkern's built-in data.

    Two processes.  ``"stg"`` (the default) has the dependencies a
    spatio-temporal model is built for: interest that persists and drifts
    over categories, influence that decays with elapsed time, a behaviour
    funnel with repeats, sessions, and heavy-tailed popularity and activity;
    the next event depends on several recent events and on their ages, so a
    first-order item Markov chain is not the best model of it.  ``"markov"``
    is the earlier first-order item-Markov generator, kept bit for bit (the
    kernel tests and benchmarks use it so that their figures stay comparable).

    **process="stg"**.  Global tables, from ``seed`` alone: item popularity
    :math:`\pi_j \propto \mathrm{rank}^{-a}` (``item_zipf``), each item's
    category (category sizes Zipf, ``category_zipf``), ``n_related`` related
    items per item (drawn by popularity within its category) and
    ``n_category_successors`` successor categories per category with
    Dirichlet(1) weights :math:`C_{c\cdot}`.  Per user, from ``(seed, user)``
    alone: a length :math:`\max(1, \mathrm{round}(e^{\mu + \sigma Z}))` with
    mean ``events_per_user``, a profile of ``n_profile`` categories with
    Dirichlet(1) weights :math:`\theta_u`, and a start time.  The first event
    draws a profile category (else a global popularity draw).  After event
    :math:`n` (item :math:`i_n`, behaviour :math:`b_n`, time :math:`t_n`):

    1. gap :math:`\Delta`: with probability ``p_break[b_n]`` a session break,
       ``offset + Exp`` (a two-exponential mixture, ``gap_out``), else an
       in-session gap (``gap_in``); :math:`t_{n+1} = t_n + \lfloor\Delta\rfloor`;
    2. with probability :math:`\eta\, e^{-\Delta/\tau}` the event is
       *triggered* by a recent event :math:`m` (one of the last ``window``),
       chosen with weight :math:`\psi^{n-m} e^{-(t_n - t_m)/\tau}`; then with
       probability ``rho[b_m]`` it is the same item again, its behaviour
       drawn from the funnel row ``F_rep[b_m]`` (a cart is often followed by a
       buy); else a related item of :math:`i_m` (``related``) or a popularity
       draw within :math:`i_m`'s category, behaviour from ``F_new[b_n]``
       (behaviour modes persist);
    3. otherwise it is a *long-term* event: with probability ``ret`` a return
       to the item of a uniformly drawn earlier event (behaviour ``F_ret[b_n]``);
       with probability ``interest`` a popularity draw within a category drawn
       from :math:`k_d C_{c(i_n)\cdot} + k_p \theta_u + (1-k_d-k_p)\,`
       (the category of a uniformly drawn earlier event); else a global
       popularity draw (behaviour ``F_new[b_n]`` for both).

    The behaviour draws of new and returning items scale their table row by
    the user's propensities (``behavior_sigma``: some users cart, fav or buy
    far more than others) and renormalise, so the next behaviour depends on
    the previous one, on the trigger and on the user's history.

    The item of the next event therefore depends on the last ``window`` events
    and their time gaps, on the user's whole history and on its profile.  The
    exact conditional distribution, with the unknown gap integrated out
    (:math:`E[e^{-\Delta/\tau}]` is closed-form for exponential mixtures), is
    available through ``return_truth=True``.  Every user's events depend only
    on ``(seed, user)``, so ``users=`` chunks concatenate to the full log
    whatever the chunking or the thread count.  ``value`` is a lognormal
    dwell time in seconds and carries no signal.

    **process="markov"**: lengths and item popularity follow Zipf laws with
    exponent ``zipf``; every item has ``n_successors`` likely next items, in
    one of its category's ``n_category_successors`` successor categories with
    probability ``p_category_follow``; each event after a user's first follows
    one of them with probability ``p_follow``, otherwise it is a popularity
    draw; within-session gaps are lognormal (median ≈ 55 s), one gap in ten is
    a between-session gap (mean one day); ~6 % cart, ~3 % fav, and a buy (~3 %)
    re-targets the item just seen.

    Parameters
    ----------
    n_users, n_items, n_categories : int
    events_per_user : float
        Mean events per user (lengths are >= 1).
    seed : int
        Everything is deterministic for a given seed.
    zipf, n_successors, p_follow, n_category_successors, p_category_follow
        process="markov" only (defaults 1.1, 3, 0.7, 2, 0.8); passing one with
        process="stg" raises ValueError.
    process : {"stg", "markov"}
    params : STGParams or dict, optional
        process="stg" only: overrides of :class:`STGParams` (its defaults are
        fitted to the Taobao UserBehavior sample's marginals).
    users : slice, range or int array, optional
        process="stg" only: generate these users only (strictly increasing ids
        in [0, n_users)); the rows equal those users' rows of the full log.
    return_truth : bool
        process="stg" only: also return a :class:`SyntheticTruth`, the exact
        next-event distribution (the oracle).

    Returns
    -------
    EventLog, or (EventLog, SyntheticTruth)
        Sorted by (user, time) (ties in generation order); behaviours named
        ("pv", "cart", "fav", "buy"); times int64 unix seconds.

    Examples
    --------
    >>> log = synthetic_log(n_users=10, n_items=50, n_categories=5, events_per_user=5)
    >>> log.behavior_names
    ('pv', 'cart', 'fav', 'buy')
    >>> log, truth = synthetic_log(n_users=10, n_items=50, n_categories=5, return_truth=True)
    >>> truth.next_item_topk([0], k=3).shape
    (1, 3)
    """
    markov_kw = {"zipf": zipf, "n_successors": n_successors, "p_follow": p_follow,
                 "n_category_successors": n_category_successors, "p_category_follow": p_category_follow}
    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_categories", n_categories)):
        if int(v) < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    if not events_per_user > 0:
        raise ValueError(f"events_per_user must be positive, got {events_per_user}")
    if process == "markov":
        given = [k for k, v in (("params", params), ("users", users)) if v is not None]
        given += ["return_truth"] if return_truth else []
        if given:
            raise ValueError(f"{', '.join(given)} apply to process='stg' only; the markov process has no "
                             f"oracle and generates all users at once")
        kw = {k: (_MARKOV_DEFAULTS[k] if v is None else v) for k, v in markov_kw.items()}
        return _synthetic_markov(n_users, n_items, n_categories, events_per_user, seed, **kw)
    if process != "stg":
        raise ValueError(f"process must be 'stg' or 'markov', got {process!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer for process='stg' (every user's stream is "
                         f"keyed by it), got {seed!r}")
    given = [k for k, v in markov_kw.items() if v is not None]
    if given:
        raise ValueError(f"{', '.join(given)} only apply to process='markov'; the stg process takes its "
                         f"knobs through params=STGParams(...) (or pass process='markov')")
    if params is None:
        prm = STGParams()
    elif isinstance(params, STGParams):
        prm = params
    elif isinstance(params, dict):
        unknown = sorted(set(params) - set(STGParams.__dataclass_fields__))
        if unknown:
            raise ValueError(f"params has unknown key(s) {unknown}; the fields of STGParams are "
                             f"{list(STGParams.__dataclass_fields__)}")
        prm = STGParams(**params)
    else:
        raise TypeError(f"params must be an STGParams or a dict of its fields, got {type(params).__name__}")
    return _synthetic_stg(int(n_users), int(n_items), int(n_categories), float(events_per_user), seed,
                          prm.check(), users, return_truth)


def _synthetic_markov(n_users, n_items, n_categories, events_per_user, seed,
                      zipf, n_successors, p_follow, n_category_successors, p_category_follow):
    """process="markov": the first-order item-Markov generator (bit for bit as before issue 17)."""
    from ._numba.synthetic import follow_walk

    for name, v in (("n_users", n_users), ("n_items", n_items), ("n_categories", n_categories)):
        if int(v) < 1:
            raise ValueError(f"{name} must be at least 1, got {v}")
    if not events_per_user > 0:
        raise ValueError(f"events_per_user must be positive, got {events_per_user}")
    for name, v in (("p_follow", p_follow), ("p_category_follow", p_category_follow)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {v}")
    for name, v in (("n_successors", n_successors), ("n_category_successors", n_category_successors)):
        if int(v) < 1:
            raise ValueError(f"{name} must be at least 1 (every item needs a likely next item), got {v}")
    if not zipf >= 0:
        raise ValueError(f"zipf must be a non-negative exponent, got {zipf}")
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
        empty = np.flatnonzero((df[col].str.strip() == "").to_numpy())
        if empty.size:
            raise ValueError(f"{inter_path}: line {empty[0] + 2}, column {col!r}: missing value")
    for col in ("timestamp", "rating"):
        if col in df.columns:
            _numeric(df, col, inter_path, 2)
    cat = None
    g = None if item_path is None else _recbole_categories(item_path)
    if g is not None:
        df["category"] = df["item_id"].map(g).fillna("")
        cat = "category"
    return from_dataframe(df, "user_id", "item_id", "timestamp", cat, None,
                          "rating" if "rating" in df.columns else None, behavior_names=("interact",))


def _recbole_categories(item_path):
    """item id -> the first token of a RecBole ``.item`` file's first token field (None without one)."""
    it = _pandas().read_csv(item_path, sep="\t", dtype=str, keep_default_na=False)
    fields = [c for c in it.columns[1:] if c.endswith(":token") or c.endswith(":token_seq")]
    return dict(zip(it.iloc[:, 0], it[fields[0]].str.split(" ").str[0])) if fields else None


def _iso_seconds(times, path, first_line):
    """ISO-8601 strings as float seconds since the epoch (UTC); the first that is not a time is
    named by its line."""
    pd = _pandas()
    t = pd.to_datetime(times, errors="coerce", utc=True)
    bad = np.flatnonzero(t.isna().to_numpy())
    if bad.size:
        raise ValueError(f"{path}: line {bad[0] + first_line}, column 'timestamp': not a time: "
                         f"{times.iloc[bad[0]]!r}")
    return (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def load_yoochoose(path):
    """YooChoose: GRU4Rec-style ``SessionId,ItemId,Time`` (tab or comma) or raw clicks.dat
    (session, ISO timestamp, item, category).  Sessions become users."""
    with open(path) as fh:
        head = fh.readline()
    sep = "\t" if "\t" in head else ","
    if head.startswith("SessionId"):
        df = _read(path, None, sep=sep, header=0, numeric=("SessionId", "ItemId", "Time"),
                   required=("SessionId", "ItemId", "Time"))
        return from_dataframe(df, "SessionId", "ItemId", "Time", behavior_names=("click",))
    df = _read(path, ["session", "timestamp", "item", "category"], numeric=("session", "item"),
               required=("session", "timestamp", "item"))
    df["t"] = _iso_seconds(df["timestamp"], path, 1)
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
