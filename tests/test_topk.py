import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, strategies as st

from naive import naive_topk
from stgkern import config
from stgkern.readout import topk

DTYPES = [np.float32, np.float64]
TINY = dict(topk_block_items=3, topk_block_rows=2)


def _check(Q, items, k, exclude=None, excluded_rows=None, exact=True):
    idx, sc = topk(Q, items, k, exclude)
    ref_idx, ref_sc = naive_topk(Q, items, k, excluded_rows)
    assert idx.dtype == np.int64 and idx.shape == (Q.shape[0], k)
    assert sc.dtype == Q.dtype and sc.shape == (Q.shape[0], k)
    if exact:  # integer-valued data: scores are exact in any precision, ties included
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(sc, ref_sc.astype(Q.dtype))
    else:
        # float data: near-equal scores may swap under rounding, so compare
        # the chosen items' float64 scores with the reference's, position by
        # position, within the working precision's rounding error
        S = Q.astype(np.float64) @ items.astype(np.float64).T
        tol = 8 * np.finfo(Q.dtype).eps * float(np.abs(Q).sum(1).max() * np.abs(items).max() + 1)
        got = np.take_along_axis(S, idx, 1)
        np.testing.assert_allclose(got, ref_sc, rtol=0, atol=tol)
        np.testing.assert_allclose(sc, got, rtol=0, atol=tol)
    return idx, sc


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("blocks", [None, TINY, dict(topk_block_items=5, topk_block_rows=3)],
                         ids=["default", "tiny", "odd"])
@pytest.mark.parametrize("d", [1, 33])
def test_matches_stable_sort_with_ties(dtype, blocks, d, rng):
    Q = rng.integers(-2, 3, (11, d)).astype(dtype)
    items = rng.integers(-2, 3, (37, d)).astype(dtype)   # heavy ties
    with config.override(**(blocks or {})):
        for k in (1, 4, 37):
            _check(Q, items, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_random_floats(dtype, rng):
    Q = rng.standard_normal((9, 127)).astype(dtype)
    items = rng.standard_normal((300, 127)).astype(dtype)
    with config.override(**TINY):
        idx, _ = _check(Q, items, 20, exact=False)
    np.testing.assert_array_equal(idx, topk(Q, items, 20)[0])  # block size does not matter


@given(st.integers(0, 6), st.integers(1, 30), st.integers(1, 4), st.floats(0, 1),
       st.sampled_from(DTYPES), st.integers(1, 6), st.integers(1, 4), st.data())
def test_hypothesis_with_exclusions(m, n, d, density, dtype, bi, br, data):
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    k = data.draw(st.integers(1, n))
    Q = rng.integers(-3, 4, (m, d)).astype(dtype)
    items = rng.integers(-3, 4, (n, d)).astype(dtype)
    mask = rng.random((m, n)) < density
    E = sp.csr_matrix(mask)
    rows = [set(np.flatnonzero(mask[r])) for r in range(m)]
    with config.override(topk_block_items=bi, topk_block_rows=br):
        idx, sc = _check(Q, items, k, E, rows)
    # padding: exactly the rows with fewer than k candidates
    n_cand = n - mask.sum(axis=1)
    assert ((idx == -1).sum(axis=1) == np.maximum(k - n_cand, 0)).all()
    assert np.isneginf(sc[idx == -1]).all()


def test_exclude_tuple_unsorted_and_duplicates(rng):
    Q = rng.integers(-2, 3, (3, 4)).astype(np.float64)
    items = rng.integers(-2, 3, (10, 4)).astype(np.float64)
    indptr = np.array([0, 4, 4, 13])
    indices = np.array([7, 2, 2, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1], dtype=np.int32)
    rows = [{7, 2, 9}, set(), set(range(1, 10))]
    with config.override(**TINY):
        idx, sc = _check(Q, items, 5, (indptr, indices), rows)
    np.testing.assert_array_equal(idx[2], [0, -1, -1, -1, -1])  # all but one item barred


def test_m_zero_one_item_and_k_equals_n(rng):
    idx, sc = topk(np.zeros((0, 4), np.float32), np.ones((5, 4), np.float32), 3)
    assert idx.shape == (0, 3) and sc.shape == (0, 3)
    idx, sc = topk(np.ones((2, 3)), np.full((1, 3), 2.0), 1)
    np.testing.assert_array_equal(idx, [[0], [0]])
    np.testing.assert_array_equal(sc, [[6.0], [6.0]])
    Q = rng.standard_normal((4, 6))
    items = rng.standard_normal((8, 6))
    idx, _ = topk(Q, items, 8)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.tile(np.arange(8), (4, 1)))


