"""stgkern.torch.GraphConv against torch_geometric.nn.GraphConv with the same state_dict.

Every comparison runs both layers on separate float64 leaf copies of the
same inputs and checks the output and the gradients of every float input
(node features, edge weights, sparse values) and of every parameter.  The
graphs are small and random, with destination rows that have no in-edges
and duplicate edges.  Covered: every aggregation (add/sum, mean, max, min),
square and bipartite inputs (with and without x_dst, with ``size``), lazy
``in_channels=-1`` and state dicts both ways, torch sparse COO and CSR
adjacencies (``adj_t``: row = destination), ``torch.compile`` (runs as a
graph break), ``torch.jit.script``/``trace`` (refused), and the validation
messages, which come before any kernel runs.
"""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pyg_nn = pytest.importorskip("torch_geometric.nn")

import stgkern.torch as st
from stgkern import Graph

D = torch.float64
AGGRS = ["add", "mean", "max", "min"]
TOL = {"rtol": 1e-9, "atol": 1e-11}

pytestmark = pytest.mark.filterwarnings(
    "ignore:Converting sparse tensor to CSR format:UserWarning",   # PyG, for COO input
    "ignore:Sparse CSR tensor support is in beta state:UserWarning",
    "ignore:Sparse invariant checks are implicitly disabled:UserWarning",
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning",
)


# ------------------------------------------------------------------ helpers
def random_edges(gen, n_src, n_dst, nnz, empty=(0,), dups=4):
    """Shuffled edge_index (2, nnz + dups): destinations avoid ``empty``; the first ``dups`` edges repeat."""
    allowed = torch.tensor([i for i in range(n_dst) if i not in empty])
    dst = allowed[torch.randint(len(allowed), (nnz,), generator=gen)]
    src = torch.randint(n_src, (nnz,), generator=gen)
    ei = torch.stack([src, dst])
    ei = torch.cat([ei, ei[:, :dups]], 1)
    return ei[:, torch.randperm(ei.shape[1], generator=gen)]


def unique_sorted(ei):
    """The distinct edges of ``ei`` sorted by (destination, source): CSR order."""
    key = torch.unique(ei[1] * (int(ei[0].max()) + 1) + ei[0])
    return torch.stack([key % (int(ei[0].max()) + 1), key // (int(ei[0].max()) + 1)])


def csr_of(ei, values, n_dst, n_src):
    """torch sparse CSR (n_dst, n_src) of edges already in CSR order."""
    crow = torch.zeros(n_dst + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(ei[1], minlength=n_dst), 0)
    return torch.sparse_csr_tensor(crow, ei[0].clone(), values, (n_dst, n_src))


def twins(in_channels, out_channels, aggr, bias=True):
    """A PyG GraphConv and ours with the PyG layer's state dict loaded (float64)."""
    ref = pyg_nn.GraphConv(in_channels, out_channels, aggr=aggr, bias=bias).double()
    ours = st.GraphConv(in_channels, out_channels, aggr=aggr, bias=bias).double()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def run(layer, base, build):
    """``layer(*build(**leaves))`` on fresh leaf copies of ``base``; (out, input grads, parameter grads)."""
    layer.zero_grad(set_to_none=True)
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_(v.is_floating_point()))
              for k, v in base.items()}
    args, kwargs = build(**leaves)
    out = layer(*args, **kwargs)
    g = torch.Generator().manual_seed(1)
    out.backward(torch.randn(out.shape, generator=g, dtype=out.dtype))
    grads = {k: v.grad for k, v in leaves.items() if v is not None and v.requires_grad}
    return out.detach(), grads, {n: p.grad for n, p in layer.named_parameters()}


