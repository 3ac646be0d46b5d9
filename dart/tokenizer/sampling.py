"""Resample each variable-size region to a fixed patch with one batched `grid_sample`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sampling_grid(row_bounds: Tensor, patch_bounds: Tensor, grid: int, patch_size: int,
                  dtype: torch.dtype = torch.float32) -> Tensor:
    """Normalised sampling locations (B, P, N*P, 2) for `grid_sample` (align_corners=False).

    Pixel (v, u) of patch k sits at the centre of the u-th of P equal steps along the patch's raster
    interval and of the v-th of P steps across the height of the band the point falls in. This
    reproduces the two-pass "strip" resampling of the reference in one pass; only points within
    half a pixel of a band seam can differ. Coordinates are computed in the bounds' dtype and
    rounded once to `dtype`, so a standard grid lands exactly on pixel centres.
    """
    B = patch_bounds.shape[0]
    rows = row_bounds.shape[1] - 1
    steps = (torch.arange(patch_size, device=patch_bounds.device, dtype=patch_bounds.dtype) + 0.5) / patch_size
    start, length = patch_bounds[:, :-1], patch_bounds[:, 1:] - patch_bounds[:, :-1]
    seq = start[..., None] + steps * length[..., None]  # (B, N, P_u) positions along the sequence
    band = torch.div(seq, grid, rounding_mode="floor").clamp_(0, rows - 1)
    scale = 2.0 / grid
    x = (seq - band * grid) * scale - 1.0
    band = band.long()
    top = row_bounds.gather(1, band.flatten(1)).view_as(seq)
    height = row_bounds.gather(1, (band + 1).flatten(1)).view_as(seq) - top
    # laid out (B, P_v, N, P_u) so that grid_sample's output rows are the patches' rows
    y = (top * scale - 1.0)[:, None] + steps[None, :, None, None] * (height * scale)[:, None]
    x = x.to(dtype)[:, None].expand_as(y)
    return torch.stack([x, y.to(dtype)], dim=-1).view(B, patch_size, -1, 2)


def sample_patches(images: Tensor, grid: Tensor) -> Tensor:
    """Bilinearly sample all patches at once: (B, C, H, W) -> a strip (B, C, P, N*P).

    Patch k occupies columns [k*P, (k+1)*P) of the strip, so a stride-P convolution of the strip
    is the patch projection of every patch (see `DART.project`).
    """
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)
