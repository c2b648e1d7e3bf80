"""stgkern.torch: autograd Functions (gradcheck, references) and layers (PyG, dense references)."""
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from naive import naive_edge_softmax, naive_sddmm, naive_spmm

import stgkern
import stgkern.torch as st
from stgkern import Graph

D = torch.float64


# ---------------------------------------------------------------- fixtures
def random_graph(rng, n, p=0.35, empty_rows=(0,), isolated=(), loops=True):
    """Square CSR with unique sorted rows; ``empty_rows`` get no in-edges, ``isolated`` no edges at all."""
    A = rng.random((n, n)) < p
    if not loops:
        np.fill_diagonal(A, False)
    for i in empty_rows:
        A[i, :] = False
    for i in isolated:
        A[i, :] = False
        A[:, i] = False
    indptr = np.concatenate([[0], np.cumsum(A.sum(1))]).astype(np.int64)
    indices = np.nonzero(A)[1].astype(np.int64)
    return Graph(indptr, indices, n)


def shuffled_edge_index(g, rng):
    """PyG edge_index of ``g`` with its columns shuffled; ``perm[c]`` = CSR edge of column c."""
    ei = g.to_edge_index()
    perm = rng.permutation(g.nnz)
    return torch.from_numpy(np.ascontiguousarray(ei[:, perm])), perm


def dense(g, values=None):
    """Dense (n_nodes, n_src) torch matrix of per-edge values (CSR order) and the 0/1 mask."""
    M = torch.zeros(g.n_nodes, g.n_src, dtype=D)
    dst, src = torch.from_numpy(g.dst().astype(np.int64)), torch.from_numpy(g.indices.astype(np.int64))
    M[dst, src] = 1.0
    if values is None:
        return M
    V = torch.zeros(g.n_nodes, g.n_src, *values.shape[1:], dtype=values.dtype)
    V = V.index_put((dst, src), values)
    return M, V


def gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.fixture
def g7(rng):
    # node 0: no in-edges; node 5: isolated
    return random_graph(rng, 7, empty_rows=(0,), isolated=(5,))


def leaf(a, grad=True):
    return torch.as_tensor(a, dtype=D).clone().requires_grad_(grad)


