"""The README's main command: `stgkern demo` (the whole method) and `stgkern info`."""
import json
import subprocess
import sys

import numpy as np
import pytest

from stgkern import cli

SMALL = ["demo", "--users", "60", "--k-core", "2", "--epochs", "2"]
METHODS_NUMPY = {"oracle", "most-popular", "Markov", "SR-GNN", "STG closed form"}
ITEM_KEYS = {"HR@10", "HR@20", "NDCG@10", "NDCG@20", "MRR@20"}
BEHAVIOR_KEYS = {"accuracy", "precision", "recall", "F1"}


@pytest.fixture(autouse=True)
def _warm_kernels(monkeypatch):
    # whether this test session has compiled the replay's kernel yet depends on the order the tests
    # ran in: every demo here runs as with a warm cache, except where a test asks for a fresh one
    monkeypatch.setattr(cli, "_kernels_cold", lambda: False)


def test_demo_numpy_backend_json(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert cli.main(SMALL + ["--backend", "numpy", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["config"]["backend"] == "numpy" and s["config"]["users"] == 60
    assert set(s["metrics"]) == METHODS_NUMPY
    for name, m in s["metrics"].items():
        assert ITEM_KEYS <= set(m)
        assert (BEHAVIOR_KEYS <= set(m)) == (name != "SR-GNN")
        if name != "SR-GNN":         # per-class precision and recall for every behaviour method
            assert set(s["behavior_per_class"][name]) == {"pv", "cart", "fav", "buy"}
        assert all(0.0 <= v <= 1.0 for v in m.values())
    assert set(s["seconds_per_stage"]) == {"load", "preprocess + split", "window graph + features", "most-popular",
                                           "Markov", "oracle", "SR-GNN", "STG closed form", "metrics",
                                           "online replay"}
    # the online loop scores each test event by the list made just before it: the offline figure
    on = s["online"]
    assert on["scored"] == s["evaluation"]["test_users"]
    # (one user's list is scored alone online, in blocks offline: a near-tie at rank 20 may round apart)
    assert on["hit_rate"] == pytest.approx(s["metrics"]["STG closed form"]["HR@20"], abs=1.0 / on["scored"] + 1e-12)
    assert on["sample_recommendations"] and all(r["because"] for r in on["sample_recommendations"])
    assert s["seconds_total"] == pytest.approx(sum(s["seconds_per_stage"].values()))
    assert s["versions"]["numpy"] and "stgkern" in s["versions"]
    g = s["graph"]
    assert g["edges_temporal_only"] + g["edges_category_only"] + g["edges_both"] == g["edges"]
    assert s["evaluation"]["test_users"] == s["users"] and "excluded" in s["evaluation"]["exclusion"]
    printed = capsys.readouterr().out
    assert "seen items excluded for every method" in printed and "time per stage" in printed
    for name in METHODS_NUMPY:
        assert name in printed


def test_demo_fresh_install_without_torch_warms_up_in_a_worker(tmp_path, monkeypatch, capsys):
    # a fresh install of the closed forms: a worker runs the warm-up, then takes jobs beside this
    # process; every figure as in one process with a warm cache
    out = {}
    for cold in (False, True):
        monkeypatch.setattr(cli, "_kernels_cold", lambda cold=cold: cold)
        path = tmp_path / f"c{cold}.json"
        assert cli.main(SMALL + ["--backend", "numpy", "--jobs", "2", "--json", str(path)]) == 0
        out[cold] = json.loads(path.read_text())
    assert out[False]["workers"] == 1 and out[False]["warm_up_seconds"] is None
    assert out[True]["workers"] == 2 and out[True]["warm_up_seconds"] > 0
    for key in ("metrics", "graph", "behavior_per_class"):
        assert out[True][key] == out[False][key], key
    assert out[True]["online"]["hits"] == out[False]["online"]["hits"]
    assert "a worker compiled the closed form's" in capsys.readouterr().out


def test_demo_without_torch_falls_back_to_closed_form(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)       # import torch -> ImportError
    out = tmp_path / "d.json"
    assert cli.main(SMALL + ["--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["config"]["backend"] == "numpy" and "STG closed form" in s["metrics"]
    assert s["versions"]["torch"] is None
    with pytest.raises(SystemExit) as info:
        cli.main(SMALL + ["--backend", "torch"])
    assert info.value.code == 2 and "needs PyTorch" in capsys.readouterr().err


def test_demo_torch_backend_json_same_in_worker_processes(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("stgkern.torch")
    out = {}
    for jobs in (1, 2):
        path = tmp_path / f"t{jobs}.json"
        assert cli.main(SMALL + ["--backend", "torch", "--jobs", str(jobs), "--json", str(path)]) == 0
        out[jobs] = json.loads(path.read_text())
    s = out[1]
    assert {"SASRec", "STG-GNN (stgconv)", "STG closed form"} <= set(s["metrics"])
    assert s["training"]["STG-GNN (stgconv)"]["epochs_run"] <= 2
    assert s["training"]["STG-GNN (stgconv)"]["train_curve"][0]["epoch"] == 1
    # side by side in two processes: every figure bit-identical to one process
    assert s["workers"] == 1 and out[2]["workers"] == 2
    for key in ("metrics", "training", "graph", "behavior_per_class"):
        assert out[2][key] == s[key], key
    assert list(out[2]["seconds_per_stage"]) == list(s["seconds_per_stage"])


def _busy(seconds):
    import time
    time.sleep(seconds)
    return time.time()


def _where():
    import os
    import time
    t = time.time()
    time.sleep(0.3)
    return os.getpid(), t


def test_run_jobs_gives_a_busy_worker_nothing_until_it_is_free():
    # the demo's compile warm-up: a worker running it takes its first job after it
    import io
    import os

    from stgkern._workers import Workers
    with Workers(1) as workers:
        workers._ready[0].result()                       # spawned and imported
        busy = workers.submit("warm-up", _busy, 0.5)
        names = list("abcdef")
        got = cli.Stages(names, stream=io.StringIO()).run_jobs(workers, [(n, _where, (), {}) for n in names],
                                                               busy=[busy])
        end = busy.result()[0]
    assert set(got) == set(names)
    started = [t for pid, t in got.values() if pid != os.getpid()]
    assert started and min(started) >= end


def test_warm_up_replays_a_tiny_log():
    events, scored = cli._warm_up(dict(window=8, horizon=86400.0, category_window=2, tau=3600.0))
    assert events > 0 and scored > 0
    assert isinstance(cli._kernels_cold(), bool)


def _fails(progress=None):
    raise ValueError("raised in a worker")


def _plain(x):
    return 2 * x


def _steps(n, progress=None):
    for i in range(1, n + 1):
        progress(i, n)
    return n


def test_stages_run_jobs_schedules_reports_and_raises(capsys):
    import io

    from stgkern._workers import Workers
    stream = io.StringIO()
    stages = cli.Stages(["p", "a", "b", "c"], stream=stream)
    with Workers(1) as workers:
        jobs = [("p", _plain, (4,), {}), ("a", _steps, (3,), {}), ("b", _steps, (5,), {}), ("c", _steps, (2,), {})]
        got = stages.run_jobs(workers, jobs)
        assert got == {"p": 8, "a": 3, "b": 5, "c": 2} and set(stages.times) == set(got)
        # the first job (one without a progress argument) went to the idle worker
        assert "p: " in stream.getvalue() and "(in a worker)" in stream.getvalue()
        with pytest.raises(ValueError, match="raised in a worker"):
            cli.Stages(["x"], stream=stream).run_jobs(workers, [("x", _fails, (), {})])


def test_demo_seeds_aggregate(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert cli.main(SMALL + ["--backend", "numpy", "--seeds", "2", "--json", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["seeds"] == [0, 1] and len(s["per_seed"]) == 2
    agg = s["aggregate"]["STG closed form"]["HR@20"]
    runs = [r["STG closed form"]["HR@20"] for r in s["per_seed"]]
    assert agg["mean"] == pytest.approx(np.mean(runs)) and agg["min"] == min(runs) and agg["max"] == max(runs)
    assert s["metrics"]["STG closed form"]["HR@20"] == pytest.approx(agg["mean"])
    assert "STG closed form #1" in s["seconds_per_stage"]
    assert "mean ± std over training seeds [0, 1]" in capsys.readouterr().out


def test_demo_rejects_zero_seeds(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(SMALL + ["--seeds", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "--seeds must be at least 1" in err[-1]


def test_demo_rejects_unknown_format(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--data", "x.csv", "--format", "parquet"])
    assert e.value.code == 2
    assert "invalid choice: 'parquet'" in capsys.readouterr().err


def test_demo_rejects_data_without_format():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--data", "x.csv"])


def test_demo_rejects_missing_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--data", str(tmp_path / "nope.csv"), "--format", "taobao"])
    assert e.value.code == 2 and "cannot read --data" in capsys.readouterr().err


@pytest.mark.parametrize("bad_line, column", [
    ("3,4,5,pv,not-a-time", "timestamp"),
    ("3,4,5,click,1511544070", "behavior_type"),
    ("3,,5,pv,1511544070", "item_id"),
])
def test_demo_rejects_malformed_taobao_with_line_and_column(tmp_path, capsys, bad_line, column):
    path = tmp_path / "bad.csv"
    path.write_text("1,2,3,pv,1511544000\n1,3,3,buy,1511544060\n" + bad_line + "\n")
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--data", str(path), "--format", "taobao"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "line 3" in err and repr(column) in err and "does not match --format taobao" in err


def test_demo_rejects_movielens_file_given_as_taobao(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(SystemExit):
        cli.main(["demo", "--data", str(path), "--format", "taobao"])
    err = capsys.readouterr().err
    assert "line 1" in err and "column" in err


def test_console_script_info_runs():
    r = subprocess.run([sys.executable, "-m", "stgkern.cli", "info"], capture_output=True, text=True, check=True)
    assert "numba" in r.stdout and "cuda" in r.stdout


def test_bench_subcommand_is_wired(capsys):
    from stgkern.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0
    assert "--size" in capsys.readouterr().out


def test_demo_categories_flag_is_checked(tmp_path, capsys):
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    with pytest.raises(SystemExit) as e:  # a side file for a format that has none
        cli.main(["demo", "--data", str(ratings), "--format", "taobao", "--categories", str(ratings)])
    assert e.value.code == 2 and "--categories goes with --data in format movielens" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--data", str(ratings), "--format", "movielens", "--categories", str(tmp_path / "no.csv")])
    assert e.value.code == 2 and "cannot read --categories" in capsys.readouterr().err


def test_load_passes_the_category_side_file(tmp_path):
    from stgkern import data as sd
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,3.0,200\n2,10,5.0,150\n")
    movies = tmp_path / "movies.csv"
    movies.write_text("movieId,title,genres\n10,A (1990),Drama|Comedy\n20,B (1991),Comedy\n")
    with_cat = sd.load(str(ratings), "movielens", categories=str(movies))
    direct = sd.load_movielens(str(ratings), str(movies))
    np.testing.assert_array_equal(with_cat.category, direct.category)
    assert len(np.unique(with_cat.category)) == 2  # Drama, Comedy (first genre)
    with pytest.raises(ValueError, match="categories= applies to movielens"):
        sd.load(str(ratings), "taobao", categories=str(movies))


def test_help_version_and_defaults(capsys):
    import stgkern
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"stgkern {stgkern.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top
    for cmd in ("demo", "bench", "train", "evaluate", "info"):
        assert f"\n    {cmd} " in top, cmd
    for cmd, shown in (("demo", "(default: 8)"), ("train", "(default: 100)"), ("bench", "workload size")):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        h = capsys.readouterr().out
        assert shown in h and "``" not in h and "(default: None)" not in h, cmd
