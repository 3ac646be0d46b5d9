"""The DART module: equivalence with a grid patch embedding, gradients, batch independence, errors."""
import time

import pytest
import timm
import torch
from timm.layers import PatchEmbed

import dart  # noqa: F401
from dart import DART


def uniform(batch, grid=14):
    return torch.ones(batch, grid, grid, dtype=torch.float64)


def test_uniform_scores_give_timm_patch_embedding_tokens():
    tok = DART(img_size=224, embed_dim=64, num_tokens=196, scorer="cnn")
    ref = PatchEmbed(img_size=224, patch_size=16, embed_dim=64)
    ref.load_state_dict({"proj.weight": tok.proj.weight, "proj.bias": tok.proj.bias})
    x = torch.rand(3, 3, 224, 224)  # pixel-like values
    with torch.no_grad():
        got, part = tok(x, scores=uniform(3), return_partition=True)
        want = ref(x)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    grid_rects = torch.tensor([[16 * (k % 14), 16 * (k // 14), 16 * (k % 14) + 16, 16 * (k // 14) + 16]
                               for k in range(196)], dtype=part.rects.dtype)
    assert torch.allclose(part.rects[:, :, 0], grid_rects.expand(3, -1, -1), atol=1e-6)


def test_uniform_scores_in_a_dart_deit_equal_timm_deit_tokens():
    """A DART DeiT at its nominal input size with uniform scores tokenises exactly like timm's DeiT."""
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=224, scorer="cnn", depth=1).eval()
    grid = timm.create_model("deit_tiny_patch16_224", depth=1).eval()
    grid.patch_embed.proj.load_state_dict(model.patch_embed.proj.state_dict())
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        tokens, part = model.patch_embed(x, scores=uniform(2), pos_embed=model.pos_embed[:, 1:],
                                         return_partition=True)
        assert torch.allclose(tokens, grid.patch_embed(x), atol=1e-5)
        assert torch.allclose(part.pos_embed, model.pos_embed[:, 1:].expand(2, -1, -1), atol=1e-6)


def test_gradients_reach_the_scorer():
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, scorer="cnn",
                              depth=1, embed_dim=32, num_heads=2, num_classes=4)
    x = torch.rand(2, 3, 64, 64)
    y = torch.tensor([0, 3])
    # the head's output layer starts at zero, so the first step moves only it; the second reaches all
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert model.patch_embed.scorer.head.fc2.weight.grad.abs().sum() > 0
    opt.step()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    scorer = model.patch_embed.scorer
    for name, p in scorer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradients_reach_the_scores_through_the_geometry():
    tok = DART(img_size=64, embed_dim=8, num_tokens=16, score_grid=4)
    scores = (torch.rand(1, 4, 4, dtype=torch.float64) + 0.5).requires_grad_()
    x = torch.rand(1, 3, 64, 64)
    x[..., 10:20, 30:50] += 3  # structure so that moving boundaries changes the tokens
    tokens = tok(x, scores=scores)
    tokens.square().sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_a_new_model_starts_from_the_standard_grid():
    tok = DART(img_size=64, embed_dim=16, num_tokens=16, score_grid=8, scorer="cnn")
    _, part = tok(torch.rand(3, 3, 64, 64), return_partition=True)
    assert torch.allclose(part.patch_bounds, torch.linspace(0, 32, 17, dtype=torch.float64).expand(3, -1))


def test_std_floor_keeps_small_spreads_and_zero_gives_plain_standardisation():
    from dart.tokenizer import score_activation
    logits = torch.randn(2, 5, 5) * 0.01
    floored = score_activation(logits)  # spread 0.01 < 1: scores stay close to uniform
    assert (floored.amax((1, 2)) - floored.amin((1, 2))).max() < 0.02
    plain = score_activation(logits, std_floor=0.0)
    z = (logits - logits.mean((1, 2), keepdim=True)) / (logits.std((1, 2), keepdim=True, unbiased=False) + 1e-6)
    assert torch.allclose(plain, torch.sigmoid(z) + 0.1, atol=1e-6)
    big = logits * 300  # spread above the floor: the floor changes nothing
    assert torch.allclose(score_activation(big), score_activation(big, std_floor=0.0), atol=1e-5)


def randomize_head(tok):
    torch.nn.init.normal_(tok.scorer.head.fc2.weight, std=1.0)


