"""The official DART checkpoints as timm pretrained tags (`<model>.official_in1k`).

Every official layout (`tests/data/official_state_dicts.txt`) is saved as DeiT's main.py saves a
checkpoint (`model`, a different `model_ema`, optimizer, `args` as an argparse.Namespace, ...) and
loaded through `timm.create_model(<tag>, pretrained=True, pretrained_cfg_overlay=dict(file=...))`:
the weights, tokens and logits must equal those of the key-map path (`keymap.load_into`). The hub
path is tested offline, with a local Hugging Face cache folder.
"""
import csv
import json
import logging
import shutil
from pathlib import Path

import pytest
import timm
import torch

import dart  # noqa: F401
from dart.engine.keymap import load_into
from dart.engine.official_layout import read_layouts, synthetic_checkpoint
from dart.models import official
from dart.models._pretrained import checkpoint_filter_fn

DATA = Path(__file__).parent / "data"
LAYOUTS = read_layouts(DATA / "official_state_dicts.txt")
PUBLISHED = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "published.csv"
# the official README's model zoo (all in the Hugging Face repository yinkx3/DART)
MODEL_ZOO = ["darvit-tiny.pth", "darvit-tiny-v2.pth", "darvit-tiny-ft121p.pth", "darvit-sm.pth",
             "darvit-sm-ft144p.pth", "darvit-sm-ft288p.pth", "darvit-sm-ft392p.pth", "darvim-tiny.pth",
             "darvim-tiny-ft2seq.pth", "darvim-sm.pth", "darvim-sm-ft2seq.pth", "darmt-L6.pth"]
TOKENIZER = ("score_norm", "score_std_floor", "sampling", "score_gate", "quantile_eps")


def save(obj, path) -> str:
    torch.save(obj, path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """darvit-tiny.pth, synthetic, in the official file format."""
    ckpt = synthetic_checkpoint(LAYOUTS["darvit_tiny"], "darvit_tiny")
    return ckpt, save(ckpt, tmp_path_factory.mktemp("official") / "darvit-tiny.pth")


def hub_cache(root: Path, files: dict) -> Path:
    """A Hugging Face cache folder holding yinkx3/DART at one snapshot with `files` {name: path}."""
    repo = root / "models--yinkx3--DART"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snap / name)
    return root


def test_every_model_zoo_file_has_a_tag_or_is_refused_by_name():
    assert sorted([p.file for p in official.OFFICIAL] + list(official.REFUSED)) == sorted(MODEL_ZOO)
    assert "DARMT" in official.REFUSED["darmt-L6.pth"]
    assert sorted(timm.list_pretrained("dart_*")) == sorted(p.name for p in official.OFFICIAL)
    for p in official.OFFICIAL:
        assert p.official in LAYOUTS, p
        cfg = timm.models.get_pretrained_cfg(p.name)
        assert (cfg.hf_hub_id, cfg.hf_hub_filename) == ("yinkx3/DART", p.file)
        assert cfg.published_top1 == p.published_top1 and cfg.official_model == p.official
        assert cfg.input_size == (3, 448, 448) and (cfg.crop_pct, cfg.interpolation) == (0.875, "bicubic")
        # the official checkpoint is the model's default tag: pretrained=True without a tag loads it
        assert timm.models.get_pretrained_cfg(p.model).hf_hub_filename == p.file
    assert not timm.models.get_pretrained_cfg("dart_videomamba_tiny_patch16_224").hf_hub_id


def test_published_top1_of_the_tags_is_the_workflows():
    """The library's published top-1 per checkpoint equals published.csv's row of that model (the
    workflow's one source of published numbers); a checkpoint with None has no row."""
    rows = [r for r in csv.DictReader(line for line in PUBLISHED.open() if not line.startswith("#"))]
    top1 = {r["model"]: float(r["top1"]) for r in rows if r["model"] and not r["model_kwargs"]}
    for p in official.OFFICIAL + official.BASELINES:
        assert top1.get(p.model) == p.published_top1, p.name
    assert sum(p.published_top1 is not None for p in official.OFFICIAL) == 8


