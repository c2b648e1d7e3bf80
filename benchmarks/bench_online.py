"""stgkern.online at scale: update throughput, update + recommend latency, state memory.

    python benchmarks/bench_online.py [--users 1000000] [--items 1000000] [--events-per-user 10]
        [--out benchmarks/results/online_cpu.json]

The model: the closed form with a 64-wide node input (item embedding 33 +
category embedding 16 + 15 node and gap features; the state ``[X, ÂX, Â²X]``
is 192 wide), window 8, horizon 1 day, category window 2.  It is fitted on
the synthetic log itself, the way ``fit_closed_form`` fits it, except for
the hyper-parameters: the ridge strength and the component weights are the
ones ``fit_closed_form`` chose on a 5,000-user sample of the same log
(choosing them on a million users would rank a million users on
validation).  Embeddings from all transitions, the ridge from a sample of
``--ridge-rows`` transitions onto the whole catalogue, tables from all
counts.

The stream: the log in time order (ties at random).
1. ``update`` at batch 10,000 over the first 90% (the state reaches every
   user), timed per batch; the figure is the rate over the last half of
   them (the state then holds nearly all users);
2. batch 100 over the next 4%, batch 1 over the next ``--single`` events;
3. ``update(1 event) + recommend(that user, k=20)`` for the next
   ``--latency`` events: median and p99;
4. ``nbytes()`` per user against its floor.

Peers, same run: the whole log's states by the batch path
(``ClosedFormModel.states``: window graph, features, propagation in one
call), the rate an incremental update is compared with; and for latency,
scoring the user from its whole history by ``ClosedFormModel.recommend``
(what a service without the state would do per request).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import stgkern  # noqa: E402
from stgkern import model as sm  # noqa: E402
from stgkern.online import OnlineRecommender  # noqa: E402


def _rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_at_scale(log, *, dim_item=33, dim_cat=16, ridge_rows=2_000_000, sample_users=5000, seed=0):
    """A closed-form model fitted on ``log`` (see the module docstring); returns (model, info)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # hyper-parameters: fit_closed_form on a user sample (its own split and validation)
    users = rng.choice(log.n_users, min(sample_users, log.n_users), replace=False)
    small = sm.prepare(log.take(np.isin(log.user, users)), k_core_k=2)
    _, _, info, _ = sm.fit_closed_form(small, return_model=True, dim=dim_item, window=8, horizon=86400.0,
                                       category_window=2)
    t_hyper = time.perf_counter() - t0
    lg = log.sort()
    n, C, B = lg.n_items, lg.n_categories, lg.n_behaviors
    src, dst = sm.transitions(lg)
    E_item = sm._spectral(np.concatenate([lg.item[src], lg.item[dst], lg.item]),
                          np.concatenate([lg.item[dst] + n, lg.item[src], lg.category + 2 * n]), n, 2 * n + C,
                          dim_item, seed)
    E_cat = sm._spectral(np.concatenate([lg.category[src], lg.category[dst]]),
                         np.concatenate([lg.category[dst], lg.category[src] + C]), C, 2 * C, dim_cat, seed + 1)
    item_category = np.zeros(n, np.int64)
    item_category[lg.item] = lg.category
    model = sm.ClosedFormModel(item_ids=lg.item_ids, category_ids=lg.category_ids, item_category=item_category,
                               n_behaviors=B, E_item=E_item.astype(np.float32), E_cat=E_cat.astype(np.float32),
                               graph_args=dict(window=8, horizon=86400.0, category_window=2), tau=3600.0,
                               ridge=None, lam=info["ridge_lambda"], mix=info["mix"], bridge=None, blam=None,
                               offsets=np.zeros(B))
    # the ridge: whole users (a state needs the user's earlier events) until ridge_rows events
    cnt = np.bincount(lg.user, minlength=lg.n_users)
    order = rng.permutation(lg.n_users)
    chosen = order[:int(np.searchsorted(np.cumsum(cnt[order]), ridge_rows)) + 1]
    sub = lg.take(np.isin(lg.user, chosen))
    H, g = model.states(sub)
    s2, d2 = sm.transitions(sub)
    new = sm._new_item_mask(sub, s2, d2)
    model.ridge = sm.Ridge(sm._Rows(s2[new], H), sub.item[d2[new]], n)
    del H, g, sub
    model.with_counts(model.counts(lg))
    return model, {"seconds": time.perf_counter() - t0, "hyper_parameter_fit_s": t_hyper,
                   "ridge_lambda": info["ridge_lambda"], "mix": info["mix"], "sample_users": int(len(users)),
                   "ridge_rows": int(new.sum()), "items": int(n), "categories": int(C),
                   "node_input_width": int(E_item.shape[1] + E_cat.shape[1] + 2 * B + 2 + sm.N_GAP_BUCKETS)}


