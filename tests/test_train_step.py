"""stgkern._train_step: the demo models' fused dropout, sampled softmax, GRU gates, SR-GNN's session
pull and attention readout against float64 references (tests/naive.py) and torch's own composites,
gradients included."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stgkern import _train_step as ts  # noqa: E402

from naive import naive_attention_readout, naive_session_pull, naive_gru_gates, naive_sampled_softmax  # noqa: E402


def _ce_inputs(rng, B, K, d, n_items, hits_row=None):
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, n_items, B))
    neg = torch.from_numpy(rng.integers(0, n_items, K))
    if hits_row is not None:          # every negative of one row is that row's target
        neg[:] = y[hits_row]
    elif K > 3 and B > 2:
        neg[:3] = y[:3]               # a few accidental hits
    return f(B, d), f(B, d) * 0.5, f(B), f(K, d) * 0.5, f(K), y, neg


@pytest.mark.parametrize("B,K,d", [(1, 1, 1), (7, 5, 3), (33, 257, 17), (64, 1025, 64), (600, 130, 9)], ids=str)
def test_sampled_softmax_matches_reference(B, K, d):
    rng = np.random.default_rng(B * 1000 + K)
    args = [a.requires_grad_() if a.is_floating_point() else a for a in _ce_inputs(rng, B, K, d, 50)]
    loss = ts.sampled_softmax_loss(*args)
    grads = torch.autograd.grad(loss, args[:5])
    want, wgrads = naive_sampled_softmax(*(a.detach().numpy() for a in args))
    assert loss.dtype == torch.float32
    np.testing.assert_allclose(float(loss.detach()), want, rtol=2e-6, atol=1e-6)
    for g, w in zip(grads, wgrads):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=2e-6)


def test_sampled_softmax_row_blocks_add_up(monkeypatch):
    """The (B, K) block is formed CE_BLOCK_ROWS rows at a time; any block size gives the same loss and
    gradients (to float32 rounding: the GEMMs see other shapes)."""
    rng = np.random.default_rng(9)
    args = [a.requires_grad_() if a.is_floating_point() else a for a in _ce_inputs(rng, 37, 70, 6, 40)]
    whole = ts.sampled_softmax_loss(*args)
    g_whole = torch.autograd.grad(whole, args[:5])
    monkeypatch.setattr(ts, "CE_BLOCK_ROWS", 5)                 # 8 blocks, the last one of 2 rows
    blocked = ts.sampled_softmax_loss(*args)
    np.testing.assert_allclose(float(blocked.detach()), float(whole.detach()), rtol=1e-6)
    for g, w in zip(torch.autograd.grad(blocked, args[:5]), g_whole):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-7)


def test_sampled_softmax_equals_torch_composite_and_handles_a_row_of_hits():
    rng = np.random.default_rng(1)
    args = [a.requires_grad_() if a.is_floating_point() else a for a in _ce_inputs(rng, 40, 64, 8, 30, hits_row=5)]
    fused = ts.sampled_softmax_loss(*args)
    # float64 inputs take the composite path: torch's own log-softmax over the masked logits
    ref = ts.sampled_softmax_loss(*(a.detach().double().requires_grad_() if a.is_floating_point() else a
                                    for a in args))
    np.testing.assert_allclose(float(fused.detach()), float(ref.detach()), rtol=2e-6)
    g = torch.autograd.grad(fused, args[0])[0]
    # row 5 has no negatives left: its loss is 0 and its state gets no gradient
    assert torch.all(g[5] == 0)
    assert torch.isfinite(g).all()


def test_sampled_softmax_is_stable_for_large_logits():
    rng = np.random.default_rng(2)
    s, vp, bp, vn, bn, y, neg = _ce_inputs(rng, 9, 40, 4, 100)
    loss = ts.sampled_softmax_loss(s * 300, vp, bp, vn, bn + 500, y, neg)
    want, _ = naive_sampled_softmax(s.numpy() * 300, vp.numpy(), bp.numpy(), vn.numpy(), bn.numpy() + 500,
                                    y.numpy(), neg.numpy())
    assert np.isfinite(float(loss))
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_item_loss_counts_repeated_draws_as_one_column_each():
    """model._item_loss folds an item drawn c times into one column (log c in its correction): the
    loss and gradients equal the reference's over every draw, repeats and accidental hits included."""
    from stgkern.model import _item_loss
    rng = np.random.default_rng(5)
    n_items, K, d, B = 40, 16, 6, 12

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Parameter(torch.from_numpy(rng.standard_normal((n_items, d)).astype(np.float32)))
            self.item_bias = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n_items).astype(np.float32)))
            w = np.arange(n_items, 0, -1.0) ** 2            # skewed: the popular items come up repeatedly
            self.sample_q = torch.tensor(w / w.sum(), dtype=torch.float32)

        def item_vectors(self):
            return self.emb

    model = Tiny()
    states = torch.from_numpy(rng.standard_normal((B, d)).astype(np.float32)).requires_grad_()
    y = torch.from_numpy(rng.integers(0, 4, B))             # popular targets: some rows have hits
    loss = _item_loss(model, states, y, K, torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(loss, [states, model.emb, model.item_bias])
    neg = torch.multinomial(model.sample_q, K, replacement=True, generator=torch.Generator().manual_seed(3)).numpy()
    assert len(np.unique(neg)) < K and np.isin(y.numpy(), neg).any()
    V, b = model.emb.detach().numpy().astype(np.float64), model.item_bias.detach().numpy().astype(np.float64)
    logq = np.log(model.sample_q.numpy().astype(np.float64) * K)
    yy = y.numpy()
    want, (gS, gVp, gbp, gVn, gbn) = naive_sampled_softmax(states.detach().numpy(), V[yy], b[yy] - logq[yy], V[neg],
                                                           b[neg] - logq[neg], yy, neg)
    gV, gb = np.zeros_like(V), np.zeros_like(b)
    for rows, gv, gbias in ((yy, gVp, gbp), (neg, gVn, gbn)):
        np.add.at(gV, rows, gv)
        np.add.at(gb, rows, gbias)
    np.testing.assert_allclose(float(loss.detach()), want, rtol=2e-6)
    for g, w in zip(grads, (gS, gV, gb)):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("N,d", [(1, 1), (13, 5), (300, 64), (77, 65)], ids=str)
def test_gru_gates_match_reference_and_torch_gru_cell(N, d):
    rng = np.random.default_rng(N + d)
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32) * 2).requires_grad_()
    gi, gh, h = f(N, 3 * d), f(N, 3 * d), f(N, d)
    out = ts.gru_gates(gi, gh, h)
    np.testing.assert_allclose(out.detach().numpy(), naive_gru_gates(gi.detach(), gh.detach(), h.detach()),
                               rtol=1e-5, atol=2e-6)
    go = torch.from_numpy(rng.standard_normal((N, d)).astype(np.float32))
    grads = torch.autograd.grad(out, (gi, gh, h), go)
    d64 = [t.detach().double().requires_grad_() for t in (gi, gh, h)]
    want = torch.autograd.grad(ts.gru_gates(*d64), d64, go.double())      # composite path
    for g, w in zip(grads, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=2e-6)
    # and it is GRUCell's arithmetic: the same update from the same weights
    cell = torch.nn.GRUCell(2, d)
    x = torch.randn(N, 2)
    hx = torch.randn(N, d)
    with torch.no_grad():
        fused = ts.gru_gates(torch.addmm(cell.bias_ih, x, cell.weight_ih.T),
                             torch.addmm(cell.bias_hh, hx, cell.weight_hh.T), hx)
        np.testing.assert_allclose(fused.numpy(), cell(x, hx).numpy(), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("N,d", [(1, 1), (19, 6), (200, 64)], ids=str)
def test_gru_gates_add_the_biases_and_return_their_gradients(N, d):
    rng = np.random.default_rng(7 * N + d)
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32) * 2).requires_grad_()
    gi, gh, h, bi, bh = f(N, 3 * d), f(N, 3 * d), f(N, d), f(3 * d), f(3 * d)
    out = ts.gru_gates(gi, gh, h, bi, bh)
    want = naive_gru_gates((gi + bi).detach(), (gh + bh).detach(), h.detach())
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=2e-6)
    go = torch.from_numpy(rng.standard_normal((N, d)).astype(np.float32))
    grads = torch.autograd.grad(out, (gi, gh, h, bi, bh), go)
    d64 = [t.detach().double().requires_grad_() for t in (gi, gh, h, bi, bh)]
    ref = torch.autograd.grad(ts.gru_update(d64[0] + d64[3], d64[1] + d64[4], d64[2]), d64, go.double())
    for name, g, w in zip(("gi", "gh", "h", "b_ih", "b_hh"), grads, ref):
        scale = max(1.0, float(w.abs().max()))            # bias gradients are sums over N rows
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=2e-6 * scale, err_msg=name)


