"""CI compile check for the CUDA kernels (runs whenever nvcc is present).

Compiles every ``csrc/cuda/*.cu`` for each architecture (default sm_80 and
sm_90) with warnings as errors and ``-Xptxas -v``, prints one row per kernel
(kernel, arch, registers, spill stores/loads) and exits non-zero when a file
fails to compile or a hot kernel spills.

    python tools/check_cuda.py            # all files, sm_80 + sm_90
    python tools/check_cuda.py --arch 90  # one architecture
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cuda_build  # noqa: E402

#: Kernels on the critical path of a training step: any spill there fails the check.
HOT_PREFIXES = ("spmm_fwd", "mp_fwd", "sddmm_fwd", "edge_softmax_fwd", "window_graph_fill", "topk_select")

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def parse_ptxas(text: str) -> list[dict]:
    """Rows ``{kernel (mangled), arch, registers, spill_stores, spill_loads}`` from ``ptxas -v`` output."""
    rows, cur = [], None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = {"kernel": m.group(1), "arch": m.group(2), "registers": None, "spill_stores": 0, "spill_loads": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _SPILL.search(line)
        if m:
            cur["spill_stores"], cur["spill_loads"] = int(m.group(1)), int(m.group(2))
        m = _REGS.search(line)
        if m:
            cur["registers"] = int(m.group(1))
    return rows


def _demangle(names: list[str]) -> list[str]:
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return [cuda_build._normalise(d) for d in out.splitlines()]


def check(archs=cuda_build.ARCHS, nvcc: str = "nvcc", files=None) -> tuple[list[dict], list[str]]:
    """Compile and parse; returns (rows, problems)."""
    files = list(files) if files is not None else cuda_build.sources()
    jobs = [(cu, a) for cu in files for a in archs]
    problems: list[str] = []

    def one(job):
        cu, arch = job
        try:
            return cu, parse_ptxas(cuda_build.compile_one(cu, None, nvcc=nvcc, mode="check", archs=(arch,)))
        except subprocess.CalledProcessError as exc:
            problems.append(f"{cu.name} (sm_{arch}) failed to compile:\n{exc.stderr}")
            return cu, []

    with ThreadPoolExecutor(cuda_build.JOBS) as pool:
        results = list(pool.map(one, jobs))
    rows = []
    for cu, rs in results:
        for r in rs:
            r["file"] = cu.name
        rows += rs
    for r, name in zip(rows, _demangle([r["kernel"] for r in rows])):
        r["kernel"] = name
        if r["kernel"].startswith(HOT_PREFIXES) and (r["spill_stores"] or r["spill_loads"]):
            problems.append(f"hot kernel {name} spills on {r['arch']}: "
                            f"{r['spill_stores']} B stores, {r['spill_loads']} B loads")
    if not files:
        problems.append(f"no CUDA sources found under {cuda_build.CSRC / 'cuda'}")
    return rows, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="compute capability without the dot, e.g. 90 (repeatable)")
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "nvcc")
    args = ap.parse_args(argv)
    rows, problems = check(tuple(args.arch or cuda_build.ARCHS), nvcc=args.nvcc)
    width = max([len(r["kernel"]) for r in rows] + [6])
    print(f"{'kernel':<{width}}  arch   regs  spill_st  spill_ld")
    for r in sorted(rows, key=lambda r: (r["kernel"], r["arch"])):
        print(f"{r['kernel']:<{width}}  {r['arch']:<5} {r['registers'] or 0:>5}  {r['spill_stores']:>8}  "
              f"{r['spill_loads']:>8}")
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    print(f"{len(rows)} kernels checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
