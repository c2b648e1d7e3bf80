"""window_graph vs a vectorised NumPy build and a Python-loop builder.

pytest-benchmark suites (``pytest benchmarks/bench_construct.py --benchmark-enable``)
plus ``python benchmarks/bench_construct.py [n_events]``, which times
stgkern, the NumPy peer and a memory copy of the same bytes in one run,
extrapolates the Python loop from a 50k-event slice, measures peak memory
with tracemalloc, and writes ``benchmarks/results/construct_cpu.json``.
"""
import json
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from stgkern.construct import window_graph  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "construct_cpu.json"
DAY = 86400
WINDOW = 8


def synthetic_log(n_events=5_000_000, n_users=100_000, seed=0):
    """Taobao-like: Zipf-ish user activity, events in global time order over ~9 days."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_users + 1) ** 0.8
    user = rng.choice(n_users, size=n_events, p=w / w.sum()).astype(np.int64)
    user = rng.permutation(n_users)[user]            # popular users are not the low ids
    time = np.sort(rng.integers(1_511_500_000, 1_512_300_000, n_events)).astype(np.int64)
    return user, time


def numpy_build(user, time, window=WINDOW, horizon=DAY):
    """Vectorised peer: sort, one masked pass per hop, then sort the edge list into CSR."""
    perm = np.lexsort((time, user))
    u, t = user[perm], time[perm]
    n = u.shape[0]
    dst, src, dts = [], [], []
    for h in range(1, window + 1):
        d = t[h:] - t[:-h]
        m = (u[h:] == u[:-h]) & (d <= horizon)
        i = np.flatnonzero(m) + h
        dst.append(i)
        src.append(i - h)
        dts.append(d[m])
    dst, src, dts = np.concatenate(dst), np.concatenate(src), np.concatenate(dts)
    order = np.lexsort((src, dst))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return indptr, src[order].astype(np.int32), dts[order], (dst - src)[order].astype(np.int32), perm


def python_build(user, time, window=WINDOW, horizon=DAY):
    """Python-loop peer: the way a data-loader script builds it (dict of per-user lists)."""
    by_user = {}
    for r, (u, t) in enumerate(zip(user.tolist(), time.tolist())):
        by_user.setdefault(u, []).append((t, r))
    indptr, indices, dts, hops, perm = [0], [], [], [], []
    for u in sorted(by_user):
        ev = sorted(by_user[u], key=lambda x: x[0])
        base = len(perm)
        for p, (t, r) in enumerate(ev):
            perm.append(r)
            for j in range(max(0, p - window), p):
                if t - ev[j][0] <= horizon:
                    indices.append(base + j)
                    dts.append(t - ev[j][0])
                    hops.append(p - j)
            indptr.append(len(indices))
    return indptr, indices, dts, hops, perm


def ours(user, time):
    return window_graph(user, time, window=WINDOW, horizon=DAY)


def best(fn, repeat=5):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


# ------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module")
def log_small():
    return synthetic_log(500_000, 10_000)


def test_bench_window_graph(benchmark, log_small):
    benchmark(ours, *log_small)


def test_bench_numpy_build(benchmark, log_small):
    benchmark(numpy_build, *log_small)


def test_peers_agree(log_small):
    u, t = log_small[0][:50_000], log_small[1][:50_000]
    g = ours(u, t)
    ip, ind, dt, hop, perm = numpy_build(u, t)
    np.testing.assert_array_equal(g.indptr, ip)
    np.testing.assert_array_equal(g.indices, ind)
    np.testing.assert_array_equal(g.edata["dt"], dt)
    py = python_build(u, t)
    np.testing.assert_array_equal(g.indices, py[1])


# ------------------------------------------------------------ __main__
def main(n_events=5_000_000):
    user, time_ = synthetic_log(n_events, max(1000, n_events // 50))
    n = user.shape[0]
    ours(user[:1000], time_[:1000])                 # JIT warm-up
    t_ours = best(lambda: ours(user, time_))
    g = ours(user, time_)
    nnz = g.nnz
    t_np = best(lambda: numpy_build(user, time_), repeat=2)
    m = 50_000
    us, ts = user[:m], time_[:m]
    t_py = best(lambda: python_build(us, ts), repeat=2)
    t_ours_slice = best(lambda: ours(us, ts))

    in_bytes = user.nbytes + time_.nbytes
    out_bytes = (g.indptr.nbytes + g.indices.nbytes + g.perm.nbytes + g.segment_ptr.nbytes
                 + sum(v.nbytes for v in g.edata.values()))
    moved = in_bytes + out_bytes
    src = np.ones(moved, dtype=np.uint8)
    dst = np.empty_like(src)
    t_copy = best(lambda: np.copyto(dst, src))
    del dst
    # window_graph writes into freshly allocated arrays (first-touch page faults): the same for the copy
    t_copy_fresh = best(lambda: np.copy(src))
    del src

    # where the time goes (same run): sort, gather, count pass, fill pass
    from stgkern._numba import window_graph as k
    perm, seg, ts = k.order_events(user, time_, 0, int(user.max()) + 1)
    ip = k.count(seg, ts, None, None, None, WINDOW, DAY, False, 0, False)
    phases = {
        "order_events_incl_time_gather": best(lambda: k.order_events(user, time_, 0, int(user.max()) + 1),
                                              repeat=3),
        "count_pass": best(lambda: k.count(seg, ts, None, None, None, WINDOW, DAY, False, 0, False), repeat=3),
        "fill_pass": best(lambda: k.fill(seg, ts, None, None, None, WINDOW, DAY, False, 0, False, ip, np.int32),
                          repeat=3),
    }
    del perm, seg, ts, ip

    tracemalloc.start()
    g2 = ours(user, time_)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del g2

    res = {
        "n_events": n, "nnz": nnz, "window": WINDOW, "horizon_s": DAY,
        "seconds": {"stgkern": t_ours, "numpy_build": t_np, "copy_same_bytes": t_copy,
                    "copy_same_bytes_fresh_output": t_copy_fresh,
                    "python_loop_50k": t_py, "stgkern_50k": t_ours_slice},
        "speedup_vs_numpy": t_np / t_ours,
        "speedup_vs_python_per_event": (t_py / m) / (t_ours / n),
        "speedup_vs_python_same_50k": t_py / t_ours_slice,
        "bytes_moved": moved, "effective_GBps": moved / t_ours / 1e9, "copy_GBps": moved / t_copy / 1e9,
        "pct_of_copy_bandwidth": 100.0 * t_copy / t_ours,
        "pct_of_fresh_copy_bandwidth": 100.0 * t_copy_fresh / t_ours,
        "peak_traced_bytes": peak, "output_bytes": out_bytes, "input_bytes": in_bytes,
        "peak_over_output": peak / out_bytes,
        "phase_seconds": phases,
        "machine": "2 shared cores (noisy), numpy %s" % np.__version__,
    }
    print(f"{'':28s}{'seconds':>10s}")
    for k, v in res["seconds"].items():
        print(f"{k:28s}{v:10.4f}")
    for name, v in phases.items():
        print(f"  phase {name:22s}{v:10.4f}")
    for k in ("nnz", "speedup_vs_numpy", "speedup_vs_python_per_event", "speedup_vs_python_same_50k",
              "effective_GBps", "copy_GBps", "pct_of_copy_bandwidth", "pct_of_fresh_copy_bandwidth",
              "peak_over_output"):
        print(f"{k:28s}{res[k]:10.3f}" if isinstance(res[k], float) else f"{k:28s}{res[k]:10d}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000)
