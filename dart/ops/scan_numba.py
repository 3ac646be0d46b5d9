"""Compiled CPU selective scan: numba kernels for the forward and the backward (imported lazily by
`selective_scan.py`, which falls back to the pure-PyTorch scan when numba is missing or fails).

Core computed here, per batch b, channel d and state n (dt already softplus'ed, fp32):

    h_t = exp(dt_t * A_n) * h_{t-1} + dt_t * u_t * B_tn,    y_t = sum_n C_tn h_tn

One work item is one (batch, channel) sequence, run step by step with the N states in registers;
items are spread over numba's threads (as many as torch uses). On one thread a serial copy of each
kernel runs instead, so numba's OpenMP pool never starts: starting it set the process-wide OpenMP
thread count (torch's too) to the pool's size, and its idle threads spin-wait, so a "one-thread"
training job took two cores. Where the pool runs, torch's thread count is put back after each call.
No (batch, dim, L, N) tensor is formed, forward or backward: the backward recomputes each
sequence's states into a per-thread (L + 1, N) buffer, then runs the reverse recurrence

    g_t = dL/dh_t = gy_t C_t + exp(dt_{t+1} A) g_{t+1}

B and C come in as (Bb, G, Lb, N) with Bb in {1, batch} and Lb in {1, L}: shared across the batch
and / or time when those are 1, G groups of channels (G = dim for the per-channel constant B of
S4). Their gradients are summed over the channels of a group, so the backward's work items are
(batch, group, block of channels) and each writes its own partial sum (reduced afterwards by
torch): no two threads write the same memory.

exp is computed by `_exp` below (range reduction + degree-7 Taylor polynomial, 2^k built from its
bits), which LLVM vectorises over the N states; libm's scalar expf is not vectorised without
Intel's SVML and would take most of the time. Relative error within a few fp32 ulps. Two details
keep the loop vectorisable (8x faster on AVX2 than a table of powers of two and `math.floor`): no
gather (2^k is a bit pattern, not a table entry) and no int64 (`np.floor` stays fp32, and fp32 to
int32 is one vector instruction where int64 to fp32 has none on AVX2). The kernels use numpy's error
model: Python's, numba's default, checks every division for zero, and that branch kept the softplus
and gate loops (which divide) from vectorising.
"""
from __future__ import annotations

import math
import types as types_
from typing import Optional

import numba
import numpy as np
import torch
from numba import njit, prange, types
from numba.extending import intrinsic
from torch import Tensor

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO; the high part has few bits, so k * _LN2_HI is exact
_LN2_LO = np.float32(-2.1219444005469057e-04)
_INV_FACT = [np.float32(1.0 / math.factorial(i)) for i in range(8)]
_C2, _C3, _C4, _C5, _C6, _C7 = _INV_FACT[2:]
# exp's input is clamped to the range where 2^k is a normal fp32: exp(-87) = 1.6e-38 stands for
# anything smaller (a decay that small has already erased the state), exp(88) = 1.65e38 for larger
_X_MIN, _X_MAX = np.float32(-87.0), np.float32(88.0)


