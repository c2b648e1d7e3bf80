"""Kernels of the spatio-temporal synthetic process (stgkern.data.synthetic_log, process="stg").

Every user draws from its own counter-based stream (splitmix64 keyed by the
seed and the user id), so a user's events do not depend on which other users
are generated with it, on the chunking or on the thread count.  The oracle
kernels evaluate the same conditional distribution the sampler draws from;
the layout of the parameter vector ``P`` is fixed by the ``P_*`` indices below
and filled by stgkern.data.

The helpers are plain ``njit`` functions, not ``inline="always"``: LLVM
inlines them anyway (the same events, the same speed), and Numba-level
inlining into the parallel kernels made a fresh install's first
``synthetic_log`` compile for 15 s instead of 5.
"""
import numba
import numpy as np

from .threads import run_chunks
from .topk import _finish, push

_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO53 = 1.0 / 9007199254740992.0

NB = 4  # behaviours: pv, cart, fav, buy

# scalar parameters, positions in P (float64)
(P_TAU, P_ETA, P_PSI, P_REL, P_RET, P_INT, P_K_DRIFT, P_K_PROFILE, P_FIRST_PROFILE,
 P_E_IN, P_E_OUT, P_Q_IN, P_MEAN_IN1, P_MEAN_IN2, P_BREAK, P_Q_OUT, P_MEAN_OUT1, P_MEAN_OUT2,
 P_LEN_MU, P_LEN_SIGMA, P_T0, P_T0_SPREAD) = range(22)
N_P = 22


@numba.njit(cache=True)
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True)
def user_key(seed_key, user, stream):
    """Key of one user's stream: a hash of (seed, user, stream number)."""
    return _mix(_mix(seed_key ^ (np.uint64(user) * _GOLD)) + np.uint64(stream) * _M1)


@numba.njit(cache=True)
def _uniform(state):
    """Next double in [0, 1) of the stream whose counter is ``state[0]``."""
    state[0] += _GOLD
    return np.float64(_mix(state[0]) >> np.uint64(11)) * _TWO53


@numba.njit(cache=True)
def _normal(state):
    # Box-Muller; 1 - u keeps the log finite
    u1 = 1.0 - _uniform(state)
    u2 = _uniform(state)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@numba.njit(cache=True)
def _exponential(state, mean):
    return -mean * np.log(1.0 - _uniform(state))


@numba.njit(cache=True)
def _pick(w, n, state):
    """Index in [0, n) drawn with the weights ``w[:n]`` (summing to 1) by one uniform."""
    x = _uniform(state)
    a = 0
    while a < n - 1 and x >= w[a]:
        x -= w[a]
        a += 1
    return a


@numba.njit(cache=True)
def _draw_cum(cum, lo, hi, state):
    """Index in [lo, hi) drawn with weights cum[k] - cum[k-1] (cum global and ascending)."""
    base = cum[lo - 1] if lo > 0 else 0.0
    x = base + _uniform(state) * (cum[hi - 1] - base)
    # the answer is the first k with cum[k] > x
    a, b = lo, hi - 1
    while a < b:
        mid = (a + b) // 2
        if cum[mid] > x:
            b = mid
        else:
            a = mid + 1
    # x rounded up to the top can land on trailing zero-weight entries (an empty category)
    while a > lo and cum[a] == cum[a - 1]:
        a -= 1
    return a


@numba.njit(cache=True)
def _row_mass(F, row, lam):
    """Sum over b of ``F[row, b] * lam[b]``: a table row scaled by a user's propensities."""
    s = 0.0
    for b in range(NB):
        s += F[row, b] * lam[b]
    return s


@numba.njit(cache=True)
def _draw_behavior(F, row, lam, state):
    """Behaviour drawn with weights ``F[row, b] * lam[b]`` (a table row scaled by the user's propensity)."""
    x = _uniform(state) * _row_mass(F, row, lam)
    b = 0
    while b < NB - 1 and x >= F[row, b] * lam[b]:
        x -= F[row, b] * lam[b]
        b += 1
    return b


