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
* :func:`fit_torch_partitions` trains the PyTorch STG-GNN on every part
  without holding the log: parts in a random order, users in groups whose
  window graphs are built when their turn comes; the
  :class:`~stgkern.model.TorchRecommender` it returns scores parts through
  :func:`recommend_partitions` (or :func:`stgkern.dask.recommend`) too.
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


#: Input formats: the loader each mirrors (``stgkern.data``), and its behaviour names.
FORMATS = {"taobao": _data.TAOBAO_BEHAVIORS, "parquet": _data.TAOBAO_BEHAVIORS, "movielens": ("rate",),
           "recbole": ("interact",), "yoochoose": ("click",)}


def _chunks(path, fmt, chunk_rows, categories=None):
    """``(first_line, DataFrame)`` per chunk of ``path``, checked line by line (rows of a Parquet
    file are counted from 1 like lines); columns ``_TAOBAO`` (+ ``value`` where the format has one)."""
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
        return
    if fmt == "movielens":
        yield from _movielens_chunks(path, chunk_rows, categories)
        return
    if fmt == "recbole":
        yield from _recbole_chunks(path, chunk_rows, categories)
        return
    if fmt == "yoochoose":
        yield from _yoochoose_chunks(path, chunk_rows)
        return
    def taobao(df, first):
        df = _data._check_frame(df, path, _TAOBAO, ",", None, _NUMERIC, None, _INTEGER, first)
        _data._labels(df, "behavior_type", _data.TAOBAO_BEHAVIORS, path, first)
        return df
    yield from _checked_csv(path, chunk_rows, None, _TAOBAO, taobao)


def _checked_csv(path, chunk_rows, header, cols, convert, sep=","):
    """``(first_line, convert(df, first_line))`` per ``chunk_rows`` lines of a CSV read as strings
    (``header``: None, or 0 for a header line); a file pandas cannot split into ``cols`` is
    named as malformed or empty."""
    pd = _deps()
    what = ("a header and " if header is not None else "") + f"lines of {cols} separated by {sep!r}"
    try:
        reader = pd.read_csv(path, sep=sep, header=header, names=cols if header is None else None, dtype=str,
                             keep_default_na=False, index_col=False, chunksize=chunk_rows)
        first = 1 if header is None else 2
        for df in reader:
            yield first, convert(df, first)
            first += len(df)
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: malformed file ({exc}); expected {what}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty file; expected {what}") from None


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


def _movielens_chunks(path, chunk_rows, movies=None):
    """MovieLens ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) as the loader reads it
    (:func:`stgkern.data.load_movielens`): behaviour ``rate``, the rating as the value, the
    category a movie's first genre from ``movies`` (``movies.csv``; without it, one category)."""
    pd = _deps()
    cols = ["userId", "movieId", "rating", "timestamp"]
    genre = None if movies is None else _data._movielens_genres(movies)
    def movielens(df, first):
        df = _data._check_frame(df, path, None, ",", 0, cols, cols, cols[:2], first)
        return pd.DataFrame({"user_id": df["userId"].astype(np.int64), "item_id": df["movieId"].astype(np.int64),
                             "category_id": (_data._movie_genres(df["movieId"], genre)
                                             if genre is not None else np.zeros(len(df), np.int64)),
                             "behavior_type": "rate", "timestamp": df["timestamp"],
                             "value": df["rating"].astype(np.float64)})
    yield from _checked_csv(path, chunk_rows, 0, cols, movielens)


