"""DART partition pictures of a few validation images, from a trained run (one PNG, a row of panels).

    python workflow/scripts/partitions.py --config CFG --checkpoint runs/.../checkpoint_last.pt \
        --images 4 --out results/toy/partitions/toy_cls_dart.png [key.sub=value ...]

The model and the data come from the run's config (the same overrides as training); drawing is
`dart.viz.draw_partition`. Toy data: the first images of the validation split; a real dataset:
the first image files found under its validation folder.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def val_images(cfg: dict, n: int) -> np.ndarray:
    """(n, H, W, 3) uint8 images of the validation split (video: the middle frame)."""
    data = cfg["data"]
    if data["kind"] == "toy":
        from dart.data.toy import load_split
        x, _, _ = load_split(data["root"], "val")
        x = np.asarray(x[:n])
        if x.ndim == 5:  # (N, T, H, W, C) clips
            x = x[:, x.shape[1] // 2]
        if x.shape[-1] != 3 and x.shape[1] == 3:  # channels first
            x = np.moveaxis(x, 1, -1)
        return x
    from PIL import Image
    root = Path(data["root"]) / data.get("val_split", "val")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    size = data["img_size"]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC))
                     for p in files])


def draw(config: str, checkpoint: str, n: int, out: str, overrides: list[str]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dart.engine import checkpoint as ckpt
    from dart.engine.build import build_model
    from dart.engine.config import load_config
    from dart.viz import draw_partition

    cfg = load_config(config, overrides)
    model = build_model(cfg, weights_follow=True).eval()  # the checkpoint holds every weight
    state = ckpt.load(checkpoint)
    model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    backbone = getattr(model, "backbone", model)
    pe = backbone.patch_embed
    imgs = val_images(cfg, n)
    mean = torch.tensor(cfg["data"]["mean"])[:, None, None]
    std = torch.tensor(cfg["data"]["std"])[:, None, None]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    x = (x - mean) / std
    size = pe.img_size[0] if isinstance(pe.img_size, (tuple, list)) else pe.img_size
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        imgs = (((x * std + mean).clamp(0, 1)).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    with torch.no_grad():
        _, part = pe(x, return_partition=True)
    fig, axes = plt.subplots(1, len(imgs), figsize=(3.2 * len(imgs), 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        draw_partition(imgs[i], part, ax=ax, index=i, show_scores=False, title=f"val image {i}")
        ax.set_axis_off()
    fig.suptitle(f"{cfg['model']['name']}: {getattr(pe, 'num_tokens', '')} tokens per image", fontsize=10, y=1.06)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", help="key.sub=value, as for python -m dart.train")
    a = p.parse_args(argv)
    print(draw(a.config, a.checkpoint, a.images, a.out, a.overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
