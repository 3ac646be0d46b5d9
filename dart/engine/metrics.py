"""Metric accumulators (top-k, mIoU), model complexity and the environment record."""
from __future__ import annotations

import platform
import sys

import torch

from .distributed import DistInfo, all_reduce_sum


class TopK:
    """Counts of correct top-1/top-5 predictions, summed over ranks at the end. Top-5 is None for
    5 classes or fewer, where it would be 100 whatever the model does."""

    def __init__(self, device, num_classes: int | None = None):
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # top1, top5, n, loss_sum
        self.num_classes = num_classes

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        if self.num_classes is None:
            self.num_classes = logits.shape[-1]
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices
        hit = top.eq(target[:, None])
        n = target.shape[0]
        self.sums += torch.tensor([hit[:, :1].any(-1).sum().item(), hit.any(-1).sum().item(), n,
                                   (loss or 0.0) * n], dtype=torch.float64, device=self.sums.device)

    def compute(self, info: DistInfo) -> dict:
        s = all_reduce_sum(self.sums.clone(), info).tolist()
        n = max(s[2], 1)
        top5 = 100 * s[1] / n if self.num_classes is None or self.num_classes > 5 else None
        return {"top1": 100 * s[0] / n, "top5": top5, "val_loss": s[3] / n, "val_samples": int(s[2])}


class MeanIoU:
    """Confusion matrix over classes (ignore index skipped) -> mIoU, pixel accuracy."""

    def __init__(self, num_classes: int, device, ignore_index: int = 255):
        self.n, self.ignore = num_classes, ignore_index
        self.conf = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
        self.extra = torch.zeros(2, dtype=torch.float64, device=device)  # loss_sum, images

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: float | None = None) -> None:
        pred = logits.argmax(1)
        keep = target != self.ignore
        idx = target[keep] * self.n + pred[keep]
        self.conf += torch.bincount(idx, minlength=self.n * self.n).view(self.n, self.n).to(self.conf)
        b = target.shape[0]
        self.extra += torch.tensor([(loss or 0.0) * b, b], dtype=torch.float64, device=self.extra.device)

    def compute(self, info: DistInfo) -> dict:
        conf = all_reduce_sum(self.conf.clone(), info)
        extra = all_reduce_sum(self.extra.clone(), info).tolist()
        tp = conf.diag()
        union = conf.sum(0) + conf.sum(1) - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp_min(1), torch.zeros_like(tp))
        miou = (iou[present].mean().item() if present.any() else 0.0)
        return {"miou": 100 * miou, "pixel_acc": 100 * (tp.sum() / conf.sum().clamp_min(1)).item(),
                "iou_per_class": [round(100 * v, 3) for v in iou.tolist()],
                "val_loss": extra[0] / max(extra[1], 1), "val_samples": int(extra[1])}


def versions() -> dict:
    import timm
    import dart
    return {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "dart": getattr(dart, "__version__", None)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def complexity(model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict:
    """params_m and gmacs (`dart.complexity`, the count `bench.complexity` prints)."""
    from ..complexity import count_model

    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    try:
        out = count_model(model, tuple(input_shape))
        return {"params_m": float(out.get("params_m", params_m)), "gmacs": out.get("gmacs")}
    except Exception as e:  # counting must never fail a run
        print(f"[dart] GMACs count failed ({type(e).__name__}: {e}); gmacs left null", file=sys.stderr)
        return {"params_m": params_m, "gmacs": None}
