"""dart.data.fake: the smoke scale's fake datasets load through the paper configs' own loaders."""
import json

import pytest

from dart.data import build_datasets
from dart.data import fake
from dart.engine.config import load_config


@pytest.mark.parametrize("layout, config, shape", [
    ("imagefolder", "imagenet_deit_small_dart", (3, 448, 448)),
    ("ade20k", "ade20k_deit_small_dart", (3, 448, 448)),
    ("video_csv", "kinetics_videomamba_tiny_dart", (3, 8, 448, 448)),
])
def test_fake_layout_loads_with_the_paper_config(tmp_path, layout, config, shape):
    root = tmp_path / layout
    meta = fake.generate(layout, str(root), seed=0)
    assert json.loads((root / "fake.json").read_text()) == meta
    cfg = load_config(config, [f"data.root={root}", "data.num_workers=0", "data.strict=true"])
    train, val, info = build_datasets(cfg, progress=False)
    assert len(train) == sum(meta["files"].values()) - len(val) and len(val) > 0
    x, y, skipped = val[0]
    assert skipped == []
    assert tuple(x.shape) == shape
    if layout == "ade20k":
        assert tuple(y.shape) == shape[1:] and int(y.max()) <= 255
    else:
        assert 0 <= int(y) < cfg["data"]["num_classes"]
    if layout == "imagefolder":
        assert len(train.classes) == 1000


def test_unknown_layout_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown layout 'coco'"):
        fake.generate("coco", str(tmp_path / "x"))
