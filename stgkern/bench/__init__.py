"""``stgkern bench``: every op against its peers, on the standard workloads.

Measures the machine's copy bandwidth first, then, per op and workload, the
median time of repeated runs after a warm-up, GFLOP/s, effective GB/s over
the op's byte floor (and as % of the copy), and the ratio to every installed
peer, after checking each peer's output against stgkern's in the same run.

Usage::

    python -m stgkern.bench [--ops spmm topk ...] [--size tiny|small|medium|large]
                            [--device cpu|gpu] [--peers scipy torch_gather ...]
                            [--json FILE] [--plot FILE]
    python -m stgkern.bench compare A.json B.json

Wiring into ``stgkern/cli.py``::

    b = sub.add_parser("bench", help=...); stgkern.bench.add_arguments(b)
    ... elif args.cmd == "bench": return stgkern.bench.run(args)
"""
from __future__ import annotations

import argparse
import json
import sys

from . import workloads  # the shared workloads, also for benchmarks/
from .ops import OPS, PEERS


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``stgkern bench``'s arguments to ``parser``."""
    parser.add_argument("action", nargs="?", default="run", choices=("run", "compare"),
                        help="run the benchmark (default) or compare two JSON files")
    parser.add_argument("files", nargs="*", metavar="FILE", help="compare: the two JSON files A and B")
    parser.add_argument("--ops", nargs="+", choices=OPS, metavar="OP",
                        help=f"ops to run (default all: {', '.join(OPS)})")
    parser.add_argument("--size", default="small", choices=tuple(workloads.SIZES), help="workload size (default small)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--peers", nargs="+", choices=PEERS, metavar="PEER",
                        help=f"peers to time (default all installed: {', '.join(PEERS)})")
    parser.add_argument("--json", metavar="FILE", help="write the full record (raw timings included) here")
    parser.add_argument("--plot", metavar="FILE", help="write a roofline picture here (needs matplotlib)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, help="timed runs per implementation (default 7)")
    parser.add_argument("--budget", type=float, help="seconds after which an implementation's runs stop early "
                        "(after at least 3; default 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    parser.add_argument("--wide", action="store_true",
                        help="print the table as wide as it needs (default: within 120 columns)")
    parser.add_argument("--min-change", type=float, default=0.02,
                        help="compare: smallest relative change ever flagged (default 0.02)")
    parser.add_argument("--all-impls", action="store_true", help="compare: peers too, not only stgkern")
    parser.add_argument("--fail-on-regression", action="store_true",
                        help="compare: exit status 1 when a regression is flagged")
    return parser


def run(args) -> int:
    """Run ``stgkern bench`` with parsed ``args``; returns the exit status."""
    from . import report
    if args.action == "compare":
        from . import compare as C
        if len(args.files) != 2:
            print("stgkern bench compare needs exactly two JSON files: A.json B.json", file=sys.stderr)
            return 2
        a, b = C.load(args.files[0]), C.load(args.files[1])
        rows = C.compare(a, b, args.min_change, None if args.all_impls else ("stgkern",))
        print(C.format_rows(rows, "A", "B"))
        for w in C.warnings(a, b):
            print(f"warning: {w}")
        impls = None if args.all_impls else ("stgkern",)
        for which, keys in zip(("A", "B"), C.unmatched(a, b, impls)):
            for k in keys:
                print(f"only timed in {which}: {' / '.join(k)}")
        return 1 if args.fail_on_regression and any(r["flag"] == "regression" for r in rows) else 0
    if args.files:
        print(f"unexpected arguments {args.files}; did you mean 'compare'?", file=sys.stderr)
        return 2
    if args.plot:
        from .plot import require_matplotlib
        try:
            require_matplotlib()           # fail before the run, not after it
        except ImportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from .runner import run as run_bench
    try:
        record = run_bench(args.ops, args.size, args.device, args.peers, progress=not args.no_progress,
                           seed=args.seed, repeat=args.repeat, budget=args.budget)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report.print_table(record, use_rich=False if args.plain else None, width=None if args.wide else report.WIDTH)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1)
            fh.write("\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from .plot import roofline
        print(f"wrote {roofline(record, args.plot)}", file=sys.stderr)
    bad = [r for r in record["results"] if r["impl"] == "stgkern" and r["status"] in ("mismatch", "error")]
    return 1 if bad else 0


def main(argv=None) -> int:
    """Entry point of ``python -m stgkern.bench`` (and ``stgkern bench`` once wired)."""
    p = argparse.ArgumentParser(prog="stgkern bench", description=__doc__.splitlines()[0])
    return run(add_arguments(p).parse_args(argv))


__all__ = ["add_arguments", "main", "run", "workloads"]
