"""A finished run folder as a model: its merged config (config.yaml) and its weights
(checkpoint_last.pt), for evaluation, pictures and analysis without repeating any model kwarg."""
from __future__ import annotations

import os

import yaml


def run_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir!r} is not a run folder: no config.yaml in it")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    from .config import validate
    validate(cfg)
    return cfg


def load_run(run_dir: str, checkpoint: str = "checkpoint_last.pt", use_ema: bool = False):
    """(config, model in eval mode) of a run folder; classification and segmentation runs alike."""
    from . import checkpoint as ckpt
    from .build import build_model
    cfg = run_config(run_dir)
    path = os.path.join(run_dir, checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {checkpoint!r} in run folder {run_dir!r}")
    obj = ckpt.load(path)
    if not (isinstance(obj, dict) and obj.get("format") == ckpt.FORMAT):
        raise ValueError(f"{path} is not a run checkpoint of dart.train")
    state = obj["model"]
    if use_ema:
        if obj.get("ema") is None:
            raise ValueError(f"{path} has no EMA weights (train.ema was false)")
        state = {k.removeprefix("module."): v for k, v in obj["ema"].items()}
    model = build_model(cfg, weights_follow=True)
    model.load_state_dict(state)
    return cfg, model.eval()
