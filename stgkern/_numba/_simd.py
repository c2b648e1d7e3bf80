"""Register-resident row gathers for the pull kernels, written as LLVM vector IR.

``gather_wsum(o, X, idx, coef, cidx, s, e, pf)`` computes

    o[:] = Σ_{k in [s, e)} coef(k) · X[idx[k], :]

and ``gather_add`` the same sum of ``X[idx[k], :] + coef(k)``, where
``coef(k)`` is ``coef[c]`` (one value per edge) or ``coef[c, :]`` (one row
per edge, a message_passing E of width F) with ``c = k``, or ``c =
cidx[k]`` when ``cidx`` is given (a transpose's edges reading the forward
edges' values), or, for ``gather_wsum`` only, absent (None: a plain sum of
rows).  The edges are folded two at a time in CSR order, exactly as the
plain Numba loop ``o = t0 + t1; o += t0 + t1; ...; o += t0`` does (the first
pair is assigned, a lone edge is added to zero), so the bits are those of
that loop (up to a NaN's sign, which IEEE leaves to the hardware); only where
the partial sums live changes.

Why it exists: in the Numba loop the accumulator is a scratch row in memory
that LLVM cannot prove apart from the gathered rows, so the generated code
re-checks for overlap on every edge pair and stores and reloads the
accumulator each time.  Measured on the 2M-event window graph (spmm, F = 64,
float32, one thread, same process): 86 ms for that loop, 47 ms here (a C
version with the accumulator in registers: 44 ms); with both threads 44
against 32 ms, which is the threaded copy's time for the same bytes.  Here
the features are taken in blocks of four 64-byte vectors (64 float32 or 32
float64) whose partial sums stay in registers across the row's edges, then
one vector at a time, then scalars for what is left, so any F works and
every feature sees the same fold.

``gather_max`` / ``gather_min`` (and ``gather_max_add`` / ``gather_min_add``
for ``X[idx[k]] + coef(k)``) take one more argument, an int64 row ``arg``,
and give each feature's largest (smallest) term and the position k holding
it: the first edge's term, replaced only by a strictly greater (smaller)
one, so the lowest position wins ties and NaN never replaces a number;
an empty row gives 0 and -1, as the plain loop does.  spmm and
message_passing max/min through them: 235 -> 110 ms on the window graph,
351 -> 170 ms on the power-law graph (F = 64, float32, with the arg output).

``gather_won(o, X, idx, coef, cidx, s, e, pf, arg)`` is the max/min
backward over the transpose: it adds ``coef(cidx[t])·X[idx[t], f]`` to
``o[f]``, edge by edge, where the forward's ``arg[idx[t], f]`` names edge
``cidx[t]``, keeping ``o``'s other values (so it can accumulate).  spmm
max backward 116 -> 88 ms on the window graph.

``pf`` (an int, or None to compile without it) prefetches the block's lines
of the row that edge ``k + pf`` will read (clamped into ``idx``, so no index
outside it is read); see ``_prefetch``.

Editing this module: Numba's on-disk cache (``cache=True``) checks only the
kernel's own source file, so the kernels that inline these gathers (spmm,
message_passing, graph_conv) keep their old machine code until their cache
files go (``rm stgkern/_numba/__pycache__/*.nb[ic]``); a clean checkout, as
CI's, compiles afresh.

Nothing is bounds-checked: callers pass ``o`` of length ``X.shape[1]``,
``0 <= s <= e <= len(idx)`` (and ``len(coef)`` or ``len(cidx)``), a 2-D
``coef`` of ``X.shape[1]`` columns, and in-range indices, as the validated
public functions guarantee.

Kernels built on these intrinsics record ``_simd``'s revision in a comment
(Numba's on-disk cache keys on the calling file's stamp only); bump both.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._prefetch import LINE_BYTES

#: Bytes per vector register the blocks are laid out for (AVX-512; LLVM
#: splits the vectors on narrower hardware, with the same results).
VECTOR_BYTES = 64
#: Vectors accumulated at once per block.
BLOCK_VECTORS = 4
_I64 = ir.IntType(64)
_I32 = ir.IntType(32)
_I8P = ir.IntType(8).as_pointer()


def _is_c_array(t, ndim):
    return isinstance(t, types.Array) and t.ndim == ndim and t.layout == "C"


class _Row:
    """What the emitted loops need, unpacked once."""

    def __init__(self, context, builder, sig, args):
        o_ty, x_ty, idx_ty, coef_ty = sig.args[:4]
        self.fty = context.get_value_type(x_ty.dtype)
        self.size = context.get_abi_sizeof(self.fty)
        o = context.make_array(o_ty)(context, builder, args[0])
        x = context.make_array(x_ty)(context, builder, args[1])
        idx = context.make_array(idx_ty)(context, builder, args[2])
        self.o = o.data
        self.F = cgutils.unpack_tuple(builder, o.shape, 1)[0]
        self.x = builder.bitcast(x.data, _I8P)
        self.x_stride = cgutils.unpack_tuple(builder, x.strides, 2)[0]
        self.idx = idx.data
        self.idx_last = builder.sub(cgutils.unpack_tuple(builder, idx.shape, 1)[0], _I64(1))
        self.idx_signed = idx_ty.dtype.signed
        self.coef = self.coef_stride = None
        if isinstance(coef_ty, types.Array):
            c = context.make_array(coef_ty)(context, builder, args[3])
            self.coef = c.data
            if coef_ty.ndim == 2:                      # one row of values per edge
                self.coef = builder.bitcast(c.data, _I8P)
                self.coef_stride = cgutils.unpack_tuple(builder, c.strides, 2)[0]
        self.cidx = None
        if isinstance(sig.args[4], types.Array):          # coef of edge k at coef[cidx[k]]
            self.cidx = context.make_array(sig.args[4])(context, builder, args[4]).data
            self.cidx_signed = sig.args[4].dtype.signed
        self.s = context.cast(builder, args[5], sig.args[5], types.int64)
        self.e = context.cast(builder, args[6], sig.args[6], types.int64)
        self.pf = None
        if isinstance(sig.args[7], types.Integer):
            self.pf = context.cast(builder, args[7], sig.args[7], types.int64)


def _splat(builder, v, vty):
    if not isinstance(vty, ir.VectorType):
        return v
    u = builder.insert_element(ir.Constant(vty, ir.Undefined), v, _I32(0))
    return builder.shuffle_vector(u, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(_I32, vty.count),
                                                                                 [0] * vty.count))


def _index(builder, ptr, k, signed):
    """``ptr[k]`` (an index array's element) widened to i64."""
    v = builder.load(builder.gep(ptr, [k]))
    return builder.sext(v, _I64) if signed else builder.zext(v, _I64)


def _row_ptr(builder, r, k, fb):
    """Element pointer to ``X[idx[k], fb]``."""
    j = _index(builder, r.idx, k, r.idx_signed)
    off = builder.add(builder.mul(j, r.x_stride), builder.mul(fb, _I64(r.size)))
    return builder.bitcast(builder.gep(r.x, [off]), r.fty.as_pointer())


def _vec_ptr(builder, ptr, q, vty, lanes):
    """Pointer to the ``q``-th vector (or scalar) of ``lanes`` elements from element pointer ``ptr``."""
    p = builder.gep(ptr, [_I64(q * lanes)])
    return builder.bitcast(p, vty.as_pointer()) if isinstance(vty, ir.VectorType) else p


def _term(builder, r, k, fb, nvec, vty, lanes, op):
    """``[X[idx[k], fb + q·lanes ...] (op) c_k for q < nvec]`` with ``c_k``
    the edge's scalar or its row's slice; just the rows without coef."""
    p = _row_ptr(builder, r, k, fb)
    # align = one element: rows are only element-aligned, so no aligned-move instructions
    xs = [builder.load(_vec_ptr(builder, p, q, vty, lanes), align=r.size) for q in range(nvec)]
    if r.coef is None:
        return xs
    if r.cidx is not None:
        k = _index(builder, r.cidx, k, r.cidx_signed)
    if r.coef_stride is None:
        cs = [_splat(builder, builder.load(builder.gep(r.coef, [k])), vty)] * nvec
    else:
        off = builder.add(builder.mul(k, r.coef_stride), builder.mul(fb, _I64(r.size)))
        cp = builder.bitcast(builder.gep(r.coef, [off]), r.fty.as_pointer())
        cs = [builder.load(_vec_ptr(builder, cp, q, vty, lanes), align=r.size) for q in range(nvec)]
    return [builder.fmul(c, x) if op == "mul" else builder.fadd(x, c) for c, x in zip(cs, xs)]


def _prefetch(builder, r, k, fb, nvec, lanes):
    kk = builder.add(k, r.pf)
    kk = builder.select(builder.icmp_signed(">", kk, r.idx_last), r.idx_last, kk)
    kk = builder.select(builder.icmp_signed("<", kk, _I64(0)), _I64(0), kk)   # pf < 0 from a direct caller
    p = builder.bitcast(_row_ptr(builder, r, kk, fb), _I8P)
    fn = builder.module.declare_intrinsic("llvm.prefetch", [_I8P],
                                          ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32]))
    for line in range(0, max(nvec * lanes * r.size, 1), LINE_BYTES):
        builder.call(fn, [builder.gep(p, [_I64(line)]), _I32(0), _I32(3), _I32(1)])


