"""Draw DART partitions: where the tokens go.

    from dart.viz import draw_partition
    tokens, part = model.patch_embed(x, return_partition=True)
    draw_partition(x[0], part, "partition.png", index=0)

or from the shell: `python -m dart.viz --model dart_deit_tiny_patch16_224 --image cat.jpg --out p.png`.
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
        score_ax.imshow(partition.scores[index].detach().float().cpu().numpy(), cmap="magma")
        score_ax.set_title(f"scores ({partition.grid}x{partition.grid})")
        score_ax.axis("off")
    fig.tight_layout()
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp.png"
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
        plt.close(fig)
    return fig


def _load_image(path: str, size: int) -> Tensor:
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def main(argv=None) -> int:
    import json
    import timm
    from . import models  # noqa: F401

    p = argparse.ArgumentParser(prog="python -m dart.viz",
                                description="Save a PNG of a DART model's partition of an image.")
    p.add_argument("--model", required=True, help="registered DART model name")
    p.add_argument("--model-kwargs", default="{}", help="JSON kwargs for timm.create_model")
    p.add_argument("--checkpoint", help="state dict to load (torch.load with weights_only=True)")
    p.add_argument("--image", required=True, help="image file (any PIL format)")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
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
