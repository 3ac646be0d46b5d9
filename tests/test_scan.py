"""The selective scan (pure PyTorch and the compiled CPU kernels) and the causal conv against plain
step-by-step references."""
from __future__ import annotations

import importlib
import logging

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dart.models.mamba import Mamba, mixer_macs
from dart.ops import (causal_conv1d, linear_scan, numba_status, scan_backend, selective_scan,
                      selective_scan_numba, selective_scan_torch)

scan_module = importlib.import_module("dart.ops.selective_scan")  # the module, not the function

TOL = dict(atol=1e-5, rtol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")


def sequential_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence one time step at a time, written out (the reference)."""
    b, d, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    if B.dim() == 4:  # groups: channel c uses group c // (d // g)
        B = B.repeat_interleave(d // B.shape[1], dim=1)  # (b, d, n, L)
        C = C.repeat_interleave(d // C.shape[1], dim=1)
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A)  # (b, d, n)
        if B.dim() == 2:
            Bt = B[None]
        elif B.dim() == 3:
            Bt = B[:, None, :, t]
        else:
            Bt = B[:, :, :, t]
        if C.dim() == 2:
            Ct = C[None]
        elif C.dim() == 3:
            Ct = C[:, None, :, t]
        else:
            Ct = C[:, :, :, t]
        h = dA * h + delta[:, :, t, None] * Bt * u[:, :, t, None]
        y = (h * Ct).sum(-1)
        if D is not None:
            y = y + D * u[:, :, t]
        ys.append(y)
    y = torch.stack(ys, dim=-1)
    if z is not None:
        y = y * F.silu(z)
    return y


def make_inputs(b, d, n, length, bc="variable", groups=1, seed=0, with_extras=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u, delta = r(b, d, length), r(b, d, length) * 0.5
    A = -torch.exp(r(d, n) * 0.5)
    if bc == "variable":
        B, C = r(b, n, length), r(b, n, length)
    elif bc == "grouped":
        B, C = r(b, groups, n, length), r(b, groups, n, length)
    else:
        B, C = r(d, n), r(d, n)
    extras = dict(D=r(d), z=r(b, d, length), delta_bias=r(d) * 0.3, delta_softplus=True) if with_extras else {}
    return (u, delta, A, B, C), extras


CASES = [  # (batch, dim, d_state, length, B/C kind, groups)
    (2, 3, 4, 1, "variable", 1),
    (1, 4, 2, 7, "variable", 1),
    (2, 3, 4, 8, "variable", 1),
    (2, 3, 4, 9, "variable", 1),
    (1, 5, 3, 37, "variable", 1),
    (2, 4, 4, 65, "grouped", 2),
    (1, 3, 4, 23, "constant", 1),
    (1, 2, 16, 131, "variable", 1),
]


def _with_grads(args, extras):
    args = [a.clone().requires_grad_() for a in args]
    extras = {k: (v.clone().requires_grad_() if torch.is_tensor(v) else v) for k, v in extras.items()}
    return args, extras, list(args) + [v for v in extras.values() if torch.is_tensor(v)]


def assert_scans_agree(scan, reference, args, extras, tol=TOL):
    """Output and the gradients of every input of `scan` equal those of `reference`."""
    a1, e1, leaves1 = _with_grads(args, extras)
    a2, e2, leaves2 = _with_grads(args, extras)
    y, y_ref = scan(*a1, **e1), reference(*a2, **e2)
    torch.testing.assert_close(y, y_ref, **tol)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), leaves1)
    grads_ref = torch.autograd.grad((y_ref * w).sum(), leaves2)
    for gr, gr_ref in zip(grads, grads_ref):
        torch.testing.assert_close(gr, gr_ref, **tol)


@pytest.mark.parametrize("b,d,n,length,bc,groups", CASES)
def test_scan_matches_sequential_reference(b, d, n, length, bc, groups):
    args, extras = make_inputs(b, d, n, length, bc, groups, seed=length)
    assert_scans_agree(selective_scan_torch, sequential_scan, args, extras)


def test_scan_without_extras_and_strong_decay():
    """No D / z / bias / softplus; large steps (decays near 0) stay finite and exact."""
    (u, delta, A, B, C), _ = make_inputs(2, 3, 4, 50, with_extras=False, seed=3)
    delta = delta.abs() * 20  # exp(delta * A) underflows towards 0 for some steps
    y = selective_scan_torch(u, delta, A, B, C)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, sequential_scan(u, delta, A, B, C), **TOL)


def test_half_precision_inputs_compute_in_fp32():
    (u, delta, A, B, C), extras = make_inputs(1, 3, 4, 20, seed=5)
    y = selective_scan_torch(u.bfloat16(), delta, A, B, C, **extras)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), sequential_scan(u.bfloat16().float(), delta, A, B, C, **extras),
                               atol=2e-2, rtol=2e-2)


def test_linear_scan_gradcheck():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 2, 19, 3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(1, 2, 19, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(linear_scan, (a, b))


def sequential_states(a, b):
    h, out = torch.zeros_like(b[:, :, 0]), []
    for t in range(a.shape[2]):
        h = a[:, :, t] * h + b[:, :, t]
        out.append(h)
    return torch.stack(out, 2)


def test_scan_is_chunked_not_a_loop_over_time(monkeypatch):
    """~2 sqrt(L) Python iterations (T steps inside all chunks at once, then one per chunk end)."""
    a, b = torch.rand(1, 2, 1000, 3), torch.randn(1, 2, 1000, 3)
    assert scan_module.chunk_length(1000) == 32
    calls = []
    real = torch.addcmul
    monkeypatch.setattr(torch, "addcmul", lambda *x, **k: calls.append(1) or real(*x, **k))
    h = scan_module.scan_states(a, b)
    monkeypatch.undo()
    assert len(calls) == 31 + 31  # (T - 1) local steps + (chunks - 1) carries
    torch.testing.assert_close(h, sequential_states(a, b), **TOL)


@pytest.mark.parametrize("chunk", [2, 3, 8, 64])
def test_scan_any_chunk_length(chunk):
    a, b = torch.rand(2, 3, 61, 4), torch.randn(2, 3, 61, 4)
    torch.testing.assert_close(scan_module.scan_states(a, b, chunk), sequential_states(a, b), **TOL)


@pytest.mark.parametrize("b,d,n,length,bc,groups", [c for c in CASES if c[3] > 1])
def test_inference_path_matches_reference(b, d, n, length, bc, groups):
    """Without autograd the scan is fused per chunk; same values."""
    args, extras = make_inputs(b, d, n, length, bc, groups, seed=length + 1)
    with torch.no_grad():
        torch.testing.assert_close(selective_scan_torch(*args, **extras), sequential_scan(*args, **extras), **TOL)


def reference_direction(xz, conv, x_proj, dt_proj, A_log, D, d_state):
    """One Mamba direction the way the official non-fused path writes it (padded Conv1d module,
    truncated), with the sequential scan."""
    length = xz.shape[-1]
    x, z = xz.chunk(2, dim=1)
    x = F.silu(conv(x)[..., :length])
    x_dbl = x_proj(x.transpose(1, 2))
    dt, B, C = torch.split(x_dbl, [dt_proj.in_features, d_state, d_state], dim=-1)
    dt = (dt @ dt_proj.weight.t()).transpose(1, 2)
    return sequential_scan(x, dt, -torch.exp(A_log), B.transpose(1, 2), C.transpose(1, 2), D, z=z,
                           delta_bias=dt_proj.bias, delta_softplus=True)


@pytest.mark.parametrize("divide_out", [True, False])
def test_bidirectional_layer_is_scan_of_flipped_sequence(divide_out):
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, bimamba=True, divide_out=divide_out)
    x = torch.randn(2, 11, 8)
    y = m(x)
    xz = m.in_proj(x).transpose(1, 2)
    y_f = reference_direction(xz, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D, 4)
    y_b = reference_direction(xz.flip(-1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b, 4).flip(-1)
    inner = (y_f + y_b) / (2 if divide_out else 1)
    torch.testing.assert_close(y, m.out_proj(inner.transpose(1, 2)), **TOL)
    # the backward direction alone is the forward recurrence run on the reversed sequence
    y_b_direct = m._inner(xz.flip(-1), "_b").flip(-1)
    torch.testing.assert_close(y_b_direct, y_b, **TOL)


def test_causal_conv_matches_padded_conv_module():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 6, 13)
    torch.testing.assert_close(causal_conv1d(x, conv.weight, conv.bias), conv(x)[..., :13], **TOL)
    torch.testing.assert_close(causal_conv1d(x, conv.weight, conv.bias, activation="silu"),
                               F.silu(conv(x)[..., :13]), **TOL)


def test_backend_is_visible(caplog):
    """On the CPU the compiled kernels run (numba is a base dependency), named in one log line."""
    scan_module._announced.clear()
    m = Mamba(8, d_state=4)
    assert m.scan_backend is None
    with caplog.at_level(logging.INFO, logger="dart.ops"):
        m(torch.randn(1, 5, 8))
        m(torch.randn(1, 5, 8))
    assert m.scan_backend == "numba" and m.conv_backend == "torch"
    lines = [r.getMessage() for r in caplog.records if "selective scan" in r.getMessage()]
    assert len(lines) == 1 and "numba" in lines[0]
    assert scan_backend(torch.zeros(1)) == "numba"
    assert scan_backend(torch.zeros(1), "torch") == "torch"
    with pytest.raises(RuntimeError):
        selective_scan(*make_inputs(1, 2, 2, 3)[0], backend="mamba_ssm")
    with pytest.raises(ValueError):
        selective_scan(*make_inputs(1, 2, 2, 3)[0], backend="cuda")


# --------------------------------------------------------------------------- compiled CPU scan
def assert_numba_matches_torch(args, extras, tol=TOL):
    """Output and the gradients of every input: compiled kernels vs the PyTorch scan."""
    assert_scans_agree(selective_scan_numba, selective_scan_torch, args, extras, tol)


def test_numba_kernels_are_ready():
    """numba is a base dependency: the compiled path must run here, not silently fall back."""
    assert numba_status() == "ready"


@pytest.mark.parametrize("b,d,n,length,bc,groups", CASES)
def test_numba_scan_matches_torch_scan(b, d, n, length, bc, groups):
    args, extras = make_inputs(b, d, n, length, bc, groups, seed=length + 2)
    assert_numba_matches_torch(args, extras)
    with torch.no_grad():  # and the sequential reference, without autograd
        torch.testing.assert_close(selective_scan_numba(*args, **extras), sequential_scan(*args, **extras), **TOL)


def test_numba_scan_long_sequence():
    """L = 1296 (VideoMamba's 8 x 162-ish token sequences), Mamba-sized state."""
    args, extras = make_inputs(2, 3, 16, 1296, seed=11)
    assert_numba_matches_torch(args, extras)


@pytest.mark.parametrize("scale", [1e-4, 30.0, 300.0])
def test_numba_scan_extreme_steps(scale):
    """Tiny steps (decay ~ 1: long memory) and huge ones (exp(dt A) underflows to 0)."""
    (u, delta, A, B, C), extras = make_inputs(2, 4, 8, 97, seed=int(scale * 10) + 1)
    delta = delta.abs() * scale
    args = (u, delta, A, B, C)
    extras = dict(D=extras["D"], z=extras["z"])  # no softplus: dt = delta exactly
    with torch.no_grad():
        y = selective_scan_numba(*args, **extras)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, sequential_scan(*args, **extras), **TOL)
    assert_numba_matches_torch(args, extras)


@pytest.mark.parametrize("length,delta_range", [(1296, None), (61, 40.0)])
def test_fused_inference_kernel(length, delta_range):
    """Without autograd one kernel does softplus, D skip and z gate too: exact against the
    sequential reference with the strided (batch, dim, L) views the mixer passes (dt transposed
    from a linear's output, z a half of xz), at L = 1296, and over softplus's whole range (delta +
    bias from -40 to 40, where log1p(exp(x)) has a tiny, a curved and a linear part)."""
    (u, delta, A, B, C), extras = make_inputs(2, 5, 16, length, seed=21)
    if delta_range:
        g = torch.Generator().manual_seed(0)
        delta = torch.linspace(-delta_range, delta_range, delta.numel())[torch.randperm(delta.numel(), generator=g)]
        delta = delta.reshape(u.shape)
        softplus = F.softplus(delta + extras["delta_bias"][:, None])
        assert softplus.min() < 1e-16 and softplus.max() > 39  # the range really is covered
    delta_t = delta.transpose(1, 2).contiguous().transpose(1, 2)  # strided like dt in the mixer
    z = torch.cat([u, extras["z"]], dim=1)[:, 5:]  # a non-contiguous half, as in the mixer
    assert not delta_t.is_contiguous() and not z.is_contiguous()
    extras = dict(extras, z=z)
    with torch.no_grad():
        y = selective_scan_numba(u, delta_t, A, B, C, **extras)
        torch.testing.assert_close(y, sequential_scan(u, delta, A, B, C, **extras), **TOL)


def test_numba_scan_bfloat16_and_threads():
    """Half-precision inputs compute in fp32 like the PyTorch path; several threads give the same
    numbers as one (each work item owns its outputs and partial sums)."""
    args, extras = make_inputs(2, 6, 4, 40, seed=7)
    y = selective_scan_numba(args[0].bfloat16(), *args[1:], **extras)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, selective_scan_torch(args[0].bfloat16(), *args[1:], **extras))
    n = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            a, e, leaves = _with_grads(args, extras)
            y = selective_scan_numba(*a, **e)
            outs.append([y, *torch.autograd.grad(y.square().sum(), leaves)])
        for x1, x2 in zip(*outs):
            torch.testing.assert_close(x1, x2, **TOL)
    finally:
        torch.set_num_threads(n)


