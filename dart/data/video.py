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
    """All frames of the first video stream as uint8 (N, H, W, 3). (The loader uses `read_clip`,
    which decodes only what it keeps; this is the plain reference.)"""
    import av
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise ValueError("no decodable frames")
    return np.stack(frames)


class _Unseekable(Exception):
    """Timestamps missing or not where the index said: decode sequentially instead."""


def _packet_index(container, stream) -> tuple[list[int], list[int]]:
    """Presentation timestamps of all frames (sorted) and of the keyframes, from the packets alone
    (demuxing reads the file but decodes nothing)."""
    pts, keys = [], []
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's final flush packet
            continue
        if packet.pts is None:
            raise _Unseekable("a packet without a timestamp")
        pts.append(packet.pts)
        if packet.is_keyframe:
            keys.append(packet.pts)
    pts.sort()
    keys.sort()
    return pts, keys


def _decode_at(container, stream, targets: list[int], keys: list[int]) -> dict[int, np.ndarray]:
    """RGB frames at the sorted presentation timestamps `targets`: seek to the keyframe before a
    target whenever that skips frames not yet decoded, else decode on; only the targets are
    converted to RGB."""
    import bisect
    out: dict[int, np.ndarray] = {}
    frames, position = None, None  # the decoder's iterator and the last pts it gave
    for target in targets:
        if target in out:
            continue
        k = bisect.bisect_right(keys, target) - 1
        key = keys[k] if k >= 0 else None
        if frames is None or (key is not None and position is not None and key > position):
            container.seek(key if key is not None else target, stream=stream, backward=True)
            frames = container.decode(stream)
        for frame in frames:
            if frame.pts is None:
                raise _Unseekable("a frame without a timestamp")
            position = frame.pts
            if frame.pts in targets and frame.pts not in out:
                out[frame.pts] = frame.to_ndarray(format="rgb24")
            if frame.pts >= target:
                break
        if target not in out:
            raise _Unseekable(f"no frame at pts {target} after seeking")
    return out


def _decode_sequential(container, stream, indices: list[int]) -> dict[int, np.ndarray]:
    """Frames by decode-output position, keeping (as RGB) only `indices`, stopping after the last."""
    wanted, out, last = set(indices), {}, max(indices)
    for i, frame in enumerate(container.decode(stream)):
        if i in wanted:
            out[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    return out


def read_clip(path: str, pick) -> np.ndarray:
    """The frames `pick(n)` chooses (indices into the clip's n frames, as `frame_indices` gives),
    as uint8 (T, H, W, 3), decoding only what is needed: the frame count and keyframes come from
    the packets, then the decoder seeks to each chosen frame's keyframe (or decodes on when that
    is closer) and converts only the chosen frames to RGB. Memory: the T kept frames. Without
    usable timestamps it decodes from the start twice (count, then keep), never holding more than
    the chosen frames. The same frames as `decode_frames(path)[pick(n)]` (tests/test_data.py)."""
    import av
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        try:
            pts, keys = _packet_index(container, stream)
            if not pts:
                raise ValueError("no decodable frames")
            indices = [int(i) for i in pick(len(pts))]
            got = _decode_at(container, stream, sorted({pts[i] for i in indices}), keys)
            return np.stack([got[pts[i]] for i in indices])
        except _Unseekable:
            pass
    with av.open(path) as container:
        n = sum(1 for _ in container.decode(video=0))
    if n == 0:
        raise ValueError("no decodable frames")
    indices = [int(i) for i in pick(n)]
    with av.open(path) as container:
        got = _decode_sequential(container, container.streams.video[0], indices)
    return np.stack([got[i] for i in indices])


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
        frames = read_clip(p, lambda n: frame_indices(n, self.num_frames, self.stride, self.train, random))
        clip = to_float_image(torch.from_numpy(frames), self.mean, self.std)  # (T, 3, H, W)
        return self.transform(clip.transpose(0, 1).contiguous()), y  # (3, T, H, W)
