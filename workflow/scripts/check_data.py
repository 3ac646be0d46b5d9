"""Check that a real dataset is where the config says, with the layout its loader reads.

Writes the marker file on success; fails with a message naming the config key otherwise. Nothing is
downloaded (ImageNet-1K, ADE20K and Kinetics-400 need the user's own copy).
"""

import sys
from pathlib import Path

# what each dataset's folder must hold (relative paths), as dart.data's loaders read them
LAYOUTS = {
    "imagenet": ["train", "val"],
    "ade20k": ["images/training", "images/validation", "annotations/training", "annotations/validation"],
    "kinetics400": ["train.csv", "val.csv"],
}


def check(name: str, root: str, key: str) -> list[str]:
    """Problems found (empty: fine)."""
    if not root:
        return [f"config key {key} is not set"]
    r = Path(root)
    if not r.is_dir():
        return [f"config key {key}={root!r}: no such folder"]
    return [f"config key {key}={root!r}: {sub} is missing" for sub in LAYOUTS.get(name, [])
            if not (r / sub).exists()]


def main(name: str, root: str, key: str, out: str) -> int:
    problems = check(name, root, key)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(f"{name} {root}\n")
    return 0


if "snakemake" in globals():  # run by Snakemake's `script:` directive
    with open(snakemake.log[0], "w") as _log:  # noqa: F821
        sys.stderr = _log
        rc = main(snakemake.params.kind, snakemake.params.root, snakemake.params.key,  # noqa: F821
                  snakemake.output[0])  # noqa: F821
    if rc:
        sys.exit(rc)
