"""Wrong numbers must not pass silently (issue 10): checkpoint/config mismatches, bad inputs and
faults end in a clear one-line error (exit 2 for user errors, 3 for a non-finite loss)."""
import json
import os
import stat

import numpy as np
import pytest
import torch

from dart.engine import checkpoint as ckpt
from dart.engine.config import ConfigError, load_config

TINY = ["data.toy.train_size=32", "data.toy.val_size=16", "data.img_size=32",
        "model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}",
        "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0", "eval.batch_size=16", "train.threads=1"]


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def tiny(tmp_path, run="run", *extra):
    return [f"data.root={tmp_path / 'toy'}", *TINY, f"output_dir={tmp_path / run}", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny DART run (1 epoch) shared by the evaluate/resume tests; they copy it before changing it."""
    from dart.train import main
    tmp = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    try:
        assert main(tiny(tmp)) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp


def _one_line_error(err: str, *names):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("dart.")]
    assert lines, err
    assert "Traceback" not in err, err
    for n in names:
        assert n in lines[-1], (n, lines[-1])


# ---------------------------------------------------------------- 1. evaluate and the key map
def test_evaluate_refuses_a_checkpoint_that_does_not_map(tmp_path, trained, capsys):
    from dart.evaluate import main
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.layer0.weight": torch.randn(4, 4), "decoder.bias": torch.randn(4)}}, foreign)
    out = tmp_path / "eval.json"
    rc = main(["--checkpoint", str(foreign), "--out", str(out), *tiny(trained)])
    err = capsys.readouterr().err
    assert rc == 2
    assert not out.exists()  # no number from a randomly initialised model
    _one_line_error(err, str(foreign), "encoder.layer0.weight")
    assert "not in the checkpoint" in err


def test_evaluate_allows_only_a_differing_classifier_head(tmp_path, trained, capsys):
    """The documented allow-list: the classifier head when data.num_classes differs; the JSON says so."""
    import timm
    from dart.engine.build import build_model
    from dart.evaluate import main
    from tests.test_keymap import to_official
    cfg = load_config(None, tiny(trained, "run", "data.num_classes=7"))
    official = to_official(build_model(cfg).state_dict())
    assert timm.is_model(cfg["model"]["name"]) and "head.weight" in official
    path = tmp_path / "official.pth"
    torch.save({"model": official}, path)
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(path), "--out", str(out), *tiny(trained)]) == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())
    km = ev["source"]["keymap"]
    assert km["complete"] is False and sorted(km["allowed"]) == ["head.bias", "head.weight"]
    # a missing block weight is not on the list
    del official["blocks.0.mlp.fc1.weight"]
    torch.save({"model": official}, path)
    out.unlink()
    assert main(["--checkpoint", str(path), "--out", str(out), *tiny(trained)]) == 2
    assert "blocks.0.mlp.fc1.weight" in capsys.readouterr().err and not out.exists()


def test_aggregate_refuses_an_eval_without_a_complete_map(tmp_path):
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("aggregate", os.path.join(root, "workflow/scripts/aggregate.py"))
    agg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agg)
    run = tmp_path / "runs" / "exp" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"task": "classification", "top1": 50.0, "seed": 0}))
    ev = tmp_path / "eval" / "exp" / "seed0.json"
    ev.parent.mkdir(parents=True)
    good = {"top1": 51.0, "source": {"kind": "run", "weights": "model"}}
    ev.write_text(json.dumps(good))
    assert agg.runs_table([str(run / "metrics.json")], [str(ev)], {})["top1"].tolist() == [51.0]
    bad = {"top1": 9.0, "source": {"kind": "official", "keymap": {"complete": False, "missing": ["head.weight"]}}}
    ev.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"seed0\.json.*key map"):
        agg.runs_table([str(run / "metrics.json")], [str(ev)], {})
    ev.write_text(json.dumps({"top1": 9.0}))  # no record of where the weights came from
    with pytest.raises(ValueError, match=r"seed0\.json"):
        agg.runs_table([str(run / "metrics.json")], [str(ev)], {})


# ---------------------------------------------------------------- 2. config changes vs the checkpoint
def _copy_run(src, dst):
    import shutil
    shutil.copytree(src / "run", dst)


def test_resume_refuses_model_and_data_changes(tmp_path, trained, capsys):
    from dart.train import main
    _copy_run(trained, tmp_path / "run")
    before = (tmp_path / "run" / "config.yaml").read_text()
    rc = main([*tiny(trained, "x"), f"output_dir={tmp_path / 'run'}", "--resume", "train.lr=0.5",
               "model.kwargs.num_tokens=1"])
    err = capsys.readouterr().err
    assert rc == 2
    _one_line_error(err, "train.lr", "model.kwargs.num_tokens", "checkpoint_last.pt")
    assert (tmp_path / "run" / "config.yaml").read_text() == before  # the record is not rewritten


def test_resume_may_extend_epochs(tmp_path, trained, capsys):
    from dart.train import main
    _copy_run(trained, tmp_path / "run")
    rc = main([*tiny(trained, "x"), f"output_dir={tmp_path / 'run'}", "--resume", "train.epochs=2",
               "eval.batch_size=8"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["epochs"] == 2 and len(m["loss_curve"]) == 2


def test_evaluate_refuses_a_config_the_checkpoint_was_not_trained_with(tmp_path, trained, capsys):
    from dart.evaluate import main
    out = tmp_path / "eval.json"
    rc = main(["--checkpoint", str(trained / "run" / "checkpoint_last.pt"), "--out", str(out),
               *tiny(trained), "model.kwargs.num_tokens=1"])
    assert rc == 2 and not out.exists()
    _one_line_error(capsys.readouterr().err, "model.kwargs.num_tokens")
    # evaluation settings may differ; training-only settings are taken from the checkpoint
    rc = main(["--checkpoint", str(trained / "run" / "checkpoint_last.pt"), "--out", str(out),
               *tiny(trained), "eval.batch_size=4", "train.epochs=9", "train.seed=5"])
    assert rc == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())
    assert ev["epochs"] == 1 and ev["seed"] == 0 and ev["num_tokens"] == 4


# ---------------------------------------------------------------- 3. NaN inputs
def test_schema_rejects_a_zero_std():
    with pytest.raises(ConfigError, match=r"data\.std"):
        load_config(None, ["data.std=[0.5, 0, 0.5]"])


@pytest.mark.parametrize("model", [
    "grid",
    pytest.param("dart", marks=pytest.mark.xfail(strict=True, reason="needs tokenizer NaN check")),
])
def test_one_nan_pixel_ends_in_the_clean_non_finite_stop(tmp_path, model, capsys):
    """One NaN pixel in the training data: exit 3, the last good checkpoint kept, for grid and DART."""
    from dart.train import main
    over = tiny(tmp_path)
    if model == "grid":
        over.append("model.name=deit_tiny_patch16_224")
        over[over.index(next(o for o in over if o.startswith("model.kwargs")))] = \
            "model.kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}"
    assert main(over) == 0, capsys.readouterr().err
    xs = tmp_path / "toy" / "train_x.npy"
    x = np.load(xs).astype(np.float32)
    x[3, 10, 10, 0] = np.nan
    np.save(xs, x)
    good = (tmp_path / "run" / "checkpoint_last.pt").read_bytes()
    assert main([*over, "--resume", "train.epochs=2"]) == 3
    assert "non-finite" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoint_last.pt").read_bytes() == good
