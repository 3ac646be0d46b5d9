"""DeiT with the DART tokenizer, registered with timm.

The backbone is timm's `VisionTransformer`, unchanged; only the patch embedding is replaced by
`DART` and the position embedding is resampled per image with the partition's geometry. Grid
baselines are timm's own `deit_*` models.
"""
from __future__ import annotations

from typing import Optional

import timm
import torch
from torch import Tensor
from timm.models import generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from ..tokenizer import DART, Partition

from ._common import TOKENIZER_KWARGS, dart_cfg, need_images, split_tokenizer_kwargs
from ._pretrained import build, checkpoint_filter_fn, default_cfgs_for

__all__ = ["DartVisionTransformer", "checkpoint_filter_fn"]


class DartVisionTransformer(VisionTransformer):
    """ViT/DeiT whose tokens come from DART.

    Tokenizer arguments (`TOKENIZER_KWARGS`, passed to `DART`): num_tokens (token budget N),
    score_grid (g: scores and the learned position table are g x g), scorer (name or module),
    scorer_trunk ('pretrained_frozen', 'random_frozen', 'scratch'), scorer_weights,
    scorer_input_size, convention ('ours' or 'official': the defaults of score_norm,
    score_std_floor, sampling, quantile_eps, scorer_bn and score_head_init), score_gate. `img_size`
    is the tokenizer's input size (448 for the paper's "224" models).
    """

    def __init__(self, img_size=448, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 num_tokens: int = 196, score_grid: int = 14, scorer="mobilenetv3_small", **kwargs):
        tok = {k: kwargs.pop(k) for k in TOKENIZER_KWARGS if k in kwargs}
        if kwargs.get("class_token") is False or kwargs.get("no_embed_class") or kwargs.get("reg_tokens"):
            raise ValueError("DART DeiT models use one class token with its own position embedding")
        if kwargs.get("dynamic_img_size"):
            raise ValueError("dynamic_img_size is not supported: DART sets the token layout itself")
        # the parent builds a g x g position table (plus the class token's) and a grid patch embed,
        # which DART replaces
        super().__init__(img_size=score_grid * patch_size, patch_size=patch_size, in_chans=in_chans,
                         embed_dim=embed_dim, **kwargs)
        self.patch_embed = DART(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            num_tokens=num_tokens, score_grid=score_grid, scorer=scorer,
            bias=not kwargs.get("pre_norm", False), **tok)
        if self.weight_init_mode != "skip":
            self.patch_embed.proj.reset_parameters()

    def tokenize(self, x: Tensor) -> tuple[Tensor, Partition]:
        """Tokens with position embeddings and the class token prepended, and the partition."""
        need_images(x)
        n_pre = self.num_prefix_tokens
        tokens, part = self.patch_embed(x, pos_embed=self.pos_embed[:, n_pre:], return_partition=True)
        tokens = tokens + part.pos_embed.to(tokens.dtype)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat([cls.to(tokens.dtype), tokens], dim=1)), part

    def forward_features(self, x: Tensor, attn_mask: Optional[Tensor] = None,
                         is_causal: bool = False) -> Tensor:
        x, _ = self.tokenize(x)
        x = self.norm_pre(self.patch_drop(x))
        if attn_mask is not None or is_causal:
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask, is_causal=is_causal)
        elif self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models._manipulate import checkpoint_seq
            x = checkpoint_seq(self.blocks, x)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_intermediates(self, x: Tensor, indices=None, return_prefix_tokens: bool = False,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NLC",
                              intermediates_only: bool = False, **kwargs):
        """timm's intermediates API, tokens only ('NLC'): DART tokens lie on no grid, so there is no
        NCHW map; `tokenize` gives the partition whose `rects` place each token in the image."""
        if output_fmt != "NLC":
            raise ValueError("DART tokens are not on a grid: use output_fmt='NLC' and the partition "
                             "from model.tokenize(x) to map them back to the image")
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal") or kwargs.get("output_dict"):
            raise ValueError("attn_mask, is_causal and output_dict are not supported by DART models")
        from timm.models._features import feature_take_indices
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, _ = self.tokenize(x)
        x = self.norm_pre(self.patch_drop(x))
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, blk in enumerate(blocks):
            x = blk(x)
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        n = self.num_prefix_tokens
        prefix = [y[:, :n] for y in intermediates]
        intermediates = [y[:, n:] for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates


def _create(variant: str, pretrained: bool, model_args: dict, kwargs: dict) -> DartVisionTransformer:
    tok, rest = split_tokenizer_kwargs(dict(kwargs))
    args = {**model_args, **tok, **rest}
    return build(DartVisionTransformer, variant, pretrained, args)


# a model with an official checkpoint has it as its default tag (`name.official_in1k`)
default_cfgs = generate_default_cfgs(default_cfgs_for((
    "dart_deit_tiny_patch16_224", "dart_deit_tiny_patch16_224_v2", "dart_deit_tiny_patch16_224_121",
    "dart_deit_small_patch16_224", "dart_deit_small_patch16_224_144", "dart_deit_small_patch16_224_288",
    "dart_deit_small_patch16_224_392")))

TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, scorer="mobilenetv3_small")
SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, scorer="mobilenetv3_large")


