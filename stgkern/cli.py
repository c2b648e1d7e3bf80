"""Command line: ``stgkern demo`` and ``stgkern info``.

``stgkern demo`` is the whole method on an event log (the built-in synthetic
one by default, or ``--data PATH --format taobao|movielens|recbole|yoochoose``):
k-core and minimum-length filters, the chronological leave-one-out split,
window graphs and features, the spatio-temporal GNN (PyTorch, or the NumPy
closed form without it), the most-popular, Markov and SR-GNN baselines on the
same split, and next-item / next-behaviour metrics, with a progress bar and
the time of every stage; ``--json`` writes all of it.  (``stgkern bench``
will join them, wired to ``stgkern.bench``.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

FORMATS = ("taobao", "movielens", "recbole", "yoochoose")


class Stages:
    """A progress bar over the pipeline's stages, with the time of each."""

    def __init__(self, names, stream=sys.stderr, width=24):
        self.names = list(names)
        self.times: dict[str, float] = {}
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self._current = None

    def _bar(self, done: int) -> str:
        fill = int(self.width * done / len(self.names))
        return "[" + "#" * fill + "." * (self.width - fill) + f"] {done}/{len(self.names)}"

    def run(self, name, fn, *args, **kwargs):
        i = self.names.index(name)
        end = "\r" if self.tty else "\n"
        print(f"{self._bar(i)} {name} ...", end=end, file=self.stream, flush=True)
        t0 = time.perf_counter()
        self._current = (i, name, t0)
        try:
            out = fn(*args, **kwargs)
        finally:
            self._current = None
        self.times[name] = time.perf_counter() - t0
        print(f"{self._bar(i + 1)} {name}: {self.times[name]:.2f} s" + " " * 8, file=self.stream, flush=True)
        return out


    def tick(self, done, total):
        """Progress inside the running stage (epochs): redrawn in place on a terminal only."""
        if not self.tty or self._current is None:
            return
        i, name, t0 = self._current
        print(f"{self._bar(i)} {name}: {done}/{total} ({time.perf_counter() - t0:.0f} s)",
              end="\r", file=self.stream, flush=True)


class _DataError(Exception):
    """A log that does not match its format, or nothing left to evaluate: reported in one line."""


def _load(path, fmt, categories=None):
    from stgkern import data as sd
    try:
        return sd.load(path, fmt, categories)
    except ValueError as exc:    # loaders name the line and the column
        raise _DataError(f"--data does not match --format {fmt}: {exc}") from None


def _prepare(log, k, min_length):
    from stgkern import model as sm
    try:
        return sm.prepare(log, k, min_length)
    except ValueError as exc:
        raise _DataError(str(exc)) from None


def _percentiles(a, qs=(0, 50, 90, 99, 100)):
    a = np.asarray(a)
    if a.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(a, q)) for q in qs}


def _graph_summary(g, X, args, horizon):
    kind = g.edata["kind"]
    return {
        "nodes": g.n_nodes, "edges": g.nnz,
        "edges_temporal_only": int(np.count_nonzero(kind == 1)),
        "edges_category_only": int(np.count_nonzero(kind == 2)),
        "edges_both": int(np.count_nonzero(kind == 3)),
        "window": args.window, "horizon_s": horizon, "category_window": args.category_window,
        "in_degree": _percentiles(np.diff(g.indptr)),
        "dt_seconds": _percentiles(g.edata["dt"].astype(np.float64)),
        "node_features": list(X.shape),
    }


def _versions():
    import numba
    import scipy

    import stgkern
    out = {"stgkern": stgkern.__version__, "python": sys.version.split()[0], "numpy": np.__version__,
           "numba": numba.__version__, "scipy": scipy.__version__}
    try:
        import torch
        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    return out


