"""The per-rule conda environments (workflow/envs/*.yaml) hold what their rules import.

Conda is not installed here, so `--use-conda` cannot build them; this reads them instead: for every
rule, the modules and scripts it runs, their imports followed through the project's own modules
(an optional import inside `try: ... except ImportError` is not required), against the env file.
Also: the project is installed into each env that runs project code, the env pins lie inside
pyproject.toml's ranges, and every declared dependency is imported somewhere.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "workflow" / "rules"
SCRIPTS = ROOT / "workflow" / "scripts"
PROJECT = ("dart", "bench")
# import name -> conda-forge / PyPI name
DIST = {"torch": "pytorch", "PIL": "pillow", "yaml": "pyyaml", "pynvml": "nvidia-ml-py", "av": "av",
        "matplotlib": "matplotlib-base", "jsonschema": "jsonschema", "jinja2": "jinja2", "numpy": "numpy",
        "pandas": "pandas", "seaborn": "seaborn", "psutil": "psutil", "timm": "timm", "torchvision": "torchvision",
        "tqdm": "tqdm"}
# the same package under its conda and its PyPI name
SAME = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def rule_blocks() -> dict[str, str]:
    out = {}
    for f in sorted(RULES.glob("*.smk")):
        # rules may sit inside an `if`/`else` (claim.smk); a name defined twice keeps its last body
        parts = re.split(r"^[ \t]*rule (\w+):", f.read_text(), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            out[name] = body
    return out


def rule_env(body: str) -> Path | None:
    m = re.search(r'conda:\s*\n\s*"([^"]+)"', body)
    return (RULES / m.group(1)).resolve() if m else None


def rule_entry_points(body: str) -> list[Path]:
    """Files a rule runs: `python -m pkg.mod`, `{params.launcher} pkg.mod`, `script:` and scripts by path."""
    files = []
    for mod in re.findall(r"(?:python -m|launcher\}) ([a-z_][\w.]*)", body):
        files.append(ROOT / (mod.replace(".", "/") + ".py"))
    for name in re.findall(r'scripts/(\w+\.py)"', body) + re.findall(r'"scripts" / "(\w+\.py)"', body):
        files.append(SCRIPTS / name)
    return files


def _optional(node: ast.Try) -> bool:
    for h in node.handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        # `except Exception` too (dart/ops: a kernel package may import but lack its CUDA build)
        if h.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError",
                                                                       "Exception") for n in names):
            return True
    return False


def imports_of(path: Path) -> tuple[set[str], set[Path]]:
    """(third-party top-level names required, project files imported) of one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and _optional(node):
            for sub in node.body:
                optional |= {id(n) for n in ast.walk(sub)}
    third, files = set(), set()
    pkg_dir = path.parent
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve inside the package
                base = pkg_dir
                for _ in range(node.level - 1):
                    base = base.parent
                mod = base.joinpath(*(node.module or "").split(".")) if node.module else base
                cands = [mod.with_suffix(".py"), mod / "__init__.py"]
                cands += [mod / f"{a.name}.py" for a in node.names]
                files |= {c for c in cands if c.is_file()}
                continue
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PROJECT:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    p = ROOT.joinpath(*parts[:i])
                    for c in (p.with_suffix(".py"), p / "__init__.py"):
                        if c.is_file():
                            files.add(c)
            elif (SCRIPTS / f"{top}.py").is_file() and path.parent == SCRIPTS:
                files.add(SCRIPTS / f"{top}.py")
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return third, files


def required_imports(entry: Path) -> tuple[set[str], bool]:
    """Third-party names the entry point needs (its project imports followed), and whether it
    runs project code (so the project must be installed in the env)."""
    todo = [entry]
    parts = entry.relative_to(ROOT).parts
    if parts[0] in PROJECT:  # `python -m dart.x` imports dart/__init__.py first
        todo += [ROOT.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    seen, third = set(), set()
    while todo:
        f = todo.pop()
        if f in seen or not f.is_file():
            continue
        seen.add(f)
        t, files = imports_of(f)
        third |= t
        todo += list(files - seen)
    uses_project = any(f.relative_to(ROOT).parts[0] in PROJECT for f in seen)
    return third, uses_project


def env_packages(env: Path) -> tuple[dict[str, str], list[str]]:
    """{name: version spec} of the conda and pip dependencies, and the pip lines."""
    doc = yaml.safe_load(env.read_text())
    out, pip = {}, []
    for dep in doc["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", dep)
        out[m.group(1).lower()] = m.group(2)
    for line in pip:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line)
        if m and not line.startswith("-"):
            out[m.group(1).lower()] = m.group(2)
    return out, pip


