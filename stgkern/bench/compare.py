"""``stgkern bench compare A.json B.json``: per measurement, the time ratio B/A.

A change is flagged when the ratio leaves the run-to-run spread measured in
the two files: a regression when ``B/A - 1 > spread_A + spread_B`` (each the
interquartile range over the median of that file's raw timings), an
improvement when ``A/B - 1`` exceeds the same, with ``min_change`` as a floor
on the tolerance.
"""
from __future__ import annotations

import json

import numpy as np


def load(path) -> dict:
    with open(path) as fh:
        rec = json.load(fh)
    if not isinstance(rec, dict) or "results" not in rec:
        raise ValueError(f"{path} is not a stgkern bench JSON file (no 'results')")
    return rec


def _key(r):
    return (r["op"], r["variant"], r["workload"], r["impl"])


def _spread(r):
    if r.get("spread") is not None:
        return float(r["spread"])
    ts = np.asarray(r.get("times_s") or [])
    if ts.size < 2:
        return 0.0
    q25, q50, q75 = np.percentile(ts, [25, 50, 75])
    return float((q75 - q25) / q50)


def compare(a: dict, b: dict, min_change: float = 0.02, impls=("stgkern",)) -> list[dict]:
    """Rows for every measurement timed in both records (``impls``; None for all)."""
    ia = {_key(r): r for r in a["results"] if r.get("median_s")}
    out = []
    for r in b["results"]:
        k = _key(r)
        if (impls is not None and r["impl"] not in impls) or not r.get("median_s") or k not in ia:
            continue
        ra = ia[k]
        ratio = r["median_s"] / ra["median_s"]
        tol = max(_spread(ra) + _spread(r), min_change)
        flag = "regression" if ratio - 1 > tol else "improvement" if 1 / ratio - 1 > tol else ""
        out.append({"op": k[0], "variant": k[1], "workload": k[2], "impl": k[3], "a_s": ra["median_s"],
                    "b_s": r["median_s"], "ratio": ratio, "tolerance": tol, "flag": flag})
    return out


def unmatched(a: dict, b: dict, impls=("stgkern",)) -> tuple[list, list]:
    """Measurements timed in only one of the records: ``(only_in_a, only_in_b)`` as key tuples."""
    def timed(rec):
        return {_key(r) for r in rec["results"] if r.get("median_s") and (impls is None or r["impl"] in impls)}
    ka, kb = timed(a), timed(b)
    return sorted(ka - kb), sorted(kb - ka)


def warnings(a: dict, b: dict) -> list[str]:
    """What makes the two records hard to compare: different machines or sizes, an oversubscribed run."""
    out = []
    for name, rec in (("A", a), ("B", b)):
        m = rec.get("meta", {})
        load = [x[0] for x in (m.get("loadavg"), m.get("loadavg_after")) if x]
        if load and m.get("cpu_count") and max(load) > m["cpu_count"]:
            out.append(f"{name} ran with load average {max(load):.1f} on {m['cpu_count']} CPUs: its timings are noisy "
                       "beyond what its spread shows")
    for field in ("size", "device"):
        if a.get(field) != b.get(field):
            out.append(f"{field} differs: A {a.get(field)}, B {b.get(field)}")
    ma, mb = a.get("meta", {}), b.get("meta", {})
    for field in ("cpu_model", "gpu_model", "numba_threads"):
        if ma.get(field) != mb.get(field):
            out.append(f"{field} differs: A {ma.get(field)}, B {mb.get(field)}")
    return out


def format_rows(rows, a_name="A", b_name="B") -> str:
    head = ("op", "variant", "workload", "impl", f"{a_name} ms", f"{b_name} ms", "B/A", "tol", "")
    body = [(r["op"], r["variant"], r["workload"], r["impl"], f"{1e3 * r['a_s']:.3g}", f"{1e3 * r['b_s']:.3g}",
             f"{r['ratio']:.3f}", f"±{100 * r['tolerance']:.0f}%", r["flag"].upper()) for r in rows]
    widths = [max([len(h)] + [len(x[i]) for x in body]) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in [head] + body]
    n_reg = sum(r["flag"] == "regression" for r in rows)
    n_imp = sum(r["flag"] == "improvement" for r in rows)
    lines.append(f"\n{len(rows)} compared, {n_reg} regression(s), {n_imp} improvement(s) beyond the spread")
    return "\n".join(lines)
