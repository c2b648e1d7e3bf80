"""synthetic_log (both processes), its oracle (SyntheticTruth) and log_marginals."""
import hashlib

import numpy as np
import pytest
import scipy.integrate
import scipy.sparse as sp

import stgkern
from stgkern.data import EventLog, STGParams, log_marginals, synthetic_log
from threads import outputs_by_thread_count


# ---------------------------------------------------------------- references
def ref_expected_decay(prm):
    """E[exp(-gap/tau)] of an in-session and a between-session gap, by numerical integration."""
    tau = prm.tau
    def mix(q, m1, m2, offset=0.0):
        f = lambda m: scipy.integrate.quad(lambda x: np.exp(-(x + offset) / tau - x / m) / m, 0, np.inf)[0]
        return q * f(m1) + (1 - q) * f(m2)
    off, qo, o1, o2 = prm.gap_out
    return mix(*prm.gap_in), mix(qo, o1, o2, off)


def ref_next(truth, r):
    """P(next item), P(next behaviour) after row r, straight from the process description."""
    log, prm = truth.log, truth.params
    start, prof = truth.user_start[r], truth.profile_index[r]
    cat, pop = truth.item_category, truth.popularity
    n_items = log.n_items
    in_cat = lambda c: {j: pop[j] / pop[cat == c].sum() for j in np.flatnonzero(cat == c)}
    e_in, e_out = ref_expected_decay(prm)
    pb = prm.p_break[log.behavior[r]]
    S = prm.eta * ((1 - pb) * e_in + pb * e_out)
    ages = range(min(prm.window, r - start + 1))
    w = np.array([prm.psi ** a * np.exp(-(log.time[r] - log.time[r - a]) / prm.tau) for a in ages])
    w /= w.sum()
    P = np.zeros(n_items)
    B = np.zeros(4)
    lam = truth.behavior_propensity[prof]

    def row(table, b):        # a behaviour row (the same for every b if given as 4 values), scaled by lam
        t = np.array(table, np.float64)
        x = (t if t.ndim == 1 else t[b]) * lam
        return x / x.sum()
    bp = log.behavior[r]
    for a, wa in zip(ages, w):
        m = r - a
        im, bm = log.item[m], log.behavior[m]
        rho = prm.rho[bm]
        P[im] += S * wa * rho
        B += S * wa * (rho * np.array(prm.F_rep)[bm] + (1 - rho) * row(prm.F_new, bp))
        for j in truth.related[im]:
            P[j] += S * wa * (1 - rho) * prm.related / len(truth.related[im])
        for j, p in in_cat(cat[im]).items():
            P[j] += S * wa * (1 - rho) * (1 - prm.related) * p
    past = log.item[start:r + 1]
    cw = {}
    for i in past:
        P[i] += (1 - S) * prm.ret / len(past)
        cw[cat[i]] = cw.get(cat[i], 0.0) + (1 - prm.k_drift - prm.k_profile) / len(past)
    for c, p in zip(truth.category_successors[cat[log.item[r]]], truth.category_successor_p[cat[log.item[r]]]):
        cw[c] = cw.get(c, 0.0) + prm.k_drift * p
    for c, p in zip(truth.profile_category[prof], truth.profile_weight[prof]):
        cw[c] = cw.get(c, 0.0) + prm.k_profile * p
    for c, p in cw.items():
        for j, q in in_cat(c).items():
            P[j] += (1 - S) * prm.interest * p * q
    P += (1 - S) * (1 - prm.ret - prm.interest) * pop
    B += (1 - S) * (prm.ret * row(prm.F_ret, bp) + (1 - prm.ret) * row(prm.F_new, bp))
    return P, B


def ref_topk(P, k, barred=()):
    """Top-k of one probability vector, barred items out, ties to the lower id, -1 padding."""
    cand = [j for j in range(P.size) if j not in set(barred)]
    cand.sort(key=lambda j: (-P[j], j))
    return (cand + [-1] * k)[:k]


def digest(log):
    h = hashlib.sha256()
    for a in (log.user, log.item, log.category, log.behavior, log.time, log.value):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------- the markov process is unchanged
