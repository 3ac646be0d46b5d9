"""The resolution claim at toy scale: tables (mean +- std over seeds), verdicts, top-1 vs GMACs plot,
partition pictures of the trained DART model, and one self-contained HTML page (Jinja2,
workflow/templates/claim.html.j2, which extends the reports' base.html.j2).

    python workflow/scripts/claim_report.py --measures M1.json M2.json ... --roles ROLE ... \
        --partition-run RUN_DIR --outdir results/toy/claim --html reports/claim.html [--scale toy]

Each measure JSON holds one experiment's records (one per seed, `claim_measure.py`). `--roles` gives
each JSON's row, in the same order: a role of ROWS (grid_low, dart_n, dart_2n, grid_4n, tome, ...)
on the detail set, TASK:ROLE for the same regime on another toy task (segmentation, video), or
ablation:NAME for a DART-N variant of the ablation.

The page is built from data: its rows from ROWS (role -> short name, description), its columns
from COLUMNS (machine name -> words, unit); summary.csv and verdicts.csv keep the machine names. A
record field this script does not know (a new measure, `method`, `trunk`, ...) is carried into
the row and rendered under its own name.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from page import write_text  # noqa: E402

ROWS = {  # role -> (short name, what it stands for in the paper)
    "grid_low": ("grid-N", "grid, N tokens, 2x-downsampled image (DeiT at 224)"),
    "dart_n": ("DART-N", "DART, N tokens, full resolution, scorer on the downsampled copy (DART at 448)"),
    "dart_n_uniform": ("DART-N at the grid", "DART-N with its partition held at the grid (a control: DART's "
                       "resampling at full resolution without adapting)"),
    "dart_n_ours": ("DART-N, our defaults", "DART-N under our defaults (convention ours) instead of the "
                    "published ones"),
    "dart_2n": ("DART-2N", "DART, 2N tokens, full resolution (the 392-token row)"),
    "grid_4n": ("grid-4N", "grid, 4N tokens, full resolution (DeiT-S at 384, the upper bound)"),
    "tome": ("ToMe", "ToMe on the trained full-resolution grid, r matched to DART-N's GMACs (no retraining)"),
}
# a DART run's partition measures (claim_measure.py): the page's partition tables, in this order
ADAPT = ("area_cv", "area_min_frac", "area_max_frac", "band_height_cv", "patches_per_band", "score_ratio",
         "score_cv", "tokens_on_detail", "tokens_on_detail_grid")
# DART "finds the detail" when it spends this many times the grid's tokens on the pattern
FINDS_DETAIL = 1.5
METRIC_NAMES = {"top1": "top-1", "miou": "mIoU"}
TASKS = ("segmentation", "video")  # other toy tasks the regime is run on (TASK:role)
# the ablation's DART-N variants on the detail set (ablation:NAME, any name; claim.ablation)
ABLATION = "ablation"
# record fields that describe a run rather than measure it: one row cannot stand for seeds that
# differ in them
VARIANT_FIELDS = ("method", "trunk")
# record fields about one run that a row over seeds does not carry (train_<metric> too: the
# training run's own last validation, which the measure's own number replaces)
PER_RUN = {"run", "seed", "task", "wall_s", "val_images", "target_gmacs"}


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _score(m: dict) -> float:
    """A record's validation metric (top-1 or mIoU, named by its `metric`)."""
    return m[m.get("metric", "top1")]


