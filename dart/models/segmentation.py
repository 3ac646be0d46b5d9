"""Semantic segmentation with grid or DART backbones (DeiT or Vim) and a light decoder.

DART tokens are irregular, so before any convolution every token's features are put back onto a
dense map through its patch rectangle (from the `Partition`): each cell of the map takes the
area-weighted mean of the tokens whose rectangles cover it (`tokens_to_dense`). The weights are
overlap lengths of intervals, piecewise linear in the rectangle corners, so the map is
differentiable with respect to the features and to the geometry (hence to the scorer). Grid
backbones use the same function with their fixed rectangles, so grid and DART go through the same
decoder.

Decoder ("mla", multi-level aggregation in the spirit of SETR-MLA, simpler than UperNet): features
of 4 evenly spaced blocks -> LayerNorm + Linear to C channels per level -> dense maps at
input/out_stride -> concatenated -> 3x3 conv-BN-GELU twice -> 1x1 classifier -> bilinear
upsampling to the input size. "linear": the last block only, LayerNorm + Linear, dense map, 1x1
classifier.
"""
from __future__ import annotations

from typing import Optional, Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import need_images

__all__ = ["Segmenter", "create_segmenter", "tokens_to_dense", "grid_rects"]


def grid_rects(batch: int, rows: int, cols: int, height: int, width: int, device=None,
               dtype=torch.float32) -> Tensor:
    """Rectangles (B, rows*cols, 1, 4) of a fixed patch grid, in the `Partition.rects` layout
    (one piece per patch)."""
    ys = torch.linspace(0, height, rows + 1, device=device, dtype=dtype)
    xs = torch.linspace(0, width, cols + 1, device=device, dtype=dtype)
    y0, x0 = torch.meshgrid(ys[:-1], xs[:-1], indexing="ij")
    y1, x1 = torch.meshgrid(ys[1:], xs[1:], indexing="ij")
    rects = torch.stack([x0, y0, x1, y1], -1).reshape(-1, 1, 4)
    return rects.unsqueeze(0).expand(batch, -1, -1, -1)


def _overlap(lo: Tensor, hi: Tensor, edges: Tensor) -> Tensor:
    """Overlap length of intervals [lo, hi] (..., ) with cells [edges[j], edges[j+1]] -> (..., J)."""
    return (torch.minimum(hi[..., None], edges[1:]) - torch.maximum(lo[..., None], edges[:-1])).clamp_min(0)


def tokens_to_dense(tokens: Tensor, rects: Tensor, out_hw: tuple[int, int], img_hw: tuple[int, int],
                    eps: float = 1e-6) -> Tensor:
    """Token features (B, N, D) -> dense map (B, D, h, w) through the tokens' rectangles.

    rects: (B, N, P, 4) as (x0, y0, x1, y1) in input pixels (img_hw); cell (i, j) of the h x w map
    gets sum_k area(rect_k & cell) * f_k / sum_k area(rect_k & cell). Cells no rectangle covers
    (none when the rectangles tile the image, as DART's do) get zeros.
    """
    B, N, D = tokens.shape
    h, w = out_hw
    H, W = img_hw
    r = rects.to(tokens.dtype if tokens.is_floating_point() else torch.float32)
    ye = torch.linspace(0, H, h + 1, device=r.device, dtype=r.dtype)
    xe = torch.linspace(0, W, w + 1, device=r.device, dtype=r.dtype)
    oy = _overlap(r[..., 1], r[..., 3], ye)  # (B, N, P, h)
    ox = _overlap(r[..., 0], r[..., 2], xe)  # (B, N, P, w)
    weight = torch.einsum("bnph,bnpw->bnhw", oy, ox).reshape(B, N, h * w)  # area of rect_n in each cell
    num = torch.bmm(weight.transpose(1, 2), tokens.to(weight.dtype))  # (B, hw, D)
    den = weight.sum(1).unsqueeze(-1)  # (B, hw, 1)
    dense = num / den.clamp_min(eps)
    return dense.transpose(1, 2).reshape(B, D, h, w).to(tokens.dtype)


