"""Official checkpoint key map, checked against the official models' own state-dict key lists.

`tests/data/official_state_dicts.txt` is a verbatim copy of the project's reference file: every
official DART model's state-dict keys and shapes, dumped from the official models built in memory
(see its header). A synthetic official checkpoint is made from those names and shapes with random
values, loaded into the matching model of ours, and every tensor is checked to have arrived.
"""
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import timm
import torch

import dart  # noqa: F401
from dart.engine.keymap import convert, detect_family, extract_state_dict, head_version, load_into, map_key

REFERENCE = Path(__file__).parent / "data" / "official_state_dicts.txt"

# official model -> (our registered model, kwargs). darvit_tiny_v2 has no registered name: it is
# DeiT-Ti with the v2 scorer (the official head's gate is set on load, see the test below).
OURS = {
    "darvit_tiny": ("dart_deit_tiny_patch16_224", {}),
    "darvit_tiny_v2": ("dart_deit_tiny_patch16_224", {"scorer": "mobilenetv3_small_v2"}),
    "darvit_tiny_121p": ("dart_deit_tiny_patch16_224_121", {}),
    "darvit_sm": ("dart_deit_small_patch16_224", {}),
    "darvit_sm_144p": ("dart_deit_small_patch16_224_144", {}),
    "darvit_sm_288p": ("dart_deit_small_patch16_224_288", {}),
    "darvit_sm_392p": ("dart_deit_small_patch16_224_392", {}),
    "darvim_tiny": ("dart_vim_tiny_patch16_224", {}),
    "darvim_tiny_2seq": ("dart_vim_tiny_patch16_224_392", {}),
    "darvim_sm": ("dart_vim_small_patch16_224", {}),
    "darvim_sm_2seq": ("dart_vim_small_patch16_224_392", {}),
}
REFUSED = {"DARMT_L6"}  # RMT backbone: not built here
SCORER = "patch_embed.spn.spn.spn."


@dataclass
class Official:
    name: str
    keys: list = field(default_factory=list)  # (key, shape, role, kind)
    num_patches: int = 0
    head: str = ""  # "v1" | "v2"
    summary: dict = field(default_factory=dict)  # total, trainable, trunk, head, rest, keys


def read_reference(path=REFERENCE) -> dict[str, Official]:
    """The official models of the key-list file: their keys (`official_layout.read_layouts`, what
    the smoke scale's made-up checkpoints are built from), token budget, head and summary row."""
    from dart.engine.official_layout import read_layouts
    layouts = read_layouts(path)
    models: dict[str, Official] = {}
    summary = {}
    current = None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line[1:].split("|")] if line.startswith("# ") else []
        if len(cells) == 8 and all(c.isdigit() for c in cells[1:7]):  # a row of the summary table
            summary[cells[0]] = dict(zip(("total", "trainable", "trunk", "head", "rest", "keys"), map(int, cells[1:7])))
            continue
        m = re.match(r"^## (\w+) \(", line)
        if m:
            current = models[m.group(1)] = Official(m.group(1))
            continue
        if current is None:
            continue
        m = re.search(r"model\.num_patches=(\d+)", line)
        if m:
            current.num_patches = int(m.group(1))
        m = re.search(r"head (v[12]) ", line)
        if line.startswith("# scorer:") and m:
            current.head = m.group(1)
    for name, model in models.items():
        model.keys, model.summary = layouts[name], summary[name]
    return models


REFERENCE_MODELS = read_reference()