def _carried(key: str, values: list, role: str):
    """A field the summary does not know, over a role's seeds: a number's mean, a list's
    element-wise mean (written like patches_per_band), a text (the seeds' distinct texts joined by
    " / "; seeds that differ in a VARIANT_FIELDS field are an error)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return statistics.fmean(values)
    if all(isinstance(v, list) and len(v) == len(values[0]) for v in values) and all(
            isinstance(x, (int, float)) for v in values for x in v):
        means = [statistics.fmean(v[i] for v in values) for i in range(len(values[0]))]
        whole = all(float(x).is_integer() for v in values for x in v)
        return " ".join(f"{m:.0f}" if whole else f"{m:.2f}" for m in means)
    texts = list(dict.fromkeys(str(v) for v in values))
    if len(texts) > 1 and key in VARIANT_FIELDS:
        raise SystemExit(f"the records of role {role} differ in {key} ({', '.join(texts)}): one row stands for "
                         f"one {key}; give each its own role")
    return " / ".join(texts)


def summarise(measures: list[dict], roles: list[str]) -> list[dict]:
    """One row per role (mean, std, min, max of the metric over seeds); a TASK:role row also names
    its task. Detail rows come first, in ROWS order. Record fields not named here (a new measure, a
    describing field such as `method` or `trunk`) are carried over (`_carried`)."""
    order = list(ROWS) + list(dict.fromkeys(r for r in roles if ":" in r))
    rows = []
    for role in order:
        ms = sorted((m for m, r in zip(measures, roles) if r == role), key=lambda m: m["seed"])
        if not ms:
            continue
        task, _, base = role.rpartition(":")
        scores = [_score(m) for m in ms]
        mean, std = _mean_std(scores)
        row = {"role": role, "task": task or "classification (detail)", "what": ROWS[base][1] if base in ROWS else "",
               "model": ms[0]["model"], "tokens": ms[0]["num_tokens"], "input_px": ms[0]["img_size"],
               "gmacs": statistics.fmean(m["gmacs"] for m in ms), "metric": ms[0].get("metric", "top1"),
               "mean": mean, "std": std, "seeds": len(ms), "min": min(scores), "max": max(scores),
               "per_seed": " / ".join(f"{v:.1f}" for v in scores), "split": "val"}
        if ms[0].get("floor") is not None:
            row["floor"] = ms[0]["floor"]
        if base == "tome":
            row["tome_r"] = ms[0].get("tome_r")
            row["tokens_per_block"] = " ".join(str(t) for t in ms[0].get("tokens_per_block", []))
        handled = set(row) | {"num_tokens", "img_size", row["metric"], "tome_r", "tokens_per_block"}
        for key in dict.fromkeys(k for m in ms for k in m):
            if key in handled or key in PER_RUN or key.startswith("train_"):
                continue
            values = [m[key] for m in ms if m.get(key) is not None]
            if values:
                row[key] = _carried(key, values, role)
        rows.append(row)
    return rows


# a row whose seeds disagree by more than this (top-1 std, points) did not train to a stable result:
# a claim resting on it is "inconclusive", never "holds" on the strength of a wide spread, unless it
# fails even with DART's best seed against the other side's worst ("does not hold" either way)
UNSTABLE_STD = 10.0
# A run has not learned when its mean over seeds is within this many points of its floor (the
# metric of always predicting the most common class) or below it. On the detail set's three
# balanced classes the floor is 33.3% and one seed at chance lands within about 2 points of it on
# the 500 validation images (binomial std 2.1 points; the mean of 3 seeds, 1.2): 3 points tells
# "at chance" from "learned something". Two runs
# that have not learned, or any comparison on a task whose upper reference (grid-4N: every token at
# full resolution) has not learned, differ by noise: the verdict is "no test", never holds / does
# not hold. One threshold for every metric (top-1, mIoU), set from the detail set, not per verdict.
NEAR_FLOOR = 3.0
UPPER_REFERENCE = "grid_4n"  # the role that shows a task can be learned at all


def _name(role: str) -> str:
    """A role's short name (an ablation variant: its own name, in words)."""
    base = role.rpartition(":")[2]
    return ROWS[base][0] if base in ROWS else base.replace("_", " ")


def _unlearned(r: dict) -> bool:
    """Whether a row's mean is within NEAR_FLOOR points of its floor or below (False: no floor)."""
    return r.get("floor") is not None and r["mean"] - r["floor"] <= NEAR_FLOOR


def no_test(by: dict, involved) -> str | None:
    """Why an accuracy comparison between the rows `involved` cannot decide (None: it can): its
    family's upper reference has not learned, or none of its sides has."""
    task = involved[0].rpartition(":")[0]
    ref = by.get(f"{task}:{UPPER_REFERENCE}" if task else UPPER_REFERENCE)
    if ref is not None and _unlearned(ref):
        return (f"no test: the upper reference {_name(ref['role'])} (mean {ref['mean']:.1f}) is within "
                f"{NEAR_FLOOR:.0f} points of the floor {ref['floor']:.1f} (always predicting the most common class): "
                "the task was not learned even with every token at full resolution, so no comparison on it decides")
    sides = [by[r] for r in involved if r in by]
    if sides and all(_unlearned(r) for r in sides):
        named = " and ".join(f"{_name(r['role'])} (mean {r['mean']:.1f}, floor {r['floor']:.1f})" for r in sides)
        both, neither = ("both", "neither") if len(sides) == 2 else ("all", "none")
        return (f"no test: {named} are {both} within {NEAR_FLOOR:.0f} points of the floor (always predicting the "
                f"most common class): {neither} learned the task, so their difference is noise")
    return None


