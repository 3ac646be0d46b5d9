# Settings and helpers of the resolution-claim rules (workflow/rules/claim.smk).

CLAIM = SETTINGS.get("claim") or None
CLAIM_SEEDS = list(CLAIM["seeds"]) if CLAIM else []
CLAIM_ROLES = dict(CLAIM["roles"]) if CLAIM else {}
CLAIM_TOME = bool(CLAIM.get("tome", True)) if CLAIM else False

if CLAIM:
    _missing = [e for e in CLAIM_ROLES.values() if e not in TRAINED]
    if _missing:
        raise WorkflowError(f"invalid config: scales.{SCALE}.claim.roles name untrained experiments {_missing}")


def claim_measures():
    out, roles = [], []
    for role, eid in CLAIM_ROLES.items():
        for seed in CLAIM_SEEDS:
            out.append(f"results/{SCALE}/claim/measure/{eid}/seed{seed}.json")
            roles.append(role)
    if CLAIM_TOME:
        for seed in CLAIM_SEEDS:
            out.append(f"results/{SCALE}/claim/tome/seed{seed}.json")
            roles.append("tome")
    return out, roles


def claim_outputs():
    return ["reports/claim.html"] if CLAIM else []