RULE_BLOCKS = rule_blocks()
# rules that only gather other rules' outputs (no shell, script or run: nothing to install or time)
TARGETS = {name for name, body in RULE_BLOCKS.items() if not re.search(r"^\s*(shell|script|run):", body, re.M)}


def test_every_rule_names_an_env_and_a_benchmark_file():
    assert len(RULE_BLOCKS) >= 10
    assert TARGETS == {"claim_ablation", "published_weights"}  # (`all` lives in workflow/Snakefile)
    for name, body in RULE_BLOCKS.items():
        if name in TARGETS:
            continue
        assert rule_env(body) is not None and rule_env(body).is_file(), name
        assert "benchmark:" in body, f"rule {name} writes no benchmark: file"


@pytest.mark.parametrize("rule", sorted(n for n in RULE_BLOCKS if n not in TARGETS))
def test_rule_env_holds_its_imports(rule):
    body = RULE_BLOCKS[rule]
    env = rule_env(body)
    packages, pip = env_packages(env)
    entries = rule_entry_points(body)
    assert entries, f"rule {rule}: no entry point found"
    for entry in entries:
        assert entry.is_file(), entry
        third, uses_project = required_imports(entry)
        missing = sorted(t for t in third if DIST.get(t, t).lower() not in packages)
        assert not missing, f"rule {rule} ({entry.name}) imports {missing}; {env.name} lacks them"
        if uses_project:
            assert "-e ../.." in pip, f"rule {rule} runs project code; {env.name} does not install the project"


def _pyproject_deps() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = list(doc["project"]["dependencies"])
    for extra in doc["project"]["optional-dependencies"].values():
        deps += [d for d in extra if not d.startswith("dart-tokenizer")]
    out = {}
    for d in deps:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", d)
        out[m.group(1).lower()] = m.group(2)
    return out


def _lowest(spec: str) -> str | None:
    """A version the env's spec allows: its lower bound, or X.Y.0 for `=X.Y.*`."""
    m = re.match(r"^=+\s*([\d.]+?)(\.\*)?$", spec.strip())
    if m:
        return m.group(1) + (".0" if m.group(2) else "")
    m = re.search(r">=\s*([\d.]+)", spec)
    return m.group(1) if m else None


def test_env_pins_lie_inside_pyproject_ranges():
    from packaging.specifiers import SpecifierSet
    declared = _pyproject_deps()
    for env in sorted((ROOT / "workflow" / "envs").glob("*.yaml")) + [ROOT / "environment.yml"]:
        packages, _ = env_packages(env)
        for name, spec in packages.items():
            pyname = SAME.get(name, name)
            if pyname not in declared or not spec or name in ("python", "pytorch-gpu"):
                continue
            v = _lowest(spec)
            if v is None:
                continue
            assert SpecifierSet(declared[pyname]).contains(v, prereleases=True), \
                f"{env.name}: {name} {spec} is outside pyproject.toml's {pyname}{declared[pyname]}"


def test_every_declared_dependency_is_imported():
    """A dependency nothing imports (e.g. the former mambapy) is dead weight in every install."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    code = "\n".join(p.read_text() for d in ("dart", "bench") for p in (ROOT / d).rglob("*.py"))
    by_dist = {v: k for k, v in DIST.items()} | {"torch": "torch", "pillow": "PIL", "nvidia-ml-py": "pynvml",
                                                 "matplotlib": "matplotlib"}
    for dep in doc["project"]["dependencies"]:
        name = re.match(r"^([A-Za-z0-9_.\-]+)", dep).group(1).lower()
        mod = by_dist.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {re.escape(mod)}\b", code, flags=re.M), \
            f"pyproject.toml declares {name} but nothing in dart/ or bench/ imports {mod}"
    for env in sorted((ROOT / "workflow" / "envs").glob("*.yaml")) + [ROOT / "environment.yml"]:
        assert "mambapy" not in env.read_text(), env