def _recbole_chunks(path, chunk_rows, item_path=None):
    """RecBole atomic ``.inter`` (tab-separated, ``name:type`` headers) as
    :func:`stgkern.data.load_recbole` reads it: ids as strings, behaviour ``interact``, the
    rating (where present) as the value, the category the first token of ``item_path``'s first
    token field."""
    pd = _deps()
    cat = None if item_path is None else _data._recbole_categories(item_path)

    def recbole(df, first):
        df.columns = [c.split(":")[0] for c in df.columns]
        for col in ("user_id", "item_id", "timestamp"):
            if col not in df.columns:
                raise ValueError(f"{path}: missing column {col!r}; found {list(df.columns)}")
        num = ["timestamp"] + (["rating"] if "rating" in df.columns else [])
        df = _data._check_frame(df, path, None, "\t", 0, num, ["user_id", "item_id", "timestamp"], (), first)
        out = {"user_id": df["user_id"], "item_id": df["item_id"],
               "category_id": df["item_id"].map(cat).fillna("") if cat is not None else np.zeros(len(df), np.int64),
               "behavior_type": "interact", "timestamp": df["timestamp"]}
        if "rating" in df.columns:
            out["value"] = df["rating"].astype(np.float64)
        return pd.DataFrame(out)
    yield from _checked_csv(path, chunk_rows, 0, ["user_id", "item_id", "timestamp"], recbole, sep="\t")


def _yoochoose_chunks(path, chunk_rows):
    """YOOCHOOSE as :func:`stgkern.data.load_yoochoose` reads it: GRU4Rec's ``SessionId, ItemId,
    Time`` (tab or comma, with that header) or the raw ``clicks.dat`` (session, ISO time, item,
    category); sessions are the users, behaviour ``click``."""
    pd = _deps()
    with open(path) as fh:
        head = fh.readline()
    sep = "\t" if "\t" in head else ","
    if head.startswith("SessionId"):
        cols = ["SessionId", "ItemId", "Time"]

        def gru4rec(df, first):
            df = _data._check_frame(df, path, None, sep, 0, cols, cols, (), first)
            return pd.DataFrame({"user_id": df["SessionId"], "item_id": df["ItemId"],
                                 "category_id": np.zeros(len(df), np.int64), "behavior_type": "click",
                                 "timestamp": df["Time"]})
        yield from _checked_csv(path, chunk_rows, 0, cols, gru4rec, sep=sep)
        return
    cols = ["session", "timestamp", "item", "category"]

    def clicks(df, first):
        df = _data._check_frame(df, path, cols, sep, None, ("session", "item"), ("session", "timestamp", "item"), (),
                                first)
        return pd.DataFrame({"user_id": df["session"], "item_id": df["item"], "category_id": df["category"],
                             "behavior_type": "click", "timestamp": _data._iso_seconds(df["timestamp"], path, first)})
    yield from _checked_csv(path, chunk_rows, None, cols, clicks, sep=sep)


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


#: Planning figure for :func:`plan_parts`: resident bytes per event of a part while it is scored
#: or trained on, besides the model.  Measured: a 1.56M-event part of the 100M benchmark peaked
#: at 4.3 GiB scoring with a 1.7 GB model (~1.7 kB an event), one 10M-event training epoch at
#: 874 MiB with groups of 1,024 users; rounded up.
BYTES_PER_EVENT = 2048


def estimate_events(source, format="taobao"):
    """The events in ``source``: a Parquet file's row count, or a CSV's size over the mean
    line length of its first MiB."""
    source = Path(source)
    if format == "parquet":
        import pyarrow.parquet as pq
        return int(pq.ParquetFile(source).metadata.num_rows)
    size = source.stat().st_size
    with open(source, "rb") as fh:
        head = fh.read(1 << 20)
    lines = head.count(b"\n")
    return int(size / (len(head) / lines)) if lines else 1


