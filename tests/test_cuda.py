"""GPU backend: CUDA kernels agree with the CPU kernels through the public functions.

The GPU cases (marker ``cuda``) need CuPy and a CUDA device and skip
otherwise.  Three groups run without a GPU:

* import/loader/ptxas-parser checks;
* ``test_aot_emits_every_loader_kernel`` (needs nvcc): the ``STGKERN_AOT``
  instantiations match the loader's name expressions (CI also runs
  ``tools/check_cuda.py`` for sm_80 and sm_90);
* ``test_emulated_*`` (needs g++): the .cu sources compiled for the host
  against ``csrc/emu/cuda_host_emu.h`` and run through the real launch
  wrappers, compared with ``tests/naive.py`` and the Numba backends.

Fixtures (``cp``, ``emu``, ``small_blocks``) and helpers live in
tests/cuda_support.py, shared with tests/test_cuda_<op>.py.
"""
import importlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import stgkern
from stgkern import Graph, config
from stgkern.edge import common_neighbor_fusion_backward as cnf_backward
from cuda_support import (ROOT, DTYPES, EMU_GEOMETRY, EMU_TYPES, FEATS, close, emu_graph as _emu_graph,
                          emu_tol as _emu_tol, random_graph)


# ---------------------------------------------------------------- spmm
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F", FEATS)
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_spmm_matches_cpu(cp, small_blocks, rng, dtype, F, reduce, weighted):
    g = random_graph(rng, 70, 50, long_row=75)
    X = rng.standard_normal((50, F)).astype(dtype)
    X[3] = X[4]  # ties between sources
    w = rng.standard_normal(g.nnz).astype(dtype) if weighted else None
    gg = g.to("gpu")
    out_c, arg_c = stgkern.spmm(g, X, w, reduce=reduce, return_arg=True)
    out_g, arg_g = stgkern.spmm(gg, cp.asarray(X), None if w is None else cp.asarray(w), reduce=reduce,
                                return_arg=True)
    close(out_g, out_c, dtype, cp)
    if arg_c is not None:
        np.testing.assert_array_equal(cp.asnumpy(arg_g), arg_c)
    go = rng.standard_normal(out_c.shape).astype(dtype)
    gx_c, gw_c = stgkern.spmm_backward(g, go, X, w, reduce=reduce, arg=arg_c)
    gx_g, gw_g = stgkern.spmm_backward(gg, cp.asarray(go), cp.asarray(X), None if w is None else cp.asarray(w),
                                       reduce=reduce, arg=arg_g)
    close(gx_g, gx_c, dtype, cp)
    close(gw_g, gw_c, dtype, cp)


@pytest.mark.cuda
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_spmm_index_types_and_empty(cp, rng, index_dtype):
    for n, n_src in [(0, 0), (1, 1), (5, 0), (40, 40)]:
        g = random_graph(rng, n, n_src)
        gg = g.to("gpu")
        gg.indices = gg.indices.astype(index_dtype)  # exercise both kernel instantiations
        X = rng.standard_normal((n_src, 3)).astype(np.float32)
        out_c = stgkern.spmm(g, X, reduce="max")
        out_g = stgkern.spmm(gg, cp.asarray(X), reduce="max")
        close(out_g, out_c, np.float32, cp)


@pytest.mark.cuda
def test_spmm_deterministic(cp, rng):
    g = random_graph(rng, 300, avg_deg=20).to("gpu")
    X = cp.asarray(rng.standard_normal((300, 64)).astype(np.float32))
    a = stgkern.spmm(g, X)
    b = stgkern.spmm(g, X)
    assert bool((a == b).all())
    ga, _ = stgkern.spmm_backward(g, a, X)
    gb, _ = stgkern.spmm_backward(g, b, X)
    assert bool((ga == gb).all())


