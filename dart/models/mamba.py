"""Shared pieces of the SSM backbones: the (bidirectional) Mamba mixer, the residual block and a
plain-image `VisionMamba` trunk used by Vim (`vim.py`) and VideoMamba (`videomamba.py`).

Parameter names follow the official Vim / VideoMamba code (in_proj, conv1d/conv1d_b, x_proj/x_proj_b,
dt_proj/dt_proj_b, A_log/A_b_log, D/D_b, out_proj, layers.N.mixer, layers.N.norm, norm_f, pos_embed,
cls_token, head, patch_embed.proj), so their checkpoints load by a simple key map. What is followed
and where it comes from is written up in docs/mamba.md.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from timm.layers import DropPath, RmsNormFp32, lecun_normal_, to_2tuple, trunc_normal_

from ..ops import causal_conv1d, conv_backend, conv_macs, scan_backend, scan_macs, selective_scan
from ..tokenizer import DART
from ._common import TOKENIZER_KWARGS, need_images


class Mamba(nn.Module):
    """Mamba-1 mixer, (B, L, d_model) -> (B, L, d_model).

    bimamba=True is Vim's bidirectional "v2" layer: a second inner pass over the reversed sequence
    with its own A_b_log, conv1d_b, x_proj_b, dt_proj_b, D_b, sharing in_proj and out_proj;
    out = out_proj(y_fwd + flip(y_bwd)), halved when divide_out (Vim) and not halved in VideoMamba.

    `scan_backend` / `conv_backend` say which implementation ran last ("mamba_ssm" or "torch",
    "causal_conv1d" or "torch"); `uncounted_macs` reports the multiply-adds FlopCounterMode misses.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank="auto", dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random",
                 dt_scale: float = 1.0, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False, bimamba: bool = True, divide_out: bool = True,
                 layer_idx: Optional[int] = None):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.bimamba = bimamba
        self.divide_out = divide_out
        self.layer_idx = layer_idx
        self.scan_backend: Optional[str] = None
        self.conv_backend: Optional[str] = None

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        dirs = ("", "_b") if bimamba else ("",)
        for sfx in dirs:
            self._make_direction(sfx, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, conv_bias)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _make_direction(self, sfx, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, conv_bias):
        di, n, r = self.d_inner, self.d_state, self.dt_rank
        # kept as the official padded Conv1d so its weights load; applied causally by `causal_conv1d`
        conv = nn.Conv1d(di, di, self.d_conv, groups=di, padding=self.d_conv - 1, bias=conv_bias)
        x_proj = nn.Linear(di, r + 2 * n, bias=False)
        dt_proj = nn.Linear(r, di, bias=True)
        # dt projection: uniform(+-rank^-0.5) weights, bias = softplus^-1 of log-uniform [dt_min, dt_max]
        std = r ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        dt_proj.bias._no_reinit = True
        # S4D-real: A = -(1..N) per channel, stored as log in fp32; D skip = 1
        A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        A_log._no_weight_decay = True
        D = nn.Parameter(torch.ones(di))
        D._no_weight_decay = True
        setattr(self, "conv1d" + sfx, conv)
        setattr(self, "x_proj" + sfx, x_proj)
        setattr(self, "dt_proj" + sfx, dt_proj)
        setattr(self, "A_log" if not sfx else "A_b_log", A_log)
        setattr(self, "D" + sfx, D)

    def _inner(self, xz: Tensor, sfx: str) -> Tensor:
        """One direction: causal conv, input-dependent (dt, B, C), selective scan, z gate -> (B, Di, L)."""
        x, z = xz.chunk(2, dim=1)
        conv = getattr(self, "conv1d" + sfx)
        self.conv_backend = conv_backend(x)
        x = causal_conv1d(x, conv.weight, conv.bias, activation="silu")
        x_dbl = getattr(self, "x_proj" + sfx)(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt_proj = getattr(self, "dt_proj" + sfx)
        dt = F.linear(dt, dt_proj.weight).transpose(1, 2)  # bias goes in as delta_bias (fp32)
        A = -torch.exp((self.A_log if not sfx else self.A_b_log).float())
        self.scan_backend = scan_backend(x)
        return selective_scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2),
                              getattr(self, "D" + sfx).float(), z=z,
                              delta_bias=dt_proj.bias.float(), delta_softplus=True)

    def forward(self, hidden_states: Tensor) -> Tensor:
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (B, 2 Di, L)
        y = self._inner(xz, "")
        if self.bimamba:
            y = y + self._inner(xz.flip(-1), "_b").flip(-1)
            if self.divide_out:
                y = y / 2
        return self.out_proj(y.transpose(1, 2))

    @property
    def num_directions(self) -> int:
        return 2 if self.bimamba else 1

    def uncounted_macs(self, hidden_states: Tensor, output: Optional[Tensor] = None) -> int:
        """Multiply-adds FlopCounterMode cannot see, per forward: each direction's selective scan by
        the Mamba authors' count (9*B*L*Di*N + B*L*Di for the D skip + B*L*Di for the z gate), and
        the causal conv when the causal-conv1d kernel ran it (the PyTorch conv is counted already)."""
        b, length = hidden_states.shape[:2]
        per_dir = scan_macs(b, length, self.d_inner, self.d_state)
        if self.conv_backend == "causal_conv1d":
            per_dir += conv_macs(b, length, self.d_inner, self.d_conv)
        return self.num_directions * per_dir

    def macs(self, batch: int, length: int) -> dict[str, int]:
        """Analytic multiply-adds of one forward by component (all directions); their sum is what
        FlopCounterMode plus `uncounted_macs` report."""
        b, l, d, di, n, r, k = batch, length, self.d_model, self.d_inner, self.d_state, self.dt_rank, self.d_conv
        nd = self.num_directions
        return {"in_proj": b * l * d * 2 * di, "conv1d": nd * conv_macs(b, l, di, k),
                "x_proj": nd * b * l * di * (r + 2 * n), "dt_proj": nd * b * l * r * di,
                "scan": nd * 9 * b * l * di * n, "skip_gate": nd * 2 * b * l * di,
                "out_proj": b * l * di * d}


