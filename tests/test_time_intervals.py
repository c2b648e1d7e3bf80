"""TiSASRec rescaling and interval matrices against the faithful util.py reference."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from naive import naive_split, naive_tisasrec_relation
from stgkern import time_intervals


def to_csr(seqs, dtype):
    ptr = np.zeros(len(seqs) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(s) for s in seqs])
    return ptr, np.array([x for s in seqs for x in s], dtype=dtype)


def check(seqs, maxlen, span, dtype=np.int64, drop_last=0):
    seqs = [sorted(s) for s in seqs]
    ptr, times = to_csr(seqs, dtype)
    mats, seq = time_intervals(ptr, times, maxlen=maxlen, span=span, drop_last=drop_last)
    ref_m, ref_s = naive_tisasrec_relation(naive_split(ptr, times), maxlen, span, drop_last)
    assert mats.dtype == np.int32 and seq.dtype == np.int32
    np.testing.assert_array_equal(seq, ref_s)
    np.testing.assert_array_equal(mats, ref_m)


# small gaps with repeats -> zero gaps, half-way roundings (odd multiples of scale/2)
@given(st.lists(st.lists(st.integers(0, 40), max_size=12), max_size=6),
       st.integers(1, 9), st.integers(1, 20))
def test_matches_relation_int(seqs, maxlen, span):
    check(seqs, maxlen, span)


# fractional times (multiples of 1/8 and 1/10) so that half-way roundings occur
@given(st.lists(st.lists(st.integers(0, 4000).map(lambda x: x / 8) | st.integers(0, 999).map(lambda x: x / 10),
                         max_size=10), max_size=5),
       st.integers(1, 8), st.integers(1, 300))
def test_matches_relation_float(seqs, maxlen, span):
    check(seqs, maxlen, span, dtype=np.float64)


@given(st.lists(st.lists(st.integers(0, 30), max_size=10), min_size=1, max_size=5), st.data())
def test_drop_last(seqs, data):
    drops = data.draw(st.lists(st.integers(0, 4), min_size=len(seqs), max_size=len(seqs)))
    # the reference's resc[:-d] keeps nothing when d exceeds the length, like min(d, L)
    check(seqs, 6, 10, drop_last=np.array(drops))
    check(seqs, 6, 10, drop_last=1)


def test_half_to_even_and_padding():
    # gaps 4, 6 -> scale 4; 10/4 = 2.5 -> 2 (round half to even) -> rescaled 3
    mats, seq = time_intervals(np.array([0, 3, 3]), np.array([10, 14, 20]), maxlen=5, span=2)
    assert seq.tolist() == [[0, 0, 1, 2, 3], [0] * 5]
    assert mats[0, 0].tolist() == [0, 0, 1, 2, 2]   # padding takes part, as published
    assert not mats[1].any()


def test_truncates_to_last_maxlen_and_non_contiguous():
    times = np.arange(20, dtype=np.int64)[::2]   # strided view
    mats, seq = time_intervals(np.array([0, 10]), times, maxlen=3, span=100)
    assert seq.tolist() == [[8, 9, 10]]
    check([list(range(0, 20, 2))], 3, 100)


def test_same_times_scale_one():
    mats, seq = time_intervals(np.array([0, 3]), np.array([7, 7, 7]), maxlen=3)
    assert seq.tolist() == [[1, 1, 1]] and not mats.any()


@pytest.mark.parametrize("ptr, times, kw, err, match", [
    (np.array([0, 2]), np.array([1.0, np.nan]), {}, ValueError, "NaN"),
    (np.array([0, 3]), np.array([1, 2]), {}, ValueError, r"len\(times\)=2"),
    (np.array([0, 2]), np.array([5, 2]), {}, ValueError, "sorted within each sequence"),
    (np.array([0, 2]), np.array([1, 2]), dict(maxlen=0), ValueError, "maxlen must be >= 1"),
    (np.array([0, 2]), np.array([1, 2]), dict(span=0), ValueError, "span must be >= 1"),
    (np.array([0, 2]), np.array([1, 2]), dict(drop_last=np.array([1, 2])), ValueError, "drop_last"),
    (np.array([0, 2]), np.array(["a", "b"]), {}, TypeError, "numeric"),
])
def test_bad_input(ptr, times, kw, err, match):
    with pytest.raises(err, match=match):
        time_intervals(ptr, times, **kw)


def test_sorted_check_ignores_sequence_boundaries():
    mats, seq = time_intervals(np.array([0, 2, 4]), np.array([5, 9, 1, 2]), maxlen=2)
    assert seq.tolist() == [[1, 2], [1, 2]]


def test_rescaled_overflow_refused():
    # the published int32 time sequence cannot hold this: refuse instead of wrapping
    with pytest.raises(ValueError, match="does not fit TiSASRec's int32"):
        time_intervals(np.array([0, 3]), np.array([0.0, 1e-12, 1.0]))


def test_memory_estimate_refuses():
    from stgkern import config
    with config.override(max_memory_fraction=1e-12):
        with pytest.raises(MemoryError, match="time_intervals"):
            time_intervals(np.array([0, 2]), np.array([1, 2]), maxlen=50)
