"""The first GPU hour: every path no CPU run can exercise, checked in a few minutes on one GPU.

    python -m bench.gpu_check [--out results/gpu_check.csv] [--batch-sizes 1 8 32 64 128 256]
                              [--official DIR --imagenet ROOT [--official-images 384]]

Paths (one verdict each, printed and written to one CSV, rows `path, check, value, limit, verdict,
detail`):

- `scan`: mamba-ssm's selective-scan kernel against the PyTorch scan on the CPU, on the same inputs,
  forward and backward (every input's gradient); also the PyTorch scan on the GPU.
- `conv`: causal-conv1d's kernel against the PyTorch causal conv on the CPU, forward and backward.
- `seams`: reference sampling (`sampling="reference"`, with its blend of the columns in the last
  pixel before a band seam) on the GPU against the CPU: patches and image gradients, near-uniform
  and random scores.
- `autocast`: DART DeiT-S under bf16 autocast against fp32 (logits within a relative tolerance).
- `compile`: `torch.compile` of DART DeiT-S against eager (fp32).
- `nvml`, `cuda_events`, `headline`: `bench.throughput` on DART DeiT-S-392 vs DeiT-B (bf16,
  interleaved rounds, batch 1-256): NVML columns filled and plausible, latencies from CUDA events,
  and the throughput ratio per batch size (the paper: "nearly twice"; FLOP bound 1.74x).
- `official` (with `--official DIR` and `--imagenet ROOT`, when both are there): one official DART
  checkpoint from DIR (model-zoo names: darvit-sm.pth first) loaded by its timm tag and evaluated,
  fp32, in one batch of a few hundred validation images spread over ROOT/val (every k-th in sorted
  order) with the official transform; its top-1 must lie within 3 binomial standard deviations (+0.3)
  of the published top-1. A quick check that the weights, key map and convention hold on a GPU;
  the full number is the workflow's `evaluate_published` job.

Verdicts: `pass`, `fail`, `skip` (e.g. mamba-ssm not installed: `pip install .[cuda]`). Without a
CUDA device it says so, writes nothing and exits 0. Exit status 1 when a check fails.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import tempfile
import time

FIELDS = ("path", "check", "value", "limit", "verdict", "detail")
HEADLINE = ("dart_deit_small_patch16_224_392", "deit_base_patch16_224")
SPEEDUP = 1.6  # "nearly twice", as the workflow's tolerance.speedup


def rel_err(a, b) -> float:
    """max |a - b| / max |b| (0 when both are zero)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def row(path, check, value, limit, ok, detail=""):
    verdict = "skip" if ok is None else ("pass" if ok else "fail")
    return {"path": path, "check": check, "value": value, "limit": limit, "verdict": verdict, "detail": detail}


def _compare(path, name, outs, refs, tol, detail):
    rows = []
    for key in refs:
        e = rel_err(outs[key], refs[key])
        rows.append(row(path, f"{name} {key}", f"{e:.2e}", f"<= {tol:g}", e <= tol, detail))
    return rows


def scan_inputs(device, batch=2, dim=64, length=256, state=16, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    t = {"u": torch.randn(batch, dim, length, generator=g), "delta": torch.randn(batch, dim, length, generator=g) * 0.5,
         "A": -torch.rand(dim, state, generator=g) - 0.5, "B": torch.randn(batch, state, length, generator=g),
         "C": torch.randn(batch, state, length, generator=g), "D": torch.randn(dim, generator=g),
         "z": torch.randn(batch, dim, length, generator=g), "delta_bias": torch.randn(dim, generator=g) * 0.1}
    return {k: v.to(device).requires_grad_(True) for k, v in t.items()}


def fwd_bwd(fn, inputs: dict):
    """Output and every input's gradient of sum(out * w) for a fixed w."""
    import torch
    out = fn(**inputs)
    w = torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)
    grads = torch.autograd.grad((out.float() * w).sum(), list(inputs.values()))
    return {"forward": out, **{f"grad {k}": g for k, g in zip(inputs, grads)}}


def check_scan(device, tol=2e-3):
    from dart.ops import has_mamba_ssm, selective_scan
    ref = fwd_bwd(lambda **kw: selective_scan(**kw, delta_softplus=True, backend="torch"), scan_inputs("cpu"))
    rows = _compare("scan", "torch on GPU vs CPU:", fwd_bwd(
        lambda **kw: selective_scan(**kw, delta_softplus=True, backend="torch"), scan_inputs(device)), ref, tol,
        "pure-PyTorch scan, fp32")
    if not has_mamba_ssm():
        return rows + [row("scan", "mamba-ssm kernel", "", "", None, "mamba-ssm not installed (pip install .[cuda])")]
    out = fwd_bwd(lambda **kw: selective_scan(**kw, delta_softplus=True, backend="mamba_ssm"), scan_inputs(device))
    return rows + _compare("scan", "mamba-ssm vs CPU scan:", out, ref, tol, "fp32, B=2 D=64 L=256 N=16")


