"""Every registered DART DeiT name builds, runs forward and backward, and honours its kwargs."""
import pytest
import timm
import torch

import dart  # noqa: F401
from dart.models import deit as dart_deit

DEIT_NAMES = sorted(n for n in dart_deit.default_cfgs if n.startswith("dart_"))


def test_interface_names_are_registered():
    expected = {"dart_deit_tiny_patch16_224", "dart_deit_small_patch16_224", "dart_deit_tiny_patch16_224_121",
                "dart_deit_small_patch16_224_144", "dart_deit_small_patch16_224_288",
                "dart_deit_small_patch16_224_392", "deit_small_patch16_384"}
    assert expected <= set(timm.list_models())


@pytest.mark.parametrize("name", DEIT_NAMES)
def test_small_build_forward_backward(name):
    model = timm.create_model(name, img_size=64, num_tokens=12, scorer="cnn", depth=1, embed_dim=32,
                              num_heads=2, num_classes=5)
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None
    assert model.pretrained_cfg["input_size"] == (3, 64, 64)


@pytest.mark.parametrize("name,tokens", [("dart_deit_tiny_patch16_224", 196), ("dart_deit_tiny_patch16_224_121", 121),
                                         ("dart_deit_small_patch16_224_288", 288)])
def test_paper_defaults(name, tokens):
    model = timm.create_model(name)
    assert model.patch_embed.num_tokens == tokens
    assert model.patch_embed.img_size == (448, 448)  # the paper feeds a 2x image
    assert model.patch_embed.scorer_input_size == 224
    assert model.pos_embed.shape[1] == 1 + 14 * 14
    assert model.pretrained_cfg["input_size"] == (3, 448, 448)


def test_full_size_forward_gives_the_paper_token_count():
    model = timm.create_model("dart_deit_tiny_patch16_224", depth=1).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.rand(1, 3, 448, 448))
    assert feats.shape == (1, 197, 192)


def test_pretrained_weights_come_from_the_official_checkpoint(tmp_path):
    """pretrained=True loads the official checkpoint (tests/test_pretrained_tags.py); offline and not
    cached, it says which file of which tag is missing."""
    with pytest.raises(FileNotFoundError, match=r"dart_deit_tiny_patch16_224\.official_in1k: darvit-tiny\.pth"):
        timm.create_model("dart_deit_tiny_patch16_224", pretrained=True, cache_dir=str(tmp_path))


def test_scorer_module_can_be_passed():
    from dart.tokenizer import SmallCNNScorer
    scorer = SmallCNNScorer(width=8, hidden=8)
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, scorer=scorer, depth=1)
    assert model.patch_embed.scorer is scorer


def test_state_dict_round_trip():
    kw = dict(img_size=64, num_tokens=16, scorer="cnn", depth=1, embed_dim=32, num_heads=2, num_classes=3)
    a, b = timm.create_model("dart_deit_tiny_patch16_224", **kw), timm.create_model("dart_deit_tiny_patch16_224", **kw)
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 64, 64)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))


def test_forward_intermediates_gives_tokens():
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, scorer="cnn", depth=3,
                              embed_dim=32, num_heads=2).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=2)
        assert [t.shape for t in inter] == [(2, 16, 32), (2, 16, 32)]
        assert torch.allclose(final, model.forward_features(x))
    with pytest.raises(ValueError, match="not on a grid"):
        model.forward_intermediates(x, output_fmt="NCHW")


def test_dart_at_initialisation_is_the_grid_model():
    """A value check: DART's score head starts at zero, so the scores are uniform, the partition is the
    regular 16-px grid and the logits are those of timm's grid DeiT with the same weights (its position
    table holding DART's interpolated positions)."""
    torch.manual_seed(0)
    kw = dict(img_size=64, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    dart_model = timm.create_model("dart_deit_tiny_patch16_224", num_tokens=16, scorer="cnn", **kw).eval()
    grid = timm.create_model("deit_tiny_patch16_224", **kw).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, part = dart_model.tokenize(x)
    y0, x0 = torch.meshgrid(torch.arange(4.0) * 16, torch.arange(4.0) * 16, indexing="ij")
    boxes = torch.stack([x0, y0, x0 + 16, y0 + 16], -1).reshape(16, 4)  # row-major 16-px patches
    assert torch.allclose(part.rects[:, :, 0].float(), boxes.expand(2, 16, 4), atol=1e-6)
    state = dart_model.state_dict()
    weights = {k: state[k] for k in grid.state_dict() if k != "pos_embed"}
    weights["pos_embed"] = torch.cat([state["pos_embed"][:, :1], part.pos_embed[:1].float()], 1)
    grid.load_state_dict(weights)
    with torch.no_grad():
        assert torch.allclose(dart_model(x), grid(x), atol=1e-5, rtol=0)
