"""Differentiable quantile partition of a score map: the geometry of DART.

Pure, batched tensor functions with no module state, so each piece can be tested and benchmarked
alone. Coordinates are in score-grid units: a g x g score map covers [0, g] x [0, g]; a raster
sequence of `rows` bands x g columns covers [0, rows * g].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-12
# The reference adds this to every mass it divides by (the total, a cell's mass); it moves boundaries
# by up to 1e-3 px, so keeping it is part of matching the reference's partitions.
REFERENCE_EPS = 1e-8


def rows_for_tokens(num_tokens: int) -> int:
    """Number of row bands for a token budget: round(sqrt(N)) (121->11, 196->14, 288->17, 392->20)."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    return max(1, int(math.floor(math.sqrt(num_tokens) + 0.5)))


def inverse_cdf(density: Tensor, levels: Tensor, eps: float = REFERENCE_EPS) -> Tensor:
    """Invert the CDF of a piecewise-constant 1-D density.

    density: (B, L) non-negative mass of each unit cell [i, i+1].
    levels: (K,) or (B, K) cumulative masses to find (fractions when the density sums to 1).
    Returns (B, K) positions in [0, L]: in the first cell whose cumulative mass reaches the level,
    at (level - mass before it) / (its mass + eps), `eps` as in the reference. Piecewise linear in
    the density, hence differentiable with respect to it.
    """
    cum = density.cumsum(-1)
    if levels.dim() == 1:
        levels = levels.unsqueeze(0).expand(density.shape[0], -1)
    idx = torch.searchsorted(cum.detach(), levels.detach().contiguous(), right=False)
    idx = idx.clamp_(max=density.shape[-1] - 1)
    cell_mass = density.gather(-1, idx)
    before = cum.gather(-1, idx) - cell_mass
    frac = (levels - before) / (cell_mass + eps).clamp_min(_EPS)
    # the clamp only guards round-off; its gradient must not vanish at the bounds, where a level
    # lands exactly on a cell edge (uniform scores: a zero-initialised scorer would never learn)
    frac = frac + (frac.clamp(0.0, 1.0) - frac).detach()
    return idx.to(density.dtype) + frac


def quantile_bounds(density: Tensor, parts: int, eps: float = REFERENCE_EPS) -> Tensor:
    """Boundaries (B, parts+1) that cut a density (summing to about 1) into `parts` intervals of
    equal mass: the levels k/parts. The outer boundaries are exactly 0 and L.
    """
    B, L = density.shape
    levels = torch.arange(1, parts, device=density.device, dtype=density.dtype) / parts
    inner = inverse_cdf(density, levels, eps)
    zero = density.new_zeros(B, 1)
    end = density.new_full((B, 1), float(L))
    return torch.cat([zero, inner, end], dim=-1)


def overlap_weights(bounds: Tensor, length: int) -> Tensor:
    """Overlap length of each interval [b_k, b_k+1] with each unit cell [i, i+1] of [0, length].

    bounds: (B, K+1) increasing. Returns (B, K, length).
    """
    cells = torch.arange(length, device=bounds.device, dtype=bounds.dtype)
    lo = bounds[:, :-1, None]
    hi = bounds[:, 1:, None]
    return (torch.minimum(hi, cells + 1) - torch.maximum(lo, cells)).clamp_min(0.0)


def band_weights(row_bounds: Tensor, grid: int) -> Tensor:
    """(B, rows, g) weights that give each row band the overlap-weighted *average* of the grid rows
    it covers: overlap lengths normalised to sum 1 per band (the reference's re-binning).

    The one re-binning of the method: the score density and the position table both go through it.
    """
    w = overlap_weights(row_bounds, grid)
    return w / w.sum(-1, keepdim=True).clamp_min(_EPS)


def normalize_scores(scores: Tensor) -> Tensor:
    """Scores (B, g, g) -> probability mass per cell, summing to 1 per image."""
    flat = scores.flatten(1)
    return (flat / flat.sum(-1, keepdim=True).clamp_min(_EPS)).view_as(scores)


def partition(scores: Tensor, num_tokens: int, rows: int | None = None,
              eps: float = REFERENCE_EPS) -> tuple[Tensor, Tensor, Tensor]:
    """Cut a score map into `num_tokens` regions of equal mass, rows first, as the reference does.

    1. Row bands at the quantiles k/rows of the row masses (dense rows become thin bands).
    2. Each band's g columns take the overlap-weighted average of the grid rows it covers
       (`band_weights`), renormalised over all rows*g cells. A thin band over dense rows keeps a
       high density per cell, so it receives more than N/rows patches: tokens flow between rows.
    3. Patch edges at the quantiles k/N of that density read in raster order (band after band).

    scores: (B, g, g) positive scores.
    Returns
      row_bounds: (B, rows+1), row band edges in grid units along y, in [0, g];
      patch_bounds: (B, N+1), patch edges along the raster sequence of the bands, in [0, rows*g];
      band_density: (B, rows, g), the re-binned density the patch edges are cut from (sums to 1).
    """
    B, g, g2 = scores.shape
    if g != g2:
        raise ValueError(f"score map must be square, got {g}x{g2}")
    rows = rows or rows_for_tokens(num_tokens)
    p = normalize_scores(scores)
    row_mass = p.sum(-1)
    row_bounds = quantile_bounds(row_mass / (row_mass.sum(-1, keepdim=True) + eps), rows, eps)
    band_density = band_weights(row_bounds, g) @ p
    band_density = band_density / band_density.flatten(1).sum(-1).clamp_min(_EPS)[:, None, None]
    patch_bounds = quantile_bounds(band_density.flatten(1), num_tokens, eps)
    return row_bounds, patch_bounds, band_density


