"""Built-in toy datasets: generated from a seed, no download, cached on disk once.

Four kinds, all "small sparse evidence in a large cluttered canvas" (docs/engine.md: details):

- ``classification``: a cluttered canvas holding three copies of one small (14x14 px, framed)
  glyph; the class is the glyph's thin-stroke silhouette (plus, x, ring, T, L, H, bars ...), which
  a coarse view blurs away, while the clutter (solid rectangles, discs, lines) carries no class
  information.
- ``segmentation``: the same kind of canvas with several textured objects of different classes;
  per-pixel masks (0 = background and clutter, 1..K = the object's texture class).
- ``video``: clips where one small object moves (right/left/down/up), a clock hand rotates
  (clockwise/anticlockwise) or two glyphs appear in turn (A then B / B then A): the class is the
  motion, so no single frame tells it.
- ``detail``: one small framed square of stripes or checkerboard on a cluttered canvas; the class is
  the pattern.

Textures and patterns have 1-px cells, which a 2x downsampling erases, unless ``coarse_pct`` (0 by
default, which keeps the sets of generator version 2) draws that share of them (per object, clip
or image) with ``coarse_texel``-px cells (2 or 4) on the canvas's lattice, which it keeps at reduced
contrast: how much of the evidence survives the grid baseline's 2x copy is a task parameter,
calibrated on grid runs only (docs/engine.md "Calibrating the claim tasks").

The generator is plain numpy driven by ``numpy.random.default_rng(seed)``: the same seed and
parameters always give byte-identical arrays. Files in the cache directory:
``train_x.npy, train_y.npy, val_x.npy, val_y.npy`` (uint8) and ``meta.json`` (kind, seed,
parameters, generator version, class names); the ``detail`` set also keeps where its pattern is,
``train_box.npy, val_box.npy`` (int16 x0, y0, x1, y1 in canvas pixels, for measuring partitions),
and its cell size, ``train_texel.npy, val_texel.npy`` (uint8, 1 or ``coarse_texel``).
``dart_files.json`` lists them: a folder is replaced only when it holds nothing else.

Command line: ``python -m dart.data.toy --kind classification --out DIR --seed 0``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from typing import Iterator

import numpy as np

_log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
KINDS = ("classification", "segmentation", "video", "detail")
# arrays a kind stores besides x and y (its generator returns them third, by name)
EXTRA_ARRAYS = {"detail": ("box", "texel")}
# the task each kind is for (``detail`` is a classification set)
TASK_OF_KIND = {"classification": "classification", "segmentation": "segmentation", "video": "video",
                "detail": "classification"}

# defaults of the embedded toy sets; the config's data.toy section overrides them
DEFAULTS: dict[str, dict] = {
    "classification": {"canvas": 64, "num_classes": 10, "train_size": 2000, "val_size": 500,
                       "glyph": 14, "copies": 3, "clutter": 6, "lattice": 4},
    "segmentation": {"canvas": 64, "num_classes": 5, "train_size": 1000, "val_size": 200,
                     "glyph": 10, "copies": 4, "clutter": 8, "coarse_pct": 0, "coarse_texel": 2},
    "detail": {"canvas": 64, "num_classes": 3, "train_size": 2000, "val_size": 500, "glyph": 16,
               "frame": 2, "clutter": 6, "fixed_polarity": 1, "taper": 1, "coarse_pct": 0, "coarse_texel": 2},
    "video": {"canvas": 32, "num_classes": 8, "train_size": 2000, "val_size": 200, "frames": 4,
              "glyph": 8, "clutter": 4, "coarse_pct": 0, "coarse_texel": 2},
}

# --------------------------------------------------------------------------------------------
# textures: 10 binary patterns, all with about half the pixels on, so the mean colour of a glyph
# (what a coarse view keeps) says nothing about its class


def _texture(cls: int, size: int, texel: int = 1, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Texture `cls` on a size x size square. texel > 1: drawn with texel x texel-px cells on the
    canvas's texel-px lattice (`origin`: the square's top-left canvas pixel), so that the 2x copy
    keeps them whatever the square's position (2-px stripes at half the contrast, 4-px stripes at
    three quarters); 2-px cells straddling the lattice would be averaged away like 1-px ones."""
    y, x = np.mgrid[0:size, 0:size]
    if texel > 1:
        y, x = (y + origin[0]) // texel, (x + origin[1]) // texel
        y, x = y - y[0, 0], x - x[0, 0]
        size = int(y[-1, 0]) + 1
    c = (size - 1) / 2
    pats = [
        y % 2 == 0,  # horizontal stripes, period 2
        x % 2 == 0,  # vertical stripes, period 2
        (x + y) % 4 < 2,  # diagonal stripes
        (x - y) % 4 < 2,  # anti-diagonal stripes
        (x + y) % 2 == 0,  # 1-px checkerboard
        ((x // 2) + (y // 2)) % 2 == 0,  # 2-px checkerboard
        np.maximum(np.abs(x - c), np.abs(y - c)).astype(int) % 2 == 0,  # concentric squares
        (np.abs(x - c) < 1.5) | (np.abs(y - c) < 1.5),  # plus
        (np.abs(x - y) < 1.5) | (np.abs(x + y - 2 * c) < 1.5),  # X
        (x % 3 != 1) & (y % 3 != 1) | ((x % 3 == 1) & (y % 3 == 1)),  # dot lattice
    ]
    return pats[cls % len(pats)]


def _shape(cls: int, size: int) -> np.ndarray:
    """10 small silhouettes (the classification classes): thin strokes, so a coarse view blurs them."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size]
    u, v = (x - c) / c, (y - c) / c
    r = np.hypot(u, v)
    shapes = [
        (np.abs(u) < 0.3) | (np.abs(v) < 0.3),  # plus
        (np.abs(u - v) < 0.4) | (np.abs(u + v) < 0.4),  # x
        (r > 0.45) & (r < 0.95),  # ring
        r < 0.55,  # dot
        (v < -0.45) | (np.abs(u) < 0.3),  # T
        (u < -0.4) | (v > 0.4),  # L
        (np.abs(u) > 0.5) | (np.abs(v) < 0.25),  # H
        np.abs(u) < (v + 1) / 2,  # triangle
        (np.abs(v) > 0.3) & (np.abs(v) < 0.85),  # two horizontal bars
        (np.abs(u) > 0.3) & (np.abs(u) < 0.85),  # two vertical bars
    ]
    return shapes[cls % len(shapes)]


SHAPE_NAMES = ["plus", "x", "ring", "dot", "T", "L", "H", "triangle", "hbars", "vbars"]

TEXTURE_NAMES = ["hstripes", "vstripes", "diag", "antidiag", "checker1", "checker2", "rings", "plus",
                 "x", "dots"]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour gradient + blotchy low-frequency noise + a little pixel noise, float HxWx3."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(0.25, 0.75, 3)
    grad = rng.uniform(-0.25, 0.25, (2, 3))
    img = base + yy[..., None] * grad[0] + xx[..., None] * grad[1]
    k = 4
    low = rng.normal(0, 0.06, (k + 1, k + 1, 3))
    # bilinear upsampling of a (k+1)^2 lattice
    gy, gx = np.linspace(0, k, h), np.linspace(0, k, w)
    y0, x0 = np.minimum(gy.astype(int), k - 1), np.minimum(gx.astype(int), k - 1)
    fy, fx = (gy - y0)[:, None, None], (gx - x0)[None, :, None]
    a, b = low[y0][:, x0], low[y0][:, x0 + 1]
    c, d = low[y0 + 1][:, x0], low[y0 + 1][:, x0 + 1]
    img = img + (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy
    return img + rng.normal(0, 0.02, img.shape)


def _clutter(rng: np.random.Generator, img: np.ndarray, count: int, max_size: int) -> None:
    """Solid rectangles, discs and lines in random colours: no texture, so no class information."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(count):
        col = rng.uniform(0, 1, 3)
        kind = rng.integers(3)
        if kind == 0:
            sh, sw = rng.integers(3, max_size + 1, 2)
            y, x = rng.integers(0, h - sh + 1), rng.integers(0, w - sw + 1)
            img[y:y + sh, x:x + sw] = col
        elif kind == 1:
            r = rng.uniform(1.5, max_size / 2)
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = col
        else:
            y0, x0, y1, x1 = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w)
            n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
            ys = np.clip(np.round(np.linspace(y0, y1, n)).astype(int), 0, h - 1)
            xs = np.clip(np.round(np.linspace(x0, x1, n)).astype(int), 0, w - 1)
            img[ys, xs] = col


def _glyph_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two contrasting colours for a glyph's on and off pixels."""
    fg = rng.uniform(0, 1, 3)
    bg = np.clip(1 - fg + rng.normal(0, 0.1, 3), 0, 1)
    if np.abs(fg - bg).mean() < 0.35:
        bg = np.where(fg > 0.5, 0.0, 1.0) * np.ones(3)
    return fg, bg


def _place(rng: np.random.Generator, taken: list, h: int, w: int, size: int, tries: int = 50, lattice: int = 1):
    """Top-left corner (on a `lattice`-px lattice) of a size x size box not overlapping `taken`."""
    for _ in range(tries):
        y = int(rng.integers(0, (h - size) // lattice + 1)) * lattice
        x = int(rng.integers(0, (w - size) // lattice + 1)) * lattice
        if all(y + size <= ty or ty + ts <= y or x + size <= tx or tx + ts <= x for ty, tx, ts in taken):
            taken.append((y, x, size))
            return y, x
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    taken.append((y, x, size))
    return y, x


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# the three generators: each returns (x, y) uint8 arrays for `n` samples


def make_classification(rng: np.random.Generator, n: int, canvas: int = 64, num_classes: int = 10,
                        glyph: int = 14, copies: int = 3, clutter: int = 6, lattice: int = 4,
                        **_) -> tuple[np.ndarray, np.ndarray]:
    if not 2 <= num_classes <= len(SHAPE_NAMES):
        raise ValueError(f"toy classification has 2..{len(SHAPE_NAMES)} classes, got {num_classes}")
    labels = rng.integers(0, num_classes, n).astype(np.uint8)
    xs = np.empty((n, canvas, canvas, 3), np.uint8)
    for i in range(n):
        img = _background(rng, canvas, canvas)
        _clutter(rng, img, clutter, max(4, canvas // 6))
        tex = _shape(int(labels[i]), glyph)
        taken: list = []
        for _ in range(copies):
            fg, bg = _glyph_colours(rng)
            y, x = _place(rng, taken, canvas, canvas, glyph + 2, lattice=lattice)
            img[y:y + glyph + 2, x:x + glyph + 2] = bg  # 1-px frame in the off colour
            img[y + 1:y + 1 + glyph, x + 1:x + 1 + glyph] = np.where(tex[..., None], fg, bg)
        xs[i] = _to_u8(img)
    return xs, labels


def make_segmentation(rng: np.random.Generator, n: int, canvas: int = 64, num_classes: int = 5,
                      glyph: int = 10, copies: int = 4, clutter: int = 8, coarse_pct: int = 0,
                      coarse_texel: int = 2, **_) -> tuple[np.ndarray, np.ndarray]:
    """Textured squares on a cluttered canvas, masks of their texture class. coarse_pct: the chance
    (in percent) that an object's texture is drawn with `coarse_texel`-px cells (``_texture``),
    which the 2x copy keeps (2: at half the contrast; 4: at three quarters), not 1-px cells."""
    if not 2 <= num_classes <= len(TEXTURE_NAMES) + 1:
        raise ValueError(f"toy segmentation has 2..{len(TEXTURE_NAMES) + 1} classes, got {num_classes}")
    if not 0 <= coarse_pct <= 100:
        raise ValueError(f"toy segmentation coarse_pct is a percentage (0..100), got {coarse_pct}")
    if coarse_texel not in (2, 4):
        raise ValueError(f"toy segmentation coarse_texel is 2 or 4 (px per texture cell), got {coarse_texel}")
    xs = np.empty((n, canvas, canvas, 3), np.uint8)
    ys = np.zeros((n, canvas, canvas), np.uint8)
    for i in range(n):
        img = _background(rng, canvas, canvas)
        _clutter(rng, img, clutter, max(4, canvas // 6))
        mask = ys[i]
        taken: list = []
        for _ in range(int(rng.integers(max(1, copies - 1), copies + 2))):
            cls = int(rng.integers(1, num_classes))
            size = int(rng.integers(max(4, glyph - 4), glyph + 5))
            fg, bg = _glyph_colours(rng)
            y, x = _place(rng, taken, canvas, canvas, size)
            # drawn only when asked for, so that coarse_pct: 0 keeps the sets of generator version 2
            texel = coarse_texel if coarse_pct and rng.random() * 100 < coarse_pct else 1
            tex = _texture(cls - 1, size, texel, (y, x))
            img[y:y + size, x:x + size] = np.where(tex[..., None], fg, bg)
            mask[y:y + size, x:x + size] = cls
        xs[i] = _to_u8(img)
    return xs, ys


DETAIL_NAMES = ["hstripes", "vstripes", "checker"]


def _detail_pattern(cls: int, size: int, texel: int = 1, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The ``detail`` classes: binary stripes / checkerboard of `texel`-px cells (period 2 * texel),
    in canvas coordinates (`origin`: the pattern's top-left canvas pixel), each half on.

    texel 1: any 2x downsampling (2x2 mean, or the antialiased bilinear resize of the data loader,
    whose [1, 3, 3, 1]/8 kernel cancels a period-2 signal) maps all three to the same flat colour,
    so only the full-resolution interior tells the classes apart (at the square's edges see
    ``_detail_taper``). texel 2 or 4 (``coarse_texel``, for the ``coarse_pct`` share): cells on
    the canvas's texel-px lattice, which the same resize keeps with the same phase in every image:
    texel 2 as 1-px stripes at half the contrast (a quarter for the checkerboard), texel 4 as 2-px
    stripes at three quarters (about a half for the checkerboard)."""
    y, x = np.mgrid[origin[0]:origin[0] + size, origin[1]:origin[1] + size] // texel
    pats = [y % 2 == 0, x % 2 == 0, (x + y) % 2 == 0]
    return pats[cls]


def _detail_taper(size: int) -> np.ndarray:
    """Amplitude envelope (0, 1/4, 3/4, 1, ..., 1, 3/4, 1/4, 0) along one side of the pattern.

    A hard-edged period-2 pattern leaks through the loader's [1, 3, 3, 1]/8 kernel at its edges
    (1/8 of the contrast, a class-dependent trace one output pixel wide). With this ramp, on a 2-px
    lattice, every 4-tap window sums to zero: the pattern's 2x copy is flat up to uint8 rounding."""
    a = np.ones(size)
    a[:3] = a[-3:][::-1] = (0.0, 0.25, 0.75)
    return a


def make_detail(rng: np.random.Generator, n: int, canvas: int = 64, num_classes: int = 3, glyph: int = 16,
                frame: int = 2, clutter: int = 6, fixed_polarity: int = 1, taper: int = 1, coarse_pct: int = 0,
                coarse_texel: int = 2, **_) -> tuple[np.ndarray, np.ndarray, dict]:
    """One small framed square of a stripes / checkerboard pattern on a cluttered canvas; the class
    is the pattern. Returns images, labels and {"box": (n, 4) int16 x0, y0, x1, y1 of each pattern,
    "texel": (n,) uint8 the pattern's cell size, 1 or coarse_texel}."""
    if not 2 <= num_classes <= len(DETAIL_NAMES):
        raise ValueError(f"toy detail has 2..{len(DETAIL_NAMES)} classes, got {num_classes}")
    if glyph % 2 or frame % 2 or glyph < 8:
        raise ValueError(f"toy detail needs an even glyph (>= 8: the taper takes 3 px at each end) and an even "
                         f"frame, got glyph={glyph} frame={frame}")
    if not 0 <= coarse_pct <= 100:
        raise ValueError(f"toy detail coarse_pct is a percentage (0..100), got {coarse_pct}")
    if coarse_texel not in (2, 4):
        raise ValueError(f"toy detail coarse_texel is 2 or 4 (px per pattern cell), got {coarse_texel}")
    labels = rng.integers(0, num_classes, n).astype(np.uint8)
    xs = np.empty((n, canvas, canvas, 3), np.uint8)
    boxes = np.empty((n, 4), np.int16)
    texels = np.empty(n, np.uint8)
    for i in range(n):
        img, boxes[i], texels[i] = _render_detail(rng, int(labels[i]), canvas, glyph, frame, clutter,
                                                  bool(fixed_polarity), bool(taper), coarse_pct, coarse_texel)
        xs[i] = _to_u8(img)
    return xs, labels, {"box": boxes, "texel": texels}


def render_detail(rng: np.random.Generator, label: int, canvas: int = 64, glyph: int = 16, frame: int = 2,
                  clutter: int = 6, fixed_polarity: bool = True, taper: bool = True,
                  coarse_pct: int = 0, coarse_texel: int = 2) -> np.ndarray:
    """One ``detail`` canvas (float HxWx3); the class enters only through the pattern, so the same
    generator state with another label gives the same canvas with another pattern.

    fixed_polarity: the pattern's "on" pixels (first row/column of the stripes) take the brighter of
    the two colours, so one linear filter's sign tells the class; without it the phase and the
    colours are random and the class needs a sign-invariant detector (a plateau most seeds of the toy
    grid model never leave: docs/engine.md). taper: the amplitude ramp of ``_detail_taper``.
    coarse_pct: the chance (in percent) that the pattern is drawn with `coarse_texel`-px cells (2:
    period 4, which the 2x copy keeps at half the contrast; 4: period 8, kept at three quarters)
    instead of 1-px cells, which it erases."""
    return _render_detail(rng, label, canvas, glyph, frame, clutter, fixed_polarity, taper, coarse_pct,
                          coarse_texel)[0]


def _render_detail(rng, label, canvas, glyph, frame, clutter, fixed_polarity, taper, coarse_pct=0,
                   coarse_texel=2):
    """`render_detail`, the pattern's box (x0, y0, x1, y1) and its cell size (px)."""
    box = glyph + 2 * frame
    img = _background(rng, canvas, canvas)
    _clutter(rng, img, clutter, max(4, canvas // 6))
    fg, bg = _glyph_colours(rng)
    # on a 2-px lattice, so every 2x2 cell of the pattern lies inside the square
    y = 2 * int(rng.integers(0, (canvas - box) // 2 + 1))
    x = 2 * int(rng.integers(0, (canvas - box) // 2 + 1))
    flip = bool(rng.integers(2))  # drawn either way, so both settings share the canvas
    dark_frame = bool(rng.integers(2))
    # drawn only when asked for, so that coarse_pct: 0 keeps the sets of generator version 2
    texel = coarse_texel if coarse_pct and rng.random() * 100 < coarse_pct else 1
    pat = _detail_pattern(label, glyph, texel, (y + frame, x + frame))
    if fixed_polarity:
        if fg.mean() < bg.mean():
            fg, bg = bg, fg
    elif flip:  # random phase: which colour the first row/column takes
        pat = ~pat
    img[y:y + box, x:x + box] = 0.0 if dark_frame else 1.0  # black or white frame: findable
    amp = np.outer(_detail_taper(glyph), _detail_taper(glyph))[..., None] if taper else 1.0
    mid = (fg + bg) / 2
    img[y + frame:y + frame + glyph, x + frame:x + frame + glyph] = (
        mid + amp * np.where(pat[..., None], fg - mid, bg - mid))
    return img, (x + frame, y + frame, x + frame + glyph, y + frame + glyph), texel


VIDEO_CLASSES = ["move_right", "move_left", "move_down", "move_up", "rotate_cw", "rotate_ccw",
                 "A_then_B", "B_then_A"]


def make_video(rng: np.random.Generator, n: int, canvas: int = 32, num_classes: int = 8, frames: int = 8,
               glyph: int = 8, clutter: int = 4, coarse_pct: int = 0, coarse_texel: int = 2,
               **_) -> tuple[np.ndarray, np.ndarray]:
    """Clips of one actor on a static cluttered background; the class is the motion. coarse_pct: the
    chance (in percent) that a clip's glyph textures are drawn with `coarse_texel`-px cells
    (``_texture``), which the 2x copy keeps (2: at half the contrast; 4: at three quarters), instead
    of 1-px cells."""
    if not 2 <= num_classes <= len(VIDEO_CLASSES):
        raise ValueError(f"toy video has 2..{len(VIDEO_CLASSES)} classes, got {num_classes}")
    if frames < 4:
        raise ValueError(f"toy video needs at least 4 frames, got {frames}")
    if glyph < 4:  # the canvas's bound for a glyph is MIN_CANVAS's (the clock hand's disc)
        raise ValueError(f"toy video needs glyph >= 4, got glyph={glyph}")
    if not 0 <= coarse_pct <= 100:
        raise ValueError(f"toy video coarse_pct is a percentage (0..100), got {coarse_pct}")
    if coarse_texel not in (2, 4):
        raise ValueError(f"toy video coarse_texel is 2 or 4 (px per texture cell), got {coarse_texel}")
    labels = rng.integers(0, num_classes, n).astype(np.uint8)
    xs = np.empty((n, frames, canvas, canvas, 3), np.uint8)
    yy, xx = np.mgrid[0:canvas, 0:canvas]
    for i in range(n):
        cls = int(labels[i])
        bgimg = _background(rng, canvas, canvas)
        _clutter(rng, bgimg, clutter, max(3, canvas // 8))
        fg, bgc = _glyph_colours(rng)
        tex_id = int(rng.integers(0, len(TEXTURE_NAMES)))
        # drawn only when asked for, so that coarse_pct: 0 keeps the sets of generator version 2
        texel = coarse_texel if coarse_pct and rng.random() * 100 < coarse_pct else 1
        g = glyph
        if cls < 4:  # a textured glyph moves in one direction
            travel = canvas - g
            step = travel / (frames - 1) * rng.uniform(0.5, 1.0)
            span = step * (frames - 1)
            start = rng.uniform(0, travel - span)
            other = rng.uniform(0, travel)
            for t in range(frames):
                pos = start + step * t
                if cls in (1, 3):
                    pos = travel - pos
                y, x = (other, pos) if cls < 2 else (pos, other)
                y, x = int(round(y)), int(round(x))
                tex = _texture(tex_id, g, texel, (y, x))
                f = bgimg.copy()
                f[y:y + g, x:x + g] = np.where(tex[..., None], fg, bgc)
                xs[i, t] = _to_u8(f)
        elif cls < 6:  # a clock hand with a knob at its tip turns
            r = g * 0.9
            cy, cx = rng.uniform(r + 1, canvas - r - 1, 2)
            theta0 = rng.uniform(0, 2 * np.pi)
            dtheta = rng.uniform(0.3, 0.5) * (1 if cls == 4 else -1)
            for t in range(frames):
                th = theta0 + dtheta * t
                ty, tx = cy + r * np.sin(th), cx + r * np.cos(th)
                # distance of each pixel to the segment centre -> tip
                vy, vx = ty - cy, tx - cx
                u = np.clip(((yy - cy) * vy + (xx - cx) * vx) / (vy * vy + vx * vx), 0, 1)
                dist = np.hypot(yy - cy - u * vy, xx - cx - u * vx)
                f = bgimg.copy()
                f[np.hypot(yy - cy, xx - cx) <= r + 1.5] = bgc
                f[dist <= 0.8] = fg
                f[np.hypot(yy - ty, xx - tx) <= 1.6] = fg
                xs[i, t] = _to_u8(f)
        else:  # two glyphs appear in turn: A (stripes) then B (checkerboard), or B then A
            taken: list = []
            p1 = _place(rng, taken, canvas, canvas, g)
            p2 = _place(rng, taken, canvas, canvas, g)
            first, second = ((0, p1), (4, p2)) if cls == 6 else ((4, p1), (0, p2))
            cut = int(rng.integers(frames // 2 - 1, frames // 2 + 2))
            for t in range(frames):
                f = bgimg.copy()
                k, (y, x) = first if t < cut else second
                f[y:y + g, x:x + g] = np.where(_texture(k, g, texel, (y, x))[..., None], fg, bgc)
                xs[i, t] = _to_u8(f)
    return xs, labels


GENERATORS = {"classification": make_classification, "segmentation": make_segmentation, "video": make_video,
              "detail": make_detail}


def class_names(kind: str, num_classes: int) -> list[str]:
    if kind == "classification":
        return SHAPE_NAMES[:num_classes]
    if kind == "segmentation":
        return ["background"] + TEXTURE_NAMES[:num_classes - 1]
    if kind == "detail":
        return DETAIL_NAMES[:num_classes]
    return VIDEO_CLASSES[:num_classes]


# the smallest canvas each kind's objects fit on: (size from the parameters, what must fit)
MIN_CANVAS = {
    "classification": (lambda p: p["glyph"] + 2, "glyph + 2: a glyph in its 1-px frame"),
    "segmentation": (lambda p: p["glyph"] + 4, "glyph + 4: the largest object"),
    "detail": (lambda p: p["glyph"] + 2 * p["frame"], "glyph + 2 * frame: the framed pattern"),
    "video": (lambda p: math.ceil(1.8 * p["glyph"]) + 2, "1.8 * glyph + 2: the clock hand's disc"),
}


def resolve_params(kind: str, params: dict | None = None) -> dict:
    if kind not in KINDS:
        raise ValueError(f"unknown toy kind {kind!r}; choose one of {', '.join(KINDS)}")
    out = dict(DEFAULTS[kind])
    for k, v in (params or {}).items():
        if v is None:
            continue
        if k not in out:
            raise ValueError(f"toy {kind} has no parameter {k!r} (known: {', '.join(out)})")
        out[k] = int(v)
    for k in ("canvas", "glyph", "train_size", "val_size"):
        if out[k] < 1:
            raise ValueError(f"toy {kind}: parameter {k}={out[k]} must be at least 1")
    size, rule = MIN_CANVAS[kind]
    if out["canvas"] < size(out):
        raise ValueError(f"toy {kind}: parameter canvas={out['canvas']} is too small for glyph={out['glyph']}: "
                         f"valid canvas >= {size(out)} ({rule})")
    GENERATORS[kind](np.random.default_rng(0), 0, **out)  # no samples: checks the other values
    return out


def default_dir(kind: str, seed: int, params: dict | None = None) -> str:
    """`data/toy/<kind>-<seed>` (relative to the CWD), with a parameter hash when not the defaults."""
    p = resolve_params(kind, params)
    name = f"{kind}-{seed}"
    if p != DEFAULTS[kind]:
        name += "-" + hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:8]
    return os.path.join("data", "toy", name)


def _meta(kind: str, seed: int, params: dict) -> dict:
    return {"kind": kind, "seed": int(seed), "params": params, "version": GENERATOR_VERSION,
            "classes": class_names(kind, params["num_classes"])}


def is_complete(out: str, kind: str, seed: int, params: dict) -> bool:
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    want = _meta(kind, seed, params)
    arrays = ("x", "y") + EXTRA_ARRAYS.get(kind, ())
    return meta == want and all(os.path.isfile(os.path.join(out, f"{s}_{a}.npy"))
                                for s in ("train", "val") for a in arrays)


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """Exclusive lock so that parallel runs (Snakemake jobs, DDP ranks) generate a set only once."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield


TOOL = "dart.data.toy"
# what the generator wrote before it kept a manifest (dart_files.json): a folder holding only these
# is an earlier toy set, replaced like one that lists them
LEGACY_FILES = ("meta.json", *(f"{s}_{a}.npy" for s in ("train", "val") for a in ("x", "y", "box", "texel")))


class NotACacheError(FileExistsError, ValueError):
    """`out` holds files the toy generator did not write; nothing was removed."""


def generate(kind: str, out: str, seed: int = 0, params: dict | None = None, progress: bool = True,
             force: bool = False) -> str:
    """Generate the toy set into `out` once (atomically, under a lock); return `out`.

    `out` must be absent, empty, or a toy set written here before: the generator lists its files in
    `dart_files.json` (`dart.engine.owned`) and replaces only those. A folder holding anything else
    is refused (NotACacheError) and nothing in it is removed."""
    from ..engine import owned
    p = resolve_params(kind, params)
    out = os.path.abspath(out)
    advice = "choose another data.root (or --out), or move those files away"
    with _file_lock(out.rstrip(os.sep) + ".lock"):
        if not force and is_complete(out, kind, seed, p):
            return out
        try:  # before generating: a folder that is not ours is refused at once
            owned.check_replaceable(out, TOOL, advice, LEGACY_FILES)
        except owned.NotOwnedError as e:
            raise NotACacheError(str(e)) from None
        from tqdm import tqdm
        rng = np.random.default_rng(seed)
        make = GENERATORS[kind]
        tmp = tempfile.mkdtemp(prefix=".toy-", dir=os.path.dirname(out))
        try:
            names = []
            for split in ("train", "val"):
                n = p[f"{split}_size"]
                chunk = 100
                xs, ys, extra = [], [], {}
                # independent child seeds per chunk keep the data identical whatever the chunking
                seeds = rng.spawn((n + chunk - 1) // chunk)
                for j in tqdm(range(len(seeds)), desc=f"toy {kind} {split}", disable=not progress,
                              unit="chunk", file=sys.stderr):
                    x, y, *more = make(seeds[j], min(chunk, n - j * chunk), **p)
                    xs.append(x)
                    ys.append(y)
                    for name, arr in (more[0] if more else {}).items():
                        extra.setdefault(name, []).append(arr)
                arrays = {"x": xs, "y": ys, **extra}
                names += [f"{split}_{a}.npy" for a in arrays]
                owned.add(tmp, TOOL, names[-len(arrays):])
                for a, parts in arrays.items():
                    np.save(os.path.join(tmp, f"{split}_{a}.npy"), np.concatenate(parts))
            owned.add(tmp, TOOL, ["meta.json"])
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(_meta(kind, seed, p), f, indent=1)
            try:  # only the files of a set written before are removed
                owned.install(tmp, out, TOOL, advice, LEGACY_FILES)
            except owned.NotOwnedError as e:
                raise NotACacheError(str(e)) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder made above, nothing else
            raise
    _log.info("generated toy %s set (seed %d) in %s", kind, seed, out)
    return out


def load_split(root: str, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    with open(os.path.join(root, "meta.json")) as f:
        meta = json.load(f)
    x = np.load(os.path.join(root, f"{split}_x.npy"), mmap_mode="r")
    y = np.load(os.path.join(root, f"{split}_y.npy"), mmap_mode="r")
    return x, y, meta


def load_boxes(root: str, split: str) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 of each ``detail`` image's pattern, in canvas pixels."""
    path = os.path.join(root, f"{split}_box.npy")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: only toy 'detail' sets store pattern boxes")
    return np.load(path)


def load_texels(root: str, split: str) -> np.ndarray:
    """(n,) cell size of each ``detail`` image's pattern: 1 (a 2x copy erases it), coarse_texel."""
    path = os.path.join(root, f"{split}_texel.npy")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} missing: only toy 'detail' sets store their cell sizes")
    return np.load(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dart.data.toy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=KINDS, default="classification")
    ap.add_argument("--out", default=None, help="output folder (default data/toy/<kind>-<seed>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="regenerate even when the cache is complete")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=INT",
                    help=f"generator parameters, e.g. train_size=500 (defaults: {DEFAULTS})")
    args = ap.parse_args(argv)
    from ..engine.cli import user_error
    prog = "dart.data.toy"
    params = {}
    try:
        for kv in args.set:
            k, sep, v = kv.partition("=")
            try:
                params[k] = int(v)
            except ValueError:
                raise ValueError(f"--set {kv!r}: {k} must be an integer (KEY=INT)") from None
            if not sep or params[k] < 0:
                raise ValueError(f"--set {kv!r}: {k} must be a non-negative integer (KEY=INT)")
        out = args.out or default_dir(args.kind, args.seed, params)
        generate(args.kind, out, args.seed, params, progress=True, force=args.force)
    except (ValueError, FileExistsError, OSError) as e:
        return user_error(prog, e)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