def demo(args) -> dict:
    """The whole method on one log: preprocessing, split, baselines, the model, metrics."""
    import stgkern
    from stgkern import data as sd
    from stgkern import model as sm

    backend = args.backend
    if backend == "auto":
        backend = "torch" if sm.torch_available() else "numpy"
    elif backend == "torch" and not sm.torch_available():
        raise SystemExit("stgkern demo: --backend torch needs PyTorch (pip install 'stgkern[torch]'); "
                         "use --backend numpy for the closed form")
    model_name = {"torch": f"STG-GNN ({args.model})", "numpy": "STG closed form"}[backend]
    stages = Stages(["load", "preprocess + split", "window graph + features", "most-popular", "Markov",
                     "SR-GNN", model_name, "metrics"])
    if args.data:
        log = stages.run("load", _load, args.data, args.format, getattr(args, "categories", None))
        source = f"{args.format}:{args.data}"
    else:
        log = stages.run("load", sd.synthetic_log, n_users=args.users, seed=args.seed)
        source = f"synthetic (n_users={args.users}, seed={args.seed})"
    prep = stages.run("preprocess + split", _prepare, log, args.k_core, args.min_length)
    horizon = None if args.horizon_hours is None else args.horizon_hours * 3600.0
    tau = args.tau_hours * 3600.0

    def graph_stage():   # the graph the test predictions run on (train + validation events), for the summary
        g = stgkern.window_graph(prep.history, window=args.window, horizon=horizon,
                                 category_window=args.category_window)
        return _graph_summary(g, stgkern.node_features(prep.history, g), args, horizon)
    graph = stages.run("window graph + features", graph_stage)

    common = dict(seed=args.seed)
    preds = {"most-popular": stages.run("most-popular", sm.popularity, prep),
             "Markov": stages.run("Markov", sm.markov, prep)}
    info = {}
    if backend == "torch":
        sr_idx, info["SR-GNN"] = stages.run("SR-GNN", sm.fit_srgnn, prep, epochs=args.epochs,
                                            progress=stages.tick, **common)
        idx, beh, info["model"] = stages.run(
            model_name, sm.fit_torch, prep, conv=args.model, window=args.window, horizon=horizon,
            category_window=args.category_window, tau=tau, epochs=args.epochs, progress=stages.tick, **common)
    else:
        sr_idx, info["SR-GNN"] = stages.run("SR-GNN", sm.srgnn_closed_form, prep, **common)
        idx, beh, info["model"] = stages.run(
            model_name, sm.fit_closed_form, prep, window=args.window, horizon=horizon,
            category_window=args.category_window, tau=tau, **common)
    preds["SR-GNN"] = (sr_idx, None)
    preds[model_name] = (idx, beh)
    results = stages.run("metrics", lambda: {name: sm.evaluate(prep, i, b) for name, (i, b) in preds.items()})

    seen = np.asarray(prep.seen_test[np.arange(len(prep.eval_user)), prep.test_item]).ravel() > 0
    return {
        "source": source,
        "config": {k: v for k, v in vars(args).items() if k != "cmd"} | {"backend": backend},
        "versions": _versions(),
        "data": prep.report,
        "events_loaded": prep.report["events_in"], "events": prep.report["events"],
        "users": prep.report["users"], "items": prep.report["items"], "categories": prep.report["categories"],
        "graph": graph,
        "evaluation": {
            "split": "leave-one-out by time: last event test, the one before validation",
            "test_users": int(len(prep.eval_user)),
            "exclusion": "items the user interacted with before the target are excluded from every "
                         "method's ranking",
            "test_targets_already_seen": float(seen.mean()) if seen.size else float("nan"),
            "behavior_classes": list(prep.log.behavior_names),
        },
        "model": model_name,
        "metrics": results,
        "training": info,
        "seconds_per_stage": stages.times,
        "seconds_total": float(sum(stages.times.values())),
    }


ITEM_COLUMNS = ("HR@10", "HR@20", "NDCG@10", "NDCG@20", "MRR@20")
BEHAVIOR_COLUMNS = ("accuracy", "precision", "recall", "F1")


def _print_summary(s):
    ev = s["evaluation"]
    print()
    print(f"source        {s['source']}")
    print(f"events        {s['events']:,} of {s['events_loaded']:,} after the {s['config']['k_core']}-core "
          f"(users {s['users']:,}, items {s['items']:,}, categories {s['categories']:,})")
    gr = s["graph"]
    print(f"window graph  {gr['nodes']:,} nodes, {gr['edges']:,} edges (temporal {gr['edges_temporal_only']:,}, "
          f"category {gr['edges_category_only']:,}, both {gr['edges_both']:,})")
    print(f"test          {ev['test_users']:,} users, last event each; seen items excluded for every method "
          f"({100 * ev['test_targets_already_seen']:.1f}% of test targets were seen before and cannot be hit)")
    print()
    w = max(len(m) for m in s["metrics"]) + 2
    head = "method".ljust(w) + "".join(f"{c:>9}" for c in ITEM_COLUMNS) + "   next behaviour:" \
        + "".join(f"{c[:4]:>7}" for c in BEHAVIOR_COLUMNS)
    print(head)
    print("-" * len(head))
    for name, m in s["metrics"].items():
        row = name.ljust(w) + "".join(f"{m[c]:9.4f}" for c in ITEM_COLUMNS) + " " * 17
        row += "".join(f"{m[c]:7.3f}" if c in m else f"{'-':>7}" for c in BEHAVIOR_COLUMNS)
        print(row)
    print()
    print("behaviour: accuracy and macro precision / recall / F1 over "
          + ", ".join(ev["behavior_classes"]))
    print("time per stage  " + "  ".join(f"{k} {v:.1f}s" for k, v in s["seconds_per_stage"].items())
          + f"   total {s['seconds_total']:.1f}s")