def _emit_loop(builder, kp, cond, body, name):
    """``while cond(k): k = body(k)`` with ``k`` kept in the alloca ``kp``;
    ``body`` may emit blocks of its own (an inner loop)."""
    fn = builder.function
    b_head, b_body, b_exit = (fn.append_basic_block(f"{name}.{part}") for part in ("head", "body", "exit"))
    builder.branch(b_head)
    builder.position_at_end(b_head)
    k = builder.load(kp)
    builder.cbranch(cond(k), b_body, b_exit)
    builder.position_at_end(b_body)
    builder.store(body(k), kp)
    builder.branch(b_head)
    builder.position_at_end(b_exit)


def _store_row(builder, ptr, fb, regs, ty, lanes, align):
    """``ptr[fb + q·lanes ...] = regs[q]`` for each register alloca."""
    base = builder.gep(ptr, [fb])
    for q, a in enumerate(regs):
        builder.store(builder.load(a), _vec_ptr(builder, base, q, ty, lanes), align=align)


def _emit_pass(builder, r, fb, nvec, vty, lanes, op):
    """One pass over the row's edges for features ``[fb, fb + nvec·lanes)``, stored to ``o``."""
    zero = ir.Constant(vty, None)
    accs = [cgutils.alloca_once(builder, vty) for _ in range(nvec)]
    kp = cgutils.alloca_once(builder, _I64)
    for a in accs:
        builder.store(zero, a)
    builder.store(r.s, kp)

    def pair(k):
        if r.pf is not None:
            _prefetch(builder, r, k, fb, nvec, lanes)
            _prefetch(builder, r, builder.add(k, _I64(1)), fb, nvec, lanes)
        t0 = _term(builder, r, k, fb, nvec, vty, lanes, op)
        t1 = _term(builder, r, builder.add(k, _I64(1)), fb, nvec, vty, lanes, op)
        return [builder.fadd(a, b) for a, b in zip(t0, t1)]

    def next_pair(k):                                     # o += c0·x0 + c1·x1
        for a, t in zip(accs, pair(k)):
            builder.store(builder.fadd(builder.load(a), t), a)
        return builder.add(k, _I64(2))

    with builder.if_then(builder.icmp_signed(">=", builder.sub(r.e, r.s), _I64(2))):
        for a, t in zip(accs, pair(r.s)):                 # o = c0·x0 + c1·x1
            builder.store(t, a)
        builder.store(builder.add(r.s, _I64(2)), kp)
    _emit_loop(builder, kp, lambda k: builder.icmp_signed("<", builder.add(k, _I64(1)), r.e), next_pair, "gw.pairs")
    k = builder.load(kp)
    with builder.if_then(builder.icmp_signed("<", k, r.e)):
        for a, t in zip(accs, _term(builder, r, k, fb, nvec, vty, lanes, op)):    # o += c0·x0
            builder.store(builder.fadd(builder.load(a), t), a)
    _store_row(builder, r.o, fb, accs, vty, lanes, r.size)


