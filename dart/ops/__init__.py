"""Operations with optional compiled kernels (CUDA; numba on the CPU for the scan) and a pure-PyTorch
fallback (see each module)."""
from .causal_conv import causal_conv1d, conv_backend, conv_macs, has_causal_conv1d
from .selective_scan import (has_mamba_ssm, linear_scan, numba_status, scan_backend, scan_macs,
                             selective_scan, selective_scan_numba, selective_scan_torch)

__all__ = ["causal_conv1d", "conv_backend", "conv_macs", "has_causal_conv1d", "has_mamba_ssm",
           "linear_scan", "numba_status", "scan_backend", "scan_macs", "selective_scan",
           "selective_scan_numba", "selective_scan_torch"]
