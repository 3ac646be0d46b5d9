"""The training engine: one model, one dataset, one run folder.

Built on timm's pieces: `create_optimizer_v2`, `create_scheduler_v2` (stepped per update),
`Mixup`/CutMix, `LabelSmoothingCrossEntropy`/`SoftTargetCrossEntropy`, RandAugment transforms,
`ModelEmaV3`, `RepeatAugSampler`. DDP through torchrun (NCCL on GPUs, gloo on CPUs); bf16
autocast on GPUs.

Resumption: a checkpoint is written atomically at the end of every epoch with the model,
optimizer, scheduler, EMA and grad scaler states, the epoch, the metric history and the config.
Each epoch reseeds every RNG from (seed, epoch, rank) and the samplers shuffle by epoch, so a run
killed mid-epoch and resumed from the last checkpoint replays that epoch exactly; that reseed is
the only mechanism (no RNG state is saved). A resume whose config changes the model or the data
is refused (`dart.engine.compat`).
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import os
import sys
import time
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import checkpoint as ckpt
from . import distributed as dist_
from . import runfolder
from .build import build_model, input_shape, num_tokens
from .compat import check_resume
from .config import dump, yaml_load
from .metrics import MeanIoU, TopK, complexity, device_name, versions
from ..data import SkipLog, build_datasets, collate

LOG_NAME = "dart"
IGNORE_INDEX = 255


class NonFiniteLoss(RuntimeError):
    pass


class ShardSampler(Sampler):
    """Evaluation shard of this rank: indices rank, rank+world, ... (no padding, no duplicates)."""

    def __init__(self, n: int, rank: int, world: int):
        self.idx = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.idx)

    def __len__(self):
        return len(self.idx)


def setup_logging(out_dir: Optional[str], is_main: bool, filename: str = "train.log") -> logging.Logger:
    log = logging.getLogger(LOG_NAME)
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    sh = logging.StreamHandler(sys.stderr)
    sh.setLevel(logging.INFO if is_main else logging.WARNING)
    sh.setFormatter(fmt)
    log.addHandler(sh)
    if out_dir and is_main:
        os.makedirs(out_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(out_dir, filename), mode="a")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def amp_dtype(cfg: dict, device: torch.device):
    amp = cfg["train"]["amp"]
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if device.type != "cuda":
        raise ValueError(f"config key 'train.amp' is {amp!r} but the device is {device}; use auto or off")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = torch.cuda.is_available()


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + 17) % (2 ** 31)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def param_checksum(model: nn.Module) -> str:
    """SHA-1 of the parameters (not the buffers: BatchNorm running statistics are per rank under DDP,
    and the checkpoint keeps rank 0's)."""
    h = hashlib.sha1()
    for k, v in unwrap(model).named_parameters():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_loader(ds, batch_size: int, sampler, num_workers: int, drop_last: bool, device) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, drop_last=drop_last, pin_memory=device.type == "cuda",
                      persistent_workers=False)


def train_sampler(cfg: dict, ds, info: dist_.DistInfo):
    seed = cfg["train"]["seed"]
    if cfg["aug"]["repeated_aug"]:
        from timm.data.distributed_sampler import RepeatAugSampler
        return RepeatAugSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True)
    return DistributedSampler(ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed,
                              drop_last=True)


def make_criterion(cfg: dict, mixup_active: bool):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if cfg["task"] == "segmentation":
        return nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    if mixup_active:
        return SoftTargetCrossEntropy()
    if cfg["aug"]["label_smoothing"] > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg["aug"]["label_smoothing"])
    return nn.CrossEntropyLoss()


def make_mixup(cfg: dict):
    a = cfg["aug"]
    if cfg["task"] == "segmentation" or (a["mixup"] <= 0 and a["cutmix"] <= 0):
        return None
    if cfg["task"] == "video" and a["cutmix"] > 0:
        raise ValueError("config key 'aug.cutmix' must be 0 for task video (CutMix needs images)")
    from timm.data import Mixup
    return Mixup(mixup_alpha=a["mixup"], cutmix_alpha=a["cutmix"], prob=a["mixup_prob"],
                 switch_prob=a["mixup_switch_prob"], mode="batch", label_smoothing=a["label_smoothing"],
                 num_classes=cfg["data"]["num_classes"])


