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


def _seeds(p):
    """The call's two hash seed words (from torch's generator) and the keep threshold of rate ``p``."""
    s0, s1 = (int(v) for v in torch.randint(0, 1 << 32, (2,), dtype=torch.int64))
    return s0, s1, min(int(round(p * 2.0 ** 32)), (1 << 32) - 1)


def _drop_forward(ctx, kernel, p, *arrays):
    """Run a dropout kernel (``kernel(*arrays, out, mask, s0, s1, threshold, scale)``, flat views;
    ``out`` shaped as the last array) and keep its mask and scale on ``ctx`` for :func:`_drop_backward`."""
    s0, s1, t = _seeds(p)
    arrays = [a.contiguous() for a in arrays]
    out = torch.empty_like(arrays[-1])
    mask = np.empty(out.numel(), np.bool_)
    scale = np.float32(1.0 / (1.0 - p))
    kernel(*(a.numpy().reshape(-1) for a in arrays), out.numpy().reshape(-1), mask, s0, s1, t, scale)
    ctx.mask, ctx.scale = mask, scale
    return out


def _drop_backward(ctx, g):
    """The gradient through the kept mask: ``g * mask * scale``."""
    g = g.contiguous()
    out = torch.empty_like(g)
    _k.dropout_backward(g.numpy().reshape(-1), ctx.mask, ctx.scale, out.numpy().reshape(-1))
    return out


class _DropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        return _drop_forward(ctx, _k.dropout_forward, p, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        return _drop_backward(ctx, g), None


def dropout(x, p, training):
    """``F.dropout(x, p, training)`` with the mask from a vectorised hash (seeded by torch's generator)."""
    if not training or p == 0 or not _fast(x) or x.numel() == 0:
        return F.dropout(x, p, training)
    if p >= 1:
        return x * 0
    return _DropoutFn.apply(x, float(p))


class _DropoutAddFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, p):
        return _drop_forward(ctx, _k.dropout_add_forward, p, x, y)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        return g, _drop_backward(ctx, g), None


def dropout_add(x, y, p, training):
    """``x + dropout(y, p, training)`` in one pass (a residual connection around a dropout), the mask
    drawn as :func:`dropout` draws it."""
    if not training or p == 0 or not _fast(x, y) or y.numel() == 0 or x.shape != y.shape or p >= 1:
        return x + dropout(y, p, training)
    return _DropoutAddFn.apply(x, y, float(p))


