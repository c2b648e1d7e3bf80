"""The out-of-core pipeline on a Dask cluster: the same per-user functions, partitions shuffled by user.

``stgkern.pipeline`` partitions a log by user on one machine's disk and
works part by part.  This module does the same on any ``distributed``
cluster (or Dask's local schedulers), following the contract of
``docs/scale.md``:

1. the log is read as a ``dask.dataframe`` (Taobao CSV or Parquet with the
   Taobao columns), each block checked as the loaders check a whole file
   (a bad line is named with its path, line and column) and numbered with
   its line in the file;
2. it is shuffled by user id (``shuffle(on="user_id")``), so every user is
   whole in one partition, and staged as Parquet under ``out_dir`` (the
   cluster's disk holds the log, not its memory);
3. item-level counts (:meth:`stgkern.model.ClosedFormModel.counts`) are
   computed per partition and summed by a binary tree of tasks;
4. each partition's users are scored by the fitted model with those counts
   (:meth:`~stgkern.model.ClosedFormModel.recommend`), the model entering the
   graph once (one task that every worker fetches once), and the top-k
   rows are written as Parquet.

Within a partition, rows are put back in file order before an
:class:`~stgkern.data.EventLog` is built, so events with equal times keep
the order the single-process loaders give them: every user's
recommendations are the same bits as :func:`stgkern.pipeline.recommend_partitions`
and as the model's ``recommend`` on the whole log run with the workers' BLAS
thread count (tests/test_dask.py checks this on a two-worker ``LocalCluster``;
another thread count can move the scores' last bit, not the lists).

Needs ``pip install 'stgkern[dask]'`` (dask, distributed, pandas, pyarrow).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from . import data as _data

_TAOBAO = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
_NUMERIC = ["user_id", "item_id", "category_id", "timestamp"]
_INTEGER = ["user_id", "item_id", "category_id"]


def _deps():
    try:
        import dask
        import dask.dataframe as dd
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"stgkern.dask needs dask[dataframe] and pyarrow ({exc.name} is missing): "
                          f"pip install 'stgkern[dask]'") from None
    return dask, dd


def _first_line(first_lines, partition_info):
    return int(first_lines[partition_info["number"]]) if partition_info else 1


def _checked(df, first_lines, path, partition_info=None):
    """One block of the raw log: checked, numbers parsed, ``_row`` = its line numbers."""
    first = _first_line(first_lines, partition_info)
    df = _data._check_frame(df.copy(), path, _TAOBAO, ",", None, _NUMERIC, None, _INTEGER, first)
    _data._labels(df, "behavior_type", _data.TAOBAO_BEHAVIORS, path, first)
    return _numbered(df, first_lines, partition_info).astype(
        {"user_id": np.int64, "item_id": np.int64, "category_id": np.int64})


_TYPES = {"user_id": np.int64, "item_id": np.int64, "category_id": np.int64, "behavior_type": str,
          "timestamp": np.float64}


def _clean(df):
    """One typed block's row count, and whether the checked reader would take it as it is (no
    empty or non-finite time, known behaviours): ``(rows, ok)``."""
    import pandas as pd
    ok = bool(np.isfinite(df["timestamp"].to_numpy()).all()
              and df["behavior_type"].isin(_data.TAOBAO_BEHAVIORS).all())
    return pd.DataFrame({"rows": [len(df)], "ok": [ok]})


def _numbered(df, first_lines, partition_info=None):
    """``df`` with ``_row``: its lines' numbers in the file."""
    first = _first_line(first_lines, partition_info)
    return df.assign(_row=np.arange(first, first + len(df), dtype=np.int64))


def _typed_taobao(path, blocksize):
    """The Taobao CSV through pandas' typed parser (ids as integers, the time as a float),
    or None where any block holds a line that parser cannot take or the checks would
    refuse: the checked, string-typed reader then names the line."""
    dask, dd = _deps()
    try:
        raw = dd.read_csv(path, header=None, names=_TAOBAO, dtype=_TYPES, keep_default_na=False,
                          na_values=[""], blocksize=blocksize)
        stats = raw.map_partitions(_clean, meta={"rows": np.int64, "ok": bool}).compute()
    except (ValueError, TypeError, OverflowError):
        return None
    if not bool(stats["ok"].all()):
        return None
    lens = stats["rows"].to_numpy(np.int64)
    first_lines = np.concatenate([[1], 1 + np.cumsum(lens)[:-1]])
    meta = raw._meta.assign(_row=np.zeros(0, np.int64))
    return raw.map_partitions(_numbered, first_lines, meta=meta)


