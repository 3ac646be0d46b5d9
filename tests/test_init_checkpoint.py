"""model.init_checkpoint (issue 20, case 4): a run starts from the checkpoint's weights or stops; a
load that leaves part of the backbone random is an error naming the keys, never an INFO line."""
import pytest
import torch

from dart.engine import checkpoint as ckpt
from dart.engine.build import build_model
from dart.engine.config import load_config
from dart.engine.initialise import init_from_checkpoint, resample_position_table

BACKBONE = "{patch_size: 8, num_tokens: 16, score_grid: 8, scorer: cnn, embed_dim: 32, depth: 2, num_heads: 2}"
TINY = ["data.toy.train_size=32", "data.toy.val_size=16", "train.epochs=1", "train.batch_size=16",
        "train.warmup_epochs=0", "eval.batch_size=16", "train.threads=1"]


def _classification_run(tmp_path, kwargs=BACKBONE):
    """A DART classification run at the segmentation config's input size: its checkpoint_last.pt."""
    from dart.train import main
    run = tmp_path / "cls"
    assert main([f"data.root={tmp_path / 'toy_cls'}", *TINY, f"model.kwargs={kwargs}", "data.img_size=64",
                 "data.grid_img_size=32", "--output-dir", str(run)]) == 0
    return run / "checkpoint_last.pt"


def test_a_segmenter_takes_its_backbone_from_a_classification_run(tmp_path, capsys):
    """The ADE20K config's own route (a classification run's checkpoint into a segmenter): every key of
    the backbone comes from the checkpoint, the classifier head is left out, the decoder starts fresh."""
    path = _classification_run(tmp_path)
    cfg = load_config("toy_seg_dart", [f"model.kwargs={BACKBONE}"])
    seg = build_model(cfg)
    report = init_from_checkpoint(seg, str(path))
    trained = ckpt.load(str(path))["model"]
    assert sorted(report.unmapped) == ["head.bias", "head.weight"] and not report.missing
    backbone = {k[len("backbone.model."):]: v for k, v in seg.state_dict().items() if k.startswith("backbone.model.")}
    assert set(backbone) == set(trained) - {"head.weight", "head.bias"}
    assert all(torch.equal(backbone[k], trained[k]) for k in backbone)

    # end to end: the segmentation run starts from it and says so
    from dart.train import main
    capsys.readouterr()
    assert main([f"data.root={tmp_path / 'toy_seg'}", "--config", "toy_seg_dart", *TINY, f"model.kwargs={BACKBONE}",
                 f"model.init_checkpoint={path}", "--output-dir", str(tmp_path / "seg")]) == 0
    log = (tmp_path / "seg" / "train.log").read_text()
    assert f"initialised from {path}" in log and "0 keys mapped" not in log


def test_a_load_that_leaves_the_backbone_random_is_an_error(tmp_path, capsys):
    """A checkpoint of another architecture (here 48-wide blocks for a 32-wide model): exit 2, one line
    naming model.init_checkpoint and the keys that would stay random; no run folder content."""
    path = _classification_run(tmp_path, BACKBONE.replace("embed_dim: 32", "embed_dim: 48"))
    from dart.train import main
    capsys.readouterr()
    out = tmp_path / "seg"
    assert main([f"data.root={tmp_path / 'toy_seg'}", "--config", "toy_seg_dart", *TINY, f"model.kwargs={BACKBONE}",
                 f"model.init_checkpoint={path}", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dart.train: config key 'model.init_checkpoint'") and str(path) in err
    assert "segmenter's backbone" in err and "would stay random" in err and "blocks.0" in err
    assert not (out / "checkpoint_last.pt").exists()
    # and a checkpoint that maps no key at all (a foreign file)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(ckpt.CheckpointError, match=r"0 keys mapped"):
        init_from_checkpoint(build_model(load_config("toy_seg_dart", [f"model.kwargs={BACKBONE}"])), str(foreign))


def test_a_classifier_may_differ_only_in_its_head(tmp_path):
    path = _classification_run(tmp_path)
    model = build_model(load_config(None, [f"model.kwargs={BACKBONE}", "data.img_size=64", "data.grid_img_size=32",
                                           "data.num_classes=3"]))
    report = init_from_checkpoint(model, str(path))
    assert {d for _, d, _, _ in report.mismatched} == set(report.missing) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("name, src_size, dst_size", [("deit_tiny_patch16_224", 64, 96),
                                                      ("vim_tiny_patch16_224", 64, 96)])
def test_a_position_table_of_another_grid_is_resampled_keeping_the_class_token(name, src_size, dst_size):
    """Grid models fine-tuned at another input size (DeiT-S 224 -> 384, Vim 224 -> 448 in the paper's
    rows): the table is resampled over its 2-D grid and the class token's entry moves with it."""
    import timm
    import dart  # noqa: F401
    import dart.models.vim  # noqa: F401
    kw = dict(embed_dim=32, depth=1, num_classes=5)
    if name.startswith("deit"):
        kw["num_heads"] = 2
    src, dst = timm.create_model(name, img_size=src_size, **kw), timm.create_model(name, img_size=dst_size, **kw)
    table = torch.full_like(src.pos_embed, 0.25)
    ci_src = getattr(src, "cls_pos_index", 0)
    table[:, ci_src] = 7.0  # the class token's entry
    out = resample_position_table(table, dst)
    assert out.shape == dst.pos_embed.shape
    ci = getattr(dst, "cls_pos_index", 0)
    assert torch.all(out[:, ci] == 7.0)
    rest = torch.cat([out[:, :ci], out[:, ci + 1:]], 1)
    torch.testing.assert_close(rest, torch.full_like(rest, 0.25))  # a constant grid stays constant
