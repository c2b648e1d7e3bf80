"""The register-resident row gather (``_simd.gather_wsum``): bit-exact against
the plain pair fold of ``naive.py`` for every width, dtype and row length,
including rows that are not vector-aligned, and with or without prefetch."""
import numba
import numpy as np
import pytest
from naive import naive_arg_fold_row, naive_pair_fold_row, naive_won_row

from stgkern._numba._simd import (
    BLOCK_VECTORS,
    VECTOR_BYTES,
    gather_add,
    gather_max,
    gather_max_add,
    gather_min,
    gather_min_add,
    gather_won,
    gather_wsum,
)


@numba.njit
def _rows(indptr, idx, X, coef, pf, out):
    for i in range(indptr.shape[0] - 1):
        gather_wsum(out[i], X, idx, coef, None, indptr[i], indptr[i + 1], pf)


@numba.njit
def _rows_add(indptr, idx, X, coef, pf, out):
    for i in range(indptr.shape[0] - 1):
        gather_add(out[i], X, idx, coef, None, indptr[i], indptr[i + 1], pf)


def _widths(dtype):
    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    block = BLOCK_VECTORS * lanes
    # below one vector, one vector, one block, a block plus each remainder path
    return sorted({1, 2, 3, lanes - 1, lanes, lanes + 1, block - 1, block, block + 1, block + lanes,
                   block + lanes + 3, 2 * block + 1})


