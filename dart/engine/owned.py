"""What a tool may remove from a folder: only what it wrote there, as listed in the folder's manifest.

`dart.train`, `dart.data.toy` and `dart.data.fake` write into folders the user names
(`--output-dir`, `--out`, `data.root`). Each keeps a manifest, `dart_files.json`, in the folder it
writes: the relative paths of the files (and folders) it wrote there, recorded before they are
written. Replacing a folder's content removes exactly those files, then the listed folders left
empty, then the manifest. A folder that holds anything else, or no manifest at all, is refused before anything
is removed, with a message naming the folder and what is not the tool's: nothing is ever removed
on a guess (a name, a marker file someone else could have written, the folder's location).
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional

MANIFEST = "dart_files.json"
FORMAT = "dart-files-v1"


class NotOwnedError(ValueError):
    """A folder holds files the tool cannot prove it wrote; nothing was removed."""


def _clean(rel: str) -> str:
    """A manifest entry: a relative path inside the folder, '/'-separated, no '..' and not absolute."""
    rel = rel.replace(os.sep, "/").strip("/")
    parts = rel.split("/")
    if not rel or os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts) or rel == MANIFEST:
        raise ValueError(f"not a path inside the folder: {rel!r}")
    return rel


def read(folder: str) -> Optional[dict]:
    """The folder's manifest ({"format", "tool", "files", "dirs"}), None when there is none; a
    manifest that cannot be read proves nothing and is a NotOwnedError."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            m = json.load(f)
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT!r}")
        m["files"] = [_clean(p) for p in m.get("files", [])]
        m["dirs"] = [_clean(p) for p in m.get("dirs", [])]
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise NotOwnedError(f"{path} cannot be read as a file list of dart ({e}); nothing in {folder} was "
                            f"removed") from e
    return m


def _write(folder: str, manifest: dict) -> None:
    from .checkpoint import write_json_atomic
    write_json_atomic(manifest, os.path.join(folder, MANIFEST))


def _check_tool(folder: str, m: dict, tool: str, advice: str = "") -> None:
    if m.get("tool") != tool:  # another tool's folder: its files are not this tool's to replace
        raise NotOwnedError(f"{folder} holds files that {m.get('tool')} wrote ({MANIFEST}), not {tool}; nothing "
                            f"was removed" + (f": {advice}" if advice else ""))


def add(folder: str, tool: str, files: Iterable[str] = (), dirs: Iterable[str] = ()) -> None:
    """Record `files` / `dirs` (relative to `folder`) as written by `tool`; call before writing them.
    A folder whose manifest is another tool's is a NotOwnedError."""
    os.makedirs(folder, exist_ok=True)
    m = read(folder) or {"format": FORMAT, "tool": tool, "files": [], "dirs": []}
    _check_tool(folder, m, tool)
    new_files = sorted(set(m["files"]) | {_clean(p) for p in files})
    new_dirs = sorted(set(m["dirs"]) | {_clean(p) for p in dirs})
    if new_files != m["files"] or new_dirs != m["dirs"] or not os.path.isfile(os.path.join(folder, MANIFEST)):
        _write(folder, {"format": FORMAT, "tool": m.get("tool", tool), "files": new_files, "dirs": new_dirs})


def entries(folder: str) -> list[tuple[str, bool]]:
    """Every entry below `folder` as (relative '/'-separated path, is a folder). Links are not
    followed, and a link to a folder counts as a file: a tool writes no links, so a listed path
    cannot lead out of the folder through one."""
    out = []
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        out += [(base + d, not os.path.islink(os.path.join(root, d))) for d in dirs]
        out += [(base + f, False) for f in files]
    return out


def _ancestors(paths: Iterable[str]) -> set[str]:
    out = set()
    for p in paths:
        parts = p.split("/")[:-1]
        out |= {"/".join(parts[:i + 1]) for i in range(len(parts))}
    return out


