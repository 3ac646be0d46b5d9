"""Throughput and memory of timm/DART models across batch sizes.

    python -m bench.throughput --models deit_small_patch16_224 dart_deit_small_patch16_224 \\
        --batch-sizes 1 8 32 128 --out results/bench/deit_s.csv

For every model and batch size: warm-up iterations, then timed iterations until both
`--min-iters` and `--min-time` are reached (with device synchronisation on GPUs; per-batch
latency from CUDA events there, from the wall clock on CPUs). One CSV row per
(model, batch size, mode); the whole CSV is rewritten atomically after every row, so an
interrupted sweep keeps what it measured. The columns (`FIELDS`) are listed below.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime as _dt
import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dart.engine.checkpoint import normal_mode
from dart.engine.cli import (check_writable, kwargs_arg, nonnegative_int, parse_kwargs, positive_float,
                             positive_int, user_error)

from . import memory as mem

NAN = float("nan")
MIB = float(1 << 20)

# the CSV's columns, in order; every row has all of them (NaN / empty where not measured)
FIELDS = [
    # what was run
    "model", "arch", "model_kwargs", "batch_size", "mode", "status", "error",
    # speed
    "images_per_s", "images_per_s_round_min", "images_per_s_round_max", "images_per_s_per_round",
    "latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_min", "latency_ms_std",
    "latency_source", "iters", "timed_s", "rounds", "warmup_iters", "interleaved",
    # memory: the framework's peak allocation (CUDA only)
    "torch_peak_alloc_mib", "torch_peak_alloc_delta_mib", "torch_peak_reserved_mib",
    # memory / utilisation / power from NVML (CUDA with a driver only)
    *mem.NVML_COLUMNS,
    # memory of the process (CPU runs; the fallback without NVML)
    *mem.RSS_COLUMNS,
    # the thread that sampled memory beside the timed loop: none | nvml/rss every <interval> s
    "memory_sampling",
    # context
    "device_type", "device", "driver", "nvml", "torch_version", "cuda_version", "timm_version",
    "dtype", "amp", "channels_last", "compile", "torch_threads", "tokens", "img_size", "params_m",
    "gmacs", "timestamp",
]
# the --vs ratios CSV (<out>.ratios.csv): measured images/s ratio and its FLOP bound side by side
RATIO_FIELDS = ["model_a", "model_b", "mode", "batch_size", "images_per_s_a", "images_per_s_b", "ratio",
                "ratio_round_median", "rounds", "gmacs_a", "gmacs_b", "flop_ratio", "ratio_of_bound"]
STATUSES = ("ok", "oom", "error")
KEY = ("model", "batch_size", "mode", "dtype", "channels_last", "compile")


# ------------------------------------------------------------------------------------ model specs

@dataclass(frozen=True)
class ModelSpec:
    label: str  # as given on the command line; the CSV's `model` column
    arch: str  # timm model name
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def kwargs_json(self) -> str:
        return json.dumps(self.kwargs, sort_keys=True)


def parse_model_spec(text: str, common: Optional[dict] = None) -> ModelSpec:
    """'name' or 'name:key=val,key=val' (values as JSON/Python literals, read by
    `dart.engine.cli.parse_kwargs`); `common` kwargs apply first and the spec's own override them.
    Example: 'deit_tiny_patch16_224:img_size=64,depth=2'."""
    arch, _, rest = text.partition(":")
    if not arch.strip():
        raise ValueError(f"model spec {text!r} has no model name")
    try:
        own = parse_kwargs(rest)
    except ValueError as e:
        raise ValueError(f"model spec {text!r}: {e}") from None
    return ModelSpec(text, arch.strip(), {**(common or {}), **own})


def model_problems(specs: Sequence[ModelSpec], need_dart: bool = False) -> list[tuple[ModelSpec, str]]:
    """The user errors among `specs`, found before anything is timed: (spec, what is wrong) for a
    name timm does not know (with the closest registered names), a keyword the model does not take
    or a value its constructor refuses (TypeError / ValueError; built on the meta device, which
    costs no memory, and confirmed on the CPU before it is reported), and with `need_dart` a model
    whose patch_embed is not DART. Any other failure is left to the run, where it becomes a row."""
    import difflib
    import timm
    from dart import DART
    names = None
    out = []
    for s in specs:
        if not timm.is_model(s.arch):
            names = names if names is not None else timm.list_models()
            close = difflib.get_close_matches(s.arch, names, n=3, cutoff=0.75)
            out.append((s, "unknown model name" + (f" (did you mean {', '.join(close)}?)" if close
                                                    else ": not a timm or DART model")))
            continue
        try:
            with torch.device("meta"):
                model = create_model(s)
        except (TypeError, ValueError):
            try:
                model = create_model(s)  # a meta tensor can fail where a real one would not
            except (TypeError, ValueError) as e:
                if need_dart and "num_tokens" in str(e):
                    out.append((s, "not a DART model (it takes no num_tokens)"))
                else:
                    out.append((s, str(e)))
                continue
            except Exception:  # noqa: BLE001 - not a user error: the run records it
                continue
        except Exception:  # noqa: BLE001
            continue
        if need_dart and not isinstance(getattr(model, "patch_embed", None), DART):
            out.append((s, f"not a DART model (its patch_embed is "
                           f"{type(getattr(model, 'patch_embed', None)).__name__})"))
    return out


def create_model(spec: ModelSpec) -> nn.Module:
    """timm.create_model(spec.arch, **spec.kwargs) with the DART models registered."""
    import timm
    import dart  # noqa: F401  (registers the DART models with timm)
    return timm.create_model(spec.arch, pretrained=False, **spec.kwargs)


def input_size_of(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model was built for: its pretrained cfg, else its patch embedding."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    pe = getattr(model, "patch_embed", None)
    pe_size = getattr(pe, "img_size", None)
    if pe_size is not None:  # the tokenizer's img_size is what the model accepts when they differ
        h, w = (pe_size, pe_size) if isinstance(pe_size, int) else tuple(pe_size)
        c = getattr(pe, "in_chans", None) or (size[0] if size else 3)
        return int(c), int(h), int(w)
    if size:
        return tuple(int(v) for v in size)
    return 3, 224, 224


def tokens_of(model: nn.Module) -> float:
    """Patch tokens the backbone sees (without class/register tokens); NaN when unknown."""
    pe = getattr(model, "patch_embed", None)
    n = getattr(pe, "num_tokens", None) or getattr(pe, "num_patches", None)
    return int(n) if n else NAN


# ------------------------------------------------------------------------------------ timing

def gmacs_per_image(model: nn.Module, input_size: tuple) -> float:
    """GMACs of one image by `bench.complexity` (counted on a copy: the counter unfuses attention),
    NaN when the model cannot be counted."""
    from .complexity import count_model
    try:
        return float(count_model(copy.deepcopy(model), tuple(input_size))["gmacs"])
    except Exception:  # noqa: BLE001 - a count must not fail the measurement; NaN says "not counted"
        return NAN


def is_oom(err: BaseException) -> bool:
    """The framework's out-of-memory error (torch.OutOfMemoryError, alias torch.cuda.OutOfMemoryError),
    or the CPU allocator's failure, which torch raises as a plain RuntimeError."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("can't allocate memory" in msg or "out of memory" in msg)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed_loop(step: Callable[[], object], device: torch.device, min_iters: int, min_time: float,
               max_time: float = math.inf) -> tuple[list[float], float]:
    """Run `step` until at least `min_iters` calls and `min_time` seconds (stopping early only at
    `max_time`, after at least one call). Returns (per-call latencies in s, wall time in s).

    On CUDA the per-call latency comes from CUDA events (device time of each batch) and the wall
    time from synchronising before and after the loop; the loop never synchronises inside, so
    launches overlap as in real inference. Elsewhere both come from `time.perf_counter`.
    """
    min_iters = max(1, int(min_iters))
    synchronize(device)
    lat: list[float] = []
    if device.type == "cuda":
        events = []
        t0 = time.perf_counter()
        while True:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            events.append((start, end))
            el = time.perf_counter() - t0
            if (len(events) >= min_iters and el >= min_time) or el >= max_time:
                break
        synchronize(device)
        wall = time.perf_counter() - t0
        lat = [s.elapsed_time(e) / 1000.0 for s, e in events]
        return lat, wall
    t0 = time.perf_counter()
    while True:
        t = time.perf_counter()
        step()
        synchronize(device)
        now = time.perf_counter()
        lat.append(now - t)
        if (len(lat) >= min_iters and now - t0 >= min_time) or now - t0 >= max_time:
            break
    return lat, time.perf_counter() - t0


