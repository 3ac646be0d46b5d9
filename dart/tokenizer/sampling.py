"""Resample each variable-size region to a fixed patch with one batched `grid_sample`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


CONVENTIONS = ("reference", "centred")


def sampling_grid(row_bounds: Tensor, patch_bounds: Tensor, grid: int, patch_size: int,
                  dtype: torch.dtype = torch.float32, convention: str = "centred",
                  img_size: tuple[int, int] | None = None) -> Tensor:
    """Normalised sampling locations (B, P, N*P, 2) for `grid_sample` (see `align_corners`).

    convention="centred": pixel (v, u) of patch k sits at the centre of the u-th of P equal steps
    along the patch's raster interval and of the v-th of P steps across the height of the band the
    point falls in ((t + 0.5) / P, align_corners=align_corners(convention)).
    convention="reference": the official code's left-aligned steps t / P from the start of the band
    and of the patch interval, read as pixel indices (align_corners=True; needs `img_size`).
    Coordinates are computed in the bounds' dtype and rounded once to `dtype`.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"sampling convention must be one of {CONVENTIONS}, got {convention!r}")
    B = patch_bounds.shape[0]
    rows = row_bounds.shape[1] - 1
    offset = 0.5 if convention == "centred" else 0.0
    steps = (torch.arange(patch_size, device=patch_bounds.device, dtype=patch_bounds.dtype) + offset) / patch_size
    if convention == "centred":  # grid units -> [-1, 1] over the image's outer edges
        scale_x = scale_y = 2.0 / grid
    else:  # grid units -> pixel index i -> 2 i / (size - 1) - 1 (pixel centres at the ends)
        if img_size is None:
            raise ValueError("the reference sampling convention needs img_size")
        H, W = img_size
        scale_x, scale_y = 2.0 * W / (grid * max(W - 1, 1)), 2.0 * H / (grid * max(H - 1, 1))
    start, length = patch_bounds[:, :-1], patch_bounds[:, 1:] - patch_bounds[:, :-1]
    seq = start[..., None] + steps * length[..., None]  # (B, N, P_u) positions along the sequence
    band = torch.div(seq, grid, rounding_mode="floor").clamp_(0, rows - 1)
    x = (seq - band * grid) * scale_x - 1.0
    band = band.long()
    top = row_bounds.gather(1, band.flatten(1)).view_as(seq)
    height = row_bounds.gather(1, (band + 1).flatten(1)).view_as(seq) - top
    # laid out (B, P_v, N, P_u) so that grid_sample's output rows are the patches' rows
    y = (top * scale_y - 1.0)[:, None] + steps[None, :, None, None] * (height * scale_y)[:, None]
    x = x.to(dtype)[:, None].expand_as(y)
    return torch.stack([x, y.to(dtype)], dim=-1).view(B, patch_size, -1, 2)


def align_corners(convention: str) -> bool:
    """`grid_sample`'s align_corners for a sampling convention."""
    return convention == "reference"


def sample_patches(images: Tensor, grid: Tensor, convention: str = "centred") -> Tensor:
    """Bilinearly sample all patches at once: (B, C, H, W) -> a strip (B, C, P, N*P).

    Patch k occupies columns [k*P, (k+1)*P) of the strip, so a stride-P convolution of the strip
    is the patch projection of every patch (see `DART.project`).
    """
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=align_corners(convention))