@numba.njit(cache=True)
def _scaled(F, row, lam, b):
    """P(behaviour b) of the table row ``F[row]`` scaled by ``lam`` and renormalised."""
    return F[row, b] * lam[b] / _row_mass(F, row, lam)


def user_propensities(seed_key, users, sigma, lam):
    """Per user, ``lam[k, b] = exp(sigma[b] Z_b - sigma[b]**2 / 2)`` (mean 1), Z from stream 2."""
    run_chunks(_user_propensities_rows, users.shape[0], True, seed_key, users, sigma, lam)


@numba.njit(cache=True, nogil=True)
def _user_propensities_rows(i0, i1, seed_key, users, sigma, lam):
    """Rows ``i0:i1`` of :func:`user_propensities`."""
    for k in range(i0, i1):
        state = np.empty(1, np.uint64)
        state[0] = user_key(seed_key, users[k], 2)
        for b in range(NB):
            z = _normal(state)
            lam[k, b] = np.exp(sigma[b] * z - 0.5 * sigma[b] * sigma[b])


def user_lengths(seed_key, users, mu, sigma):
    """Events per user: max(1, round(exp(mu + sigma Z))), Z standard normal from stream 0."""
    out = np.empty(users.shape[0], np.int64)
    run_chunks(_user_lengths_rows, users.shape[0], True, seed_key, users, mu, sigma, out)
    return out


@numba.njit(cache=True, nogil=True)
def _user_lengths_rows(i0, i1, seed_key, users, mu, sigma, out):
    """Rows ``i0:i1`` of :func:`user_lengths`."""
    for k in range(i0, i1):
        state = np.empty(1, np.uint64)
        state[0] = user_key(seed_key, users[k], 0)
        out[k] = max(1, np.int64(np.round(np.exp(mu + sigma * _normal(state)))))


@numba.njit(cache=True)
def _trigger_weights(time, start, last, window, psi, tau, w):
    """Weights of the recent events that may trigger the next one; returns how many.

    w[a] (age a = 0 for the last event) = psi**a * exp(-(t_last - t_{last-a}) / tau),
    normalised over the min(window, events so far) most recent events.
    """
    n = min(window, last - start + 1)
    s = 0.0
    for a in range(n):
        w[a] = psi ** a * np.exp(-(time[last] - time[last - a]) / tau)
        s += w[a]
    for a in range(n):
        w[a] /= s
    return n


def generate(seed_key, users, offsets, P, p_break, rho, F_rep, F_new, F_ret, lam,
             pop_cum, by_cat, cat_ptr, cat_of, related, cat_cum, csucc, csucc_cum,
             n_profile, window,
             item, behavior, time, value, prof_cat, prof_w):
    """Fill the events of ``users[k]`` into rows offsets[k]:offsets[k+1] (see synthetic_log).

    Behaviour tables (4 x 4): ``F_rep`` by the trigger's behaviour, ``F_new``
    and ``F_ret`` by the previous event's (a user's first event: the pv row);
    a new or returning item's draw scales the row by the user's propensities
    ``lam[k]``, a repeat's funnel row is drawn as it is.
    """
    run_chunks(_generate_rows, users.shape[0], True, seed_key, users, offsets, P, p_break, rho, F_rep, F_new, F_ret,
               lam, pop_cum, by_cat, cat_ptr, cat_of, related, cat_cum, csucc, csucc_cum, n_profile, window, item,
               behavior, time, value, prof_cat, prof_w)


