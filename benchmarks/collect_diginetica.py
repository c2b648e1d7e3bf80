"""Gather ``stgkern train --json`` runs on Diginetica into ``benchmarks/results/diginetica_cpu.json``.

    python benchmarks/collect_diginetica.py --srgnn s0.json s1.json s2.json \
        [--srgnn-refit r0.json ...] [--gcegnn g0.json ...] [--note TEXT]

Each group is summarised over its seeds (mean, population std, min, max of
the test P@20 and MRR@20) next to the published figures; every run keeps
its configuration and epoch curve.  A tuned group's test figure is the one
at its best validation epoch; a refit group (``--valid-fraction 0``) trains
on every training session for the tuned epoch count and reports its last
epoch.
"""
import argparse
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = {"SR-GNN": {"P@20": 50.73, "MRR@20": 17.59}, "GCE-GNN": {"P@20": 54.22, "MRR@20": 19.04}}
GROUPS = {"srgnn": "SR-GNN", "srgnn_refit": "SR-GNN", "gcegnn": "GCE-GNN", "gcegnn_refit": "GCE-GNN"}


def summarise(runs, published):
    out = {}
    for m in ("P@20", "MRR@20"):
        v = np.array([r["test"][m] for r in runs])
        out[m] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
                  "published": published[m], "target_met": bool(v.mean() >= published[m] - 0.5)}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for g in GROUPS:
        ap.add_argument(f"--{g.replace('_', '-')}", nargs="*", default=[], metavar="JSON")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "diginetica_cpu.json"))
    args = ap.parse_args(argv)
    res = {"benchmark": "SR-GNN and GCE-GNN (stgkern.models) on Diginetica, published protocol: every "
                        "training prefix an example, 10% of training sessions held out for validation (split "
                        "seed 0), best validation P@20 epoch evaluated on the test set (a refit group then "
                        "trains on every training session for that many epochs); P@20 / MRR@20 over all "
                        "43,097 items, nothing excluded",
           "published": PUBLISHED, "groups": {}, "notes": args.note}
    for g, model in GROUPS.items():
        paths = getattr(args, g)
        if not paths:
            continue
        runs = []
        for p in paths:
            with open(p) as fh:
                r = json.load(fh)
            runs.append({"seed": r["config"]["seed"], "best_epoch": r["best_epoch"], "valid": r["valid"],
                         "test": r["test"], "seconds": r["seconds"], "config": r["config"], "curve": r["curve"]})
        res["groups"][g] = {"model": model, "seeds": [r["seed"] for r in runs],
                            "summary": summarise(runs, PUBLISHED[model]), "runs": runs}
    with open(args.out, "w") as fh:
        json.dump(res, fh, indent=1)
    for g, v in res["groups"].items():
        s = v["summary"]
        print(f"{g:14s} seeds {v['seeds']}: P@20 {s['P@20']['mean']:.2f} ± {s['P@20']['std']:.2f} "
              f"(published {s['P@20']['published']}), MRR@20 {s['MRR@20']['mean']:.2f} ± {s['MRR@20']['std']:.2f} "
              f"(published {s['MRR@20']['published']})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