# ------------------------------------------------------------------ import
def test_import_stgkern_does_not_import_torch():
    code = ("import sys, stgkern; stgkern.Graph; stgkern.spmm; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------- spmm
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_spmm_gradcheck_and_reference(g7, rng, reduce, weighted):
    x = leaf(rng.standard_normal((7, 3)))
    w = leaf(rng.uniform(0.5, 2.0, g7.nnz)) if weighted else None
    out = st.spmm(g7, x, w, reduce)
    ref = naive_spmm(g7.indptr, g7.indices, x.detach().numpy(), None if w is None else w.detach().numpy(), reduce)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    if weighted:
        gradcheck(lambda a, b: st.spmm(g7, a, b, reduce), x, w)
    else:
        gradcheck(lambda a: st.spmm(g7, a, None, reduce), x)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_spmm_edge_index_order_and_weights(g7, rng, reduce):
    ei, perm = shuffled_edge_index(g7, rng)
    x = leaf(rng.standard_normal((7, 4)))
    w_csr = rng.uniform(0.5, 2.0, g7.nnz)
    w = leaf(w_csr[perm])                                   # weights in edge_index column order
    out = st.spmm(ei, x, w, reduce)
    ref = naive_spmm(g7.indptr, g7.indices, x.detach().numpy(), w_csr, reduce)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    gradcheck(lambda a, b: st.spmm(ei, a, b, reduce), x, w)


@pytest.mark.parametrize("F", [1, 33, 127])
def test_float32_noncontiguous_and_odd_width(rng, F):
    g = random_graph(rng, 9, empty_rows=(3,))
    base = torch.randn(F, 9, dtype=torch.float32, generator=torch.Generator().manual_seed(F))
    x = base.t()                                            # (9, F), not contiguous for F > 1
    w = torch.rand(2 * g.nnz)[::2]                          # strided edge weights
    out = st.spmm(g, x, w, reduce="mean")
    ref = naive_spmm(g.indptr, g.indices, x.double().numpy(), w.double().numpy(), "mean")
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    s = st.sddmm(g, x, x, "cosine")
    np.testing.assert_allclose(s.numpy(), naive_sddmm(g.indptr, g.indices, x.double().numpy(), x.double().numpy(),
                                                      "cosine"), rtol=1e-5, atol=1e-6)


def test_spmm_empty_graph():
    g = Graph(np.zeros(4, np.int64), np.zeros(0, np.int64), 3)
    x = leaf(np.ones((3, 2)))
    out = st.spmm(g, x, leaf(np.zeros(0)), "max")
    assert out.shape == (3, 2) and not out.detach().any()
    out.sum().backward()
    assert not x.grad.any()
    ei = torch.zeros((2, 0), dtype=torch.long)
    assert st.spmm(ei, x).shape == (3, 2)


def test_spmm_one_edge_one_node():
    g = Graph(np.array([0, 1]), np.array([0]))
    x = leaf([[2.0]])
    w = leaf([3.0])
    out = st.spmm(g, x, w)
    out.backward(torch.ones_like(out))
    assert out.item() == 6.0 and x.grad.item() == 3.0 and w.grad.item() == 2.0


# ---------------------------------------------------------------- sddmm
@pytest.mark.parametrize("op", ["dot", "cosine", "add", "sub", "mul"])
def test_sddmm_gradcheck_and_reference(g7, rng, op):
    x, y = leaf(rng.standard_normal((7, 3))), leaf(rng.standard_normal((7, 3)))
    out = st.sddmm(g7, x, y, op)
    ref = naive_sddmm(g7.indptr, g7.indices, x.detach().numpy(), y.detach().numpy(), op)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    gradcheck(lambda a, b: st.sddmm(g7, a, b, op), x, y)


def test_sddmm_edge_index_returns_caller_order(g7, rng):
    ei, _ = shuffled_edge_index(g7, rng)
    x, y = leaf(rng.standard_normal((7, 2))), leaf(rng.standard_normal((7, 2)))
    out = st.sddmm(ei, x, y)
    src, dst = ei
    np.testing.assert_allclose(out.detach().numpy(), (x[dst] * y[src]).sum(1).detach().numpy(), rtol=1e-12)
    gradcheck(lambda a, b: st.sddmm(ei, a, b), x, y)


# --------------------------------------------------------- edge softmax
@pytest.mark.parametrize("heads", [None, 2])
def test_edge_softmax_gradcheck_and_reference(g7, rng, heads):
    shape = (g7.nnz,) if heads is None else (g7.nnz, heads)
    s = leaf(rng.standard_normal(shape))
    out = st.edge_softmax(g7, s)
    np.testing.assert_allclose(out.detach().numpy(), naive_edge_softmax(g7.indptr, s.detach().numpy()), rtol=1e-12)
    gradcheck(lambda a: st.edge_softmax(g7, a), s)


def test_edge_softmax_edge_index(g7, rng):
    ei, perm = shuffled_edge_index(g7, rng)
    s_csr = rng.standard_normal(g7.nnz)
    s = leaf(s_csr[perm])
    out = st.edge_softmax(ei, s, num_nodes=7)
    np.testing.assert_allclose(out.detach().numpy(), naive_edge_softmax(g7.indptr, s_csr)[perm], rtol=1e-12)
    gradcheck(lambda a: st.edge_softmax(ei, a, num_nodes=7), s)


# ------------------------------------------------------- segment reduce
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "last"])
@pytest.mark.parametrize("flat", [False, True], ids=["2d", "1d"])
def test_segment_reduce_gradcheck_and_reference(rng, reduce, flat):
    ptr = np.array([0, 2, 2, 5, 6])                          # segment 1 is empty
    x = leaf(rng.standard_normal(6) if flat else rng.standard_normal((6, 3)))
    out = st.segment_reduce(x, torch.from_numpy(ptr), reduce)
    X = x.detach().numpy()
    ref = []
    for a, b in itertools.pairwise(ptr):
        if a == b:
            ref.append(np.zeros(X.shape[1:]))
        else:
            seg = X[a:b]
            ref.append({"sum": seg.sum(0), "mean": seg.mean(0), "max": seg.max(0), "last": seg[-1]}[reduce])
    np.testing.assert_allclose(out.detach().numpy(), np.array(ref), rtol=1e-12)
    gradcheck(lambda a: st.segment_reduce(a, ptr, reduce), x)


