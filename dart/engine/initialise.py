"""`model.init_checkpoint`: the weights a run starts from, loaded so that they cannot silently miss.

The checkpoint (a run's checkpoint_last.pt or an official darvit/darvim file) goes through the key
map of `dart.engine.keymap`. What it must fill is the backbone:

- a classifier: every model key, except a classifier head of another number of classes (it stays
  as initialised);
- a segmenter from a classification checkpoint: every key of its backbone (the timm model under
  `backbone.model.*`), which the classifier's keys are mapped onto; the decoder starts fresh and
  the classifier's head is left out;
- a segmenter from a segmentation checkpoint: every key, except a classifier of another number of
  classes.

The convention travels with the weights: an official checkpoint was trained under the official
convention with a frozen scorer trunk, and a run checkpoint under its own config's. Where the config
leaves them unset, `with_init_kwargs` puts those model kwargs into the config itself before anything
is built or written, so config.yaml, every checkpoint of the run, `--resume`, `dart.evaluate` of the
run, `dart.viz --run` and `load_run` all rebuild the model that was trained (the tokenizer is then
not switched behind the config's back on load).

A position table of another length (a grid model fine-tuned at another input size: DeiT-S 224 ->
384, Vim 224 -> 448) is resampled bicubically over its 2-D grid with timm's
`resample_abs_pos_embed`, the class token's entry kept; anything else that is missing or does not
fit is an error naming the keys, and nothing is trained from weights that are partly random.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Optional

import torch
import torch.nn as nn

from . import checkpoint as ckpt
from .keymap import KeyMapReport, extract_state_dict, load_into, map_key

_log = logging.getLogger("dart")
HEAD = re.compile(r"^(head|head_dist|classifier)\.(weight|bias)$")
SEGMENTER_BACKBONE = "backbone.model."


def _target(model: nn.Module, state: dict) -> tuple[nn.Module, str]:
    """(module the checkpoint loads into, what it is called in messages)."""
    inner = getattr(getattr(model, "backbone", None), "model", None)
    if inner is None or not hasattr(model, "decoder_type"):
        return model, "model"
    if any(map_key(k).startswith(SEGMENTER_BACKBONE) for k in state):
        return model, "segmenter"
    return inner, f"segmenter's backbone ({SEGMENTER_BACKBONE}*)"


def _side(n: int) -> Optional[int]:
    side = int(round(math.sqrt(n)))
    return side if side * side == n else None


def resample_position_table(src: torch.Tensor, target: nn.Module) -> Optional[torch.Tensor]:
    """`src` (1, L, D), a position table of another grid size, resampled to `target`'s table;
    None when it cannot be (not a square grid, another width, no grid tokenizer)."""
    dst = getattr(target, "pos_embed", None)
    grid = getattr(getattr(target, "patch_embed", None), "grid_size", None)
    if dst is None or grid is None or src.dim() != 3 or src.shape[0] != 1 or src.shape[-1] != dst.shape[-1]:
        return None
    from timm.layers import resample_abs_pos_embed
    if hasattr(target, "cls_pos_index"):  # Vision Mamba: the class token's entry sits inside the table
        n = src.shape[1] - 1
        side = _side(n)
        if side is None:
            return None
        i_src = n // 2 if target.cls_position == "middle" else 0
        cls, patches = src[:, i_src:i_src + 1], torch.cat([src[:, :i_src], src[:, i_src + 1:]], 1)
        patches = resample_abs_pos_embed(patches, new_size=list(grid), old_size=[side, side], num_prefix_tokens=0)
        i = target.cls_pos_index
        out = torch.cat([patches[:, :i], cls, patches[:, i:]], 1)
    else:  # timm VisionTransformer: prefix tokens first (unless they have no position entry)
        prefix = 0 if getattr(target, "no_embed_class", False) else int(getattr(target, "num_prefix_tokens", 1))
        side = _side(src.shape[1] - prefix)
        if side is None:
            return None
        out = resample_abs_pos_embed(src, new_size=list(grid), old_size=[side, side], num_prefix_tokens=prefix)
    return out if out.shape == dst.shape else None


# model kwargs that come with an init checkpoint when the config leaves them unset: the convention
# it was trained under and its scorer trunk's regime (the checkpoint supplies the trunk)
INIT_KWARGS = ("convention", "scorer_trunk")
OFFICIAL_INIT = {"convention": "official", "scorer_trunk": "pretrained_frozen"}


def init_kwargs(obj) -> dict:
    """The model kwargs a checkpoint object implies (see INIT_KWARGS): the official ones for an
    official darvit/darvim file, its own config's for a run checkpoint of ours, else none."""
    from .keymap import OFFICIAL_FAMILIES, detect_family, find_state_dict
    if ckpt.is_run(obj):
        from .config import yaml_load
        kw = (yaml_load(obj["config_yaml"])["model"].get("kwargs") or {})
        return {k: kw[k] for k in INIT_KWARGS if k in kw}
    try:
        _, state = find_state_dict(obj)
    except ValueError:
        return {}
    return dict(OFFICIAL_INIT) if detect_family(state) in OFFICIAL_FAMILIES else {}


