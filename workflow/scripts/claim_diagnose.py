"""Why DART does (not) find the toy `detail` set's pattern: two diagnostics, outside the DAG.

    python workflow/scripts/claim_diagnose.py oracle --norm none --seed 0 [--data-root DIR]
    python workflow/scripts/claim_diagnose.py grad RUN_DIR [RUN_DIR ...]
    python workflow/scripts/claim_diagnose.py zoom RUN_DIR [RUN_DIR ...]
    python workflow/scripts/claim_diagnose.py alias --tokens 16 32

oracle: trains `toy_detail_dart` (its recipe: AdamW, its lr and weight decay, linear warm-up, cosine,
its epochs and batch) with the scorer replaced by an oracle that knows where the pattern is: logits
+L/2 on the score cells the pattern's box touches, -L/2 elsewhere (L = 10), through the model's own
score activation (`--convention`, default official: the method as published; `--norm` overrides its
standardisation). It prints the tokens the partition spends on the pattern and the
validation top-1 per epoch: how well DART-N can do when it zooms as far as its gate allows.

grad: the gradient of the training loss with respect to a trained run's scorer logits on its first
256 validation images, on the pattern's score cells against the rest. A negative mean on the
pattern's cells means a gradient step raises their scores (smaller patches there).

zoom: a trained run's top-1 on the validation images where its partition puts >= 1.5x the grid's
tokens on the pattern, against its top-1 on the others.

alias: what DART's patches sample from a canvas filled with each 1-px pattern (+-1) when the scores
are uniform (the untrained partition of `toy_detail_dart`'s geometry: 8x8 score grid, 8-px patches,
64 px, centred sampling): mean |sample| per class and how far the classes' strips differ. 0 means the
pattern averages away, as in the grid's 2x downsampled copy.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(
    __import__("os").path.dirname(__import__("os").path.abspath(__file__)))))


def pattern_cells(boxes, grid: int, cell: float):
    """(n, g, g) 1 on the score cells a box (x0, y0, x1, y1 px) touches."""
    c = torch.zeros(len(boxes), grid, grid)
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        c[i, int(y0 // cell):int((y1 - 1) // cell) + 1, int(x0 // cell):int((x1 - 1) // cell) + 1] = 1
    return c


def _stack(ds, n=None):
    n = len(ds) if n is None else min(n, len(ds))
    items = [ds[i] for i in range(n)]
    return torch.stack([i[0] for i in items]), torch.tensor([i[1] for i in items])


def oracle(args) -> int:
    from dart.adaptivity import tokens_in_box
    from dart.data import build_datasets, toy, toy_root
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    from dart.tokenizer.scorers import score_activation
    # the scorer is replaced by the oracle: no trunk to load
    over = [f"model.kwargs.convention={args.convention}", "model.kwargs.scorer_trunk=scratch",
            "model.kwargs.scorer_weights=null", f"train.seed={args.seed}"]
    if args.norm:
        over.append(f"model.kwargs.score_norm={args.norm}")
    if args.epochs:
        over.append(f"train.epochs={args.epochs}")
    if args.data_root:
        over.append(f"data.root={args.data_root}")
    cfg = load_config("toy_detail_dart", over)
    torch.manual_seed(args.seed)
    model = build_model(cfg)
    pe = model.patch_embed
    train, val, _ = build_datasets(cfg, progress=False)
    root, g = toy_root(cfg), pe.grid
    cell = cfg["data"]["img_size"] / g
    scale = cfg["data"]["img_size"] / toy.load_split(root, "val")[2]["params"]["canvas"]
    boxes = {s: torch.from_numpy(toy.load_boxes(root, s).astype("float64")) * scale for s in ("train", "val")}
    cells = {s: pattern_cells(b, g, cell) for s, b in boxes.items()}
    xtr, ytr = _stack(train)
    xva, yva = _stack(val)
    cur = {}
    L = args.contrast
    pe.score = lambda x: score_activation(cur["c"] * L - L / 2, pe.score_norm, pe.score_gate, pe.score_std_floor)
    t = cfg["train"]
    opt = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    per = math.ceil(len(xtr) / t["batch_size"])
    steps, warm = t["epochs"] * per, t["warmup_epochs"] * per
    gen = torch.Generator().manual_seed(args.seed)
    k = 0
    with torch.no_grad():
        cur["c"] = cells["val"][:500]
        _, part = pe(xva[:500], return_partition=True)
        on = float(tokens_in_box(part.rects.double(), boxes["val"][:500]).mean())
    print(f"oracle scorer, convention {pe.convention} (score_norm={pe.score_norm}, std floor "
          f"{pe.score_std_floor:g}): {on:.2f} tokens on the pattern "
          f"(grid: {pe.num_tokens * 256 / cfg['data']['img_size'] ** 2 * scale ** 2:.2f})", flush=True)
    for ep in range(t["epochs"]):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), t["batch_size"]):
            idx = perm[i:i + t["batch_size"]]
            cur["c"] = cells["train"][idx]
            lr = t["lr"] * (k + 1) / warm if k < warm else t["min_lr"] + (t["lr"] - t["min_lr"]) * 0.5 * (
                1 + math.cos(math.pi * (k - warm) / max(1, steps - warm)))
            for pg in opt.param_groups:
                pg["lr"] = lr
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            k += 1
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xva), 250):
                cur["c"] = cells["val"][i:i + 250]
                correct += int((model(xva[i:i + 250]).argmax(-1) == yva[i:i + 250]).sum())
        print(f"epoch {ep + 1}: train loss {loss.item():.3f}, val top1 {100 * correct / len(xva):.1f}", flush=True)
    return 0


def grad(args) -> int:
    from dart.data import build_datasets, toy, toy_root
    from dart.engine.run import load_run
    for run in args.runs:
        cfg, model = load_run(run)
        _, val, _ = build_datasets(cfg, prepare=False, progress=False)
        x, y = _stack(val, 256)
        root, g = toy_root(cfg), model.patch_embed.grid
        scale = cfg["data"]["img_size"] / toy.load_split(root, "val")[2]["params"]["canvas"]
        boxes = torch.from_numpy(toy.load_boxes(root, "val")[:len(y)].astype("float64")) * scale
        on = pattern_cells(boxes, g, cfg["data"]["img_size"] / g).bool()
        store = {}

        def keep(mod, inp, out):
            out.retain_grad()
            store["logits"] = out
        hook = model.patch_embed.scorer.register_forward_hook(keep)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        hook.remove()
        gr = store["logits"].grad
        print(f"{run}: loss {loss.item():.4f}; d loss / d logit on the pattern's cells: mean {gr[on].mean():+.2e} "
              f"({100 * float((gr[on] < 0).float().mean()):.0f}% negative), elsewhere mean {gr[~on].mean():+.2e}; "
              f"mean |grad| {gr.abs().mean():.2e}")
    return 0


def zoom(args) -> int:
    """Top-1 of trained runs on the validation images where the partition zooms onto the pattern
    (>= --find x the grid's tokens on it) against the others."""
    from dart.adaptivity import tokens_in_box
    from dart.data import build_datasets, toy, toy_root
    from dart.engine.run import load_run
    for run in args.runs:
        cfg, model = load_run(run)
        _, val, _ = build_datasets(cfg, prepare=False, progress=False)
        x, y = _stack(val)
        root = toy_root(cfg)
        scale = cfg["data"]["img_size"] / toy.load_split(root, "val")[2]["params"]["canvas"]
        boxes = torch.from_numpy(toy.load_boxes(root, "val").astype("float64")) * scale
        area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).mean()
        grid_share = float(area) / cfg["data"]["img_size"] ** 2  # as claim_measure: N * share for the grid
        on, right = [], []
        with torch.no_grad():
            for i in range(0, len(y), args.batch):  # the evaluation's batches (batch statistics)
                xb = x[i:i + args.batch]
                logits = model(xb)
                _, part = model.tokenize(xb)
                on.append(tokens_in_box(part.rects.double(), boxes[i:i + len(xb)]))
                right.append(logits.argmax(-1) == y[i:i + len(xb)])
        on, right = torch.cat(on), torch.cat(right)
        zoomed = on >= args.find * model.patch_embed.num_tokens * grid_share

        def acc(m):
            return f"{100 * float(right[m].float().mean()):.1f}% of {int(m.sum())}" if m.any() else "none"
        print(f"{run}: {100 * float(zoomed.float().mean()):.1f}% of the images get >= {args.find}x the grid's "
              f"tokens on the pattern; top-1 there {acc(zoomed)}, elsewhere {acc(~zoomed)}")
    return 0


