"""Atomic checkpoints and JSON files with normal permissions, `weights_only` loading with errors
that name the file, and seeding."""
from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import tempfile
import zipfile
from typing import Any

import numpy as np
import torch

FORMAT = "dart-run-v1"
RUN_KEYS = ("model", "optimizer", "scheduler", "epoch", "history", "config_yaml")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the path."""


def umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_mode(path: str) -> None:
    """Give a file made by mkstemp (mode 0600) the mode a plain open() would: 0666 less the umask."""
    os.chmod(path, 0o666 & ~umask())


def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        normal_mode(tmp)
        os.replace(tmp, path)  # atomic on POSIX: readers see the old or the new file, never half
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_atomic(obj: Any, path: str) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def write_json_atomic(obj: Any, path: str) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()))


# Plain-data classes a checkpoint may hold besides tensors and containers: the official checkpoints
# (DeiT's main.py) store their training arguments as an argparse.Namespace under 'args'.
SAFE_GLOBALS = [argparse.Namespace]


def load(path: str):
    """torch.load with weights_only=True (no arbitrary code from a checkpoint file; `SAFE_GLOBALS`
    allowed); a file that is missing, empty, truncated, not a torch file or holding other pickled
    objects is a CheckpointError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain containers, "
                              f"which weights_only loading refuses to run ({first})") from e
    except (EOFError, RuntimeError, zipfile.BadZipFile, KeyError, ValueError, OSError, UnicodeDecodeError) as e:
        size = os.path.getsize(path)
        raise CheckpointError(f"checkpoint {path} ({size} bytes) cannot be read: it is empty, truncated or not a "
                              f"torch checkpoint ({type(e).__name__}: {str(e).strip()[:200]})") from e


def is_run(obj) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_run(obj, path: str) -> dict:
    """`obj` if it is a complete run checkpoint of ours (checkpoint_last.pt), else a CheckpointError."""
    if not is_run(obj):
        raise CheckpointError(f"{path} is not a run checkpoint of dart.train (no format {FORMAT!r})")
    missing = [k for k in RUN_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"run checkpoint {path} lacks {', '.join(missing)}")
    return obj


def load_run(path: str) -> dict:
    return check_run(load(path), path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