@torch.no_grad()
def evaluate(model: nn.Module, loader, cfg: dict, info: dist_.DistInfo, skips: SkipLog,
             max_batches: Optional[int] = None) -> dict:
    model.eval()
    dtype = amp_dtype(cfg, info.device)
    seg = cfg["task"] == "segmentation"
    n_classes = cfg["data"]["num_classes"]
    acc = MeanIoU(n_classes, info.device, IGNORE_INDEX) if seg else TopK(info.device, n_classes)
    n_img, t0 = 0, time.perf_counter()
    nonfinite = ""  # the first batch whose outputs are not finite: a score of NaN logits is no score
    for i, (x, y, skipped) in enumerate(loader):
        skips.add(skipped)
        if max_batches is not None and i >= max_batches:
            break
        if x is None or nonfinite:
            continue
        x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
        try:
            with autocast(info.device, dtype):
                out = model(x)
        except FloatingPointError as e:  # a model's own finiteness check (DART's scores)
            nonfinite = f"batch {i}: {e}"
            continue
        out = out.float()
        if not bool(torch.isfinite(out).all()):
            nonfinite = f"batch {i}: the model's outputs are NaN or inf"
            continue
        if seg and out.shape[-2:] != y.shape[-2:]:  # scored on the labels' own resolution
            out = F.interpolate(out, size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(out, y, ignore_index=IGNORE_INDEX).item() if seg else F.cross_entropy(out, y).item()
        acc.update(out, y, loss)
        n_img += x.shape[0]
    dt = time.perf_counter() - t0
    # every rank learns whether any rank saw non-finite outputs (no rank waits alone in a collective)
    bad = dist_.all_reduce_sum(torch.tensor([float(bool(nonfinite))], dtype=torch.float64, device=info.device), info)
    if float(bad.item()) > 0:
        raise FloatingPointError(f"non-finite values in the validation pass ({nonfinite or 'on another rank'})")
    res = acc.compute(info)
    tot = dist_.all_reduce_sum(torch.tensor([float(n_img)], dtype=torch.float64, device=info.device), info)
    res["eval_images_per_s"] = float(tot.item()) / max(dt, 1e-9)
    return res


def metric_record(cfg: dict, model: nn.Module, data_info: dict, info: dist_.DistInfo) -> dict:
    """The keys every metrics/eval JSON carries besides the metrics themselves."""
    return {
        "task": cfg["task"], "model": cfg["model"]["name"], "dataset": data_info["dataset"],
        "name": cfg["name"], "num_tokens": num_tokens(model), "img_size": cfg["data"]["img_size"],
        "num_frames": cfg["data"]["num_frames"] if cfg["task"] == "video" else None,
        "num_classes": cfg["data"]["num_classes"], "seed": cfg["train"]["seed"],
        "epochs": cfg["train"]["epochs"], "versions": versions(), "device": device_name(info.device),
        "world_size": info.world_size, "amp": str(amp_dtype(cfg, info.device) or "off").replace("torch.", ""),
        "deterministic": cfg["train"]["deterministic"],
    }


class Trainer:
    """One run into cfg["output_dir"]. Without `resume` the folder must be absent or empty; with
    `overwrite` the run found there is replaced (`dart.engine.runfolder`: only the files it listed)."""

    def __init__(self, cfg: dict, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ValueError("--resume continues the run in the output folder and --overwrite replaces it: "
                             "pass one of them")
        self.cfg = cfg
        self.out = cfg["output_dir"]
        self.resume = resume
        self.overwrite = overwrite

    # ------------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, tr = self.cfg, self.cfg["train"]
        if tr["threads"]:
            torch.set_num_threads(tr["threads"])
        set_deterministic(tr["deterministic"])
        info = dist_.init(tr["device"])
        self.info = info
        try:
            removed = []
            if not self.resume:  # before anything is written there (every rank checks, rank 0 removes)
                removed = runfolder.start_new_run(self.out, self.overwrite, remove=info.is_main)
            # every rank has seen the folder before rank 0 writes into it (a rank that looked later
            # would find rank 0's files and refuse); the ranks see one state, so all pass or all refuse
            dist_.barrier(info)
            if info.is_main:
                runfolder.register(self.out, "config.yaml", "train.log")
            log = setup_logging(self.out, info.is_main)
            self.log = log
            if removed:
                log.info("--overwrite: removed the previous run's files from %s: %s", self.out, ", ".join(removed))
            return self._run(cfg, tr, info, log)
        finally:
            dist_.shutdown(info)

    def _with_init_kwargs(self, cfg: dict, log, stored: Optional[dict] = None, init=None) -> dict:
        """The config with the model kwargs its init checkpoint (`init`, when already read) implies
        (the convention it was trained under, its trunk's regime), so that every file of the run
        records them."""
        from .initialise import with_init_kwargs
        cfg, added = with_init_kwargs(cfg, stored, init)
        if added:
            log.info("model.init_checkpoint %s was trained with %s: the model is built so, and the run's "
                     "config records it", cfg["model"]["init_checkpoint"],
                     ", ".join(f"model.kwargs.{k}={v}" for k, v in added.items()))
            self.cfg = cfg
        return cfg

    def _run(self, cfg, tr, info, log) -> dict:
        path_last = os.path.join(self.out, runfolder.CHECKPOINT)
        state = None
        if self.resume:
            if info.is_main and runfolder.restore_checkpoint(self.out):
                log.info("%s was missing: restored it from %s (the same file under a second name)",
                         path_last, runfolder.RESUME_LINK)
            dist_.barrier(info)
            if os.path.isfile(path_last):
                state = ckpt.load_run(path_last)
                stored = yaml_load(state["config_yaml"])
                cfg = self._with_init_kwargs(cfg, log, stored)
                changed = check_resume(stored, cfg, path_last)
                log.info("resuming from %s (epoch %d done)", path_last, state["epoch"] + 1)
                if "train.epochs" in changed:
                    log.warning("train.epochs changed from %s to %s: the learning-rate schedule stays the "
                                "checkpoint's (it ends at train.min_lr after epoch %s)",
                                *changed["train.epochs"], changed["train.epochs"][0])
            else:
                log.info("--resume: no checkpoint at %s, starting from scratch", path_last)
        init = None  # a fresh run's init checkpoint, read once: for its kwargs, then for its weights
        if state is None:
            path = cfg["model"].get("init_checkpoint")
            init = ckpt.load(path) if path and os.path.isfile(path) else None
            cfg = self._with_init_kwargs(cfg, log, init=init)
        if info.is_main:
            os.makedirs(self.out, exist_ok=True)
            with open(os.path.join(self.out, "config.yaml"), "w") as f:
                f.write(dump(cfg))
        log.info("run %s: task %s, model %s, %d process(es) on %s", cfg["name"], cfg["task"],
                 cfg["model"]["name"], info.world_size, info.device)

        # data (toy sets are generated by rank 0 while the others wait)
        train_ds, val_ds, data_info = build_datasets(
            cfg, barrier=(lambda: dist_.barrier(info)) if info.enabled else None, is_main=info.is_main,
            progress=info.is_main)
        log.info("data %s: %d train / %d val samples (%s)", data_info["dataset"], len(train_ds), len(val_ds),
                 data_info["root"])
        bs = tr["batch_size"]
        if len(train_ds) < bs * info.world_size:
            raise ValueError(f"train set of {len(train_ds)} samples is smaller than one global batch "
                             f"({bs} x {info.world_size}); lower train.batch_size")
        sampler = train_sampler(cfg, train_ds, info)
        nw = cfg["data"]["num_workers"]
        train_loader = make_loader(train_ds, bs, sampler, nw, True, info.device)
        val_loader = make_loader(val_ds, cfg["eval"]["batch_size"], ShardSampler(len(val_ds), info.rank,
                                                                                  info.world_size),
                                 nw, False, info.device)
        steps = len(train_loader)
        if tr["max_steps_per_epoch"]:
            steps = min(steps, tr["max_steps_per_epoch"])

        # model, same initial weights on every rank
        ckpt.seed_everything(tr["seed"])
        # a checkpoint that fills the model follows (resumed or init): no pretrained-trunk file is read
        model = build_model(cfg, weights_follow=state is not None or bool(cfg["model"].get("init_checkpoint")))
        cx = complexity(copy.deepcopy(model).cpu(), input_shape(cfg)) if info.is_main else {}
        if cfg["model"].get("init_checkpoint") and state is None:
            from .initialise import init_from_checkpoint  # the backbone must be filled, or an error
            report = init_from_checkpoint(model, cfg["model"]["init_checkpoint"], init)
            del init  # the model holds its weights now
            log.info("initialised from %s: %s", cfg["model"]["init_checkpoint"], report.summary())
        model.to(info.device)

        # optimizer, schedule, EMA, scaler (timm's factories)
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3
        lr = tr["lr"] * (bs * info.world_size / tr["lr_base_batch"] if tr["lr_base_batch"] else 1.0)
        opt_kw = {"eps": tr["opt_eps"]} if "adam" in tr["opt"] or "lamb" in tr["opt"] else {}
        if "sgd" in tr["opt"] or "momentum" in tr["opt"]:
            opt_kw = {"momentum": tr["momentum"]}
        optimizer = create_optimizer_v2(model, opt=tr["opt"], lr=lr, weight_decay=tr["weight_decay"], **opt_kw)
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=tr["sched"], num_epochs=tr["epochs"], min_lr=tr["min_lr"],
            warmup_lr=tr["warmup_lr"], warmup_epochs=int(tr["warmup_epochs"]), step_on_epochs=False,
            updates_per_epoch=steps)
        ema = ModelEmaV3(model, decay=tr["ema_decay"]) if tr["ema"] else None
        dtype = amp_dtype(cfg, info.device)
        scaler = torch.amp.GradScaler(info.device.type, enabled=dtype == torch.float16)
        mixup = make_mixup(cfg)
        criterion = make_criterion(cfg, mixup is not None)

        hist = {"loss_curve": [], "val_curve": [], "epoch_images_per_s": [], "wall_s": 0.0,
                "skipped": {}, "last_eval": None}
        start_epoch = 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            hist = state["history"]
            start_epoch = state["epoch"] + 1

        ddp_model = model
        if info.enabled:
            ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[info.device.index] if info.device.type == "cuda" else None)

        skips = SkipLog(log)
        for p, r in hist["skipped"].items():
            skips.paths[p] = r
        global_step = start_epoch * steps
        kill_at = int(os.environ.get("DART_DEBUG_KILL_AT_STEP", "-1"))  # test hook: die like a kill -9
        nan_at = int(os.environ.get("DART_DEBUG_NAN_AT_STEP", "-1"))  # test hook: a non-finite loss
        last_eval = hist.get("last_eval")
        t_session = time.perf_counter()

        for epoch in range(start_epoch, tr["epochs"]):
            es = epoch_seed(tr["seed"], epoch, info.rank)
            ckpt.seed_everything(es)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            ddp_model.train()
            t0 = time.perf_counter()
            loss_sum, n_seen, n_steps = 0.0, 0, 0
            for i, (x, y, skipped) in enumerate(train_loader):
                if i >= steps:
                    break
                skips.add(skipped)
                if global_step == kill_at:
                    log.warning("DART_DEBUG_KILL_AT_STEP=%d: killing the process now", kill_at)
                    for h in log.handlers:
                        h.flush()
                    os._exit(137)
                x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
                if mixup is not None:
                    x, y = mixup(x, y)
                try:
                    with autocast(info.device, dtype):
                        out = ddp_model(x)
                        loss = criterion(out.float(), y)
                except FloatingPointError as e:  # a model's own finiteness check (e.g. DART's scores)
                    loss = torch.tensor(float("nan"), device=info.device)
                    log.error("non-finite values in the forward pass: %s", e)
                if global_step == nan_at:
                    loss = loss * float("nan")
                lval = loss.detach().double()
                if info.enabled:
                    lval = dist_.all_reduce_sum(lval.clone(), info) / info.world_size
                lval = float(lval.item())
                if not math.isfinite(lval):
                    raise NonFiniteLoss(
                        f"non-finite loss ({lval}) at epoch {epoch + 1}, step {i + 1} (global step "
                        f"{global_step}); stopping. The last good checkpoint is kept: "
                        f"{path_last if os.path.isfile(path_last) else 'none yet (failed in the first epoch)'}."
                        f" Lower train.lr, set train.clip_grad, or train.amp=off to investigate.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if tr["clip_grad"]:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), tr["clip_grad"])
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                scheduler.step_update(num_updates=global_step)
                if ema is not None:
                    ema.update(model, step=global_step)
                loss_sum += lval
                n_steps += 1
                n_seen += x.shape[0]
                if info.is_main and (i + 1) % tr["log_interval"] == 0:
                    log.info("epoch %d step %d/%d loss %.4f lr %.3g", epoch + 1, i + 1, steps, lval,
                             optimizer.param_groups[0]["lr"])
            scheduler.step(epoch + 1)
            dt = time.perf_counter() - t0
            ips = n_seen * info.world_size / max(dt, 1e-9)
            epoch_loss = loss_sum / max(n_steps, 1)

            # evaluate
            ev = cfg["eval"]
            if (epoch + 1) % ev["every"] == 0 or epoch + 1 == tr["epochs"]:
                eval_model = ema.module if (ema is not None and ev["use_ema"]) else model
                try:
                    last_eval = evaluate(eval_model, val_loader, cfg, info, skips, ev["max_batches"])
                except FloatingPointError as e:
                    raise NonFiniteLoss(
                        f"non-finite values in the validation pass after epoch {epoch + 1}: {e}; stopping. The last "
                        f"good checkpoint is kept: "
                        f"{path_last if os.path.isfile(path_last) else 'none yet (failed in the first epoch)'}") from e
                key = "miou" if cfg["task"] == "segmentation" else "top1"
                hist["val_curve"].append({"epoch": epoch + 1, key: last_eval[key]})
                log.info("epoch %d: train loss %.4f, %.1f img/s; val %s %.2f (loss %.4f)", epoch + 1,
                         epoch_loss, ips, key, last_eval[key], last_eval["val_loss"])
            else:
                log.info("epoch %d: train loss %.4f, %.1f img/s", epoch + 1, epoch_loss, ips)
            hist["loss_curve"].append(epoch_loss)
            hist["epoch_images_per_s"].append(ips)
            hist["wall_s"] += dt
            hist["last_eval"] = last_eval
            all_skips = dist_.all_gather_object(skips.paths, info)
            hist["skipped"] = {p: r for d in all_skips for p, r in d.items()}
            if info.is_main:
                runfolder.register(self.out, runfolder.CHECKPOINT, runfolder.RESUME_LINK)
                ckpt.save_atomic({
                    "format": ckpt.FORMAT, "epoch": epoch, "global_step": global_step,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "history": hist, "config_yaml": dump(cfg),
                }, path_last)
                runfolder.link_resume(self.out)
            dist_.barrier(info)

        # final record
        checksums = dist_.all_gather_object(param_checksum(model), info)
        skipped_all = hist["skipped"]
        if last_eval is None:
            raise RuntimeError("no evaluation ran (epochs already complete and no history?)")
        metrics = {
            **metric_record(cfg, model, data_info, info),
            **{k: v for k, v in last_eval.items()},
            "loss_curve": hist["loss_curve"], "val_curve": hist["val_curve"],
            "images_per_s": float(np.mean(hist["epoch_images_per_s"])) if hist["epoch_images_per_s"] else None,
            "wall_s": hist["wall_s"], "session_wall_s": time.perf_counter() - t_session,
            "params_m": cx.get("params_m"), "gmacs": cx.get("gmacs"),
            "skipped_files": len(skipped_all), "skipped_paths": sorted(skipped_all)[:100],
            "global_batch": bs * info.world_size, "lr": lr, "steps_per_epoch": steps,
            "rank_param_checksums": checksums, "ranks_agree": len(set(checksums)) == 1,
            "output_dir": self.out, "complete": True,
        }
        if cfg["task"] != "segmentation":
            metrics.setdefault("top5", None)
        if info.is_main:
            runfolder.register(self.out, "metrics.json")
            ckpt.write_json_atomic(metrics, os.path.join(self.out, "metrics.json"))
            main_key = "miou" if cfg["task"] == "segmentation" else "top1"
            log.info("done: %s %.2f, %.1f img/s, %.1f s training; metrics in %s", main_key, metrics[main_key],
                     metrics["images_per_s"] or 0, metrics["wall_s"], os.path.join(self.out, "metrics.json"))
        return metrics