def _emit_blocks(builder, r, fbp, nvec, vty, lanes, emit):
    """``while fb + nvec·lanes <= F: emit(fb); fb += nvec·lanes``."""
    width = _I64(nvec * lanes)

    def block(fb):
        emit(fb)
        return builder.add(fb, width)

    _emit_loop(builder, fbp, lambda fb: builder.icmp_signed("<=", builder.add(fb, width), r.F), block, "gw.blocks")


def _emit_arg_pass(builder, r, fb, nvec, vty, lanes, op, pred):
    """max (``pred`` ">") or min ("<") of the row's terms for features
    ``[fb, fb + nvec·lanes)`` and the CSR position that holds it: the first
    edge's term, replaced only by a strictly greater (smaller) one or by a
    NaN while it is a number, so the lowest position wins ties and a NaN
    anywhere in the row is the result (NumPy's ``max``), at its first
    position.  Empty rows give 0 and -1."""
    ity = ir.VectorType(_I64, lanes) if isinstance(vty, ir.VectorType) else _I64
    accs = [cgutils.alloca_once(builder, vty) for _ in range(nvec)]
    args = [cgutils.alloca_once(builder, ity) for _ in range(nvec)]
    kp = cgutils.alloca_once(builder, _I64)

    def next_edge(k):
        if r.pf is not None:
            _prefetch(builder, r, k, fb, nvec, lanes)
        ks = _splat(builder, k, ity)
        for a, g, t in zip(accs, args, _term(builder, r, k, fb, nvec, vty, lanes, op)):
            cur = builder.load(a)
            win = builder.or_(builder.fcmp_ordered(pred, t, cur),      # false when either is NaN
                              builder.and_(builder.fcmp_unordered("uno", t, t), builder.fcmp_ordered("ord", cur, cur)))
            builder.store(builder.select(win, t, cur), a)
            builder.store(builder.select(win, ks, builder.load(g)), g)
        return builder.add(k, _I64(1))

    with builder.if_else(builder.icmp_signed(">", r.e, r.s)) as (nonempty, empty):
        with empty:
            for a, g in zip(accs, args):
                builder.store(ir.Constant(vty, None), a)
                builder.store(_splat(builder, _I64(-1), ity), g)
        with nonempty:
            for a, g, t in zip(accs, args, _term(builder, r, r.s, fb, nvec, vty, lanes, op)):
                builder.store(t, a)
                builder.store(_splat(builder, r.s, ity), g)
            builder.store(builder.add(r.s, _I64(1)), kp)
            _emit_loop(builder, kp, lambda k: builder.icmp_signed("<", k, r.e), next_edge, "ga.edges")
    _store_row(builder, r.o, fb, accs, vty, lanes, r.size)
    _store_row(builder, r.arg, fb, args, ity, lanes, 8)


