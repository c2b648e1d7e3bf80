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
        L = torch.addmm(b_neg, states, v_neg.t())
        pos = (states * v_pos).sum(1) + b_pos
        B, K = L.shape
        loss = np.empty(B, np.float32)
        dpos = np.empty(B, np.float32)
        colsum = np.empty(K, np.float32)
        _k.sampled_ce_forward(L.numpy(), pos.contiguous().numpy(), neg.numpy(), y.numpy(), loss, dpos, colsum)
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
    def forward(ctx, gi, gh, h):
        gi, gh, h = gi.contiguous(), gh.contiguous(), h.contiguous()
        out = torch.empty_like(h)
        gates = torch.empty_like(gi)
        _k.gru_forward(gi.numpy(), gh.numpy(), h.numpy(), out.numpy(), gates.numpy())
        ctx.save_for_backward(gates, gh, h)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        gates, gh, h = ctx.saved_tensors
        dgi, dgh, dh = torch.empty_like(gates), torch.empty_like(gates), torch.empty_like(h)
        _k.gru_backward(g.contiguous().numpy(), gates.numpy(), gh.numpy(), h.numpy(), dgi.numpy(), dgh.numpy(),
                        dh.numpy())
        return dgi, dgh, dh


def gru_gates(gi, gh, h):
    """``torch.nn.GRUCell``'s update from its two pre-activations.

    ``gi = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh`` (N, 3d, gates in
    r, z, n order): ``r, z = σ(gi + gh)``, ``n = tanh(gi_n + r ⊙ gh_n)``,
    returns ``(1 - z) ⊙ n + z ⊙ h``.
    """
    if not _fast(gi, gh, h):
        return gru_update(gi, gh, h)
    return _GRUGates.apply(gi, gh, h)


def gru_update(gi, gh, h):
    """:func:`gru_gates` as plain torch ops (any dtype or device): the reference the fused kernel
    is held to, and the update of models whose results must keep torch's own arithmetic."""
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)
