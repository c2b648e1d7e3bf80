"""Command line: ``stgkern demo`` and ``stgkern info``.

``stgkern demo`` runs an event log (the built-in synthetic one by default)
through loading, preprocessing, graph construction and features, and prints
what a user wants to see: sizes, edges by kind, degree and time-gap
distributions and the time spent in each stage.
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

    def _bar(self, done: int) -> str:
        fill = int(self.width * done / len(self.names))
        return "[" + "#" * fill + "." * (self.width - fill) + f"] {done}/{len(self.names)}"

    def run(self, name, fn, *args, **kwargs):
        i = self.names.index(name)
        end = "\r" if self.tty else "\n"
        print(f"{self._bar(i)} {name} ...", end=end, file=self.stream, flush=True)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[name] = time.perf_counter() - t0
        print(f"{self._bar(i + 1)} {name}: {self.times[name]:.2f} s" + " " * 8, file=self.stream, flush=True)
        return out


def _percentiles(a, qs=(0, 50, 90, 99, 100)):
    a = np.asarray(a)
    if a.size == 0:
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(a, q)) for q in qs}


def _human_seconds(s):
    if s is None:
        return "-"
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(s) >= n:
            return f"{s / n:.1f} {unit}"
    return f"{s:.0f} s"


def demo(args) -> dict:
    import stgkern
    from stgkern import data as sd

    stages = Stages(["load", "k-core filter", "window graph", "node features", "edge features"])
    if args.data:
        log = stages.run("load", sd.load, args.data, args.format)
        source = f"{args.format}:{args.data}"
    else:
        log = stages.run("load", sd.synthetic_log, n_users=args.users, seed=args.seed)
        source = f"synthetic (n_users={args.users}, seed={args.seed})"
    raw = len(log)
    log, report = stages.run("k-core filter", sd.k_core, log, user_k=args.k_core, item_k=args.k_core)
    horizon = None if args.horizon_hours is None else args.horizon_hours * 3600
    g = stages.run("window graph", stgkern.window_graph, log, window=args.window, horizon=horizon,
                   category_window=args.category_window)
    X = stages.run("node features", stgkern.node_features, log, g)
    dt = g.edata["dt"].astype(np.float64)
    stages.run("edge features", stgkern.time_decay, dt, args.tau_hours * 3600.0)

    kind = g.edata["kind"]
    deg = np.diff(g.indptr)
    summary = {
        "source": source,
        "events_loaded": raw,
        "events": len(log), "users": int(log.n_users), "items": int(log.n_items),
        "categories": int(log.n_categories),
        "k_core": {"k": args.k_core, "removed": report if isinstance(report, dict) else str(report)},
        "graph": {
            "nodes": g.n_nodes, "edges": g.nnz,
            "edges_temporal_only": int(np.count_nonzero(kind == 1)),
            "edges_category_only": int(np.count_nonzero(kind == 2)),
            "edges_both": int(np.count_nonzero(kind == 3)),
            "window": args.window, "horizon_s": horizon, "category_window": args.category_window,
        },
        "in_degree": _percentiles(deg),
        "dt_seconds": _percentiles(dt),
        "node_features": list(X.shape),
        "seconds_per_stage": stages.times,
    }
    return summary


def _print_summary(s):
    gr = s["graph"]
    print()
    print(f"source            {s['source']}")
    print(f"events            {s['events']:,} (loaded {s['events_loaded']:,}; k-core k={s['k_core']['k']})")
    print(f"users / items     {s['users']:,} / {s['items']:,}   categories {s['categories']:,}")
    print(f"graph             {gr['nodes']:,} nodes, {gr['edges']:,} edges "
          f"(temporal {gr['edges_temporal_only']:,}, category {gr['edges_category_only']:,}, "
          f"both {gr['edges_both']:,})")
    d = s["in_degree"]
    print("in-degree         " + "  ".join(f"{k} {v:g}" for k, v in d.items() if v is not None))
    t = s["dt_seconds"]
    print("edge Δt           " + "  ".join(f"{k} {_human_seconds(v)}" for k, v in t.items()))
    print(f"node features     {s['node_features'][0]:,} x {s['node_features'][1]}")
    print("time per stage    " + "  ".join(f"{k} {v:.2f}s" for k, v in s["seconds_per_stage"].items()))


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
    d = sub.add_parser("demo", help="run an event log through the pipeline and print what it built")
    d.add_argument("--data", help="path of a real log (default: the built-in synthetic log)")
    d.add_argument("--format", choices=FORMATS, help="format of --data")
    d.add_argument("--users", type=int, default=2000, help="synthetic log: number of users")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--k-core", type=int, default=5, help="k-core filter for users and items")
    d.add_argument("--window", type=int, default=8)
    d.add_argument("--horizon-hours", type=float, default=24.0)
    d.add_argument("--category-window", type=int, default=2)
    d.add_argument("--tau-hours", type=float, default=1.0, help="time-decay constant for edge weights")
    d.add_argument("--json", help="also write the summary as JSON to this file")
    i = sub.add_parser("info", help="versions, threads and the GPU path in use")
    i.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    if args.cmd == "demo":
        if args.data and not args.format:
            p.error("--data needs --format (one of: " + ", ".join(FORMATS) + ")")
        s = demo(args)
        _print_summary(s)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(s, fh, indent=2)
    elif args.cmd == "info":
        s = info(args)
        print(json.dumps(s, indent=2) if args.json else "\n".join(f"{k:14s} {v}" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