def check_conv(device, tol=1e-4):
    import torch
    from dart.ops import causal_conv1d, has_causal_conv1d

    def inputs(dev):
        g = torch.Generator().manual_seed(1)
        t = {"x": torch.randn(2, 64, 256, generator=g), "weight": torch.randn(64, 4, generator=g),
             "bias": torch.randn(64, generator=g)}
        return {k: v.to(dev).requires_grad_(True) for k, v in t.items()}
    ref = fwd_bwd(lambda **kw: causal_conv1d(**kw, activation="silu", backend="torch"), inputs("cpu"))
    if not has_causal_conv1d():
        return [row("conv", "causal-conv1d kernel", "", "", None, "causal-conv1d not installed (pip install .[cuda])")]
    out = fwd_bwd(lambda **kw: causal_conv1d(**kw, activation="silu", backend="causal_conv1d"), inputs(device))
    return _compare("conv", "causal-conv1d vs CPU conv:", out, ref, tol, "fp32, B=2 D=64 L=256 K=4, silu")


def seam_inputs(device, seed=2):
    """A 448-px image batch and the partitions of a near-uniform (first patch of each band in the
    previous band's last pixel) and a random score map, N = 196."""
    import torch
    from dart.tokenizer import geometry
    g = torch.Generator().manual_seed(seed)
    scores = torch.cat([1 + 1e-4 * torch.rand(1, 14, 14, generator=g, dtype=torch.float64),
                        0.1 + torch.rand(1, 14, 14, generator=g, dtype=torch.float64)])
    row_b, patch_b, _ = geometry.partition(scores, 196)
    images = torch.rand(2, 3, 448, 448, generator=g).to(device).requires_grad_(True)
    return {"images": images, "bounds": (row_b.to(device), patch_b.to(device))}


def reference_strip(images, bounds):
    from dart.tokenizer import sampling
    grid = sampling.sampling_grid(*bounds, 14, 16, convention="reference", img_size=(448, 448))
    return sampling.sample_patches(images, grid, "reference")


def check_seams(device, tol=1e-4):
    def run(inputs):
        bounds = inputs.pop("bounds")
        return fwd_bwd(lambda images: reference_strip(images, bounds), inputs)
    ref, out = run(seam_inputs("cpu")), run(seam_inputs(device))
    return _compare("seams", "reference sampling on GPU vs CPU:", out, ref, tol,
                    "fp32 patches of 2 images, N=196, seam columns blended")


def _dart_model(device):
    import timm
    import torch

    import dart  # noqa: F401  (registers the models)
    torch.manual_seed(0)
    return timm.create_model("dart_deit_small_patch16_224", num_classes=1000).to(device).eval()


def check_autocast(device, tol=5e-2):
    import torch
    model = _dart_model(device)
    x = torch.randn(8, 3, 448, 448, device=device)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
    e = rel_err(out, ref)
    return [row("autocast", "bf16 logits vs fp32", f"{e:.2e}", f"<= {tol:g}", e <= tol, f"dtype {out.dtype}"),
            row("autocast", "runs in bf16", str(out.dtype), "torch.bfloat16", out.dtype == torch.bfloat16)]


def check_compile(device, tol=1e-3):
    import torch
    model = _dart_model(device)
    x = torch.randn(4, 3, 448, 448, device=device)
    with torch.no_grad():
        ref = model(x)
        t0 = time.perf_counter()
        out = torch.compile(model)(x)
        torch.cuda.synchronize()
        took = time.perf_counter() - t0
    e = rel_err(out, ref)
    return [row("compile", "compiled vs eager logits (fp32)", f"{e:.2e}", f"<= {tol:g}", e <= tol,
                f"first call (compilation) {took:.0f} s")]


def _official_choice(folder: str):
    """The first official checkpoint with a published top-1 found in `folder` (DeiT-S first)."""
    from dart.models import official
    order = sorted((p for p in official.OFFICIAL if p.published_top1 is not None),
                   key=lambda p: (p.file != "darvit-sm.pth", p.file))
    return next((p for p in order if os.path.isfile(os.path.join(folder, p.file))), None)


