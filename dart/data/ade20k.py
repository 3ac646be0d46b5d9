"""ADE20K (SceneParsing release, ADEChallengeData2016): images/<split>/*.jpg and
annotations/<split>/*.png, 150 classes. Label 0 ("other") is ignored (255) and 1..150 become
0..149, the usual reduce-zero-label convention."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from .base import SafeDataset

SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}
IGNORE = 255


class ADE20KDataset(SafeDataset):
    def __init__(self, root: str, split: str, transform, mean, std, strict: bool = False,
                 substitute: bool = False):
        sub = SPLITS.get(split, split)
        self.img_dir = os.path.join(root, "images", sub)
        self.ann_dir = os.path.join(root, "annotations", sub)
        for d in (self.img_dir, self.ann_dir):
            if not os.path.isdir(d):
                raise FileNotFoundError(f"ADE20K folder {d} is missing (expected <root>/images/{sub} and "
                                        f"<root>/annotations/{sub})")
        self.names = sorted(os.path.splitext(f)[0] for f in os.listdir(self.img_dir)
                            if f.lower().endswith((".jpg", ".jpeg", ".png")))
        self.exts = {os.path.splitext(f)[0]: f for f in os.listdir(self.img_dir)}
        self.transform, self.strict, self.substitute = transform, strict, substitute
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        return os.path.join(self.img_dir, self.exts[self.names[i]])

    def load(self, i: int):
        with Image.open(self.path(i)) as im:
            img = np.asarray(im.convert("RGB"), dtype=np.uint8)
        with Image.open(os.path.join(self.ann_dir, self.names[i] + ".png")) as im:
            ann = np.asarray(im, dtype=np.int64)
        if ann.shape != img.shape[:2]:
            raise ValueError(f"annotation size {ann.shape} differs from image size {img.shape[:2]}")
        mask = torch.from_numpy(ann.copy())
        mask = torch.where(mask == 0, torch.full_like(mask, IGNORE), mask - 1)
        x = (torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255 - self.mean) / self.std
        return self.transform(x, mask)
