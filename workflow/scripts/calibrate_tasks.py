"""Calibrate a toy claim task on the grid baseline alone: for each generator setting, train the grid
with N tokens on the 2x-downsampled copy (and the grid with 4N tokens at full resolution) on every
seed, compare with the floor, and pick the first setting in the order given that passes the rule.

    python workflow/scripts/calibrate_tasks.py --task detail --grid 'coarse_pct=30,40,50' \\
        --seeds 0 1 2 --out results/calibration/detail.csv

A setting is a set of toy generator parameters (dart/data/toy.py, `data.toy.params`; it replaces
the config's `data.toy.params`, so a parameter it does not name takes the generator's default);
`--grid 'a=1,2 b=3'` is the product a=1,b=3 then a=2,b=3 (first key slowest), and several --grid
options are tried one after the other. The rule (docs/engine.md "Calibrating the claim tasks"), on
the task's metric (top-1, or mIoU for segmentation) of the validation split:

  - grid-N: mean over the seeds >= floor + MIN_ABOVE_FLOOR (15), and every seed > floor +
    SEED_ABOVE_FLOOR (10);
  - grid-4N (detail; recorded for the other tasks with --full): mean grid-N <= mean grid-4N -
    MIN_BELOW_FULL (15).

The floor is the metric of always predicting the validation split's most common class (every pixel
of it for segmentation), as workflow/scripts/claim_measure.py computes it. Only grid configs are
trained or read, never a DART model: a task's calibration must not depend on DART's score.

Each setting's data go to WORK/data/<task>-<hash>, each run to
WORK/runs/<task>-<hash>/<role>-seed<S> (`python -m dart.train`, one thread, at most --jobs at a
time; --override recipes get runs of their own); a run whose metrics.json is complete and whose
config.yaml is the one it would be trained with now is not trained again, so an interrupted
calibration resumes. OUT (CSV) gets one row per (setting, seed) and one summary row per setting,
rewritten atomically after each setting (rows of other settings already in OUT are kept, so a search extended
by later commands stays in one file, in the order tried); OUT with .md gets the same as a Markdown
table. By default the search stops at the first passing setting (--all: try every setting). Exit
status: 0 a setting passed, 1 none did, 2 a bad argument or a failed run.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "workflow", "scripts"))
from page import write_text  # noqa: E402

PROG = "calibrate_tasks"

MIN_ABOVE_FLOOR = 15.0
SEED_ABOVE_FLOOR = 10.0
MIN_BELOW_FULL = 15.0


@dataclass(frozen=True)
class Task:
    """A claim task: its toy kind, the grid-N config (2x-downsampled input), the full-resolution
    grid (that config with `full_overrides`: 4N tokens), and whether the rule needs the gap."""
    kind: str
    metric: str
    grid_n: str
    grid_4n: str
    full_overrides: tuple = ()
    gap_to_full: bool = False


TASKS = {
    "detail": Task("detail", "top1", "toy_detail_grid_low", "toy_detail_grid_4n", gap_to_full=True),
    # 64 px, 8-px patches (64 tokens), the decoder's maps at 16x16 as the grid-N's
    "segmentation": Task("segmentation", "miou", "toy_seg_grid", "toy_seg_grid",
                         ("data.img_size=64", "model.decoder.out_stride=4")),
    # 32-px frames, 4-px patches (64 tokens per frame)
    "video": Task("video", "top1", "toy_video_grid", "toy_video_grid", ("data.img_size=32",)),
}
# generator parameters a setting may not change: they fix the model's input and output
FIXED_KEYS = ("canvas", "num_classes", "frames")


# ------------------------------------------------------------------------------------------------
# settings and the rule (pure functions: tests/test_calibrate_tasks.py)


def parse_grid(text: str) -> list[dict]:
    """'a=1,2 b=3' -> [{'a': 1, 'b': 3}, {'a': 2, 'b': 3}] (integers; the first key slowest)."""
    keys, values = [], []
    for item in text.split():
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise ValueError(f"--grid {text!r}: {item!r} is not KEY=V1,V2,...")
        if k in keys:
            raise ValueError(f"--grid {text!r}: {k} given twice")
        if k in FIXED_KEYS:
            raise ValueError(f"--grid {text!r}: {k} fixes the model's input or output; not a task parameter")
        try:
            vals = [int(x) for x in v.split(",")]
        except ValueError:
            raise ValueError(f"--grid {text!r}: the values of {k} must be integers") from None
        keys.append(k)
        values.append(vals)
    if not keys:
        raise ValueError("--grid: empty setting")
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def setting_name(setting: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in setting.items()) or "(defaults)"


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def judge(floor: float, grid_n: list[float], grid_4n: list[float] | None, gap_to_full: bool,
          min_above_floor: float = MIN_ABOVE_FLOOR, seed_above_floor: float = SEED_ABOVE_FLOOR,
          min_below_full: float = MIN_BELOW_FULL) -> dict:
    """The rule on one setting's per-seed metrics: {passed, reasons (why not), means}."""
    reasons = []
    mean_n, mean_4n = _mean(grid_n), _mean(grid_4n or [])
    if mean_n is None:
        reasons.append("no grid-N run")
    else:
        if mean_n < floor + min_above_floor:
            reasons.append(f"grid-N mean {mean_n:.1f} < floor {floor:.1f} + {min_above_floor:g}")
        low = [x for x in grid_n if not x > floor + seed_above_floor]
        if low:
            reasons.append(f"{len(low)} grid-N seed(s) <= floor + {seed_above_floor:g} "
                           f"({', '.join(f'{x:.1f}' for x in low)})")
    if gap_to_full:
        if mean_4n is None:
            reasons.append("no grid-4N run")
        elif mean_n is not None and mean_n > mean_4n - min_below_full:
            reasons.append(f"grid-N mean {mean_n:.1f} > grid-4N mean {mean_4n:.1f} - {min_below_full:g}")
    return {"passed": not reasons, "reasons": reasons, "grid_n_mean": mean_n, "grid_4n_mean": mean_4n}


