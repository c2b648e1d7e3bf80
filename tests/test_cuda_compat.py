"""GPU compatibility builders (csrc/cuda/{session_graph,item_graph,time_intervals}.cu and their
wrappers in stgkern/_cuda/) against the Numba backends and the script references.

* ``test_emulated_*`` (need g++, marked slow): the .cu sources run on the host
  through the real wrappers (tests/cuda_support.py's ``emu``); every result
  must equal the Numba backend's -- same dtypes, bit-identical integers, the
  same float weights -- and the faithful references of tests/naive.py.  Blocks
  of 32 threads make every session / row / matrix span several warps or
  blocks; ``cuda_long_row`` small sends session batches down the sort path.
* ``test_emulated_public_*``: the public front doors' GPU path (validation,
  dispatch, Graph assembly) with the emulated kernels.
* ``test_aot_emits_compat_instantiations`` (needs nvcc): the STGKERN_AOT
  blocks hold every kernel the loader may ask for.
* ``test_gpu_*`` (marker ``cuda``): CuPy input through the public functions
  equals NumPy input.
"""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cuda_support import ROOT
from naive import (naive_gcegnn_build_graph, naive_split, naive_srgnn_get_slice, naive_srgnn_process_seqs,
                   naive_srgnn_session_graph, naive_tisasrec_relation)
from stgkern import config
from stgkern._numba import item_graph as cpu_item_graph
from stgkern._numba import session_graph as cpu_session_graph
from stgkern._numba import time_intervals as cpu_time_intervals

PATHS = {"warp": {}, "sorted": {"cuda_long_row": 3}}  # cuda_long_row 3: any longer session takes the sort path


def to_csr(seqs, dtype=np.int64):
    ptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(s) for s in seqs])
    return ptr, np.array([x for s in seqs for x in s], dtype=dtype)


def sessions(rng, n_ids=6, lo=1, big=False):
    """Empty, one-item, repeated (a, a, a), short random and longer-than-a-warp sessions."""
    seqs = [[], [lo], [lo + 2, lo + 2], [lo + 1, lo + 1, lo + 1, lo], []]
    seqs += [list(rng.integers(lo, lo + n_ids, rng.integers(2, 9))) for _ in range(9)]
    seqs += [list(rng.integers(lo, lo + n_ids, 70)), list(rng.integers(lo, lo + 60, 45))]
    if big:  # ids far beyond int32
        seqs = [[x * 10**12 + 7 for x in s] for s in seqs]
    return [[int(x) for x in s] for s in seqs]


def sequences_with_hub(rng, n_items):
    """Few ids (count ties), empty and one-item sequences, and item 0 repeated so its
    row holds runs longer than a warp that cross 32-pair chunks."""
    seqs = [[], [3], [1, 1], [2, 5, 2, 5, 2]]
    seqs += [list(rng.integers(0, n_items, rng.integers(2, 12))) for _ in range(8)]
    seqs += [[0] * 40 + [1] + [0] * 25, list(rng.integers(0, n_items, 50))]
    return [[int(x) for x in s] for s in seqs]


def user_times(rng, dtype):
    seqs = [[], [5], [7, 7, 7], [10, 14, 20], [0, 3, 3, 9, 12, 15]]  # one event, all equal, half-way roundings
    seqs += [sorted(rng.integers(0, 50, rng.integers(2, 12)).tolist()) for _ in range(6)]
    seqs += [sorted(rng.integers(0, 10**6, 75).tolist())]  # longer than a warp and than maxlen
    if dtype == np.float64:
        seqs = [[x * 0.5 for x in s] for s in seqs]
    return seqs


def assert_same(got, want, names):
    assert len(got) == len(want)
    for name, g, w in zip(names, got, want):
        assert g.dtype == w.dtype, f"{name}: {g.dtype} != {w.dtype}"
        assert g.shape == w.shape, f"{name}: {g.shape} != {w.shape}"
        np.testing.assert_array_equal(g, w, err_msg=name)