class _AttentionSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, S, blocked, heads, scale, p):
        S = S.contiguous()
        L = S.shape[-1]
        S2 = S.view(-1, L)
        s0, s1, t = _seeds(p) if p > 0 else (0, 0, 0)
        dscale = np.float32(1.0 / (1.0 - p))
        P, out = torch.empty_like(S2), torch.empty_like(S2)
        mask = np.empty(S2.numel(), np.bool_)
        _k.attention_softmax_forward(S2.numpy(), np.ascontiguousarray(blocked.numpy()).reshape(-1, L), int(heads),
                                     S.shape[-2], np.float32(scale),
                                     s0, s1, t, dscale, P.numpy(), out.numpy(), mask)
        ctx.save_for_backward(P)
        ctx.mask, ctx.scale, ctx.dscale, ctx.shape = mask, np.float32(scale), dscale, S.shape
        return out.view(S.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (P,) = ctx.saved_tensors
        dS = torch.empty_like(P)
        _k.attention_softmax_backward(g.contiguous().view(P.shape).numpy(), P.numpy(), ctx.mask, ctx.scale,
                                      ctx.dscale, dS.numpy())
        return dS.view(ctx.shape), None, None, None, None


def attention_softmax(S, blocked, scale, p, training):
    """``dropout(softmax((scale * S).masked_fill(blocked, -inf)), p, training)`` in one pass.

    ``S`` (B, H, Lq, L) attention scores; ``blocked`` (B, Lq, L) bool, the keys
    each query may not see (shared by the heads; every row must keep one).
    Blocked entries are exactly 0; the dropout mask is drawn as
    :func:`dropout` draws it.
    """
    p = float(p) if training else 0.0
    if not _fast(S) or S.dim() != 4 or S.numel() == 0 or p >= 1:
        w = torch.softmax((S * scale).masked_fill(blocked[:, None], float("-inf")), -1)
        return dropout(w, p, training)
    return _AttentionSoftmax.apply(S, blocked, S.shape[1], scale, p)


class Dropout(torch.nn.Dropout):
    """``torch.nn.Dropout`` through :func:`dropout` (same ``p``, same train/eval behaviour)."""

    def forward(self, x):
        return dropout(x, self.p, self.training)


#: Rows of the sampled softmax's (rows, K) logit block formed at a time: 256 x 1,024 float32 is 1 MiB,
#: which stays in a core's L2 cache from its GEMM through the softmax to the two GEMMs of its gradient.
CE_BLOCK_ROWS = 256


class _SampledCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, v_pos, b_pos, v_neg, b_neg, y, neg):
        states, v_neg = states.contiguous(), v_neg.contiguous()
        pos = ((states * v_pos).sum(1) + b_pos).contiguous()
        (B, d), K = states.shape, v_neg.shape[0]
        loss, dpos, colsum = np.empty(B, np.float32), np.empty(B, np.float32), np.zeros(K, np.float32)
        grads = any(ctx.needs_input_grad[:5])
        # the gradient's two GEMMs need P (B, K) only block by block: P @ v_neg and P^T @ states are
        # formed here, so no (B, K) array is written out, read back or kept for the backward
        PV = states.new_empty((B, d)) if grads else None
        PS = v_neg.new_zeros((K, d)) if grads else None
        L = states.new_empty((min(B, CE_BLOCK_ROWS), K))
        vt, bn, posn, negn, yn = v_neg.t(), b_neg.detach().contiguous().numpy(), pos.numpy(), neg.numpy(), y.numpy()
        for r0 in range(0, B, CE_BLOCK_ROWS):
            r1 = min(B, r0 + CE_BLOCK_ROWS)
            Lb, Sb = L[:r1 - r0], states[r0:r1]
            torch.mm(Sb, vt, out=Lb)
            _k.sampled_ce_forward(Lb.numpy(), bn, posn[r0:r1], negn, yn[r0:r1], loss[r0:r1], dpos[r0:r1], colsum)
            if grads:
                torch.mm(Lb, v_neg, out=PV[r0:r1])
                PS.addmm_(Lb.t(), Sb)
        ctx.save_for_backward(states, v_pos, PV, PS)
        ctx.dpos, ctx.colsum = torch.from_numpy(dpos), torch.from_numpy(colsum)
        return torch.from_numpy(loss).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        states, v_pos, PV, PS = ctx.saved_tensors
        c = g / states.shape[0]
        dpos = ctx.dpos * c
        return (dpos[:, None] * v_pos + PV * c, dpos[:, None] * states, dpos, PS * c, ctx.colsum * c, None, None)


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


def _gates_forward(ctx, A, gin, ghn_in, h, bi, bh, S, C):
    """Run :func:`stgkern._numba.train_step.gru_forward`; keep what the backward needs on ``ctx``."""
    S = S.detach().contiguous()
    out, gates, ghn = torch.empty_like(h), h.new_empty((h.shape[0], 3 * h.shape[1])), torch.empty_like(h)
    _k.gru_forward(A.numpy(), gin.numpy(), ghn_in.numpy(), bi.detach().contiguous().numpy(),
                   bh.detach().contiguous().numpy(), S.numpy(), C.detach().contiguous().numpy(), h.numpy(),
                   out.numpy(), gates.numpy(), ghn.numpy())
    ctx.gates, ctx.ghn, ctx.S, ctx.c_shape = gates, ghn, S, C.shape
    return out


