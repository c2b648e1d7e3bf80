"""stgkern.models: SR-GNN on stgkern's kernels against the dense original, training, persistence."""
import gzip

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import stgkern  # noqa: E402
from stgkern.data import SessionData  # noqa: E402
from stgkern.models import SRGNN, evaluate, fit, load, make_batch, save, split_validation  # noqa: E402
from stgkern.models.train import session_examples  # noqa: E402
from naive import naive_split  # noqa: E402
from naive_srgnn import DenseSRGNN, dense_inputs, dense_loss  # noqa: E402


def _sessions(rng, n, n_items, max_len=7):
    lens = rng.integers(1, max_len + 1, n)
    lens[0] = 1                                   # a one-item session: no edge, a lone node
    items = rng.integers(0, n_items, int(lens.sum()))
    items[1:3] = items[0]                         # a repeat: a self-loop a -> a
    ptr = np.concatenate([[0], np.cumsum(lens)])
    return ptr, items


def _tiny_data(rng, n_train=60, n_test=25, n_items=30):
    tp, ti = _sessions(rng, n_train, n_items)
    tp[1:] = np.maximum(tp[1:], np.arange(1, n_train + 1) * 2)      # every training session >= 2 items
    ti = rng.integers(0, n_items, int(tp[-1]))
    ep, ei = _sessions(rng, n_test, n_items)
    return SessionData(tp.astype(np.int64), ti.astype(np.int64), ep.astype(np.int64), ei.astype(np.int64),
                       rng.integers(0, n_items, n_test).astype(np.int64), n_items, name="tiny")


@pytest.mark.parametrize("step, nonhybrid", [(1, False), (2, False), (1, True)], ids=["step1", "step2", "nonhybrid"])
def test_matches_dense_original(step, nonhybrid, rng):
    torch.manual_seed(0)
    n_items = 17
    ptr, items = _sessions(rng, 9, n_items)
    target = rng.integers(0, n_items, 9)
    model = SRGNN(n_items, hidden_size=6, step=step, nonhybrid=nonhybrid).double()
    dense = DenseSRGNN.from_sparse(model)
    seqs = naive_split(ptr, items)
    b = make_batch(ptr, items, target=target)

    ours = model.session_vectors(b)
    ref = dense.session_vectors(*dense_inputs(seqs, dtype=torch.float64))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # padding to the data set's longest session (the published data_masks) changes nothing
    longer = dense.session_vectors(*dense_inputs(seqs, len_max=12, dtype=torch.float64))
    torch.testing.assert_close(ours, longer, rtol=1e-12, atol=1e-12)

    model.loss(b).backward()
    dense_loss(dense, seqs, target + 1 - 1).backward()
    for name, p in model.named_parameters():
        q = dict(dense.named_parameters())[name]
        gq = q.grad[1:] if name == "embedding.weight" else q.grad
        torch.testing.assert_close(p.grad, gq, rtol=1e-10, atol=1e-12, msg=name)


# The published SessionGraph's parameters, by name and shape (d = hidden size,
# n = items + the padding row 0); linear_edge_f is declared there but never used.
def _published_srgnn_shapes(d, n):
    return {"embedding.weight": (n, d), "gnn.w_ih": (3 * d, 2 * d), "gnn.w_hh": (3 * d, d), "gnn.b_ih": (3 * d,),
            "gnn.b_hh": (3 * d,), "gnn.b_iah": (d,), "gnn.b_oah": (d,),
            "gnn.linear_edge_in.weight": (d, d), "gnn.linear_edge_in.bias": (d,),
            "gnn.linear_edge_out.weight": (d, d), "gnn.linear_edge_out.bias": (d,),
            "gnn.linear_edge_f.weight": (d, d), "gnn.linear_edge_f.bias": (d,),
            "linear_one.weight": (d, d), "linear_one.bias": (d,), "linear_two.weight": (d, d), "linear_two.bias": (d,),
            "linear_three.weight": (1, d), "linear_transform.weight": (d, 2 * d), "linear_transform.bias": (d,)}