def first_passing(verdicts: list[tuple[dict, dict]]) -> dict | None:
    """The first setting (in the order tried) whose verdict passed, else None."""
    for setting, verdict in verdicts:
        if verdict["passed"]:
            return setting
    return None


# ------------------------------------------------------------------------------------------------
# data, runs, metrics


@dataclass
class Plan:
    task_name: str
    task: Task
    work: str
    seeds: list
    overrides: list = field(default_factory=list)
    full: bool = False
    jobs: int = 2
    only_grid_n: bool = False
    python: str = sys.executable

    def roles(self) -> list[str]:
        if self.only_grid_n:
            return ["grid_n"]
        return ["grid_n", "grid_4n"] if (self.full or self.task.gap_to_full) else ["grid_n"]

    def role_config(self, role: str) -> tuple[str, list[str]]:
        if role == "grid_n":
            return self.task.grid_n, []
        return self.task.grid_4n, list(self.task.full_overrides)


def toy_section(cfg_name: str, overrides: list[str], setting: dict) -> tuple[dict, str, dict]:
    """(the run config, the toy kind, the generator parameters) of a grid config with `setting`."""
    from dart.data import toy, toy_params
    from dart.engine.config import load_config
    cfg = load_config(cfg_name, overrides + [f"data.toy.params={json.dumps(setting)}"])
    if cfg["model"]["name"].startswith("dart_"):
        raise ValueError(f"{cfg_name} is a DART model: the calibration trains and reads grid runs only")
    kind, seed, params = toy_params(cfg)
    return cfg, kind, {"seed": seed, **toy.resolve_params(kind, params)}


def setting_key(task_name: str, data: dict, overrides: list[str]) -> str:
    blob = json.dumps({"task": task_name, "data": data, "overrides": overrides}, sort_keys=True)
    return f"{task_name}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def prepare_data(plan: Plan, setting: dict) -> tuple[str, str, float]:
    """Generate the setting's data once; (the key of its runs, the data's folder, the floor on the
    validation split)."""
    import numpy as np

    from dart.data import toy
    _, kind, data = toy_section(plan.task.grid_n, plan.overrides, setting)
    for role in plan.roles():
        name, extra = plan.role_config(role)
        other = toy_section(name, plan.overrides + extra, setting)[2]
        if other != data:
            raise ValueError(f"{name} would train on other data than {plan.task.grid_n}: {other} != {data}")
    key = setting_key(plan.task_name, data, plan.overrides)
    root = os.path.join(plan.work, "data", setting_key(plan.task_name, data, []))  # shared by recipes
    params = {k: v for k, v in data.items() if k != "seed"}
    toy.generate(kind, root, data["seed"], params, progress=False)
    labels = np.load(os.path.join(root, "val_y.npy"))
    return key, root, floor_of(labels, plan.task.metric, params["num_classes"])


def floor_of(labels, metric: str, num_classes: int) -> float:
    """claim_measure's constant-prediction floor of the validation labels."""
    from claim_measure import constant_floor
    return constant_floor([labels], "segmentation" if metric == "miou" else "classification", num_classes)


