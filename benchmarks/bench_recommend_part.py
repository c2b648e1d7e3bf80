"""ClosedFormModel.recommend on one part of a partitioned log (stgkern.pipeline.partition's
output), with a fitted model whose tables hold the whole log's counts, e.g. the artefacts a
``bench_pipeline.py`` run leaves: per-stage seconds from cProfile's cumulative times.

    python benchmarks/bench_recommend_part.py --parts /tmp/pipe100m/parts \\
        --model /tmp/pipe100m/model_counted.pkl --part 1 [--users 3000] [--save lists.npz]

Prints one JSON line.  To compare two versions of the code, run it once with each on
PYTHONPATH, alternately, on the same part, and compare the saved lists.
"""
import argparse
import cProfile
import json
import pickle
import pstats
import time

import numpy as np

import stgkern
from stgkern import pipeline as P

#: Functions whose cumulative time is reported (the threshold top-k's stages, both versions').
STAGES = ("states", "_lowrank_topk", "topk_f32_certified", "_rerank", "rerank", "_transition_inputs",
          "_sparse_parts", "_mix_parts", "sort_indices")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", required=True)
    ap.add_argument("--model", required=True, help="pickled ClosedFormModel with its tables set (with_counts)")
    ap.add_argument("--part", type=int, default=0)
    ap.add_argument("--users", type=int, default=0, help="only the part's first USERS users (0: all)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--save", help="save users, items, scores to this .npz")
    ap.add_argument("--lowrank", choices=("auto", "f64", "f32"), default="auto",
                    help="the low-rank scan: float64 only, float32 + float64 rescoring, or by "
                         "config.lowrank_f32_min_items (auto)")
    args = ap.parse_args(argv)
    with open(args.model, "rb") as f:
        model = pickle.load(f)
    log = P.read_part(args.parts, args.part)
    if args.users:
        log = log.take(log.user < args.users, compact=True)
    if args.lowrank != "auto":
        stgkern.config.lowrank_f32_min_items = 0 if args.lowrank == "f32" else 1 << 62
    model.recommend(log.take(log.user < 50, compact=True), args.k)          # JIT and per-model caches
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    users, items, scores = model.recommend(log, args.k)
    prof.disable()
    seconds = time.perf_counter() - t0
    stages = {}
    for (_, _, name), (_, _, _, cum, _) in pstats.Stats(prof).stats.items():
        if name in STAGES:
            stages[name] = round(stages.get(name, 0.0) + cum, 3)
    if args.save:
        np.savez(args.save, users=users, items=items, scores=scores)
    print(json.dumps({"stgkern": stgkern.__file__, "lowrank": args.lowrank, "part": args.part, "users": len(users),
                      "events": len(log), "recommend_s": round(seconds, 3), "cumulative_s": stages}))


if __name__ == "__main__":
    main()
