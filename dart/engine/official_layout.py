"""Checkpoints in the official layout, made up: for tests and the smoke scale, where the published
files are not at hand.

`read_layouts` reads the key lists of the official models (`tests/data/official_state_dicts.txt`:
every key, shape, role and kind, dumped from the official models built in memory); `synthetic_checkpoint`
builds a file as DeiT's main.py saves one: `model` (those keys and shapes, random values), `model_ema`
(the same keys), `optimizer`, `lr_scheduler`, `epoch`, `scaler` and `args` (an argparse.Namespace).
Values are small (std 0.02, BatchNorm variances positive) so that a model loaded with them gives
finite outputs, and differ between tensors and from the EMA copy, so a key read from the wrong place
shows.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch


def read_layouts(path) -> dict[str, list[tuple[str, tuple, str, str]]]:
    """{official model name: [(key, shape, role, kind), ...]} in state-dict order."""
    out: dict[str, list] = {}
    current = None
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^## (\w+) \(", line)
        if m:
            current = out.setdefault(m.group(1), [])
            continue
        if current is not None and not line.startswith("#") and line.count("\t") == 3:
            key, shape, role, kind = line.split("\t")
            current.append((key, tuple(json.loads(shape)), role, kind))
    return out


def synthetic_state(keys, seed: int = 0) -> dict:
    """A state dict with the given (key, shape, ...) rows; every tensor holds different values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, (key, shape, *_) in enumerate(keys):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + i, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = 0.02 * torch.randn(shape, generator=gen) + 1e-3 * (i % 50)
    return state


def synthetic_checkpoint(keys, official: str, seed: int = 0, share_ema: bool = False) -> dict:
    """What DeiT's main.py saves: `model`, `model_ema` (other values, or the same tensors with
    `share_ema`, which torch.save then stores once), optimizer and scheduler states, `args`."""
    model = synthetic_state(keys, seed)
    ema = model if share_ema else {k: (v + 0.01 if v.is_floating_point() else v) for k, v in model.items()}
    args = argparse.Namespace(model=official, input_size=448, batch_size=256, drop_path=0.1, model_ema=True,
                              model_ema_decay=0.99996, if_amp=False, data_set="IMNET", eval_crop_ratio=0.875,
                              output_dir="", opt_betas=None)
    return {"model": model, "model_ema": dict(ema), "optimizer": {"state": {}, "param_groups": []},
            "lr_scheduler": {"t_initial": 300}, "epoch": 299, "scaler": "none", "args": args}
