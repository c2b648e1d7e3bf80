import types

import numpy as np
import pytest
from hypothesis import given, strategies as st

from naive import naive_node_features, naive_time_bucket, naive_time_encoding
from stgkern import config
from stgkern.construct import window_graph
from stgkern.features import (default_omega, node_feature_names, node_features, time_bucket, time_decay,
                              time_encoding)

DTYPES = [np.float32, np.float64]


@st.composite
def event_logs(draw):
    n = draw(st.integers(0, 30))
    B = draw(st.integers(1, 4))
    ints = lambda lo, hi: np.array(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)),  # noqa: E731
                                   dtype=np.int64)
    user = ints(0, 3)
    time = ints(0, 6)
    behavior = ints(0, B - 1)
    value = None if draw(st.booleans()) else ints(0, 50).astype(np.float64)
    return dict(user=user, time=time, behavior=behavior, value=value), B


@given(event_logs(), st.booleans(), st.booleans(), st.booleans(), st.sampled_from(DTYPES))
def test_node_features_match_naive(case, intensity, context, causal, dtype):
    log, B = case
    X = node_features(log, n_behaviors=B, intensity=intensity, context=context, causal=causal, dtype=dtype)
    ref = naive_node_features(log["user"], log["time"], log["behavior"], log["value"], B,
                              intensity, context, causal)
    assert X.dtype == dtype and X.shape == ref.shape
    assert X.shape[1] == len(node_feature_names(B, intensity=intensity, context=context, causal=causal))
    np.testing.assert_allclose(X, ref, rtol=1e-6 if dtype == np.float32 else 1e-14)


@given(event_logs())
def test_node_features_follow_graph_order(case):
    log, B = case
    g = window_graph(log["user"], log["time"], window=2)
    X = node_features(log, g, n_behaviors=B)
    ref = naive_node_features(log["user"], log["time"], log["behavior"], log["value"], B, order=g.perm)
    np.testing.assert_allclose(X, ref, rtol=1e-6)
    with config.override(cpu_serial_rows=1):
        np.testing.assert_array_equal(node_features(log, g, n_behaviors=B), X)


def test_node_features_layout_and_log_object():
    log = types.SimpleNamespace(user=np.array([1, 0, 1, 1]), time=np.array([5, 1, 2, 9]),
                                behavior=np.array([2, 0, 1, 0], dtype=np.int8), value=np.array([0.0, 1, 2, 3]),
                                category=None, n_behaviors=3)
    X = node_features(log, causal=False)
    names = node_feature_names(3, causal=False)
    assert names[:3] == ["behavior=0", "behavior=1", "behavior=2"] and names[3] == "log1p_value"
    # node order: (0,1) (1,2) (1,5) (1,9) -> input rows 1, 2, 0, 3
    assert X[:, :3].argmax(1).tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(X[:, 3], np.log1p([1.0, 2.0, 0.0, 3.0]), rtol=1e-6)
    prev = X[:, 4:7]
    nxt = X[:, 7:10]
    assert prev.tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert nxt.tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 0]]
    assert node_features(log).shape == (4, 7)   # causal default: no next-behaviour columns


def test_node_features_empty_and_one():
    e = np.zeros(0, dtype=np.int64)
    X = node_features(dict(user=e, time=e, behavior=e, value=None), n_behaviors=2)
    assert X.shape == (0, 5)
    X = node_features(dict(user=np.array([4]), time=np.array([0]), behavior=np.array([1]), value=None))
    assert X.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("bad, exc, msg", [
    (dict(behavior=np.array([0, 3])), ValueError, r"behavior ids must lie in \[0, n_behaviors=2\)"),
    (dict(behavior=np.array([0.0, 1.0])), TypeError, "behavior must hold integer ids"),
    (dict(value=np.array([1.0, np.nan])), ValueError, "value has 1 NaN"),
    (dict(value=np.array([1.0, -1.0])), ValueError, "value must be > -1"),
    (dict(value=np.array([1.0])), ValueError, "value has 1 events but user has 2"),
    (dict(user=np.zeros((2, 1), dtype=np.int64)), ValueError, "user must be 1-D"),
    (dict(time=None), TypeError, "needs 'time'"),
    (dict(dtype=np.int32), TypeError, "dtype=int32 is not supported"),
    (dict(n_behaviors=0), ValueError, "n_behaviors must be >= 1"),
])
def test_node_features_bad_input(bad, exc, msg):
    log = dict(user=np.array([0, 0]), time=np.array([1, 2]), behavior=np.array([0, 1]), value=None)
    kw = dict(n_behaviors=2)
    for k in ("dtype", "n_behaviors"):
        if k in bad:
            kw[k] = bad.pop(k)
    log.update(bad)
    with pytest.raises(exc, match=msg):
        node_features(log, **kw)


def test_node_features_graph_mismatch():
    log = dict(user=np.array([0, 0, 1]), time=np.array([1, 2, 3]), behavior=np.array([0, 1, 0]), value=None)
    g = window_graph(np.array([0, 0]), np.array([1, 2]))
    with pytest.raises(ValueError, match="g has 2 nodes but the log has 3 events"):
        node_features(log, g)


# --------------------------------------------------------------- edge features
@given(st.lists(st.floats(0, 1e7, allow_nan=False), max_size=50), st.floats(1e-3, 1e6),
       st.sampled_from(DTYPES))