def verdicts(rows: list[dict]) -> list[dict]:
    by = {r["role"]: r for r in rows}
    out = []

    def best(r):  # a row's best and worst seed (its mean when per-seed numbers are absent)
        return r.get("max", r["mean"])

    def worst(r):
        return r.get("min", r["mean"])

    def add(claim, holds, numbers, involved=(), holds_at_best=None, method=None):
        """holds_at_best: whether the claim would hold with DART's best seed against the other
        side's worst (None: the claim does not rest on accuracies). An accuracy comparison
        (`involved` names its sides) first gets "no test" when it cannot decide (`no_test`).
        `method`: the DART method the verdict judges (published / ours), from its DART side."""
        if method is None:
            method = next((by[r]["method"] for r in involved if r in by and by[r].get("method")), "")
        reason = no_test(by, involved) if involved else None
        if reason:
            out.append({"claim": claim, "method": method, "verdict": "no test", "numbers": f"{numbers}; {reason}",
                        "split": "val"})
            return
        unstable = [r for r in involved if r in by and by[r]["std"] > UNSTABLE_STD]
        verdict = "holds" if holds else "does not hold"
        single = [r for r in involved if r in by and by[r].get("seeds", 2) < 2]
        if single and holds:  # one seed has no spread to beat
            verdict = "inconclusive"
            numbers += f"; one seed only ({', '.join(single)}): no spread to compare with"
        if unstable:
            spreads = ", ".join(f"{r} std {by[r]['std']:.1f}" for r in unstable)
            if holds or holds_at_best is None or holds_at_best:
                verdict = "inconclusive"
                numbers += f"; seeds disagree ({spreads} > {UNSTABLE_STD:.0f} points): not a stable result"
            else:
                numbers += (f"; seeds disagree ({spreads} > {UNSTABLE_STD:.0f} points), but it fails even "
                            "with DART's best seed against the other's worst")
        out.append({"claim": claim, "method": method, "verdict": verdict, "numbers": numbers, "split": "val"})

    def beats(d_role, g_role, claim, name):  # DART-N above grid-N by more than the seeds' spread
        d, g = by[d_role], by[g_role]
        spread = max(d["std"], g["std"])
        floor = f"; always predicting the most common class scores {g['floor']:.1f}" if "floor" in g else ""
        add(claim, d["mean"] - g["mean"] > spread,
            f"{_name(d_role)} {d['mean']:.1f} +- {d['std']:.1f} vs {_name(g_role)} {g['mean']:.1f} +- "
            f"{g['std']:.1f} {name} (difference {d['mean'] - g['mean']:+.1f}, spread {spread:.1f}){floor}",
            (d_role, g_role), best(d) - worst(g) > spread)

    def adapts(role, claim_prefix=""):
        d = by[role]
        the = "the" if claim_prefix else "The"
        add(f"{claim_prefix}{the} trained {_name(role)} partition adapts (patch areas spread: std/mean > 0.1)",
            (d.get("area_cv") or 0) > 0.1,
            f"patch-area std/mean {d.get('area_cv', 0):.3f}, smallest patch {d.get('area_min_frac', 1):.2f}x "
            f"the mean, patches per band {d.get('patches_per_band', '')}, score max/min {d.get('score_ratio', 1):.3f}",
            method=d.get("method", ""))
        if d.get("tokens_on_detail") is not None and d.get("tokens_on_detail_grid"):
            ratio = d["tokens_on_detail"] / d["tokens_on_detail_grid"]
            add(f"The trained {_name(role)} partition gathers on the detail (>= {FINDS_DETAIL}x the grid's "
                "tokens on the pattern)", ratio >= FINDS_DETAIL,
                f"{d['tokens_on_detail']:.2f} tokens on the pattern vs {d['tokens_on_detail_grid']:.2f} for the "
                f"grid ({ratio:.2f}x)", method=d.get("method", ""))

    # the paper's verdict, for the method as published and for our defaults (each names its method)
    for role, who in (("dart_n", "DART at N tokens"), ("dart_n_ours", "DART at N tokens under our defaults")):
        if role in by and "grid_low" in by:
            beats(role, "grid_low", f"{who} beats the grid at N tokens (on the downsampled image) by more than "
                  "the seeds' spread", "top-1")
    # the control: the same model, full-resolution pixels through DART's own resampling, the
    # partition held at the grid; only placing tokens by content differs
    if "dart_n" in by and "dart_n_uniform" in by:
        beats("dart_n", "dart_n_uniform", "DART-N beats its own uniform partition (the same full-resolution "
              "sampling, the partition held at the grid) by more than the seeds' spread: placing tokens by "
              "content, not reading the full image, is what gains", "top-1")
    if "dart_2n" in by and "grid_4n" in by:
        d, g = by["dart_2n"], by["grid_4n"]
        spread = max(d["std"], g["std"])
        add("DART at 2N tokens comes within the seeds' spread of the grid at 4N tokens, at lower GMACs",
            g["mean"] - d["mean"] <= spread and d["gmacs"] < g["gmacs"],
            f"DART-2N {d['mean']:.1f} +- {d['std']:.1f} at {d['gmacs'] * 1e3:.2f} MMACs vs grid-4N "
            f"{g['mean']:.1f} +- {g['std']:.1f} at {g['gmacs'] * 1e3:.2f} MMACs", ("dart_2n", "grid_4n"),
            worst(g) - best(d) <= spread and d["gmacs"] < g["gmacs"])
    if "dart_n" in by and "tome" in by:
        d, t = by["dart_n"], by["tome"]
        spread = max(d["std"], t["std"])
        add("DART at N tokens beats ToMe (applied to the full-resolution grid) at the same GMACs",
            d["mean"] - t["mean"] > spread and t["gmacs"] >= d["gmacs"] * 0.95,
            f"DART-N {d['mean']:.1f} +- {d['std']:.1f} at {d['gmacs'] * 1e3:.2f} MMACs vs ToMe "
            f"(r={t.get('tome_r')}) {t['mean']:.1f} +- {t['std']:.1f} at {t['gmacs'] * 1e3:.2f} MMACs"
            + ("" if abs(t["gmacs"] / d["gmacs"] - 1) < 0.05 else
               f" (closest ToMe gets to DART-N's cost: {t['gmacs'] / d['gmacs']:.2f}x)"), ("dart_n", "tome"),
            best(d) - worst(t) > spread and t["gmacs"] >= d["gmacs"] * 0.95)
    for role in ("dart_n", "dart_n_ours"):
        if role in by:
            adapts(role)
    for task in dict.fromkeys(r["role"].split(":")[0] for r in rows if ":" in r["role"] and not
                              r["role"].startswith(ABLATION + ":")):
        d_role, g_role = f"{task}:dart_n", f"{task}:grid_low"
        if d_role in by and g_role in by:
            metric = METRIC_NAMES.get(by[d_role]["metric"], by[d_role]["metric"])
            beats(d_role, g_role, f"Toy {task}: DART at N tokens (full resolution) beats the grid at N tokens "
                  f"(downsampled input) by more than the seeds' spread ({metric})", metric)
        if d_role in by:
            adapts(d_role, f"Toy {task}: ")
    return out