# ---------------------------------------------- common-neighbour fusion
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_common_neighbor_fusion_gradcheck_and_reference(rng, weighted):
    g = random_graph(rng, 8, p=0.5, empty_rows=(0,), isolated=(6,))
    x = leaf(rng.standard_normal((8, 3)))
    w = leaf(rng.uniform(0.5, 2.0, g.nnz)) if weighted else None
    out = st.common_neighbor_fusion(g, x, w)
    _, W = dense(g, torch.ones(g.nnz, dtype=D) if w is None else w.detach())
    dst, src = g.dst().astype(np.int64), g.indices.astype(np.int64)
    ref = torch.einsum("km,km,mf->kf", W[dst], W[src], x.detach())
    np.testing.assert_allclose(out.detach().numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
    if weighted:
        gradcheck(lambda a, b: st.common_neighbor_fusion(g, a, b), x, w)
    else:
        gradcheck(lambda a: st.common_neighbor_fusion(g, a), x)


# ---------------------------------------------------- message passing
@pytest.mark.parametrize("op,reduce,e_shape", [  # every op x reduce once, every E shape with both ops
    ("mul", "sum", "full"), ("add", "mean", "col"), ("mul", "max", "flat"), ("add", "min", "full"),
    ("mul", "mean", "full"), ("add", "sum", "flat"), ("mul", "min", "col"), ("add", "max", "col")])
def test_message_passing_gradcheck_and_reference(g7, rng, op, reduce, e_shape):
    x = leaf(rng.standard_normal((7, 3)))
    shape = {"full": (g7.nnz, 3), "col": (g7.nnz, 1), "flat": (g7.nnz,)}[e_shape]
    e = leaf(rng.standard_normal(shape))
    out = st.message_passing(g7, x, e, op, reduce)
    msgs = x.detach()[g7.indices.astype(np.int64)]
    ee = e.detach().reshape(g7.nnz, -1)
    msgs = msgs * ee if op == "mul" else msgs + ee
    ref = np.zeros((7, 3))
    for i in range(7):
        m = msgs[g7.indptr[i]:g7.indptr[i + 1]].numpy()
        if len(m):
            ref[i] = {"sum": m.sum(0), "mean": m.mean(0), "max": m.max(0), "min": m.min(0)}[reduce]
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    gradcheck(lambda a, b: st.message_passing(g7, a, b, op, reduce), x, e)


# ---------------------------------------------------------- graph_conv
@pytest.mark.parametrize("reduce,activation,f_out", [("sum", None, 2), ("mean", "tanh", 5), ("max", "sigmoid", 3),
                                                     ("min", "relu", 4)])
def test_graph_conv_gradcheck_and_reference(g7, rng, reduce, activation, f_out):
    x = leaf(rng.standard_normal((7, 4)))
    Ws, Wn, b = leaf(rng.standard_normal((4, f_out))), leaf(rng.standard_normal((4, f_out))), leaf(rng.standard_normal(f_out))
    w = leaf(rng.uniform(0.5, 2.0, g7.nnz))
    out = st.graph_conv(g7, x, Ws, Wn, b, w, reduce, activation)
    agg = st.spmm(g7, x, w, reduce)
    act = {None: lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[activation]
    torch.testing.assert_close(out, act(x @ Ws + agg @ Wn + b), rtol=1e-12, atol=1e-12)
    gradcheck(lambda *a: st.graph_conv(g7, *a, reduce=reduce, activation=activation), x, Ws, Wn, b, w)


# ------------------------------------------------------ edge_index cache
def test_edge_index_graph_is_cached_and_rebuilt_after_inplace_change(g7, rng):
    ei, _ = shuffled_edge_index(g7, rng)
    x = torch.randn(7, 2, dtype=D)
    r1 = st._resolve(ei, x)
    assert st._resolve(ei, x) is r1
    before = st.spmm(ei, x)
    ei[0, 0] = (ei[0, 0] + 1) % 7                            # in-place edit bumps the version
    r2 = st._resolve(ei, x)
    assert r2 is not r1
    after = st.spmm(ei, x)
    src, dst = ei
    ref = torch.zeros(7, 2, dtype=D).index_add_(0, dst, x[src])
    torch.testing.assert_close(after, ref)
    assert not torch.equal(before, after)


# ------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors(g7):
    x = torch.randn(7, 3, dtype=D)
    with pytest.raises(TypeError, match="x has dtype torch.int64"):
        st.spmm(g7, torch.ones(7, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="float16"):
        st.spmm(g7, x.half())
    with pytest.raises(ValueError, match="x has 6 rows"):
        st.spmm(g7, x[:6])
    with pytest.raises(TypeError, match="edge_weight has dtype torch.float32 but x has dtype torch.float64"):
        st.spmm(g7, x, torch.ones(g7.nnz))
    with pytest.raises(ValueError, match="edge_weight is on meta but x is on cpu"):
        st.spmm(g7, x, torch.ones(g7.nnz, dtype=D, device="meta"))
    with pytest.raises(ValueError, match=f"edge_weight has {g7.nnz + 1} entries"):
        st.spmm(g7, x, torch.ones(g7.nnz + 1, dtype=D))
    with pytest.raises(ValueError, match="reduce='prod' is not supported"):
        st.spmm(g7, x, reduce="prod")
    with pytest.raises(ValueError, match=r"node ids in \[0, 7\] but the graph has 7 nodes"):
        st.spmm(torch.tensor([[0, 7], [1, 2]]), x)
    with pytest.raises(ValueError, match=r"node ids in \[-1, 2\]"):
        st.spmm(torch.tensor([[0, -1], [1, 2]]), x)
    with pytest.raises(TypeError, match="edge_index has dtype torch.float32"):
        st.spmm(torch.tensor([[0.0, 1.0], [1.0, 2.0]]), x)
    with pytest.raises(ValueError, match=r"shape \(2, nnz\)"):
        st.spmm(torch.tensor([[0, 1, 2]]), x)
    with pytest.raises(ValueError, match="edge_index is on meta"):
        st.spmm(torch.zeros((2, 1), dtype=torch.long, device="meta"), x)
    with pytest.raises(TypeError, match="graph must be a stgkern.Graph, got list; .* PyG edge_index LongTensor"):
        st.spmm([[0, 1], [1, 2]], x)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        st.spmm(g7, x.numpy())
    with pytest.raises(TypeError, match="y has dtype torch.float32 but x has dtype torch.float64"):
        st.sddmm(g7, x, x.float())
    with pytest.raises(ValueError, match="scores has 3 entries"):
        st.edge_softmax(g7, torch.ones(3, dtype=D))
    with pytest.raises(ValueError, match="ptr must start at 0 and end at the number of rows"):
        st.segment_reduce(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="ptr is on meta"):
        st.segment_reduce(x, torch.tensor([0, 7], device="meta"))


def test_layer_bad_inputs(g7):
    x = torch.randn(7, 4)
    with pytest.raises(ValueError, match="x has 4 features but the layer expects in_channels=3"):
        st.GraphConv(3, 2)(x, g7)
    with pytest.raises(TypeError, match="x has dtype torch.float64 but the layer's parameters are torch.float32"):
        st.GraphConv(4, 2)(x.double(), g7)
    with pytest.raises(ValueError, match="aggr='median' is not supported"):
        st.GraphConv(4, 2, aggr="median")
    with pytest.raises(ValueError, match="has no edata\\['dt'\\]"):
        st.STGConv(4, 2)(x, g7)
    ei = g7.to_edge_index()
    with pytest.raises(ValueError, match="dt is required with an edge_index"):
        st.STGConv(4, 2)(x, torch.from_numpy(ei))
    dt = torch.ones(g7.nnz)
    with pytest.raises(ValueError, match="not a 0-based class"):
        st.STGConv(4, 2)(x, g7, dt=dt, kind=torch.zeros(g7.nnz, dtype=torch.long))
    with pytest.raises(TypeError, match="kind has dtype torch.float32"):
        st.STGConv(4, 2)(x, g7, dt=dt, kind=dt)
    with pytest.raises(ValueError, match="dt must be 1-D with one value per edge"):
        st.STGConv(4, 2)(x, g7, dt=dt[1:], kind=torch.ones(g7.nnz, dtype=torch.long))
    with pytest.raises(ValueError, match="tau_init must be a positive"):
        st.STGConv(4, 2, tau_init=0.0)
    with pytest.raises(ValueError, match="multiple of heads"):
        st.TemporalAttention(4, 5, heads=2)
    with pytest.raises(ValueError, match="edge_index holds node ids"):
        st.GraphConv(4, 2)(x, torch.tensor([[0], [9]]))
    with pytest.raises(ValueError, match="GraphConv needs a square graph"):
        st.GraphConv(4, 2)(x, Graph(np.array([0, 1]), np.array([3]), 7))
    ei = torch.tensor([[0, 1], [1, 2]])
    st.spmm(ei, x)                                           # cached for CPU tensors ...
    with pytest.raises(ValueError, match="edge_index is on cpu but x is on meta"):
        st.spmm(ei, x.to("meta"))                            # ... yet a tensor elsewhere is refused


# ============================================================== GraphConv vs PyG
@pytest.mark.parametrize("aggr", ["add", "mean", "max"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("f_in,f_out", [(6, 3), (3, 5)])
def test_graphconv_matches_pyg(rng, aggr, weighted, f_in, f_out):
    pyg_nn = pytest.importorskip("torch_geometric.nn")
    torch.manual_seed(0)
    n = 23
    g = random_graph(rng, n, p=0.15, empty_rows=(0, 4), isolated=(7,))
    ei, _ = shuffled_edge_index(g, rng)
    ref = pyg_nn.GraphConv(f_in, f_out, aggr=aggr)
    ours = st.GraphConv(f_in, f_out, aggr=aggr)
    ours.load_state_dict(ref.state_dict())
    xs = [torch.randn(n, f_in, requires_grad=True) for _ in range(2)]
    with torch.no_grad():
        xs[1].copy_(xs[0])
    ws = [None, None]
    if weighted:
        ws = [torch.rand(ei.shape[1]).requires_grad_() for _ in range(2)]
        with torch.no_grad():
            ws[1].copy_(ws[0])
    out_ref = ref(xs[0], ei, ws[0])
    out = ours(xs[1], ei, ws[1])
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    go = torch.randn_like(out)
    out_ref.backward(go)
    out.backward(go)
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=1e-5, atol=1e-5)
    for (name, p_ref), p in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-5, msg=name)
    if weighted:
        torch.testing.assert_close(ws[1].grad, ws[0].grad, rtol=1e-5, atol=1e-5)
    # a stgkern Graph gives the same result (weights then in CSR order)
    w_csr = None if ws[1] is None else ws[1].detach()[torch.from_numpy(st._resolve(ei, xs[1]).order.numpy())]
    torch.testing.assert_close(ours(xs[1], st._resolve(ei, xs[1]).g, w_csr), out, rtol=1e-6, atol=1e-6)


# ========================================================= STGConv (dense reference)
def stg_dense(layer, x, g, dt, kind, fused):
    """Plain-torch STGConv on dense (n, n) matrices with the layer's parameters."""
    tau = torch.exp(layer.log_tau)
    k = (kind - 1).clamp(max=layer.n_kinds - 1)
    M, W = dense(g, torch.exp(-dt / tau[k]))
    agg = W @ layer.lin_neigh(x)
    if fused:
        # c_ji = Σ_m W[i,m] W[j,m] h[m], summed over the in-edges j of i
        agg = agg + torch.einsum("ij,im,jm,mf->if", M, W, W, layer.lin_cn(x))
    if layer.normalize:
        agg = agg / (W.sum(1, keepdim=True) + layer.eps)
    out = layer.lin_self(x) + agg
    return out if layer.bias is None else out + layer.bias


def window_graph_small():
    log = stgkern.synthetic_log(n_users=3, events_per_user=12, n_items=30, n_categories=4, seed=1, process="markov")
    return stgkern.window_graph(log, window=4, category_window=2)


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "cn-fused"])
@pytest.mark.parametrize("normalize", [False, True], ids=["sum", "normalized"])
def test_stgconv_matches_dense_reference(fused, normalize):
    torch.manual_seed(1)
    g = window_graph_small()
    assert set(np.unique(g.edata["kind"])) >= {1, 3}
    layer = st.STGConv(5, 4, n_kinds=3, tau_init=50.0, fuse_common_neighbors=fused, normalize=normalize).double()
    with torch.no_grad():
        layer.log_tau.copy_(torch.log(torch.tensor([30.0, 80.0, 200.0])))
        layer.bias.normal_()
    x = torch.randn(g.n_nodes, 5, dtype=D, requires_grad=True)
    out = layer(x, g)                                        # dt/kind from g.edata
    dt = torch.from_numpy(g.edata["dt"]).double()
    kind = torch.from_numpy(g.edata["kind"].astype(np.int64))
    ref_layer = layer
    x2 = x.detach().clone().requires_grad_()
    ref = stg_dense(ref_layer, x2, g, dt, kind, fused)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *layer.parameters()], go)
    grads_ref = torch.autograd.grad(ref, [x2, *layer.parameters()], go)
    for (name, _), a, b in zip([("x", None), *layer.named_parameters()], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)
    assert grads[1 + [n for n, _ in layer.named_parameters()].index("log_tau")].abs().sum() > 0