@intrinsic
def _f32_from_bits(typingctx, bits):
    """The fp32 whose bit pattern is the int32 `bits` (an LLVM bitcast, which vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


@njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _exp(x):
    """exp(x) for fp32 x: x = k ln2 + r, |r| <= ln2 / 2, exp(r) by its Taylor polynomial (degree 7:
    truncation error < 1e-8 relative), times 2^k made from its exponent bits. NaN stays NaN (the
    clamp passes it through)."""
    xc = min(max(x, _X_MIN), _X_MAX)
    k = np.floor(xc * _LOG2E + np.float32(0.5))
    r = xc - k * _LN2_HI - k * _LN2_LO
    p = _C7 * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _f32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))


def _forward(dt, u, A, B, C, y):
    nb, nd, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    per_group = nd // G
    b_varies, t_varies = B.shape[0] > 1, B.shape[2] > 1
    for item in prange(nb * nd):
        bi, di = item // nd, item % nd
        gi = di // per_group
        bb = bi if b_varies else 0
        h = np.zeros(N, np.float32)
        for t in range(L):
            tt = t if t_varies else 0
            d = dt[bi, di, t]
            du = d * u[bi, di, t]
            acc = np.float32(0.0)
            for n in range(N):
                hn = _exp(d * A[di, n]) * h[n] + du * B[bb, gi, tt, n]
                h[n] = hn
                acc += hn * C[bb, gi, tt, n]
            y[bi, di, t] = acc


_LOG1P_TERMS = [np.float32(2.0 / (2 * i + 1)) for i in range(9)]
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8 = _LOG1P_TERMS


@njit(inline="always", fastmath={"contract"}, error_model="numpy")
def _softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(e), e = exp(-|x|) in (0, 1]. log1p(e) = 2 atanh(s) with
    s = e / (2 + e) in (0, 1/3], by its series to s^17 (relative error < 1e-9): no 1 + e is formed,
    so a tiny e keeps its precision. Vectorisable like `_exp`."""
    e = _exp(-abs(x))
    s = e / (np.float32(2.0) + e)
    s2 = s * s
    q = _L8 * s2 + _L7
    q = q * s2 + _L6
    q = q * s2 + _L5
    q = q * s2 + _L4
    q = q * s2 + _L3
    q = q * s2 + _L2
    q = q * s2 + _L1
    q = q * s2 + _L0
    return max(x, np.float32(0.0)) + q * s


def _forward_fused(delta, bias, u, A, B, C, D, z, y, softplus, use_z):
    """The whole inference scan in one pass per (batch, channel): dt = softplus(delta + bias) (or
    delta + bias), the recurrence, then y = (sum_n C h + D u) * silu(z) (without the gate when not
    use_z). Each item's dt and outputs live in small per-thread buffers."""
    nb, nd, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    per_group = nd // G
    b_varies, t_varies = B.shape[0] > 1, B.shape[2] > 1
    for item in prange(nb * nd):
        bi, di = item // nd, item % nd
        gi = di // per_group
        bb = bi if b_varies else 0
        dts = np.empty(L, np.float32)
        acc_t = np.empty(L, np.float32)
        bd = bias[di]
        if softplus:  # branches outside the loops over t, which then vectorise
            for t in range(L):
                dts[t] = _softplus(delta[bi, di, t] + bd)
        else:
            for t in range(L):
                dts[t] = delta[bi, di, t] + bd
        # the recurrence, as in _forward, written out: a shared inlined helper taking row views ran
        # 30% slower (measured side by side)
        h = np.zeros(N, np.float32)
        for t in range(L):  # vectorised over the N states
            tt = t if t_varies else 0
            d = dts[t]
            du = d * u[bi, di, t]
            acc = np.float32(0.0)
            for n in range(N):
                hn = _exp(d * A[di, n]) * h[n] + du * B[bb, gi, tt, n]
                h[n] = hn
                acc += hn * C[bb, gi, tt, n]
            acc_t[t] = acc
        dd = D[di]
        if use_z:  # skip and gate
            for t in range(L):
                zt = z[bi, di, t]
                y[bi, di, t] = (acc_t[t] + dd * u[bi, di, t]) * zt / (np.float32(1.0) + _exp(-zt))
        else:
            for t in range(L):
                y[bi, di, t] = acc_t[t] + dd * u[bi, di, t]


