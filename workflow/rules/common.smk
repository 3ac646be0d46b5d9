# Helpers shared by the rules. The logic lives in workflow/scripts/plan.py (tests import it);
# this file only binds it to the config and the working directory.

import sys
from pathlib import Path

# workflow/ itself, whichever Snakefile was given (the root one includes workflow/Snakefile)
WORKFLOW_DIR = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parent
sys.path.insert(0, str(WORKFLOW_DIR / "scripts"))

import plan  # noqa: E402

REPO = WORKFLOW_DIR.parent

try:
    SCALE = config["scale"]
    SETTINGS = plan.scale_settings(config)
    EXPERIMENTS = plan.experiments(config)
    TRAINED = plan.trained(config)
    COUNTED = plan.counted(config)
    SEEDS = plan.seeds(config)
    SWEEPS = plan.sweeps(config)
    plan.check_datasets(config)
    plan.check_references(config)
    TRAIN_CONFIGS = {eid: plan.train_config_path(EXPERIMENTS[eid]["train"], REPO) for eid in TRAINED}
    PUBLISHED_WEIGHTS = plan.published_weights(config, REPO)
except plan.PlanError as err:
    raise WorkflowError(f"invalid config: {err}") from None

PUBLISHED = plan.resolve_file(config["published"], REPO)
SMOKE = bool(SETTINGS.get("smoke", False))
PARTITIONS = SETTINGS.get("partitions") or None
TOKENIZER_BENCH = bool(SETTINGS.get("tokenizer_bench", False))
DATASETS = {ds: plan.dataset_entry(config, ds) for ds in plan.datasets_needed(config)}
TOY_DATASETS = {ds: e for ds, e in DATASETS.items() if e.get("toy") is not None}
FAKE_DATASETS = {ds: e for ds, e in DATASETS.items() if e.get("fake") is not None}
REAL_DATASETS = {ds: e for ds, e in DATASETS.items() if e.get("toy") is None}  # checked (fake ones too)


wildcard_constraints:
    exp="[a-z0-9][a-z0-9_]*",
    seed=r"\d+",
    sweep="[a-z0-9][a-z0-9_]*",
    family="[a-z0-9][a-z0-9_]*",
    ds="[a-z0-9][a-z0-9_]*",


# ------------------------------------------------------------------- settings Snakemake tracks
# Every setting that changes a result is written to a file under results/<scale>/config/ that the
# jobs reading it take as input. A file is rewritten only when its content changes, so its mtime
# moves exactly then and Snakemake reruns exactly the jobs it feeds. Only a run writes them (when
# its DAG is built): a dry run, or a DAG printed without running it, writes nothing under the
# working directory; it reads a changed file's new content from a copy in a temporary folder,
# removed at exit, whose fresh mtime lists the jobs the change reruns.


def _writes_settings():
    """True when this invocation runs jobs (not a dry run, nor a DAG only printed)."""
    return workflow.executor_plugin is not None and not workflow.dryrun


def tracked_file(path, obj):
    return plan.tracked_file(path, plan.dump_yaml(obj), write=_writes_settings())


def tracked(name, obj):
    return tracked_file(f"results/{SCALE}/config/{name}.yaml", obj)


def _init_checkpoint(eid, seed):
    src = EXPERIMENTS[eid]["finetune_from"]
    return f"{plan.run_dir(config, src, seed)}/checkpoint_last.pt" if src else None


# every run's engine config, resolved (and so checked) when the workflow is read; the files are
# written when the DAG asks for them (run_config_file)
try:
    RUN_CONFIGS = {
        (eid, seed): plan.run_config(config, eid, seed, _init_checkpoint(eid, seed), REPO)
        for eid in TRAINED for seed in SEEDS
    }
except (plan.PlanError, ValueError) as err:
    raise WorkflowError(f"invalid config: {err}") from None


def _run_config_obj(eid, seed):
    key = (eid, int(seed))
    if key not in RUN_CONFIGS:  # a seed outside `seeds` (the claim's extra seeds)
        RUN_CONFIGS[key] = plan.run_config(config, eid, key[1], _init_checkpoint(eid, key[1]), REPO)
    return RUN_CONFIGS[key]


def run_config_file(eid, seed):
    return tracked(f"runs/{eid}/seed{int(seed)}", _run_config_obj(eid, seed))


def run_config_sha1(eid, seed):
    """Digest of the run config this invocation planned: the training job checks its file still
    holds it (another invocation may rewrite the file before the job starts)."""
    return plan.text_sha1(plan.dump_yaml(_run_config_obj(eid, seed)))


def run_config(wildcards):
    return run_config_file(wildcards.exp, wildcards.seed)


def data_settings(wildcards):
    return tracked(f"data/{wildcards.ds}", DATASETS[wildcards.ds])


def complexity_settings(wildcards):
    rows = {e: {k: EXPERIMENTS[e][k] for k in ("model", "model_kwargs")} for e in COMPLEXITY_GROUPS[wildcards.family]}
    return tracked_file(f"results/config/complexity/{wildcards.family}.yaml", rows)


def sweep_settings(wildcards):
    sweep = dict(SWEEPS[wildcards.sweep])
    sweep["model_specs"] = plan.sweep_models(config, wildcards.sweep, TRAIN_CONFIGS, REPO)
    sweep["device"] = SETTINGS.get("device", "auto")
    return tracked(f"bench/{wildcards.sweep}", sweep)


