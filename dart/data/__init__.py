"""Datasets of the engine: built-in toy sets (generated, cached) and the paper-scale ones
(ImageFolder for ImageNet, ADE20K, CSV-listed video clips).

`build_datasets(cfg)` returns (train, val, info) from a validated run config; a missing dataset
root is an error that names the config key and the path.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch

# `toy` is imported where it is used, not here: `python -m dart.data.toy` runs that module as
# __main__, and runpy warns when the package's __init__ has already imported it under its own name
from .base import DataError, SafeDataset, Skipped, SkipLog, collate, to_float_image
from .transforms import ClipEval, ClipTrain, SegEval, SegTrain, classification_transforms, resize_image

__all__ = ["build_datasets", "toy_root", "ToyDataset", "DataError", "Skipped", "SkipLog", "collate",
           "SafeDataset"]

TOY_FOR_TASK = {"classification": "classification", "segmentation": "segmentation", "video": "video"}


class ToyDataset(SafeDataset):
    """A split of a generated toy set, as normalised tensors: images (3, S, S) with an int label,
    images with a long mask, or clips (3, T, S, S) with an int label.

    Masks are (S, S) for training; with `native_masks` (the validation split) they keep the canvas's
    own resolution, so a model fed a downsampled image (the grid of the paper's regime) is scored
    on the same full-resolution labels as one fed the full image (its logits are upsampled)."""

    def __init__(self, root: str, split: str, img_size: int, mean, std, num_frames: int | None = None,
                 native_masks: bool = False):
        from . import toy
        x, y, meta = toy.load_split(root, split)
        self.kind = meta["kind"]
        self.meta = meta
        self.x = torch.from_numpy(x.copy())
        self.y = torch.from_numpy(y.astype("int64"))
        self.img_size, self.mean, self.std = img_size, mean, std
        self.root, self.split = root, split
        self.native_masks = native_masks

    def __len__(self) -> int:
        return len(self.x)

    def path(self, i: int) -> str:
        return f"{self.root}/{self.split}[{i}]"

    def load(self, i: int):
        img = to_float_image(self.x[i], self.mean, self.std)
        if self.kind == "video":  # (T, 3, S, S) -> (3, T, s, s)
            return resize_image(img, self.img_size).transpose(0, 1).contiguous(), int(self.y[i])
        img = resize_image(img, self.img_size)
        if self.kind == "segmentation":
            if self.native_masks:
                return img, self.y[i].long()
            return SegEval(self.img_size)(img, self.y[i])
        return img, int(self.y[i])


def toy_params(cfg: dict) -> tuple[str, int, dict]:
    d = cfg["data"]
    t = d.get("toy") or {}
    kind = t.get("kind") or TOY_FOR_TASK[cfg["task"]]
    params = {"num_classes": d["num_classes"], "canvas": t.get("canvas") or d["img_size"],
              "train_size": t.get("train_size"), "val_size": t.get("val_size"), **(t.get("params") or {})}
    if kind == "video":
        params["frames"] = d["num_frames"]
    return kind, int(t.get("seed", 0)), params


def toy_root(cfg: dict) -> str:
    from . import toy
    kind, seed, params = toy_params(cfg)
    return cfg["data"]["root"] or toy.default_dir(kind, seed, params)


def _need_dir(path: str, key: str, what: str = "dataset root") -> str:
    if not path:
        raise FileNotFoundError(f"config key {key!r} is not set: data.kind needs a {what}")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path!r} (config key {key!r}) does not exist")
    return path


def _need_file(path: str, key: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} (config key {key!r}) does not exist")
    return path


def build_datasets(cfg: dict, prepare: bool = True, progress: bool = True,
                   barrier: Optional[Callable[[], None]] = None, is_main: bool = True):
    """(train, val, info). Toy sets are generated first when missing (by rank 0 when `barrier`
    is given; the file lock also protects concurrent runs)."""
    d, a, task = cfg["data"], cfg["aug"], cfg["task"]
    kind, strict = d["kind"], d["strict"]
    if kind == "toy":
        from . import toy
        tkind, seed, params = toy_params(cfg)
        if toy.TASK_OF_KIND[tkind] != task:
            raise ValueError(f"config key 'data.toy.kind' is {tkind!r}, a {toy.TASK_OF_KIND[tkind]} set, "
                             f"but the task is {task!r}")
        root = toy_root(cfg)
        if prepare and is_main:
            toy.generate(tkind, root, seed, params, progress=progress)
        if barrier is not None:
            barrier()
        if not prepare and not os.path.isfile(os.path.join(root, "meta.json")):
            raise FileNotFoundError(f"toy data {root!r} (config key 'data.root') is not generated")
        train = ToyDataset(root, "train", d["img_size"], d["mean"], d["std"])
        val = ToyDataset(root, "val", d["img_size"], d["mean"], d["std"], native_masks=True)
        return train, val, {"dataset": f"toy-{tkind}-{seed}", "root": root, "classes": train.meta["classes"]}

    root = _need_dir(d["root"], "data.root")
    if kind == "imagefolder":
        if task != "classification":
            raise ValueError(f"data.kind 'imagefolder' is for task classification, not {task!r}")
        from .imagefolder import ImageFolderDataset
        tr = _need_dir(os.path.join(root, d["train_split"]), "data.train_split", "train split folder")
        va = _need_dir(os.path.join(root, d["val_split"]), "data.val_split", "validation split folder")
        train = ImageFolderDataset(tr, classification_transforms(cfg, True), strict, substitute=True)
        val = ImageFolderDataset(va, classification_transforms(cfg, False), strict)
        if len(train.classes) != d["num_classes"]:
            raise ValueError(f"config key 'data.num_classes' is {d['num_classes']} but {tr} has "
                             f"{len(train.classes)} class folders")
        name = os.path.basename(os.path.normpath(root))
        return train, val, {"dataset": name, "root": root, "classes": train.classes}
    if kind == "ade20k":
        if task != "segmentation":
            raise ValueError(f"data.kind 'ade20k' is for task segmentation, not {task!r}")
        from .ade20k import ADE20KDataset
        train = ADE20KDataset(root, d["train_split"], SegTrain(d["img_size"], hflip=a["hflip"]), d["mean"],
                              d["std"], strict, substitute=True)
        val = ADE20KDataset(root, d["val_split"], SegEval(d["img_size"]), d["mean"], d["std"], strict)
        # named by its folder, like the other kinds: "ade20k" is the layout, not the data
        name = os.path.basename(os.path.normpath(root))
        return train, val, {"dataset": name, "root": root, "classes": None}
    if kind == "video_csv":
        if task != "video":
            raise ValueError(f"data.kind 'video_csv' is for task video, not {task!r}")
        from .video import VideoCSVDataset
        tcsv = _need_file(d["train_csv"] or os.path.join(root, "train.csv"), "data.train_csv")
        vcsv = _need_file(d["val_csv"] or os.path.join(root, "val.csv"), "data.val_csv")
        train = VideoCSVDataset(tcsv, root, d["num_frames"], ClipTrain(d["img_size"], hflip=a["hflip"]),
                                d["mean"], d["std"], d["frame_stride"], train=True, strict=strict,
                                substitute=True)
        val = VideoCSVDataset(vcsv, root, d["num_frames"], ClipEval(d["img_size"], d["crop_pct"]), d["mean"],
                              d["std"], d["frame_stride"], train=False, strict=strict)
        return train, val, {"dataset": os.path.basename(os.path.normpath(root)), "root": root, "classes": None}
    raise ValueError(f"unknown data.kind {kind!r}")
