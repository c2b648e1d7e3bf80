"""Build hook: ahead-of-time compilation of csrc/cuda/*.cu into fatbins.

When ``nvcc`` is on PATH (and ``STGKERN_NO_CUDA_BUILD`` is unset) every
``csrc/cuda/<op>.cu`` is compiled for sm_80 and sm_90 plus PTX into
``stgkern/_cuda/prebuilt/<op>.fatbin``; the runtime loader prefers those and
falls back to NVRTC through CuPy otherwise.  The sources themselves are always
copied to ``stgkern/_cuda/prebuilt/src`` so that a wheel built without nvcc can
still compile its kernels with NVRTC on a GPU machine.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def copy_sources(dest: Path) -> None:
    """Ship csrc/cuda and csrc/include in the package: the NVRTC fallback needs them."""
    for sub in ("cuda", "include"):
        src = ROOT / "csrc" / sub
        if src.is_dir():
            shutil.copytree(src, dest / sub, dirs_exist_ok=True)


def build_fatbins(out_dir: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None or os.environ.get("STGKERN_NO_CUDA_BUILD"):
        return
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from cuda_build import compile_all  # noqa: E402
    except ImportError:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        compile_all(out_dir, nvcc=nvcc, mode="fatbin")
    except (subprocess.CalledProcessError, OSError) as exc:  # keep the install usable
        print(f"stgkern: ahead-of-time CUDA build skipped ({exc}); NVRTC will be used", file=sys.stderr)


class BuildPyWithCuda(build_py):
    def run(self):
        super().run()
        copy_sources(Path(self.build_lib) / "stgkern" / "_cuda" / "prebuilt" / "src")
        build_fatbins(Path(self.build_lib) / "stgkern" / "_cuda" / "prebuilt")


setup(cmdclass={"build_py": BuildPyWithCuda})
