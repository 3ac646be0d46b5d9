"""Wrong numbers must not pass silently (issue 10): checkpoint/config mismatches, bad inputs and
faults end in a clear one-line error (exit 2 for user errors, 3 for a non-finite loss)."""
import json
import os
import stat

import numpy as np
import pytest
import torch

from dart.engine import checkpoint as ckpt
from dart.engine.config import ConfigError, load_config

TINY = ["data.toy.train_size=32", "data.toy.val_size=16", "data.img_size=32",
        "model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}",
        "train.epochs=1", "train.batch_size=16", "train.warmup_epochs=0", "eval.batch_size=16", "train.threads=1"]


def tiny(tmp_path, run="run", *extra):
    return [f"data.root={tmp_path / 'toy'}", *TINY, f"output_dir={tmp_path / run}", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny DART run (1 epoch) shared by the evaluate/resume tests; they copy it before changing it."""
    from dart.train import main
    tmp = tmp_path_factory.mktemp("trained")
    threads = torch.get_num_threads()
    try:
        assert main(tiny(tmp)) == 0
    finally:
        torch.set_num_threads(threads)
    return tmp


def _one_line_error(err: str, *names):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("dart.")]
    assert lines, err
    assert "Traceback" not in err, err
    for n in names:
        assert n in lines[-1], (n, lines[-1])


# ---------------------------------------------------------------- 1. evaluate and the key map
def test_evaluate_refuses_a_checkpoint_that_does_not_map(tmp_path, trained, capsys):
    from dart.evaluate import main
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"encoder.layer0.weight": torch.randn(4, 4), "decoder.bias": torch.randn(4)}}, foreign)
    out = tmp_path / "eval.json"
    rc = main(["--checkpoint", str(foreign), "--out", str(out), *tiny(trained)])
    err = capsys.readouterr().err
    assert rc == 2
    assert not out.exists()  # no number from a randomly initialised model
    _one_line_error(err, str(foreign), "encoder.layer0.weight")
    assert "not in the checkpoint" in err


def test_evaluate_allows_only_a_differing_classifier_head(tmp_path, trained, capsys):
    """The documented allow-list: the classifier head when data.num_classes differs; the JSON says so."""
    import timm
    from dart.engine.build import build_model
    from dart.evaluate import main
    from tests.test_keymap import to_official
    cfg = load_config(None, tiny(trained, "run", "data.num_classes=7"))
    official = to_official(build_model(cfg).state_dict())
    assert timm.is_model(cfg["model"]["name"]) and "head.weight" in official
    path = tmp_path / "official.pth"
    torch.save({"model": official}, path)
    out = tmp_path / "eval.json"
    assert main(["--checkpoint", str(path), "--out", str(out), *tiny(trained)]) == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())
    km = ev["source"]["keymap"]
    assert km["complete"] is False and sorted(km["allowed"]) == ["head.bias", "head.weight"]
    # a missing block weight is not on the list
    del official["blocks.0.mlp.fc1.weight"]
    torch.save({"model": official}, path)
    out.unlink()
    assert main(["--checkpoint", str(path), "--out", str(out), *tiny(trained)]) == 2
    assert "blocks.0.mlp.fc1.weight" in capsys.readouterr().err and not out.exists()


def test_aggregate_refuses_an_eval_without_a_complete_map(tmp_path):
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("aggregate", os.path.join(root, "workflow/scripts/aggregate.py"))
    agg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agg)
    run = tmp_path / "runs" / "exp" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"task": "classification", "top1": 50.0, "seed": 0}))
    ev = tmp_path / "eval" / "exp" / "seed0.json"
    ev.parent.mkdir(parents=True)
    good = {"top1": 51.0, "source": {"kind": "run", "weights": "model"}}
    ev.write_text(json.dumps(good))
    assert agg.runs_table([str(run / "metrics.json")], [str(ev)], {})["top1"].tolist() == [51.0]
    bad = {"top1": 9.0, "source": {"kind": "official", "keymap": {"complete": False, "missing": ["head.weight"]}}}
    ev.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"seed0\.json.*key map"):
        agg.runs_table([str(run / "metrics.json")], [str(ev)], {})
    ev.write_text(json.dumps({"top1": 9.0}))  # no record of where the weights came from
    with pytest.raises(ValueError, match=r"seed0\.json"):
        agg.runs_table([str(run / "metrics.json")], [str(ev)], {})


# ---------------------------------------------------------------- 2. config changes vs the checkpoint
def _copy_run(src, dst):
    import shutil
    shutil.copytree(src / "run", dst)


def test_resume_refuses_model_and_data_changes(tmp_path, trained, capsys):
    from dart.train import main
    _copy_run(trained, tmp_path / "run")
    before = (tmp_path / "run" / "config.yaml").read_text()
    rc = main([*tiny(trained, "x"), f"output_dir={tmp_path / 'run'}", "--resume", "train.lr=0.5",
               "model.kwargs.num_tokens=1"])
    err = capsys.readouterr().err
    assert rc == 2
    _one_line_error(err, "train.lr", "model.kwargs.num_tokens", "checkpoint_last.pt")
    assert (tmp_path / "run" / "config.yaml").read_text() == before  # the record is not rewritten


def test_resume_may_extend_epochs(tmp_path, trained, capsys):
    from dart.train import main
    _copy_run(trained, tmp_path / "run")
    rc = main([*tiny(trained, "x"), f"output_dir={tmp_path / 'run'}", "--resume", "train.epochs=2",
               "eval.batch_size=8"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["epochs"] == 2 and len(m["loss_curve"]) == 2


def test_evaluate_refuses_a_config_the_checkpoint_was_not_trained_with(tmp_path, trained, capsys):
    from dart.evaluate import main
    out = tmp_path / "eval.json"
    rc = main(["--checkpoint", str(trained / "run" / "checkpoint_last.pt"), "--out", str(out),
               *tiny(trained), "model.kwargs.num_tokens=1"])
    assert rc == 2 and not out.exists()
    _one_line_error(capsys.readouterr().err, "model.kwargs.num_tokens")
    # evaluation settings may differ; training-only settings are taken from the checkpoint
    rc = main(["--checkpoint", str(trained / "run" / "checkpoint_last.pt"), "--out", str(out),
               *tiny(trained), "eval.batch_size=4", "train.epochs=9", "train.seed=5",
               "model.init_checkpoint=elsewhere.pt"])
    assert rc == 0, capsys.readouterr().err
    ev = json.loads(out.read_text())
    assert ev["epochs"] == 1 and ev["seed"] == 0 and ev["num_tokens"] == 4


# ---------------------------------------------------------------- 3. NaN inputs
def test_schema_rejects_a_zero_std():
    with pytest.raises(ConfigError, match=r"data\.std"):
        load_config(None, ["data.std=[0.5, 0, 0.5]"])


@pytest.mark.parametrize("model", ["grid", "dart"])
def test_one_nan_pixel_ends_in_the_clean_non_finite_stop(tmp_path, model, capsys):
    """One NaN pixel in the training data: exit 3, the last good checkpoint kept, for grid and DART."""
    from dart.train import main
    over = tiny(tmp_path)
    if model == "grid":
        over.append("model.name=deit_tiny_patch16_224")
        over[over.index(next(o for o in over if o.startswith("model.kwargs")))] = \
            "model.kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}"
    assert main(over) == 0, capsys.readouterr().err
    xs = tmp_path / "toy" / "train_x.npy"
    x = np.load(xs).astype(np.float32)
    x[3, 10, 10, 0] = np.nan
    np.save(xs, x)
    good = (tmp_path / "run" / "checkpoint_last.pt").read_bytes()
    assert main([*over, "--resume", "train.epochs=2"]) == 3
    assert "non-finite" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoint_last.pt").read_bytes() == good


def test_a_models_floating_point_error_is_the_non_finite_stop(tmp_path, monkeypatch, capsys):
    """The engine's contract with a model's own finiteness check (the DART tokenizer's, on its
    scores): a FloatingPointError in the forward pass is a non-finite loss, exit 3."""
    import dart.engine.loop as loop
    from dart.train import main

    class Checked(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if not torch.isfinite(x).all():
                raise FloatingPointError("non-finite scores")
            return self.inner(x)

    build = loop.build_model
    monkeypatch.setattr(loop, "build_model", lambda cfg, **kw: Checked(build(cfg, **kw)))
    over = tiny(tmp_path)
    assert main(over) == 0
    xs = tmp_path / "toy" / "train_x.npy"
    x = np.load(xs).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    np.save(xs, x)
    assert main([*over, "--resume", "train.epochs=2"]) == 3
    assert "non-finite scores" in capsys.readouterr().err


# ---------------------------------------------------------------- 5. messages and exit codes
def test_typo_in_model_kwargs_is_a_one_line_exit_2(tmp_path, capsys):
    from dart.evaluate import main as evaluate
    from dart.train import main as train
    assert train(tiny(tmp_path, "run", "model.kwargs.num_tokns=4")) == 2
    _one_line_error(capsys.readouterr().err, "model.kwargs", "num_tokns")
    torch.save({}, tmp_path / "empty_dict.pth")
    typo = tiny(tmp_path, "run", "model.kwargs.num_tokns=4")
    assert evaluate(["--checkpoint", str(tmp_path / "empty_dict.pth"), *typo]) == 2
    _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", bytes(range(256)) * 8, "truncated"])
def test_bad_checkpoint_files_name_the_path(tmp_path, trained, content, capsys):
    from dart.evaluate import main as evaluate
    from dart.train import main as train
    path = tmp_path / "run" / "checkpoint_last.pt"
    path.parent.mkdir()
    if content == "truncated":
        content = (trained / "run" / "checkpoint_last.pt").read_bytes()[:5000]
    path.write_bytes(content)
    with pytest.raises(ckpt.CheckpointError, match="checkpoint_last.pt"):
        ckpt.load(str(path))
    assert evaluate(["--checkpoint", str(path), "--out", str(tmp_path / "e.json"), *tiny(trained)]) == 2
    _one_line_error(capsys.readouterr().err, str(path))
    assert train([*tiny(trained, "x"), f"output_dir={tmp_path / 'run'}", "--resume"]) == 2
    _one_line_error(capsys.readouterr().err, str(path))


def test_a_run_checkpoint_missing_its_keys_is_named(tmp_path, trained, capsys):
    from dart.train import main as train
    path = tmp_path / "run" / "checkpoint_last.pt"
    path.parent.mkdir()
    state = torch.load(trained / "run" / "checkpoint_last.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, path)
    assert train([*tiny(trained, "x"), f"output_dir={tmp_path / 'run'}", "--resume"]) == 2
    _one_line_error(capsys.readouterr().err, str(path), "optimizer")


def write_image_folder(root, per_class):
    """A tiny ImageFolder: train/ and val/ with classes a and b of flat 16-px PNGs."""
    from PIL import Image
    for split in ("train", "val"):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(d / f"{i}.png")


def test_decompression_bomb_is_skipped_like_any_unreadable_file(tmp_path, monkeypatch):
    from PIL import Image

    from dart.data import SkipLog, build_datasets, collate
    write_image_folder(tmp_path / "imgs", per_class=2)
    Image.new("L", (200, 200)).save(tmp_path / "imgs" / "val" / "a" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200x200 > 2x the limit: PIL's bomb error
    _, val, _ = build_datasets(load_config(None, ["data.kind=imagefolder", f"data.root={tmp_path / 'imgs'}",
                                                  "data.num_classes=2", "data.img_size=16"]))
    skips = SkipLog()
    n = 0
    for x, _, skipped in torch.utils.data.DataLoader(val, batch_size=8, collate_fn=collate):
        skips.add(skipped)
        n += x.shape[0]
    assert n == 4 and [os.path.basename(p) for p in skips.paths] == ["bomb.png"]
    assert "DecompressionBomb" in next(iter(skips.paths.values()))


@pytest.mark.parametrize("value", ["16.5", "true", "'16'", "0"])
def test_num_tokens_is_not_coerced(value):
    import timm
    with pytest.raises((ValueError, TypeError), match="num_tokens"):
        timm.create_model("dart_deit_tiny_patch16_224", img_size=64, embed_dim=32, depth=1, num_heads=2,
                          num_tokens=__import__("yaml").safe_load(value))


def test_empty_batch_is_a_clear_error():
    import timm
    m = timm.create_model("dart_deit_tiny_patch16_224", img_size=32, num_tokens=4, embed_dim=32, depth=1,
                          num_heads=2, num_classes=3)
    with pytest.raises(ValueError, match="batch of 0 images"):
        m(torch.zeros(0, 3, 32, 32))


def test_binary_config_file_is_a_config_error(tmp_path, capsys):
    from dart.train import main
    bad = tmp_path / "cfg.yaml"
    bad.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="cfg.yaml"):
        load_config(str(bad))
    assert main(["--config", str(bad)]) == 2
    _one_line_error(capsys.readouterr().err, "cfg.yaml")


def test_outputs_get_normal_permissions(tmp_path, trained):
    old = os.umask(0o022)
    try:
        ckpt.write_json_atomic({"a": 1}, str(tmp_path / "x.json"))
        ckpt.save_atomic({"a": torch.zeros(1)}, str(tmp_path / "x.pt"))
        os.umask(0o027)
        ckpt.write_json_atomic({"a": 1}, str(tmp_path / "y.json"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "x.pt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "y.json").st_mode) == 0o640


def test_overrides_may_stand_anywhere(tmp_path):
    from dart.evaluate import parse_args as eval_args
    from dart.train import parse_args as train_args
    a = train_args(["--config", "toy_cls_dart", "a=1", "--output-dir", "D", "b=2", "--resume", "c=3"])
    assert a.overrides == ["a=1", "b=2", "c=3"] and a.output_dir == "D" and a.resume
    a = eval_args(["x=1", "--checkpoint", "C", "y=2", "--out", "O", "z=3"])
    assert a.overrides == ["x=1", "y=2", "z=3"] and a.checkpoint == "C"


def _ade(root, n=3, size=24):
    from PIL import Image
    for sub in ("training", "validation"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "annotations" / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((size, size, 3), 30 * i, np.uint8)).save(root / "images" / sub / f"{i}.jpg")
            Image.fromarray(np.full((size, size), i % 3, np.uint8)).save(root / "annotations" / sub / f"{i}.png")


def test_evaluate_strict_data_error_is_exit_2(tmp_path, capsys):
    from dart.evaluate import main as evaluate
    from dart.train import main as train
    write_image_folder(tmp_path / "imgs", per_class=4)
    (tmp_path / "imgs" / "val" / "a" / "broken.png").write_bytes(b"not a png")
    over = ["data.kind=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.num_classes=2", "data.img_size=16",
            "model.name=deit_tiny_patch16_224", "model.kwargs={patch_size: 8, embed_dim: 16, depth: 1, num_heads: 2}",
            "train.epochs=1", "train.batch_size=4", "eval.batch_size=4", "train.threads=1",
            f"output_dir={tmp_path / 'run'}"]
    assert train(over) == 0
    capsys.readouterr()
    rc = evaluate(["--checkpoint", str(tmp_path / "run" / "checkpoint_last.pt"), *over, "data.strict=true"])
    err = capsys.readouterr().err
    assert rc == 2, err
    _one_line_error(err, "broken.png")


def test_missing_split_folder_is_not_called_a_dataset_root(tmp_path):
    from dart.data import build_datasets
    (tmp_path / "imgs" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e:
        build_datasets(load_config(None, ["data.kind=imagefolder", f"data.root={tmp_path / 'imgs'}"]))
    assert "data.val_split" in str(e.value) and "dataset root" not in str(e.value)
    assert "split folder" in str(e.value)


def test_ade20k_layout_dataset_is_named_by_its_folder(tmp_path):
    from dart.data import build_datasets
    _ade(tmp_path / "myseg")
    _, _, info = build_datasets(load_config(None, ["task=segmentation", "data.kind=ade20k", "data.num_classes=3",
                                                   f"data.root={tmp_path / 'myseg'}"]))
    assert info["dataset"] == "myseg"


def test_top5_only_when_there_are_more_than_5_classes():
    from dart.engine.distributed import DistInfo
    from dart.engine.metrics import TopK
    info = DistInfo()
    for classes, want in ((4, None), (5, None), (6, 50.0)):
        acc = TopK("cpu")
        logits = torch.arange(classes, dtype=torch.float).repeat(2, 1)  # class order: last ... first
        acc.update(logits, torch.tensor([classes - 1, 0]))  # top-1 of the first, last of the second
        res = acc.compute(info)
        assert res["top1"] == 50.0 and res["top5"] == want, (classes, res)


def test_toy_cli_bad_set_is_exit_2(capsys, tmp_path):
    from dart.data.toy import main
    assert main(["--out", str(tmp_path / "t"), "--set", "train_size=abc"]) == 2
    _one_line_error(capsys.readouterr().err, "train_size")
    assert main(["--out", str(tmp_path / "t"), "--set", "bogus=3"]) == 2
    _one_line_error(capsys.readouterr().err, "bogus")


# ---------------------------------------------------------------- bench CLIs: the same convention
TINY_BENCH = "deit_tiny_patch16_224:img_size=32,patch_size=16,embed_dim=16,depth=1,num_heads=2"


@pytest.mark.parametrize("sizes", [["0"], ["4", "-1"]])
def test_throughput_refuses_non_positive_batch_sizes(tmp_path, sizes, capsys):
    from bench import throughput as tp
    with pytest.raises(SystemExit) as e:
        tp.main(["--models", TINY_BENCH, "--batch-sizes", *sizes, "--out", str(tmp_path / "t.csv")])
    assert e.value.code == 2 and "--batch-sizes" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()


def test_bench_out_in_a_file_path_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    """A path whose parent is a file cannot be written by anyone (root included)."""
    from bench import throughput as tp
    (tmp_path / "afile").write_text("x")
    measured = []
    monkeypatch.setattr(tp, "run_sweep", lambda *a, **k: measured.append(1) or [])
    assert tp.main(["--models", TINY_BENCH, "--batch-sizes", "1", "--out", str(tmp_path / "afile" / "t.csv")]) == 2
    err = capsys.readouterr().err
    assert "afile" in err and "Traceback" not in err
    from bench import tokenizer_split as ts
    monkeypatch.setattr(ts, "run", lambda *a, **k: measured.append(1) or [])
    assert ts.main(["--batch-sizes", "1", "--out", str(tmp_path / "afile" / "s.csv")]) == 2
    assert "afile" in capsys.readouterr().err and measured == []


def test_bench_csvs_get_normal_permissions(tmp_path):
    from bench import complexity
    from bench import throughput as tp
    old = os.umask(0o022)
    try:
        tp.write_rows_atomic(str(tmp_path / "t.csv"), [{"model": "m"}])
        complexity.write_csv_atomic([{"model": "m"}], str(tmp_path / "c.csv"), ["model"])
    finally:
        os.umask(old)
    for f in ("t.csv", "c.csv"):
        assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == 0o644, f


def test_complexity_and_plots_user_errors_are_exit_2(tmp_path, capsys):
    from bench import complexity, plots
    assert complexity.main(["no_such_model_xyz"]) == 2
    _one_line_error(capsys.readouterr().err.replace("bench.", "dart.bench."), "no_such_model_xyz")
    assert complexity.main(["deit_tiny_patch16_224", "--model-kwargs", "img_size"]) == 2
    assert plots.main([str(tmp_path / "missing.csv")]) == 2
    _one_line_error(capsys.readouterr().err.replace("bench.", "dart.bench."), "missing.csv")


def test_evaluate_checks_its_output_before_evaluating(tmp_path, trained, capsys):
    from dart.evaluate import main
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "eval.json"
    assert main(["--checkpoint", str(trained / "run" / "checkpoint_last.pt"), "--out", str(out), *tiny(trained)]) == 2
    err = capsys.readouterr().err
    _one_line_error(err, str(out))
    assert "eval: top1" not in err  # refused before any evaluation