def test_stgconv_edge_index_float32_and_kind_clipping(rng):
    torch.manual_seed(2)
    g = random_graph(rng, 12, p=0.3, empty_rows=(2,), isolated=(9,), loops=False)
    dt_csr = torch.from_numpy(rng.uniform(0, 100, g.nnz))
    kind_csr = torch.from_numpy(rng.choice([1, 2, 3, 4, 7], g.nnz))          # 4 and 7 clip to the last kind
    ei, perm = shuffled_edge_index(g, rng)
    layer = st.STGConv(3, 6, n_kinds=2, tau_init=40.0, fuse_common_neighbors=True, normalize=True)
    x = torch.randn(12, 3)
    out = layer(x, ei, dt=dt_csr[perm].float(), kind=kind_csr[perm])
    ref = stg_dense(layer.double(), x.double(), g, dt_csr, kind_csr, True)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True], ids=["sum", "normalized"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_stgconv_float32_fused_pass_matches_references(rng, normalize, bias):
    """float32 on the CPU takes the fused aggregation (stgkern._numba.stgconv): its output against the
    row-by-row float64 reference (naive_stgconv), its gradients (x, dt and every parameter) against
    autograd through the dense float64 formula; rows without in-edges, isolated nodes and kinds past
    n_kinds included."""
    from naive import naive_stgconv
    torch.manual_seed(3)
    g = random_graph(rng, 40, p=0.15, empty_rows=(2, 7), isolated=(11,), loops=True)
    kind = torch.from_numpy(rng.choice([1, 2, 3, 4, 7], g.nnz))
    layer = st.STGConv(6, 5, n_kinds=3, tau_init=40.0, normalize=normalize, bias=bias)
    with torch.no_grad():
        layer.log_tau.copy_(torch.log(torch.tensor([20.0, 60.0, 150.0])))
        if bias:
            layer.bias.normal_()
    x = torch.randn(40, 6, requires_grad=True)
    dt = torch.from_numpy(rng.uniform(0, 200, g.nnz).astype(np.float32)).requires_grad_()
    out = layer(x, g, dt=dt, kind=kind)
    assert type(out.grad_fn).__name__ == "_STGAggregateBackward"
    p = {k: v.detach().numpy() for k, v in layer.named_parameters()}
    want = naive_stgconv(g.indptr, g.indices, x.detach().numpy(), p["lin_self.weight"], p["lin_neigh.weight"],
                         p.get("bias"), p["log_tau"], dt.detach().numpy(), kind.numpy(), normalize, layer.eps)
    np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-5, atol=1e-5)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, dt, *layer.parameters()], go)
    ref_layer = st.STGConv(6, 5, n_kinds=3, normalize=normalize, bias=bias).double()
    ref_layer.load_state_dict(layer.state_dict())
    x2, dt2 = x.detach().double().requires_grad_(), dt.detach().double().requires_grad_()
    ref = stg_dense(ref_layer, x2, g, dt2, kind, False)
    want_grads = torch.autograd.grad(ref, [x2, dt2, *ref_layer.parameters()], go.double())
    names = ["x", "dt"] + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, grads, want_grads):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5, msg=name)


