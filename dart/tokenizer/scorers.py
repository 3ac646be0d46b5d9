"""Scoring networks: image -> one raw score logit per cell of a g x g grid.

The paper's scorers are the early layers of an ImageNet-pretrained CNN (frozen) plus a small
trainable head. Two heads, as in the official code: "v1" (DeiT models), a per-location MLP giving
one logit per trunk location; "v2" (Vim / VideoMamba models), a channel gate computed from the
image's mean feature, the logit of a location being the gated sum of its channels.
`SmallCNNScorer` needs no pretrained weights and is the default at toy scale.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .trunk_inference import run_trunk

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrunkSpec:
    """A torchvision feature extractor used as a scorer trunk."""
    builder: str  # torchvision.models function name
    weights: str  # torchvision weights enum, e.g. "MobileNet_V3_Small_Weights"
    blocks: int | None  # how many of `features` to keep (None: all)
    channels: int  # channels of the kept blocks' output
    hidden: int  # hidden width of the trainable head
    input_size: int = 224  # side of the image copy the trunk sees
    head: str = "v1"  # "v1": per-location MLP (`ScoreHead`); "v2": channel gate (`ChannelGateHead`)


# Paper scorers: the official cut points and head widths, so official weights map onto these.
TRUNKS: dict[str, TrunkSpec] = {
    # DeiT-Ti / DeiT-S: v1 heads C->C->1 on MobileNetV3-Small features[:11] / -Large features[:15]
    "mobilenetv3_small": TrunkSpec("mobilenet_v3_small", "MobileNet_V3_Small_Weights", 11, 96, 96),
    "mobilenetv3_large": TrunkSpec("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 15, 160, 160),
    # Vim-Ti, VideoMamba-Ti / Vim-S: v2 heads C->96->C on the longer cuts ending in the 1x1 conv
    # to 576 / 960 channels (features[:13] / features[:17], the latter the whole Large trunk)
    "mobilenetv3_small_v2": TrunkSpec("mobilenet_v3_small", "MobileNet_V3_Small_Weights", 13, 576, 96, head="v2"),
    "mobilenetv3_large_v2": TrunkSpec("mobilenet_v3_large", "MobileNet_V3_Large_Weights", 17, 960, 96, head="v2"),
    # scorer ablation
    "mnasnet": TrunkSpec("mnasnet0_5", "MNASNet0_5_Weights", None, 1280, 16),
    "squeezenet": TrunkSpec("squeezenet1_1", "SqueezeNet1_1_Weights", None, 512, 16),
    # the ablation's EfficientNet-B0 cost (+1.15 GMACs) is that of its trunk on a 384-px copy
    "efficientnet_b0": TrunkSpec("efficientnet_b0", "EfficientNet_B0_Weights", None, 1280, 16, 384),
}
SCORERS = ("cnn", *TRUNKS)


def _trunk_layers(model: nn.Module) -> nn.Sequential:
    if hasattr(model, "features"):
        return model.features
    if hasattr(model, "layers"):  # MNASNet keeps its trunk in `layers`
        return model.layers
    raise TypeError(f"no feature trunk in {type(model).__name__}")


def _cached_weights(spec: TrunkSpec) -> str:
    """Path of the torchvision checkpoint in the local torch hub cache, or a clear error.

    Never downloads: an offline machine must fail at once, not after network retries.
    """
    import torchvision.models as tvm
    weights = getattr(tvm, spec.weights).IMAGENET1K_V1
    fname = os.path.basename(weights.url)
    path = os.path.join(torch.hub.get_dir(), "checkpoints", fname)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained scorer weights {fname} are not in the local cache ({path}). On a machine with "
            f"network run: python -c \"import torchvision; torchvision.models.{spec.builder}"
            f"(weights='IMAGENET1K_V1')\" and copy the file to {path} (or set TORCH_HOME), "
            f"or build the model with scorer_pretrained=False.")
    return path


class ScoreHead(nn.Module):
    """Per-location MLP (1x1 convs) giving one logit, resized to the score grid."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, 1, 1)
        # all logits equal at the start: a new DART model tokenises as the standard grid and moves
        # away from it as the scorer learns (a random head would start from a random partition)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, feats: Tensor, grid: int) -> Tensor:
        z = self.fc2(self.act(self.fc1(feats)))
        if z.shape[-2:] != (grid, grid):
            z = F.interpolate(z, size=(grid, grid), mode="bilinear", align_corners=False)
        return z[:, 0]


