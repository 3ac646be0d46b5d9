"""The published checkpoints: the official DART weights (Hugging Face repository `yinkx3/DART`, the
model zoo of the official README) as timm pretrained tags of our models, and the grid baselines'
published timm weights that the workflow evaluates beside them.

Plain data and no torch import: `workflow/scripts/plan.py` reads this file without importing the
`dart` package. `published_top1` is the top-1 the paper gives for the checkpoint's model (the
official README's tables; the workflow's own copy is `workflow/resources/published.csv`, and a test
keeps the two equal); None where no published row names the checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

HF_REPO = "yinkx3/DART"
TAG = "official_in1k"
PAPER_ID = "arXiv:2506.10390"
ORIGIN_URL = "https://github.com/HCPLab-SYSU/DART"


@dataclass(frozen=True)
class Published:
    """One published checkpoint: `model` (our timm name) + `tag` load it with pretrained=True."""
    model: str
    file: str  # the file's name in the hub repository (and in a local folder of checkpoints)
    official: str  # the official model it was saved from (models_deit.py / models_mamba.py / timm)
    published_top1: Optional[float]
    input_size: int = 448  # the official evaluation: --input-size 448
    crop_pct: float = 0.875  # resize the short side to int(input_size / crop_pct), centre crop
    interpolation: str = "bicubic"
    hub: str = HF_REPO
    tag: str = TAG
    local_name: str = ""  # its name in a local folder of checkpoints (default: `file`)

    @property
    def name(self) -> str:
        """`model.tag`, as timm.create_model takes it."""
        return f"{self.model}.{self.tag}"

    @property
    def local_file(self) -> str:
        return self.local_name or self.file


# The official README's model zoo, each file with the model of ours that takes it (docs/engine.md
# "Official checkpoints"). darvit-tiny-v2 has no published row: the README's evaluation command runs
# darvit-tiny.pth, so the DeiT-Ti row (73.8) is darvit-tiny's; -ft144p and -ft288p have no row.
OFFICIAL = (
    Published("dart_deit_tiny_patch16_224", "darvit-tiny.pth", "darvit_tiny", 73.8),
    Published("dart_deit_tiny_patch16_224_v2", "darvit-tiny-v2.pth", "darvit_tiny_v2", None),
    Published("dart_deit_tiny_patch16_224_121", "darvit-tiny-ft121p.pth", "darvit_tiny_121p", 71.8),
    Published("dart_deit_small_patch16_224", "darvit-sm.pth", "darvit_sm", 80.6),
    Published("dart_deit_small_patch16_224_144", "darvit-sm-ft144p.pth", "darvit_sm_144p", None),
    Published("dart_deit_small_patch16_224_288", "darvit-sm-ft288p.pth", "darvit_sm_288p", None),
    Published("dart_deit_small_patch16_224_392", "darvit-sm-ft392p.pth", "darvit_sm_392p", 81.8),
    Published("dart_vim_tiny_patch16_224", "darvim-tiny.pth", "darvim_tiny", 77.2),
    Published("dart_vim_tiny_patch16_224_392", "darvim-tiny-ft2seq.pth", "darvim_tiny_2seq", 78.9),
    Published("dart_vim_small_patch16_224", "darvim-sm.pth", "darvim_sm", 81.5),
    Published("dart_vim_small_patch16_224_392", "darvim-sm-ft2seq.pth", "darvim_sm_2seq", 82.2),
)

# In the model zoo but not loadable here: the reason, given when one is passed.
REFUSED = {"darmt-L6.pth": "DARMT (RMT backbone with DART's image reshaper): this project builds no RMT model"}

# Grid baselines of published.csv with published ImageNet-1K weights in timm (DeiT's own release,
# DeiT's evaluation: 224 px, crop 0.875, bicubic). In a local folder: `<model>.<tag>.safetensors`.
BASELINES = (
    Published("deit_tiny_patch16_224", "model.safetensors", "deit_tiny_patch16_224", 72.2, input_size=224,
              hub="timm/deit_tiny_patch16_224.fb_in1k", tag="fb_in1k",
              local_name="deit_tiny_patch16_224.fb_in1k.safetensors"),
    Published("deit_small_patch16_224", "model.safetensors", "deit_small_patch16_224", 79.8, input_size=224,
              hub="timm/deit_small_patch16_224.fb_in1k", tag="fb_in1k",
              local_name="deit_small_patch16_224.fb_in1k.safetensors"),
)

BY_MODEL = {p.model: p for p in OFFICIAL}
BY_NAME = {p.name: p for p in OFFICIAL + BASELINES}
