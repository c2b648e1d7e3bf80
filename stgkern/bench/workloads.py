"""The standard benchmark workloads, defined once.

Every benchmark -- ``stgkern bench`` and the pytest-benchmark suites in
``benchmarks/`` -- takes its inputs from here, so that a figure in one place
means the same data as in the other.

>>> from stgkern.bench import workloads
>>> wl = workloads.get("window", "tiny")
>>> wl.graph.n_nodes > 0, sorted(wl.arrays)
(True, ['X'])

Workloads (``NAMES``):

``log``
    Synthetic behaviour log (:func:`stgkern.synthetic_log`, ~50 events per
    user): ``arrays`` user, item, category, time (the input of window_graph).
``window``
    The window graph (window 8) built from ``log``: the banded
    behaviour-sequence graph; ``arrays['X']`` (n, 64) float32 node features,
    ``graph.segment_ptr`` the users.
``powerlaw``
    Random graph with Zipf-distributed sources (exponent 0.8, popular nodes
    scattered), 8 in-edges per node on average, rows sorted: the unbanded
    case where gathers miss the cache.
``sessions``
    SR-GNN-style session batches (100 sessions each, geometric lengths,
    Zipf items): ``batches`` is a list of ``(ptr, items)``.
``sequences``
    Per-user item sequences of ``log`` (:func:`stgkern.sequences`):
    ``arrays`` ptr, items, times; ``meta['n_items']``.
``catalog``
    Retrieval: ``arrays`` Q (queries, 64) and items (n_items, 64), float32.

Sizes (``SIZES``): ``tiny`` (tests), ``small`` (a laptop run in well under
three minutes), ``medium`` and ``large``; ``medium``/``large`` are capped so
that a run stays within ``MEMORY_FRACTION`` of the memory free at the time
(the cap is stated in the description).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

#: Events (= window-graph nodes) per size before the memory cap.
SIZES = {"tiny": 3_000, "small": 100_000, "medium": 2_000_000, "large": 16_000_000}
#: Fraction of the free memory a run (all cached workloads, outputs, peers' copies) may use.
MEMORY_FRACTION = 0.5
#: Rough peak bytes per event of a whole run: the window and power-law graphs
#: with their (n, 64) float32 features, the (nnz, 64) edge features of
#: message_passing (~1.9 KB per event), outputs, int64 edge lists and CSR
#: copies for the peers (whose gathers run in bounded chunks).
BYTES_PER_EVENT = 4096
#: Feature width of node features.
F = 64
WINDOW = 8
EVENTS_PER_USER = 50
SESSIONS_PER_BATCH = 100
NAMES = ("log", "window", "powerlaw", "sessions", "sequences", "catalog")


@dataclasses.dataclass
class Workload:
    """One benchmark input.  ``graph`` is a :class:`stgkern.Graph` or None;
    ``arrays`` the named NumPy/CuPy arrays; ``batches`` a list of tuples for
    per-batch workloads; ``meta`` plain numbers for the JSON."""

    name: str
    size: str
    backend: str
    description: str
    graph: Any = None
    arrays: dict = dataclasses.field(default_factory=dict)
    batches: list | None = None
    meta: dict = dataclasses.field(default_factory=dict)


def _free_bytes(backend: str) -> int:
    if backend == "gpu":
        import cupy
        return int(cupy.cuda.Device().mem_info[0])
    from stgkern._validate import available_memory
    return available_memory()


def n_events(size: str, backend: str = "cpu") -> tuple[int, str]:
    """Events for ``size`` after the memory cap, and a note when capped."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    want = SIZES[size]
    cap = int(_free_bytes(backend) * MEMORY_FRACTION / BYTES_PER_EVENT)
    if want > cap and size not in ("tiny", "small"):
        return max(cap, SIZES["small"]), f" (capped from {want:,} by free memory)"
    return want, ""


