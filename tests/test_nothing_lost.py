"""Nothing lost (issue 20, cases 1-3): a tool removes only what it can prove it wrote (the files its
own manifest, dart_files.json, lists); a folder holding anything else is refused with one line
naming it, and every file of the user's survives."""
import json
import os

import pytest
import torch

from dart.engine import owned


def cli(capsys, module, *args):
    """Run a command line in-process: (exit status, stderr)."""
    import importlib
    capsys.readouterr()
    rc = importlib.import_module(module).main(list(args))
    return rc, capsys.readouterr().err


def one_line(r, *names):
    rc, err = r
    err = err.strip()
    assert rc == 2, (rc, err[-2000:])
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]
    for n in names:
        assert n in last, (n, last)
    return last


def tree(folder):
    """{relative path: content} of every file below `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


# ------------------------------------------------------------------- 1. dart.data.fake
def test_fake_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    x = tmp_path / "x"
    x.mkdir()
    (x / "mine.txt").write_text("keep")
    r = cli(capsys, "dart.data.fake", "--layout", "ade20k", "--out", str(x))
    one_line(r, "dart.data.fake:", str(x), "mine.txt", "--out")
    assert tree(x) == {"mine.txt": b"keep"}
    assert sorted(os.listdir(tmp_path)) == ["x"]  # no half-written set left beside it


def test_fake_replaces_only_its_own_set(tmp_path):
    from dart.data import fake
    out = tmp_path / "set"
    fake.generate("video_csv", str(out), seed=0)
    listed = owned.read(str(out))
    assert "fake.json" in listed["files"] and "clips" in listed["dirs"]
    fake.generate("ade20k", str(out), seed=1)  # another layout replaces it: no clip is left behind
    assert not (out / "clips").exists() and not (out / "train.csv").exists()
    assert json.loads((out / "fake.json").read_text())["layout"] == "ade20k"
    (out / "images" / "training" / "mine.jpg").write_bytes(b"not the generator's")
    with pytest.raises(ValueError, match=r"images/training/mine\.jpg"):
        fake.generate("ade20k", str(out), seed=2)
    assert (out / "images" / "training" / "mine.jpg").read_bytes() == b"not the generator's"
    assert json.loads((out / "fake.json").read_text())["seed"] == 1  # nothing was touched


def test_fake_into_an_unwritable_place_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = cli(capsys, "dart.data.fake", "--layout", "imagefolder", "--out", str(blocker / "sub"))
    one_line(r, "dart.data.fake:", str(blocker / "sub"), "cannot be written")


# ------------------------------------------------------------------- 2. the toy generator
def _user_folder(p):
    (p / "sub").mkdir(parents=True)
    (p / "meta.json").write_text("{}\n")
    (p / "notes.txt").write_text("x\n")
    (p / "sub" / "thesis.tex").write_text("y\n")
    return tree(p)


def test_toy_refuses_a_folder_with_a_meta_json_it_did_not_write(tmp_path, capsys):
    p = tmp_path / "p"
    before = _user_folder(p)
    r = cli(capsys, "dart.data.toy", "--kind", "detail", "--set", "train_size=10", "val_size=10", "--out", str(p))
    one_line(r, "dart.data.toy:", str(p), "notes.txt", "data.root")
    assert tree(p) == before


def test_train_refuses_a_data_root_it_did_not_write(tmp_path, capsys):
    p = tmp_path / "p"
    before = _user_folder(p)
    r = cli(capsys, "dart.train", f"data.root={p}", "data.toy.train_size=32", "data.toy.val_size=16",
            "train.epochs=1", f"output_dir={tmp_path / 'run'}", "train.threads=1")
    one_line(r, "dart.train:", str(p), "notes.txt")
    assert tree(p) == before


def test_toy_regenerates_its_own_set_even_without_meta_json(tmp_path):
    """A changed setting reruns the workflow's toy job after Snakemake removed its output (meta.json):
    the generator's file list still proves the rest is its own."""
    from dart.data import toy
    out = tmp_path / "d"
    toy.generate("detail", str(out), seed=0, params={"train_size": 8, "val_size": 4}, progress=False)
    (out / "meta.json").unlink()
    toy.generate("detail", str(out), seed=0, params={"train_size": 12, "val_size": 4}, progress=False)
    x, _, meta = toy.load_split(str(out), "train")
    assert len(x) == 12 and meta["params"]["train_size"] == 12
    assert set(os.listdir(out)) == set(owned.read(str(out))["files"]) | {owned.MANIFEST}


# ------------------------------------------------------------------- the manifest itself
def test_a_manifest_cannot_list_paths_outside_its_folder(tmp_path):
    (tmp_path / "d").mkdir()
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (tmp_path / "d" / owned.MANIFEST).write_text(json.dumps(
        {"format": owned.FORMAT, "tool": "x", "files": ["../precious.txt"], "dirs": []}))
    with pytest.raises(owned.NotOwnedError, match="cannot be read"):
        owned.clear(str(tmp_path / "d"), "x", "advice")
    assert outside.read_text() == "keep"