def test_parameters_are_the_published_ones():
    d, n_items = 6, 11
    ours = {k: tuple(v.shape) for k, v in SRGNN(n_items, hidden_size=d).state_dict().items()}
    published = _published_srgnn_shapes(d, n_items + 1)
    published.pop("gnn.linear_edge_f.weight"), published.pop("gnn.linear_edge_f.bias")
    published["embedding.weight"] = (n_items, d)           # ours has no padding row
    assert ours == published


def test_batch_of_selected_rows_and_errors(rng):
    ptr, items = _sessions(rng, 6, 10)
    rows = np.array([4, 0, 4])
    b = make_batch(ptr, items, rows, target=np.arange(6))
    assert len(b) == 3 and b.target.tolist() == [4, 0, 4]
    seqs = naive_split(ptr, items)
    got = [b.graph.segment_ptr[s] for s in range(3)]
    assert got == sorted(got)
    node_item = b.node_item.numpy()
    for s, r in enumerate(rows):
        pos = b.alias.numpy()[b.pos_ptr[s]:b.pos_ptr[s + 1]]
        assert node_item[pos].tolist() == seqs[r]
    with pytest.raises(ValueError, match="empty"):
        make_batch(np.array([0, 0, 2]), np.array([1, 2]))


def test_session_examples_and_validation_split(rng):
    ptr, items = _sessions(rng, 40, 20)
    ex_ptr, ex_items, target = session_examples(ptr, items)
    lens = np.diff(ptr)
    assert len(target) == int((lens - 1).clip(0).sum())
    (tp, ti), (vp, vi) = split_validation(ptr, items, 0.25, seed=3)
    assert len(tp) - 1 + len(vp) - 1 == 40 and len(vp) - 1 == 10
    both = sorted(map(tuple, naive_split(tp, ti) + naive_split(vp, vi)))
    assert both == sorted(map(tuple, naive_split(ptr, items)))
    again = split_validation(ptr, items, 0.25, seed=3)
    np.testing.assert_array_equal(again[1][1], vi)
    with pytest.raises(ValueError, match="valid_fraction"):
        split_validation(ptr, items, 1.0)


def test_evaluate_against_dense_ranking(rng):
    torch.manual_seed(1)
    d = _tiny_data(rng)
    model = SRGNN(d.n_items, hidden_size=8)
    got = evaluate(model, d.test_ptr, d.test_items, d.test_target, k=5, batch_size=7)
    with torch.no_grad():
        S = model(make_batch(d.test_ptr, d.test_items)).numpy().astype(np.float64)
    rank = np.array([(S[r] > S[r, t]).sum() + ((S[r] == S[r, t]) & (np.arange(S.shape[1]) < t)).sum()
                     for r, t in enumerate(d.test_target)])
    assert got["P@5"] == pytest.approx(100 * np.mean(rank < 5))
    assert got["MRR@5"] == pytest.approx(100 * np.mean(np.where(rank < 5, 1.0 / (rank + 1), 0.0)))


def test_fit_is_deterministic_and_learns(rng, tmp_path):
    d = _tiny_data(rng)

    def run():
        torch.manual_seed(0)
        m = SRGNN(d.n_items, hidden_size=8)
        r = fit(m, d, epochs=3, batch_size=16, lr=0.01, lr_dc_step=2, valid_fraction=0.2, seed=5, progress=False,
                log=lambda s: None)
        return m, r

    m1, r1 = run()
    m2, r2 = run()
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert [c["loss"] for c in r1.curve] == [c["loss"] for c in r2.curve]
    assert r1.curve[-1]["loss"] < r1.curve[0]["loss"]
    assert 1 <= r1.best_epoch <= 3 and r1.test == r2.test
    assert r1.valid == r1.curve[r1.best_epoch - 1]["valid"]

    path = tmp_path / "m.pt"
    save(m1, path, r1)
    m3, info = load(path)
    assert info["best_epoch"] == r1.best_epoch and not m3.training
    b = make_batch(d.test_ptr, d.test_items)
    with torch.no_grad():
        m1.eval()
        torch.testing.assert_close(m3.session_vectors(b), m1.session_vectors(b), rtol=0, atol=0)
    assert evaluate(m3, d.test_ptr, d.test_items, d.test_target) == r1.test


