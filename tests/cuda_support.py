"""Shared pieces of the CUDA tests (tests/test_cuda*.py).

* ``cp``: CuPy with a CUDA device, else skip;
* ``emu``: the .cu sources compiled with g++ against
  ``csrc/emu/cuda_host_emu.h`` (one std::thread per CUDA thread, barriers in
  every shuffle/ballot) and run through the real launch wrappers of
  ``stgkern._cuda``, with NumPy standing in for CuPy.  This checks kernel
  logic, the wrappers' argument lists and the launch geometry on machines
  without a GPU; it says nothing about speed;
* ``small_blocks``: launch geometries that reach every path;
* random graphs and tolerances.

conftest.py re-exports the fixtures, so test files need not import them.
"""
import ctypes
import hashlib
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stgkern import Graph, config

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

DTYPES = [np.float32, np.float64]
FEATS = [1, 4, 33, 127]


@pytest.fixture(scope="module")
def cp():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # no driver
        pytest.skip(f"no usable CUDA device ({exc})")
    return cupy


@pytest.fixture(params=[(256, 1024), (32, 8), (128, 4)], ids=["default", "tpb32-long8", "tpb128-long4"])
def small_blocks(request):
    """Default geometry, then tiny blocks and a tiny long-row threshold so the
    many-block path and the block-per-row path (one and several warps) run."""
    tpb, long_row = request.param
    with config.override(cuda_threads_per_block=tpb, cuda_long_row=long_row):
        yield


def random_graph(rng, n, n_src=None, avg_deg=3.0, index_dtype=None, empty_rows=True, long_row=0):
    n_src = n if n_src is None else n_src
    deg = rng.poisson(avg_deg, n).astype(np.int64)
    if not empty_rows:
        deg = np.maximum(deg, 1)
    if long_row and n:
        deg[rng.integers(n)] = long_row  # a row longer than a warp's index chunk
    if n_src == 0:
        deg[:] = 0
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(deg, out=indptr[1:])
    rows = [np.sort(rng.choice(n_src, size=min(d, n_src), replace=False)) if d else np.empty(0, np.int64)
            for d in deg]
    deg = np.array([len(r) for r in rows], np.int64)
    np.cumsum(deg, out=indptr[1:])
    indices = np.concatenate(rows) if rows else np.empty(0, np.int64)
    if index_dtype is not None:
        indices = indices.astype(index_dtype)
    return Graph(indptr, indices, n_src)


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)


def close(gpu, cpu, dtype, cp):
    if cpu is None:
        assert gpu is None
        return
    got = cp.asnumpy(gpu)
    assert got.shape == cpu.shape and got.dtype == cpu.dtype
    np.testing.assert_allclose(got, cpu, **tol(dtype))




# through the real launch wrappers of stgkern._cuda, with NumPy standing in for
# CuPy.  This checks kernel logic, the wrappers' argument lists and the launch
# geometry on machines without a GPU; it says nothing about speed.

_EMU_TYPES = {("double", "int"): "d_i", ("double", "long long"): "d_ll", ("float", "int"): "f_i",
              ("float", "long long"): "f_ll"}
_HARNESS = r'''
#include <utility>
template <typename P> P emu_load(void* a) { return *reinterpret_cast<P*>(a); }
template <typename... P, std::size_t... Is>
void emu_call(void (*k)(P...), void** a, std::index_sequence<Is...>) { k(emu_load<P>(a[Is])...); }
template <typename... P>
void emu_run(void (*k)(P...), void** a, unsigned g, unsigned b) {
    emu_launch(g, b, [&] { emu_call(k, a, std::index_sequence_for<P...>{}); });
}
#define EMU(name, T, I, tag) \
    extern "C" void emu_##name##_##tag(unsigned g, unsigned b, void** a) { emu_run(&name<T, I>, a, g, b); }
'''


#: Ops whose kernels are instantiated for other (value, index) pairs than _EMU_TYPES.
_EMU_OP_TYPES = {"window_graph": {("long long", "int"): "ll_i", ("long long", "long long"): "ll_ll",
                                  ("double", "int"): "d_i", ("double", "long long"): "d_ll"},
                 "item_graph": {("long long", "int"): "ll_i", ("long long", "long long"): "ll_ll"},
                 "time_intervals": {("long long", "long long"): "ll_ll", ("double", "long long"): "d_ll"}}
