"""The Snakemake workflow: dry runs of both scales, config errors, lint, and one real run of a
miniature config in a temporary folder that ends in a report whose tables are checked."""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
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


def planned_run_config(cfg: dict, eid: str, seed: int = 0) -> tuple[str, dict]:
    """(settings file, content) of one run's tracked engine config, as the workflow plans it."""
    src = plan.experiments(cfg)[eid]["finetune_from"]
    init = f"{plan.run_dir(cfg, src, seed)}/checkpoint_last.pt" if src else None
    return f"results/{cfg['scale']}/config/runs/{eid}/seed{seed}.yaml", plan.run_config(cfg, eid, seed, init, ROOT)


def files_below(folder: Path) -> dict[str, tuple[float, bytes]]:
    """{path: (mtime, content)} of every file below `folder` but Snakemake's own .snakemake/."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime, p.read_bytes()) for p in folder.rglob("*")
            if p.is_file() and ".snakemake" not in p.relative_to(folder).parts}


def test_dry_run_default_toy(deployment):
    r = snakemake("-n", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "workflow/profiles/default" in out  # loaded automatically
    cfg = default_config()
    counts = job_counts(out)
    n_toy = len(plan.trained(cfg)) * len(plan.seeds(cfg))
    assert n_toy == 10
    claim = cfg["scales"]["toy"]["claim"]
    claimed = set(claim["roles"].values()) | {e for pair in claim["tasks"].values() for e in pair.values()}
    assert claimed == set(plan.trained(cfg))  # every toy run tests the claim
    assert not set(claim["ablation"].values()) & set(plan.trained(cfg))  # the ablation is its own target
    runs = {(e, s) for e in plan.trained(cfg) for s in plan.seeds(cfg)}
    runs |= {(e, s) for e in claimed for s in claim["seeds"]}
    assert counts["evaluate"] == n_toy and counts["train"] == len(runs) == 30
    # one measure job per experiment (all its seeds), one ToMe job
    assert counts["claim_measure"] == len(claimed) == 10
    assert counts["claim_tome"] == 1 and counts["claim_report"] == 1
    assert counts["complexity"] == len(plan.complexity_groups(cfg))
    assert counts["throughput"] == len(plan.sweeps(cfg))
    assert counts["toy_data"] == 4  # the three task sets and the scorer trunk's own
    assert counts["scorer_pretrain"] == 1 and "claim_ablation" not in counts
    assert counts["report"] == counts["aggregate"] == counts["all"] == 1
    assert "check_data" not in counts  # nothing to download or check at the toy scale


def test_claim_ablation_is_a_named_target_of_its_own_runs(deployment):
    r = snakemake("-n", "claim_ablation", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    claim = default_config()["scales"]["toy"]["claim"]
    assert counts["claim_ablation"] == 1 and counts["claim_measure"] == len(claim["ablation"])
    assert counts["train"] == len(claim["ablation"]) * len(claim["seeds"])
    assert "claim_report" not in counts and "report" not in counts


def test_dry_run_report_target_only_needs_its_inputs(deployment):
    r = snakemake("-n", "reports/paper_tables.html", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert "all" not in counts and counts["report"] == 1
    # its headline claims show the toy claim's verdicts: the claim's report comes first
    report = [b for b in (r.stdout + r.stderr).split("\n\n") if "rule report:" in b]
    assert len(report) == 1 and "results/toy/claim/verdicts.csv" in report[0]
    assert counts["claim_report"] == 1


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
    # long-sequence rows start from their 196-token run: the run's tracked config says so
    path, run_cfg = planned_run_config(cfg, "dart_deit_small_392")
    assert run_cfg["model"]["init_checkpoint"] == "runs/paper/dart_deit_small/seed0/checkpoint_last.pt"
    assert run_cfg["model"]["name"] == "dart_deit_small_patch16_224_392" and run_cfg["train"]["epochs"] == 30
    # the dry run reads it from a temporary copy: nothing is written in the deployment
    assert re.search(rf"--config /\S*/dart-dry-run-settings-\w+/{path} ", out) and not (deployment / path).exists()
    # a paper run has its own report: it never overwrites the toy one; the paper scale has no claim
    assert "reports/paper_tables_paper.html" in out and "reports/paper_tables.html" not in out
    assert "claim_report" not in counts and "claim/verdicts.csv" not in out


def test_paper_dag_is_unambiguous_under_strict_evaluation(deployment):
    """results/paper/bench/tokenizer_split.csv is tokenizer_bench's alone (the sweep wildcard
    matches only configured sweeps), so input functions never see an unknown sweep."""
    r = snakemake("--config", "scale=paper", "--strict-dag-evaluation", "functions", "-n", cwd=deployment)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    out = r.stdout + r.stderr
    assert "InputFunctionException" not in out and "AmbiguousRuleException" not in out
    assert job_counts(out)["tokenizer_bench"] == 1


def test_root_snakefile_runs_the_card_commands():
    """`snakemake -n all` and `snakemake -n reports/paper_tables.html` from the repository root:
    the root Snakefile includes workflow/Snakefile, `all` stays the default target and the default
    profile is found through profiles/."""
    for target in ([], ["all"], ["reports/paper_tables.html"]):
        r = subprocess.run([sys.executable, "-m", "snakemake", "-n", *target], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        out = r.stdout + r.stderr
        assert r.returncode == 0, out[-3000:]
        assert "profiles/default" in out and f"Snakefile: {ROOT / 'Snakefile'}" in out
        counts = job_counts(out)
        if "Nothing to be done" not in out:
            assert counts.get("report", 0) == 1 and ("all" in counts) == (target != ["reports/paper_tables.html"])


def test_config_typo_and_nested_override_errors_are_short(deployment):
    r = snakemake("--config", "scal=paper", "-n", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "config key scal is unknown (known here: " in out
    assert "$defs" not in out  # not the whole schema
    r = snakemake("--config", "tolerance={top1: 0}", "-n", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "config key tolerance.top1: '0' is not of type 'number'" in out
    assert "--configfile" in out


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
    toy.pop("scorer_pretrain")  # the mini runs' scorers train from scratch
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

    # generous: on a shared 2-core machine (load ~15) this miniature took 15 minutes
    r = snakemake("--cores", "2", "all", cwd=tmp_path, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts["train"] == 2 and counts["complexity"] == 1 and counts["report"] == 1
    assert counts["claim_measure"] == 2 and counts["claim_tome"] == 1 and counts["claim_report"] == 1
    verdicts = (tmp_path / "results" / "toy" / "claim" / "verdicts.csv").read_text()
    assert "DART at N tokens beats the grid at N tokens" in verdicts and "ToMe" in verdicts

    html = (tmp_path / "reports" / "paper_tables.html").read_text()
    from test_report import parse
    page = parse(html)
    assert page.scripts == 0 and page.links == ["claim.html"]  # the claim page beside it, nothing else
    assert "toy-claims-table" in html and "trained here at toy scale" in html
    assert len(page.imgs) >= 2 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    tables = {t["id"]: t["rows"] for t in page.tables if t["id"]}
    # main table: every published row is there; the counted DeiT-Ti row matches on params and GMACs,
    # its ImageNet top-1 is not run at this scale, and models not counted here are "not measured"
    main = tables["table-main"]
    header, rows = main[1], main[2:]
    assert len(rows) == 19
    deit_ti = [r for r in rows if r[1] == "deit_tiny_patch16_224"][0]
    # paper / ours / verdict (delta) + evidence; tokens: paper / ours, no verdict
    cells = {"params": deit_ti[2:5], "tokens": deit_ti[5:7], "gmacs": deit_ti[7:10], "top1": deit_ti[10:13]}
    assert cells["params"][0] == "6" and cells["params"][2].startswith("matches") and \
        cells["params"][2].endswith("counted")
    assert cells["tokens"] == ["196", "196"]
    assert cells["gmacs"][2].startswith("matches")
    assert cells["top1"][1] == "" and cells["top1"][2] == "not run at this scale" + "published only"
    scorer = tables["table-scorer_ablation"]
    mn = [r for r in scorer[2:] if "scorer=mnasnet" in r[1]][0]
    assert mn[4].startswith("matches")  # params of the MnasNet-scored DART DeiT-Ti
    # wall time per rule, from the benchmark files of this run
    times = {r[0]: r for r in tables["rule-times"][1:]}
    assert {"train", "evaluate", "complexity", "throughput", "aggregate"} <= set(times)
    assert times["train"][1] == "2"
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

    # a changed training setting retrains that run afresh (not resumed from the old checkpoint)
    cfg["experiments"][-1]["overrides"] = {"train.lr": 0.002}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r4 = snakemake("--cores", "2", "runs/toy/mini_dart/seed0/metrics.json", cwd=tmp_path, timeout=1200)
    assert r4.returncode == 0, r4.stderr[-3000:]
    log = (tmp_path / "results/logs/toy/train/mini_dart_seed0.log").read_text()
    # (Snakemake removes the old metrics.json and checkpoint_last.pt itself before the job; the
    # checkpoint's second name, the log and the config are the previous run's files that it listed)
    assert "removed checkpoint_resume.pt, config.yaml, train.log" in log and "training afresh" in log
    assert "resuming from" not in log and log.count("run mini_dart: task classification") == 1
    run_cfg = yaml.safe_load((tmp_path / "runs/toy/mini_dart/seed0/run_config.yaml").read_text())
    assert run_cfg["train"]["lr"] == 0.002


# ------------------------------------------------------------------- results follow the config

def planned_outputs(out: str) -> list[str]:
    """Every output file of a dry run's jobs."""
    files = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("output: "):
            files += [f.strip() for f in line[len("output: "):].split(",")]
    return files


