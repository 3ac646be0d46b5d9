"""`DART`: the tokenizer as an nn.Module, a thin shell around the geometry and sampling functions."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import geometry, sampling
from .sampling import CONVENTIONS as sampling_conventions
from .scorers import create_scorer, score_activation

_log = logging.getLogger(__name__)


class NonFiniteScores(FloatingPointError, ValueError):
    """The scores (given, or the scorer's output) hold NaN or inf: no partition can be cut.

    A FloatingPointError, so a training loop can treat it like a non-finite loss."""


@dataclass
class Partition:
    """How one batch was tokenised. Coordinates: `row_bounds` in score-grid units along y,
    `patch_bounds` along the raster sequence of the bands (band j covers [j*g, (j+1)*g]),
    `rects` in input pixels, (B, N, K, 4) as (x0, y0, x1, y1) per piece: a patch that runs on
    across band seams has one piece per band, K is the most any patch of the batch has, and unused
    pieces have zero area (see `geometry.patch_rects`)."""
    scores: Tensor  # (B, g, g) positive scores that drove the partition
    row_bounds: Tensor  # (B, rows+1)
    patch_bounds: Tensor  # (B, N+1)
    rects: Tensor  # (B, N, K, 4)
    pos_embed: Optional[Tensor]  # (B, N, D) resampled position embeddings, when a table was given
    grid: int
    img_size: tuple[int, int]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class DART(nn.Module):
    """Differentiable dynamic adaptive region tokenizer: (B, C, H, W) -> (B, N, D).

    Scores a g x g grid, cuts the image into `num_tokens` regions of equal score mass (rows by
    quantiles, then patches along the rows), resamples every region to patch_size^2 pixels and
    embeds it with the usual patch projection (`proj`, the grid's stride-P conv, run over the strip
    of resampled patches, so grid checkpoints load unchanged).

    The geometry is the reference implementation's (average re-binning, its +1e-8 terms: row and
    patch edges within 1e-6 px of its outputs). Options that differ from it, each named:
    score_norm ('image': per-image standardisation; 'batch': the reference; 'none': raw logits,
    not in the paper, see `score_activation`), score_std_floor
    (1: the spread is divided by max(std, 1); 0: the reference), sampling ('reference': its
    left-aligned sample points and its strip's blend into the next band in a band's last pixel,
    every patch within 1e-4 of its own, seams included: at most 2.1e-6 in float64, 2.3e-6 in
    float32 on the golden maps and at uniform and near-uniform scores; 'centred': sample-cell
    centres), quantile_eps (1e-8: the reference; 0: uniform scores give the grid to 1e-9 cells).
    `use_official_convention()` sets all of them to the reference's.
    """

    def __init__(self, img_size=448, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 num_tokens: int = 196, score_grid: int = 14, scorer: str | nn.Module = "cnn",
                 scorer_pretrained: bool = False, scorer_input_size: Optional[int] = None,
                 score_norm: str = "image", score_gate: str = "sigmoid_offset", score_std_floor: float = 1.0,
                 sampling: str = "centred", quantile_eps: float = geometry.REFERENCE_EPS,
                 norm_layer: Optional[type] = None, bias: bool = True):
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_tokens = int(num_tokens)
        self.rows = geometry.rows_for_tokens(self.num_tokens)
        self.grid = int(score_grid)
        H, W = self.img_size
        if self.num_tokens * patch_size * patch_size > H * W:
            raise ValueError(
                f"a {H}x{W} image cannot hold {self.num_tokens} tokens of {patch_size}x{patch_size} px: "
                f"at most {H * W // patch_size ** 2}")
        if self.grid < 1:
            raise ValueError(f"score_grid must be >= 1, got {score_grid}")
        self.score_norm = score_norm
        self.score_gate = score_gate
        self.score_std_floor = float(score_std_floor)
        if sampling not in sampling_conventions:
            raise ValueError(f"sampling must be one of {sampling_conventions}, got {sampling!r}")
        self.sampling = sampling
        if not quantile_eps >= 0:
            raise ValueError(f"quantile_eps must be >= 0, got {quantile_eps}")
        self.quantile_eps = float(quantile_eps)
        score_activation(torch.zeros(1, 1, 1), score_norm, score_gate, self.score_std_floor)  # validate now
        self.scorer = create_scorer(scorer, in_chans, scorer_pretrained)
        # the scorer sees a copy of the image at most its preferred size (224: the paper's GFLOPs)
        self.scorer_input_size = int(scorer_input_size or min(H, W, getattr(self.scorer, "input_size", 224)))
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        # timm's PatchEmbed interface, for code that inspects it
        self.num_patches = self.num_tokens
        self.grid_size = (self.rows, math.ceil(self.num_tokens / self.rows))
        self.flatten = True

    def use_official_convention(self) -> "DART":
        """Tokenise exactly as the official checkpoints were trained: batch standardisation of the
        scores, no std floor (the paper's plain formula), the reference sampling convention.
        Called by `dart.engine.keymap` when it loads an official darvit-*/darvim-* checkpoint."""
        self.score_norm, self.score_std_floor, self.sampling = "batch", 0.0, "reference"
        self.quantile_eps = geometry.REFERENCE_EPS
        _log.info("DART tokenizer set to the official convention: score_norm=batch, score_std_floor=0, "
                  "sampling=reference, quantile_eps=%g", self.quantile_eps)
        return self

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(f"input size {tuple(x.shape[-2:])} does not match the model's img_size "
                             f"{self.img_size}")

    def check_scores(self, scores: Tensor, batch: int, source: str = "given") -> None:
        if scores.shape != (batch, self.grid, self.grid):
            raise ValueError(f"scores must have shape {(batch, self.grid, self.grid)}, got {tuple(scores.shape)}")
        if not torch.isfinite(scores).all():
            bad = (~torch.isfinite(scores)).flatten(1).any(1).nonzero().flatten().tolist()
            raise NonFiniteScores(f"{source} scores contain NaN or inf (images {bad} of the batch); "
                                  f"check the input images and normalisation for NaN/inf or a zero std")
        if (scores < 0).any():
            raise ValueError("scores must be non-negative")
        if (scores.flatten(1).sum(-1) <= 0).any():
            raise ValueError("scores of an image sum to zero: no region to place tokens in")

    def score(self, x: Tensor) -> Tensor:
        """Positive scores (B, g, g) from the scorer, which sees the image at `scorer_input_size`."""
        s = self.scorer_input_size
        xs = x if x.shape[-1] == s and x.shape[-2] == s else F.interpolate(
            x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        return score_activation(self.scorer(xs, self.grid), self.score_norm, self.score_gate,
                                self.score_std_floor)

    def project(self, strip: Tensor) -> Tensor:
        """Patch strip (B, C, P, N*P) -> tokens (B, N, D): the grid's stride-P conv, one token per patch."""
        return self.norm(self.proj(strip).flatten(2).transpose(1, 2))

    def uncounted_macs(self, x: Tensor, *args, output=None, **kwargs) -> int:
        """Multiply-adds that FlopCounterMode does not see (bench.complexity adds them): bilinear
        resampling at 4 MACs per output value, for the patches and the scorer's copy of the image.
        The position-table resampling's two small matmuls are counted by FlopCounterMode itself;
        the geometry (O(B*N*g) sums and gathers) is negligible and left out."""
        B, C = x.shape[:2]
        s = self.scorer_input_size
        resize = 0 if tuple(x.shape[-2:]) == (s, s) else 4 * B * C * s * s
        patches = 4 * B * C * self.num_tokens * self.patch_size ** 2
        return resize + patches

    def forward(self, x: Tensor, scores: Optional[Tensor] = None, pos_embed: Optional[Tensor] = None,
                return_partition: bool = False):
        """Tokens (B, N, D); with `return_partition`, also the `Partition`.

        scores: optional (B, g, g) positive scores that replace the scorer's.
        pos_embed: optional (g*g, D) position table, resampled per image into `Partition.pos_embed`.
        """
        self.check_input(x)
        if scores is None:
            scores = self.score(x)
            # a NaN here would become an out-of-range index in the geometry (a device assert on CUDA)
            self.check_scores(scores, x.shape[0], source="the scorer's")
        else:
            self.check_scores(scores, x.shape[0])
        with torch.autocast(x.device.type, enabled=False):  # geometry in fp32
            # float64 keeps the cumulative sums exact enough that uniform scores give the exact grid
            row_b, patch_b, _ = geometry.partition(scores.double(), self.num_tokens, self.rows,
                                                   self.quantile_eps)
            grid = sampling.sampling_grid(row_b, patch_b, self.grid, self.patch_size,
                                          convention=self.sampling, img_size=self.img_size)
        tokens = self.project(sampling.sample_patches(x, grid, self.sampling))
        if not return_partition:
            return tokens
        pos = None
        if pos_embed is not None:
            with torch.autocast(x.device.type, enabled=False):
                pos = geometry.resample_pos_embed(pos_embed, row_b, patch_b)
        H, W = self.img_size
        rects = geometry.patch_rects(row_b, patch_b, self.grid, H, W)
        return tokens, Partition(scores, row_b, patch_b, rects, pos, self.grid, self.img_size)
