"""GPU benchmarks for a fresh device machine (called by benchmarks/device_check.sh).

    python benchmarks/device_check.py OUT_DIR             # on a GPU with CuPy
    python benchmarks/device_check.py OUT_DIR --cpu-smoke # here: small workloads, NumPy only

Measures, in one run and on one device:

* copy bandwidth (CuPy device-to-device copy of 1 GiB) -- the reference for
  every "% of copy" figure;
* spmm (sum, F=64, float32) against ``cupyx.scipy.sparse.csr_matrix @ X`` on a
  20M-event window graph (each event pulls its user's previous ``window``
  events) and a power-law random graph (5M nodes, 80M edges);
* message_passing (mul, per-edge scalar), sddmm (dot) and edge_softmax on the
  window graph, as a fraction of their streaming byte floor over the copy
  bandwidth.

Timing: CUDA events, one warm-up call (NVRTC compile excluded), median of
``--reps``.  Every stgkern output is checked against the peer (or a CuPy
expression) before it is timed.  Writes ``device_check.json`` and
``device_check.txt`` (a short table) under OUT_DIR.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------ workloads
def window_graph_csr(xp, n_events, window, mean_len, seed):
    """CSR of a banded event graph: users of geometric length, event i <- its user's previous `window` events."""
    rng = np.random.default_rng(seed)
    lens = rng.geometric(1.0 / mean_len, size=max(1, 2 * n_events // mean_len))
    lens = lens[np.cumsum(lens) <= n_events]
    lens = np.append(lens, n_events - lens.sum()) if lens.sum() < n_events else lens
    starts = np.repeat(np.cumsum(lens) - lens, lens)  # first event of each event's user
    lens, starts = xp.asarray(lens), xp.asarray(starts)
    pos = xp.arange(n_events, dtype=np.int64) - starts
    deg = xp.minimum(pos, window)
    indptr = xp.zeros(n_events + 1, dtype=np.int64)
    xp.cumsum(deg, out=indptr[1:])
    nnz = int(indptr[-1])
    row = xp.repeat(xp.arange(n_events, dtype=np.int64), deg)
    offs = xp.arange(nnz, dtype=np.int64) - indptr[:-1][row]
    indices = (row - deg[row] + offs).astype(np.int32)
    return indptr, indices


def power_law_csr(xp, n_nodes, n_edges, seed, alpha=2.0):
    """Random graph whose in- and out-degrees follow a power law (node id ~ n * u**alpha)."""
    rs = xp.random.RandomState(seed)
    dst = (n_nodes * rs.random_sample(n_edges) ** alpha).astype(np.int64)
    src = (n_nodes * rs.random_sample(n_edges) ** alpha).astype(np.int64)
    perm = rs.permutation(n_nodes)  # spread the hubs over the id range
    dst, src = perm[xp.minimum(dst, n_nodes - 1)], perm[xp.minimum(src, n_nodes - 1)]
    order = xp.argsort(dst * n_nodes + src)
    dst, src = dst[order], src[order]
    indptr = xp.zeros(n_nodes + 1, dtype=np.int64)
    xp.cumsum(xp.bincount(dst, minlength=n_nodes), out=indptr[1:])
    return indptr, src.astype(np.int32)


# ------------------------------------------------------------------ timing
def gpu_time(fn, reps):
    import cupy as cp
    fn()  # warm-up: kernel load / NVRTC compile
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(cp.cuda.get_elapsed_time(a, b) * 1e-3)
    return float(np.median(times))


def copy_bandwidth(reps):
    import cupy as cp
    src = cp.ones(1 << 28, dtype=np.float32)  # 1 GiB
    dst = cp.empty_like(src)
    t = gpu_time(lambda: cp.copyto(dst, src), reps)
    return 2 * src.nbytes / t


def check(name, got, want, rtol=1e-4, atol=1e-4):
    import cupy as cp
    ok = bool(cp.allclose(got, want, rtol=rtol, atol=atol))
    if not ok:
        err = float(cp.abs(got - want).max())
        print(f"MISMATCH {name}: max abs err {err}", file=sys.stderr)
    return ok


def run_gpu(args):
    import cupy as cp
    import cupyx.scipy.sparse as cps

    import stgkern
    from stgkern import Graph

    res = {"device": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(), "results": [], "checks": {}}
    bw = copy_bandwidth(args.reps)
    res["copy_GBps"] = bw / 1e9
    F = args.features

    def record(name, graph, t, floor_bytes, peer=None, t_peer=None, flops=None):
        row = {"op": name, "graph": graph, "time_ms": t * 1e3, "GBps_floor": floor_bytes / t / 1e9,
               "pct_copy": 100 * floor_bytes / t / bw}
        if flops:
            row["GFLOPs"] = flops / t / 1e9
        if peer:
            row.update(peer=peer, peer_ms=t_peer * 1e3, speedup_vs_peer=t_peer / t)
        res["results"].append(row)
        print(row, flush=True)

    graphs = {}
    t0 = time.perf_counter()
    graphs["window"] = window_graph_csr(cp, args.events, args.window, 50, seed=1)
    graphs["powerlaw"] = power_law_csr(cp, args.pl_nodes, args.pl_edges, seed=2)
    res["generation_s"] = time.perf_counter() - t0
    for gname, (indptr, indices) in graphs.items():
        n = indptr.shape[0] - 1
        nnz = int(indices.shape[0])
        g = Graph(indptr, indices, n, check=False)
        X = cp.random.RandomState(3).standard_normal((n, F), dtype=np.float32)
        A = cps.csr_matrix((cp.ones(nnz, np.float32), indices, indptr), shape=(n, n))
        out = stgkern.spmm(g, X)
        res["checks"][f"spmm/{gname}"] = check(f"spmm/{gname}", out, A @ X)
        t = gpu_time(lambda: stgkern.spmm(g, X), args.reps)
        tp = gpu_time(lambda: A @ X, args.reps)
        floor = 8 * nnz + 8 * n * F  # perfect reuse of X (DESIGN.md)
        record("spmm_sum_F%d" % F, gname, t, floor, "cupyx csr @ X", tp, 2 * nnz * F)
        res.setdefault("graphs", {})[gname] = {"n": n, "nnz": nnz}
        if gname != "window":
            del A, X, g
            continue
        w = cp.random.RandomState(4).random_sample(nnz, dtype=np.float32)
        Aw = cps.csr_matrix((w, indices, indptr), shape=(n, n))
        out = stgkern.message_passing(g, X, w, op="mul", reduce="sum")
        res["checks"]["message_passing/window"] = check("message_passing/window", out, Aw @ X)
        t = gpu_time(lambda: stgkern.message_passing(g, X, w, op="mul", reduce="sum"), args.reps)
        tp = gpu_time(lambda: Aw @ X, args.reps)
        record("message_passing_mul_scalar_F%d" % F, gname, t, 12 * nnz + 8 * n * F, "cupyx csr(w) @ X", tp,
               2 * nnz * F)
        del Aw
        s = stgkern.sddmm(g, X, X, op="dot")
        # checked on a sample of edges: the dense reference for all of them would need nnz * F floats
        sample = cp.random.RandomState(5).randint(0, nnz, size=min(nnz, 1 << 20))
        dst = g.dst()[sample].astype(np.int64)
        ref = (X[dst] * X[indices[sample].astype(np.int64)]).sum(axis=1)
        res["checks"]["sddmm/window"] = check("sddmm/window", s[sample], ref, rtol=1e-3, atol=1e-3)
        del ref, dst, sample
        t = gpu_time(lambda: stgkern.sddmm(g, X, X, op="dot"), args.reps)
        record("sddmm_dot_F%d" % F, gname, t, 8 * nnz + 4 * n * F + 8 * n, flops=2 * nnz * F)
        o = stgkern.edge_softmax(g, s)
        sums = cps.csr_matrix((o, indices, indptr), shape=(n, n)).sum(axis=1).ravel()
        deg = cp.diff(indptr)
        res["checks"]["edge_softmax/window"] = bool(cp.allclose(sums[deg > 0], 1, atol=1e-4))
        t = gpu_time(lambda: stgkern.edge_softmax(g, s), args.reps)
        record("edge_softmax_H1", gname, t, 8 * nnz + 8 * n)
        del X, g, A, s, o
        cp.get_default_memory_pool().free_all_blocks()
    res["topk"] = "not run: the CUDA topk selection kernel is not implemented yet"
    from stgkern import _cuda
    res["loader"] = _cuda.info()
    return res


def run_cpu_smoke(args):
    """Workload generation and the reference checks at small size, NumPy only."""
    import scipy.sparse as sp

    import stgkern
    from stgkern import Graph

    res = {"mode": "cpu-smoke", "graphs": {}}
    graphs = {"window": window_graph_csr(np, args.events, args.window, 50, seed=1),
              "powerlaw": power_law_csr(np, args.pl_nodes, args.pl_edges, seed=2)}
    for gname, (indptr, indices) in graphs.items():
        n = indptr.shape[0] - 1
        nnz = int(indices.shape[0])
        assert indptr[0] == 0 and indptr[-1] == nnz and (np.diff(indptr) >= 0).all()
        assert nnz == 0 or (indices.min() >= 0 and indices.max() < n)
        g = Graph(indptr, indices, n)  # full structural check
        if gname == "window":
            dst = np.repeat(np.arange(n), np.diff(indptr))
            assert (indices < dst).all() and (dst - indices <= args.window).all()
        X = np.random.default_rng(3).standard_normal((n, args.features)).astype(np.float32)
        A = sp.csr_matrix((np.ones(nnz, np.float32), indices, indptr), shape=(n, n))
        try:
            ok = bool(np.allclose(stgkern.spmm(g, X), A @ X, rtol=1e-4, atol=1e-4))
        except (NotImplementedError, AttributeError, ImportError) as exc:
            ok = f"skipped ({exc})"
        res["graphs"][gname] = {"n": n, "nnz": nnz, "spmm_vs_scipy": ok}
        print(gname, res["graphs"][gname], flush=True)
    return res


def write(res, out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    res["host"] = platform.node()
    (out_dir / "device_check.json").write_text(json.dumps(res, indent=1, default=str))
    lines = []
    if "copy_GBps" in res:
        lines.append(f"device: {res['device']}   copy bandwidth: {res['copy_GBps']:.0f} GB/s")
        lines.append(f"{'op':<34}{'graph':<10}{'ms':>9}{'%copy':>8}{'GFLOP/s':>9}{'peer ms':>9}{'x peer':>8}")
        for r in res["results"]:
            lines.append(f"{r['op']:<34}{r['graph']:<10}{r['time_ms']:>9.3f}{r['pct_copy']:>8.1f}"
                         f"{r.get('GFLOPs', float('nan')):>9.1f}{r.get('peer_ms', float('nan')):>9.3f}"
                         f"{r.get('speedup_vs_peer', float('nan')):>8.2f}")
        lines.append(f"checks: {res['checks']}")
    else:
        lines.append(json.dumps(res["graphs"]))
    (out_dir / "device_check.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default=os.environ.get("OUT", "device_check_out"))
    ap.add_argument("--cpu-smoke", "--dry-run", action="store_true", dest="cpu_smoke",
                    help="generate small workloads with NumPy and check them; no GPU needed")
    ap.add_argument("--events", type=int, default=None, help="window-graph events (20M; 20k with --cpu-smoke)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--pl-nodes", type=int, default=None, help="power-law nodes (5M; 5k with --cpu-smoke)")
    ap.add_argument("--pl-edges", type=int, default=None, help="power-law edges (80M; 80k with --cpu-smoke)")
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    small = args.cpu_smoke
    args.events = args.events or (20_000 if small else 20_000_000)
    args.pl_nodes = args.pl_nodes or (5_000 if small else 5_000_000)
    args.pl_edges = args.pl_edges or (80_000 if small else 80_000_000)
    res = run_cpu_smoke(args) if small else run_gpu(args)
    write(res, Path(args.out_dir))
    ok = all(v is True or isinstance(v, str) for v in res.get("checks", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