def info(args) -> dict:
    import numba
    import scipy

    import stgkern
    out = {"stgkern": stgkern.__version__, "numpy": np.__version__, "numba": numba.__version__,
           "scipy": scipy.__version__, "numba_threads": numba.config.NUMBA_NUM_THREADS}
    try:
        from stgkern import _cuda
        out["cuda"] = _cuda.info()
    except Exception as exc:  # no CuPy, no device, or no GPU path: say which
        out["cuda"] = f"unavailable ({type(exc).__name__}: {exc})"
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="stgkern", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="the whole method on an event log: baselines, model, metrics",
                       description="Preprocess a log (k-core, minimum length), split it by time (each "
                                   "user's last event tests, the one before validates), train the "
                                   "spatio-temporal GNN and the baselines, and report next-item and "
                                   "next-behaviour metrics.")
    d.add_argument("--data", help="path of a real log (default: the built-in synthetic log)")
    d.add_argument("--format", choices=FORMATS, help="format of --data")
    d.add_argument("--categories", help="side file giving item categories: movies.csv (movielens) "
                                        "or the .item file (recbole)")
    d.add_argument("--users", type=int, default=300, help="synthetic log: number of users")
    d.add_argument("--seed", type=int, default=0, help="seed of the synthetic log and of training")
    d.add_argument("--k-core", type=int, default=5, help="k-core filter for users and items")
    d.add_argument("--min-length", type=int, default=3, help="drop users with fewer events (>= 3)")
    d.add_argument("--window", type=int, default=8, help="temporal edges from the last N events")
    d.add_argument("--horizon-hours", type=float, default=24.0, help="no edge spans more than this")
    d.add_argument("--category-window", type=int, default=2,
                   help="edges from the last N events of the same category")
    d.add_argument("--tau-hours", type=float, default=1.0, help="initial time-decay constant of the edges")
    d.add_argument("--model", choices=("stgconv", "attention"), default="stgconv",
                   help="graph layer of the PyTorch model")
    d.add_argument("--backend", choices=("auto", "torch", "numpy"), default="auto",
                   help="torch: the GNN trained with PyTorch; numpy: the closed form (no PyTorch); "
                        "auto: torch when installed")
    d.add_argument("--epochs", type=int, default=40, help="most training epochs (early stopping on validation)")
    d.add_argument("--json", help="also write config, times and every metric as JSON to this file")
    from . import bench
    b = sub.add_parser("bench", help="every op against its peers on the standard workloads",
                       description=bench.__doc__.splitlines()[0])
    bench.add_arguments(b)
    from .models import cli as mcli
    tr = sub.add_parser("train", help="train a published session model (SR-GNN, GCE-GNN) on a benchmark split",
                        description="Train SR-GNN or GCE-GNN on a session split (Diginetica) under the published protocol: "
                                    "every training prefix an example, the best validation epoch kept, "
                                    "P@20 and MRR@20 over every item on the test split.")
    mcli.add_train_arguments(tr)
    ev = sub.add_parser("evaluate", help="P@20 and MRR@20 of a model saved by stgkern train",
                        description="Evaluate a saved session model on the test split of --data.")
    mcli.add_evaluate_arguments(ev)
    i = sub.add_parser("info", help="versions, threads and the GPU path in use")
    i.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    if args.cmd == "demo":
        if args.data and not args.format:
            p.error("--data needs --format (one of: " + ", ".join(FORMATS) + ")")
        if args.data:
            # a missing file or one whose lines do not match the format: one clear line, no traceback
            for flag, path in (("--data", args.data), ("--categories", args.categories)):
                if path is None:
                    continue
                try:
                    with open(path):
                        pass
                except OSError as exc:
                    d.error(f"cannot read {flag} {path}: {exc.strerror}")
        if args.categories and (not args.data or args.format not in ("movielens", "recbole")):
            p.error("--categories goes with --data in format movielens (movies.csv) or recbole (.item)")
        try:
            s = demo(args)
        except _DataError as exc:
            d.error(str(exc))
        _print_summary(s)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(s, fh, indent=2)
    elif args.cmd in ("train", "evaluate"):
        try:
            getattr(mcli, args.cmd)(args)
        except mcli.UserError as exc:
            (tr if args.cmd == "train" else ev).error(str(exc))
    elif args.cmd == "bench":
        return bench.run(args)
    elif args.cmd == "info":
        s = info(args)
        print(json.dumps(s, indent=2) if args.json else "\n".join(f"{k:14s} {v}" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
