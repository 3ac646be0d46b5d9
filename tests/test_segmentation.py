"""Segmentation: irregular DART tokens back onto a dense map through their rectangles, differentiably;
grid and DART backbones (DeiT, Vim) with the decoder; a tiny training run reports mIoU."""
import pytest
import timm
import torch

import dart  # noqa: F401
from dart.models.segmentation import create_segmenter, grid_rects, tokens_to_dense

DEIT = dict(embed_dim=32, depth=2, num_heads=2, img_size=64)


def test_grid_rects_give_nearest_upsampling():
    f = torch.randn(2, 16, 5)
    dense = tokens_to_dense(f, grid_rects(2, 4, 4, 64, 64), (16, 16), (64, 64))
    ref = f.view(2, 4, 4, 5).permute(0, 3, 1, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert torch.allclose(dense, ref, atol=1e-6)


def test_dart_rects_tile_the_image_and_map_differentiably():
    torch.manual_seed(0)
    model = timm.create_model("dart_deit_tiny_patch16_224", num_tokens=16, scorer="cnn", num_classes=0, **DEIT)
    x = torch.randn(2, 3, 64, 64)
    tokens, part = model.tokenize(x)
    rects = part.rects
    area = ((rects[..., 2] - rects[..., 0]).clamp_min(0) * (rects[..., 3] - rects[..., 1]).clamp_min(0)).sum((1, 2))
    assert torch.allclose(area, torch.full_like(area, 64 * 64), rtol=1e-4)
    # constant features stay constant: every cell is fully covered
    ones = torch.ones(2, 16, 3)
    assert torch.allclose(tokens_to_dense(ones, rects, (16, 16), (64, 64)), torch.ones(2, 3, 16, 16), atol=1e-5)
    # gradients reach both the features and the rectangles
    feats = torch.randn(2, 16, 3, requires_grad=True)
    r = rects.detach().clone().requires_grad_(True)
    out = tokens_to_dense(feats, r, (16, 16), (64, 64))
    (out * torch.randn_like(out)).sum().backward()
    assert feats.grad.abs().sum() > 0 and r.grad.abs().sum() > 0


@pytest.mark.parametrize("name,kw", [
    ("deit_tiny_patch16_224", dict(DEIT, patch_size=16)),
    ("dart_deit_tiny_patch16_224", dict(DEIT, num_tokens=16, scorer="cnn")),
    ("vim_tiny_patch16_224", dict(img_size=64, embed_dim=32, depth=2)),
    ("dart_vim_tiny_patch16_224", dict(img_size=64, embed_dim=32, depth=2, num_tokens=16, scorer="cnn")),
])
def test_segmenters_forward_backward(name, kw):
    if "vim" in name:
        pytest.importorskip("dart.models.vim")
    torch.manual_seed(0)
    seg = create_segmenter(name, num_classes=5, **kw)
    x = torch.randn(2, 3, 64, 64)
    y = seg(x)
    assert y.shape == (2, 5, 64, 64)
    torch.nn.functional.cross_entropy(y, torch.randint(0, 5, (2, 64, 64))).backward()
    if name.startswith("dart_"):
        # the scorer learns from the mask loss (its zero-initialised output layer moves first)
        g = [p.grad for n, p in seg.named_parameters() if "scorer.head.fc2.weight" in n]
        assert g and all(v is not None and v.abs().sum() > 0 for v in g)
    lin = create_segmenter(name, num_classes=3, decoder="linear", **kw)
    assert lin(x).shape == (2, 3, 64, 64) and len(lin.backbone.layers) == 1


def test_segmentation_training_run_reports_miou(tmp_path):
    from dart.engine.config import load_config
    from dart.engine.loop import Trainer
    threads = torch.get_num_threads()
    cfg = load_config("toy_seg_dart", [
        f"data.root={tmp_path / 'toy'}", "data.toy.train_size=32", "data.toy.val_size=16",
        "model.kwargs={num_tokens: 16, scorer: cnn, embed_dim: 32, depth: 2, num_heads: 2}",
        "model.decoder.channels=16", "train.epochs=1", "train.batch_size=8", "eval.batch_size=16",
        "train.threads=1", f"output_dir={tmp_path / 'run'}"])
    try:
        m = Trainer(cfg).run()
    finally:
        torch.set_num_threads(threads)
    assert m["task"] == "segmentation" and 0 <= m["miou"] <= 100 and len(m["iou_per_class"]) == 5
    assert "top1" not in m and m["num_tokens"] == 16 and (m["gmacs"] is None or m["gmacs"] > 0)


def test_a_patch_in_three_pieces_is_splatted_on_each_of_them():
    """With average re-binning a patch can run across several bands: every piece carries its feature."""
    from dart.tokenizer import geometry
    row_b = torch.tensor([[0.0, 1.0, 3.0, 4.0]], dtype=torch.float64)
    patch_b = torch.tensor([[0.0, 3.5, 9.0, 12.0]], dtype=torch.float64)  # patch 1 spans all 3 bands
    rects = geometry.patch_rects(row_b, patch_b, 4, 40, 40)
    feats = torch.tensor([[[1.0], [2.0], [3.0]]])
    dense = tokens_to_dense(feats, rects, (4, 4), (40, 40))[0, 0]  # 10-px cells
    assert dense[1:3].eq(2.0).all()  # band 1 (y 10-30) belongs to patch 1 alone
    assert dense[0, :3].eq(1.0).all() and dense[0, 3] == 0.5 * 1.0 + 0.5 * 2.0  # x 30-35 vs 35-40
    assert dense[3, 0] == 2.0 and dense[3, 1:].eq(3.0).all()


def test_miou_is_the_hand_computed_value():
    """A value check of what the training run reports: mIoU over the classes present, ignore index
    skipped. Classes 0..2; pixel pairs (target, prediction): class 0: 2 hits, 1 miss to class 1;
    class 1: 1 hit; class 2: absent in target and prediction; one ignored pixel predicted as 2."""
    from dart.engine.distributed import DistInfo
    from dart.engine.metrics import MeanIoU
    target = torch.tensor([[0, 0, 0, 1, 255]])
    pred = torch.tensor([[0, 0, 1, 1, 2]])
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 2, 1).float().unsqueeze(-1)  # (1, 3, 5, 1)
    acc = MeanIoU(3, "cpu", ignore_index=255)
    acc.update(logits, target.unsqueeze(-1), loss=1.0)
    res = acc.compute(DistInfo())
    # IoU(0) = 2 / (3 + 2 - 2) = 2/3 ; IoU(1) = 1 / (1 + 2 - 1) = 1/2 ; class 2 absent -> not averaged
    assert res["miou"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert res["pixel_acc"] == pytest.approx(100 * 3 / 4)
    assert res["iou_per_class"] == pytest.approx([66.667, 50.0, 0.0], abs=1e-3)


def test_a_downsampled_input_is_scored_on_the_full_resolution_masks(tmp_path):
    """The paper's regime: the grid segmenter sees the 32-px copy of the 64-px canvas. It trains on
    32-px masks, but is scored on the canvas's own 64-px masks, its logits upsampled: the DART run on
    the full canvas is scored on the same labels."""
    import torch.nn.functional as F
    from dart.data import build_datasets
    from dart.data.base import SkipLog
    from dart.engine.config import load_config
    from dart.engine.distributed import DistInfo
    from dart.engine.loop import evaluate, make_loader
    cfg = load_config("toy_seg_grid", [f"data.root={tmp_path / 'toy'}", "data.toy.train_size=4",
                                       "data.toy.val_size=6"])
    train, val, _ = build_datasets(cfg, progress=False)
    assert cfg["data"]["img_size"] == 32 and train[0][1].shape == (32, 32)
    assert val[0][0].shape == (3, 32, 32) and val[0][1].shape == (64, 64)
    masks = torch.stack([val[i][1] for i in range(len(val))])

    class Oracle(torch.nn.Module):  # one-hot of the true 64-px masks, seen through a 32-px output
        def __init__(self, coarse: bool):
            super().__init__()
            self.coarse, self.i = coarse, 0

        def forward(self, x):
            m = masks[self.i:self.i + len(x)]
            self.i += len(x)
            logits = F.one_hot(m, 5).permute(0, 3, 1, 2).float()
            return F.avg_pool2d(logits, 2) if self.coarse else logits

    loader = make_loader(val, 3, None, 0, False, torch.device("cpu"))
    exact = evaluate(Oracle(coarse=False), loader, cfg, DistInfo(), SkipLog())
    coarse = evaluate(Oracle(coarse=True), loader, cfg, DistInfo(), SkipLog())
    assert exact["miou"] == pytest.approx(100.0)
    assert 50.0 < coarse["miou"] < 100.0  # scored at 64 px: what the 32-px output blurs counts
