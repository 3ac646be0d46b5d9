"""The resolution-sensitive toy set (`detail`): deterministic, its class visible at full resolution
and averaged away by the 2x downsampling of the data loader (the grid baseline's input) when its
cells are 1 px (the generator's default), kept at reduced contrast when they are coarse (the
claim's calibrated set: 4-px cells)."""
import numpy as np
import pytest
import torch

from dart.data import build_datasets, toy
from dart.data.transforms import resize_image
from dart.engine.config import load_config

TINY = {"train_size": 150, "val_size": 150}


def _down(x: np.ndarray) -> np.ndarray:
    """The data loader's 2x downsampling (antialiased bilinear), on uint8 HxWx3 images."""
    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    return resize_image(t, x.shape[1] // 2).permute(0, 2, 3, 1).numpy()


def _alternation(x: np.ndarray) -> np.ndarray:
    """Share of pixels with a strong 1-px alternation down the rows / along the columns: (n, 2)."""
    t = torch.from_numpy(np.asarray(x, dtype=np.float32) / 255).permute(0, 3, 1, 2)
    dy = (t[:, :, 2:] - 2 * t[:, :, 1:-1] + t[:, :, :-2]).abs().mean(1)
    dx = (t[..., 2:] - 2 * t[..., 1:-1] + t[..., :-2]).abs().mean(1)
    return torch.stack([(dy > 0.5).float().mean((1, 2)), (dx > 0.5).float().mean((1, 2))], 1).numpy()


def _nearest_centroid_accuracy(ftr, ytr, fva, yva) -> float:
    cents = np.stack([ftr[ytr == c].mean(0) for c in range(3)])
    pred = np.argmin(((fva[:, None] - cents[None]) ** 2).sum(-1), 1)
    return float((pred == yva).mean())


def test_detail_is_deterministic(tmp_path):
    a = toy.generate("detail", str(tmp_path / "a"), seed=1, params={"train_size": 8, "val_size": 4},
                     progress=False)
    b = toy.generate("detail", str(tmp_path / "b"), seed=1, params={"train_size": 8, "val_size": 4},
                     progress=False)
    xa, ya, meta = toy.load_split(a, "train")
    xb, yb, _ = toy.load_split(b, "train")
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert xa.shape == (8, 64, 64, 3) and meta["classes"] == ["hstripes", "vstripes", "checker"]


def _three_classes(**kw) -> np.ndarray:
    """The same canvas (same generator state) with each of the three patterns, uint8 (3, H, W, 3)."""
    return np.stack([toy._to_u8(toy.render_detail(np.random.default_rng(5), c, **kw)) for c in range(3)])


def test_downsampling_erases_the_class_but_not_the_canvas():
    """The same canvas with each of the three patterns: far apart at full resolution, equal after the
    2x downsampling everywhere, the square's edges included (the taper)."""
    imgs = _three_classes()
    full = np.abs(imgs[:, None].astype(float) - imgs[None].astype(float)).max(-1)
    down = _down(imgs)
    diff = np.abs(down[:, None] - down[None]).max(-1)
    for i in range(3):
        for j in range(i + 1, 3):
            assert (full[i, j] > 32).sum() >= 10 * 10 // 2  # half the full-amplitude interior at least
            assert diff[i, j].max() < 1.0  # < one grey level of 255, anywhere


def test_without_the_taper_the_edges_leak_the_class():
    """A hard-edged pattern leaks a class-dependent trace through the kernel's overhang."""
    down = _down(_three_classes(taper=False))
    assert np.abs(down[0] - down[1]).max() > 5.0


def test_fixed_polarity_makes_the_first_row_the_brighter_one(tmp_path):
    """fixed_polarity: in every image the pattern's "on" cells (row / column / cell parity 0 from the
    box corner) are the brighter ones; without it, about half the images have them darker."""
    def signs(fixed):
        root = toy.generate("detail", str(tmp_path / f"p{fixed}"), seed=3,
                            params={"train_size": 60, "val_size": 4, "fixed_polarity": fixed}, progress=False)
        x, y, _ = toy.load_split(root, "train")
        boxes = toy.load_boxes(root, "train")
        out = []
        for img, label, (x0, y0, x1, y1) in zip(x, y, boxes):
            patch = img[y0 + 3:y1 - 3, x0 + 3:x1 - 3].astype(float).mean(-1)  # the full-amplitude interior
            yy, xx = np.mgrid[3:y1 - y0 - 3, 3:x1 - x0 - 3]
            on = [yy % 2 == 0, xx % 2 == 0, (xx + yy) % 2 == 0][int(label)]
            out.append(np.sign(patch[on].mean() - patch[~on].mean()))
        return np.array(out)
    assert (signs(1) > 0).all()
    assert 0.2 < (signs(0) > 0).mean() < 0.8


def test_boxes_hold_the_pattern(tmp_path):
    root = toy.generate("detail", str(tmp_path / "b"), seed=2, params={"train_size": 20, "val_size": 4},
                        progress=False)
    x, _, _ = toy.load_split(root, "train")
    boxes = toy.load_boxes(root, "train")
    assert boxes.shape == (20, 4) and ((boxes[:, 2:] - boxes[:, :2]) == 16).all()
    strong = _alternation_map(x)
    for m, (x0, y0, x1, y1) in zip(strong, boxes):
        # counts of strong alternation in every 16x16 window: the richest one sits on the box (give or
        # take the frame, whose edges alternate too)
        c = np.pad(m.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        win = c[16:, 16:] - c[:-16, 16:] - c[16:, :-16] + c[:-16, :-16]
        wy, wx = np.unravel_index(win.argmax(), win.shape)
        assert win[y0, x0] >= 50 and abs(wy - y0) <= 4 and abs(wx - x0) <= 4
    with pytest.raises(FileNotFoundError, match="detail"):
        toy.load_boxes(str(tmp_path), "train")


def _alternation_map(x: np.ndarray) -> np.ndarray:
    """(n, H, W) pixels with a strong 1-px alternation across both neighbours, along y or x, in any
    colour channel (the two colours differ by 0.35 on average over the channels, not in brightness)."""
    t = np.asarray(x, dtype=np.float32) / 255
    m = np.zeros(t.shape[:3], bool)
    dy = np.abs(t[:, 2:] - 2 * t[:, 1:-1] + t[:, :-2]).max(-1)
    dx = np.abs(t[:, :, 2:] - 2 * t[:, :, 1:-1] + t[:, :, :-2]).max(-1)
    m[:, 1:-1] |= dy > 0.6
    m[:, :, 1:-1] |= dx > 0.6
    return m


def test_tiny_detail_set_is_resolution_sensitive(tmp_path):
    """A fixed high-frequency feature (1-px alternation per axis) and a nearest-centroid rule tell the
    classes apart on the full-resolution images and fall to about chance on the downsampled copy."""
    root = toy.generate("detail", str(tmp_path / "d"), seed=0, params=TINY, progress=False)
    xtr, ytr, _ = toy.load_split(root, "train")
    xva, yva, _ = toy.load_split(root, "val")
    ytr, yva = np.asarray(ytr), np.asarray(yva)
    full = _nearest_centroid_accuracy(_alternation(xtr), ytr, _alternation(xva), yva)
    down = _nearest_centroid_accuracy(_alternation(_down(xtr)), ytr, _alternation(_down(xva)), yva)
    assert full > 0.85, full
    assert down < 0.5, down  # chance is 1/3


def test_detail_kind_is_a_classification_set(tmp_path):
    cfg = load_config("toy_detail_grid_low", [f"data.root={tmp_path / 'd'}", "data.toy.train_size=4",
                                              "data.toy.val_size=4"])
    train, val, info = build_datasets(cfg, progress=False)
    x, y = val[0][:2]
    assert tuple(x.shape) == (3, 32, 32) and info["classes"][2] == "checker"  # 64-px canvas, 32-px input
    bad = load_config("toy_seg_grid", [f"data.root={tmp_path / 's'}", "data.toy.kind=detail"])
    with pytest.raises(ValueError, match="data.toy.kind"):
        build_datasets(bad, progress=False)


def test_generator_parameters_come_from_the_config(tmp_path):
    import json
    cfg = load_config("toy_detail_grid_low", [f"data.root={tmp_path / 'd'}", "data.toy.train_size=4",
                                              "data.toy.val_size=4", "data.toy.params={taper: 0, fixed_polarity: 0}"])
    build_datasets(cfg, progress=False)
    params = json.loads((tmp_path / "d" / "meta.json").read_text())["params"]
    assert params["taper"] == 0 and params["fixed_polarity"] == 0 and params["glyph"] == 16
    bad = load_config("toy_detail_grid_low", [f"data.root={tmp_path / 'e'}", "data.toy.params={tapr: 0}"])
    with pytest.raises(ValueError, match="tapr"):
        build_datasets(bad, progress=False)


@pytest.mark.parametrize("params", [{"glyph": 7}, {"frame": 1}, {"num_classes": 4}])
def test_detail_rejects_bad_parameters(params):
    with pytest.raises(ValueError, match="toy detail"):
        toy.make_detail(np.random.default_rng(0), 1, **params)


def test_toy_detail_runs_are_deterministic(tmp_path, trunk_override):
    """Two fresh DART runs on the detail set with the same seed give the same weights and metrics;
    another seed gives other weights."""
    import json

    from dart.engine import checkpoint as ckpt
    from dart.train import main as train

    def run(name, seed):
        out = tmp_path / name
        rc = train(["--config", "toy_detail_dart", "--output-dir", str(out), "train.epochs=1",
                    "train.warmup_epochs=0", "train.batch_size=8", "eval.batch_size=8", f"train.seed={seed}",
                    "data.toy.train_size=16", "data.toy.val_size=8", f"data.root={tmp_path / 'data'}",
                    "model.kwargs.depth=1", "train.device=cpu", "train.threads=1", trunk_override])
        assert rc == 0
        m = json.loads((out / "metrics.json").read_text())
        return m, ckpt.load(str(out / "checkpoint_last.pt"))["model"]

    (m1, w1), (m2, w2), (_, w3) = run("a", 0), run("b", 0), run("c", 1)
    assert m1["loss_curve"] == m2["loss_curve"] and m1["top1"] == m2["top1"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)


@pytest.mark.parametrize("texel, kept", [(2, 0.5), (4, 0.75)])
def test_coarse_cells_survive_the_2x_copy(texel, kept):
    """coarse_texel-px cells on the canvas lattice: the 2x copies of the same canvas with horizontal
    and with vertical stripes still differ, by half (2-px cells) or three quarters (4-px cells) of
    the full-resolution difference; 1-px cells (coarse_pct 0) leave < one grey level
    (test_downsampling_erases_the_class_but_not_the_canvas)."""
    imgs = _three_classes(coarse_pct=100, coarse_texel=texel)
    full = np.abs(imgs[0].astype(float) - imgs[1].astype(float)).max()
    down = _down(imgs)
    assert np.abs(down[0] - down[1]).max() == pytest.approx(kept * full, rel=0.02)


def test_coarse_stripes_keep_their_phase_in_the_2x_copy(tmp_path):
    """4-px cells in canvas coordinates: in the 32-px copy, the rows i with i % 4 in {0, 1} are the
    bright ones in every image of horizontal stripes (the same sign for one linear filter on the
    grid's 8-px patches), and each image's cell size is stored."""
    root = toy.generate("detail", str(tmp_path / "c"), seed=4, progress=False,
                        params={"train_size": 60, "val_size": 4, "coarse_pct": 100, "coarse_texel": 4})
    x, y, meta = toy.load_split(root, "train")
    assert meta["params"]["coarse_texel"] == 4 and (toy.load_texels(root, "train") == 4).all()
    down = _down(x).mean(-1)
    signs = []
    for img, label, (x0, y0, x1, y1) in zip(down, y, toy.load_boxes(root, "train")):
        if label != 0:
            continue
        rows = np.arange(y0 // 2 + 2, y1 // 2 - 2)
        patch = img[rows][:, x0 // 2 + 2:x1 // 2 - 2].mean(1)
        signs.append(np.sign(patch[rows % 4 < 2].mean() - patch[rows % 4 >= 2].mean()))
    assert len(signs) >= 10 and all(s > 0 for s in signs)


def test_coarse_share_is_drawn_per_image(tmp_path):
    root = toy.generate("detail", str(tmp_path / "m"), seed=6, progress=False,
                        params={"train_size": 300, "val_size": 4, "coarse_pct": 40})
    texels = toy.load_texels(root, "train")
    assert set(np.unique(texels)) == {1, 2} and 0.3 < (texels == 2).mean() < 0.5
    fine = toy.generate("detail", str(tmp_path / "f"), seed=6, progress=False,
                        params={"train_size": 20, "val_size": 4})
    assert (toy.load_texels(fine, "train") == 1).all()


@pytest.mark.parametrize("kind", ["detail", "segmentation", "video"])
@pytest.mark.parametrize("params, why", [({"coarse_pct": 101}, "0..100"), ({"coarse_pct": -1}, "0..100"),
                                         ({"coarse_texel": 3}, "2 or 4")])
def test_coarse_parameters_are_checked_before_generating(kind, params, why):
    with pytest.raises(ValueError, match=why):
        toy.resolve_params(kind, params)
