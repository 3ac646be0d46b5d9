"""Token merging (ToMe; Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023), as pure
tensor functions: bipartite soft matching, size-weighted merging and the proportional-attention bias.

Written from the paper's description:
- the tokens are split alternately into two sets A (even positions) and B (odd positions);
- every token of A is linked to its most similar token of B (cosine similarity of a `metric`, the
  attention keys averaged over heads);
- the r most similar links are kept, and each kept A token is merged into its B partner (several A
  tokens may join the same B token); tokens not merged stay as they are;
- merged features are averaged weighted by `size`, the number of input patches a token stands for,
  and the sizes add up;
- attention takes the sizes into account with a log(size) bias on the keys (proportional attention).

The first `protected` tokens (the class token) are never merged and keep their place at the front.
Output order: the unmerged A tokens in their original order, then every B token.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Merge = Callable[[Tensor], Tensor]


def mergeable(num_tokens: int, r: int, protected: int = 1) -> int:
    """How many tokens one matching can merge: at most the unprotected tokens of set A, and at most
    as many as set B holds (every merged A token needs a B partner). With no protected token this is
    n // 2, so a matching never leaves fewer than ceil(n / 2) tokens, and one token stays one."""
    if r < 0:
        raise ValueError(f"ToMe merge count r must be >= 0, got {r}")
    if protected not in (0, 1):
        raise ValueError(f"protected tokens must be 0 or 1 (the class token), got {protected}")
    size_a, size_b = (num_tokens + 1) // 2, num_tokens // 2
    return max(0, min(r, size_a - protected, size_b))


def bipartite_soft_matching(metric: Tensor, r: int, protected: int = 1) -> tuple[Merge, int]:
    """Match tokens of `metric` (B, N, C); return (merge, r_used).

    `merge(x, reduce="sum")` maps any (B, N, ...) tensor aligned with the tokens to (B, N - r_used, ...),
    adding (reduce="sum") or averaging ("mean") each merged A token into its B partner.
    """
    if metric.dim() != 3:
        raise ValueError(f"ToMe metric must be (batch, tokens, channels), got shape {tuple(metric.shape)}")
    n = metric.shape[1]
    r = mergeable(n, r, protected)
    if r == 0:
        return (lambda x, reduce="sum": x), 0
    with torch.no_grad():
        m = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        sim = m[:, ::2] @ m[:, 1::2].transpose(1, 2)  # (B, Na, Nb)
        if protected:
            sim[:, :protected] = -torch.inf  # the class token is never merged
        best, partner = sim.max(dim=-1)  # (B, Na)
        order = best.argsort(dim=-1, descending=True)
        src = order[:, :r]  # A tokens that merge
        keep = order[:, r:].sort(dim=-1).values  # A tokens that stay, in their original order
        dst = partner.gather(1, src)  # their B partners

    def merge(x: Tensor, reduce: str = "sum") -> Tensor:
        if x.shape[:2] != metric.shape[:2]:
            raise ValueError(f"ToMe merge expects {tuple(metric.shape[:2])} leading dims, got {tuple(x.shape[:2])}")
        tail = x.shape[2:]
        a, b = x[:, ::2], x[:, 1::2]

        def idx(i: Tensor) -> Tensor:
            return i.reshape(*i.shape, *(1,) * len(tail)).expand(*i.shape, *tail)

        stay = a.gather(1, idx(keep))
        moving = a.gather(1, idx(src))
        b = b.scatter_reduce(1, idx(dst), moving, reduce=reduce, include_self=True)
        return torch.cat([stay, b], dim=1)

    return merge, r


def merge_weighted(merge: Merge, x: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """Size-weighted average of merged tokens x (B, N, C) with sizes (B, N, 1); the sizes add up."""
    total = merge(x * size, "sum")
    size = merge(size, "sum")
    return total / size, size


def size_bias(size: Tensor) -> Tensor:
    """Proportional attention: log(size) (B, N, 1) as an additive bias over the keys, (B, 1, 1, N)."""
    return size.log().transpose(1, 2).unsqueeze(1)
