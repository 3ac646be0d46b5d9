"""The DART module: equivalence with a grid patch embedding, gradients, batch independence, errors."""
import time

import pytest
import timm
import torch
from timm.layers import PatchEmbed

import dart  # noqa: F401
from dart import DART
from dart.tokenizer import NonFiniteScores, geometry, sampling


def uniform(batch, grid=14):
    return torch.ones(batch, grid, grid, dtype=torch.float64)


@pytest.mark.parametrize("sampling", ["centred", "reference"])
def test_uniform_scores_give_timm_patch_embedding_tokens(sampling):
    """At the nominal size (16 px per cell, P = 16) both conventions land on pixel centres, the
    grid's tokens (with quantile_eps=0; the reference's eps moves edges by ~1e-6 cells): centred
    steps (t + 0.5) / P without align_corners and the reference's t / P as pixel indices are both
    pixel t of the cell. Edges fall a hair before band seams here, so the reference convention
    matches only because it blends the last pixel before a seam into the next band's first column
    as the reference's strip does (clamping to the old band's last column put 6 of 196 tokens 0.2
    off)."""
    tok = DART(img_size=224, embed_dim=64, num_tokens=196, scorer="cnn", sampling=sampling, quantile_eps=0.0)
    ref = PatchEmbed(img_size=224, patch_size=16, embed_dim=64)
    ref.load_state_dict({"proj.weight": tok.proj.weight, "proj.bias": tok.proj.bias})
    x = torch.rand(3, 3, 224, 224)  # pixel-like values
    with torch.no_grad():
        got, part = tok(x, scores=uniform(3), return_partition=True)
        want = ref(x)
        tok.quantile_eps = 1e-8
        got_eps = tok(x, scores=uniform(3))
    grid_rects = torch.tensor([[16 * (k % 14), 16 * (k // 14), 16 * (k % 14) + 16, 16 * (k // 14) + 16]
                               for k in range(196)], dtype=part.rects.dtype)
    assert torch.allclose(part.rects[:, :, 0], grid_rects.expand(3, -1, -1), atol=1e-6, rtol=0)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert torch.allclose(got_eps, want, atol=1e-3, rtol=0)


def test_uniform_scores_in_a_dart_deit_equal_timm_deit_tokens():
    """A DART DeiT at its nominal input size with uniform scores tokenises exactly like timm's DeiT."""
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=224, scorer="cnn", depth=1,
                              quantile_eps=0.0).eval()
    grid = timm.create_model("deit_tiny_patch16_224", depth=1).eval()
    grid.patch_embed.proj.load_state_dict(model.patch_embed.proj.state_dict())
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        tokens, part = model.patch_embed(x, scores=uniform(2), pos_embed=model.pos_embed[:, 1:],
                                         return_partition=True)
        assert torch.allclose(tokens, grid.patch_embed(x), atol=1e-5, rtol=0)
        assert torch.allclose(part.pos_embed, model.pos_embed[:, 1:].expand(2, -1, -1), atol=1e-6, rtol=0)


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
    # the official formula: torch's default (Bessel-corrected) std + 1e-8
    z = (logits - logits.mean((1, 2), keepdim=True)) / (logits.std((1, 2), keepdim=True) + 1e-8)
    assert torch.allclose(plain, torch.sigmoid(z) + 0.1, atol=1e-6)
    big = logits * 300  # spread above the floor: the floor changes nothing
    assert torch.allclose(score_activation(big), score_activation(big, std_floor=0.0), atol=1e-5)


def test_no_standardisation_lets_a_small_region_reach_the_gates_full_contrast():
    """Standardised logits cap a 4-of-64-cell peak at about 2x the rest (z near 0 off the peak);
    score_norm='none' passes the logits to the gate as they are, up to its 1.1 / 0.1 = 11x."""
    from dart.tokenizer import score_activation
    logits = torch.full((1, 8, 8), -20.0)
    logits[0, :2, :2] = 20.0
    for norm in ("image", "batch"):
        s = score_activation(logits, norm)
        assert 1.5 < float(s.max() / s.min()) < 2.5
    s = score_activation(logits, "none")
    assert torch.allclose(s, torch.sigmoid(logits) + 0.1)
    assert float(s.max() / s.min()) > 10.9
    # a tokenizer with it, zero logits (a zero-initialised head): the grid
    tok = DART(img_size=64, patch_size=8, num_tokens=16, embed_dim=8, score_grid=8, score_norm="none")
    assert torch.equal(score_activation(torch.zeros(1, 8, 8), "none"), torch.full((1, 8, 8), 0.6))
    _, part = tok(torch.rand(1, 3, 64, 64), scores=score_activation(torch.zeros(1, 8, 8), "none"),
                  return_partition=True)
    assert torch.allclose(part.patch_bounds, torch.linspace(0, 32, 17, dtype=torch.float64)[None])


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


def tiny_dart_deit(**kw):
    return timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, scorer="cnn",
                             depth=1, embed_dim=32, num_heads=2, num_classes=3, **kw)


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = tiny_dart_deit()
    torch.nn.init.normal_(model.head.weight, std=1.0)  # logits of size ~1, not ~0
    randomize_head(model.patch_embed)
    x = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert model.patch_embed.scorer.head.fc2.weight.grad is not None
    ref = model(x)
    assert ref.abs().mean() > 0.3
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.02)  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_a_model_converted_to_half_precision_agrees_with_fp32(dtype, tol):
    """`.half()` / `.bfloat16()` on CPU: torch's CPU grid_sample is wrong in half precision, so the
    tokenizer samples in fp32 and casts back."""
    torch.manual_seed(0)
    model = tiny_dart_deit().eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    randomize_head(model.patch_embed)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        half = model.to(dtype)(x.to(dtype))
    assert half.dtype == dtype and torch.isfinite(half.float()).all()
    assert (half.float() - ref).abs().max() < tol * max(1.0, ref.abs().max().item())