def run_overrides(plan: Plan, role: str, seed: int, setting: dict, root: str) -> tuple[str, list[str]]:
    """(config, dart.train overrides) of one run."""
    name, extra = plan.role_config(role)
    return name, [f"train.seed={seed}", "train.threads=1", "train.device=cpu", f"data.root={root}",
                  f"data.toy.params={json.dumps(setting)}", *extra, *plan.overrides]


# the sections of a run's config.yaml that must match for a finished run to be reused
SAME_RUN = ("task", "model", "data", "aug", "train", "eval")


def read_metrics(run_dir: str, name: str | None = None, overrides: list[str] = ()) -> dict | None:
    """A finished run's metrics; with `name`, only if its config.yaml is what `name` + `overrides`
    resolve to now (a changed packaged config or recipe means training again)."""
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            m = json.load(f)
    except (OSError, ValueError):
        return None
    if not m.get("complete"):
        return None
    if name is not None:
        import yaml

        from dart.engine.config import load_config
        try:
            with open(os.path.join(run_dir, "config.yaml")) as f:
                done = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            return None
        want = load_config(name, list(overrides))
        if any(done.get(k) != want.get(k) for k in SAME_RUN):
            return None
    return m


def train(cmd: list[str], run_dir: str) -> dict:
    """One training run (one thread); its metrics.json, or an error naming its log. The log lies
    beside the run folder: dart.train starts a new run only in a folder that holds no other files
    (`--overwrite` then replaces an unfinished or outdated run of its own)."""
    os.makedirs(os.path.dirname(os.path.abspath(run_dir)), exist_ok=True)
    log = run_dir.rstrip(os.sep) + ".log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "w") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    m = read_metrics(run_dir)
    if rc != 0 or m is None:
        raise RuntimeError(f"training failed (exit {rc}); see {log}")
    return m


def run_setting(plan: Plan, setting: dict, trainer=None, progress=None) -> tuple[list[dict], dict]:
    """Train (or reuse) every run of one setting; (rows per seed, verdict)."""
    trainer = trainer or train
    key, root, floor = prepare_data(plan, setting)
    jobs = []
    for seed in plan.seeds:
        for role in plan.roles():
            run_dir = os.path.join(plan.work, "runs", key, f"{role}-seed{seed}")
            jobs.append((role, seed, run_dir, *run_overrides(plan, role, seed, setting, root)))

    def one(job):
        role, seed, run_dir, name, over = job
        cmd = [plan.python, "-m", "dart.train", "--config", name, "--overwrite", "--output-dir", run_dir, *over]
        m = read_metrics(run_dir, name, over) or trainer(cmd, run_dir)
        if progress is not None:
            progress.update(1)
        return role, seed, m

    with ThreadPoolExecutor(max_workers=max(1, plan.jobs)) as pool:
        results = list(pool.map(one, jobs))
    metric = plan.task.metric
    by = {(role, seed): m for role, seed, m in results}
    rows = []
    for seed in plan.seeds:
        row = {"task": plan.task_name, "setting": setting_name(setting), "key": key, "row": f"seed {seed}",
               "floor": round(floor, 2), "overrides": " ".join(plan.overrides)}
        for role in plan.roles():
            m = by[(role, seed)]
            row[role] = round(float(m[metric]), 2)
            row[f"{role}_wall_s"] = round(float(m.get("wall_s") or 0), 1)
        rows.append(row)
    verdict = judge(floor, [r["grid_n"] for r in rows],
                    [r["grid_4n"] for r in rows] if "grid_4n" in plan.roles() else None, plan.task.gap_to_full)
    summary = {"task": plan.task_name, "setting": setting_name(setting), "key": key, "row": "mean",
               "floor": round(floor, 2), "grid_n": _round(verdict["grid_n_mean"]),
               "grid_4n": _round(verdict["grid_4n_mean"]),
               "passed": "pass" if verdict["passed"] else "fail", "why": "; ".join(verdict["reasons"]),
               "overrides": " ".join(plan.overrides)}
    return rows + [summary], verdict


def _round(x):
    return None if x is None else round(x, 2)