def test_one_thread_starts_no_thread_pool():
    """A one-thread process runs the serial kernels: numba's OpenMP pool never starts, so torch stays
    on its one thread (the pool's start had set two threads for torch's own OpenMP ops too, and its
    idle threads spin: a one-thread toy training job took two cores from the job beside it)."""
    import os
    import subprocess
    import sys
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from dart.ops.scan_numba import NumbaScan\n"
        "import numba\n"
        "g = torch.Generator().manual_seed(0)\n"
        "dt, u = torch.rand(2, 8, 30, generator=g), torch.randn(2, 8, 30, generator=g, requires_grad=True)\n"
        "A = -torch.rand(8, 4, generator=g)\n"
        "B, C = torch.randn(2, 1, 30, 4, generator=g), torch.randn(2, 1, 30, 4, generator=g)\n"
        "NumbaScan.apply(dt, u, A, B, C).sum().backward()\n"
        "x = torch.randn(256, 256); x @ x\n"
        "try:\n"
        "    layer = numba.threading_layer()\n"
        "except ValueError:\n"
        "    layer = 'none'\n"
        "print(layer, torch.get_num_threads())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["none", "1"]
    # fewer threads than numba's pool (NUMBA_NUM_THREADS 3 here): the pool runs, torch keeps its 2
    env = dict(os.environ, NUMBA_NUM_THREADS="3")
    code2 = code.replace("torch.set_num_threads(1)", "torch.set_num_threads(2)")
    out = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1] == "2" and out.stdout.split()[0] != "none"


