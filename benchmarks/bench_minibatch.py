"""Training the STG-GNN without one graph of the whole log: accuracy against the whole-log
path, and one out-of-core epoch over a partitioned log (time, rate, peak memory).

    python benchmarks/bench_minibatch.py taobao [--graph-users 64] [--seeds 0 1 2]
    python benchmarks/bench_minibatch.py epoch --parts /tmp/pipe10m/parts [--graph-users 1024]

``taobao``: :func:`stgkern.model.fit_torch` on the Taobao sample (the demo's
split and settings), once with the window graph of the whole training log
(``graph_users=None``, the demo's path) and once with groups of
``--graph-users`` users whose graphs are built when their turn comes; test
HR@20 / NDCG@20 per seed, mean and spread.  Needs ``../shared/data``.

``epoch``: :func:`stgkern.pipeline.fit_torch_partitions` for one epoch over
every part of a :func:`stgkern.pipeline.partition` output (e.g. what
``bench_pipeline.py --users 200000`` leaves: 10M events), in a fresh process
whose peak resident memory the kernel reports; events trained a second.

Results go to ``benchmarks/results/minibatch_cpu.json`` (one entry per mode).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAOBAO = ROOT.parent / "shared" / "data" / "taobao_userbehavior" / "UserBehavior_sample.csv"


def _taobao(args):
    import numpy as np

    import stgkern
    from stgkern import model as sm
    if not TAOBAO.exists():
        raise SystemExit(f"{TAOBAO} is absent: the Taobao sample lives in ../shared/data")
    prep = sm.prepare(stgkern.load_taobao(str(TAOBAO)))
    runs = []
    for seed in args.seeds:
        for mode in (None, args.graph_users):
            t0 = time.perf_counter()
            top, beh, info = sm.fit_torch(prep, seed=seed, epochs=args.epochs, graph_users=mode)
            sec = time.perf_counter() - t0
            ev = sm.evaluate(prep, top, beh)
            runs.append({"seed": seed, "graph_users": mode, "seconds": sec, "best_epoch": info["best_epoch"],
                         "epochs_run": info["epochs_run"], "steps": info["steps"],
                         **{k: ev[k] for k in ("HR@20", "NDCG@20", "HR@10", "NDCG@10", "F1")}})
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for mode in (None, args.graph_users):
        sel = [r for r in runs if r["graph_users"] == mode]
        summary["whole log" if mode is None else f"groups of {mode} users"] = {
            k: {"mean": float(np.mean([r[k] for r in sel])), "std": float(np.std([r[k] for r in sel], ddof=1))
                if len(sel) > 1 else 0.0} for k in ("HR@20", "NDCG@20", "seconds")}
    return {"data": str(TAOBAO.relative_to(ROOT.parent)), "events": len(prep.log), "users": int(prep.log.n_users),
            "items": int(prep.n_items), "epochs_cap": args.epochs, "runs": runs, "summary": summary}


def _epoch_child(cfg):
    from stgkern import pipeline
    rec, info = pipeline.fit_torch_partitions(cfg["parts"], epochs=1, patience=1, graph_users=cfg["graph_users"],
                                              batch_size=cfg["batch_size"], progress=True)
    info.pop("settings")
    print(json.dumps(info))


def _epoch(args):
    cfg = {"parts": str(Path(args.parts).resolve()), "graph_users": args.graph_users, "batch_size": args.batch_size}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, __file__, "_epoch_child", json.dumps(cfg)], stdout=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = p.stdout.read().decode()
    if status != 0:
        raise SystemExit(f"the training process failed ({status})")
    info = json.loads(text.strip().splitlines()[-1])
    manifest = json.loads((Path(args.parts) / "manifest.json").read_text())
    out = {"parts_dir": cfg["parts"], "parts": manifest["n_parts"], "events": manifest["events"],
           "graph_users": args.graph_users, "batch_size": args.batch_size, "wall_seconds": wall,
           "peak_rss_mib": ru.ru_maxrss / 1024, **info}
    print(f"one epoch over {manifest['events']:,} events: {wall:.0f} s wall, {info['train_seconds']:.0f} s "
          f"training, {info['events_per_second']:,.0f} events/s, peak {out['peak_rss_mib']:,.0f} MiB; "
          f"validation NDCG@20 {info['valid_NDCG@20']:.4f} over {info['valid_users']} users", flush=True)
    return out


def main(argv=None):
    if argv is None and sys.argv[1:2] == ["_epoch_child"]:
        return _epoch_child(json.loads(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("taobao", "epoch"))
    ap.add_argument("--graph-users", type=int, default=None, help="users per group (taobao: 64, epoch: 1024)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20, help="taobao: the epoch cap (early stopping decides)")
    ap.add_argument("--parts", help="epoch: a partition() output folder")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--note", default="", help="what else ran on the machine")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "minibatch_cpu.json"))
    args = ap.parse_args(argv)
    if args.graph_users is None:
        args.graph_users = 64 if args.mode == "taobao" else 1024
    if args.mode == "epoch" and not args.parts:
        ap.error("epoch needs --parts")
    res = _taobao(args) if args.mode == "taobao" else _epoch(args)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    doc[args.mode] = {**res, "date": time.strftime("%Y-%m-%d %H:%M"), "note": args.note,
                      "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
