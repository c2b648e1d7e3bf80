"""The out-of-core pipeline end to end on a synthetic log of any size: time, rate and peak memory per stage.

    python benchmarks/bench_pipeline.py --users 200000 --work /tmp/stg-pipe \\
        [--events-per-user 50] [--parts 64] [--train-parts 1] [--out benchmarks/results/pipeline_cpu.json]

Stages, each in a fresh process (its peak resident memory comes from the
kernel's accounting of that process alone):

1. ``write``: :func:`stgkern.pipeline.write_synthetic`, ``synthetic_log``
   generated ``--chunk-users`` users at a time (in ``--write-workers``
   processes; 0: in the stage's own) and appended to a Taobao UserBehavior
   CSV (memory bounded by the chunks: the way to a 100M-event log on a
   small machine);
2. ``copy``: the CSV copied by ``shutil.copyfile``, the disk's own rate, as
   the peer the partition pass is measured against;
3. ``partition``: :func:`stgkern.pipeline.partition`;
4. ``fit``: the closed-form model on the users of the first ``--train-parts`` parts;
5. ``recommend``: :func:`stgkern.pipeline.recommend_partitions` (the counting
   pass and top-20 for every user, by the closed form's threshold top-k);
6. with ``--dense-peer``, ``recommend_dense``: the same with every score of
   every item formed (``method="dense"``), the peer of stage 5; the two
   outputs are compared row for row;
7. with ``--dask-workers N``, ``dask``: :func:`stgkern.dask.recommend` from the
   CSV on a ``LocalCluster`` of N one-thread worker processes (its own read,
   shuffle by user, counting and scoring), against stages 3 + 5 of the single
   process; its rows are compared with stage 5's.

The log's own size in memory (an EventLog: 41 bytes an event) is printed
beside each stage's peak, to show what bounds it.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _stage(name, cfg):
    import numpy as np

    import stgkern
    from stgkern import model as sm
    from stgkern import pipeline
    work = Path(cfg["work"])
    csv = work / "log.csv"
    out = {}
    if name == "write":
        csv.unlink(missing_ok=True)
        w = pipeline.write_synthetic(csv, cfg["users"], format="taobao", chunk_users=cfg["chunk_users"],
                                     workers=cfg.get("write_workers", 0), seed=0, progress=False,
                                     n_items=cfg["items"], n_categories=cfg["categories"],
                                     events_per_user=cfg["events_per_user"])
        out = {"events": w["events"], "bytes": w["bytes"]}
    elif name == "copy":
        shutil.copyfile(csv, work / "copy.csv")
        (work / "copy.csv").unlink()
        out = {"bytes": csv.stat().st_size}
    elif name == "partition":
        shutil.rmtree(work / "parts", ignore_errors=True)
        pipeline.partition(csv, work, cfg["parts"], chunk_rows=cfg["chunk_rows"], progress=False)
    elif name == "fit":
        import pandas as pd
        parts = work / "parts"
        df = pd.concat([pipeline.read_part(parts, k).to_dataframe() for k in range(cfg["train_parts"])],
                       ignore_index=True)
        log = stgkern.from_dataframe(df, "user_id", "item_id", "time", "category_id", "behavior",
                                     behavior_names=stgkern.data.TAOBAO_BEHAVIORS)
        prep = sm.prepare(log)
        *_, model = sm.fit_closed_form(prep, return_model=True)
        with open(work / "model.pkl", "wb") as fh:
            pickle.dump(model, fh)
        out = {"train_events": len(prep.log), "train_users": int(prep.log.n_users), "items": int(prep.n_items)}
    elif name == "recommend":
        with open(work / "model.pkl", "rb") as fh:
            model = pickle.load(fh)
        method = cfg.get("method", "threshold")     # "dense", the peer: every score of every item
        dest = work / ("recommendations" if method == "threshold" else f"recommendations_{method}")
        shutil.rmtree(dest, ignore_errors=True)
        outs = pipeline.recommend_partitions(work / "parts", dest, model, k=20, progress=False, method=method)
        import pandas as pd
        out = {"users_scored": int(sum(pd.read_parquet(o, columns=["user_id"])["user_id"].nunique() for o in outs))}
    elif name == "dask":
        import resource

        from distributed import Client, LocalCluster

        from stgkern import dask as sdask
        with open(work / "model.pkl", "rb") as fh:
            model = pickle.load(fh)
        shutil.rmtree(work / "dask", ignore_errors=True)
        with LocalCluster(n_workers=cfg["dask_workers"], threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            sdask.recommend(csv, model, work / "dask", client=client, npartitions=cfg["parts"])
        out = {"workers": cfg["dask_workers"],
               "largest_worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    print(json.dumps(out))


def _same_lists(a, b):
    """Whether two recommendation folders hold the same (user, rank, item) rows, scores within 1e-9."""
    import numpy as np
    import pandas as pd
    key = ["user_id", "rank"]
    x, y = (pd.concat([pd.read_parquet(p) for p in sorted(Path(d).glob("*.parquet"))]).sort_values(key)
            .reset_index(drop=True) for d in (a, b))
    return bool(len(x) == len(y) and (x[key + ["item_id"]].to_numpy() == y[key + ["item_id"]].to_numpy()).all()
                and np.allclose(x["score"], y["score"], rtol=1e-9, atol=1e-12))


def _run(name, cfg, label=None):
    """Run one stage in a fresh process; its wall time, peak RSS (MiB) and output."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, __file__, "_stage", name, json.dumps(cfg)], stdout=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = p.stdout.read().decode()
    if status != 0:
        raise SystemExit(f"stage {name} failed ({status})")
    rec = {"seconds": wall, "peak_rss_mib": ru.ru_maxrss / 1024, **json.loads(text.strip().splitlines()[-1])}
    print(f"{label or name:15s} {wall:8.1f} s   peak {rec['peak_rss_mib']:8.0f} MiB   {text.strip().splitlines()[-1]}",
          flush=True)
    return rec


