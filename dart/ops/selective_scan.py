"""Selective scan (Mamba-1 SSM), dispatched to mamba-ssm's CUDA kernel or a pure-PyTorch scan.

    y = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

Shapes follow mamba-ssm's `selective_scan_fn`: u, delta, z (batch, dim, L); A (dim, N);
B, C (batch, N, L), (batch, groups, N, L) or (dim, N); D, delta_bias (dim,). The recurrence, per
channel d and state n, with dt = softplus(delta + delta_bias):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,    y_t = <C_t, h_t> + D * u_t,    y *= silu(z)

Backends:
* "mamba_ssm": mamba-ssm's fused kernel; used for CUDA tensors when mamba-ssm is installed
  (`pip install .[cuda]`).
* "numba": CPU tensors when numba is installed (it is a base dependency): compiled kernels for the
  forward and the backward (`scan_numba.py`), parallel over batch x channels on torch's thread
  count, no (batch, dim, L, N) tensor formed. Compiled at first use and cached on disk by numba;
  if numba is missing or its compilation fails, one log line says so and the "torch" path runs.
* "torch": everywhere else. The linear recurrence h_t = a_t h_{t-1} + b_t is solved by a two-level
  chunked scan (`scan_states`): chunks of T ~ sqrt(L) steps are scanned all at once (T vectorised
  steps), then the states entering the chunks follow from the chunk ends (one small step per
  chunk), then one pass combines them: ~2 sqrt(L) Python iterations, never one per time step, and
  ~3 passes over the data. It multiplies decays (never divides by them), so it is as stable as the
  sequential loop. The backward is the same scan run in reverse (`LinearScan`), so autograd stores
  two (batch, dim, L, N) tensors per call. Without autograd the same scheme runs fused
  (`_scan_outputs_nograd`): no (batch, dim, L, N) tensor is formed.

Set DART_SCAN_BACKEND=torch to force the PyTorch path (e.g. to compare), =numba to insist on the
compiled CPU kernels (an error if they cannot run).
"""
from __future__ import annotations

import importlib
import logging
import math
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

_log = logging.getLogger(__name__)

try:  # optional CUDA extra
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_selective_scan_fn
except Exception:  # ImportError, or a build without its CUDA extension
    _mamba_selective_scan_fn = None

BACKENDS = ("mamba_ssm", "numba", "torch")
MIN_CHUNK = 8  # fewest steps per chunk of the PyTorch scan
_announced: set[str] = set()


def has_mamba_ssm() -> bool:
    return _mamba_selective_scan_fn is not None


def choose_backend(what: str, backends: tuple[str, str], kernel_ready: bool, backend: Optional[str],
                   env_var: str) -> str:
    """`backends` = (kernel, "torch"): the requested backend (argument, else `env_var`) after
    checking it can run, or the kernel when it can (`kernel_ready`: installed and CUDA inputs)."""
    backend = backend or os.environ.get(env_var) or None
    if backend is not None:
        if backend not in backends:
            raise ValueError(f"{what} backend must be one of {backends}, got {backend!r}")
        if backend == backends[0] and not kernel_ready:
            raise RuntimeError(f"the {backends[0]} {what} backend needs {backends[0].replace('_', '-')} "
                               f"installed and CUDA tensors")
        return backend
    return backends[0] if kernel_ready else "torch"


_numba_status: Optional[str] = None  # "ready", or why the compiled CPU scan cannot run; set at first use


def numba_status() -> str:
    """"ready" when the compiled CPU kernels run here (imported, compiled or loaded from numba's
    cache, tried on a tiny problem, once per process), else the reason they do not."""
    global _numba_status
    if _numba_status is None:
        try:
            importlib.import_module(".scan_numba", __package__).warm_up()
            _numba_status = "ready"
        except ImportError as e:
            _numba_status = f"numba not installed: {e}"
        except Exception as e:  # a numba / LLVM failure: the PyTorch scan still works
            _numba_status = f"numba kernels failed: {type(e).__name__}: {e}"
    return _numba_status


def scan_backend(u: Tensor, backend: Optional[str] = None) -> str:
    """The backend `selective_scan` will use for inputs like `u`: the requested one (argument, else
    DART_SCAN_BACKEND) after checking it can run, else mamba-ssm on CUDA, numba on the CPU, torch."""
    backend = backend or os.environ.get("DART_SCAN_BACKEND") or None
    on_cpu = u.device.type == "cpu"
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"scan backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "mamba_ssm" and not (has_mamba_ssm() and u.is_cuda):
            raise RuntimeError("the mamba_ssm scan backend needs mamba-ssm installed and CUDA tensors")
        if backend == "numba" and not (on_cpu and numba_status() == "ready"):
            raise RuntimeError(f"the numba scan backend needs CPU tensors and numba: "
                               f"{numba_status() if on_cpu else 'tensors on ' + u.device.type}")
        return backend
    if has_mamba_ssm() and u.is_cuda:
        return "mamba_ssm"
    return "numba" if on_cpu and numba_status() == "ready" else "torch"


