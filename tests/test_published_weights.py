"""The workflow's published-weights jobs: planned at the paper and smoke scales, aggregated beside
each published top-1 as their own evidence kind, shown in the report (no torch in the aggregation)."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import aggregate  # noqa: E402
import plan  # noqa: E402
import report  # noqa: E402
from test_report import parse  # noqa: E402
from test_workflow import default_config, job_counts, snakemake  # noqa: E402

TOL = {"params_m": 0.5, "gmacs_rel": 0.05, "top1": 0.5, "speedup": 1.6, "official_top1": 0.3}
PUBLISHED = ROOT / "workflow" / "resources" / "published.csv"


def paper_config() -> dict:
    return {**default_config(), "scale": "paper"}


def test_the_plan_lists_every_published_checkpoint():
    weights = plan.published_weights(paper_config(), ROOT)
    official = [w for w in weights.values() if w["kind"] == "official"]
    assert len(official) == 11 and all(w["name"].endswith(".official_in1k") for w in official)
    assert {w["name"] for w in weights.values() if w["kind"] == "baseline"} == {
        "deit_tiny_patch16_224.fb_in1k", "deit_small_patch16_224.fb_in1k"}
    assert plan.published_weights(default_config(), ROOT) == {}  # the toy scale evaluates none
    cfg = plan.published_eval_config(paper_config(), "dart_vim_small_patch16_224_392.official_in1k", ROOT)
    # the official evaluation: 448 px, DeiT's resize / crop, fp32, main.py's validation batch
    assert cfg["model"]["name"] == "dart_vim_small_patch16_224_392" and cfg["data"]["img_size"] == 448
    assert (cfg["data"]["crop_pct"], cfg["data"]["interpolation"]) == (0.875, "bicubic")
    assert cfg["train"]["amp"] == "off" and cfg["eval"]["batch_size"] == 384 and cfg["train"]["device"] == "cuda"
    assert cfg["data"]["root"] == "data/imagenet"
    base = plan.published_eval_config(paper_config(), "deit_small_patch16_224.fb_in1k", ROOT)
    assert base["data"]["img_size"] == 224
    local = {**paper_config(), "official_checkpoints": "/w"}
    assert plan.published_checkpoint(local, "dart_deit_small_patch16_224.official_in1k", ROOT) == "/w/darvit-sm.pth"
    assert plan.published_checkpoint(local, "deit_tiny_patch16_224.fb_in1k", ROOT) == \
        "/w/deit_tiny_patch16_224.fb_in1k.safetensors"
    assert plan.published_checkpoint(paper_config(), "dart_deit_small_patch16_224.official_in1k", ROOT) is None


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


def test_paper_and_smoke_dags_plan_the_published_weights(deployment, tmp_path):
    weights = plan.published_weights(paper_config(), ROOT)
    r = snakemake("--config", "scale=paper", "-n", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert job_counts(out)["evaluate_published"] == len(weights) == 13
    for name in weights:
        assert f"--pretrained {name}" in out and f"results/paper/published/{name}/eval.json" in out
    # from a local folder: the files are the jobs' inputs, a missing one is named
    folder = tmp_path / "weights"
    folder.mkdir()
    r = snakemake("--config", "scale=paper", f"official_checkpoints={folder}", "-n", cwd=deployment)
    assert r.returncode != 0 and "darvit-" in r.stdout + r.stderr and str(folder) in r.stdout + r.stderr
    for w in weights.values():
        (folder / w["local_file"]).write_bytes(b"x")
    r = snakemake("--config", "scale=paper", f"official_checkpoints={folder}", "-n", cwd=deployment)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"--checkpoint {folder}/darvim-sm-ft2seq.pth" in r.stdout
    # smoke: the same jobs on made-up checkpoints in the published layouts, two batches of two
    r = snakemake("--config", "scale=smoke", "-n", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["evaluate_published"] == counts["published_synthetic"] == 13
    assert "--checkpoint data/fake/smoke/published/darvit-tiny-v2.pth" in out
    # the job's settings: planned, not written (a dry run writes no file)
    assert not (deployment / "results/smoke/config/published").exists()
    smoke_cfg = plan.published_eval_config({**default_config(), "scale": "smoke"},
                                           "dart_deit_tiny_patch16_224_v2.official_in1k", ROOT)
    assert smoke_cfg["eval"]["max_batches"] == 2 and smoke_cfg["data"]["root"] == "data/fake/smoke/imagenet"


def _eval(path: Path, name: str, model: str, top1: float, keymap: bool = True) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    src = {"kind": "pretrained", "name": name, "file": f"/w/{name}", "transform_differs": []}
    if keymap:
        src["keymap"] = {"complete": True, "unmapped": [], "missing": [], "mismatched": []}
    path.write_text(json.dumps({"model": model, "top1": top1, "top5": 95.0, "val_samples": 50000,
                                "dataset": "imagenet", "img_size": 448, "amp": "off", "source": src}))
    return str(path)


def test_published_weights_stand_beside_each_published_top1(tmp_path):
    weights = plan.published_weights(paper_config(), ROOT)
    d = tmp_path / "results" / "paper" / "published"
    evals = [_eval(d / "dart_deit_small_patch16_224.official_in1k" / "eval.json",
                   "dart_deit_small_patch16_224.official_in1k",
                   "dart_deit_small_patch16_224", 80.75),  # 80.6 published: within 0.3
             _eval(d / "dart_vim_tiny_patch16_224.official_in1k" / "eval.json",
                   "dart_vim_tiny_patch16_224.official_in1k",
                   "dart_vim_tiny_patch16_224", 76.6),  # 77.2 published: 0.6 off
             _eval(d / "dart_deit_small_patch16_224_144.official_in1k" / "eval.json",
                   "dart_deit_small_patch16_224_144.official_in1k", "dart_deit_small_patch16_224_144", 79.0),
             _eval(d / "deit_small_patch16_224.fb_in1k" / "eval.json", "deit_small_patch16_224.fb_in1k",
                   "deit_small_patch16_224", 79.86, keymap=False)]
    paths = aggregate.aggregate(published=str(PUBLISHED), complexity=[], metrics=[], evals=[], benches=[],
                                experiments={}, groups={}, scale="paper", tolerance=TOL, outdir=str(tmp_path / "tidy"),
                                weights=evals, published_weights=weights)
    pw = pd.read_csv(paths["published_weights"]).set_index("name")
    assert pw.loc["dart_deit_small_patch16_224.official_in1k", "verdict"] == "matches"
    assert pw.loc["dart_deit_small_patch16_224.official_in1k", "delta"] == pytest.approx(0.15)
    assert pw.loc["dart_vim_tiny_patch16_224.official_in1k", "verdict"] == "differs"
    assert pw.loc["deit_small_patch16_224.fb_in1k", "verdict"] == "matches"
    # no published row: evaluated and shown, no verdict
    assert math.isnan(pw.loc["dart_deit_small_patch16_224_144.official_in1k", "published_top1"])
    assert pd.isna(pw.loc["dart_deit_small_patch16_224_144.official_in1k", "verdict"])
    cmp_ = pd.read_csv(paths["comparison"])
    off = cmp_[cmp_["metric"] == "top1_official"]
    assert set(off["evidence"]) == {"official checkpoint, evaluated here"}
    main = off[off["table"] == "main"].set_index("model")
    assert main.loc["dart_deit_small_patch16_224", "verdict"] == "matches"
    assert main.loc["dart_vim_tiny_patch16_224", "verdict"] == "differs"
    assert main.loc["dart_vim_tiny_patch16_224", "published"] == 77.2
    assert main.loc["deit_small_patch16_224", "ours"] == pytest.approx(79.86)
    # rows whose model has no published weights evaluated, or with model_kwargs, get no such cell
    assert "vim_tiny_patch16_224" not in main.index and not (off["model_kwargs"].fillna("") != "").any()

    html = tmp_path / "r.html"
    report.render(tidy=paths, partitions=[], out=str(html), repo=ROOT,
                  config={"scale": "paper", "tolerance": TOL})
    text = html.read_text()
    tables = {t["id"]: t["rows"] for t in parse(text).tables if t["id"]}
    shown = {r[0]: r for r in tables["published-weights-table"][1:]}
    assert shown["dart_deit_small_patch16_224.official_in1k"][-1] == "matches (+0.15)"
    assert shown["dart_deit_small_patch16_224_144.official_in1k"][3] == "none published"
    head = tables["table-main"][0]
    assert "Top-1 (%), official checkpoint evaluated here" in head
    ev = {r[0] for r in tables["evidence-counts"][1:]}
    assert "official checkpoint, evaluated here" in ev
    assert "2 of 3 checkpoints with a published top-1 reach it within 0.3 points" in text


def test_smoke_published_weights_are_not_results(tmp_path):
    weights = plan.published_weights(paper_config(), ROOT)
    e = _eval(tmp_path / "p" / "dart_deit_small_patch16_224.official_in1k" / "eval.json",
              "dart_deit_small_patch16_224.official_in1k", "dart_deit_small_patch16_224", 80.6)
    paths = aggregate.aggregate(published=str(PUBLISHED), complexity=[], metrics=[], evals=[], benches=[],
                                experiments={}, groups={}, scale="smoke", rows_scale="paper", tolerance=TOL,
                                outdir=str(tmp_path / "tidy"), smoke=True, weights=[e], published_weights=weights)
    cmp_ = pd.read_csv(paths["comparison"])
    assert set(cmp_.loc[cmp_["metric"] == "top1_official", "verdict"]) == {"smoke: not a result"}
    assert set(pd.read_csv(paths["published_weights"])["verdict"]) == {"smoke: not a result"}


def test_an_incomplete_or_foreign_eval_is_refused(tmp_path):
    weights = plan.published_weights(paper_config(), ROOT)
    name = "dart_deit_small_patch16_224.official_in1k"
    p = Path(_eval(tmp_path / f"{name}.json", name, "dart_deit_small_patch16_224", 80.0))
    rec = json.loads(p.read_text())
    rec["source"]["keymap"] = {"complete": False, "unmapped": [], "missing": ["norm.weight"], "mismatched": []}
    p.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="norm.weight"):
        aggregate.published_weights_table([str(p)], weights, TOL)
    rec["source"] = {"kind": "run", "weights": "model"}
    p.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match="not the evaluation of the published weights"):
        aggregate.published_weights_table([str(p)], weights, TOL)