def plan_parts(source, memory_budget=None, *, format="taobao", bytes_per_event=BYTES_PER_EVENT):
    """Parts to split ``source`` into so that one part's work fits ``memory_budget`` bytes
    (default: half the memory available now): ``ceil(events * bytes_per_event / budget)``,
    at least 1.  The model's own size comes on top (the 100M benchmark's: 1.7 GB)."""
    from ._validate import available_memory
    budget = available_memory() // 2 if memory_budget is None else int(memory_budget)
    if budget < 1:
        raise ValueError(f"memory_budget must be positive, got {memory_budget}")
    return max(1, -(-estimate_events(source, format) * int(bytes_per_event) // budget))


def partition(source, out_dir, n_parts=None, *, format="taobao", categories=None, chunk_rows=1_000_000,
              memory_budget=None, progress=True):
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
        behavior_type, timestamp); ``format="movielens"``, a ``ratings.csv``
        (``categories``: its ``movies.csv``, the first genre is the category),
        read as :func:`stgkern.data.load_movielens` reads it; ``"recbole"``, an
        ``.inter`` file (``categories``: its ``.item`` file); ``"yoochoose"``,
        GRU4Rec's ``SessionId, ItemId, Time`` or the raw ``clicks.dat`` (each
        as its loader in :mod:`stgkern.data` reads it).
    out_dir : str or Path
    n_parts : int, optional
        Parts to spread users over; each part should fit in memory with room
        for the work done on it.  Default: :func:`plan_parts` for
        ``memory_budget`` bytes (default: half the memory available now).
    chunk_rows : int
        Lines read (and held) at a time.
    """
    pd = _deps()
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    source = Path(source)
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: the pipeline reads {list(FORMATS)}")
    # checked before any reading: the fast Taobao reader never looks at categories
    if categories is not None and format not in ("movielens", "recbole"):
        raise ValueError(f"format={format!r} carries categories in the log itself; categories= applies "
                         f"to movielens (movies.csv) and recbole (.item) only")
    if n_parts is not None and int(n_parts) < 1:
        raise ValueError(f"n_parts must be at least 1, got {n_parts}")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    n_parts = plan_parts(source, memory_budget, format=format) if n_parts is None else int(n_parts)
    out_dir = Path(out_dir)
    final = out_dir / "parts"
    stamp = {"source": str(source.resolve()), "size": source.stat().st_size,
             "mtime_ns": source.stat().st_mtime_ns, "format": format, "n_parts": n_parts,
             "categories": None if categories is None else str(Path(categories).resolve())}
    done = _read_manifest(final)
    if done is not None and all(done.get(k) == v for k, v in stamp.items()):
        return final
    if final.exists():
        raise FileExistsError(f"{final} holds the parts of another source or part count "
                              f"({_describe(done)}); remove it or choose another out_dir")
    tmp = out_dir / ".parts.partial"
    bar = _Progress(f"partition {source.name}", "lines", progress)
    try:
        # the Taobao CSV: Arrow's typed reader, which takes only lines that pass every check
        chunks = _taobao_arrow_chunks(source, int(chunk_rows)) if format == "taobao" else None
        counts, n_chunks, lines, columns = _spread(chunks, tmp, n_parts, bar) if chunks is not None else (None,) * 4
    except _NotClean:
        counts = None
    if counts is None:          # other formats, or a line Arrow did not take: the checked reader names it
        counts, n_chunks, lines, columns = _spread(_chunks(source, format, int(chunk_rows), categories), tmp,
                                                   n_parts, bar)
    bar(lines, final=True)
    with open(tmp / MANIFEST, "w") as fh:
        json.dump({**stamp, "events": int(counts.sum()), "events_per_part": counts.tolist(), "chunks": n_chunks,
                   "columns": columns,
                   "behaviors": list(FORMATS[format])}, fh, indent=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return final


class _NotClean(Exception):
    """Arrow's fast reader met a line it does not take as is: read the file with the checked reader."""


