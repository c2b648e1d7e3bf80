"""Event logs larger than memory: partition by user on disk, then work partition by partition.

Everything stgkern computes per event -- window graphs, node features,
sequences, per-user states -- is a function of one user's events.  A
partition that holds whole users can therefore be processed on its own, with
memory bounded by the partition, and the results of all partitions are the
results of the whole log (``docs/scale.md`` gives the contract).

Two steps, each safe to kill and rerun:

* :func:`partition` reads a log in chunks of ``chunk_rows`` lines (checked as
  the loaders check a whole file: a bad line is named with its path, line
  and column), sends each user to part ``hash(user id) % n_parts`` and
  appends its rows to that part as Parquet files.  Everything is written
  under a temporary name and renamed into place when the last chunk is done,
  with a ``manifest.json`` of what was read; a run that died leaves nothing
  that looks complete, and the next run starts the pass again.
* :func:`map_partitions` calls ``fn(log, k)`` on every part's
  :class:`~stgkern.data.EventLog` and writes the returned DataFrame as
  ``part-<k>.parquet`` (written as ``.tmp``, then renamed).  Parts already
  written are skipped, so a killed run resumes where it stopped and never
  mixes half-written output into the result.

Needs pandas and pyarrow (``pip install 'stgkern[scale]'``).

Examples
--------
>>> from stgkern import pipeline                                     # doctest: +SKIP
>>> parts = pipeline.partition("UserBehavior.csv", "work", n_parts=64)  # doctest: +SKIP
>>> outs = pipeline.map_partitions(parts, "work/summary", pipeline.window_summary)  # doctest: +SKIP

* :func:`recommend_partitions` scores every user of a partitioned log with a
  fitted :class:`~stgkern.model.ClosedFormModel`: one pass sums the model's
  item-level counts over the parts (a reduction in part order), then each
  part's users get their top-k (resumable, through :func:`map_partitions`).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from . import data as _data

#: Columns of a partition file, and the loaders' names for them.
_TAOBAO = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]
_NUMERIC = ["user_id", "item_id", "category_id", "timestamp"]
_INTEGER = ["user_id", "item_id", "category_id"]
MANIFEST = "manifest.json"


def _deps():
    try:
        import pandas as pd
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"stgkern.pipeline needs pandas and pyarrow ({exc.name} is missing): "
                          f"pip install 'stgkern[scale]'") from None
    return pd


def user_part(user_ids, n_parts):
    """The part of each user id: a fixed 64-bit hash (the same on every run, machine and
    chunking; ids as their values, numbers and strings alike) modulo ``n_parts``."""
    pd = _deps()
    ids = np.asarray(user_ids)
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    else:
        ids = ids.astype(object)
    return (pd.util.hash_array(ids) % np.uint64(n_parts)).astype(np.int64)


def _chunks(path, fmt, chunk_rows):
    """``(first_line, DataFrame)`` per chunk of ``path``, checked line by line (rows of a Parquet
    file are counted from 1 like lines)."""
    pd = _deps()
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
        return
    if fmt != "taobao":
        raise ValueError(f"format={fmt!r}: the pipeline reads 'taobao' CSV and 'parquet' so far")
    try:
        reader = pd.read_csv(path, header=None, names=_TAOBAO, dtype=str, keep_default_na=False,
                             index_col=False, chunksize=chunk_rows)
        first = 1
        for df in reader:
            df = _data._check_frame(df, path, _TAOBAO, ",", None, _NUMERIC, None, _INTEGER, first)
            _data._labels(df, "behavior_type", _data.TAOBAO_BEHAVIORS, path, first)
            yield first, df
            first += len(df)
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: malformed file ({exc}); expected the columns {_TAOBAO} "
                         f"separated by ','") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file; expected lines of {_TAOBAO} separated by ','") from None


def _parquet_chunks(path, chunk_rows):
    """A Parquet file with the Taobao columns (user_id, item_id, category_id, behavior_type,
    timestamp; ids and times numeric, behaviours pv/cart/fav/buy), ``chunk_rows`` rows at a time."""
    import pyarrow.parquet as pq
    try:
        f = pq.ParquetFile(path)
    except Exception as exc:                       # pyarrow's errors for a file that is not Parquet vary
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in _TAOBAO if c not in f.schema_arrow.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {f.schema_arrow.names} "
                         f"(the pipeline's Parquet input has the columns {_TAOBAO})")
    first = 1
    for batch in f.iter_batches(batch_size=chunk_rows, columns=_TAOBAO):
        df = batch.to_pandas().astype(str)
        df = _data._check_frame(df, path, _TAOBAO, ",", 0, _NUMERIC, None, _INTEGER, first)
        _data._labels(df, "behavior_type", _data.TAOBAO_BEHAVIORS, path, first)
        yield first, df
        first += len(df)


class _Progress:
    """One line on stderr every ``every`` seconds: what is done, the rate and the elapsed time."""

    def __init__(self, label, unit, enabled=True, every=5.0, stream=None):
        self.label, self.unit, self.enabled, self.every = label, unit, enabled, every
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done, total=None, final=False):
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < self.every):
            return
        self.last = now
        el = max(now - self.t0, 1e-9)
        msg = f"{self.label}: {done:,}{'' if total is None else f'/{total:,}'} {self.unit}, {done / el:,.0f}/s"
        if total and not final and done:
            msg += f", ETA {(total - done) * el / done:.0f} s"
        print(msg + (f", {el:.1f} s" if final else ""), file=self.stream, flush=True)


def partition(source, out_dir, n_parts, *, format="taobao", chunk_rows=1_000_000, progress=True):
    """Split the log ``source`` by user into ``n_parts`` parts under ``out_dir/parts``.

    Reads ``chunk_rows`` lines at a time (memory is bounded by the chunk,
    not the log).  Returns the parts folder.  When it already holds a
    finished pass over the same source with the same ``n_parts`` (its
    ``manifest.json``), nothing is read again.

    Parameters
    ----------
    source : str or Path
        The log: ``format="taobao"``, UserBehavior CSV; ``format="parquet"``, a
        Parquet file with the same columns (user_id, item_id, category_id,
        behavior_type, timestamp).
    out_dir : str or Path
    n_parts : int
        Parts to spread users over; each part should fit in memory with room
        for the work done on it.
    chunk_rows : int
        Lines read (and held) at a time.
    """
    pd = _deps()
    n_parts = int(n_parts)
    if n_parts < 1:
        raise ValueError(f"n_parts must be at least 1, got {n_parts}")
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    out_dir = Path(out_dir)
    final = out_dir / "parts"
    stamp = {"source": str(source.resolve()), "size": source.stat().st_size,
             "mtime_ns": source.stat().st_mtime_ns, "format": format, "n_parts": n_parts}
    done = _read_manifest(final)
    if done is not None and all(done.get(k) == v for k, v in stamp.items()):
        return final
    if final.exists():
        raise FileExistsError(f"{final} holds the parts of another source or part count "
                              f"({_describe(done)}); remove it or choose another out_dir")
    tmp = out_dir / ".parts.partial"
    shutil.rmtree(tmp, ignore_errors=True)          # a pass that died: start it again
    for k in range(n_parts):
        (tmp / f"part-{k:05d}").mkdir(parents=True)
    counts = np.zeros(n_parts, np.int64)
    bar = _Progress(f"partition {source.name}", "lines", progress)
    n_chunks = lines = 0
    for first, df in _chunks(source, format, int(chunk_rows)):
        part = user_part(df["user_id"].to_numpy(), n_parts)
        order = np.argsort(part, kind="stable")                # each part's rows in file order
        bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            rows = df.iloc[order[bounds[k]:bounds[k + 1]]]
            rows.to_parquet(tmp / f"part-{k:05d}" / f"chunk-{n_chunks:06d}.parquet", index=False)
            counts[k] += len(rows)
        n_chunks += 1
        lines = first + len(df) - 1
        bar(lines)
    bar(lines, final=True)
    with open(tmp / MANIFEST, "w") as fh:
        json.dump({**stamp, "events": int(counts.sum()), "events_per_part": counts.tolist(), "chunks": n_chunks,
                   "columns": _TAOBAO}, fh, indent=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return final


def _read_manifest(parts_dir):
    try:
        with open(Path(parts_dir) / MANIFEST) as fh:
            return json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _describe(m):
    return "no manifest" if m is None else f"source {m.get('source')}, n_parts {m.get('n_parts')}"


def read_part(parts_dir, k):
    """Part ``k`` of :func:`partition`'s output as an :class:`~stgkern.data.EventLog` (ids dense
    within the part; the original ids in its ``*_ids``; behaviours coded pv, cart, fav, buy)."""
    pd = _deps()
    parts_dir = Path(parts_dir)
    m = _read_manifest(parts_dir)
    if m is None:
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST}; it is not a finished stgkern.pipeline.partition")
    if not 0 <= int(k) < m["n_parts"]:
        raise IndexError(f"part {k} outside [0, {m['n_parts']})")
    files = sorted((parts_dir / f"part-{int(k):05d}").glob("chunk-*.parquet"))
    if files:
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    else:
        df = pd.DataFrame({c: np.zeros(0, np.int64) for c in _TAOBAO}).astype({"behavior_type": str})
    return _data.from_dataframe(df, "user_id", "item_id", "timestamp", "category_id", "behavior_type",
                                behavior_names=_data.TAOBAO_BEHAVIORS)


def map_partitions(parts_dir, out_dir, fn, *, progress=True):
    """``fn(log, k)`` on every part of ``parts_dir``, its DataFrame written as
    ``out_dir/part-<k>.parquet``; returns the output paths in part order.

    Parts whose output exists are skipped: a run that was killed resumes
    where it stopped.  Each output is written under a ``.tmp`` name and
    renamed when complete, so a crash never leaves a half-written part that
    looks finished.
    """
    pd = _deps()
    m = _read_manifest(parts_dir)
    if m is None:
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST}; run stgkern.pipeline.partition first")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outs = [out_dir / f"part-{k:05d}.parquet" for k in range(m["n_parts"])]
    todo = [k for k, p in enumerate(outs) if not p.exists()]
    total = sum(m["events_per_part"][k] for k in todo)
    bar = _Progress(f"{getattr(fn, '__name__', 'fn')} over {len(todo)} of {len(outs)} parts", "events", progress)
    done = 0
    for k in todo:
        res = fn(read_part(parts_dir, k), k)
        if not isinstance(res, pd.DataFrame):
            raise TypeError(f"fn must return a pandas DataFrame for part {k}, got {type(res).__name__}")
        tmp = outs[k].with_name(outs[k].name + ".tmp")
        res.to_parquet(tmp, index=False)
        os.replace(tmp, outs[k])
        done += m["events_per_part"][k]
        bar(done, total)
    bar(done, total, final=True)
    return outs


def window_summary(log, k=None, *, window=8, horizon=86400.0):
    """Per user of ``log``: events, window-graph in-edges (``window``, ``horizon`` seconds) and
    the last event's time -- the same per user whether the log is whole or one part of it."""
    pd = _deps()
    from .construct import window_graph
    if len(log) == 0:
        return pd.DataFrame({"user_id": log.user_ids[:0], "events": np.zeros(0, np.int64),
                             "edges": np.zeros(0, np.int64), "last_time": log.time[:0]})
    g = window_graph(log, window=window, horizon=horizon)
    seg = np.asarray(g.segment_ptr)
    users = log.user[g.perm][seg[:-1]] if len(seg) > 1 else np.zeros(0, np.int64)
    edges = np.add.reduceat(np.diff(g.indptr), seg[:-1]) if g.n_nodes else np.zeros(0, np.int64)
    last = log.time[g.perm][seg[1:] - 1] if len(seg) > 1 else np.zeros(0, log.time.dtype)
    return pd.DataFrame({"user_id": log.user_ids[users], "events": np.diff(seg), "edges": edges,
                         "last_time": last})