def unlisted(folder: str, manifest: dict) -> list[str]:
    """Entries of `folder` the manifest does not account for (the manifest itself excepted)."""
    files, dirs = set(manifest["files"]), set(manifest["dirs"]) | _ancestors(manifest["files"])
    dirs |= _ancestors(dirs)
    return sorted(p + ("/" if is_dir else "") for p, is_dir in entries(folder)
                  if p != MANIFEST and not (p in dirs if is_dir else p in files) and not _below_link(folder, p))


def _below_link(folder: str, rel: str) -> bool:
    """Whether a folder on the way from `folder` to `rel` is a link (what lies there is elsewhere)."""
    parts = rel.split("/")[:-1]
    return any(os.path.islink(os.path.join(folder, *parts[:i + 1])) for i in range(len(parts)))


def remove_listed(folder: str, manifest: dict) -> list[str]:
    """Remove the listed files that exist, the listed folders left empty (deepest first), then the
    manifest; returns what was removed. Nothing is removed through a link to elsewhere."""
    removed = []
    for rel in manifest["files"]:
        path = os.path.join(folder, rel)
        if _below_link(folder, rel):
            continue
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)
            removed.append(rel)
    for rel in sorted(set(manifest["dirs"]) | _ancestors(manifest["files"]), key=lambda p: -p.count("/")):
        path = os.path.join(folder, rel)
        if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
            os.rmdir(path)
            removed.append(rel + "/")
    manifest_path = os.path.join(folder, MANIFEST)
    if os.path.isfile(manifest_path):
        os.unlink(manifest_path)
        removed.append(MANIFEST)
    return removed


def cut(items, limit: int = 8) -> str:
    """The first `limit` items, comma-separated, and how many more."""
    items = list(items)
    return ", ".join(items[:limit]) + (f" ... (+{len(items) - limit} more)" if len(items) > limit else "")


def check_replaceable(folder: str, tool: str, advice: str, legacy: Iterable[str] = ()) -> Optional[dict]:
    """Raise NotOwnedError unless `folder` is absent, empty, or holds only what `tool`'s manifest
    lists; returns the manifest (None for an absent or empty folder). Removes nothing. `legacy`: the
    file names the tool wrote before it kept manifests; a folder without one that holds only such
    files (no folders) is taken as the tool's."""
    if not os.path.lexists(folder):
        return None
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise NotOwnedError(f"{folder} is not a folder; {advice}")
    if not os.listdir(folder):
        return None
    m = read(folder)
    if m is None:
        shown = sorted(os.listdir(folder))
        found = entries(folder)
        if legacy and all(not is_dir and p in set(legacy) for p, is_dir in found):
            return {"format": FORMAT, "tool": tool, "files": sorted(p for p, _ in found), "dirs": []}
        raise NotOwnedError(f"{folder} is not empty ({cut(shown)}) and has no {MANIFEST}, so nothing in it is "
                            f"known to be written by {tool}; nothing was removed: {advice}")
    _check_tool(folder, m, tool, advice)
    extra = unlisted(folder, m)
    if extra:
        raise NotOwnedError(f"{folder} holds {len(extra)} entries that {tool} did not write ({cut(extra)}; its "
                            f"files are listed in {MANIFEST}); nothing was removed: {advice}")
    return m


def clear(folder: str, tool: str, advice: str, legacy: Iterable[str] = ()) -> list[str]:
    """Empty `folder` of what `tool` wrote there (the folder itself stays); refuses, removing nothing,
    when it holds anything else (`check_replaceable`). Returns what was removed."""
    m = check_replaceable(folder, tool, advice, legacy)
    return remove_listed(folder, m) if m is not None else []


def install(tmp: str, out: str, tool: str, advice: str, legacy: Iterable[str] = ()) -> None:
    """Put the folder `tmp` (made by `tool` beside `out`, its manifest written) in `out`'s place:
    the permissions of a plain mkdir (not mkdtemp's 0700), then only the files of an earlier
    `tool` folder at `out` removed (`clear`), then one rename onto the absent or empty `out`."""
    from .checkpoint import umask
    os.chmod(tmp, 0o777 & ~umask())
    clear(out, tool, advice, legacy)
    os.replace(tmp, out)
