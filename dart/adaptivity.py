"""How far a DART partition is from the grid: measures for reports and tests.

`partition_stats(part)` summarises a batch's `Partition`:
- area_cv: spread of the patch areas, std / mean over the patches of an image (0 for the grid),
  averaged over images; area_min_frac / area_max_frac: the smallest / largest patch over the mean
  patch area (1 and 1 for the grid);
- patches_per_band: mean number of patches per row band (the band that holds most of a patch's
  area), one value per band, and band_height_cv: spread of the band heights;
- score_ratio: an image's highest score over its lowest, averaged over images (1 for flat scores);
  score_cv: std / mean of the scores.
`tokens_in_box(rects, boxes)`: the tokens a partition spends on a known region (the toy `detail`
set's pattern), against N * its area share for the grid.

Patches may consist of any number K >= 1 of rectangle pieces (`rects` (B, N, K, 4) as x0, y0, x1,
y1; zero-area pieces are padding).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .tokenizer import Partition


def piece_areas(rects: Tensor) -> Tensor:
    """(B, N, K, 4) rectangles -> (B, N, K) areas in pixels of every piece."""
    if rects.dim() != 4 or rects.shape[-1] != 4:
        raise ValueError(f"rects must be (batch, patches, pieces, 4), got {tuple(rects.shape)}")
    w = (rects[..., 2] - rects[..., 0]).clamp_min(0)
    h = (rects[..., 3] - rects[..., 1]).clamp_min(0)
    return w * h


def patch_areas(rects: Tensor) -> Tensor:
    """(B, N, K, 4) rectangles -> (B, N) areas in pixels (pieces summed)."""
    return piece_areas(rects).sum(-1)


def patch_bands(rects: Tensor, row_bounds: Tensor, grid: int, height: int) -> Tensor:
    """(B, N) index of the row band holding the largest piece of each patch."""
    main = piece_areas(rects).argmax(-1, keepdim=True)  # (B, N, 1)
    piece = rects.gather(2, main[..., None].expand(*main.shape, 4))[:, :, 0]
    cy = (piece[..., 1] + piece[..., 3]) / 2 * grid / height  # centre, in score-grid units
    inner = row_bounds[:, 1:-1].contiguous().to(cy.dtype)
    return torch.searchsorted(inner, cy.contiguous(), right=True)


def tokens_in_box(rects: Tensor, boxes: Tensor) -> Tensor:
    """How many tokens a partition spends on a box: the sum over patches of the share of each
    patch's area inside the box, (B,). The grid spends N * box area / image area.

    rects: (B, N, K, 4); boxes: (B, 4) x0, y0, x1, y1 in the rects' pixels."""
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or boxes.shape[0] != rects.shape[0]:
        raise ValueError(f"boxes must be (batch, 4) for {rects.shape[0]} images, got {tuple(boxes.shape)}")
    b = boxes.to(rects.dtype)[:, None, None, :]
    w = (torch.minimum(rects[..., 2], b[..., 2]) - torch.maximum(rects[..., 0], b[..., 0])).clamp_min(0)
    h = (torch.minimum(rects[..., 3], b[..., 3]) - torch.maximum(rects[..., 1], b[..., 1])).clamp_min(0)
    inside = (w * h).sum(-1)
    return (inside / patch_areas(rects).clamp_min(1e-12)).sum(1)


def partition_stats(part: Partition) -> dict:
    rects = part.rects.double()
    areas = patch_areas(rects)
    mean = areas.mean(1, keepdim=True)
    rows = part.row_bounds.shape[1] - 1
    bands = patch_bands(rects, part.row_bounds.double(), part.grid, part.img_size[0])
    counts = torch.zeros(rects.shape[0], rows, dtype=torch.float64)
    counts.scatter_add_(1, bands, torch.ones_like(bands, dtype=torch.float64))
    heights = part.row_bounds.double().diff(dim=1)
    s = part.scores.double().flatten(1)
    return {
        "area_cv": float((areas.std(1, unbiased=False) / mean[:, 0]).mean()),
        "area_min_frac": float((areas.min(1).values / mean[:, 0]).mean()),
        "area_max_frac": float((areas.max(1).values / mean[:, 0]).mean()),
        "patches_per_band": [float(v) for v in counts.mean(0)],
        "band_height_cv": float((heights.std(1, unbiased=False) / heights.mean(1)).mean()),
        "score_ratio": float((s.max(1).values / s.min(1).values.clamp_min(1e-12)).mean()),
        "score_cv": float((s.std(1, unbiased=False) / s.mean(1)).mean()),
    }
