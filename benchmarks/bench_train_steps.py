"""Training-step time of the demo's three neural models on MovieLens latest-small, against another checkout.

    python benchmarks/bench_train_steps.py [--base PATH] [--epochs 3] [--reps 3] [--json OUT]

Each model (SR-GNN-style, SASRec-style, STG-GNN) trains ``--epochs`` epochs
(early stopping off) in a fresh process, as a demo worker does (one torch and
Numba thread, freed memory kept); the time per optimiser step includes the
batches, the per-epoch validation and the final predictions.  With ``--base``
(the root of another checkout, e.g. a ``git worktree`` of an older commit)
both checkouts run, alternating, in the same session, so the ratio is
measured against a peer on the same machine state; each figure is the best of
``--reps`` runs.  The real log is read from ``<repo>/../shared/data``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ml-latest-small"
MODELS = {"SR-GNN": "fit_srgnn", "SASRec": "fit_sasrec", "STG-GNN": "fit_torch"}

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from stgkern._workers import keep_freed_memory
keep_freed_memory()
import numba, torch
numba.set_num_threads(1)
torch.set_num_threads(1)
from stgkern import model as sm
from stgkern.cli import _load
log = _load({ratings!r}, "movielens", {movies!r})
prep = sm.prepare(log, 5, 3)
fit = getattr(sm, {fn!r})
fit(prep, seed=0, epochs=1, patience=100)          # compile / warm caches
t0 = time.perf_counter()
out = fit(prep, seed=0, epochs={epochs}, patience=100)
sec = time.perf_counter() - t0
info = out[-1]
print(json.dumps({{"seconds": sec, "steps": info["steps"], "valid_ndcg20": info["valid_NDCG@20"]}}))
"""


def run_one(root, fn, epochs):
    code = CHILD.format(root=str(root), ratings=str(DATA / "ratings.csv"), movies=str(DATA / "movies.csv"),
                        fn=fn, epochs=epochs)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    return json.loads(res.stdout.strip().splitlines()[-1])


def git_rev(root):
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=root, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=pathlib.Path, help="root of another checkout to compare against")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args(argv)
    if not (DATA / "ratings.csv").exists():
        sys.exit(f"MovieLens latest-small not found under {DATA} (see ../shared/data/SOURCES.md)")
    checkouts = {"this": ROOT} | ({"base": args.base.resolve()} if args.base else {})
    out = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
           "epochs": args.epochs, "reps": args.reps,
           "checkouts": {k: {"path_is_this_repo": k == "this", "commit": git_rev(p)} for k, p in checkouts.items()},
           "models": {}}
    for name, fn in MODELS.items():
        runs = {k: [] for k in checkouts}
        for _ in range(args.reps):
            for k, root in checkouts.items():          # alternate: both see the same machine state
                runs[k].append(run_one(root, fn, args.epochs))
        row = {}
        for k, rs in runs.items():
            best = min(rs, key=lambda r: r["seconds"])
            row[k] = {"ms_per_step": 1e3 * best["seconds"] / best["steps"], "steps": best["steps"],
                      "seconds_all": [r["seconds"] for r in rs], "valid_ndcg20": best["valid_ndcg20"]}
        if "base" in row:
            row["speedup"] = row["base"]["ms_per_step"] / row["this"]["ms_per_step"]
        out["models"][name] = row
        print(name, json.dumps({k: (round(v["ms_per_step"], 1) if isinstance(v, dict) else round(v, 3))
                                for k, v in row.items()}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
