"""The SR-GNN baseline's prefix length, chosen on validation: ``fit_srgnn`` (PyTorch) and
``srgnn_closed_form`` for each ``max_len`` on the demo's three logs, seeds 0-2.

    python benchmarks/select_srgnn_len.py [--lengths 3 5 10] [--logs synthetic taobao movielens] [--json OUT]

Each run is the demo's own (``prepare(log, 5, 3)``, the fit's defaults but
``max_len``) in a fresh process on one thread.  The record keeps the
validation NDCG@20 the choice is made on, and the test NDCG@20 and seconds
for reference only.  The rule (``stgkern.model.SRGNN_MAX_LEN``): the length
whose mean validation NDCG@20 is at least the current one's on every log.
The real logs are read from ``<repo>/../shared/data``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from stgkern._workers import one_thread_process
one_thread_process()
from stgkern import model as sm, metrics as M
from stgkern import data as sd
name = {log!r}
if name == "synthetic":
    log = sd.synthetic_log(n_users=300, seed=0)
elif name == "taobao":
    log = sd.load({taobao!r}, "taobao")
else:
    log = sd.load({ratings!r}, "movielens", {movies!r})
prep = sm.prepare(log, 5, 3)
fit = getattr(sm, {fn!r})
for seed in {seeds!r}:
    t0 = time.perf_counter()
    out = fit(prep, seed=seed, max_len={max_len})
    sec = time.perf_counter() - t0
    info = out[-1]
    print(json.dumps({{"seed": seed, "valid_NDCG@20": info["valid_NDCG@20"],
                      "test_NDCG@20": float(M.ndcg(out[0], prep.test_item, 20)),
                      "steps": info.get("steps"), "seconds": sec}}), flush=True)
"""


def run(log, fn, max_len, seeds):
    code = CHILD.format(root=str(ROOT), log=log, fn=fn, max_len=max_len, seeds=list(seeds),
                        taobao=str(DATA / "taobao_userbehavior" / "UserBehavior_sample.csv"),
                        ratings=str(DATA / "ml-latest-small" / "ratings.csv"),
                        movies=str(DATA / "ml-latest-small" / "movies.csv"))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[3, 5, 10])
    ap.add_argument("--logs", nargs="+", default=["synthetic", "taobao", "movielens"])
    ap.add_argument("--fits", nargs="+", default=["fit_srgnn", "srgnn_closed_form"])
    ap.add_argument("--json", type=pathlib.Path, default=RESULTS / "srgnn_max_len_selection.json")
    args = ap.parse_args(argv)
    if "taobao" in args.logs and not (DATA / "taobao_userbehavior").exists() \
            or "movielens" in args.logs and not (DATA / "ml-latest-small").exists():
        sys.exit(f"a real log is missing under {DATA} (see ../shared/data/SOURCES.md)")
    out = {"date": time.strftime("%Y-%m-%d"), "rule": "mean validation NDCG@20 over the seeds; test for reference",
           "runs": {}}
    for fn in args.fits:
        seeds = (0, 1, 2) if fn == "fit_srgnn" else (0,)       # the closed form: one seed (spectral init)
        for log in args.logs:
            for L in args.lengths:
                rows = run(log, fn, L, seeds)
                mean = sum(r["valid_NDCG@20"] for r in rows) / len(rows)
                out["runs"].setdefault(fn, {}).setdefault(log, {})[str(L)] = {"valid_mean": mean, "seeds": rows}
                print(f"{fn:18s} {log:10s} max_len {L:3d}  valid NDCG@20 {mean:.5f}", flush=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
