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
    real, calls = P._write_rows, [0]
    def dying(*a, **k):
        calls[0] += 1
        if calls[0] == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    P._write_rows = dying
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


@pytest.mark.parametrize("times", ["whole", "fractional"])
def test_arrow_reader_partitions_like_the_checked_reader(taobao_csv, tmp_path, monkeypatch, times):
    """A clean Taobao CSV goes through Arrow's typed reader; its parts are the checked
    (pandas) reader's, value for value and type for type."""
    src = taobao_csv
    if times == "fractional":
        df = pd.read_csv(taobao_csv, header=None, names=P._TAOBAO)
        df["timestamp"] = df["timestamp"].astype(np.float64)
        df.loc[5, "timestamp"] += 0.5
        src = tmp_path / "frac.csv"
        df.to_csv(src, header=False, index=False)
    used = []
    real = P._taobao_arrow_chunks
    monkeypatch.setattr(P, "_taobao_arrow_chunks", lambda *a: used.append(1) or real(*a))
    fast = P.partition(src, tmp_path / "fast", 4, chunk_rows=900, progress=False)

    def refuse(*a):
        raise P._NotClean
        yield

    monkeypatch.setattr(P, "_taobao_arrow_chunks", refuse)
    slow = P.partition(src, tmp_path / "slow", 4, chunk_rows=900, progress=False)
    assert used == [1] and P._read_manifest(fast)["events_per_part"] == P._read_manifest(slow)["events_per_part"]
    for k in range(4):
        a, b = P.read_part(fast, k), P.read_part(slow, k)
        for col in ("user", "item", "category", "behavior", "time", "user_ids", "item_ids", "category_ids"):
            x, y = getattr(a, col), getattr(b, col)
            assert x.dtype == y.dtype and np.array_equal(x, y), (k, col)
    assert (a.time.dtype.kind == "f") == (times == "fractional")


