"""Video: toy motion clips train VideoMamba (grid and DART) end to end; evaluate reloads the run."""
import json

import pytest
import torch

pytest.importorskip("dart.models.videomamba")

from dart.engine.config import load_config  # noqa: E402
from dart.engine.loop import Trainer  # noqa: E402


@pytest.mark.parametrize("config", ["toy_video_grid", "toy_video_dart"])
def test_toy_video_run_and_evaluate(tmp_path, config, trunk_override):
    over = [*([trunk_override] if "dart" in config else []), f"data.root={tmp_path / 'toy'}",
            "data.toy.train_size=16", "data.toy.val_size=8",
            "model.kwargs.embed_dim=16", "model.kwargs.depth=1", "train.epochs=1", "train.batch_size=8",
            "eval.batch_size=8", "train.threads=1", f"output_dir={tmp_path / 'run'}"]
    threads = torch.get_num_threads()
    try:
        m = Trainer(load_config(config, over)).run()
        assert m["task"] == "video" and m["num_frames"] == 4 and m["num_tokens"] == 16
        assert 0 <= m["top1"] <= 100 and m["val_samples"] == 8 and len(m["loss_curve"]) == 1
        from dart.evaluate import main
        assert main(["--config", config, "--checkpoint", str(tmp_path / "run" / "checkpoint_last.pt"), *over]) == 0
    finally:
        torch.set_num_threads(threads)
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert ev["top1"] == pytest.approx(m["top1"]) and ev["source"]["kind"] == "run"


def test_video_rejects_cutmix():
    from dart.engine.loop import make_mixup
    with pytest.raises(ValueError, match="aug.cutmix"):
        make_mixup(load_config("toy_video_dart", ["aug.cutmix=1.0"]))
