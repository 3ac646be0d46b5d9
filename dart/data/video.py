"""Video clips listed in a CSV of `path,label` (Kinetics/SSv2 style), decoded with PyAV.

Paths are relative to the data root (or absolute); a header row is allowed; the label is an
integer class index. T frames are taken uniformly over the clip (train: a random offset inside
each of T equal segments; eval: segment centres), or every `frame_stride` frames from a random
(train) / central (eval) start.
"""
from __future__ import annotations

import csv
import os
import random

import numpy as np
import torch

from .base import SafeDataset, to_float_image


def read_csv(path: str, root: str) -> list[tuple[str, int]]:
    rows = []
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f)):
            if not row or row[0].startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{n + 1}: expected path,label, got {row!r}")
            p, label = row[0].strip(), row[1].strip()
            if n == 0 and not label.lstrip("-").isdigit():
                continue  # header
            rows.append((p if os.path.isabs(p) else os.path.join(root, p), int(label)))
    if not rows:
        raise ValueError(f"{path} lists no clips")
    return rows


def decode_frames(path: str) -> np.ndarray:
    """All frames of the first video stream as uint8 (N, H, W, 3)."""
    import av
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("no decodable frames")
    return np.stack(frames)


def frame_indices(n: int, t: int, stride: int | None, train: bool, rng: random.Random) -> list[int]:
    if stride:
        span = (t - 1) * stride + 1
        start = rng.randint(0, max(0, n - span)) if train else max(0, (n - span) // 2)
        return [min(n - 1, start + k * stride) for k in range(t)]
    seg = n / t
    if train:
        return [min(n - 1, int(seg * k + rng.random() * seg)) for k in range(t)]
    return [min(n - 1, int(seg * (k + 0.5))) for k in range(t)]


class VideoCSVDataset(SafeDataset):
    def __init__(self, csv_path: str, root: str, num_frames: int, transform, mean, std,
                 frame_stride: int | None = None, train: bool = False, strict: bool = False,
                 substitute: bool = False):
        self.rows = read_csv(csv_path, root)
        self.num_frames, self.stride, self.train = num_frames, frame_stride, train
        self.transform, self.mean, self.std = transform, mean, std
        self.strict, self.substitute = strict, substitute

    def __len__(self) -> int:
        return len(self.rows)

    def path(self, i: int) -> str:
        return self.rows[i][0]

    def load(self, i: int):
        p, y = self.rows[i]
        frames = decode_frames(p)
        idx = frame_indices(len(frames), self.num_frames, self.stride, self.train, random)
        clip = to_float_image(torch.from_numpy(frames[idx]), self.mean, self.std)  # (T, 3, H, W)
        return self.transform(clip.transpose(0, 1).contiguous()), y  # (3, T, H, W)
