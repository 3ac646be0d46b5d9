"""Load official DART checkpoints (darvit-*.pth, darvim-*.pth) into our models by a key map.

The official DeiT models are timm VisionTransformers whose patch embedding
(`DynamicAdaptiveRegionTokenizer`) holds the projection `proj` and a score network `spn`, itself
nested wrappers (`spn.spn.spn`) around a frozen CNN trunk `features` and an MLP `mlp.net.{0,2}`
(two Linear layers applied per location). The official Vim models keep Vim's names
(`layers.N.mixer.*`, `layers.N.norm.*`, `norm_f`, `patch_embed.proj`, `pos_embed`, `cls_token`,
`head`), with the same kind of `spn` in their patch embedding.

Ours: `patch_embed.proj`, `patch_embed.scorer.trunk.*` (the CNN trunk), `patch_embed.scorer.head.fc1/fc2`
(1x1 convs, i.e. per-location Linear layers stored as (out, in, 1, 1)), and timm's / Vim's own names
for the backbone. So the map renames the scorer, reshapes Linear weights to 1x1 convs, strips
wrapper prefixes (`module.`, `model.`) and keeps every other name. `load_into` reports what did
not map (checkpoint keys with no home), what stayed missing (model keys not in the checkpoint) and
shape mismatches (e.g. a scorer trunk cut after a different block).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn as nn

# (pattern, replacement) applied in order; the first match wins
RULES: list[tuple[str, str]] = [
    (r"^patch_embed\.spn\.(?:spn\.)*features\.(.+)$", r"patch_embed.scorer.trunk.\1"),
    (r"^patch_embed\.spn\.(?:spn\.)*mlp\.net\.0\.(weight|bias)$", r"patch_embed.scorer.head.fc1.\1"),
    (r"^patch_embed\.spn\.(?:spn\.)*mlp\.net\.2\.(weight|bias)$", r"patch_embed.scorer.head.fc2.\1"),
]
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
CONTAINER_KEYS = ("model_ema", "model", "state_dict", "module")


@dataclass
class KeyMapReport:
    mapped: list[tuple[str, str]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # checkpoint keys with no place in the model
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint did not fill
    mismatched: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    family: str = "unknown"

    @property
    def complete(self) -> bool:
        return not (self.unmapped or self.missing or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        def cut(items):
            items = list(items)
            return ", ".join(map(str, items[:limit])) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")
        parts = [f"{self.family} checkpoint: {len(self.mapped)} keys mapped"]
        if self.unmapped:
            parts.append(f"{len(self.unmapped)} checkpoint keys did not map: {cut(self.unmapped)}")
        if self.missing:
            parts.append(f"{len(self.missing)} model keys not in the checkpoint (left as initialised): "
                         f"{cut(self.missing)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatches (not loaded): "
                         f"{cut(f'{s}->{d} {tuple(a)} vs {tuple(b)}' for s, d, a, b in self.mismatched)}")
        if self.complete:
            parts.append("all keys mapped")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"family": self.family, "mapped": len(self.mapped), "unmapped": self.unmapped,
                "missing": self.missing,
                "mismatched": [[s, d, list(a), list(b)] for s, d, a, b in self.mismatched],
                "complete": self.complete}


# What evaluation may leave unloaded: the classifier head, when its shape differs from the
# checkpoint's because data.num_classes differs (e.g. an ImageNet checkpoint on a 10-class set).
# Anything else missing, unmapped or misfit means the score would not be the checkpoint's.
EVAL_MAY_MISFIT = re.compile(r"^head(_dist)?\.(weight|bias)$")


def evaluation_blockers(report: KeyMapReport) -> tuple[list[str], list[str]]:
    """(problems that forbid evaluating, model keys allowed to stay as initialised) of a load."""
    allowed = sorted(d for _, d, a, b in report.mismatched if EVAL_MAY_MISFIT.match(d) and tuple(a[1:]) == tuple(b[1:]))
    blockers = [f"unmapped {k}" for k in report.unmapped]
    blockers += [f"missing {k}" for k in report.missing if k not in allowed]
    blockers += [f"misfit {d}" for _, d, _, _ in report.mismatched if d not in allowed]
    return blockers, allowed


def extract_state_dict(obj) -> dict:
    """The tensor dict inside a checkpoint: {'model': sd}, {'state_dict': sd}, or sd itself.

    An official checkpoint with an EMA copy is read from 'model' (the trained weights)."""
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a dict of tensors")
    for k in ("model", "state_dict", "module", "model_ema"):
        if isinstance(obj.get(k), dict) and obj[k] and all(isinstance(v, torch.Tensor) for v in obj[k].values()):
            return obj[k]
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"no state dict in checkpoint (top-level keys: {', '.join(map(str, obj))[:200]})")
    return tensors


def detect_family(keys) -> str:
    keys = list(keys)
    if any(re.match(r"^layers\.\d+\.mixer\.", k) for k in keys):
        return "darvim" if any(".spn." in k for k in keys) else "vim"
    if any(re.match(r"^blocks\.\d+\.attn\.", k) for k in keys):
        return "darvit" if any(".spn." in k for k in keys) else "deit"
    return "unknown"


def map_key(key: str) -> str:
    for pre in WRAPPER_PREFIXES:
        while key.startswith(pre):
            key = key[len(pre):]
    for pat, rep in RULES:
        if re.match(pat, key):
            return re.sub(pat, rep, key)
    return key


def _fit(src: torch.Tensor, dst: torch.Tensor) -> Optional[torch.Tensor]:
    """src reshaped to dst's shape when that is a pure view change (Linear <-> 1x1 conv)."""
    if src.shape == dst.shape:
        return src
    if src.numel() == dst.numel() and src.dim() == 2 and dst.dim() == 4 and dst.shape[2:] == (1, 1) \
            and tuple(src.shape) == tuple(dst.shape[:2]):
        return src.reshape(dst.shape)
    if src.numel() == dst.numel() and src.dim() == 4 and dst.dim() == 2 and src.shape[2:] == (1, 1):
        return src.reshape(dst.shape)
    return None


def convert(state: dict, model_state: dict) -> tuple[dict, KeyMapReport]:
    """Map an official state dict onto `model_state`'s keys. Returns (new state, report)."""
    report = KeyMapReport(family=detect_family(map_key(k) for k in state))
    out = {}
    for k, v in state.items():
        dst = map_key(k)
        if dst not in model_state:
            report.unmapped.append(k)
            continue
        fitted = _fit(v, model_state[dst])
        if fitted is None:
            report.mismatched.append((k, dst, tuple(v.shape), tuple(model_state[dst].shape)))
            continue
        out[dst] = fitted.to(model_state[dst].dtype)
        report.mapped.append((k, dst))
    report.missing = [k for k in model_state if k not in out]
    return out, report


def load_into(model: nn.Module, source, strict_shapes: bool = False,
              log: Optional[Callable[[str], None]] = None) -> KeyMapReport:
    """Load a checkpoint file or object into `model` through the key map; returns the report.

    Keys that do not map or do not fit are left out (the model keeps its own values for them);
    with strict_shapes a shape mismatch raises instead.
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from .checkpoint import load
        source = load(source)
    state = extract_state_dict(source)
    new, report = convert(state, model.state_dict())
    if strict_shapes and report.mismatched:
        raise ValueError("checkpoint shapes do not fit the model: " + report.summary())
    model.load_state_dict(new, strict=False)
    if log:
        log(report.summary())
    return report
