"""VideoMamba-Ti, with the grid tokenizer or with DART, for images and clips; registered with timm.

Images (B, 3, H, W) run as VideoMamba's image model; clips (B, 3, T, H, W) as its video model: the
frames are tokenised one by one (tubelet size 1; with DART each frame gets its own partition and
its own `num_tokens` budget), each frame's tokens get the spatial position embedding and then the
frame's temporal position embedding, and the sequence is frame-major (all tokens of frame 0, then
frame 1, ...) after one class token in front. `temporal_pos_embedding` holds `num_frames` entries
and is linearly resampled for clips of another length. See docs/mamba.md for the sources.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.models import generate_default_cfgs, register_model

from ._common import dart_cfg, split_tokenizer_kwargs
from ._pretrained import build, checkpoint_filter_fn
from .mamba import VisionMamba

__all__ = ["VideoMamba", "checkpoint_filter_fn"]


class VideoMamba(VisionMamba):
    """VideoMamba: class token in front, bidirectional layers without the /2 of Vim, classifier on the
    class token; `num_frames` sizes the temporal position table (8, the official default)."""

    # how VideoMamba's published numbers were counted (docs/mamba.md): reported beside ours
    paper_macs_convention = "fused_visible"

    def __init__(self, num_frames: int = 8, **kwargs):
        kwargs.setdefault("cls_position", "front")
        kwargs.setdefault("divide_out", False)
        kwargs.setdefault("init_mode", "videomamba")
        super().__init__(**kwargs)
        self.num_frames = num_frames
        self.temporal_pos_embedding = nn.Parameter(torch.zeros(1, num_frames, self.embed_dim))

    def temporal_table(self, frames: int) -> Tensor:
        """(1, T, D): the temporal position table, linearly resampled to T frames if needed."""
        table = self.temporal_pos_embedding
        if frames == table.shape[1]:
            return table
        return F.interpolate(table.transpose(1, 2), size=frames, mode="linear",
                             align_corners=False).transpose(1, 2)

    def tokenize(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return super().tokenize(x)
        if x.dim() != 5:
            raise ValueError(f"expected images (B, C, H, W) or clips (B, C, T, H, W), got {tuple(x.shape)}")
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H, W)
        tokens = self.embed_patches(frames)  # (B*T, M, D), spatial positions added
        tokens = tokens.view(B, T, -1, tokens.shape[-1]) + self.temporal_table(T).unsqueeze(2).to(tokens.dtype)
        return self.pos_drop(self.insert_cls(tokens.flatten(1, 2)))


def _create(variant: str, pretrained: bool, model_args: dict, kwargs: dict, dart: bool) -> VideoMamba:
    tok, rest = split_tokenizer_kwargs(dict(kwargs))
    if tok and not dart:
        raise ValueError(f"{variant} uses the grid tokenizer; {sorted(tok)} apply to dart_* models only")
    args = {**model_args, **tok, **rest}
    if dart:
        args["tokenizer"] = "dart"
    return build(VideoMamba, variant, pretrained, args)


def _grid_cfg(size: int) -> dict:
    return dart_cfg(size, crop_pct=0.875 if size == 224 else 1.0)


default_cfgs = generate_default_cfgs({
    "videomamba_tiny_patch16_224": _grid_cfg(224), "videomamba_tiny_patch16_448": _grid_cfg(448),
    "videomamba_tiny_patch16_576": _grid_cfg(576),
    "dart_videomamba_tiny_patch16_224": dart_cfg(), "dart_videomamba_tiny_patch16_224_392": dart_cfg(),
})

TINY = dict(patch_size=16, embed_dim=192, depth=24)
# no official DART VideoMamba code was released: the scorer of the official Vim-Ti model (same width)
DART_TINY = dict(TINY, img_size=448, score_grid=14, scorer="mobilenetv3_small_v2", score_gate="sigmoid2")


@register_model
def videomamba_tiny_patch16_224(pretrained=False, **kwargs) -> VideoMamba:
    """VideoMamba-Ti, 196 grid tokens per image/frame (76.9% ImageNet top-1)."""
    return _create("videomamba_tiny_patch16_224", pretrained, dict(TINY, img_size=224), kwargs, dart=False)


@register_model
def videomamba_tiny_patch16_448(pretrained=False, **kwargs) -> VideoMamba:
    """VideoMamba-Ti at 448 px: 784 grid tokens (79.3%)."""
    return _create("videomamba_tiny_patch16_448", pretrained, dict(TINY, img_size=448), kwargs, dart=False)


@register_model
def videomamba_tiny_patch16_576(pretrained=False, **kwargs) -> VideoMamba:
    """VideoMamba-Ti at 576 px: 1296 grid tokens (79.6%)."""
    return _create("videomamba_tiny_patch16_576", pretrained, dict(TINY, img_size=576), kwargs, dart=False)


@register_model
def dart_videomamba_tiny_patch16_224(pretrained=False, **kwargs) -> VideoMamba:
    """DART VideoMamba-Ti, 196 tokens per image/frame (78.2%)."""
    return _create("dart_videomamba_tiny_patch16_224", pretrained, dict(DART_TINY, num_tokens=196), kwargs,
                   dart=True)


@register_model
def dart_videomamba_tiny_patch16_224_392(pretrained=False, **kwargs) -> VideoMamba:
    """DART VideoMamba-Ti, 392 tokens per image/frame: the long-sequence row (79.7%)."""
    return _create("dart_videomamba_tiny_patch16_224_392", pretrained, dict(DART_TINY, num_tokens=392),
                   kwargs, dart=True)