SG_NAMES = ("indptr", "indices", "w_in", "w_out", "node_ptr", "node_item", "alias")


def check_session_graph_naive(seqs, out, dtype):
    """The CSR against SR-GNN's dense per-session matrices."""
    indptr, indices, w_in, w_out, node_ptr, node_item, alias = out
    ptr, _ = to_csr(seqs)
    for s, (node, a_in, a_out, al) in enumerate(naive_srgnn_session_graph(seqs)):
        b, e = node_ptr[s], node_ptr[s + 1]
        np.testing.assert_array_equal(node_item[b:e], node)
        np.testing.assert_array_equal(alias[ptr[s]:ptr[s + 1]] - b, al)
        n = e - b
        A_in, A_out = np.zeros((n, n)), np.zeros((n, n))
        for v in range(n):
            for k in range(indptr[b + v], indptr[b + v + 1]):
                u = indices[k] - b
                A_in[v, u] = w_in[k]
                A_out[u, v] = w_out[k]
        np.testing.assert_array_equal(A_in, a_in.astype(dtype))
        np.testing.assert_array_equal(A_out, a_out.astype(dtype))


# ---------------------------------------------------------------- GPU: CuPy input = NumPy input
# (first in the file: the module-scoped ``emu`` fixture stands NumPy in for CuPy until the module ends)
@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_gpu_session_graph_matches_cpu(cp, rng, path, dtype):
    from stgkern import session_graph

    seqs = sessions(rng, big=True) * 5
    ptr, items = to_csr(seqs)
    ref = session_graph(ptr, items, dtype=dtype)
    with config.override(**PATHS[path]):
        got = session_graph(cp.asarray(ptr), cp.asarray(items), dtype=dtype)
    assert got.graph.device == "gpu"
    for name in ("indptr", "indices", "segment_ptr"):
        a, b = cp.asnumpy(getattr(got.graph, name)), getattr(ref.graph, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=name)
    for key in ("w_in", "w_out"):
        np.testing.assert_array_equal(cp.asnumpy(got.graph.edata[key]), ref.graph.edata[key], err_msg=key)
    assert_same([cp.asnumpy(a) for a in got[1:]], ref[1:], ("node_item", "alias"))


@pytest.mark.cuda
@pytest.mark.parametrize("path", PATHS)
def test_gpu_srgnn_layout_and_prefixes_match_cpu(cp, rng, path):
    from stgkern import srgnn_layout, srgnn_prefixes

    seqs = sessions(rng, lo=1) * 3
    ptr, items = to_csr(seqs)
    gp, gi = cp.asarray(ptr), cp.asarray(items)
    with config.override(**PATHS[path]):
        for max_len in (None, 90):
            got = srgnn_layout(gp, gi, max_len=max_len)
            assert_same([cp.asnumpy(a) for a in got], srgnn_layout(ptr, items, max_len=max_len), "aAim")
        got = srgnn_prefixes(gp, gi)
    assert_same([cp.asnumpy(a) for a in got], srgnn_prefixes(ptr, items), "pitn")


@pytest.mark.cuda
@pytest.mark.parametrize("epsilon,top", [(1, 1), (3, 12), (80, 100)])
def test_gpu_item_graph_matches_cpu(cp, rng, epsilon, top):
    from stgkern import item_graph

    seqs = sequences_with_hub(rng, 30) + [list(rng.integers(0, 500, 300))]
    ptr, items = to_csr(seqs)
    ref = item_graph(ptr, items, epsilon=epsilon, top=top)
    got = item_graph(cp.asarray(ptr), cp.asarray(items), epsilon=epsilon, top=top)
    assert_same([cp.asnumpy(a) for a in (got.indptr, got.indices, got.edata["count"], got.n_neighbors)],
                [ref.indptr, ref.indices, ref.edata["count"], ref.n_neighbors], ("indptr", "indices", "count", "n"))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [np.int64, np.float64], ids=["int-times", "float-times"])
