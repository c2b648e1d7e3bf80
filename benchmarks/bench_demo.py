"""The main job's evidence: ``stgkern demo --seeds 3`` on the three logs, and the README tables.

    python benchmarks/bench_demo.py run [LOG ...]  # torch and numpy backends, 3 seeds each, JSON into results/
    python benchmarks/bench_demo.py table    # README tables (mean ± std over the seeds) from those JSON files
    python benchmarks/bench_demo.py coldstart  # first call of each op the demo uses: fresh Numba cache, then warm
    python benchmarks/bench_demo.py colddemo [BASE_TREE] [PAIRS] [BACKEND]  # the default demo from an empty Numba cache

The real logs are read from ``<repo>/../shared/data`` (see its SOURCES.md);
nothing of them is copied into the repository.
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
LOGS = {
    "synthetic": [],
    # the default log has 277 test users, a handful of each rare behaviour: too few for behaviour macro-F1
    # differences of a few points to mean anything; ten times the users gives ~3,000 test targets
    "synthetic_3000": ["--users", "3000"],
    "taobao": ["--data", str(DATA / "taobao_userbehavior" / "UserBehavior_sample.csv"), "--format", "taobao"],
    "movielens": ["--data", str(DATA / "ml-latest-small" / "ratings.csv"), "--format", "movielens",
                  "--categories", str(DATA / "ml-latest-small" / "movies.csv")],
}
ROWS = [("oracle", "oracle (generator's truth)"), ("most-popular", "most popular"), ("Markov", "item Markov"),
        ("SR-GNN", "SR-GNN-style"), ("SASRec", "SASRec-style"), ("STG closed form", "STG closed form (NumPy)"),
        ("STG-GNN (stgconv)", "STG-GNN (PyTorch)")]
COLUMNS = ("HR@20", "NDCG@20", "MRR@20", "F1")


def run(names=None):
    for name, args in LOGS.items():
        if names and name not in names:
            continue
        for backend, suffix in (("torch", ""), ("numpy", "_numpy")):
            out = RESULTS / f"demo_{name}{suffix}.json"
            cmd = [sys.executable, "-m", "stgkern.cli", "demo", *args, "--backend", backend, "--seeds", "3",
                   "--json", str(out)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)


def behavior_table(name):
    """Per-class precision / recall of next-behaviour prediction (seed 0), one row per behaviour method."""
    s = json.loads((RESULTS / f"demo_{name}.json").read_text())
    per = s.get("behavior_per_class") or {}
    classes = s["evaluation"]["behavior_classes"]
    if not per or len(classes) < 2:
        return ""
    lines = ["| method | " + " | ".join(f"{c} P / R" for c in classes) + " |", "|---|" + "---|" * len(classes)]
    for key, label in ROWS:
        if key in per:
            lines.append(f"| {label} | " + " | ".join(f"{per[key][c]['precision']:.3f} / {per[key][c]['recall']:.3f}"
                                                      for c in classes) + " |")
    return "\n".join(lines)


def table(name):
    s = json.loads((RESULTS / f"demo_{name}.json").read_text())
    agg = s["aggregate"]
    one_class = len(s["evaluation"]["behavior_classes"]) < 2       # nothing to predict (MovieLens)
    best = {c: max(agg[m][c]["mean"] for m, _ in ROWS[1:] if m in agg and c in agg[m]) for c in COLUMNS}
    lines = ["| method | " + " | ".join(c if c != "F1" else "behaviour macro-F1" for c in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for key, label in ROWS:
        if key not in agg:
            continue
        cells = []
        for c in COLUMNS:
            if c not in agg[key] or (c == "F1" and one_class):
                cells.append("n/a" if c in agg[key] else "–")
                continue
            a = agg[key][c]
            txt = f"{a['mean']:.4f} ± {a['std']:.4f}"
            cells.append(f"**{txt}**" if key != "oracle" and a["mean"] == best[c] else txt)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_FIRST_CALLS = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import stgkern
from stgkern.data import synthetic_log
out = {"import stgkern": time.perf_counter() - t0}
def first(name, f):
    t = time.perf_counter(); r = f(); out[name] = time.perf_counter() - t; return r
log = first("synthetic_log", lambda: synthetic_log(n_users=300, seed=0))
g = first("window_graph", lambda: stgkern.window_graph(log, window=8, horizon=86400.0, category_window=2))
first("node_features", lambda: stgkern.node_features(log, g))
X = np.random.default_rng(0).random((g.n_nodes, 32), dtype=np.float32)
w = first("time_decay", lambda: stgkern.time_decay(g.edata["dt"], 3600.0))
first("spmm", lambda: stgkern.spmm(g, X, w))
g2 = stgkern.window_graph(synthetic_log(n_users=40, seed=1), window=3)
first("spmm (second graph, F=7)", lambda: stgkern.spmm(g2, np.ones((g2.n_nodes, 7), np.float32)))
first("session_graph", lambda: stgkern.session_graph(np.array([0, 3, 5]), np.array([1, 2, 1, 4, 4])))
first("topk", lambda: stgkern.topk(X[:100], X, 20))
try:
    import torch
    from stgkern.torch import STGConv
    conv = STGConv(32, 32, n_kinds=3, tau_init=3600.0, normalize=True)
    x = torch.from_numpy(X).requires_grad_()
    first("STGConv forward + backward", lambda: conv(x, g).sum().backward())
except ImportError:
    pass
print(json.dumps(out))
"""


