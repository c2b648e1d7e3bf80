"""stgkern.pipeline: partition by user on disk, work part by part; kill-and-resume safety."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

import stgkern  # noqa: E402
from stgkern import pipeline as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def taobao_csv(tmp_path_factory):
    log = stgkern.synthetic_log(n_users=120, seed=4)
    path = tmp_path_factory.mktemp("src") / "ub.csv"
    log.to_dataframe()[["user_id", "item_id", "category_id", "behavior", "time"]].to_csv(path, header=False,
                                                                                        index=False)
    return path


def _by_user(df):
    return df.sort_values("user_id").reset_index(drop=True)


def _outputs(outs):
    return _by_user(pd.concat([pd.read_parquet(o) for o in outs], ignore_index=True))


def test_partition_keeps_every_event_and_whole_users(taobao_csv, tmp_path):
    parts = P.partition(taobao_csv, tmp_path, 5, chunk_rows=700, progress=False)
    whole = stgkern.load_taobao(str(taobao_csv))
    m = P._read_manifest(parts)
    assert m["events"] == len(whole) and m["chunks"] == -(-len(whole) // 700)
    seen, rows = set(), []
    for k in range(5):
        part = P.read_part(parts, k)
        assert len(part) == m["events_per_part"][k]
        users = set(part.user_ids[np.unique(part.user)].tolist())
        assert not users & seen                       # a user lives in one part only
        seen |= users
        assert (P.user_part(list(users), 5) == k).all()
        rows.append(part.to_dataframe())
    got = pd.concat(rows).sort_values(["user_id", "time", "item_id"]).reset_index(drop=True)
    want = whole.to_dataframe().sort_values(["user_id", "time", "item_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)          # every event once, behaviours coded alike
    before = (parts / "manifest.json").stat().st_mtime_ns
    assert P.partition(taobao_csv, tmp_path, 5, progress=False) == parts      # done already: not redone
    assert (parts / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="another source or part count"):
        P.partition(taobao_csv, tmp_path, 7, progress=False)


def test_map_partitions_equals_the_whole_log(taobao_csv, tmp_path):
    parts = P.partition(taobao_csv, tmp_path, 16, chunk_rows=1000, progress=False)
    outs = P.map_partitions(parts, tmp_path / "summary", P.window_summary, progress=False)
    assert [o.name for o in outs] == [f"part-{k:05d}.parquet" for k in range(16)]
    ref = _by_user(P.window_summary(stgkern.load_taobao(str(taobao_csv))))
    pd.testing.assert_frame_equal(_outputs(outs), ref)
    with pytest.raises(TypeError, match="must return a pandas DataFrame"):
        P.map_partitions(parts, tmp_path / "bad", lambda log, k: len(log), progress=False)


_KILL = """
import os, signal, sys
sys.path.insert(0, {root!r})
import pandas as pd
from stgkern import pipeline as P
stage = sys.argv[1]
if stage == "partition":
    real, calls = pd.DataFrame.to_parquet, [0]
    def dying(self, *a, **k):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, *a, **k)
    pd.DataFrame.to_parquet = dying
    P.partition({src!r}, {work!r}, 3, chunk_rows=500, progress=False)
else:
    def fn(log, k):
        if k == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return P.window_summary(log)
    P.map_partitions({work!r} + "/parts", {work!r} + "/out", fn, progress=False)
