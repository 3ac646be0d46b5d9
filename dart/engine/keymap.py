"""Load official DART checkpoints (darvit-*.pth, darvim-*.pth) into our models by a key map.

The official DeiT models are timm VisionTransformers whose patch embedding
(`DynamicAdaptiveRegionTokenizer`) holds the projection `proj` and a score network `spn`, itself
nested wrappers (`spn.spn.spn`) around a frozen CNN trunk `features` (torchvision's sub-keys) and
an MLP `mlp.net.{0,2}` of two Linear layers: per location C->H->1 in the "v1" head (DeiT),
C->96->C on the position-mean feature in the "v2" channel-gate head (Vim; also darvit-tiny-v2).
The official Vim models keep Vim's names (`layers.N.mixer.*`, `layers.N.norm.*`, `norm_f`,
`patch_embed.proj`, `pos_embed`, `cls_token`, `head`), with the same kind of `spn`.

Ours: `patch_embed.proj`, `patch_embed.scorer.trunk.*` (the CNN trunk, same sub-keys),
`patch_embed.scorer.head.fc1/fc2` (v1: 1x1 convs, i.e. per-location Linear layers stored as
(out, in, 1, 1); v2: Linear layers of the official shapes), and timm's / Vim's own names for the
backbone. So the map renames the scorer, reshapes v1 Linear weights to 1x1 convs, strips wrapper
prefixes (`module.`, `model.`) and keeps every other name. Every tensor comes from the checkpoint,
the scorer trunk's included (BatchNorm buffers too): the official constructors re-initialise parts
of the trunk, so it is not torchvision's ImageNet trunk.

`load_into` reports what did not map (checkpoint keys with no home), what stayed missing (model
keys not in the checkpoint) and shape mismatches. Loading an official darvit/darvim checkpoint also
switches the model's tokenizer to the official convention (`DART.use_official_convention`, the
official head's score gate, frozen trunk) and logs it. DARMT (RMT with DART's image reshaper)
checkpoints are refused: this project has no RMT backbone.
"""
from __future__ import annotations

import logging
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
OFFICIAL_FAMILIES = ("darvit", "darvim")
# the score gate each official head applies after the standardisation (ScorePredNetV1 / V2)
OFFICIAL_GATES = {"v1": "sigmoid_offset", "v2": "sigmoid2"}
_HEAD_OUT = re.compile(r"^patch_embed\.spn\.(?:spn\.)*mlp\.net\.2\.weight$")

_log = logging.getLogger(__name__)
CONTAINER_ORDER = ("model", "state_dict", "module", "model_ema")  # where a state dict is looked for


@dataclass
class KeyMapReport:
    mapped: list[tuple[str, str]] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)  # checkpoint keys with no place in the model
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint did not fill
    mismatched: list[tuple[str, str, tuple, tuple]] = field(default_factory=list)
    family: str = "unknown"
    head_version: Optional[str] = None  # the official scorer head: "v1" (per location) or "v2" (gate)
    official_convention: bool = False  # the tokenizer was switched to the official convention
    entry: Optional[str] = None  # the checkpoint entry the weights were read from (None: top level)

    @property
    def complete(self) -> bool:
        return not (self.unmapped or self.missing or self.mismatched)

    def summary(self, limit: int = 20) -> str:
        def cut(items):
            items = list(items)
            return ", ".join(map(str, items[:limit])) + (f" ... (+{len(items) - limit})" if len(items) > limit else "")
        where = f"'{self.entry}'" if self.entry else "top-level tensors"
        parts = [f"{self.family} checkpoint ({where}): {len(self.mapped)} keys mapped"]
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
        if self.official_convention:
            parts.append(f"tokenizer set to the official convention ({self.head_version} head)")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {"family": self.family, "entry": self.entry, "mapped": len(self.mapped), "unmapped": self.unmapped,
                "missing": self.missing,
                "mismatched": [[s, d, list(a), list(b)] for s, d, a, b in self.mismatched],
                "complete": self.complete, "head_version": self.head_version,
                "official_convention": self.official_convention}


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


