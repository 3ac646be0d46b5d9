"""Draw DART partitions: where the tokens go.

    from dart.viz import draw_partition
    tokens, part = model.patch_embed(x, return_partition=True)
    draw_partition(x[0], part, "partition.png", index=0)

or from the shell: `python -m dart.viz --run runs/toy_detail_dart --out p.png` (a run folder: model,
kwargs, normalisation and checkpoint from it; classification or segmentation; `--image` for a file,
else a validation image) or `python -m dart.viz --model dart_deit_tiny_patch16_224 --image cat.jpg
--out p.png` (`--model-kwargs` as JSON or key=val,key=val; `--checkpoint` a run checkpoint or an
official darvit-*.pth, loaded through `dart.engine.keymap`). Non-square images keep their aspect
(padded, not squashed). Bad input is one line `dart.viz: <message>` and exit status 2.

`import dart` does not import this module (`dart.viz` is loaded on first use), so that
`python -m dart.viz` runs it once, without runpy's "found in sys.modules" warning.
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
    _check_fits(arr, partition, index)
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


def _check_fits(arr: np.ndarray, partition: Partition, index: int) -> None:
    """The rectangles are in the pixels of the image the tokenizer saw: any other size would draw
    them in the wrong places."""
    ph, pw = (int(v) for v in partition.img_size)
    if tuple(arr.shape[:2]) != (ph, pw):
        raise ValueError(f"the partition is of a {ph}x{pw} image but the image to draw on is "
                         f"{arr.shape[0]}x{arr.shape[1]}: draw it over the image the tokenizer saw")
    n = partition.rects.shape[0]
    if not -n <= index < n:
        raise ValueError(f"index {index} is not in the partition's batch of {n}")


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


def _run_origin(cfg: dict, run_dir: str) -> Optional[str]:
    """The directory dart.train ran in, where the run folder's path ends with the config's relative
    `output_dir` (runs/x of /home/me/proj/runs/x -> /home/me/proj); None when it cannot be told."""
    from pathlib import Path
    out = cfg.get("output_dir")
    if not out or os.path.isabs(out):
        return None
    run_parts, out_parts = Path(os.path.abspath(run_dir)).parts, Path(os.path.normpath(out)).parts
    if ".." in out_parts or len(run_parts) <= len(out_parts) or run_parts[-len(out_parts):] != out_parts:
        return None
    return str(Path(*run_parts[:-len(out_parts)]))


def resolve_data_root(cfg: dict, run_dir: str) -> None:
    """Make a run config's relative data root (data.root, or the toy default data/toy/...) name the
    folder training read: dart.train read it relative to the directory it ran in, which need not be
    this one. Tried from here, then from that directory (`_run_origin`); neither: FileNotFoundError."""
    from .data import toy_root
    d = cfg["data"]
    root = toy_root(cfg) if d["kind"] == "toy" else d["root"]
    if not root or os.path.isabs(root) or os.path.exists(root):
        return
    origin = _run_origin(cfg, run_dir)
    if origin is not None and os.path.exists(os.path.join(origin, root)):
        d["root"] = os.path.join(origin, root)
        return
    where = f"nor from {origin}, where the run was made" if origin else \
        "and the run folder does not tell where it was made (its output_dir is not a relative tail of it)"
    raise FileNotFoundError(f"the data of run {run_dir} (config key 'data.root': {root!r}, relative to the "
                            f"directory dart.train ran in) is not found from {os.getcwd()} {where}; "
                            f"run from that directory or pass --image")


def partition_from_run(run_dir: str, image: Optional[str] = None, index: int = 0):
    """(normalised image (3, S, S), partition, mean, std) of a run folder's trained model, for an
    image file or the run's validation image `index` (toy data), normalised as the run's data were."""
    from .engine.run import load_run
    try:
        cfg, model = load_run(run_dir)
    except RuntimeError as e:  # load_state_dict: the checkpoint's weights do not fit the config's model
        raise ValueError(f"run folder {run_dir}: the checkpoint does not fit its config's model: "
                         f"{str(e).splitlines()[0]}") from e
    mean, std = cfg["data"]["mean"], cfg["data"]["std"]
    tok = find_tokenizer(model)
    size = tok.img_size[0]
    if image is not None:
        x = _load_image(image, size, mean, std)
    else:
        from .data import Skipped, build_datasets
        resolve_data_root(cfg, run_dir)
        _, val, _ = build_datasets(cfg, prepare=False, progress=False)
        if not 0 <= index < len(val):
            raise ValueError(f"--index {index}: the run's validation split has {len(val)} images "
                             f"(0 to {len(val) - 1})")
        sample = val[index]
        if isinstance(sample, Skipped):
            raise ValueError(f"validation image {index} ({sample.path}) cannot be read: {sample.reason}")
        x = sample[0]
        if x.dim() != 3:
            raise ValueError("--run without --image draws image runs' validation images only; pass --image")
    with torch.no_grad():
        _, part = tok(x[None], return_partition=True)
    return x, part, mean, std


def model_partition(name: str, kwargs: dict, checkpoint: Optional[str], image: str,
                    log=None) -> tuple[Tensor, Partition]:
    """(normalised image (3, S, S), partition) of a registered model, with a checkpoint of ours or an
    official one loaded through the key map; one that leaves a model key unloaded is refused
    (a classifier head of another size aside: the partition does not use it)."""
    import timm
    from . import models  # noqa: F401  (registers the DART models with timm)
    if not timm.is_model(name):
        raise ValueError(f"--model {name!r} is not a registered timm or DART model")
    try:
        model = timm.create_model(name, **kwargs).eval()
    except TypeError as e:  # a keyword the model does not take
        raise ValueError(f"--model {name} with --model-kwargs {kwargs}: {e}") from e
    tok = find_tokenizer(model)
    if checkpoint:
        from .engine.keymap import evaluation_blockers, load_into
        report = load_into(model, checkpoint)
        blockers, _ = evaluation_blockers(report)
        if blockers:
            raise ValueError(f"checkpoint {checkpoint} does not fill --model {name}, so the partition "
                             f"would not be the checkpoint's: {report.summary()}")
        if log:
            log(f"checkpoint {checkpoint}: {report.summary()}")
    x = _load_image(image, tok.img_size[0])
    with torch.no_grad():
        _, part = tok(x[None], return_partition=True)
    return x, part


def main(argv=None) -> int:
    import sys
    from .engine.cli import check_writable, kwargs_arg, nonnegative_int, user_error
    prog = "dart.viz"
    p = argparse.ArgumentParser(prog="python -m dart.viz",
                                description="Save a PNG of a DART model's partition of an image.")
    p.add_argument("--run", help="run folder of dart.train (config.yaml + checkpoint_last.pt): model, "
                   "kwargs and normalisation come from it")
    p.add_argument("--index", type=nonnegative_int, default=0,
                   help="with --run and no --image: validation image index")
    p.add_argument("--model", help="registered DART model name (without --run)")
    p.add_argument("--model-kwargs", type=kwargs_arg, default={},
                   help="kwargs for timm.create_model: JSON or key=val,key=val")
    p.add_argument("--checkpoint", help="run checkpoint or official darvit-*.pth (torch.load with "
                   "weights_only=True; official keys through dart.engine.keymap)")
    p.add_argument("--image", help="image file (any PIL format); required without --run")
    p.add_argument("--out", required=True, help="PNG to write")
    args = p.parse_args(argv)
    if args.run:
        if args.model or args.checkpoint or args.model_kwargs:
            p.error("--run takes the model and checkpoint from the run folder; drop --model/--model-kwargs/"
                    "--checkpoint")
    elif not args.model or not args.image:
        p.error("give --run DIR, or --model and --image")
    from .data import DataError
    try:
        check_writable(args.out)  # before the model is built
        if args.run:
            x, part, mean, std = partition_from_run(args.run, args.image, args.index)
            draw_partition(to_uint8_image(x, mean, std), part, args.out)
        else:
            x, part = model_partition(args.model, args.model_kwargs, args.checkpoint, args.image,
                                      log=lambda m: print(f"{prog}: {m}", file=sys.stderr))
            draw_partition(x, part, args.out)
    except (FileNotFoundError, ValueError, DataError) as e:  # CheckpointError is a ValueError
        return user_error(prog, e)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
