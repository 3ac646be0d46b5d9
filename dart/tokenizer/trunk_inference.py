"""A faster copy of a scorer's CNN trunk for when nothing needs its own gradients.

When the trunk is in eval mode (a frozen trunk always is: `TrunkScorer.train` keeps it there) and
no trunk parameter will receive a gradient (autograd off, or every trunk parameter frozen),
`TrunkScorer` runs an inference copy instead of the trunk itself:

* every Conv2d directly followed by a BatchNorm2d (torchvision's Conv2dNormActivation, MNASNet's
  plain Sequentials) becomes one Conv2d with the normalisation folded into its weight and bias,
  the BatchNorm an Identity: one pass over the activations fewer per conv;
* weights and activations in channels-last memory layout, which oneDNN's CPU convolutions
  (depthwise ones above all) run without reordering at every layer.

Same function up to fp32 rounding (tests/test_trunk_inference.py pins 1e-4). The copy is rebuilt
whenever any trunk parameter or buffer changes: the cache key holds each tensor's identity,
storage, dtype, device and in-place version counter (bumped by optimiser steps, `copy_`,
`load_state_dict`, ...), so a stale copy cannot run. Gradients still flow to the input through the
copy (it is an ordinary module), just not to the trunk's own parameters, which is why a trunk with
trainable parameters under autograd runs as is. Off for one scorer with `scorer.fold_trunk = False`,
everywhere with the environment variable DART_FOLD_TRUNK=0.
"""
from __future__ import annotations

import copy
import os

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CACHE_ATTR = "_trunk_inference_cache"


def fold_batchnorms(module: nn.Module) -> int:
    """In place: fold each eval-mode BatchNorm2d that directly follows a Conv2d in an nn.Sequential
    into that conv (the BatchNorm becomes an Identity). Returns how many were folded."""
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = seq._modules[first], seq._modules[second]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and conv.out_channels == bn.num_features):
                seq._modules[first] = fuse_conv_bn_eval(conv, bn)
                seq._modules[second] = nn.Identity()
                folded += 1
    return folded


def inference_copy(trunk: nn.Module) -> nn.Module:
    """A detached eval-mode copy of `trunk`, batch norms folded, channels-last."""
    fast = copy.deepcopy(trunk).eval()
    fast.requires_grad_(False)
    fold_batchnorms(fast)
    return fast.to(memory_format=torch.channels_last)


def _state_key(trunk: nn.Module) -> tuple:
    return tuple((id(t), t.data_ptr(), t.dtype, t.device, t._version)
                 for t in (*trunk.parameters(), *trunk.buffers()))


def usable(trunk: nn.Module) -> bool:
    """The copy computes what the trunk computes, and no gradient of the trunk's is wanted."""
    if trunk.training or os.environ.get("DART_FOLD_TRUNK", "1") == "0":
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in trunk.parameters()))


def run_trunk(owner: nn.Module, trunk: nn.Module, x: Tensor) -> Tensor:
    """`trunk(x)`, through the cached inference copy (kept on `owner`) when `usable`."""
    if not getattr(owner, "fold_trunk", True) or not usable(trunk):
        return trunk(x)
    key = _state_key(trunk)
    cache = owner.__dict__.get(_CACHE_ATTR)  # a plain attribute: not a submodule, not in state_dict
    if cache is None or cache[0] != key:
        cache = (key, inference_copy(trunk))
        owner.__dict__[_CACHE_ATTR] = cache
    return cache[1](x.contiguous(memory_format=torch.channels_last))