def data_ready(eid):
    """The marker that says an experiment's dataset is there (generated or checked)."""
    ds = EXPERIMENTS[eid]["dataset"]
    if ds in TOY_DATASETS:
        return f"data/toy/{ds}/meta.json"
    return f"results/{SCALE}/data/{ds}.ok"


def run_metrics(eid, seed):
    return f"{plan.run_dir(config, eid, seed)}/metrics.json"


def finetune_input(wildcards):
    src = EXPERIMENTS[wildcards.exp]["finetune_from"]
    return [run_metrics(src, wildcards.seed), _init_checkpoint(wildcards.exp, wildcards.seed)] if src else []


def scorer_trunk_input(wildcards):
    """The pretrained scorer trunk a run loads (model.kwargs.scorer_weights), when it names one."""
    return plan.scorer_weights_input(_run_config_obj(wildcards.exp, wildcards.seed))


def thread_override(threads):
    """CPU runs use as many torch threads as the job holds (not part of the tracked config)."""
    return f"train.threads={threads}" if not gpus() else ""


def gpus():
    return int(SETTINGS.get("gpus", 0) or 0)


def one_gpu():
    return 1 if gpus() else 0


def eval_outputs():
    return [f"results/{SCALE}/eval/{eid}/seed{seed}.json" for eid in TRAINED for seed in SEEDS]


def metrics_outputs():
    return [run_metrics(eid, seed) for eid in TRAINED for seed in SEEDS]


COMPLEXITY_GROUPS = plan.complexity_groups(config)


def complexity_outputs():
    return [f"results/complexity/{family}.csv" for family in COMPLEXITY_GROUPS]


def sweep_outputs():
    return [f"results/{SCALE}/bench/{name}.csv" for name in SWEEPS]


def sweep_machine_outputs():
    return [f"results/{SCALE}/bench/{name}.machine.json" for name in SWEEPS]


def partition_outputs():
    if not PARTITIONS:
        return []
    return [f"results/{SCALE}/partitions/{PARTITIONS['experiment']}.png"]


def published_outputs():
    """The evaluations of the published weights (official checkpoints, timm baselines) at this scale."""
    return [f"results/{SCALE}/published/{name}/eval.json" for name in PUBLISHED_WEIGHTS]


# the published weights' jobs (rules/published.smk)
PUBLISHED_FILES = {e["local_file"]: name for name, e in PUBLISHED_WEIGHTS.items()}


# resolved (and so checked) when the workflow is read; the files are written when the DAG asks for
# them, as the runs' configs (run_config_file): only by a real run, never by a dry one
try:
    PUBLISHED_CONFIGS = {name: plan.published_eval_config(config, name, REPO) for name in PUBLISHED_WEIGHTS}
except (plan.PlanError, ValueError) as err:
    raise WorkflowError(f"invalid config: {err}") from None


def published_settings(wildcards):
    return tracked(f"published/{wildcards.name}", PUBLISHED_CONFIGS[wildcards.name])


def published_data(wildcards):
    ds = config["scales"][SCALE]["published_weights"]["dataset"]
    return f"data/toy/{ds}/meta.json" if ds in TOY_DATASETS else f"results/{SCALE}/data/{ds}.ok"


def published_checkpoint(wildcards):
    path = plan.published_checkpoint(config, wildcards.name, REPO)
    return [path] if path else []


def tokenizer_bench_outputs():
    return [f"results/{SCALE}/bench/tokenizer_split.csv"] if TOKENIZER_BENCH else []


# The report of the default scale is reports/paper_tables.html (the README's and the card's);
# another scale's has its own file, so a paper or smoke run never overwrites the toy report.
REPORT = plan.report_path(SCALE)
AGGREGATE_SETTINGS = {"experiments": EXPERIMENTS, "groups": COMPLEXITY_GROUPS, "scale": SCALE,
                      "rows_scale": plan.rows_scale(config), "smoke": SMOKE, "tolerance": config["tolerance"],
                      "published_weights": PUBLISHED_WEIGHTS}


def benchmark_outputs(wildcards):
    """The `benchmark:` files of the jobs the report covers (wall time per rule in the report)."""
    out = [f"results/{SCALE}/benchmarks/aggregate.tsv"]
    out += [f"results/{SCALE}/benchmarks/train/{e}_seed{s}.tsv" for e in TRAINED for s in SEEDS]
    out += [f"results/{SCALE}/benchmarks/evaluate/{e}_seed{s}.tsv" for e in TRAINED for s in SEEDS]
    out += [f"results/{SCALE}/benchmarks/complexity/{f}.tsv" for f in COMPLEXITY_GROUPS]
    out += [f"results/{SCALE}/benchmarks/throughput/{s}.tsv" for s in SWEEPS]
    if PARTITIONS:
        out.append(f"results/{SCALE}/benchmarks/partitions/{PARTITIONS['experiment']}.tsv")
    if TOKENIZER_BENCH:
        out.append(f"results/{SCALE}/benchmarks/tokenizer_bench.tsv")
    out += [f"results/{SCALE}/benchmarks/evaluate_published/{n}.tsv" for n in PUBLISHED_WEIGHTS]
    return out