def write_csv(rows: list[dict], path: str) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    w.writeheader()
    w.writerows(rows)
    write_text(buf.getvalue(), path)


def plot(rows: list[dict], measures, roles, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in (r for r in rows if ":" not in r["role"]):  # the detail family
        pts = [m for m, ro in zip(measures, roles) if ro == r["role"]]
        ax.scatter([m["gmacs"] * 1e3 for m in pts], [m["top1"] for m in pts], s=12, alpha=0.4)
        ax.errorbar([r["gmacs"] * 1e3], [r["mean"]], yerr=[r["std"]], fmt="o", capsize=3,
                    label=f"{_name(r['role'])} ({r['tokens']} tok, {r['input_px']} px)")
    floors = {r["floor"] for r in rows if ":" not in r["role"] and r.get("floor") is not None}
    if len(floors) == 1:  # what a run that learned nothing scores
        ax.axhline(floors.pop(), ls=":", lw=1, color="0.4", label="floor: always the most common class")
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("val top-1 (%)")
    ax.set_title("toy detail set: top-1 vs cost (mean +- std over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def _detail_boxes(cfg: dict, images: int):
    """The first val images' pattern boxes (input pixels) when the run is on the toy `detail` set."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from claim_measure import detail_boxes
    boxes = detail_boxes(cfg)
    return None if boxes is None else boxes[:images]


def partition_figure(run_dir: str, path: str, images: int = 4) -> None:
    """Trained DART partitions of the first val images: image + patches (dashed: the pattern, on the
    detail set), scores with a colour bar, patches per band beside each picture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.patches import Rectangle
    from dart.adaptivity import partition_stats
    from dart.data import build_datasets
    from dart.engine.run import load_run
    from dart.viz import to_uint8_image
    cfg, model = load_run(run_dir)
    _, val, _ = build_datasets(cfg, prepare=False, progress=False)
    x = torch.stack([val[i][0] for i in range(images)])
    boxes = _detail_boxes(cfg, images)
    with torch.no_grad():
        _, part = model.tokenize(x)
    fig, axes = plt.subplots(images, 2, figsize=(7, 3.2 * images), squeeze=False)
    for i in range(images):
        arr = to_uint8_image(x[i], cfg["data"]["mean"], cfg["data"]["std"])
        ax = axes[i, 0]
        ax.imshow(arr)
        for x0, y0, x1, y1 in part.rects[i].reshape(-1, 4).tolist():
            if x1 - x0 > 1e-6 and y1 - y0 > 1e-6:
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.7,
                                       edgecolor=(1.0, 0.85, 0.1, 0.9)))
        if boxes is not None:  # where the class evidence is
            bx0, by0, bx1, by1 = boxes[i].tolist()
            ax.add_patch(Rectangle((bx0 - 0.5, by0 - 0.5), bx1 - bx0, by1 - by0, fill=False, lw=1.2, ls="--",
                                   edgecolor=(0.1, 0.9, 1.0, 0.9)))
        single = type(part)(part.scores[i:i + 1], part.row_bounds[i:i + 1], part.patch_bounds[i:i + 1],
                            part.rects[i:i + 1], None, part.grid, part.img_size)
        st = partition_stats(single)
        ax.set_title("patches per band: " + " ".join(f"{v:.0f}" for v in st["patches_per_band"]), fontsize=8)
        ax.axis("off")
        im = axes[i, 1].imshow(part.scores[i].float().numpy(), cmap="magma", vmin=0)
        axes[i, 1].set_title(f"scores (max/min {st['score_ratio']:.3f})", fontsize=8)
        axes[i, 1].axis("off")
        fig.colorbar(im, ax=axes[i, 1], fraction=0.046, pad=0.04)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    plt.close(fig)