@pytest.mark.parametrize("N,d,R", [(1, 1, 1), (23, 5, 2), (150, 64, 3)], ids=str)
def test_gru_gates_add_a_per_row_term(N, d, R):
    """rows (N, R) @ coef (R, 3d) added to gi inside the gates: the reference's update of gi + b_ih +
    rows @ coef, and coef's gradient rowsᵀ d gi (rows take none)."""
    rng = np.random.default_rng(3 * N + d + R)
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32)).requires_grad_()
    gi, gh, h, bi, bh, C = f(N, 3 * d), f(N, 3 * d), f(N, d), f(3 * d), f(3 * d), f(R, 3 * d)
    S = torch.from_numpy(rng.random((N, R)).astype(np.float32))
    out = ts.gru_gates(gi, gh, h, bi, bh, rows=S, coef=C)
    want = naive_gru_gates((gi + bi + S @ C).detach(), (gh + bh).detach(), h.detach())
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=2e-6)
    go = torch.from_numpy(rng.standard_normal((N, d)).astype(np.float32))
    grads = torch.autograd.grad(out, (gi, gh, h, bi, bh, C), go)
    d64 = [t.detach().double().requires_grad_() for t in (gi, gh, h, bi, bh, C)]
    ref = torch.autograd.grad(ts.gru_update(d64[0] + d64[3] + S.double() @ d64[5], d64[1] + d64[4], d64[2]), d64,
                              go.double())
    for name, g, w in zip(("gi", "gh", "h", "b_ih", "b_hh", "coef"), grads, ref):
        scale = max(1.0, float(w.abs().max()))
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=2e-6 * scale, err_msg=name)