# Which mixer components a multiply-add count includes. "full" is ours (bench/complexity.py:
# FlopCounterMode + `uncounted_macs`); the other two reproduce published tables (docs/mamba.md):
# "fused_scan" = what fvcore sees of the official fused CUDA path (in_proj, out_proj) plus 9*L*Di*N per
# scan direction (the DART paper's Vim rows); "fused_visible" = in_proj and out_proj only, the fused
# inner op being invisible to fvcore (VideoMamba's published numbers).
MACS_CONVENTIONS = {
    "full": ("in_proj", "conv1d", "x_proj", "dt_proj", "scan", "skip_gate", "out_proj"),
    "fused_scan": ("in_proj", "scan", "out_proj"),
    "fused_visible": ("in_proj", "out_proj"),
}


def mixer_macs(mixer: Mamba, batch: int, length: int, convention: str = "full") -> int:
    """Multiply-adds of one mixer forward under a convention of `MACS_CONVENTIONS`."""
    if convention not in MACS_CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(MACS_CONVENTIONS)}, got {convention!r}")
    parts = mixer.macs(batch, length)
    return sum(parts[k] for k in MACS_CONVENTIONS[convention])


class MambaBlock(nn.Module):
    """Add -> RMSNorm -> mixer, returning (mixer output, residual) as in the official Block (whose
    add+norm is a fused Triton kernel; this is the plain equivalent with the same parameters)."""

    def __init__(self, dim: int, mixer_kwargs: dict, norm_eps: float = 1e-5, drop_path: float = 0.,
                 residual_in_fp32: bool = True, layer_idx: Optional[int] = None):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.mixer = Mamba(dim, layer_idx=layer_idx, **mixer_kwargs)
        self.norm = RmsNormFp32(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, hidden_states: Tensor, residual: Optional[Tensor] = None):
        residual = hidden_states if residual is None else residual + self.drop_path(hidden_states)
        hidden_states = self.norm(residual.to(self.norm.weight.dtype))
        if self.residual_in_fp32:
            residual = residual.float()
        return self.mixer(hidden_states), residual


