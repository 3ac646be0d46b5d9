"""Config loading: packaged configs validate; unknown keys and wrong types are errors naming the key."""
import os

import pytest
import yaml

from dart.engine.config import (ConfigError, apply_overrides, deep_merge, load_config, packaged_configs,
                                parse_override, validate)


def test_packaged_configs_validate():
    names = packaged_configs()
    for want in ("toy_cls_grid", "toy_cls_dart", "toy_seg_grid", "toy_seg_dart", "toy_video_grid",
                 "toy_video_dart", "imagenet_deit_small_dart"):
        assert want in names
    for n in names:
        cfg = load_config(n)
        assert cfg["name"] == n and cfg["output_dir"] == os.path.join("runs", n)


def test_embedded_default_is_toy_classification():
    cfg = load_config(None)
    assert cfg["task"] == "classification" and cfg["data"]["kind"] == "toy"
    assert cfg["model"]["name"].startswith("dart_")


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"train": {"epochs": 2, "learning_rate": 0.1}}))
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.learning_rate'"):
        load_config(str(p))
    with pytest.raises(ConfigError, match=r"unknown config key 'colour'"):
        load_config(None, ["colour=red"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'train\.epochs'"):
        load_config(None, ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"'data\.kind'"):
        load_config(None, ["data.kind=lmdb"])
    with pytest.raises(ConfigError, match=r"'aug\.scale'"):
        load_config(None, ["aug.scale=[0.5]"])


def test_overrides_are_yaml_and_nested():
    cfg = load_config("toy_cls_grid", ["train.lr=3e-4", "aug.scale=[0.5, 1.0]", "model.kwargs.depth=2",
                                       "train.amp=off", "data.root=/x"])
    assert cfg["train"]["lr"] == pytest.approx(3e-4)
    assert cfg["aug"]["scale"] == [0.5, 1.0]
    assert cfg["model"]["kwargs"] == {"patch_size": 16, "embed_dim": 96, "depth": 2, "num_heads": 3}
    assert cfg["train"]["amp"] == "off"  # YAML 1.1 reads off as false; normalised
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"task": "video"}, ["task.x=1"])


def test_model_kwargs_replaced_not_merged():
    out = deep_merge({"model": {"kwargs": {"num_tokens": 16}, "name": "a"}}, {"model": {"kwargs": {"depth": 2}}})
    assert out["model"]["kwargs"] == {"depth": 2} and out["model"]["name"] == "a"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config")
    p = tmp_path / "broken.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))


def test_schema_forbids_extra_keys_everywhere():
    cfg = load_config(None)
    cfg["model"]["decoder"]["extra"] = 1
    with pytest.raises(ConfigError, match=r"model\.decoder\.extra"):
        validate(cfg)


def test_cli_reports_config_errors(capsys):
    from dart.train import main
    assert main(["train.bogus=1"]) == 2
    assert "train.bogus" in capsys.readouterr().err