# digests of the pre-issue-17 generator's output, computed before the stg process was added
MARKOV_DIGESTS = [
    (dict(n_users=30, n_items=80, n_categories=6, events_per_user=12, seed=5), 360,
     "2c3927a55a233d50d98ebcd5515ce4e5"),
    (dict(n_users=50, n_items=200, n_categories=10, events_per_user=20, seed=1, zipf=1.3, n_successors=2,
          p_follow=0.5, n_category_successors=3, p_category_follow=0.6), 1000, "2bf80ce5e7bee43e729f56a383578d89"),
]


@pytest.mark.parametrize("kw,n,expected", MARKOV_DIGESTS, ids=["defaults", "all-knobs"])
def test_markov_bit_for_bit(kw, n, expected):
    log = synthetic_log(process="markov", **kw)
    assert len(log) == n and digest(log) == expected


# ---------------------------------------------------------------- the stg process
def test_stg_is_default_and_deterministic():
    a = synthetic_log(n_users=40, n_items=100, n_categories=8, events_per_user=15, seed=3)
    b = synthetic_log(n_users=40, n_items=100, n_categories=8, events_per_user=15, seed=3, process="stg")
    c = synthetic_log(n_users=40, n_items=100, n_categories=8, events_per_user=15, seed=4)
    assert digest(a) == digest(b) != digest(c)


def test_stg_thread_count_independent():
    script = ("from stgkern.data import synthetic_log; import hashlib; "
              "l = synthetic_log(n_users=300, n_items=500, n_categories=20, events_per_user=20, seed=9); "
              "print(hashlib.sha256(l.item.tobytes() + l.time.tobytes() + l.behavior.tobytes()).hexdigest())")
    one, two = outputs_by_thread_count(script)
    assert one == two


@pytest.mark.parametrize("chunks", [[slice(0, 7), slice(7, 8), slice(8, 23)], [range(0, 23, 1)]],
                         ids=["three-chunks", "one-range"])
def test_stg_chunks_concatenate_to_the_full_log(chunks):
    kw = dict(n_users=23, n_items=60, n_categories=5, events_per_user=9, seed=2)
    full = synthetic_log(**kw)
    parts = [synthetic_log(users=c, **kw) for c in chunks]
    for col in ("user", "item", "category", "behavior", "time", "value"):
        assert np.array_equal(np.concatenate([getattr(p, col) for p in parts]), getattr(full, col)), col
    # a sparse choice of users gives exactly those users' rows
    sub = synthetic_log(users=[3, 11], **kw)
    assert np.array_equal(sub.item, full.item[np.isin(full.user, [3, 11])])


@pytest.mark.parametrize("kw", [dict(), dict(n_users=1, n_items=1, n_categories=1, events_per_user=3),
                                dict(n_users=5, n_items=7, n_categories=20, events_per_user=1)],
                         ids=["default", "one-of-each", "more-categories-than-items"])
def test_stg_log_is_valid(kw):
    log = synthetic_log(**kw)
    assert len(log) >= kw.get("n_users", 1000)
    assert log.behavior_names == ("pv", "cart", "fav", "buy")
    assert np.all(np.diff(log.user) >= 0)
    same = np.diff(log.user) == 0
    assert np.all(np.diff(log.time)[same] >= 0)
    assert log.item.min() >= 0 and log.item.max() < log.n_items
    assert log.behavior.min() >= 0 and log.behavior.max() < 4
    assert log.time.dtype == np.int64 and log.item.dtype == np.int64
    # an item always carries its one category
    cat = np.full(log.n_items, -1)
    cat[log.item] = log.category
    assert np.array_equal(cat[log.item], log.category)
    assert np.array_equal(log.sort().item, log.item)        # already in (user, time) order