def test_falls_back_to_torch_with_one_log_line(monkeypatch, caplog):
    """Without numba (import fails): the PyTorch scan runs, one INFO line says why."""
    real_import = importlib.import_module

    def no_numba(name, package=None):
        if name.endswith("scan_numba"):
            raise ImportError("No module named 'numba'")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_numba)
    monkeypatch.setattr(scan_module, "_numba_status", None)
    monkeypatch.setattr(scan_module, "_announced", set())
    args, extras = make_inputs(1, 3, 4, 9, seed=1)
    with caplog.at_level(logging.INFO, logger="dart.ops"):
        y = selective_scan(*args, **extras)
        selective_scan(*args, **extras)
    assert scan_backend(args[0]) == "torch"
    assert numba_status().startswith("numba not installed")
    lines = [r.getMessage() for r in caplog.records if "selective scan" in r.getMessage()]
    assert len(lines) == 1 and "torch" in lines[0] and "numba not installed" in lines[0]
    torch.testing.assert_close(y, sequential_scan(*args, **extras), **TOL)
    with pytest.raises(RuntimeError, match="numba"):
        selective_scan(*args, **extras, backend="numba")


def test_falls_back_when_kernels_fail(monkeypatch):
    """A numba / LLVM failure at compile time is a fallback too, not a crash."""
    import dart.ops.scan_numba as kernels

    def broken():
        raise RuntimeError("LLVM failure")

    monkeypatch.setattr(kernels, "warm_up", broken)
    monkeypatch.setattr(scan_module, "_numba_status", None)
    assert scan_backend(torch.zeros(1)) == "torch"
    assert "LLVM failure" in numba_status()


def test_uncounted_macs_complete_flop_counter():
    """FlopCounterMode (which sees the linears and the conv, not the scan) + uncounted_macs equals
    the analytic per-component count."""
    m = Mamba(16, d_state=4, bimamba=True)
    x = torch.randn(2, 9, 16)
    extra = []
    h = m.register_forward_hook(lambda mod, args, out: extra.append(mod.uncounted_macs(*args, output=out)))
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(x)
    h.remove()
    total = fc.get_total_flops() // 2 + sum(extra)
    parts = m.macs(2, 9)
    assert total == sum(parts.values()) == mixer_macs(m, 2, 9)
    assert fc.get_total_flops() // 2 == sum(v for k, v in parts.items() if k not in ("scan", "skip_gate"))
    assert parts["scan"] == 2 * 9 * 2 * 9 * m.d_inner * 4