def test_time_decay(dts, tau, dtype):
    dt = np.array(dts, dtype=np.float64)
    out = time_decay(dt, tau, dtype=dtype)
    assert out.dtype == dtype and out.shape == dt.shape
    ref = np.array([np.exp(-x / tau) for x in dts])
    np.testing.assert_allclose(out, ref, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-37)


@given(st.lists(st.integers(-10**9, 10**9), max_size=30), st.sampled_from([1, 2, 33, 127]),
       st.sampled_from(DTYPES))
def test_time_encoding_matches_naive(dts, dim, dtype):
    dt = np.array(dts, dtype=np.int64)
    out = time_encoding(dt, dim, dtype=dtype)
    # same omega on both sides: cos(omega * 1e9) turns a 1-ulp omega difference into 1e-7
    ref = naive_time_encoding(dt, dim, default_omega(dim))
    np.testing.assert_allclose(default_omega(dim), [1.0 / 10 ** (9 * k / (dim - 1)) if dim > 1 else 1.0
                                                    for k in range(dim)], rtol=1e-14)
    assert out.shape == (len(dts), dim) and out.dtype == dtype
    # float32 stores a float64-computed cosine: only the final rounding differs
    np.testing.assert_allclose(out, ref, atol=1e-6 if dtype == np.float32 else 1e-9)


def test_time_encoding_custom_params_noncontiguous_and_parallel():
    rng = np.random.default_rng(0)
    dt = rng.random(400)[::2] * 1000
    om = rng.random(5)
    ph = rng.random(5)
    ref = naive_time_encoding(dt, 5, om, ph)
    np.testing.assert_allclose(time_encoding(dt, 5, om, ph, dtype=np.float64), ref, atol=1e-12)
    with config.override(cpu_serial_rows=1):
        np.testing.assert_allclose(time_encoding(dt, 5, om, ph, dtype=np.float64), ref, atol=1e-12)
    assert default_omega(3).tolist() == [1.0, 10 ** -4.5, 1e-9]
    assert time_encoding(np.zeros(0), 4).shape == (0, 4)


@given(st.lists(st.one_of(st.integers(-5, 3000), st.sampled_from([2**k - 1 for k in range(1, 40)])),
                max_size=40), st.one_of(st.none(), st.integers(1, 12)))
def test_time_bucket_matches_naive(dts, n_buckets):
    dt = np.array(dts, dtype=np.int64)
    np.testing.assert_array_equal(time_bucket(dt, n_buckets=n_buckets), naive_time_bucket(dt, 2.0, n_buckets))


@pytest.mark.parametrize("base", [1.5, 2.0, 10.0])
def test_time_bucket_edges(base):
    powers = base ** np.arange(0, 20)
    for x in (powers - 1, powers - 1 - 1e-9 * powers, powers - 1 + 1e-9 * powers):
        np.testing.assert_array_equal(time_bucket(x, base), naive_time_bucket(x, base))


@pytest.mark.parametrize("call, exc, msg", [
    (lambda: time_decay(np.array([1.0]), 0), ValueError, "tau must be finite and > 0"),
    (lambda: time_decay(np.array([np.nan]), 1.0), ValueError, "dt has 1 NaN"),
    (lambda: time_decay(np.array([[1.0]]), 1.0), ValueError, "dt must be 1-D"),
    (lambda: time_decay(np.array(["a"]), 1.0), TypeError, "dt has dtype"),
    (lambda: time_decay([1.0], 1.0), TypeError, "dt must be a NumPy or CuPy array"),
    (lambda: time_encoding(np.array([1.0]), 0), ValueError, "dim must be >= 1"),
    (lambda: time_encoding(np.array([1.0]), 3, omega=np.ones(2)), ValueError, r"omega must have shape \(3,\)"),
    (lambda: time_encoding(np.array([1.0]), 2, phase=np.array([0, np.inf])), ValueError, "phase has 1 NaN"),
    (lambda: time_encoding(np.array([1.0]), 2, dtype=np.float16), TypeError, "not supported"),
    (lambda: time_bucket(np.array([1.0]), base=1.0), ValueError, "base must be > 1"),
    (lambda: time_bucket(np.array([1.0]), n_buckets=0), ValueError, "n_buckets must be >= 1"),
])
def test_edge_feature_bad_input(call, exc, msg):
    with pytest.raises(exc, match=msg):
        call()


def test_on_window_graph_dt():
    rng = np.random.default_rng(5)
    user = rng.integers(0, 4, 200)
    time = rng.integers(0, 10**6, 200)
    g = window_graph(user, time, window=4, self_loops=True)
    dt = g.edata["dt"]
    w = time_decay(dt, 3600.0)
    assert w.shape == (g.nnz,) and (w <= 1).all() and (w[g.edata["kind"] == 4] == 1).all()
    assert time_encoding(dt, 8).shape == (g.nnz, 8)
    assert (time_bucket(dt)[dt == 0] == 0).all()


def test_node_feature_names_from_a_log_or_labels():
    from stgkern import synthetic_log
    log = synthetic_log(n_users=5, seed=0)
    names = node_feature_names(log)
    assert names[:4] == ["behavior=pv", "behavior=cart", "behavior=fav", "behavior=buy"]
    assert names[5:] == [f"prev_behavior={b}" for b in log.behavior_names]
    assert len(names) == node_features(log).shape[1]
    assert node_feature_names(["a"], intensity=False, causal=False) == ["behavior=a", "prev_behavior=a",
                                                                       "next_behavior=a"]
    with pytest.raises(ValueError, match="empty"):
        node_feature_names([])
