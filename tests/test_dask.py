"""stgkern.dask: the partitioned recommendation on a Dask cluster equals the single-process result."""
import copy

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import stgkern  # noqa: E402
from stgkern import dask as sdask  # noqa: E402
from stgkern import model as sm  # noqa: E402


@pytest.fixture(scope="module")
def taobao_csv(tmp_path_factory):
    log = stgkern.synthetic_log(n_users=150, seed=6)
    df = log.to_dataframe()[["user_id", "item_id", "category_id", "behavior", "time"]]
    df = df.sample(frac=1.0, random_state=0)          # users interleaved, as in a real log
    path = tmp_path_factory.mktemp("src") / "ub.csv"
    df.to_csv(path, header=False, index=False)
    return path


def _reference(path, model, k):
    whole = stgkern.load_taobao(str(path))
    ref = copy.copy(model).with_counts(model.counts(whole))
    users, items, scores = ref.recommend(whole, k)
    want = pd.DataFrame({"user_id": np.repeat(users, k), "rank": np.tile(np.arange(1, k + 1), len(users)),
                         "item_id": items.ravel(), "score": scores.ravel()})
    return want[want.item_id >= 0]


def _one_thread_reference(path, model, k, tmp_path):
    """:func:`_reference` computed in a fresh process whose BLAS and Numba run one thread."""
    import os
    import pickle
    import subprocess
    import sys
    from pathlib import Path
    with open(tmp_path / "model.pkl", "wb") as fh:
        pickle.dump(model, fh)
    root = Path(__file__).resolve().parents[1]
    script = (f"import sys, pickle; sys.path[:0] = [{str(root)!r}, {str(root / 'tests')!r}]\n"
              f"import test_dask\n"
              f"model = pickle.load(open({str(tmp_path / 'model.pkl')!r}, 'rb'))\n"
              f"test_dask._reference({str(path)!r}, model, {k}).to_parquet({str(tmp_path / 'ref.parquet')!r})\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return pd.read_parquet(tmp_path / "ref.parquet")


def _sorted(df):
    return df.sort_values(["user_id", "rank"]).reset_index(drop=True)


def _torch_recommender(path, tmp_path):
    """A small PyTorch model trained out of core on the log's parts (None without torch)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    from stgkern import pipeline
    parts = pipeline.partition(path, tmp_path / "parts", 2, progress=False)
    rec, _ = pipeline.fit_torch_partitions(parts, epochs=1, dim=8, seq_len=10, graph_users=32, batch_size=16,
                                           n_negatives=32, valid_users=20, progress=False)
    return rec


def test_dask_on_a_two_worker_cluster_equals_one_process(taobao_csv, tmp_path):
    prep = sm.prepare(stgkern.load_taobao(str(taobao_csv)))
    *_, model = sm.fit_closed_form(prep, return_model=True)
    rec = _torch_recommender(taobao_csv, tmp_path)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        out = sdask.recommend(taobao_csv, model, tmp_path / "cf", k=10, npartitions=5, blocksize=40_000,
                              client=client)
        out_t = None if rec is None else sdask.recommend(taobao_csv, rec, tmp_path / "torch", k=10, npartitions=5,
                                                         blocksize=40_000, client=client)
    got = pd.read_parquet(out)
    # Bit for bit against one process with the workers' one BLAS thread: every product a user's
    # scores come from has a fixed shape (model.fixed_shape_matmul), so partitions do not matter;
    # BLAS's thread count can (it splits a product), so against this process's threads: to 1e-12.
    pd.testing.assert_frame_equal(_sorted(got), _sorted(_one_thread_reference(taobao_csv, model, 10, tmp_path)),
                                  check_dtype=False, check_exact=True)
    pd.testing.assert_frame_equal(_sorted(got), _sorted(_reference(taobao_csv, model, 10)), check_dtype=False,
                                  check_exact=False, rtol=1e-12, atol=0)
    if rec is not None:          # the PyTorch model too: the workers rebuild it from its pickle
        users, items, scores = rec.recommend(stgkern.load_taobao(str(taobao_csv)), 10)
        want = pd.DataFrame({"user_id": np.repeat(users, 10), "rank": np.tile(np.arange(1, 11), len(users)),
                             "item_id": items.ravel(), "score": scores.ravel()})
        pd.testing.assert_frame_equal(_sorted(pd.read_parquet(out_t)), _sorted(want[want.item_id >= 0]),
                                      check_dtype=False, check_exact=False, rtol=1e-5)


def test_dask_local_scheduler_and_bad_lines(taobao_csv, tmp_path):
    import dask
    prep = sm.prepare(stgkern.load_taobao(str(taobao_csv)))
    *_, model = sm.fit_closed_form(prep, return_model=True)
    with dask.config.set(scheduler="synchronous"):
        out = sdask.recommend(taobao_csv, model, tmp_path / "a", k=5, npartitions=3, blocksize=30_000)
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(out)), _sorted(_reference(taobao_csv, model, 5)),
                                  check_dtype=False, check_exact=True)
    lines = taobao_csv.read_text().splitlines()
    lines[1234] = lines[1234].replace(",pv,", ",view,").replace(",cart,", ",view,").replace(",buy,", ",view,") \
        .replace(",fav,", ",view,")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with dask.config.set(scheduler="synchronous"), pytest.raises(ValueError, match="line 1235"):
        sdask.recommend(bad, model, tmp_path / "b", k=5, blocksize=30_000)


def test_a_failed_dask_run_leaves_no_output_and_a_rerun_finishes(taobao_csv, tmp_path):
    """A task that dies mid-run (here: raises on one partition) fails the run with its error and
    leaves no recommendations folder; a rerun into the same folder completes it."""
    import dask
    prep = sm.prepare(stgkern.load_taobao(str(taobao_csv)))
    *_, model = sm.fit_closed_form(prep, return_model=True)

    class Dies(type(model)):
        calls = 0

        def recommend(self, log, *a, **k):
            Dies.calls += 1
            if Dies.calls == 2:
                raise MemoryError("worker lost")
            return super().recommend(log, *a, **k)

    bad = copy.copy(model)
    bad.__class__ = Dies
    with dask.config.set(scheduler="synchronous"), pytest.raises(MemoryError, match="worker lost"):
        sdask.recommend(taobao_csv, bad, tmp_path, k=5, npartitions=3, blocksize=30_000)
    assert Dies.calls == 2 and not (tmp_path / "recommendations").exists()
    with dask.config.set(scheduler="synchronous"):
        out = sdask.recommend(taobao_csv, model, tmp_path, k=5, npartitions=3, blocksize=30_000)
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(out)), _sorted(_reference(taobao_csv, model, 5)),
                                  check_dtype=False, check_exact=True)
    assert not (tmp_path / ".recommendations.partial").exists()
