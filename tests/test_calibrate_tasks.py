"""workflow/scripts/calibrate_tasks.py: the settings grammar, the rule, the choice of the first
passing setting, and the whole loop on fake training runs (tiny generated data, no training)."""
import json
import os
import sys

import numpy as np
import pytest
import yaml

from dart.engine.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "workflow", "scripts"))
import calibrate_tasks as cal  # noqa: E402


def test_grid_is_a_product_in_the_order_given():
    assert cal.parse_grid("coarse_pct=30,40 glyph=12") == [{"coarse_pct": 30, "glyph": 12},
                                                           {"coarse_pct": 40, "glyph": 12}]
    assert cal.parse_grid("a=1 b=2,3") == [{"a": 1, "b": 2}, {"a": 1, "b": 3}]


@pytest.mark.parametrize("text, why", [("coarse_pct", "KEY=V1"), ("coarse_pct=x", "integers"),
                                       ("a=1 a=2", "twice"), ("num_classes=2", "not a task parameter"),
                                       ("", "empty")])
def test_bad_grids_are_refused(text, why):
    with pytest.raises(ValueError, match=why):
        cal.parse_grid(text)


def test_rule_on_the_mean_and_on_every_seed():
    ok = cal.judge(35.0, [55.0, 52.0, 58.0], [98.0, 97.0, 99.0], gap_to_full=True)
    assert ok["passed"] and ok["reasons"] == [] and ok["grid_n_mean"] == pytest.approx(55.0)
    # the mean clears floor + 15 but one seed sits at floor + 10: fail
    one_low = cal.judge(35.0, [45.0, 60.0, 62.0], [98.0] * 3, gap_to_full=True)
    assert not one_low["passed"] and "seed" in one_low["reasons"][0]
    # every seed clears floor + 10, the mean does not clear floor + 15
    mean_low = cal.judge(35.0, [46.0, 47.0, 48.0], [98.0] * 3, gap_to_full=True)
    assert not mean_low["passed"] and "mean" in mean_low["reasons"][0]
    # too close to the full-resolution grid (detail only)
    near_full = cal.judge(35.0, [85.0, 86.0, 87.0], [98.0, 97.0, 99.0], gap_to_full=True)
    assert not near_full["passed"] and "grid-4N" in near_full["reasons"][0]
    assert cal.judge(35.0, [85.0, 86.0, 87.0], [98.0, 97.0, 99.0], gap_to_full=False)["passed"]
    assert cal.judge(35.0, [85.0, 86.0, 87.0], None, gap_to_full=False)["passed"]
    assert not cal.judge(35.0, [85.0, 86.0, 87.0], None, gap_to_full=True)["passed"]


def test_first_passing_setting_in_the_order_tried():
    v = [({"c": 1}, {"passed": False}), ({"c": 3}, {"passed": True}), ({"c": 2}, {"passed": True})]
    assert cal.first_passing(v) == {"c": 3}
    assert cal.first_passing(v[:1]) is None


def _fake_trainer(calls, shift_by_pct):
    """A stand-in for dart.train: writes a complete metrics.json whose metric is the floor of the
    run's data plus shift_by_pct[coarse_pct] (grid-N) or 98 (grid-4N)."""
    def fake(cmd, run_dir):
        calls.append(cmd)
        args = dict(a.split("=", 1) for a in cmd if "=" in a and not a.startswith("-"))
        setting = json.loads(args["data.toy.params"])
        floor = cal.floor_of(np.load(os.path.join(args["data.root"], "val_y.npy")), "top1", 3)
        top1 = 98.0 if "toy_detail_grid_4n" in cmd else floor + shift_by_pct[setting["coarse_pct"]]
        os.makedirs(run_dir, exist_ok=True)
        name = cmd[cmd.index("--config") + 1]
        overrides = cmd[cmd.index("--output-dir") + 2:]
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:  # what dart.train writes
            yaml.safe_dump(load_config(name, overrides), f)
        with open(os.path.join(run_dir, "metrics.json"), "w") as f:
            json.dump({"top1": top1, "wall_s": 1.5, "complete": True}, f)
        return {"top1": top1, "wall_s": 1.5, "complete": True}
    return fake


