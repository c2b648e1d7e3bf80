"""Build hook: ahead-of-time compilation of csrc/cuda/*.cu into fatbins.

When ``nvcc`` is on PATH (and ``STGKERN_NO_CUDA_BUILD`` is unset) every
``csrc/cuda/<op>.cu`` is compiled for sm_80 and sm_90 plus PTX into
``stgkern/_cuda/prebuilt/<op>.fatbin``; the runtime loader prefers those and
falls back to NVRTC through CuPy otherwise.  Without nvcc the package installs
as pure Python + Numba.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


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
        build_fatbins(Path(self.build_lib) / "stgkern" / "_cuda" / "prebuilt")


setup(cmdclass={"build_py": BuildPyWithCuda})
