"""Fused pieces of the demo models' training steps (PyTorch autograd over
``stgkern._numba.train_step``): dropout, sampled-softmax cross-entropy and the
GRU gates.

These are training-loop helpers of :mod:`stgkern.model`, not public ops:
they run the Numba kernels on contiguous float32 CPU tensors and fall back
to the plain torch composite otherwise (another dtype or device), so a
model built from them runs anywhere.  The values equal the composites' to
float32 rounding (``tests/test_train_step.py`` holds them to it, gradients
included); only dropout's masks come from another random stream.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from ._numba import train_step as _k


def _fast(*ts):
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in ts)


class _DropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        s0, s1 = (int(v) for v in torch.randint(0, 1 << 32, (2,), dtype=torch.int64))
        xc = x.contiguous()
        out = torch.empty_like(xc)
        mask = np.empty(xc.numel(), np.bool_)
        scale = np.float32(1.0 / (1.0 - p))
        _k.dropout_forward(xc.numpy().reshape(-1), out.numpy().reshape(-1), mask, s0, s1,
                           min(int(round(p * 2.0 ** 32)), (1 << 32) - 1), scale)
        ctx.mask, ctx.scale = mask, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        g = g.contiguous()
        out = torch.empty_like(g)
        _k.dropout_backward(g.numpy().reshape(-1), ctx.mask, ctx.scale, out.numpy().reshape(-1))
        return out, None


def dropout(x, p, training):
    """``F.dropout(x, p, training)`` with the mask from a vectorised hash (seeded by torch's generator)."""
    if not training or p == 0 or not _fast(x) or x.numel() == 0:
        return F.dropout(x, p, training)
    if p >= 1:
        return x * 0
    return _DropoutFn.apply(x, float(p))


class Dropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` through :func:`dropout` (same ``p``, same train/eval behaviour)."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


class _SampledCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, v_pos, b_pos, v_neg, b_neg, y, neg):
        L = torch.mm(states, v_neg.t())
        pos = (states * v_pos).sum(1) + b_pos
        B, K = L.shape
        loss = np.empty(B, np.float32)
        dpos = np.empty(B, np.float32)
        colsum = np.empty(K, np.float32)
        _k.sampled_ce_forward(L.numpy(), b_neg.contiguous().numpy(), pos.contiguous().numpy(), neg.numpy(), y.numpy(),
                              loss, dpos, colsum)
        ctx.save_for_backward(states, v_pos, v_neg, L)
        ctx.dpos, ctx.colsum = torch.from_numpy(dpos), torch.from_numpy(colsum)
        return torch.from_numpy(loss).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        states, v_pos, v_neg, P = ctx.saved_tensors
        c = g / P.shape[0]
        dpos = ctx.dpos * c
        d_states = torch.addmm(dpos[:, None] * v_pos, P, v_neg, alpha=float(c))
        d_vneg = torch.mm(P.t(), states).mul_(c)
        return (d_states, dpos[:, None] * states, dpos, d_vneg, ctx.colsum * c, None, None)


def sampled_softmax_loss(states, v_pos, b_pos, v_neg, b_neg, y, neg):
    """Mean over rows of ``-log softmax([pos_r, neg_logits_r])[0]``, accidental hits masked.

    ``pos_r = states_r · v_pos_r + b_pos_r`` and ``neg_logits_r = states_r
    @ v_neg.T + b_neg`` with column ``j`` left out of row ``r`` where
    ``neg[j] == y[r]``: the same value as
    ``F.cross_entropy(cat([pos, neg_logits.masked_fill(hit, -inf)]), 0)``
    in one pass over the (B, K) block instead of six.
    """
    if not _fast(states, v_pos, b_pos, v_neg, b_neg):
        other = (states @ v_neg.T + b_neg).masked_fill(neg[None, :] == y[:, None], float("-inf"))
        pos = (states * v_pos).sum(1) + b_pos
        return F.cross_entropy(torch.cat([pos[:, None], other], 1), torch.zeros(len(y), dtype=torch.long,
                                                                                device=y.device))
    return _SampledCE.apply(states, v_pos, b_pos, v_neg, b_neg, y.contiguous(), neg.contiguous())


class _GRUGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, gh, h, bi, bh):
        gi, gh, h = gi.contiguous(), gh.contiguous(), h.contiguous()
        out = torch.empty_like(h)
        gates = torch.empty_like(gi)
        ghn = torch.empty_like(h)
        _k.gru_forward(gi.numpy(), gh.numpy(), bi.detach().contiguous().numpy(), bh.detach().contiguous().numpy(),
                       h.numpy(), out.numpy(), gates.numpy(), ghn.numpy())
        ctx.save_for_backward(gates, ghn, h)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        gates, ghn, h = ctx.saved_tensors
        dgi, dgh, dh = torch.empty_like(gates), torch.empty_like(gates), torch.empty_like(h)
        dbi, dbh = gates.new_empty(gates.shape[1]), gates.new_empty(gates.shape[1])
        _k.gru_backward(g.contiguous().numpy(), gates.numpy(), ghn.numpy(), h.numpy(), dgi.numpy(), dgh.numpy(),
                        dh.numpy(), dbi.numpy(), dbh.numpy())
        return dgi, dgh, dh, dbi, dbh


def gru_gates(gi, gh, h, b_ih=None, b_hh=None):
    """``torch.nn.GRUCell``'s update from its two pre-activations.

    ``gi = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh`` (N, 3d, gates in
    r, z, n order): ``r, z = σ(gi + gh)``, ``n = tanh(gi_n + r ⊙ gh_n)``,
    returns ``(1 - z) ⊙ n + z ⊙ h``.  With ``b_ih``/``b_hh`` given, ``gi``
    and ``gh`` come without them and the biases are added here (and their
    gradients are column sums of the backward's pass), so the GEMMs before
    need no bias pass (``torch.addmm`` broadcasts the bias into its whole
    (N, 3d) output before multiplying).
    """
    if b_ih is None:
        b_ih = gi.new_zeros(gi.shape[1])
    if b_hh is None:
        b_hh = gh.new_zeros(gh.shape[1])
    if not _fast(gi, gh, h, b_ih, b_hh):
        return gru_update(gi + b_ih, gh + b_hh, h)
    return _GRUGates.apply(gi, gh, h, b_ih, b_hh)


class _DualPull(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fwd, bwd, y, b_a, b_b):
        y = y.contiguous()
        N = fwd[0].shape[0] - 1
        P = y.new_empty((N, y.shape[1]))
        s_a, s_b = np.empty(N, np.float32), np.empty(N, np.float32)
        _k.dual_pull_forward(*fwd, y.numpy(), b_a.detach().contiguous().numpy(), b_b.detach().contiguous().numpy(),
                             P.numpy(), s_a, s_b)
        ctx.bwd, ctx.s, ctx.n_y = bwd, (s_a, s_b), y.shape[0]
        return P

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        g = g.contiguous()
        dY = g.new_empty((ctx.n_y, g.shape[1]))
        d = g.shape[1] // 2
        db_a, db_b = g.new_empty(d), g.new_empty(d)
        _k.dual_pull_backward(*ctx.bwd, g.numpy(), *ctx.s, dY.numpy(), db_a.numpy(), db_b.numpy())
        return None, None, dY, db_a, db_b


def dual_pull(a, b, y, bias_a, bias_b):
    """``cat([A (y[:, :d] + bias_a), B (y[:, d:] + bias_b)], 1)`` for two sparse matrices in one pass.

    ``a`` and ``b`` are ``(graph, weights, graph_t, weights_t)``: a CSR by
    destination with its edge weights, and its transpose with the same
    weights in the transpose's edge order (the backward pulls over it).
    SR-GNN's ``[A_in (H W_in^T + b_in), A_out (H W_out^T + b_out)]`` from
    ``y = H [W_in; W_out]^T``: the two products, their bias and the
    concatenation in one pass forward and one backward.
    """
    d = y.shape[1] // 2
    if not _fast(y, bias_a, bias_b, a[1], b[1]) or y.shape[1] != 2 * d:
        from .torch import spmm
        return torch.cat([spmm(a[0], y[:, :d] + bias_a, a[1]), spmm(b[0], y[:, d:] + bias_b, b[1])], 1)
    csr = lambda g, w: (np.ascontiguousarray(g.indptr, np.int64), np.ascontiguousarray(g.indices, np.int64),
                        w.detach().contiguous().numpy())
    return _DualPull.apply(csr(a[0], a[1]) + csr(b[0], b[1]), csr(a[2], a[3]) + csr(b[2], b[3]), y, bias_a, bias_b)


def gru_update(gi, gh, h):
    """:func:`gru_gates` as plain torch ops (any dtype or device): the reference the fused kernel
    is held to, and the update of models whose results must keep torch's own arithmetic."""
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


class _AttentionReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, Z, u, q, alias, ptr):
        h, Z, u = h.contiguous(), Z.contiguous(), u.contiguous()
        qn = q.detach().reshape(-1).contiguous()
        P, d = alias.shape[0], h.shape[1]
        glob = h.new_empty((u.shape[0], d))
        sig, a = h.new_empty((P, d)), h.new_empty(P)
        _k.attention_readout_forward(h.numpy(), Z.numpy(), u.numpy(), qn.numpy(), alias, ptr, glob.numpy(),
                                     sig.numpy(), a.numpy())
        ctx.save_for_backward(h, sig, a, qn)
        ctx.alias, ctx.ptr, ctx.q_shape = alias, ptr, q.shape
        return glob

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        h, sig, a, qn = ctx.saved_tensors
        dh, dZ = torch.empty_like(h), torch.empty_like(h)
        du, dq = g.new_empty(g.shape), torch.empty_like(qn)
        _k.attention_readout_backward(g.contiguous().numpy(), h.numpy(), sig.numpy(), a.numpy(), qn.numpy(),
                                      ctx.alias, ctx.ptr, dh.numpy(), dZ.numpy(), du.numpy(), dq.numpy())
        return dh, dZ, du, dq.reshape(ctx.q_shape), None, None


def attention_readout(h, Z, u, q, alias, seq, ptr):
    """SR-GNN's soft-attention readout, one pass forward and one backward.

    ``glob[s] = Σ_{p in s} a_p h[alias[p]]``, ``a_p = q · σ(u[s] + Z[alias[p]])``:
    with ``Z = h W_pos^T`` (per node: a position's projection is its node's),
    ``u = W_last h_last + b`` per sequence and ``q`` the attention vector
    (``att_q``'s (1, d) weight), the composite ``index_add(seq, att_q(σ(u[seq] +
    W_pos(h[alias]))) * h[alias])``.  ``alias``/``seq`` (P,) int64 tensors,
    ``ptr`` (B + 1,) the positions of each sequence (int array).
    """
    if not _fast(h, Z, u, q):
        hp = h[alias]
        a = (torch.sigmoid(u[seq] + Z[alias]) * q.reshape(1, -1)).sum(1, keepdim=True)
        return torch.zeros_like(u).index_add_(0, seq, a * hp)
    return _AttentionReadout.apply(h, Z, u, q, np.ascontiguousarray(alias.numpy(), np.int64),
                                   np.ascontiguousarray(ptr, np.int64))

