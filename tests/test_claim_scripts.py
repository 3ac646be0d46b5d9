"""The claim's measure/report scripts: pattern boxes in the model's pixels, the "gathers on the
detail" verdict."""
import os
import sys

import pytest

from dart.data import build_datasets
from dart.engine.config import load_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflow", "scripts"))
import claim_measure  # noqa: E402
import claim_report  # noqa: E402


def _cfg(name, root):
    return load_config(name, [f"data.root={root}", "data.toy.train_size=4", "data.toy.val_size=6"])


def test_detail_boxes_are_in_the_models_pixels(tmp_path):
    full = _cfg("toy_detail_dart", tmp_path / "d")
    build_datasets(full, progress=False)
    boxes = claim_measure.detail_boxes(full)
    assert boxes.shape == (6, 4) and ((boxes[:, 2:] - boxes[:, :2]) == 16).all()
    low = claim_measure.detail_boxes(_cfg("toy_detail_grid_low", tmp_path / "d"))  # same data, 32-px input
    assert (low * 2 == boxes).all()
    assert claim_measure.detail_boxes(load_config("toy_cls_dart")) is None


def _rows(tokens_on_detail):
    base = {"top1_mean": 33.0, "top1_std": 1.0, "gmacs": 0.004}
    return [dict(base, role="grid_low"),
            dict(base, role="dart_n", area_cv=0.2, tokens_on_detail=tokens_on_detail, tokens_on_detail_grid=1.0)]


@pytest.mark.parametrize("tokens,verdict", [(1.9, "holds"), (1.1, "does not hold")])
def test_gathers_on_the_detail_verdict(tokens, verdict):
    out = {v["claim"]: v for v in claim_report.verdicts(_rows(tokens))}
    v = next(v for c, v in out.items() if "gathers on the detail" in c)
    assert v["verdict"] == verdict and f"{tokens:.2f} tokens on the pattern" in v["numbers"]