def test_stg_tables():
    _, truth = synthetic_log(n_users=5, n_items=300, n_categories=12, seed=1, return_truth=True)
    assert np.isclose(truth.popularity.sum(), 1.0)
    assert np.all(truth.item_category[truth.related] == truth.item_category[:, None])
    assert np.allclose(truth.category_successor_p.sum(axis=1), 1.0)
    assert np.allclose(truth.profile_weight.sum(axis=1), 1.0)
    # the tables do not depend on which users are generated
    _, t2 = synthetic_log(n_users=5, n_items=300, n_categories=12, seed=1, users=[4], return_truth=True)
    assert np.array_equal(t2.related, truth.related) and np.array_equal(t2.profile_category[0],
                                                                         truth.profile_category[4])
    assert np.array_equal(t2.behavior_propensity[0], truth.behavior_propensity[4])


def test_stg_tables_are_built_once_a_process_and_kept_from_the_truth():
    """Chunks of one log reuse its global tables (at Taobao's 4.16M items they cost 9.4 s a
    build); a truth's tables are its own copies, so changing them cannot reach another log."""
    from stgkern import data as sd
    kw = dict(n_users=40, n_items=200, n_categories=9, seed=3)
    log, truth = synthetic_log(return_truth=True, **kw)
    prm = sd.STGParams()
    assert sd._stg_tables(200, 9, 3, prm) is sd._stg_tables(200, 9, 3, prm)
    assert sd._stg_tables(200, 9, 4, prm) is not sd._stg_tables(200, 9, 3, prm)       # another seed
    truth.item_category[:] = 0
    truth.related[:] = 0
    again = synthetic_log(**kw)
    assert np.array_equal(again.item, log.item) and np.array_equal(again.category, log.category)
    parts = [synthetic_log(users=range(a, a + 10), **kw) for a in range(0, 40, 10)]
    assert np.array_equal(np.concatenate([p.item for p in parts]), log.item)


def test_behavior_propensities_are_lognormal_with_mean_one():
    sigma = (0.0, 0.5, 1.0, 0.25)
    log, truth = synthetic_log(n_users=20000, n_items=50, n_categories=3, events_per_user=1, seed=2,
                               params={"behavior_sigma": sigma}, return_truth=True)
    lam = truth.behavior_propensity
    assert np.all(lam[:, 0] == 1.0)
    np.testing.assert_allclose(np.log(lam).std(axis=0), sigma, rtol=0.03)
    np.testing.assert_allclose(np.log(lam).mean(axis=0), -0.5 * np.square(sigma), atol=0.02)
    # no spread: every user draws from the table rows themselves
    _, flat = synthetic_log(n_users=50, n_items=50, n_categories=3, seed=2, params={"behavior_sigma": (0,) * 4},
                            return_truth=True)
    assert np.all(flat.behavior_propensity == 1.0)


# ---------------------------------------------------------------- the oracle
@pytest.fixture(scope="module")
def small():
    return synthetic_log(n_users=6, n_items=40, n_categories=4, events_per_user=14, seed=7, return_truth=True)


