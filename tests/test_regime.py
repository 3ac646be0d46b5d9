"""The paper's regime as one setting (data.grid_img_size -> the DART scorer's input size) and the
warning for inherited crops that cut small objects out of ImageFolder images."""
import logging

import pytest

from dart.engine.build import build_model, model_kwargs
from dart.engine.config import load_config
from dart.engine.regime import small_object_crop_warning


def test_grid_img_size_sets_the_scorer_input(trunk_override):
    cfg = load_config("toy_detail_dart", [trunk_override])
    assert cfg["data"]["grid_img_size"] == 32 and cfg["data"]["img_size"] == 64
    model = build_model(cfg)
    assert model.patch_embed.scorer_input_size == 32 and model.patch_embed.img_size == (64, 64)
    plain = build_model(load_config("toy_detail_dart", ["data.grid_img_size=null", trunk_override]))
    assert plain.patch_embed.scorer_input_size == 64  # default: min(img_size, 224), the full image


def test_grid_img_size_conflicts_are_errors():
    with pytest.raises(ValueError, match="scorer_input_size"):
        model_kwargs(load_config("toy_detail_dart", ["model.kwargs.scorer_input_size=16"]))
    with pytest.raises(ValueError, match="grid_img_size"):
        model_kwargs(load_config("toy_detail_grid_4n", ["data.grid_img_size=32"]))
    with pytest.raises(ValueError, match="exceeds"):
        model_kwargs(load_config("toy_detail_dart", ["data.grid_img_size=128"]))
    assert model_kwargs(load_config("toy_detail_grid_low", ["data.grid_img_size=32"]))["img_size"] == 32


def test_toy_config_on_imagefolder_warns_about_crops(caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="dart.engine"):
        load_config("toy_cls_dart", ["data.kind=imagefolder", f"data.root={tmp_path}"])
    assert "aug.scale=[0.08, 1.0]" in caplog.text and "data.crop_pct=0.875" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dart.engine"):
        load_config("toy_cls_dart", ["data.kind=imagefolder", "aug.scale=[0.5,1.0]", "data.crop_pct=1.0"])
        load_config("imagenet_deit_small_dart")  # DeiT's recipe, chosen explicitly
        load_config("toy_cls_dart")  # toy data: no crops at all
    assert caplog.text == ""
    one = small_object_crop_warning(load_config("toy_cls_dart", ["data.kind=imagefolder"]), {},
                                    ["data.crop_pct=0.9"])
    assert "aug.scale=[0.08" in one and "data.crop_pct=0.875" not in one