def _quantile(sorted_vals: Sequence[float], q: float) -> float:
    if not sorted_vals:
        return NAN
    pos = q * (len(sorted_vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def latency_stats(lat_s: Sequence[float]) -> dict:
    """Median, 10th/90th percentiles, minimum and standard deviation, in ms."""
    v = sorted(x * 1000.0 for x in lat_s)
    return {
        "latency_ms_median": statistics.median(v) if v else NAN,
        "latency_ms_p10": _quantile(v, 0.1), "latency_ms_p90": _quantile(v, 0.9),
        "latency_ms_min": v[0] if v else NAN,
        "latency_ms_std": statistics.stdev(v) if len(v) > 1 else NAN,
    }


# ------------------------------------------------------------------------------------ options

@dataclass
class Options:
    batch_sizes: list[int]
    mode: str = "infer"
    device: str = "auto"
    amp: str = "none"  # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    warmup_iters: int = 10
    min_iters: int = 20
    min_time: float = 2.0
    max_time: float = 600.0
    interleave: bool = False
    rounds: int = 3
    threads: Optional[int] = None
    sample_interval: float = 0.02
    seed: int = 0
    use_nvml: bool = True

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------ context

@dataclass
class Context:
    device: torch.device
    device_name: str
    driver: str
    nvml: Optional[mem.NvmlDevice]
    nvml_note: str

    def columns(self, opts: Options) -> dict:
        import timm
        return {
            "device_type": self.device.type, "device": self.device_name, "driver": self.driver,
            "nvml": "yes" if self.nvml is not None else "no",
            "torch_version": torch.__version__,
            "cuda_version": (torch.version.cuda or "") if self.device.type == "cuda" else "",
            "timm_version": timm.__version__,
            "dtype": str(opts.amp_dtype or torch.float32).replace("torch.", ""),
            "amp": opts.amp_dtype is not None, "channels_last": bool(opts.channels_last),
            "compile": bool(opts.compile), "torch_threads": torch.get_num_threads(),
        }

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()


def open_context(device: torch.device, use_nvml: bool = True) -> Context:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        name = torch.cuda.get_device_name(idx)
        nvml, note = mem.open_nvml(idx) if use_nvml else (None, "NVML not used (--no-nvml)")
        driver = nvml.driver if nvml is not None else ""
        return Context(device, name, driver, nvml, note)
    note = "NVML not used: not a CUDA device"
    if use_nvml:  # say what NVML would say on this machine, for the log
        probe, why = mem.open_nvml(0)
        if probe is not None:
            probe.close()
            note = f"NVML not used: the benchmark runs on {device.type} ({why})"
        else:
            note = f"NVML not used: {why}"
    return Context(device, mem.cpu_name() if device.type == "cpu" else device.type, "", None, note)


# ------------------------------------------------------------------------------------ CSV

def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6))
    return str(v)