@pytest.mark.parametrize("drop", ["scalar", "array"])
def test_gpu_time_intervals_matches_cpu(cp, rng, dtype, drop):
    from stgkern import time_intervals

    seqs = user_times(rng, dtype) * 4
    ptr, times = to_csr(seqs, dtype)
    lens = np.diff(ptr)
    drop_last = 1 if drop == "scalar" else np.where(lens >= 3, 3, 1)
    ref = time_intervals(ptr, times, maxlen=50, span=256, drop_last=drop_last)
    gdrop = drop_last if drop == "scalar" else cp.asarray(drop_last)
    got = time_intervals(cp.asarray(ptr), cp.asarray(times), maxlen=50, span=256, drop_last=gdrop)
    assert_same([cp.asnumpy(a) for a in got], ref, ("mats", "seq"))
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):  # a NumPy drop_last with CuPy times
        time_intervals(cp.asarray(ptr), cp.asarray(times), drop_last=np.ones(len(seqs), np.int64))


# ---------------------------------------------------------------- SR-GNN
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("big", [False, True], ids=["small-ids", "big-ids"])
def test_emulated_session_graph_matches_cpu(emu, rng, path, dtype, big):
    seqs = sessions(rng, big=big)
    ptr, items = to_csr(seqs)
    want = cpu_session_graph.session_graph(ptr, items, dtype)
    with config.override(cuda_threads_per_block=32, **PATHS[path]):
        got = emu["session_graph"].session_graph(ptr, items, dtype)
    assert_same(got, want, SG_NAMES)
    check_session_graph_naive(seqs, got, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_emulated_session_graph_int64_indices_and_geometry(emu, rng, monkeypatch, path):
    seqs = sessions(rng, n_ids=40)
    ptr, items = to_csr(seqs)
    want = cpu_session_graph.session_graph(ptr, items, np.float32)
    monkeypatch.setattr(emu["session_graph"], "INT32_MAX", 10)  # the int64-index instantiation
    with config.override(cuda_threads_per_block=96, **PATHS[path]):
        got = emu["session_graph"].session_graph(ptr, items, np.float32)
    assert got[1].dtype == np.int64
    np.testing.assert_array_equal(got[1], want[1])
    assert_same(got[:1] + got[2:], want[:1] + want[2:], SG_NAMES[:1] + SG_NAMES[2:])


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("extra", [None, 0, 3], ids=["batch-longest", "max_len=longest", "max_len=longest+3"])
def test_emulated_srgnn_layout_matches_cpu(emu, rng, path, extra):
    seqs = sessions(rng, lo=1)
    ptr, items = to_csr(seqs)
    longest = max(len(s) for s in seqs)
    len_max = longest if extra is None else longest + extra
    M = cpu_session_graph.srgnn_layout_size(ptr, items, len_max)
    want = cpu_session_graph.srgnn_layout(ptr, items, len_max, M)
    with config.override(cuda_threads_per_block=32, **PATHS[path]):
        k = emu["session_graph"]
        assert k.srgnn_layout_size(ptr, items, len_max) == M
        got = k.srgnn_layout(ptr, items, len_max, M)
    names = ("alias_inputs", "A", "items", "mask")
    assert_same(got, want, names)
    assert_same(got, naive_srgnn_get_slice(seqs, len_max), names)


@pytest.mark.slow
def test_emulated_srgnn_prefixes_matches_cpu(emu, rng):
    seqs = sessions(rng)
    ptr, items = to_csr(seqs)
    want = cpu_session_graph.srgnn_prefixes(ptr, items)
    with config.override(cuda_threads_per_block=32):
        got = emu["session_graph"].srgnn_prefixes(ptr, items)
    assert_same(got, want, ("out_ptr", "out_items", "targets", "seq_id"))
    out_seqs, labs, ids = naive_srgnn_process_seqs(seqs)
    assert naive_split(got[0], got[1]) == out_seqs
    assert got[2].tolist() == labs and got[3].tolist() == ids


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_emulated_session_builders_empty_batch(emu, path):
    ptr, items = np.zeros(1, np.int64), np.zeros(0, np.int64)
    k = emu["session_graph"]
    with config.override(cuda_threads_per_block=32, **PATHS[path]):
        assert_same(k.session_graph(ptr, items, np.float32), cpu_session_graph.session_graph(ptr, items, np.float32),
                     SG_NAMES)
        assert k.srgnn_layout_size(ptr, items, 0) == 0
        assert_same(k.srgnn_layout(ptr, items, 0, 0), cpu_session_graph.srgnn_layout(ptr, items, 0, 0), "aAim")
        assert_same(k.srgnn_prefixes(ptr, items), cpu_session_graph.srgnn_prefixes(ptr, items), "pitn")
        # only empty sessions
        ptr = np.zeros(4, np.int64)
        assert_same(k.session_graph(ptr, items, np.float64), cpu_session_graph.session_graph(ptr, items, np.float64),
                     SG_NAMES)
        M = cpu_session_graph.srgnn_layout_size(ptr, items, 2)
        assert k.srgnn_layout_size(ptr, items, 2) == M == 1
        assert_same(k.srgnn_layout(ptr, items, 2, M), cpu_session_graph.srgnn_layout(ptr, items, 2, M), "aAim")


# ---------------------------------------------------------------- GCE-GNN
def check_item_graph(k, seqs, n_items, epsilon, top):
    ptr, items = to_csr(seqs)
    want = cpu_item_graph.item_graph(ptr, items, n_items, epsilon, top)
    with config.override(cuda_threads_per_block=32):
        assert k.n_pairs(ptr, epsilon) == cpu_item_graph.n_pairs(ptr, epsilon)
        got = k.item_graph(ptr, items, n_items, epsilon, top)
    assert_same(got, want, ("indptr", "indices", "counts", "n_distinct"))
    adj, weight = naive_gcegnn_build_graph(seqs, n_items, epsilon=epsilon, sample_num=top)
    indptr, indices, counts, _ = got
    for a in range(n_items):
        assert indices[indptr[a]:indptr[a + 1]].tolist() == adj[a], a
        assert counts[indptr[a]:indptr[a + 1]].tolist() == weight[a], a
    return got


@pytest.mark.slow
@pytest.mark.parametrize("epsilon,top", [(1, 1), (3, 12), (2, 3), (80, 100)],
                         ids=["eps1-top1", "eps3-top12", "eps2-top3", "eps80-top100"])
def test_emulated_item_graph_matches_cpu(emu, rng, epsilon, top):
    n_items = 9
    check_item_graph(emu["item_graph"], sequences_with_hub(rng, n_items), n_items + 2, epsilon, top)


@pytest.mark.slow
def test_emulated_item_graph_lexsort_path_and_int64_indices(emu, rng, monkeypatch):
    k = emu["item_graph"]
    monkeypatch.setattr(k, "_KEY_MAX", 50)  # no packed key fits: both sorts take lexsort
    monkeypatch.setattr(k, "INT32_MAX", 4)  # int64 column indices
    seqs = sequences_with_hub(rng, 7)
    ptr, items = to_csr(seqs)
    want = cpu_item_graph.item_graph(ptr, items, 8, 3, 4)
    with config.override(cuda_threads_per_block=32):
        got = k.item_graph(ptr, items, 8, 3, 4)
    assert got[1].dtype == np.int64
    np.testing.assert_array_equal(got[1], want[1])
    assert_same(got[:1] + got[2:], want[:1] + want[2:], ("indptr", "counts", "n_distinct"))


@pytest.mark.slow
def test_emulated_item_graph_edge_cases(emu, rng):
    k = emu["item_graph"]
    # empty batch, no items at all
    check_item_graph(k, [], 0, 3, 12)
    # sequences without pairs, items without neighbours
    check_item_graph(k, [[], [2], [], [0]], 5, 3, 12)
    # ties broken by first appearance, not by index (the docstring's example)
    got = check_item_graph(k, [[1, 2, 1]], 3, 2, 1)
    assert got[1].tolist() == [2, 1] and got[3].tolist() == [0, 2, 1]
    # one long sequence, many distinct neighbours per row (> a warp)
    check_item_graph(k, [[int(x) for x in rng.integers(0, 6, 200)]], 6, 40, 3)


# ---------------------------------------------------------------- TiSASRec
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.int64, np.float64], ids=["int-times", "float-times"])
@pytest.mark.parametrize("maxlen,span", [(4, 2), (50, 256), (1, 1)], ids=["maxlen4", "maxlen50", "maxlen1"])
@pytest.mark.parametrize("drop", ["none", "scalar", "array"])
def test_emulated_time_intervals_matches_cpu(emu, rng, dtype, maxlen, span, drop):
    seqs = user_times(rng, dtype)
    ptr, times = to_csr(seqs, dtype)
    lens = np.diff(ptr)
    drop_last = {"none": 0, "scalar": 1, "array": np.where(lens >= 3, 3, 1)}[drop]
    drop_arr = np.minimum(np.broadcast_to(np.asarray(drop_last, np.int64), lens.shape), lens).copy()
    k = emu["time_intervals"]
    resc_c = cpu_time_intervals.rescale(ptr, times)
    want = cpu_time_intervals.time_intervals(ptr, resc_c, drop_arr, maxlen, span)
    with config.override(cuda_threads_per_block=32):
        resc = k.rescale(ptr, times)
        got = k.time_intervals(ptr, resc, drop_arr, maxlen, span)
    assert_same((resc,), (resc_c,), ("rescaled",))
    assert_same(got, want, ("mats", "seq"))
    assert_same(got, naive_tisasrec_relation(naive_split(ptr, times), maxlen, span, drop_last), ("mats", "seq"))