def alias(args) -> int:
    from dart.tokenizer import geometry, sampling
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    pats = {"hstripes": (yy % 2) * 2 - 1.0, "vstripes": (xx % 2) * 2 - 1.0, "checker": ((xx + yy) % 2) * 2 - 1.0}
    for n in args.tokens:
        rb, pb, _ = geometry.partition(torch.ones(1, 8, 8, dtype=torch.float64), n)
        grid = sampling.sampling_grid(rb, pb, 8, 8, convention="centred")
        strips = {k: sampling.sample_patches(v[None, None], grid)[0, 0] for k, v in pats.items()}
        rows = rb.shape[1] - 1
        amp = ", ".join(f"{k} {float(v.abs().mean()):.3f}" for k, v in strips.items())
        diff = min(float((strips[a] - strips[b]).abs().mean()) for a in strips for b in strips if a < b)
        print(f"N={n}: {rows} bands of {64 / rows:.2f} px, patches {64 * rows / n:.2f} px long; mean |sample| "
              f"{amp}; smallest mean difference between two classes' strips {diff:.3f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("oracle", help="train DART-N with an oracle scorer")
    o.add_argument("--convention", default="official", choices=["official", "ours"],
                   help="the tokenizer's convention (official: the method as published)")
    o.add_argument("--norm", default=None, choices=["image", "batch", "none"],
                   help="score standardisation (default: the convention's)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--contrast", type=float, default=10.0, help="L: oracle logits are +-L/2")
    o.add_argument("--epochs", type=int, default=None, help="default: the config's (8)")
    o.add_argument("--data-root", default=None)
    gr = sub.add_parser("grad", help="scorer gradient on the pattern's cells of trained runs")
    gr.add_argument("runs", nargs="+")
    zo = sub.add_parser("zoom", help="top-1 where trained partitions zoom onto the pattern, and elsewhere")
    zo.add_argument("runs", nargs="+")
    zo.add_argument("--find", type=float, default=1.5, help="zoomed: this many times the grid's tokens on it")
    zo.add_argument("--batch", type=int, default=100, help="evaluation batch (the claim measure's)")
    al = sub.add_parser("alias", help="what uniform DART partitions sample from the 1-px patterns")
    al.add_argument("--tokens", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return {"oracle": oracle, "grad": grad, "zoom": zoom, "alias": alias}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
