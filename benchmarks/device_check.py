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
  bandwidth;
* topk (k=100, d=64, float32) over 1M items against the peer CuPy matmul +
  ``argpartition`` per row block, and against the matmul alone (the
  selection's overhead); checked against the peer's scores and the CPU
  backend on a sample of rows;
* score_cross_entropy (forward, and backward with the bias gradient;
  float32, d=64, 4096 queries, 200k items) against the CuPy composition
  ``Q @ items.T + bias``, log-softmax, gather (and its backward through the
  full probability matrix), checked against that peer and the CPU backend on
  a sample of rows;
* time_decay, time_encoding (dim 16) and node_features against the CuPy
  expressions they replace (the CuPy composition is the peer), checked
  against the CPU;
* the GPU window_graph builder (``stgkern._cuda.window_graph.build``) on the
  20M-event sorted log, checked against the generator's CSR (window only) and
  against the CPU builder on a 1M-event slice with horizon + category edges.
* the compatibility builders -- session_graph (a 100-session SR-GNN batch and
  100k sessions), srgnn_layout (100 and 2k sessions), item_graph (1M
  positions, epsilon 3, top 12) and time_intervals (20k users, maxlen 50) --
  three ways: the CUDA kernels, the Numba backend (host arrays, all cores) and
  a pure-CuPy composition of the same result (sorts, masks,
  ``searchsorted``), each checked equal to the Numba result.  ``compat`` in
  the JSON answers "is a CuPy composition as fast as the kernels?" per op
  (``cupy_over_cuda`` <= 1.1 counts as "as fast").

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


def sorted_log(xp, n_events, mean_len, seed, n_cats=20):
    """(user, time, category, seg_ptr) of a log already in (user, time) order: the
    same user lengths as window_graph_csr, integer times with ties."""
    rng = np.random.default_rng(seed)
    lens = rng.geometric(1.0 / mean_len, size=max(1, 2 * n_events // mean_len))
    lens = lens[np.cumsum(lens) <= n_events]
    lens = np.append(lens, n_events - lens.sum()) if lens.sum() < n_events else lens
    seg_ptr = np.zeros(lens.shape[0] + 1, np.int64)
    np.cumsum(lens, out=seg_ptr[1:])
    seg_ptr = xp.asarray(seg_ptr)
    rs = xp.random.RandomState(seed)
    user = xp.repeat(xp.arange(seg_ptr.shape[0] - 1, dtype=np.int64), xp.diff(seg_ptr))
    gaps = rs.randint(0, 600, n_events).astype(np.int64)  # 0: a tie with the previous event
    time = xp.cumsum(gaps)
    time -= xp.repeat(time[seg_ptr[:-1]], xp.diff(seg_ptr))  # each user starts at 0, ascending
    category = rs.randint(0, n_cats, n_events).astype(np.int64)
    return user, time, category, seg_ptr


def topk_peer(xp, Q, items, k, rows_block):
    """The obvious GPU/CPU top-k: full score rows per block, argpartition, sort the k."""
    out_i = xp.empty((Q.shape[0], k), dtype=np.int64)
    out_s = xp.empty((Q.shape[0], k), dtype=Q.dtype)
    for r0 in range(0, Q.shape[0], rows_block):
        S = Q[r0:r0 + rows_block] @ items.T
        part = xp.argpartition(-S, k - 1, axis=1)[:, :k]
        ps = xp.take_along_axis(S, part, axis=1)
        order = xp.argsort(-ps, axis=1)
        out_i[r0:r0 + rows_block] = xp.take_along_axis(part, order, axis=1)
        out_s[r0:r0 + rows_block] = xp.take_along_axis(ps, order, axis=1)
    return out_i, out_s


def session_workload(n_seq, seed, n_items=40_000):
    """SR-GNN-like sessions (CSR, NumPy): lengths geometric (mean ~5.5, <= 40), Zipf-ish items >= 1
    (``stgkern.bench.workloads.session_batches``, one batch)."""
    from stgkern.bench.workloads import session_batches
    return session_batches(1, n_seq, np.random.default_rng(seed), n_items=n_items)[0]


def sequence_workload(n_pos, mean_len, seed, n_items=40_000):
    """Per-user item and time sequences (CSR, NumPy): lengths geometric, Zipf-ish items in
    [0, n_items), integer times ascending within a user with ties."""
    rng = np.random.default_rng(seed)
    lens = rng.geometric(1.0 / mean_len, size=max(1, 2 * n_pos // mean_len))
    lens = lens[np.cumsum(lens) <= n_pos]
    ptr = np.zeros(lens.shape[0] + 1, np.int64)
    np.cumsum(lens, out=ptr[1:])
    items = (rng.zipf(1.3, ptr[-1]) % n_items).astype(np.int64)
    gaps = rng.integers(0, 3600, ptr[-1]) * (rng.random(ptr[-1]) < 0.9)  # 10% ties
    times = np.cumsum(gaps).astype(np.int64)
    times -= np.repeat(times[ptr[:-1]], lens)
    return ptr, items, times


def item_graph_composition(xp, ptr, items, n_items, epsilon=3, top=12):
    """GCE-GNN's graph from array operations only: the pairs of every offset k by a mask, their
    visiting index (sequence, k, j, direction) from closed-form offsets, a stable sort by
    (item, neighbour), runs, a sort by (item, count desc, first appearance), top per row."""
    from stgkern._cuda.item_graph import stable_order
    n_pos, n_seq = int(items.shape[0]), int(ptr.shape[0]) - 1
    idx_dtype = np.int32 if n_items <= np.iinfo(np.int32).max else np.int64
    lens = ptr[1:] - ptr[:-1]
    seq = xp.searchsorted(ptr, xp.arange(n_pos), side="right") - 1
    j = xp.arange(n_pos) - ptr[seq]
    K = xp.maximum(xp.minimum(lens - 1, epsilon), 0)
    base = xp.zeros(n_seq + 1, np.int64)
    base[1:] = xp.cumsum(2 * (K * lens - K * (K + 1) // 2))
    off = xp.zeros(n_seq, np.int64)  # 2 * sum_{k' < k} max(L - k', 0)
    rows, nbrs, vis = [], [], []
    for k in range(1, epsilon + 1):
        p = xp.flatnonzero(j + k < lens[seq])
        if p.shape[0] == 0:
            break
        a, b, s = items[p], items[p + k], seq[p]
        i = base[s] + off[s] + 2 * j[p]
        rows += [a, b]
        nbrs += [b, a]
        vis += [i, i + 1]
        off += 2 * xp.maximum(lens - k, 0)
    P = int(base[-1])
    if P == 0:
        return (xp.zeros(n_items + 1, np.int64), xp.zeros(0, idx_dtype), xp.zeros(0, np.int64),
                xp.zeros(n_items, np.int64))
    row, nbr, vis = xp.concatenate(rows), xp.concatenate(nbrs), xp.concatenate(vis)
    order = stable_order([row, nbr, vis], [n_items, n_items, P], xp=xp)
    row, nbr, vis = row[order], nbr[order], vis[order]
    head = xp.ones(P, bool)
    head[1:] = (row[1:] != row[:-1]) | (nbr[1:] != nbr[:-1])
    h = xp.flatnonzero(head)
    cnt = xp.diff(xp.concatenate([h, xp.asarray([P])]))
    grow, gnb, first = row[h], nbr[h], vis[h]
    maxc = int(cnt.max())
    rank = stable_order([grow, maxc - cnt, first], [n_items, maxc, P], xp=xp)
    grow, gnb, cnt = grow[rank], gnb[rank], cnt[rank]
    gstart = xp.searchsorted(grow, xp.arange(n_items + 1), side="left")
    n_nb = (gstart[1:] - gstart[:-1]).astype(np.int64)
    keep = xp.arange(grow.shape[0]) - gstart[grow] < top
    indptr = xp.zeros(n_items + 1, np.int64)
    indptr[1:] = xp.cumsum(xp.minimum(n_nb, top))
    return indptr, gnb[keep].astype(idx_dtype), cnt[keep], n_nb


def time_intervals_composition(xp, ptr, times, drop, maxlen=50, span=256):
    """TiSASRec's rescaling and matrices from array operations: each user's smallest non-zero gap
    from a sort of (user, gap), ``rint`` (half to even), a gathered left-padded (users, maxlen)
    row and one broadcast |difference| clipped at span.  Times sorted within users."""
    n, n_seq = int(times.shape[0]), int(ptr.shape[0]) - 1
    seq = xp.searchsorted(ptr, xp.arange(n), side="right") - 1
    gap = times[1:] - times[:-1]
    inside = xp.flatnonzero((seq[1:] == seq[:-1]) & (gap != 0))
    gs, gg = seq[inside], gap[inside]
    o = xp.lexsort(xp.stack([gg.astype(np.float64), gs.astype(np.float64)]))
    gs, gg = gs[o], gg[o]
    users = xp.arange(n_seq)
    at = xp.minimum(xp.searchsorted(gs, users, side="left"), max(gs.shape[0] - 1, 0))
    has = (gs[at] == users) if gs.shape[0] else xp.zeros(n_seq, bool)
    scale = xp.where(has, gg[at].astype(np.float64) if gs.shape[0] else 1.0, 1.0)
    resc = xp.rint((times - times[ptr[:-1][seq]]).astype(np.float64) / scale[seq]) + 1.0
    end = ptr[1:] - drop
    kept = xp.clip(end - ptr[:-1], 0, maxlen)
    col = xp.arange(maxlen)
    src = xp.clip(end[:, None] - maxlen + col[None, :], 0, max(n - 1, 0))
    rows = xp.where(col[None, :] >= maxlen - kept[:, None], resc[src] if n else 0, 0).astype(np.int32)
    mats = xp.minimum(xp.abs(rows[:, :, None].astype(np.int64) - rows[:, None, :]), span).astype(np.int32)
    return mats, rows


# ------------------------------------------------------------------ timing
def sce_peer(xp, Q, items, target, bias):
    """The obvious full-softmax loss: the whole (m, n_items) score matrix, log-softmax, gather."""
    S = Q @ items.T + bias
    mx = S.max(axis=1, keepdims=True)
    lse = mx[:, 0] + xp.log(xp.exp(S - mx).sum(axis=1))
    return lse - S[xp.arange(Q.shape[0]), target], lse, S


def sce_peer_backward(xp, g, Q, items, target, bias):
    """Its backward: softmax minus the one-hot, scaled per row, through three products."""
    _, lse, P = sce_peer(xp, Q, items, target, bias)
    P = xp.exp(P - lse[:, None].astype(P.dtype))
    P[xp.arange(Q.shape[0]), target] -= 1
    P *= g[:, None]
    return P @ items, P.T @ Q, P.sum(axis=0)


def cpu_time(fn, reps):
    fn()  # warm-up: Numba loads its cache or compiles
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


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
        floor = 8 * nnz + 8 * n * F  # perfect reuse of X (docs/design.md)
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
    run_gpu_topk(args, res, record)
    try:
        run_gpu_score_ce(args, res, record)
    except Exception:  # a new kernel: keep everything measured so far, fail the run
        import traceback
        res["checks"]["score_ce"] = False
        res["score_ce_error"] = traceback.format_exc()
        print(res["score_ce_error"], file=sys.stderr, flush=True)
    cp.get_default_memory_pool().free_all_blocks()
    run_gpu_features(args, res, record)
    run_gpu_window_graph(args, res, record)
    try:
        run_gpu_compat(args, res, record)
    except Exception:  # new kernels: keep everything measured so far, fail the run
        import traceback
        res["checks"]["compat"] = False
        res["compat_error"] = traceback.format_exc()
        print(res["compat_error"], file=sys.stderr, flush=True)
    from stgkern import _cuda
    res["loader"] = _cuda.info()
    return res


def run_gpu_topk(args, res, record):
    import cupy as cp

    import stgkern
    from stgkern import config
    rs = cp.random.RandomState(6)
    m, n_items, d, k = args.topk_queries, args.topk_items, 64, 100
    Q = rs.standard_normal((m, d), dtype=np.float32)
    items = rs.standard_normal((n_items, d), dtype=np.float32)
    gi, gs = stgkern.topk(Q, items, k)
    pi, ps = topk_peer(cp, Q, items, k, 256)
    res["checks"]["topk/peer_scores"] = check("topk/peer_scores", gs, ps, rtol=1e-5, atol=1e-4)
    same = float((cp.sort(gi, axis=1) == cp.sort(pi, axis=1)).mean())
    res["topk_index_agreement_vs_peer"] = same  # < 1 only through float ties / near-ties
    rows = np.arange(0, m, max(1, m // 16))
    ci, cs = stgkern.topk(cp.asnumpy(Q[rows]), cp.asnumpy(items), k)
    res["checks"]["topk/cpu_scores"] = bool(np.allclose(cp.asnumpy(gs[rows]), cs, rtol=1e-5, atol=1e-4))
    res["topk_index_agreement_vs_cpu"] = float((cp.asnumpy(gi[rows]) == ci).mean())
    flops = 2.0 * m * n_items * d
    t = gpu_time(lambda: stgkern.topk(Q, items, k), args.reps)
    tp = gpu_time(lambda: topk_peer(cp, Q, items, k, 256), min(args.reps, 3))  # the peer sorts: slow
    rb, ib = int(config.topk_block_rows), int(config.topk_block_items)
    buf = cp.empty(rb * ib, cp.float32)

    def matmul_only():  # the same tiles as stgkern's topk, no selection
        for c0 in range(0, n_items, ib):
            blk = items[c0:c0 + ib]
            for r0 in range(0, m, rb):
                r = min(rb, m - r0)
                cp.matmul(Q[r0:r0 + r], blk.T, out=buf[:r * blk.shape[0]].reshape(r, blk.shape[0]))
    tm = gpu_time(matmul_only, args.reps)
    floor = 4 * (n_items * d + m * d) + 12 * m * k
    record(f"topk_k{k}_m{m}", f"{n_items // 10**6}M items", t, floor, "cupy matmul+argpartition", tp, flops)
    record(f"topk_matmul_only_m{m}", f"{n_items // 10**6}M items", tm, floor, flops=flops)
    res["topk_selection_overhead"] = t / tm
    del Q, items, buf
    cp.get_default_memory_pool().free_all_blocks()


def run_gpu_score_ce(args, res, record):
    import cupy as cp

    import stgkern
    m, n, d = args.sce_queries, args.sce_items, 64
    rs = cp.random.RandomState(11)
    Q = rs.standard_normal((m, d), dtype=np.float32)
    items = (0.5 * rs.standard_normal((n, d), dtype=np.float32))
    bias = rs.standard_normal(n, dtype=np.float32)
    target = rs.randint(0, n, m).astype(np.int64)
    g = rs.random_sample(m, dtype=np.float32)
    loss, lse = stgkern.score_cross_entropy(Q, items, target, bias, return_lse=True)
    pl = sce_peer(cp, Q, items, target, bias)[0]
    res["checks"]["score_ce/peer_loss"] = check("score_ce/peer_loss", loss, pl, rtol=1e-4, atol=1e-3)
    grads = stgkern.score_cross_entropy_backward(g, Q, items, target, lse, bias)
    for name, got, want in zip(("grad_Q", "grad_items", "grad_bias"), grads,
                               sce_peer_backward(cp, g, Q, items, target, bias)):
        res["checks"][f"score_ce/peer_{name}"] = check(f"score_ce/peer_{name}", got, want, rtol=1e-3, atol=1e-4)
    rows = cp.asnumpy(cp.random.RandomState(12).choice(m, 64, replace=False))
    cl = stgkern.score_cross_entropy(cp.asnumpy(Q[rows]), cp.asnumpy(items), cp.asnumpy(target[rows]),
                                     cp.asnumpy(bias))
    res["checks"]["score_ce/cpu_loss"] = bool(np.allclose(cp.asnumpy(loss[rows]), cl, rtol=1e-4, atol=1e-4))
    del pl, grads
    cp.get_default_memory_pool().free_all_blocks()
    # floor: the tiled design's unavoidable traffic, one write and one read of each
    # logit (4 bytes each way); the products' FLOPs (2 m n d each) are the other bound
    floor = 8 * m * n
    t = gpu_time(lambda: stgkern.score_cross_entropy(Q, items, target, bias), args.reps)
    tp = gpu_time(lambda: sce_peer(cp, Q, items, target, bias), args.reps)
    record(f"score_ce_fwd_m{m}_d{d}", f"{n // 1000}k items", t, floor, "cupy matmul+log-softmax+gather", tp,
           2 * m * n * d)
    t = gpu_time(lambda: stgkern.score_cross_entropy_backward(g, Q, items, target, lse, bias), args.reps)
    tp = gpu_time(lambda: sce_peer_backward(cp, g, Q, items, target, bias), args.reps)
    record(f"score_ce_bwd_m{m}_d{d}", f"{n // 1000}k items", t, floor, "cupy composition backward", tp,
           6 * m * n * d)
    # the kept-logits path (what the torch wrapper takes below config.score_keep_bytes): the
    # forward returns Q @ items.T, the backward overwrites it and forms two products, not three
    _, lse_k, logits = stgkern.score_cross_entropy(Q, items, target, bias, return_lse=True, return_logits=True)
    kept = stgkern.score_cross_entropy_backward(g, Q, items, target, lse_k, bias, logits=logits)
    for name, got, want in zip(("grad_Q", "grad_items", "grad_bias"), kept,
                               stgkern.score_cross_entropy_backward(g, Q, items, target, lse, bias)):
        res["checks"][f"score_ce/kept_{name}"] = check(f"score_ce/kept_{name}", got, want, rtol=1e-4, atol=1e-5)
    del kept, logits
    cp.get_default_memory_pool().free_all_blocks()

    def kept_step():
        _, lk, lg = stgkern.score_cross_entropy(Q, items, target, bias, return_lse=True, return_logits=True)
        stgkern.score_cross_entropy_backward(g, Q, items, target, lk, bias, logits=lg)

    def tiled_step():
        _, lk = stgkern.score_cross_entropy(Q, items, target, bias, return_lse=True)
        stgkern.score_cross_entropy_backward(g, Q, items, target, lk, bias)

    t = gpu_time(kept_step, args.reps)
    tp = gpu_time(tiled_step, args.reps)
    record(f"score_ce_step_kept_m{m}_d{d}", f"{n // 1000}k items", t, 2 * floor, "tiled forward+backward", tp,
           6 * m * n * d)


def run_gpu_features(args, res, record):
    import cupy as cp

    import stgkern
    n = args.events
    rs = cp.random.RandomState(7)
    dt = rs.randint(0, 10**6, n).astype(np.int64)
    got = stgkern.time_decay(dt, 3600.0)
    res["checks"]["time_decay"] = check("time_decay", got, cp.exp(dt.astype(np.float64) * (-1 / 3600.0))
                                        .astype(np.float32), rtol=1e-6, atol=1e-7)
    t = gpu_time(lambda: stgkern.time_decay(dt, 3600.0), args.reps)
    tp = gpu_time(lambda: cp.exp(dt.astype(np.float64) * (-1 / 3600.0)).astype(np.float32), args.reps)
    record("time_decay", f"{n // 10**6}M edges", t, 12 * n, "cupy exp(astype)", tp)
    dim = 16
    from stgkern.features import default_omega
    omega = cp.asarray(default_omega(dim))
    sub = dt[: 1 << 20]
    got = stgkern.time_encoding(sub, dim)
    res["checks"]["time_encoding/cpu"] = bool(np.allclose(cp.asnumpy(got), stgkern.time_encoding(cp.asnumpy(sub), dim),
                                                          rtol=1e-5, atol=1e-6))

    def peer_te():
        return cp.cos(dt.astype(np.float64)[:, None] * omega[None, :]).astype(np.float32)
    t = gpu_time(lambda: stgkern.time_encoding(dt, dim), args.reps)
    tp = gpu_time(peer_te, args.reps)
    record(f"time_encoding_d{dim}", f"{n // 10**6}M edges", t, 8 * n + 4 * n * dim, "cupy cos(outer)", tp)
    del dt, sub
    user, time_, category, seg_ptr = sorted_log(cp, n, 50, seed=8)
    behavior = cp.random.RandomState(9).randint(0, 4, n).astype(np.int64)
    value = cp.random.RandomState(10).random_sample(n)
    log = {"user": user, "time": time_, "behavior": behavior, "value": value}
    got = stgkern.node_features(log, n_behaviors=4)
    m = 1 << 20
    small = {k: cp.asnumpy(v[:m]) for k, v in log.items()}
    res["checks"]["node_features/cpu"] = bool(np.allclose(cp.asnumpy(got[:m]), stgkern.node_features(small, n_behaviors=4),
                                                          rtol=1e-6, atol=0))
    d = got.shape[1]
    t = gpu_time(lambda: stgkern.node_features(log, n_behaviors=4), args.reps)
    record(f"node_features_d{d}", f"{n // 10**6}M events", t, 4 * n * d + 32 * n)
    del log, got, user, time_, category, seg_ptr, behavior, value
    cp.get_default_memory_pool().free_all_blocks()


def run_gpu_window_graph(args, res, record):
    import cupy as cp

    import stgkern
    from stgkern._cuda import window_graph as wg
    n = args.events
    user, time_, category, seg_ptr = sorted_log(cp, n, 50, seed=1)
    indptr, indices = window_graph_csr(cp, n, args.window, 50, seed=1)  # same user lengths
    out = wg.build(seg_ptr, time_, None, args.window, None, False, 0, False, np.int32)
    res["checks"]["window_graph/csr"] = bool((out[0] == indptr).all()) and bool((out[1] == indices).all())
    nnz = int(out[0][-1])
    del out
    t = gpu_time(lambda: wg.build(seg_ptr, time_, None, args.window, None, False, 0, False, np.int32), args.reps)
    floor = 16 * n + nnz * (4 + 8 + 4 + 1) + 8 * n
    record(f"window_graph_w{args.window}", f"{n // 10**6}M events", t, floor)
    kw = dict(window=args.window, horizon=3600, strict_time=True, category_window=2, self_loops=True)
    t = gpu_time(lambda: wg.build(seg_ptr, time_, category, kw["window"], kw["horizon"], True, 2, True, np.int32),
                 args.reps)
    record(f"window_graph_w{args.window}_cat2_h3600", f"{n // 10**6}M events", t, floor)
    # the CPU builder on a slice of whole users
    cut = int(seg_ptr[min(seg_ptr.shape[0] - 1, int(cp.searchsorted(seg_ptr, 1 << 20)))])
    sp_ = seg_ptr[seg_ptr <= cut]
    got = wg.build(sp_, time_[:cut], category[:cut], kw["window"], kw["horizon"], True, 2, True, np.int32)
    g = stgkern.window_graph(cp.asnumpy(user[:cut]), cp.asnumpy(time_[:cut]), cp.asnumpy(category[:cut]), **kw)
    ok = bool(np.array_equal(cp.asnumpy(got[0]), g.indptr) and np.array_equal(cp.asnumpy(got[1]), g.indices))
    for name, a in zip(("dt", "hop", "kind"), got[2:]):
        ok = ok and bool(np.array_equal(cp.asnumpy(a), g.edata[name]))
    res["checks"]["window_graph/cpu"] = ok
    del user, time_, category, seg_ptr, indptr, indices, got
    cp.get_default_memory_pool().free_all_blocks()


def _equal(got, want):
    import cupy as cp
    return len(got) == len(want) and all(
        g.dtype == w.dtype and g.shape == w.shape and bool(np.array_equal(cp.asnumpy(g), w)) for g, w in zip(got, want))


def _k(n):
    return f"{n // 1000}k" if n >= 1000 else str(n)


def _compare_session_graph(compare, ptr, items, gp, gi):
    from stgkern._cuda import session_graph as sg_gpu
    from stgkern._numba import session_graph as sg_cpu
    n_seq = int(ptr.shape[0]) - 1
    ref = sg_cpu.session_graph(ptr, items, np.float32)
    ok = _equal(sg_gpu.session_graph(gp, gi, np.float32), ref)
    ok_peer = _equal(sg_gpu.session_graph_sorted(gp, gi, np.float32), ref)
    n_pos, n_nodes, nnz = int(ptr[-1]), int(ref[4][-1]), int(ref[0][-1])
    floor = 24 * n_pos + 16 * n_nodes + 12 * nnz  # items in, alias, node items, rows, columns, weights out
    compare(f"session_graph_b{_k(n_seq)}", f"{_k(n_seq)} sess", floor, lambda: sg_gpu.session_graph(gp, gi, np.float32),
            lambda: sg_cpu.session_graph(ptr, items, np.float32),
            lambda: sg_gpu.session_graph_sorted(gp, gi, np.float32), ok, ok_peer)


def _compare_layout(compare, ptr, items, gp, gi):
    from stgkern import config
    from stgkern._cuda import session_graph as sg_gpu
    from stgkern._numba import session_graph as sg_cpu
    n_seq, n_pos = int(ptr.shape[0]) - 1, int(ptr[-1])
    len_max = int(np.diff(ptr).max())
    ref = sg_cpu.srgnn_layout(ptr, items, len_max, sg_cpu.srgnn_layout_size(ptr, items, len_max))

    def layout(long_row=None):  # long_row 0: every session takes the sort-based composition
        with config.override(cuda_long_row=config.cuda_long_row if long_row is None else long_row):
            return sg_gpu.srgnn_layout(gp, gi, len_max, sg_gpu.srgnn_layout_size(gp, gi, len_max))
    ok, ok_peer = _equal(layout(), ref), _equal(layout(0), ref)
    floor = 8 * n_pos + sum(int(a.nbytes) for a in ref)
    compare(f"srgnn_layout_b{_k(n_seq)}", f"{_k(n_seq)} sess", floor, layout,
            lambda: sg_cpu.srgnn_layout(ptr, items, len_max, sg_cpu.srgnn_layout_size(ptr, items, len_max)),
            lambda: layout(0), ok, ok_peer)


def run_gpu_compat(args, res, record):
    """The compatibility builders: CUDA kernels vs the Numba backend vs a pure-CuPy composition.

    The backends are timed directly (validated input, no front door): CUDA and
    CuPy with CUDA events, Numba with the wall clock after a warm-up call.
    """
    import cupy as cp

    from stgkern._cuda import item_graph as ig_gpu, time_intervals as ti_gpu
    from stgkern._numba import item_graph as ig_cpu, time_intervals as ti_cpu
    out = res.setdefault("compat", {})
    cpu_reps = max(1, min(args.reps, 3))

    def compare(name, label, floor, cuda, numba, cupy_peer, ok, ok_peer):
        t, tc = gpu_time(cuda, args.reps), cpu_time(numba, cpu_reps)
        tp = gpu_time(cupy_peer, args.reps)
        record(f"{name} vs numba", label, t, floor, "numba (CPU, all cores)", tc)
        record(f"{name} vs cupy", label, t, floor, "pure-CuPy composition", tp)
        res["checks"][f"{name}/cpu"] = ok
        res["checks"][f"{name}/cupy_composition"] = ok_peer
        out[name] = {"workload": label, "cuda_ms": t * 1e3, "numba_ms": tc * 1e3, "cupy_ms": tp * 1e3,
                     "cupy_over_cuda": tp / t, "cupy_as_fast": tp <= 1.1 * t}

    # SR-GNN: one training batch (latency), a large batch (throughput); the dense layout
    # (n_seq x M x 2M float64) only up to a few thousand sessions
    for n_seq, graph, layout in ((100, True, True), (args.sg_sessions, True, False), (2_000, False, True)):
        ptr, items = session_workload(n_seq, seed=11)
        gp, gi = cp.asarray(ptr), cp.asarray(items)
        if graph:
            _compare_session_graph(compare, ptr, items, gp, gi)
        if layout:
            _compare_layout(compare, ptr, items, gp, gi)
        del gp, gi

    # GCE-GNN: ~1M positions, the published epsilon and top
    ptr, items, times = sequence_workload(args.ig_events, 10, seed=12)
    n_items = int(items.max()) + 1
    gp, gi = cp.asarray(ptr), cp.asarray(items)
    ref = ig_cpu.item_graph(ptr, items, n_items, 3, 12)
    ok = _equal(ig_gpu.item_graph(gp, gi, n_items, 3, 12), ref)
    ok_peer = _equal(item_graph_composition(cp, gp, gi, n_items, 3, 12), ref)
    n_pairs = ig_cpu.n_pairs(ptr, 3)
    floor = 8 * int(ptr[-1]) + 16 * n_pairs + 8 * n_items + 12 * int(ref[0][-1])  # pairs written and read once
    compare("item_graph_eps3_top12", f"{_k(int(ptr[-1]))} pos", floor,
            lambda: ig_gpu.item_graph(gp, gi, n_items, 3, 12), lambda: ig_cpu.item_graph(ptr, items, n_items, 3, 12),
            lambda: item_graph_composition(cp, gp, gi, n_items, 3, 12), ok, ok_peer)
    out["item_graph_eps3_top12"].update(positions=int(ptr[-1]), pairs=n_pairs, n_items=n_items)
    del gp, gi, ref

    # TiSASRec: users of ~50 events, maxlen 50, the published leave-two-out drop
    ptr, items, times = sequence_workload(50 * args.ti_users, 50, seed=13)
    lens = np.diff(ptr)
    drop = np.minimum(np.where(lens >= 3, 3, 1), lens).astype(np.int64)
    gp, gt, gd = cp.asarray(ptr), cp.asarray(times), cp.asarray(drop)

    def cuda():
        return ti_gpu.time_intervals(gp, ti_gpu.rescale(gp, gt), gd, 50, 256)

    def numba():
        return ti_cpu.time_intervals(ptr, ti_cpu.rescale(ptr, times), drop, 50, 256)
    ref = numba()
    ok = _equal(cuda(), ref)
    ok_peer = _equal(time_intervals_composition(cp, gp, gt, gd, 50, 256), ref)
    n_seq = int(ptr.shape[0]) - 1
    floor = 16 * int(ptr[-1]) + n_seq * 50 * 51 * 4
    compare("time_intervals_maxlen50", f"{_k(n_seq)} users", floor, cuda, numba,
            lambda: time_intervals_composition(cp, gp, gt, gd, 50, 256), ok, ok_peer)
    del gp, gt, gd, ref
    cp.get_default_memory_pool().free_all_blocks()


def run_cpu_smoke_compat(args):
    """The compat workloads at small size: the compositions (NumPy) equal the Numba backends."""
    from stgkern._numba import item_graph as ig_cpu, session_graph as sg_cpu, time_intervals as ti_cpu
    ptr, items = session_workload(args.sg_sessions, seed=11)
    g = sg_cpu.session_graph(ptr, items, np.float32)
    out = {"session_graph": {"sessions": int(ptr.shape[0]) - 1, "positions": int(ptr[-1]), "edges": int(g[0][-1])}}
    ptr, items, times = sequence_workload(args.ig_events, 10, seed=12)
    n_items = int(items.max()) + 1
    ref = ig_cpu.item_graph(ptr, items, n_items, 3, 12)
    got = item_graph_composition(np, ptr, items, n_items, 3, 12)
    out["item_graph"] = {"positions": int(ptr[-1]), "composition_equals_numba":
                         all(g.dtype == r.dtype and np.array_equal(g, r) for g, r in zip(got, ref))}
    ptr, items, times = sequence_workload(50 * args.ti_users, 50, seed=13)
    lens = np.diff(ptr)
    drop = np.minimum(np.where(lens >= 3, 3, 1), lens).astype(np.int64)
    ref = ti_cpu.time_intervals(ptr, ti_cpu.rescale(ptr, times), drop, 50, 256)
    got = time_intervals_composition(np, ptr, times, drop, 50, 256)
    out["time_intervals"] = {"users": int(ptr.shape[0]) - 1, "composition_equals_numba":
                             all(g.dtype == r.dtype and np.array_equal(g, r) for g, r in zip(got, ref))}
    return out


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
    # topk: the peer and the CPU backend agree at small size
    rng = np.random.default_rng(6)
    Q = rng.standard_normal((64, 64)).astype(np.float32)
    items = rng.standard_normal((args.topk_items, 64)).astype(np.float32)
    ci, cs = stgkern.topk(Q, items, 100)
    pi, ps = topk_peer(np, Q, items, 100, 16)
    res["topk"] = {"items": args.topk_items, "scores_vs_peer": bool(np.allclose(cs, ps, rtol=1e-5, atol=1e-4))}
    # score_cross_entropy: the peer composition and the CPU backend agree at small size
    Q = rng.standard_normal((64, 64)).astype(np.float32)
    bias = rng.standard_normal(args.sce_items).astype(np.float32)
    target = rng.integers(0, args.sce_items, 64)
    g = rng.random(64).astype(np.float32)
    loss, lse = stgkern.score_cross_entropy(Q, items[:args.sce_items], target, bias, return_lse=True)
    grads = stgkern.score_cross_entropy_backward(g, Q, items[:args.sce_items], target, lse, bias)
    peer = sce_peer_backward(np, g, Q, items[:args.sce_items], target, bias)
    res["score_ce"] = {"items": args.sce_items, "loss_vs_peer": bool(np.allclose(
        loss, sce_peer(np, Q, items[:args.sce_items], target, bias)[0], rtol=1e-4, atol=1e-4)),
        "grads_vs_peer": all(bool(np.allclose(a, b, rtol=1e-3, atol=1e-4)) for a, b in zip(grads, peer))}
    # the sorted log matches the window-graph generator and the CPU builder takes it
    user, time_, category, seg_ptr = sorted_log(np, args.events, 50, seed=1)
    indptr, indices = window_graph_csr(np, args.events, args.window, 50, seed=1)
    g = stgkern.window_graph(user, time_, category, window=args.window)
    res["window_graph"] = {"sorted_log_matches_generator": bool(np.array_equal(g.indptr, indptr)
                                                                 and np.array_equal(g.indices, indices)),
                           "ties": int((np.diff(time_) == 0).sum())}
    behavior = rng.integers(0, 4, args.events)
    X = stgkern.node_features({"user": user, "time": time_, "behavior": behavior, "value": None}, n_behaviors=4)
    res["node_features_shape"] = list(X.shape)
    res["compat"] = run_cpu_smoke_compat(args)
    print(res["topk"], res["score_ce"], res["window_graph"], res["compat"], flush=True)
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
        lines.append(json.dumps({k: res[k] for k in ("graphs", "topk", "score_ce", "window_graph", "compat") if k in res}))
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
    ap.add_argument("--topk-items", type=int, default=None, help="topk catalogue (1M; 20k with --cpu-smoke)")
    ap.add_argument("--topk-queries", type=int, default=4096)
    ap.add_argument("--sce-queries", type=int, default=4096)
    ap.add_argument("--sce-items", type=int, default=None,
                    help="score_cross_entropy catalogue (200k: the peer's (m, n) matrices fit; 20k with --cpu-smoke)")
    ap.add_argument("--sg-sessions", type=int, default=None, help="sessions of the large SR-GNN batch (100k; 2k smoke)")
    ap.add_argument("--ig-events", type=int, default=None, help="item_graph positions (1M; 20k with --cpu-smoke)")
    ap.add_argument("--ti-users", type=int, default=None, help="time_intervals users (20k; 300 with --cpu-smoke)")
    args = ap.parse_args(argv)
    small = args.cpu_smoke
    args.events = args.events or (20_000 if small else 20_000_000)
    args.pl_nodes = args.pl_nodes or (5_000 if small else 5_000_000)
    args.pl_edges = args.pl_edges or (80_000 if small else 80_000_000)
    args.topk_items = args.topk_items or (20_000 if small else 1_000_000)
    args.sce_items = args.sce_items or (20_000 if small else 200_000)
    args.sg_sessions = args.sg_sessions or (2_000 if small else 100_000)
    args.ig_events = args.ig_events or (20_000 if small else 1_000_000)
    args.ti_users = args.ti_users or (300 if small else 20_000)
    res = run_cpu_smoke(args) if small else run_gpu(args)
    write(res, Path(args.out_dir))
    ok = all(v is True or isinstance(v, str) for v in res.get("checks", {}).values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