def synthetic_checkpoint(official: Official) -> dict:
    """{'model': state} with the official names and shapes; every tensor holds different values."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for i, (key, shape, _, _) in enumerate(official.keys):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + i, dtype=torch.int64)
        else:
            state[key] = torch.randn(shape, generator=gen) + i  # offset: no two tensors alike
    return {"model": state, "model_ema": {k: v + 1 for k, v in state.items()}, "epoch": 299}


def to_official(state: dict) -> dict:
    """A small model's state dict under the official scorer names (for tests of the plumbing; the
    names themselves are checked against the reference above)."""
    out = {}
    for k, v in state.items():
        if ".scorer.head.fc" in k and v.dim() == 4:
            v = v.flatten(1)  # v1 head: 1x1 conv -> Linear
        k = k.replace("patch_embed.scorer.trunk.", SCORER + "features.")
        k = k.replace("patch_embed.scorer.head.fc1.", SCORER + "mlp.net.0.")
        out[k.replace("patch_embed.scorer.head.fc2.", SCORER + "mlp.net.2.")] = v
    return out


def test_the_reference_file_is_read_completely():
    assert set(REFERENCE_MODELS) == set(OURS) | REFUSED
    for m in REFERENCE_MODELS.values():
        assert len(m.keys) == m.summary["keys"], m.name
        params = sum(torch.Size(s).numel() for _, s, _, kind in m.keys if kind == "param")
        assert params == m.summary["total"], m.name
        assert m.head in ("v1", "v2") and m.num_patches or m.name in REFUSED


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OURS))
def test_official_checkpoint_loads_every_tensor(name, caplog):
    official = REFERENCE_MODELS[name]
    variant, kwargs = OURS[name]
    model = timm.create_model(variant, **kwargs)
    ckpt = synthetic_checkpoint(official)
    src = ckpt["model"]
    with caplog.at_level(logging.INFO):
        report = load_into(model, ckpt)

    # every key mapped, nothing missing, no mismatch, one source per tensor of ours
    assert report.complete, report.summary()
    ours = model.state_dict()
    assert len(report.mapped) == len(src) == len(ours)
    assert {d for _, d in report.mapped} == set(ours)
    # each tensor of ours holds the values of the official tensor it came from (not the EMA copy)
    roles = {k: r for k, _, r, _ in official.keys}
    for s, d in report.mapped:
        assert torch.equal(ours[d].reshape(src[s].shape), src[s]), (s, d)
        where = {"frozen": "patch_embed.scorer.trunk.", "trainable": "patch_embed.scorer.head."}.get(roles[s])
        if where:
            assert d.startswith(where), (s, d)
        else:
            assert ".scorer." not in d, (s, d)
    # the v2 head's Linear layers load as they are: mlp.net.0 C->H, mlp.net.2 H->C
    head = model.patch_embed.scorer.head
    if official.head == "v2":
        assert torch.equal(head.fc1.weight, src[SCORER + "mlp.net.0.weight"])
        assert torch.equal(head.fc2.bias, src[SCORER + "mlp.net.2.bias"])
        assert head.fc2.weight.shape[0] == head.fc1.weight.shape[1] > 1

    # parameter counts: trunk, head and total as in the reference's summary table
    trunk = model.patch_embed.scorer.trunk
    assert _params(trunk) == official.summary["trunk"]
    assert _params(head) == official.summary["head"]
    assert _params(model) == official.summary["total"]
    assert model.patch_embed.num_tokens == official.num_patches

    # the tokenizer now works as the official model was trained, and says so
    pe = model.patch_embed
    assert report.family == name[:6] and report.head_version == official.head and report.official_convention
    assert (pe.score_norm, pe.score_std_floor, pe.sampling) == ("batch", 0.0, "reference")
    assert pe.score_gate == {"v1": "sigmoid_offset", "v2": "sigmoid2"}[official.head]
    assert not any(p.requires_grad for p in trunk.parameters())
    assert all(p.requires_grad for p in head.parameters())
    assert "official convention" in caplog.text


def test_official_convention_is_applied_on_load_and_not_otherwise():
    # the v1 gate asked for explicitly (a v2 head's own is sigmoid2), to see the loader switch it
    kw = dict(img_size=64, num_tokens=16, scorer="mobilenetv3_small_v2", embed_dim=48, depth=2, num_heads=3,
              num_classes=7, score_gate="sigmoid_offset")
    model = timm.create_model("dart_deit_tiny_patch16_224", **kw)
    pe = model.patch_embed
    assert (pe.score_norm, pe.sampling, pe.score_gate) == ("image", "centred", "sigmoid_offset")
    # our own state dict (our names): loads completely, no switch
    report = load_into(model, {"model": model.state_dict()})
    assert report.complete and report.family == "deit" and not report.official_convention
    assert (pe.score_norm, pe.sampling, pe.score_gate) == ("image", "centred", "sigmoid_offset")
    assert any(p.requires_grad for p in pe.scorer.trunk.parameters())
    # the same tensors under the official names: switched, with the v2 head's gate, trunk frozen
    official = to_official(model.state_dict())
    assert head_version(official) == "v2"
    lines = []
    report = load_into(model, official, log=lines.append)
    assert report.complete and report.family == "darvit" and report.official_convention
    assert (pe.score_norm, pe.score_std_floor, pe.sampling, pe.score_gate) == ("batch", 0.0, "reference", "sigmoid2")
    assert not any(p.requires_grad for p in pe.scorer.trunk.parameters())
    # the official trunk's BatchNorm follows the model's mode (batch statistics in training)
    assert pe.scorer.bn_mode == "train" and pe.convention == "official"
    assert model.train().patch_embed.scorer.trunk.training and not model.eval().patch_embed.scorer.trunk.training
    assert "official convention" in lines[0] and report.as_dict()["official_convention"]


def test_darmt_checkpoints_are_refused():
    ckpt = {"model": {k: torch.zeros(shape) for k, shape, _, _ in REFERENCE_MODELS["DARMT_L6"].keys}}
    assert detect_family(ckpt["model"]) == "darmt"
    model = timm.create_model("dart_deit_tiny_patch16_224", img_size=64, num_tokens=16, scorer="cnn",
                              embed_dim=48, depth=1, num_heads=3)
    with pytest.raises(ValueError, match="DARMT.*no RMT model"):
        load_into(model, ckpt)


def test_a_foreign_checkpoint_gives_an_incomplete_report():
    """Official Vim weights into a DeiT model, and an official DeiT-Ti checkpoint into DeiT-S."""
    vim = synthetic_checkpoint(REFERENCE_MODELS["darvim_tiny"])
    deit = timm.create_model("dart_deit_tiny_patch16_224")
    report = load_into(deit, vim)
    assert not report.complete and report.family == "darvim"
    assert "layers.0.mixer.A_log" in report.unmapped and "blocks.0.attn.qkv.weight" in report.missing
    # same backbone names, other widths: the shapes do not fit (and the other MobileNet's blocks differ)
    small = synthetic_checkpoint(REFERENCE_MODELS["darvit_sm"])["model"]
    _, report = convert(small, deit.state_dict())
    assert not report.complete
    assert ("pos_embed", "pos_embed", (1, 197, 384), (1, 197, 192)) in report.mismatched
    assert any(s.startswith(SCORER + "features.") for s, *_ in report.mismatched)


def test_unmapped_missing_and_mismatched_are_reported():
    kw = dict(img_size=64, num_tokens=16, scorer="mobilenetv3_small", embed_dim=48, depth=2, num_heads=3,
              num_classes=7)
    model = timm.create_model("dart_deit_tiny_patch16_224", **kw)
    off = {map_key(k): v.clone() for k, v in model.state_dict().items()}
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


def test_map_key_rules():
    assert map_key("module.patch_embed.spn.spn.spn.features.3.block.0.0.weight") == \
        "patch_embed.scorer.trunk.3.block.0.0.weight"
    assert map_key("patch_embed.spn.spn.spn.features.0.1.num_batches_tracked") == \
        "patch_embed.scorer.trunk.0.1.num_batches_tracked"
    assert map_key("patch_embed.spn.mlp.net.2.bias") == "patch_embed.scorer.head.fc2.bias"
    assert map_key("blocks.0.attn.qkv.weight") == "blocks.0.attn.qkv.weight"
    assert map_key("layers.3.mixer.A_b_log") == "layers.3.mixer.A_b_log"


def test_extract_state_dict_variants():
    sd = {"a": torch.zeros(1)}
    assert extract_state_dict({"model": sd, "model_ema": {"a": torch.ones(1)}, "epoch": 3}) is sd
    assert extract_state_dict({"state_dict": sd}) is sd
    assert extract_state_dict(sd) == sd
    with pytest.raises(ValueError):
        extract_state_dict({"epoch": 1})


def test_evaluate_loads_official_checkpoint(tmp_path, capsys):
    """dart.evaluate takes an official-style .pth and maps it; a key with no place in the model (here a
    distillation head the model lacks) is refused, naming the key, since the score would not be the
    checkpoint's model's."""
    from dart.evaluate import main
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    over = ["data.toy.train_size=16", "data.toy.val_size=16", f"data.root={tmp_path / 'toy'}", "data.img_size=32",
            "model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}",
            "train.threads=1", f"output_dir={tmp_path / 'run'}"]
    off = to_official(build_model(load_config(None, over)).state_dict())
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
    assert rec["source"]["keymap"]["official_convention"]
    assert "top1" in rec and "top5" in rec and rec["val_samples"] == 16