def test_non_square_budget_and_rectangular_rows():
    """30 tokens in 5 bands of a 6x6 grid, checked on values: uniform scores give 5 equal bands
    and 30 equal patches along the raster sequence (6 per band, each one cell wide)."""
    tok = DART(img_size=96, embed_dim=8, num_tokens=30, score_grid=6, scorer="cnn", quantile_eps=0.0)
    x = torch.rand(2, 3, 96, 96)
    tokens, part = tok(x, scores=torch.ones(2, 6, 6), return_partition=True)
    assert tokens.shape == (2, 30, 8)
    assert torch.allclose(part.row_bounds, torch.linspace(0, 6, 6, dtype=torch.float64).expand(2, -1))
    assert torch.allclose(part.patch_bounds, torch.linspace(0, 30, 31, dtype=torch.float64).expand(2, -1))
    # patch 7 = band 1 (rows 19.2-38.4 px), column 1 (16-32 px); its first token is that rectangle
    assert torch.allclose(part.rects[0, 7, 0], torch.tensor([16.0, 19.2, 32.0, 38.4], dtype=torch.float64))
    sampled = sampling.sample_patches(
        x, sampling.sampling_grid(part.row_bounds, part.patch_bounds, 6, 16))[..., 7 * 16:8 * 16]
    # 19.2 px of image rows resampled to 16: centred steps of 1.2 px starting at 19.2 + 0.6
    rows = 19.2 + (torch.arange(16) + 0.5) * 1.2 - 0.5
    lo = rows.floor().long()
    w = (rows - lo)[:, None]
    want = x[:, :, lo, 16:32] * (1 - w) + x[:, :, lo + 1, 16:32] * w
    assert torch.allclose(sampled, want, atol=1e-5)


