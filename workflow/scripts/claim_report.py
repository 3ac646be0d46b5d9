"""The resolution claim at toy scale: tables (mean +- std over seeds), verdicts, top-1 vs GMACs plot,
partition pictures of the trained DART model, and one self-contained HTML page.

    python workflow/scripts/claim_report.py --measures M1.json M2.json ... --roles ROLE ... \
        --partition-run RUN_DIR --outdir results/toy/claim --html reports/claim.html

Each measure JSON holds one experiment's records (one per seed, `claim_measure.py`). `--roles` gives
each JSON's row, in the same order: grid_low, dart_n, dart_2n, grid_4n or tome on the detail set, and
TASK:grid_low or TASK:dart_n for the same regime on another toy task (segmentation, video).
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

ROWS = {  # role -> what it stands for in the paper
    "grid_low": "grid, N tokens, 2x-downsampled image (DeiT at 224)",
    "dart_n": "DART, N tokens, full resolution, scorer on the downsampled copy (DART at 448)",
    "dart_2n": "DART, 2N tokens, full resolution (the 392-token row)",
    "grid_4n": "grid, 4N tokens, full resolution (DeiT-S at 384, the upper bound)",
    "tome": "ToMe on the trained full-resolution grid, r matched to DART-N's GMACs (no retraining)",
}
ADAPT = ("area_cv", "area_min_frac", "area_max_frac", "band_height_cv", "score_ratio", "score_cv",
         "tokens_on_detail", "tokens_on_detail_grid")
# DART "finds the detail" when it spends this many times the grid's tokens on the pattern
FINDS_DETAIL = 1.5
METRIC_NAMES = {"top1": "top-1", "miou": "mIoU"}
TASKS = ("segmentation", "video")  # other toy tasks the regime is run on (TASK:role)


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _score(m: dict) -> float:
    """A record's validation metric (top-1 or mIoU, named by its `metric`)."""
    return m[m.get("metric", "top1")]


def summarise(measures: list[dict], roles: list[str]) -> list[dict]:
    """One row per role (mean, std, min, max of the metric over seeds); a TASK:role row also names
    its task. Detail rows come first, in ROWS order."""
    order = list(ROWS) + list(dict.fromkeys(r for r in roles if ":" in r))
    rows = []
    for role in order:
        ms = sorted((m for m, r in zip(measures, roles) if r == role), key=lambda m: m["seed"])
        if not ms:
            continue
        task, _, base = role.rpartition(":")
        scores = [_score(m) for m in ms]
        mean, std = _mean_std(scores)
        row = {"role": role, "task": task or "classification (detail)", "what": ROWS.get(base, ""),
               "model": ms[0]["model"], "tokens": ms[0]["num_tokens"], "input_px": ms[0]["img_size"],
               "gmacs": statistics.fmean(m["gmacs"] for m in ms), "metric": ms[0].get("metric", "top1"),
               "mean": mean, "std": std, "seeds": len(ms), "min": min(scores), "max": max(scores),
               "per_seed": " / ".join(f"{v:.1f}" for v in scores), "split": "val"}
        if ms[0].get("floor") is not None:
            row["floor"] = ms[0]["floor"]
        if role == "tome":
            row["tome_r"] = ms[0].get("tome_r")
            row["tokens_per_block"] = " ".join(str(t) for t in ms[0].get("tokens_per_block", []))
        for k in ADAPT:
            if k in ms[0]:
                row[k] = statistics.fmean(m[k] for m in ms)
        if "patches_per_band" in ms[0]:
            nb = len(ms[0]["patches_per_band"])
            row["patches_per_band"] = " ".join(
                f"{statistics.fmean(m['patches_per_band'][i] for m in ms):.2f}" for i in range(nb))
        rows.append(row)
    return rows


# a row whose seeds disagree by more than this (top-1 std, points) did not train to a stable result:
# a claim resting on it is "inconclusive", never "holds" on the strength of a wide spread, unless it
# fails even with DART's best seed against the other side's worst ("does not hold" either way)
UNSTABLE_STD = 10.0