def read(path, *, format="taobao", blocksize="64MB"):
    """The log at ``path`` as a checked ``dask.dataframe`` with the Taobao columns and ``_row``
    (1-based line or row number in the file).  Reads the file twice: once to count each block's
    lines (so errors name the file's line), once to check and parse."""
    dask, dd = _deps()
    path = str(path)
    if format == "taobao":
        fast = _typed_taobao(path, blocksize)
        if fast is not None:
            return fast
        raw = dd.read_csv(path, header=None, names=_TAOBAO, dtype=str, keep_default_na=False,
                          blocksize=blocksize)
    elif format == "parquet":
        raw = dd.read_parquet(path, columns=_TAOBAO).astype(str)
    else:
        raise ValueError(f"format={format!r}: stgkern.dask reads 'taobao' CSV and 'parquet'")
    lens = np.asarray(raw.map_partitions(len).compute(), np.int64)
    first_lines = np.concatenate([[1], 1 + np.cumsum(lens)[:-1]])
    meta = raw._meta.copy()
    meta["_row"] = np.zeros(0, np.int64)
    meta = meta.astype({"user_id": np.int64, "item_id": np.int64, "category_id": np.int64, "timestamp": np.float64})
    return raw.map_partitions(_checked, first_lines, path, meta=meta)


def _log(df):
    """One user-shuffled partition as an EventLog, rows back in file order."""
    df = df.sort_values("_row", kind="stable")
    return _data.from_dataframe(df, "user_id", "item_id", "timestamp", "category_id", "behavior_type",
                                behavior_names=_data.TAOBAO_BEHAVIORS)


def _counts(df, model):
    return model.counts(_log(df))


def _with_counts(model, counts):
    import copy
    return copy.copy(model).with_counts(counts)


def _recommend(df, model, k, exclude_seen):
    from .pipeline import top_k_frame
    return top_k_frame(*model.recommend(_log(df), k, exclude_seen=exclude_seen), k)


def tree_sum(parts, add):
    """``add``-reduce a list of delayed values by a binary tree of tasks (depth log2 n), in order."""
    dask, _ = _deps()
    items = list(parts)
    if not items:
        raise ValueError("nothing to reduce: the log has no partitions")
    while len(items) > 1:
        items = [dask.delayed(add)(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


def recommend(source, model, out_dir, *, format="taobao", k=20, exclude_seen=True, npartitions=None,
              blocksize="64MB", client=None):
    """Top-``k`` items for every user of the log at ``source``, on a Dask cluster.

    ``model``: a fitted :class:`~stgkern.model.ClosedFormModel`
    (``fit_closed_form(..., return_model=True)``; its tables are set from
    the whole log's counts) or a :class:`~stgkern.model.TorchRecommender`
    (:func:`stgkern.pipeline.fit_torch_partitions`).  The log is shuffled by
    user into ``npartitions`` partitions (default: as many as it was read
    in), staged as Parquet in ``out_dir/by_user``; the recommendations go to
    ``out_dir/recommendations`` (columns ``user_id, rank, item_id, score``,
    one file per partition).  ``client``: a ``distributed.Client`` (any
    cluster); None runs on Dask's current scheduler.  Returns the path of the
    recommendations.
    """
    dask, dd = _deps()
    from .model import add_counts
    out_dir = Path(out_dir)
    compute = (lambda *x: client.compute(list(x), sync=True)) if client is not None else dask.compute
    ddf = read(source, format=format, blocksize=blocksize)
    n = int(npartitions or ddf.npartitions)
    staged = str(out_dir / "by_user")
    shutil.rmtree(staged, ignore_errors=True)          # never read a failed run's files beside this run's
    compute(ddf.shuffle(on="user_id", npartitions=n).to_parquet(staged, write_index=False, compute=False))
    parts = dd.read_parquet(staged).to_delayed()
    dmodel = dask.delayed(model, pure=True, traverse=False)
    if hasattr(model, "with_counts"):           # the closed form: item-level counts, tree-reduced
        counts = tree_sum([dask.delayed(_counts)(p, dmodel) for p in parts], add_counts)
        scored = dask.delayed(_with_counts)(dmodel, counts)
    else:                                       # a TorchRecommender scores each part as it is
        scored = dmodel
    import pandas as pd
    meta = pd.DataFrame({"user_id": np.zeros(0, np.int64), "rank": np.zeros(0, np.int64),
                         "item_id": np.zeros(0, np.int64), "score": np.zeros(0, np.float64)})
    recs = dd.from_delayed([dask.delayed(_recommend)(p, scored, int(k), exclude_seen) for p in parts], meta=meta,
                           verify_meta=False)
    # written under a temporary name, renamed when every partition is: a run that fails (a task that
    # raises, a cluster that loses more workers than distributed retries) leaves no folder that looks done
    target, partial = out_dir / "recommendations", out_dir / ".recommendations.partial"
    shutil.rmtree(partial, ignore_errors=True)
    compute(recs.to_parquet(str(partial), write_index=False, compute=False))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target
