"""CPU kernels of the demo models' training steps: dropout, sampled-softmax
cross-entropy and the GRU gates, each one pass over its tensor forward and one
backward.

Why they exist: a MovieLens training step of the SR-GNN-style, SASRec-style
and STG-GNN models is a few small GEMMs wrapped in elementwise torch ops,
each a full pass over a (rows, 64..1024) tensor, and torch's CPU dropout
draws its mask through ``bernoulli_`` at ~7 ns an element (12 % of a
SASRec step on its own).  Fusing the passes is what the step needs.

* Dropout masks come from a counter-based hash of (call seed, element
  index) (two rounds of a 32-bit multiply-xorshift finaliser), so a mask is
  the same on every run and thread count, the seed comes from torch's
  generator (``torch.manual_seed`` still fixes a run) and the loop
  vectorises (~0.3 ns an element).
* Sampled softmax: the (B, K) logit block of the shared negatives becomes the
  softmax probabilities in place (accidental hits masked to exactly 0) in one
  pass that also yields the loss, the positive's gradient and the column
  sums (the negatives' bias gradient).
* GRU gates (``torch.nn.GRUCell``'s r, z, n order): forward keeps r, z, n
  for the backward, which writes the gates' pre-activation gradients.

float32 exponentials use the vectorisable ``_exp_poly`` of
``score_cross_entropy`` (within 2 ulp); ``tanh(x) = 1 - 2 / (1 + e^{2x})``.
"""
from __future__ import annotations

import numba
import numpy as np

from .score_cross_entropy import _exp_poly, _row_max

_F = np.float32
_ONE, _TWO = _F(1.0), _F(2.0)
_HI = _F(87.0)                 # exp(87) ~ 6e37: larger arguments would overflow the exponent bits
_M32 = np.uint64(0xFFFFFFFF)
_K1, _K2 = np.uint64(0x7FEB352D), np.uint64(0x846CA68B)
_GOLDEN = np.uint64(0x9E3779B9)


@numba.njit(cache=True, inline="always")
def _hash(i, s0, s1):
    """A 32-bit hash of element ``i`` under the call's seed words ``s0``, ``s1`` (as uint64 < 2**32)."""
    x = ((np.uint64(i) * _GOLDEN) ^ s0) & _M32
    x ^= x >> np.uint64(16)
    x = (x * _K1) & _M32
    x ^= x >> np.uint64(15)
    x = ((x * _K2) ^ s1) & _M32
    x ^= x >> np.uint64(16)
    x = (x * _K1) & _M32
    x ^= x >> np.uint64(15)
    return x


@numba.njit(cache=True)
def dropout_forward(x, out, mask, s0, s1, threshold, scale):
    """``out = x * mask * scale`` with ``mask[i] = hash(i) >= threshold`` (flat float32 arrays)."""
    t = np.uint64(threshold)
    a, b = np.uint64(s0), np.uint64(s1)
    for i in range(x.shape[0]):
        k = _hash(i, a, b) >= t
        mask[i] = k
        out[i] = x[i] * scale if k else _F(0.0)


@numba.njit(cache=True)
def dropout_backward(g, mask, scale, out):
    for i in range(g.shape[0]):
        out[i] = g[i] * scale if mask[i] else _F(0.0)


@numba.njit(cache=True)
def dropout_add_forward(x, y, out, mask, s0, s1, threshold, scale):
    """``out = x + y * mask * scale``, the mask as :func:`dropout_forward` draws it (flat arrays):
    a residual connection around a dropout in one pass."""
    t = np.uint64(threshold)
    a, b = np.uint64(s0), np.uint64(s1)
    for i in range(x.shape[0]):
        k = _hash(i, a, b) >= t
        mask[i] = k
        out[i] = x[i] + (y[i] * scale if k else _F(0.0))


# Reassociation lets LLVM keep vector partial sums; the order is fixed at compile time.
@numba.njit(cache=True, fastmath={"reassoc", "nsz", "nnan", "ninf", "contract"})
def _sum(v):
    s = _F(0.0)
    for c in range(v.shape[0]):
        s += v[c]
    return s


_LOWEST = _F(np.finfo(np.float32).min)
_LANES = 16


