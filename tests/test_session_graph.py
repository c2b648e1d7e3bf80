"""SR-GNN session graphs, padded layout and prefixes against the faithful script references."""
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from naive import (naive_sequences, naive_split, naive_srgnn_get_slice,
                          naive_srgnn_process_seqs, naive_srgnn_session_graph)
from stgkern import session_graph, srgnn_layout, srgnn_prefixes
from stgkern.compat import sequences


def to_csr(seqs):
    ptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(s) for s in seqs])
    items = np.array([x for s in seqs for x in s], dtype=np.int64)
    return ptr, items


# few distinct ids -> many repeats, ties, self-loops; empty and length-1 sessions
seq_lists = st.lists(st.lists(st.integers(1, 6), min_size=0, max_size=9), min_size=0, max_size=8)


@given(seq_lists, st.sampled_from([np.float32, np.float64]))
def test_session_graph_matches_srgnn(seqs, dtype):
    _check_against_srgnn(seqs, dtype)


@pytest.mark.parametrize("length", [47, 48, 49, 50, 300])
def test_long_sessions_match_srgnn(length):
    """Sessions past the in-place insertion sort's length (either side of it), many repeats."""
    rng = np.random.default_rng(length)
    seqs = [rng.integers(1, 30, size=length).tolist(), rng.integers(1, 500, size=length).tolist(),
            [], [5], rng.integers(1, 4, size=length + 1).tolist()]
    _check_against_srgnn(seqs, np.float32)


def _check_against_srgnn(seqs, dtype):
    ptr, items = to_csr(seqs)
    g, node_item, alias = session_graph(ptr, items, dtype=dtype)
    ref = naive_srgnn_session_graph(seqs)
    assert g.rows_sorted and g.edata["w_in"].dtype == dtype and g.edata["w_out"].dtype == dtype
    sp = g.segment_ptr
    assert sp.tolist() == np.cumsum([0] + [len(r[0]) for r in ref]).tolist()
    A_in = g.to_scipy(weight="w_in", dtype=np.float64).toarray()
    # w_out pulled over the transpose: row u of A_out holds 1/outdeg(u) at each target v
    t = g.transpose()
    A_out = t.to_scipy(weight=g.edata["w_out"][t.edata["eid"]], dtype=np.float64).toarray()
    for s, (node, a_in, a_out, al) in enumerate(ref):
        b, e = sp[s], sp[s + 1]
        np.testing.assert_array_equal(node_item[b:e], node)
        np.testing.assert_array_equal(alias[ptr[s]:ptr[s + 1]] - b, al)
        np.testing.assert_array_equal(A_in[b:e, b:e], a_in.astype(dtype))
        np.testing.assert_array_equal(A_out[b:e, b:e], a_out.astype(dtype))
    # block diagonal: every edge stays inside its session
    seg_of = np.repeat(np.arange(len(seqs)), np.diff(sp))
    assert (seg_of[g.indices] == seg_of[g.dst()]).all()


