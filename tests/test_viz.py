import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dart import DART
from dart.viz import draw_partition, main
from tests.cli_checks import one_line_error


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


def _tiny_run(tmp_path, config, name, trunk_override):
    from dart.train import main as train
    out = tmp_path / name
    rc = train(["--config", config, "--output-dir", str(out), trunk_override, "train.epochs=1", "train.warmup_epochs=0",
                "train.batch_size=8", "eval.batch_size=8", "data.toy.train_size=8", "data.toy.val_size=4",
                f"data.root={tmp_path / (name + '_data')}", "model.kwargs.depth=1", "train.device=cpu"])
    assert rc == 0
    return out


def test_run_folder_gives_the_trained_partition_with_the_runs_normalisation(tmp_path, trunk_override):
    from dart.engine.run import load_run
    from dart.viz import find_tokenizer, partition_from_run
    run = _tiny_run(tmp_path, "toy_detail_dart", "cls", trunk_override)
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


def test_run_folder_of_a_segmentation_checkpoint(tmp_path, trunk_override):
    from dart.viz import partition_from_run
    run = _tiny_run(tmp_path, "toy_seg_dart", "seg", trunk_override)
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


# ---------------------------------------------------------------- bad input: one line, exit 2 (issue 20)
TOY_KW = {"img_size": 64, "num_tokens": 16, "scorer": "cnn", "depth": 1}
TOY_KV = "img_size=64,num_tokens=16,scorer=cnn,depth=1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy_trunk):
    """A DART run and a grid run made the usual way: from a project folder, with the relative
    output_dir and toy data root dart.train defaults to (runs/<name>, data/toy/...)."""
    from dart.train import main as train
    proj = tmp_path_factory.mktemp("proj")
    here, threads = os.getcwd(), torch.get_num_threads()
    common = ["train.epochs=1", "train.warmup_epochs=0", "train.batch_size=8", "eval.batch_size=8",
              "data.toy.train_size=8", "data.toy.val_size=4", "model.kwargs.depth=1", "train.device=cpu",
              "train.threads=1"]
    # the trunk where the packaged config looks for it, as the workflow's scorer_pretrain rule leaves it
    (proj / "results/toy/scorer_trunk").mkdir(parents=True)
    shutil.copy(toy_trunk, proj / "results/toy/scorer_trunk/cnn.pt")
    try:
        os.chdir(proj)
        assert train(["--config", "toy_detail_dart", *common]) == 0
        assert train(["--config", "toy_detail_grid_4n", *common]) == 0
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)
    assert not os.path.isabs(yaml.safe_load((proj / "runs/toy_detail_dart/config.yaml").read_text())["output_dir"])
    return proj


@pytest.fixture
def png(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)).save(src)
    return str(src)


def test_run_folder_errors_are_one_line(runs, tmp_path, png, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs / "runs/toy_detail_dart", run)
    out = str(tmp_path / "p.png")
    # a run index past the validation split (was: TypeError: 'Skipped' object is not subscriptable)
    assert main(["--run", str(runs / "runs/toy_detail_dart"), "--index", "1000", "--out", out]) == 2
    one_line_error(capsys, "dart.viz", "--index 1000", "4 images")
    # a grid run has no partition to draw
    assert main(["--run", str(runs / "runs/toy_detail_grid_4n"), "--image", png, "--out", out]) == 2
    one_line_error(capsys, "dart.viz", "no DART tokenizer")
    # an unreadable image
    (tmp_path / "bad.png").write_text("not an image")
    assert main(["--run", str(run), "--image", str(tmp_path / "bad.png"), "--out", out]) == 2
    one_line_error(capsys, "dart.viz", "bad.png")
    # a truncated checkpoint, then none
    ck = run / "checkpoint_last.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    assert main(["--run", str(run), "--image", png, "--out", out]) == 2
    one_line_error(capsys, "dart.viz", str(ck), "truncated")
    ck.unlink()
    assert main(["--run", str(run), "--image", png, "--out", out]) == 2
    one_line_error(capsys, "dart.viz", "checkpoint_last.pt")
    assert not os.path.exists(out)


