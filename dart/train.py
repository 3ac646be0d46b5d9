"""Train one model on one dataset from a config file, into one run folder.

    python -m dart.train --config toy_cls_dart [--output-dir DIR] [--resume | --overwrite] [key.sub=value ...]
    torchrun --nproc-per-node 2 -m dart.train --config FILE ...     # DDP (NCCL on GPUs, gloo on CPUs)

The run folder gets checkpoint_last.pt (atomic, every epoch), metrics.json (at the end),
train.log, config.yaml (the merged config) and dart_files.json (the list of these files). Exit
status: 0 done, 2 bad config, checkpoint, data or output folder (one line naming the file or key),
3 non-finite loss (the last good checkpoint is kept). A new run starts only in an absent or empty
folder: `--resume` continues the run there, `--overwrite` replaces it (removing only the files that
run listed); `--resume` refuses a config that changes the model or the data (`dart.engine.compat`).
"""
from __future__ import annotations

import sys


def parse_args(argv=None):
    from .engine.cli import ArgumentParser
    ap = ArgumentParser(prog="python -m dart.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None,
                    help="YAML file, or the name of a packaged config (dart/configs/*.yaml); "
                         "default: the embedded toy classification run")
    ap.add_argument("--output-dir", default=None, help="run folder (overrides output_dir)")
    ap.add_argument("--resume", action="store_true",
                    help="continue from <output_dir>/checkpoint_last.pt when it exists")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace the run in the output folder (only the files it listed in dart_files.json "
                         "are removed); without it a new run refuses a folder that is not empty")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (YAML values)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from .engine.cli import user_error
    from .engine.config import ConfigError, load_config
    prog = "dart.train"
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        return user_error(prog, e)
    from .data import DataError
    from .engine.loop import NonFiniteLoss, Trainer
    try:
        Trainer(cfg, resume=args.resume, overwrite=args.overwrite).run()
    except NonFiniteLoss as e:
        print(f"dart.train: {e}", file=sys.stderr)
        return 3
    except (FileNotFoundError, PermissionError, DataError, ValueError) as e:
        return user_error(prog, e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
