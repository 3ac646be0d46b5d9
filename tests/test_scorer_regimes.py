"""Scorer trunk regimes (pretrained-frozen, random-frozen, scratch), the frozen trunk's BatchNorm
mode, the convention presets and the uniform scorer (the grid control)."""
import pytest
import timm
import torch

import dart  # noqa: F401
from dart.tokenizer import DART
from dart.tokenizer.module import CONVENTIONS
from dart.tokenizer.scorers import SmallCNNScorer, create_scorer, small_cnn_trunk


def _bn_layers(trunk):
    return [m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("regime,frozen", [("scratch", False), ("random_frozen", True)])
def test_a_trunk_trains_only_from_scratch(regime, frozen):
    scorer = SmallCNNScorer(regime=regime)
    assert all(p.requires_grad != frozen for p in scorer.trunk.parameters())
    assert all(p.requires_grad for p in scorer.head.parameters())
    scorer.train()
    assert scorer.trunk.training == (not frozen)  # a frozen trunk keeps its statistics ('eval')


def test_official_batchnorm_mode_updates_a_frozen_trunks_statistics_in_training():
    """The official trunk runs under no_grad but is never put in eval mode: batch statistics in
    training, running statistics updated (note 6 of the official state-dict notes)."""
    x = torch.rand(4, 3, 32, 32)
    for bn, moves in (("eval", False), ("train", True)):
        scorer = SmallCNNScorer(regime="random_frozen", bn=bn).train()
        before = [m.running_mean.clone() for m in _bn_layers(scorer.trunk)]
        scorer(x, 8).sum().backward()
        after = [m.running_mean for m in _bn_layers(scorer.trunk)]
        assert any(not torch.equal(a, b) for a, b in zip(before, after)) == moves
        assert all(p.grad is None for p in scorer.trunk.parameters())  # frozen either way
        assert scorer.head.fc2.weight.grad is not None
        scorer.eval()
        assert not scorer.trunk.training


def test_pretrained_cnn_trunk_loads_its_file_and_refuses_a_wrong_one(tmp_path):
    trunk = small_cnn_trunk()
    torch.nn.init.normal_(trunk[0].weight)
    path = tmp_path / "trunk.pt"
    torch.save({"trunk": trunk.state_dict(), "val_top1": 90.0}, path)
    scorer = create_scorer("cnn", trunk="pretrained_frozen", weights=str(path))
    assert torch.equal(scorer.trunk[0].weight, trunk[0].weight)
    assert not any(p.requires_grad for p in scorer.trunk.parameters())
    with pytest.raises(ValueError, match="needs scorer_weights"):
        create_scorer("cnn", trunk="pretrained_frozen")
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt do not fit the scorer trunk"):
        create_scorer("cnn", trunk="pretrained_frozen", weights=str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="scorer_weights is given but scorer_trunk is 'scratch'"):
        create_scorer("cnn", trunk="scratch", weights=str(path))
    with pytest.raises(ValueError, match="scorer_trunk must be one of"):
        create_scorer("cnn", trunk="frozen")
    with pytest.raises(ValueError, match="scorer 'uniform' has no trunk"):
        create_scorer("uniform", trunk="pretrained_frozen", weights=str(path))


def test_a_trunk_a_checkpoint_supplies_is_pretrained_frozen():
    scorer = SmallCNNScorer(regime="scratch").freeze_trunk(bn="train")
    assert (scorer.regime, scorer.frozen, scorer.bn_mode) == ("pretrained_frozen", True, "train")
    assert not any(p.requires_grad for p in scorer.trunk.parameters())


def test_conventions_set_the_tokenizer_and_explicit_settings_win():
    kw = dict(img_size=64, embed_dim=8, num_tokens=16, score_grid=8, scorer="cnn", scorer_trunk="random_frozen")
    ours, official = DART(**kw), DART(convention="official", **kw)
    assert ours.convention == "ours" and official.convention == "official"
    ref = CONVENTIONS["official"]
    assert (official.score_norm, official.score_std_floor, official.sampling, official.scorer.bn_mode) == \
        (ref["score_norm"], ref["score_std_floor"], ref["sampling"], ref["scorer_bn"])
    # the official head starts from timm's truncated normal, ours from zero (the grid)
    assert ours.scorer.head.fc2.weight.abs().max() == 0
    assert 0.01 < official.scorer.head.fc2.weight.std() < 0.03 and official.scorer.head.init_mode == "official"
    mixed = DART(convention="official", score_norm="image", **kw)
    assert mixed.score_norm == "image" and mixed.sampling == "reference" and mixed.convention == "custom"
    assert DART(**kw).use_official_convention().convention == "official"
    with pytest.raises(ValueError, match="convention must be one of"):
        DART(convention="paper", **kw)


def test_the_score_gate_follows_the_scorer_head():
    kw = dict(img_size=64, embed_dim=8, num_tokens=16, score_grid=4)
    assert DART(scorer="cnn", **kw).score_gate == "sigmoid_offset"
    assert DART(scorer="mobilenetv3_small_v2", scorer_input_size=64, **kw).score_gate == "sigmoid2"
    assert DART(scorer="mobilenetv3_small_v2", scorer_input_size=64, score_gate="sigmoid_offset",
                **kw).score_gate == "sigmoid_offset"


@pytest.mark.parametrize("convention", ["ours", "official"])
def test_the_uniform_scorer_holds_the_partition_at_the_grid(convention):
    """DART-N with its partition held at the grid: every patch an 16x16 cell of the 64-px image."""
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, score_grid=8,
                              scorer="uniform", convention=convention, patch_size=8, embed_dim=16, depth=1,
                              num_heads=2, num_classes=3)
    assert not list(model.patch_embed.scorer.parameters())
    x = torch.rand(3, 3, 64, 64)
    _, part = model.patch_embed(x, return_partition=True)
    edges = torch.arange(0, 64, 16, dtype=torch.float64)
    want = torch.stack(torch.meshgrid(edges, edges, indexing="ij"), -1).reshape(16, 2)  # (y0, x0) raster
    rect = part.rects[:, :, 0]  # one piece per patch: no patch straddles a seam
    if part.rects.shape[2] > 1:
        assert (part.rects[:, :, 1:, 2:] - part.rects[:, :, 1:, :2]).prod(-1).abs().max() < 1e-3
    torch.testing.assert_close(rect[..., 1].double(), want[:, 0].expand(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(rect[..., 0].double(), want[:, 1].expand(3, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close((rect[..., 2:] - rect[..., :2]).double(), torch.full((3, 16, 2), 16.0,
                               dtype=torch.float64), atol=1e-5, rtol=0)
    model(x).sum().backward()  # trains without a scorer


def test_pretrain_scorer_writes_a_trunk_the_cnn_scorer_loads(tmp_path, capsys):
    """dart.pretrain_scorer on a tiny toy set: a trunk file the 'cnn' scorer loads frozen, its
    metrics beside it; a set smaller than one batch is one line, exit 2."""
    import json
    from dart.data import toy
    from dart.pretrain_scorer import main
    data = toy.generate("classification", str(tmp_path / "data"), params={
        "canvas": 32, "glyph": 10, "copies": 2, "lattice": 2, "train_size": 32, "val_size": 16}, progress=False)
    out = tmp_path / "trunk" / "cnn.pt"
    assert main(["--data", data, "--out", str(out), "--epochs", "1", "--batch-size", "16", "--threads", "1"]) == 0
    meta = json.loads((tmp_path / "trunk" / "cnn.pt.json").read_text())
    assert meta["epochs"] == 1 and meta["img_size"] == 32 and 0 <= meta["val_top1"] <= 100
    scorer = create_scorer("cnn", trunk="pretrained_frozen", weights=str(out))
    assert torch.equal(scorer.trunk[0].weight, torch.load(out, weights_only=True)["trunk"]["0.weight"])
    capsys.readouterr()
    assert main(["--data", data, "--out", str(out), "--batch-size", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "32 training images, fewer than one batch of 64" in err[0]