def test_refit_on_every_training_session(rng):
    import numba
    d = _tiny_data(rng)
    seen = []

    class Probe(SRGNN):                      # the thread counts each training step runs at
        def loss(self, b):
            seen.append((numba.get_num_threads(), torch.get_num_threads()))
            return super().loss(b)

    torch.manual_seed(0)
    m = Probe(d.n_items, hidden_size=8)
    before = (numba.get_num_threads(), torch.get_num_threads())
    r = fit(m, d, epochs=2, batch_size=16, lr=0.01, valid_fraction=0.0, seed=5, test_each_epoch=False,
            progress=False, log=lambda s: None)
    n_examples = len(session_examples(d.train_ptr, d.train_items)[2])
    assert r.valid is None and r.best_epoch == 2 and r.config["train_examples"] == n_examples
    assert [c["valid"] for c in r.curve] == [None, None] and "test" not in r.curve[0]
    assert r.test == r.curve[-1]["test"] == evaluate(m, d.test_ptr, d.test_items, d.test_target)
    # steps on one Numba and one torch thread (step_threads), both counts restored after
    assert seen and set(seen) == {(1, 1)}
    assert (numba.get_num_threads(), torch.get_num_threads()) == before


def _write(path, lines):
    with gzip.open(path, "wt") as fh:
        fh.write("".join(line + "\n" for line in lines))


def test_load_diginetica_format(tmp_path):
    _write(tmp_path / "train_sessions.txt.gz", ["1 2", "3 4 5", "2"])
    _write(tmp_path / "test.txt.gz", ["3 4\t5", "1\t7"])
    d = stgkern.load_diginetica(tmp_path)
    assert d.n_items == 7
    assert d.train_ptr.tolist() == [0, 2, 5, 6] and d.train_items.tolist() == [0, 1, 2, 3, 4, 1]
    assert d.test_ptr.tolist() == [0, 2, 3] and d.test_items.tolist() == [2, 3, 0] and d.test_target.tolist() == [4, 6]
    assert "3 training sessions" in repr(d)


@pytest.mark.parametrize("train, test, words", [
    (["1 2", "3 x"], ["1\t2"], "line 2: item id 'x'"),
    (["1 2", ""], ["1\t2"], "line 2: empty session"),
    (["1 2"], ["1 2"], "line 1: expected 'items<TAB>target'"),
    (["1 2"], ["1\t0"], "target id 0; ids start at 1"),
    (["1 0"], ["1\t2"], "line 1: item id 0"),
])
def test_load_diginetica_errors(tmp_path, train, test, words):
    _write(tmp_path / "train_sessions.txt.gz", train)
    _write(tmp_path / "test.txt.gz", test)
    with pytest.raises(ValueError) as info:
        stgkern.load_diginetica(tmp_path)
    assert words in str(info.value)


def test_load_diginetica_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_sessions.txt"):
        stgkern.load_diginetica(tmp_path)


@pytest.mark.realdata
def test_diginetica_counts(shared_data):
    d = stgkern.load_diginetica(shared_data / "diginetica")
    assert (len(d.train_ptr) - 1, len(d.test_target), d.n_items) == (186670, 60858, 43097)
    assert len(d.train_items) == 906140
    assert len(session_examples(d.train_ptr, d.train_items)[2]) == 719470


