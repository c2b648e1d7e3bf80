"""What ``stgkern bench`` measures: one :class:`Case` per op, variant and workload.

Each case builds (untimed) the stgkern call, the peers' calls, the check
that compares their outputs, the FLOP count and the byte floor.

Conventions (also written into the JSON):

* FLOPs: ``2·nnz·F`` for the edge-wise products (spmm with any reduce,
  message passing, sddmm), ``2·m·n_items·d`` for topk, ``n·F`` for
  segment_reduce, ``2·nnz·F + 4·n·F·F_out`` for graph_conv; no FLOP count
  (and no roofline point) for ops that move or build data.
* Byte floor: every input array read once and every output written once,
  at the widths used (float32 values, int32 indices); gathered rows counted
  once (perfect reuse).  ``BYTE_FLOORS`` states each op's formula.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import numpy as np

from . import peers as P
from . import workloads

FLOP_CONVENTION = ("2·nnz·F for spmm/message_passing/sddmm (one multiply-add per edge and feature); "
                   "2·m·n_items·d for topk; n·F for segment_reduce; 2·nnz·F + 4·n·F·F_out for graph_conv; "
                   "none for edge_softmax, common_neighbor_fusion and the construction ops")

#: The fewest bytes each op must move (n nodes/rows, F features, float32, int32 indices).
BYTE_FLOORS = {
    "spmm": "4·nnz (indices) + 4·nnz (weights, if any) + 4·n·F (X) + 4·n·F (out)  = 8·nnz + 8·n·F weighted",
    "message_passing": "4·nnz (indices) + 4·nnz·F_E (E) + 4·n·F (X) + 4·n·F (out)",
    "sddmm": "8·(n+1) (indptr) + 4·nnz (indices) + 4·n·F (X) + 4·n·F (Y) + 4·nnz (out)",
    "edge_softmax": "8·(n+1) (indptr) + 4·nnz (scores) + 4·nnz (out)",
    "common_neighbor_fusion": "8·(n+1) + 4·nnz (indices) + 4·nnz (weights) + 4·n·F (X) + 4·nnz·F (out)",
    "graph_conv": "spmm floor + 4·n·F_out (out) + weights",
    "segment_reduce": "4·n·F (X) + 8·(n_seg+1) (ptr) + 4·n_seg·F (out)",
    "topk": "4·n_items·d + 4·m·d + 8·m·k (int64 indices) + 4·m·k (scores)",
    "window_graph": "16·n (user, time) + outputs: 8·(n+1) indptr + 4·nnz indices + 13·nnz edata + 8·n perm",
    "session_graph": "8·positions + 8·(n_seq+1) (input) + every output array written once",
    "item_graph": "8·positions + 8·(n_seq+1) (input) + indptr, indices, counts, n_neighbors written once",
    "time_intervals": "8·positions + 8·(n_seq+1) (input) + 4·n_seq·maxlen² + 4·n_seq·maxlen (output)",
}

#: Ops in the order they run.
OPS = ("window_graph", "spmm", "message_passing", "sddmm", "edge_softmax", "common_neighbor_fusion",
       "graph_conv", "segment_reduce", "topk", "session_graph", "item_graph", "time_intervals")
#: Peers a user can select with ``--peers``.
PEERS = ("numpy", "scipy", "torch", "torch_sparse", "torch_gather", "pyg", "graphblas", "cupy", "stgkern_cpu")


@dataclasses.dataclass
class Case:
    """One measurement: ``ours`` and every ``peers[name]`` are zero-argument
    factories returning the timed callable; ``check(ours_out, peer_out)``
    returns ``(ok, detail)``.  ``reference`` names the peer whose output is
    checked even when it is not selected for timing."""

    op: str
    variant: str
    workload: str
    ours: Callable
    peers: dict
    check: Callable
    reference: str
    flops: float | None
    floor_bytes: int

    @property
    def key(self) -> str:
        return f"{self.op}/{self.variant}/{self.workload}"


def available(op: str):
    """The public function of ``op``, or None when this install lacks it."""
    where = {"message_passing": ("stgkern.conv", "stgkern.layer"), "graph_conv": ("stgkern.layer", "stgkern.conv")}
    for mod in where.get(op, ("stgkern",)):
        try:
            fn = getattr(importlib.import_module(mod), op, None)
        except ImportError:
            fn = None
        if fn is not None:
            return fn
    return None


# --------------------------------------------------------------- checks
def to_numpy(a):
    """NumPy copy of a NumPy/CuPy/torch array (tuples and lists element-wise)."""
    if isinstance(a, (tuple, list)):
        return type(a)(to_numpy(x) for x in a)
    mod = type(a).__module__.split(".")[0]
    if mod == "torch":
        return a.detach().cpu().numpy()
    if mod == "cupy":
        return a.get()
    return np.asarray(a)


def close(rtol=1e-4):
    """Check: all arrays equal shape and within ``rtol`` of the reference's
    magnitude (absolute floor ``rtol·max|ref|``): float32 sums of a few
    dozen terms stay well inside 1e-4."""
    def check(ours, ref):
        ours, ref = to_numpy(ours), to_numpy(ref)
        if not isinstance(ours, (tuple, list)):
            ours, ref = (ours,), (ref,)
        if len(ours) != len(ref):
            return False, f"{len(ours)} outputs, reference has {len(ref)}"
        worst = 0.0
        for i, (a, b) in enumerate(zip(ours, ref)):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                return False, f"output {i}: shape {a.shape}, reference {b.shape}"
            if a.size == 0:
                continue
            if a.dtype.kind in "iub" and b.dtype.kind in "iub":
                bad = int(np.count_nonzero(a != b))
                if bad:
                    return False, f"output {i}: {bad} of {a.size} integer entries differ"
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            fin = np.isfinite(b64)
            if not (np.array_equal(np.isfinite(a64), fin) and np.array_equal(a64[~fin], b64[~fin], equal_nan=True)):
                return False, f"output {i}: non-finite entries differ"
            scale = max(float(np.abs(b64[fin]).max(initial=0.0)), 1e-30)
            err = np.abs(a64[fin] - b64[fin]) / (rtol * scale + rtol * np.abs(b64[fin]))
            e = float(err.max(initial=0.0))
            worst = max(worst, e * rtol)
            if e > 1:
                return False, f"output {i}: max error {e * rtol:.2e} (relative to max |ref| {scale:.3g})"
        return True, f"max rel. error {worst:.1e}"
    return check


def topk_check(ours, ref):
    """Scores within float32 rounding; indices equal except where near-equal scores swap."""
    (oi, os_), (ri, rs) = to_numpy(ours), to_numpy(ref)
    ok, detail = close(1e-4)(os_, rs)
    if not ok:
        return ok, "scores: " + detail
    agree = float(np.mean(oi == ri)) if oi.size else 1.0
    if agree < 0.99:
        return False, f"only {agree:.1%} of indices agree"
    return True, f"{agree:.2%} indices agree; " + detail


# ---------------------------------------------------------------- cases
def _nbytes(*arrays) -> int:
    return int(sum(a.nbytes for a in arrays if a is not None))


def cases(op: str, size: str, backend: str = "cpu", seed: int = 0) -> list[Case]:
    """The cases of ``op`` at ``size`` (workloads are built here, untimed)."""
    fn = available(op)
    gpu = backend == "gpu"
    rng = np.random.default_rng(seed + 1)
    out = []

    def wl(name):
        return workloads.get(name, size, backend, seed)

    def xp_rand(shape, lo=None, hi=None):
        a = (rng.uniform(lo, hi, shape) if lo is not None else rng.standard_normal(shape)).astype(np.float32)
        return _to(a, backend)

    if op == "window_graph":
        w = wl("log")
        u, t = w.arrays["user"], w.arrays["time"]
        pe = {} if gpu else {"numpy": lambda: lambda: P.numpy_window_graph(u, t, workloads.WINDOW)}

        def ours():
            g = fn(u, t, window=workloads.WINDOW)
            return g.indptr, g.indices, g.perm
        n = u.shape[0]
        nnz = fn(u, t, window=workloads.WINDOW).nnz
        out.append(Case(op, f"window={workloads.WINDOW}", "log", lambda: ours, pe, close(), "numpy", None,
                        16 * n + 8 * (n + 1) + 4 * nnz + 13 * nnz + 8 * n))

    elif op in ("spmm", "message_passing", "graph_conv"):
        for gname in ("window", "powerlaw"):
            w = wl(gname)
            g, X = w.graph, w.arrays["X"]
            n, nnz, F = g.n_nodes, g.nnz, X.shape[1]
            if op == "spmm":
                ew = xp_rand(nnz, 0.5, 1.5)
                for reduce, wt in (("sum", ew), ("mean", None), ("max", None)):
                    args = (g, X, wt, reduce)
                    pe = ({"cupy": lambda a=args: P.make_cupy_spmm(*a)} if gpu else
                          {"scipy": lambda a=args: P.make_scipy_spmm(*a),
                           "torch_sparse": lambda a=args: P.make_torch_sparse_spmm(*a),
                           "torch_gather": lambda a=args: P.make_torch_gather_spmm(*a)})
                    ref = "cupy" if gpu else ("scipy" if reduce != "max" else "torch_gather")
                    if gpu and reduce == "max":
                        pe, ref = {}, None
                    out.append(Case(op, reduce + (" weighted" if wt is not None else ""), gname,
                                    lambda a=args: (lambda: fn(a[0], a[1], a[2], a[3])), pe, close(), ref,
                                    2.0 * nnz * F, (8 if wt is not None else 4) * nnz + 8 * n * F))
            elif op == "message_passing":
                E = xp_rand((nnz, F))
                args = (g, X, E, "mul", "sum")
                pe = {} if gpu else {"torch_gather": lambda a=args: P.make_torch_gather_message_passing(*a)}
                out.append(Case(op, "mul sum E(nnz,F)", gname, lambda a=args: (lambda: fn(*a)), pe, close(),
                                None if gpu else "torch_gather", 2.0 * nnz * F, 4 * nnz + 4 * nnz * F + 8 * n * F))
            else:
                F_out = 64
                Ws, Wn = xp_rand((F, F_out)) * 0.1, xp_rand((F, F_out)) * 0.1
                b = xp_rand(F_out)
                args = (g, X, Ws, Wn, b)
                pe = {} if gpu else {"pyg": lambda a=args: P.make_pyg_graph_conv(*a)}
                out.append(Case(op, f"sum F={F}->{F_out}", gname,
                                lambda a=args: (lambda: fn(a[0], a[1], a[2], a[3], a[4])), pe, close(),
                                None if gpu else "pyg", 2.0 * nnz * F + 4.0 * n * F * F_out,
                                4 * nnz + 8 * n * F + 4 * n * F_out + _nbytes(Ws, Wn, b)))

    elif op == "sddmm":
        for gname in ("window", "powerlaw"):
            w = wl(gname)
            g, X = w.graph, w.arrays["X"]
            n, nnz, F = g.n_nodes, g.nnz, X.shape[1]
            Y = xp_rand((g.n_src, F))
            args = (g, X, Y)
            pe = ({"cupy": lambda a=args: P.make_cupy_sddmm(*a)} if gpu else
                  {"numpy": lambda a=args: P.make_numpy_sddmm(*a),
                   "torch_gather": lambda a=args: P.make_torch_gather_sddmm(*a)})
            out.append(Case(op, "dot", gname, lambda a=args: (lambda: fn(*a, "dot")), pe, close(),
                            "cupy" if gpu else "numpy", 2.0 * nnz * F, 8 * (n + 1) + 4 * nnz + 8 * n * F + 4 * nnz))

    elif op == "edge_softmax":
        for gname in ("window", "powerlaw"):
            g = wl(gname).graph
            s = xp_rand(g.nnz)
            args = (g, s)
            pe = {} if gpu else {"torch_gather": lambda a=args: P.make_torch_gather_edge_softmax(*a),
                                 "pyg": lambda a=args: P.make_pyg_edge_softmax(*a)}
            out.append(Case(op, "1 head", gname, lambda a=args: (lambda: fn(*a)), pe, close(),
                            None if gpu else "torch_gather", None, 8 * (g.n_nodes + 1) + 8 * g.nnz))

    elif op == "common_neighbor_fusion":
        g = wl("window").graph
        F = 8
        X = xp_rand((g.n_nodes, F), 0.5, 1.5)     # positive: no product cancels to an exact 0 SciPy would drop
        ew = xp_rand(g.nnz, 0.5, 1.5)
        args = (g, X, ew)
        pe = {} if gpu else {"scipy": lambda a=args: P.make_scipy_cnf(*a),
                             "graphblas": lambda a=args: P.make_graphblas_cnf(*a)}
        out.append(Case(op, f"weighted F={F}", "window", lambda a=args: (lambda: fn(*a)), pe, close(),
                        None if gpu else "scipy", None,
                        8 * (g.n_nodes + 1) + 8 * g.nnz + 4 * g.n_nodes * F + 4 * g.nnz * F))

    elif op == "segment_reduce":
        w = wl("window")
        X, ptr = w.arrays["X"], w.graph.segment_ptr
        n, F, n_seg = X.shape[0], X.shape[1], ptr.shape[0] - 1
        for reduce in ("sum", "mean", "max"):
            args = (X, ptr, reduce)
            pe = {} if gpu else {"numpy": lambda a=args: P.make_numpy_segment_reduce(*a),
                                 "torch": lambda a=args: P.make_torch_segment_reduce(*a)}
            out.append(Case(op, reduce, "window (users)", lambda a=args: (lambda: fn(*a)), pe, close(),
                            None if gpu else "numpy", float(n * F), 4 * n * F + 8 * (n_seg + 1) + 4 * n_seg * F))

    elif op == "topk":
        w = wl("catalog")
        Q, items = w.arrays["Q"], w.arrays["items"]
        k = 20
        args = (Q, items, k)
        pe = {} if gpu else {"numpy": lambda a=args: P.make_numpy_topk(*a),
                             "torch": lambda a=args: P.make_torch_topk(*a)}
        m, n_items, d = Q.shape[0], items.shape[0], Q.shape[1]
        out.append(Case(op, f"k={k}", "catalog", lambda a=args: (lambda: fn(*a)), pe, topk_check,
                        None if gpu else "numpy", 2.0 * m * n_items * d, _nbytes(Q, items) + 12 * m * k))

    elif op == "session_graph":
        w = wl("sessions")
        batches = w.batches

        def ours():
            res = []
            for p, it in batches:
                sg = fn(p, it)
                g = sg.graph
                res.append((g.indptr, g.indices, g.edata["w_in"], g.edata["w_out"], g.segment_ptr,
                            sg.node_item, sg.alias))
            return res

        def peer():
            return [P.numpy_session_graph(p, it) for p, it in batches]

        out_bytes = sum(_nbytes(*r) for r in ours())
        out.append(Case(op, "SR-GNN", "sessions", lambda: ours, {} if gpu else {"numpy": lambda: peer},
                        _per_batch(close()), None if gpu else "numpy", None,
                        sum(_nbytes(p, it) for p, it in batches) + out_bytes))

    elif op == "item_graph":
        w = wl("sequences")
        ptr, items, n_items = w.arrays["ptr"], w.arrays["items"], w.meta["n_items"]

        def ours():
            g = fn(ptr, items, n_items)
            return g.indptr, g.indices, g.edata["count"], g.n_neighbors
        o = ours()
        out.append(Case(op, "epsilon=3 top=12", "sequences", lambda: ours,
                        {} if gpu else {"numpy": lambda: lambda: P.numpy_item_graph(ptr, items, n_items)},
                        close(), None if gpu else "numpy", None, _nbytes(ptr, items, *o)))

    elif op == "time_intervals":
        w = wl("sequences")
        # at most 4096 users: the output is maxlen² ints per user
        n_seq = min(w.meta["users"], 4096)
        ptr = w.arrays["ptr"][: n_seq + 1]
        times = w.arrays["times"][: int(ptr[-1])]
        o = fn(ptr, times)
        out.append(Case(op, "maxlen=50 span=256", f"sequences ({n_seq} users)", lambda: (lambda: fn(ptr, times)),
                        {} if gpu else {"numpy": lambda: lambda: P.numpy_time_intervals(ptr, times)},
                        close(), None if gpu else "numpy", None, _nbytes(ptr, times, *o)))
    else:
        raise ValueError(f"unknown op {op!r}; choose from {', '.join(OPS)}")
    if gpu:
        out = with_cpu_reference(out, cases(op, size, "cpu", seed))
    return out


def with_cpu_reference(gpu_cases, cpu_cases):
    """Give every GPU case the same case's CPU (Numba) run as peer ``stgkern_cpu`` and make it the
    reference: the GPU output is checked against the CPU kernels (themselves checked against the
    CPU peers), whatever GPU peers exist; and the GPU-over-CPU ratio is measured in the same run.
    Both lists come from :func:`cases` with the same size and seed, hence the same inputs."""
    if [c.key for c in gpu_cases] != [c.key for c in cpu_cases]:
        raise RuntimeError("GPU and CPU cases differ: " + ", ".join(c.key for c in gpu_cases))
    for g, c in zip(gpu_cases, cpu_cases):
        # CPU-only peers stay in the table, as skipped
        cpu_only = {name: _cpu_only(name) for name in c.peers if name not in g.peers}
        g.peers = {"stgkern_cpu": c.ours, **g.peers, **cpu_only}
        g.reference = "stgkern_cpu"
    return gpu_cases


def _cpu_only(name):
    def factory():
        raise P.PeerUnavailable(f"{name} runs on the CPU only; not timed with --device gpu")
    return factory


def _per_batch(check):
    def run(ours, ref):
        worst = ""
        for b, (o, r) in enumerate(zip(ours, ref)):
            ok, worst = check(tuple(o), tuple(r))
            if not ok:
                return False, f"batch {b}: {worst}"
        return True, worst
    return run


def _to(a, backend):
    if backend == "gpu":
        import cupy
        return cupy.asarray(a)
    return a