def test_calibration_picks_the_first_pass_and_resumes(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cal, "train", _fake_trainer(calls, {10: 5.0, 40: 25.0, 50: 30.0}))
    out = tmp_path / "detail.csv"
    argv = ["--task", "detail", "--grid", "coarse_pct=10,40,50 train_size=12 val_size=30", "--seeds", "0", "1",
            "--out", str(out), "--work", str(tmp_path / "work")]
    assert cal.main(argv) == 0
    # 10 fails (5 points above the floor), 40 passes: 50 is never trained
    assert len(calls) == 2 * 2 * 2
    assert all("toy_detail_grid_low" in c or "toy_detail_grid_4n" in c for c in calls)
    assert not any("dart" in a for c in calls for a in c if a.startswith("toy_"))
    assert all("train.threads=1" in c for c in calls)
    text = capsys.readouterr().out
    assert "chosen: coarse_pct=40 train_size=12 val_size=30" in text
    rows = cal.read_rows(str(out))
    summary = [r for r in rows if r["row"] == "mean"]
    assert [r["passed"] for r in summary] == ["fail", "pass"]
    assert "floor" in summary[0]["why"]
    seeds = [r for r in rows if r["row"] != "mean"]
    assert len(seeds) == 4 and all(r["grid_4n"] == 98.0 and r["grid_n_wall_s"] == 1.5 for r in seeds)
    assert (tmp_path / "detail.md").read_text().count("\n| coarse_pct=") == 2
    # the same command again: every run is complete, nothing is trained, the same choice
    calls.clear()
    assert cal.main(argv) == 0 and calls == []
    assert [r["passed"] for r in cal.read_rows(str(out)) if r["row"] == "mean"] == ["fail", "pass"]
    # a finished run trained under another recipe (say the packaged config's epochs changed since)
    # is trained again, the others are reused
    stale = next((tmp_path / "work" / "runs").glob("detail-*/grid_n-seed1"))
    cfg = yaml.safe_load((stale / "config.yaml").read_text())
    cfg["train"]["epochs"] += 1
    (stale / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert cal.main(argv) == 0 and len(calls) == 1 and calls[0][calls[0].index("--output-dir") + 1] == str(stale)


def test_no_passing_setting_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cal, "train", _fake_trainer([], {10: 5.0}))
    rc = cal.main(["--task", "detail", "--grid", "coarse_pct=10 train_size=12 val_size=30", "--seeds", "0",
                   "--out", str(tmp_path / "d.csv"), "--work", str(tmp_path / "work")])
    assert rc == 1 and "chosen: none" in capsys.readouterr().out


def test_dart_configs_are_refused(tmp_path, monkeypatch, capsys):
    """A task pointing at a DART config stops before any data or run: the calibration never trains
    or reads a DART model."""
    monkeypatch.setitem(cal.TASKS, "detail", cal.Task("detail", "top1", "toy_detail_dart", "toy_detail_grid_4n",
                                                      gap_to_full=True))
    monkeypatch.setattr(cal, "train", lambda cmd, run_dir: pytest.fail("trained"))
    rc = cal.main(["--task", "detail", "--grid", "coarse_pct=10", "--out", str(tmp_path / "d.csv"),
                   "--work", str(tmp_path / "work")])
    assert rc == 2 and "DART" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("grid, why", [("coarse_pct=101", "0..100"), ("coarsepct=1", "coarsepct")])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, monkeypatch, capsys, grid, why):
    monkeypatch.setattr(cal, "train", lambda cmd, run_dir: pytest.fail("trained"))
    rc = cal.main(["--task", "detail", "--grid", grid, "--out", str(tmp_path / "d.csv"),
                   "--work", str(tmp_path / "work")])
    err = capsys.readouterr().err
    assert rc == 2 and why in err and err.startswith("calibrate_tasks: ")


@pytest.mark.slow
def test_a_real_run_is_retrained_in_its_own_folder(tmp_path):
    """The training command the calibration runs, for real (tiny): its log lies beside the run
    folder, and a run trained under other settings is replaced (dart.train --overwrite) rather than
    refused as a folder that is not empty."""
    import sys as _sys
    run = str(tmp_path / "runs" / "grid_n-seed0")
    tiny = ["data.toy.train_size=16", "data.toy.val_size=8", "train.batch_size=8", "eval.batch_size=8",
            "train.warmup_epochs=0", f"data.root={tmp_path / 'data'}", "train.threads=1"]
    for epochs in (1, 2):
        cmd = [_sys.executable, "-m", "dart.train", "--config", "toy_detail_grid_low", "--overwrite",
               "--output-dir", run, *tiny, f"train.epochs={epochs}"]
        m = cal.train(cmd, run)
        assert len(m["loss_curve"]) == epochs
    assert os.path.isfile(run + ".log") and not os.path.exists(os.path.join(run, "calibrate.log"))