def find_state_dict(obj, key: Optional[str] = None) -> tuple[Optional[str], dict]:
    """(where it was read, the tensor dict) of a checkpoint: the first of 'model', 'state_dict',
    'module', 'model_ema' that it holds (or `key`), else its top-level tensors (where: None).

    An official checkpoint with an EMA copy is read from 'model' (the trained weights). An entry
    holding values that are not tensors is an error naming them: the weights are never read from
    another entry in its place."""
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint holds a {type(obj).__name__}, not a dict of tensors")
    for k in (key,) if key else CONTAINER_ORDER:
        sd = obj.get(k)
        if isinstance(sd, dict) and sd:
            other = [f"{n} ({type(v).__name__})" for n, v in sd.items() if not isinstance(v, torch.Tensor)]
            if other:
                raise ValueError(f"checkpoint entry {k!r} is not a state dict: {len(other)} of its values are not "
                                 f"tensors ({', '.join(other[:5])}{' ...' if len(other) > 5 else ''}); no weights are "
                                 f"read from another entry in its place")
            return k, sd
    if key:
        raise ValueError(f"checkpoint has no {key!r} entry (top-level keys: {', '.join(map(str, obj))[:200]})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"no state dict in checkpoint (top-level keys: {', '.join(map(str, obj))[:200]})")
    return None, tensors


def extract_state_dict(obj) -> dict:
    """The tensor dict inside a checkpoint (`find_state_dict`)."""
    return find_state_dict(obj)[1]


def detect_family(keys) -> str:
    """'darvit' / 'darvim' (official DART DeiT / Vim), 'deit' / 'vim' (no scorer), 'darmt', or 'unknown'."""
    keys = list(keys)
    if any(k.startswith("pre_image.spn.") for k in keys):
        return "darmt"
    if any(re.match(r"^layers\.\d+\.mixer\.", k) for k in keys):
        return "darvim" if any(".spn." in k for k in keys) else "vim"
    if any(re.match(r"^blocks\.\d+\.attn\.", k) for k in keys):
        return "darvit" if any(".spn." in k for k in keys) else "deit"
    return "unknown"


def head_version(state: dict) -> Optional[str]:
    """The official scorer head of a state dict: 'v1' (last layer H->1), 'v2' (H->C), None if absent."""
    for k, v in state.items():
        if _HEAD_OUT.match(_strip_wrappers(k)):
            return "v1" if v.shape[0] == 1 else "v2"
    return None


def _strip_wrappers(key: str) -> str:
    for pre in WRAPPER_PREFIXES:
        while key.startswith(pre):
            key = key[len(pre):]
    return key


def map_key(key: str) -> str:
    key = _strip_wrappers(key)
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
    report = KeyMapReport(family=detect_family(_strip_wrappers(k) for k in state), head_version=head_version(state))
    if report.family == "darmt":
        raise ValueError(
            "this is an official DARMT checkpoint (RMT backbone with DART's image reshaper, keys "
            "'pre_image.spn.*'): this project builds no RMT model, so it cannot be loaded. Official "
            "darvit-* (DeiT) and darvim-* (Vim) checkpoints are supported.")
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
              log: Optional[Callable[[str], None]] = None, entry: Optional[str] = None,
              convention: bool = True) -> KeyMapReport:
    """Load a checkpoint file or object into `model` through the key map; returns the report.

    Keys that do not map or do not fit are left out (the model keeps its own values for them);
    with strict_shapes a shape mismatch raises instead. `entry` names the checkpoint entry to read
    (e.g. 'model_ema'); by default `find_state_dict` picks it, and the report says which.
    `convention=False` leaves the tokenizer as it was built (the engine builds it from a config
    that already says which convention: `dart.engine.initialise.with_init_kwargs`).
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from .checkpoint import load
        source = load(source)
    where, state = find_state_dict(source, entry)
    new, report = convert(state, model.state_dict())
    report.entry = where
    if strict_shapes and report.mismatched:
        raise ValueError("checkpoint shapes do not fit the model: " + report.summary())
    model.load_state_dict(new, strict=False)
    if report.family in OFFICIAL_FAMILIES and convention:
        report.official_convention = apply_official_convention(model, report.head_version)
    _log.info(report.summary())
    if log:
        log(report.summary())
    return report


def apply_official_convention(model: nn.Module, head: Optional[str]) -> bool:
    """Make `model` tokenise as the official checkpoints were trained: the DART tokenizer's official
    convention (batch standardisation, no std floor, reference sampling), the score gate of the
    official head, and a frozen scorer trunk. False when the model has no DART tokenizer."""
    pe = getattr(model, "patch_embed", None)
    if not hasattr(pe, "use_official_convention"):
        _log.warning("official DART checkpoint loaded into %s, which has no DART tokenizer: "
                     "official convention not applied", type(model).__name__)
        return False
    pe.use_official_convention()
    gate = OFFICIAL_GATES.get(head)
    if gate and pe.score_gate != gate:
        _log.info("score gate %s -> %s (the official %s head's)", pe.score_gate, gate, head)
        pe.score_gate = gate
    if hasattr(pe.scorer, "freeze_trunk"):
        pe.scorer.freeze_trunk()
    _log.info("official checkpoint: tokenizer uses the official convention (score_norm=%s, "
              "score_std_floor=%s, sampling=%s, score_gate=%s, scorer trunk frozen)",
              pe.score_norm, pe.score_std_floor, pe.sampling, pe.score_gate)
    return True