"""


def test_a_killed_run_resumes_and_never_mixes_partial_output(taobao_csv, tmp_path):
    work = tmp_path / "w"
    script = _KILL.format(root=str(ROOT), src=str(taobao_csv), work=str(work))
    r = subprocess.run([sys.executable, "-c", script, "partition"], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not (work / "parts").exists() and (work / ".parts.partial").exists()   # nothing passed off as done
    parts = P.partition(taobao_csv, work, 3, chunk_rows=500, progress=False)      # starts the pass again
    assert not (work / ".parts.partial").exists()
    r = subprocess.run([sys.executable, "-c", script, "map"], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    done = sorted(p.name for p in (work / "out").iterdir())
    assert done == ["part-00000.parquet", "part-00001.parquet"]                  # part 2 died before writing
    first = {p: p.stat().st_mtime_ns for p in (work / "out").iterdir()}
    outs = P.map_partitions(parts, work / "out", P.window_summary, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())               # finished parts not redone
    assert not list((work / "out").glob("*.tmp"))
    fresh = P.map_partitions(P.partition(taobao_csv, tmp_path / "again", 3, progress=False), tmp_path / "o2",
                             P.window_summary, progress=False)
    pd.testing.assert_frame_equal(_outputs(outs), _outputs(fresh))


def test_bad_lines_are_named_in_any_chunk(tmp_path):
    src = tmp_path / "bad.csv"
    lines = [f"{u},{u + 1},3,pv,{1511544000 + u}" for u in range(2500)]
    lines[2199] = "7,8,3,pv,not-a-time"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2200, column 'timestamp': not a number"):
        P.partition(src, tmp_path / "w", 4, chunk_rows=1000, progress=False)
    assert not (tmp_path / "w" / "parts").exists()
    lines[2199] = "7,8,3,view,1511544000"
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 2200, column 'behavior_type': unknown behaviour 'view'"):
        P.partition(src, tmp_path / "w", 4, chunk_rows=1000, progress=False)
    with pytest.raises(ValueError, match="n_parts must be at least 1"):
        P.partition(src, tmp_path / "w", 0, progress=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        P.partition(tmp_path / "missing.csv", tmp_path / "w", 2, progress=False)


def test_parquet_input_partitions_like_the_csv(taobao_csv, tmp_path):
    df = pd.read_csv(taobao_csv, header=None, names=P._TAOBAO)
    src = tmp_path / "ub.parquet"
    df.to_parquet(src, index=False)
    a = P.partition(taobao_csv, tmp_path / "csv", 4, chunk_rows=600, progress=False)
    b = P.partition(src, tmp_path / "pq", 4, format="parquet", chunk_rows=600, progress=False)
    assert P._read_manifest(a)["events_per_part"] == P._read_manifest(b)["events_per_part"]
    for k in range(4):
        pd.testing.assert_frame_equal(P.read_part(a, k).to_dataframe(), P.read_part(b, k).to_dataframe())
    df.loc[700, "timestamp"] = np.nan
    df.to_parquet(src, index=False)
    with pytest.raises(ValueError, match="line 701, column 'timestamp': not a number"):
        P.partition(src, tmp_path / "pq2", 4, format="parquet", chunk_rows=600, progress=False)
    df.drop(columns="category_id").to_parquet(src, index=False)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['category_id'\]"):
        P.partition(src, tmp_path / "pq3", 4, format="parquet", progress=False)


def test_recommend_partitions_equals_the_whole_log(taobao_csv, tmp_path):
    import copy

    from stgkern import model as sm
    whole = stgkern.load_taobao(str(taobao_csv))
    prep = sm.prepare(whole)
    *_, model = sm.fit_closed_form(prep, return_model=True)
    parts = P.partition(taobao_csv, tmp_path, 4, chunk_rows=900, progress=False)
    # the item-level counts are a reduction: the parts' counts sum to the whole log's, exactly
    counts = P.count_partitions(parts, model, progress=False)
    ref_counts = model.counts(whole)
    for key in ("T1", "T2", "TC"):
        assert (counts[key] != ref_counts[key]).nnz == 0
    assert np.array_equal(counts["pop"], ref_counts["pop"])
    ref = copy.copy(model).with_counts(ref_counts)
    users, items, scores = ref.recommend(whole, 10)
    outs = P.recommend_partitions(parts, tmp_path / "top", model, k=10, progress=False)
    got = pd.concat([pd.read_parquet(o) for o in outs], ignore_index=True)
    assert list(got.columns) == ["user_id", "rank", "item_id", "score"]
    assert got["user_id"].nunique() == len(users) == len(np.unique(whole.user))   # every user, k-cored or not
    want = pd.DataFrame({"user_id": np.repeat(users, 10), "rank": np.tile(np.arange(1, 11), len(users)),
                         "item_id": items.ravel(), "score": scores.ravel()})
    want = want[want.item_id >= 0]
    key = ["user_id", "rank"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  want.sort_values(key).reset_index(drop=True))
    # nothing a user touched is recommended, and only items the model knows are
    touched = set(zip(whole.user_ids[whole.user].tolist(), whole.item_ids[whole.item].tolist()))
    assert not any((u, i) in touched for u, i in zip(got.user_id, got.item_id))
    assert set(got.item_id) <= set(model.item_ids.tolist())
    assert model.tables is not None and model.tables["T1"].shape == ref.tables["T1"].shape
    # items the model never saw pool under one id, which passes on no transitions of its own
    n, c = model.n_items, model.n_categories
    assert ref_counts["T1"][n].nnz > 0                  # this log has such items ...
    assert ref.tables["T1"][n].nnz == ref.tables["T2"][n].nnz == 0 and not ref.tables["TC"][c].any()
    assert ref.tables["T1"][:n].nnz > 0


def test_closed_form_model_scores_as_fit_closed_form(taobao_csv):
    from stgkern import model as sm
    prep = sm.prepare(stgkern.load_taobao(str(taobao_csv)))
    top, beh, _, model = sm.fit_closed_form(prep, return_model=True)
    users, items, _ = model.recommend(prep.history, 20)
    row = {u: i for i, u in enumerate(users)}
    pick = np.array([row[u] for u in prep.log.user_ids[prep.eval_user]])
    assert np.array_equal(items[pick], prep.log.item_ids[top])
    with pytest.raises(ValueError, match="k must be at least 1"):
        model.recommend(prep.history, 0)


def test_states_of_some_rows_equal_the_whole_logs(taobao_csv):
    """recommend computes the states of users' last rows only, over their two-hop
    neighbourhoods: the same bits as the whole log's states, for any rows in any order."""
    from stgkern import model as sm
    prep = sm.prepare(stgkern.load_taobao(str(taobao_csv)))
    *_, model = sm.fit_closed_form(prep, return_model=True)
    log = prep.history
    H, g = model.states(log)
    starts = np.concatenate([[0], np.cumsum(np.bincount(log.user))[:-1]])
    rng = np.random.default_rng(0)
    for rows in (sm.last_rows(log, np.unique(log.user)), starts, rng.permutation(len(log))[:37],
                 np.array([len(log) - 1, 0, len(log) - 1]), np.zeros(0, np.int64)):
        Hr, _ = model.states(log, rows)
        assert Hr.shape == (len(rows), H.shape[1]) and Hr.dtype == H.dtype
        assert np.array_equal(Hr, H[rows])
    assert len(g.indices) > 0