def with_init_kwargs(cfg: dict, stored: Optional[dict] = None, obj=None) -> tuple[dict, dict]:
    """(config, kwargs added): `cfg` with the model kwargs its `model.init_checkpoint` implies where
    the config leaves them unset, for a model that takes them (a DART model). `stored`: the config of
    a run checkpoint being resumed or evaluated; its values are taken when the init file is no
    longer there, or when `cfg` names no init checkpoint (dart.evaluate takes it from the run).
    `obj`: the init checkpoint already read (it is then not read again)."""
    path = cfg["model"].get("init_checkpoint")
    kw = cfg["model"].get("kwargs") or {}
    stored_path = (stored or {}).get("model", {}).get("init_checkpoint")
    if not (path or stored_path) or not cfg["model"]["name"].startswith("dart_") \
            or all(k in kw for k in INIT_KWARGS):
        return cfg, {}
    import os
    if obj is not None or (path and os.path.isfile(path)):
        implied = init_kwargs(obj if obj is not None else ckpt.load(path))
    elif stored_path and path in (None, stored_path):
        skw = stored["model"].get("kwargs") or {}
        implied = {k: skw[k] for k in INIT_KWARGS if k in skw}
    else:
        return cfg, {}  # the load itself names the missing file
    added = {k: v for k, v in implied.items() if k not in kw}
    if not added:
        return cfg, {}
    import copy
    out = copy.deepcopy(cfg)
    out["model"]["kwargs"] = {**kw, **added}
    return out, added


def init_from_checkpoint(model: nn.Module, path: str, obj=None) -> KeyMapReport:
    """Load `path` (or `obj`, the checkpoint already read from it) into `model` as its starting
    weights; raise a CheckpointError naming the keys when the checkpoint does not fill the backbone
    (module docstring)."""
    state = dict(extract_state_dict(obj if obj is not None else ckpt.load(path)))
    target, what = _target(model, state)
    resampled = []
    for k in list(state):
        if map_key(k) == "pos_embed" and tuple(state[k].shape) != tuple(getattr(target, "pos_embed", state[k]).shape):
            new = resample_position_table(state[k], target)
            if new is not None:
                resampled.append(f"{k} {tuple(state[k].shape)} -> {tuple(new.shape)}")
                state[k] = new
    report = load_into(target, {"model": state}, convention=False)  # the config says which (above)
    heads = {d for _, d, _, _ in report.mismatched if HEAD.match(d)} | {k for k in report.missing if HEAD.match(k)}
    blockers = [k for k in report.missing if k not in heads]
    blockers += [f"{d} {tuple(a)} vs {tuple(b)}" for _, d, a, b in report.mismatched if d not in heads]
    if blockers:
        shown = ", ".join(blockers[:12]) + (f" ... (+{len(blockers) - 12})" if len(blockers) > 12 else "")
        raise ckpt.CheckpointError(
            f"config key 'model.init_checkpoint': {path} does not fill the {what}: {len(blockers)} of its "
            f"{len(target.state_dict())} keys would stay random ({shown}); {report.summary(limit=8)}")
    for line in resampled:
        _log.info("init_checkpoint: position table resampled (bicubic, class token kept): %s", line)
    if heads:
        _log.info("init_checkpoint: classifier left as initialised (another number of classes): %s",
                  ", ".join(sorted(heads)))
    others = [k for k in report.unmapped if not HEAD.match(map_key(k))]
    if others:
        _log.warning("init_checkpoint: %d checkpoint keys have no place in the %s and were left out: %s",
                     len(others), what, ", ".join(others[:12]) + (" ..." if len(others) > 12 else ""))
    return report
