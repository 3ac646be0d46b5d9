"""Measure the trained runs of one experiment of the resolution claim (all its seeds), or ToMe applied
to them: the validation metric, GMACs, tokens, and for DART runs how far the partition is from the
grid and, on the toy `detail` set, how many tokens it spends on the pattern (`tokens_on_detail`,
against `tokens_on_detail_grid`).

    python workflow/scripts/claim_measure.py --runs RUN_DIR [RUN_DIR ...] --out JSON
    python workflow/scripts/claim_measure.py --runs GRID_RUN_DIR ... --tome-match DART_JSON --out JSON

One process measures every seed (a process start costs more than a toy measure). The JSON holds
{"records": [one per run]}, each with `floor`: the metric of always predicting the most common
class. The metric is top-1 for classification and video, mIoU for segmentation. Classification
runs are evaluated here, in the same pass as their partitions; segmentation and video runs take the
training run's own final validation (metrics.json: the same split and checkpoint).
With --tome-match, ToMe is applied to each grid run's trained model without retraining, with the
merge rate r (the same in every block) whose GMACs come closest to the DART run of the same seed.
Numbers come from the validation split (the toy sets have no other held-out split).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def val_loader(cfg: dict, batch: int = 100):
    from dart.data import build_datasets
    _, val, _ = build_datasets(cfg, prepare=False, progress=False)
    return torch.utils.data.DataLoader(val, batch_size=batch, shuffle=False,
                                       collate_fn=lambda items: (torch.stack([i[0] for i in items]),
                                                                 torch.tensor([i[1] for i in items])))


def detail_boxes(cfg: dict):
    """The toy `detail` set's pattern boxes of the validation split, in input pixels (else None)."""
    from dart.data import toy, toy_root
    d = cfg["data"]
    if d["kind"] != "toy" or (d.get("toy") or {}).get("kind") != "detail":
        return None
    root = toy_root(cfg)
    canvas = toy.load_split(root, "val")[2]["params"]["canvas"]
    return torch.from_numpy(toy.load_boxes(root, "val").astype("float64")) * (d["img_size"] / canvas)


def _merge_stats(stats: list) -> dict:
    """Image-weighted mean of per-batch `partition_stats` (and tokens_on_detail)."""
    out = {}
    if not stats:
        return out
    n = sum(w for w, _ in stats)
    for key in stats[0][1]:
        if key == "patches_per_band":
            out[key] = [sum(w * s[key][i] for w, s in stats) / n for i in range(len(stats[0][1][key]))]
        else:
            out[key] = sum(w * s[key] for w, s in stats) / n
    return out


@torch.no_grad()
def top1_and_partitions(model, loader, dart: bool, num_classes: int, boxes=None, max_stats_images: int = 500):
    """Top-1, its constant-prediction floor and (DART) partition measures, in one pass over `loader`."""
    from dart.adaptivity import partition_stats, tokens_in_box
    correct = total = 0
    stats, labels = [], []
    for x, y in loader:
        labels.append(y)
        correct += int((model(x).argmax(-1) == y).sum())
        if dart and sum(s[0] for s in stats) < max_stats_images:
            _, part = model.tokenize(x)
            st = partition_stats(part)
            if boxes is not None:
                st["tokens_on_detail"] = float(tokens_in_box(part.rects.double(),
                                                             boxes[total:total + len(y)]).mean())
            stats.append((len(y), st))
        total += len(y)
    return {"top1": 100.0 * correct / total, "val_images": total,
            "floor": constant_floor(labels, "classification", num_classes), **_merge_stats(stats)}


@torch.no_grad()
def partitions(model, dataset, max_images: int = 200, batch: int = 50) -> dict:
    """Partition measures of any DART model (a segmenter's backbone, a video model's frames) on the
    first validation images; a clip counts each of its frames."""
    from dart.adaptivity import partition_stats
    from dart.viz import find_tokenizer
    tok = find_tokenizer(model)
    stats = []
    for start in range(0, min(max_images, len(dataset)), batch):
        x = torch.stack([dataset[i][0] for i in range(start, min(start + batch, max_images, len(dataset)))])
        if x.dim() == 5:  # clips (B, C, T, H, W) -> frames
            x = x.transpose(1, 2).flatten(0, 1)
        _, part = tok(x, return_partition=True)
        stats.append((len(x), partition_stats(part)))
    return _merge_stats(stats)


METHOD_OF_CONVENTION = {"official": "published", "ours": "ours"}
TRUNK_NAMES = {"pretrained_frozen": "pretrained-frozen", "random_frozen": "random-frozen", "scratch": "scratch"}