def test_the_v2_checkpoint_has_its_own_model():
    layout = LAYOUTS["darvit_tiny_v2"]
    with torch.device("meta"):
        model = timm.create_model("dart_deit_tiny_patch16_224_v2")
    assert {k: tuple(v.shape) for k, v in checkpoint_filter_fn({"model": {k: torch.empty(s, device="meta")
            for k, s, *_ in layout}}, model).items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sum(p.numel() for p in model.parameters()) == 6755688  # the official model's count
    assert model.patch_embed.score_gate == "sigmoid2"


@pytest.mark.slow
@pytest.mark.parametrize("p", official.OFFICIAL, ids=lambda p: p.official)
def test_each_official_layout_loads_by_tag_like_the_key_map(p, tmp_path, caplog):
    ckpt = synthetic_checkpoint(LAYOUTS[p.official], p.official)
    path = save(ckpt, tmp_path / p.file)
    with caplog.at_level(logging.INFO):
        model = timm.create_model(p.name, pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    ref = timm.create_model(p.model).eval()
    report = load_into(ref, ckpt)
    assert report.complete, report.summary()

    cfg = model.pretrained_cfg
    assert (cfg["tag"], cfg["file"], cfg.get("published_top1")) == ("official_in1k", path, p.published_top1)
    assert cfg["input_size"] == (3, 448, 448)
    ours, theirs = model.state_dict(), ref.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    # the weights are `model`'s, not `model_ema`'s (the published top-1 is the model's)
    assert torch.equal(ours["patch_embed.proj.weight"], ckpt["model"]["patch_embed.proj.weight"])
    # the key map is the model's checkpoint_filter_fn
    mapped = checkpoint_filter_fn(ckpt, model)
    assert mapped.keys() == ours.keys() and all(torch.equal(mapped[k], ours[k]) for k in ours)
    # the tokenizer uses the official convention, as after the key map, and the load says so
    pe, pe_ref = model.patch_embed, ref.patch_embed
    assert [getattr(pe, a) for a in TOKENIZER] == [getattr(pe_ref, a) for a in TOKENIZER]
    assert (pe.score_norm, pe.sampling) == ("batch", "reference")
    assert "official convention" in caplog.text and p.name in caplog.text
    assert model.pretrained_source["keymap"]["complete"]

    x = torch.rand(2, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tok, tok_ref = model.tokenize(x), ref.tokenize(x)
        tok, tok_ref = (tok[0], tok_ref[0]) if isinstance(tok, tuple) else (tok, tok_ref)
        logits, logits_ref = model(x), ref(x)
    assert tok.shape[1] >= p_tokens(p) and torch.equal(tok, tok_ref)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all() and torch.equal(logits, logits_ref)


def p_tokens(p) -> int:
    return int(p.model.rsplit("_", 1)[1]) if p.model.rsplit("_", 1)[1] in ("121", "144", "288", "392") else 196


def test_pretrained_true_reads_the_hub_cache_offline(tiny_file, tmp_path, monkeypatch):
    """pretrained=True, with and without the tag, finds the file in a local Hugging Face cache
    (cache_dir, or HF_HUB_CACHE) with HF_HUB_OFFLINE set, and loads `model`."""
    from huggingface_hub import constants
    ckpt, path = tiny_file
    cache = hub_cache(tmp_path / "hub", {"darvit-tiny.pth": path})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    kw = dict(depth=12)
    a = timm.create_model("dart_deit_tiny_patch16_224.official_in1k", pretrained=True, cache_dir=str(cache), **kw)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    b = timm.create_model("dart_deit_tiny_patch16_224", pretrained=True, **kw)
    for m in (a, b):
        assert torch.equal(m.pos_embed, ckpt["model"]["pos_embed"])
        assert m.pretrained_cfg["tag"] == "official_in1k" and m.patch_embed.sampling == "reference"
        assert "snapshots" in m.pretrained_source["source"]


def test_a_missing_file_or_no_network_is_one_line_naming_file_and_tag(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError) as e:
        timm.create_model("dart_deit_small_patch16_224_392.official_in1k", pretrained=True, cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "darvit-sm-ft392p.pth" in msg and "dart_deit_small_patch16_224_392.official_in1k" in msg
    assert "HF_HUB_OFFLINE" in msg and "yinkx3/DART" in msg
    with pytest.raises(FileNotFoundError, match=r"dart_vim_tiny_patch16_224\.official_in1k: checkpoint file .*nope"):
        timm.create_model("dart_vim_tiny_patch16_224", pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model("dart_videomamba_tiny_patch16_224", pretrained=True)


def test_another_num_classes_keeps_its_new_head(tiny_file):
    ckpt, path = tiny_file
    model = timm.create_model("dart_deit_tiny_patch16_224", pretrained=True, num_classes=10,
                              pretrained_cfg_overlay=dict(file=path))
    assert model.head.weight.shape == (10, 192)
    assert torch.equal(model.blocks[3].mlp.fc1.weight, ckpt["model"]["blocks.3.mlp.fc1.weight"])
    assert model.pretrained_source["keymap"]["allowed"] == ["head.bias", "head.weight"]


def test_darmt_and_pickled_code_are_refused(tmp_path):
    named = save({"model": {}}, tmp_path / "darmt-L6.pth")
    with pytest.raises(ValueError, match="DARMT"):
        timm.create_model("dart_deit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=named))
    darmt = save({"model": {"pre_image.spn.spn.spn.features.0.0.weight": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="DARMT"):
        timm.create_model("dart_deit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=darmt))
    marker = tmp_path / "ran"
    evil = save({"model": {}, "args": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"dart_deit_tiny_patch16_224\.official_in1k: checkpoint .*evil\.pth"):
        timm.create_model("dart_deit_tiny_patch16_224", pretrained=True, pretrained_cfg_overlay=dict(file=evil))
    assert not marker.exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_dart_evaluate_takes_the_tag(tiny_file, tmp_path, capsys):
    """dart.evaluate --pretrained <tag> --checkpoint <file>, on fake ImageNet: the tag's model, its
    weights through the key map, the published top-1 and the transform in eval.json; a tag whose file
    is not at hand is one line naming it."""
    from dart.data.fake import main as fake
    from dart.evaluate import main
    ckpt, path = tiny_file
    assert fake(["--layout", "imagefolder", "--out", str(tmp_path / "in1k")]) == 0
    common = ["--config", "imagenet_official_eval", f"data.root={tmp_path / 'in1k'}", "data.num_workers=0",
              "eval.batch_size=2", "train.threads=1"]
    out = tmp_path / "eval.json"
    assert main([*common, "--pretrained", "dart_deit_tiny_patch16_224.official_in1k", "--checkpoint", path,
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    src = rec["source"]
    assert rec["model"] == "dart_deit_tiny_patch16_224" and rec["img_size"] == 448 and rec["amp"] == "off"
    assert (src["kind"], src["name"], src["file"], src["published_top1"]) == (
        "pretrained", "dart_deit_tiny_patch16_224.official_in1k", path, 73.8)
    assert src["keymap"]["complete"] and src["keymap"]["official_convention"] and src["transform_differs"] == []
    assert rec["val_samples"] == 4 and rec["checkpoint"] == path
    assert rec["epochs"] is None  # what the file says (nothing here), not the config's train.epochs
    capsys.readouterr()
    assert main([*common, "--pretrained", "dart_deit_small_patch16_224_288.official_in1k",
                 "--out", str(tmp_path / "e2.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "darvit-sm-ft288p.pth" in err and "official_in1k" in err
