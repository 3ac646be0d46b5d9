"""Parameters and multiply-accumulates (MACs) of one forward pass of a model, the count behind
`python -m bench.complexity` and the `gmacs` a training run records.

Convention (the DeiT/timm one, which the DART paper's "GFLOPs" follow): one multiply-add = one MAC.
`torch.utils.flop_counter.FlopCounterMode` reports 2 FLOPs per MAC, so we halve it. Attention is
counted unfused (timm's `fused_attn` off), since FlopCounterMode does not see the fused kernel's
matmuls on CPU. Work that FlopCounterMode cannot see (e.g. a selective scan built from
elementwise ops or run by a compiled kernel) is added by modules that define
`uncounted_macs(*inputs, output=...)`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def _unfuse_attention(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False


def input_shape_of(model: nn.Module) -> tuple[int, ...]:
    """(C, H, W) the model was built for, from its tokenizer or timm's pretrained cfg."""
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        h, w = pe.img_size if not isinstance(pe.img_size, int) else (pe.img_size, pe.img_size)
        return (getattr(pe, "in_chans", 3), h, w)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("input_size", (3, 224, 224)))


def count_model(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Params and GMACs of one forward pass of `model` on a batch of one input of `input_shape`."""
    model.eval()
    _unfuse_attention(model)
    extra = [0]

    def hook(mod, args, output):
        extra[0] += int(mod.uncounted_macs(*args, output=output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if hasattr(m, "uncounted_macs")]
    try:
        x = torch.zeros(1, *input_shape)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    macs = counter.get_total_flops() / 2 + extra[0]
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    pe = getattr(model, "patch_embed", None)
    tokens = getattr(pe, "num_tokens", None) or getattr(pe, "num_patches", None)
    convention, paper_macs = "full", macs
    if hasattr(model, "paper_macs_convention") and hasattr(model, "layers_macs"):
        convention = model.paper_macs_convention
        length = model.sequence_length()
        paper_macs = macs - model.layers_macs(length, "full") + model.layers_macs(length, convention)
    return {"params_m": params / 1e6, "trainable_params_m": trainable / 1e6, "gmacs": macs / 1e9,
            "gmacs_paper": paper_macs / 1e9, "macs_convention": convention,
            "input_shape": "x".join(str(s) for s in input_shape), "num_tokens": tokens,
            "img_size": input_shape[-1]}