def make_up_to_date(deployment: Path) -> None:
    """Create every planned output (empty files, one mtime): the workflow then has nothing to do,
    without running a job. A run that marks outputs up to date (--touch) writes the tracked
    settings first, as a run does (a dry run writes none)."""
    r = snakemake("--touch", "--cores", "1", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((deployment / "results").rglob("*.yaml"))
    r = snakemake("-n", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    outs = planned_outputs(r.stdout + r.stderr)
    assert outs
    stamp = time.time() + 5
    for f in outs:
        p = deployment / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()
        os.utime(p, (stamp, stamp))
    r = snakemake("-n", cwd=deployment)
    assert "Nothing to be done" in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    # the outputs' mtime is in the future: wait until it is past, or a file the test writes next can
    # look older than them and rerun nothing (this failed when the dry runs took under 5 s)
    time.sleep(max(0.0, stamp + 1 - time.time()))


def test_a_changed_setting_reruns_exactly_the_runs_it_touches(deployment):
    make_up_to_date(deployment)
    cfg = default_config()
    for row in cfg["experiments"]:
        if row["id"] == "toy_seg_dart":
            row["overrides"] = {"train.lr": 0.002}
    (deployment / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    # its runs (3 claim seeds), the evaluation of seed 0, its claim measure and the reports; no other run
    assert counts == {"train": 3, "evaluate": 1, "claim_measure": 1, "claim_report": 1, "aggregate": 1,
                      "report": 1, "all": 1}, counts
    assert "runs/toy/toy_seg_dart/seed0/metrics.json" in out
    # the dry run shows the new settings from a temporary copy and leaves the tracked file as it was
    path, tracked = planned_run_config({**cfg, "scale": "toy"}, "toy_seg_dart")
    assert tracked["train"]["lr"] == 0.002 and re.search(rf"dart-dry-run-settings-\w+/{path}", out)
    assert yaml.safe_load((deployment / path).read_text())["train"]["lr"] == 0.001  # as it was

    # a scale-wide setting touches every run of the scale (and nothing is counted again)
    cfg["scales"]["toy"]["train_overrides"] = {"train.epochs": 3}
    (deployment / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    counts = job_counts(snakemake("-n", cwd=deployment).stdout)
    # 10 experiments evaluated on seed 0; all 10 are in the claim, which also trains seeds 1 and 2;
    # the scorer trunk's pretraining is not a run
    assert counts["train"] == 30 and counts["evaluate"] == 10
    assert counts["claim_measure"] == 10 and "complexity" not in counts and "toy_data" not in counts
    assert "scorer_pretrain" not in counts


def test_a_dry_run_changes_no_file(deployment):
    """Issue 20, case 6: `snakemake -n` (it takes no lock) must not rewrite the settings a running
    workflow's jobs read; it lists the jobs a changed setting reruns without writing anything."""
    r = snakemake("-n", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    assert set(files_below(deployment)) == {f"config/{k}" for k in files_below(ROOT / "config")}
    make_up_to_date(deployment)
    before = files_below(deployment)
    (deployment / "more_epochs.yaml").write_text(yaml.safe_dump({"scales": {"toy": {"train_overrides": {
        "train.epochs": 2}}}}))
    r = snakemake("-n", "--configfile", "more_epochs.yaml", cwd=deployment)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout + r.stderr)["train"] == 30  # listed (10 experiments x 3 seeds) ...
    after = files_below(deployment)
    after.pop("more_epochs.yaml")
    assert after == before  # ... and nothing written: no settings file, no mtime moved


def test_a_deleted_checkpoint_reruns_its_training(deployment):
    """Issue 20, case 11: the checkpoint is an output of training, so an evaluation that must run
    again (here its JSON is gone and asked for) while the checkpoint is gone replans the training
    run first, instead of an evaluation that fails for want of the checkpoint, every time."""
    make_up_to_date(deployment)
    (deployment / "runs/toy/toy_detail_dart/seed0/checkpoint_last.pt").unlink()
    (deployment / "results/toy/eval/toy_detail_dart/seed0.json").unlink()
    r = snakemake("-n", "results/toy/eval/toy_detail_dart/seed0.json", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["train"] == 1 and counts["evaluate"] == 1, counts
    train = [b for b in out.split("\n\n") if "rule train:" in b][0]
    assert "runs/toy/toy_detail_dart/seed0/checkpoint_last.pt" in train
    assert "--checkpoint runs/toy/toy_detail_dart/seed0/checkpoint_last.pt" in out


def test_the_claim_at_a_scale_without_one_is_named(deployment):
    """Issue 20, case 12: reports/claim.html at the smoke scale says it is a toy-scale experiment."""
    r = snakemake("-n", "reports/claim.html", "--config", "scale=smoke", cwd=deployment)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "KeyError" not in out
    assert "reports/claim.html is the resolution claim, a toy-scale experiment" in out
    assert "scale 'smoke' has no claim section (scales.smoke.claim)" in out


def test_every_benchmark_file_is_under_its_scale(deployment):
    """Issue 20, case 13: as the README says, each rule's benchmark file is under results/<scale>/."""
    r = snakemake("-n", cwd=deployment)
    out = r.stdout + r.stderr
    benches = re.findall(r"benchmark: (\S+)", out)
    assert any("/complexity/" in b for b in benches)
    assert benches and all(b.startswith("results/toy/benchmarks/") for b in benches), benches


def test_a_changed_setting_removes_only_the_previous_runs_files(tmp_path):
    """prepare_run.py removes what dart.train listed in the run folder (checkpoint and its second
    name, metrics, log, config, an evaluation written there) and nothing else."""
    import json
    from prepare_run import prepare
    run = tmp_path / "run"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train: {lr: 0.001}\n")
    b.write_text("train: {lr: 0.002}\n")
    prepare(str(run), str(a))
    listed = ["checkpoint_last.pt", "checkpoint_resume.pt", "config.yaml", "eval.json", "metrics.json", "train.log"]
    for name in listed + ["notes.txt"]:
        (run / name).write_text(name)
    (run / "dart_files.json").write_text(json.dumps({"format": "dart-files-v1", "tool": "dart.train",
                                                     "files": listed + ["../escape.txt"], "dirs": []}))
    (tmp_path / "escape.txt").write_text("keep")
    assert sorted(prepare(str(run), str(b))) == sorted(listed)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "run_config.yaml"]
    assert (tmp_path / "escape.txt").read_text() == "keep"


def test_a_changed_setting_trains_afresh(tmp_path):
    """prepare_run.py: a checkpoint trained under other settings is not resumed."""
    from prepare_run import prepare
    run = tmp_path / "run"
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("train: {lr: 0.001}\n")
    b.write_text("train: {lr: 0.002}\n")
    assert prepare(str(run), str(a)) == []
    (run / "checkpoint_last.pt").write_bytes(b"x")
    assert prepare(str(run), str(a)) == []  # same settings: resume (an interrupted run)
    assert (run / "checkpoint_last.pt").exists()
    (run / "metrics.json").write_text("{}")
    assert prepare(str(run), str(b)) == ["checkpoint_last.pt", "metrics.json"]
    assert (run / "run_config.yaml").read_text() == b.read_text()


# ---------------------------------------------------------------------------- the smoke scale

def test_smoke_scale_runs_the_paper_jobs(deployment):
    """`--config scale=smoke` builds the paper scale's DAG: the same rules (plus the fake data
    generator), the same runs, the same model names; only steps, batches, device and data roots differ."""
    outs = {}
    for scale in ("paper", "smoke"):
        r = snakemake("--config", f"scale={scale}", "-n", "--strict-dag-evaluation", "functions", cwd=deployment)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        outs[scale] = r.stdout + r.stderr
    paper, smoke = job_counts(outs["paper"]), job_counts(outs["smoke"])
    # plus the fake data and the made-up checkpoints in the published weights' layouts
    made_up = {"fake_data", "published_synthetic"}
    assert set(smoke) == set(paper) | made_up
    assert {k: v for k, v in smoke.items() if k not in made_up} == paper
    assert smoke["fake_data"] == paper["check_data"] == 3
    assert smoke["published_synthetic"] == paper["evaluate_published"] == 13

    def run_models(scale):
        cfg = {**default_config(), "scale": scale}
        runs = {eid: planned_run_config(cfg, eid) for eid in plan.trained(cfg)}
        assert all(path in outs[scale] for path, _ in runs.values())  # the files the DAG reads
        return {eid: run_cfg for eid, (_, run_cfg) in runs.items()}
    p_runs, s_runs = run_models("paper"), run_models("smoke")
    assert set(p_runs) == set(s_runs) and len(p_runs) >= 28
    for eid in p_runs:
        p, s = p_runs[eid], s_runs[eid]
        assert s["model"]["name"] == p["model"]["name"] and s["task"] == p["task"]
        assert s["data"]["img_size"] == p["data"]["img_size"] and s["data"]["kind"] == p["data"]["kind"]
        assert s["data"]["num_classes"] == p["data"]["num_classes"]
        assert {k: v for k, v in s["model"]["kwargs"].items() if k != "scorer_trunk"} == \
            {k: v for k, v in p["model"]["kwargs"].items() if k != "scorer_trunk"}
        assert s["train"]["device"] == "cpu" and s["train"]["max_steps_per_epoch"] == 2
        assert s["data"]["root"].startswith("data/fake/smoke/")
    def sweep_models(scale):
        cfg = {**default_config(), "scale": scale}
        configs = {eid: plan.train_config_path(plan.experiments(cfg)[eid]["train"], ROOT) for eid in plan.trained(cfg)}
        return {name: plan.sweep_models(cfg, name, configs, ROOT) for name in plan.sweeps(cfg)}
    assert sweep_models("paper") == sweep_models("smoke")
    assert "reports/paper_tables_smoke.html" in outs["smoke"]


@pytest.mark.smoke_scale
def test_smoke_scale_end_to_end(tmp_path):
    """The whole smoke scale from a clean folder (11 min on our 2 cores; `pytest -m smoke_scale`)."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    r = snakemake("--cores", "2", "--config", "scale=smoke", cwd=tmp_path, timeout=3600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    html = (tmp_path / "reports" / "paper_tables_smoke.html").read_text()
    from test_report import parse
    page = parse(html)
    tables = {t["id"]: t["rows"] for t in page.tables if t["id"]}
    assert 'id="smoke-banner"' in html
    top1 = [r[-1] for r in tables["table-main"][2:]]
    assert any(c.startswith("smoke: not a result") for c in top1)
    assert not any(c.startswith(("matches", "differs")) for c in top1)
    assert len(tables["runs-table"]) - 1 == len(plan.trained({**default_config(), "scale": "smoke"}))
    # the published weights: every official checkpoint and baseline evaluated, made-up, no result
    published = tables["published-weights-table"][1:]
    assert len(published) == 13
    assert all(r[-1].startswith("smoke: not a result") for r in published if r[3] != "none published")
    assert not (tmp_path / "reports" / "paper_tables.html").exists()


def test_a_training_job_stops_when_its_settings_changed_after_planning(tmp_path):
    """Another invocation may rewrite a run's settings file between planning and the job's start:
    the job then stops instead of training under settings its workflow did not plan."""
    import hashlib
    script = ROOT / "workflow" / "scripts" / "prepare_run.py"
    cfg = tmp_path / "seed0.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    planned = hashlib.sha1(cfg.read_bytes()).hexdigest()
    ok = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(cfg), planned],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    cfg.write_text("train: {epochs: 2}\n")  # a second invocation's settings
    r = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(cfg), planned],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "changed after this job was planned" in r.stderr
    assert (tmp_path / "run" / "run_config.yaml").read_text() == "train: {epochs: 1}\n"