@pytest.mark.parametrize("N,k,d,R", [(1, 2, 1, 0), (31, 10, 6, 2), (400, 128, 64, 2)], ids=str)
def test_gru_cell_is_grucell_with_a_per_row_term(N, k, d, R):
    """gru_cell (r and z from one GEMM of [x | h], fused gates) against torch's composite in float64:
    the update and the gradients of x, h, both weights, both biases and coef; and torch.nn.GRUCell's
    own update from the same weights."""
    rng = np.random.default_rng(N + k + d + R)
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32) * 0.5).requires_grad_()
    x, h, W_ih, W_hh, b_ih, b_hh, C = f(N, k), f(N, d), f(3 * d, k), f(3 * d, d), f(3 * d), f(3 * d), f(R, 3 * d)
    S = torch.from_numpy(rng.random((N, R)).astype(np.float32))
    out = ts.gru_cell(x, h, W_ih, W_hh, b_ih, b_hh, rows=S, coef=C)
    params = (x, h, W_ih, W_hh, b_ih, b_hh, C)
    d64 = [t.detach().double().requires_grad_() for t in params]
    want = ts.gru_cell(*d64[:6], rows=S.double(), coef=d64[6])             # float64: the composite
    np.testing.assert_allclose(out.detach().numpy(), want.detach().numpy(), rtol=1e-5, atol=2e-6)
    go = torch.from_numpy(rng.standard_normal((N, d)).astype(np.float32))
    grads = torch.autograd.grad(out, params, go)
    ref = torch.autograd.grad(want, d64, go.double())
    for name, g, w in zip(("x", "h", "W_ih", "W_hh", "b_ih", "b_hh", "coef"), grads, ref):
        scale = max(1.0, float(w.abs().max()) if w.numel() else 0.0)
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=3e-6 * scale, err_msg=name)
    cell = torch.nn.GRUCell(k, d)
    with torch.no_grad():
        fused = ts.gru_cell(x, h, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        np.testing.assert_allclose(fused.numpy(), cell(x, h).numpy(), rtol=1e-5, atol=2e-6)


def test_gru_gates_saturate_without_overflow():
    gi = torch.tensor([[200.0, -200.0, 100.0], [-200.0, 200.0, -100.0]])
    gh = torch.zeros(2, 3)
    h = torch.tensor([[0.5], [-0.5]])
    out = ts.gru_gates(gi, gh, h)
    np.testing.assert_allclose(out.numpy(), naive_gru_gates(gi, gh, h), atol=1e-6)


def test_dropout_masks_scale_and_route_the_gradient():
    x = torch.randn(300, 70).requires_grad_()
    torch.manual_seed(5)
    out = ts.dropout(x, 0.2, True)
    kept = out != 0
    assert 0.17 < 1 - kept.float().mean().item() < 0.23
    np.testing.assert_array_equal(out[kept].detach().numpy(), (x[kept] * 1.25).detach().numpy())
    g = torch.randn(300, 70)
    (gx,) = torch.autograd.grad(out, x, g)
    np.testing.assert_array_equal(gx.numpy(), torch.where(kept, g * 1.25, torch.zeros(())).numpy())
    # seeded by torch's generator: the same seed, the same mask; the next call, another mask
    torch.manual_seed(5)
    again = ts.dropout(x, 0.2, True)
    assert torch.equal(again != 0, kept)
    assert not torch.equal(ts.dropout(x, 0.2, True) != 0, kept)
    # columns and rows are not correlated: each column keeps about 80 %
    col = kept.float().mean(0)
    assert col.min() > 0.6 and col.max() < 0.97


def test_dropout_edge_cases():
    x = torch.randn(6, 4)
    assert torch.equal(ts.dropout(x, 0.2, False), x)
    assert torch.equal(ts.dropout(x, 0.0, True), x)
    assert torch.equal(ts.dropout(x, 1.0, True), torch.zeros(6, 4))
    assert ts.dropout(torch.zeros(0, 4), 0.5, True).shape == (0, 4)
    view = torch.randn(8, 6)[:, ::2]             # non-contiguous
    out = ts.dropout(view, 0.5, True)
    kept = out != 0
    np.testing.assert_array_equal(out[kept].numpy(), (view[kept] * 2).numpy())
    m = ts.Dropout(0.3)
    m.eval()
    assert torch.equal(m(x), x)
    m.train()
    assert (m(torch.ones(1000)) == 0).any()


def _session_batch(rng, n_seq=40, max_len=9, n_items=12):
    from stgkern.models.batch import make_batch
    lens = rng.integers(1, max_len + 1, n_seq)
    ptr = np.concatenate([[0], np.cumsum(lens)])
    return make_batch(ptr, rng.integers(0, n_items, ptr[-1]))      # repeats: self-loops, shared nodes


def _dense(g, w):
    A = np.zeros((g.n_nodes, g.n_src))
    np.add.at(A, (np.repeat(np.arange(g.n_nodes), np.diff(g.indptr)), g.indices), w.numpy())
    return A


def _args(b):
    return (b.graph, b.w_in, b.graph_t, b.w_in_t), (b.graph_t, b.w_out_t, b.graph, b.w_out)


@pytest.mark.parametrize("d", [1, 8, 64])
def test_session_pull_is_both_sr_gnn_products_and_their_row_sums(d):
    rng = np.random.default_rng(d)
    b = _session_batch(rng)
    N = len(b.node_item)
    x = torch.from_numpy(rng.standard_normal((N, d)).astype(np.float32)).requires_grad_()
    out, sums = ts.session_pull(*_args(b), x)
    A_in, A_out = _dense(b.graph, b.w_in), _dense(b.graph_t, b.w_out_t)
    want = naive_session_pull(A_in, A_out, x.detach())
    assert out.shape == (N, 2 * d) and sums.shape == (N, 2) and not sums.requires_grad
    np.testing.assert_allclose(torch.cat([out, sums], 1).detach().numpy(), want, rtol=1e-5, atol=1e-6)
    # SR-GNN's matrices: every node with an in-edge pulls a convex combination
    assert np.allclose(A_in.sum(1)[np.diff(b.graph.indptr) > 0], 1.0)
    G = torch.from_numpy(rng.standard_normal((N, 2 * d)).astype(np.float32))
    (gx,) = torch.autograd.grad(out, (x,), G)
    Gd = G.double().numpy()
    np.testing.assert_allclose(gx.numpy(), A_in.T @ Gd[:, :d] + A_out.T @ Gd[:, d:2 * d], rtol=1e-5, atol=1e-5)
    # float64 takes the composite path (stgkern.torch.spmm): the same values
    comp = ts.session_pull(*((g, w.double(), gt, wt.double()) for g, w, gt, wt in _args(b)), x.detach().double())
    np.testing.assert_allclose(torch.cat(comp, 1).numpy(), want, rtol=1e-12, atol=1e-12)


def test_session_pull_gives_sr_gnn_gate_input():
    """``[A_in (h W_in^T + b_in), A_out (h W_out^T + b_out)] W_ih^T`` (SR-GNN's GRU input, as
    spmm and addmm compute it) equals the pull of h times the folded weights plus the rows' weight
    sums times the biases' images, gradients included; and the gates take that second term
    themselves (gru_gates' rows/coef), C's gradient included."""
    from stgkern.torch import spmm
    rng = np.random.default_rng(4)
    b = _session_batch(rng)
    N, d = len(b.node_item), 6
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32)).requires_grad_()
    h, W_in, W_out, b_in, b_out, W_ih = f(N, d), f(d, d), f(d, d), f(d), f(d), f(3 * d, 2 * d)
    params = (h, W_in, W_out, b_in, b_out, W_ih)
    old = torch.cat([spmm(b.graph, h @ W_in.T + b_in, b.w_in), spmm(b.graph_t, h @ W_out.T + b_out, b.w_out_t)],
                    1) @ W_ih.T
    w1, w2 = W_ih[:, :d], W_ih[:, d:]
    M = torch.cat([w1 @ W_in, w2 @ W_out], 1)
    C = torch.stack([w1 @ b_in, w2 @ b_out])
    q, sums = ts.session_pull(*_args(b), h)
    new = q @ M.T + sums @ C
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-4)
    G = torch.randn_like(old)
    torch.testing.assert_close(torch.autograd.grad(new, params, G, retain_graph=True),
                               torch.autograd.grad(old, params, G, retain_graph=True), rtol=1e-4, atol=1e-3)
    # the gates adding sums @ C: GRUCell's update from `old`, and the same gradients
    gh, hx = torch.randn(N, 3 * d), torch.randn(N, d)
    fused = ts.gru_gates(q @ M.T, gh, hx, rows=sums, coef=C)
    want = ts.gru_update(old, gh, hx)
    torch.testing.assert_close(fused, want, rtol=1e-5, atol=1e-5)
    Go = torch.randn_like(want)
    torch.testing.assert_close(torch.autograd.grad(fused, params, Go), torch.autograd.grad(want, params, Go),
                               rtol=1e-4, atol=1e-3)