def _backward(dt, u, A, B, C, gy, ddt, du, dA_part, dB_part, dC_part):
    """ddt, du (b, d, L); dA_part (b, d, N); dB_part, dC_part (b, G, blocks, Lb, N): sums over the
    channels of one block of a group (and over time when Lb is 1)."""
    nb, nd, L = u.shape
    N = A.shape[1]
    G = B.shape[1]
    per_group = nd // G
    blocks = dB_part.shape[2]
    b_varies, t_varies = B.shape[0] > 1, B.shape[2] > 1
    for item in prange(nb * G * blocks):
        bi, rest = item // (G * blocks), item % (G * blocks)
        gi, blk = rest // blocks, rest % blocks
        bb = bi if b_varies else 0
        c0 = gi * per_group + (blk * per_group) // blocks
        c1 = gi * per_group + ((blk + 1) * per_group) // blocks
        hs = np.zeros((L + 1, N), np.float32)  # hs[t + 1] = h_t; hs[0] = 0
        g = np.empty(N, np.float32)
        gA = np.empty(N, np.float32)
        gt = np.empty(N, np.float32)
        h = np.empty(N, np.float32)
        dec = np.empty(N, np.float32)
        # this item's partial sums of dB, dC, written back at the end
        dB_acc = np.zeros((dB_part.shape[3], N), np.float32)
        dC_acc = np.zeros((dB_part.shape[3], N), np.float32)
        for di in range(c0, c1):
            Ad = A[di]
            h[:] = 0.0
            for t in range(L):  # recompute the states
                tt = t if t_varies else 0
                d = dt[bi, di, t]
                dtu = d * u[bi, di, t]
                # the state lives in h and is copied to hs: reading hs[t] while writing hs[t + 1] (two
                # rows of one array) made this loop 4x slower, as LLVM cannot tell the rows apart
                Bt, h1 = B[bb, gi, tt], hs[t + 1]
                for n in range(N):
                    hn = _exp(d * Ad[n]) * h[n] + dtu * Bt[n]
                    h[n] = hn
                    h1[n] = hn
            g[:] = 0.0  # exp(dt_{t+1} A) g_{t+1}: what the future sends back to h_t
            gA[:] = 0.0
            for t in range(L - 1, -1, -1):
                tt = t if t_varies else 0
                d = dt[bi, di, t]
                ut = u[bi, di, t]
                dtu = d * ut
                gyt = gy[bi, di, t]
                Bt, Ct = B[bb, gi, tt], C[bb, gi, tt]
                dBt, dCt = dB_acc[tt], dC_acc[tt]
                h0, h1 = hs[t], hs[t + 1]
                for n in range(N):  # recomputed: cheaper than storing an (L, N) table of decays
                    dec[n] = _exp(d * Ad[n])
                acc_dt = np.float32(0.0)
                acc_du = np.float32(0.0)
                for n in range(N):
                    gn = g[n] + gyt * Ct[n]
                    gt[n] = gn
                    ga = gn * h0[n] * dec[n]  # dL/d(dt_t A_n)
                    bn = Bt[n]
                    acc_dt += gn * ut * bn + ga * Ad[n]
                    acc_du += gn * bn
                    gA[n] += ga * d
                for n in range(N):
                    gn = gt[n]
                    dCt[n] += gyt * h1[n]
                    dBt[n] += gn * dtu
                    g[n] = dec[n] * gn
                ddt[bi, di, t] = acc_dt
                du[bi, di, t] = acc_du * d
            for n in range(N):
                dA_part[bi, di, n] = gA[n]
        dB_part[bi, gi, blk] = dB_acc
        dC_part[bi, gi, blk] = dC_acc


_JIT = dict(nogil=True, cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")


def _compile(fn):
    """(parallel, serial) compiled copies of a kernel (module docstring: why one thread runs the
    serial one). The serial copy is a renamed function, so numba's disk cache keeps the two apart."""
    serial = types_.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                 fn.__closure__)
    serial.__qualname__ = fn.__qualname__ + "_serial"
    serial.__doc__ = fn.__doc__
    return njit(parallel=True, **_JIT)(fn), njit(parallel=False, **_JIT)(serial)


_forward, _forward_serial = _compile(_forward)
_forward_fused, _forward_fused_serial = _compile(_forward_fused)
_backward, _backward_serial = _compile(_backward)