class ChannelGateHead(nn.Module):
    """The official "v2" head (Vim / VideoMamba): an MLP C->H->C on the mean of the trunk features
    over all positions gives one sigmoid gate per channel; the logit of a location is the sum of its
    channels weighted by the gates; bilinearly resized to the score grid.

    Initialisation as in the official models (truncated normal, std 0.02, zero biases: DARViM's
    `segm_init_weights`, timm's ViT init for DARViT-v2). Unlike `ScoreHead` there is no choice that
    starts from the grid: the gates lie in (0, 1), so the logits always vary with the features
    (they start as about half the plain channel sum).
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)  # bounds +-2 (absolute), as timm's
            nn.init.zeros_(fc.bias)

    def gates(self, feats: Tensor) -> Tensor:
        """(B, C, h, w) trunk features -> (B, C) channel gates in (0, 1)."""
        return torch.sigmoid(self.fc2(self.act(self.fc1(feats.mean((2, 3))))))

    def forward(self, feats: Tensor, grid: int) -> Tensor:
        B, C, h, w = feats.shape
        # gated channel sum as a batched matmul (so complexity counters see its multiply-adds)
        z = torch.bmm(self.gates(feats).unsqueeze(1), feats.reshape(B, C, h * w)).view(B, 1, h, w)
        if (h, w) != (grid, grid):
            z = F.interpolate(z, size=(grid, grid), mode="bilinear", align_corners=False)
        return z[:, 0]


HEADS: dict[str, type[nn.Module]] = {"v1": ScoreHead, "v2": ChannelGateHead}


class TrunkScorer(nn.Module):
    """Torchvision CNN trunk (frozen when pretrained) + trainable head (`HEADS[spec.head]`)."""

    def __init__(self, name: str, pretrained: bool = False, freeze: bool | None = None):
        super().__init__()
        spec = TRUNKS[name]
        import torchvision.models as tvm
        model = getattr(tvm, spec.builder)(weights=None)
        if pretrained:
            state = torch.load(_cached_weights(spec), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        layers = _trunk_layers(model)
        self.trunk = layers[: spec.blocks] if spec.blocks else layers
        self.head = HEADS[spec.head](spec.channels, spec.hidden)
        self.head_version = spec.head
        self.name = name
        self.input_size = spec.input_size
        self.frozen = pretrained if freeze is None else freeze
        if self.frozen:
            self.trunk.requires_grad_(False)

    def freeze_trunk(self) -> "TrunkScorer":
        """Freeze the trunk as the official models do (no gradients; BatchNorm statistics fixed)."""
        self.frozen = True
        self.trunk.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:  # a frozen trunk keeps its BatchNorm statistics
            self.trunk.eval()
        return self

    def forward(self, x: Tensor, grid: int) -> Tensor:
        # a frozen / eval trunk runs as a BN-folded channels-last copy (trunk_inference.py)
        return self.head(run_trunk(self, self.trunk, x), grid)


class SmallCNNScorer(nn.Module):
    """A few strided convs, trained from scratch: no pretrained weights, cheap at any size."""

    def __init__(self, in_chans: int = 3, width: int = 32, hidden: int = 32):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 2, 1), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.GELU(),
        )
        self.head = ScoreHead(width, hidden)
        self.name = "cnn"
        self.input_size = 224

    def forward(self, x: Tensor, grid: int) -> Tensor:
        return self.head(self.trunk(x), grid)


def create_scorer(scorer: str | nn.Module, in_chans: int = 3, pretrained: bool = False) -> nn.Module:
    """Build a scorer by name (see `SCORERS`) or pass a module through.

    A module must map (B, C, h, w) and an int g to (B, g, g) logits.
    """
    if isinstance(scorer, nn.Module):
        return scorer
    if scorer == "cnn":
        if pretrained:
            raise ValueError("the 'cnn' scorer has no pretrained weights; use scorer_pretrained=False")
        return SmallCNNScorer(in_chans)
    if scorer in TRUNKS:
        if in_chans != 3:
            raise ValueError(f"scorer {scorer!r} takes RGB images; in_chans={in_chans}")
        return TrunkScorer(scorer, pretrained=pretrained)
    raise ValueError(f"unknown scorer {scorer!r}; choose one of {', '.join(SCORERS)} or pass an nn.Module")


def score_activation(logits: Tensor, norm: str = "image", gate: str = "sigmoid_offset",
                     std_floor: float = 1.0) -> Tensor:
    """Raw logits (B, g, g) -> positive scores.

    norm="image" standardises each image's logits on their own, so an image's tokens never depend
    on its batch-mates; norm="batch" uses the whole batch's mean/std, as the official code does.
    The std is torch's default, Bessel-corrected one, as in the official code. The spread is
    divided by max(std, std_floor): with the default floor of 1 logits that barely differ are not
    blown up to a full-contrast partition (what lets a scorer trained from scratch start from the
    grid); std_floor=0 is the official plain standardisation, (z - mean) / (std + 1e-8).
    norm="none" (not in the paper) feeds the logits to the gate as they are: standardised logits
    cap the density contrast that a small region can get (its cells reach z = sqrt((1 - p) / p) while
    the rest stays near z = 0: with the DeiT gate at most about 2x the rest's density, whatever the
    logits), which bounds how far DART can zoom in on a detail covering a fraction p of the image;
    unstandardised, the DeiT gate allows up to 11x (1.1 / 0.1). docs/engine.md "DART at init".
    gate="sigmoid_offset" is sigmoid(z) + 0.1 (DeiT scorer: no region gets zero mass);
    gate="sigmoid2" is sigmoid(2z) (the Vim "v2" head).
    """
    z = logits.float()
    if norm == "image":
        dims = (1, 2)
    elif norm == "batch":
        dims = (0, 1, 2)
    elif norm != "none":
        raise ValueError(f"score_norm must be 'image', 'batch' or 'none', got {norm!r}")
    if std_floor < 0:
        raise ValueError(f"score_std_floor must be >= 0, got {std_floor}")
    if norm != "none":
        count = math.prod(z.shape[d] for d in dims)
        spread = z.std(dims, keepdim=True, correction=1 if count > 1 else 0)  # one value: spread 0, not NaN
        spread = spread.clamp_min(std_floor) if std_floor > 0 else spread + 1e-8
        z = (z - z.mean(dims, keepdim=True)) / spread
    if gate == "sigmoid_offset":
        return torch.sigmoid(z) + 0.1
    if gate == "sigmoid2":
        return torch.sigmoid(2 * z)
    raise ValueError(f"score gate must be 'sigmoid_offset' or 'sigmoid2', got {gate!r}")