def test_run_folder_from_another_directory_finds_its_relative_data(runs, tmp_path, monkeypatch, capsys):
    """The toy data root is relative to where dart.train ran; the run folder's own path tells where."""
    from dart.viz import partition_from_run
    run = runs / "runs/toy_detail_dart"
    monkeypatch.chdir(tmp_path)
    x, part, _, _ = partition_from_run(str(run), index=1)
    monkeypatch.chdir(runs)  # the same image as from the project folder
    x_there, part_there, _, _ = partition_from_run("runs/toy_detail_dart", index=1)
    torch.testing.assert_close(x, x_there, rtol=0, atol=0)
    torch.testing.assert_close(part.rects, part_there.rects)
    # a run folder moved away from its data: a clear error naming the data root
    moved = tmp_path / "elsewhere" / "r"
    shutil.copytree(run, moved)
    monkeypatch.chdir(tmp_path)
    assert main(["--run", str(moved), "--out", str(tmp_path / "p.png")]) == 2
    one_line_error(capsys, "dart.viz", "data.root", "data/toy/detail-0")
    assert main(["--run", str(moved), "--image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "p.png")]) == 2


def test_model_kwargs_take_key_value_like_bench_complexity(tmp_path, png, capsys):
    out = tmp_path / "kv.png"
    assert main(["--model", "dart_deit_tiny_patch16_224", "--model-kwargs", TOY_KV, "--image", png,
                 "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 100
    from bench.complexity import parse_kwargs
    from dart.engine.cli import parse_kwargs as shared
    assert parse_kwargs is shared and shared(TOY_KV) == TOY_KW == shared(json.dumps(TOY_KW))
    # a keyword the model does not take, a model that is not DART, a name nobody registered
    assert main(["--model", "dart_deit_tiny_patch16_224", "--model-kwargs", TOY_KV + ",num_token=3",
                 "--image", png, "--out", str(out)]) == 2
    one_line_error(capsys, "dart.viz", "num_token")
    assert main(["--model", "deit_tiny_patch16_224", "--image", png, "--out", str(out)]) == 2
    one_line_error(capsys, "dart.viz", "no DART tokenizer")
    assert main(["--model", "dart_deit_tiny_patch61_224", "--image", png, "--out", str(out)]) == 2
    one_line_error(capsys, "dart.viz", "dart_deit_tiny_patch61_224")


def test_official_checkpoint_is_drawn_through_the_key_map(tmp_path, png, capsys):
    import timm

    from dart.engine.keymap import load_into
    from dart.viz import model_partition
    from tests.test_keymap import to_official
    torch.manual_seed(3)
    trained = timm.create_model("dart_deit_tiny_patch16_224", **TOY_KW)
    path = tmp_path / "darvit-tiny-synthetic.pth"
    torch.save({"model": to_official(trained.state_dict())}, path)
    out = tmp_path / "o.png"
    assert main(["--model", "dart_deit_tiny_patch16_224", "--model-kwargs", TOY_KV, "--checkpoint", str(path),
                 "--image", png, "--out", str(out)]) == 0
    assert "darvit checkpoint" in capsys.readouterr().err and out.exists()
    # the partition is the checkpoint's: the same as the model that loaded it through the key map
    ref = timm.create_model("dart_deit_tiny_patch16_224", **TOY_KW).eval()
    load_into(ref, str(path))
    x, part = model_partition("dart_deit_tiny_patch16_224", TOY_KW, str(path), png)
    with torch.no_grad():
        _, want = ref.patch_embed(x[None], return_partition=True)
    torch.testing.assert_close(part.rects, want.rects, rtol=0, atol=0)
    # a checkpoint of another model fills nothing: refused, naming the keys
    assert main(["--model", "dart_deit_tiny_patch16_224", "--model-kwargs", TOY_KV.replace("depth=1", "depth=2"),
                 "--checkpoint", str(path), "--image", png, "--out", str(tmp_path / "x.png")]) == 2
    one_line_error(capsys, "dart.viz", str(path), "blocks.1")
    assert not (tmp_path / "x.png").exists()


def test_draw_partition_refuses_an_image_of_another_size():
    tok = DART(img_size=64, num_tokens=16, embed_dim=8, score_grid=4)
    _, part = tok(torch.rand(1, 3, 64, 64), return_partition=True)
    with pytest.raises(ValueError, match="64x64.*32x32"):
        draw_partition(torch.rand(3, 32, 32), part, None, normalized=False)
    with pytest.raises(ValueError, match="batch of 1"):
        draw_partition(torch.rand(3, 64, 64), part, None, index=1, normalized=False)


@pytest.mark.slow
def test_python_m_dart_viz_runs_without_runpy_warning():
    r = subprocess.run([sys.executable, "-m", "dart.viz", "--help"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "default"})
    assert r.returncode == 0 and "--run" in r.stdout
    assert "RuntimeWarning" not in r.stderr, r.stderr