def test_stgconv_fused_pass_equals_composite(rng, monkeypatch):
    """Above STGCONV_FUSED_MAX_NNZ edges (or with common-neighbour fusion, float64 or CUDA) the layer
    runs its composite (spmm + segment sum); both give the same values and gradients to float32 rounding,
    for an edge_index graph too (dt and kind then in its column order)."""
    torch.manual_seed(4)
    g = window_graph_small()
    ei, perm = shuffled_edge_index(g, rng)
    dt = torch.from_numpy(g.edata["dt"][perm].astype(np.float32))
    kind = torch.from_numpy(g.edata["kind"][perm].astype(np.int64))
    layer = st.STGConv(5, 4, n_kinds=3, tau_init=30.0, normalize=True)
    x = torch.randn(g.n_nodes, 5)
    runs = []
    for limit in (st.STGCONV_FUSED_MAX_NNZ, -1):
        monkeypatch.setattr(st, "STGCONV_FUSED_MAX_NNZ", limit)
        xs, dts = x.clone().requires_grad_(), dt.clone().requires_grad_()
        out = layer(xs, ei, dt=dts, kind=kind)
        assert (type(out.grad_fn).__name__ == "_STGAggregateBackward") == (limit >= 0)
        runs.append((out, *torch.autograd.grad(out.square().sum(), [xs, dts, *layer.parameters()])))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


