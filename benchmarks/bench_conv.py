"""spmm and fused message_passing benchmarks vs scipy.sparse and torch (CPU).

``python benchmarks/bench_conv.py`` prints a table and writes
``benchmarks/results/conv_cpu.json``.  Every output is checked against the
peer's before it is timed.  Timings are best-of-N wall clock; the memory copy
that defines "% of copy" is timed in the same run (2 bytes moved per byte
copied), so ratios stay meaningful on a shared, noisy machine.  It is the
faster of numpy's one-thread copy and the same copy over Numba's threads
(``stgkern.bench.memcopy``): one core does not saturate memory, and the
kernels use every core.

Streaming floors (bytes that must cross memory at least once):
  spmm (weighted, sum)            8·nnz + 8·n·F          (index+weight per edge, X in + out)
  message_passing (mul, E width F) 8·nnz + 4·nnz·F + 8·n·F
``t_kernel_prealloc`` times ``spmm(g, X, w, out=buf)`` (``message_passing(...,
out=buf)``) writing into a reused
(already faulted-in) output, like the copy's destination: the kernel
zeroing the pages of a fresh 2M x 64 float32 output costs ~20 ms on this
machine when both threads fault them in (~50 ms for a one-thread writer such
as scipy's), which a call without ``out=`` pays, as do the peers (they have
no ``out=``).
``x_scipy_at_floor`` is scipy's time over the streaming floor's time: the
largest ratio to scipy any kernel could reach on this machine;
``x_scipy_fresh_at_floor`` the same for a call that allocates its output
(floor plus ``t_first_touch_out``, our fresh time minus our ``out=`` time).
Peak memory: extra bytes over the loaded inputs (VmHWM after resetting it
through /proc/self/clear_refs, in a fresh subprocess per formulation) (covers torch's allocator too) and, for ours,
``tracemalloc`` (NumPy allocations) in-process.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from stgkern import config
from stgkern._numba._prefetch import distance_for
from stgkern.bench import memcopy
from stgkern.conv import message_passing, spmm
from stgkern.graph import Graph

F = 64


def window_graph(n_events=2_000_000, window=8, seed=0):
    """(indptr, indices) of the shared window-graph workload (stgkern.bench.workloads)."""
    from stgkern.bench import workloads
    g = workloads.window_graph_of(n_events, window, seed)
    return g.indptr, g.indices


def powerlaw_graph(n=500_000, nnz=8_000_000, seed=0):
    """(indptr, indices) of the shared power-law generator (stgkern.bench.workloads)."""
    from stgkern.bench import workloads
    g = workloads.powerlaw_graph(n, nnz, np.random.default_rng(seed))
    return g.indptr, g.indices


def copy_fields(t, nbytes):
    """Copy bandwidth (bytes/s) from the interleaved timings of both copies
    (``stgkern.bench.memcopy``: numpy's one-thread copy and the same copy over
    Numba's threads); the faster is the yardstick."""
    t_copy = min(t["copy_numpy"], t["copy_threaded"])
    return nbytes / t_copy, {"copy_gbs_numpy": nbytes / t["copy_numpy"] / 1e9,
                             "copy_gbs_threaded": nbytes / t["copy_threaded"] / 1e9}


def torch_csr(indptr, src, w, n):
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(src.astype(np.int64)),
                                       torch.from_numpy(w), size=(n, n))


