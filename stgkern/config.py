"""Tunables shared by the CPU and GPU backends.

Everything here is a plain module attribute so tests can patch it small
(``with config.override(topk_block_items=7): ...``) to force multi-block and
tail paths on tiny inputs.
"""
from __future__ import annotations

import contextlib

# --- CPU (Numba) ---------------------------------------------------------
#: Rows per parallel chunk below which a kernel runs serially (thread start-up
#: costs more than the work).
cpu_serial_rows: int = 2048
#: Software prefetch of source rows in the gather kernels (spmm and
#: message_passing sum/mean, and their backward): ``"auto"`` turns it on
#: unless the graph's sources mostly sit next to their destination (see
#: ``stgkern._numba._prefetch``); ``True`` / ``False`` force it.  Results are
#: the same bits either way.
cpu_prefetch: bool | str = "auto"
#: How many edges ahead the gather kernels prefetch.
cpu_prefetch_distance: int = 16
#: graph_conv's dense products are BLAS calls on row blocks inside Numba's
#: threads; each call does at most this many multiply-adds (m*n*k).  Calls
#: that are too large wake OpenBLAS's own thread pool, which fights Numba's
#: for the cores, and stop fitting in L1/L2.  Measured with scipy's OpenBLAS
#: 0.3.30 on the 2-core benchmark machine (2M x 64 float32 rows, 64 -> 64):
#: calls of 64, 128 and 192 rows (up to 786432 multiply-adds) ran at 213-216
#: GFLOP/s, the same as with OPENBLAS_NUM_THREADS=1; 256 rows ran at 100
#: (136 with OPENBLAS_NUM_THREADS=1).  The transposed products of the
#: backward (Xᵀ·G) gain most from longer calls: the fused backward took 442
#: ms at 64 rows and 406 ms at 192.
cpu_gemm_call_mnk: int = 786432

# --- GPU (CUDA through CuPy) ---------------------------------------------
#: Threads per block for row-parallel kernels.
cuda_threads_per_block: int = 256
#: Rows longer than this are split across a block instead of a warp.
cuda_long_row: int = 1024
#: Check for launch errors after every launch (synchronises; debug only).
cuda_debug: bool = False
#: spmm / message_passing: short rows run the 16-byte vector kernel when F
#: is a multiple of the vector width and X and out are 16-byte aligned; off,
#: every row takes the scalar warp-per-row kernel (the tests compare both).
cuda_vector_loads: bool = True

# --- Scoring ---------------------------------------------------------------
#: Items scored per block by ``topk``; bounds its temporary memory to
#: rows_per_block * topk_block_items values.
topk_block_items: int = 65536
#: Query rows per block in ``topk``.
topk_block_rows: int = 256
#: CPU ``topk``: score queries in whole panels of 16 (zero-padded), so that a query's scores are
#: the same bits whichever queries are ranked with it (a part, a batch, one served user).  Off, a
#: single query takes BLAS's GEMV path: 1M items x 65 dims, 56 ms instead of 73 (same run), with
#: scores that can differ from a batch's in the last bit.  (The closed form's float32 scan of a large
#: catalogue does not use the panels: its fixed-shape rescoring gives the same bits.)
topk_fixed_shape: bool = True
#: Items per block of ``score_cross_entropy`` on the CPU: one BLAS call forms
#: a (rows, block) logit tile that stays in L2 while it is reduced (forward)
#: or turned into the gradient products' input (backward).
score_block_items: int = 4096

#: Largest (rows, n_items) score matrix the torch ``score_cross_entropy``
#: keeps from its forward for its backward (bytes): kept, the backward
#: forms one product fewer (2 instead of 3 against the item table).
#: 0 never keeps it.
score_keep_bytes: int = 256 << 20
#: The closed form's ranking (``ClosedFormModel.recommend``) scans a catalogue
#: of at least this many items in float32 first and rescores in float64 only
#: the items a rounding bound cannot rule out (same lists; half the bytes and
#: twice the BLAS rate on the scan).  Below it one float64 scan is cheaper.
lowrank_f32_min_items: int = 50_000
#: Items the float32 scan keeps beyond k per row as rescoring candidates; a
#: row whose bound reaches past them is scanned again in float64.
lowrank_f32_extra: int = 20
#: Rows per call from which the closed form's exact re-ranking takes its parallel kernel (twice
#: as fast, even on one thread, but 11.5 s to compile in a fresh install against 4 s).
rerank_parallel_min_rows: int = 512

# --- Memory ----------------------------------------------------------------
#: Fraction of the available memory a single output may claim before the
#: size estimate refuses to allocate it.
max_memory_fraction: float = 0.8


@contextlib.contextmanager
def override(**values):
    """Temporarily set config values; restores them on exit.

    >>> from stgkern import config
    >>> with config.override(topk_block_items=8):
    ...     pass
    """
    g = globals()
    unknown = [k for k in values if k not in g or k.startswith("_")]
    if unknown:
        raise AttributeError(f"stgkern.config has no tunable(s) {unknown}")
    old = {k: g[k] for k in values}
    g.update(values)
    try:
        yield
    finally:
        g.update(old)