def count_partitions(parts_dir, model, *, progress=True):
    """The sum over all parts of ``model.counts(part)`` (item-level transition counts in the
    model's ids), in part order: the reduction the component tables are made from."""
    from .model import add_counts
    m = _read_manifest(parts_dir)
    if m is None:
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST}; run stgkern.pipeline.partition first")
    bar = _Progress(f"item counts over {m['n_parts']} parts", "events", progress)
    total, done, counts = sum(m["events_per_part"]), 0, None
    for k in range(m["n_parts"]):
        c = model.counts(read_part(parts_dir, k))
        counts = c if counts is None else add_counts(counts, c)
        done += m["events_per_part"][k]
        bar(done, total)
    bar(done, total, final=True)
    return counts


def top_k_frame(users, items, scores, k):
    """``ClosedFormModel.recommend``'s arrays as rows ``user_id, rank, item_id, score`` (rank 1 =
    best; a user's -1 padding, where fewer than ``k`` candidates were left, is dropped)."""
    pd = _deps()
    keep = items.ravel() >= 0
    return pd.DataFrame({"user_id": np.repeat(users, k)[keep], "rank": np.tile(np.arange(1, k + 1), len(users))[keep],
                         "item_id": items.ravel()[keep], "score": scores.ravel()[keep]})


