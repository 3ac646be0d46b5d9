"""Parameters and multiply-accumulates (GMACs) of any registered model at its input size.

Convention (the DeiT/timm one, which the DART paper's "GFLOPs" follow): one multiply-add = one MAC.
`torch.utils.flop_counter.FlopCounterMode` reports 2 FLOPs per MAC, so we halve it. Attention is
counted unfused (timm's `fused_attn` off), since FlopCounterMode does not see the fused kernel's
matmuls on CPU. Work that FlopCounterMode cannot see (e.g. a selective scan built from
elementwise ops) is added by modules that define `uncounted_macs(*inputs, output=...)`.

`gmacs` is our full count. `gmacs_paper` is the same model counted the way its published row was:
equal to `gmacs` for ViTs; for Mamba models, whose published rows leave out parts of the mixer
(see docs/mamba.md), the model's `paper_macs_convention`, named in `macs_convention`.

    python -m bench.complexity deit_small_patch16_224 dart_deit_small_patch16_224 --out counts.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile

import torch

from dart.complexity import count_model, input_shape_of  # noqa: F401  (the counting lives in the library)
from dart.engine.checkpoint import normal_mode
from dart.engine.cli import check_writable, parse_kwargs, user_error

FIELDS = ["model", "model_kwargs", "params_m", "trainable_params_m", "gmacs", "gmacs_paper", "macs_convention",
          "input_shape", "num_tokens", "img_size"]


def count(model_name: str, **model_kwargs) -> dict:
    """Build a registered model (random weights, 1000 classes unless given) and count it."""
    import timm
    import dart  # noqa: F401  (registers the DART models)
    model_kwargs.setdefault("num_classes", 1000)
    model = timm.create_model(model_name, pretrained=False, **model_kwargs)
    out = count_model(model, input_shape_of(model))
    return {"model": model_name, "model_kwargs": json.dumps(model_kwargs, sort_keys=True), **out}


def write_csv_atomic(rows: list[dict], path: str, fields: list[str]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    normal_mode(tmp)  # mkstemp's 0600 -> what the umask gives any other output
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.complexity",
        description="Count parameters (M) and multiply-accumulates (GMACs, = the papers' 'GFLOPs') of "
                    "registered timm/DART models at their input size, attention unfused.")
    p.add_argument("models", nargs="+", help="registered model names; NAME:key=val,key=val adds kwargs "
                                             "for that model (e.g. dart_deit_tiny_patch16_224:scorer=mnasnet)")
    p.add_argument("--model-kwargs", default="", help="kwargs for every model: JSON or key=val,key=val")
    p.add_argument("--out", help="CSV to write (atomically); printed to stdout otherwise")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's own, all cores); the workflow gives a job's share")
    args = p.parse_args(argv)
    prog = "bench.complexity"
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    try:
        common = parse_kwargs(args.model_kwargs)
        if args.out:
            check_writable(args.out)
        for spec in args.models:
            name, _, own = spec.partition(":")
            try:
                row = count(name, **{**common, **parse_kwargs(own)})
            except (RuntimeError, TypeError) as e:  # timm: unknown model; a keyword the model lacks
                raise ValueError(f"{spec}: {e}") from e
            rows.append(row)
            print(f"{spec:40s} {row['params_m']:8.2f} M params {row['gmacs']:8.3f} GMACs "
                  f"input {row['input_shape']} tokens {row['num_tokens']}", file=sys.stderr)
    except ValueError as e:
        return user_error(prog, e)
    if args.out:
        write_csv_atomic(rows, args.out, FIELDS)
    else:
        w = csv.DictWriter(sys.stdout, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
