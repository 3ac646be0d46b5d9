"""Scoring networks: image -> one raw score logit per cell of a g x g grid.

The paper's scorers are the early layers of an ImageNet-pretrained CNN (frozen) plus a small
trainable head. Two heads, as in the official code: "v1" (DeiT models), a per-location MLP giving
one logit per trunk location; "v2" (Vim / VideoMamba models), a channel gate computed from the
image's mean feature, the logit of a location being the gated sum of its channels.
`SmallCNNScorer` is the toy-scale scorer (its trunk pretrained by `dart.pretrain_scorer`, or
trained from scratch); `UniformScorer` scores every cell alike (the grid partition, a control).

Every trunk follows one of three regimes (`TRUNK_REGIMES`, the model kwarg `scorer_trunk`):
"pretrained_frozen" (weights loaded, then frozen: the paper), "random_frozen" (random weights,
frozen: what the official Vim code ends up with, note 6 of the state-dict notes in docs/mamba.md)
and "scratch" (random weights trained with the head). A frozen trunk's BatchNorm layers either
keep their statistics ("eval", ours) or, as in the official code, run in training mode with the
rest of the model (`scorer_bn="train"`: batch statistics, running statistics updated).
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Optional

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
SCORERS = ("cnn", "uniform", *TRUNKS)
TRUNK_REGIMES = ("pretrained_frozen", "random_frozen", "scratch")
BN_MODES = ("eval", "train")


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
            f"or build the model with scorer_trunk='random_frozen' or 'scratch'.")
    return path


def load_trunk_weights(trunk: nn.Module, path: str) -> None:
    """Load a trunk's own state dict (`trunk.state_dict()` keys, optionally under a "trunk" key, as
    `dart.pretrain_scorer` writes it) from `path`, with errors that name the file."""
    from ..engine.checkpoint import load
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"scorer weights {path} do not exist: pretrain the trunk with python -m dart.pretrain_scorer "
            f"--data <toy classification set> --out {path} (the workflow's scorer_pretrain rule makes "
            f"results/<scale>/scorer_trunk/cnn.pt), or build with scorer_trunk='random_frozen' or 'scratch'")
    obj = load(path)
    state = obj.get("trunk", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"scorer weights {path}: expected a trunk state dict (tensors by key), "
                         f"got {type(state).__name__}")
    try:
        trunk.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ValueError(f"scorer weights {path} do not fit the scorer trunk: "
                         f"{' '.join(line.strip() for line in first[:3])[:400]}") from e


class TrunkRegime(nn.Module):
    """What the scorers with a CNN trunk share: the trunk's regime (frozen or trained) and how a
    frozen trunk's BatchNorm layers behave in training mode."""

    trunk: nn.Module

    def _set_regime(self, regime: str, bn: str) -> None:
        if regime not in TRUNK_REGIMES:
            raise ValueError(f"scorer_trunk must be one of {', '.join(TRUNK_REGIMES)}, got {regime!r}")
        if bn not in BN_MODES:
            raise ValueError(f"scorer_bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
        self.regime, self.bn_mode = regime, bn
        self.frozen = regime != "scratch"
        self.trunk.requires_grad_(not self.frozen)
        self.train(self.training)

    def freeze_trunk(self, bn: Optional[str] = None) -> "TrunkRegime":
        """Freeze the trunk as the official models do (no gradients); `bn` sets the BatchNorm mode.
        Called when a checkpoint supplies the trunk (an official one): its regime is then
        "pretrained_frozen", whatever it was built as."""
        self._set_regime("pretrained_frozen", bn or self.bn_mode)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "frozen", False) and self.bn_mode == "eval":
            self.trunk.eval()  # a frozen trunk keeps its BatchNorm statistics
        return self


class ScoreHead(nn.Module):
    """Per-location MLP (1x1 convs) giving one logit, resized to the score grid."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, 1, 1)
        self.init_weights("zero")

    def init_weights(self, mode: str) -> None:
        """'zero': the last layer starts at zero, so all logits are equal and a new DART model
        tokenises as the standard grid, moving away from it as the scorer learns; 'official': both
        layers truncated normal (std 0.02, zero biases), as timm's ViT init leaves the official
        (Linear) head; 'default': PyTorch's own init (a random start)."""
        if mode == "zero":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
        elif mode == "official":
            for fc in (self.fc1, self.fc2):
                nn.init.trunc_normal_(fc.weight, std=0.02)
                nn.init.zeros_(fc.bias)
        elif mode == "default":
            self.fc2.reset_parameters()  # fc1 keeps the init it was built with, PyTorch's
        else:
            raise ValueError(f"score_head_init must be 'zero', 'official' or 'default', got {mode!r}")
        self.init_mode = mode

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

    INIT_ALIASES = {"zero": "official"}  # gates in (0, 1): no init starts the scores equal

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)
        self.init_weights("official")

    def init_weights(self, mode: str) -> None:
        """'official' (and 'zero', which cannot start a gate head from the grid): truncated normal,
        std 0.02, zero biases; 'default': PyTorch's init."""
        mode = self.INIT_ALIASES.get(mode, mode)
        if mode == "official":
            for fc in (self.fc1, self.fc2):
                nn.init.trunc_normal_(fc.weight, std=0.02)  # bounds +-2 (absolute), as timm's
                nn.init.zeros_(fc.bias)
        elif mode == "default":
            self.fc1.reset_parameters()
            self.fc2.reset_parameters()
        else:
            raise ValueError(f"score_head_init must be 'zero', 'official' or 'default', got {mode!r}")
        self.init_mode = mode

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


