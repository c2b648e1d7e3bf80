"""window_graph vs a vectorised NumPy build and a Python-loop builder.

pytest-benchmark suites (``pytest benchmarks/bench_construct.py --benchmark-enable``)
plus ``python benchmarks/bench_construct.py [n_events]``, which times
stgkern, the NumPy peer and a memory copy of the same bytes in one run,
extrapolates the Python loop from a ~50k-event slice of whole users (linear in
events; see ``user_slice``), splits stgkern into phases, measures peak memory
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

from stgkern.bench import memcopy, workloads  # noqa: E402
from stgkern.construct import window_graph  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "construct_cpu.json"
DAY = 86400
WINDOW = 8


def synthetic_log(n_events=5_000_000, n_users=100_000, seed=0):
    """The shared construction input (``stgkern.bench.workloads.event_columns``)."""
    return workloads.event_columns(n_events, n_users, seed)


def numpy_build(user, time, window=WINDOW, horizon=DAY):
    """Vectorised peer: sort the events, one masked pass per hop, then one sort into CSR.

    Hops are concatenated from ``window`` down to 1, so a single stable sort by
    destination leaves each row's sources ascending (a two-key lexsort would
    do the same work twice)."""
    perm = np.lexsort((time, user))
    u, t = user[perm], time[perm]
    n = u.shape[0]
    dst, src, dts = [], [], []
    for h in range(window, 0, -1):
        d = t[h:] - t[:-h]
        m = (u[h:] == u[:-h]) & (d <= horizon)
        i = np.flatnonzero(m) + h
        dst.append(i)
        src.append(i - h)
        dts.append(d[m])
    dst, src, dts = np.concatenate(dst), np.concatenate(src), np.concatenate(dts)
    order = np.argsort(dst, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    src = src[order]
    return indptr, src.astype(np.int32), dts[order], (dst[order] - src).astype(np.int32), perm


def python_build(user, time, window=WINDOW, horizon=DAY):
    """Python-loop peer: the way a data-loader script builds it (dict of per-user lists,
    one loop over events, one over each event's window)."""
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
    rows, _ = user_slice(log_small[0])
    u, t = log_small[0][rows], log_small[1][rows]
    g = ours(u, t)
    ip, ind, dt, hop, perm = numpy_build(u, t)
    np.testing.assert_array_equal(g.indptr, ip)
    np.testing.assert_array_equal(g.indices, ind)
    np.testing.assert_array_equal(g.edata["dt"], dt)
    np.testing.assert_array_equal(g.edata["hop"], hop)
    np.testing.assert_array_equal(g.perm, perm)
    py = python_build(u, t)
    np.testing.assert_array_equal(g.indptr, py[0])
    np.testing.assert_array_equal(g.indices, py[1])
    np.testing.assert_array_equal(g.edata["dt"], py[2])


# ------------------------------------------------------------ __main__
def user_slice(user, target=50_000):
    """All events of every k-th user (ids are a random permutation of activity ranks),
    about ``target`` events: the slice keeps the per-user sequence lengths, so the
    edges per event match the full log (a slice of the first events would not: in a
    time-ordered log they are mostly each user's first, edge-less events)."""
    stride = max(1, user.shape[0] // target)
    return np.flatnonzero(user % stride == 0), stride


def phases(user, time_):
    """Seconds per phase of window_graph on this log (each timed on its own).  The count
    pass includes allocating indptr, where it leaves each row's sources for the fill."""
    from stgkern import construct as C
    from stgkern._numba import window_graph as k
    n_ids = int(user.max()) + 1
    scanned = C._scan_columns(user, time_, True)
    order = dict(is_sorted=scanned[2] < 0, time_sorted=scanned[3])
    _, seg, ts = k.order_events(user, time_, 0, n_ids, **order)

    def count():
        return k.count(seg, ts, None, WINDOW, DAY, False, 0, False)

    def fill_times(repeat=3):   # the fill uses up the count's row array: a fresh count each time
        out = []
        for _ in range(repeat + 1):
            counts = count()
            t0 = time.perf_counter()
            k.fill(ts, None, DAY, False, 0, False, counts, np.int32)
            out.append(time.perf_counter() - t0)
        return min(out[1:])

    return {
        "scan_validate": best(lambda: C._scan_columns(user, time_, True), repeat=3),
        "order_events": best(lambda: k.order_events(user, time_, 0, n_ids, **order), repeat=3),
        "count_pass": best(count, repeat=3),
        "fill_pass_incl_alloc": fill_times(),
    }


def main(n_events=5_000_000):
    user, time_ = synthetic_log(n_events, max(1000, n_events // 50))
    n = user.shape[0]
    ours(user[:1000], time_[:1000])                 # JIT warm-up
    t_ours = best(lambda: ours(user, time_))
    g = ours(user, time_)
    nnz = g.nnz
    us_sorted, ts_sorted = user[g.perm], time_[g.perm]
    ours(us_sorted, ts_sorted)
    t_ours_sorted = best(lambda: ours(us_sorted, ts_sorted))
    t_np = best(lambda: numpy_build(user, time_), repeat=3)

    rows, stride = user_slice(user)
    m = rows.shape[0]
    us, ts = user[rows], time_[rows]
    t_py = best(lambda: python_build(us, ts), repeat=2)
    t_ours_slice = best(lambda: ours(us, ts))
    nnz_slice = ours(us, ts).nnz
    first = 50_000                                  # the old, unrepresentative slice, for the record
    t_py_first = best(lambda: python_build(user[:first], time_[:first]), repeat=2)
    nnz_first = ours(user[:first], time_[:first]).nnz

    in_bytes = user.nbytes + time_.nbytes
    out_bytes = (g.indptr.nbytes + g.indices.nbytes + g.perm.nbytes + g.segment_ptr.nbytes
                 + sum(v.nbytes for v in g.edata.values()))
    moved = in_bytes + out_bytes
    src = np.ones(moved, dtype=np.uint8)
    dst = np.empty_like(src)
    # the faster of numpy's one-thread copy and the same copy over Numba's threads (stgkern.bench.memcopy)
    t_copy = memcopy.best_copy_time(dst, src)["best"]
    del dst

    def threaded_fresh():
        memcopy.threaded_copy(np.empty_like(src), src)

    # window_graph writes into freshly allocated arrays (first-touch page faults): the same for the copy
    t_copy_fresh = min(best(lambda: np.copy(src)), best(threaded_fresh))
    del src

    ph = phases(user, time_)
    ph_sorted = phases(us_sorted, ts_sorted)

    tracemalloc.start()
    g2 = ours(user, time_)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del g2

    res = {
        "n_events": n, "nnz": nnz, "window": WINDOW, "horizon_s": DAY,
        "seconds": {"stgkern": t_ours, "stgkern_presorted_input": t_ours_sorted, "numpy_build": t_np,
                    "copy_same_bytes": t_copy, "copy_same_bytes_fresh_output": t_copy_fresh,
                    "python_loop_user_slice": t_py, "stgkern_user_slice": t_ours_slice,
                    "python_loop_first_50k_events": t_py_first},
        "python_slice": {"events": m, "every_kth_user": stride, "nnz": nnz_slice,
                         "edges_per_event": nnz_slice / m, "full_log_edges_per_event": nnz / n,
                         "first_50k_events_edges_per_event": nnz_first / first,
                         "note": "Python loop timed on all events of every k-th user and scaled "
                                 "linearly per event to the full log"},
        "speedup_vs_numpy": t_np / t_ours,
        "speedup_vs_python_per_event": (t_py / m) / (t_ours / n),
        "speedup_vs_python_same_slice": t_py / t_ours_slice,
        "bytes_moved": moved, "effective_GBps": moved / t_ours / 1e9, "copy_GBps": moved / t_copy / 1e9,
        "pct_of_copy_bandwidth": 100.0 * t_copy / t_ours,
        "pct_of_fresh_copy_bandwidth": 100.0 * t_copy_fresh / t_ours,
        "pct_of_copy_bandwidth_presorted": 100.0 * t_copy / t_ours_sorted,
        "peak_traced_bytes": peak, "output_bytes": out_bytes, "input_bytes": in_bytes,
        "peak_over_output": peak / out_bytes,
        "input_plus_peak_over_input_plus_output": (in_bytes + peak) / moved,
        "phase_seconds": ph,
        "phase_seconds_presorted_input": ph_sorted,
        "machine": "2 shared cores (noisy), numpy %s, numba %s" % (np.__version__, __import__("numba").__version__),
        "load_average_1_5_15_at_end": list(__import__("os").getloadavg()),
    }
    print(f"{'':34s}{'seconds':>10s}")
    for k, v in res["seconds"].items():
        print(f"{k:34s}{v:10.4f}")
    for name, v in ph.items():
        print(f"  phase {name:26s}{v:10.4f}   presorted {ph_sorted[name]:8.4f}")
    print(f"Python loop: timed on {m} events (all events of every {stride}th user, "
          f"{nnz_slice / m:.2f} edges/event vs {nnz / n:.2f} in the full log), scaled linearly per event")
    for k in ("nnz", "speedup_vs_numpy", "speedup_vs_python_per_event", "speedup_vs_python_same_slice",
              "effective_GBps", "copy_GBps", "pct_of_copy_bandwidth", "pct_of_fresh_copy_bandwidth",
              "pct_of_copy_bandwidth_presorted", "peak_over_output", "input_plus_peak_over_input_plus_output"):
        print(f"{k:38s}{res[k]:10.3f}" if isinstance(res[k], float) else f"{k:38s}{res[k]:10d}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000_000)
