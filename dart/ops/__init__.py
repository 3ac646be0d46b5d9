"""Operations with an optional CUDA kernel and a pure-PyTorch fallback (see each module)."""
from .causal_conv import causal_conv1d, conv_backend, conv_macs, has_causal_conv1d
from .selective_scan import (has_mamba_ssm, linear_scan, scan_backend, scan_macs, selective_scan,
                             selective_scan_torch)

__all__ = ["causal_conv1d", "conv_backend", "conv_macs", "has_causal_conv1d", "has_mamba_ssm",
           "linear_scan", "scan_backend", "scan_macs", "selective_scan", "selective_scan_torch"]
