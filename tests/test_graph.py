"""Graph container, conversions, transpose cache and the dispatch point."""
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from stgkern import Graph, config
from stgkern import _dispatch, _validate


def random_csr(rng, n_dst, n_src, density):
    A = sp.random(n_dst, n_src, density=density, format="csr", random_state=rng, dtype=np.float64)
    A.sort_indices()
    return A


@given(st.integers(0, 30), st.integers(0, 30), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_scipy_round_trip_and_transpose(n_dst, n_src, density, seed):
    A = random_csr(np.random.default_rng(seed), n_dst, n_src, density)
    g = Graph.from_scipy(A)
    assert g.shape == A.shape and g.nnz == A.nnz
    assert g.indices.dtype == np.int32 and g.indptr.dtype == np.int64
    assert (g.to_scipy(weight="weight") != A).nnz == 0
    t = g.transpose()
    assert t is g.transpose()  # cached
    assert t.shape == (n_src, n_dst)
    # transposed edge p is original edge eid[p], and weights gathered by eid give A^T
    assert (t.to_scipy(weight=g.edata["weight"][t.edata["eid"]]) != A.T.tocsr()).nnz == 0
    assert t.rows_sorted
    np.testing.assert_array_equal(g.out_degrees(), np.diff(A.tocsc().indptr))


@given(st.integers(1, 20), st.integers(0, 60), st.integers(0, 2**31 - 1))
def test_edge_index_round_trip_keeps_duplicates(n, m, seed):
    rng = np.random.default_rng(seed)
    ei = rng.integers(0, n, size=(2, m))
    w = rng.random(m)
    g = Graph.from_edge_index(ei, n, edata={"w": w})
    assert g.nnz == m  # duplicates are kept, not merged
    # every CSR edge k is input edge edge_order[k]
    np.testing.assert_array_equal(g.indices, ei[0][g.edge_order])
    np.testing.assert_array_equal(g.dst(), ei[1][g.edge_order])
    np.testing.assert_array_equal(g.edata["w"], w[g.edge_order])
    back = g.to_edge_index()
    assert sorted(map(tuple, back.T)) == sorted(map(tuple, ei.T))


def test_empty_and_isolated():
    g = Graph(np.zeros(1, np.int64), np.zeros(0, np.int32))
    assert g.n_nodes == 0 and g.nnz == 0 and g.rows_sorted
    assert g.transpose().nnz == 0
    g = Graph(np.zeros(6, np.int64), np.zeros(0, np.int64))
    assert g.n_nodes == 5 and g.degrees().tolist() == [0] * 5
    assert g.to_edge_index().shape == (2, 0)


def test_rows_sorted_and_sorted_copy():
    g = Graph(np.array([0, 2, 4]), np.array([1, 0, 0, 1]), edata={"w": np.array([1.0, 2.0, 3.0, 4.0])})
    assert not g.rows_sorted
    with pytest.raises(ValueError, match="sorted"):
        g.require_sorted_rows("common_neighbor_fusion")
    s = g.sorted()
    assert s.rows_sorted
    assert s.indices.tolist() == [0, 1, 0, 1]
    assert s.edata["w"].tolist() == [2.0, 1.0, 3.0, 4.0]
    # duplicates within a row are not "strictly ascending"
    assert not Graph(np.array([0, 2]), np.array([0, 0])).rows_sorted


@pytest.mark.parametrize("indptr, indices, match", [
    (np.array([1, 2]), np.array([0, 0]), "start at 0"),
    (np.array([0, 2, 3]), np.array([0]), "end at nnz"),
    (np.array([0, 2, 1, 3]), np.array([0, 0, 0]), "non-decreasing"),
    (np.array([0, 1]), np.array([5]), r"indices must lie in \[0, n_src=1\)"),
    (np.array([0, 1]), np.array([-1]), "indices must lie"),
    (np.array([0.0, 1.0]), np.array([0]), "indptr must be an integer array"),
])
def test_bad_structure_raises(indptr, indices, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Graph(indptr, indices)


def test_set_edata_checks_length():
    g = Graph(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="edata\\['x'\\] has length 2 but the graph has 1 edges"):
        g.set_edata("x", np.zeros(2))


def test_dispatch_rejects_foreign_and_mixed():
    assert _dispatch.backend_of(a=np.zeros(2), b=None) == "cpu"
    with pytest.raises(TypeError, match="X must be a NumPy or CuPy array, got list"):
        _dispatch.backend_of(X=[1, 2])

    class FakeCupy:  # quacks like a CuPy array by module name only
        __module__ = "cupy._core.core"
        device = type("D", (), {"id": 0})()
    with pytest.raises(TypeError, match="mixed NumPy and CuPy inputs: X on the CPU .* W on the GPU"):
        _dispatch.backend_of(X=np.zeros(2), W=FakeCupy())
    with pytest.raises(NotImplementedError, match="no CPU"):
        _dispatch.kernels("no_such_op", "cpu")


def test_validate_messages():
    with pytest.raises(TypeError, match=r"X has dtype int64; supported: float32, float64 \(cast with"):
        _validate.features(np.zeros((3, 2), np.int64), "X", 3)
    with pytest.raises(ValueError, match="X has 2 rows but the graph has 3 nodes"):
        _validate.features(np.zeros((2, 2), np.float32), "X", 3)
    X = np.zeros((3, 4), np.float32)[:, ::2]
    assert _validate.features(X, "X", 3).flags.c_contiguous
    with pytest.raises(ValueError, match="edge_weight has length 1 but the graph has 2 edges"):
        _validate.edge_values(np.zeros(1), "edge_weight", 2, np.float32)
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        _validate.finite(np.array([0.0, np.nan]), "time")
    with pytest.raises(MemoryError, match="needs an estimated"):
        _validate.fits(10 * 2**30, "window_graph", available=2**30)


def test_config_override_restores_and_rejects_unknown():
    old = config.topk_block_items
    with config.override(topk_block_items=3):
        assert config.topk_block_items == 3
    assert config.topk_block_items == old
    with pytest.raises(AttributeError):
        with config.override(no_such_knob=1):
            pass


def test_import_touches_no_gpu_or_torch():
    import subprocess
    import sys
    code = ("import sys, stgkern; stgkern.Graph; "
            "bad = [m for m in ('cupy', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_public_name_resolves():
    import stgkern
    for name in stgkern.__all__:
        assert getattr(stgkern, name) is not None, name
    with pytest.raises(AttributeError):
        stgkern.no_such_op


def test_expand_ptr_gpu_formula_matches_repeat(monkeypatch, rng):
    """The GPU branch (searchsorted over row ends; NumPy standing in for CuPy) equals np.repeat,
    empty rows and an empty pointer included."""
    import sys
    from stgkern import _dispatch
    cases = [np.array([0]), np.array([0, 0, 0]), np.array([0, 3]), np.array([0, 2, 2, 5, 5, 9])]
    deg = rng.integers(0, 4, 200)
    deg[rng.random(200) < 0.3] = 0
    cases.append(np.concatenate([[0], np.cumsum(deg)]))
    want = [np.repeat(np.arange(len(p) - 1), np.diff(p)) for p in cases]
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(_dispatch, "_is_cupy", lambda a: True)
    for p, w in zip(cases, want):
        got = _dispatch.expand_ptr(p.astype(np.int64), np.int32)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, w)


def test_conversions_with_torch_and_scipy_formats():
    torch = pytest.importorskip("torch")
    import scipy.sparse as sp
    ei = torch.tensor([[0, 1, 2, 2, 0], [1, 2, 0, 1, 1]])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    g = Graph.from_edge_index(ei, 3, edata={"w": w})
    ref = Graph.from_edge_index(ei.numpy(), 3, edata={"w": w.numpy()})
    np.testing.assert_array_equal(g.indptr, ref.indptr)
    np.testing.assert_array_equal(g.indices, ref.indices)
    np.testing.assert_array_equal(g.edata["w"], ref.edata["w"])
    back = g.to_edge_index(torch=True)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.int64
    np.testing.assert_array_equal(back.numpy(), g.to_edge_index())
    # the same edge multiset as the input (CSR order: by destination, then source)
    assert sorted(map(tuple, back.T.tolist())) == sorted(map(tuple, ei.T.tolist()))

    A = g.to_scipy(weight="w")
    assert isinstance(A, sp.csr_array) and A.dtype == np.float64       # the weight's own dtype
    assert isinstance(g.to_scipy(matrix=True), sp.csr_matrix)
    assert g.to_scipy().dtype == np.float32 and g.to_scipy(weight="w", dtype=np.float32).dtype == np.float32
    dense = np.zeros((3, 3))
    np.add.at(dense, (ei[1].numpy(), ei[0].numpy()), w.numpy())
    np.testing.assert_array_equal(A.toarray(), dense)
    with pytest.raises(ValueError, match="one value per edge"):
        g.to_scipy(weight=np.ones(2))
    for fmt in ("csr", "csc", "coo", "lil", "dok", "bsr"):
        h = Graph.from_scipy(sp.csr_array(dense).asformat(fmt))
        np.testing.assert_array_equal(h.to_scipy(weight="weight").toarray(), dense)


def test_segment_reduce_on_a_graph_without_segments_says_why():
    import stgkern
    g = Graph.from_edge_index(np.array([[0, 1], [1, 0]]), 2)
    assert g.segment_ptr is None
    with pytest.raises(TypeError, match="segment_ptr is set only for graphs built from an event log"):
        stgkern.segment_reduce(np.ones((2, 3)), g.segment_ptr)


def test_row_and_node_order_helpers():
    import stgkern
    log = stgkern.synthetic_log(n_users=15, seed=3)
    shuffled = log.take(np.random.default_rng(0).permutation(len(log)))
    g = stgkern.window_graph(shuffled, window=4)
    # node order is (user, time): the helper gives each node its own event's value
    users = g.to_node_order(shuffled.user)
    np.testing.assert_array_equal(users, shuffled.user[g.perm])
    assert (np.diff(users) >= 0).all()
    for s, e in zip(g.segment_ptr[:-1], g.segment_ptr[1:]):
        assert (np.diff(g.to_node_order(shuffled.time)[s:e]) >= 0).all()
    x = np.random.default_rng(1).standard_normal((len(shuffled), 3))
    np.testing.assert_array_equal(g.to_row_order(g.to_node_order(x)), x)
    with pytest.raises(ValueError, match="one entry per input event"):
        g.to_node_order(x[:-1])
    plain = Graph.from_edge_index(np.array([[0], [1]]), 2)
    with pytest.raises(ValueError, match="only graphs built from an event log"):
        plain.to_node_order(np.zeros(2))
