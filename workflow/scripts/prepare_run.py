"""Start a run folder for `dart.train --resume` under the run's tracked config.

    python workflow/scripts/prepare_run.py RUN_DIR CONFIG [SHA1]

`--resume` continues from RUN_DIR/checkpoint_last.pt. That is right after an interruption, wrong
after a setting changed: the checkpoint was trained under other settings. RUN_DIR/run_config.yaml
is the config the folder's run belongs to; when it differs from CONFIG (or is missing), the previous
run's own files are removed, so the run starts afresh, and CONFIG is copied in. Its own files are
the ones dart.train listed in RUN_DIR/dart_files.json (its checkpoint, metrics, log, config, and
an evaluation written there); nothing else in the folder is touched. A folder of an older version
(no file list, but this script's run_config.yaml) loses only its checkpoint and metrics, as then.
SHA1, when given, is the digest of the CONFIG this job was planned with: a CONFIG rewritten since
(another invocation of the workflow planned other settings) stops the job instead of training under
settings Snakemake did not plan. Standard library only (it runs in every rule environment).
"""
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

MANIFEST = "dart_files.json"  # dart.engine.owned.MANIFEST
LEGACY = ("checkpoint_last.pt", "metrics.json")


def _listed(run: Path) -> list[str] | None:
    """The files dart.train listed in the folder (plain names only), None without a list."""
    path = run / MANIFEST
    if not path.is_file():
        return None
    files = json.loads(path.read_text()).get("files", [])
    return [f for f in files if isinstance(f, str) and f == os.path.basename(f) and f not in ("", ".", "..")]


def prepare(run_dir: str, config: str) -> list[str]:
    """Prepare `run_dir`; return the files removed."""
    run, want = Path(run_dir), Path(config).read_bytes()
    marker = run / "run_config.yaml"
    have = marker.read_bytes() if marker.is_file() else None
    removed = []
    if have != want:
        listed = _listed(run)
        if listed is None:
            listed = list(LEGACY) if have is not None else []
        for name in listed:
            if (run / name).is_file() or (run / name).is_symlink():
                (run / name).unlink()
                removed.append(name)
        if (run / MANIFEST).is_file():
            (run / MANIFEST).unlink()
        run.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(marker.name + ".tmp")
        shutil.copyfile(config, tmp)
        os.replace(tmp, marker)
    return removed


def check_planned(config: str, sha1: str) -> None:
    """Stop (SystemExit naming the file) when `config` no longer holds what was planned."""
    have = hashlib.sha1(Path(config).read_bytes()).hexdigest()
    if have != sha1:
        sys.exit(f"prepare_run: {config} changed after this job was planned (sha1 {sha1[:12]}, now {have[:12]}): "
                 f"another run of the workflow wrote other settings; nothing was trained, run snakemake again")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    if len(sys.argv) == 4:
        check_planned(sys.argv[2], sys.argv[3])
    gone = prepare(sys.argv[1], sys.argv[2])
    if gone:
        print(f"prepare_run: the settings of {sys.argv[1]} changed; removed {', '.join(gone)} "
              f"(the previous run's own files), training afresh", file=sys.stderr)