class _Backbone(nn.Module):
    """Runs a timm ViT/DeiT (grid or DART) or a Vision Mamba (grid or DART) and returns the patch
    tokens of the chosen blocks plus their rectangles."""

    def __init__(self, model: nn.Module, layers: Optional[Sequence[int]] = None):
        super().__init__()
        self.model = model
        if hasattr(model, "blocks"):
            self.kind, depth = "vit", len(model.blocks)
        elif hasattr(model, "layers") and hasattr(model, "norm_f"):
            self.kind, depth = "mamba", len(model.layers)
        else:
            raise TypeError(f"segmentation needs a ViT/DeiT or Vision Mamba backbone, got {type(model).__name__}")
        self.dart = hasattr(model.patch_embed, "num_tokens") and hasattr(model.patch_embed, "scorer")
        if layers is None:
            layers = sorted({max(0, round(depth * (i + 1) / 4) - 1) for i in range(4)})
        layers = sorted(set(int(i) for i in layers))
        if layers[-1] >= depth or layers[0] < 0:
            raise ValueError(f"decoder layers {layers} out of range for a backbone of depth {depth}")
        self.layers = layers
        self.embed_dim = model.embed_dim
        img = model.patch_embed.img_size
        self.img_size = (img, img) if isinstance(img, int) else tuple(img)

    def _grid_rects(self, B: int, device, dtype) -> Tensor:
        gh, gw = self.model.patch_embed.grid_size
        return grid_rects(B, gh, gw, *self.img_size, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        m = self.model
        B = x.shape[0]
        last = self.layers[-1]
        feats = []
        if self.kind == "vit":
            if self.dart:
                seq, part = m.tokenize(x)
                rects = part.rects
            else:
                seq = m._pos_embed(m.patch_embed(x))
                rects = self._grid_rects(B, x.device, torch.float32)
            seq = m.norm_pre(m.patch_drop(seq))
            npre = m.num_prefix_tokens
            for i, blk in enumerate(m.blocks):
                seq = blk(seq)
                if i in self.layers:
                    out = m.norm(seq) if i == len(m.blocks) - 1 else seq
                    feats.append(out[:, npre:])
                if i == last:
                    break
            return feats, rects
        # Vision Mamba
        if self.dart:
            need_images(x)
            tokens, part = m.patch_embed(x, pos_embed=m.patch_pos_table(), return_partition=True)
            tokens = tokens + part.pos_embed.to(tokens.dtype)
            rects = part.rects
        else:
            tokens = m.embed_patches(x)
            rects = self._grid_rects(B, x.device, torch.float32)
        n = tokens.shape[1]
        ci = m.cls_index(n)
        hidden, residual = m.pos_drop(m.insert_cls(tokens)), None
        for i, layer in enumerate(m.layers):
            hidden, residual = layer(hidden, residual)
            if i in self.layers:
                res = hidden if residual is None else residual + hidden
                if i == len(m.layers) - 1:
                    res = m.norm_f(res.to(m.norm_f.weight.dtype))
                feats.append(torch.cat([res[:, :ci], res[:, ci + 1:]], 1))
            if i == last:
                break
        return feats, rects


class Segmenter(nn.Module):
    """Backbone (grid or DART) + dense decoder; forward(images) -> logits (B, K, H, W)."""

    def __init__(self, backbone: nn.Module, num_classes: int, decoder: str = "mla", channels: int = 64,
                 layers: Optional[Sequence[int]] = None, out_stride: int = 4):
        super().__init__()
        if decoder not in ("mla", "linear"):
            raise ValueError(f"decoder must be 'mla' or 'linear', got {decoder!r}")
        depth = len(backbone.blocks) if hasattr(backbone, "blocks") else len(getattr(backbone, "layers", []))
        if decoder == "linear":
            layers = [depth - 1] if layers is None else [max(layers)]
        self.backbone = _Backbone(backbone, layers)
        self.decoder_type = decoder
        self.num_classes = num_classes
        self.out_stride = out_stride
        D = self.backbone.embed_dim
        L = len(self.backbone.layers)
        self.proj = nn.ModuleList([nn.Sequential(nn.LayerNorm(D), nn.Linear(D, channels)) for _ in range(L)])
        if decoder == "mla":
            self.fuse = nn.Sequential(
                nn.Conv2d(L * channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.GELU(),
                nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.GELU())
        else:
            self.fuse = nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        # the timm-like attributes the engine and the benchmarks read (patch_embed not registered
        # a second time: the state dict keeps one copy, under backbone.model.patch_embed)
        object.__setattr__(self, "patch_embed", backbone.patch_embed)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        feats, rects = self.backbone(x)
        hw = (max(1, H // self.out_stride), max(1, W // self.out_stride))
        maps = [tokens_to_dense(p(f), rects, hw, self.backbone.img_size) for p, f in zip(self.proj, feats)]
        y = self.classifier(self.fuse(torch.cat(maps, 1)))
        return F.interpolate(y, size=(H, W), mode="bilinear", align_corners=False)

    def no_weight_decay(self) -> set:
        inner = getattr(self.backbone.model, "no_weight_decay", None)
        return {f"backbone.model.{k}" for k in (inner() if inner else set())}


def create_segmenter(backbone_name: str, num_classes: int, decoder: str = "mla", channels: int = 64,
                     layers: Optional[Sequence[int]] = None, out_stride: int = 4, **backbone_kwargs) -> Segmenter:
    """A timm-registered backbone (e.g. `deit_tiny_patch16_224`, `dart_deit_tiny_patch16_224`,
    `vim_tiny_patch16_224`, `dart_vim_tiny_patch16_224`) without its head, plus the decoder."""
    import dart  # noqa: F401  (registers the DART models)
    for mod in ("dart.models.vim",):
        try:
            __import__(mod)
        except ImportError:
            pass
    backbone_kwargs.pop("num_classes", None)
    backbone = timm.create_model(backbone_name, pretrained=False, num_classes=0, **backbone_kwargs)
    return Segmenter(backbone, num_classes, decoder=decoder, channels=channels, layers=layers,
                     out_stride=out_stride)
