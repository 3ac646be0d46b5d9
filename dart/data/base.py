"""Bad-data handling shared by every dataset: skip and log, or fail fast (data.strict)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

_log = logging.getLogger("dart.data")

# what a corrupt or unreadable file raises while it is opened and decoded
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, EOFError, SyntaxError,
                                                IndexError, KeyError, Image.DecompressionBombError)
try:  # PyAV's errors derive from OSError/ValueError in recent versions; add its base when present
    import av  # noqa: F401
    READ_ERRORS = READ_ERRORS + (av.error.FFmpegError,)
except Exception:  # pragma: no cover - av is optional
    pass


class DataError(RuntimeError):
    """A file that cannot be read while data.strict is true (the message names the path)."""


@dataclass
class Skipped:
    path: str
    reason: str


class SafeDataset(Dataset):
    """Base class: subclasses implement `load(i)` -> sample tuple and `path(i)`.

    A sample that fails to load is reported as `Skipped` (eval: dropped from the batch) or replaced
    by the next readable sample (train, `substitute=True`: batches keep their size, so DDP ranks
    stay in step); either way the path goes back to the main process through the collate function,
    which logs and counts it. With strict=True the first failure raises `DataError`.
    """

    strict: bool = False
    substitute: bool = False
    max_substitutes: int = 16

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int):
        raise NotImplementedError

    def path(self, i: int) -> str:
        return f"#{i}"

    def _try(self, i: int):
        try:
            return self.load(i)
        except READ_ERRORS as e:
            if self.strict:
                raise DataError(f"cannot read {self.path(i)}: {type(e).__name__}: {e} "
                                f"(data.strict is true; set it false to skip bad files)") from e
            return Skipped(self.path(i), f"{type(e).__name__}: {e}")

    def __getitem__(self, i: int):
        out = self._try(i)
        if not isinstance(out, Skipped) or not self.substitute:
            return out if isinstance(out, Skipped) else (*out, [])
        skipped = [out]
        n = len(self)
        for k in range(1, min(n, self.max_substitutes + 1)):
            alt = self._try((i + k) % n)
            if not isinstance(alt, Skipped):
                return (*alt, skipped)
            skipped.append(alt)
        raise DataError(f"{len(skipped)} consecutive unreadable files from {self.path(i)}; "
                        f"is the dataset root right?")


def collate(samples: list):
    """-> (inputs, targets, skipped list of Skipped) ; inputs is None if every sample failed."""
    skipped: list[Skipped] = []
    keep = []
    for s in samples:
        if isinstance(s, Skipped):
            skipped.append(s)
        else:
            skipped.extend(s[-1])
            keep.append(s[:-1])
    if not keep:
        return None, None, skipped
    x, y = default_collate(keep)
    return x, y, skipped


class SkipLog:
    """Unique unreadable files seen by this process, logged once each."""

    def __init__(self, logger: logging.Logger | None = None):
        self.paths: dict[str, str] = {}
        self.log = logger or _log

    def add(self, skipped: list[Skipped]) -> None:
        for s in skipped:
            if s.path not in self.paths:
                self.paths[s.path] = s.reason
                self.log.warning("skipped unreadable file %s (%s)", s.path, s.reason)


def to_float_image(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> normalised float (..., 3, H, W)."""
    x = x.float().div_(255).movedim(-1, -3)
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s