def _gates_backward(ctx, g, h):
    """``(dA, dgin, dghn, dh, dbi, dbh, dC)`` from :func:`stgkern._numba.train_step.gru_backward`."""
    N, d = h.shape
    dA, dgin, dghn, dh = h.new_empty((N, 2 * d)), torch.empty_like(h), torch.empty_like(h), torch.empty_like(h)
    dbi, dbh, dC = h.new_empty(3 * d), h.new_empty(3 * d), h.new_empty(ctx.c_shape)
    _k.gru_backward(g.contiguous().numpy(), ctx.gates.numpy(), ctx.ghn.numpy(), h.numpy(), ctx.S.numpy(), dA.numpy(),
                    dgin.numpy(), dghn.numpy(), dh.numpy(), dbi.numpy(), dbh.numpy(), dC.numpy())
    return dA, dgin, dghn, dh, dbi, dbh, dC


class _GRUGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gi, gh, h, bi, bh, S, C):
        d = h.shape[1]
        h = h.contiguous()
        A = (gi[:, :2 * d] + gh[:, :2 * d]).contiguous()
        ctx.save_for_backward(h)
        return _gates_forward(ctx, A, gi[:, 2 * d:].contiguous(), gh[:, 2 * d:].contiguous(), h, bi, bh, S, C)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (h,) = ctx.saved_tensors
        dA, dgin, dghn, dh, dbi, dbh, dC = _gates_backward(ctx, g, h)
        return torch.cat([dA, dgin], 1), torch.cat([dA, dghn], 1), dh, dbi, dbh, None, dC


class _GRUCell(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, h, S, M, W, C, bi, bh):
        d = h.shape[1]
        q, h = q.contiguous(), h.contiguous()
        M, W = M.detach(), W.detach()
        # r and z: both sides in one GEMM of [q | h]; n: the two sides apart (r scales h's)
        A = torch.mm(torch.cat([q, h], 1), torch.cat([M[:2 * d], W[:2 * d]], 1).T)
        out = _gates_forward(ctx, A, torch.mm(q, M[2 * d:].T), torch.mm(h, W[2 * d:].T), h, bi, bh, S, C)
        ctx.save_for_backward(q, h, M, W)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        q, h, M, W = ctx.saved_tensors
        d = h.shape[1]
        dA, dgin, dghn, dh, dbi, dbh, dC = _gates_backward(ctx, g, h)
        dq = torch.mm(dA, M[:2 * d]).addmm_(dgin, M[2 * d:])
        dh.addmm_(dA, W[:2 * d]).addmm_(dghn, W[2 * d:])
        dM, dW = M.new_empty(M.shape), W.new_empty(W.shape)
        torch.mm(dA.T, q, out=dM[:2 * d])
        torch.mm(dgin.T, q, out=dM[2 * d:])
        torch.mm(dA.T, h, out=dW[:2 * d])
        torch.mm(dghn.T, h, out=dW[2 * d:])
        return dq, dh, None, dM, dW, dC, dbi, dbh


def gru_cell(x, h, W_ih, W_hh, b_ih, b_hh, rows=None, coef=None):
    """``torch.nn.GRUCell``'s step from its input ``x`` (N, k) and state ``h`` (N, d) with weights
    ``W_ih`` (3d, k), ``W_hh`` (3d, d) and biases (3d,), plus a per-row term ``rows @ coef``
    (``rows`` (N, R), no gradient; ``coef`` (R, 3d)) added to the input side.

    The r and z gates' two sides come from one GEMM of ``[x | h]`` by ``[W_ih | W_hh]``'s r and z
    rows, so the fused gates (:func:`stgkern._numba.train_step.gru_forward`) read 4d columns a row,
    not 6d, and the backward writes 5d, not 7d: on the SR-GNN's (10,000 × 64) step the cell went
    from ~27.5 to ~23 ms forward and backward, GEMMs included (isolated).
    """
    if rows is None:
        rows, coef = x.new_zeros(x.shape[0], 0), x.new_zeros(0, W_ih.shape[0])
    if not _fast(x, h, W_ih, W_hh, b_ih, b_hh, rows, coef):
        return gru_update(x @ W_ih.T + b_ih + rows.detach() @ coef, h @ W_hh.T + b_hh, h)
    return _GRUCell.apply(x, h, rows, W_ih, W_hh, coef, b_ih, b_hh)


