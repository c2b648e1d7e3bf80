"""Ahead-of-time build and compile checks for ``csrc/cuda/*.cu``.

Used three ways:

* ``setup.py`` calls :func:`compile_all` (mode ``"fatbin"``) to write
  ``<out_dir>/<op>.fatbin`` (sm_80, sm_90 SASS + compute_90 PTX), a
  ``<op>.names.json`` map from name expression (``"spmm_fwd<float,int>"``) to
  mangled symbol, and a copy of the CUDA sources under ``<out_dir>/src`` so an
  installed wheel can still fall back to NVRTC.
* ``tools/check_cuda.py`` calls :func:`compile_one` (mode ``"check"``) to run
  ptxas with ``-v`` and parse registers and spills per kernel.
* ``python tools/cuda_build.py OUT_DIR`` builds the fatbins by hand.

Every .cu file carries a ``#ifdef STGKERN_AOT`` block that takes the address
of each kernel instantiation, so nvcc emits all of them; the loader's name
expressions (``stgkern/_cuda/_loader.py``) list the same kernels.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
ARCHS = ("80", "90")
#: Parallel compiles: one per core, at least two (CI and the dev machine have two), at most eight.
JOBS = max(2, min(8, os.cpu_count() or 2))


def sources() -> list[Path]:
    return sorted((CSRC / "cuda").glob("*.cu"))


def _base_flags() -> list[str]:
    return ["-std=c++17", "-O3", f"-I{CSRC / 'include'}", "-DSTGKERN_AOT", "-Werror", "all-warnings"]


def _gencode(archs) -> list[str]:
    flags = []
    for a in archs:
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    last = archs[-1]
    flags += ["-gencode", f"arch=compute_{last},code=compute_{last}"]  # PTX for newer GPUs
    return flags


_ENTRY = re.compile(r"^\.(?:visible\s+)?\.entry\s+(\S+?)\s*\(", re.M)


def _normalise(demangled: str) -> str:
    """``void spmm_fwd<float, long long>(...)`` -> ``spmm_fwd<float,long long>``."""
    name = demangled.strip()
    if name.startswith("void "):
        name = name[5:]
    depth = 0
    for pos, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            name = name[:pos]
            break
    return re.sub(r"\s*([<>,])\s*", r"\1", name)


def kernel_names(cu: Path, nvcc: str = "nvcc") -> dict[str, str]:
    """Map name expression -> mangled symbol for every kernel in ``cu``."""
    cxxfilt = shutil.which("c++filt")
    if cxxfilt is None:
        raise OSError("c++filt not found: cannot map kernel names for the prebuilt fatbin")
    ptx = subprocess.run([nvcc, *_base_flags(), "-ptx", f"-arch=compute_{ARCHS[-1]}", str(cu), "-o", "-"],
                         check=True, capture_output=True, text=True).stdout
    mangled = _ENTRY.findall(ptx)
    demangled = subprocess.run([cxxfilt], input="\n".join(mangled), check=True, capture_output=True,
                               text=True).stdout.splitlines()
    return {_normalise(d): m for d, m in zip(demangled, mangled)}


def compile_one(cu: Path, out: Path | None, *, nvcc: str = "nvcc", mode: str = "fatbin", archs=ARCHS) -> str:
    """Compile one source; returns nvcc's stderr (ptxas ``-v`` report in check mode)."""
    if mode == "fatbin":
        cmd = [nvcc, *_base_flags(), "-fatbin", *_gencode(archs), str(cu), "-o", str(out)]
    elif mode == "check":
        if len(archs) != 1:  # -cubin takes one arch per call
            raise ValueError("check mode compiles one arch per call")
        cmd = [nvcc, *_base_flags(), "-cubin", "-Xptxas", "-v", f"-arch=sm_{archs[0]}", str(cu),
               "-o", str(out) if out is not None else "/dev/null"]
    else:
        raise ValueError(f"mode must be 'fatbin' or 'check', got {mode!r}")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, cmd, res.stdout, res.stderr)
    return res.stderr


def compile_all(out_dir, nvcc: str = "nvcc", mode: str = "fatbin", archs=ARCHS, jobs: int = JOBS) -> list[Path]:
    """Build ``<out_dir>/<op>.fatbin`` + ``<op>.names.json`` for every op and copy the sources."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def build(cu: Path) -> Path:
        out = out_dir / f"{cu.stem}.fatbin"
        compile_one(cu, out, nvcc=nvcc, mode=mode, archs=archs)
        (out_dir / f"{cu.stem}.names.json").write_text(json.dumps(kernel_names(cu, nvcc), indent=1, sort_keys=True))
        return out

    with ThreadPoolExecutor(jobs) as pool:
        built = list(pool.map(build, sources()))
    copy_sources(out_dir / "src")
    return built


def copy_sources(dest) -> None:
    """Copy csrc/cuda and csrc/include under ``dest`` (the NVRTC fallback of an installed package)."""
    dest = Path(dest)
    for sub in ("cuda", "include"):
        if (dest / sub).exists():
            shutil.rmtree(dest / sub)
        shutil.copytree(CSRC / sub, dest / sub)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/cuda_build.py OUT_DIR")
    for p in compile_all(sys.argv[1], nvcc=shutil.which("nvcc") or "nvcc"):
        print(p)