def test_straddling_patches_sample_each_point_in_its_own_band():
    """A patch running from one band into the next takes its later columns from the next band's
    rows. Sampling every point of a straddler from its start band would fail this."""
    row_b = torch.tensor([[0.0, 1.0, 4.0]], dtype=torch.float64)  # band 0: 16 px tall, band 1: 48 px
    patch_b = torch.tensor([[0.0, 3.0, 5.0, 8.0]], dtype=torch.float64)  # grid 4: patch 1 straddles
    x = torch.zeros(1, 1, 64, 64)
    x[:, :, 16:] = 1.0  # band 1 is bright, band 0 dark
    grid = sampling.sampling_grid(row_b, patch_b, 4, 16)
    strip = sampling.sample_patches(x, grid)[0, 0]  # (16, 3 * 16)
    straddler = strip[:, 16:32]
    assert torch.all(straddler[:, :8] < 0.1)  # its first half is in band 0
    assert torch.all(straddler[:, 8:] > 0.9)  # its second half in band 1
    rects = geometry.patch_rects(row_b, patch_b, 4, 64, 64)[0, 1]
    assert torch.allclose(rects, torch.tensor([[48.0, 0, 64, 16], [0, 16, 16, 64]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_centred_sampling_is_one_grid_sample_bit_for_bit(dtype):
    """The default convention is one grid_sample at the centred points and nothing more: the
    reference convention's seam blend leaves it untouched. The formula below is the sampler's
    arithmetic as it stood before that blend existed; the outputs must be the same bits."""
    torch.manual_seed(0)
    g, P, n, B = 14, 16, 196, 2
    scores = torch.rand(B, g, g, dtype=torch.float64) + 0.1
    row_b, patch_b, _ = geometry.partition(scores, n)
    x = torch.rand(B, 3, 224, 224, dtype=dtype)
    steps = (torch.arange(P, dtype=torch.float64) + 0.5) / P
    seq = patch_b[:, :-1, None] + steps * (patch_b[:, 1:] - patch_b[:, :-1])[..., None]
    band = torch.div(seq, g, rounding_mode="floor").clamp_(0, 13)
    xs = ((seq - band * g) * (2.0 / g) - 1.0).float()
    height = (row_b[:, 1:] - row_b[:, :-1])[:, None]
    ys = ((row_b[:, None, :-1] + steps[None, :, None] * height) * (2.0 / g) - 1.0).float()
    ys = ys.gather(2, band.long().view(B, 1, -1).expand(B, P, -1))
    want_grid = torch.stack([xs.view(B, 1, -1).expand(B, P, -1), ys], -1)
    want = torch.nn.functional.grid_sample(x, want_grid.to(dtype), mode="bilinear", padding_mode="border",
                                           align_corners=False)
    grid = sampling.sampling_grid(row_b, patch_b, g, P)
    assert torch.equal(grid, want_grid)
    assert torch.equal(sampling.sample_patches(x, grid), want)
    tok = DART(img_size=224, embed_dim=8, num_tokens=n, scorer="cnn").to(dtype)
    with torch.no_grad():
        assert torch.equal(tok(x, scores=scores), tok.project(want))


def test_a_grid_of_the_other_convention_is_refused():
    row_b, patch_b, _ = geometry.partition(uniform(1, 4), 16)
    x = torch.rand(1, 3, 64, 64)
    centred = sampling.sampling_grid(row_b, patch_b, 4, 16)
    reference = sampling.sampling_grid(row_b, patch_b, 4, 16, convention="reference", img_size=(64, 64))
    with pytest.raises(ValueError, match="'reference' needs the grid that sampling_grid"):
        sampling.sample_patches(x, centred, "reference")
    with pytest.raises(ValueError, match="'centred' needs the grid that sampling_grid"):
        sampling.sample_patches(x, reference, "centred")


def test_nan_in_the_scorer_output_is_a_clear_error():
    """One NaN pixel reaches the scorer: a named error, not an out-of-range index in the geometry."""
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4, scorer="cnn").eval()
    x = torch.rand(2, 3, 64, 64)
    x[1, 0, 5, 5] = float("nan")
    with pytest.raises(NonFiniteScores, match=r"scorer's scores contain NaN or inf \(images \[1\]"):
        tok(x)
    assert issubclass(NonFiniteScores, FloatingPointError)


def test_official_convention_switch():
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4, scorer="cnn", quantile_eps=0.0)
    assert (tok.score_norm, tok.score_std_floor, tok.sampling) == ("image", 1.0, "centred")
    assert tok.use_official_convention() is tok
    assert (tok.score_norm, tok.score_std_floor, tok.sampling, tok.quantile_eps) == ("batch", 0.0, "reference", 1e-8)


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
    with pytest.raises(ValueError, match="sampling"):
        DART(img_size=64, num_tokens=16, embed_dim=8, sampling="nearest")
    with pytest.raises(ValueError, match="quantile_eps"):
        DART(img_size=64, num_tokens=16, embed_dim=8, quantile_eps=-1.0)


def test_missing_pretrained_scorer_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(FileNotFoundError, match="not in the local cache.*mobilenet_v3_small"):
        timm.create_model("dart_deit_tiny_patch16_224", scorer_trunk="pretrained_frozen")
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
    scorer = TrunkScorer("mobilenetv3_small", regime="pretrained_frozen")
    assert torch.equal(scorer.trunk[0][0].weight, ref.features[0][0].weight)
    assert not any(p.requires_grad for p in scorer.trunk.parameters())
    assert all(p.requires_grad for p in scorer.head.parameters())
    scorer.train()
    assert not scorer.trunk.training  # frozen BatchNorm statistics stay fixed
    assert TRUNKS["mobilenetv3_small"].channels == scorer.head.fc1.in_channels
