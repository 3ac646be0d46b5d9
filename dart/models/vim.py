"""Vision Mamba (Vim-Ti / Vim-S), with the grid tokenizer or with DART, registered with timm.

Vim's published configuration ("bimambav2, middle class token, abs pos embed, div2"): 24
bidirectional Mamba layers, d_state 16, expand 2, RMSNorm, residual in fp32, the class token in the
middle of the sequence, absolute position embedding, the classifier on the class token. See
docs/mamba.md for the sources and what differs from the official code (nothing in the math: the
fused kernels are replaced by `dart.ops` when they are not available).
"""
from __future__ import annotations

from timm.models import generate_default_cfgs, register_model

from ._common import dart_cfg, split_tokenizer_kwargs
from ._pretrained import build, checkpoint_filter_fn, default_cfgs_for
from .mamba import VisionMamba

__all__ = ["Vim", "checkpoint_filter_fn"]


class Vim(VisionMamba):
    """Vision Mamba. tokenizer='grid' (img_size 224, stride=patch_size; Vim's own long-sequence
    models use stride 8) or tokenizer='dart' (img_size 448: the tokenizer sees a 2x image)."""

    # how the DART paper's Vim rows were counted (docs/mamba.md): bench.complexity reports it beside ours
    paper_macs_convention = "fused_scan"

    def __init__(self, **kwargs):
        kwargs.setdefault("cls_position", "middle")
        kwargs.setdefault("divide_out", True)
        kwargs.setdefault("init_mode", "vim")
        super().__init__(**kwargs)


def _create(variant: str, pretrained: bool, model_args: dict, kwargs: dict, dart: bool) -> Vim:
    tok, rest = split_tokenizer_kwargs(dict(kwargs))
    if tok and not dart:
        raise ValueError(f"{variant} uses the grid tokenizer; {sorted(tok)} apply to dart_* models only")
    args = {**model_args, **tok, **rest}
    if dart:
        args["tokenizer"] = "dart"
    return build(Vim, variant, pretrained, args)


def _grid_cfg(size: int) -> dict:
    return dart_cfg(size, crop_pct=0.875 if size == 224 else 1.0)


default_cfgs = generate_default_cfgs({
    "vim_tiny_patch16_224": _grid_cfg(224), "vim_small_patch16_224": _grid_cfg(224),
    "vim_tiny_patch16_448": _grid_cfg(448), "vim_small_patch16_448": _grid_cfg(448),
    # the official checkpoints, each its model's default tag (`name.official_in1k`)
    **default_cfgs_for(("dart_vim_tiny_patch16_224", "dart_vim_small_patch16_224", "dart_vim_tiny_patch16_224_392",
                        "dart_vim_small_patch16_224_392")),
})

TINY = dict(patch_size=16, embed_dim=192, depth=24)
SMALL = dict(patch_size=16, embed_dim=384, depth=24)
# the official DARViM scorers: the "v2" channel-gate head with its sigmoid(2z) gate, on MobileNetV3-Small
# features[:13] (Ti) / -Large features[:17] (S)
DART_TINY = dict(TINY, img_size=448, score_grid=14, scorer="mobilenetv3_small_v2", score_gate="sigmoid2")
DART_SMALL = dict(SMALL, img_size=448, score_grid=14, scorer="mobilenetv3_large_v2", score_gate="sigmoid2")


@register_model
def vim_tiny_patch16_224(pretrained=False, **kwargs) -> Vim:
    """Vim-Ti, 196 grid tokens (76.1% top-1 published)."""
    return _create("vim_tiny_patch16_224", pretrained, dict(TINY, img_size=224), kwargs, dart=False)


@register_model
def vim_small_patch16_224(pretrained=False, **kwargs) -> Vim:
    """Vim-S, 196 grid tokens (80.5%)."""
    return _create("vim_small_patch16_224", pretrained, dict(SMALL, img_size=224), kwargs, dart=False)


@register_model
def vim_tiny_patch16_448(pretrained=False, **kwargs) -> Vim:
    """Vim-Ti with 784 grid tokens (28 x 28): the long-sequence grid row (78.3%)."""
    return _create("vim_tiny_patch16_448", pretrained, dict(TINY, img_size=448), kwargs, dart=False)


@register_model
def vim_small_patch16_448(pretrained=False, **kwargs) -> Vim:
    """Vim-S with 784 grid tokens: the long-sequence grid row (81.6%)."""
    return _create("vim_small_patch16_448", pretrained, dict(SMALL, img_size=448), kwargs, dart=False)


@register_model
def dart_vim_tiny_patch16_224(pretrained=False, **kwargs) -> Vim:
    """DART Vim-Ti, 196 tokens, MobileNetV3-Small v2 scorer (77.2%; official darvim-tiny)."""
    return _create("dart_vim_tiny_patch16_224", pretrained, dict(DART_TINY, num_tokens=196), kwargs, dart=True)


@register_model
def dart_vim_small_patch16_224(pretrained=False, **kwargs) -> Vim:
    """DART Vim-S, 196 tokens, MobileNetV3-Large v2 scorer (81.5%; official darvim-sm)."""
    return _create("dart_vim_small_patch16_224", pretrained, dict(DART_SMALL, num_tokens=196), kwargs, dart=True)


@register_model
def dart_vim_tiny_patch16_224_392(pretrained=False, **kwargs) -> Vim:
    """DART Vim-Ti, 392 tokens: the long-sequence row (78.9%)."""
    return _create("dart_vim_tiny_patch16_224_392", pretrained, dict(DART_TINY, num_tokens=392), kwargs,
                   dart=True)


@register_model
def dart_vim_small_patch16_224_392(pretrained=False, **kwargs) -> Vim:
    """DART Vim-S, 392 tokens: the long-sequence row (82.2%)."""
    return _create("dart_vim_small_patch16_224_392", pretrained, dict(DART_SMALL, num_tokens=392), kwargs,
                   dart=True)