@pytest.mark.slow
def test_emulated_time_intervals_edge_cases(emu):
    k = emu["time_intervals"]
    with config.override(cuda_threads_per_block=32):
        # no users at all
        ptr, times = np.zeros(1, np.int64), np.zeros(0, np.int64)
        mats, seq = k.time_intervals(ptr, k.rescale(ptr, times), np.zeros(0, np.int64), 3, 5)
        assert mats.shape == (0, 3, 3) and seq.shape == (0, 3)
        # gaps 4, 6, 20: scale 4; 10 / 4 = 2.5 rounds to 2, 30 / 4 = 7.5 to 8 (half to even);
        # maxlen 40 > 32 threads per block
        ptr, times = np.array([0, 4]), np.array([10, 14, 20, 40], np.int64)
        resc = k.rescale(ptr, times)
        assert resc.tolist() == [1.0, 2.0, 3.0, 9.0]
        mats, seq = k.time_intervals(ptr, resc, np.zeros(1, np.int64), 40, 6)
        want = cpu_time_intervals.time_intervals(ptr, resc, np.zeros(1, np.int64), 40, 6)
        assert_same((mats, seq), want, ("mats", "seq"))
        # everything dropped: an all-padding row
        mats, seq = k.time_intervals(ptr, resc, np.array([4], np.int64), 3, 6)
        assert not seq.any() and not mats.any()


