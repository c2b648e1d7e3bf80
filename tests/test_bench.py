"""stgkern bench: runner JSON, correctness gate, skipped peers, compare, plot fallback, workloads."""
import copy
import io
import json
import sys

import numpy as np
import pytest

import stgkern
from stgkern import bench
from stgkern.bench import compare as C
from stgkern.bench import ops as O
from stgkern.bench import peers as P
from stgkern.bench import memcopy, report, runner, workloads

ENTRY_FIELDS = {"op", "variant", "workload", "impl", "status", "reason", "flops", "floor_bytes",
                "intensity_flop_per_byte", "times_s", "median_s", "spread", "GFLOP_s", "GB_s", "pct_of_copy"}


def _installed(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_record():
    with_fast_timing = {"REPEAT": 3, "MIN_REPEAT": 2, "TIME_BUDGET_S": 0.2}
    old = {k: getattr(runner, k) for k in with_fast_timing}
    for k, v in with_fast_timing.items():
        setattr(runner, k, v)
    try:
        rec = runner.run(["spmm", "edge_softmax", "segment_reduce", "topk", "item_graph", "time_intervals",
                          "session_graph"], "tiny", progress=False)
    finally:
        for k, v in old.items():
            setattr(runner, k, v)
    return rec


def test_record_has_every_field_and_is_json(tiny_record):
    rec = json.loads(json.dumps(tiny_record))
    for k in ("schema", "meta", "size", "device", "timing", "flop_convention", "byte_floors", "copy",
              "workloads", "not_available", "results", "wall_s"):
        assert k in rec, k
    meta = rec["meta"]
    for k in ("stgkern", "git_commit", "libraries", "cpu_model", "numba_threads", "cpu_count", "date_utc"):
        assert k in meta, k
    assert meta["stgkern"] == stgkern.__version__
    assert meta["libraries"]["numpy"] == np.__version__
    assert rec["copy"]["GB_s"] > 0 and len(rec["copy"]["times_s"]) >= 2
    assert set(rec["byte_floors"]) >= set(O.OPS)
    assert {"window", "catalog", "sequences", "sessions", "powerlaw"} <= set(rec["workloads"])
    ops_seen = {r["op"] for r in rec["results"]}
    assert {"spmm", "edge_softmax", "segment_reduce", "topk", "item_graph", "time_intervals",
            "session_graph"} <= ops_seen
    for r in rec["results"]:
        assert ENTRY_FIELDS <= set(r), set(r) ^ ENTRY_FIELDS
        assert r["status"] in ("ok", "skipped", "error", "mismatch", "not timed", "unchecked")
    ours = [r for r in rec["results"] if r["impl"] == "stgkern"]
    # without torch some cases (max/min spmm, edge_softmax) have no peer to check them: "unchecked", said so
    ok = ("ok",) if _installed("torch") else ("ok", "unchecked")
    assert all(r["status"] in ok for r in ours), [(r["op"], r["reason"]) for r in ours if r["status"] not in ok]
    assert all(r["reason"] == "no peer could run to check the output" for r in ours if r["status"] == "unchecked")
    for r in ours:
        assert len(r["times_s"]) >= 2 and r["median_s"] == pytest.approx(np.median(r["times_s"]))
        assert r["GB_s"] == pytest.approx(r["floor_bytes"] / r["median_s"] / 1e9)
        assert r["pct_of_copy"] == pytest.approx(100 * r["GB_s"] / rec["copy"]["GB_s"])
        assert r["checked_against"] or r["status"] == "unchecked", r
        for peer, x in r["speedup_vs"].items():
            pr = next(p for p in rec["results"] if p["impl"] == peer and p["op"] == r["op"]
                      and p["variant"] == r["variant"] and p["workload"] == r["workload"])
            if pr["status"] == "ok":
                assert x == pytest.approx(pr["median_s"] / r["median_s"])
            else:
                assert x is None
    spmm = [r for r in ours if r["op"] == "spmm"]
    assert {r["variant"] for r in spmm} == {"sum weighted", "mean", "max"}
    for r in spmm:
        assert r["GFLOP_s"] == pytest.approx(r["flops"] / r["median_s"] / 1e9)


def test_not_available_op_is_reported(tiny_record):
    has = O.available("message_passing") is not None
    assert ("message_passing" in tiny_record["not_available"]) != has


def test_spmm_floor_matches_the_stated_formula(tiny_record):
    r = next(r for r in tiny_record["results"] if r["op"] == "spmm" and r["variant"] == "sum weighted"
             and r["workload"] == "window")
    wl = workloads.get("window", "tiny")
    n, nnz, F = wl.graph.n_nodes, wl.graph.nnz, wl.arrays["X"].shape[1]
    assert r["floor_bytes"] == 8 * nnz + 8 * n * F
    assert r["flops"] == 2 * nnz * F


def test_table_plain_lists_every_result(tiny_record):
    out = io.StringIO()
    report.print_table(tiny_record, stream=out, use_rich=False)
    text = out.getvalue()
    assert "copy bandwidth" in text and "median ms" in text
    assert len([ln for ln in text.splitlines() if ln.startswith(("spmm ", "topk "))]) == \
        len([r for r in tiny_record["results"] if r["op"] in ("spmm", "topk")])
    assert max(map(len, text.splitlines())) <= report.WIDTH
    # a status too long for 120 columns is shortened there, kept whole with --wide (width=None)
    rec = copy.deepcopy(tiny_record)
    rec["results"][0]["reason"] = "x" * 200
    narrow, wide = report.plain(rec), report.plain(rec, width=None)
    assert max(map(len, narrow.splitlines())) <= report.WIDTH and "x" * 200 not in narrow
    assert "x" * 200 in wide


def test_wrong_op_reports_mismatch_never_a_speed(monkeypatch):
    from stgkern import readout
    real = readout.segment_reduce

    def garbage(X, ptr, reduce="sum", return_arg=False):
        out = real(X, ptr, reduce)
        out[len(out) // 2] += 1.0                       # one wrong row
        return out
    monkeypatch.setattr(stgkern, "segment_reduce", garbage, raising=False)
    monkeypatch.setattr(readout, "segment_reduce", garbage)
    monkeypatch.setattr(runner, "TIME_BUDGET_S", 0.1)
    rec = runner.run(["segment_reduce"], "tiny", progress=False)
    ours = [r for r in rec["results"] if r["impl"] == "stgkern"]
    assert ours and all(r["status"] == "mismatch" for r in ours)
    assert all("differs" in r["reason"] for r in ours)
    for r in rec["results"]:
        assert r["times_s"] == [] and r["median_s"] is None and r["GB_s"] is None
    out = io.StringIO()
    report.print_table(rec, stream=out, use_rich=False)
    assert "mismatch" in out.getvalue()


def test_missing_peer_is_reported_as_skipped(monkeypatch):
    def missing(*a, **k):
        raise P.PeerUnavailable("torch not installed (test)")
    monkeypatch.setattr(P, "make_torch_gather_edge_softmax", missing)
    monkeypatch.setattr(runner, "TIME_BUDGET_S", 0.1)
    rec = runner.run(["edge_softmax"], "tiny", progress=False)
    rows = [r for r in rec["results"] if r["impl"] == "torch_gather"]
    assert rows and all(r["status"] == "skipped" and "not installed" in r["reason"] for r in rows)
    ours = [r for r in rec["results"] if r["impl"] == "stgkern"]
    assert all(r["speedup_vs"]["torch_gather"] is None for r in ours)
    # the other peer (pyg) still checked the output and was timed when installed
    if _installed("torch_geometric"):
        assert all(r["status"] == "ok" and r["checked_against"] == ["pyg"] for r in ours)
    else:
        assert all(r["status"] == "unchecked" for r in ours)


def test_graphblas_is_skipped_when_absent(tiny_record):
    pytest.importorskip("scipy")
    try:
        import graphblas  # noqa: F401
        pytest.skip("python-graphblas is installed here")
    except ImportError:
        pass
    case = O.cases("common_neighbor_fusion", "tiny")[0]
    with pytest.raises(P.PeerUnavailable, match="graphblas not installed"):
        case.peers["graphblas"]()


def test_peers_filter_keeps_the_reference_check(monkeypatch):
    monkeypatch.setattr(runner, "TIME_BUDGET_S", 0.1)
    rec = runner.run(["topk"], "tiny", peers=["torch"], progress=False)
    numpy_row = next(r for r in rec["results"] if r["impl"] == "numpy")
    assert numpy_row["status"] == "skipped" and "output checked" in numpy_row["reason"]
    ours = next(r for r in rec["results"] if r["impl"] == "stgkern")
    assert "numpy" in ours["checked_against"]


def test_gpu_cases_take_the_cpu_kernels_as_reference(monkeypatch):
    # the GPU path cannot run here; check the wiring with CPU cases on both sides
    gpu_side, cpu_side = O.cases("edge_softmax", "tiny"), O.cases("edge_softmax", "tiny")
    cs = O.with_cpu_reference(gpu_side, cpu_side)
    assert all(c.reference == "stgkern_cpu" and next(iter(c.peers)) == "stgkern_cpu" for c in cs)
    # a CPU-only peer missing on the GPU side is listed, as skipped
    gpu_side, cpu_side = O.cases("edge_softmax", "tiny"), O.cases("edge_softmax", "tiny")
    for c in gpu_side:
        del c.peers["pyg"]
    c = O.with_cpu_reference(gpu_side, cpu_side)[0]
    with pytest.raises(P.PeerUnavailable, match="CPU only"):
        c.peers["pyg"]()
    rows = runner.measure_case(cs[0], runner.Timer("cpu", 2, 0.01), 10.0, None)
    ours = rows[0]
    assert ours["status"] == "ok" and ours["checked_against"][0] == "stgkern_cpu"
    assert ours["speedup_vs"]["stgkern_cpu"] > 0
    with pytest.raises(RuntimeError, match="differ"):
        O.with_cpu_reference(O.cases("edge_softmax", "tiny"), O.cases("sddmm", "tiny"))


@pytest.mark.cuda
def test_gpu_run_tiny():
    """On a machine with CuPy and a device: every GPU op is checked against the CPU kernels."""
    from conftest import _cupy_device
    if _cupy_device() is None:
        pytest.skip("CuPy with a CUDA device is not available")
    rec = runner.run(None, "tiny", backend="gpu", progress=False, repeat=3, budget=0.2)
    assert rec["device"] == "gpu" and rec["meta"]["gpu_model"] and rec["copy"]["GB_s"] > 0
    ours = [r for r in rec["results"] if r["impl"] == "stgkern"]
    assert ours and not [r for r in ours if r["status"] == "mismatch"], \
        [(r["op"], r["reason"]) for r in ours if r["status"] == "mismatch"]
    for r in ours:
        if r["status"] == "ok":
            assert r["checked_against"][0] == "stgkern_cpu"
    spmm = [r for r in rec["results"] if r["op"] == "spmm" and r["impl"] == "cupy"]
    assert spmm and all(r["status"] in ("ok", "skipped") for r in spmm)


def test_unknown_op_and_peer_raise():
    with pytest.raises(ValueError, match="unknown op"):
        runner.run(["spmmm"], "tiny", progress=False)
    with pytest.raises(ValueError, match="unknown peer"):
        runner.run(["topk"], "tiny", peers=["cusparse"], progress=False)
    with pytest.raises(ValueError, match="size must be one of"):
        runner.run(["topk"], "huge", progress=False)


def test_gpu_without_cupy_fails_clearly(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(RuntimeError, match="CuPy"):
        runner.run(["spmm"], "tiny", backend="gpu", progress=False)
    assert bench.main(["--device", "gpu", "--size", "tiny", "--no-progress"]) == 2
    assert "CuPy" in capsys.readouterr().err


def test_message_passing_and_graph_conv_cases(monkeypatch):
    """These cases run on the real ops, or on stand-ins from the naive references while the ops are unwritten."""
    from naive import naive_gather_reduce

    from stgkern import conv

    def message_passing(g, X, E, op="mul", reduce="sum", return_arg=False):
        out = naive_gather_reduce(g.indptr, g.indices, X.astype(np.float64), E.astype(np.float64), op, reduce)
        return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=X.dtype)

    def graph_conv(g, X, W_self, W_neigh=None, bias=None, edge_weight=None, reduce="sum", activation=None):
        return X @ W_self + conv.spmm(g, X, edge_weight, reduce) @ W_neigh + bias
    if O.available("message_passing") is None:
        monkeypatch.setattr(conv, "message_passing", message_passing, raising=False)
    if O.available("graph_conv") is None:
        monkeypatch.setattr(conv, "graph_conv", graph_conv, raising=False)
    monkeypatch.setattr(workloads, "SIZES", {**workloads.SIZES, "tiny": 400})
    workloads.clear_cache()
    try:
        monkeypatch.setattr(runner, "TIME_BUDGET_S", 0.05)
        rec = runner.run(["message_passing", "graph_conv"], "tiny", progress=False)
    finally:
        workloads.clear_cache()
    assert not rec["not_available"]
    ours = [r for r in rec["results"] if r["impl"] == "stgkern"]
    if not _installed("torch"):               # torch_gather and pyg are the checking peers of these ops
        assert len(ours) == 4 and all(r["status"] == "unchecked" for r in ours), [r["reason"] for r in ours]
        return
    assert len(ours) == 4 and all(r["status"] == "ok" for r in ours), [r["reason"] for r in ours]
    assert {tuple(r["checked_against"]) for r in ours if r["op"] == "message_passing"} == {("torch_gather",)}
    if O.available("graph_conv") is not None:
        try:
            import torch_geometric  # noqa: F401
            assert all(r["checked_against"] == ["pyg"] for r in ours if r["op"] == "graph_conv")
        except ImportError:
            pass


# ------------------------------------------------------------------ compare
def _record(times_by_key):
    res = []
    for (op, impl), ts in times_by_key.items():
        ts = list(ts)
        med = float(np.median(ts))
        q25, q75 = np.percentile(ts, [25, 75])
        res.append({"op": op, "variant": "v", "workload": "w", "impl": impl, "status": "ok", "times_s": ts,
                    "median_s": med, "spread": float((q75 - q25) / med)})
    return {"results": res}


def test_compare_flags_regression_beyond_spread_only():
    a = _record({("spmm", "stgkern"): [1.00, 1.01, 0.99, 1.00, 1.02],
                 ("topk", "stgkern"): [2.0, 2.2, 1.8, 2.1, 1.9],
                 ("sddmm", "stgkern"): [1.0, 1.0, 1.0, 1.0, 1.0],
                 ("spmm", "scipy"): [3.0, 3.0, 3.0]})
    b = _record({("spmm", "stgkern"): [1.30, 1.31, 1.29, 1.30, 1.32],      # +30%, spread ~1%: regression
                 ("topk", "stgkern"): [2.2, 2.4, 2.0, 2.3, 2.1],           # +10%, spread ~10% each: within
                 ("sddmm", "stgkern"): [0.5, 0.5, 0.5, 0.5, 0.5],          # 2x faster: improvement
                 ("spmm", "scipy"): [9.0, 9.0, 9.0]})
    rows = {r["op"]: r for r in C.compare(a, b)}
    assert set(rows) == {"spmm", "topk", "sddmm"}                        # peers excluded by default
    assert rows["spmm"]["flag"] == "regression" and rows["spmm"]["ratio"] == pytest.approx(1.30)
    assert rows["topk"]["flag"] == "" and rows["topk"]["tolerance"] > 0.1
    assert rows["sddmm"]["flag"] == "improvement"
    all_rows = C.compare(a, b, impls=None)
    assert any(r["impl"] == "scipy" and r["flag"] == "regression" for r in all_rows)
    b["results"].append({"op": "topk", "variant": "v", "workload": "w2", "impl": "stgkern", "median_s": 1.0,
                         "times_s": [1.0]})
    assert C.unmatched(a, b) == ([], [("topk", "v", "w2", "stgkern")])
    text = C.format_rows(C.compare(a, b))
    assert "REGRESSION" in text and "1 regression(s)" in text


def test_compare_cli(tmp_path, capsys):
    a = _record({("spmm", "stgkern"): [1.0, 1.0, 1.01]})
    b = _record({("spmm", "stgkern"): [1.5, 1.5, 1.51]})
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert bench.main(["compare", str(pa), str(pb)]) == 0
    assert "REGRESSION" in capsys.readouterr().out
    assert bench.main(["compare", str(pa), str(pb), "--fail-on-regression"]) == 1
    assert bench.main(["compare", str(pa), str(pa), "--fail-on-regression"]) == 0
    assert bench.main(["compare", str(pa)]) == 2
    pb.write_text("[]")
    with pytest.raises(ValueError, match="not a stgkern bench JSON"):
        bench.main(["compare", str(pa), str(pb)])


def test_compare_on_real_records(tiny_record):
    b = copy.deepcopy(tiny_record)
    for r in b["results"]:
        if r["impl"] == "stgkern" and r["median_s"]:
            f = 2 + 2 * r["spread"]                 # beyond the spread of both (the same relative spread)
            r["times_s"] = [f * t for t in r["times_s"]]
            r["median_s"] *= f
    rows = C.compare(tiny_record, b)
    assert rows and all(r["flag"] == "regression" for r in rows)
    assert not any(r["flag"] for r in C.compare(tiny_record, tiny_record))
    b["meta"] = {**b["meta"], "numba_threads": 99, "loadavg": [100.0, 1, 1], "cpu_count": 2}
    w = C.warnings(tiny_record, b)
    assert any("numba_threads differs" in x for x in w) and any("B ran with load average 100.0" in x for x in w)


def test_add_arguments_in_a_subcommand():
    """The way stgkern/cli.py will wire it: ``stgkern bench ...`` as a subparser."""
    import argparse
    p = argparse.ArgumentParser(prog="stgkern")
    sub = p.add_subparsers(dest="cmd", required=True)
    bench.add_arguments(sub.add_parser("bench"))
    a = p.parse_args(["bench", "--size", "tiny", "--ops", "spmm", "topk", "--peers", "scipy", "--json", "x.json"])
    assert (a.cmd, a.action, a.size, a.ops, a.peers, a.json, a.device) == \
        ("bench", "run", "tiny", ["spmm", "topk"], ["scipy"], "x.json", "cpu")
    a = p.parse_args(["bench", "compare", "A.json", "B.json"])
    assert (a.action, a.files) == ("compare", ["A.json", "B.json"])
    with pytest.raises(SystemExit):
        p.parse_args(["bench", "--ops", "nope"])


# --------------------------------------------------------------------- plot
def test_plot_without_matplotlib_errors_before_running(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    called = []
    monkeypatch.setattr(runner, "run", lambda *a, **k: called.append(1))
    assert bench.main(["--size", "tiny", "--plot", str(tmp_path / "r.png"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "stgkern[bench]" in err
    assert not called and not (tmp_path / "r.png").exists()


def test_plot_writes_a_file_when_matplotlib_is_present(tiny_record, tmp_path):
    pytest.importorskip("matplotlib")
    from stgkern.bench import plot
    path = plot.roofline(tiny_record, tmp_path / "roof.png")
    assert (tmp_path / "roof.png").stat().st_size > 1000 and path.endswith("roof.png")


def _fake_matplotlib(monkeypatch):
    """A stand-in matplotlib recording the calls (the real one is optional, in the bench extra)."""
    from unittest import mock
    mpl, plt = mock.MagicMock(name="matplotlib"), mock.MagicMock(name="pyplot")
    fig, ax = mock.MagicMock(name="fig"), mock.MagicMock(name="ax")
    plt.subplots.return_value = (fig, ax)
    mpl.pyplot = plt
    monkeypatch.setitem(sys.modules, "matplotlib", mpl)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", plt)
    return fig, ax


def test_cli_json_and_plot_with_stand_in_matplotlib(monkeypatch, tiny_record, tmp_path, capsys):
    fig, ax = _fake_matplotlib(monkeypatch)
    monkeypatch.setattr(runner, "run", lambda *a, **k: tiny_record)
    jpath, ppath = tmp_path / "r.json", tmp_path / "r.png"
    assert bench.main(["--size", "tiny", "--json", str(jpath), "--plot", str(ppath), "--plain"]) == 0
    assert json.loads(jpath.read_text())["results"] == json.loads(json.dumps(tiny_record["results"]))
    fig.savefig.assert_called_once()
    assert fig.savefig.call_args[0][0] == str(ppath)
    from stgkern.bench import plot
    n_points = len(plot.points(tiny_record))
    # one filled or open marker per point, plus one legend proxy per peer
    n_peers = len({p["impl"] for p in plot.points(tiny_record)} - {"stgkern"})
    assert ax.scatter.call_count == n_points + n_peers
    x, y = ax.plot.call_args[0][:2]
    assert np.allclose(y, tiny_record["copy"]["GB_s"] * x)               # the bandwidth roof
    assert "median ms" in capsys.readouterr().out


def test_roofline_points(tiny_record):
    from stgkern.bench import plot
    pts = plot.points(tiny_record)
    assert pts and all(p["x"] > 0 and p["y"] > 0 for p in pts)
    assert {p["impl"] for p in pts} >= {"stgkern"}
    assert not any(p["label"].startswith(("item_graph", "edge_softmax")) for p in pts)


def test_rich_requested_but_absent(monkeypatch, tiny_record):
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    with pytest.raises(RuntimeError, match="stgkern\\[bench\\]"):
        report.print_table(tiny_record, stream=io.StringIO(), use_rich=True)
    out = io.StringIO()
    report.print_table(tiny_record, stream=out)          # auto: falls back to plain text
    assert "median ms" in out.getvalue()


# ---------------------------------------------------------------- workloads
def test_workloads_api():
    wl = workloads.get("window", "tiny")
    assert wl is workloads.get("window", "tiny")                          # cached
    g = wl.graph
    assert g.n_nodes == wl.meta["nodes"] and g.nnz == wl.meta["nnz"] and wl.arrays["X"].shape == (g.n_nodes, 64)
    assert np.all(np.diff(g.indptr) <= workloads.WINDOW)
    pl = workloads.get("powerlaw", "tiny")
    assert pl.graph.nnz == 8 * pl.graph.n_nodes and pl.graph.rows_sorted
    s = workloads.get("sessions", "tiny")
    assert len(s.batches) == s.meta["batches"] and all(p[-1] == it.size for p, it in s.batches)
    q = workloads.get("sequences", "tiny")
    assert q.arrays["ptr"][-1] == q.arrays["items"].size == q.arrays["times"].size
    c = workloads.get("catalog", "tiny")
    assert c.arrays["Q"].shape[1] == c.arrays["items"].shape[1] == 64
    assert all(isinstance(w.description, str) and w.description for w in (wl, pl, s, q, c))
    with pytest.raises(ValueError, match="unknown workload"):
        workloads.get("nope", "tiny")
    with pytest.raises(ValueError, match="size must be one of"):
        workloads.get("window", "huge")
    with pytest.raises(ValueError, match="backend"):
        workloads.get("window", "tiny", "tpu")


def test_sizes_are_capped_by_free_memory(monkeypatch):
    monkeypatch.setattr(workloads, "_free_bytes", lambda backend: 2 * 2**30)
    n, note = workloads.n_events("large")
    assert n < workloads.SIZES["large"] and "capped" in note
    assert workloads.n_events("small") == (workloads.SIZES["small"], "")


# ---------------------------------------------------- peers on awkward input
def test_numpy_peers_on_edge_cases():
    # item_graph / time_intervals / session_graph peers agree with stgkern on empty and one-item sequences
    ptr = np.array([0, 0, 1, 4, 4, 9], np.int64)
    items = np.array([3, 1, 1, 2, 5, 5, 5, 1, 0], np.int64)
    times = np.array([7, 1, 1, 4, 2, 2, 8, 9, 30], np.int64)
    g = stgkern.item_graph(ptr, items, 6, epsilon=2, top=2)
    ip, ix, cnt, nn = P.numpy_item_graph(ptr, items, 6, epsilon=2, top=2)
    assert ip.tolist() == g.indptr.tolist() and ix.tolist() == g.indices.tolist()
    assert cnt.tolist() == g.edata["count"].tolist() and nn.tolist() == g.n_neighbors.tolist()
    m, seq = stgkern.time_intervals(ptr, times, maxlen=3, span=4)
    pm, pseq = P.numpy_time_intervals(ptr, times, maxlen=3, span=4)
    assert np.array_equal(m, pm) and np.array_equal(seq, pseq)
    ok = np.array([0, 1, 4, 9], np.int64)
    sg = stgkern.session_graph(ok, items)
    ref = P.numpy_session_graph(ok, items)
    got = (sg.graph.indptr, sg.graph.indices, sg.graph.edata["w_in"], sg.graph.edata["w_out"],
           sg.graph.segment_ptr, sg.node_item, sg.alias)
    for a, b in zip(got, ref):
        assert np.array_equal(a, b)


def test_row_chunks():
    ip = np.array([0, 3, 3, 10, 11, 20])
    for size in (1, 2, 4, 7, 100):
        ch = P._row_chunks(ip, size)
        assert ch[0][0] == 0 and ch[-1][1] == 20
        assert all(b == c for (_, b), (c, _) in zip(ch, ch[1:]))                  # contiguous
        assert all(a in ip for a, _ in ch)                                         # at row starts
        assert all(b - a < size + np.diff(ip).max() for a, b in ch)
    assert P._row_chunks(np.array([0])) == [] and P._row_chunks(np.array([0, 0, 0])) == []


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_chunked_torch_gather_peers_match_stgkern(monkeypatch, reduce):
    pytest.importorskip("torch")
    monkeypatch.setattr(P, "CHUNK_EDGES", 37)                  # many chunks, rows split across none
    wl = workloads.get("powerlaw", "tiny")
    g, X = wl.graph, wl.arrays["X"]
    w = np.random.default_rng(0).uniform(0.5, 1.5, g.nnz).astype(np.float32) if reduce == "sum" else None
    ok, detail = O.close()(stgkern.spmm(g, X, w, reduce), P.make_torch_gather_spmm(g, X, w, reduce)())
    assert ok, detail
    if reduce == "sum":
        E = np.random.default_rng(1).standard_normal((g.nnz, X.shape[1])).astype(np.float32)
        got = P.make_torch_gather_message_passing(g, X, E)().numpy()
        want = np.zeros(X.shape)
        np.add.at(want, g.dst(), X[g.indices].astype(np.float64) * E)
        assert O.close()(got, want)[0]


def test_check_function():
    check = O.close(1e-4)
    a = np.array([1.0, 2.0, 3.0], np.float32)
    assert check(a, a.astype(np.float64))[0]
    assert check(a, a * (1 + 1e-6))[0]
    assert not check(a, a + np.float32(0.01))[0]
    assert not check(a, a[:2])[0]
    assert not check(np.array([1, 2]), np.array([1, 3]))[0]
    assert not check(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))[0]
    assert not check(np.array([np.inf, 1.0]), np.array([-np.inf, 1.0]))[0]
    assert check(np.array([-np.inf, np.nan, 1.0]), np.array([-np.inf, np.nan, 1.0]))[0]
    assert check((a, np.array([1, 2])), (a, np.array([1, 2])))[0]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("n", [0, 1, 7, memcopy.CHUNK_BYTES // 4 + 3, 3 * memcopy.CHUNK_BYTES // 8 + 1])
def test_threaded_copy_copies_every_byte(dtype, n):
    rng = np.random.default_rng(n)
    src = (rng.integers(0, 250, size=n)).astype(dtype)
    dst = np.full_like(src, 255)
    memcopy.threaded_copy(dst, src)
    assert np.array_equal(dst, src)
    src2 = rng.standard_normal((n, 3)) if n else np.zeros((0, 3))   # 2-D, same bytes either way
    dst2 = np.empty_like(src2)
    memcopy.threaded_copy(dst2, src2)
    assert np.array_equal(dst2, src2)


def test_threaded_copy_rejects_mismatched_or_strided():
    a = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="one dtype and size"):
        memcopy.threaded_copy(np.zeros(9, np.float32), a)
    with pytest.raises(ValueError, match="one dtype and size"):
        memcopy.threaded_copy(np.zeros(10, np.float64), a)
    with pytest.raises(ValueError, match="C-contiguous"):
        memcopy.threaded_copy(np.zeros(5, np.float32), a[::2])


def test_copy_yardstick_is_the_faster_copy(tiny_record):
    c = tiny_record["copy"]
    by = c["median_GB_s_by_method"]
    assert set(by) == {"numpy.copyto", "threaded copy"}
    assert c["GB_s"] == pytest.approx(max(by.values()))
    t = memcopy.best_copy_time(*memcopy.copy_pair(1 << 20), reps=2)
    assert t["best"] == min(t["copy_numpy"], t["copy_threaded"]) > 0