def run_spmm(name, indptr, src):
    import scipy.sparse as sp
    import torch
    n, nnz = len(indptr) - 1, len(src)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, F)).astype(np.float32)
    w = rng.random(nnz).astype(np.float32)
    g = Graph(indptr, src, n)
    A = sp.csr_matrix((w, src, indptr), shape=(n, n))
    T = torch_csr(indptr, src, w, n)
    Xt = torch.from_numpy(X)
    ours = spmm(g, X, w)
    np.testing.assert_allclose(ours, A @ X, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ours, torch.sparse.mm(T, Xt).numpy(), rtol=1e-3, atol=1e-3)
    floor_bytes = 8 * nnz + 8 * n * F
    a, b = memcopy.copy_pair(floor_bytes)
    pre = np.empty_like(ours)  # public API into a reused, already-faulted output (out=): like the copy's dst

    def kernel_only():
        spmm(g, X, w, out=pre)

    def kernel_flipped():  # the same call with the prefetch decision reversed, to show what it buys
        with config.override(cpu_prefetch=not pf):
            spmm(g, X, w, out=pre)

    pf = distance_for(g, F * X.itemsize)
    kernel_only()
    np.testing.assert_array_equal(pre, ours)
    t = memcopy.best_interleaved({**memcopy.copies(b, a), "ours": lambda: spmm(g, X, w), "kernel": kernel_only,
                          "flipped": kernel_flipped, "scipy": lambda: A @ X, "torch": lambda: torch.sparse.mm(T, Xt)})
    copy_bw, copy_detail = copy_fields(t, 2 * a.nbytes)
    t_ours, t_scipy, t_torch = t["ours"], t["scipy"], t["torch"]
    gbs = floor_bytes / t_ours
    kern_gbs = floor_bytes / t["kernel"]
    return {"op": "spmm_sum_weighted", "graph": name, "n": n, "nnz": nnz, "F": F, "dtype": "float32",
            "t_ours": t_ours, "t_scipy": t_scipy, "t_torch": t_torch, "gflops": 2 * nnz * F / t_ours / 1e9,
            "gbs": gbs / 1e9, "copy_gbs": copy_bw / 1e9, "pct_copy": 100 * gbs / copy_bw,
            "t_kernel_prealloc": t["kernel"], "pct_copy_kernel_prealloc": 100 * kern_gbs / copy_bw,
            "prefetch_distance": pf, "t_kernel_prefetch_flipped": t["flipped"],
            "x_scipy": t_scipy / t_ours, "x_torch": t_torch / t_ours,
            "x_scipy_out": t_scipy / t["kernel"], "x_torch_out": t_torch / t["kernel"],
            # the most any kernel could gain on scipy here: scipy's time over the streaming floor's time,
            # and, for a call that allocates its output as scipy's does, over the floor plus the fresh
            # output's first-touch cost (measured here as our fresh time minus our out= time)
            "x_scipy_at_floor": t_scipy / (floor_bytes / copy_bw),
            "t_first_touch_out": t_ours - t["kernel"],
            "x_scipy_fresh_at_floor": t_scipy / (floor_bytes / copy_bw + max(t_ours - t["kernel"], 0.0)),
            **copy_detail}


def _mp_inputs(indptr, src, seed=2):
    n, nnz = len(indptr) - 1, len(src)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, F)).astype(np.float32)
    E = rng.standard_normal((nnz, F)).astype(np.float32)
    return X, E


def torch_mp(x, e, src_t, dst_t, n):
    import torch
    out = torch.zeros((n, x.shape[1]), dtype=x.dtype)
    return out.index_add_(0, dst_t, x[src_t] * e)


def run_mp(name, indptr, src):
    import torch
    n, nnz = len(indptr) - 1, len(src)
    X, E = _mp_inputs(indptr, src)
    g = Graph(indptr, src, n)
    dst = np.repeat(np.arange(n), np.diff(indptr))
    src_t, dst_t = torch.from_numpy(src.astype(np.int64)), torch.from_numpy(dst)
    xt, et = torch.from_numpy(X), torch.from_numpy(E)
    ours = message_passing(g, X, E, "mul", "sum")
    np.testing.assert_allclose(ours, torch_mp(xt, et, src_t, dst_t, n).numpy(), rtol=1e-3, atol=1e-3)
    floor_bytes = 8 * nnz + 4 * nnz * F + 8 * n * F
    a, b = memcopy.copy_pair(floor_bytes)
    pre = np.empty_like(ours)  # public API into a reused, already-faulted output (out=)

    def kernel_only():
        message_passing(g, X, E, "mul", "sum", out=pre)

    kernel_only()
    np.testing.assert_array_equal(pre, ours)
    t = memcopy.best_interleaved({**memcopy.copies(b, a), "ours": lambda: message_passing(g, X, E, "mul", "sum"),
                          "kernel": kernel_only, "torch": lambda: torch_mp(xt, et, src_t, dst_t, n)}, reps=4)
    copy_bw, copy_detail = copy_fields(t, 2 * a.nbytes)
    t_ours, t_torch = t["ours"], t["torch"]
    tracemalloc.start()
    message_passing(g, X, E, "mul", "sum")
    _, tm_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gbs = floor_bytes / t_ours
    kern_gbs = floor_bytes / t["kernel"]
    return {"op": "message_passing_mul_sum_Ewide", "t_kernel_prealloc": t["kernel"],
            "pct_copy_kernel_prealloc": 100 * kern_gbs / copy_bw, "graph": name, "n": n, "nnz": nnz, "F": F, "dtype": "float32",
                "t_ours": t_ours, "t_torch": t_torch, "gflops": 2 * nnz * F / t_ours / 1e9, "gbs": gbs / 1e9,
                "copy_gbs": copy_bw / 1e9, "pct_copy": 100 * gbs / copy_bw, "x_torch": t_torch / t_ours,
                "tracemalloc_peak_ours_mb": tm_peak / 2**20, "out_mb": n * F * 4 / 2**20, "E_mb": nnz * F * 4 / 2**20,
                **copy_detail}