def dart_variant(model) -> dict:
    """Which DART a run is: `method` "published" (the official convention), "ours" (our defaults)
    or "custom" (a mix); `trunk` its scorer trunk's regime; `scorer` the scorer's name."""
    from dart.viz import find_tokenizer
    tok = find_tokenizer(model)
    return {"method": METHOD_OF_CONVENTION.get(tok.convention, "custom"), "scorer": tok.scorer.name,
            "trunk": TRUNK_NAMES.get(getattr(tok.scorer, "regime", None), "none")}


def gmacs(model, cfg) -> float:
    from bench.complexity import count_model
    from dart.engine.build import input_shape
    return count_model(model, input_shape(cfg))["gmacs"]


METRIC_OF_TASK = {"classification": "top1", "video": "top1", "segmentation": "miou"}


def constant_floor(labels: list, task: str, num_classes: int) -> float:
    """The metric of a model that always predicts the most common class (every pixel of it, for
    segmentation): what a run at that number has not learned beyond. mIoU as dart's MeanIoU takes it,
    over the classes present in the labels or the prediction."""
    y = torch.cat([torch.as_tensor(t).reshape(-1) for t in labels])
    y = y[y < num_classes]  # ignore index
    counts = torch.bincount(y, minlength=num_classes).double()
    if task != "segmentation":
        return float(100 * counts.max() / counts.sum())
    # all pixels predicted as the majority class k: IoU_k = n_k / total, 0 for every other class present
    present = int((counts > 0).sum())
    return float(100 * counts.max() / counts.sum() / present)


def pick_tome_r(model, cfg, target: float):
    """The merge rate whose GMACs come closest to `target` (GMACs fall as r grows)."""
    from dart.engine.build import num_tokens
    from dart.tome import apply_tome
    n = int(num_tokens(model)) + 1
    best = None
    for r in range(0, n // 2 + 1):
        apply_tome(model, r)
        g = gmacs(model, cfg)
        if best is None or abs(g - target) < abs(best[1] - target):
            best = (r, g)
        if g < target:
            break
    return best[0]


def measure_run(run: str, tome_target: float | None = None) -> dict:
    from dart.engine.build import num_tokens
    from dart.engine.run import load_run
    cfg, model = load_run(run)
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    task = cfg["task"]
    metric = METRIC_OF_TASK[task]
    rec = {"run": run, "task": task, "model": cfg["model"]["name"], "seed": cfg["train"]["seed"],
           "img_size": cfg["data"]["img_size"], "tokenizer": "dart" if cfg["model"]["name"].startswith("dart_")
           else "grid", "metric": metric, "train_" + metric: metrics.get(metric), "wall_s": metrics.get("wall_s")}
    if rec["tokenizer"] == "dart":
        rec.update(dart_variant(model))
    if tome_target is not None:
        from dart.tome import apply_tome, tokens_after
        if task != "classification":
            raise SystemExit(f"--tome-match: ToMe is applied to classification runs, {run} is {task}")
        r = pick_tome_r(model, cfg, tome_target)
        apply_tome(model, r)
        rec.update(tokenizer="tome", tome_r=r, target_gmacs=tome_target,
                   tokens_per_block=tokens_after(int(num_tokens(model)) + 1, r, len(model.blocks)))
    rec["gmacs"] = gmacs(model, cfg)
    rec["num_tokens"] = int(num_tokens(model))
    model.eval()
    if task == "classification":
        boxes = detail_boxes(cfg)
        rec.update(top1_and_partitions(model, val_loader(cfg), dart=rec["tokenizer"] == "dart",
                                       num_classes=cfg["data"]["num_classes"], boxes=boxes))
        if boxes is not None:  # what a grid of the same N spends on the pattern: N * its area share
            share = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean() / cfg["data"]["img_size"] ** 2
            rec["tokens_on_detail_grid"] = float(rec["num_tokens"] * share)
    else:  # the training run's final validation: same split, same checkpoint
        from dart.data import build_datasets
        _, val, _ = build_datasets(cfg, prepare=False, progress=False)
        rec[metric] = metrics[metric]
        rec["val_images"] = metrics.get("val_samples")
        rec["floor"] = constant_floor([val[i][1] for i in range(len(val))], task, cfg["data"]["num_classes"])
        if rec["tokenizer"] == "dart":
            rec.update(partitions(model, val))
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run folders (one per seed)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tome-match", default=None,
                    help="JSON of the DART experiment whose GMACs ToMe should match (per seed)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    targets = {}
    if args.tome_match:
        with open(args.tome_match) as f:
            targets = {r["seed"]: r["gmacs"] for r in json.load(f)["records"]}
    records = []
    for run in args.runs:
        target = None
        if args.tome_match:
            from dart.engine.run import run_config
            seed = run_config(run)["train"]["seed"]
            if seed not in targets:
                raise SystemExit(f"--tome-match {args.tome_match} has no seed {seed} (of {run})")
            target = targets[seed]
        records.append(measure_run(run, target))
        print(json.dumps(records[-1]))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"records": records}, f, indent=1)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
