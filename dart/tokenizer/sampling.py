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
    point falls in ((t + 0.5) / P, align_corners=False).
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
    x = ((seq - band * grid) * scale_x - 1.0).to(dtype)
    # Each band's P sample rows, (B, P_v, rows), rounded to `dtype` once from the bounds' dtype;
    # the full (B, P_v, N, P_u) grid is then only a gather of them by the band each point is in,
    # laid out so that grid_sample's output rows are the patches' rows.
    steps_v = steps.to(row_bounds.dtype)[None, :, None]
    top, height = row_bounds[:, None, :-1], (row_bounds[:, 1:] - row_bounds[:, :-1])[:, None]
    rows_y = ((top + steps_v * height) * scale_y - 1.0).to(dtype)
    index = band.long().view(B, 1, -1).expand(B, patch_size, -1)
    return torch.stack([x.view(B, 1, -1).expand(B, patch_size, -1), rows_y.gather(2, index)], dim=-1)


def align_corners(convention: str) -> bool:
    """`grid_sample`'s align_corners for a sampling convention."""
    return convention == "reference"


def sample_patches(images: Tensor, grid: Tensor, convention: str = "centred") -> Tensor:
    """Bilinearly sample all patches at once: (B, C, H, W) -> a strip (B, C, P, N*P).

    Patch k occupies columns [k*P, (k+1)*P) of the strip, so a stride-P convolution of the strip
    is the patch projection of every patch (see `DART.project`).
    """
    dtype = images.dtype
    if images.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        # torch's CPU grid_sample is wrong (or crashes) in half precision: sample in fp32
        images = images.float()
    strip = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                          align_corners=align_corners(convention))
    return strip.to(dtype)