class Column(NamedTuple):
    """How the page shows a field: its name in words, its unit, its decimals (None: 4 significant
    digits) and a factor (shown = stored x factor). `{metric}` and `{per}` in the words and unit
    stand for the table's metric (top-1, mIoU) and what its cost is counted per."""
    words: str
    unit: str = ""
    digits: int | None = None
    factor: float = 1.0


# machine name (summary.csv, verdicts.csv) -> how the page shows it; a field not listed here
# renders under its own name, underscores as spaces
COLUMNS = {
    "role": Column("run"),
    "task": Column("task"),
    "model": Column("model", "timm name"),
    "tokenizer": Column("tokenizer"),
    "method": Column("method"),
    "scorer": Column("scorer"),
    "trunk": Column("scorer trunk"),
    "tokens": Column("tokens", "per {frame}"),
    "input_px": Column("input", "px"),
    "gmacs": Column("compute", "MMACs per {per}", 2, 1e3),
    "metric": Column("metric"),
    "mean": Column("{metric}, mean over seeds", "%", 1),
    "std": Column("spread over seeds", "std, points", 1),
    "per_seed": Column("{metric} per seed", "%"),
    "seeds": Column("seeds"),
    "floor": Column("floor: always the most common class", "%", 1),
    "tome_r": Column("ToMe merges per block", "r"),
    "tokens_per_block": Column("tokens entering each block", "ToMe"),
    "split": Column("split"),
    "area_cv": Column("patch-area spread", "std / mean; grid = 0", 3),
    "area_min_frac": Column("smallest patch", "x the mean area", 2),
    "area_max_frac": Column("largest patch", "x the mean area", 2),
    "band_height_cv": Column("band-height spread", "std / mean", 3),
    "patches_per_band": Column("patches per band", "top to bottom"),
    "score_ratio": Column("highest / lowest score", "grid = 1", 3),
    "score_cv": Column("score spread", "std / mean", 3),
    "tokens_on_detail": Column("tokens on the pattern", "", 2),
    "tokens_on_detail_grid": Column("tokens on the pattern, a grid of the same N", "", 2),
    "claim": Column("claim"),
    "verdict": Column("verdict"),
    "numbers": Column("the numbers behind it"),
}
# the run table's columns in order (then any field COLUMNS does not know); a column shows when a
# row has a value in it
RUN_COLUMNS = ("role", "task", "model", "tokenizer", "method", "scorer", "trunk", "tokens", "input_px", "gmacs",
               "metric", "mean", "std", "per_seed", "seeds", "floor", "tome_r", "tokens_per_block", "split")