def test_session_pull_of_a_graph_without_edges_is_zero():
    b = _session_batch(np.random.default_rng(3), n_seq=5, max_len=1)      # one item each: no edges
    assert b.graph.nnz == 0
    x = torch.randn(len(b.node_item), 3, requires_grad=True)
    out, sums = ts.session_pull(*_args(b), x)
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(sums, torch.zeros_like(sums))   # no bias either
    (g,) = torch.autograd.grad(out.sum(), (x,))
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.parametrize("d", [1, 5, 64])
def test_attention_readout_matches_reference_and_composite(d):
    rng = np.random.default_rng(100 + d)
    b = _session_batch(rng)
    N, B = len(b.node_item), len(b)
    assert len(b.alias) > N                   # repeated items: positions share nodes
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32)).requires_grad_()
    h, Z, u, q = f(N, d), f(N, d), f(B, d), f(1, d)
    out = ts.attention_readout(h, Z, u, q, b.alias, b.seq, b.pos_ptr)
    want = naive_attention_readout(h.detach(), Z.detach(), u.detach(), q.detach(), b.alias.numpy(), b.pos_ptr)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    G = torch.from_numpy(rng.standard_normal((B, d)).astype(np.float32))
    grads = torch.autograd.grad(out, (h, Z, u, q), G)
    d64 = [t.detach().double().requires_grad_() for t in (h, Z, u, q)]
    comp = ts.attention_readout(*d64, b.alias, b.seq, b.pos_ptr)          # float64: the torch composite
    np.testing.assert_allclose(comp.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    ref = torch.autograd.grad(comp, d64, G.double())
    for name, g, w in zip(("h", "Z", "u", "q"), grads, ref):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)



