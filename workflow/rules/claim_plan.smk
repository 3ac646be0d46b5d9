# Settings and helpers of the resolution-claim rules (workflow/rules/claim.smk).

CLAIM = SETTINGS.get("claim") or None
CLAIM_SEEDS = list(CLAIM["seeds"]) if CLAIM else []
CLAIM_ROLES = dict(CLAIM["roles"]) if CLAIM else {}
CLAIM_TOME = bool(CLAIM.get("tome", True)) if CLAIM else False
# the same regime on other toy tasks: task -> {grid_low: id, dart_n: id}
CLAIM_TASKS = {task: dict(pair) for task, pair in ((CLAIM or {}).get("tasks") or {}).items()}
# the ablation's DART-N variants: name -> experiment (an `ablation: true` row), `snakemake claim_ablation`
CLAIM_ABLATION = dict((CLAIM or {}).get("ablation") or {})
ABLATION_DONE = f"results/{SCALE}/claim/ablation.done"

if CLAIM:
    _named = list(CLAIM_ROLES.values()) + [e for pair in CLAIM_TASKS.values() for e in pair.values()]
    _missing = [e for e in _named if e not in TRAINED]
    if _missing:
        raise WorkflowError(f"invalid config: scales.{SCALE}.claim names untrained experiments {_missing}")
    _wrong = [f"{e} ({EXPERIMENTS[e]['task']}) under tasks.{t}" for t, pair in CLAIM_TASKS.items()
              for e in pair.values() if EXPERIMENTS[e]["task"] != t]
    if _wrong:
        raise WorkflowError(f"invalid config: scales.{SCALE}.claim.tasks name experiments of another task: {_wrong}")
    _not_ablation = [e for e in CLAIM_ABLATION.values() if e not in plan.ablation_rows(config)]
    if _not_ablation:
        raise WorkflowError(f"invalid config: scales.{SCALE}.claim.ablation names experiments that are not "
                            f"ablation rows of this scale (experiments with ablation: true): {_not_ablation}")


def claim_runs(eid):
    """The metrics of every claim seed's run of one experiment."""
    return [f"runs/{SCALE}/{eid}/seed{seed}/metrics.json" for seed in CLAIM_SEEDS]


def claim_measures():
    """(measure JSONs, their roles): one JSON per experiment (all seeds); roles of the other tasks
    are written task:role."""
    out, roles = [], []
    for role, eid in CLAIM_ROLES.items():
        out.append(f"results/{SCALE}/claim/measure/{eid}.json")
        roles.append(role)
    if CLAIM_TOME:
        out.append(f"results/{SCALE}/claim/tome.json")
        roles.append("tome")
    for task, pair in CLAIM_TASKS.items():
        for role, eid in pair.items():
            out.append(f"results/{SCALE}/claim/measure/{eid}.json")
            roles.append(f"{task}:{role}")
    if os.path.exists(ABLATION_DONE):  # the ablation has run (snakemake claim_ablation): show it
        for name, eid in CLAIM_ABLATION.items():
            out.append(f"results/{SCALE}/claim/measure/{eid}.json")
            roles.append(f"ablation:{name}")
    return out, roles


def no_claim_here():
    raise WorkflowError(
        f"reports/claim.html is the resolution claim, a toy-scale experiment (trained toy runs, "
        f"scales.toy.claim); scale {SCALE!r} has no claim section (scales.{SCALE}.claim): run "
        f"`snakemake reports/claim.html` at the toy scale (the default)")


def claim_outputs():
    return ["reports/claim.html"] if CLAIM else []


def claim_verdicts_outputs():
    """The claim's verdicts.csv, which the main report shows under its headline claims."""
    return [f"results/{SCALE}/claim/verdicts.csv"] if CLAIM else []