def test_non_contiguous(rng):
    Q = rng.integers(-2, 3, (10, 12)).astype(np.float32)[::2, ::3]
    items = rng.integers(-2, 3, (40, 12)).astype(np.float32)[::2, ::3]
    with config.override(**TINY):
        _check(Q, items, 6)


def test_thread_count_does_not_matter(rng):
    import numba
    Q = rng.integers(-2, 3, (50, 8)).astype(np.float32)
    items = rng.integers(-2, 3, (500, 8)).astype(np.float32)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        a = topk(Q, items, 10)
        numba.set_num_threads(max(1, min(2, numba.config.NUMBA_NUM_THREADS)))
        b = topk(Q, items, 10)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_bad_inputs():
    Q = np.ones((2, 3), np.float32)
    items = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="larger than the number of items"):
        topk(Q, items, 6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        topk(Q, items, 0)
    with pytest.raises(TypeError, match="k must be an integer"):
        topk(Q, items, 2.0)
    with pytest.raises(TypeError, match="dtypes must match"):
        topk(Q, items.astype(np.float64), 2)
    with pytest.raises(ValueError, match="width 3 but items has width 4"):
        topk(Q, np.ones((5, 4), np.float32), 2)
    with pytest.raises(TypeError, match="Q has dtype int64"):
        topk(np.ones((2, 3), np.int64), items, 2)
    with pytest.raises(ValueError, match="Q must have 2 dimension"):
        topk(np.ones(3, np.float32), items, 2)
    bad = items.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="items has NaN or infinite values \\(first in row 4\\)"):
        topk(Q, bad, 2)
    with pytest.raises(ValueError, match="exclude has shape"):
        topk(Q, items, 2, sp.csr_matrix((3, 5)))
    with pytest.raises(ValueError, match="outside \\[0, 5\\)"):
        topk(Q, items, 2, (np.array([0, 1, 1]), np.array([5])))
    with pytest.raises(ValueError, match="indptr has shape"):
        topk(Q, items, 2, (np.array([0, 1]), np.array([0])))
    with pytest.raises(TypeError, match="CSR matrix"):
        topk(Q, items, 2, sp.coo_matrix((2, 5)))
    with pytest.raises(TypeError, match="must be a NumPy or CuPy array"):
        topk(Q.tolist(), items, 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_rows_scores_do_not_depend_on_the_rows_ranked_with_it(dtype):
    """Every score tile is one fixed-shape product (a partial block of queries is padded), so a
    query's top-k is the same bits alone, in a ragged block or in a full one: a user ranked
    in any part or worker gets the same scores (a single row once took BLAS's GEMV path)."""
    rng = np.random.default_rng(7)
    Q = rng.normal(size=(300, 19)).astype(dtype)
    items = rng.normal(size=(700, 19)).astype(dtype)
    idx, sc = topk(Q, items, 9)
    for rows in (slice(5, 6), slice(0, 37), slice(250, 300), slice(3, 260)):
        i, s = topk(np.ascontiguousarray(Q[rows]), items, 9)
        assert np.array_equal(i, idx[rows]) and np.array_equal(s, sc[rows]), rows
    with config.override(topk_fixed_shape=False):                   # the GEMV path: the same lists
        i, s = topk(np.ascontiguousarray(Q[5:6]), items, 9)
    assert np.array_equal(i, idx[5:6]) and np.allclose(s, sc[5:6], rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_fixed_shape_matmul_is_the_product_and_row_independent():
    from stgkern.model import fixed_shape_matmul
    rng = np.random.default_rng(8)
    A, B = rng.normal(size=(600, 261)), rng.normal(size=(261, 262))
    P = fixed_shape_matmul(A, B)
    np.testing.assert_allclose(P, A @ B, rtol=1e-12, atol=1e-12)
    for rows in (slice(5, 6), slice(0, 37), slice(3, 300), slice(256, 600)):
        assert np.array_equal(fixed_shape_matmul(A[rows], B), P[rows]), rows
    assert fixed_shape_matmul(A[:0], B).shape == (0, 262)