def check_official(device, folder, root, images=384):
    """Top-1 of one official checkpoint on `images` validation images vs its published top-1."""
    import timm
    import torch

    from dart.data.imagefolder import ImageFolderDataset
    from dart.data.transforms import classification_transforms
    from dart.engine.config import load_config
    p = _official_choice(folder) if folder and os.path.isdir(folder) else None
    val = os.path.join(root, "val") if root else None
    if p is None or not (val and os.path.isdir(val)):
        missing = [] if p else [f"no official checkpoint with a published top-1 in {folder}"]
        missing += [] if val and os.path.isdir(val) else [f"no validation folder {val}"]
        return [row("official", "published checkpoint on validation images", "", "", None, "; ".join(missing))]
    t0 = time.perf_counter()
    model = timm.create_model(p.name, pretrained=True,
                              pretrained_cfg_overlay=dict(file=os.path.join(folder, p.file))).to(device).eval()
    cfg = load_config("imagenet_official_eval", [f"data.root={root}", f"data.img_size={p.input_size}"])
    ds = ImageFolderDataset(val, classification_transforms(cfg, train=False), strict=True)
    step = max(1, len(ds) // images)
    idx = list(range(0, len(ds), step))[:images]
    x = torch.stack([ds.load(i)[0] for i in idx]).to(device)
    y = torch.tensor([ds.samples[i][1] for i in idx], device=device)
    with torch.no_grad():
        top1 = 100.0 * (model(x).argmax(-1) == y).float().mean().item()
    n, pub = len(idx), p.published_top1
    limit = 3 * 100.0 * math.sqrt(pub / 100 * (1 - pub / 100) / n) + 0.3
    return [row("official", f"{p.name} top-1 on {n} validation images (fp32)", f"{top1:.1f}",
                f"{pub} +- {limit:.1f}", abs(top1 - pub) <= limit,
                f"{p.file}: every {step}th image of {len(ds)}, one batch; {time.perf_counter() - t0:.0f} s")]


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def check_sweep(device, batch_sizes, out_dir):
    """bench.throughput on the headline pair: NVML, CUDA events, the ratio per batch size."""
    csv_path = os.path.join(out_dir, "headline.csv")
    cmd = [sys.executable, "-m", "bench.throughput", "--models", *HEADLINE, "--batch-sizes",
           *map(str, batch_sizes), "--interleave", "--rounds", "3", "--amp", "bf16", "--device", device,
           "--vs", *HEADLINE, "--no-progress", "--no-plot", "--out", csv_path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.isfile(csv_path):
        tail = (r.stderr or r.stdout)[-300:].replace("\n", " ")
        return [row(p, "bench.throughput ran", r.returncode, 0, False, tail) for p in ("nvml", "cuda_events", "headline")]
    with open(csv_path) as f:
        rows_ = [x for x in csv.DictReader(f)]
    ok = [x for x in rows_ if x["status"] == "ok"]
    out = []
    used = [_num(x["nvml_used_peak_mib"]) for x in ok]
    util = [_num(x["nvml_gpu_util_max_pct"]) for x in ok]
    power = [_num(x["nvml_power_max_w"]) for x in ok]
    filled = all(not math.isnan(v) for v in used + util + power) and bool(ok)
    plausible = filled and all(v > 0 for v in used) and all(0 <= v <= 100 for v in util) and all(v > 0 for v in power)
    out.append(row("nvml", "NVML columns filled and plausible", f"{len(ok)} rows", "used > 0, 0 <= util <= 100, power > 0",
                   plausible, f"peak used {max(used, default=math.nan):.0f} MiB, max power {max(power, default=math.nan):.0f} W"))
    events = all(x["latency_source"] == "cuda_events" for x in ok) and bool(ok)
    lat_ok = all(_num(x["latency_ms_median"]) > 0 for x in ok)
    out.append(row("cuda_events", "latencies from CUDA events, positive", f"{len(ok)} rows", "all", events and lat_ok))
    by = {(x["model"], int(x["batch_size"])): _num(x["images_per_s"]) for x in ok}
    for bs in batch_sizes:
        a, b = by.get((HEADLINE[0], bs)), by.get((HEADLINE[1], bs))
        if a is None or b is None:
            out.append(row("headline", f"ratio at batch {bs}", "", f">= {SPEEDUP}", None, "not measured (oom or error)"))
            continue
        out.append(row("headline", f"ratio at batch {bs}", f"{a / b:.2f}", f">= {SPEEDUP}", a / b >= SPEEDUP,
                       f"{a:.0f} vs {b:.0f} images/s, bf16; FLOP bound 1.74x"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/gpu_check.csv", help="CSV path (written atomically)")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32, 64, 128, 256])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--official", default=None, metavar="DIR",
                    help="folder of official DART checkpoints (model-zoo names); with --imagenet: the official step")
    ap.add_argument("--imagenet", default=None, metavar="ROOT", help="ImageNet-1K root holding val/<wnid>/*")
    ap.add_argument("--official-images", type=int, default=384, help="validation images of the official step")
    a = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine; these checks need one GPU. Nothing was run.")
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fn in (check_scan, check_conv, check_seams, check_autocast, check_compile):
            try:
                rows += fn(a.device)
            except Exception as e:  # one broken path must not hide the others
                rows.append(row(fn.__name__.removeprefix("check_"), "ran", "", "", False, f"{type(e).__name__}: {e}"))
        rows += check_sweep(a.device, a.batch_sizes, tmp)
    if a.official or a.imagenet:
        try:
            rows += check_official(a.device, a.official, a.imagenet, a.official_images)
        except Exception as e:  # a broken checkpoint or folder must not hide the other checks
            rows.append(row("official", "ran", "", "", False, f"{type(e).__name__}: {e}"))
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp_out = a.out + ".tmp"
    with open(tmp_out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp_out, a.out)
    for path in dict.fromkeys(r["path"] for r in rows):
        verdicts = {r["verdict"] for r in rows if r["path"] == path}
        v = "fail" if "fail" in verdicts else ("pass" if "pass" in verdicts else "skip")
        print(f"{path:12s} {v}")
    print(f"gpu_check: {a.out}")
    return 1 if any(r["verdict"] == "fail" for r in rows if r["path"] != "headline") else 0


if __name__ == "__main__":
    sys.exit(main())