def assert_same(ref, ours, base, build, build_ref=None):
    """Outputs and every gradient of PyG's layer and ours agree (``build_ref`` for PyG when it differs)."""
    out_r, gin_r, gp_r = run(ref, base, build_ref or build)
    out_o, gin_o, gp_o = run(ours, base, build)
    torch.testing.assert_close(out_o, out_r, **TOL)
    assert gin_o.keys() == gin_r.keys() and gp_o.keys() == gp_r.keys()
    for k in gin_r:
        torch.testing.assert_close(gin_o[k], gin_r[k], **TOL, msg=lambda m, k=k: f"grad of {k}: {m}")
    for k in gp_r:
        if gp_r[k] is None:
            assert gp_o[k] is None, k
        else:
            torch.testing.assert_close(gp_o[k], gp_r[k], **TOL, msg=lambda m, k=k: f"grad of {k}: {m}")
    return out_o


@pytest.fixture
def gen():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------ square graphs
@pytest.mark.parametrize("aggr", AGGRS + ["sum"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_square_edge_index_and_graph(gen, aggr, weighted):
    n = 13
    ei = random_edges(gen, n, n, 30, empty=(0, 5))
    base = {"x": torch.randn(n, 5, generator=gen, dtype=D), "ei": ei,
            "w": torch.rand(ei.shape[1], generator=gen, dtype=D) + 0.1 if weighted else None}
    for f_out in (3, 7):                            # narrower (aggregate after lin_rel) and wider
        ref, ours = twins(5, f_out, aggr)
        out = assert_same(ref, ours, base, lambda x, ei, w: ((x, ei, w), {}))
        assert out.shape == (n, f_out)
        with torch.no_grad():                      # rows without in-edges: bias + root term only
            torch.testing.assert_close(out[[0, 5]], ours.lin_root(base["x"][[0, 5]]) + ours.lin_rel.bias, **TOL)
    # the same graph as a stgkern Graph: weights then in CSR order
    r = st._resolve(ei, base["x"])
    g, order = r.g, r.order
    assert_same(ref, ours, base, lambda x, ei, w: ((x, g, None if w is None else w[order]), {}),
                build_ref=lambda x, ei, w: ((x, ei, w), {}))


def test_min_is_the_minimum_of_weighted_messages():
    """Three messages into node 2: min over w·x, negative weights included; node 0 has none: 0."""
    ei = torch.tensor([[0, 1, 3], [2, 2, 2]])
    x = torch.tensor([[1.0], [-2.0], [0.0], [4.0]], dtype=D)
    w = torch.tensor([-3.0, 0.5, 0.25], dtype=D)
    conv = st.GraphConv(1, 1, aggr="min", bias=False).double()
    with torch.no_grad():
        conv.lin_rel.weight.fill_(1.0)
        conv.lin_root.weight.fill_(0.0)
    assert conv(x, ei, w)[:, 0].tolist() == [0.0, 0.0, -3.0, 0.0]
    assert conv(x, ei)[:, 0].tolist() == [0.0, 0.0, -2.0, 0.0]


@pytest.mark.parametrize("name", ["sum", "Add", "MEAN", "max_aggregation", "MinAggregation", "Sum-Aggregation"])
def test_pyg_spellings_of_the_aggregations(gen, name):
    n = 6
    ei = random_edges(gen, n, n, 12)
    ref, ours = twins(3, 2, name)
    assert ours.aggr == name
    assert_same(ref, ours, {"x": torch.randn(n, 3, generator=gen, dtype=D), "ei": ei},
                lambda x, ei: ((x, ei), {}))


# ------------------------------------------------------------------ bipartite graphs
@pytest.mark.parametrize("aggr", AGGRS)
def test_bipartite(gen, aggr):
    n_src, n_dst = 11, 7
    ei = random_edges(gen, n_src, n_dst, 25, empty=(2, 6))
    base = {"xs": torch.randn(n_src, 5, generator=gen, dtype=D), "xd": torch.randn(n_dst, 3, generator=gen, dtype=D),
            "ei": ei, "w": torch.rand(ei.shape[1], generator=gen, dtype=D) + 0.1}
    ref, ours = twins((5, 3), 4, aggr)
    out = assert_same(ref, ours, base, lambda xs, xd, ei, w: (((xs, xd), ei, w), {}))
    assert out.shape == (n_dst, 4)
    # size given (as PyG takes it) and a rectangular stgkern Graph
    assert_same(ref, ours, base, lambda xs, xd, ei, w: (((xs, xd), ei, w), {"size": (n_src, n_dst)}))
    r = st._from_edge_index(ei, n_src, base["xs"], "x[0]", n_dst, "x[1]")
    assert r.g.shape == (n_dst, n_src)
    assert_same(ref, ours, base, lambda xs, xd, ei, w: (((xs, xd), r.g, w[r.order]), {}),
                build_ref=lambda xs, xd, ei, w: (((xs, xd), ei, w), {}))
    # more destinations than sources
    ei2 = random_edges(gen, 4, 9, 15, empty=(8,))
    base2 = {"xs": torch.randn(4, 5, generator=gen, dtype=D), "xd": torch.randn(9, 3, generator=gen, dtype=D),
             "ei": ei2}
    assert assert_same(ref, ours, base2, lambda xs, xd, ei: (((xs, xd), ei), {})).shape == (9, 4)


@pytest.mark.parametrize("aggr", ["add", "max"])
def test_bipartite_without_x_dst(gen, aggr):
    """x_dst None: no root term; n_dst = size[1], else n_src (PyG's rule)."""
    n_src, n_dst = 9, 5
    ei = random_edges(gen, n_src, n_dst, 20, empty=(1,))
    base = {"xs": torch.randn(n_src, 4, generator=gen, dtype=D), "ei": ei,
            "w": torch.rand(ei.shape[1], generator=gen, dtype=D)}
    ref, ours = twins(4, 6, aggr)
    out = assert_same(ref, ours, base, lambda xs, ei, w: (((xs, None), ei, w), {}))
    assert out.shape == (n_src, 6) and ours.lin_root.weight.grad is None
    out = assert_same(ref, ours, base, lambda xs, ei, w: (((xs, None), ei, w), {"size": (None, n_dst)}))
    assert out.shape == (n_dst, 6)
    ref, ours = twins((4, 2), 6, aggr)
    assert_same(ref, ours, base, lambda xs, ei, w: (((xs, None), ei, w), {"size": (n_src, n_dst)}))


# ------------------------------------------------------------------ lazy in_channels
def test_lazy_matches_pyg_initialisation_and_gradients(gen):
    n_src, n_dst = 8, 6
    ei = random_edges(gen, n_src, n_dst, 18)
    ref = pyg_nn.GraphConv(-1, 4, aggr="min").double()
    ours = st.GraphConv(-1, 4, aggr="min").double()
    assert torch.nn.parameter.is_lazy(ours.lin_rel.weight) and torch.nn.parameter.is_lazy(ours.lin_root.weight)
    ours.load_state_dict(ref.state_dict())                    # uninitialised -> uninitialised
    assert torch.nn.parameter.is_lazy(ours.lin_rel.weight)
    xs, xd = torch.randn(n_src, 5, generator=gen, dtype=D), torch.randn(n_dst, 3, generator=gen, dtype=D)
    outs = []
    for layer in (ref, ours):                                 # same seed: the same draws, in the same order
        torch.manual_seed(7)
        outs.append(layer((xs, xd), ei))
    for (n, p_r), (n_o, p_o) in zip(ref.state_dict().items(), ours.state_dict().items()):
        assert n == n_o
        torch.testing.assert_close(p_o, p_r, rtol=0, atol=0)
    assert ours.lin_rel.in_features == 5 and ours.lin_root.in_features == 3
    assert ours.lin_rel.weight.dtype == D and type(ours.lin_rel.weight) is torch.nn.Parameter
    torch.testing.assert_close(outs[1], outs[0], **TOL)
    assert_same(ref, ours, {"xs": xs, "xd": xd, "ei": ei}, lambda xs, xd, ei: (((xs, xd), ei), {}))
    with pytest.raises(ValueError, match=r"x\[0\] has 6 features but the layer expects 5 source features "
                                         r"\(in_channels=-1, set by the first forward\)"):
        ours((torch.randn(n_src, 6, dtype=D), xd), ei)


def test_lazy_state_dicts_both_ways(gen):
    n = 7
    ei = random_edges(gen, n, n, 15)
    x = torch.randn(n, 3, generator=gen, dtype=D)
    # ours (uninitialised) -> PyG (uninitialised): PyG materialises it on its forward.  (float32: PyG's
    # Linear makes a fresh float32 UninitializedParameter when it loads one, whatever its dtype was.)
    sd = st.GraphConv(-1, 2, aggr="max").state_dict()
    assert torch.nn.parameter.is_lazy(sd["lin_rel.weight"]) and sd.keys() == {"lin_rel.weight", "lin_rel.bias",
                                                                              "lin_root.weight"}
    ref = pyg_nn.GraphConv(-1, 2, aggr="max")
    ref.load_state_dict(sd)
    assert ref(x.float(), ei).shape == (n, 2)
    ours = st.GraphConv(-1, 2, aggr="max").double()
    ours.load_state_dict(st.GraphConv(-1, 2, aggr="max").double().state_dict())
    assert torch.nn.parameter.is_lazy(ours.lin_rel.weight) and ours.lin_rel.weight.dtype == D
    # ours materialised -> a lazy PyG layer (materialised by the load) and back into a lazy one of ours
    ours(x, ei)
    ref = pyg_nn.GraphConv(-1, 2, aggr="max").double()
    ref.load_state_dict(ours.state_dict())
    assert ref.lin_rel.weight.shape == (2, 3)
    back = st.GraphConv(-1, 2, aggr="max").double()
    back.load_state_dict(ref.state_dict())
    assert back.lin_rel.in_features == 3 and not torch.nn.parameter.is_lazy(back.lin_root.weight)
    assert_same(ref, back, {"x": x, "ei": ei}, lambda x, ei: ((x, ei), {}))
    # a lazy state dict makes a sized layer lazy again (PyG does the same)
    sized = st.GraphConv(3, 2, aggr="max").double()
    sized.load_state_dict(st.GraphConv(-1, 2, aggr="max").double().state_dict())
    assert torch.nn.parameter.is_lazy(sized.lin_rel.weight) and sized.lin_rel.weight.dtype == D
    assert sized(x, ei).shape == (n, 2)


def test_lazy_root_stays_lazy_without_x_dst(gen):
    ei = random_edges(gen, 6, 4, 10)
    xs = torch.randn(6, 3, generator=gen, dtype=D)
    ref = pyg_nn.GraphConv((-1, -1), 2).double()
    ours = st.GraphConv((-1, -1), 2).double()
    for layer in (ref, ours):
        torch.manual_seed(3)
        layer((xs, None), ei, size=(6, 4))
    assert torch.nn.parameter.is_lazy(ref.lin_root.weight) and torch.nn.parameter.is_lazy(ours.lin_root.weight)
    torch.testing.assert_close(ours.lin_rel.weight, ref.lin_rel.weight, rtol=0, atol=0)
    fresh = st.GraphConv((-1, -1), 2).double()
    fresh.load_state_dict(ref.state_dict())
    assert fresh.lin_rel.in_features == 3 and torch.nn.parameter.is_lazy(fresh.lin_root.weight)


# ------------------------------------------------------------------ torch sparse adjacency (adj_t)
@pytest.mark.parametrize("aggr", AGGRS)
def test_sparse_coo_with_duplicates(gen, aggr):
    """COO (n_dst, n_src), uncoalesced, duplicate entries: both sum duplicates, values are the weights."""
    n_src, n_dst = 10, 7
    ei = random_edges(gen, n_src, n_dst, 24, empty=(0, 3), dups=5)
    base = {"xs": torch.randn(n_src, 4, generator=gen, dtype=D), "xd": torch.randn(n_dst, 2, generator=gen, dtype=D),
            "v": torch.rand(ei.shape[1], generator=gen, dtype=D) + 0.1}
    ref, ours = twins((4, 2), 3, aggr)

    def build(xs, xd, v):
        return ((xs, xd), torch.sparse_coo_tensor(ei.flip(0), v, (n_dst, n_src))), {}
    out = assert_same(ref, ours, base, build)
    assert out.shape == (n_dst, 3)
    # square: x a tensor
    sq = random_edges(gen, 9, 9, 20, empty=(4,))
    base_sq = {"x": torch.randn(9, 4, generator=gen, dtype=D), "v": torch.rand(sq.shape[1], generator=gen, dtype=D)}
    ref, ours = twins(4, 3, aggr)
    assert_same(ref, ours, base_sq, lambda x, v: ((x, torch.sparse_coo_tensor(sq.flip(0), v, (9, 9))), {}))


@pytest.mark.parametrize("aggr", AGGRS)
def test_sparse_csr(gen, aggr):
    n_src, n_dst = 10, 8
    ei = unique_sorted(random_edges(gen, n_src, n_dst, 26, empty=(0, 5)))
    base = {"xs": torch.randn(n_src, 4, generator=gen, dtype=D), "xd": torch.randn(n_dst, 2, generator=gen, dtype=D),
            "v": torch.rand(ei.shape[1], generator=gen, dtype=D) + 0.1}
    ref, ours = twins((4, 2), 3, aggr)
    out = assert_same(ref, ours, base, lambda xs, xd, v: (((xs, xd), csr_of(ei, v, n_dst, n_src)), {}))
    # the same as the edge_index with the values as edge weights
    ref_ei = assert_same(ref, ours, base, lambda xs, xd, v: (((xs, xd), ei, v), {}))
    torch.testing.assert_close(out, ref_ei, **TOL)
    # int32 indices, float32 values (cast to x's dtype), size that agrees, x_dst None
    csr32 = torch.sparse_csr_tensor(csr_of(ei, base["v"], n_dst, n_src).crow_indices().int(), ei[0].int(),
                                    base["v"].float(), (n_dst, n_src))
    torch.testing.assert_close(ours((base["xs"], base["xd"]), csr32, size=(n_src, n_dst)), out, rtol=1e-6, atol=1e-6)
    assert ours((base["xs"], None), csr32).shape == (n_dst, 3)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_leaf_gradient(gen, layout):
    """The sparse tensor itself as the leaf: its .grad (sparse) equals PyG's."""
    n = 8
    ei = random_edges(gen, n, n, 18, empty=(2,))
    v = torch.rand(ei.shape[1], generator=gen, dtype=D) + 0.1
    x = torch.randn(n, 3, generator=gen, dtype=D)
    ref, ours = twins(3, 2, "max")
    grads = []
    for layer in (ref, ours):
        adj = torch.sparse_coo_tensor(ei.flip(0), v, (n, n))
        adj = (adj.coalesce().to_sparse_csr() if layout == "csr" else adj).requires_grad_()
        layer(x, adj).square().sum().backward()
        grads.append(adj.grad.to_dense())
    torch.testing.assert_close(grads[1], grads[0], **TOL)


def test_sparse_csr_with_duplicate_entries(gen):
    """CSR entries are separate edges, as in PyG's forward (against PyG's edge_index path for the gradients).

    The values do not require grad: torch's own backward of ``sparse_csr_tensor(crow, col, values)``
    fails on a CSR with duplicate entries (it coalesces the gradient), for PyG's layer and ours alike.
    """
    n_src, n_dst = 6, 5
    ei = random_edges(gen, n_src, n_dst, 14, dups=4)
    order = torch.argsort(ei[1] * n_src + ei[0], stable=True)
    ei = ei[:, order]
    base = {"xs": torch.randn(n_src, 3, generator=gen, dtype=D), "xd": torch.randn(n_dst, 3, generator=gen, dtype=D),
            "v": torch.rand(ei.shape[1], generator=gen, dtype=D) + 0.1}
    for aggr in ("mean", "max"):
        ref, ours = twins(3, 2, aggr)
        with torch.no_grad():
            torch.testing.assert_close(ours((base["xs"], base["xd"]), csr_of(ei, base["v"], n_dst, n_src)),
                                       ref((base["xs"], base["xd"]), csr_of(ei, base["v"], n_dst, n_src)), **TOL)
        assert_same(ref, ours, base, lambda xs, xd, v: (((xs, xd), csr_of(ei, v.detach(), n_dst, n_src)), {}),
                    build_ref=lambda xs, xd, v: (((xs, xd), ei, v.detach()), {}))


# ------------------------------------------------------------------ torch.compile / TorchScript
def test_torch_compile_runs_as_a_graph_break(gen):
    n = 9
    ei = random_edges(gen, n, n, 20)
    x = torch.randn(n, 4, generator=gen, dtype=D)
    conv = st.GraphConv(4, 3, aggr="min").double()
    model = torch.nn.Sequential()
    model.conv, model.lin = conv, torch.nn.Linear(3, 2).double()

    def eager(x):
        return model.lin(torch.relu(model.conv(2 * x, ei)))

    compiled = torch.compile(eager, backend="eager")
    xs = [x.clone().requires_grad_() for _ in range(2)]
    outs = [f(xi) for f, xi in zip((eager, compiled), xs)]
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)
    grads = []
    for out, xi in zip(outs, xs):
        model.zero_grad()
        out.sum().backward()
        grads.append((xi.grad, conv.lin_rel.weight.grad.clone()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(Exception, match="torch.compile cannot trace"):
        torch.compile(conv, backend="eager", fullgraph=True)(x, ei)


def test_torchscript_and_trace_are_refused(gen):
    conv = st.GraphConv(4, 3)
    with pytest.raises(RuntimeError, match="cannot be compiled by torch.jit.script: .*TorchScript cannot express"):
        torch.jit.script(conv)
    with pytest.raises(RuntimeError, match="cannot be compiled by torch.jit.script"):
        torch.jit.script(torch.nn.Sequential(conv))                   # inside a model too
    ei = torch.tensor([[0, 1, 2], [1, 2, 0]])
    with pytest.raises(RuntimeError, match="cannot be traced by torch.jit.trace"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(conv, (torch.randn(3, 4), ei))


# ------------------------------------------------------------------ validation (before any kernel)
@pytest.fixture
def no_kernels(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a kernel ran before validation finished")
    monkeypatch.setattr(st._SpMM, "apply", boom)


def test_bad_inputs_fail_before_any_kernel(no_kernels):
    x = torch.randn(5, 4)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    bad = [
        (ValueError, r"aggr='median' is not supported; choose one of 'add', 'sum', 'mean', 'max', 'min'",
         lambda: st.GraphConv(4, 2, aggr="median")),
        (ValueError, r"aggr=\['sum', 'max'\] is not supported", lambda: st.GraphConv(4, 2, aggr=["sum", "max"])),
        (ValueError, r"in_channels must be positive, or -1", lambda: st.GraphConv(0, 2)),
        (ValueError, r"in_channels must be an int or a pair", lambda: st.GraphConv((1, 2, 3), 2)),
        (TypeError, r"x must be a torch.Tensor \(n, in_channels\) or a pair", lambda: st.GraphConv(4, 2)(x.numpy(), ei)),
        (TypeError, r"x\[1\] \(destination features\) must be a torch.Tensor or None",
         lambda: st.GraphConv(4, 2)((x, 3), ei)),
        (ValueError, r"x\[1\] has 4 features but the layer expects 3 destination features \(in_channels=\(4, 3\)\)",
         lambda: st.GraphConv((4, 3), 2)((x, x), ei)),
        (ValueError, r"edge_index row 1 \(destinations\) holds node ids in \[1, 3\] but there are 3 destinations "
                     r"\(from x\[1\].shape\[0\]\)", lambda: st.GraphConv(4, 2)((x, x[:3]), ei)),
        (ValueError, r"edge_index row 0 \(sources\) holds node ids in \[0, 2\] but there are 2 sources",
         lambda: st.GraphConv(4, 2)((x[:2], x), ei)),
        (ValueError, r"size\[1\]=4 \(destinations\) but x\[1\] has 5 rows",
         lambda: st.GraphConv(4, 2)((x, x), ei, size=(5, 4))),
        (ValueError, r"size\[0\]=6 \(sources\) but x has 5 rows", lambda: st.GraphConv(4, 2)(x, ei, size=(6, 5))),
        (TypeError, r"size must be None or a pair", lambda: st.GraphConv(4, 2)(x, ei, size=5)),
        (ValueError, r"GraphConv needs a square graph .*\(pass x as a pair",
         lambda: st.GraphConv(4, 2)(x, torch.sparse_coo_tensor(ei.flip(0), torch.ones(3), (4, 5)))),
        (ValueError, r"edge_weight was given with a sparse adjacency",
         lambda: st.GraphConv(4, 2)(x, torch.sparse_coo_tensor(ei.flip(0), torch.ones(3), (5, 5)), torch.ones(3))),
        (ValueError, r"size=\(5, 4\) \(n_src, n_dst\) disagrees with the graph, which has 5 sources and 5 destinations",
         lambda: st.GraphConv(4, 2)(x, torch.sparse_coo_tensor(ei.flip(0), torch.ones(3), (5, 5)), size=(5, 4))),
        (TypeError, r"layout torch.sparse_coo or torch.sparse_csr, got torch.sparse_csc",
         lambda: st.GraphConv(4, 2)(x, torch.sparse_coo_tensor(ei.flip(0), torch.ones(3), (5, 5)).to_sparse_csc())),
        (ValueError, r"2-D \(n_dst, n_src\) matrix with one scalar per entry",
         lambda: st.GraphConv(4, 2)(x, torch.sparse_coo_tensor(ei.flip(0), torch.ones(3, 2), (5, 5, 2)))),
        (TypeError, r"the sparse adjacency has dtype torch.int64; its values are edge weights",
         lambda: st.GraphConv(4, 2)(x, torch.sparse_coo_tensor(ei.flip(0), torch.ones(3, dtype=torch.long), (5, 5)))),
        (ValueError, r"x\[0\] has 5 rows but the graph has 4 source nodes",
         lambda: st.GraphConv(4, 2)((x, None), torch.sparse_coo_tensor(ei.flip(0), torch.ones(3), (5, 4)))),
        (ValueError, r"not a valid CSR matrix", lambda: st.GraphConv(4, 2)(x, torch.sparse_csr_tensor(
            torch.tensor([0, 1, 2, 3, 3, 3]), torch.tensor([0, 1, 9]), torch.ones(3), (5, 5)))),
        (ValueError, r"edge_weight has 2 entries but the graph has 3 edges",
         lambda: st.GraphConv(4, 2)((x, x), ei, torch.ones(2))),
        (TypeError, r"x\[0\] has dtype torch.float64 but the layer's parameters are torch.float32",
         lambda: st.GraphConv(-1, 2)((x.double(), None), ei)),
        (TypeError, r"graph must be a stgkern.Graph, got list", lambda: st.GraphConv(4, 2)(x, [[0, 1], [1, 2]])),
    ]
    for exc, msg, call in bad:
        with pytest.raises(exc, match=msg):
            call()


def test_failed_call_leaves_lazy_layer_uninitialised():
    conv = st.GraphConv(-1, 2)
    with pytest.raises(ValueError, match="edge_index holds node ids"):
        conv(torch.randn(3, 4), torch.tensor([[0, 5], [1, 2]]))
    assert torch.nn.parameter.is_lazy(conv.lin_rel.weight)


def test_torch_sparse_sparsetensor_is_named():
    fake = type("SparseTensor", (), {"__module__": "torch_sparse.tensor"})()
    with pytest.raises(TypeError, match=r"torch_sparse.SparseTensor is not supported; convert it with "
                                        r"adj.to_torch_sparse_csr_tensor\(\)"):
        st.GraphConv(4, 2)(torch.randn(3, 4), fake)