def announce(kind: str, backend: str, reason: str) -> None:
    """One INFO line per (operation, backend) and process: which implementation runs."""
    key = f"{kind}:{backend}"
    if key not in _announced:
        _announced.add(key)
        _log.info("dart.ops: %s runs on the %s backend (%s)", kind, backend, reason)


def _scan_reason(u: Tensor, which: str) -> str:
    if which == "mamba_ssm":
        return _reason(u, True, "mamba-ssm")
    if which == "numba":
        return "compiled CPU kernels"
    if u.device.type == "cpu":
        return "numba kernels not used: " + numba_status() if numba_status() != "ready" else "requested"
    return _reason(u, has_mamba_ssm(), "mamba-ssm")


def _reason(u: Tensor, installed: bool, package: str) -> str:
    if not installed:
        return f"{package} not installed"
    return f"{package} installed, tensors on {u.device.type}" if not u.is_cuda else f"{package} on {u.device}"


# --------------------------------------------------------------------------- linear recurrence
def chunk_length(L: int) -> int:
    """Steps per chunk: about sqrt(L), so the two Python loops below run ~2 sqrt(L) times in all."""
    return max(MIN_CHUNK, math.isqrt(max(L - 1, 0)) + 1)


def scan_states(a: Tensor, b: Tensor, chunk: Optional[int] = None) -> Tensor:
    """h_t = a_t * h_{t-1} + b_t (h_{-1} = 0) along dim 2 of (batch, dim, L, N) tensors, no grad.

    Two-level chunked scan. The sequence is cut into C chunks of T steps (T ~ sqrt(L)):
    1. all chunks at once, T vectorised steps: each chunk's local states (starting from zero) and its
       running product of decays;
    2. C small steps over the chunk ends: the state entering each chunk;
    3. one vectorised pass: local states + running decay x entering state.
    Only products of decays appear (no division, no logarithm), so it is as stable as the sequential
    loop; the work is ~3 passes over the data, and no Python loop runs over the L time steps.
    """
    Bt, D, L, N = a.shape
    T = chunk or chunk_length(L)
    nc = -(-L // T)
    pad = nc * T - L
    if pad:  # trailing padding (a=1, b=0) does not change the first L states
        a = F.pad(a, (0, 0, 0, pad), value=1.0)
        b = F.pad(b, (0, 0, 0, pad), value=0.0)
    a4, b4 = a.reshape(Bt, D, nc, T, N), b.reshape(Bt, D, nc, T, N)
    h = torch.empty_like(b4)
    P = torch.empty_like(a4)
    h[:, :, :, 0] = b4[:, :, :, 0]
    P[:, :, :, 0] = a4[:, :, :, 0]
    for t in range(1, T):  # 1. local scans, every chunk in parallel
        torch.addcmul(b4[:, :, :, t], a4[:, :, :, t], h[:, :, :, t - 1], out=h[:, :, :, t])
        torch.mul(P[:, :, :, t - 1], a4[:, :, :, t], out=P[:, :, :, t])
    if nc > 1:
        entering = torch.zeros_like(h[:, :, :, 0])  # (Bt, D, nc, N)
        for c in range(1, nc):  # 2. carries over the chunk ends
            torch.addcmul(h[:, :, c - 1, -1], P[:, :, c - 1, -1], entering[:, :, c - 1], out=entering[:, :, c])
        h[:, :, 1:].addcmul_(P[:, :, 1:], entering[:, :, 1:].unsqueeze(3))  # 3. combine
    h = h.reshape(Bt, D, nc * T, N)
    return h[:, :, :L] if pad else h


def _by_chunks(X: Tensor, nc: int, T: int) -> Tensor:
    """A (.., .., L or 1, N) view of B or C as (.., .., nc, T, N) (zero-padded, or expanded if L is 1)."""
    if X.shape[2] == 1:
        return X.unsqueeze(3).expand(X.shape[0], X.shape[1], nc, T, X.shape[-1])
    pad = nc * T - X.shape[2]
    X = F.pad(X, (0, 0, 0, pad)) if pad else X
    return X.reshape(X.shape[0], X.shape[1], nc, T, X.shape[-1])


def _scan_outputs_nograd(dt: Tensor, A: Tensor, u: Tensor, Bv: Tensor, Cv: Tensor) -> Tensor:
    """sum_n C_t h_t without autograd by the same two-level scheme, fused: per step only
    (batch, dim, chunks, N) slices exist, never a (batch, dim, L, N) tensor.

    Sweep 1 runs the local recurrences of all chunks at once and their outputs; the states entering
    the chunks follow from the chunk ends; sweep 2 adds C_t exp(A sum_{s<=t} dt_s) (entering state),
    the entering state's contribution. exp(A x cumulative dt) is the chunk's product of decays."""
    b, d, L = u.shape
    T = chunk_length(L)
    nc = -(-L // T)
    pad = nc * T - L
    dt4 = (F.pad(dt, (0, pad)) if pad else dt).reshape(b, d, nc, T)
    du4 = (F.pad(dt * u, (0, pad)) if pad else dt * u).reshape(b, d, nc, T)
    B5, C5 = _by_chunks(Bv, nc, T), _by_chunks(Cv, nc, T)
    A4 = A[None, :, None, :]  # (1, d, 1, N)
    y = u.new_empty(b, d, nc, T)
    h = u.new_zeros(b, d, nc, A.shape[1])
    for t in range(T):  # sweep 1: local states of every chunk
        h = torch.addcmul(du4[:, :, :, t, None] * B5[:, :, :, t], torch.exp(dt4[:, :, :, t, None] * A4), h)
        y[:, :, :, t] = (h * C5[:, :, :, t]).sum(-1)
    if nc > 1:
        cum = dt4.cumsum(-1)
        decay = torch.exp(cum[:, :, :, -1, None] * A4)  # each chunk's total decay (b, d, nc, N)
        entering = torch.zeros_like(h)
        for c in range(1, nc):
            entering[:, :, c] = torch.addcmul(h[:, :, c - 1], decay[:, :, c - 1], entering[:, :, c - 1])
        for t in range(T):  # sweep 2: what the entering states contribute
            carried = torch.exp(cum[:, :, :, t, None] * A4) * entering
            y[:, :, :, t] += (carried * C5[:, :, :, t]).sum(-1)
    y = y.reshape(b, d, nc * T)
    return y[:, :, :L] if pad else y


class LinearScan(torch.autograd.Function):
    """h = scan_states(a, b) with the backward as a reverse scan:
    g_t = dL/dh_t + a_{t+1} g_{t+1};  dL/db_t = g_t;  dL/da_t = g_t h_{t-1}."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        a = a.contiguous()
        h = scan_states(a, b.contiguous())
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h = ctx.saved_tensors
        a_next = F.pad(a[:, :, 1:], (0, 0, 0, 1))  # a_{t+1}, zero past the end
        g = scan_states(a_next.flip(2), grad_h.contiguous().flip(2)).flip(2)
        grad_a = g * F.pad(h[:, :, :-1], (0, 0, 1, 0)) if ctx.needs_input_grad[0] else None
        return grad_a, (g if ctx.needs_input_grad[1] else None)


def linear_scan(a: Tensor, b: Tensor) -> Tensor:
    """Differentiable h_t = a_t * h_{t-1} + b_t along dim 2 of (batch, dim, L, N) tensors."""
    return LinearScan.apply(a, b)


# --------------------------------------------------------------------------- selective scan
def _bc_view(X: Tensor, dim: int) -> Tensor:
    """B or C as a tensor broadcastable to (batch, dim, L, N)."""
    if X.dim() == 2:  # (dim, N): not input-dependent
        return X[None, :, None, :]
    if X.dim() == 3:  # (batch, N, L)
        return X.transpose(1, 2).unsqueeze(1)
    if X.dim() == 4:  # (batch, groups, N, L)
        g = X.shape[1]
        if dim % g:
            raise ValueError(f"{g} groups do not divide {dim} channels")
        return X.transpose(2, 3).repeat_interleave(dim // g, dim=1)
    raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {tuple(X.shape)}")


def _needs_grad(*tensors: Optional[Tensor]) -> bool:
    """Autograd will need gradients through the scan: grad mode on and some input requires them."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def selective_scan_torch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                         delta_bias: Optional[Tensor] = None, delta_softplus: bool = False) -> Tensor:
    """Pure-PyTorch selective scan (fp32 inside, output in u's dtype), differentiable in every input.

    Deliberately free of matmuls, so FlopCounterMode sees none of it (see `scan_macs`).
    """
    dtype_in = u.dtype
    uf, dt = _inputs_fp32(u, delta, delta_bias, delta_softplus)
    dim = u.shape[1]
    Af, Bv, Cv = A.float(), _bc_view(B.float(), dim), _bc_view(C.float(), dim)
    if _needs_grad(u, delta, A, B, C, delta_bias):
        dA = torch.exp(dt.unsqueeze(-1) * Af[:, None, :])  # (b, d, L, N)
        dBu = (dt * uf).unsqueeze(-1) * Bv  # (b, d, L, N)
        y = (linear_scan(dA, dBu) * Cv).sum(-1)  # (b, d, L)
    else:  # inference: fused, no (b, d, L, N) tensor
        y = _scan_outputs_nograd(dt, Af, uf, Bv, Cv)
    return _skip_and_gate(y, uf, D, z).to(dtype_in)


def _inputs_fp32(u: Tensor, delta: Tensor, delta_bias: Optional[Tensor], delta_softplus: bool):
    """u and dt = softplus(delta + delta_bias) in fp32."""
    uf, dt = u.float(), delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    return uf, dt


def _skip_and_gate(y: Tensor, uf: Tensor, D: Optional[Tensor], z: Optional[Tensor]) -> Tensor:
    if D is not None:
        y = y + uf * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y


def _bc_kernel_layout(X: Tensor, dim: int) -> Tensor:
    """B or C as the compiled kernel takes it: contiguous fp32 (Bb, G, Lb, N)."""
    if X.dim() == 2:  # (dim, N): one group per channel, shared over batch and time
        X = X[None, :, None, :]
    elif X.dim() == 3:  # (batch, N, L)
        X = X.transpose(1, 2).unsqueeze(1)
    elif X.dim() == 4:  # (batch, groups, N, L)
        if dim % X.shape[1]:
            raise ValueError(f"{X.shape[1]} groups do not divide {dim} channels")
        X = X.transpose(2, 3)
    else:
        raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {tuple(X.shape)}")
    return X.float().contiguous()


def selective_scan_numba(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                         D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                         delta_bias: Optional[Tensor] = None, delta_softplus: bool = False) -> Tensor:
    """The same computation as `selective_scan_torch` with the recurrence (forward and backward)
    in compiled CPU kernels (`scan_numba.py`). Without autograd one fused kernel also does the
    softplus, the D skip and the z gate; with it, those stay in PyTorch around the compiled core."""
    from .scan_numba import NumbaScan, scan_fused_inference

    dtype_in = u.dtype
    dim = u.shape[1]
    if not _needs_grad(u, delta, A, B, C, D, z, delta_bias):
        zeros = u.new_zeros(dim, dtype=torch.float32)
        y = scan_fused_inference(delta.float(), u.float(), A.float().contiguous(), _bc_kernel_layout(B, dim),
                                 _bc_kernel_layout(C, dim),
                                 zeros if delta_bias is None else delta_bias.float().contiguous(),
                                 zeros if D is None else D.float().contiguous(),
                                 None if z is None else z.float(), delta_softplus)
        return y.to(dtype_in)
    uf, dt = _inputs_fp32(u, delta, delta_bias, delta_softplus)
    y = NumbaScan.apply(dt.contiguous(), uf.contiguous(), A.float().contiguous(),
                        _bc_kernel_layout(B, dim), _bc_kernel_layout(C, dim))
    return _skip_and_gate(y, uf, D, z).to(dtype_in)


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                   D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                   delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                   backend: Optional[str] = None) -> Tensor:
    """Selective scan on the best available backend (see the module docstring)."""
    which = scan_backend(u, backend)
    announce("selective scan", which, _scan_reason(u, which))
    if which == "mamba_ssm":
        return _mamba_selective_scan_fn(u.contiguous(), delta.contiguous(), A, B.contiguous(),
                                        C.contiguous(), D, z=None if z is None else z.contiguous(),
                                        delta_bias=delta_bias, delta_softplus=delta_softplus)
    if which == "numba":
        return selective_scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def scan_macs(batch: int, length: int, dim: int, d_state: int, with_D: bool = True,
              with_z: bool = True) -> int:
    """Multiply-adds of one selective scan, the Mamba authors' count (state-spaces/mamba#110):
    9 * B * L * D * N for discretisation, recurrence and output contraction, plus B*L*D for the
    D skip and B*L*D for the z gate (D = the scan's channels, i.e. expand * d_model)."""
    n = 9 * batch * length * dim * d_state
    return n + batch * length * dim * (int(with_D) + int(with_z))
