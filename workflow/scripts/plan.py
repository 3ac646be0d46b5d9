"""What the workflow builds for a config: the experiment table expanded for the selected scale.

Pure functions on the (already schema-validated) Snakemake config, imported by
`workflow/rules/common.smk` and by the tests. Nothing here runs a model.

Terms:
- experiment: one row of `config["experiments"]`; `scale` says at which scale it is trained
  (`paper` rows are the paper's models, `toy` rows the built-in toy runs).
- trained: rows of the selected scale that name a training config (`train`).
- counted: rows whose parameters and GMACs are counted at full size (every `paper` row, at every
  scale: counting is cheap; toy runs report their own counts in `metrics.json`).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")
TASKS = ("classification", "segmentation", "video")


class PlanError(ValueError):
    """A config the workflow cannot use; the message names the config key."""


def scale_settings(config: dict) -> dict:
    scale = config["scale"]
    try:
        return config["scales"][scale]
    except KeyError:
        raise PlanError(f"config key scale={scale!r}: no section scales.{scale} "
                        f"(known: {', '.join(sorted(config.get('scales', {})))})") from None


def experiments(config: dict) -> dict[str, dict]:
    """id -> row, with defaults filled in; checks ids, duplicates and finetune_from references."""
    out: dict[str, dict] = {}
    for i, row in enumerate(config.get("experiments") or []):
        row = {"model_kwargs": "", "train": None, "finetune_from": None, "overrides": {},
               "count": row.get("scale") == "paper", "dataset": None, "note": "", "ablation": False, **row}
        eid = row.get("id")
        if not isinstance(eid, str) or not ID_RE.match(eid):
            raise PlanError(f"config key experiments[{i}].id={eid!r}: use lower-case letters, digits and _")
        if eid in out:
            raise PlanError(f"config key experiments[{i}].id={eid!r} appears twice")
        out[eid] = row
    for eid, row in out.items():
        src = row["finetune_from"]
        if src is not None:
            if src not in out:
                raise PlanError(f"config key experiments[id={eid}].finetune_from={src!r}: no such experiment")
            if out[src]["scale"] != row["scale"]:
                raise PlanError(f"config key experiments[id={eid}].finetune_from={src!r}: other scale")
    return out


def rows_scale(config: dict) -> str:
    """Whose experiment rows the selected scale trains: its own, or another scale's (`rows:`; the
    smoke scale trains the paper's rows, a few steps each)."""
    return scale_settings(config).get("rows") or config["scale"]


def trained(config: dict) -> list[str]:
    """Ids trained (and evaluated) at the selected scale, in table order; not the ablation rows."""
    rows = rows_scale(config)
    return [eid for eid, row in experiments(config).items()
            if row["scale"] == rows and row["train"] and not row["ablation"]]


def ablation_rows(config: dict) -> list[str]:
    """Ids of the selected scale's ablation rows (trained by `snakemake claim_ablation` only)."""
    rows = rows_scale(config)
    return [eid for eid, row in experiments(config).items()
            if row["scale"] == rows and row["train"] and row["ablation"]]


def counted(config: dict) -> list[str]:
    return [eid for eid, row in experiments(config).items() if row["count"]]


def family(model: str) -> str:
    """Backbone family of a model name: dart_vim_tiny_patch16_224 -> vim."""
    name = model.removeprefix("dart_")
    return re.split(r"[_\d]", name, maxsplit=1)[0] or "other"


def complexity_groups(config: dict) -> dict[str, list[str]]:
    """family -> ids of the counted rows, in table order (one bench.complexity call each)."""
    out: dict[str, list[str]] = {}
    for eid in counted(config):
        out.setdefault(family(experiments(config)[eid]["model"]), []).append(eid)
    return out


def seeds(config: dict) -> list[int]:
    return list(scale_settings(config).get("seeds") or [0])


def datasets_needed(config: dict) -> list[str]:
    """Dataset keys the trained experiments of the selected scale read, in first-use order, then the
    scorer trunk's pretraining set and the dataset the published weights are evaluated on."""
    out: list[str] = []
    exps = experiments(config)
    for eid in trained(config):
        ds = exps[eid]["dataset"]
        if ds is None:
            raise PlanError(f"config key experiments[id={eid}].dataset is missing")
        if ds not in out:
            out.append(ds)
    pre = scale_settings(config).get("scorer_pretrain")
    if pre and pre["dataset"] not in out:
        out.append(pre["dataset"])
    pw = scale_settings(config).get("published_weights")
    if pw and pw["dataset"] not in out:
        out.append(pw["dataset"])
    return out


