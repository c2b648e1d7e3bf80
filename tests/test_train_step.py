"""stgkern._train_step: the demo models' fused dropout, sampled softmax and GRU gates against
float64 references (tests/naive.py) and torch's own composites, gradients included."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from stgkern import _train_step as ts  # noqa: E402

from naive import naive_gru_gates, naive_sampled_softmax  # noqa: E402


def _ce_inputs(rng, B, K, d, n_items, hits_row=None):
    f = lambda *s: torch.from_numpy(rng.standard_normal(s).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, n_items, B))
    neg = torch.from_numpy(rng.integers(0, n_items, K))
    if hits_row is not None:          # every negative of one row is that row's target
        neg[:] = y[hits_row]
    elif K > 3 and B > 2:
        neg[:3] = y[:3]               # a few accidental hits
    return f(B, d), f(B, d) * 0.5, f(B), f(K, d) * 0.5, f(K), y, neg


@pytest.mark.parametrize("B,K,d", [(1, 1, 1), (7, 5, 3), (33, 257, 17), (64, 1025, 64)], ids=str)
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
