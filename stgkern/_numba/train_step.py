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


# Reassociation lets LLVM keep vector partial sums; the order is fixed at compile time.
@numba.njit(cache=True, fastmath={"reassoc", "nsz", "nnan", "ninf", "contract"})
def _sum(v):
    s = _F(0.0)
    for c in range(v.shape[0]):
        s += v[c]
    return s


@numba.njit(cache=True)
def sampled_ce_forward(L, pos, neg, y, loss, dpos, colsum):
    """Softmax cross-entropy of each row's positive logit against the shared negatives.

    ``L`` (B, K): logits of the K negatives (bias and correction included),
    replaced in place by the softmax probabilities, 0 where ``neg[j] ==
    y[r]`` (an accidental hit is not a negative).  ``pos`` (B,): the
    positives' logits.  Writes ``loss[r] = lse_r - pos[r]``, ``dpos[r] =
    p(pos) - 1`` and ``colsum[j] = Σ_r L[r, j]`` after the update.
    """
    B, K = L.shape
    v = np.empty(K, np.float32)
    scale = np.empty(K, np.float32)
    colsum[:] = 0
    for r in range(B):
        row = L[r]
        yr = y[r]
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


@numba.njit(cache=True)
def gru_forward(gi, gh, h, out, gates):
    """``out = (1 - z) n + z h`` with r, z = σ(gi + gh) parts and n = tanh(gi_n + r gh_n).

    ``gi``, ``gh`` (N, 3d) hold the r, z, n pre-activations (biases in);
    ``gates`` (N, 3d) receives r, z, n for :func:`gru_backward`.
    """
    N, d = h.shape
    t = np.empty(2 * d, np.float32)
    e = np.empty(2 * d, np.float32)
    scale = np.empty(2 * d, np.float32)
    for i in range(N):
        a, b, g = gi[i], gh[i], gates[i]
        for c in range(2 * d):
            t[c] = -(a[c] + b[c])
        _exp_into(t, e, scale)
        for c in range(2 * d):
            g[c] = _ONE / (_ONE + e[c])
        for c in range(d):
            t[c] = _TWO * (a[2 * d + c] + g[c] * b[2 * d + c])
        _exp_into(t[:d], e[:d], scale[:d])
        o, hi = out[i], h[i]
        for c in range(d):
            n = _ONE - _TWO / (_ONE + e[c])
            g[2 * d + c] = n
            o[c] = n + g[d + c] * (hi[c] - n)


@numba.njit(cache=True)
def gru_backward(go, gates, gh, h, dgi, dgh, dh):
    """Gradients of :func:`gru_forward` for ``go = d out``: the pre-activations' (``dgi``,
    ``dgh``: equal but for the n part, which ``r`` scales for ``gh``) and ``h``'s direct one."""
    N, d = h.shape
    for i in range(N):
        g, b, o, hi = gates[i], gh[i], go[i], h[i]
        di, dg, dhi = dgi[i], dgh[i], dh[i]
        for c in range(d):
            r, z, n = g[c], g[d + c], g[2 * d + c]
            dn = o[c] * (_ONE - z) * (_ONE - n * n)
            dz = o[c] * (hi[c] - n) * z * (_ONE - z)
            dr = dn * b[2 * d + c] * r * (_ONE - r)
            di[c] = dr
            dg[c] = dr
            di[d + c] = dz
            dg[d + c] = dz
            di[2 * d + c] = dn
            dg[2 * d + c] = dn * r
            dhi[c] = o[c] * z