class TrunkScorer(TrunkRegime):
    """Torchvision CNN trunk + trainable head (`HEADS[spec.head]`).

    regime "pretrained_frozen" loads `weights` (a trunk state dict file) or, without it,
    torchvision's ImageNet weights from the local torch hub cache (never downloads); `weights=False`
    skips loading (a checkpoint loaded next supplies the trunk)."""

    def __init__(self, name: str, regime: str = "scratch", weights=None, bn: str = "eval"):
        super().__init__()
        spec = TRUNKS[name]
        import torchvision.models as tvm
        model = getattr(tvm, spec.builder)(weights=None)
        if regime == "pretrained_frozen" and weights is None:
            model.load_state_dict(torch.load(_cached_weights(spec), map_location="cpu", weights_only=True))
        layers = _trunk_layers(model)
        self.trunk = layers[: spec.blocks] if spec.blocks else layers
        if regime == "pretrained_frozen" and weights:
            load_trunk_weights(self.trunk, weights)
        self.head = HEADS[spec.head](spec.channels, spec.hidden)
        self.head_version = spec.head
        self.name = name
        self.input_size = spec.input_size
        self._set_regime(regime, bn)

    def forward(self, x: Tensor, grid: int) -> Tensor:
        # a frozen / eval trunk runs as a BN-folded channels-last copy (trunk_inference.py)
        return self.head(run_trunk(self, self.trunk, x), grid)


class SmallCNNScorer(TrunkRegime):
    """A few strided convs (stride 4 in all) and a v1 head: cheap at any size. Its pretrained
    weights come from a file (`weights`), e.g. the toy trunk of `python -m dart.pretrain_scorer`."""

    def __init__(self, in_chans: int = 3, width: int = 32, hidden: int = 32, regime: str = "scratch",
                 weights=None, bn: str = "eval"):
        super().__init__()
        self.trunk = small_cnn_trunk(in_chans, width)
        if regime == "pretrained_frozen":
            if weights is None:
                raise ValueError("scorer 'cnn' with scorer_trunk='pretrained_frozen' needs scorer_weights: "
                                 "a trunk file written by python -m dart.pretrain_scorer")
            if weights:
                load_trunk_weights(self.trunk, weights)
        self.head = ScoreHead(width, hidden)
        self.head_version = "v1"
        self.name = "cnn"
        self.input_size = 224
        self._set_regime(regime, bn)

    def forward(self, x: Tensor, grid: int) -> Tensor:
        return self.head(run_trunk(self, self.trunk, x), grid)


def small_cnn_trunk(in_chans: int = 3, width: int = 32) -> nn.Sequential:
    """The toy scorer's trunk: three 3x3 conv-BN-GELU layers, strides 2, 2, 1."""
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, 2, 1), nn.BatchNorm2d(width), nn.GELU(),
        nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.GELU(),
        nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.GELU(),
    )


class UniformScorer(nn.Module):
    """Every cell gets the same logit (0), so the partition is the uniform grid: DART with its
    partition held at the grid, sampling the full-resolution image as DART does (the control that
    separates placing tokens by content from reading the image through DART's resampling)."""

    head_version = None

    def __init__(self):
        super().__init__()
        self.name = "uniform"
        self.input_size = 224

    def forward(self, x: Tensor, grid: int) -> Tensor:
        return x.new_zeros(x.shape[0], grid, grid)


def create_scorer(scorer: str | nn.Module, in_chans: int = 3, trunk: str = "scratch", weights=None,
                  bn: str = "eval") -> nn.Module:
    """Build a scorer by name (see `SCORERS`) or pass a module through.

    trunk: the trunk's regime (`TRUNK_REGIMES`); weights: the trunk state dict file of a
    "pretrained_frozen" trunk (None: torchvision's ImageNet weights where the trunk has them; False:
    none, a checkpoint supplies them); bn: BatchNorm mode of a frozen trunk (`BN_MODES`).
    A module must map (B, C, h, w) and an int g to (B, g, g) logits.
    """
    if isinstance(scorer, nn.Module):
        return scorer
    if weights is not None and weights is not False and trunk != "pretrained_frozen":
        raise ValueError(f"scorer_weights is given but scorer_trunk is {trunk!r}: weights are loaded only "
                         f"for scorer_trunk='pretrained_frozen'")
    if scorer == "cnn":
        return SmallCNNScorer(in_chans, regime=trunk, weights=weights, bn=bn)
    if scorer == "uniform":
        if trunk != "scratch" or weights:
            raise ValueError(f"scorer 'uniform' has no trunk: scorer_trunk={trunk!r} and scorer_weights="
                             f"{weights!r} do not apply (leave them unset)")
        return UniformScorer()
    if scorer in TRUNKS:
        if in_chans != 3:
            raise ValueError(f"scorer {scorer!r} takes RGB images; in_chans={in_chans}")
        return TrunkScorer(scorer, regime=trunk, weights=weights, bn=bn)
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
