"""A made-up checkpoint in the layout of a published file, for the smoke scale's published-weights
jobs (the files themselves are not downloaded there).

    python workflow/scripts/synthetic_checkpoint.py --name NAME.TAG --layouts official_state_dicts.txt --out FILE

An official DART checkpoint (`<model>.official_in1k`) is written as DeiT's main.py saves one: `model`
with the official model's keys and shapes (`tests/data/official_state_dicts.txt`) and random values,
`model_ema` (the same tensors, stored once), optimizer, scheduler, `args` (argparse.Namespace). A
grid baseline's timm weights (`deit_small_patch16_224.fb_in1k`) are the model's own initial weights,
as safetensors. Written atomically. Not a result: the numbers it gives mean nothing.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="timm name.tag of the published weights")
    ap.add_argument("--layouts", required=True, help="tests/data/official_state_dicts.txt")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import torch

    from dart.engine.checkpoint import save_atomic
    from dart.engine.official_layout import read_layouts, synthetic_checkpoint
    from dart.models import official
    p = official.BY_NAME[a.name]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    if p in official.OFFICIAL:
        keys = read_layouts(a.layouts)[p.official]
        save_atomic(synthetic_checkpoint(keys, p.official, share_ema=True), a.out)
    else:
        import safetensors.torch
        import timm
        torch.manual_seed(0)
        state = timm.create_model(p.model).state_dict()
        tmp = a.out + ".tmp"
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, a.out)
    print(f"synthetic {a.name} in the layout of {p.file}: {a.out} (smoke: not a result)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