@numba.njit(cache=True, nogil=True)
def _generate_rows(i0, i1, seed_key, users, offsets, P, p_break, rho, F_rep, F_new, F_ret, lam,
             pop_cum, by_cat, cat_ptr, cat_of, related, cat_cum, csucc, csucc_cum,
             n_profile, window,
             item, behavior, time, value, prof_cat, prof_w):
    """Rows ``i0:i1`` of :func:`generate`."""
    tau = P[P_TAU]
    R = related.shape[1]
    one = np.ones(NB)
    for k in range(i0, i1):
        state = np.empty(1, np.uint64)
        state[0] = user_key(seed_key, users[k], 1)
        w = np.empty(window, np.float64)
        # profile: n_profile categories by category popularity, Dirichlet(1) weights
        s = 0.0
        for p in range(n_profile):
            prof_cat[k, p] = _draw_cum(cat_cum, 0, cat_cum.shape[0], state)
            prof_w[k, p] = _exponential(state, 1.0)
            s += prof_w[k, p]
        for p in range(n_profile):
            prof_w[k, p] /= s
        lo, hi = offsets[k], offsets[k + 1]
        for r in range(lo, hi):
            value[r] = np.exp(3.0 + _normal(state))
            if r == lo:
                time[r] = np.int64(P[P_T0] + np.floor(_uniform(state) * P[P_T0_SPREAD]))
                if _uniform(state) < P[P_FIRST_PROFILE]:
                    c = prof_cat[k, _pick(prof_w[k], n_profile, state)]
                    item[r] = by_cat[_draw_cum(pop_cum, cat_ptr[c], cat_ptr[c + 1], state)]
                else:
                    item[r] = by_cat[_draw_cum(pop_cum, 0, pop_cum.shape[0], state)]
                behavior[r] = _draw_behavior(F_new, 0, lam[k], state)
                continue
            last = r - 1
            bp = behavior[last]
            # gap: a session break (probability by the last behaviour) or an in-session gap,
            # each a two-component hyperexponential
            if _uniform(state) < p_break[behavior[last]]:
                mean = P[P_MEAN_OUT1] if _uniform(state) < P[P_Q_OUT] else P[P_MEAN_OUT2]
                dt = P[P_BREAK] + _exponential(state, mean)
            else:
                mean = P[P_MEAN_IN1] if _uniform(state) < P[P_Q_IN] else P[P_MEAN_IN2]
                dt = _exponential(state, mean)
            time[r] = time[last] + np.int64(np.floor(dt))
            if _uniform(state) < P[P_ETA] * np.exp(-dt / tau):
                # short-term: a recent event m triggers this one
                n = _trigger_weights(time, lo, last, window, P[P_PSI], tau, w)
                m = last - _pick(w, n, state)
                bm = behavior[m]
                if _uniform(state) < rho[bm]:
                    item[r] = item[m]
                    behavior[r] = _draw_behavior(F_rep, bm, one, state)
                    continue
                if _uniform(state) < P[P_REL]:
                    item[r] = related[item[m], min(R - 1, np.int64(_uniform(state) * R))]
                else:
                    c = cat_of[item[m]]
                    item[r] = by_cat[_draw_cum(pop_cum, cat_ptr[c], cat_ptr[c + 1], state)]
                behavior[r] = _draw_behavior(F_new, bp, lam[k], state)
                continue
            # long-term: return to an earlier item, an interest category, or a popularity draw
            x = _uniform(state)
            if x < P[P_RET]:
                item[r] = item[lo + min(last - lo, np.int64(_uniform(state) * (last - lo + 1)))]
                behavior[r] = _draw_behavior(F_ret, bp, lam[k], state)
                continue
            if x < P[P_RET] + P[P_INT]:
                y = _uniform(state)
                if y < P[P_K_DRIFT]:
                    cl = cat_of[item[last]]
                    c = csucc[cl, _draw_cum(csucc_cum[cl], 0, csucc.shape[1], state)]
                elif y < P[P_K_DRIFT] + P[P_K_PROFILE]:
                    c = prof_cat[k, _pick(prof_w[k], n_profile, state)]
                else:
                    c = cat_of[item[lo + min(last - lo, np.int64(_uniform(state) * (last - lo + 1)))]]
                item[r] = by_cat[_draw_cum(pop_cum, cat_ptr[c], cat_ptr[c + 1], state)]
            else:
                item[r] = by_cat[_draw_cum(pop_cum, 0, pop_cum.shape[0], state)]
            behavior[r] = _draw_behavior(F_new, bp, lam[k], state)