def test_oracle_matches_reference(small):
    log, truth = small
    rows = np.r_[0, 1, 2, 5, 13, 20, len(log) - 1]
    D = truth.next_item_probs(rows)
    Bh = truth.next_behavior_probs(rows)
    for q, r in enumerate(rows):
        P, B = ref_next(truth, r)
        assert np.isclose(P.sum(), 1.0) and np.isclose(B.sum(), 1.0)
        np.testing.assert_allclose(D[q], P, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(Bh[q], B, rtol=1e-9, atol=1e-15)


def test_oracle_topk_and_prob_match_reference(small):
    log, truth = small
    rows = np.arange(0, len(log), 3)
    rng = np.random.default_rng(0)
    barred = [rng.choice(log.n_items, rng.integers(0, 6), replace=False) for _ in rows]
    barred[0] = np.arange(log.n_items - 2)        # fewer candidates than k: -1 padding
    ex = sp.csr_matrix((np.ones(sum(map(len, barred))),
                        (np.repeat(np.arange(rows.size), list(map(len, barred))), np.concatenate(barred))),
                       shape=(rows.size, log.n_items))
    top = truth.next_item_topk(rows, 5, exclude=ex)
    plain = truth.next_item_topk(rows, 5)
    prob = truth.next_item_prob(rows)
    for q, r in enumerate(rows):
        P, _ = ref_next(truth, r)
        assert list(top[q]) == ref_topk(P, 5, barred[q])
        assert list(plain[q]) == ref_topk(P, 5)
        if r + 1 < len(log) and log.user[r + 1] == log.user[r]:
            assert np.isclose(prob[q], P[log.item[r + 1]], rtol=1e-9)
        else:
            assert np.isnan(prob[q])      # a user's last row has no next event
    assert list(top[0][2:]) == [-1, -1, -1]


def test_oracle_ties_go_to_the_lower_id():
    # one item per category and a flat popularity: many exact ties
    log, truth = synthetic_log(n_users=2, n_items=6, n_categories=6, events_per_user=4, seed=0,
                               params={"item_zipf": 0.0, "category_zipf": 0.0}, return_truth=True)
    P = truth.next_item_probs([0])[0]
    top = truth.next_item_topk([0], 6)[0]
    assert list(top) == ref_topk(P, 6)


# repeats, returns and past-category draws made frequent, so that a slip in any of them shows
AMPLIFIED = {"rho": (0.4, 0.6, 0.5, 0.3), "ret": 0.3, "interest": 0.6, "k_drift": 0.0, "k_profile": 0.0,
             "related": 0.8, "eta": 0.3}


@pytest.mark.parametrize("params,n_users,events_per_user", [(None, 1000, 40), (AMPLIFIED, 10000, 6)],
                         ids=["default", "amplified-short-users"])
def test_oracle_agrees_with_the_sampler(params, n_users, events_per_user):
    """The sampler's next events follow the oracle's probabilities.

    Over every row with a next event: a chi-square over the oracle's rank bins,
    and for events that single out one part of the process (a repeat of the
    last or the one-before-last item, a return to any seen item, the last
    item's category or related items, a profile or successor category) the
    observed count against the oracle's expected count, within 4.5 standard
    deviations.
    """
    log, truth = synthetic_log(n_users=n_users, n_items=120, n_categories=8, events_per_user=events_per_user,
                               seed=11, params=params, return_truth=True)
    rows = np.flatnonzero(log.user[1:] == log.user[:-1])            # rows with a next event
    D = truth.next_item_probs(rows)
    nxt = log.item[rows + 1]
    at = np.arange(rows.size)
    order = np.argsort(-D, axis=1, kind="stable")
    rank = np.argmax(order == nxt[:, None], axis=1)
    edges = [0, 1, 2, 4, 8, 16, 32, 64, log.n_items]
    sorted_p = np.take_along_axis(D, order, axis=1)
    expected = np.array([sorted_p[:, a:b].sum() for a, b in zip(edges[:-1], edges[1:])])
    observed = np.histogram(rank, bins=edges)[0]
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 35, (observed, expected.round(1))        # 7 dof: p < 1e-5 if the two agree
    np.testing.assert_allclose(truth.next_item_prob(rows), D[at, nxt], rtol=1e-12)

    cat = truth.item_category
    last_cat = cat[log.item[rows]]
    seen = np.zeros((rows.size, log.n_items), bool)
    cur = np.zeros(log.n_items, bool)
    for q, r in enumerate(rows):
        if r == 0 or log.user[r - 1] != log.user[r]:
            cur[:] = False
        cur[log.item[r]] = True     # rows are consecutive within a user, so each row adds one item
        seen[q] = cur
    before_last = np.where(rows > 0, log.item[np.maximum(rows - 1, 0)], -1)
    before_last[(rows == 0) | (log.user[np.maximum(rows - 1, 0)] != log.user[rows])] = -1
    prof = truth.profile_category[truth.profile_index[rows]]
    succ = truth.category_successors[last_cat]
    items = np.arange(log.n_items)
    sets = {
        "same item as last": items == log.item[rows][:, None],
        "item one before last": items == before_last[:, None],
        "any seen item": seen,
        "last item's category": cat == last_cat[:, None],
        "related to the last item": (items[None, :, None] == truth.related[log.item[rows]][:, None, :]).any(-1),
        "a profile category": (cat[None, :, None] == prof[:, None, :]).any(-1),
        "a successor category": (cat[None, :, None] == succ[:, None, :]).any(-1),
        "the user's first category": cat == cat[log.item[truth.user_start[rows]]][:, None],
    }
    for name, mask in sets.items():
        p = (D * mask).sum(axis=1)
        z = (mask[at, nxt].sum() - p.sum()) / np.sqrt((p * (1 - p)).sum())
        assert abs(z) < 4.5, (name, z)
    # behaviour given the previous behaviour: chi-square over the 16 cells
    B = truth.next_behavior_probs(rows)
    obs = np.zeros((4, 4)); exp = np.zeros((4, 4))
    np.add.at(obs, (log.behavior[rows], log.behavior[rows + 1]), 1)
    np.add.at(exp, log.behavior[rows], B)
    keep = exp > 5
    assert ((obs - exp) ** 2 / exp)[keep].sum() < 45, (obs, exp.round(1))


def test_oracle_depends_on_more_than_the_last_item():
    """Timing matters: with the same last item, the next-item distribution moves with the elapsed times."""
    log, truth = synthetic_log(n_users=200, n_items=100, n_categories=5, events_per_user=20, seed=5,
                               return_truth=True)
    rows = np.flatnonzero(log.user[1:] == log.user[:-1])
    D = truth.next_item_probs(rows)
    same_last = log.item[rows] == np.bincount(log.item[rows]).argmax()
    spread = D[same_last].max(axis=0) - D[same_last].min(axis=0)
    assert spread.max() > 0.05


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("kw,match", [
    (dict(process="hmm"), "process must be 'stg' or 'markov'"),
    (dict(p_follow=0.5), "p_follow only apply to process='markov'"),
    (dict(zipf=1.2, n_successors=2), "zipf, n_successors only apply"),
    (dict(process="markov", params={"eta": 0.5}), "params apply to process='stg' only"),
    (dict(process="markov", return_truth=True), "return_truth apply"),
    (dict(process="markov", users=slice(0, 2)), "users apply"),
    (dict(params={"eta": 1.5}), r"STGParams.eta must be probabilities in \[0, 1\]"),
    (dict(params={"F_new": (0.5, 0.2, 0.2, 0.2)}), "STGParams.F_new rows must sum to 1"),
    (dict(params={"F_ret": ((0.5, 0.5, 0, 0),) * 3}), r"STGParams.F_ret must have shape \(4, 4\)"),
    (dict(params={"behavior_sigma": (0, 1, -1, 0)}), "STGParams.behavior_sigma must hold 4 finite values"),
    (dict(params={"F_rep": ((1, 0, 0, 0),)}), r"STGParams.F_rep must have shape \(4, 4\)"),
    (dict(params={"ret": 0.5, "interest": 0.6}), "ret \\+ interest must be at most 1"),
    (dict(params={"rho": (0.1, 0.2)}), "STGParams.rho must hold 4 values"),
    (dict(params={"window": 0}), "STGParams.window must be at least 1"),
    (dict(params={"tau": 0.0}), "STGParams.tau must be positive"),
    (dict(params={"gap_in": (0.5, -1.0, 3.0)}), "STGParams.gap_in"),
    (dict(params={"bogus": 1}), r"unknown key\(s\) \['bogus'\]"),
    (dict(users=[3, 2]), "strictly increasing"),
    (dict(users=[0, 99]), r"\[0, n_users=10\)"),
    (dict(users=np.array([0.5])), "users must be a slice"),
    (dict(n_users=0), "n_users must be at least 1"),
    (dict(events_per_user=0), "events_per_user must be positive"),
    (dict(seed=None), "seed must be a non-negative integer"),
    (dict(seed=-1), "seed must be a non-negative integer"),
])
def test_bad_parameters_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        synthetic_log(**{"n_users": 10, "n_items": 20, "n_categories": 3, **kw})


def test_bad_params_type_and_oracle_arguments(small):
    with pytest.raises(TypeError, match="params must be an STGParams or a dict"):
        synthetic_log(n_users=2, params=[0.5])
    log, truth = small
    with pytest.raises(ValueError, match=r"rows must lie in \[0, "):
        truth.next_item_topk([len(log)], 3)
    with pytest.raises(ValueError, match="rows must be a 1-d array"):
        truth.next_behavior_probs(np.array([[0]]))
    with pytest.raises(ValueError, match="k must be at least 1"):
        truth.next_item_topk([0], 0)
    with pytest.raises(ValueError, match=r"exclude must have shape \(len\(rows\), n_items\)"):
        truth.next_item_topk([0, 1], 3, exclude=sp.csr_matrix((1, log.n_items)))


def test_params_object_equals_dict():
    a = synthetic_log(n_users=5, n_items=30, n_categories=3, params=STGParams(tau=60.0))
    b = synthetic_log(n_users=5, n_items=30, n_categories=3, params={"tau": 60.0})
    c = synthetic_log(n_users=5, n_items=30, n_categories=3)
    assert digest(a) == digest(b) != digest(c)


# ---------------------------------------------------------------- log_marginals
def test_log_marginals_by_hand():
    # user 0: item 1 pv t=0, item 2 cart t=10, item 1 pv t=4000, item 2 buy t=4010 (all category 0)
    # user 1: item 3 cart t=5, item 3 pv t=5 (a same-second tie, kept in input order; category 1)
    log = EventLog.from_arrays(user=[0, 0, 0, 0, 1, 1], item=[1, 2, 1, 2, 3, 3], time=[0, 10, 4000, 4010, 5, 5],
                               category=[0, 0, 0, 0, 1, 1], behavior=["pv", "cart", "pv", "buy", "cart", "pv"],
                               behavior_names=("pv", "cart", "fav", "buy"))
    m = log_marginals(log)
    assert m["events"] == 6 and m["users"] == 2 and m["items"] == 3
    assert m["behavior_mix"] == {"pv": 0.5, "cart": 2 / 6, "fav": 0.0, "buy": 1 / 6}
    assert m["repeat_rate"] == pytest.approx(3 / 6)                    # rows 2, 3 and 5
    assert m["category_persistence"] == pytest.approx(1.0)            # 4 pairs, all same category
    gaps = np.array([10, 3990, 10, 0])
    assert m["gap_quantiles_s"]["q50"] == pytest.approx(np.median(gaps))
    assert m["gap_share_over_30min"] == pytest.approx(0.25)
    assert m["events_per_user"]["mean"] == 3 and m["items_per_user"]["median"] == 1.5
    assert m["top1pct_item_share"] == pytest.approx(2 / 6)            # one item of three: items 1, 2, 3 hold 2 each
    assert m["item_gini"] == pytest.approx(0.0)
    assert m["buy_after_cart"] == pytest.approx(0.5)                  # user 0's cart is bought, user 1's not


def test_log_marginals_edges():
    one = log_marginals(EventLog.from_arrays([1], [2], [3]))
    assert one["repeat_rate"] == 0.0 and one["gap_quantiles_s"] is None and one["buy_after_cart"] is None
    gini = log_marginals(EventLog.from_arrays(np.zeros(4, int), [0, 1, 1, 1], np.arange(4)))["item_gini"]
    assert gini == pytest.approx(2 * (1 * 1 + 2 * 3) / (2 * 4) - 3 / 2)     # counts (1, 3)
    with pytest.raises(ValueError, match="at least one event"):
        log_marginals(EventLog.from_arrays(np.zeros(0, int), np.zeros(0, int), np.zeros(0)))


@pytest.mark.realdata
def test_taobao_marginals(shared_data):
    path = shared_data / "taobao_userbehavior" / "UserBehavior_sample.csv"
    if not path.is_file():
        pytest.skip(f"Taobao sample not found at {path}")
    m = log_marginals(stgkern.load_taobao(path))
    assert m["events"] == 84_475 and m["users"] == 815
    assert 0.85 < m["behavior_mix"]["pv"] < 0.95 and 0.1 < m["repeat_rate"] < 0.5
    assert m["gap_quantiles_s"]["q10"] <= m["gap_quantiles_s"]["q50"] <= m["gap_quantiles_s"]["q90"]
