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


def test_toy_cli_canvas_too_small_is_one_line(tmp_path):
    r = cli("-m", "dart.data.toy", "--kind", "detail", "--set", "canvas=8", "--out", str(tmp_path / "d"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("dart.data.toy: toy detail: parameter canvas=8")
    assert "valid canvas >= 20" in r.stderr and not (tmp_path / "d").exists()
