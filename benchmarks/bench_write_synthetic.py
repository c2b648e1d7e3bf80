"""The synthetic log at the Taobao UserBehavior log's scale, written to Parquet in parallel
chunks: time, peak memory of the writing process, and the log's shape against the real one's.

    python benchmarks/bench_write_synthetic.py --path /tmp/taobao_scale.parquet [--workers 2] [--keep]

Results in ``benchmarks/results/synthetic_taobao_scale.json``.  The real log
(987,994 users, 4,162,024 items, 9,439 categories, 100,150,807 events) is a
9-day window; the generator's users are not cut by a window, so the span of
each user's events is reported as percentiles.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = {"users": 987_994, "items": 4_162_024, "categories": 9_439, "events": 100_150_807, "days": 9}


def shape(path):
    """Counts, behaviour mix and time spans of a written log (read column by column)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    t = pq.read_table(path, columns=["user_id", "item_id", "category_id", "behavior_type", "timestamp"])
    out = {"events": t.num_rows, **{f"{c}_distinct": len(pc.unique(t[c])) for c in ("user_id", "item_id",
                                                                                   "category_id")}}
    out["behavior_share"] = {d["values"]: d["counts"] / t.num_rows for d in pc.value_counts(t["behavior_type"]).to_pylist()}
    item_events = np.bincount(t["item_id"].to_numpy())
    out["items_with_5_or_more_events"] = int((item_events >= 5).sum())
    out["item_events_top_1pct_share"] = float(np.sort(item_events)[::-1][:len(item_events) // 100].sum()
                                              / item_events.sum())
    u, ts = t["user_id"].to_numpy(), t["timestamp"].to_numpy()
    start = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    span = (np.maximum.reduceat(ts, start) - np.minimum.reduceat(ts, start)) / 86400
    out["user_span_days"] = dict(zip(("p50", "p90", "p99", "max"), np.percentile(span, [50, 90, 99, 100]).round(2).tolist()))
    out["log_span_days"] = float((ts.max() - ts.min()) / 86400)
    out["events_in_the_first_9_days"] = float(np.mean(ts < ts.min() + 9 * 86400))
    return out


def main(argv=None):
    from stgkern import pipeline
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="where to write the Parquet file (about 1.2 GB)")
    ap.add_argument("--workers", type=int, default=None, help="generating processes (default: usable cores)")
    ap.add_argument("--chunk-users", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the file (default: remove it after measuring)")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "synthetic_taobao_scale.json"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    w = pipeline.write_synthetic(args.path, chunk_users=args.chunk_users, workers=args.workers, progress=True,
                                 **pipeline.TAOBAO_SCALE)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res = {"write": {**w, "wall_seconds": wall, "events_per_second": w["events"] / wall,
                     "peak_rss_mib_writer": peak, "peak_rss_mib_largest_worker": workers_peak,
                     "workers": args.workers, "chunk_users": args.chunk_users},
           "shape": shape(args.path), "real_log": REAL, "params": pipeline.TAOBAO_SCALE,
           "date": time.strftime("%Y-%m-%d %H:%M"), "note": args.note,
           "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    if not args.keep:
        os.unlink(args.path)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["write"]), json.dumps(res["shape"]), sep="\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