def resample_pos_embed(pos_embed: Tensor, row_bounds: Tensor, patch_bounds: Tensor) -> Tensor:
    """Resample a (g*g, D) or (1, g*g, D) position table with the partition's geometry -> (B, N, D).

    Each band takes the overlap-weighted mean of the grid rows it covers (`band_weights`, the same
    re-binning as the density's); each patch then takes the
    mean of the band cells its raster interval covers, i.e. (F(b) - F(a)) / (b - a) with F the
    running integral along the raster sequence. F is read off per-band cumulative sums, so the cost
    is O(B * rows * g^2 * D) rather than the O(B * N * rows * g * D) of a dense overlap matrix.
    Computed in the bounds' dtype (float64 in DART), returned in the table's dtype.
    """
    table = pos_embed.reshape(-1, pos_embed.shape[-1])
    g = int(round(math.sqrt(table.shape[0])))
    if g * g != table.shape[0]:
        raise ValueError(f"position table of {table.shape[0]} entries is not a square grid")
    B, rows, D = row_bounds.shape[0], row_bounds.shape[1] - 1, table.shape[-1]
    dt = torch.promote_types(row_bounds.dtype, torch.float32)
    T = table.to(dt).view(g, g, D)
    col_cum = torch.cat([T.new_zeros(g, 1, D), T.cumsum(1)], dim=1)  # (g, g+1, D)
    w = band_weights(row_bounds.to(dt), g)  # (B, rows, g)
    bands = (w @ T.view(g, -1)).view(B, rows, g, D)  # band means per column
    band_cum = (w @ col_cum.view(g, -1)).view(B, rows, g + 1, D)  # running integral within each band
    before = torch.cat([T.new_zeros(B, 1, D), band_cum[:, :, g].cumsum(1)], dim=1)  # (B, rows+1, D)
    t = patch_bounds.to(dt)
    band = torch.div(t.detach(), g, rounding_mode="floor").long().clamp_(0, rows - 1)
    x = t - band * g
    col = x.detach().floor().long().clamp_(0, g - 1)
    frac = (x - col)[..., None]
    img = torch.arange(B, device=t.device)[:, None]
    integral = before[img, band] + band_cum[img, band, col] + frac * bands[img, band, col]  # F(t), (B, N+1, D)
    width = (t[:, 1:] - t[:, :-1]).clamp_min(_EPS)[..., None]
    return ((integral[:, 1:] - integral[:, :-1]) / width).to(table.dtype)


def band_of(bound: Tensor, grid: int, rows: int, enters: bool = True) -> Tensor:
    """Band index (long) of positions along the raster sequence. A position a rounding error from a
    band edge counts in the band it enters (a patch start) or, with enters=False, the one it
    leaves (a patch end)."""
    tol = 1e-7 * grid
    shifted = bound + tol if enters else bound - tol
    return torch.div(shifted, grid, rounding_mode="floor").clamp(0, rows - 1).long()


def patch_rects(row_bounds: Tensor, patch_bounds: Tensor, grid: int, height: int, width: int) -> Tensor:
    """Rectangles of each patch in input pixels, (B, N, K, 4) as (x0, y0, x1, y1).

    A patch is an interval of the raster sequence of the bands; it lies in one band or runs on
    into the next ones (with average re-binning a patch over a thin band can cover several).
    Piece k is the part of the patch in the k-th band it touches; K is the most bands any patch
    of the batch touches, and pieces past a patch's last band have zero area.
    """
    rows = row_bounds.shape[1] - 1
    start, end = patch_bounds[:, :-1], patch_bounds[:, 1:]
    first = band_of(start, grid, rows)
    last = band_of(end, grid, rows, enters=False)
    last = torch.maximum(first, last)
    pieces = int((last - first).max().item()) + 1 if start.numel() else 1
    band = first[..., None] + torch.arange(pieces, device=start.device)  # (B, N, K)
    used = band <= last[..., None]
    band = band.clamp(max=rows - 1)
    origin = (band * grid).to(start.dtype)
    x0 = torch.maximum(start[..., None], origin) - origin
    x1 = torch.minimum(end[..., None], origin + grid) - origin
    y0 = row_bounds.gather(1, band.flatten(1)).view_as(x0)
    y1 = row_bounds.gather(1, (band + 1).flatten(1)).view_as(x0)
    rects = torch.stack([x0, y0, x1, y1], -1) * used[..., None]
    scale = rects.new_tensor([width / grid, height / grid, width / grid, height / grid])
    return rects * scale


def patches_per_band(patch_bounds: Tensor, rows: int, grid: int) -> Tensor:
    """(B, rows) number of patches whose interval starts in each band (how tokens flow between rows)."""
    start = patch_bounds[:, :-1]
    band = band_of(start, grid, rows)
    counts = torch.zeros(start.shape[0], rows, dtype=torch.long, device=start.device)
    return counts.scatter_add_(1, band, torch.ones_like(band))
