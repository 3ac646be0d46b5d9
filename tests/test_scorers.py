"""The scorer heads: v1 (per-location MLP, DeiT) and v2 (channel gate, Vim / VideoMamba)."""
import pytest
import torch
import torch.nn.functional as F

from dart.tokenizer import DART
from dart.tokenizer.scorers import HEADS, TRUNKS, ChannelGateHead, TrunkScorer


@pytest.mark.parametrize("name,channels,trunk_params,head_params", [
    # channels and parameter counts of the official MobileNet(Small|Large)Pred (reference state dicts)
    ("mobilenetv3_small_v2", 576, 927008, 111264),
    ("mobilenetv3_large_v2", 960, 2971952, 185376),
    ("mobilenetv3_small", 96, 576464, 9409),
    ("mobilenetv3_large", 160, 2019072, 25921),
])
def test_official_cuts_and_head_sizes(name, channels, trunk_params, head_params):
    scorer = TrunkScorer(name)
    assert sum(p.numel() for p in scorer.trunk.parameters()) == trunk_params
    assert sum(p.numel() for p in scorer.head.parameters()) == head_params
    with torch.no_grad():
        assert scorer.trunk(torch.rand(1, 3, 224, 224)).shape == (1, channels, 7, 7)  # stride 32
        assert scorer(torch.rand(2, 3, 224, 224), 14).shape == (2, 14, 14)
    assert isinstance(scorer.head, HEADS[TRUNKS[name].head]) and scorer.head_version == TRUNKS[name].head


def test_gate_head_scores_a_location_by_its_gated_channel_sum():
    head = ChannelGateHead(6, 4)
    torch.nn.init.zeros_(head.fc2.weight)  # gates = sigmoid(fc2.bias), whatever the image
    with torch.no_grad():
        head.fc2.bias.copy_(torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 9.0]))
    feats = torch.randn(2, 6, 5, 5)
    expected = (torch.sigmoid(head.fc2.bias).view(1, 6, 1, 1) * feats).sum(1)
    torch.testing.assert_close(head(feats, 5), expected)  # grid = trunk side: no resize
    # then a bilinear resize (align_corners=False) to the score grid
    torch.testing.assert_close(head(feats, 14), F.interpolate(expected[:, None], size=(14, 14), mode="bilinear",
                                                              align_corners=False)[:, 0])


def test_gates_come_from_the_mean_feature_of_the_image():
    head = ChannelGateHead(8, 4)
    torch.nn.init.normal_(head.fc1.weight)
    torch.nn.init.normal_(head.fc2.weight)
    feats = torch.randn(3, 8, 6, 6)
    gates = head.gates(feats)
    torch.testing.assert_close(gates, head.gates(feats.mean((2, 3), keepdim=True)))
    assert not torch.allclose(gates[0], gates[1])  # per image
    # moving features around moves the logits the same way: the gate ignores where a feature is
    perm = torch.randperm(36)
    moved = feats.flatten(2)[..., perm].view_as(feats)
    torch.testing.assert_close(head(moved, 6).flatten(1), head(feats, 6).flatten(1)[:, perm])
    # not a per-location function: changing one location changes the gates, hence every logit
    bumped = feats.clone()
    bumped[0, :, 0, 0] *= 10
    assert not torch.allclose(head(bumped, 6)[0, 3, 3], head(feats, 6)[0, 3, 3])


def test_gate_head_starts_as_the_official_init():
    """truncated normal (std 0.02) weights, zero biases: every gate starts near 1/2."""
    torch.manual_seed(0)
    head = ChannelGateHead(576, 96)
    for fc in (head.fc1, head.fc2):
        assert fc.bias.abs().max() == 0
        assert fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    gates = head.gates(torch.randn(4, 576, 7, 7).relu())
    assert (gates - 0.5).abs().max() < 0.05


def test_v2_scorer_trains_through_the_tokenizer():
    tok = DART(img_size=64, embed_dim=8, num_tokens=16, score_grid=4, scorer="mobilenetv3_small_v2",
               score_gate="sigmoid2", scorer_input_size=64)
    x = torch.rand(2, 3, 64, 64)
    x[..., 8:24, 30:60] += 2
    tokens = tok(x)
    (tokens * torch.randn_like(tokens)).sum().backward()
    head = tok.scorer.head
    assert head.fc1.weight.grad.abs().sum() > 0 and head.fc2.weight.grad.abs().sum() > 0


def test_freeze_trunk():
    scorer = TrunkScorer("mobilenetv3_small_v2")
    assert all(p.requires_grad for p in scorer.trunk.parameters())  # not pretrained: trains
    scorer.freeze_trunk().train()
    assert not any(p.requires_grad for p in scorer.trunk.parameters())
    assert all(p.requires_grad for p in scorer.head.parameters())
    assert not scorer.trunk.training and scorer.head.training


def test_official_convention_scores_as_the_official_v2_scorer():
    """DART's scores with the official convention = the official v2 scorer's formula written out:
    gated channel sum, bilinear resize, standardisation over the whole batch (std with Bessel's
    correction, + 1e-8), sigmoid(2z)."""
    tok = DART(img_size=448, embed_dim=8, num_tokens=196, scorer="mobilenetv3_small_v2",
               score_gate="sigmoid2").use_official_convention().eval()
    head = tok.scorer.head
    torch.nn.init.normal_(head.fc2.weight, std=0.5)
    x = torch.rand(3, 3, 448, 448)
    with torch.no_grad():
        feats = tok.scorer.trunk(F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False))
        mean = feats.flatten(2).mean(-1)
        gates = torch.sigmoid(head.fc2(F.gelu(head.fc1(mean))))
        s = (feats * gates[:, :, None, None]).sum(1, keepdim=True)
        s = F.interpolate(s, size=(14, 14), mode="bilinear", align_corners=False)[:, 0]
        s = (s - s.mean()) / (s.std() + 1e-8)
        torch.testing.assert_close(tok.score(x), torch.sigmoid(2 * s), rtol=1e-5, atol=1e-6)


def test_standardising_one_value_gives_a_finite_score():
    from dart.tokenizer import score_activation
    for floor in (0.0, 1.0):
        assert torch.isfinite(score_activation(torch.randn(1, 1, 1), std_floor=floor)).all()