def scorer_weights_input(run_cfg: dict) -> list[str]:
    """The scorer trunk file a run loads (`model.kwargs.scorer_weights`), as a workflow input: a
    run that starts from a pretrained trunk waits for it and reruns when it changes."""
    path = (run_cfg["model"].get("kwargs") or {}).get("scorer_weights")
    return [path] if isinstance(path, str) and path else []


def check_datasets(config: dict) -> None:
    """Every dataset the selected scale trains on has a root (toy: a generator entry)."""
    sets = scale_settings(config).get("datasets") or {}
    for ds in datasets_needed(config):
        entry = sets.get(ds)
        if entry is None:
            raise PlanError(
                f"config key scales.{config['scale']}.datasets.{ds} is missing: experiments of scale "
                f"{config['scale']!r} read dataset {ds!r}; add it to your config file")
        if entry.get("toy") is None and entry.get("fake") is None and not entry.get("root"):
            raise PlanError(
                f"config key scales.{config['scale']}.datasets.{ds}.root is missing (null or empty): "
                f"set it to the folder holding {ds} (e.g. --config "
                f"'scales={{{config['scale']}: {{datasets: {{{ds}: {{root: /path/to/{ds}}}}}}}}}' "
                f"or in config/paper.yaml)")


def dataset_entry(config: dict, ds: str) -> dict:
    return (scale_settings(config).get("datasets") or {})[ds]


def data_root(config: dict, ds: str) -> str:
    """A dataset's folder: toy data are generated into data/toy/<dataset key>, fake data (the
    smoke scale) into data/fake/<scale>/<dataset key>."""
    entry = dataset_entry(config, ds)
    if entry.get("toy") is not None:
        return os.path.join("data", "toy", ds)
    if entry.get("fake") is not None:
        return fake_root(config, ds)
    return entry["root"]


def fake_root(config: dict, ds: str) -> str:
    return os.path.join("data", "fake", config["scale"], ds)


def toy_set_args(entry: dict) -> str:
    """`--set key=value ...` of `python -m dart.data.toy` (generator parameters; '' for the defaults)."""
    params = entry["toy"].get("set") or {}
    return ("--set " + " ".join(f"{k}={int(v)}" for k, v in sorted(params.items()))) if params else ""


def package_dir(name: str = "dart") -> Path | None:
    """The installed package's folder, found without importing it (importing torch takes seconds)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def train_config_path(name: str, repo_root: Path | None = None) -> str:
    """A training config: a path as given, else a packaged config of `dart/configs` by stem."""
    if os.path.isfile(name):
        return name
    stem = name[:-5] if name.endswith(".yaml") else name
    for base in (package_dir(), (repo_root / "dart") if repo_root else None):
        if base is not None and (base / "configs" / f"{stem}.yaml").is_file():
            return str(base / "configs" / f"{stem}.yaml")
    raise PlanError(f"training config {name!r} is neither a file nor a packaged config in dart/configs")


def yaml_value(value: Any) -> str:
    """A value as the engine's `key=value` overrides read it (YAML flow style, one line)."""
    return json.dumps(value) if not isinstance(value, str) else value


def train_overrides(config: dict, eid: str, seed: int, threads: int | None = None,
                    init_checkpoint: str | None = None) -> list[str]:
    """`key.sub=value` overrides of `python -m dart.train` for one run, in a stable order."""
    row = experiments(config)[eid]
    s = scale_settings(config)
    over: dict[str, Any] = {"train.seed": seed, "train.device": s.get("device", "auto")}
    if threads and not int(s.get("gpus", 0) or 0):  # CPU runs: as many torch threads as the job holds
        over["train.threads"] = threads
    over["data.root"] = data_root(config, row["dataset"])
    if init_checkpoint:
        over["model.init_checkpoint"] = init_checkpoint
    over.update(s.get("train_overrides") or {})
    over.update(row.get("overrides") or {})
    return [f"{k}={yaml_value(v)}" for k, v in over.items()]