# ---------------------------------------------------------------- GCE-GNN
def _gce(rng, n_items=15, n_sess=8, dtype=torch.float64, hidden=6, hops=1):
    from stgkern.models.gcegnn import GCEGNN, global_neighbors
    tp, ti = _sessions(rng, 40, n_items)
    ti = np.concatenate([np.arange(n_items), ti])        # every item has neighbours
    tp = np.concatenate([[0], tp + n_items])
    nb = global_neighbors(tp, ti, n_items, epsilon=3, top=4, sample=4, seed=1)
    torch.manual_seed(0)
    model = GCEGNN(n_items, nb, hidden_size=hidden, hops=hops, dropout_gcn=0.0, dropout_local=0.0,
                   dropout_global=0.0).to(dtype)
    ptr, items = _sessions(rng, n_sess, n_items)
    return model, nb, ptr, items


def test_gcegnn_relation_graph_matches_published_adjacency(rng):
    from stgkern.models.gcegnn import make_gce_batch
    from naive_gcegnn import naive_gcegnn_layout
    _, nb, _, _ = _gce(rng)
    for _ in range(20):
        ptr, items = _sessions(rng, 5, 6, max_len=9)
        b = make_gce_batch(ptr, items, nb)
        alias_d, adj_d, items_d, mask_d, _ = naive_gcegnn_layout([[i + 1 for i in s] for s in naive_split(ptr, items)])
        node_item = b.node_item.numpy()
        seg = b.graph.indptr
        for s in range(len(b)):
            nodes = np.flatnonzero(b.node_seq.numpy() == s)
            # the published node order: np.unique of the padded row (0 first when padded)
            dn = items_d[s].numpy()
            off = int(dn[0] == 0 and (mask_d[s] == 0).any())
            for a_i, v in enumerate(nodes):
                for k in range(seg[v], seg[v + 1]):
                    u = b.graph.indices[k]
                    code = adj_d[s][a_i + off][int(u - nodes[0]) + off].item()
                    assert code == b.kind[k].item() + 1
                assert (adj_d[s][a_i + off] != 0).sum().item() == seg[v + 1] - seg[v]
            assert node_item[nodes].tolist() == [i - 1 for i in dn[off:off + len(nodes)].tolist()]


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_gcegnn_matches_dense_original(hops, rng):
    from naive_gcegnn import DenseGCEGNN, dense_gce_inputs
    model, nb, ptr, items = _gce(rng, hops=hops)
    assert [n for n, _ in model.named_children() if n.startswith("agg_gcn")] == [f"agg_gcn_{r}" for r in range(hops)]
    target = rng.integers(0, model.n_items, len(ptr) - 1)
    dense = DenseGCEGNN.from_sparse(model)
    seqs = naive_split(ptr, items)
    b = model.make_batch(ptr, items, target=target)
    ours = model.session_vectors(b)
    ref = dense.session_vectors(*dense_gce_inputs(seqs))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    model.loss(b).backward()
    torch.nn.functional.cross_entropy(dense(*dense_gce_inputs(seqs)), torch.from_numpy(target)).backward()
    dp = dict(dense.named_parameters())
    for name, p in model.named_parameters():
        q = dp[name]
        if p.grad is None:
            assert q.grad is None or torch.count_nonzero(q.grad) == 0, name
            continue
        gq = q.grad[1:] if name == "embedding.weight" else q.grad
        torch.testing.assert_close(p.grad, gq, rtol=1e-9, atol=1e-11, msg=name)


def test_global_neighbors_resampling(rng):
    from stgkern.models.gcegnn import global_neighbors
    ptr, items = _sessions(rng, 30, 12)
    g = stgkern.item_graph(ptr, items, n_items=12, epsilon=3, top=5)
    nb = global_neighbors(ptr, items, 12, top=5, sample=5, seed=3)
    again = global_neighbors(ptr, items, 12, top=5, sample=5, seed=3)
    np.testing.assert_array_equal(nb.indices, again.indices)
    for a in range(12):
        kept = set(g.indices[g.indptr[a]:g.indptr[a + 1]].tolist())
        got = nb.indices[nb.indptr[a]:nb.indptr[a + 1]].tolist()
        assert len(got) == (5 if kept else 0) and set(got) <= kept
        if len(kept) == 5:
            assert set(got) == kept                       # without replacement: all of them
    exact = global_neighbors(ptr, items, 12, top=5, resample=False)
    np.testing.assert_array_equal(exact.indices, g.indices)


