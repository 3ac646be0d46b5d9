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


# The tokenizer settings that differ between the official code and our defaults. `convention`
# selects a column; a setting given explicitly overrides it. "official": how the official checkpoints
# were trained (batch standardisation, the plain std, the reference's sample points, its +1e-8 terms,
# the frozen trunk's BatchNorm in training mode, timm's init of the score head). "ours": per-image
# standardisation (an image's tokens never depend on its batch-mates), a std floor of 1 (a scorer
# that barely varies is not blown up into a full-contrast partition), centred sample points (the
# exact grid at the nominal size), trunk statistics kept, a zero-initialised head (start from the
# grid). README.md "What matches the reference implementation" and docs/engine.md give the measures.
CONVENTIONS: dict[str, dict] = {
    "official": dict(score_norm="batch", score_std_floor=0.0, sampling="reference",
                     quantile_eps=geometry.REFERENCE_EPS, scorer_bn="train", score_head_init="official"),
    "ours": dict(score_norm="image", score_std_floor=1.0, sampling="centred",
                 quantile_eps=geometry.REFERENCE_EPS, scorer_bn="eval", score_head_init="zero"),
}
# the score gate of each scorer head (official: ScorePredNetV1 / V2); a scorer without a head: v1's
GATES = {"v1": "sigmoid_offset", "v2": "sigmoid2", None: "sigmoid_offset"}


