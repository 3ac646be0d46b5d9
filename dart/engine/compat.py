"""A run's config compared with the config stored in its checkpoint (`config_yaml`).

`--resume` and `dart.evaluate` refuse a config that would change what the checkpoint's model is or
what data it sees, naming each differing key; only the keys below may differ. The lists are the
documentation (docs/engine.md repeats them).
"""
from __future__ import annotations

import copy
from fnmatch import fnmatchcase

# settings of the process, not of the experiment: where it writes, how fast, how it treats bad files
RUNTIME = ("output_dir", "name", "train.threads", "train.device", "train.log_interval", "data.num_workers",
           "data.strict")
# resume: extend a run (the learning-rate schedule stays the checkpoint's), change how it evaluates
RESUME_MAY_CHANGE = RUNTIME + ("train.epochs", "eval.batch_size", "eval.every", "eval.max_batches")
# evaluate: every evaluation setting, and the autocast precision
EVALUATE_MAY_CHANGE = RUNTIME + ("eval.*", "train.amp")
# evaluate: settings that only act on training (init_checkpoint: the weights training started from);
# the checkpoint's values are the ones recorded
EVALUATE_TAKES_FROM_CHECKPOINT = ("train.*", "aug.*", "model.init_checkpoint")


class ConfigMismatch(ValueError):
    """The config differs from the checkpoint's in keys that may not change."""


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _matches(key: str, patterns) -> bool:
    return any(fnmatchcase(key, p) for p in patterns)


def differences(stored: dict, current: dict) -> dict[str, tuple]:
    """{dotted key: (stored value, current value)} for every leaf that differs ('<unset>' if absent)."""
    a, b = flatten(stored), flatten(current)
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, "<unset>"), b.get(k, "<unset>")
        if va != vb and not (isinstance(va, (int, float)) and isinstance(vb, (int, float))
                             and not isinstance(va, bool) and not isinstance(vb, bool) and float(va) == float(vb)):
            out[k] = (va, vb)
    return out


def _refuse(diffs: dict, path: str, what: str, allowed) -> None:
    if not diffs:
        return
    items = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diffs.items())
    raise ConfigMismatch(f"{path}: the config differs from the one the checkpoint was trained with ({items}). "
                         f"{what} may change only {', '.join(allowed)}; undo the change or start a new run.")


def check_resume(stored: dict, current: dict, path: str) -> dict:
    """Raise ConfigMismatch unless only RESUME_MAY_CHANGE keys differ; returns the allowed differences."""
    diffs = differences(stored, current)
    _refuse({k: v for k, v in diffs.items() if not _matches(k, RESUME_MAY_CHANGE)}, path, "--resume",
            RESUME_MAY_CHANGE)
    return diffs


def for_evaluate(stored: dict, current: dict, path: str) -> dict:
    """The config to evaluate with: the checkpoint's, with the command line's evaluation and runtime
    settings. Raises ConfigMismatch when the model, the data or the task would change."""
    diffs = differences(stored, current)
    free = EVALUATE_MAY_CHANGE + EVALUATE_TAKES_FROM_CHECKPOINT
    _refuse({k: v for k, v in diffs.items() if not _matches(k, free)}, path, "dart.evaluate", free)
    out = copy.deepcopy(stored)
    for k, v in flatten(current).items():
        if _matches(k, EVALUATE_MAY_CHANGE):
            node = out
            *parents, leaf = k.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = copy.deepcopy(v)
    return out