def _taobao_arrow_chunks(path, chunk_rows):
    """``(first_line, Table)`` per ~``chunk_rows`` lines of a Taobao CSV, typed by Arrow's reader,
    or :class:`_NotClean` at the first block holding anything the checked reader
    (:func:`_chunks`) would reject or convert differently: an empty field, a non-integer id,
    a non-finite time, an unknown behaviour, a line with the wrong field count, a header."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    types = {"user_id": pa.int64(), "item_id": pa.int64(), "category_id": pa.int64(),
             "behavior_type": pa.string(), "timestamp": pa.float64()}
    labels = pa.array(_data.TAOBAO_BEHAVIORS, pa.string())
    def checked(t):
        if any(t[c].null_count for c in _TAOBAO) or pc.index_in(t["behavior_type"], labels).null_count:
            raise _NotClean
        ts = t["timestamp"]
        if not pc.all(pc.is_finite(ts)).as_py():
            raise _NotClean
        if pc.all(pc.equal(pc.floor(ts), ts)).as_py() and pc.max(pc.abs(ts)).as_py() < 2.0 ** 53:
            t = t.set_column(4, "timestamp", pc.cast(ts, pa.int64()))     # whole seconds, as pandas reads them
        return t

    block = int(min(8 << 20, max(1 << 16, 40 * chunk_rows)))
    try:
        reader = pcsv.open_csv(path, read_options=pcsv.ReadOptions(column_names=_TAOBAO, block_size=block),
                               convert_options=pcsv.ConvertOptions(column_types=types, strings_can_be_null=False))
        pending, first = None, 1
        for batch in reader:
            b = pa.Table.from_batches([batch])
            pending = b if pending is None else pa.concat_tables([pending, b])
            while pending.num_rows >= chunk_rows:
                t = checked(pending.slice(0, chunk_rows).combine_chunks())
                pending = pending.slice(chunk_rows)
                yield first, t
                first += t.num_rows
        if pending is not None and pending.num_rows:
            yield first, checked(pending.combine_chunks())
    except pa.ArrowInvalid:
        raise _NotClean from None


def _spread(chunks, tmp, n_parts, bar):
    """Write each chunk's rows to the staging folder ``tmp``, part by part (file order kept
    within a part); returns ``(events per part, chunks, last line, the chunks' columns)``."""
    import pyarrow as pa
    shutil.rmtree(tmp, ignore_errors=True)          # a pass that died, or a fast pass given up: start again
    for k in range(n_parts):
        (tmp / f"part-{k:05d}").mkdir(parents=True)
    counts = np.zeros(n_parts, np.int64)
    n_chunks = lines = 0
    columns = None
    for first, t in chunks:
        if not isinstance(t, pa.Table):
            t = pa.Table.from_pandas(t, preserve_index=False)
        columns = columns or t.column_names
        part = user_part(t["user_id"].to_numpy(), n_parts)
        order = np.argsort(part, kind="stable")                # each part's rows in file order
        bounds = np.searchsorted(part[order], np.arange(n_parts + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            rows = t.take(pa.array(order[bounds[k]:bounds[k + 1]]))
            _write_rows(rows, tmp / f"part-{k:05d}" / f"chunk-{n_chunks:06d}.parquet")
            counts[k] += rows.num_rows
        n_chunks += 1
        lines = first + t.num_rows - 1
        bar(lines)
    return counts, n_chunks, lines, columns or list(_TAOBAO)


def _write_rows(table, path):
    import pyarrow.parquet as pq
    pq.write_table(table, path)


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
    within the part; the original ids in its ``*_ids``; behaviours coded as the format's loader
    codes them: Taobao's pv, cart, fav, buy).  ``k`` may be a list of parts: one log of them all."""
    pd = _deps()
    parts_dir = Path(parts_dir)
    m = _read_manifest(parts_dir)
    if m is None:
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST}; it is not a finished stgkern.pipeline.partition")
    ks = [int(j) for j in np.atleast_1d(k)]
    for j in ks:
        if not 0 <= j < m["n_parts"]:
            raise IndexError(f"part {j} outside [0, {m['n_parts']})")
    files = [f for j in ks for f in sorted((parts_dir / f"part-{j:05d}").glob("chunk-*.parquet"))]
    columns = m.get("columns", _TAOBAO)
    names = tuple(m.get("behaviors", _data.TAOBAO_BEHAVIORS))
    if not files:
        df = pd.DataFrame({c: np.zeros(0, np.int64) for c in columns}).astype({"behavior_type": str})
        return _data.from_dataframe(df, "user_id", "item_id", "timestamp", "category_id", "behavior_type",
                                    "value" if "value" in columns else None, behavior_names=names)
    # one Arrow table of the part's chunk files, columns straight to NumPy; the behaviour labels
    # (checked when the part was written) coded by Arrow's hash lookup rather than as Python strings
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    codes = pc.index_in(pc.cast(t["behavior_type"], pa.string()), value_set=pa.array(names, pa.string()))
    if codes.null_count:
        bad = t["behavior_type"].filter(pc.is_null(codes))[0].as_py()
        raise ValueError(f"{parts_dir}: part(s) {ks} hold the behaviour {bad!r}, not one of {list(names)}")
    col = lambda c: t[c].to_numpy()
    return _data.EventLog.from_arrays(col("user_id"), col("item_id"), col("timestamp"), col("category_id"),
                                      codes.to_numpy().astype(np.int8),
                                      col("value") if "value" in columns else None, names)


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
        try:
            res.to_parquet(tmp, index=False)
        except BaseException:
            tmp.unlink(missing_ok=True)             # a full disk: no stray half file (the rerun rewrites it)
            raise
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

    ``model`` is a :class:`~stgkern.model.TorchRecommender` (:func:`fit_torch_partitions`),
    whose parts are scored as they are, or a fitted
    :class:`~stgkern.model.ClosedFormModel` (``fit_closed_form(...,
    return_model=True)``, trained on a sample that fits in memory).  Its component tables
    are set from ``counts`` or, by default, from :func:`count_partitions` (the whole log's
    counts); the caller's model is not changed.  Each part is then scored on its own
    (``method``: :meth:`~stgkern.model.ClosedFormModel.recommend`'s), with memory bounded by
    the part and, for ``"dense"``, 1,024 users' full score rows; a killed run resumes at the
    first part without output (the counting pass runs again: pass ``counts`` to skip it).
    A user's result is the same bits whichever part holds it, given the same number of BLAS
    threads (tests/test_pipeline.py; docs/scale.md says why).
    """
    import copy

    from .model import TorchRecommender
    if isinstance(model, TorchRecommender):
        def recommend(log, part):
            return top_k_frame(*model.recommend(log, k, exclude_seen=exclude_seen), k)
        return map_partitions(parts_dir, out_dir, recommend, progress=progress)
    m = copy.copy(model)
    m.with_counts(count_partitions(parts_dir, model, progress=progress) if counts is None else counts)

    def recommend(log, part):
        return top_k_frame(*m.recommend(log, k, exclude_seen=exclude_seen, method=method), k)
    return map_partitions(parts_dir, out_dir, recommend, progress=progress)


def catalogue(parts_dir, *, progress=True):
    """One pass over the parts (a reduction in part order): every item's event count and
    category (its first event's, in part order), the categories, the behaviour counts.

    Returns ``{"item_ids", "item_events", "item_category_ids", "category_ids",
    "behavior_events", "events", "users"}`` (ids original and sorted).
    """
    m = _read_manifest(parts_dir)
    if m is None:
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST}; run stgkern.pipeline.partition first")
    bar = _Progress(f"catalogue over {m['n_parts']} parts", "events", progress)
    ids = np.zeros(0, np.int64)
    cnt = np.zeros(0, np.int64)
    cat = np.zeros(0, np.int64)
    beh = np.zeros(len(m.get("behaviors", _data.TAOBAO_BEHAVIORS)), np.int64)
    total, done, users = sum(m["events_per_part"]), 0, 0
    for k in range(m["n_parts"]):
        log = read_part(parts_dir, k)
        _, row = np.unique(log.item, return_index=True)              # each item's first row (file order)
        first = log.category_ids[log.category[row]]
        all_ids = np.concatenate([ids, log.item_ids])
        u, at, inv = np.unique(all_ids, return_index=True, return_inverse=True)   # earlier parts first
        cnt = np.bincount(inv, weights=np.concatenate([cnt, np.bincount(log.item, minlength=log.n_items)]),
                          minlength=len(u)).astype(np.int64)
        cat = np.concatenate([cat, first])[at]
        ids = u
        beh += np.bincount(log.behavior, minlength=len(beh))
        users += int(len(np.unique(log.user)))
        done += len(log)
        bar(done, total)
    bar(done, total, final=True)
    return {"item_ids": ids, "item_events": cnt, "item_category_ids": cat,
            "category_ids": np.unique(cat), "behavior_events": beh, "events": int(done), "users": users}


def fit_torch_partitions(parts_dir, *, min_item_events=5, valid_users=2000, graph_users=1024, epochs=5,
                         patience=2, batch_size=32, lr=0.005, weight_decay=0.0, dropout=0.2, n_negatives=1024,
                         behavior_weight=0.5, new_items_only=True, dim=64, conv="stgconv", seq_len=50,
                         n_blocks=1, heads=1, tau=3600.0, window=8, horizon=86400.0, category_window=2,
                         seed=0, progress=True):
    """Train the spatio-temporal GNN (:func:`stgkern.model.build_stg_model`) on a partitioned
    log without holding it: part by part, ``graph_users`` users at a time.

    * :func:`catalogue` counts the items once; the model ranks the items with
      at least ``min_item_events`` events (the rest share one extra "other"
      item that feeds states but is never a target or a recommendation).
    * Validation: the last event of up to ``valid_users`` users of part 0
      (with 3 events or more) is held out of training and predicted from
      their earlier events, their items excluded; early stopping on its
      NDCG@20 (``patience`` epochs), best weights restored.
    * Each epoch visits the parts in a new random order; within a part the
      users in a new random order, ``graph_users`` at a time; each group's
      window graph and features are built when its turn comes
      (:class:`~stgkern.model._SegmentData`, the same inputs as the whole
      log's) and its segments are trained on in random order,
      ``batch_size`` a step, with :func:`~stgkern.model.fit_torch`'s loss.
      Memory is one part's events plus one group's graph.

    Returns ``(recommender, info)``: a :class:`~stgkern.model.TorchRecommender`
    (score any log's users with it, or every user of the parts with
    :func:`recommend_partitions`) and the training record (curve, steps,
    events trained a second).
    """
    from . import metrics as M
    from . import model as sm
    torch = sm._torch()
    if int(graph_users) < 1:
        raise ValueError(f"graph_users must be at least 1, got {graph_users}")
    m = _read_manifest(parts_dir)
    if m is None:
        raise FileNotFoundError(f"{parts_dir}: no {MANIFEST}; run stgkern.pipeline.partition first")
    t0 = time.perf_counter()
    cat = catalogue(parts_dir, progress=progress)
    keep = cat["item_events"] >= int(min_item_events)
    if not keep.any():
        raise ValueError(f"no item has {min_item_events} events or more; lower min_item_events")
    item_ids, category_ids = cat["item_ids"][keep], cat["category_ids"]
    item_category = np.searchsorted(category_ids, cat["item_category_ids"][keep])
    n_items, n_behaviors = len(item_ids), len(cat["behavior_events"])
    prior = sm.behavior_shares(None, counts=cat["behavior_events"])
    settings = dict(dim=dim, conv=conv, tau=tau, dropout=dropout, seq_len=seq_len, n_blocks=n_blocks, heads=heads,
                    window=window, horizon=horizon, category_window=category_window)
    torch.manual_seed(seed)
    net = sm.TorchRecommender.build(settings, n_items, len(category_ids), n_behaviors, item_category)
    rec = sm.TorchRecommender(model=net, settings=settings, item_ids=item_ids, category_ids=category_ids,
                              item_category=item_category, n_behaviors=n_behaviors, prior=prior,
                              graph_users=graph_users)
    q = np.append(cat["item_events"][keep].astype(np.float64) ** 0.75, 0.0)     # "other" is never drawn
    net.sample_q = torch.tensor(q / q.sum(), dtype=torch.float32)

    # validation: part 0's first users with >= 3 events, their last event held out
    lg0 = rec.to_model_ids(read_part(parts_dir, 0))
    n_ev = np.bincount(lg0.user, minlength=lg0.n_users)
    vusers = np.flatnonzero(n_ev >= 3)[:int(valid_users)]
    vlast = sm.last_rows(lg0, vusers)
    known = lg0.item[vlast] < n_items                      # a target outside the catalogue cannot be hit
    vusers, vlast = vusers[known], vlast[known]
    if len(vusers) == 0:
        raise ValueError("part 0 has no user with 3 events or more whose last item is in the catalogue: "
                         "nothing to validate on")
    held = np.zeros(len(lg0), bool)
    held[vlast] = True
    vtarget = lg0.item[vlast]
    vlog = sm.sub_log(lg0.take(~held), vusers)
    vseen = sm._seen(vlog, vusers, n_items + 1)[:, :n_items]
    del lg0

    def load(k):
        lg = rec.to_model_ids(read_part(parts_dir, k))
        return lg.take(~held) if k == 0 else lg

    trainer = sm._SequenceTrainer(net, n_items=n_items + 1, n_behaviors=n_behaviors,
                                  behavior_counts=cat["behavior_events"], behavior_weight=behavior_weight,
                                  new_items_only=new_items_only, n_negatives=n_negatives,
                                  max_events_per_user=None, seed=seed, ignore_item=n_items)

    def groups(rng):
        for k in rng.permutation(m["n_parts"]):
            for _, sub in sm.user_groups(load(int(k)), rng, int(graph_users)):
                yield sub

    steps = int(cat["events"] / seq_len + cat["users"]) // batch_size + 1
    epoch = trainer.groups_epoch(groups, rec.make_data, prior, int(batch_size), steps)
    curve_hr = []

    def valid_score():
        H = sm.user_states(net, rec.make_data, vlog, vusers, prior=prior, graph_users=graph_users)[0]
        idx, _ = rec.rank(H, sm.KS[-1], vseen)
        curve_hr.append(M.hit_rate(idx, vtarget, sm.KS[-1]))
        return M.ndcg(idx, vtarget, sm.KS[-1])

    bar = _Progress("train", "steps", progress)
    t1 = time.perf_counter()
    fit = sm._fit_loop(net, epoch, trainer.loss, valid_score, epochs=int(epochs), patience=int(patience), lr=lr,
                       weight_decay=weight_decay, seed=seed, progress=lambda s, t: bar(s, t))
    seconds = time.perf_counter() - t1
    bar(fit["steps"], fit["steps"], final=True)
    for c, hr in zip(fit["train_curve"], curve_hr):
        c["valid_HR@20"] = hr
    trained = cat["events"] - len(vusers)
    fit.update({"valid_NDCG@20": fit.pop("valid_score"), "valid_users": int(len(vusers)), "items": n_items,
                "categories": int(len(category_ids)), "events": cat["events"], "users": cat["users"],
                "train_seconds": seconds, "catalogue_seconds": t1 - t0,
                "events_per_second": trained * fit["epochs_run"] / seconds, "graph_users": int(graph_users),
                "settings": settings})
    return rec, fit


#: The Taobao sample's scale (UserBehavior: 987,994 users, 4,162,024 items, 9,439 categories,
#: 100,150,807 events over 9 days): ``write_synthetic(path, **TAOBAO_SCALE)`` writes a log that size.
TAOBAO_SCALE = dict(n_users=987_994, n_items=4_162_024, n_categories=9_439, events_per_user=101.4)


def _synthetic_chunk(kwargs, lo, hi):
    """Users ``[lo, hi)`` of ``synthetic_log(**kwargs)`` in the pipeline's Taobao columns."""
    log = _data.synthetic_log(users=range(lo, hi), **kwargs)
    df = log.to_dataframe()
    return df.rename(columns={"behavior": "behavior_type", "time": "timestamp"})[_TAOBAO]


def write_synthetic(path, n_users, *, format="parquet", chunk_users=20_000, workers=None, seed=0,
                    progress=True, **kwargs):
    """Write ``stgkern.synthetic_log(n_users=n_users, seed=seed, **kwargs)`` to ``path``, a chunk
    of ``chunk_users`` users at a time, in bounded memory and in parallel.

    Every user's events depend on ``(seed, user)`` alone, so the chunks,
    generated by ``workers`` spawned processes (default: one per usable
    core; 0 generates in this process) and written in user order, make
    exactly the whole log.  Memory: about two chunks per worker.  The file is
    written as ``path`` + ``.partial`` and renamed when complete.

    ``format="parquet"`` writes the pipeline's Parquet columns (user_id,
    item_id, category_id, behavior_type, timestamp); ``"taobao"``, a
    UserBehavior CSV.  ``TAOBAO_SCALE`` holds the real log's size:
    ``write_synthetic(path, **TAOBAO_SCALE)`` is a 100M-event log.

    Returns ``{"events", "users", "bytes", "seconds"}``.
    """
    pd = _deps()
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from ._workers import usable_cores
    if format not in ("parquet", "taobao"):
        raise ValueError(f"format={format!r}: write_synthetic writes 'parquet' or 'taobao'")
    n_users, chunk_users = int(n_users), int(chunk_users)
    if n_users < 1 or chunk_users < 1:
        raise ValueError(f"n_users and chunk_users must be at least 1, got {n_users} and {chunk_users}")
    workers = usable_cores() if workers is None else int(workers)
    kwargs = dict(kwargs, n_users=n_users, seed=seed)
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    bounds = [(a, min(n_users, a + chunk_users)) for a in range(0, n_users, chunk_users)]
    bar = _Progress(f"write {path.name}", "users", progress)
    t0 = time.perf_counter()
    events = 0
    writer = None
    fh = open(tmp, "wb") if format == "taobao" else None
    try:
        def write(df):
            nonlocal writer, events
            table = pa.Table.from_pandas(df, preserve_index=False)
            if format == "taobao":        # Arrow's CSV writer: pandas' to_csv took most of the time
                pcsv.write_csv(table, fh, write_options=pcsv.WriteOptions(include_header=False,
                                                                          quoting_style="none"))
            else:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            events += len(df)

        if workers == 0:
            for lo, hi in bounds:
                write(_synthetic_chunk(kwargs, lo, hi))
                bar(hi, n_users)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                pending = {}
                nxt = 0
                for i, (lo, hi) in enumerate(bounds):
                    pending[i] = pool.submit(_synthetic_chunk, kwargs, lo, hi)
                    while len(pending) > 2 * workers or (i == len(bounds) - 1 and pending):
                        write(pending.pop(nxt).result())          # in user order
                        bar(bounds[nxt][1], n_users)
                        nxt += 1
        if format == "taobao":
            fh.close()
        elif writer is None:                                       # no events at all
            pq.write_table(pa.Table.from_pandas(pd.DataFrame({c: [] for c in _TAOBAO})), tmp)
        else:
            writer.close()
    except BaseException:
        if fh is not None:
            fh.close()
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    bar(n_users, n_users, final=True)
    return {"events": events, "users": n_users, "bytes": path.stat().st_size, "seconds": time.perf_counter() - t0}
