"""Pretrained weights of the DART models: timm pretrained cfgs for the official checkpoints, the
loader behind `timm.create_model(<name>[.<tag>], pretrained=True)`, and `checkpoint_filter_fn`.

timm's own loader cannot read the official files: its `file` source prefers `model_ema` (the
published top-1 is that of `model`, which DeiT's main.py evaluates), and both its sources unpickle
the whole file with `weights_only=True`, which refuses the `argparse.Namespace` the files carry.
So the DART models build with `pretrained=False` and load here: the source is resolved as timm
does (an in-memory `state_dict`, else `file` from `pretrained_cfg_overlay`, else the Hugging Face
file, which `hf_hub_download` takes from the local cache when offline), read with
`dart.engine.checkpoint.load`, mapped by the key map (`checkpoint_filter_fn`) and loaded; the
tokenizer then uses the official convention, logged.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

import torch.nn as nn
from timm.models import PretrainedCfg

from . import official
from ._common import dart_cfg

_log = logging.getLogger(__name__)


@dataclass
class DartPretrainedCfg(PretrainedCfg):
    """timm's PretrainedCfg with the published top-1 of the checkpoint's model and the official
    model it was saved from (both end up in `model.pretrained_cfg`; a None is left out there)."""
    published_top1: Optional[float] = None
    official_model: Optional[str] = None


def official_cfg(p: official.Published) -> DartPretrainedCfg:
    top1 = f"{p.published_top1}% top-1 published" if p.published_top1 is not None else "no published top-1"
    return DartPretrainedCfg(**{
        **dart_cfg(p.input_size, crop_pct=p.crop_pct, interpolation=p.interpolation),
        "hf_hub_id": p.hub, "hf_hub_filename": p.file, "published_top1": p.published_top1,
        "official_model": p.official, "origin_url": official.ORIGIN_URL, "paper_ids": official.PAPER_ID,
        "description": f"official DART checkpoint {p.file} ({p.official}; ImageNet-1K, {top1})"})


def default_cfgs_for(names) -> dict:
    """`generate_default_cfgs` input for a module's models: `name.official_in1k` (the default tag)
    for a model with an official checkpoint, the weightless DART cfg for the others."""
    out = {}
    for name in names:
        p = official.BY_MODEL.get(name)
        out[p.name if p else name] = official_cfg(p) if p else dart_cfg()
    return out


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """A checkpoint (an official darvit-*/darvim-* file or its `model` dict, or one of ours) mapped
    onto `model`'s keys by the key map of `dart.engine.keymap`; keys that do not map or fit are left
    out (`keymap.load_into` reports them). An official file is read from `model`, not `model_ema`."""
    from ..engine.keymap import convert, extract_state_dict
    return convert(extract_state_dict(state_dict), model.state_dict())[0]


def unavailable(name: str, repo: str, filename: str, cache_dir=None) -> str:
    """The one line for a hub file that is neither in the local cache nor reachable."""
    why = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
    return (f"{name}: {filename} of the Hugging Face repository {repo} is not in the local hub cache "
            f"({cache_dir or _hub_cache()}) and {why}; download it where there is network (`hf download "
            f"{repo} {filename}`) or pass pretrained_cfg_overlay=dict(file=PATH) (dart.evaluate: --checkpoint PATH)")


def _hub_file(cfg: dict, name: str, cache_dir) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    repo, filename = cfg["hf_hub_id"], cfg.get("hf_hub_filename") or "pytorch_model.bin"
    try:
        return hf_hub_download(repo, filename, cache_dir=cache_dir)
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(unavailable(name, repo, filename, cache_dir)) from e
    except OSError as e:  # HTTP errors (no such file or repository, access) are OSErrors too
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"{name}: cannot fetch {filename} from the Hugging Face repository {repo} "
                                f"({first})") from e


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache() -> str:
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def _read(path: str, name: str):
    from ..engine import checkpoint
    if path.endswith(".safetensors"):
        import safetensors.torch
        return safetensors.torch.load_file(path, device="cpu")
    try:
        return checkpoint.load(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{name}: {e}") from e
    except checkpoint.CheckpointError as e:
        raise checkpoint.CheckpointError(f"{name}: {e}") from e


def resolve_source(cfg: dict, name: str, cache_dir=None) -> tuple[object, str]:
    """(checkpoint object or path to read, description) of a pretrained cfg, in timm's order: an
    in-memory `state_dict`, else `file`, else the Hugging Face file. Missing: FileNotFoundError
    naming the file and the tag, in one line."""
    if cfg.get("state_dict") is not None:
        return cfg["state_dict"], "the state dict given in pretrained_cfg"
    if cfg.get("file"):
        path = os.path.expanduser(str(cfg["file"]))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{name}: checkpoint file {path} (pretrained_cfg file) does not exist")
        return path, path
    if cfg.get("hf_hub_id"):
        path = _hub_file(cfg, name, cache_dir)
        return path, f"hf-hub:{cfg['hf_hub_id']}/{cfg.get('hf_hub_filename') or ''} ({path})"
    raise ValueError(
        f"{name}: no published weights for this model (timm.list_pretrained('dart_*') lists the official "
        f"checkpoints' tags); for a file of your own pass pretrained_cfg_overlay=dict(file=PATH), or build "
        f"with pretrained=False")


def build(cls, variant: str, pretrained: bool, args: dict) -> nn.Module:
    """A DART family's model: timm's `build_model_with_cfg` bare (timm's loader cannot read the
    official files, see above), its cfg's input size set (`with_input_size`), then the weights
    `pretrained` asks for loaded here."""
    from timm.models import build_model_with_cfg
    from ._common import with_input_size
    model = with_input_size(build_model_with_cfg(cls, variant, pretrained=False, **args))
    if pretrained:
        load_pretrained(model, variant, cache_dir=args.get("cache_dir"))
    return model


def load_pretrained(model: nn.Module, variant: str, cache_dir=None) -> nn.Module:
    """Load the weights `model.pretrained_cfg` names into `model` (see the module docstring); every
    model key must be filled, except a classifier head of another num_classes (left as initialised,
    as timm does). Returns the model."""
    from ..engine.checkpoint import CheckpointError
    from ..engine.keymap import evaluation_blockers, load_into
    cfg = model.pretrained_cfg
    name = f"{variant}.{cfg['tag']}" if cfg.get("tag") else variant
    source, where = resolve_source(cfg, name, cache_dir)
    if os.path.basename(str(source)) in official.REFUSED:
        raise ValueError(f"{name}: {os.path.basename(source)} is {official.REFUSED[os.path.basename(source)]}")
    obj = _read(source, name) if isinstance(source, str) else source
    report = load_into(model, obj)
    blockers, allowed = evaluation_blockers(report)
    if blockers:
        raise CheckpointError(f"{name}: {where} does not fill the model: {report.summary()}")
    _log.info("%s: loaded %s; %s%s", name, where, report.summary(),
              f"; classifier left as initialised (num_classes differs): {', '.join(allowed)}" if allowed else "")
    model.pretrained_source = {"name": name, "source": where, "keymap": {**report.as_dict(), "allowed": allowed}}
    return model