# ---------------------------------------------------------------- message_passing
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F", [1, 33])
@pytest.mark.parametrize("op", ["mul", "add"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("e_shape", ["full", "vector", "column"])
def test_message_passing_matches_cpu(cp, small_blocks, rng, dtype, F, op, reduce, e_shape):
    g = random_graph(rng, 60, 45, long_row=40)
    X = rng.standard_normal((45, F)).astype(dtype)
    E = {"full": rng.standard_normal((g.nnz, F)), "vector": rng.standard_normal(g.nnz),
         "column": rng.standard_normal((g.nnz, 1))}[e_shape].astype(dtype)
    gg = g.to("gpu")
    out_c, arg_c = stgkern.message_passing(g, X, E, op=op, reduce=reduce, return_arg=True)
    out_g, arg_g = stgkern.message_passing(gg, cp.asarray(X), cp.asarray(E), op=op, reduce=reduce,
                                           return_arg=True)
    close(out_g, out_c, dtype, cp)
    go = rng.standard_normal(out_c.shape).astype(dtype)
    gx_c, ge_c = stgkern.message_passing_backward(g, go, X, E, op=op, reduce=reduce, arg=arg_c)
    gx_g, ge_g = stgkern.message_passing_backward(gg, cp.asarray(go), cp.asarray(X), cp.asarray(E), op=op,
                                                  reduce=reduce, arg=arg_g)
    close(gx_g, gx_c, dtype, cp)
    close(ge_g, ge_c, dtype, cp)


# ---------------------------------------------------------------- sddmm
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F", [1, 4, 33])
@pytest.mark.parametrize("op", ["dot", "cosine", "add", "sub", "mul"])
def test_sddmm_matches_cpu(cp, small_blocks, rng, dtype, F, op):
    g = random_graph(rng, 50, 40, long_row=35)
    X = rng.standard_normal((50, F)).astype(dtype)
    Y = rng.standard_normal((40, F)).astype(dtype)
    X[2] = 0  # zero norm: cosine gives 0 and no gradient
    gg = g.to("gpu")
    close(stgkern.sddmm(gg, cp.asarray(X), cp.asarray(Y), op=op), stgkern.sddmm(g, X, Y, op=op), dtype, cp)
    out = stgkern.sddmm(g, X, Y, op=op)
    go = rng.standard_normal(out.shape).astype(dtype)
    gx_c, gy_c = stgkern.sddmm_backward(g, go, X, Y, op=op)
    gx_g, gy_g = stgkern.sddmm_backward(gg, cp.asarray(go), cp.asarray(X), cp.asarray(Y), op=op)
    close(gx_g, gx_c, dtype, cp)
    close(gy_g, gy_c, dtype, cp)


# ---------------------------------------------------------------- edge_softmax
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("H", [None, 1, 3])
def test_edge_softmax_matches_cpu(cp, small_blocks, rng, dtype, H):
    g = random_graph(rng, 80, long_row=100)
    shape = (g.nnz,) if H is None else (g.nnz, H)
    s = (rng.standard_normal(shape) * 5).astype(dtype)
    gg = g.to("gpu")
    out_c = stgkern.edge_softmax(g, s)
    out_g = stgkern.edge_softmax(gg, cp.asarray(s))
    close(out_g, out_c, dtype, cp)
    go = rng.standard_normal(shape).astype(dtype)
    close(stgkern.edge_softmax_backward(gg, cp.asarray(go), out_g),
          stgkern.edge_softmax_backward(g, go, out_c), dtype, cp)


# ---------------------------------------------------------------- segment_reduce
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F", [1, 33])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "last"])
def test_segment_reduce_matches_cpu(cp, small_blocks, rng, dtype, F, reduce):
    lens = rng.integers(0, 6, 30)
    lens[0] = 0
    ptr = np.zeros(31, np.int64)
    np.cumsum(lens, out=ptr[1:])
    X = rng.standard_normal((int(ptr[-1]), F)).astype(dtype)
    out_c, arg_c = stgkern.segment_reduce(X, ptr, reduce=reduce, return_arg=True)
    out_g, arg_g = stgkern.segment_reduce(cp.asarray(X), cp.asarray(ptr), reduce=reduce, return_arg=True)
    close(out_g, out_c, dtype, cp)
    if arg_c is not None:
        np.testing.assert_array_equal(cp.asnumpy(arg_g), arg_c)
    go = rng.standard_normal(out_c.shape).astype(dtype)
    close(stgkern.segment_reduce_backward(cp.asarray(go), cp.asarray(X), cp.asarray(ptr), reduce=reduce, arg=arg_g),
          stgkern.segment_reduce_backward(go, X, ptr, reduce=reduce, arg=arg_c), dtype, cp)


# ---------------------------------------------------------------- common_neighbor_fusion
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("F", [1, 33])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_common_neighbor_fusion_matches_cpu(cp, small_blocks, rng, dtype, F, weighted):
    # dense enough that rows share neighbours; one row past 32 entries (several search chunks)
    g = random_graph(rng, 45, avg_deg=8.0, long_row=40)
    X = rng.standard_normal((45, F)).astype(dtype)
    w = rng.standard_normal(g.nnz).astype(dtype) if weighted else None
    gg = g.to("gpu")
    wg = None if w is None else cp.asarray(w)
    out_c = stgkern.common_neighbor_fusion(g, X, w)
    assert np.abs(out_c).sum() > 0  # the case has common neighbours at all
    close(stgkern.common_neighbor_fusion(gg, cp.asarray(X), wg), out_c, dtype, cp)
    go = rng.standard_normal(out_c.shape).astype(dtype)
    gx_c, gw_c = cnf_backward(g, go, X, w)
    gx_g, gw_g = cnf_backward(gg, cp.asarray(go), cp.asarray(X), wg)
    close(gx_g, gx_c, dtype, cp)
    close(gw_g, gw_c, dtype, cp)


# ---------------------------------------------------------------- bad input, loader
@pytest.mark.cuda
def test_mixed_numpy_cupy_raises(cp, rng):
    g = random_graph(rng, 10)
    X = rng.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        stgkern.sddmm(g.to("gpu"), X, X)
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        stgkern.sddmm(g, cp.asarray(X), cp.asarray(X))


@pytest.mark.cuda
def test_wrong_device_raises(cp, rng):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    g = random_graph(rng, 10).to("gpu")
    with cp.cuda.Device(1):
        X = cp.ones((10, 4), cp.float32)
    with pytest.raises(ValueError, match="different GPUs"):
        stgkern.sddmm(g, X, X)


@pytest.mark.cuda
def test_debug_mode_and_info(cp, rng):
    g = random_graph(rng, 20).to("gpu")
    with config.override(cuda_debug=True):
        stgkern.edge_softmax(g, cp.ones(g.nnz, cp.float32))
    from stgkern import _cuda
    info = _cuda.info()
    assert info["available"] and info["paths"]["edge_softmax"]
    assert any(k.startswith("edge_softmax_fwd<float,") for k in info["loaded"])


def test_import_does_not_touch_cupy():
    code = ("import sys, stgkern, stgkern._cuda, stgkern._cuda.spmm, stgkern._cuda.sddmm, "
            "stgkern._cuda.message_passing, stgkern._cuda.edge_softmax, stgkern._cuda.segment_reduce, "
            "stgkern._cuda.topk, stgkern._cuda.node_features, stgkern._cuda.time_encoding, "
            "stgkern._cuda.time_decay, stgkern._cuda.window_graph, stgkern.features, stgkern.readout;"
            "assert 'cupy' not in sys.modules, 'cupy imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_info_without_device_is_a_dict():
    from stgkern import _cuda
    info = _cuda.info()
    assert set(info) >= {"available", "device", "paths", "loaded", "source_root"}
    assert info["source_root"] is not None, "csrc/ must be found next to the package in a source checkout"


def test_parse_ptxas():
    import check_cuda
    text = ("ptxas info    : Compiling entry function '_Z3fooIfiEvv' for 'sm_90'\n"
            "ptxas info    : Function properties for _Z3fooIfiEvv\n"
            "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
            "ptxas info    : Used 255 registers, used 0 barriers\n")
    (row,) = check_cuda.parse_ptxas(text)
    assert row == {"kernel": "_Z3fooIfiEvv", "arch": "sm_90", "registers": 255, "spill_stores": 4,
                   "spill_loads": 12}


def test_normalise_demangled_names():
    import cuda_build
    assert cuda_build._normalise("void spmm_fwd<float, long long>(long long const*, int)") == \
        "spmm_fwd<float,long long>"


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")


@needs_nvcc
@pytest.mark.slow
@pytest.mark.parametrize("op", ["spmm", "common_neighbor_fusion", "topk", "graph_conv", "score_cross_entropy"])
def test_aot_emits_every_loader_kernel(op):
    """The STGKERN_AOT instantiation block and the loader's name expressions agree."""
    if shutil.which("c++filt") is None:
        pytest.skip("c++filt not found")
    import cuda_build
    from stgkern._cuda import _loader
    names = cuda_build.kernel_names(cuda_build.CSRC / "cuda" / f"{op}.cu")
    want = {_loader.name_expression(k, t, i) for k in _loader.KERNELS[op]
            for t in (np.float32, np.float64) for i in (np.int32, np.int64)}
    assert want <= set(names), sorted(want - set(names))


@needs_nvcc
@pytest.mark.slow
def test_every_source_compiles_without_hot_spills():
    """tools/check_cuda.py for one architecture (CI runs both)."""
    import check_cuda
    import cuda_build
    rows, problems = check_cuda.check(archs=("90",))
    assert not problems, "\n".join(problems)
    assert {r["file"] for r in rows} == {p.name for p in cuda_build.sources()}


def test_every_source_has_a_loader_entry():
    import cuda_build
    from stgkern._cuda import _loader
    ops = {p.stem for p in cuda_build.sources()}
    assert ops == set(_loader.KERNELS)
    for op in ops:  # and a launch wrapper module of the same name
        importlib.import_module(f"stgkern._cuda.{op}")


# ---------------------------------------------------------------- host emulation of the CUDA sources
# The kernels in csrc/cuda are compiled with g++ against csrc/emu/cuda_host_emu.h
# (one std::thread per CUDA thread, barriers in every shuffle/ballot) and run


@pytest.mark.slow
@pytest.mark.parametrize("geom", EMU_GEOMETRY, ids=lambda p: f"tpb{p[0]}-long{p[1]}")
@pytest.mark.parametrize("types", EMU_TYPES, ids=["f64-i32", "f32-i64"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_emulated_spmm_and_message_passing(emu, rng, geom, types, reduce):
    from naive import naive_gather_reduce, naive_gather_reduce_backward
    dtype, idx = types
    g = _emu_graph(rng, idx)
    F = 35  # two feature chunks, the second partial
    X = rng.standard_normal((g.n_src, F)).astype(dtype)
    X[1] = X[2]  # ties
    go = rng.standard_normal((g.n_nodes, F)).astype(dtype)
    cases = [("spmm", None, "mul"), ("spmm", rng.standard_normal(g.nnz).astype(dtype), "mul")]
    cases += [("message_passing", E.astype(dtype), op) for op in ("mul", "add")
              for E in (rng.standard_normal((g.nnz, F)), rng.standard_normal(g.nnz))]
    with config.override(cuda_threads_per_block=geom[0], cuda_long_row=geom[1]):
        for op_name, E, op in cases:
            ref, ref_arg = naive_gather_reduce(g.indptr, g.indices, X, E, op, reduce)
            if op_name == "spmm":
                out, arg = emu["spmm"].forward(g, X, E, reduce)
                gX, gE = emu["spmm"].backward(g, go, X, E, reduce, arg)
            else:
                out, arg = emu["message_passing"].forward(g, X, E, op, reduce)
                gX, gE = emu["message_passing"].backward(g, go, X, E, op, reduce, arg)
            np.testing.assert_allclose(out, ref, **_emu_tol(dtype), err_msg=f"{op_name} {op}")
            if ref_arg is not None:
                np.testing.assert_array_equal(arg, ref_arg)
            rX, rE = naive_gather_reduce_backward(g.indptr, g.indices, go, X, E, op, reduce, ref_arg, g.n_src)
            np.testing.assert_allclose(gX, rX, **_emu_tol(dtype), err_msg=f"{op_name} {op} grad_X")
            if op_name == "spmm":  # grad_X into a given buffer, and added to it
                buf = np.full_like(gX, np.nan)
                assert emu["spmm"].backward(g, go, X, E, reduce, arg, out=buf)[0] is buf
                np.testing.assert_array_equal(buf, gX)
                acc = np.ones_like(gX)
                assert emu["spmm"].backward(g, go, X, E, reduce, arg, out=acc, accumulate=True)[0] is acc
                np.testing.assert_allclose(acc, 1 + rX, **_emu_tol(dtype))
            if rE is None:
                assert gE is None
            else:
                assert gE.shape == rE.shape
                np.testing.assert_allclose(gE, rE, **_emu_tol(dtype), err_msg=f"{op_name} {op} grad_E")


@pytest.mark.slow
@pytest.mark.parametrize("types", EMU_TYPES, ids=["f64-i32", "f32-i64"])
@pytest.mark.parametrize("op", ["dot", "cosine", "add", "sub", "mul"])
def test_emulated_sddmm(emu, rng, types, op):
    from stgkern._numba import sddmm as cpu
    dtype, idx = types
    g = _emu_graph(rng, idx)
    F = 33
    X = rng.standard_normal((g.n_nodes, F)).astype(dtype)
    Y = rng.standard_normal((g.n_src, F)).astype(dtype)
    X[0] = 0  # zero norm
    with config.override(cuda_threads_per_block=64):
        out = emu["sddmm"].forward(g, X, Y, op)
        np.testing.assert_allclose(out, cpu.forward(g, X, Y, op), **_emu_tol(dtype))
        go = rng.standard_normal(out.shape).astype(dtype)
        for got, want in zip(emu["sddmm"].backward(g, go, X, Y, op), cpu.backward(g, go, X, Y, op)):
            np.testing.assert_allclose(got, want, **_emu_tol(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("types", EMU_TYPES, ids=["f64-i32", "f32-i64"])
@pytest.mark.parametrize("H", [None, 3])
def test_emulated_edge_softmax(emu, rng, types, H):
    from stgkern._numba import edge_softmax as cpu
    dtype, idx = types
    g = _emu_graph(rng, idx)
    shape = (g.nnz,) if H is None else (g.nnz, H)
    s = (rng.standard_normal(shape) * 4).astype(dtype)
    with config.override(cuda_threads_per_block=64):
        out = emu["edge_softmax"].forward(g, s)
        np.testing.assert_allclose(out, cpu.forward(g, s), **_emu_tol(dtype))
        go = rng.standard_normal(shape).astype(dtype)
        np.testing.assert_allclose(emu["edge_softmax"].backward(g, go, out), cpu.backward(g, go, out),
                                   **_emu_tol(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "last"])
def test_emulated_segment_reduce(emu, rng, dtype, reduce):
    from stgkern._numba import segment_reduce as cpu
    lens = rng.integers(0, 5, 17)
    lens[3] = 0
    ptr = np.zeros(18, np.int64)
    np.cumsum(lens, out=ptr[1:])
    X = rng.standard_normal((int(ptr[-1]), 34)).astype(dtype)
    X[1] = X[0]
    with config.override(cuda_threads_per_block=64):
        out, arg = emu["segment_reduce"].forward(X, ptr, reduce)
        ref, ref_arg = cpu.forward(X, ptr, reduce)
        np.testing.assert_allclose(out, ref, **_emu_tol(dtype))
        if ref_arg is not None:
            np.testing.assert_array_equal(arg, ref_arg)
        go = rng.standard_normal(out.shape).astype(dtype)
        np.testing.assert_allclose(emu["segment_reduce"].backward(go, X, ptr, reduce, arg),
                                   cpu.backward(go, X, ptr, reduce, ref_arg), **_emu_tol(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("types", EMU_TYPES, ids=["f64-i32", "f32-i64"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_emulated_common_neighbor_fusion(emu, rng, types, weighted):
    from stgkern._numba import common_neighbor_fusion as cpu
    dtype, idx = types
    g = random_graph(rng, 30, avg_deg=9.0, long_row=29)  # square, sorted rows, one row > 32 wide... almost
    g.indices = g.indices.astype(idx)
    X = rng.standard_normal((30, 33)).astype(dtype)
    w = rng.standard_normal(g.nnz).astype(dtype) if weighted else None
    with config.override(cuda_threads_per_block=64):
        out = emu["common_neighbor_fusion"].forward(g, X, w)
        want = cpu.forward(g, X, w)
        assert np.abs(want).sum() > 0
        np.testing.assert_allclose(out, want, **_emu_tol(dtype))
        go = rng.standard_normal(out.shape).astype(dtype)
        got_x, got_w = emu["common_neighbor_fusion"].backward(g, go, X, w)
        want_x, want_w = cpu.backward(g, go, X, w)
        np.testing.assert_allclose(got_x, want_x, **_emu_tol(dtype))
        if w is None:
            assert got_w is None
        else:
            np.testing.assert_allclose(got_w, want_w, **_emu_tol(dtype))


@pytest.mark.slow
def test_emulated_empty_inputs(emu):
    g = Graph(np.zeros(4, np.int64), np.empty(0, np.int64), 2)  # 3 rows, no edges
    X = np.ones((2, 5), np.float64)
    out, arg = emu["spmm"].forward(g, X, None, "max")
    assert (out == 0).all() and (arg == -1).all() and out.shape == (3, 5)
    gX, gw = emu["spmm"].backward(g, np.ones((3, 5)), X, np.empty(0), "max", arg)
    assert (gX == 0).all() and gX.shape == (2, 5) and gw.shape == (0,)
    assert emu["edge_softmax"].forward(g, np.empty(0)).shape == (0,)
    assert emu["sddmm"].forward(g, np.ones((3, 5)), X, "dot").shape == (0,)
    out, arg = emu["segment_reduce"].forward(np.empty((0, 2)), np.zeros(1, np.int64), "max")
    assert out.shape == (0, 2) and arg.shape == (0, 2)
    g0 = Graph(np.zeros(1, np.int64), np.empty(0, np.int64), 0)  # no nodes at all
    assert emu["spmm"].forward(g0, np.empty((0, 3)), None, "sum")[0].shape == (0, 3)
