"""ToMe on timm's `VisionTransformer`, applied to a trained model without retraining.

`apply_tome(model, r)` turns the model's blocks into merging blocks in place: each block attends with
the proportional-attention bias, then merges r tokens (bipartite soft matching on the attention keys,
`merge.py`) between attention and MLP. `r` is one count for every block or a list with one per block.
The token sizes travel through the blocks in a small state shared by the model and its blocks and are
reset at every forward. `tome_deit_small_patch16_224` is DeiT-S with r = 13 (the ToMe paper's
2.7 GFLOPs row). The weights are not touched: `remove_tome` gives the plain model back.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from timm.models import register_model
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from .merge import bipartite_soft_matching, merge_weighted, size_bias


class ToMeState(dict):
    """Per-forward state: `size` (B, N, 1) patches per token; `r` per block; `trace` token counts."""


def _attend(attn: Attention, x: Tensor, size: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """timm Attention with a log(size) key bias; returns (output, keys averaged over heads)."""
    B, N, _ = x.shape
    if getattr(attn, "gate", None) is not None:
        raise ValueError("ToMe: gated attention is not supported")
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = size_bias(size).to(q.dtype) if size is not None else None
    if attn.fused_attn:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                           dropout_p=attn.attn_drop.p if attn.training else 0.0)
    else:
        a = (q * attn.scale) @ k.transpose(-2, -1)
        if bias is not None:
            a = a + bias
        y = attn.attn_drop(a.softmax(dim=-1)) @ v
    y = attn.norm(y.transpose(1, 2).reshape(B, N, -1))
    return attn.proj_drop(attn.proj(y)), k.mean(dim=1)


class ToMeBlock(Block):
    """timm Block that merges tokens between attention and MLP (class swapped in by `apply_tome`)."""

    tome: ToMeState
    tome_index: int

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("ToMe blocks do not take attention masks")
        state = self.tome
        size = state.get("size")
        if size is None or size.shape[:2] != x.shape[:2]:
            size = torch.ones(*x.shape[:2], 1, dtype=x.dtype, device=x.device)
        y, keys = _attend(self.attn, self.norm1(x), size if state["prop_attn"] else None)
        x = x + self.drop_path1(self.ls1(y))
        r = state["r"][self.tome_index]
        if r > 0:
            merge, _ = bipartite_soft_matching(keys, r, protected=state["protected"])
            x, size = merge_weighted(merge, x, size)
        state["size"] = size
        state["trace"].append(x.shape[1])
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


def _check_vit(model: VisionTransformer) -> None:
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"ToMe applies to timm VisionTransformer models, got {type(model).__name__}")
    if model.num_prefix_tokens > 1:
        raise ValueError("ToMe protects one class token; models with register or distillation tokens "
                         f"({model.num_prefix_tokens} prefix tokens) are not supported")
    if model.global_pool not in ("token", "avg"):
        raise ValueError(f"ToMe: global_pool={model.global_pool!r} is not supported (token or avg)")
    for blk in model.blocks:
        if type(blk) not in (Block, ToMeBlock):
            raise TypeError(f"ToMe needs timm's plain Block, found {type(blk).__name__}")


def _schedule(r, depth: int) -> list[int]:
    rs = [int(r)] * depth if isinstance(r, int) else [int(v) for v in r]
    if len(rs) != depth or any(v < 0 for v in rs):
        raise ValueError(f"ToMe r must be an int >= 0 or {depth} of them, got {r!r}")
    return rs


def apply_tome(model: VisionTransformer, r: int | Sequence[int], prop_attn: bool = True) -> VisionTransformer:
    """Make `model` merge r tokens per block (in place; returns it). Weights are unchanged.

    With global_pool="avg" the pooled feature is the size-weighted mean of the merged tokens.
    """
    _check_vit(model)
    state = ToMeState(r=_schedule(r, len(model.blocks)), prop_attn=bool(prop_attn),
                      protected=1 if model.cls_token is not None else 0, size=None, trace=[])
    model.tome = state
    for i, blk in enumerate(model.blocks):
        blk.__class__ = ToMeBlock
        blk.tome, blk.tome_index = state, i
    if not isinstance(model, ToMeVisionTransformer):
        model.__class__ = _tome_class(type(model))
    return model


def remove_tome(model: VisionTransformer) -> VisionTransformer:
    """Undo `apply_tome` (in place; returns the model)."""
    for blk in model.blocks:
        if isinstance(blk, ToMeBlock):
            blk.__class__ = Block
            del blk.tome, blk.tome_index
    if isinstance(model, ToMeVisionTransformer):
        model.__class__ = model._tome_base
        del model.tome
    return model


class ToMeVisionTransformer(VisionTransformer):
    """Resets the token sizes before each forward; pools by size when global_pool='avg'."""

    _tome_base = VisionTransformer
    tome: ToMeState

    def forward_features(self, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        self.tome["size"], self.tome["trace"] = None, []
        if attn_mask is not None or is_causal:
            raise ValueError("ToMe models do not take attention masks")
        return super().forward_features(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg" and self.tome.get("size") is not None:
            n = self.num_prefix_tokens
            size = self.tome["size"][:, n:]
            x = (x[:, n:] * size).sum(1) / size.sum(1)
            x = self.fc_norm(x)
            x = self.head_drop(x)
            return x if pre_logits else self.head(x)
        return super().forward_head(x, pre_logits=pre_logits)

    def tokens_per_block(self) -> list[int]:
        """Token counts after each block in the last forward (class token included)."""
        return list(self.tome["trace"])


_CLASSES: dict[type, type] = {}


def _tome_class(base: type) -> type:
    if base not in _CLASSES:
        _CLASSES[base] = type(f"ToMe{base.__name__}", (ToMeVisionTransformer, base), {"_tome_base": base})
    return _CLASSES[base]


def tokens_after(num_tokens: int, r: int | Sequence[int], depth: int, protected: int = 1) -> list[int]:
    """Token counts after each block for an input of `num_tokens` (class token included)."""
    from .merge import mergeable
    out, n = [], num_tokens
    for v in _schedule(r, depth):
        n -= mergeable(n, v, protected)
        out.append(n)
    return out


@register_model
def tome_deit_small_patch16_224(pretrained: bool = False, r: int | Sequence[int] = 13, **kwargs):
    """DeiT-S/16 at 224 px with ToMe, r = 13 tokens merged per block (ToMe paper: 2.7 GFLOPs)."""
    import timm
    model = timm.create_model("deit_small_patch16_224", pretrained=pretrained, **kwargs)
    return apply_tome(model, r)
