"""Measure one trained run of the resolution claim (or ToMe applied to one): validation top-1,
GMACs, tokens, and for DART runs how far the partition is from the grid and, on the toy `detail`
set, how many tokens it spends on the pattern (`tokens_on_detail`, against `tokens_on_detail_grid`).

    python workflow/scripts/claim_measure.py --run RUN_DIR --out JSON
    python workflow/scripts/claim_measure.py --run GRID_RUN_DIR --tome-match DART_JSON --out JSON

With --tome-match, ToMe is applied to the grid run's trained model without retraining, with the merge
rate r (the same in every block) whose GMACs come closest to the DART run's measured GMACs.
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


@torch.no_grad()
def top1_and_partitions(model, loader, dart: bool, boxes=None, max_stats_images: int = 500):
    from dart.adaptivity import partition_stats, tokens_in_box
    correct = total = 0
    stats = []
    for x, y in loader:
        correct += int((model(x).argmax(-1) == y).sum())
        if dart and sum(s[0] for s in stats) < max_stats_images:
            _, part = model.tokenize(x)
            st = partition_stats(part)
            if boxes is not None:
                st["tokens_on_detail"] = float(tokens_in_box(part.rects.double(),
                                                             boxes[total:total + len(y)]).mean())
            stats.append((len(y), st))
        total += len(y)
    out = {"top1": 100.0 * correct / total, "val_images": total}
    if stats:
        n = sum(w for w, _ in stats)
        for key in stats[0][1]:
            if key == "patches_per_band":
                out[key] = [sum(w * s[key][i] for w, s in stats) / n for i in range(len(stats[0][1][key]))]
            else:
                out[key] = sum(w * s[key] for w, s in stats) / n
    return out


def gmacs(model, cfg) -> float:
    from bench.complexity import count_model
    from dart.engine.build import input_shape
    return count_model(model, input_shape(cfg))["gmacs"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tome-match", default=None, help="JSON of a DART run whose GMACs ToMe should match")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from dart.engine.build import num_tokens
    from dart.engine.run import load_run
    cfg, model = load_run(args.run)
    with open(os.path.join(args.run, "metrics.json")) as f:
        metrics = json.load(f)
    rec = {"run": args.run, "model": cfg["model"]["name"], "seed": cfg["train"]["seed"],
           "img_size": cfg["data"]["img_size"], "method": "dart" if cfg["model"]["name"].startswith("dart_")
           else "grid", "train_top1": metrics.get("top1"), "wall_s": metrics.get("wall_s")}
    if args.tome_match:
        from dart.tome import apply_tome, tokens_after
        with open(args.tome_match) as f:
            target = json.load(f)["gmacs"]
        n = int(num_tokens(model)) + 1
        best = None
        for r in range(0, n // 2 + 1):
            apply_tome(model, r)
            g = gmacs(model, cfg)
            if best is None or abs(g - target) < abs(best[1] - target):
                best = (r, g)
            if g < target:
                break
        apply_tome(model, best[0])
        rec.update(method="tome", tome_r=best[0], target_gmacs=target,
                   tokens_per_block=tokens_after(n, best[0], len(model.blocks)))
    rec["gmacs"] = gmacs(model, cfg)
    rec["num_tokens"] = int(num_tokens(model))
    model.eval()
    boxes = detail_boxes(cfg)
    rec.update(top1_and_partitions(model, val_loader(cfg), dart=rec["method"] == "dart", boxes=boxes))
    if boxes is not None:  # what a grid of the same N spends on the pattern: N * its area share
        share = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean() / cfg["data"]["img_size"] ** 2
        rec["tokens_on_detail_grid"] = float(rec["num_tokens"] * share)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(tmp, args.out)
    print(json.dumps(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
