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


def rows_for_tokens(num_tokens: int) -> int:
    """Number of row bands for a token budget: round(sqrt(N)) (121->11, 196->14, 288->17, 392->20)."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    return max(1, int(math.floor(math.sqrt(num_tokens) + 0.5)))


def inverse_cdf(density: Tensor, levels: Tensor) -> Tensor:
    """Invert the CDF of a piecewise-constant 1-D density.

    density: (B, L) non-negative mass of each unit cell [i, i+1].
    levels: (K,) or (B, K) fractions in [0, 1] of the total mass.
    Returns (B, K) positions in [0, L]. Piecewise linear in the density, hence differentiable
    with respect to it (the gradient flows through the cumulative sums and the cell's mass).
    """
    density = density.clamp_min(_EPS)
    cum = density.cumsum(-1)
    total = cum[:, -1:]
    if levels.dim() == 1:
        levels = levels.unsqueeze(0).expand(density.shape[0], -1)
    target = levels * total
    # first cell whose cumulative mass exceeds the target: the target falls inside it
    idx = torch.searchsorted(cum.detach(), target.detach().contiguous(), right=True)
    idx = idx.clamp_(max=density.shape[-1] - 1)
    cell_mass = density.gather(-1, idx)
    before = cum.gather(-1, idx) - cell_mass
    frac = ((target - before) / cell_mass).clamp(0.0, 1.0)
    return idx.to(density.dtype) + frac


def quantile_bounds(density: Tensor, parts: int) -> Tensor:
    """Boundaries (B, parts+1) that cut a density into `parts` intervals of equal mass.

    The outer boundaries are exactly 0 and L; the inner ones come from `inverse_cdf`.
    """
    B, L = density.shape
    levels = torch.arange(1, parts, device=density.device, dtype=density.dtype) / parts
    inner = inverse_cdf(density, levels)
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


def normalize_scores(scores: Tensor) -> Tensor:
    """Scores (B, g, g) -> probability mass per cell, summing to 1 per image."""
    flat = scores.flatten(1)
    return (flat / flat.sum(-1, keepdim=True).clamp_min(_EPS)).view_as(scores)


def partition(scores: Tensor, num_tokens: int, rows: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Cut a score map into `num_tokens` regions of equal mass, rows first.

    scores: (B, g, g) positive scores.
    Returns
      row_bounds: (B, rows+1), row band edges in grid units along y, in [0, g];
      patch_bounds: (B, N+1), patch edges along the raster sequence of the bands, in [0, rows*g];
      band_density: (B, rows, g), the score mass re-binned into the bands (sums to 1).
    """
    B, g, g2 = scores.shape
    if g != g2:
        raise ValueError(f"score map must be square, got {g}x{g2}")
    rows = rows or rows_for_tokens(num_tokens)
    p = normalize_scores(scores)
    row_bounds = quantile_bounds(p.sum(-1), rows)
    # each band takes the grid rows it overlaps, weighted by the overlap length
    band_density = overlap_weights(row_bounds, g) @ p
    band_density = band_density / band_density.flatten(1).sum(-1).clamp_min(_EPS)[:, None, None]
    patch_bounds = quantile_bounds(band_density.flatten(1), num_tokens)
    return row_bounds, patch_bounds, band_density


def resample_pos_embed(pos_embed: Tensor, row_bounds: Tensor, patch_bounds: Tensor) -> Tensor:
    """Resample a (g*g, D) or (1, g*g, D) position table with the partition's geometry -> (B, N, D).

    Each band takes the overlap-weighted mean of the grid rows it covers; each patch then takes the
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
    w = overlap_weights(row_bounds.to(dt), g)
    w = w / w.sum(-1, keepdim=True).clamp_min(_EPS)  # (B, rows, g)
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


def patch_rects(row_bounds: Tensor, patch_bounds: Tensor, grid: int, height: int, width: int) -> Tensor:
    """Rectangles of each patch in input pixels, (B, N, 2, 4) as (x0, y0, x1, y1).

    A patch is an interval of the raster sequence; it lies in one band or runs from the end of one
    band into the start of the next (never further, since a band holds more mass than a patch).
    Piece 0 is the part in the band where the patch starts; piece 1 is its continuation in the next
    band and has zero area when the patch does not straddle.
    """
    rows = row_bounds.shape[1] - 1
    start, end = patch_bounds[:, :-1], patch_bounds[:, 1:]
    # a start a rounding error short of a band edge belongs to the next band
    band = torch.div(start + 1e-7 * grid, grid, rounding_mode="floor").clamp(0, rows - 1)
    band_end = band * grid + grid
    x0 = (start - band * grid).clamp_min(0.0)
    x1 = torch.minimum(end, band_end) - band * grid
    y0 = row_bounds.gather(1, band.long())
    y1 = row_bounds.gather(1, (band + 1).long().clamp(max=rows))
    nxt = (band + 1).clamp(max=rows - 1).long()
    spill = (end - band_end).clamp_min(0.0)
    piece1 = torch.stack([torch.zeros_like(x0), row_bounds.gather(1, nxt), spill,
                          row_bounds.gather(1, (nxt + 1).clamp(max=rows))], -1)
    piece0 = torch.stack([x0, y0, x1, y1], -1)
    rects = torch.stack([piece0, piece1], dim=2)
    scale = rects.new_tensor([width / grid, height / grid, width / grid, height / grid])
    return rects * scale