def test_parts_follow_the_memory_budget(taobao_csv, tmp_path):
    n = len(taobao_csv.read_text().splitlines())
    assert abs(P.estimate_events(taobao_csv) - n) < 0.01 * n          # the file is under 1 MiB: exact-ish
    per = P.BYTES_PER_EVENT
    assert P.plan_parts(taobao_csv, n * per) == 1
    assert P.plan_parts(taobao_csv, n * per // 4) == 4 + (P.estimate_events(taobao_csv) > n)
    assert P.plan_parts(taobao_csv, 10 ** 15) == 1 and P.plan_parts(taobao_csv) >= 1
    parts = P.partition(taobao_csv, tmp_path, memory_budget=n * per // 3, progress=False)
    m = P._read_manifest(parts)
    assert m["n_parts"] == P.plan_parts(taobao_csv, n * per // 3) >= 3 and m["events"] == n
    df = pd.read_csv(taobao_csv, header=None, names=P._TAOBAO)
    df.to_parquet(tmp_path / "ub.parquet", index=False)
    assert P.estimate_events(tmp_path / "ub.parquet", "parquet") == n
    with pytest.raises(ValueError, match="memory_budget must be positive"):
        P.plan_parts(taobao_csv, 0)


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


def test_a_file_that_ends_mid_row_is_named(tmp_path):
    src = tmp_path / "cut.csv"
    lines = [f"{u},{u + 1},3,pv,{1511544000 + u}" for u in range(1500)]
    src.write_text("\n".join(lines) + "\n1500,1501,3,p")                  # the copy stopped inside a line
    with pytest.raises(ValueError, match="line 1501, column 'timestamp': missing value"):
        P.partition(src, tmp_path / "w", 4, chunk_rows=1000, progress=False)
    assert not (tmp_path / "w" / "parts").exists()


def test_a_full_disk_leaves_nothing_passed_off_as_done(taobao_csv, tmp_path, monkeypatch):
    """ENOSPC while writing: the pass fails with the OS's error, nothing half-written is left
    under a final name, and the rerun (space freed) finishes the job."""
    import errno
    real, real_rows = pd.DataFrame.to_parquet, P._write_rows
    calls = [0]

    def filling(write):
        def full(obj, path, *a, **k):
            calls[0] += 1
            if calls[0] == 3:
                Path(path).write_bytes(b"PAR1 half")                    # what a full disk leaves behind
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return write(obj, path, *a, **k)
        return full

    monkeypatch.setattr(P, "_write_rows", filling(real_rows))          # the partition pass's part files
    with pytest.raises(OSError, match="No space left"):
        P.partition(taobao_csv, tmp_path, 3, chunk_rows=700, progress=False)
    assert not (tmp_path / "parts").exists()
    monkeypatch.setattr(P, "_write_rows", real_rows)
    parts = P.partition(taobao_csv, tmp_path, 3, chunk_rows=700, progress=False)
    calls[0] = 0
    full = filling(real)                                                # map_partitions' outputs
    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(OSError, match="No space left"):
        P.map_partitions(parts, tmp_path / "out", P.window_summary, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    outs = P.map_partitions(parts, tmp_path / "out", P.window_summary, progress=False)
    pd.testing.assert_frame_equal(_outputs(outs), _by_user(P.window_summary(stgkern.load_taobao(str(taobao_csv)))))


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


def _by_user_frames(log):
    """Each user's events as the loaders give them (time-sorted, original ids), keyed by user id."""
    df = log.sort().to_dataframe()
    return {u: g.drop(columns="user_id").reset_index(drop=True) for u, g in df.groupby("user_id")}


def _movielens_files(tmp_path, n_users=60, seed=0):
    rng = np.random.default_rng(seed)
    n = n_users * 12
    ratings = pd.DataFrame({"userId": rng.integers(1, n_users + 1, n), "movieId": rng.integers(1, 80, n),
                            "rating": rng.integers(1, 11, n) / 2.0, "timestamp": rng.integers(9e8, 9.1e8, n)})
    movies = pd.DataFrame({"movieId": np.arange(1, 70), "title": "t",
                           "genres": [["Drama|Comedy", "Action", "Comedy|Drama"][i % 3] for i in range(69)]})
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    movies.to_csv(tmp_path / "movies.csv", index=False)          # movies 70..79 have no genre row
    return tmp_path / "ratings.csv", tmp_path / "movies.csv"


def test_movielens_input_partitions_like_the_loader(tmp_path):
    """A MovieLens ratings.csv read in chunks: every user's events, ratings (the value) and
    first-genre categories are the loader's, in whichever part the user lands."""
    ratings, movies = _movielens_files(tmp_path)
    for cats in (movies, None):
        parts = P.partition(ratings, tmp_path / f"p{cats is None}", 3, format="movielens", categories=cats,
                            chunk_rows=97, progress=False)
        whole = stgkern.data.load_movielens(str(ratings), None if cats is None else str(movies))
        got = P.read_part(parts, [0, 1, 2])
        assert len(got) == len(whole) and got.behavior_names == whole.behavior_names == ("rate",)
        a, b = _by_user_frames(got), _by_user_frames(whole)
        assert a.keys() == b.keys()
        for u in a:
            pd.testing.assert_frame_equal(a[u], b[u], check_dtype=False)
        if cats is not None:
            assert set(got.category_ids) == {"Drama", "Action", "Comedy", "(no genres listed)"}
    bad = ratings.read_text().splitlines()
    bad[50] = bad[50].split(",")[0] + ",x,3.0,900000000"
    (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
    with pytest.raises(ValueError, match="line 51, column 'movieId': not a number"):
        P.partition(tmp_path / "bad.csv", tmp_path / "bad", 3, format="movielens", chunk_rows=20, progress=False)
    with pytest.raises(ValueError, match="categories= applies to movielens"):
        P.partition(ratings, tmp_path / "c", 3, categories=movies, progress=False)
    clean = tmp_path / "clean.csv"                      # a clean Taobao CSV takes the fast reader: still refused
    clean.write_text("1,2,3,pv,1511544000\n1,3,3,buy,1511544060\n")
    with pytest.raises(ValueError, match="categories= applies to movielens"):
        P.partition(clean, tmp_path / "c2", 2, categories=movies, progress=False)
    assert not (tmp_path / "c2").exists()
    with pytest.raises(ValueError, match="format='tsv'"):
        P.partition(ratings, tmp_path / "y", 3, format="tsv", progress=False)


def _recbole_files(tmp_path, with_rating):
    rng = np.random.default_rng(3)
    n = 500
    inter = pd.DataFrame({"user_id:token": [f"u{u}" for u in rng.integers(0, 40, n)],
                          "item_id:token": [f"i{i}" for i in rng.integers(0, 60, n)],
                          "timestamp:float": rng.integers(1e9, 1.01e9, n)})
    if with_rating:
        inter.insert(2, "rating:float", rng.integers(1, 6, n).astype(float))
    inter.to_csv(tmp_path / "x.inter", sep="\t", index=False)
    items = pd.DataFrame({"item_id:token": [f"i{i}" for i in range(50)],
                          "genre:token_seq": [["a b", "c", "b a"][i % 3] for i in range(50)]})
    items.to_csv(tmp_path / "x.item", sep="\t", index=False)
    return tmp_path / "x.inter", tmp_path / "x.item"


@pytest.mark.parametrize("fmt", ["recbole", "recbole-no-rating", "yoochoose-gru4rec", "yoochoose-clicks"])
def test_other_loader_formats_partition_like_the_loader(tmp_path, fmt):
    """RecBole and YOOCHOOSE logs read in chunks: every user's (session's) events are the loader's."""
    cats = None
    if fmt.startswith("recbole"):
        src, cats = _recbole_files(tmp_path, fmt == "recbole")
        whole, kind = stgkern.data.load_recbole(str(src), str(cats)), "recbole"
    else:
        rng = np.random.default_rng(4)
        n = 400
        sess, item = rng.integers(1, 50, n), rng.integers(100, 160, n)
        src, kind = tmp_path / "y.dat", "yoochoose"
        if fmt == "yoochoose-gru4rec":
            pd.DataFrame({"SessionId": sess, "ItemId": item, "Time": rng.integers(1.4e9, 1.41e9, n)}).to_csv(
                src, sep="\t", index=False)
        else:
            t = pd.Timestamp("2014-04-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 10 ** 6, n), unit="s")
            pd.DataFrame({"s": sess, "t": t.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "i": item,
                          "c": rng.choice(["0", "S", "7"], n)}).to_csv(src, header=False, index=False)
        whole = stgkern.data.load_yoochoose(str(src))
    parts = P.partition(src, tmp_path / "p", 3, format=kind, categories=cats, chunk_rows=70, progress=False)
    got = P.read_part(parts, [0, 1, 2])
    assert len(got) == len(whole) and got.behavior_names == whole.behavior_names
    assert (got.value is None) == (whole.value is None)
    a, b = _by_user_frames(got), _by_user_frames(whole)
    assert a.keys() == b.keys()
    for u in a:
        pd.testing.assert_frame_equal(a[u], b[u], check_dtype=False)


def test_other_loader_formats_name_bad_lines(tmp_path):
    src, _ = _recbole_files(tmp_path, True)
    lines = src.read_text().splitlines()
    lines[300] = lines[300].rsplit("\t", 1)[0] + "\tsoon"
    (tmp_path / "bad.inter").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 301, column 'timestamp': not a number"):
        P.partition(tmp_path / "bad.inter", tmp_path / "b", 2, format="recbole", chunk_rows=64, progress=False)
    (tmp_path / "bad.dat").write_text("1,2014-04-01T10:00:00.000Z,5,0\n1,not a time,6,0\n")
    with pytest.raises(ValueError, match="line 2, column 'timestamp': not a time"):
        P.partition(tmp_path / "bad.dat", tmp_path / "c", 2, format="yoochoose", progress=False)


def test_real_movielens_partitions_like_the_loader(tmp_path):
    ml = ROOT.parent / "shared" / "data" / "ml-latest-small"
    if not (ml / "ratings.csv").exists():
        pytest.skip("../shared/data/ml-latest-small is absent")
    parts = P.partition(ml / "ratings.csv", tmp_path, 4, format="movielens", categories=ml / "movies.csv",
                        chunk_rows=30_000, progress=False)
    whole = stgkern.data.load_movielens(str(ml / "ratings.csv"), str(ml / "movies.csv"))
    got = P.read_part(parts, [0, 1, 2, 3])
    assert len(got) == len(whole) == 100_836 and got.n_users == whole.n_users == 610
    for col in ("user_id", "item_id", "category_id", "time", "value"):
        pd.testing.assert_series_equal(got.sort().to_dataframe()[col].sort_values().reset_index(drop=True),
                                       whole.sort().to_dataframe()[col].sort_values().reset_index(drop=True),
                                       check_dtype=False)


def test_write_synthetic_writes_the_generators_log(tmp_path):
    """Chunks made in parallel worker processes and written in user order are the whole log."""
    kw = dict(n_items=300, n_categories=12, events_per_user=20)
    ref = stgkern.synthetic_log(n_users=150, seed=5, **kw).to_dataframe()
    a = P.write_synthetic(tmp_path / "a.parquet", 150, chunk_users=40, workers=0, seed=5, progress=False, **kw)
    b = P.write_synthetic(tmp_path / "b.csv", 150, format="taobao", chunk_users=40, workers=2, seed=5,
                          progress=False, **kw)
    assert a["events"] == b["events"] == len(ref) and a["users"] == 150
    got = pd.read_parquet(tmp_path / "a.parquet")
    assert list(got.columns) == P._TAOBAO
    for col, want in (("user_id", "user_id"), ("item_id", "item_id"), ("category_id", "category_id"),
                      ("behavior_type", "behavior"), ("timestamp", "time")):
        assert np.array_equal(got[col].to_numpy(), ref[want].to_numpy()), col
    csv = pd.read_csv(tmp_path / "b.csv", header=None, names=P._TAOBAO)
    pd.testing.assert_frame_equal(csv, got, check_dtype=False)
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(ValueError, match="writes 'parquet' or 'taobao'"):
        P.write_synthetic(tmp_path / "c", 10, format="movielens")


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
                                  want.sort_values(key).reset_index(drop=True), check_exact=True)
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


def test_catalogue_is_the_whole_logs_counts(taobao_csv, tmp_path):
    parts = P.partition(taobao_csv, tmp_path, 3, chunk_rows=700, progress=False)
    cat = P.catalogue(parts, progress=False)
    whole = stgkern.load_taobao(str(taobao_csv))
    assert np.array_equal(cat["item_ids"], np.sort(whole.item_ids))
    assert np.array_equal(cat["item_events"], np.bincount(whole.item, minlength=whole.n_items)[
        np.argsort(whole.item_ids)])
    assert np.array_equal(cat["behavior_events"], np.bincount(whole.behavior, minlength=4))
    assert cat["events"] == len(whole) and cat["users"] == whole.n_users
    # an item's category is the one of its first event in part order (the same item may carry two)
    df = pd.concat([P.read_part(parts, k).to_dataframe() for k in range(3)], ignore_index=True)
    first = df.drop_duplicates("item_id").set_index("item_id")["category_id"]
    assert np.array_equal(cat["item_category_ids"], first.loc[cat["item_ids"]].to_numpy())


@pytest.fixture(scope="module")
def torch_fit(taobao_csv, tmp_path_factory):
    pytest.importorskip("torch")
    parts = P.partition(taobao_csv, tmp_path_factory.mktemp("tparts"), 3, chunk_rows=800, progress=False)
    rec, info = P.fit_torch_partitions(parts, epochs=2, dim=8, seq_len=10, graph_users=16, batch_size=8,
                                       n_negatives=32, valid_users=30, progress=False, seed=1)
    return parts, rec, info


def test_fit_torch_partitions_trains_part_by_part(torch_fit, taobao_csv):
    parts, rec, info = torch_fit
    whole = stgkern.load_taobao(str(taobao_csv))
    counts = np.bincount(whole.item, minlength=whole.n_items)
    assert np.array_equal(rec.item_ids, np.sort(whole.item_ids[counts >= 5]))          # min_item_events
    assert info["epochs_run"] == len(info["train_curve"]) == 2 and info["steps"] > 2 * (120 // 16)
    assert 0 < info["valid_users"] <= 30 and info["events"] == len(whole)
    assert all(0.0 <= c["valid"] <= c["valid_HR@20"] <= 1.0 for c in info["train_curve"])
    with pytest.raises(ValueError, match="graph_users must be at least 1"):
        P.fit_torch_partitions(parts, graph_users=0, progress=False)
    with pytest.raises(ValueError, match="no item has 100000 events"):
        P.fit_torch_partitions(parts, min_item_events=100_000, progress=False)


def test_torch_recommender_scores_parts_as_the_whole_log(torch_fit, taobao_csv, tmp_path):
    """A user's top-k from the trained PyTorch model is the same in its part as in the whole
    log, in groups of any size, and after a pickle round trip (what workers receive).  The
    inputs are the same bits (test_model.py); torch's GEMMs may round a row differently when
    the batch around it changes, so scores are compared to float32 rounding."""
    import pickle
    parts, rec, _ = torch_fit
    outs = P.recommend_partitions(parts, tmp_path / "top", rec, k=7, progress=False)
    got = _by_user(pd.concat([pd.read_parquet(o) for o in outs], ignore_index=True)).sort_values(
        ["user_id", "rank"]).reset_index(drop=True)
    whole = stgkern.load_taobao(str(taobao_csv))
    users, items, scores = rec.recommend(whole, 7)
    want = P.top_k_frame(users, items, scores, 7).sort_values(["user_id", "rank"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5)
    assert got["user_id"].nunique() == whole.n_users
    touched = set(zip(whole.user_ids[whole.user].tolist(), whole.item_ids[whole.item].tolist()))
    assert not any((u, i) in touched for u, i in zip(got.user_id, got.item_id))
    assert set(got.item_id) <= set(rec.item_ids.tolist())
    again = pickle.loads(pickle.dumps(rec))
    again.graph_users = 5
    u2, i2, s2 = again.recommend(whole, 7)
    assert np.array_equal(u2, users) and np.array_equal(i2, items)
    np.testing.assert_allclose(s2, scores, rtol=1e-5)
    _, i3, _ = rec.recommend(whole, 7, exclude_seen=False)
    assert any((u, i) in touched for u, i in zip(np.repeat(users, 7), i3.ravel()))
    with pytest.raises(ValueError, match="k must be at least 1"):
        rec.recommend(whole, 0)


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
    # no --parts: as many as keep a part within --memory-budget (GiB)
    assert cli.main(["recommend", "--data", str(taobao_csv), "--out", str(tmp_path / "auto"), "--k", "3",
                     "--memory-budget", "0.0045"]) == 0
    assert P._read_manifest(tmp_path / "auto" / "work" / "parts")["n_parts"] == 3
    with pytest.raises(SystemExit) as e:
        cli.main(["recommend", "--data", str(taobao_csv), "--out", str(tmp_path / "a2"), "--train-parts", "9",
                  "--memory-budget", "0.0045"])
    assert e.value.code == 2 and "exceeds the 3 part(s)" in capsys.readouterr().err


def test_recommend_command_with_the_pytorch_model(taobao_csv, tmp_path, capsys):
    pytest.importorskip("torch")
    from stgkern import cli
    assert cli.main(["recommend", "--data", str(taobao_csv), "--out", str(tmp_path), "--parts", "2",
                     "--model", "stgnn", "--epochs", "1", "--graph-users", "50", "--k", "4"]) == 0
    got = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "recommendations").glob("*.parquet"))])
    assert got["user_id"].nunique() == 120 and got.groupby("user_id").size().max() == 4
    out = capsys.readouterr().out
    assert "trained the STG-GNN on" in out and "top-4 for 120 users" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["recommend", "--data", str(taobao_csv), "--out", str(tmp_path), "--model", "stgnn",
                  "--graph-users", "0"])
    assert e.value.code == 2 and "--graph-users must be at least 1" in capsys.readouterr().err


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