@given(seq_lists, st.integers(0, 3))
def test_srgnn_layout_equals_get_slice(seqs, extra):
    ptr, items = to_csr(seqs)
    longest = max((len(s) for s in seqs), default=0)
    for max_len in (None, longest + extra):
        got = srgnn_layout(ptr, items, max_len=max_len)
        ref = naive_srgnn_get_slice(seqs, max_len)
        for name, a, b in zip(("alias_inputs", "A", "items", "mask"), got, ref):
            assert a.dtype == b.dtype, name
            assert a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_layout_padding_node_and_example():
    # shorter session gets node 0 (padding) first, as np.unique over the padded row does
    alias, A, node, mask = srgnn_layout(np.array([0, 4, 5]), np.array([3, 3, 1, 3, 8]))
    assert node.tolist() == [[1, 3], [0, 8]]
    assert alias.tolist() == [[1, 1, 0, 1], [1, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    # edges 3->3, 3->1, 1->3: indeg(1)=1, indeg(3)=2; outdeg(3)=2, outdeg(1)=1
    np.testing.assert_array_equal(A[0], [[0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]])
    assert not A[1].any()


def test_layout_non_contiguous_and_int32():
    seqs = [[2, 1, 2], [5], [4, 4, 1, 2]]
    ptr, items = to_csr(seqs)
    wide = np.zeros(2 * items.size, dtype=np.int32)
    wide[::2] = items
    got = srgnn_layout(ptr.astype(np.int32), wide[::2])
    for a, b in zip(got, naive_srgnn_get_slice(seqs)):
        np.testing.assert_array_equal(a, b)


@given(st.lists(st.lists(st.integers(0, 9), max_size=7), max_size=6))
def test_prefixes_match_process_seqs(seqs):
    ptr, items = to_csr(seqs)
    out_ptr, out_items, targets, seq_id = srgnn_prefixes(ptr, items)
    ref_seqs, labs, ids = naive_srgnn_process_seqs(seqs)
    assert naive_split(out_ptr, out_items) == ref_seqs
    assert targets.tolist() == labs and seq_id.tolist() == ids


def test_prefix_order_longest_first():
    p, it, tg, sid = srgnn_prefixes(np.array([0, 4, 4, 5]), np.array([1, 2, 3, 4, 9]))
    assert naive_split(p, it) == [[1, 2, 3], [1, 2], [1]]
    assert tg.tolist() == [4, 3, 2] and sid.tolist() == [0, 0, 0]


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 9), st.integers(0, 5)), max_size=30))
def test_sequences_sorted_stably(rows):
    user = np.array([r[0] for r in rows], dtype=np.int64)
    item = np.array([r[1] for r in rows], dtype=np.int64)
    time = np.array([r[2] for r in rows], dtype=np.int64)
    got = sequences(types.SimpleNamespace(user=user, item=item, time=time))
    for a, b in zip(got, naive_sequences(user, item, time)):
        np.testing.assert_array_equal(a, b)


def test_empty_batch():
    g, node_item, alias = session_graph(np.array([0]), np.array([], dtype=np.int64))
    assert g.n_nodes == 0 and g.nnz == 0 and node_item.size == 0 and alias.size == 0
    alias, A, node, mask = srgnn_layout(np.array([0, 0]), np.array([], dtype=np.int64))
    assert alias.shape == (1, 0) and A.shape == (1, 0, 0) and node.shape == (1, 0)


@pytest.mark.parametrize("ptr, items, err, match", [
    (np.array([0, 2]), np.array([1, 0, 2]), ValueError, r"end at len\(items\)=3"),
    (np.array([1, 3]), np.array([1, 2, 3]), ValueError, "start at 0"),
    (np.array([0, 2, 1, 3]), np.array([1, 2, 3]), ValueError, "non-decreasing"),
    (np.array([0, 3]), np.array([1, -2, 3]), ValueError, r">= 0.*position 1"),
    (np.array([0, 3]), np.array([1.0, 2.0, 3.0]), TypeError, "integer ids"),
    (np.array([0.0, 3.0]), np.array([1, 2, 3]), TypeError, "ptr must be an integer"),
    (np.array([0, 3]), np.array([[1, 2, 3]]), ValueError, "1-D"),
])
def test_bad_sequences_raise(ptr, items, err, match):
    with pytest.raises(err, match=match):
        session_graph(ptr, items)


def test_layout_rejects_item_zero_and_short_max_len():
    with pytest.raises(ValueError, match="reserves item 0 for padding"):
        srgnn_layout(np.array([0, 2]), np.array([3, 0]))
    with pytest.raises(ValueError, match="never truncates"):
        srgnn_layout(np.array([0, 3]), np.array([3, 1, 2]), max_len=2)
    with pytest.raises(TypeError, match="mixed|NumPy or CuPy"):
        session_graph(np.array([0, 1]), [1])


@pytest.mark.parametrize("serial_rows", [0, 10**9])
def test_serial_and_parallel_paths_agree(serial_rows):
    from stgkern import config
    rng = np.random.default_rng(7)
    seqs = [rng.integers(1, 12, size=rng.integers(0, 10)).tolist() for _ in range(40)]
    ptr, items = to_csr(seqs)
    with config.override(cpu_serial_rows=serial_rows):
        got = srgnn_layout(ptr, items)
        g, node_item, alias = session_graph(ptr, items, dtype=np.float64)
    for a, b in zip(got, naive_srgnn_get_slice(seqs)):
        np.testing.assert_array_equal(a, b)
    ref = naive_srgnn_session_graph(seqs)
    np.testing.assert_array_equal(node_item, np.concatenate([r[0] for r in ref]))
