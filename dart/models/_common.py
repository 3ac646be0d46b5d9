"""Pieces shared by the model families: the pretrained cfg and the tokenizer's keyword arguments."""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

# keyword arguments of every DART model that configure the tokenizer rather than the backbone
TOKENIZER_KWARGS = ("num_tokens", "score_grid", "scorer", "scorer_trunk", "scorer_weights",
                    "scorer_input_size", "convention", "score_norm", "score_gate", "score_std_floor",
                    "sampling", "quantile_eps", "scorer_bn", "score_head_init")


def dart_cfg(input_size: int = 448, **kwargs) -> dict:
    """timm pretrained cfg of a DART model: the paper feeds a 2x image to a "224" model."""
    return {
        "url": "", "num_classes": 1000, "input_size": (3, input_size, input_size), "pool_size": None,
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "apache-2.0", **kwargs,
    }


def _check_count(name: str, value) -> None:
    # int() would quietly turn 16.5, True or "16" into a token budget nobody asked for
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")


def split_tokenizer_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """(tokenizer kwargs, backbone kwargs); the token budget and score grid must be positive ints."""
    tok = {k: kwargs.pop(k) for k in TOKENIZER_KWARGS if k in kwargs}
    for k in ("num_tokens", "score_grid"):
        if k in tok:
            _check_count(k, tok[k])
    return tok, kwargs


def need_images(x) -> None:
    """The DART tokenizer partitions each image by its scores: an empty batch has nothing to cut."""
    if x.shape[0] == 0:
        raise ValueError(f"a batch of 0 images (input shape {tuple(x.shape)}): DART models need at least one")


def with_input_size(model):
    """Make the model's pretrained cfg report the input size it was built for (timm's data config
    reads it), since `img_size` may differ from the registered default."""
    h, w = model.patch_embed.img_size
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (model.patch_embed.in_chans, h, w)}
    return model
