"""Baselines for timing DART's geometry and sampling (`python -m bench.tokenizer_split --baselines`).

- `two_pass_patches` / `two_pass_geometry`: the reference implementation's *structure*, written here
  from its description (docs: the paper's method and `dart.tokenizer` docstrings), not its code:
  quantiles by a dense (B, L, K) comparison mask, dense overlap matrices for the position table, and
  two bilinear passes, the first a Python loop over the row bands (each band resized to P rows and
  laid into a strip), the second along the strip. Same numbers as the reference convention, seam
  patches included (both blend a band's last pixel into the next band), so it times the same work.
- `load_revision(rev)`: `dart/tokenizer/{geometry,sampling}.py` as of a git revision, imported as a
  throwaway package, so a before/after comparison runs interleaved in one process.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

EPS = 1e-8


def _dense_quantiles(density: Tensor, parts: int) -> Tensor:
    """Bounds (B, parts+1) by comparing every cumulative mass with every level: a (B, L, K) mask."""
    B, L = density.shape
    cum = density.cumsum(1)
    levels = torch.linspace(0, 1, parts + 1, dtype=density.dtype, device=density.device)[1:-1]
    reached = cum[:, :, None] >= levels
    idx = torch.where(reached.any(1), reached.int().argmax(1), torch.full_like(levels, L - 1, dtype=torch.long))
    before = torch.where(idx > 0, cum.gather(1, (idx - 1).clamp_min(0)), torch.zeros_like(levels))
    inner = idx + (levels - before) / (density.gather(1, idx) + EPS)
    return torch.cat([density.new_zeros(B, 1), inner, density.new_full((B, 1), float(L))], 1)


def _dense_overlap(bounds: Tensor, length: int) -> Tensor:
    cells = torch.arange(length + 1, dtype=bounds.dtype, device=bounds.device)
    w = (torch.minimum(bounds[:, 1:, None], cells[1:]) - torch.maximum(bounds[:, :-1, None], cells[:-1])).clamp_min(0)
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def two_pass_geometry(scores: Tensor, num_tokens: int, rows: int, pos_table: Tensor | None = None):
    """(row_bounds, patch_bounds, pos) in grid units, the reference's way (dense masks and matrices)."""
    B, g, _ = scores.shape
    p = scores.flatten(1) / scores.flatten(1).sum(1, keepdim=True)
    row_mass = p.view(B, g, g).sum(-1)
    row_b = _dense_quantiles(row_mass / (row_mass.sum(1, keepdim=True) + EPS), rows)
    w_rows = _dense_overlap(row_b, g)
    band = (w_rows @ p.view(B, g, g)).flatten(1)
    band = band / band.sum(1, keepdim=True)
    patch_b = _dense_quantiles(band, num_tokens)
    pos = None
    if pos_table is not None:
        bands = w_rows @ pos_table.view(g, g, -1).flatten(1).to(w_rows.dtype)
        pos = _dense_overlap(patch_b, rows * g) @ bands.view(B, rows * g, -1)
    return row_b, patch_b, pos


def two_pass_patches(images: Tensor, row_b: Tensor, patch_b: Tensor, grid: int, patch: int = 16) -> Tensor:
    """Patches (B, C, P, N*P): pass 1 loops over the bands, pass 2 samples along the strip."""
    B, C, H, W = images.shape
    dt = images.dtype
    rows_px = (row_b * (H / grid)).to(dt)
    edges_px = (patch_b * (W / grid)).to(dt)
    t = torch.arange(patch, dtype=dt, device=images.device) / patch
    cols = torch.linspace(-1, 1, W, dtype=dt, device=images.device)
    strips = []
    for b in range(rows_px.shape[1] - 1):  # the reference's Python loop over the row bands
        y = rows_px[:, b, None] + (rows_px[:, b + 1] - rows_px[:, b])[:, None] * t  # (B, P)
        gy = (y / (H - 1) * 2 - 1)[:, :, None].expand(B, patch, W)
        grid2 = torch.stack([cols.expand(B, patch, W), gy], -1)
        strips.append(F.grid_sample(images, grid2, mode="bilinear", padding_mode="border", align_corners=True))
    strip = torch.cat(strips, 3)  # (B, C, P, W * rows)
    x = edges_px[:, :-1, None] + (edges_px[:, 1:] - edges_px[:, :-1])[:, :, None] * t  # (B, N, P)
    gx = (x.flatten(1) / (strip.shape[3] - 1) * 2 - 1)[:, None].expand(B, patch, -1)
    gy = torch.linspace(-1, 1, patch, dtype=dt, device=images.device)[None, :, None].expand_as(gx)
    return F.grid_sample(strip, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def load_revision(rev: str, repo: str | Path | None = None) -> tuple[ModuleType, ModuleType]:
    """(geometry, sampling) modules of `dart/tokenizer` at git revision `rev`."""
    repo = Path(repo or Path(__file__).resolve().parents[1])
    pkg = f"_dart_tokenizer_at_{''.join(c if c.isalnum() else '_' for c in rev)}"
    if pkg in sys.modules:
        return sys.modules[f"{pkg}.geometry"], sys.modules[f"{pkg}.sampling"]
    folder = Path(tempfile.mkdtemp(prefix="dart-rev-")) / pkg
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in ("geometry", "sampling"):
        try:
            text = subprocess.run(["git", "-C", str(repo), "show", f"{rev}:dart/tokenizer/{name}.py"],
                                  check=True, capture_output=True, text=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            raise ValueError(f"cannot read dart/tokenizer/{name}.py at revision {rev!r} in {repo}: "
                             f"{getattr(e, 'stderr', '') or e}") from e
        (folder / f"{name}.py").write_text(text)
    spec = importlib.util.spec_from_file_location(pkg, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    sys.modules[pkg] = importlib.util.module_from_spec(spec)
    mods = []
    for name in ("geometry", "sampling"):
        sub = importlib.util.spec_from_file_location(f"{pkg}.{name}", folder / f"{name}.py")
        mod = importlib.util.module_from_spec(sub)
        sys.modules[f"{pkg}.{name}"] = mod
        sub.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]