def verdicts(rows: list[dict]) -> list[dict]:
    by = {r["role"]: r for r in rows}
    out = []

    def best(r):  # a row's best and worst seed (its mean when per-seed numbers are absent)
        return r.get("max", r["mean"])

    def worst(r):
        return r.get("min", r["mean"])

    def add(claim, holds, numbers, involved=(), holds_at_best=None):
        """holds_at_best: whether the claim would hold with DART's best seed against the other
        side's worst (None: the claim does not rest on accuracies)."""
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
        out.append({"claim": claim, "verdict": verdict, "numbers": numbers, "split": "val"})

    def beats(d_role, g_role, claim, name):  # DART-N above grid-N by more than the seeds' spread
        d, g = by[d_role], by[g_role]
        spread = max(d["std"], g["std"])
        floor = f"; always predicting the most common class scores {g['floor']:.1f}" if "floor" in g else ""
        add(claim, d["mean"] - g["mean"] > spread,
            f"DART-N {d['mean']:.1f} +- {d['std']:.1f} vs grid-N {g['mean']:.1f} +- {g['std']:.1f} {name} "
            f"(difference {d['mean'] - g['mean']:+.1f}, spread {spread:.1f}){floor}",
            (d_role, g_role), best(d) - worst(g) > spread)

    if "dart_n" in by and "grid_low" in by:
        beats("dart_n", "grid_low", "DART at N tokens beats the grid at N tokens (on the downsampled image) by "
              "more than the seeds' spread", "top-1")
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
    if "dart_n" in by:
        d = by["dart_n"]
        add("The trained DART-N partition adapts (patch areas spread: std/mean > 0.1)",
            (d.get("area_cv") or 0) > 0.1,
            f"patch-area std/mean {d.get('area_cv', 0):.3f}, smallest patch {d.get('area_min_frac', 1):.2f}x "
            f"the mean, patches per band {d.get('patches_per_band', '')}, score max/min {d.get('score_ratio', 1):.3f}")
        if d.get("tokens_on_detail") is not None and d.get("tokens_on_detail_grid"):
            ratio = d["tokens_on_detail"] / d["tokens_on_detail_grid"]
            add(f"The trained DART-N partition gathers on the detail (>= {FINDS_DETAIL}x the grid's tokens on "
                "the pattern)", ratio >= FINDS_DETAIL,
                f"{d['tokens_on_detail']:.2f} tokens on the pattern vs {d['tokens_on_detail_grid']:.2f} for the "
                f"grid ({ratio:.2f}x)")
    for task in dict.fromkeys(r["role"].split(":")[0] for r in rows if ":" in r["role"]):
        d_role, g_role = f"{task}:dart_n", f"{task}:grid_low"
        if d_role in by and g_role in by:
            metric = METRIC_NAMES.get(by[d_role]["metric"], by[d_role]["metric"])
            beats(d_role, g_role, f"Toy {task}: DART at N tokens (full resolution) beats the grid at N tokens "
                  f"(downsampled input) by more than the seeds' spread ({metric})", metric)
        if d_role in by:
            d = by[d_role]
            add(f"Toy {task}: the trained DART-N partition adapts (patch areas spread: std/mean > 0.1)",
                (d.get("area_cv") or 0) > 0.1,
                f"patch-area std/mean {d.get('area_cv', 0):.3f}, smallest patch {d.get('area_min_frac', 1):.2f}x "
                f"the mean, score max/min {d.get('score_ratio', 1):.3f}")
    return out


