"""The scorer trunk's inference copy (BN folded, channels-last): same numbers, used only when no
trunk gradient is wanted, rebuilt whenever the trunk's weights change."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from dart.tokenizer import trunk_inference
from dart.tokenizer.scorers import TRUNKS, TrunkScorer

TOL = dict(atol=1e-4, rtol=1e-4)

pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_batchnorms(module: nn.Module, seed: int = 0) -> None:
    """Statistics and affine parameters far from the identity, so folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def frozen_scorer(name: str) -> TrunkScorer:
    s = TrunkScorer(name, regime="random_frozen")
    randomise_batchnorms(s.trunk)
    nn.init.normal_(s.head.fc2.weight, std=0.1)  # a non-constant score map
    return s.eval()


def reference(scorer: TrunkScorer, x: torch.Tensor, grid: int = 14) -> torch.Tensor:
    """The scorer as it computed before: the trunk module itself."""
    return scorer.head(scorer.trunk(x), grid)


@pytest.mark.parametrize("name", sorted(TRUNKS))
def test_every_trunk_same_scores(name):
    s = frozen_scorer(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(s(x, 14), reference(s, x), **TOL)
    cache = s.__dict__[trunk_inference._CACHE_ATTR][1]
    # every BatchNorm that follows a conv is gone from the copy (SqueezeNet has none)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in cache.modules())
    assert cache is not s.trunk


def test_fold_counts_and_keeps_the_function():
    s = frozen_scorer("mobilenetv3_small")
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in s.trunk.modules())
    fast = copy.deepcopy(s.trunk).eval()
    assert trunk_inference.fold_batchnorms(fast) == n_bn > 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), s.trunk(x), **TOL)


def test_copy_not_in_state_dict_and_rebuilt_after_load_state_dict():
    s = frozen_scorer("mobilenetv3_small")
    keys = set(s.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s(x, 14)
    assert set(s.state_dict()) == keys and trunk_inference._CACHE_ATTR not in dict(s.named_modules())
    other = frozen_scorer("mobilenetv3_small")
    randomise_batchnorms(other.trunk, seed=1)
    with torch.no_grad():
        for p in other.trunk.parameters():
            p.mul_(1.5)
    s.load_state_dict(other.state_dict())
    with torch.no_grad():
        y = s(x, 14)
        torch.testing.assert_close(y, reference(other, x), **TOL)
        assert not torch.allclose(y, reference(frozen_scorer("mobilenetv3_small"), x), **TOL)


def test_rebuilt_after_in_place_update_and_parameter_swap():
    s = frozen_scorer("mobilenetv3_small")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        s(x, 14)
        conv = s.trunk[0][0]
        conv.weight.add_(0.3)  # an in-place step (what an optimiser does)
        torch.testing.assert_close(s(x, 14), reference(s, x), **TOL)
        conv.weight = nn.Parameter(torch.randn_like(conv.weight), requires_grad=False)  # a new tensor
        torch.testing.assert_close(s(x, 14), reference(s, x), **TOL)
        s.trunk[1].block[0][1].running_var.mul_(3.0)  # a buffer
        torch.testing.assert_close(s(x, 14), reference(s, x), **TOL)


def test_trainable_trunk_trains_through_itself():
    """A trunk that is learning (train mode, or parameters wanting gradients) runs as is."""
    s = TrunkScorer("mobilenetv3_small", regime="scratch")
    randomise_batchnorms(s.trunk)
    nn.init.normal_(s.head.fc2.weight, std=0.1)
    x = torch.randn(2, 3, 64, 64)
    s.train()
    s(x, 14).sum().backward()
    assert s.trunk[0][0].weight.grad is not None
    assert trunk_inference._CACHE_ATTR not in s.__dict__
    s.eval()  # eval but trainable: under autograd the trunk itself, so its parameters get gradients
    s.zero_grad()
    s(x, 14).sum().backward()
    assert s.trunk[0][0].weight.grad is not None and trunk_inference._CACHE_ATTR not in s.__dict__
    with torch.no_grad():  # no gradient wanted: the copy
        torch.testing.assert_close(s(x, 14), reference(s, x), **TOL)
    assert trunk_inference._CACHE_ATTR in s.__dict__


def test_frozen_trunk_in_training_gives_head_and_input_gradients():
    """DART training with a frozen trunk: the copy runs, the head and the image still get gradients."""
    s = frozen_scorer("mobilenetv3_small").train()
    assert not s.trunk.training
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    y = s(x, 14)
    assert trunk_inference._CACHE_ATTR in s.__dict__
    gx, gw = torch.autograd.grad(y.square().sum(), (x, s.head.fc1.weight))
    x2 = x.detach().clone().requires_grad_()
    gx2, gw2 = torch.autograd.grad(reference(s, x2).square().sum(), (x2, s.head.fc1.weight))
    torch.testing.assert_close(gx, gx2, **TOL)
    torch.testing.assert_close(gw, gw2, **TOL)


def test_switches_off(monkeypatch):
    s = frozen_scorer("mobilenetv3_small")
    x = torch.randn(1, 3, 64, 64)
    s.fold_trunk = False
    with torch.no_grad():
        s(x, 14)
    assert trunk_inference._CACHE_ATTR not in s.__dict__
    s.fold_trunk = True
    monkeypatch.setenv("DART_FOLD_TRUNK", "0")
    with torch.no_grad():
        s(x, 14)
    assert trunk_inference._CACHE_ATTR not in s.__dict__
