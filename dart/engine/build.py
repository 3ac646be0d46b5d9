"""Model construction from a run config, for train and evaluate alike."""
from __future__ import annotations

import logging
import os

import timm
import torch.nn as nn

import dart  # noqa: F401  (registers the DART models with timm)

_log = logging.getLogger("dart")


def _try_register_mamba() -> None:
    """The Vim/VideoMamba families register on import; they may not exist in older trees."""
    for mod in ("dart.models.vim", "dart.models.videomamba"):
        try:
            __import__(mod)
        except ImportError:
            pass


def model_kwargs(cfg: dict) -> dict:
    kw = dict(cfg["model"].get("kwargs") or {})
    size = cfg["data"]["img_size"]
    if "img_size" in kw and kw["img_size"] != size:
        raise ValueError(f"config key 'model.kwargs.img_size' ({kw['img_size']}) differs from "
                         f"'data.img_size' ({size}); set one of them")
    kw["img_size"] = size
    from .regime import scorer_input_size
    scorer_size = scorer_input_size(cfg, kw)
    if scorer_size is not None:
        kw["scorer_input_size"] = scorer_size
    if cfg["task"] == "video":
        frames = cfg["data"]["num_frames"]
        if "num_frames" in kw and kw["num_frames"] != frames:
            raise ValueError(f"config key 'model.kwargs.num_frames' ({kw['num_frames']}) differs from "
                             f"'data.num_frames' ({frames})")
        kw["num_frames"] = frames
    return kw


def build_model(cfg: dict, weights_follow: bool = False, pretrained: str | None = None,
                pretrained_file: str | None = None) -> nn.Module:
    """The config's model. `weights_follow`: a checkpoint that holds every weight (a run's, an
    official one) is loaded next, so a pretrained scorer trunk's own weights file is not read (it
    may not be there where the run is evaluated, and its values would be overwritten anyway).
    `pretrained`: a timm `name.tag` of published weights (an official DART checkpoint or a timm
    baseline's) to load, from `pretrained_file` when given (timm's
    `pretrained_cfg_overlay=dict(file=...)`), else from the Hugging Face hub or its local cache."""
    name, task = cfg["model"]["name"], cfg["task"]
    n = cfg["data"]["num_classes"]
    _try_register_mamba()
    kw = model_kwargs(cfg)
    if (weights_follow or pretrained) and kw.get("scorer_trunk") == "pretrained_frozen":
        kw["scorer_weights"] = False
    if pretrained:
        if task != "classification" or pretrained.split(".", 1)[0] != name:
            raise ValueError(f"pretrained weights {pretrained} are for classification with model {name}")
        try:
            tag_cfg = timm.models.get_pretrained_cfg(pretrained)
        except RuntimeError:  # timm: "Invalid pretrained tag"
            tag_cfg = None
        if "." in pretrained and tag_cfg is None:
            known = timm.list_pretrained(f"{name}.*")
            raise ValueError(f"{pretrained}: no such pretrained tag (known for {name}: {', '.join(known) or 'none'})")
        if pretrained_file and not os.path.isfile(pretrained_file):
            raise FileNotFoundError(f"{pretrained}: checkpoint file {pretrained_file} does not exist")
        overlay = dict(file=pretrained_file) if pretrained_file else None
        try:
            return timm.create_model(pretrained, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=n, **kw)
        except TypeError as e:
            raise ValueError(f"config key 'model.kwargs' of {name}: {e}") from e
        except FileNotFoundError as e:  # timm's own loader (grid baselines): not cached, no network
            if str(e).startswith(pretrained):
                raise  # ours (DART models): already names the file and the tag
            from ..models._pretrained import unavailable
            pc = timm.models.get_pretrained_cfg(pretrained)
            raise FileNotFoundError(unavailable(pretrained, pc.hf_hub_id,
                                                pc.hf_hub_filename or "model.safetensors")) from e
        except RuntimeError as e:  # timm's loader (baselines): a file that does not fit
            raise ValueError(f"{pretrained}: {' '.join(str(e).split())[:300]}") from e
    if task == "segmentation":
        from ..models.segmentation import create_segmenter
        dec = dict(cfg["model"].get("decoder") or {})
        try:
            return create_segmenter(name, n, decoder=dec.pop("type", "mla"), **dec, **kw)
        except TypeError as e:
            raise ValueError(f"config key 'model.kwargs' or 'model.decoder' of {name}: {e}") from e
    if not timm.is_model(name):
        raise ValueError(f"config key 'model.name': unknown model {name!r} (not registered with timm)")
    try:
        return timm.create_model(name, pretrained=False, num_classes=n, **kw)
    except TypeError as e:  # an argument the model does not take: a typo in the config
        raise ValueError(f"config key 'model.kwargs' of {name}: {e}") from e


def input_shape(cfg: dict) -> tuple[int, ...]:
    s = cfg["data"]["img_size"]
    if cfg["task"] == "video":
        return (3, cfg["data"]["num_frames"], s, s)
    return (3, s, s)


def num_tokens(model: nn.Module):
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        return None
    return getattr(pe, "num_tokens", None) or getattr(pe, "num_patches", None)