@register_model
def dart_deit_tiny_patch16_224(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-Ti, 196 tokens, MobileNetV3-Small scorer."""
    return _create("dart_deit_tiny_patch16_224", pretrained, dict(TINY, num_tokens=196), kwargs)


@register_model
def dart_deit_tiny_patch16_224_v2(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-Ti, 196 tokens, with the v2 scorer of the Vim models (MobileNetV3-Small features[:13],
    channel-gate head, `sigmoid(2z)` gate): the official darvit-tiny-v2 checkpoint's model."""
    return _create("dart_deit_tiny_patch16_224_v2", pretrained,
                   dict(TINY, num_tokens=196, scorer="mobilenetv3_small_v2", score_gate="sigmoid2"), kwargs)


@register_model
def dart_deit_tiny_patch16_224_121(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-Ti, 121 tokens (0.8 GFLOPs row)."""
    return _create("dart_deit_tiny_patch16_224_121", pretrained, dict(TINY, num_tokens=121), kwargs)


@register_model
def dart_deit_small_patch16_224(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-S, 196 tokens, MobileNetV3-Large scorer."""
    return _create("dart_deit_small_patch16_224", pretrained, dict(SMALL, num_tokens=196), kwargs)


@register_model
def dart_deit_small_patch16_224_144(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-S, 144 tokens."""
    return _create("dart_deit_small_patch16_224_144", pretrained, dict(SMALL, num_tokens=144), kwargs)


@register_model
def dart_deit_small_patch16_224_288(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-S, 288 tokens (17 rows: the budget is not a square)."""
    return _create("dart_deit_small_patch16_224_288", pretrained, dict(SMALL, num_tokens=288), kwargs)


@register_model
def dart_deit_small_patch16_224_392(pretrained=False, **kwargs) -> DartVisionTransformer:
    """DART DeiT-S, 392 tokens: the long-sequence row (81.8% top-1 at 10.1 GFLOPs)."""
    return _create("dart_deit_small_patch16_224_392", pretrained, dict(SMALL, num_tokens=392), kwargs)



def _deit_small_patch16_384(pretrained=False, **kwargs) -> VisionTransformer:
    """DeiT-S at 384 px (576 tokens): the paper's long-sequence grid baseline (81.6% top-1).

    timm ships DeiT-B at 384 but not DeiT-S; this is timm's own VisionTransformer with DeiT-S's
    arguments, registered only where timm lacks the name.
    """
    from timm.models.deit import _create_deit
    args = dict(img_size=384, patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create_deit("deit_small_patch16_384", pretrained=pretrained, **dict(args, **kwargs))


if not timm.is_model("deit_small_patch16_384"):
    default_cfgs.update(generate_default_cfgs({"deit_small_patch16_384": {
        **dart_cfg(384), "crop_pct": 1.0, "fixed_input_size": True}}))
    _deit_small_patch16_384.__name__ = "deit_small_patch16_384"
    register_model(_deit_small_patch16_384)