def test_gcegnn_fit_and_save(rng, tmp_path):
    from stgkern.models.gcegnn import GCEGNN, global_neighbors
    d = _tiny_data(rng)
    nb = global_neighbors(d.train_ptr, d.train_items, d.n_items)
    torch.manual_seed(0)
    m = GCEGNN(d.n_items, nb, hidden_size=8)                          # the published two hops
    assert m.hops == 2 and m.config()["hops"] == 2
    r = fit(m, d, epochs=2, batch_size=16, lr=0.01, seed=2, progress=False, log=lambda s: None)
    assert r.curve[-1]["loss"] < r.curve[0]["loss"] + 1.0 and r.best_epoch in (1, 2)
    save(m, tmp_path / "g.pt", r)
    m2, _ = load(tmp_path / "g.pt")
    b = m.make_batch(d.test_ptr, d.test_items)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m2.session_vectors(b), m.session_vectors(b), rtol=0, atol=0)


def _untimed(curve):
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in curve]


def _same_weights(a, b):
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("kind", ["srgnn_validated", "gcegnn_refit"])
def test_resume_from_checkpoint_is_bit_identical(kind, rng, tmp_path):
    """A run stopped after epoch 1 and resumed equals the uninterrupted run: weights, Adam's moments,
    the schedule, the batch order and (GCE-GNN) the dropout draws all come back from the checkpoint."""
    from stgkern.models.gcegnn import GCEGNN, global_neighbors
    from stgkern.models.train import CheckpointError
    d = _tiny_data(rng)
    nb = global_neighbors(d.train_ptr, d.train_items, d.n_items)
    kw = dict(batch_size=16, lr=0.01, lr_dc_step=2, seed=4, progress=False, log=lambda s: None)
    kw.update(valid_fraction=0.2, patience=1) if kind == "srgnn_validated" else kw.update(valid_fraction=0.0)

    def model():
        torch.manual_seed(0)
        return SRGNN(d.n_items, hidden_size=8) if kind == "srgnn_validated" else GCEGNN(d.n_items, nb, hidden_size=8)

    whole = model()
    r_whole = fit(whole, d, epochs=3, **kw)
    ck = tmp_path / "run.ckpt"
    first = model()
    fit(first, d, epochs=1, checkpoint=ck, **kw)
    torch.manual_seed(123)                                  # the resumed process's own generator state is replaced
    rest = model()
    r_rest = fit(rest, d, epochs=3, checkpoint=ck, resume=True, **kw)
    _same_weights(rest, whole)
    assert _untimed(r_rest.curve) == _untimed(r_whole.curve) and r_rest.best_epoch == r_whole.best_epoch
    assert r_rest.test == r_whole.test and r_rest.valid == r_whole.valid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]            # no temporary left behind
    # resuming a finished run trains nothing more and gives the same result
    again = model()
    assert _untimed(fit(again, d, epochs=3, checkpoint=ck, resume=True, **kw).curve) == _untimed(r_whole.curve)
    _same_weights(again, whole)
    # settings other than epochs/patience must match; fewer epochs than trained is refused
    with pytest.raises(CheckpointError, match="lr: 0.01 there, 0.02 here"):
        fit(model(), d, epochs=3, checkpoint=ck, resume=True, **{**kw, "lr": 0.02})
    done = len(r_whole.curve)                               # the validated run may have stopped early
    with pytest.raises(CheckpointError, match=f"already trained {done} epochs"):
        fit(model(), d, epochs=done - 1, checkpoint=ck, resume=True, **kw)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(model(), d, epochs=3, checkpoint=tmp_path / "none", resume=True, **kw)
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        fit(model(), d, epochs=3, checkpoint=tmp_path / "junk", resume=True, **kw)
