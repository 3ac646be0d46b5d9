# Helpers shared by the rules. The logic lives in workflow/scripts/plan.py (tests import it);
# this file only binds it to the config and the working directory.

import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

import plan  # noqa: E402

REPO = Path(workflow.basedir).parent

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
except plan.PlanError as err:
    raise WorkflowError(f"invalid config: {err}") from None

PUBLISHED = plan.resolve_file(config["published"], REPO)
PARTITIONS = SETTINGS.get("partitions") or None
TOKENIZER_BENCH = bool(SETTINGS.get("tokenizer_bench", False))
DATASETS = {ds: plan.dataset_entry(config, ds) for ds in plan.datasets_needed(config)}
TOY_DATASETS = {ds: e for ds, e in DATASETS.items() if e.get("toy") is not None}
REAL_DATASETS = {ds: e for ds, e in DATASETS.items() if e.get("toy") is None}


wildcard_constraints:
    exp="[a-z0-9][a-z0-9_]*",
    seed=r"\d+",
    sweep="[a-z0-9][a-z0-9_]*",
    family="[a-z0-9][a-z0-9_]*",
    ds="[a-z0-9][a-z0-9_]*",


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
    return [run_metrics(src, wildcards.seed)] if src else []


def train_overrides(wildcards, threads, finetune=True):
    src = EXPERIMENTS[wildcards.exp]["finetune_from"] if finetune else None
    init = f"{plan.run_dir(config, src, wildcards.seed)}/checkpoint_last.pt" if src else None
    return plan.shell_join(plan.train_overrides(config, wildcards.exp, int(wildcards.seed),
                                                threads=threads, init_checkpoint=init))


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


def partition_outputs():
    if not PARTITIONS:
        return []
    return [f"results/{SCALE}/partitions/{PARTITIONS['experiment']}.png"]


def tokenizer_bench_outputs():
    return [f"results/{SCALE}/bench/tokenizer_split.csv"] if TOKENIZER_BENCH else []