def test_per_image_standardisation_is_batch_independent():
    tok = DART(img_size=64, embed_dim=16, num_tokens=16, score_grid=8, scorer="cnn").eval()
    randomize_head(tok)
    a, b, c = torch.rand(3, 1, 3, 64, 64).unbind(0)
    c = c * 5  # a very different batch-mate
    with torch.no_grad():
        t_ab, p_ab = tok(torch.cat([a, b]), return_partition=True)
        t_ac, p_ac = tok(torch.cat([a, c]), return_partition=True)
    assert torch.allclose(t_ab[0], t_ac[0], atol=1e-6)
    assert torch.allclose(p_ab.patch_bounds[0], p_ac.patch_bounds[0])
    tok.score_norm = "batch"  # the official behaviour: batch-mates move an image's boundaries
    with torch.no_grad():
        _, q_ab = tok(torch.cat([a, b]), return_partition=True)
        _, q_ac = tok(torch.cat([a, c]), return_partition=True)
    assert (q_ab.patch_bounds[0] - q_ac.patch_bounds[0]).abs().max() > 1e-4


def test_bf16_autocast_forward_and_backward():
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, scorer="cnn",
                              depth=1, embed_dim=32, num_heads=2, num_classes=3)
    x = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert model.patch_embed.scorer.head.fc2.weight.grad is not None
    ref = model(x)
    assert torch.allclose(out.float(), ref, atol=0.1, rtol=0.1)


def test_non_square_budget_and_rectangular_rows():
    tok = DART(img_size=96, embed_dim=8, num_tokens=30, score_grid=6, scorer="cnn")
    tokens, part = tok(torch.rand(2, 3, 96, 96), return_partition=True)
    assert tokens.shape == (2, 30, 8)
    assert part.row_bounds.shape == (2, 6) and part.patch_bounds.shape == (2, 31)


@pytest.mark.parametrize("kwargs,shape,match", [
    (dict(img_size=64, num_tokens=16), (2, 3, 32, 32), "input size"),
    (dict(img_size=64, num_tokens=16), (2, 1, 64, 64), "channels"),
    (dict(img_size=64, num_tokens=16), (3, 64, 64), r"\(B, C, H, W\)"),
])
def test_bad_images_raise(kwargs, shape, match):
    tok = DART(embed_dim=8, scorer="cnn", **kwargs)
    with pytest.raises(ValueError, match=match):
        tok(torch.rand(*shape))


def test_budget_the_image_cannot_hold():
    with pytest.raises(ValueError, match="cannot hold 17 tokens"):
        DART(img_size=64, num_tokens=17, embed_dim=8)
    with pytest.raises(ValueError, match="num_tokens"):
        DART(img_size=64, num_tokens=0, embed_dim=8)
    with pytest.raises(ValueError, match="cannot hold"):
        timm.create_model("dart_deit_small_patch16_224_392", img_size=224)


@pytest.mark.parametrize("bad,match", [
    (lambda s: s.index_fill_(1, torch.tensor([0]), float("nan")), "NaN or inf"),
    (lambda s: s.index_fill_(1, torch.tensor([0]), float("inf")), "NaN or inf"),
    (lambda s: s.index_fill_(1, torch.tensor([1]), -0.5), "non-negative"),
    (lambda s: s.zero_(), "sum to zero"),
    (lambda s: s[:, :3], "shape"),
])
def test_bad_scores_raise(bad, match):
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4)
    with pytest.raises(ValueError, match=match):
        tok(torch.rand(2, 3, 64, 64), scores=bad(torch.rand(2, 4, 4) + 0.1))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="unknown scorer"):
        DART(img_size=64, num_tokens=16, embed_dim=8, scorer="resnet9000")
    with pytest.raises(ValueError, match="score_norm"):
        DART(img_size=64, num_tokens=16, embed_dim=8, score_norm="layer")


def test_missing_pretrained_scorer_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="not in the local cache.*mobilenet_v3_small"):
        timm.create_model("dart_deit_tiny_patch16_224", scorer_pretrained=True)
    assert time.monotonic() - start < 20


def test_pretrained_scorer_loads_from_the_cache_and_freezes_its_trunk(tmp_path, monkeypatch):
    """Put a checkpoint where torch hub keeps it and check it is loaded (weights_only) and frozen."""
    import os
    import torchvision
    from dart.tokenizer.scorers import TRUNKS, TrunkScorer
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = torchvision.models.mobilenet_v3_small()
    url = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    os.makedirs(tmp_path / "hub" / "checkpoints")
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / os.path.basename(url))
    scorer = TrunkScorer("mobilenetv3_small", pretrained=True)
    assert torch.equal(scorer.trunk[0][0].weight, ref.features[0][0].weight)
    assert not any(p.requires_grad for p in scorer.trunk.parameters())
    assert all(p.requires_grad for p in scorer.head.parameters())
    scorer.train()
    assert not scorer.trunk.training  # frozen BatchNorm statistics stay fixed
    assert TRUNKS["mobilenetv3_small"].channels == scorer.head.fc1.in_channels
