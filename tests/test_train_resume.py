"""Kill a run mid-epoch, resume it, and get the uninterrupted run's loss curve and metrics (1e-6);
a non-finite loss stops the run and keeps the last good checkpoint."""
import json
import os
import subprocess
import sys

import pytest
import torch

from dart.engine import checkpoint as ckpt
from dart.engine.config import load_config
from dart.engine.loop import NonFiniteLoss, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(tmp_path, run, *extra):
    return [f"data.root={tmp_path / 'toy'}", "data.toy.train_size=64", "data.toy.val_size=32", "data.img_size=32",
            "model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2, drop_path_rate: 0.1}",
            "train.epochs=3", "train.batch_size=16", "train.warmup_epochs=1", "eval.batch_size=32",
            "train.deterministic=true", "train.threads=1", "train.ema=true", "train.ema_decay=0.9",
            "aug.mixup=0.2", "aug.cutmix=0.5", "aug.label_smoothing=0.1",
            f"output_dir={tmp_path / run}", *extra]


def run_cli(args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "dart.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_kill_mid_epoch_and_resume_matches(tmp_path):
    full = Trainer(load_config(None, tiny(tmp_path, "full"))).run()
    steps = full["steps_per_epoch"]
    assert steps == 4 and len(full["loss_curve"]) == 3

    # the same run, killed (os._exit, like kill -9) in the middle of epoch 2
    p = run_cli(tiny(tmp_path, "cut"), {"DART_DEBUG_KILL_AT_STEP": str(steps + 2)})
    assert p.returncode == 137, p.stderr[-2000:]
    cut = tmp_path / "cut"
    assert not (cut / "metrics.json").exists()
    state = ckpt.load(str(cut / "checkpoint_last.pt"))
    assert state["epoch"] == 0 and state["global_step"] == steps
    assert not [f for f in os.listdir(cut) if f.endswith(".tmp")]  # atomic writes leave no debris

    resumed = Trainer(load_config(None, tiny(tmp_path, "cut")), resume=True).run()
    assert resumed["loss_curve"] == pytest.approx(full["loss_curve"], abs=1e-6, rel=0)
    for key in ("top1", "top5", "val_loss"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6, rel=0), key
    assert [v["top1"] for v in resumed["val_curve"]] == pytest.approx([v["top1"] for v in full["val_curve"]], abs=1e-6)
    a = ckpt.load(str(tmp_path / "full" / "checkpoint_last.pt"))
    b = ckpt.load(str(cut / "checkpoint_last.pt"))
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6, rtol=0), k
    for k in a["ema"]:
        assert torch.allclose(a["ema"][k], b["ema"][k], atol=1e-6, rtol=0), k
    log = (cut / "train.log").read_text()
    assert "resuming from" in log and "killing the process" in log
    m = json.loads((cut / "metrics.json").read_text())
    for key in ("task", "model", "dataset", "top1", "top5", "loss_curve", "images_per_s", "wall_s", "params_m",
                "gmacs", "num_tokens", "img_size", "seed", "epochs", "versions", "device", "skipped_files"):
        assert key in m, key
    assert m["num_tokens"] == 4 and m["epochs"] == 3 and set(m["versions"]) >= {"torch", "timm", "python", "dart"}


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    over = tiny(tmp_path, "nan", "train.epochs=2", "aug.mixup=0.0", "aug.cutmix=0.0")
    monkeypatch.setenv("DART_DEBUG_NAN_AT_STEP", "5")  # epoch 2, step 2
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss .* epoch 2.*checkpoint_last\.pt"):
        Trainer(load_config(None, over)).run()
    state = ckpt.load(str(tmp_path / "nan" / "checkpoint_last.pt"))
    assert state["epoch"] == 0  # the last good epoch
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "nan" / "metrics.json").exists()
    from dart.train import main
    monkeypatch.setenv("DART_DEBUG_NAN_AT_STEP", "0")
    assert main([*over, f"output_dir={tmp_path / 'nan2'}"]) == 3


def test_checkpoint_loads_weights_only(tmp_path):
    """Everything a run checkpoint holds loads with weights_only=True (no pickled objects); it holds
    no RNG state: the per-epoch reseed is what makes a resume exact (test_kill_mid_epoch_and_resume_matches
    fails without it)."""
    Trainer(load_config(None, tiny(tmp_path, "w", "train.epochs=1"))).run()
    state = torch.load(tmp_path / "w" / "checkpoint_last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "ema", "history", "epoch", "config_yaml"} <= set(state)
    assert "rng" not in state


class _Payload:
    """Unpickling this runs code: it creates the file named by `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_engine_loader_refuses_a_pickle_payload(tmp_path, capsys):
    """The engine's own loader (not the test's torch.load): a checkpoint_last.pt carrying code is
    refused with the path named, exit 2, and the code never runs."""
    over = tiny(tmp_path, "evil", "train.epochs=1")
    marker = tmp_path / "payload_ran"
    (tmp_path / "evil").mkdir()
    path = tmp_path / "evil" / "checkpoint_last.pt"
    torch.save({"format": ckpt.FORMAT, "model": {}, "x": _Payload(marker)}, path)
    with pytest.raises(ckpt.CheckpointError, match="weights_only"):
        ckpt.load(str(path))
    from dart.train import main
    assert main([*over, "--resume"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "evil" / "metrics.json").exists()


def test_resume_finds_the_last_epoch_when_checkpoint_last_was_removed(tmp_path):
    """Issue 20, case 11: Snakemake removes a job's declared outputs (checkpoint_last.pt among them)
    before rerunning it and after it fails; the checkpoint's second name (a hard link) keeps the last
    epoch, so an interrupted run still continues, and a finished one gives its checkpoint back."""
    over = tiny(tmp_path, "run", "train.epochs=2")
    p = run_cli(over, {"DART_DEBUG_KILL_AT_STEP": "6"})  # killed in epoch 2
    assert p.returncode == 137, p.stderr[-2000:]
    run = tmp_path / "run"
    assert os.path.samefile(run / "checkpoint_last.pt", run / "checkpoint_resume.pt")
    (run / "checkpoint_last.pt").unlink()
    m = Trainer(load_config(None, over), resume=True).run()
    assert len(m["loss_curve"]) == 2  # epoch 1 came from the checkpoint, not trained again
    assert "restored it from checkpoint_resume.pt" in (run / "train.log").read_text()
    (run / "checkpoint_last.pt").unlink()
    (run / "metrics.json").unlink()
    again = Trainer(load_config(None, over), resume=True).run()  # nothing left to train
    assert again["loss_curve"] == m["loss_curve"] and (run / "checkpoint_last.pt").is_file()
