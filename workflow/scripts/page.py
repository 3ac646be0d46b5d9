"""What the workflow's HTML pages share: the Jinja2 environment of workflow/templates/ (autoescape
on; every page extends base.html.j2, which holds the stylesheet, the header and the provenance),
the provenance itself (git commit, package versions), inlined PNGs and the atomic write.

No pandas and no torch here: the report (report.py) and the claim page (claim_report.py) run in
different environments and both import this module.
"""
from __future__ import annotations

import base64
import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
BASE_TEMPLATE = "base.html.j2"


def environment(template_dir: str | Path = TEMPLATE_DIR):
    """The Jinja2 environment of the pages: autoescape on, undefined names are errors."""
    import jinja2
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)),
                              autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def generated() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def png_file_uri(path: str | Path) -> str:
    """A PNG file inlined as a data: URI (the pages are self-contained)."""
    return png_data_uri(Path(path).read_bytes())


def git_info(repo: Path) -> dict:
    def run(*args):
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit or "(not a git checkout)", "dirty": dirty,
            "branch": run("rev-parse", "--abbrev-ref", "HEAD")}


def versions(extra: dict | None = None) -> dict:
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm", "dart-tokenizer", "snakemake", "snakemake-executor-plugin-slurm",
                 "pandas", "seaborn", "matplotlib", "jinja2", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    out.update(extra or {})
    return out


def write_text(text: str, out: str | Path) -> None:
    """Write a text file (a page, a CSV, a table) atomically: a reader never sees half of it.
    Standard library only, like this module: the report's environment has no project installed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