def recommend_partitions(parts_dir, out_dir, model, *, k=20, exclude_seen=True, counts=None, progress=True,
                         method="threshold"):
    """Top-``k`` items for every user of a partitioned log: ``out_dir/part-<n>.parquet`` per
    part, rows as :func:`top_k_frame` gives them (original ids).

    ``model`` is a fitted :class:`~stgkern.model.ClosedFormModel` (``fit_closed_form(...,
    return_model=True)``, trained on a sample that fits in memory).  Its component tables
    are set from ``counts`` or, by default, from :func:`count_partitions` (the whole log's
    counts); the caller's model is not changed.  Each part is then scored on its own
    (``method``: :meth:`~stgkern.model.ClosedFormModel.recommend`'s), with memory bounded by
    the part and, for ``"dense"``, 1,024 users' full score rows; a killed run resumes at the
    first part without output (the counting pass runs again: pass ``counts`` to skip it).
    A user's result is the same bits whichever part holds it (tests/test_pipeline.py).
    """
    import copy
    m = copy.copy(model)
    m.with_counts(count_partitions(parts_dir, model, progress=progress) if counts is None else counts)

    def recommend(log, part):
        return top_k_frame(*m.recommend(log, k, exclude_seen=exclude_seen, method=method), k)
    return map_partitions(parts_dir, out_dir, recommend, progress=progress)