def test_a_manifest_removes_nothing_through_a_link(tmp_path):
    """A listed path under a folder that is a link leads elsewhere: the folder is refused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.npy").write_text("keep")
    d = tmp_path / "d"
    d.mkdir()
    os.symlink(elsewhere, d / "sub")
    (d / owned.MANIFEST).write_text(json.dumps(
        {"format": owned.FORMAT, "tool": "x", "files": ["sub/x.npy"], "dirs": ["sub"]}))
    with pytest.raises(owned.NotOwnedError, match="sub"):
        owned.clear(str(d), "x", "advice")
    assert owned.remove_listed(str(d), owned.read(str(d))) == [owned.MANIFEST]
    assert (elsewhere / "x.npy").read_text() == "keep"


def test_one_tools_folder_is_not_anothers_to_replace(tmp_path):
    """A run folder is not a toy set (nor the reverse), whatever either's file list says."""
    from dart.data import toy
    from dart.engine import runfolder
    run = tmp_path / "run"
    runfolder.register(str(run), "metrics.json")
    (run / "metrics.json").write_text("{}")
    with pytest.raises(toy.NotACacheError, match="dart.train wrote"):
        toy.generate("detail", str(run), params={"train_size": 4, "val_size": 4}, progress=False)
    assert (run / "metrics.json").read_text() == "{}"
    data = tmp_path / "data"
    toy.generate("detail", str(data), params={"train_size": 4, "val_size": 4}, progress=False)
    with pytest.raises(runfolder.RunFolderError, match="dart.data.toy wrote"):
        runfolder.start_new_run(str(data), overwrite=True)
    assert not runfolder.register_if_run_folder(str(data), "eval.json")
    assert (data / "meta.json").is_file() and "eval.json" not in owned.read(str(data))["files"]


def test_a_toy_set_from_before_the_file_lists_is_replaced_like_one(tmp_path):
    """A toy set the generator wrote before it kept dart_files.json (only its own file names)."""
    from dart.data import toy
    out = tmp_path / "d"
    toy.generate("detail", str(out), params={"train_size": 4, "val_size": 4}, progress=False)
    (out / owned.MANIFEST).unlink()
    (out / "meta.json").unlink()  # as Snakemake leaves it before it reruns the job
    toy.generate("detail", str(out), params={"train_size": 6, "val_size": 4}, progress=False)
    assert len(toy.load_split(str(out), "train")[0]) == 6
    (out / owned.MANIFEST).unlink()
    (out / "notes.txt").write_text("mine")  # not a name the generator ever wrote: refused
    with pytest.raises(toy.NotACacheError, match="notes.txt"):
        toy.generate("detail", str(out), params={"train_size": 8, "val_size": 4}, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------- 3. dart.train --output-dir
TINY = ["data.toy.train_size=32", "data.toy.val_size=16", "data.img_size=32", "train.epochs=1",
        "train.batch_size=16", "train.warmup_epochs=0", "eval.batch_size=16", "train.threads=1"]
DART = ["model.kwargs={num_tokens: 4, scorer: cnn, embed_dim: 32, depth: 1, num_heads: 2}"]
GRID = ["model.name=deit_tiny_patch16_224", "model.kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}"]


def test_a_new_run_refuses_a_folder_holding_another_run(tmp_path, capsys):
    from dart.evaluate import main as evaluate
    from dart.train import main as train
    data, run = f"data.root={tmp_path / 'toy'}", tmp_path / "run"
    assert train([data, *TINY, *DART, "--output-dir", str(run)]) == 0, capsys.readouterr().err
    assert evaluate(["--checkpoint", str(run / "checkpoint_last.pt"), data, *TINY, *DART,
                     "--output-dir", str(run)]) == 0, capsys.readouterr().err
    (run / "notes.txt").write_text("mine")
    capsys.readouterr()
    before = tree(run)

    # a grid run into the DART run's folder, without --resume: refused, nothing changes
    assert train([data, *TINY, *GRID, "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dart.train: output folder") and str(run) in err
    assert "--resume" in err and "--overwrite" in err
    assert tree(run) == before

    # --overwrite replaces the DART run: its checkpoint, metrics, log, config and eval.json go, notes stay
    assert train([data, *TINY, *GRID, "--output-dir", str(run), "--overwrite"]) == 0, capsys.readouterr().err
    assert (run / "notes.txt").read_text() == "mine"
    assert not (run / "eval.json").exists() and not (run / "eval.log").exists()
    state = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert "patch_embed.scorer.head.fc2.weight" not in state["model"]  # the grid run's checkpoint
    log = (run / "train.log").read_text()
    assert log.count("run default: task classification") == 1 and "deit_tiny_patch16_224" in log
    assert json.loads((run / "metrics.json").read_text())["model"] == "deit_tiny_patch16_224"
    assert "checkpoint_last.pt" in owned.read(str(run))["files"]


def test_overwrite_refuses_run_files_it_cannot_prove_are_a_runs(tmp_path, capsys):
    from dart.train import main as train
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint_last.pt").write_bytes(b"someone else's")
    assert train([f"data.root={tmp_path / 'toy'}", *TINY, *GRID, "--output-dir", str(run), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "checkpoint_last.pt" in err and "dart_files.json" in err and "nothing was removed" in err
    assert (run / "checkpoint_last.pt").read_bytes() == b"someone else's"
    assert train([*TINY, "--resume", "--overwrite", "--output-dir", str(tmp_path / "x")]) == 2
    assert "pass one of them" in capsys.readouterr().err