def main(argv=None):
    if argv is None and sys.argv[1:2] == ["_stage"]:
        return _stage(sys.argv[2], json.loads(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--events-per-user", type=float, default=50.0)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--categories", type=int, default=500)
    ap.add_argument("--parts", type=int, default=64)
    ap.add_argument("--train-parts", type=int, default=1)
    ap.add_argument("--chunk-users", type=int, default=20_000)
    ap.add_argument("--chunk-rows", type=int, default=1_000_000)
    ap.add_argument("--write-workers", type=int, default=0,
                    help="processes generating the log's chunks in parallel (0: the write stage's own)")
    ap.add_argument("--work", required=True, help="scratch folder (the CSV and the parts go here)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pipeline_cpu.json"))
    ap.add_argument("--dense-peer", action="store_true",
                    help="also run the recommend stage the dense way (every score of every item), the peer "
                         "the default threshold top-k is measured against; its lists are compared")
    ap.add_argument("--dask-workers", type=int, default=0,
                    help="also run stgkern.dask.recommend from the CSV on a LocalCluster of this many "
                         "one-thread worker processes (read, shuffle by user, count, score), against "
                         "the single process's partition + recommend; the rows are compared")
    ap.add_argument("--note", default="", help="what else ran on the machine, and anything a reader must know")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = {"work": str(work), "users": args.users, "events_per_user": args.events_per_user, "items": args.items,
           "categories": args.categories, "parts": args.parts, "train_parts": args.train_parts,
           "chunk_users": args.chunk_users, "chunk_rows": args.chunk_rows, "dask_workers": args.dask_workers,
           "write_workers": args.write_workers}
    stages = {name: _run(name, cfg) for name in ("write", "copy", "partition", "fit", "recommend")}
    if args.dask_workers:
        stages["dask"] = _run("dask", cfg)
        stages["dask"]["same_rows"] = _same_lists(work / "recommendations", work / "dask" / "recommendations")
    if args.dense_peer:
        stages["recommend_dense"] = _run("recommend", {**cfg, "method": "dense"}, "recommend_dense")
        stages["recommend_dense"]["same_lists"] = _same_lists(work / "recommendations", work / "recommendations_dense")
    events = stages["write"]["events"]
    mb = stages["write"]["bytes"] / 2 ** 20
    summary = {
        "events": events, "csv_mib": mb, "log_in_memory_mib": events * 41 / 2 ** 20,
        "events_per_s": {k: events / v["seconds"] for k, v in stages.items() if k in ("write", "partition",
                                                                                     "recommend")},
        "partition_vs_copy": stages["copy"]["seconds"] / stages["partition"]["seconds"],
        **({"recommend_speedup_vs_dense": stages["recommend_dense"]["seconds"] / stages["recommend"]["seconds"]}
           if "recommend_dense" in stages else {}),
        **({"dask_vs_single_process": stages["dask"]["seconds"]
            / (stages["partition"]["seconds"] + stages["recommend"]["seconds"])} if "dask" in stages else {}),
        "copy_mib_per_s": mb / stages["copy"]["seconds"],
    }
    print(f"{events:,} events ({mb:,.0f} MiB of CSV, {summary['log_in_memory_mib']:,.0f} MiB as an EventLog); "
          f"partition at {summary['events_per_s']['partition']:,.0f} events/s "
          f"({summary['partition_vs_copy']:.3f} x the copy's rate, {summary['copy_mib_per_s']:,.0f} MiB/s)")
    res = {"config": cfg, "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
           "date": time.strftime("%Y-%m-%d %H:%M"), "note": args.note, "stages": stages, "summary": summary}
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc.setdefault("runs", {})[f"{events:,} events"] = res   # one entry per log size; a rerun replaces it
    out.write_text(json.dumps(doc, indent=1) + "\n")        # other keys (earlier runs kept by hand) stay
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
