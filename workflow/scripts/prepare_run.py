"""Start a run folder for `dart.train --resume` under the run's tracked config.

    python workflow/scripts/prepare_run.py RUN_DIR CONFIG

`--resume` continues from RUN_DIR/checkpoint_last.pt. That is right after an interruption, wrong
after a setting changed: the checkpoint was trained under other settings. RUN_DIR/run_config.yaml
is the config the folder's checkpoint belongs to; when it differs from CONFIG (or is missing beside
a checkpoint), the checkpoint and metrics are removed, so the run starts afresh, and CONFIG is
copied in. Standard library only (it runs in every rule environment).
"""
import os
import shutil
import sys
from pathlib import Path

STALE = ("checkpoint_last.pt", "metrics.json")


def prepare(run_dir: str, config: str) -> list[str]:
    """Prepare `run_dir`; return the files removed."""
    run, want = Path(run_dir), Path(config).read_bytes()
    marker = run / "run_config.yaml"
    have = marker.read_bytes() if marker.is_file() else None
    removed = []
    if have != want:
        for name in STALE:
            if (run / name).exists():
                (run / name).unlink()
                removed.append(name)
        run.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(marker.name + ".tmp")
        shutil.copyfile(config, tmp)
        os.replace(tmp, marker)
    return removed


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gone = prepare(sys.argv[1], sys.argv[2])
    if gone:
        print(f"prepare_run: the settings of {sys.argv[1]} changed; removed {', '.join(gone)} "
              f"(trained under the old settings), training afresh", file=sys.stderr)
