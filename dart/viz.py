"""Draw DART partitions: where the tokens go.

    from dart.viz import draw_partition
    tokens, part = model.patch_embed(x, return_partition=True)
    draw_partition(x[0], part, "partition.png", index=0)

or from the shell: `python -m dart.viz --run runs/toy_detail_dart --out p.png` (a run folder: model,
kwargs, normalisation and checkpoint from it; classification or segmentation; `--image` for a file,
else a validation image) or `python -m dart.viz --model dart_deit_tiny_patch16_224 --image cat.jpg
--out p.png`. Non-square images keep their aspect (padded, not squashed).
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .tokenizer import Partition

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_uint8_image(image: Tensor, mean: Optional[Sequence[float]] = IMAGENET_MEAN,
                   std: Optional[Sequence[float]] = IMAGENET_STD) -> np.ndarray:
    """(3, H, W) tensor, normalised with mean/std (pass None when it is in [0, 1]) -> (H, W, 3) uint8."""
    img = image.detach().float().cpu()
    if mean is not None and std is not None:
        img = img * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    return (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def draw_partition(image: Tensor | np.ndarray, partition: Partition, path: Optional[str] = None,
                   index: int = 0, ax=None, show_scores: bool = True, title: Optional[str] = None,
                   normalized: bool = True):
    """Draw image `index` of the batch with its patch rectangles (and the score map beside it).

    image: (3, H, W) tensor (normalised with ImageNet mean/std unless normalized=False) or an
    (H, W, 3) uint8 array. Saves a PNG when `path` is given; returns the matplotlib figure.
    """
    import matplotlib
    if path is not None and ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    arr = image if isinstance(image, np.ndarray) else to_uint8_image(
        image, *((IMAGENET_MEAN, IMAGENET_STD) if normalized else (None, None)))
    if ax is None:
        ncols = 2 if show_scores else 1
        fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 4.2), squeeze=False)
        ax, score_ax = axes[0, 0], (axes[0, 1] if show_scores else None)
    else:
        fig, score_ax = ax.figure, None
    ax.imshow(arr)
    rects = partition.rects[index].detach().float().cpu().numpy()  # (N, 2, 4)
    for piece in rects.reshape(-1, 4):
        x0, y0, x1, y1 = piece
        if x1 - x0 <= 1e-6 or y1 - y0 <= 1e-6:
            continue
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.6,
                               edgecolor=(1.0, 0.85, 0.1, 0.9)))
    ax.set_title(title or f"{rects.shape[0]} tokens")
    ax.axis("off")
    if score_ax is not None:
        sc = partition.scores[index].detach().float().cpu().numpy()
        # from 0, with a colour bar: flat scores must look flat, not auto-scaled into a peak
        im = score_ax.imshow(sc, cmap="magma", vmin=0.0, vmax=max(float(sc.max()), 1e-12))
        score_ax.set_title(f"scores ({partition.grid}x{partition.grid}, max/min {sc.max() / max(sc.min(), 1e-12):.3g})")
        score_ax.axis("off")
        fig.colorbar(im, ax=score_ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
        plt.close(fig)
    return fig


def _load_image(path: str, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """The image at `size` x `size`, normalised with mean/std. A non-square image keeps its aspect:
    its longer side is resized to `size` and the rest is padded with the mean colour (0 after
    normalisation), centred."""
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = torch.zeros(3, size, size)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, top:top + nh, left:left + nw] = x
    return out


def find_tokenizer(model: torch.nn.Module):
    """The DART tokenizer inside a classifier or a segmenter (e.g. `backbone.model.patch_embed`)."""
    from .tokenizer import DART
    for m in model.modules():
        if isinstance(m, DART):
            return m
    raise ValueError(f"{type(model).__name__} has no DART tokenizer: nothing to draw")


def partition_from_run(run_dir: str, image: Optional[str] = None, index: int = 0):
    """(normalised image (3, S, S), partition, mean, std) of a run folder's trained model, for an
    image file or the run's validation image `index` (toy data), normalised as the run's data were."""
    from .engine.run import load_run
    cfg, model = load_run(run_dir)
    mean, std = cfg["data"]["mean"], cfg["data"]["std"]
    tok = find_tokenizer(model)
    size = tok.img_size[0]
    if image is not None:
        x = _load_image(image, size, mean, std)
    else:
        from .data import build_datasets
        _, val, _ = build_datasets(cfg, prepare=False, progress=False)
        x = val[index][0]
        if x.dim() != 3:
            raise ValueError("--run without --image draws image runs' validation images only; pass --image")
    with torch.no_grad():
        _, part = tok(x[None], return_partition=True)
    return x, part, mean, std


def main(argv=None) -> int:
    import json
    import timm
    from . import models  # noqa: F401

    p = argparse.ArgumentParser(prog="python -m dart.viz",
                                description="Save a PNG of a DART model's partition of an image.")
    p.add_argument("--run", help="run folder of dart.train (config.yaml + checkpoint_last.pt): model, "
                   "kwargs and normalisation come from it")
    p.add_argument("--index", type=int, default=0, help="with --run and no --image: validation image index")
    p.add_argument("--model", help="registered DART model name (without --run)")
    p.add_argument("--model-kwargs", default="{}", help="JSON kwargs for timm.create_model")
    p.add_argument("--checkpoint", help="state dict to load (torch.load with weights_only=True)")
    p.add_argument("--image", help="image file (any PIL format); required without --run")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    if args.run:
        if args.model or args.checkpoint:
            p.error("--run takes the model and checkpoint from the run folder; drop --model/--checkpoint")
        x, part, mean, std = partition_from_run(args.run, args.image, args.index)
        draw_partition(to_uint8_image(x, mean, std), part, args.out)
        print(args.out)
        return 0
    if not args.model or not args.image:
        p.error("give --run DIR, or --model and --image")
    model = timm.create_model(args.model, **json.loads(args.model_kwargs)).eval()
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    x = _load_image(args.image, model.patch_embed.img_size[0])[None]
    with torch.no_grad():
        _, part = model.patch_embed(x, return_partition=True)
    draw_partition(x[0], part, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