def _status_kb(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Reset VmHWM (Linux >= 4.0) so the next reading is this op's own high-water mark."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kb("VmRSS")


def _peak_child(which, path):
    """Run one formulation in this (fresh) process; print extra peak RSS in MB over the loaded inputs."""
    indptr, src, X, E = (np.load(os.path.join(path, f"{k}.npy")) for k in ("indptr", "src", "X", "E"))
    n = len(indptr) - 1
    if which == "ours":
        tiny = Graph(np.array([0, 1, 2], np.int64), np.array([1, 0], src.dtype), 2)
        message_passing(tiny, X[:2], E[:2], "mul", "sum")  # load the compiled kernel first
        g = Graph(indptr, src, n)
        base = _reset_peak()
        message_passing(g, X, E, "mul", "sum")
    else:
        import torch
        dst = torch.from_numpy(np.repeat(np.arange(n), np.diff(indptr)))
        s = torch.from_numpy(src.astype(np.int64))
        xt, et = torch.from_numpy(X), torch.from_numpy(E)
        torch_mp(xt[:8], et[:8], s[:8] % 8, dst[:8] % 8, 8)
        base = _reset_peak()
        torch_mp(xt, et, s, dst, n)
    print((_status_kb("VmHWM") - base) / 1024)


def peak_extra_mb(indptr, src):
    X, E = _mp_inputs(indptr, src)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = tmp  # one .npy per array: np.load reads each straight into its array (no zip buffer)
        for k, a in (("indptr", indptr), ("src", src), ("X", X), ("E", E)):
            np.save(os.path.join(tmp, f"{k}.npy"), a)
        del X, E
        for which in ("ours", "torch"):
            r = subprocess.run([sys.executable, __file__, "--peak", which, path], capture_output=True, text=True,
                               check=False)
            if r.returncode:
                raise RuntimeError(f"peak-memory child for {which} failed:\n{r.stderr}")
            res[which] = float(r.stdout.strip().splitlines()[-1])
    return res


def test_spmm_powerlaw(benchmark):
    indptr, src = powerlaw_graph(50_000, 800_000)
    n = len(indptr) - 1
    g = Graph(indptr, src, n)
    X = np.random.default_rng(0).standard_normal((n, F)).astype(np.float32)
    benchmark(spmm, g, X)


def test_spmm_window(benchmark):
    indptr, src = window_graph(100_000)
    n = len(indptr) - 1
    g = Graph(indptr, src, n)
    X = np.random.default_rng(0).standard_normal((n, F)).astype(np.float32)
    w = np.random.default_rng(1).random(len(src)).astype(np.float32)
    benchmark(spmm, g, X, w)


def test_message_passing_window(benchmark):
    indptr, src = window_graph(50_000)
    n = len(indptr) - 1
    g = Graph(indptr, src, n)
    X, E = _mp_inputs(indptr, src)
    benchmark(message_passing, g, X, E, "mul", "sum")


def main():
    import numba
    import scipy
    import torch
    win = window_graph()
    rows = [run_spmm("window8_2M", *win), run_spmm("powerlaw_500k_8M", *powerlaw_graph())]
    for r in rows:
        print(r, flush=True)
    mp_win = window_graph(500_000)  # E is nnz x 64 float32: keep peers' nnz x F temporaries in memory
    mp = run_mp("window8_500k", *mp_win)
    print(mp, flush=True)
    mp.update({f"peak_extra_mb_{k}": v for k, v in peak_extra_mb(*mp_win).items()})
    for r in rows + [mp]:
        peers = "  ".join(f"x {p} {r['x_' + p]:.2f}" for p in ("scipy", "torch", "scipy_out", "torch_out",
                                                                "scipy_at_floor", "scipy_fresh_at_floor")
                          if "x_" + p in r)
        print(f"{r['op']:>30} {r['graph']:>18} nnz={r['nnz']:>9} {r['t_ours']*1e3:7.1f} ms {r['gflops']:5.1f} GFLOP/s "
              f"{r['gbs']:5.1f} GB/s ({r['pct_copy']:4.0f}% of copy {r['copy_gbs']:.1f} GB/s; out= into a reused "
              f"output {r['t_kernel_prealloc']*1e3:.1f} ms = {r['pct_copy_kernel_prealloc']:.0f}%)  {peers}")
    print(f"message_passing peak extra memory: ours {mp['peak_extra_mb_ours']:.0f} MB (out is {mp['out_mb']:.0f} MB; "
          f"tracemalloc {mp['tracemalloc_peak_ours_mb']:.0f} MB), torch {mp['peak_extra_mb_torch']:.0f} MB "
          f"(E is {mp['E_mb']:.0f} MB)")
    meta = {"numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__, "torch": torch.__version__,
                "python": platform.python_version(), "numba_threads": numba.get_num_threads(),
                "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = os.path.join(os.path.dirname(__file__), "results", "conv_cpu.json")
    with open(out, "w") as fh:
        json.dump({"meta": meta, "spmm_sum_weighted_f32_F64": rows, "message_passing_mul_sum_f32_F64": [mp]},
                  fh, indent=1)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        _peak_child(sys.argv[2], sys.argv[3])
    else:
        main()