def test_recommend_command_out_of_core(taobao_csv, tmp_path, capsys):
    from stgkern import cli
    assert cli.main(["recommend", "--data", str(taobao_csv), "--out", str(tmp_path), "--parts", "3",
                     "--train-parts", "2", "--k", "5"]) == 0
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "recommendations").glob("*.parquet"))])
    assert got["user_id"].nunique() == 120 and got.groupby("user_id").size().max() == 5
    assert "top-5 for 120 users" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["recommend", "--data", str(taobao_csv), "--out", str(tmp_path), "--parts", "2",
                  "--train-parts", "3"])
    assert e.value.code == 2 and "cannot exceed --parts" in capsys.readouterr().err


@pytest.mark.parametrize("mix", ["fitted", "all_on", "category_heavy"])
def test_threshold_top_k_equals_dense_scores(taobao_csv, mix):
    """recommend's default never forms a score row; its lists equal the dense path's on every
    user, with each component weighted in (the category pass prunes by its bound), with and
    without seen items excluded, and with k past the catalogue."""
    import copy

    from stgkern import model as sm
    prep = sm.prepare(stgkern.load_taobao(str(taobao_csv)))
    *_, model = sm.fit_closed_form(prep, return_model=True)
    m = copy.copy(model)
    if mix == "all_on":
        m.mix = {"last": 1.0, "window": 0.3, "skip": 0.1, "category": 3.0}
    elif mix == "category_heavy":
        m.mix = {"last": 0.0, "window": 0.0, "skip": 0.0, "category": 30.0}
    log = prep.log
    for k, exclude in ((20, True), (7, False), (m.n_items + 5, True)):
        u1, i1, s1 = m.recommend(log, k, exclude_seen=exclude, block=64, method="dense")
        u2, i2, s2 = m.recommend(log, k, exclude_seen=exclude, block=64)
        np.testing.assert_array_equal(u1, u2)
        np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(i2, i1)
    # new tables (another log's counts) after a call: the cached per-model inputs follow them
    half = log.to_dataframe().iloc[: len(log) // 2]
    m.with_counts(m.counts(stgkern.from_dataframe(half, "user_id", "item_id", "time", "category_id", "behavior")))
    _, i1, s1 = m.recommend(log, 20, method="dense")
    _, i2, s2 = m.recommend(log, 20)
    np.testing.assert_array_equal(i2, i1)
    np.testing.assert_allclose(s2, s1, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="method must be"):
        m.recommend(log, 5, method="sparse")