COLUMNS = ["task", "setting", "overrides", "row", "floor", "grid_n", "grid_4n", "passed", "why",
           "grid_n_wall_s", "grid_4n_wall_s", "key"]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def to_markdown(rows: list[dict], metric: str) -> str:
    """One line per setting: the floor, grid-N and grid-4N per seed and mean, the verdict."""
    out = [f"| setting | floor | grid-N {metric} (seeds; mean) | grid-4N {metric} (seeds; mean) | verdict |",
           "|---|---|---|---|---|"]
    for key in dict.fromkeys(r["key"] for r in rows):
        mine = [r for r in rows if r["key"] == key]
        seeds = [r for r in mine if r["row"] != "mean"]
        summ = next((r for r in mine if r["row"] == "mean"), None)
        if summ is None:
            continue

        def cell(role):
            vals = [r.get(role) for r in seeds]
            if any(v is None for v in vals):
                return "–"
            return f"{' / '.join(f'{v:.1f}' for v in vals)}; {summ[role]:.1f}"
        verdict = summ["passed"] + (f" ({summ['why']})" if summ["why"] else "")
        name = summ["setting"] + (f" ({summ['overrides']})" if summ.get("overrides") else "")
        out.append(f"| {name} | {summ['floor']:.1f} | {cell('grid_n')} | {cell('grid_4n')} | {verdict} |")
    return "\n".join(out) + "\n"


def read_rows(path: str) -> list[dict]:
    """Rows of an earlier calibration CSV (kept when the search is extended with more settings)."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("floor", "grid_n", "grid_4n", "grid_n_wall_s", "grid_4n_wall_s"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else None
    return rows


def main(argv=None) -> int:
    from dart.engine.cli import ArgumentParser, user_error
    ap = ArgumentParser(prog=f"python workflow/scripts/{PROG}.py", description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--task", required=True, choices=sorted(TASKS))
    ap.add_argument("--grid", action="append", required=True, metavar="'KEY=V1,V2 KEY2=...'",
                    help="generator settings to try, in order (repeatable)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", required=True, help="CSV of the runs (and OUT with .md: a Markdown table)")
    ap.add_argument("--work", default="results/calibration/work",
                    help="folder of the generated data and the runs (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at a time (default 2, one thread each)")
    ap.add_argument("--full", action="store_true",
                    help="also train the full-resolution grid (4N tokens) where the rule does not need it")
    ap.add_argument("--all", action="store_true", help="try every setting (default: stop at the first pass)")
    ap.add_argument("--only-grid-n", action="store_true",
                    help="a probe: train grid-N only (a task whose rule needs grid-4N then cannot pass)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="dart.train override for every run (a recipe shared by the pair), repeatable")
    args = ap.parse_args(argv)
    try:
        settings = [s for g in args.grid for s in parse_grid(g)]
        if args.jobs < 1:
            raise ValueError("--jobs must be at least 1")
        for o in args.override:
            if "=" not in o or o.split("=", 1)[0].startswith(("data.toy", "model.name", "data.root")):
                raise ValueError(f"--override {o!r}: KEY=VALUE, not a data.toy / model.name / data.root key "
                                 f"(the settings set the data)")
        plan = Plan(args.task, TASKS[args.task], os.path.abspath(args.work), args.seeds, list(args.override),
                    args.full, args.jobs, args.only_grid_n)
        for s in settings:
            toy_section(plan.task.grid_n, plan.overrides, s)  # every setting valid before anything runs
        from dart.engine.cli import check_writable
        check_writable(args.out)
    except (ValueError, OSError) as e:
        return user_error(PROG, e)

    from tqdm import tqdm
    mine = {setting_key(args.task, toy_section(plan.task.grid_n, plan.overrides, s)[2], plan.overrides)
            for s in settings}
    rows = [r for r in read_rows(args.out) if r["key"] not in mine]  # earlier settings kept, in order
    verdicts = []
    bar = tqdm(total=len(settings) * len(args.seeds) * len(plan.roles()), desc=f"calibrate {args.task}",
               unit="run", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        for s in settings:
            bar.set_postfix_str(setting_name(s))
            new, verdict = run_setting(plan, s, progress=bar)
            rows += new
            verdicts.append((s, verdict))
            write_text(to_csv(rows), args.out)
            write_text(to_markdown(rows, plan.task.metric), os.path.splitext(args.out)[0] + ".md")
            tqdm.write(f"{setting_name(s)}: {new[-1]['passed']} {new[-1]['why']}".rstrip(), file=sys.stderr)
            if verdict["passed"] and not args.all:
                break
    except RuntimeError as e:
        return user_error(PROG, e)
    finally:
        bar.close()
    chosen = first_passing(verdicts)
    print(to_markdown(rows, plan.task.metric), end="")
    print(f"chosen: {setting_name(chosen)}" if chosen is not None else "chosen: none (no setting passed)")
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0 if chosen is not None else 1


if __name__ == "__main__":
    sys.exit(main())
