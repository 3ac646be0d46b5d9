"""Pretrain a scorer trunk: the toy-scale stand-in for the ImageNet weights of the paper's scorer.

    python -m dart.pretrain_scorer --data DIR --out results/toy/scorer_trunk/cnn.pt [--epochs 6]

The paper's scorer is the first blocks of an ImageNet-trained MobileNetV3, frozen, with a small head
trained by DART's task loss. At toy scale the trunk is `dart.tokenizer.scorers.small_cnn_trunk`
and its "ImageNet" is a generated toy set of other classes and objects than any claim task (the
workflow's `scorer_pretrain` rule: the toy `classification` glyphs on a 32-px canvas, the size the
claim's scorers see). The trunk is trained once, under a global max-pool and a linear classifier
(max-pooling rewards features that fire where an object is, wherever it is), and written with its
validation accuracy; DART models load it with `scorer_trunk="pretrained_frozen",
scorer_weights=<file>` and train only their score head.

The file holds `{"trunk": state dict, "meta": {...}}` (tensors and plain types: it loads with
`torch.load(weights_only=True)`), written atomically, and a JSON of the same meta beside it.
Exit status: 0 done, 2 a user error (one line naming the file or argument).
"""
from __future__ import annotations

import os
import sys
import time


def parse_args(argv=None):
    from .engine.cli import ArgumentParser, positive_int
    ap = ArgumentParser(prog="python -m dart.pretrain_scorer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a generated toy classification set (python -m dart.data.toy)")
    ap.add_argument("--out", required=True, help="trunk file to write (.pt); its metrics go to <out>.json")
    ap.add_argument("--epochs", type=positive_int, default=6)
    ap.add_argument("--batch-size", type=positive_int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=positive_int, default=32, help="channels of the trunk (the toy scorer's: 32)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    return ap.parse_args(argv)


def _split(root: str, split: str):
    import torch
    from .data import toy
    from .data.base import to_float_image
    x, y, meta = toy.load_split(root, split)
    if meta.get("kind") != "classification":
        raise ValueError(f"--data {root} holds a toy {meta.get('kind')!r} set; the trunk is pretrained on a "
                         f"classification set")
    # normalised as the toy loaders do (defaults.yaml data.mean / data.std)
    return to_float_image(torch.from_numpy(x.copy()), (0.5,) * 3, (0.5,) * 3), torch.from_numpy(y.astype("int64")), meta


def pretrain(data: str, epochs: int = 6, batch_size: int = 64, lr: float = 2e-3, width: int = 32,
             seed: int = 0, progress: bool = True, log=print) -> tuple[dict, dict]:
    """(trunk state dict, meta) of a trunk trained on the toy classification set at `data`."""
    import torch
    import torch.nn as nn
    from tqdm import tqdm
    from .tokenizer.scorers import small_cnn_trunk
    xs, ys, meta = _split(data, "train")
    xv, yv, _ = _split(data, "val")
    classes = len(meta["classes"])
    if len(xs) < batch_size:
        raise ValueError(f"--data {data} has {len(xs)} training images, fewer than one batch of {batch_size}: "
                         f"lower --batch-size or generate a larger set")
    log(f"trunk of the toy 'cnn' scorer, width {width}, on {data}: {len(xs)} training images of "
        f"{xs.shape[-1]} px, {classes} classes (CPU, {torch.get_num_threads()} threads)")
    torch.manual_seed(seed)
    trunk = small_cnn_trunk(xs.shape[1], width)
    model = nn.Sequential(trunk, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (len(xs) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    bar = tqdm(range(epochs), desc="pretrain scorer trunk", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(xs), generator=gen)
        for i in range(len(xs) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            top1 = float((model(xv).argmax(1) == yv).float().mean()) * 100
        bar.set_postfix(loss=f"{loss.item():.3f}", val_top1=f"{top1:.1f}")
        log(f"epoch {epoch + 1}: train loss {loss.item():.4f}, val top-1 {top1:.1f}%")
    info = {"val_top1": top1, "epochs": epochs, "batch_size": batch_size, "lr": lr, "width": width,
            "seed": seed, "classes": meta["classes"], "dataset": {"kind": meta["kind"], "seed": meta["seed"],
                                                                  "params": meta["params"]},
            "img_size": int(xs.shape[-1]), "train_samples": len(xs), "val_samples": len(xv),
            "wall_s": time.perf_counter() - t0}
    return trunk.state_dict(), info


def main(argv=None) -> int:
    args = parse_args(argv)
    from .engine.cli import check_writable, user_error
    prog = "dart.pretrain_scorer"
    try:
        check_writable(args.out)
        if not os.path.isfile(os.path.join(args.data, "meta.json")):
            raise FileNotFoundError(f"--data {args.data} is not a generated toy set (no meta.json); make one "
                                    f"with python -m dart.data.toy --kind classification --out {args.data}")
    except (ValueError, FileNotFoundError) as e:
        return user_error(prog, e)
    import torch
    from .engine.checkpoint import save_atomic, write_json_atomic
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        state, meta = pretrain(args.data, args.epochs, args.batch_size, args.lr, args.width, args.seed,
                               log=lambda m: print(f"{prog}: {m}", file=sys.stderr))
    except (ValueError, FileNotFoundError) as e:
        return user_error(prog, e)
    save_atomic({"trunk": state, "meta": meta}, args.out)
    write_json_atomic(meta, args.out + ".json")
    print(f"{prog}: val top-1 {meta['val_top1']:.1f}% on {meta['val_samples']} images "
          f"({len(meta['classes'])} classes); trunk written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