def write_csv(rows: list[dict], path: str) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot(rows: list[dict], measures, roles, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in (r for r in rows if ":" not in r["role"]):  # the detail family
        pts = [m for m, ro in zip(measures, roles) if ro == r["role"]]
        ax.scatter([m["gmacs"] * 1e3 for m in pts], [m["top1"] for m in pts], s=12, alpha=0.4)
        ax.errorbar([r["gmacs"] * 1e3], [r["mean"]], yerr=[r["std"]], fmt="o", capsize=3,
                    label=f"{r['role']} ({r['tokens']} tok, {r['input_px']} px)")
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


def _img(path: str) -> str:
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _table(rows: list[dict], cols: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(rows, verdict_rows, plot_png, part_png, path: str) -> None:
    shown = [dict(r, gmacs=r["gmacs"] * 1e3) for r in rows]
    detail = [r for r in shown if ":" not in r["role"]]
    tasks = [r for r in shown if ":" in r["role"]]
    cols = ["role", "model", "tokens", "input_px", "gmacs", "metric", "mean", "std", "seeds", "per_seed",
            "floor", "tome_r", "area_cv", "area_min_frac", "patches_per_band", "score_ratio", "tokens_on_detail",
            "tokens_on_detail_grid", "split", "what"]
    task_cols = ["task", "role", "model", "tokens", "input_px", "gmacs", "metric", "mean", "std", "seeds",
                 "per_seed", "floor", "area_cv", "area_min_frac", "score_ratio", "split"]
    doc = ["<!doctype html><meta charset='utf-8'><title>DART resolution claim (toy)</title>",
           "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
           "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}</style>",
           "<h1>The resolution claim at toy scale</h1>",
           "<p>Toy <code>detail</code> set (docs/engine.md): the class is a 1-px pattern that a 2x "
           "downsampling averages away. Every number comes from the validation split, top-1 or (segmentation) "
           "mIoU (the toy sets have no other held-out split; nothing was tuned per model: all runs of a task "
           "share one recipe). gmacs column in MMACs. floor: the metric of always predicting the most common "
           "class (every pixel of it, for segmentation). "
           "tokens_on_detail: the tokens a DART partition spends on the pattern (patch area shares inside its "
           "box), against tokens_on_detail_grid for a grid of the same N. Why DART-N does not find the pattern "
           "here, and why DART-2N can leave chance without adapting (its uniform 6-band layout samples the "
           "1-px pattern at 1.33 x 1.5 px steps: an alias, where DART-N's exact 2-px steps average it "
           "away): docs/engine.md, 'DART on the detail set'.</p>",
           "<h2>Verdicts</h2>", _table(verdict_rows, ["claim", "verdict", "numbers", "split"]),
           "<h2>Detail set: runs (mean +- std over seeds)</h2>", _table(detail, cols)]
    if tasks:
        doc += ["<h2>The same regime on the segmentation and video sets (mean +- std over seeds)</h2>",
                "<p>Grid at N tokens on the 2x-downsampled input against DART at N tokens on the full "
                "resolution, its scorer on the downsampled copy (docs/engine.md, 'The paper's regime'). "
                "Segmentation is scored in mIoU on the full-resolution validation masks (the grid's logits "
                "upsampled); partition measures of a video model count every frame.</p>",
                _table(tasks, task_cols)]
    doc.append(f"<h2>Top-1 vs cost (detail set)</h2><img src='{_img(plot_png)}'>")
    if part_png:
        doc.append(f"<h2>Partitions of the trained DART-N model (seed 0; dashed: the pattern)</h2>"
                   f"<img src='{_img(part_png)}'>")
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w") as f:
        f.write("\n".join(doc))
    os.replace(tmp, path)


def _valid_role(role: str) -> bool:
    task, _, base = role.rpartition(":")
    if task:
        return task in TASKS and base in ("grid_low", "dart_n")
    return role in ROWS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measures", nargs="+", required=True)
    ap.add_argument("--roles", nargs="+", required=True)
    ap.add_argument("--partition-run", default=None)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--html", required=True)
    args = ap.parse_args(argv)
    if len(args.measures) != len(args.roles) or not all(_valid_role(r) for r in args.roles):
        raise SystemExit(f"--roles must name one of {', '.join(ROWS)} (or TASK:grid_low, TASK:dart_n for a "
                         f"task of {', '.join(TASKS)}) per measure JSON")
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
    write_html(rows, ver, plot_png, part_png, args.html)
    for v in ver:
        print(f"{v['verdict']:>14}: {v['claim']} -- {v['numbers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