def _typed(o, X, idx, coef, cidx, s, e, pf, coef_required):
    """The signature when the argument types are ones the codegen handles, else None."""
    if not (_is_c_array(o, 1) and _is_c_array(X, 2) and isinstance(X.dtype, types.Float) and o.dtype == X.dtype):
        return None
    if not (isinstance(idx, types.Array) and idx.ndim == 1 and isinstance(idx.dtype, types.Integer)):
        return None
    coef_ok = (isinstance(coef, types.Array) and coef.dtype == X.dtype
               and (_is_c_array(coef, 1) or _is_c_array(coef, 2)))
    if not (coef_ok or (coef is types.none and not coef_required)):
        return None
    if not (cidx is types.none or (isinstance(cidx, types.Array) and cidx.ndim == 1
                                   and isinstance(cidx.dtype, types.Integer))):
        return None
    if not (isinstance(s, types.Integer) and isinstance(e, types.Integer)):
        return None
    if not (pf is types.none or isinstance(pf, types.Integer)):
        return None
    return types.void(o, X, idx, coef, cidx, s, e, pf)


def _emit_won_pass(builder, r, fb, nvec, vty, lanes):
    """``o[f] += coef(cidx[t])·X[idx[t], f]`` for each edge t of the row, in
    order, where ``arg[idx[t], f] == cidx[t]`` (the features edge ``cidx[t]``
    won in a max/min forward), for features ``[fb, fb + nvec·lanes)``; ``o``
    keeps what it held where no edge won (a backward's accumulate)."""
    ity = ir.VectorType(_I64, lanes) if isinstance(vty, ir.VectorType) else _I64
    out = builder.gep(r.o, [fb])
    accs = [cgutils.alloca_once(builder, vty) for _ in range(nvec)]
    for q, a in enumerate(accs):
        builder.store(builder.load(_vec_ptr(builder, out, q, vty, lanes), align=r.size), a)
    tp = cgutils.alloca_once(builder, _I64)
    builder.store(r.s, tp)

    def next_edge(t):
        if r.pf is not None:
            _prefetch(builder, r, t, fb, nvec, lanes)
        terms = _term(builder, r, t, fb, nvec, vty, lanes, "mul")
        ks = _splat(builder, _index(builder, r.cidx, t, r.cidx_signed), ity)
        i = _index(builder, r.idx, t, r.idx_signed)
        row = builder.gep(r.arg, [builder.add(builder.mul(i, r.arg_cols), fb)])
        for q, (a, term) in enumerate(zip(accs, terms)):
            won = builder.icmp_signed("==", builder.load(_vec_ptr(builder, row, q, ity, lanes), align=8), ks)
            cur = builder.load(a)
            builder.store(builder.select(won, builder.fadd(cur, term), cur), a)
        return builder.add(t, _I64(1))

    _emit_loop(builder, tp, lambda t: builder.icmp_signed("<", t, r.e), next_edge, "gn.edges")
    _store_row(builder, r.o, fb, accs, vty, lanes, r.size)