def _cols(log, rows):
    return {"user": log.user_ids[log.user[rows]], "item": log.item_ids[log.item[rows]],
            "category": log.category_ids[log.category[rows]], "behavior": log.behavior[rows], "time": log.time[rows],
            "value": None if log.value is None else log.value[rows]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--categories", type=int, default=9439)
    ap.add_argument("--events-per-user", type=int, default=10)
    ap.add_argument("--ridge-rows", type=int, default=2_000_000)
    ap.add_argument("--single", type=int, default=20_000, help="events streamed one at a time")
    ap.add_argument("--latency", type=int, default=300, help="update + recommend requests timed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    out = {"benchmark": "bench_online", "config": vars(a), "machine": {
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "numba_threads": int(os.environ.get("NUMBA_NUM_THREADS", os.cpu_count()))}, "stages": {}}
    S = out["stages"]

    t0 = time.perf_counter()
    log = stgkern.synthetic_log(n_users=a.users, n_items=a.items, n_categories=a.categories,
                                events_per_user=a.events_per_user, seed=a.seed)
    S["generate"] = {"seconds": time.perf_counter() - t0, "events": len(log), "users": int(log.n_users),
                     "distinct_items": int(len(np.unique(log.item)))}
    print(f"log: {len(log):,} events, {log.n_users:,} users, {S['generate']['distinct_items']:,} items "
          f"({S['generate']['seconds']:.0f} s)", flush=True)
    log = dataclasses.replace(log, time=log.time.astype(np.int64))
    model, S["fit"] = fit_at_scale(log, ridge_rows=a.ridge_rows, seed=a.seed)
    print(f"model: {S['fit']['items']:,} items, width {S['fit']['node_input_width']}, "
          f"fit {S['fit']['seconds']:.0f} s, mix {S['fit']['mix']}", flush=True)

    # peer: the batch path's states in one call, on the first users' events (up to 2M: the states of
    # the whole log would not fit beside the model and the online state on this machine)
    first = log.take(log.user < np.searchsorted(np.cumsum(np.bincount(log.user)), min(len(log), 2_000_000)) + 1)
    t0 = time.perf_counter()
    lg = model.to_model_ids(first).sort()
    model.states(lg)
    peer = time.perf_counter() - t0
    S["batch_states_peer"] = {"seconds": peer, "events": len(first), "events_per_s": len(first) / peer}
    del lg, first
    print(f"peer, batch states ({S['batch_states_peer']['events']:,} events): "
          f"{S['batch_states_peer']['events_per_s']:,.0f} events/s", flush=True)

    rng = np.random.default_rng(a.seed + 1)
    arrival = np.lexsort((rng.random(len(log)), log.time))
    n = len(arrival)
    a90, a94 = int(0.90 * n), int(0.94 * n)
    rec = OnlineRecommender(model, capacity=1 << 20)

    def stream(rows, bs):
        times = []
        for s in range(0, len(rows), bs):
            batch = _cols(log, rows[s:s + bs])
            t = time.perf_counter()
            rec.update(batch)
            times.append((time.perf_counter() - t, min(bs, len(rows) - s)))
        return np.array(times)

    t10k = stream(arrival[:a90], 10_000)
    half = t10k[len(t10k) // 2:]
    S["update_batch_10000"] = {"events": int(t10k[:, 1].sum()), "seconds": float(t10k[:, 0].sum()),
                               "events_per_s_all": float(t10k[:, 1].sum() / t10k[:, 0].sum()),
                               "events_per_s_second_half": float(half[:, 1].sum() / half[:, 0].sum()),
                               "users_in_state_after": int(rec.n_users)}
    print(f"update, batch 10k: {S['update_batch_10000']['events_per_s_second_half']:,.0f} events/s "
          f"(second half; {rec.n_users:,} users in the state)", flush=True)
    t100 = stream(arrival[a90:a94], 100)
    S["update_batch_100"] = {"events": int(t100[:, 1].sum()), "events_per_s": float(t100[:, 1].sum() / t100[:, 0].sum())}
    t1 = stream(arrival[a94:a94 + a.single], 1)
    S["update_batch_1"] = {"events": int(t1[:, 1].sum()), "events_per_s": float(t1[:, 1].sum() / t1[:, 0].sum()),
                           "median_ms": float(np.median(t1[:, 0]) * 1e3), "p99_ms": float(np.quantile(t1[:, 0], 0.99) * 1e3)}
    print(f"update, batch 100: {S['update_batch_100']['events_per_s']:,.0f} events/s; batch 1: "
          f"{S['update_batch_1']['events_per_s']:,.0f} events/s", flush=True)

    lat, lat_peer, same = [], [], 0
    rows = arrival[a94 + a.single:a94 + a.single + a.latency]
    for r in rows:
        batch = _cols(log, np.array([r]))
        t = time.perf_counter()
        rec.update(batch)
        items, _ = rec.recommend(batch["user"], k=20)
        lat.append(time.perf_counter() - t)
    # the peer: score the same users from their whole history so far (a few, it is slow)
    sent_rows = arrival[:a94 + a.single + a.latency]
    for r in rows[:min(20, len(rows))]:
        u = log.user[r]
        mine = sent_rows[log.user[sent_rows] == u]              # in arrival order, as the state got them
        t = time.perf_counter()
        _, it_peer, _ = model.recommend(log.take(mine), k=20)
        lat_peer.append(time.perf_counter() - t)
        it_mine, _ = rec.recommend(log.user_ids[[u]], k=20)
        same += int(np.array_equal(it_mine, it_peer))
    # the floor of any exact answer: one pass of the ridge's low-rank item table (a GEMV)
    items = model._threshold_tables()["items"]
    q = np.ones(items.shape[1])
    gemv = []
    for _ in range(20):
        t = time.perf_counter()
        items @ q
        gemv.append(time.perf_counter() - t)
    lat = np.array(lat) * 1e3
    S["latency_update1_recommend20"] = {"requests": len(lat), "median_ms": float(np.median(lat)),
                                        "p99_ms": float(np.quantile(lat, 0.99)), "max_ms": float(lat.max()),
                                        "peer_rebuild_user_recommend_median_ms": float(np.median(lat_peer) * 1e3),
                                        "peer_requests": len(lat_peer), "peer_same_lists": same,
                                        "floor_gemv_item_table_median_ms": float(np.median(gemv) * 1e3),
                                        "item_table_bytes": int(items.nbytes)}
    print(f"latency update(1) + recommend(k=20) over {S['fit']['items']:,} items: median "
          f"{np.median(lat):.2f} ms, p99 {np.quantile(lat, 0.99):.2f} ms (peer, rebuild the user: "
          f"{np.median(lat_peer) * 1e3:.2f} ms; same lists {same}/{len(lat_peer)}); one GEMV over the "
          f"{items.nbytes / 2**20:,.0f} MiB item table: {np.median(gemv) * 1e3:.2f} ms", flush=True)

    nb = rec.nbytes()
    S["memory"] = {**nb, "users": int(rec.n_users), "bytes_per_user": nb["total"] / rec.n_users,
                   "floor_bytes_per_user": nb["floor"] / rec.n_users,
                   "retained_events_per_user": nb["retained_events"] / rec.n_users,
                   "events_received_per_user": (a94 + a.single + a.latency) / rec.n_users,
                   "peak_rss_mib": _rss_mib()}
    print(f"state: {nb['total'] / rec.n_users:,.0f} B/user (floor {nb['floor'] / rec.n_users:,.0f}), "
          f"{nb['retained_events'] / rec.n_users:.1f} events retained per user; peak RSS {_rss_mib():,.0f} MiB",
          flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    return out


if __name__ == "__main__":
    main()
