"""The paper's regime as a named setting, and a warning for crops that cut small objects out.

The paper compares DART and the grid at the same token budget but not the same input: DeiT sees
224 px, DART tokenises the 448-px image and runs its scorer on a 224-px copy. `data.grid_img_size`
names that one number, the grid baseline's input size: a DART config that sets it gets
`model.kwargs.scorer_input_size` from it (docs/engine.md, "The paper's regime").
"""
from __future__ import annotations


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


# the crop warning lives in config.py (loaded on its own by the workflow's planner, without the package)
from .config import small_object_crop_warning, warn_small_object_crops  # noqa: E402,F401