@numba.njit(cache=True)
def _lane_max(v, acc):
    """``max(v)`` of a float32 row through ``_LANES`` independent lanes (``acc``: scratch of
    ``_LANES``), so the compare-selects vectorise; a plain running max is a loop-carried chain."""
    n = v.shape[0]
    acc[:] = _LOWEST
    full = n - n % _LANES
    for c0 in range(0, full, _LANES):
        for j in range(_LANES):
            a = v[c0 + j]
            acc[j] = a if a > acc[j] else acc[j]
    for c in range(full, n):
        a = v[c]
        acc[0] = a if a > acc[0] else acc[0]
    m = acc[0]
    for j in range(1, _LANES):
        m = acc[j] if acc[j] > m else m
    return m


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def attention_softmax_forward(S, blocked, heads, n_query, scale, s0, s1, threshold, dscale, P, out, mask):
    """Softmax over keys of ``scale * S`` with ``blocked`` keys left out, then dropout.

    ``S`` (R, L): attention scores of rows ``r = (b * heads + h) * n_query + i``
    (``n_query`` queries a sequence, L keys); ``blocked`` (B * n_query, L): keys
    query ``i`` of sequence ``b`` may not see (row ``b * n_query + i``; every
    row keeps at least one).  Writes the probabilities ``P`` (blocked entries
    exactly 0), the dropped-out ``out = P * mask * dscale`` and the mask
    (``mask[r * L + j] = hash(r * L + j) >= threshold``; ``threshold`` 0 keeps
    all).  Each of the row's passes vectorises: blocked keys enter the max as
    float32's lowest value, the sum is reassociated (``_sum``).
    """
    R, L = S.shape
    e = np.empty(L, np.float32)
    sc = np.empty(L, np.float32)
    lanes = np.empty(_LANES, np.float32)
    bits = sc.view(np.int32)
    t = np.uint64(threshold)
    a, bb = np.uint64(s0), np.uint64(s1)
    for r in range(R):
        blk = blocked[(r // (heads * n_query)) * n_query + r % n_query]
        for j in range(L):
            e[j] = _LOWEST if blk[j] else S[r, j] * scale
        m = _lane_max(e, lanes)
        for j in range(L):
            e[j], bits[j] = _exp_poly(min(e[j] - m, _HI))
        for j in range(L):
            e[j] = _F(0.0) if blk[j] else e[j] * sc[j]
        inv = _ONE / _sum(e)
        base = r * L
        for j in range(L):
            pj = e[j] * inv
            P[r, j] = pj
            k = _hash(base + j, a, bb) >= t
            mask[base + j] = k
            out[r, j] = pj * dscale if k else _F(0.0)


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def attention_softmax_backward(G, P, mask, scale, dscale, dS):
    """Gradient of :func:`attention_softmax_forward` for ``G = d out``: ``dS = scale * P * (dp - P·dp)``
    with ``dp = G * mask * dscale``."""
    R, L = G.shape
    dp = np.empty(L, np.float32)
    pd = np.empty(L, np.float32)
    for r in range(R):
        for j in range(L):
            dp[j] = G[r, j] * dscale if mask[r * L + j] else _F(0.0)
            pd[j] = P[r, j] * dp[j]
        dot = _sum(pd)
        for j in range(L):
            dS[r, j] = scale * P[r, j] * (dp[j] - dot)


@numba.njit(cache=True, inline="always")
def _exp_clamped(x, bits):
    """``exp(min(x, 87))`` of a float32 (``bits``: a one-element int32 scratch for the scale)."""
    y, bits[0] = _exp_poly(min(x, _HI))
    return y * bits.view(np.float32)[0]


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def _exp_into(src, dst, scale):
    """``dst = exp(min(src, 87))``; ``scale`` float32 scratch, none of them overlapping."""
    bits = scale.view(np.int32)
    for c in range(src.shape[0]):
        dst[c], bits[c] = _exp_poly(min(src[c], _HI))
    for c in range(src.shape[0]):
        dst[c] *= scale[c]


@numba.njit(cache=True)
def sampled_ce_forward(L, bias, pos, neg, y, loss, dpos, colsum):
    """Softmax cross-entropy of each row's positive logit against the shared negatives.

    ``L`` (B, K): the negatives' dot products, to which ``bias`` (K,: bias
    and correction) is added here (``torch.addmm`` would broadcast it into
    the whole block first: a pass of its own); replaced in place by the
    softmax probabilities, 0 where ``neg[j] == y[r]`` (an accidental hit is
    not a negative).  ``pos`` (B,): the positives' logits.  Writes
    ``loss[r] = lse_r - pos[r]``, ``dpos[r] = p(pos) - 1`` and ``colsum[j] =
    Σ_r L[r, j]`` after the update added to what ``colsum`` holds (row blocks of one batch add up).
    """
    B, K = L.shape
    v = np.empty(K, np.float32)
    scale = np.empty(K, np.float32)
    for r in range(B):
        row = L[r]
        yr = y[r]
        for j in range(K):
            row[j] += bias[j]
        # a hit's logit is the positive's own, so taking it into the max changes nothing
        m = max(pos[r], _row_max(row))
        for j in range(K):
            v[j] = row[j] - m
        _exp_into(v, row, scale)
        for j in range(K):
            row[j] = _F(0.0) if neg[j] == yr else row[j]
        e_pos = _exp_clamped(pos[r] - m, scale.view(np.int32))
        s = e_pos + _sum(row)
        inv = _ONE / s
        for j in range(K):
            row[j] *= inv
            colsum[j] += row[j]
        loss[r] = m + np.log(s) - pos[r]
        dpos[r] = e_pos * inv - _ONE


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def gru_forward(A, gin, ghn_in, bi, bh, S, C, h, out, gates, ghn):
    """``out = (1 - z) n + z h`` with ``r, z = σ(A + bi + bh + S C)`` and
    ``n = tanh(gin + bi_n + (S C)_n + r (ghn_in + bh_n))``.

    ``A`` (N, 2d): the r and z pre-activations of both sides summed (``x
    W_ih,rz^T + h W_hh,rz^T``, one GEMM of ``[x | h]``); ``gin``, ``ghn_in``
    (N, d): the n gate's two sides apart (``r`` scales only ``h``'s).  The
    biases ``bi``, ``bh`` (3d,) and a per-row term ``S C`` (``S`` (N, R),
    ``C`` (R, 3d); SR-GNN's pulled weight sums times its biases' images) are
    added here, so the GEMMs before need neither.  ``gates`` (N, 3d) receives
    r, z, n and ``ghn`` (N, d) the biased ``h`` side of n, all
    :func:`gru_backward` needs.  With the r and z sides summed by their GEMM,
    this reads 4d columns a row instead of 6d (and the backward writes 5d
    instead of 7d): the pass is memory-bound.
    """
    N, d = h.shape
    R = S.shape[1]
    e = np.empty(3 * d, np.float32)
    s = np.empty(3 * d, np.float32)
    x = np.empty(3 * d, np.float32)
    bits = s.view(np.int32)
    for i in range(N):
        for c in range(2 * d):
            x[c] = A[i, c] + bi[c] + bh[c]
        for c in range(d):
            x[2 * d + c] = gin[i, c] + bi[2 * d + c]
        for k in range(R):
            sk = S[i, k]
            for c in range(3 * d):
                x[c] += sk * C[k, c]
        for c in range(2 * d):
            e[c], bits[c] = _exp_poly(min(-x[c], _HI))
        for c in range(2 * d):
            gates[i, c] = _ONE / (_ONE + e[c] * s[c])
        for c in range(d):
            hn = ghn_in[i, c] + bh[2 * d + c]
            ghn[i, c] = hn
            e[2 * d + c], bits[2 * d + c] = _exp_poly(min(_TWO * (x[2 * d + c] + gates[i, c] * hn), _HI))
        for c in range(d):
            n = _ONE - _TWO / (_ONE + e[2 * d + c] * s[2 * d + c])
            gates[i, 2 * d + c] = n
            out[i, c] = n + gates[i, d + c] * (h[i, c] - n)


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def gru_backward(go, gates, ghn, h, S, dA, dgin, dghn, dh, dbi, dbh, dC):
    """Gradients of :func:`gru_forward` for ``go = d out``: ``dA`` (N, 2d: dr, dz, shared by both
    sides), the n gate's ``dgin`` and ``dghn`` (which ``r`` scales), ``h``'s direct one, the
    biases' (``dbi``, ``dbh``: column sums) and ``C``'s (``dC = Sᵀ [dA | dgin]``), the sums
    accumulated in float64."""
    N, d = h.shape
    R = S.shape[1]
    acc = np.zeros(4 * d, np.float64)          # Σ dr, Σ dz, Σ dn, Σ dn·r
    accC = np.zeros((R, 3 * d), np.float64)
    for i in range(N):
        for c in range(d):
            r, z, n, o = gates[i, c], gates[i, d + c], gates[i, 2 * d + c], go[i, c]
            dn = o * (_ONE - z) * (_ONE - n * n)
            dz = o * (h[i, c] - n) * z * (_ONE - z)
            dr = dn * ghn[i, c] * r * (_ONE - r)
            dnr = dn * r
            dA[i, c] = dr
            dA[i, d + c] = dz
            dgin[i, c] = dn
            dghn[i, c] = dnr
            dh[i, c] = o * z
            acc[c] += dr
            acc[d + c] += dz
            acc[2 * d + c] += dn
            acc[3 * d + c] += dnr
        for k in range(R):
            sk = np.float64(S[i, k])
            for c in range(2 * d):
                accC[k, c] += sk * dA[i, c]
            for c in range(d):
                accC[k, 2 * d + c] += sk * dgin[i, c]
    for k in range(R):
        for c in range(3 * d):
            dC[k, c] = accC[k, c]
    for c in range(3 * d):
        dbi[c] = acc[c]
    for c in range(2 * d):
        dbh[c] = acc[c]
    for c in range(d):
        dbh[2 * d + c] = acc[3 * d + c]


@numba.njit(cache=True, inline="always")
def _pull_row(ptr, src, w, X, x_lo, i, out, lo, d):
    """``out[i, lo:lo + d] += Σ_{k in row i} w[k] X[src[k], x_lo:x_lo + d]``; returns the row's
    weight sum."""
    s = _F(0.0)
    for k in range(ptr[i], ptr[i + 1]):
        u, wk = src[k], w[k]
        s += wk
        for c in range(d):
            out[i, lo + c] += wk * X[u, x_lo + c]
    return s


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def session_pull_forward(ptr_a, src_a, w_a, ptr_b, src_b, w_b, X, P, S):
    """``P = [A X, B X]`` (N, 2d) and ``S = [A 1, B 1]`` (N, 2) for two weighted CSRs over the same nodes.

    SR-GNN's two session products of the node states ``X`` (N, d), side by
    side, and each row's weight sums (what a bias added before a pull
    becomes after it: ``A (X W^T + 1 b^T) = (A X) W^T + (A 1) b^T``).
    """
    N, d = X.shape
    P[:] = 0
    for i in range(N):
        S[i, 0] = _pull_row(ptr_a, src_a, w_a, X, 0, i, P, 0, d)
        S[i, 1] = _pull_row(ptr_b, src_b, w_b, X, 0, i, P, d, d)


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def session_pull_backward(ptr_at, src_at, w_at, ptr_bt, src_bt, w_bt, G, dX):
    """``dX = A^T G[:, :d] + B^T G[:, d:2d]`` through the transposed CSRs (``*_t``: each
    matrix's edges by source, weights in that order); the row sums take no gradient."""
    N, d = dX.shape
    dX[:] = 0
    for i in range(N):
        _pull_row(ptr_at, src_at, w_at, G, 0, i, dX, 0, d)
        _pull_row(ptr_bt, src_bt, w_bt, G, d, i, dX, 0, d)


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def attention_readout_forward(h, Z, u, q, alias, ptr, glob, sig, a):
    """SR-GNN's soft-attention readout: ``glob[s] = Σ_{p in s} a_p h[alias[p]]`` with
    ``a_p = q · σ(u[s] + Z[alias[p]])``.

    ``h``, ``Z`` (N, d): node states and their ``W_pos`` projections; ``u``
    (B, d): each sequence's last-state projection (bias in); ``q`` (d,);
    ``alias`` (P,) the node of each position, ``ptr`` (B + 1,) the positions
    of each sequence.  Writes ``sig`` (P, d) and ``a`` (P,) for the backward.
    """
    B, d = glob.shape
    e = np.empty(d, np.float32)
    s = np.empty(d, np.float32)
    t = np.empty(d, np.float32)
    bits = s.view(np.int32)
    for b in range(B):
        for c in range(d):
            glob[b, c] = _F(0.0)
        for p in range(ptr[b], ptr[b + 1]):
            n = alias[p]
            for c in range(d):
                e[c], bits[c] = _exp_poly(min(-(u[b, c] + Z[n, c]), _HI))
            for c in range(d):
                g = _ONE / (_ONE + e[c] * s[c])
                sig[p, c] = g
                t[c] = q[c] * g
            ap = _sum(t)                # reassociated: a running sum is a dependent chain
            a[p] = ap
            for c in range(d):
                glob[b, c] += ap * h[n, c]


@numba.njit(cache=True, fastmath={"nsz", "contract"})
def attention_readout_backward(dG, h, sig, a, q, alias, ptr, dh, dZ, du, dq):
    """Gradients of :func:`attention_readout_forward` for ``dG = d glob``: ``dh`` and
    ``dZ`` (N, d, zeroed here; positions of one node add up), ``du`` (B, d), ``dq`` (d,)."""
    B, d = dG.shape
    dh[:] = 0
    dZ[:] = 0
    acc = np.zeros(d, np.float64)
    t = np.empty(d, np.float32)
    for b in range(B):
        for c in range(d):
            du[b, c] = _F(0.0)
        for p in range(ptr[b], ptr[b + 1]):
            n = alias[p]
            for c in range(d):
                t[c] = dG[b, c] * h[n, c]
            da = _sum(t)
            ap = a[p]
            for c in range(d):
                dh[n, c] += ap * dG[b, c]
                g = sig[p, c]
                acc[c] += da * g
                dpre = da * q[c] * g * (_ONE - g)
                du[b, c] += dpre
                dZ[n, c] += dpre
    for c in range(d):
        dq[c] = acc[c]