def test_dropout_add_is_the_residual_around_dropout():
    x, y = torch.randn(40, 9, requires_grad=True), torch.randn(40, 9, requires_grad=True)
    torch.manual_seed(3)
    out = ts.dropout_add(x, y, 0.3, True)
    torch.manual_seed(3)
    ref = x + ts.dropout(y, 0.3, True)                 # the same generator state: the same mask
    assert torch.equal(out, ref)
    g = torch.randn(40, 9)
    for a, b in zip(torch.autograd.grad(out, (x, y), g), torch.autograd.grad(ref, (x, y), g)):
        assert torch.equal(a, b)
    assert torch.equal(ts.dropout_add(x, y, 0.3, False), x + y)
    assert torch.equal(ts.dropout_add(x, y, 1.0, True), x + y * 0)


@pytest.mark.parametrize("heads", [1, 3])
def test_attention_softmax_fewer_queries_than_keys(heads):
    """Scores of the last query only, (B, H, 1, L), with its row of the key mask: the last rows of the
    full (B, H, L, L) result (what a prediction's last-slot attention computes)."""
    rng = np.random.default_rng(10 + heads)
    B, L = 5, 9
    S = torch.from_numpy(rng.standard_normal((B, heads, L, L)).astype(np.float32) * 3)
    q = torch.arange(L)
    blocked = ~((q[:, None] >= q[None, :]) & (torch.from_numpy(rng.random((B, 1, L)) > 0.4)
                                              | (q[:, None] == q[None, :])))
    full = ts.attention_softmax(S, blocked, 0.7, 0.2, False)
    last = ts.attention_softmax(S[:, :, -1:].contiguous(), blocked[:, -1:], 0.7, 0.2, False)
    assert last.shape == (B, heads, 1, L)
    np.testing.assert_array_equal(last.numpy(), full[:, :, -1:].numpy())


