"""ImageNet-style folders: <root>/<split>/<class>/<image>; corrupt files are skipped or fatal."""
from __future__ import annotations

import os

from PIL import Image

from .base import SafeDataset

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".JPEG")


def scan(folder: str) -> tuple[list[tuple[str, int]], list[str]]:
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders in {folder}")
    samples = []
    for idx, c in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(os.path.join(folder, c), followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(tuple(e.lower() for e in IMG_EXTENSIONS)):
                    samples.append((os.path.join(dirpath, f), idx))
    return samples, classes


class ImageFolderDataset(SafeDataset):
    def __init__(self, folder: str, transform, strict: bool = False, substitute: bool = False):
        self.folder = folder
        self.samples, self.classes = scan(folder)
        self.transform = transform
        self.strict, self.substitute = strict, substitute

    def __len__(self) -> int:
        return len(self.samples)

    def path(self, i: int) -> str:
        return self.samples[i][0]

    def load(self, i: int):
        p, y = self.samples[i]
        with open(p, "rb") as f:
            img = Image.open(f)
            img.load()  # decode now, so a truncated file fails here
            img = img.convert("RGB")
        return self.transform(img), y
