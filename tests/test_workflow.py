"""The Snakemake workflow: dry runs of both scales, config errors, lint, and one real run of a
miniature config in a temporary folder that ends in a report whose tables are checked."""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import plan  # noqa: E402

pytest.importorskip("snakemake")


def snakemake(*args: str, cwd: Path, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    # no PATH change here: the Snakefile itself puts its interpreter first for the `python -m` rules
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


def job_counts(out: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run."""
    stats = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
    counts = {}
    for line in stats.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    """A working directory holding a copy of config/ (what a user deploying the workflow edits)."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_dry_run_default_toy(deployment):
    r = snakemake("-n", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "workflow/profiles/default" in out  # loaded automatically
    cfg = default_config()
    counts = job_counts(out)
    n_toy = len(plan.trained(cfg)) * len(plan.seeds(cfg))
    assert n_toy == 8
    claim = cfg["scales"]["toy"]["claim"]
    runs = {(e, s) for e in plan.trained(cfg) for s in plan.seeds(cfg)}
    runs |= {(e, s) for e in claim["roles"].values() for s in claim["seeds"]}
    assert counts["evaluate"] == n_toy and counts["train"] == len(runs) == 16
    assert counts["claim_measure"] == len(claim["roles"]) * len(claim["seeds"]) == 12
    assert counts["claim_tome"] == len(claim["seeds"]) and counts["claim_report"] == 1
    assert counts["complexity"] == len(plan.complexity_groups(cfg))
    assert counts["throughput"] == len(plan.sweeps(cfg))
    assert counts["toy_data"] == 3
    assert counts["report"] == counts["aggregate"] == counts["all"] == 1
    assert "check_data" not in counts  # nothing to download or check at the toy scale


def test_dry_run_report_target_only_needs_its_inputs(deployment):
    r = snakemake("-n", "reports/paper_tables.html", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert "all" not in counts and counts["report"] == 1


def test_dry_run_paper_scale_with_slurm_profile(deployment):
    r = snakemake("--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"), "--config", "scale=paper",
                  "-n", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    cfg = {**default_config(), "scale": "paper"}
    trained = plan.trained(cfg)
    counts = job_counts(out)
    assert counts["train"] == counts["evaluate"] == len(trained) >= 28
    assert counts["check_data"] == 3
    for eid in trained:
        assert f"runs/paper/{eid}/seed0/metrics.json" in out
    # multi-GPU training: 8 GPUs on one node, launched with torchrun; partition/account left to the user
    train_blocks = [b for b in out.split("\n\n") if "rule train:" in b]
    assert train_blocks and all("gpu=8" in b and "nodes=1" in b for b in train_blocks)
    assert all("torchrun --standalone --nnodes 1 --nproc-per-node 8 -m dart.train" in b for b in train_blocks)
    assert "slurm_partition" not in out and "slurm_account" not in out
    bench = [b for b in out.split("\n\n") if "rule throughput:" in b]
    assert bench and all("slurm_extra=--exclusive" in b and "gpu=1" in b for b in bench)
    # long-sequence rows start from their 196-token run
    assert "model.init_checkpoint=runs/paper/dart_deit_small/seed0/checkpoint_last.pt" in out


def test_lint():
    r = snakemake("--lint", cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Congratulations" in r.stdout + r.stderr


@pytest.mark.parametrize("bad, message", [
    ({"scales": {"paper": {"datasets": {"imagenet": {"root": None}}}}, "scale": "paper"},
     "scales.paper.datasets.imagenet.root is missing"),
    ({"scale": "paper", "scales": {"paper": {"datasets": {"imagenet": None}}}}, "datasets"),
    ({"tolerance": {"params_m": "one"}}, "'one' is not of type 'number'"),
    ({"typo_key": 1}, "typo_key"),
    ({"scale": "huge"}, "scale='huge': no section scales.huge"),
])
def test_broken_config_names_its_error(deployment, bad, message):
    (deployment / "bad.yaml").write_text(yaml.safe_dump(bad))
    r = snakemake("--configfile", "bad.yaml", "-n", cwd=deployment)
    assert r.returncode != 0
    assert message in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]


def test_unknown_training_config_is_named(deployment):
    cfg = default_config()
    for row in cfg["experiments"]:
        if row["id"] == "toy_detail_dart":
            row["train"] = "no_such_recipe"
    (deployment / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", cwd=deployment)
    assert r.returncode != 0
    assert "training config 'no_such_recipe' is neither a file nor a packaged config" in r.stdout + r.stderr


# ------------------------------------------------------------------------------ end to end

def mini_config() -> dict:
    """Two tiny toy runs (1 epoch on 64 images), one complexity family, a two-point sweep."""
    cfg = default_config()
    cfg = copy.deepcopy(cfg)
    cfg["scale"] = "toy"
    toy = cfg["scales"]["toy"]
    small = {"train_size": 64, "val_size": 32}
    toy["datasets"] = {"toy_classification": {"toy": {"kind": "classification", "seed": 0, "set": small}}}
    toy["train_overrides"] = {"train.epochs": 1, "train.warmup_epochs": 0, "train.batch_size": 16,
                              "eval.batch_size": 32, "data.toy.train_size": 64, "data.toy.val_size": 32,
                              "model.kwargs.depth": 1}
    toy["throughput"] = {"mini": {"experiments": ["mini_dart"], "batch_sizes": [1, 2], "mode": "infer",
                                  "args": ["--warmup-iters", 1, "--min-iters", 2, "--min-time", 0.05]}}
    toy["partitions"] = {"experiment": "mini_dart", "images": 2}
    toy["claim"] = {"seeds": [0], "roles": {"grid_low": "mini_grid", "dart_n": "mini_dart", "grid_4n": "mini_grid"},
                    "tome": True}
    keep = {"deit_tiny", "dart_deit_tiny_mnasnet"}
    rows = [r for r in cfg["experiments"] if r["id"] in keep]
    rows += [{"id": "mini_grid", "scale": "toy", "task": "classification", "dataset": "toy_classification",
              "train": "toy_cls_grid"},
             {"id": "mini_dart", "scale": "toy", "task": "classification", "dataset": "toy_classification",
              "train": "toy_cls_dart"}]
    cfg["experiments"] = rows
    return cfg


@pytest.mark.slow
def test_end_to_end_miniature(tmp_path):
    (tmp_path / "config").mkdir()
    cfg = mini_config()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    r = snakemake("--cores", "2", "all", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts["train"] == 2 and counts["complexity"] == 1 and counts["report"] == 1
    assert counts["claim_measure"] == 2 and counts["claim_tome"] == 1 and counts["claim_report"] == 1
    verdicts = (tmp_path / "results" / "toy" / "claim" / "verdicts.csv").read_text()
    assert "DART at N tokens beats the grid at N tokens" in verdicts and "ToMe" in verdicts

    html = (tmp_path / "reports" / "paper_tables.html").read_text()
    from test_report import parse
    page = parse(html)
    assert page.scripts == 0 and not page.links
    assert len(page.imgs) >= 2 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    tables = {t["id"]: t["rows"] for t in page.tables if t["id"]}
    # main table: every published row is there; the counted DeiT-Ti row matches on params and GMACs,
    # its ImageNet top-1 is not run at this scale, and models not counted here are "not measured"
    main = tables["table-main"]
    header, rows = main[1], main[2:]
    assert len(rows) == 19
    deit_ti = [r for r in rows if r[1] == "deit_tiny_patch16_224"][0]
    cells = dict(zip(["params", "tokens", "gmacs", "top1"], [deit_ti[i:i + 4] for i in range(2, 18, 4)]))
    assert cells["params"][0] == "6" and cells["params"][3] == "matches"
    assert cells["tokens"][1] == "196" and cells["tokens"][3] == "matches"
    assert cells["gmacs"][3] == "matches"
    assert cells["top1"][1] == "" and cells["top1"][3] == "not run at this scale"
    scorer = tables["table-scorer_ablation"]
    mn = [r for r in scorer[2:] if "scorer=mnasnet" in r[1]][0]
    assert mn[5] == "matches"  # params of the MnasNet-scored DART DeiT-Ti
    runs = tables["runs-table"][1:]
    assert {r[0] for r in runs} == {"mini_grid", "mini_dart"} and {r[1] for r in runs} == {"0"}
    assert "verdict-counts" in html and "Provenance" in html and "mini_dart" in html
    for name in ("runs", "complexity", "throughput", "comparison", "claims"):
        assert (tmp_path / "results" / "toy" / "tidy" / f"{name}.csv").is_file()

    # a second run does nothing
    r2 = snakemake("--cores", "2", "all", cwd=tmp_path, timeout=120)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Nothing to be done" in r2.stdout + r2.stderr

    # a changed sweep reruns the sweep and what reads it, nothing upstream
    cfg["scales"]["toy"]["throughput"]["mini"]["batch_sizes"] = [1, 3]
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r3 = snakemake("-n", cwd=tmp_path, timeout=120)
    assert r3.returncode == 0, r3.stderr[-3000:]
    assert set(job_counts(r3.stdout + r3.stderr)) == {"throughput", "aggregate", "report", "all"}
