"""Issue 20, case 5: a run started from an official checkpoint runs under the official convention,
and the run folder records it, so every way back to the model (dart.evaluate of the run, --resume,
load_run / dart.viz --run) rebuilds the model that was trained."""
import json

import pytest
import torch
import yaml

from dart.engine import checkpoint as ckpt
from dart.engine.build import build_model
from dart.engine.config import load_config
from tests.test_keymap import to_official

OVER = ["model.kwargs={num_tokens: 16, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}",
        "data.toy.train_size=32", "data.toy.val_size=16", "train.batch_size=8", "eval.batch_size=8",
        "train.warmup_epochs=0", "train.device=cpu", "train.threads=1"]


@pytest.fixture(scope="module")
def official_run(tmp_path_factory):
    """A synthetic official darvit checkpoint with a scorer that varies, and a 1-epoch run from it."""
    from dart.train import main as train
    tmp = tmp_path_factory.mktemp("init")
    over = OVER + [f"data.root={tmp / 'data'}"]
    torch.manual_seed(0)
    model = build_model(load_config("toy_cls_dart", over))
    torch.nn.init.normal_(model.patch_embed.scorer.head.fc2.weight, std=1.0)  # scores that vary
    path = tmp / "darvit-toy.pth"
    torch.save({"model": to_official(model.state_dict()), "epoch": 299}, path)
    run = tmp / "run"
    assert train(["--config", "toy_cls_dart", *over, f"model.init_checkpoint={path}", "train.epochs=1",
                  "--output-dir", str(run)]) == 0
    return tmp, over, path, run, model


def _trunk(state: dict) -> dict:
    return {k: v for k, v in state.items() if ".scorer.trunk." in k and "running" not in k
            and "num_batches" not in k}


def test_the_run_folder_records_the_convention_of_its_official_start(official_run):
    _, _, _, run, start = official_run
    kw = yaml.safe_load((run / "config.yaml").read_text())["model"]["kwargs"]
    assert kw["convention"] == "official" and kw["scorer_trunk"] == "pretrained_frozen"
    stored = yaml.safe_load(ckpt.load(str(run / "checkpoint_last.pt"))["config_yaml"])
    assert stored["model"]["kwargs"]["convention"] == "official"
    from dart.engine.run import load_run
    _, model = load_run(str(run))
    pe = model.patch_embed
    assert pe.convention == "official" and pe.scorer.frozen and pe.scorer.bn_mode == "train"
    # the frozen trunk trained nothing: its weights are the official file's
    trained = ckpt.load(str(run / "checkpoint_last.pt"))["model"]
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in _trunk(trained).items())


def test_evaluating_the_run_gives_its_training_numbers(official_run, capsys):
    tmp, over, _, run, _ = official_run
    from dart.evaluate import main
    assert main(["--config", "toy_cls_dart", *over, "--checkpoint", str(run / "checkpoint_last.pt"),
                 "--out", str(tmp / "eval.json")]) == 0, capsys.readouterr().err
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads((tmp / "eval.json").read_text())
    assert evaluated["val_loss"] == pytest.approx(trained["val_loss"], abs=1e-6)
    assert evaluated["top1"] == trained["top1"]


def test_a_resumed_run_keeps_the_convention_and_the_frozen_trunk(official_run, capsys):
    _, over, path, run, start = official_run
    from dart.train import main as train
    # the same command line as the first session (the init kwargs are not on it), one epoch more
    assert train(["--config", "toy_cls_dart", *over, f"model.init_checkpoint={path}", "train.epochs=2",
                  "--output-dir", str(run), "--resume"]) == 0, capsys.readouterr().err
    obj = ckpt.load(str(run / "checkpoint_last.pt"))
    assert obj["epoch"] == 1
    assert yaml.safe_load(obj["config_yaml"])["model"]["kwargs"]["convention"] == "official"
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in _trunk(obj["model"]).items())


def test_an_explicit_convention_wins_over_the_checkpoints(tmp_path):
    from dart.engine.initialise import with_init_kwargs
    path = tmp_path / "darvit-toy.pth"
    model = build_model(load_config("toy_cls_dart", OVER))
    torch.save({"model": to_official(model.state_dict())}, path)
    cfg = load_config("toy_cls_dart", OVER + [f"model.init_checkpoint={path}", "model.kwargs.convention=ours"])
    out, added = with_init_kwargs(cfg)
    assert added == {"scorer_trunk": "pretrained_frozen"} and out["model"]["kwargs"]["convention"] == "ours"
    # a checkpoint of ours (a grid run's, another family) implies nothing
    grid = tmp_path / "grid.pth"
    torch.save({"model": {"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}}, grid)
    assert with_init_kwargs(load_config("toy_cls_dart", OVER + [f"model.init_checkpoint={grid}"]))[1] == {}