class PatchEmbed(nn.Module):
    """Grid patch embedding: a patch_size conv with `stride` (Vim's long-sequence models use stride 8)."""

    def __init__(self, img_size=224, patch_size: int = 16, stride: Optional[int] = None,
                 in_chans: int = 3, embed_dim: int = 192):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.stride = to_2tuple(stride or patch_size)
        self.in_chans = in_chans
        self.grid_size = tuple((i - p) // s + 1 for i, p, s in zip(self.img_size, self.patch_size, self.stride))
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, self.patch_size, self.stride)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.img_size or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}), "
                             f"got shape {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionMamba(nn.Module):
    """A stack of bidirectional Mamba layers over image tokens with one class token.

    tokenizer="grid": fixed patches (PatchEmbed); tokenizer="dart": the DART tokenizer, whose
    per-image resampled g x g table gives the patch position embeddings. The class token sits in the
    middle of the sequence (cls_position="middle", Vim) or in front ("front", VideoMamba) and has its
    own entry in `pos_embed` at that place in the table, as in the official layout.
    """

    def __init__(self, img_size=224, patch_size: int = 16, stride: Optional[int] = None,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: str = "token",
                 embed_dim: int = 192, depth: int = 24, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, dt_rank="auto", ssm_cfg: Optional[dict] = None,
                 drop_rate: float = 0., drop_path_rate: float = 0., norm_eps: float = 1e-5,
                 residual_in_fp32: bool = True, cls_position: str = "middle", divide_out: bool = True,
                 init_mode: str = "vim", tokenizer: str = "grid", num_tokens: int = 196,
                 score_grid: int = 14, scorer="mobilenetv3_small_v2", **tokenizer_kwargs):
        super().__init__()
        unknown = sorted(set(tokenizer_kwargs) - set(TOKENIZER_KWARGS))
        if unknown:
            raise TypeError(f"VisionMamba got unexpected keyword arguments: {', '.join(unknown)}")
        if cls_position not in ("middle", "front"):
            raise ValueError(f"cls_position must be 'middle' or 'front', got {cls_position!r}")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if init_mode not in ("vim", "videomamba", "skip"):
            raise ValueError(f"init_mode must be 'vim', 'videomamba' or 'skip', got {init_mode!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.cls_position = cls_position
        self.tokenizer = tokenizer
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        if tokenizer == "grid":
            self.patch_embed = PatchEmbed(img_size, patch_size, stride, in_chans, embed_dim)
            table = self.patch_embed.num_patches
        elif tokenizer == "dart":
            if stride not in (None, patch_size):
                raise ValueError("DART cuts its own patches: stride does not apply")
            self.patch_embed = DART(
                img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                num_tokens=num_tokens, score_grid=score_grid, scorer=scorer, **tokenizer_kwargs)
            table = score_grid * score_grid
        else:
            raise ValueError(f"tokenizer must be 'grid' or 'dart', got {tokenizer!r}")
        # index of the class token's entry in pos_embed (official layout: the table includes it)
        self.cls_pos_index = table // 2 if cls_position == "middle" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, table + 1, embed_dim))
        self.pos_drop = nn.Dropout(p=drop_rate)

        mixer_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank,
                            bimamba=True, divide_out=divide_out, **(ssm_cfg or {}))
        dpr = [drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]  # linspace
        inter_dpr = [0.0] + dpr  # official: block i drops the previous block's output with dpr[i-1]
        self.layers = nn.ModuleList([
            MambaBlock(embed_dim, mixer_kwargs, norm_eps, inter_dpr[i], residual_in_fp32, layer_idx=i)
            for i in range(depth)])
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.norm_f = RmsNormFp32(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights(init_mode)

    # ------------------------------------------------------------------ init
    def init_weights(self, mode: str = "vim") -> None:
        """Official initialisations. 'vim': lecun-normal patch conv, trunc-normal(0.02) head,
        pos_embed and cls_token, Mamba's own init inside the layers. 'videomamba': trunc-normal(0.02)
        on every Linear of the backbone with zero biases (this also zeroes the dt biases, as the
        official code does), trunc-normal pos_embed, zero cls_token. Both then rescale each
        out_proj: kaiming-uniform(a=sqrt 5) / sqrt(depth)."""
        if mode == "skip":
            return
        if mode == "vim":
            lecun_normal_(self.patch_embed.proj.weight)
            if self.patch_embed.proj.bias is not None:
                nn.init.zeros_(self.patch_embed.proj.bias)
            trunc_normal_(self.cls_token, std=.02)
        else:
            for m in self.layers.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, std=.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=.02)
            nn.init.zeros_(self.head.bias)
        trunc_normal_(self.pos_embed, std=.02)
        for layer in self.layers:
            w = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            with torch.no_grad():
                w /= math.sqrt(len(self.layers))

    # ------------------------------------------------------------------ tokens
    def patch_pos_table(self) -> Tensor:
        """(1, M, D): the position table of the patch tokens (the class token's entry removed)."""
        i = self.cls_pos_index
        return torch.cat([self.pos_embed[:, :i], self.pos_embed[:, i + 1:]], dim=1)

    def embed_patches(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) -> patch tokens with their position embeddings (B, M, D)."""
        if self.tokenizer == "dart":
            need_images(x)
            tokens, part = self.patch_embed(x, pos_embed=self.patch_pos_table(), return_partition=True)
            return tokens + part.pos_embed.to(tokens.dtype)
        tokens = self.patch_embed(x)
        return tokens + self.patch_pos_table().to(tokens.dtype)

    def cls_index(self, num_patches: int) -> int:
        """Where the class token sits in a sequence of `num_patches` patch tokens plus itself."""
        return num_patches // 2 if self.cls_position == "middle" else 0

    def insert_cls(self, tokens: Tensor) -> Tensor:
        i = self.cls_index(tokens.shape[1])
        cls = (self.cls_token + self.pos_embed[:, self.cls_pos_index:self.cls_pos_index + 1])
        cls = cls.to(tokens.dtype).expand(tokens.shape[0], -1, -1)
        return torch.cat([tokens[:, :i], cls, tokens[:, i:]], dim=1)

    def tokenize(self, x: Tensor) -> Tensor:
        """(B, L, D) input sequence of the layers, class token included."""
        return self.pos_drop(self.insert_cls(self.embed_patches(x)))

    # ------------------------------------------------------------------ trunk
    def forward_layers(self, hidden_states: Tensor) -> Tensor:
        residual = None
        for layer in self.layers:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                from torch.utils.checkpoint import checkpoint
                hidden_states, residual = checkpoint(layer, hidden_states, residual, use_reentrant=False)
            else:
                hidden_states, residual = layer(hidden_states, residual)
        residual = hidden_states if residual is None else residual + self.drop_path(hidden_states)
        return self.norm_f(residual.to(self.norm_f.weight.dtype))

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, L, D) normalised output sequence, class token included."""
        return self.forward_layers(self.tokenize(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        else:
            x = x[:, self.cls_index(x.shape[1] - 1)]
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------ timm interface
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {"pos_embed", "cls_token", "temporal_pos_embedding"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^cls_token|pos_embed|temporal_pos_embedding|patch_embed",
                "blocks": [(r"^layers\.(\d+)", None), (r"^norm_f", (99999,))]}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("token", "avg"):
                raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def sequence_length(self, frames: int = 1) -> int:
        """Tokens the layers see (class token included) for an image (frames=1) or a clip."""
        pe = self.patch_embed
        return frames * (pe.num_tokens if self.tokenizer == "dart" else pe.num_patches) + 1

    def layers_macs(self, length: int, convention: str = "full", batch: int = 1) -> int:
        """Multiply-adds of all mixers for a sequence of `length` tokens under `convention`
        (the norms and residual adds are elementwise and not counted, as in fvcore/timm)."""
        return sum(mixer_macs(m, batch, length, convention) for m in self.mixers())

    def mixers(self) -> list[Mamba]:
        return [layer.mixer for layer in self.layers]

    @property
    def scan_backends(self) -> set:
        """Backends the selective scans used in the last forward (empty before the first)."""
        return {m.scan_backend for m in self.mixers() if m.scan_backend}
