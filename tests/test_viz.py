import numpy as np
import torch
from PIL import Image

from dart import DART
from dart.viz import draw_partition, main


def test_draw_partition_writes_a_png(tmp_path):
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4)
    scores = torch.ones(1, 4, 4)
    scores[0, 1, 2] = 20
    _, part = tok(torch.rand(1, 3, 64, 64), scores=scores, return_partition=True)
    out = tmp_path / "p.png"
    draw_partition(torch.rand(3, 64, 64), part, str(out), normalized=False)
    img = np.asarray(Image.open(out))
    assert img.ndim == 3 and img.shape[0] > 100
    # the rectangles are drawn in yellow: some pixels are strongly yellow
    assert ((img[..., 0] > 200) & (img[..., 1] > 170) & (img[..., 2] < 80)).sum() > 50


def test_cli(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray((np.random.rand(80, 80, 3) * 255).astype(np.uint8)).save(src)
    out = tmp_path / "out.png"
    main(["--model", "dart_deit_tiny_patch16_224", "--model-kwargs",
          '{"img_size": 64, "num_tokens": 16, "scorer": "cnn", "depth": 1}', "--image", str(src), "--out", str(out)])
    assert Image.open(out).size[0] > 100


def _tiny_run(tmp_path, config, name):
    from dart.train import main as train
    out = tmp_path / name
    rc = train(["--config", config, "--output-dir", str(out), "train.epochs=1", "train.warmup_epochs=0",
                "train.batch_size=8", "eval.batch_size=8", "data.toy.train_size=8", "data.toy.val_size=4",
                f"data.root={tmp_path / (name + '_data')}", "model.kwargs.depth=1", "train.device=cpu"])
    assert rc == 0
    return out


def test_run_folder_gives_the_trained_partition_with_the_runs_normalisation(tmp_path):
    from dart.engine.run import load_run
    from dart.viz import find_tokenizer, partition_from_run
    run = _tiny_run(tmp_path, "toy_detail_dart", "cls")
    src = tmp_path / "wide.png"
    pix = (np.random.default_rng(0).random((32, 64, 3)) * 255).astype(np.uint8)  # 64 wide, 32 tall
    Image.fromarray(pix).save(src)
    x, part, mean, std = partition_from_run(str(run), str(src))
    # the run's statistics (0.5/0.5), not ImageNet's; the wide image is padded, not squashed
    assert mean == [0.5, 0.5, 0.5] and std == [0.5, 0.5, 0.5]
    torch.testing.assert_close(x[:, 16:48], torch.from_numpy(pix).permute(2, 0, 1).float() / 127.5 - 1,
                               atol=1e-6, rtol=0)
    assert x[:, :16].abs().max() == 0 and x[:, 48:].abs().max() == 0
    # the trained model's own partition of that input (the checkpoint was loaded, scorer at 32 px)
    cfg, model = load_run(str(run))
    with torch.no_grad():
        _, want = find_tokenizer(model)(x[None], return_partition=True)
    torch.testing.assert_close(part.rects, want.rects)
    assert find_tokenizer(model).scorer_input_size == 32
    out = tmp_path / "p.png"
    assert main(["--run", str(run), "--out", str(out)]) == 0 and Image.open(out).size[0] > 100


def test_run_folder_of_a_segmentation_checkpoint(tmp_path):
    from dart.viz import partition_from_run
    run = _tiny_run(tmp_path, "toy_seg_dart", "seg")
    x, part, _, _ = partition_from_run(str(run), index=1)
    assert x.shape == (3, 64, 64) and part.rects.shape[:2] == (1, 16)
    assert main(["--run", str(run), "--index", "2", "--out", str(tmp_path / "s.png")]) == 0


def test_score_panel_has_a_colour_bar_from_zero(tmp_path):
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4)
    _, part = tok(torch.rand(1, 3, 64, 64), scores=torch.ones(1, 4, 4), return_partition=True)
    fig = draw_partition(torch.rand(3, 64, 64), part, None, normalized=False)
    score_ax = fig.axes[1]
    lo, hi = score_ax.images[0].get_clim()
    assert lo == 0.0 and hi == 1.0 and len(fig.axes) == 3  # image, scores, colour bar
