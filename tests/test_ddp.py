"""A 2-process gloo run under torchrun trains, and its ranks end with identical weights."""
import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_process_gloo(tmp_path):
    out = tmp_path / "ddp"
    args = [f"data.root={tmp_path / 'toy'}", "data.toy.train_size=64", "data.toy.val_size=30", "data.img_size=32",
            "model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}",
            "train.epochs=2", "train.batch_size=8", "eval.batch_size=8", "train.threads=1", "train.device=cpu",
            f"output_dir={out}"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "dart.train", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["global_batch"] == 16
    assert m["steps_per_epoch"] == 4  # 64 samples / (2 ranks x 8)
    assert m["val_samples"] == 30  # sharded without padding: every sample counted once
    assert len(m["rank_param_checksums"]) == 2 and m["ranks_agree"], m["rank_param_checksums"]
    assert len(m["loss_curve"]) == 2 and all(v == v for v in m["loss_curve"])
    assert "2 process(es)" in (out / "train.log").read_text()
