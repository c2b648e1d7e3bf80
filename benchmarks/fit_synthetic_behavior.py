"""Fit the synthetic process's behaviour tables to the Taobao sample (how STGParams' defaults were set).

    python benchmarks/fit_synthetic_behavior.py [--iterations 16]

Targets, from :func:`stgkern.log_marginals` of the UserBehavior sample at
``<repo>/../shared/data``: the next-behaviour table given the previous
behaviour (``behavior_transitions``) and the per-user spread of each
behaviour's rate (``behavior_overdispersion``).  Knobs: the rows of
``STGParams.F_new`` (by previous behaviour) and ``behavior_sigma`` (the
users' propensities); ``F_rep``, ``F_ret`` and ``rho`` stay as they are.  A
fixed-point iteration on a 4,000-user log at Taobao's events per user:
each ``F_new`` row is multiplied by ``(target / generated) ** 0.7`` and
renormalised, each sigma by ``(target / generated) ** 0.25``.  Prints the
fitted values (four decimals, the pv share absorbing the rounding) and the
last iteration's tables.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

import stgkern
from stgkern.data import STGParams, log_marginals, synthetic_log

ROOT = Path(__file__).resolve().parents[1]
TAOBAO = ROOT.parent / "shared" / "data" / "taobao_userbehavior" / "UserBehavior_sample.csv"
NAMES = ("pv", "cart", "fav", "buy")


def tables(m):
    T = np.array([[m["behavior_transitions"][a][b] for b in NAMES] for a in NAMES])
    return T, np.array([m["behavior_overdispersion"][b] for b in NAMES])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=16)
    ap.add_argument("--users", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)
    if not TAOBAO.is_file():
        raise SystemExit(f"the Taobao sample is not at {TAOBAO}")
    tb = log_marginals(stgkern.load_taobao(TAOBAO))
    T_tb, od_tb = tables(tb)
    prm = STGParams()
    F = np.array(prm.behavior_tables()[1])
    sig = np.array(prm.behavior_sigma, np.float64)
    size = dict(n_users=args.users, events_per_user=tb["events_per_user"]["mean"], n_items=20_000,
                n_categories=1000, seed=args.seed)
    for it in range(args.iterations):
        p = dataclasses.replace(prm, F_new=tuple(map(tuple, F)), behavior_sigma=tuple(sig))
        T, od = tables(log_marginals(synthetic_log(params=p, **size)))
        print(f"iteration {it}: largest transition error {np.abs(T - T_tb).max():.4f}, "
              f"overdispersion {np.round(od[1:], 2).tolist()} (Taobao {np.round(od_tb[1:], 2).tolist()})")
        F = F * (T_tb / T) ** 0.7
        F /= F.sum(axis=1, keepdims=True)
        sig[1:] *= (od_tb[1:] / od[1:]) ** 0.25
    F = np.round(F, 4)
    F[:, 0] = 1.0 - F[:, 1:].sum(axis=1)
    print("F_new =", tuple(tuple(float(x) for x in row) for row in F))
    print("behavior_sigma =", tuple(float(round(x, 3)) for x in sig))
    print("transitions (rows: previous behaviour), generated / Taobao:")
    for a, g, t in zip(NAMES, T, T_tb):
        print(f"  {a:5s}", " ".join(f"{x:.3f}" for x in g), " / ", " ".join(f"{x:.3f}" for x in t))


if __name__ == "__main__":
    main()