KWARG_PREFIX = "model.kwargs."


def run_config(config: dict, eid: str, seed: int, init_checkpoint: str | None = None,
               repo_root: Path | None = None) -> dict:
    """The full engine config of one run, as `dart.train` resolves it (packaged defaults <- the
    training config <- the scale's and the row's overrides <- the scale's `final_overrides`),
    with the run folder as output_dir. Everything that changes a result is in it; the thread
    count (set per job) is not. A `final_overrides` key `model.kwargs.K` replaces K only in runs
    whose model takes K (a grid model has no scorer to configure)."""
    eng = engine_config(repo_root)
    row = experiments(config)[eid]
    over = train_overrides(config, eid, seed, threads=None, init_checkpoint=init_checkpoint)
    over.append(f"output_dir={run_dir(config, eid, seed)}")
    over.append(f"name={eid}")
    path = train_config_path(row["train"], repo_root)
    cfg = eng.load_config(path, over)
    final = scale_settings(config).get("final_overrides") or {}
    kwargs = cfg["model"].get("kwargs") or {}
    late = [f"{k}={yaml_value(v)}" for k, v in final.items()
            if not k.startswith(KWARG_PREFIX) or k[len(KWARG_PREFIX):] in kwargs]
    if late:
        cfg = eng.load_config(path, over + late)
    return cfg


def dump_yaml(obj) -> str:
    """Block-style YAML with every repeated value written out (no `&id001` / `*id001` aliases)."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return yaml.dump(obj, Dumper=NoAliases, sort_keys=False, width=100)


def write_if_changed(path: str, text: str) -> str:
    """Write `text` to `path` only when the file's content differs (atomically), so the file's
    mtime moves exactly when its content does and Snakemake reruns what reads it."""
    p = Path(path)
    try:
        if p.read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
    return path


def text_sha1(text: str) -> str:
    """SHA-1 of a settings file's content (as written: UTF-8)."""
    import hashlib
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


_PREVIEW_DIR: list[str] = []  # the temporary folder of this process's previews, made on first use


def _preview_dir() -> str:
    if not _PREVIEW_DIR:
        import atexit
        import shutil
        import tempfile
        folder = tempfile.mkdtemp(prefix="dart-dry-run-settings-")
        atexit.register(shutil.rmtree, folder, True)
        _PREVIEW_DIR.append(folder)
    return _PREVIEW_DIR[0]


def tracked_file(path: str, text: str, write: bool) -> str:
    """The settings file a job reads: `path` when it already holds `text`; otherwise, when `write`,
    `path` rewritten (`write_if_changed`); when not (a dry run), a copy of the new content in a
    temporary folder (removed at exit), so that nothing under the working directory changes while
    the copy's fresh mtime still marks the jobs reading it as outdated."""
    try:
        if Path(path).read_text(encoding="utf-8") == text:
            return path
    except OSError:
        pass
    if write:
        return write_if_changed(path, text)
    if os.path.isabs(path):
        raise ValueError(f"settings file {path} must be relative to the working directory")
    return write_if_changed(os.path.join(_preview_dir(), path), text)


def complexity_spec(row: dict) -> str:
    """`NAME[:k=v,...]` as `python -m bench.complexity` reads one model."""
    return row["model"] + (f":{row['model_kwargs']}" if row["model_kwargs"] else "")


DEFAULT_SCALE = "toy"


def report_path(scale: str) -> str:
    """reports/paper_tables.html for the default scale, reports/paper_tables_<scale>.html otherwise."""
    return "reports/paper_tables.html" if scale == DEFAULT_SCALE else f"reports/paper_tables_{scale}.html"


def run_dir(config: dict, eid: str, seed: int) -> str:
    return f"runs/{config['scale']}/{eid}/seed{seed}"


def launcher(gpus: int) -> str:
    """How a training process starts: torchrun on one node when more than one GPU is held."""
    gpus = int(gpus or 0)
    if gpus > 1:
        return f"torchrun --standalone --nnodes 1 --nproc-per-node {gpus} -m"
    return "python -m"


RESERVED_SWEEPS = ("tokenizer_split",)  # bench/ outputs of other rules