def test_stgconv_gradcheck_float64(rng):
    g = random_graph(rng, 6, p=0.5, empty_rows=(0,), isolated=(3,))
    layer = st.STGConv(2, 2, tau_init=3.0, fuse_common_neighbors=True, normalize=True).double()
    dt = leaf(rng.uniform(0, 5, g.nnz))
    kind = torch.from_numpy(rng.choice([1, 2, 3], g.nnz))
    x = leaf(rng.standard_normal((6, 2)))
    gradcheck(lambda a, t: layer(a, g, dt=t, kind=kind), x, dt)


# ================================================== TemporalAttention (dense reference)
def attention_dense(layer, x, g, dt):
    n, H = x.shape[0], layer.heads
    d = layer.out_channels // H
    M = dense(g)
    DT = torch.zeros(n, n, dtype=x.dtype).index_put((torch.from_numpy(g.dst().astype(np.int64)),
                                                      torch.from_numpy(g.indices.astype(np.int64))), dt)
    phi = torch.cos(DT[..., None] * layer.omega + layer.phase)            # (n, n, T)
    q = layer.lin_q(x) + layer.lin_qt(torch.cos(layer.phase))            # (n, out)
    k = layer.lin_k(x)[None] + layer.lin_kt(phi)                         # (i, j, out)
    v = layer.lin_v(x)[None] + layer.lin_vt(phi)
    q, k, v = q.view(n, H, d), k.view(n, n, H, d), v.view(n, n, H, d)
    s = torch.einsum("ihd,ijhd->ijh", q, k) / math.sqrt(d)
    s = s.masked_fill(M[..., None] == 0, -math.inf)
    a = torch.softmax(s, 1).nan_to_num(0.0) * M[..., None]               # rows without edges: 0
    out = torch.einsum("ijh,ijhd->ihd", a, v).reshape(n, H * d)
    return out + layer.lin_self(x)