VERDICT_COLUMNS = ("claim", "method", "verdict", "numbers", "split")
# in summary.csv, not on the page: the role's description is shown under its name, min and max
# in "per seed", the tokenizer (grid, dart, tome) in the run's name and model
NOT_SHOWN = {"what", "min", "max", "tokenizer"}
TEXT_COLUMNS = {"claim", "numbers"}  # long texts: they wrap at a readable width
NOWRAP_COLUMNS = {"patches_per_band", "tokens_per_block", "verdict"}  # short lists: one line
VALUE_WORDS = {"metric": METRIC_NAMES}  # machine values the page writes in words
VERDICT_CSS = {"holds": "ok", "does not hold": "bad", "inconclusive": "warn", "no test": "na"}


def _fmt(value, col: Column) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = value * col.factor
    if col.digits is not None:
        return f"{v:.{col.digits}f}"
    return f"{v:.4g}"


def _column(name: str, context: dict) -> Column:
    if name not in COLUMNS:
        return Column(name.replace("_", " "))
    col = COLUMNS[name]
    return col._replace(words=col.words.format(**context), unit=col.unit.format(**context))


def table(rows: list[dict], names, context: dict, extra: bool = False) -> dict:
    """A table for the page: the columns of `names` that some row fills (and with `extra`, every
    field COLUMNS does not know, after them), each row's cells formatted."""
    names = [n for n in names if n not in NOT_SHOWN]
    if extra:
        known = set(COLUMNS) | NOT_SHOWN | set(ADAPT)
        names += [k for k in dict.fromkeys(k for r in rows for k in r) if k not in known and k not in names]
    names = [n for n in names if any(r.get(n) not in (None, "") for r in rows)]
    columns = [dict(_column(n, context)._asdict(), name=n) for n in names]
    body = []
    for r in rows:
        cells = []
        for n in names:
            col, v = COLUMNS.get(n, Column(n)), r.get(n)
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            cell = {"text": _fmt(VALUE_WORDS.get(n, {}).get(v, v), col), "css": "" if number else "l", "note": ""}
            if n == "role":
                cell.update(text=_name(v), note=r.get("what", ""))
            elif n == "verdict":
                cell["css"] = f"{VERDICT_CSS.get(v, 'na')} verdict"
            elif n in TEXT_COLUMNS:
                cell["css"] = "l text"
            if n in NOWRAP_COLUMNS:
                cell["css"] += " nowrap"
            cells.append(cell)
        body.append(cells)
    for i, col in enumerate(columns):  # a column of texts is aligned left, its header too
        col["css"] = "l" if any("l" in row[i]["css"].split() for row in body) else ""
    return {"columns": columns, "rows": body}


SPLIT_WORDS = {"val": "validation split"}
# what a task's cost and tokens are counted per (a video model sees clips of frames)
PER_TASK = {"video": {"per": "clip", "frame": "frame"}}