def sweeps(config: dict) -> dict[str, dict]:
    """Throughput sweeps of the selected scale: name -> settings."""
    out = dict(scale_settings(config).get("throughput") or {})
    for name in RESERVED_SWEEPS:
        if name in out:
            raise PlanError(f"config key scales.{config['scale']}.throughput.{name}: the name {name!r} is "
                            f"the tokenizer benchmark's output; choose another sweep name")
    return out


def one_of(names: Iterable[str]) -> str:
    """A wildcard regex matching exactly these names (none: a regex that matches nothing)."""
    names = sorted(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def shell_join(items: Iterable[str]) -> str:
    import shlex
    return " ".join(shlex.quote(str(i)) for i in items)


def check_references(config: dict) -> None:
    """Sweeps and partition pictures name experiments this scale trains; counted rows name a model."""
    exps = experiments(config)
    here = set(trained(config))
    for name, sweep in sweeps(config).items():
        for eid in sweep.get("experiments") or []:
            if eid not in here:
                raise PlanError(f"config key scales.{config['scale']}.throughput.{name}.experiments: "
                                f"{eid!r} is not trained at scale {config['scale']!r}")
        if not (sweep.get("models") or sweep.get("experiments")):
            raise PlanError(f"config key scales.{config['scale']}.throughput.{name}: no models or experiments")
    part = scale_settings(config).get("partitions")
    if part and part["experiment"] not in here:
        raise PlanError(f"config key scales.{config['scale']}.partitions.experiment={part['experiment']!r} "
                        f"is not trained at scale {config['scale']!r}")
    for eid, row in exps.items():
        if row["count"] and not row.get("model"):
            raise PlanError(f"config key experiments[id={eid}].model is missing (needed to count it)")


def resolve_file(path: str, repo_root: Path) -> str:
    """A path relative to the working directory, else to the repository."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    alt = repo_root / path
    if alt.exists():
        return str(alt)
    raise PlanError(f"file {path!r} not found (neither in the working directory nor in {repo_root})")


def engine_config(repo_root: Path | None = None):
    """dart/engine/config.py loaded from its file: the engine's own merge, override and validation
    rules, without importing the `dart` package (and torch, seconds per Snakemake start)."""
    for base in (package_dir(), (repo_root / "dart") if repo_root else None):
        path = base / "engine" / "config.py" if base is not None else None
        if path is not None and path.is_file():
            spec = importlib.util.spec_from_file_location("_dart_engine_config", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    raise PlanError("cannot find dart/engine/config.py (is the project installed?)")


# ------------------------------------------------------------------------ published weights

def published_table(repo_root: Path | None = None):
    """dart/models/official.py loaded from its file: the official checkpoints and the grid
    baselines' timm weights, without importing the `dart` package (and torch)."""
    for base in (package_dir(), (repo_root / "dart") if repo_root else None):
        path = base / "models" / "official.py" if base is not None else None
        if path is not None and path.is_file():
            spec = importlib.util.spec_from_file_location("_dart_models_official", path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod  # dataclasses resolve their module by name
            spec.loader.exec_module(mod)
            return mod
    raise PlanError("cannot find dart/models/official.py (is the project installed?)")


def published_weights(config: dict, repo_root: Path | None = None) -> dict[str, dict]:
    """Published weights the selected scale evaluates (`scales.<scale>.published_weights`): every
    official DART checkpoint and every grid baseline with timm weights, by timm name.tag."""
    if not scale_settings(config).get("published_weights"):
        return {}
    mod = published_table(repo_root)
    out = {}
    for kind, items in (("official", mod.OFFICIAL), ("baseline", mod.BASELINES)):
        for p in items:
            out[p.name] = {"name": p.name, "kind": kind, "model": p.model, "official": p.official,
                           "file": p.file, "local_file": p.local_file, "hub": p.hub,
                           "published_top1": p.published_top1, "input_size": p.input_size,
                           "crop_pct": p.crop_pct, "interpolation": p.interpolation}
    return out


def published_checkpoint(config: dict, name: str, repo_root: Path | None = None) -> str | None:
    """The file a published-weights job reads: a synthetic one (smoke scale), the one in
    `official_checkpoints` (a local folder), or None (the Hugging Face hub or its local cache)."""
    entry = published_weights(config, repo_root)[name]
    if scale_settings(config)["published_weights"].get("synthetic"):
        return os.path.join("data", "fake", config["scale"], "published", entry["local_file"])
    folder = config.get("official_checkpoints")
    return os.path.join(folder, entry["local_file"]) if folder else None


def published_eval_config(config: dict, name: str, repo_root: Path | None = None) -> dict:
    """The engine config of one published-weights evaluation: `dart/configs/imagenet_official_eval.yaml`
    (the official evaluation: fp32, the batch of main.py's validation loader) with the checkpoint's
    input size, crop and interpolation, this scale's device and data root, then the section's
    `overrides` (the smoke scale: two batches of two)."""
    entry = published_weights(config, repo_root)[name]
    pw = scale_settings(config)["published_weights"]
    over = {"model.name": entry["model"], "data.root": data_root(config, pw["dataset"]),
            "data.img_size": entry["input_size"], "data.crop_pct": entry["crop_pct"],
            "data.interpolation": entry["interpolation"], "train.device": scale_settings(config).get("device", "auto"),
            "output_dir": f"results/{config['scale']}/published/{name}", "name": name}
    over.update(pw.get("overrides") or {})
    return engine_config(repo_root).load_config("imagenet_official_eval",
                                                [f"{k}={yaml_value(v)}" for k, v in over.items()])


def model_of_train_config(path: str, overrides: dict | None = None,
                          repo_root: Path | None = None) -> tuple[str, dict]:
    """(model name, timm kwargs) a training config builds, as dart.engine.build does: the config
    merged over the packaged defaults with the overrides applied; `data.img_size` (and
    `data.num_frames` for video) are the model's."""
    eng = engine_config(repo_root)
    cfg = eng.load_config(path, [f"{k}={yaml_value(v)}" for k, v in (overrides or {}).items()])
    kw = dict(cfg["model"].get("kwargs") or {})
    kw["img_size"] = cfg["data"]["img_size"]
    if cfg["data"].get("grid_img_size") and cfg["model"]["name"].startswith("dart_"):
        kw.setdefault("scorer_input_size", cfg["data"]["grid_img_size"])  # the paper's regime
    if cfg.get("task") == "video":
        kw["num_frames"] = cfg["data"]["num_frames"]
    kw.setdefault("num_classes", cfg["data"].get("num_classes", 1000))
    return cfg["model"]["name"], kw


def sweep_models(config: dict, name: str, train_configs: dict[str, str],
                 repo_root: Path | None = None) -> list[str]:
    """Model specs (`NAME:key=val,...`) of one throughput sweep."""
    sweep = sweeps(config)[name]
    specs = list(sweep.get("models") or [])
    exps = experiments(config)
    common = scale_settings(config).get("train_overrides") or {}
    for eid in sweep.get("experiments") or []:
        model, kw = model_of_train_config(train_configs[eid], {**common, **(exps[eid].get("overrides") or {})},
                                          repo_root)
        specs.append(model + ":" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(kw.items())))
    return specs


def all_cores(workflow) -> int:
    """Every core Snakemake may use locally: a benchmark holding them runs alone."""
    try:
        cores = int(workflow.cores)
    except Exception:  # no --cores (e.g. a cluster executor): fall back to this machine's
        cores = 0
    return cores if 0 < cores < 1024 else (os.cpu_count() or 1)


def config_problems(config: dict, schema_path: str) -> list[str]:
    """Readable schema violations, one line each, naming the config key (Snakemake's own message
    prints the whole schema). A string where a number is expected gets a pointer to --configfile:
    `--config` passes nested values (`tolerance={top1: 0}`) as strings."""
    import jsonschema
    import yaml
    schema = yaml.safe_load(Path(schema_path).read_text())
    out = []
    validator = jsonschema.Draft202012Validator(schema)
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        key = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "additionalProperties":
            known = sorted((err.schema.get("properties") or {}))
            extra = sorted(set(err.instance) - set(known)) if isinstance(err.instance, dict) else []
            where = f"{key}." if err.absolute_path else ""
            out.append(f"config key {', '.join(where + e for e in extra) or key} is unknown"
                       + (f" (known here: {', '.join(known)})" if known else ""))
            continue
        line = f"config key {key}: {err.message}"
        if err.validator == "type" and isinstance(err.instance, str):
            line += ("; nested values given with --config arrive as strings: put them in a YAML file "
                     "and pass it with --configfile FILE")
        out.append(line)
    return out