@pytest.mark.parametrize("heads", [1, 3])
def test_attention_softmax_matches_composite(heads):
    rng = np.random.default_rng(heads)
    B, L = 4, 7
    S = torch.from_numpy(rng.standard_normal((B, heads, L, L)).astype(np.float32) * 3).requires_grad_()
    q = torch.arange(L)
    blocked = ~((q[:, None] >= q[None, :]) & (torch.from_numpy(rng.random((B, 1, L)) > 0.3)
                                              | (q[:, None] == q[None, :])))
    out = ts.attention_softmax(S, blocked, 0.5, 0.2, False)             # eval: no dropout
    ref = torch.softmax((S.double() * 0.5).masked_fill(blocked[:, None], float("-inf")), -1)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-7)
    # float64 takes the composite path: the reference itself
    np.testing.assert_allclose(ts.attention_softmax(S.detach().double(), blocked, 0.5, 0.2, False).numpy(),
                               ref.detach().numpy(), rtol=1e-12, atol=0)
    assert torch.all(out[blocked[:, None].expand_as(out)] == 0)            # blocked keys: exactly 0
    G = torch.from_numpy(rng.standard_normal(S.shape).astype(np.float32))
    (g,) = torch.autograd.grad(out, (S,), G)
    np.testing.assert_allclose(g.numpy(), torch.autograd.grad(ref, (S,), G.double(), retain_graph=True)[0].numpy(), rtol=1e-4,
                               atol=1e-6)
    # training: the probabilities dropped out as dropout draws its mask, gradient routed through it
    torch.manual_seed(8)
    drop = ts.attention_softmax(S, blocked, 0.5, 0.2, True)
    torch.manual_seed(8)
    want = ts.dropout(out.detach(), 0.2, True)
    np.testing.assert_allclose(drop.detach().numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    (gd,) = torch.autograd.grad(drop, (S,), G)
    kept = (want != 0) | (out.detach() == 0)
    (gref,) = torch.autograd.grad(ref, (S,), (G * kept / 0.8).double())
    np.testing.assert_allclose(gd.numpy(), gref.numpy(), rtol=1e-4, atol=1e-6)
