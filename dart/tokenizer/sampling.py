"""Resample each variable-size region to a fixed patch with one batched `grid_sample` (the
reference convention adds a small batched blend in the last pixel before each band's end)."""
from __future__ import annotations

from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor


CONVENTIONS = ("reference", "centred")


class ReferenceGrid(NamedTuple):
    """`sampling_grid`'s output for the reference convention: the one-pass sample points and the
    sample columns where the reference's strip blends two bands.

    The reference samples in two passes: each band becomes a P-row strip across all W columns, the
    strips joined end to end, then every patch is sampled along that joined strip. So a column
    less than a pixel before the end of band k (pixel c in (W-1, W)) blends column W-1 of band k
    with column 0 of band k+1 at band k+1's own sample rows (zeros after the last band), by
    c - (W-1). A one-pass sampler clamps such a column to band k's column W-1; `sample_patches`
    then blends the listed columns, which are few (about one per seam, none on most images).
    """
    points: Tensor  # (B, P, N*P, 2) normalised (x, y), as for the centred convention
    seam_batch: Tensor  # (M,) long: the image of each seam column
    seam_column: Tensor  # (M,) long: its index along the strip, in [0, N*P)
    seam_band: Tensor  # (M,) long: the band it lies in (it blends into the next one)
    seam_weight: Tensor  # (M,): c - (W-1), in (0, 1), the weight of the next band's column 0
    next_first: Tensor  # (B, P, rows-1, 2): column 0 of bands 1..rows-1 at their own sample rows

    def to(self, dtype: torch.dtype) -> "ReferenceGrid":
        return self._replace(points=self.points.to(dtype), seam_weight=self.seam_weight.to(dtype),
                             next_first=self.next_first.to(dtype))


Grid = Union[Tensor, ReferenceGrid]


def sampling_grid(row_bounds: Tensor, patch_bounds: Tensor, grid: int, patch_size: int,
                  dtype: torch.dtype = torch.float32, convention: str = "centred",
                  img_size: tuple[int, int] | None = None) -> Grid:
    """Sampling locations for `sample_patches`: normalised points (B, P, N*P, 2) for `grid_sample`
    (see `align_corners`), and for the reference convention a `ReferenceGrid` around them.

    convention="centred": pixel (v, u) of patch k sits at the centre of the u-th of P equal steps
    along the patch's raster interval and of the v-th of P steps across the height of the band the
    point falls in ((t + 0.5) / P, align_corners=False).
    convention="reference": the official code's left-aligned steps t / P from the start of the band
    and of the patch interval, read as pixel indices (align_corners=True; needs `img_size`), and its
    strip's blend into the next band in the last pixel of each band (see `ReferenceGrid`). Every
    patch then matches the official code's within 1e-4, seam patches included (tests/test_golden:
    at most 2.1e-6 in float64, 2.3e-6 in float32, N = 196/392, golden, uniform and near-uniform
    score maps).
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
    local = seq - band * grid  # position inside the band, grid units
    x = (local * scale_x - 1.0).to(dtype)
    # Each band's P sample rows, (B, P_v, rows), rounded to `dtype` once from the bounds' dtype;
    # the full (B, P_v, N, P_u) grid is then only a gather of them by the band each point is in,
    # laid out so that grid_sample's output rows are the patches' rows.
    steps_v = steps.to(row_bounds.dtype)[None, :, None]
    top, height = row_bounds[:, None, :-1], (row_bounds[:, 1:] - row_bounds[:, :-1])[:, None]
    rows_y = ((top + steps_v * height) * scale_y - 1.0).to(dtype)
    band_index = band.long().view(B, 1, -1)
    index = band_index.expand(B, patch_size, -1)
    points = torch.stack([x.view(B, 1, -1).expand(B, patch_size, -1), rows_y.gather(2, index)], dim=-1)
    if convention == "centred":
        return points
    # The columns in the last pixel of their band, by how far they lie past pixel W-1: nonzero
    # costs one host sync on an accelerator (the module's input checks cost three), and the
    # blend then touches those few columns only instead of the whole strip.
    past = (local * (W / grid) - (W - 1)).view(B, -1)
    seam_batch, seam_column = (past > 0).nonzero(as_tuple=True)
    seam_weight = past[seam_batch, seam_column].to(dtype)
    seam_band = band_index.view(B, -1)[seam_batch, seam_column]
    next_first = F.pad(rows_y[:, :, 1:, None], (1, 0), value=-1.0)  # x = -1: column 0
    return ReferenceGrid(points, seam_batch, seam_column, seam_band, seam_weight, next_first)


def align_corners(convention: str) -> bool:
    """`grid_sample`'s align_corners for a sampling convention."""
    return convention == "reference"


def sample_patches(images: Tensor, grid: Grid, convention: str = "centred") -> Tensor:
    """Bilinearly sample all patches at once: (B, C, H, W) -> a strip (B, C, P, N*P).

    Patch k occupies columns [k*P, (k+1)*P) of the strip, so a stride-P convolution of the strip
    is the patch projection of every patch (see `DART.project`). `grid` is `sampling_grid`'s output
    for the same convention; with the reference's, the points in a band's last pixel are then
    blended with the next band's first column (zeros after the last band) as the reference's strip
    does: one small extra `grid_sample` of rows-1 columns and a lerp of the seam columns, batched.
    """
    reference = isinstance(grid, ReferenceGrid)
    if reference != (convention == "reference"):
        raise ValueError(f"sampling convention {convention!r} needs the grid that sampling_grid("
                         f"convention={convention!r}) returns, got a {type(grid).__name__}")
    dtype = images.dtype
    if images.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        # torch's CPU grid_sample is wrong (or crashes) in half precision: sample in fp32
        images = images.float()
    grid = grid.to(images.dtype)
    points = grid.points if reference else grid
    strip = F.grid_sample(images, points, mode="bilinear", padding_mode="border",
                          align_corners=align_corners(convention))
    if reference:
        first = F.grid_sample(images, grid.next_first, mode="bilinear", padding_mode="border",
                              align_corners=True)  # (B, C, P, rows-1)
        first = F.pad(first, (0, 1))  # past the last band the reference's strip pads with zeros
        # blend the seam columns in place (grid_sample's backward does not need its output)
        b, j = grid.seam_batch, grid.seam_column
        columns = strip.permute(0, 3, 1, 2)  # (B, N*P, C, P), a view of the strip
        nxt = first.permute(0, 3, 1, 2)[b, grid.seam_band]
        weight = grid.seam_weight.to(strip.dtype)[:, None, None]  # autocast may sample in fp32
        columns.index_put_((b, j), torch.lerp(columns[b, j], nxt, weight))
    return strip.to(dtype)