def _threads() -> int:
    """The threads a kernel may use: torch's count, within numba's pool size."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _run(parallel, serial, *args) -> None:
    """Run a kernel on torch's thread count: the serial copy on one thread (no thread pool)."""
    n, k = torch.get_num_threads(), _threads()
    if k == 1:
        serial(*args)
        return
    if numba.get_num_threads() != k:
        numba.set_num_threads(k)
    parallel(*args)
    if torch.get_num_threads() != n:  # the pool's start sets the process-wide OpenMP count to its own
        torch.set_num_threads(n)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().numpy()


def scan_core_forward(dt: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """y (b, d, L) from contiguous fp32 dt, u (b, d, L), A (d, N), B, C (Bb, G, Lb, N)."""
    y = torch.empty_like(u)
    _run(_forward, _forward_serial, _np(dt), _np(u), _np(A), _np(B), _np(C), _np(y))
    return y


def scan_fused_inference(delta: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor, bias: Tensor,
                         D: Tensor, z: Optional[Tensor], softplus: bool) -> Tensor:
    """Inference only: y (b, d, L) = (scan + D u) * silu(z) from fp32 delta, u, z (b, d, L), A (d, N),
    B, C (Bb, G, Lb, N), bias, D (d,), with dt = softplus(delta + bias)."""
    y = torch.empty(u.shape, dtype=torch.float32)
    # contiguous copies are cheap; strided arrays keep LLVM from vectorising (the kernel ran 1.8x slower)
    zz = z.contiguous() if z is not None else u.new_empty(1, 1, 1)
    _run(_forward_fused, _forward_fused_serial, _np(delta.contiguous()), _np(bias), _np(u.contiguous()), _np(A),
         _np(B), _np(C), _np(D), _np(zz), _np(y), softplus, z is not None)
    return y


def scan_core_backward(dt: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor, gy: Tensor):
    """Gradients of sum(gy * y) with respect to dt, u, A, B, C (B, C shaped as given)."""
    threads = _threads()
    nb, nd, L = u.shape
    Bb, G, Lb, N = B.shape
    per_group = nd // G
    # enough work items for every thread (4 each, for balance), never more blocks than channels
    blocks = max(1, min(per_group, -(-4 * threads // (nb * G))))
    ddt, du = torch.empty_like(dt), torch.empty_like(u)
    dA_part = u.new_empty(nb, nd, N)
    dB_part = u.new_zeros(nb, G, blocks, Lb, N)
    dC_part = u.new_zeros(nb, G, blocks, Lb, N)
    _run(_backward, _backward_serial, _np(dt), _np(u), _np(A), _np(B), _np(C), _np(gy), _np(ddt), _np(du),
         _np(dA_part), _np(dB_part), _np(dC_part))
    dB, dC = dB_part.sum(2), dC_part.sum(2)  # (b, G, Lb, N)
    if Bb == 1:
        dB, dC = dB.sum(0, keepdim=True), dC.sum(0, keepdim=True)
    return ddt, du, dA_part.sum(0), dB, dC


class NumbaScan(torch.autograd.Function):
    """The core scan with the compiled backward; saves only its inputs."""

    @staticmethod
    def forward(ctx, dt: Tensor, u: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
        ctx.save_for_backward(dt, u, A, B, C)
        return scan_core_forward(dt, u, A, B, C)

    @staticmethod
    def backward(ctx, gy: Tensor):
        grads = scan_core_backward(*ctx.saved_tensors, gy.float().contiguous())
        return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


def warm_up() -> None:
    """Compile (or load from numba's disk cache) both kernels on a tiny problem."""
    g = torch.Generator().manual_seed(0)
    dt, u = torch.rand(1, 2, 3, generator=g), torch.randn(1, 2, 3, generator=g)
    A, B, C = -torch.rand(2, 4, generator=g), torch.randn(1, 1, 3, 4, generator=g), torch.randn(1, 1, 3, 4, generator=g)
    scan_core_backward(dt, u, A, B, C, scan_core_forward(dt, u, A, B, C))
    scan_fused_inference(dt, u, A, B, C, dt[0, :, 0], dt[0, :, 0], u, True)