@numba.njit(cache=True)
def _row_mixture(r, start, P, p_break, rho, item, behavior, time, window, w):
    """Short-term mass S and the trigger weights (in w, count returned) for the event after row r."""
    e = (1.0 - p_break[behavior[r]]) * P[P_E_IN] + p_break[behavior[r]] * P[P_E_OUT]
    n = _trigger_weights(time, start, r, window, P[P_PSI], P[P_TAU], w)
    return P[P_ETA] * e, n


@numba.njit(cache=True)
def _item_dist(r, start, uk, P, p_break, rho, item, behavior, time, window,
               popc, cat_of, related, csucc, csucc_p, prof_cat, prof_w, w, catw, out):
    """out[j] = P(next item = j | events start..r of the user, its profile, the tables)."""
    S, n = _row_mixture(r, start, P, p_break, rho, item, behavior, time, window, w)
    R = related.shape[1]
    h = r - start + 1
    catw[:] = 0.0
    out[:] = 0.0
    for a in range(n):
        m = r - a
        bm = behavior[m]
        out[item[m]] += S * w[a] * rho[bm]
        rest = S * w[a] * (1.0 - rho[bm])
        for q in range(R):
            out[related[item[m], q]] += rest * P[P_REL] / R
        catw[cat_of[item[m]]] += rest * (1.0 - P[P_REL])
    L = 1.0 - S
    pint = L * P[P_INT]
    for q in range(start, r + 1):
        out[item[q]] += L * P[P_RET] / h
        catw[cat_of[item[q]]] += pint * (1.0 - P[P_K_DRIFT] - P[P_K_PROFILE]) / h
    cl = cat_of[item[r]]
    for q in range(csucc.shape[1]):
        catw[csucc[cl, q]] += pint * P[P_K_DRIFT] * csucc_p[cl, q]
    for p in range(prof_cat.shape[1]):
        catw[prof_cat[uk, p]] += pint * P[P_K_PROFILE] * prof_w[uk, p]
    ppop = L * (1.0 - P[P_RET] - P[P_INT])
    for j in range(out.shape[0]):
        out[j] += catw[cat_of[j]] * popc[j]
    # the popularity-draw mass; the caller adds ppop * pop[j] where it needs item j
    return ppop


def item_topk(rows, starts, uks, P, p_break, rho, item, behavior, time, window,
              popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat,
              ex_ptr, ex_idx, k):
    """Top-k next items of each row by true probability, excluded items barred, ties to the lower id."""
    out = np.full((rows.shape[0], k), -1, np.int64)
    run_chunks(_item_topk_rows, rows.shape[0], True, rows, starts, uks, P, p_break, rho, item, behavior, time, window,
               popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat, ex_ptr, ex_idx, k, out)
    return out


@numba.njit(cache=True, nogil=True)
def _item_topk_rows(i0, i1, rows, starts, uks, P, p_break, rho, item, behavior, time, window,
              popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat,
              ex_ptr, ex_idx, k, out):
    """Rows ``i0:i1`` of :func:`item_topk`."""
    n_items = popc.shape[0]
    kk = min(k, n_items)
    # a heap of the kk best (topk's order: higher probability first, ties to the lower id), not
    # a stable argsort of all items: Numba's mergesort compiled for ~2 s in a fresh install
    hs = np.empty((1, max(kk, 1)), np.float64)
    hi = np.empty((1, max(kk, 1)), np.int64)
    hn = np.zeros(1, np.int64)
    for q in range(i0, i1):
        w = np.empty(window, np.float64)
        catw = np.empty(n_cat, np.float64)
        d = np.empty(n_items, np.float64)
        ppop = _item_dist(rows[q], starts[q], uks[q], P, p_break, rho, item, behavior, time, window,
                          popc, cat_of, related, csucc, csucc_p, prof_cat, prof_w, w, catw, d)
        for j in range(n_items):
            d[j] += ppop * pop[j]
        for e in range(ex_ptr[q], ex_ptr[q + 1]):
            d[ex_idx[e]] = -1.0                      # barred: below every probability
        n = 0
        if kk > 0:
            for j in range(n_items):
                if d[j] >= 0.0:
                    n = push(hs[0], hi[0], n, kk, d[j], j)
        hn[0] = n
        _finish(hs, hi, hn)                          # best first
        for t in range(n):
            out[q, t] = hi[0, t]