def coldstart():
    """First-call seconds per op in a fresh process: a fresh Numba cache (cold), then the same cache (warm)."""
    import os
    import tempfile
    cache = tempfile.mkdtemp(prefix="numba-cold-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    res = {}
    for phase in ("cold", "warm"):
        r = subprocess.run([sys.executable, "-c", _FIRST_CALLS], env=env, capture_output=True, text=True,
                           check=True)
        res[phase] = json.loads(r.stdout.strip().splitlines()[-1])
    print("| op | cold (fresh cache) s | warm (cached) s |\n|---|---|---|")
    for op in res["cold"]:
        print(f"| {op} | {res['cold'][op]:.2f} | {res['warm'][op]:.2f} |")
    return res


def colddemo(base=None, pairs=2, backend="auto"):
    """The default demo as a fresh install runs it: each run in a new process with an empty
    ``NUMBA_CACHE_DIR``; with ``base`` (another checkout), its demo alternates with this one's,
    ``pairs`` times, so both see the same machine.  Wall seconds (the process, and the demo's
    own clock), the children's CPU seconds, and the warm-up's.  ``backend``: the demo's ``--backend``
    (``numpy``: as an install without PyTorch runs it).  Writes results/demo_coldstart[_numpy]_cpu.json."""
    import os
    import resource
    import tempfile
    import time
    trees = [("this", ROOT)] + ([("base", pathlib.Path(base).resolve())] if base else [])
    runs = []
    for _ in range(int(pairs)):
        for tag, tree in trees:
            with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
                out = pathlib.Path(cache) / "demo.json"
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(tree))
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "stgkern.cli", "demo", "--backend", backend, "--json", str(out)],
                               env=env, cwd=cache,
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wall = time.perf_counter() - t0
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                s = json.loads(out.read_text())
            runs.append({"tree": tag, "commit": _commit(tree), "wall_s": round(wall, 2),
                         "demo_wall_s": round(s["seconds_wall"], 2),
                         "cpu_user_s": round(r1.ru_utime - r0.ru_utime, 2),
                         "cpu_sys_s": round(r1.ru_stime - r0.ru_stime, 2),
                         "warm_up_s": s.get("warm_up_seconds"), "stages_s": s["seconds_per_stage"]})
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "stages_s"}), flush=True)
    res = {"what": f"stgkern demo --backend {backend} (default synthetic log) from an empty Numba cache, "
                   "alternating trees", "machine": {"cpus": os.cpu_count()}, "runs": runs}
    suffix = "" if backend == "auto" else f"_{backend}"
    (RESULTS / f"demo_coldstart{suffix}_cpu.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def _commit(tree):
    r = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+changes" if dirty else "")


if __name__ == "__main__":
    if sys.argv[1:2] == ["run"] and set(sys.argv[2:]) <= set(LOGS):
        run(sys.argv[2:])
    elif sys.argv[1:] == ["coldstart"]:
        coldstart()
    elif sys.argv[1:2] == ["colddemo"] and len(sys.argv) <= 5:
        colddemo(*sys.argv[2:])
    elif sys.argv[1:] == ["table"]:
        for name in LOGS:
            print(f"\n{name}\n")
            print(table(name))
            per_class = behavior_table(name)
            if per_class:
                print(f"\nnext behaviour per class (seed 0)\n\n{per_class}")
    else:
        sys.exit(__doc__)
