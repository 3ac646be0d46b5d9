"""Resample each variable-size region to a fixed patch with one batched `grid_sample`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sampling_grid(row_bounds: Tensor, patch_bounds: Tensor, grid: int, patch_size: int) -> Tensor:
    """Normalised sampling locations (B, P, N*P, 2) for `grid_sample` (align_corners=False).

    Pixel (v, u) of patch k sits at the centre of the u-th of P equal steps along the patch's raster
    interval and of the v-th of P steps across the height of the band the point falls in. This
    reproduces the two-pass "strip" resampling of the reference in one pass; only points within
    half a pixel of a band seam can differ.
    """
    B, n1 = patch_bounds.shape
    rows = row_bounds.shape[1] - 1
    steps = (torch.arange(patch_size, device=patch_bounds.device, dtype=patch_bounds.dtype) + 0.5) / patch_size
    start, length = patch_bounds[:, :-1], patch_bounds[:, 1:] - patch_bounds[:, :-1]
    seq = start[..., None] + steps * length[..., None]  # (B, N, P) positions along the sequence
    band = torch.div(seq, grid, rounding_mode="floor").clamp_(0, rows - 1)
    x = seq - band * grid
    band = band.long()
    top = row_bounds.gather(1, band.flatten(1)).view_as(seq)
    height = row_bounds.gather(1, (band + 1).flatten(1)).view_as(seq) - top
    # y varies over v (rows of the output patch), x over u (its columns)
    y = top[:, :, None, :] + steps[:, None] * height[:, :, None, :]  # (B, N, P_v, P_u)
    x = x[:, :, None, :].expand_as(y)
    coords = torch.stack([x, y], dim=-1) * (2.0 / grid) - 1.0  # (B, N, P, P, 2)
    return coords.permute(0, 2, 1, 3, 4).reshape(B, patch_size, -1, 2)


def sample_patches(images: Tensor, grid: Tensor, patch_size: int) -> Tensor:
    """Bilinearly sample the patches: (B, C, H, W) -> (B, N, C*P*P), laid out like a conv kernel."""
    B, C = images.shape[:2]
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                        align_corners=False)  # (B, C, P, N*P)
    out = out.view(B, C, patch_size, -1, patch_size).permute(0, 3, 1, 2, 4)
    return out.reshape(B, out.shape[1], -1)
