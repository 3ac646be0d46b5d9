"""Issue 20, cases 12-13: where the README promises one line (and exit 2), a command prints one line
that names the parameter, file or key; no warning noise, no number taken silently from elsewhere."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_toy_cli_runs_without_a_runpy_warning(tmp_path):
    r = cli("-W", "error::RuntimeWarning", "-m", "dart.data.toy", "--kind", "detail", "--set", "train_size=4",
            "val_size=4", "--out", str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "RuntimeWarning" not in r.stderr and "runpy" not in r.stderr


@pytest.mark.parametrize("kind, canvas, smallest", [("classification", 8, 16), ("segmentation", 8, 14),
                                                    ("detail", 8, 20), ("video", 16, 17)])
def test_toy_canvas_too_small_names_the_parameter_and_its_range(tmp_path, kind, canvas, smallest):
    from dart.data import toy
    with pytest.raises(ValueError, match=rf"canvas={canvas} is too small .* valid canvas >= {smallest} "):
        toy.resolve_params(kind, {"canvas": canvas})
    # the bound itself is valid: every sample of a set generates there
    root = toy.generate(kind, str(tmp_path / kind), params={"canvas": smallest, "train_size": 100, "val_size": 1},
                        progress=False)
    assert toy.load_split(root, "train")[0].shape[-2] == smallest


def test_toy_cli_canvas_too_small_is_one_line(tmp_path, capsys):
    from dart.data.toy import main
    assert main(["--kind", "detail", "--set", "canvas=8", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("dart.data.toy: toy detail: parameter canvas=8")
    assert "valid canvas >= 20" in err and not (tmp_path / "d").exists()


# ------------------------------------------------------------------- dart.evaluate (cases 12, 13)
TOY = ["data.toy.train_size=16", "data.toy.val_size=16", "data.img_size=64", "train.threads=1"]
SMALL = "{num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}"


def _over(tmp_path, kwargs=SMALL):
    return [f"data.root={tmp_path / 'toy'}", *TOY, f"model.kwargs={kwargs}", f"output_dir={tmp_path / 'run'}"]


def _last_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_evaluate_refuses_weights_that_are_not_finite(tmp_path, capsys):
    """NaN in the scorer's weights: one line naming the checkpoint and the tensor, exit 2, no JSON
    (it was NonFiniteScores' traceback, exit 1)."""
    import torch
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    from dart.evaluate import main
    from tests.test_keymap import to_official
    over = _over(tmp_path)
    state = build_model(load_config(None, over)).state_dict()
    state["patch_embed.scorer.head.fc2.weight"][:] = float("nan")
    path = tmp_path / "darvit-nan.pth"
    torch.save({"model": to_official(state)}, path)
    assert main(["--checkpoint", str(path), *over]) == 2
    line = _last_line(capsys)
    assert line.startswith(f"dart.evaluate: {path}") and "patch_embed.scorer.head.fc2.weight" in line
    assert "NaN or inf" in line and not (tmp_path / "run" / "eval.json").exists()


def test_evaluate_refuses_outputs_that_are_not_finite(tmp_path, capsys):
    """Finite weights whose logits overflow to inf: no score is a number, so none is written."""
    import torch
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    from dart.evaluate import main
    from tests.test_keymap import to_official
    over = _over(tmp_path)
    state = build_model(load_config(None, over)).state_dict()
    state["head.weight"][:] = 3e38
    path = tmp_path / "darvit-inf.pth"
    torch.save({"model": to_official(state)}, path)
    assert main(["--checkpoint", str(path), *over]) == 2
    line = _last_line(capsys)
    assert line.startswith(f"dart.evaluate: {path}: the model gives non-finite values") and "batch 0" in line
    assert not (tmp_path / "run" / "eval.json").exists()


def test_evaluate_of_an_official_checkpoint(tmp_path, capsys):
    """The checkpoint supplies the whole scorer trunk, so a config with scorer_trunk: pretrained_frozen does not
    stop for torchvision's weights; eval.use_ema reads 'model_ema' (and says so), a file without it is
    refused naming the key; `epochs` is the file's own count, not the config's default."""
    import json
    import torch
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    from dart.evaluate import main
    from tests.test_keymap import to_official
    kw = ("{num_tokens: 4, scorer: mobilenetv3_small, scorer_trunk: pretrained_frozen, embed_dim: 32, depth: 1, "
          "num_heads: 2}")
    over = _over(tmp_path, kw)
    random_trunk = _over(tmp_path, kw.replace("pretrained_frozen", "random_frozen"))
    state = to_official(build_model(load_config(None, random_trunk)).state_dict())
    path = tmp_path / "darvit-toy.pth"
    torch.save({"model": state, "model_ema": {k: v.clone() for k, v in state.items()}, "epoch": 6}, path)
    assert main(["--checkpoint", str(path), *over]) == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert rec["epochs"] == 7 and rec["source"]["weights"] == "model" and rec["source"]["keymap"]["entry"] == "model"
    assert main(["--checkpoint", str(path), *over, "eval.use_ema=true"]) == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert rec["source"]["weights"] == "model_ema" and "'model_ema'" in capsys.readouterr().err
    torch.save({"model": state}, path)
    assert main(["--checkpoint", str(path), *over, "eval.use_ema=true"]) == 2
    assert "config key 'eval.use_ema' is true" in _last_line(capsys)
    assert main(["--checkpoint", str(path), *over]) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["epochs"] is None


def test_a_model_entry_with_non_tensors_is_not_swapped_for_model_ema():
    import torch
    from dart.engine.keymap import extract_state_dict
    sd = {"a": torch.zeros(1)}
    assert extract_state_dict({"model": sd, "model_ema": {"a": torch.ones(1)}}) is sd
    with pytest.raises(ValueError, match=r"entry 'model' is not a state dict: 1 of its values are not tensors "
                                         r"\(step \(int\)\); no weights are read from another entry"):
        extract_state_dict({"model": {**sd, "step": 3}, "model_ema": {"a": torch.ones(1)}})