def _codegen(op, pred=None):
    """The three block sizes of the module docstring, each emitting a sum pass
    (``pred`` None) or an arg-max/min pass."""
    def codegen(context, builder, sig, args):
        r = _Row(context, builder, sig, args)
        if pred is not None:
            a = context.make_array(sig.args[8])(context, builder, args[8])
            r.arg = a.data
            if pred == "won":                                 # (n, F) int64, C order
                r.arg_cols = cgutils.unpack_tuple(builder, a.shape, 2)[1]
        lanes = max(VECTOR_BYTES // r.size, 1)
        vty = ir.VectorType(r.fty, lanes)
        fbp = cgutils.alloca_once(builder, _I64)
        builder.store(_I64(0), fbp)
        for nvec, ty, ln in ((BLOCK_VECTORS, vty, lanes),   # registers: 4 vectors
                             (1, vty, lanes),               # one vector at a time
                             (1, r.fty, 1)):                # the last features, one by one
            if pred is None:
                def emit(fb, nvec=nvec, ty=ty, ln=ln):
                    _emit_pass(builder, r, fb, nvec, ty, ln, op)
            elif pred == "won":
                def emit(fb, nvec=nvec, ty=ty, ln=ln):
                    _emit_won_pass(builder, r, fb, nvec, ty, ln)
            else:
                def emit(fb, nvec=nvec, ty=ty, ln=ln):
                    _emit_arg_pass(builder, r, fb, nvec, ty, ln, op, pred)
            _emit_blocks(builder, r, fbp, nvec, ty, ln, emit)
        return context.get_dummy_value()

    return codegen


@intrinsic
def gather_wsum(typingctx, o, X, idx, coef, cidx, s, e, pf):
    """``o[:] = Σ_{k in [s, e)} coef(k) · X[idx[k]]`` in pair-fold order
    (module docstring); ``coef`` None (plain sum), one value per edge (nnz,)
    or one row per edge (nnz, F), read at ``cidx[k]`` when ``cidx`` is not None."""
    sig = _typed(o, X, idx, coef, cidx, s, e, pf, coef_required=False)
    return None if sig is None else (sig, _codegen("mul"))


@intrinsic
def gather_add(typingctx, o, X, idx, coef, cidx, s, e, pf):
    """``o[:] = Σ_{k in [s, e)} (X[idx[k]] + coef(k))`` in pair-fold order;
    ``coef`` one value per edge (nnz,) or one row per edge (nnz, F), read at
    ``cidx[k]`` when ``cidx`` is not None."""
    sig = _typed(o, X, idx, coef, cidx, s, e, pf, coef_required=True)
    return None if sig is None else (sig, _codegen("add"))


def _arg_intrinsic(op, pred, doc):
    def typer(typingctx, o, X, idx, coef, cidx, s, e, pf, arg):
        sig = _typed(o, X, idx, coef, cidx, s, e, pf, coef_required=(op == "add"))
        if sig is None or not (_is_c_array(arg, 1) and arg.dtype == types.int64):
            return None
        return types.void(*sig.args, arg), _codegen(op, pred)

    typer.__doc__ = doc
    typer.__name__ = typer.__qualname__ = f"gather_{'max' if pred == '>' else 'min'}{'_add' if op == 'add' else ''}"
    return intrinsic(typer)


gather_max = _arg_intrinsic("mul", ">", """``gather_max(o, X, idx, coef, cidx, s, e, pf, arg)``: ``o[f]`` the
largest ``coef(k)·X[idx[k], f]`` over the row, ``arg[f]`` its position k
(lowest on ties; 0 and -1 for an empty row); coef as for ``gather_wsum``.""")
gather_min = _arg_intrinsic("mul", "<", "As ``gather_max``, the smallest.")
gather_max_add = _arg_intrinsic("add", ">", "As ``gather_max`` over ``X[idx[k], f] + coef(k)``.")
gather_min_add = _arg_intrinsic("add", "<", "As ``gather_min`` over ``X[idx[k], f] + coef(k)``.")


@intrinsic
def gather_won(typingctx, o, X, idx, coef, cidx, s, e, pf, arg):
    """``o[f] += Σ_{t in [s, e), arg[idx[t], f] == cidx[t]} coef(cidx[t])·X[idx[t], f]``,
    edge by edge in order: a max/min backward over the transpose (``idx`` the
    transpose's indices, ``cidx`` its forward edge ids, ``arg`` the forward's
    (n, F) winners); coef None, per edge or per edge and feature."""
    sig = _typed(o, X, idx, coef, cidx, s, e, pf, coef_required=False)
    if sig is None or cidx is types.none or not (_is_c_array(arg, 2) and arg.dtype == types.int64):
        return None
    return types.void(*sig.args, arg), _codegen("mul", "won")
