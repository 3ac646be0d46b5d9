"""Official checkpoint key map: a state dict with the official module names loads into our models."""
import json
import re

import pytest
import timm
import torch

import dart  # noqa: F401
from dart.engine.keymap import convert, detect_family, extract_state_dict, load_into, map_key

TINY_DEIT = dict(img_size=64, num_tokens=16, scorer="mobilenetv3_small", embed_dim=48, depth=2, num_heads=3,
                 num_classes=7)


def to_official(state: dict) -> dict:
    """Our keys -> the official code's names (DeiT: DynamicAdaptiveRegionTokenizer whose `spn` wraps
    ScorePredNet -> ScorePredNetV1 with `features` and an MLP `mlp.net.{0,2}` of Linear layers)."""
    out = {}
    for k, v in state.items():
        m = re.match(r"^patch_embed\.scorer\.trunk\.(.+)$", k)
        if m:
            out["patch_embed.spn.spn.spn.features." + m.group(1)] = v.clone()
            continue
        m = re.match(r"^patch_embed\.scorer\.head\.fc([12])\.(weight|bias)$", k)
        if m:
            idx = {"1": "0", "2": "2"}[m.group(1)]
            w = v.clone()
            out[f"patch_embed.spn.spn.spn.mlp.net.{idx}.{m.group(2)}"] = w.flatten(1) if w.dim() == 4 else w
            continue
        out[k] = v.clone()
    return out


def _randomised(model):
    torch.manual_seed(1)
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}


def test_map_key_rules():
    assert map_key("module.patch_embed.spn.spn.spn.features.3.block.0.0.weight") == \
        "patch_embed.scorer.trunk.3.block.0.0.weight"
    assert map_key("patch_embed.spn.mlp.net.2.bias") == "patch_embed.scorer.head.fc2.bias"
    assert map_key("blocks.0.attn.qkv.weight") == "blocks.0.attn.qkv.weight"
    assert map_key("layers.3.mixer.A_b_log") == "layers.3.mixer.A_b_log"


def test_darvit_state_dict_maps_completely():
    model = timm.create_model("dart_deit_tiny_patch16_224", **TINY_DEIT)
    src = _randomised(model)
    official = {"model": to_official(src), "epoch": 299}
    assert detect_family(official["model"]) == "darvit"
    assert any(k.startswith("patch_embed.spn.spn.spn.mlp.net.0") for k in official["model"])
    fresh = timm.create_model("dart_deit_tiny_patch16_224", **TINY_DEIT)
    report = load_into(fresh, official)
    assert report.complete, report.summary()
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, src[k]), k


def test_unmapped_missing_and_mismatched_are_reported():
    model = timm.create_model("dart_deit_tiny_patch16_224", **TINY_DEIT)
    off = to_official(_randomised(model))
    off["head_dist.weight"] = torch.zeros(7, 48)  # distilled head: no place in our model
    del off["norm.weight"]
    off["pos_embed"] = torch.zeros(1, 50, 48)  # wrong table size
    report = load_into(model, off)
    assert report.unmapped == ["head_dist.weight"]
    assert "norm.weight" in report.missing and "pos_embed" in report.missing
    assert report.mismatched and report.mismatched[0][1] == "pos_embed"
    text = report.summary()
    assert "head_dist.weight" in text and "did not map" in text and "pos_embed" in text
    with pytest.raises(ValueError, match="do not fit"):
        load_into(model, off, strict_shapes=True)


def test_darvim_names_map():
    pytest.importorskip("dart.models.vim")
    kw = dict(img_size=64, num_tokens=16, scorer="cnn", embed_dim=32, depth=2, num_classes=5)
    model = timm.create_model("dart_vim_tiny_patch16_224", **kw)
    src = _randomised(model)
    off = to_official(src)
    for name in ("layers.0.mixer.in_proj.weight", "layers.1.mixer.A_b_log", "norm_f.weight",
                 "patch_embed.proj.weight", "pos_embed", "cls_token", "head.weight"):
        assert name in off
    assert detect_family(off) == "darvim"
    fresh = timm.create_model("dart_vim_tiny_patch16_224", **kw)
    new, report = convert(off, fresh.state_dict())
    assert report.complete, report.summary()


def test_extract_state_dict_variants():
    sd = {"a": torch.zeros(1)}
    assert extract_state_dict({"model": sd, "optimizer": {}, "epoch": 3}) is sd
    assert extract_state_dict({"state_dict": sd}) is sd
    assert extract_state_dict(sd) == sd
    with pytest.raises(ValueError):
        extract_state_dict({"epoch": 1})


def test_evaluate_loads_official_checkpoint(tmp_path, capsys):
    """dart.evaluate takes an official-style .pth and maps it; a key with no place in the model (here a
    distillation head the model lacks) is refused, naming the key, since the score would not be the
    checkpoint's model's."""
    from dart.evaluate import main
    over = ["data.toy.train_size=16", "data.toy.val_size=16", f"data.root={tmp_path / 'toy'}", "data.img_size=32",
            "model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}",
            "train.threads=1", f"output_dir={tmp_path / 'run'}"]
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    model = build_model(load_config(None, over))
    off = to_official(model.state_dict())
    off["head_dist.bias"] = torch.zeros(10)
    path = tmp_path / "darvit-toy.pth"
    torch.save({"model": off}, path)
    assert main(["--checkpoint", str(path), *over]) == 2
    assert "did not map: head_dist.bias" in capsys.readouterr().err
    assert not (tmp_path / "run" / "eval.json").exists()
    del off["head_dist.bias"]
    torch.save({"model": off}, path)
    assert main(["--checkpoint", str(path), *over]) == 0
    rec = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert rec["source"]["kind"] == "official"
    assert rec["source"]["keymap"]["complete"] and rec["source"]["keymap"]["allowed"] == []
    assert "top1" in rec and "top5" in rec and rec["val_samples"] == 16
