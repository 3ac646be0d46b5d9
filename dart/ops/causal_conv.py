"""Causal depthwise conv1d (+ optional SiLU): causal-conv1d's CUDA kernel when present, else a
grouped `F.conv1d` on the left-padded sequence (no GPU needed)."""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from .selective_scan import _reason, announce, choose_backend

try:  # optional CUDA extra
    from causal_conv1d import causal_conv1d_fn as _causal_conv1d_fn
except Exception:
    _causal_conv1d_fn = None

BACKENDS = ("causal_conv1d", "torch")


def has_causal_conv1d() -> bool:
    return _causal_conv1d_fn is not None


def conv_backend(x: Tensor, backend: Optional[str] = None) -> str:
    """The backend `causal_conv1d` will use for inputs like `x`."""
    return choose_backend("conv", BACKENDS, has_causal_conv1d() and x.is_cuda, backend, "DART_CONV_BACKEND")


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  activation: Optional[str] = None, backend: Optional[str] = None) -> Tensor:
    """x (batch, dim, L), weight (dim, 1, K) or (dim, K): out_t = sum_k w_k x_{t-K+1+k} (+ bias)."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    which = conv_backend(x, backend)
    announce("causal conv1d", which, _reason(x, has_causal_conv1d(), "causal-conv1d"))
    w = weight.reshape(weight.shape[0], weight.shape[-1])
    if which == "causal_conv1d":
        return _causal_conv1d_fn(x, w, bias, activation=activation)
    k = w.shape[-1]
    y = F.conv1d(F.pad(x, (k - 1, 0)), w.unsqueeze(1), bias, groups=w.shape[0])
    return F.silu(y) if activation else y


def conv_macs(batch: int, length: int, dim: int, kernel: int) -> int:
    return batch * length * dim * kernel