@pytest.mark.parametrize("heads,time_dim", [(1, 16), (2, 3)])
def test_temporal_attention_matches_dense_reference(heads, time_dim):
    torch.manual_seed(3)
    g = window_graph_small()
    layer = st.TemporalAttention(5, 4, heads=heads, time_dim=time_dim).double()
    x = torch.randn(g.n_nodes, 5, dtype=D, requires_grad=True)
    dt = torch.from_numpy(g.edata["dt"]).double() / 100.0
    out = layer(x, g, dt=dt)
    x2 = x.detach().clone().requires_grad_()
    ref = attention_dense(layer, x2, g, dt)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    go = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *layer.parameters()], go)
    grads_ref = torch.autograd.grad(ref, [x2, *layer.parameters()], go)
    for (name, _), a, b in zip([("x", None), *layer.named_parameters()], grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


def test_temporal_attention_edge_index_float32_default_dt(rng):
    torch.manual_seed(4)
    g = random_graph(rng, 10, p=0.3, empty_rows=(1,), isolated=(4,))
    g.set_edata("dt", rng.uniform(0, 3, g.nnz))
    layer = st.TemporalAttention(3, 6, heads=3, time_dim=4)
    x = torch.randn(10, 3)
    out_g = layer(x, g)                                      # dt from g.edata
    ei, perm = shuffled_edge_index(g, rng)
    out_ei = layer(x, ei, dt=torch.from_numpy(g.edata["dt"][perm]))
    ref = attention_dense(layer.double(), x.double(), g, torch.from_numpy(g.edata["dt"]))
    torch.testing.assert_close(out_g.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_ei.double(), ref, rtol=1e-4, atol=1e-5)


def test_temporal_attention_gradcheck_float64(rng):
    g = random_graph(rng, 6, p=0.5, empty_rows=(0,), isolated=(3,))
    layer = st.TemporalAttention(2, 4, heads=2, time_dim=3).double()
    dt = torch.from_numpy(rng.uniform(0, 2, g.nnz))
    x = leaf(rng.standard_normal((6, 2)))
    gradcheck(lambda a: layer(a, g, dt=dt), x)


# ================================================================ CUDA tensors
def _cuda_ready():
    if not torch.cuda.is_available():
        return False
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no CuPy, driver or device: the test skips
        return False
    return True


@pytest.mark.cuda
@pytest.mark.skipif(not _cuda_ready(), reason="needs torch with CUDA and CuPy with a device")
def test_cuda_tensors_match_cpu(rng):
    """Same functions and layers on CUDA tensors (DLPack to CuPy kernels) as on the CPU."""
    g = window_graph_small()
    torch.manual_seed(5)
    x = torch.randn(g.n_nodes, 8)
    ei, _ = shuffled_edge_index(g, rng)
    w = torch.rand(g.nnz)
    for make in (lambda: st.GraphConv(8, 4, aggr="max"), lambda: st.STGConv(8, 4, tau_init=60.0, normalize=True),
                 lambda: st.TemporalAttention(8, 4, heads=2, time_dim=3)):
        layer = make()
        if isinstance(layer, st.GraphConv):
            args_cpu, args_gpu = (ei, w), (ei.cuda(), w.cuda())
        else:
            args_cpu = args_gpu = (g,)
        xc, xg = x.clone().requires_grad_(), x.cuda().requires_grad_()
        out_c = layer(xc, *args_cpu)
        out_c.square().sum().backward()
        grads_c = [p.grad.clone() for p in layer.parameters()]
        layer.zero_grad()
        layer.cuda()
        out_g = layer(xg, *args_gpu)
        out_g.square().sum().backward()
        torch.testing.assert_close(out_g.cpu(), out_c, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-4, atol=1e-5)
        for a, b in zip(layer.parameters(), grads_c):
            torch.testing.assert_close(a.grad.cpu(), b, rtol=1e-4, atol=1e-5)
        layer.cpu()
    out = st.segment_reduce(x.cuda(), torch.tensor([0, 3, 3, g.n_nodes]).cuda(), "max")
    torch.testing.assert_close(out.cpu(), st.segment_reduce(x, np.array([0, 3, 3, g.n_nodes]), "max"))