# ---------------------------------------------------------------- public front doors, GPU path
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
def test_emulated_public_builders_match_cpu(emu, rng, monkeypatch, path):
    """Validation, dispatch and Graph assembly of stgkern.compat on the GPU path give the CPU results."""
    from stgkern import compat

    seqs = sessions(rng, lo=1)
    ptr, items = to_csr(seqs)
    ptr32 = ptr.astype(np.int32)  # the front door converts
    ref_g = compat.session_graph(ptr, items, dtype=np.float32)
    ref_layout = compat.srgnn_layout(ptr, items, max_len=80)
    ref_prefix = compat.srgnn_prefixes(ptr, items)
    ig_seqs = sequences_with_hub(rng, 9)
    ig_ptr, ig_items = to_csr(ig_seqs)
    ref_ig = compat.item_graph(ig_ptr, ig_items, n_items=12, epsilon=3, top=5)
    t_seqs = user_times(rng, np.int64)
    t_ptr, times = to_csr(t_seqs)
    lens = np.diff(t_ptr)
    drop = np.where(lens >= 3, 3, 1)
    ref_t = compat.time_intervals(t_ptr, times, maxlen=20, span=64, drop_last=drop)

    monkeypatch.setattr(compat._dispatch, "backend_of", lambda **arrays: "gpu")
    with config.override(cuda_threads_per_block=32, **PATHS[path]):
        g = compat.session_graph(ptr32, items, dtype=np.float32)
        layout = compat.srgnn_layout(ptr, items, max_len=80)
        prefix = compat.srgnn_prefixes(ptr, items)
        ig = compat.item_graph(ig_ptr, ig_items, n_items=12, epsilon=3, top=5)
        t = compat.time_intervals(t_ptr, times, maxlen=20, span=64, drop_last=drop)
        with pytest.raises(ValueError, match="items must be >= 1"):
            compat.srgnn_layout(ptr, items - 1)
        with pytest.raises(ValueError, match="sorted within each sequence"):
            compat.time_intervals(t_ptr, times[::-1].copy())
    assert g.graph.device == "gpu"
    for name in ("indptr", "indices", "segment_ptr"):
        np.testing.assert_array_equal(getattr(g.graph, name), getattr(ref_g.graph, name), err_msg=name)
    for key in ("w_in", "w_out"):
        assert g.graph.edata[key].dtype == np.float32
        np.testing.assert_array_equal(g.graph.edata[key], ref_g.graph.edata[key], err_msg=key)
    assert_same(g[1:], ref_g[1:], ("node_item", "alias"))
    assert_same(layout, ref_layout, ("alias_inputs", "A", "items", "mask"))
    assert_same(prefix, ref_prefix, ("out_ptr", "out_items", "targets", "seq_id"))
    assert_same((ig.indptr, ig.indices, ig.edata["count"], ig.n_neighbors),
                (ref_ig.indptr, ref_ig.indices, ref_ig.edata["count"], ref_ig.n_neighbors),
                ("indptr", "indices", "count", "n_neighbors"))
    assert_same(t, ref_t, ("mats", "seq"))


# ---------------------------------------------------------------- AOT instantiations
AOT_TYPES = {"session_graph": [(np.float32, np.int32), (np.float32, np.int64), (np.float64, np.int32),
                               (np.float64, np.int64)],
             "item_graph": [(np.int64, np.int32), (np.int64, np.int64)],
             "time_intervals": [(np.int64, np.int64), (np.float64, np.int64)]}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("c++filt") is None, reason="nvcc/c++filt missing")
@pytest.mark.parametrize("op", sorted(AOT_TYPES))
def test_aot_emits_compat_instantiations(op):
    import cuda_build
    from stgkern._cuda import _loader
    names = cuda_build.kernel_names(cuda_build.CSRC / "cuda" / f"{op}.cu")
    want = {_loader.name_expression(k, t, i) for k in _loader.KERNELS[op] for t, i in AOT_TYPES[op]}
    assert want <= set(names), sorted(want - set(names))


def test_import_does_not_touch_cupy():
    code = ("import sys, stgkern._cuda.session_graph, stgkern._cuda.item_graph, stgkern._cuda.time_intervals;"
            "assert 'cupy' not in sys.modules, 'cupy imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