def gru_gates(gi, gh, h, b_ih=None, b_hh=None, rows=None, coef=None):
    """``torch.nn.GRUCell``'s update from its two pre-activations.

    ``gi = x W_ih^T + b_ih`` and ``gh = h W_hh^T + b_hh`` (N, 3d, gates in
    r, z, n order): ``r, z = σ(gi + gh)``, ``n = tanh(gi_n + r ⊙ gh_n)``,
    returns ``(1 - z) ⊙ n + z ⊙ h``.  With ``b_ih``/``b_hh`` given, ``gi``
    and ``gh`` come without them and the biases are added here (and their
    gradients are column sums of the backward's pass), so the GEMMs before
    need no bias pass (``torch.addmm`` broadcasts the bias into its whole
    (N, 3d) output before multiplying).  ``rows`` (N, R, no gradient) and
    ``coef`` (R, 3d): a per-row term ``rows @ coef`` that ``gi`` comes
    without, added here too (``coef``'s gradient ``rowsᵀ d gi`` from the
    same pass).
    """
    if b_ih is None:
        b_ih = gi.new_zeros(gi.shape[1])
    if b_hh is None:
        b_hh = gh.new_zeros(gh.shape[1])
    if rows is None:
        rows, coef = gi.new_zeros(gi.shape[0], 0), gi.new_zeros(0, gi.shape[1])
    if not _fast(gi, gh, h, b_ih, b_hh, rows, coef):
        return gru_update(gi + b_ih + rows.detach() @ coef, gh + b_hh, h)
    return _GRUGates.apply(gi, gh, h, b_ih, b_hh, rows, coef)


def gru_update(gi, gh, h):
    """:func:`gru_gates` as plain torch ops (any dtype or device): the reference the fused kernel
    is held to, and the update of models whose results must keep torch's own arithmetic."""
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)


class _SessionPull(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fwd, bwd, x):
        x = x.contiguous()
        P = x.new_empty((x.shape[0], 2 * x.shape[1]))
        S = x.new_empty((x.shape[0], 2))
        _k.session_pull_forward(*fwd, x.numpy(), P.numpy(), S.numpy())
        ctx.bwd = bwd
        ctx.mark_non_differentiable(S)
        return P, S

    @staticmethod
    @once_differentiable
    def backward(ctx, g, _):
        dX = g.new_empty((g.shape[0], g.shape[1] // 2))
        _k.session_pull_backward(*ctx.bwd, g.contiguous().numpy(), dX.numpy())
        return None, None, dX


def session_pull(a, b, x):
    """``([A x, B x], [A 1, B 1])``, (N, 2d) and (N, 2), for two sparse matrices over the same
    nodes, in one pass (the row sums take no gradient).

    ``a`` and ``b`` are ``(graph, weights, graph_t, weights_t)``: a CSR by
    destination with its edge weights, and its transpose with the same
    weights in the transpose's edge order (the backward pulls over it).
    SR-GNN's gate input ``[A_in (x W_in^T + b_in), A_out (x W_out^T + b_out)] W_ih^T``
    is the first times ``[W_ih1 W_in, W_ih2 W_out]^T`` plus the second times
    ``[W_ih1 b_in, W_ih2 b_out]^T`` (a per-row term :func:`gru_cell` adds):
    one GEMM of the pulled states instead of one before the pull and one after.
    """
    if not _fast(x, a[1], b[1]):
        from .torch import spmm
        ones = x.new_ones((x.shape[0], 1))
        return (torch.cat([spmm(a[0], x, a[1]), spmm(b[0], x, b[1])], 1),
                torch.cat([spmm(a[0], ones, a[1]), spmm(b[0], ones, b[1])], 1).detach())
    csr = lambda g, w: (np.ascontiguousarray(g.indptr, np.int64), np.ascontiguousarray(g.indices, np.int64),
                        w.detach().contiguous().numpy())
    return _SessionPull.apply(csr(a[0], a[1]) + csr(b[0], b[1]), csr(a[2], a[3]) + csr(b[2], b[3]), x)


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

