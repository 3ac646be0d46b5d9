"""The paper's regime as a named setting, and a warning for crops that cut small objects out.

The paper compares DART and the grid at the same token budget but not the same input: DeiT sees
224 px, DART tokenises the 448-px image and runs its scorer on a 224-px copy. `data.grid_img_size`
names that one number, the grid baseline's input size: a DART config that sets it gets
`model.kwargs.scorer_input_size` from it (docs/engine.md, "The paper's regime").
"""
from __future__ import annotations

import logging

_log = logging.getLogger("dart.engine")

# aug/data keys of the small-object warning, and the settings that keep small objects in the image
CROP_KEYS = ("aug.scale", "data.crop_pct")


def is_dart_model(name: str) -> bool:
    return name.startswith("dart_")


def scorer_input_size(cfg: dict, kwargs: dict) -> int | None:
    """The scorer's input size implied by `data.grid_img_size` (None: leave the model's default)."""
    grid = cfg["data"].get("grid_img_size")
    if grid is None:
        return kwargs.get("scorer_input_size")
    name = cfg["model"]["name"]
    if not is_dart_model(name):
        if grid != cfg["data"]["img_size"]:
            raise ValueError(f"config key 'data.grid_img_size' ({grid}) is for DART models; the grid model "
                             f"{name!r} takes 'data.img_size' ({cfg['data']['img_size']}) as its input size")
        return kwargs.get("scorer_input_size")
    given = kwargs.get("scorer_input_size")
    if given is not None and given != grid:
        raise ValueError(f"config key 'model.kwargs.scorer_input_size' ({given}) differs from "
                         f"'data.grid_img_size' ({grid}); set one of them")
    if grid > cfg["data"]["img_size"]:
        raise ValueError(f"config key 'data.grid_img_size' ({grid}) exceeds 'data.img_size' "
                         f"({cfg['data']['img_size']}): the grid's input is the downsampled copy")
    return grid


def _set_keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in (tree or {}).items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict):
            out |= _set_keys(v, key + ".")
    return out


def small_object_crop_warning(cfg: dict, file_cfg: dict | None, overrides=()) -> str | None:
    """A warning when ImageFolder data meet crops the config never chose: random-resized-crop with a
    small minimum scale and a centre crop below 1 are inherited from defaults.yaml (DeiT's recipe), as
    happens when a toy config is copied to real data. Small objects are then often cropped away."""
    if cfg["data"]["kind"] != "imagefolder":
        return None
    chosen = _set_keys(file_cfg or {}) | {o.split("=", 1)[0].strip() for o in overrides}
    scale, crop = cfg["aug"]["scale"], cfg["data"]["crop_pct"]
    risky = []
    if "aug.scale" not in chosen and scale[0] < 0.25:
        risky.append(f"aug.scale={list(scale)} (random-resized-crop keeps as little as {scale[0]:.0%} of "
                     "the image in training)")
    if "data.crop_pct" not in chosen and crop < 1.0:
        risky.append(f"data.crop_pct={crop} (evaluation keeps the central {crop:.1%} of each side)")
    if not risky:
        return None
    return ("ImageFolder data with crops inherited from the defaults, not set by this config: "
            + "; ".join(risky) + ". They can cut small objects, the detail DART is meant to find, out of "
            "the image; set aug.scale and data.crop_pct explicitly (e.g. aug.scale=[0.5,1.0] "
            "data.crop_pct=1.0) or keep them to follow DeiT's recipe.")


def warn_small_object_crops(cfg: dict, file_cfg: dict | None, overrides=()) -> None:
    msg = small_object_crop_warning(cfg, file_cfg, overrides)
    if msg:
        _log.warning(msg)