def _graph(rng, n, n_src, max_deg):
    deg = rng.integers(0, max_deg + 1, n)
    deg[: min(n, 6)] = np.arange(min(n, 6))            # rows of 0..5 edges: every fold branch
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    return indptr, rng.integers(0, n_src, indptr[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("idx_dtype", [np.int32, np.int64, np.uint32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pf", [None, 1, 16, 10**6, -4])  # far past the end or negative: clamped
def test_gather_wsum_is_bit_exact_against_the_pair_fold(dtype, idx_dtype, weighted, pf):
    rng = np.random.default_rng(7)
    for F in _widths(dtype):
        indptr, idx = _graph(rng, 23, 17, 9)
        idx = idx.astype(idx_dtype)
        X = rng.standard_normal((17, F)).astype(dtype)
        coef = rng.standard_normal(idx.shape[0]).astype(dtype) if weighted else None
        out = np.full((23, F), np.nan, dtype)
        _rows(indptr, idx, X, coef, pf, out)
        want = np.stack([naive_pair_fold_row(X, idx, coef, indptr[i], indptr[i + 1]) for i in range(23)])
        assert out.tobytes() == want.tobytes(), F                # bit for bit, signed zeros included


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["mul", "add"])
@pytest.mark.parametrize("coef_kind", ["edge", "row"])
@pytest.mark.parametrize("pf", [None, 5])
def test_message_forms_are_bit_exact_against_the_pair_fold(dtype, op, coef_kind, pf):
    rng = np.random.default_rng(3)
    for F in _widths(dtype):
        indptr, idx = _graph(rng, 19, 13, 7)
        X = rng.standard_normal((13, F)).astype(dtype)
        nnz = idx.shape[0]
        coef = rng.standard_normal(nnz if coef_kind == "edge" else (nnz, F)).astype(dtype)
        out = np.full((19, F), np.nan, dtype)
        (_rows if op == "mul" else _rows_add)(indptr, idx, X, coef, pf, out)
        want = np.stack([naive_pair_fold_row(X, idx, coef, indptr[i], indptr[i + 1], op) for i in range(19)])
        assert out.tobytes() == want.tobytes(), F


@numba.njit
def _rows_at(indptr, idx, X, coef, cidx, add, out):
    for i in range(indptr.shape[0] - 1):
        if add:
            gather_add(out[i], X, idx, coef, cidx, indptr[i], indptr[i + 1], None)
        else:
            gather_wsum(out[i], X, idx, coef, cidx, indptr[i], indptr[i + 1], None)


@pytest.mark.parametrize("cidx_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("coef_kind", ["edge", "row"])
@pytest.mark.parametrize("add", [False, True])
def test_indirect_coefficients_equal_the_gathered_ones(cidx_dtype, coef_kind, add):
    """coef read at cidx[k] gives the bits of coef[cidx] passed directly."""
    rng = np.random.default_rng(11)
    F = 70
    indptr, idx = _graph(rng, 31, 29, 8)
    nnz = idx.shape[0]
    X = rng.standard_normal((29, F)).astype(np.float32)
    coef = rng.standard_normal(nnz if coef_kind == "edge" else (nnz, F)).astype(np.float32)
    cidx = rng.permutation(nnz).astype(cidx_dtype)
    got = np.full((31, F), np.nan, np.float32)
    want = np.full((31, F), np.nan, np.float32)
    _rows_at(indptr, idx, X, coef, cidx, add, got)
    _rows_at(indptr, idx, X, np.ascontiguousarray(coef[cidx]), None, add, want)
    assert got.tobytes() == want.tobytes()


def test_gather_wsum_reads_unaligned_rows_and_writes_only_its_row():
    rng = np.random.default_rng(1)
    F = 37                                                       # rows start at every 4-byte offset
    base = rng.standard_normal(1 + 50 * F).astype(np.float32)
    X = base[1:].reshape(50, F)                                  # not 8/16/64-byte aligned
    assert X.ctypes.data % 64 != 0
    indptr, idx = _graph(rng, 40, 50, 30)
    big = np.full(2 + 40 * F + 5, 7.0, np.float32)
    out = big[1:1 + 40 * F].reshape(40, F)
    _rows(indptr, idx.astype(np.int32), X, None, 4, out)
    want = np.stack([naive_pair_fold_row(X, idx, None, indptr[i], indptr[i + 1]) for i in range(40)])
    assert out.tobytes() == want.tobytes()
    assert big[0] == 7.0 and np.all(big[1 + 40 * F:] == 7.0)     # nothing outside the rows written


def test_gather_wsum_special_values_follow_ieee():
    X = np.array([[np.inf, -0.0, np.nan, 3e38], [-np.inf, -0.0, 1.0, 3e38]], np.float32)
    idx = np.array([0, 0, 1], np.int64)
    out = np.empty((3, 4), np.float32)
    indptr = np.array([0, 0, 1, 3], np.int64)                    # empty row, one edge, a pair
    _rows(indptr, idx, X, None, None, out)
    with np.errstate(over="ignore", invalid="ignore"):
        want = np.stack([naive_pair_fold_row(X, idx, None, indptr[i], indptr[i + 1]) for i in range(3)])
    assert out.tobytes() == want.tobytes()
    assert np.all(out[0] == 0) and out[1, 0] == np.inf and np.isnan(out[2, 0]) and out[2, 3] == np.inf
    assert np.signbit(out[2, 1]) and not np.signbit(out[1, 1])   # -0 + -0 = -0; 0 + -0 = +0


def test_gather_wsum_rejects_what_it_cannot_address():
    X = np.zeros((4, 3), np.float32)
    idx = np.zeros(2, np.int64)
    with pytest.raises(numba.TypingError):
        _rows(np.array([0, 2], np.int64), idx, X[:, ::2], None, None, np.empty((1, 2), np.float32))  # strided X
    with pytest.raises(numba.TypingError):
        _rows(np.array([0, 2], np.int64), idx, X, None, None, np.empty((1, 3), np.float64))  # dtype mismatch
    with pytest.raises(numba.TypingError):
        _rows_add(np.array([0, 2], np.int64), idx, X, None, None, np.empty((1, 3), np.float32))  # add needs E


@numba.njit
def _rows_arg_mul(indptr, idx, X, coef, pf, is_max, out, arg):
    for i in range(indptr.shape[0] - 1):
        if is_max:
            gather_max(out[i], X, idx, coef, None, indptr[i], indptr[i + 1], pf, arg[i])
        else:
            gather_min(out[i], X, idx, coef, None, indptr[i], indptr[i + 1], pf, arg[i])


@numba.njit
def _rows_arg_add(indptr, idx, X, coef, pf, is_max, out, arg):
    for i in range(indptr.shape[0] - 1):
        if is_max:
            gather_max_add(out[i], X, idx, coef, None, indptr[i], indptr[i + 1], pf, arg[i])
        else:
            gather_min_add(out[i], X, idx, coef, None, indptr[i], indptr[i + 1], pf, arg[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pick", ["max", "min"])
@pytest.mark.parametrize("op,coef_kind", [("mul", None), ("mul", "edge"), ("mul", "row"), ("add", "edge"),
                                          ("add", "row")])                  # add always has E
@pytest.mark.parametrize("pf", [None, 3])
def test_arg_extremes_are_bit_exact_against_the_first_wins_fold(dtype, pick, op, coef_kind, pf):
    rng = np.random.default_rng(5)
    for F in _widths(dtype):
        indptr, idx = _graph(rng, 21, 11, 9)
        nnz = idx.shape[0]
        # few distinct values: many ties; some NaN, infinities and signed zeros
        X = rng.choice(np.array([-2, -1, -0.0, 0.0, 1, 2, np.inf, -np.inf, np.nan]), size=(11, F)).astype(dtype)
        coef = None if coef_kind is None else \
            rng.choice(np.array([-1.0, 0.5, 1.0, 2.0]), size=nnz if coef_kind == "edge" else (nnz, F)).astype(dtype)
        out = np.full((21, F), 7, dtype)
        arg = np.full((21, F), 7, np.int64)
        with np.errstate(invalid="ignore"):
            (_rows_arg_mul if op == "mul" else _rows_arg_add)(indptr, idx, X, coef, pf, pick == "max", out, arg)
            want = [naive_arg_fold_row(X, idx, coef, indptr[i], indptr[i + 1], pick, op) for i in range(21)]
        assert out.tobytes() == np.stack([w[0] for w in want]).tobytes(), F
        assert np.array_equal(arg, np.stack([w[1] for w in want])), F


def _assert_same_bits_but_nan_sign(got, want, msg):
    """Bit for bit (signed zeros included) except a NaN's sign, which IEEE
    leaves open: x86's inf + -inf is a negative NaN (NumPy's too), but a
    NaN plus another NaN keeps the sign of whichever operand the hardware
    returns, and the scalar reference and the vector code order the two
    operands differently in that case."""
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), msg
    assert got[~nan].tobytes() == want[~nan].tobytes(), msg


@numba.njit
def _rows_won(indptr, idx, X, coef, cidx, arg, pf, out):
    for j in range(indptr.shape[0] - 1):
        gather_won(out[j], X, idx, coef, cidx, indptr[j], indptr[j + 1], pf, arg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("coef_kind", [None, "edge", "row"])
@pytest.mark.parametrize("pf", [None, 2])
def test_won_gather_is_bit_exact_and_keeps_what_it_does_not_touch(dtype, coef_kind, pf):
    rng = np.random.default_rng(9)
    for F in _widths(dtype):
        indptr, idx = _graph(rng, 17, 13, 8)          # a transpose: rows j, sources idx[t] = i
        nnz = idx.shape[0]
        cidx = rng.permutation(nnz).astype(np.int64)  # forward edge id of each transposed edge
        # arg: each (i, f) won by one of its edges or by none (-1); many features won by the same edge
        arg = np.full((13, F), -1, np.int64)
        for t in range(nnz):
            arg[idx[t], rng.random(F) < 0.5] = cidx[t]
        X = rng.choice(np.array([-1.5, -0.0, 0.0, 2.0, np.inf, np.nan]), size=(13, F)).astype(dtype)
        coef = None if coef_kind is None else \
            rng.standard_normal(nnz if coef_kind == "edge" else (nnz, F)).astype(dtype)
        start = rng.choice(np.array([-0.0, 0.0, 1.0, -3.0]), size=(17, F)).astype(dtype)
        out = start.copy()
        with np.errstate(invalid="ignore"):
            _rows_won(indptr, idx, X, coef, cidx, arg, pf, out)
            want = np.stack([naive_won_row(start[j], X, idx, coef, cidx, arg, indptr[j], indptr[j + 1])
                             for j in range(17)])
        _assert_same_bits_but_nan_sign(out, want, F)
