"""The run folder of `dart.train`: which files a run writes there, and when a new run may start in it.

A run lists every file it writes in the folder's manifest (`dart.engine.owned`, `dart_files.json`)
before writing it; `dart.evaluate` adds its eval.json / eval.log when it writes them into a run
folder. A new run (no `--resume`) starts only in an absent or empty folder. `--overwrite` replaces
the run found there: the files its manifest lists are removed first (checkpoint, metrics, log,
config, evaluation), files the run did not write stay untouched, and a run file that the manifest
does not list (a run of an older version, or not a run at all) is refused: nothing is removed.
"""
from __future__ import annotations

import logging
import os

from . import owned

TOOL = "dart.train"
CHECKPOINT = "checkpoint_last.pt"
# the same file as checkpoint_last.pt under a second name (a hard link: no extra space), so that
# --resume finds the last epoch when checkpoint_last.pt was removed (a workflow manager removes a
# job's declared outputs before it reruns the job and after the job fails)
RESUME_LINK = "checkpoint_resume.pt"
# what a run (and the evaluation of its checkpoint) writes into its folder
RUN_FILES = ("config.yaml", "train.log", CHECKPOINT, RESUME_LINK, "metrics.json", "eval.json", "eval.log")

_log = logging.getLogger("dart")


class RunFolderError(ValueError):
    """The output folder holds another run (or files that are not a run's); nothing was removed."""


def start_new_run(out: str, overwrite: bool, remove: bool = True) -> list[str]:
    """Make `out` ready for a run that does not resume; returns the files removed.

    Absent or empty: nothing to do. Otherwise refused without `overwrite`; with it, the files the
    folder's manifest lists are removed (only when `remove`: DDP ranks other than 0 only check)."""
    if not os.path.isdir(out) or not os.listdir(out):
        if os.path.exists(out) and not os.path.isdir(out):
            raise RunFolderError(f"output folder {out} is a file; choose another --output-dir")
        return []
    entries = sorted(os.listdir(out))
    if not overwrite:
        raise RunFolderError(
            f"output folder {out} is not empty ({owned.cut(entries, 6)}): it holds another run, and a new run starts "
            f"only in an empty folder; pass --resume to continue that run, --overwrite to replace it (only "
            f"the files that run listed in {owned.MANIFEST} are removed), or choose another --output-dir")
    try:
        manifest = owned.read(out)
        if manifest is not None and manifest.get("tool") != TOOL:  # e.g. a toy data set's folder
            raise owned.NotOwnedError(f"{out} holds files that {manifest.get('tool')} wrote, not a run of {TOOL}; "
                                      f"nothing was removed: choose another --output-dir")
    except owned.NotOwnedError as e:
        raise RunFolderError(f"--overwrite: {e}") from None
    listed = set(manifest["files"]) if manifest else set()
    unproven = [n for n in RUN_FILES if os.path.lexists(os.path.join(out, n)) and n not in listed]
    if unproven:
        raise RunFolderError(
            f"--overwrite: {out} holds {owned.cut(unproven, 6)}, which {owned.MANIFEST} does not list (a run of an older "
            f"version, or files that are not a run's), so they are not known to be written by dart.train; "
            f"nothing was removed: move them away or choose another --output-dir")
    if not remove or manifest is None:
        return []
    return owned.remove_listed(out, manifest)


def register(out: str, *names: str) -> None:
    """Record files of the run in the folder's manifest; call before writing them."""
    owned.add(out, TOOL, names)


def register_if_run_folder(folder: str, *names: str) -> bool:
    """Add `names` to `folder`'s manifest when the folder is a run's (it has a manifest); for
    dart.evaluate, whose eval.json and eval.log a later --overwrite must remove with the run."""
    try:
        manifest = owned.read(folder)
    except owned.NotOwnedError:
        return False
    if manifest is None or manifest.get("tool") != TOOL:  # not a run folder (a data set's, say)
        return False
    owned.add(folder, TOOL, names)
    return True


def link_resume(out: str) -> None:
    """Give checkpoint_last.pt its second name (atomically); where the file system has no hard links
    the second name is skipped, and --resume then needs checkpoint_last.pt itself."""
    last, link = os.path.join(out, CHECKPOINT), os.path.join(out, RESUME_LINK)
    tmp = link + ".tmp"
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(last, tmp)
        os.replace(tmp, link)
    except OSError as e:
        for stale in (tmp, link):  # an older epoch under the second name would resume the wrong state
            if os.path.lexists(stale):
                os.unlink(stale)
        _log.warning("cannot link %s to %s (%s): --resume will need %s itself", RESUME_LINK, CHECKPOINT,
                     e.strerror or e, CHECKPOINT)


def restore_checkpoint(out: str) -> bool:
    """When checkpoint_last.pt is missing but its second name is there, give it its name back."""
    last, link = os.path.join(out, CHECKPOINT), os.path.join(out, RESUME_LINK)
    if os.path.isfile(last) or not os.path.isfile(link):
        return False
    os.link(link, last)
    return True
