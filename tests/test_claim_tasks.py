"""The claim's toy tasks as packaged: each pair (grid N on the 2x copy, DART N at full resolution)
trains on the same data with the same recipe, the workflow generates exactly the data the training
configs ask for, and the coarse texture cells of the calibrated tasks survive the 2x copy."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dart.data import toy, toy_params
from dart.data.transforms import resize_image
from dart.engine.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "workflow", "scripts"))
import plan  # noqa: E402

RECIPE = ("epochs", "batch_size", "lr", "warmup_epochs", "weight_decay", "min_lr")


def _config() -> dict:
    with open(os.path.join(ROOT, "config", "config.yaml")) as f:
        return yaml.safe_load(f)


def _data(cfg: dict) -> tuple[str, int, dict]:
    kind, seed, params = toy_params(cfg)
    return kind, seed, toy.resolve_params(kind, params)


def test_the_workflow_generates_the_data_each_toy_run_reads():
    """scales.toy.datasets `set` and the training configs' data.toy must name the same set:
    otherwise the first training job regenerates the DAG's data folder under the others' feet."""
    config = _config()
    entries = config["scales"]["toy"]["datasets"]
    rows = plan.experiments(config)
    for eid in plan.trained(config):
        cfg = plan.run_config(config, eid, 0, repo_root=Path(ROOT))
        kind, seed, params = _data(cfg)
        entry = entries[rows[eid]["dataset"]]["toy"]
        assert (entry["kind"], entry.get("seed", 0)) == (kind, seed), eid
        assert toy.resolve_params(entry["kind"], entry.get("set")) == params, eid


def test_claim_pairs_share_data_and_recipe():
    """Every role of a claim task trains on the grid partner's data with its recipe (epochs, lr,
    batch ...): the pair differs in the tokenizer and the input size only."""
    claim = _config()["scales"]["toy"]["claim"]
    groups = [claim["roles"], *claim["tasks"].values()]
    for roles in groups:
        base = load_config(roles["grid_low"])
        for role, name in roles.items():
            cfg = load_config(name)
            assert _data(cfg) == _data(base), (role, name)
            assert {k: cfg["train"][k] for k in RECIPE} == {k: base["train"][k] for k in RECIPE}, (role, name)


@pytest.mark.parametrize("name, chosen", [
    ("toy_detail_grid_low", {"coarse_pct": 100, "coarse_texel": 4}),
    ("toy_seg_grid", {"coarse_pct": 100, "coarse_texel": 4}),
    ("toy_video_grid", {"glyph": 14, "clutter": 0, "coarse_pct": 0})])
def test_claim_tasks_use_the_calibrated_settings(name, chosen):
    """The settings docs/engine.md "Calibrating the claim tasks" chose (the generator's defaults
    keep the first version of the sets)."""
    params = _data(load_config(name))[2]
    assert {k: params[k] for k in chosen} == chosen


def _down(x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(np.asarray(x, dtype=np.float32)).permute(0, 3, 1, 2)
    return resize_image(t, x.shape[1] // 2).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("origin", [(0, 0), (3, 5)])
def test_coarse_texture_cells_sit_on_the_canvas_lattice(origin):
    """_texture with 2-px cells: the stripes change at even canvas rows whatever the object's
    position, so the 2x copy keeps them (half the contrast) even at an odd origin, where cells
    counted from the object's corner would be averaged away like 1-px ones."""
    size, (oy, ox) = 12, origin
    tex = toy._texture(0, size, texel=2, origin=origin)  # horizontal stripes
    rows = oy + np.arange(size)
    assert (tex[:, 0] == ((rows // 2 - oy // 2) % 2 == 0)).all()
    img = np.full((1, 32, 32, 3), 128.0)
    img[0, oy:oy + size, ox:ox + size] = np.where(tex[..., None], 255.0, 0.0)
    d = _down(img)[0, :, :, 0]
    inner = d[(oy + 3) // 2:(oy + size - 3) // 2, (ox + 3) // 2:(ox + size - 3) // 2]
    assert np.ptp(inner.mean(1)) == pytest.approx(255 / 2, rel=0.05)
    local = np.kron(toy._texture(0, size // 2), np.ones((2, 2), bool))  # cells from the corner
    img[0, oy:oy + size, ox:ox + size] = np.where(local[..., None], 255.0, 0.0)
    d = _down(img)[0, :, :, 0]
    inner = d[(oy + 3) // 2:(oy + size - 3) // 2, (ox + 3) // 2:(ox + size - 3) // 2]
    assert np.ptp(inner.mean(1)) == (pytest.approx(255 / 2, rel=0.05) if oy % 2 == 0 else pytest.approx(0, abs=1))


@pytest.mark.parametrize("kind", ["segmentation", "video"])
def test_coarse_textures_are_deterministic(kind):
    """coarse_pct 100 redraws the textures with coarse_texel-px cells, alike for the same seed."""
    p = dict(toy.DEFAULTS[kind], canvas=32, num_classes=5 if kind == "segmentation" else 8)
    a = toy.GENERATORS[kind](np.random.default_rng(1), 6, **p)
    b = toy.GENERATORS[kind](np.random.default_rng(1), 6, **dict(p, coarse_pct=100, coarse_texel=4))
    c = toy.GENERATORS[kind](np.random.default_rng(1), 6, **dict(p, coarse_pct=100, coarse_texel=4))
    assert np.array_equal(b[0], c[0]) and np.array_equal(b[1], c[1])
    assert not np.array_equal(a[0], b[0])