def write_rows_atomic(path: str, rows: Iterable[dict], fields: Sequence[str] = FIELDS) -> None:
    """Write the whole CSV (columns `fields`) to a temporary file beside `path`, then os.replace it."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=d)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: _fmt(r.get(k)) for k in fields})
        normal_mode(tmp)  # mkstemp's 0600 -> what the umask gives any other output
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_rows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def row_key(row: dict) -> tuple:
    def norm(k, v):
        if k == "batch_size":
            return int(v)
        if k in ("channels_last", "compile"):
            return str(v).lower() in ("true", "1")
        return str(v)
    return tuple(norm(k, row[k]) for k in KEY)


# ------------------------------------------------------------------------------------ one measurement

class Measurement:
    """Accumulates the rounds of one (model, batch size, mode): latencies, wall times, memory."""

    def __init__(self, spec: ModelSpec, batch: int, ctx: Context, opts: Options):
        self.spec, self.batch, self.ctx, self.opts = spec, batch, ctx, opts
        self.lat: list[float] = []
        self.walls: list[tuple[int, float]] = []
        self.status = "ok"
        self.error = ""
        self.warmed = False
        self.torch_peak = None
        self.torch_reserved = None
        self.torch_base = None
        self.nvml = mem.NvmlSampler(ctx.nvml.handle, opts.sample_interval) if ctx.nvml else None
        # the process's memory where NVML is not there (CPU runs, or CUDA without a working NVML)
        self.rss = mem.RssMonitor(opts.sample_interval) if ctx.nvml is None else None

    @property
    def done(self) -> bool:
        return self.status != "ok"

    def fail(self, err: BaseException) -> None:
        self.status = "oom" if is_oom(err) else "error"
        self.error = f"{type(err).__name__}: {err}".replace("\n", " ")[:500]

    def row(self, model_info: dict) -> dict:
        ctx, opts = self.ctx, self.opts
        r = {k: NAN for k in FIELDS}
        r.update(ctx.columns(opts))
        r.update(model_info)
        r.update(model=self.spec.label, arch=self.spec.arch, model_kwargs=self.spec.kwargs_json,
                 batch_size=self.batch, mode=opts.mode, status=self.status, error=self.error,
                 rounds=len(self.walls), warmup_iters=opts.warmup_iters,
                 interleaved=bool(opts.interleave), iters=len(self.lat),
                 latency_source="cuda_events" if ctx.device.type == "cuda" else "perf_counter",
                 timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        r["images_per_s_per_round"] = ""
        r.update(mem.empty_nvml_summary())
        r.update(mem.empty_rss_summary())
        if self.status == "ok" and self.walls:
            n = sum(i for i, _ in self.walls)
            t = sum(w for _, w in self.walls)
            per_round = [self.batch * i / w for i, w in self.walls if w > 0]
            r.update(images_per_s=self.batch * n / t if t > 0 else NAN, timed_s=t,
                     images_per_s_round_min=min(per_round, default=NAN),
                     images_per_s_round_max=max(per_round, default=NAN),
                     images_per_s_per_round=";".join(f"{v:.6g}" for v in per_round))
            r.update(latency_stats(self.lat))
        if self.status == "ok":
            if self.torch_peak is not None:
                r.update(torch_peak_alloc_mib=self.torch_peak / MIB,
                         torch_peak_alloc_delta_mib=(self.torch_peak - self.torch_base) / MIB,
                         torch_peak_reserved_mib=self.torch_reserved / MIB)
            if self.nvml is not None and self.nvml.used:
                r.update(self.nvml.summary())
            if self.rss is not None:
                r.update(self.rss.summary())
            r["memory_sampling"] = self.sampling()
        return r

    def sampling(self) -> str:
        """Which memory thread woke beside the timed loop: NVML's where it runs (the device's memory
        has no high-water mark to read), RSS's only where VmHWM cannot be reset, else none."""
        threads = []
        if self.nvml is not None:
            threads.append(f"nvml every {self.nvml.interval:g} s")
        if self.rss is not None and self.rss.sampling != "none":
            threads.append(self.rss.sampling)
        return "; ".join(threads) or "none"