def item_prob(rows, starts, uks, P, p_break, rho, item, behavior, time, window,
              popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat, targets):
    """P(next item = targets[q]) after rows[q]."""
    out = np.empty(rows.shape[0], np.float64)
    run_chunks(_item_prob_rows, rows.shape[0], True, rows, starts, uks, P, p_break, rho, item, behavior, time, window,
               popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat, targets, out)
    return out


@numba.njit(cache=True, nogil=True)
def _item_prob_rows(i0, i1, rows, starts, uks, P, p_break, rho, item, behavior, time, window,
              popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat, targets, out):
    """Rows ``i0:i1`` of :func:`item_prob`."""
    n_items = popc.shape[0]
    for q in range(i0, i1):
        w = np.empty(window, np.float64)
        catw = np.empty(n_cat, np.float64)
        d = np.empty(n_items, np.float64)
        ppop = _item_dist(rows[q], starts[q], uks[q], P, p_break, rho, item, behavior, time, window,
                          popc, cat_of, related, csucc, csucc_p, prof_cat, prof_w, w, catw, d)
        out[q] = d[targets[q]] + ppop * pop[targets[q]]


def item_dists(rows, starts, uks, P, p_break, rho, item, behavior, time, window,
               popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat):
    """Dense next-item distributions after each of rows, shape (len(rows), n_items)."""
    out = np.empty((rows.shape[0], popc.shape[0]), np.float64)
    run_chunks(_item_dists_rows, rows.shape[0], True, rows, starts, uks, P, p_break, rho, item, behavior, time,
               window, popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat, out)
    return out


@numba.njit(cache=True, nogil=True)
def _item_dists_rows(i0, i1, rows, starts, uks, P, p_break, rho, item, behavior, time, window,
               popc, pop, cat_of, related, csucc, csucc_p, prof_cat, prof_w, n_cat, out):
    """Rows ``i0:i1`` of :func:`item_dists`."""
    n_items = popc.shape[0]
    for q in range(i0, i1):
        w = np.empty(window, np.float64)
        catw = np.empty(n_cat, np.float64)
        ppop = _item_dist(rows[q], starts[q], uks[q], P, p_break, rho, item, behavior, time, window,
                          popc, cat_of, related, csucc, csucc_p, prof_cat, prof_w, w, catw, out[q])
        for j in range(n_items):
            out[q, j] += ppop * pop[j]


def behavior_probs(rows, starts, uks, P, p_break, rho, F_rep, F_new, F_ret, lam, item, behavior, time, window):
    """P(next behaviour = b) after rows[q], shape (len(rows), NB); ``uks[q]`` is the row's user in ``lam``."""
    out = np.zeros((rows.shape[0], NB), np.float64)
    run_chunks(_behavior_probs_rows, rows.shape[0], True, rows, starts, uks, P, p_break, rho, F_rep, F_new, F_ret,
               lam, item, behavior, time, window, out)
    return out


@numba.njit(cache=True, nogil=True)
def _behavior_probs_rows(i0, i1, rows, starts, uks, P, p_break, rho, F_rep, F_new, F_ret, lam, item, behavior, time,
                         window, out):
    """Rows ``i0:i1`` of :func:`behavior_probs`."""
    for q in range(i0, i1):
        w = np.empty(window, np.float64)
        r, u = rows[q], uks[q]
        bp = behavior[r]
        S, n = _row_mixture(r, starts[q], P, p_break, rho, item, behavior, time, window, w)
        for a in range(n):
            bm = behavior[r - a]
            for b in range(NB):
                out[q, b] += S * w[a] * (rho[bm] * F_rep[bm, b]
                                         + (1.0 - rho[bm]) * _scaled(F_new, bp, lam[u], b))
        for b in range(NB):
            out[q, b] += (1.0 - S) * (P[P_RET] * _scaled(F_ret, bp, lam[u], b)
                                      + (1.0 - P[P_RET]) * _scaled(F_new, bp, lam[u], b))
