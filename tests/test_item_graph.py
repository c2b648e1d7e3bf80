"""GCE-GNN global item graph against the faithful build_graph.py reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from naive import naive_gcegnn_build_graph
from stgkern import item_graph


def to_csr(seqs):
    ptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(s) for s in seqs])
    return ptr, np.array([x for s in seqs for x in s], dtype=np.int64)


def check(seqs, n_items, epsilon, top):
    ptr, items = to_csr(seqs)
    g = item_graph(ptr, items, n_items=n_items, epsilon=epsilon, top=top)
    num = n_items if n_items is not None else (int(items.max()) + 1 if items.size else 0)
    adj, weight = naive_gcegnn_build_graph(seqs, num, epsilon=epsilon, sample_num=top)
    assert g.n_nodes == num and g.n_src == num
    assert g.edata["count"].dtype == np.int64
    for a in range(num):
        row = slice(g.indptr[a], g.indptr[a + 1])
        assert g.indices[row].tolist() == adj[a], a
        assert g.edata["count"][row].tolist() == weight[a], a
    full, _ = naive_gcegnn_build_graph(seqs, num, epsilon=epsilon, sample_num=10**9)
    assert g.n_neighbors.tolist() == [len(x) for x in full]
    return g


# small id range -> many equal counts, so the first-appearance tie rule is exercised
@given(st.lists(st.lists(st.integers(0, 7), max_size=12), max_size=10),
       st.integers(1, 4), st.integers(1, 5), st.booleans())
def test_matches_build_graph(seqs, epsilon, top, pad_items):
    n_items = None
    if pad_items:
        n_items = max((x for s in seqs for x in s), default=-1) + 3
    check(seqs, n_items, epsilon, top)


def test_published_defaults_larger_random():
    rng = np.random.default_rng(3)
    seqs = [rng.integers(1, 60, size=rng.integers(0, 25)).tolist() for _ in range(300)]
    check(seqs, 60, 3, 12)


def test_tie_order_is_first_appearance_not_index():
    # item 5 meets 9 first, then 2 (both count 2): rank order keeps 9 before 2
    g = check([[5, 9], [5, 2]], None, 1, 12)
    assert g.indices[g.indptr[5]:g.indptr[6]].tolist() == [9, 2]
    assert not g.rows_sorted
    s = g.sorted()
    assert s.indices[s.indptr[5]:s.indptr[6]].tolist() == [2, 9]


def test_edges_and_chunking_do_not_change_result(monkeypatch):
    from stgkern._numba import item_graph as k
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 30, size=rng.integers(0, 15)).tolist() for _ in range(50)]
    ptr, items = to_csr(seqs)
    a = item_graph(ptr, items)
    monkeypatch.setattr(k, "CHUNKS_PER_THREAD", 1)
    b = item_graph(ptr, items)
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.edata["count"], b.edata["count"])


def test_empty_and_single():
    g = item_graph(np.array([0]), np.array([], dtype=np.int64))
    assert g.n_nodes == 0 and g.nnz == 0
    g = item_graph(np.array([0, 1]), np.array([4]))
    assert g.n_nodes == 5 and g.nnz == 0


@pytest.mark.parametrize("kw, err, match", [
    (dict(epsilon=0), ValueError, "epsilon must be >= 1"),
    (dict(top=0), ValueError, "top must be >= 1"),
    (dict(top=1.5), TypeError, "top must be an integer"),
    (dict(n_items=2), ValueError, "n_items=2"),
])
def test_bad_arguments(kw, err, match):
    with pytest.raises(err, match=match):
        item_graph(np.array([0, 3]), np.array([1, 2, 3]), **kw)


def test_negative_items():
    with pytest.raises(ValueError, match="items must be >= 0"):
        item_graph(np.array([0, 2]), np.array([1, -1]))