@functools.lru_cache(maxsize=4)
def _log(n: int, seed: int):
    from stgkern import synthetic_log
    return synthetic_log(n_users=max(1, n // EVENTS_PER_USER), events_per_user=EVENTS_PER_USER, seed=seed,
                         process="markov")


def _build(name: str, size: str, seed: int) -> Workload:
    n, note = n_events(size)
    rng = np.random.default_rng(seed)
    if name in ("log", "window", "sequences"):
        requested = n
        log = _log(requested, seed)
        n = len(log)
        if name == "log":
            return Workload(name, size, "cpu", f"synthetic log, {n:,} events, {log.n_users:,} users{note}",
                            arrays={"user": log.user, "item": log.item, "category": log.category,
                                    "time": log.time},
                            meta={"events": n, "users": int(log.n_users), "items": int(log.n_items)})
        if name == "sequences":
            from stgkern import sequences
            ptr, items, times = sequences(log)
            return Workload(name, size, "cpu", f"item sequences of the synthetic log, {len(ptr) - 1:,} users, "
                            f"{n:,} positions{note}", arrays={"ptr": ptr, "items": items, "times": times},
                            meta={"users": len(ptr) - 1, "positions": n, "n_items": int(log.n_items)})
        g = window_graph_of(requested, WINDOW, seed)
        X = rng.standard_normal((g.n_nodes, F), dtype=np.float32)
        return Workload(name, size, "cpu", f"window graph (window {WINDOW}) of the synthetic log: {g.n_nodes:,} "
                        f"nodes, {g.nnz:,} edges{note}", graph=g, arrays={"X": X},
                        meta={"nodes": g.n_nodes, "nnz": g.nnz, "users": len(g.segment_ptr) - 1, "F": F})
    if name == "powerlaw":
        g = powerlaw_graph(n, 8 * n, rng)
        X = rng.standard_normal((g.n_nodes, F), dtype=np.float32)
        return Workload(name, size, "cpu", f"power-law random graph: {g.n_nodes:,} nodes, {g.nnz:,} edges{note}",
                        graph=g, arrays={"X": X}, meta={"nodes": g.n_nodes, "nnz": g.nnz, "F": F})
    if name == "sessions":
        n_batches = max(2, n // 5_000)
        batches = session_batches(n_batches, SESSIONS_PER_BATCH, rng)
        pos = int(sum(int(p[-1]) for p, _ in batches))
        return Workload(name, size, "cpu", f"{n_batches} session batches x {SESSIONS_PER_BATCH} sessions, "
                        f"{pos:,} positions{note}", batches=batches,
                        meta={"batches": n_batches, "sessions_per_batch": SESSIONS_PER_BATCH, "positions": pos})
    if name == "catalog":
        m = int(min(256, max(16, n // 800)))
        # the peers score the full (m, n_items) matrix: keep it within an eighth of the budget
        cap = int(_free_bytes("cpu") * MEMORY_FRACTION / 8 / (4 * m))
        n_items = max(1000, min(n, cap))
        if n_items < n:
            note += f" (items capped at {n_items:,} by free memory)"
        items = rng.standard_normal((n_items, F), dtype=np.float32)
        Q = rng.standard_normal((m, F), dtype=np.float32)
        return Workload(name, size, "cpu", f"catalog of {n_items:,} items x {m} queries, dim {F}{note}",
                        arrays={"Q": Q, "items": items}, meta={"items": n_items, "queries": m, "dim": F})
    raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(NAMES)}")


@functools.lru_cache(maxsize=8)
def _cached(name: str, size: str, seed: int) -> Workload:
    wl = _build(name, size, seed)
    _BUILT[(name, size, seed)] = wl.description, wl.meta
    return wl


_BUILT: dict = {}


def built(size: str, seed: int = 0) -> list:
    """``Workload`` shells (name, description, meta; no arrays) of every workload built at ``size``."""
    return [Workload(n, s, "cpu", d, meta=m) for (n, s, sd), (d, m) in _BUILT.items() if s == size and sd == seed]


def get(name: str, size: str = "small", backend: str = "cpu", seed: int = 0) -> Workload:
    """The workload ``name`` at ``size`` on ``backend`` ("cpu" or "gpu").

    CPU workloads are cached (the same object comes back: do not modify its
    arrays); GPU workloads are fresh device copies of the CPU ones.
    """
    if backend not in ("cpu", "gpu"):
        raise ValueError(f"backend must be 'cpu' or 'gpu', got {backend!r}")
    wl = _cached(name, size, seed)
    if backend == "cpu":
        return wl
    import cupy
    return dataclasses.replace(
        wl, backend="gpu", graph=None if wl.graph is None else wl.graph.to("gpu"),
        arrays={k: cupy.asarray(v) for k, v in wl.arrays.items()},
        batches=None if wl.batches is None else [tuple(cupy.asarray(a) for a in b) for b in wl.batches])


def clear_cache() -> None:
    """Drop cached workloads (frees their memory)."""
    _cached.cache_clear()
    _log.cache_clear()
    _BUILT.clear()


# ------------------------------------------------------------------ generators
def event_columns(n_events: int = 5_000_000, n_users: int = 100_000, seed: int = 0):
    """Taobao-like ``(user, time)`` columns in global time order (as real logs arrive, not
    grouped by user): Zipf-ish user activity over ~9 days.  The construction benchmarks'
    input: window_graph has to order it."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_users + 1) ** 0.8
    user = rng.choice(n_users, size=n_events, p=w / w.sum()).astype(np.int64)
    user = rng.permutation(n_users)[user]            # popular users are not the low ids
    time = np.sort(rng.integers(1_511_500_000, 1_512_300_000, n_events)).astype(np.int64)
    return user, time


def window_graph_of(n_events: int, window: int = WINDOW, seed: int = 0):
    """``stgkern.window_graph`` (window ``window``) of the synthetic log with about
    ``n_events`` events (50 per user on average): the standard behaviour graph."""
    from stgkern import window_graph
    return window_graph(_log(n_events, seed), window=window)


def powerlaw_graph(n: int, nnz: int, rng, exponent: float = 0.8):
    """CSR-by-destination graph, sources drawn with P(rank r) ~ r^-exponent
    (ranks scattered over the ids), destinations uniform; rows sorted."""
    from stgkern import Graph
    p = 1.0 / np.arange(1, n + 1) ** exponent
    src = rng.permutation(n)[rng.choice(n, nnz, p=p / p.sum())]
    dst = rng.integers(0, n, nnz)
    order = np.lexsort((src, dst))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return Graph(indptr, src[order].astype(np.int32), n, check=False, rows_sorted=True)


def session_batches(n_batches: int, batch: int, rng, n_items: int = 40_000):
    """Yoochoose/Diginetica-like batches: lengths geometric (mean ~5.5, <= 40), Zipf-ish items >= 1."""
    out = []
    for _ in range(n_batches):
        lens = np.minimum(rng.geometric(0.18, batch), 40)
        ptr = np.zeros(batch + 1, dtype=np.int64)
        ptr[1:] = np.cumsum(lens)
        items = (rng.zipf(1.3, ptr[-1]) % (n_items - 1)) + 1
        out.append((ptr, items.astype(np.int64)))
    return out
