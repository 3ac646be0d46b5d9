"""Small fake datasets in the paper datasets' own on-disk layouts, for the smoke scale.

The paper-scale loaders (ImageNet ImageFolder, ADE20K, a clip folder with CSV files) are exercised
end to end without the real data: the files are real JPEGs, PNG annotations and encoded video
clips, in the folders and with the names the loaders read, just few of them and with random
content. Nothing learnable; a smoke run's numbers are not results.

- ``imagefolder``: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` with all 1000 class folders
  (the loader checks ``data.num_classes`` against them); a few classes hold an image.
- ``ade20k``: ``images/{training,validation}/ADE_*.jpg`` and ``annotations/.../ADE_*.png``
  (values 0..150, 0 = "other").
- ``video_csv``: ``clips/*.mp4`` (MPEG-4, PyAV) listed with their label in ``train.csv`` and
  ``val.csv`` (``path,label``; labels below 400).

Command line: ``python -m dart.data.fake --layout imagefolder --out DIR [--seed 0]``. The set is
written into a new folder beside DIR, then moved into place; ``fake.json`` (layout, seed, file
counts) is its last file. DIR must be absent, empty, or a fake set written here before: its files
are listed in ``dart_files.json`` (`dart.engine.owned`), and only those are removed. A folder
holding anything else (a real dataset, your files) is refused and nothing in it is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

LAYOUTS = ("imagefolder", "ade20k", "video_csv")
TOOL = "dart.data.fake"
IMAGENET_CLASSES, ADE20K_CLASSES, KINETICS_CLASSES = 1000, 150, 400


def _picture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour field with a few rectangles: decodes like a photo, means nothing."""
    base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8, 1), np.float32))[:h, :w]
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y:y + rng.integers(4, h // 2), x:x + rng.integers(4, w // 2)] = rng.integers(0, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


def _save(array: np.ndarray, path: str, **kw) -> None:
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kw)


def imagefolder(out: str, rng: np.random.Generator, train: int = 8, val: int = 4) -> dict:
    wnids = [f"n{10000000 + 7 * i:08d}" for i in range(IMAGENET_CLASSES)]
    counts = {}
    for split, n in (("train", train), ("val", val)):
        for w in wnids:
            os.makedirs(os.path.join(out, split, w), exist_ok=True)
        for i in range(n):
            w = wnids[int(rng.integers(0, IMAGENET_CLASSES))]
            h, wd = int(rng.integers(64, 129)), int(rng.integers(64, 129))
            _save(_picture(rng, h, wd), os.path.join(out, split, w, f"{w}_{i:05d}.JPEG"), format="JPEG",
                  quality=85)
        counts[split] = n
    return counts


def ade20k(out: str, rng: np.random.Generator, train: int = 4, val: int = 2) -> dict:
    counts = {}
    for split, tag, n in (("training", "train", train), ("validation", "val", val)):
        for i in range(n):
            h, w = int(rng.integers(96, 161)), int(rng.integers(96, 161))
            name = f"ADE_{tag}_{i + 1:08d}"
            _save(_picture(rng, h, w), os.path.join(out, "images", split, name + ".jpg"), format="JPEG")
            ann = np.kron(rng.integers(0, ADE20K_CLASSES + 1, size=(h // 16 + 1, w // 16 + 1)),
                          np.ones((16, 16), np.int64))[:h, :w].astype(np.uint8)
            _save(ann, os.path.join(out, "annotations", split, name + ".png"), format="PNG")
        counts[split] = n
    return counts


def video_csv(out: str, rng: np.random.Generator, train: int = 4, val: int = 2, frames: int = 16,
              size: int = 64) -> dict:
    import av
    counts = {}
    for split, n in (("train", train), ("val", val)):
        rows = ["path,label"]
        for i in range(n):
            rel = os.path.join("clips", f"{split}_{i:04d}.mp4")
            path = os.path.join(out, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with av.open(path, mode="w") as container:
                stream = container.add_stream("mpeg4", rate=8)
                stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
                for _ in range(frames):
                    frame = av.VideoFrame.from_ndarray(_picture(rng, size, size), format="rgb24")
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            rows.append(f"{rel},{int(rng.integers(0, KINETICS_CLASSES))}")
        with open(os.path.join(out, f"{split}.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
        counts[split] = n
    return counts


def generate(layout: str, out: str, seed: int = 0) -> dict:
    """Write the fake `layout` set into `out` (see the module docstring for what `out` may hold)."""
    from ..engine import owned
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    out = os.path.abspath(out)
    advice = "pass an absent or empty folder as --out"
    owned.check_replaceable(out, TOOL, advice)  # before any work: refuse early
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".fake-", dir=parent)
    except OSError as e:
        raise ValueError(f"--out {out} cannot be written: {e.strerror or e}"
                         f"{' (' + str(e.filename) + ')' if e.filename else ''}") from e
    try:
        rng = np.random.default_rng(seed)
        counts = {"imagefolder": imagefolder, "ade20k": ade20k, "video_csv": video_csv}[layout](tmp, rng)
        meta = {"layout": layout, "seed": seed, "files": counts,
                "note": "fake data for the smoke scale: random content, not a result"}
        written = owned.entries(tmp)
        owned.add(tmp, TOOL, [p for p, d in written if not d] + ["fake.json"], [p for p, d in written if d])
        with open(os.path.join(tmp, "fake.json"), "w") as f:
            json.dump(meta, f, indent=1)
        owned.install(tmp, out, TOOL, advice)  # only the files of a fake set written before are removed
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder made above, nothing else
        raise
    return meta


def main(argv=None) -> int:
    from ..engine.cli import user_error
    ap = argparse.ArgumentParser(prog="python -m dart.data.fake", description=__doc__.split("\n\n")[0])
    ap.add_argument("--layout", required=True, choices=LAYOUTS)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        meta = generate(a.layout, a.out, a.seed)
    except ValueError as e:
        return user_error("dart.data.fake", e)
    except OSError as e:
        return user_error("dart.data.fake", f"--out {a.out} cannot be written: {e.strerror or e}"
                                            f"{' (' + e.filename + ')' if e.filename else ''}")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