_EMU_TAGS = {**_EMU_TYPES, **{pair: tag for types in _EMU_OP_TYPES.values() for pair, tag in types.items()}}


def _emu_build(op, kernels, out_dir):
    import cuda_build
    cu = cuda_build.CSRC / "cuda" / f"{op}.cu"
    emu_h = cuda_build.CSRC / "emu" / "cuda_host_emu.h"
    types = _EMU_OP_TYPES.get(op, _EMU_TYPES)
    body = "\n".join(f"EMU({k}, {t}, {i}, {tag})" for k in kernels for (t, i), tag in types.items())
    text = f'#include "{cu}"\n{_HARNESS}\n{body}\n'
    key = hashlib.sha1(b"".join(p.read_bytes() for p in
                                [cu, emu_h, *sorted((cuda_build.CSRC / "include").rglob("*.cuh"))])
                       + text.encode()).hexdigest()[:16]
    so = out_dir / f"{op}-{key}.so"
    if not so.exists():
        src = out_dir / f"{op}-{key}.cpp"
        src.write_text(text)
        subprocess.run(["g++", "-std=c++20", "-O1", "-pthread", "-fPIC", "-shared", "-x", "c++",
                        "-include", str(emu_h), f"-I{cuda_build.CSRC / 'include'}", str(src), "-o", str(so)],
                       check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(so))


class _EmuModule:
    def __init__(self, lib):
        self.lib = lib

    def function(self, name):
        base, types = name[:-1].split("<", 1)
        tag = _EMU_TAGS[tuple(types.split(","))]
        fn = getattr(self.lib, f"emu_{base}_{tag}")

        def call(grid, block, args):
            holders = []
            for a in args:
                if isinstance(a, np.ndarray):
                    assert a.flags.c_contiguous, f"{name}: non-contiguous array argument"
                    holders.append(ctypes.c_void_p(a.ctypes.data))
                elif isinstance(a, np.int32):
                    holders.append(ctypes.c_int32(int(a)))
                elif isinstance(a, np.int64):
                    holders.append(ctypes.c_int64(int(a)))
                elif isinstance(a, np.float64):
                    holders.append(ctypes.c_double(float(a)))
                elif isinstance(a, np.uint64):  # a null pointer
                    holders.append(ctypes.c_void_p(int(a) or None))
                else:
                    raise TypeError(f"{name}: unexpected kernel argument {type(a)}")
            argv = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
            fn(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), argv)
        return call


@pytest.fixture(scope="module")
def emu(request, tmp_path_factory):
    """Patch stgkern._cuda's loader to run the g++-compiled kernels; yields the wrapper modules."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    from stgkern._cuda import _loader
    try:
        out_dir = Path(request.config.cache.mkdir("stgkern_cuda_emu"))
    except AttributeError:  # cache plugin disabled
        out_dir = tmp_path_factory.mktemp("stgkern_cuda_emu")
    libs = {}

    def module(op, dtype, index_dtype):
        if op not in libs:
            libs[op] = _emu_build(op, _loader.KERNELS[op], out_dir)
        return _EmuModule(libs[op])

    mp = pytest.MonkeyPatch()
    mp.setattr(_loader, "_module", module)
    mp.setitem(sys.modules, "cupy", np)  # the wrappers' `import cupy as cp` gets NumPy
    mods = {op: importlib.import_module(f"stgkern._cuda.{op}") for op in _loader.KERNELS}
    try:
        yield mods
    finally:
        mp.undo()


EMU_GEOMETRY = [(32, 3), (96, 5)]  # (threads per block, long-row threshold): warp and block paths
EMU_TYPES = [(np.float64, np.int32), (np.float32, np.int64)]


def emu_tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def emu_graph(rng, index_dtype, n=23, n_src=19):
    g = random_graph(rng, n, n_src, long_row=37)
    g.indices = g.indices.astype(index_dtype)
    return g