class Runner:
    """Holds one model on the device and runs measurement blocks on it."""

    def __init__(self, spec: ModelSpec, ctx: Context, opts: Options,
                 factory: Callable[[ModelSpec], nn.Module] = create_model):
        self.spec, self.ctx, self.opts = spec, ctx, opts
        torch.manual_seed(opts.seed)
        model = factory(spec)
        self.input_size = input_size_of(model)
        self.info = {
            "tokens": tokens_of(model),
            "img_size": (str(self.input_size[1]) if self.input_size[1] == self.input_size[2]
                         else f"{self.input_size[1]}x{self.input_size[2]}"),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gmacs": gmacs_per_image(model, self.input_size),
        }
        model = model.to(ctx.device)
        if opts.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train(opts.mode == "train")
        self.model = model
        self.fn = torch.compile(model) if opts.compile else model
        self.optimizer = (torch.optim.SGD(model.parameters(), lr=1e-4)
                          if opts.mode == "train" else None)
        self.scaler = (torch.amp.GradScaler(ctx.device.type)
                       if opts.mode == "train" and opts.amp == "fp16" else None)

    def _autocast(self):
        dt = self.opts.amp_dtype
        if dt is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=dt)

    def _inputs(self, batch: int):
        g = torch.Generator().manual_seed(self.opts.seed)
        x = torch.randn(batch, *self.input_size, generator=g).to(self.ctx.device)
        if self.opts.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = None
        if self.opts.mode == "train":
            nc = int(getattr(self.model, "num_classes", 0) or 1000)
            y = torch.randint(0, nc, (batch,), generator=g).to(self.ctx.device)
        return x, y

    def _step(self, x, y) -> Callable[[], object]:
        fn = self.fn
        if self.opts.mode == "infer":
            def step():
                with torch.inference_mode(), self._autocast():
                    return fn(x)
            return step
        opt, scaler = self.optimizer, self.scaler

        def step():
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                out = fn(x)
                out = out[0] if isinstance(out, (tuple, list)) else out
                loss = (F.cross_entropy(out.float(), y) if out.dim() == 2 and y is not None
                        else out.float().mean())
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
        return step

    def run_block(self, m: Measurement, min_iters: int, min_time: float) -> None:
        """One round of `m`: warm-up on the first round, then a timed loop. Failures end `m`."""
        if m.done:
            return
        dev, cuda = self.ctx.device, self.ctx.device.type == "cuda"
        x = y = None
        if self.optimizer is not None:  # gradients of the last block are not part of this one's base
            self.optimizer.zero_grad(set_to_none=True)
        try:
            if cuda:
                synchronize(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                if m.torch_base is None:
                    m.torch_base = torch.cuda.memory_allocated(dev)
            if m.rss is not None:
                m.rss.start()
            try:
                x, y = self._inputs(m.batch)
                step = self._step(x, y)
                if not m.warmed:
                    for _ in range(self.opts.warmup_iters):
                        step()
                    synchronize(dev)
                    m.warmed = True
                if m.nvml is not None:
                    m.nvml.start()
                try:
                    lat, wall = timed_loop(step, dev, min_iters, min_time, self.opts.max_time)
                finally:
                    if m.nvml is not None:
                        m.nvml.stop()
            finally:
                if m.rss is not None:
                    m.rss.stop()
            m.lat.extend(lat)
            m.walls.append((len(lat), wall))
            if cuda:
                peak = torch.cuda.max_memory_allocated(dev)
                res = torch.cuda.max_memory_reserved(dev)
                m.torch_peak = peak if m.torch_peak is None else max(m.torch_peak, peak)
                m.torch_reserved = res if m.torch_reserved is None else max(m.torch_reserved, res)
        except Exception as e:  # noqa: BLE001 - every failure becomes a row
            m.fail(e)
        x = y = step = None  # noqa: F841
        if m.done:
            self.release_memory()

    def release_memory(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.ctx.device.type == "cuda":
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.model = self.fn = self.optimizer = None
        gc.collect()
        if self.ctx.device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------ the sweep

class _NullBar:
    def update(self, n=1):
        pass

    def close(self):
        pass

    def set_postfix_str(self, s):
        pass

    @staticmethod
    def write(s):
        print(s, file=sys.stderr)


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NullBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)


def run_sweep(specs: Sequence[ModelSpec], opts: Options, out: Optional[str] = None,
              skip_existing: bool = False, factory: Callable[[ModelSpec], nn.Module] = create_model,
              progress: bool = True, log: Callable[[str], None] = None) -> list[dict]:
    """Measure every (model, batch size) in `opts.mode`; returns the rows of the CSV (old + new).

    Batch sizes run in increasing order per model; after an OOM the model's larger batch sizes
    are not run (and get no row); the sweep goes on with the next model. With `opts.interleave`
    the models take turns, round by round, at each batch size.
    """
    threads_before = torch.get_num_threads()
    if opts.threads:
        torch.set_num_threads(int(opts.threads))
    try:
        return _sweep(specs, opts, out, skip_existing, factory, progress, log)
    finally:
        torch.set_num_threads(threads_before)


def _sweep(specs, opts, out, skip_existing, factory, progress, log) -> list[dict]:
    device = resolve_device(opts.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # CUDA events and streams below use the current device
    ctx = open_context(device, opts.use_nvml)
    rounds = max(1, int(opts.rounds)) if opts.interleave else 1
    bar = _progress(len(specs) * len(set(opts.batch_sizes)) * rounds, progress)  # units: timed blocks
    say = log or bar.write
    batches = sorted(set(int(b) for b in opts.batch_sizes))
    rows: list[dict] = read_rows(out) if (out and skip_existing) else []
    c = ctx.columns(opts)
    memsrc = " + ".join(
        (["torch.cuda peak allocation"] if device.type == "cuda" else [])
        + (["NVML device memory in use, utilisation, power"] if ctx.nvml is not None else
           ["process peak RSS (VmHWM reset per run, else sampled) and threads"]))
    say(f"[bench] device: {ctx.device_name} ({device}); torch threads {c['torch_threads']}; "
        f"dtype {c['dtype']}{' (amp)' if c['amp'] else ''}; {ctx.nvml_note}; memory: {memsrc}")

    done_keys = {row_key(r) for r in rows}
    oom_at: dict[str, int] = {}  # model label -> smallest batch that ran out of memory
    for r in rows:
        if r.get("status") == "oom" and r.get("mode") == opts.mode:
            b = int(r["batch_size"])
            oom_at[r["model"]] = min(b, oom_at.get(r["model"], b))

    def key(spec, b):
        return row_key({"model": spec.label, "batch_size": b, "mode": opts.mode, "dtype": c["dtype"],
                        "channels_last": c["channels_last"], "compile": c["compile"]})

    def todo(spec, b) -> bool:
        if key(spec, b) in done_keys:
            return False
        return not (spec.label in oom_at and b > oom_at[spec.label])

    def emit(m: Measurement, runner: Optional[Runner]):
        row = m.row(runner.info if runner is not None else {})
        rows.append(row)
        if out:
            write_rows_atomic(out, rows)
        ips = row["images_per_s"]
        say(f"[bench] {m.spec.label} batch {m.batch} {opts.mode}: {m.status}"
            + (f", {ips:.2f} img/s, median {row['latency_ms_median']:.1f} ms/batch" if m.status == "ok"
               else f" ({m.error[:160]})"))
        if m.status == "oom":
            oom_at[m.spec.label] = min(m.batch, oom_at.get(m.spec.label, m.batch))
            say(f"[bench] {m.spec.label}: out of memory at batch {m.batch}; larger batches skipped")

    def open_runner(spec) -> tuple[Optional[Runner], Optional[BaseException]]:
        try:
            return Runner(spec, ctx, opts, factory), None
        except Exception as e:  # noqa: BLE001
            gc.collect()
            return None, e

    def fail_all(spec, err):
        for b in batches:
            if todo(spec, b):
                m = Measurement(spec, b, ctx, opts)
                m.fail(err)
                emit(m, None)
                if m.status == "oom":
                    break

    try:
        if not opts.interleave:
            for spec in specs:
                pending = [b for b in batches if todo(spec, b)]
                bar.update(len(batches) - len(pending))
                if not pending:
                    continue
                runner, err = open_runner(spec)
                if runner is None:
                    fail_all(spec, err)
                    bar.update(len(pending))
                    continue
                for b in pending:
                    bar.set_postfix_str(f"{spec.label} b={b}")
                    if not todo(spec, b):  # an OOM at a smaller batch
                        bar.update(1)
                        continue
                    m = Measurement(spec, b, ctx, opts)
                    runner.run_block(m, opts.min_iters, opts.min_time)
                    emit(m, runner)
                    bar.update(1)
                runner.close()
                del runner
        else:
            runners: dict[str, Runner] = {}
            for spec in specs:
                if not any(todo(spec, b) for b in batches):
                    continue
                runner, err = open_runner(spec)
                if runner is None:
                    fail_all(spec, err)
                else:
                    runners[spec.label] = runner
            it, t = math.ceil(opts.min_iters / rounds), opts.min_time / rounds
            for b in batches:
                ms = [Measurement(s, b, ctx, opts) for s in specs if s.label in runners and todo(s, b)]
                bar.update((len(specs) - len(ms)) * rounds)
                for r in range(rounds):
                    for m in ms:
                        bar.set_postfix_str(f"b={b} round {r + 1}/{rounds} {m.spec.label}")
                        runners[m.spec.label].run_block(m, it, t)
                        bar.update(1)
                for m in ms:
                    emit(m, runners[m.spec.label])
            for runner in runners.values():
                runner.close()
    finally:
        bar.close()
        ctx.close()
    return rows


# ------------------------------------------------------------------------------------ ratios

def _per_round(v) -> list[float]:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return []
    return [float(x) for x in str(v).split(";") if x]


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):  # "" in a CSV read back: not measured
        return NAN


def ratio_table(rows: Sequence[dict], a: str, b: str, mode: str) -> list[tuple]:
    """[(batch, img/s of a, img/s of b, a/b, median of per-round ratios, rounds, FLOP bound)] for
    the batch sizes where both ran ok. The per-round ratios pair round r of a with round r of b (an
    interleaved run); their median resists a round that other load on the machine slowed down.
    It is NaN when the rounds cannot be paired. The FLOP bound is GMACs of b / GMACs of a: the
    ratio if images/s were proportional to 1 / multiply-adds (NaN where a count is missing)."""
    def ips(model):
        d = {}
        for r in rows:
            if r["model"] == model and r["mode"] == mode and r["status"] == "ok":
                d[int(r["batch_size"])] = (float(r["images_per_s"]),
                                           _per_round(r.get("images_per_s_per_round")),
                                           _float(r.get("gmacs")))
        return d
    da, db = ips(a), ips(b)
    out = []
    for k in sorted(set(da) & set(db)):
        (x, rx, ga), (y, ry, gb) = da[k], db[k]
        if y <= 0:
            continue
        paired = [p / q for p, q in zip(rx, ry) if q > 0] if len(rx) == len(ry) > 1 else []
        flop_ratio = gb / ga if ga > 0 and gb > 0 else NAN  # NaN compares False
        out.append((k, x, y, x / y, statistics.median(paired) if paired else NAN, len(paired), flop_ratio))
    return out


def ratio_rows(rows, pairs, mode) -> list[dict]:
    """The --vs ratios as CSV rows (RATIO_FIELDS)."""
    gm = {(r["model"], int(r["batch_size"])): _float(r.get("gmacs")) for r in rows
          if r["mode"] == mode and r["status"] == "ok"}
    out = []
    for a, b in pairs:
        for bs, x, y, q, qm, n, fr in ratio_table(rows, a, b, mode):
            out.append(dict(model_a=a, model_b=b, mode=mode, batch_size=bs, images_per_s_a=x,
                            images_per_s_b=y, ratio=q, ratio_round_median=qm, rounds=n,
                            gmacs_a=gm[(a, bs)], gmacs_b=gm[(b, bs)], flop_ratio=fr,
                            ratio_of_bound=q / fr if fr > 0 else NAN))
    return out


def ratios_path(out: str) -> str:
    root, ext = os.path.splitext(out)
    return f"{root}.ratios{ext or '.csv'}"


def print_ratios(rows, pairs, mode, file=None) -> None:
    file = file or sys.stdout
    for a, b in pairs:
        table = ratio_table(rows, a, b, mode)
        print(f"\n{a} / {b} ({mode}, images/s; FLOP bound = GMACs of {b} / GMACs of {a}):", file=file)
        if not table:
            print("  no batch size where both ran ok", file=file)
        for bs, x, y, q, qm, n, fr in table:
            paired = f"; median of {n} per-round ratios {qm:.3f}" if n else ""
            bound = f"; FLOP bound {fr:.3f} ({q / fr:.0%} of it)" if fr > 0 else "; FLOP bound not counted"
            print(f"  batch {bs:>5}: {x:10.2f} / {y:10.2f} = {q:.3f}{paired}{bound}", file=file)


# ------------------------------------------------------------------------------------ CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 2)[-1] if __doc__ else None,
        epilog="""\
Models: timm names (DART models are registered by `import dart`), optionally with keyword
arguments: NAME:key=val,key=val (values parsed as JSON / Python literals), e.g.
  deit_tiny_patch16_224:img_size=64,depth=2   dart_deit_small_patch16_224:num_tokens=144
--model-kwargs '{"img_size": 64}' (or img_size=64) applies to every model; a spec's own key=val
wins. The CSV's `model` column is the spec as written. Input size: the model's tokenizer / timm cfg
(DART "224" models take 448 px). A model name timm does not know, a keyword a model does not take
or a value its constructor refuses is a user error found before anything is timed (exit 2, one
line naming the model, with the closest names to a misspelt one); a model that fails while it
runs (e.g. out of memory) is a row with its error and the sweep goes on.

Memory: on CUDA, torch's peak allocation (torch_peak_*) and NVML's device-wide memory in use,
utilisation and power (nvml_*, sampled by a thread during the timed loop). Without an NVIDIA
driver NVML cannot start: this is logged once and the nvml_* columns stay empty. On CPU: the
process's peak resident memory (rss_*: VmHWM after a reset at the start of each run where Linux
allows it, with no thread running beside the timed loop; else the peak of RSS sampled by a thread;
rss_peak_delta_mib is the excess over the RSS at the start of the run, i.e. input + activations
(+ gradients when training), after glibc's free heap was returned to the OS so that reused pages
are counted; memory the allocator still caches can make it an underestimate; ru_maxrss_mib is the
lifetime peak). memory_sampling says which thread woke beside the timed loop ("none", "nvml every
0.02 s", "rss every 0.02 s"): a thread costs a few percent of images/s on a small CPU.
`python -m bench.memory` says what this machine offers. Empty cells mean "not measured", never zero.

status: ok | oom (the framework's out-of-memory error; larger batch sizes of that model are then
skipped) | error (message in `error`). Rows are written atomically as they come. Exit status: 0
when a measurement ran ok, 1 when every one ended in error, 2 a user error (nothing timed).

Columns: model arch model_kwargs batch_size mode status error | images_per_s (batch x timed
iterations / timed wall time) images_per_s_round_min/max latency_ms_{median,p10,p90,min,std}
(per batch) latency_source iters timed_s rounds warmup_iters interleaved | torch_peak_alloc_mib
torch_peak_alloc_delta_mib torch_peak_reserved_mib | nvml_used_base_mib nvml_used_peak_mib
nvml_gpu_util_{mean,max}_pct nvml_power_{mean,max}_w nvml_samples | rss_base_mib rss_peak_mib
rss_peak_delta_mib rss_peak_method ru_maxrss_mib process_threads | memory_sampling | device_type
device driver nvml
torch_version cuda_version timm_version dtype amp channels_last compile torch_threads tokens
img_size params_m gmacs (per image, bench.complexity) timestamp. With --interleave all models stay loaded, so absolute peaks
(torch_peak_alloc_mib, rss_peak_mib) include the other models; the *_delta_* columns do not.

Example (the paper's headline, interleaved):
  python -m bench.throughput --models dart_deit_small_patch16_224_392 deit_base_patch16_224 \\
      --batch-sizes 32 --interleave --vs dart_deit_small_patch16_224_392 deit_base_patch16_224 \\
      --out results/bench/headline.csv
""")
    p.add_argument("--models", nargs="+", required=True, metavar="SPEC",
                   help="timm model names, optionally NAME:key=val,... (see below)")
    p.add_argument("--model-kwargs", type=kwargs_arg, default={}, metavar="KWARGS",
                   help="keyword arguments for every model: a JSON object or key=val,key=val")
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 8, 32, 128], metavar="B")
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="infer: forward under inference_mode; train: forward, cross-entropy, "
                        "backward and an SGD step (default: infer)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast to this dtype (default: none, float32)")
    p.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (compile time "
                                                          "falls in the warm-up)")
    p.add_argument("--warmup-iters", type=nonnegative_int, default=10, help="untimed iterations first (default 10)")
    p.add_argument("--min-iters", type=positive_int, default=20, help="timed iterations at least (default 20)")
    p.add_argument("--min-time", type=float, default=2.0, help="timed seconds at least (default 2)")
    p.add_argument("--max-time", type=float, default=600.0,
                   help="stop a timed loop after this many seconds even below --min-iters (default 600)")
    p.add_argument("--interleave", action="store_true",
                   help="at each batch size, let the models take turns (A B A B ...) for --rounds "
                        "rounds, each round timing ceil(min-iters/rounds) iterations and "
                        "min-time/rounds seconds; all models stay loaded")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds with --interleave (default 3)")
    p.add_argument("--vs", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="print images/s of A over B per batch size beside its FLOP bound (GMACs of B / "
                        "GMACs of A), and write them to <out>.ratios.csv (repeatable; model specs as given)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-nvml", action="store_true", help="do not use NVML even on CUDA")
    p.add_argument("--sample-interval", type=positive_float, default=0.02,
                   help="seconds between the samples of the NVML thread, and of the RSS thread where "
                        "VmHWM cannot be reset (default 0.02)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="CSV path (rewritten atomically after every row)")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep the CSV's rows and skip (model, batch, mode, dtype, channels_last, compile) "
                        "already in it; without it the CSV starts afresh")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG beside the CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "bench.throughput"
    try:
        specs = [parse_model_spec(s, args.model_kwargs) for s in args.models]
    except ValueError as e:
        return user_error(prog, f"--models: {e}")
    problems = model_problems(specs)
    if problems:  # before any model is timed; a model that fails at run time (OOM) is a row instead
        return user_error(prog, "--models: " + "; ".join(f"{s.label}: {why}" for s, why in problems))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        return user_error(prog, f"a model is given twice: {labels}")
    for a, b in args.vs:
        for x in (a, b):
            if x not in labels:
                return user_error(prog, f"--vs {x!r} is not one of --models {labels}")
    try:
        check_writable(args.out)  # before minutes of measuring, not after the first row
    except ValueError as e:
        return user_error(prog, e)
    opts = Options(batch_sizes=args.batch_sizes, mode=args.mode, device=args.device, amp=args.amp,
                   channels_last=args.channels_last, compile=args.compile,
                   warmup_iters=args.warmup_iters, min_iters=args.min_iters, min_time=args.min_time,
                   max_time=args.max_time, interleave=args.interleave, rounds=args.rounds,
                   threads=args.threads, sample_interval=args.sample_interval, seed=args.seed,
                   use_nvml=not args.no_nvml)
    rows = run_sweep(specs, opts, out=args.out, skip_existing=args.skip_existing,
                     progress=not args.no_progress)
    if args.vs:
        print_ratios(rows, args.vs, args.mode)
        write_rows_atomic(ratios_path(args.out), ratio_rows(rows, args.vs, args.mode), RATIO_FIELDS)
    if not args.no_plot:
        try:
            from .plots import plot_throughput
            png = plot_throughput(args.out)
            print(f"[bench] plot: {png}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - a plot must not fail the measurement
            print(f"[bench] plot failed: {type(e).__name__}: {e}", file=sys.stderr)
    bad = [r for r in rows if r["status"] == "error"]
    return 1 if bad and len(bad) == len(rows) else 0


if __name__ == "__main__":
    sys.exit(main())