def convention_settings(convention: str, **given) -> dict:
    """The tokenizer settings of `convention`, with every setting in `given` that is not None."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)}, got {convention!r}")
    return {k: (given[k] if given.get(k) is not None else v) for k, v in CONVENTIONS[convention].items()}


class DART(nn.Module):
    """Differentiable dynamic adaptive region tokenizer: (B, C, H, W) -> (B, N, D).

    Scores a g x g grid, cuts the image into `num_tokens` regions of equal score mass (rows by
    quantiles, then patches along the rows), resamples every region to patch_size^2 pixels and
    embeds it with the usual patch projection (`proj`, the grid's stride-P conv, run over the strip
    of resampled patches, so grid checkpoints load unchanged).

    The geometry is the reference implementation's (average re-binning, its +1e-8 terms: row and
    patch edges within 1e-6 px of its outputs). `convention` ("ours", the default, or "official")
    sets the options where we differ from it, each of which may also be given on its own (None:
    the convention's, see `CONVENTIONS`): score_norm ('image': per-image standardisation; 'batch':
    the reference; 'none': raw logits, not in the paper, see `score_activation`), score_std_floor
    (1: the spread is divided by max(std, 1); 0: the reference), sampling ('reference': its
    left-aligned sample points and its strip's blend into the next band in a band's last pixel,
    every patch within 1e-4 of its own, seams included: at most 2.1e-6 in float64, 2.3e-6 in
    float32 on the golden maps and at uniform and near-uniform scores; 'centred': sample-cell
    centres), quantile_eps (1e-8: the reference; 0: uniform scores give the grid to 1e-9 cells),
    scorer_bn (a frozen trunk's BatchNorm: 'eval' keeps its statistics, 'train' as the reference),
    score_head_init (the score head's last layer: 'zero' starts from the grid, 'official' timm's
    truncated normal, 'default' PyTorch's; a v2 gate head cannot start from the grid and takes
    'official'). score_gate (None: the scorer head's own, `GATES`). The scorer: `scorer` (a name of
    `scorers.SCORERS` or a module), `scorer_trunk` (`scorers.TRUNK_REGIMES`), `scorer_weights` (the
    trunk file of a pretrained trunk). `use_official_convention()` switches a built tokenizer to the
    official settings.
    """

    def __init__(self, img_size=448, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 num_tokens: int = 196, score_grid: int = 14, scorer: str | nn.Module = "cnn",
                 scorer_trunk: str = "scratch", scorer_weights=None, scorer_input_size: Optional[int] = None,
                 convention: str = "ours", score_norm: Optional[str] = None, score_gate: Optional[str] = None,
                 score_std_floor: Optional[float] = None, sampling: Optional[str] = None,
                 quantile_eps: Optional[float] = None, scorer_bn: Optional[str] = None,
                 score_head_init: Optional[str] = None, norm_layer: Optional[type] = None, bias: bool = True):
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
        settings = convention_settings(convention, score_norm=score_norm, score_std_floor=score_std_floor,
                                       sampling=sampling, quantile_eps=quantile_eps, scorer_bn=scorer_bn,
                                       score_head_init=score_head_init)
        self.score_norm = settings["score_norm"]
        self.score_std_floor = float(settings["score_std_floor"])
        if settings["sampling"] not in sampling_conventions:
            raise ValueError(f"sampling must be one of {sampling_conventions}, got {settings['sampling']!r}")
        self.sampling = settings["sampling"]
        if not settings["quantile_eps"] >= 0:
            raise ValueError(f"quantile_eps must be >= 0, got {settings['quantile_eps']}")
        self.quantile_eps = float(settings["quantile_eps"])
        self.scorer = create_scorer(scorer, in_chans, scorer_trunk, scorer_weights, settings["scorer_bn"])
        head = getattr(self.scorer, "head", None)
        if isinstance(scorer, str) and hasattr(head, "init_weights"):
            want = getattr(head, "INIT_ALIASES", {}).get(settings["score_head_init"], settings["score_head_init"])
            if want != head.init_mode:  # only when it differs: a redraw would shift the RNG stream
                head.init_weights(want)
        self.score_gate = score_gate or GATES.get(getattr(self.scorer, "head_version", None), "sigmoid_offset")
        score_activation(torch.zeros(1, 1, 1), self.score_norm, self.score_gate, self.score_std_floor)  # validate now
        # the scorer sees a copy of the image at most its preferred size (224: the paper's GFLOPs)
        self.scorer_input_size = int(scorer_input_size or min(H, W, getattr(self.scorer, "input_size", 224)))
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=bias)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        # timm's PatchEmbed interface, for code that inspects it
        self.num_patches = self.num_tokens
        self.grid_size = (self.rows, math.ceil(self.num_tokens / self.rows))
        self.flatten = True

    def settings(self) -> dict:
        """The run-time settings a convention decides, as they are now (the head's init is past)."""
        return {"score_norm": self.score_norm, "score_std_floor": self.score_std_floor,
                "sampling": self.sampling, "quantile_eps": self.quantile_eps,
                "scorer_bn": getattr(self.scorer, "bn_mode", None)}

    @property
    def convention(self) -> str:
        """'official' or 'ours' when every setting a convention decides at run time is that
        convention's (a trunk-less or trained trunk's BatchNorm mode does not count), else 'custom'."""
        now = self.settings()
        frozen = getattr(self.scorer, "frozen", False)
        for name, ref in CONVENTIONS.items():
            if all(now[k] == v for k, v in ref.items() if k in now and (k != "scorer_bn" or frozen)):
                return name
        return "custom"

    def use_official_convention(self) -> "DART":
        """Tokenise exactly as the official checkpoints were trained: batch standardisation of the
        scores, no std floor (the paper's plain formula), the reference sampling convention, and a
        frozen trunk's BatchNorm in training mode (batch statistics, running statistics updated).
        Called by `dart.engine.keymap` when it loads an official darvit-*/darvim-* checkpoint."""
        ref = CONVENTIONS["official"]
        self.score_norm, self.score_std_floor = ref["score_norm"], ref["score_std_floor"]
        self.sampling, self.quantile_eps = ref["sampling"], ref["quantile_eps"]
        if hasattr(self.scorer, "bn_mode"):
            self.scorer.bn_mode = ref["scorer_bn"]
            self.scorer.train(self.scorer.training)
        _log.info("DART tokenizer set to the official convention: score_norm=batch, score_std_floor=0, "
                  "sampling=reference, quantile_eps=%g, scorer_bn=train", self.quantile_eps)
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