def _section(rows: list[dict], task: str) -> dict:
    """One task's run table and (for its DART rows) its partition table; the headers name the
    metric when all rows share one."""
    metrics = {r["metric"] for r in rows}
    context = {"metric": METRIC_NAMES.get(next(iter(metrics)), "metric") if len(metrics) == 1 else "metric",
               "per": "image", "frame": "image", **PER_TASK.get(task, {})}
    splits = {r.get("split") for r in rows}
    # a column every row shares (the metric, the split) is named in the headers instead
    names = [n for n in RUN_COLUMNS if n != "task" and (n != "metric" or len(metrics) > 1)
             and (n != "split" or len(splits) > 1)]
    dart = [r for r in rows if any(r.get(k) is not None for k in ADAPT)]
    split = next(iter(splits)) if len(splits) == 1 else None
    return {"task": task, "metric": context["metric"], "split": SPLIT_WORDS.get(split, split or ""),
            "runs": table(rows, names, context, extra=True), "partitions": table(dart, ["role", *ADAPT], context)}


def page_context(rows: list[dict], verdict_rows: list[dict]) -> dict:
    """Everything the claim page shows, as tables of formatted cells (claim.html.j2): the verdicts,
    the detail set's runs, the runs of each other task (TASK:role rows) in their own section, and
    the ablation (ablation:NAME rows)."""
    detail = [r for r in rows if ":" not in r["role"]]
    families = list(dict.fromkeys(r["role"].split(":")[0] for r in rows if ":" in r["role"]))
    section = {f: _section([r for r in rows if r["role"].startswith(f + ":")], f) for f in families}
    return {"verdicts": table(verdict_rows, VERDICT_COLUMNS, {}, extra=True),
            "detail": _section(detail, "classification") if detail else None,
            "tasks": [section[f] for f in families if f != ABLATION], "ablation": section.get(ABLATION),
            "near_floor": NEAR_FLOOR, "unstable_std": UNSTABLE_STD}


def write_html(rows, verdict_rows, plot_png, part_png, path: str, *, scale: str = "", inputs=()) -> None:
    """reports/claim.html from workflow/templates/claim.html.j2 (images inlined: self-contained).
    `inputs`: (role, measure JSON) pairs, listed under the provenance."""
    from page import environment, generated, git_info, png_file_uri, versions
    provenance = {"measures": "; ".join(f"{role}: {p}" for role, p in inputs)} if inputs else {}
    html = environment().get_template("claim.html.j2").render(
        title="The resolution claim at toy scale", scale=scale, generated=generated(),
        git=git_info(ROOT), versions=versions(), provenance=provenance,
        plot=png_file_uri(plot_png), partitions=png_file_uri(part_png) if part_png else None,
        **page_context(rows, verdict_rows))
    write_text(html, path)


def _valid_role(role: str) -> bool:
    task, _, base = role.rpartition(":")
    if task == ABLATION:
        return base.isidentifier()
    return base in ROWS and (not task or task in TASKS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measures", nargs="+", required=True)
    ap.add_argument("--roles", nargs="+", required=True)
    ap.add_argument("--partition-run", default=None)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--html", required=True)
    ap.add_argument("--scale", default="", help="the scale the runs are of (shown in the page's header)")
    args = ap.parse_args(argv)
    if len(args.measures) != len(args.roles) or not all(_valid_role(r) for r in args.roles):
        raise SystemExit(f"--roles must name one of {', '.join(ROWS)} (or TASK:ROLE for a task of "
                         f"{', '.join(TASKS)}, or {ABLATION}:NAME) per measure JSON")
    measures, roles = [], []
    for p, role in zip(args.measures, args.roles):
        with open(p) as f:
            records = json.load(f)["records"]
        measures += records
        roles += [role] * len(records)
    os.makedirs(args.outdir, exist_ok=True)
    rows = summarise(measures, roles)
    ver = verdicts(rows)
    write_csv(rows, os.path.join(args.outdir, "summary.csv"))
    write_csv(ver, os.path.join(args.outdir, "verdicts.csv"))
    plot_png = os.path.join(args.outdir, "top1_vs_gmacs.png")
    plot(rows, measures, roles, plot_png)
    part_png = None
    if args.partition_run:
        part_png = os.path.join(args.outdir, "partitions.png")
        partition_figure(args.partition_run, part_png)
    write_html(rows, ver, plot_png, part_png, args.html, scale=args.scale, inputs=list(zip(args.roles, args.measures)))
    for v in ver:
        print(f"{v['verdict']:>14}: {v['claim']} -- {v['numbers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
