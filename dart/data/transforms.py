"""Transforms: timm's for classification images; joint image+mask ones for segmentation; one
spatial transform shared by all frames of a clip for video."""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import Tensor


def classification_transforms(cfg: dict, train: bool):
    """timm's `create_transform` (RandomResizedCrop, RandAugment, random erasing / resize + centre
    crop at crop_pct), fed from the config's data and aug sections."""
    from timm.data import create_transform
    d, a = cfg["data"], cfg["aug"]
    if train:
        return create_transform(
            d["img_size"], is_training=True, scale=tuple(a["scale"]), ratio=tuple(a["ratio"]),
            hflip=a["hflip"], color_jitter=a["color_jitter"] or None, auto_augment=a["auto_augment"],
            interpolation=d["interpolation"], mean=tuple(d["mean"]), std=tuple(d["std"]),
            re_prob=a["reprob"], re_mode="pixel", re_count=1)
    return create_transform(d["img_size"], is_training=False, interpolation=d["interpolation"],
                            mean=tuple(d["mean"]), std=tuple(d["std"]), crop_pct=d["crop_pct"])


def resize_image(x: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """(..., C, H, W) float -> (..., C, size, size)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    lead = x.shape[:-3]
    y = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(size, size), mode=mode,
                      align_corners=False if mode != "nearest" else None, antialias=mode != "nearest")
    return y.reshape(*lead, *y.shape[-3:])


class SegTrain:
    """Random scale (0.5-2x of img_size on the short side), random crop to img_size (padding the
    image with 0 and the mask with `ignore`), horizontal flip with probability `hflip`."""

    def __init__(self, size: int, scale=(0.5, 2.0), hflip: float = 0.5, ignore: int = 255):
        self.size, self.scale, self.hflip, self.ignore = size, scale, hflip, ignore

    def __call__(self, img: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        H, W = img.shape[-2:]
        s = random.uniform(*self.scale) * self.size / min(H, W)
        h, w = max(1, round(H * s)), max(1, round(W * s))
        img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        ph, pw = max(0, self.size - h), max(0, self.size - w)
        if ph or pw:
            img = F.pad(img, (0, pw, 0, ph))
            mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore)
            h, w = img.shape[-2:]
        y, x = random.randint(0, h - self.size), random.randint(0, w - self.size)
        img = img[:, y:y + self.size, x:x + self.size]
        mask = mask[y:y + self.size, x:x + self.size]
        if random.random() < self.hflip:
            img, mask = img.flip(-1), mask.flip(-1)
        return img, mask


class SegEval:
    """Resize to img_size x img_size (image bilinear, mask nearest)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        img = resize_image(img, self.size)
        if tuple(mask.shape) != (self.size, self.size):
            mask = F.interpolate(mask[None, None].float(), size=(self.size, self.size), mode="nearest")[0, 0]
        return img, mask.long()


class ClipTrain:
    """One random-resized crop (scale range) and flip for the whole clip (C, T, H, W)."""

    def __init__(self, size: int, scale=(0.3, 1.0), hflip: float = 0.0):
        self.size, self.scale, self.hflip = size, scale, hflip

    def __call__(self, clip: Tensor) -> Tensor:
        H, W = clip.shape[-2:]
        area = random.uniform(*self.scale) * H * W
        side = int(min(H, W, max(8, math.sqrt(area))))
        y, x = random.randint(0, H - side), random.randint(0, W - side)
        clip = clip[..., y:y + side, x:x + side].transpose(0, 1)  # (T, C, h, w)
        clip = resize_image(clip, self.size).transpose(0, 1)
        if random.random() < self.hflip:
            clip = clip.flip(-1)
        return clip


class ClipEval:
    """Resize the short side to size / crop_pct and take the centre crop, every frame alike."""

    def __init__(self, size: int, crop_pct: float = 1.0):
        self.size, self.crop_pct = size, crop_pct

    def __call__(self, clip: Tensor) -> Tensor:
        C, T, H, W = clip.shape
        short = int(round(self.size / self.crop_pct))
        h, w = (short, max(short, round(W * short / H))) if H <= W else (max(short, round(H * short / W)), short)
        frames = F.interpolate(clip.transpose(0, 1), size=(h, w), mode="bilinear", align_corners=False,
                               antialias=True)
        y, x = (h - self.size) // 2, (w - self.size) // 2
        return frames[..., y:y + self.size, x:x + self.size].transpose(0, 1).contiguous()
