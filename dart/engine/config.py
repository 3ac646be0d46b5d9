"""Run configs: YAML files merged over the packaged defaults, overridden from the command line,
validated against `dart/configs/schema.yaml`.

A config names its file by path or by the stem of a packaged config (`toy_cls_dart`). Mappings
merge key by key, except `model.kwargs`, which a config file replaces whole (the arguments belong
to its model); any other value (lists included) replaces. Command-line overrides are
`key.sub=value` with the value parsed as YAML (`train.lr=3e-4`, `aug.scale=[0.5,1]`,
`model.kwargs.num_tokens=64`). Validation runs after everything is merged, so a typo anywhere is
an error that names the key.
"""
from __future__ import annotations

import copy
import logging
import os
import re
from typing import Any, Iterable

import yaml

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
SCHEMA_PATH = os.path.join(CONFIG_DIR, "schema.yaml")
DEFAULTS_PATH = os.path.join(CONFIG_DIR, "defaults.yaml")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, plus floats without a dot (`3e-4`), which YAML 1.1 leaves strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text_or_stream):
    return yaml.load(text_or_stream, Loader=_Loader)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the key."""


def packaged_configs() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR)
                  if f.endswith(".yaml") and f not in ("schema.yaml", "defaults.yaml"))


def resolve_path(name_or_path: str) -> str:
    if os.path.isfile(name_or_path):
        return name_or_path
    stem = name_or_path[:-5] if name_or_path.endswith(".yaml") else name_or_path
    cand = os.path.join(CONFIG_DIR, os.path.basename(stem) + ".yaml")
    if os.sep not in stem and os.path.isfile(cand):
        return cand
    raise ConfigError(f"config file {name_or_path!r} not found (packaged configs: {', '.join(packaged_configs())})")


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml_load(f)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text (UTF-8) file, so not a YAML config "
                          f"({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level, got {type(data).__name__}")
    return data


# mappings a config file replaces as a whole instead of merging into: a model's keyword arguments
# belong to that model (a grid config must not inherit the default DART model's num_tokens)
ATOMIC = {("model", "kwargs")}


def deep_merge(base: dict, over: dict, _path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and (*_path, k) not in ATOMIC:
            out[k] = deep_merge(out[k], v, (*_path, k))
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    try:
        parsed = yaml_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from e
    return key.split("."), parsed


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        path, value = parse_override(text)
        node = cfg
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: config key {'.'.join(path[:i + 1])!r} is not a section")
            node = nxt
        node[path[-1]] = value
    return cfg


def _normalise(cfg: dict) -> dict:
    # YAML 1.1 reads `off` as false; the schema spells it "off"
    train = cfg.get("train")
    if isinstance(train, dict) and train.get("amp") is False:
        train["amp"] = "off"
    return cfg


_SCHEMA = None


def schema() -> dict:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = _read_yaml(SCHEMA_PATH)
    return _SCHEMA


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def validate(cfg: dict) -> dict:
    """Raise ConfigError naming the first offending key (all of them when there are several)."""
    import jsonschema
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return cfg
    msgs = []
    for e in errors:
        if e.validator == "additionalProperties":
            known = set(e.schema.get("properties", {}))
            for extra in sorted(set(e.instance) - known):
                msgs.append(f"unknown config key {_key([*e.path, extra])!r} "
                            f"(allowed here: {', '.join(sorted(known))})")
        elif e.validator == "required":
            msgs.append(f"config key {_key(e.path)!r}: {e.message}")
        else:
            msgs.append(f"config key {_key(e.path)!r}: {e.message}")
    raise ConfigError("invalid config: " + "; ".join(dict.fromkeys(msgs)))


def _set_keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in (tree or {}).items():
        key = f"{prefix}{k}"
        out.add(key)
        if isinstance(v, dict):
            out |= _set_keys(v, key + ".")
    return out


def small_object_crop_warning(cfg: dict, file_cfg: dict | None, overrides=()) -> str | None:
    """A warning when ImageFolder data meet crops the config never chose: random-resized-crop with a
    small minimum scale and a centre crop below 1 are inherited from defaults.yaml (DeiT's recipe), as
    happens when a toy config is copied to real data. Small objects are then often cropped away."""
    if cfg["data"]["kind"] != "imagefolder":
        return None
    chosen = _set_keys(file_cfg or {}) | {o.split("=", 1)[0].strip() for o in overrides}
    scale, crop = cfg["aug"]["scale"], cfg["data"]["crop_pct"]
    risky = []
    if "aug.scale" not in chosen and scale[0] < 0.25:
        risky.append(f"aug.scale={list(scale)} (random-resized-crop keeps as little as {scale[0]:.0%} of "
                     "the image in training)")
    if "data.crop_pct" not in chosen and crop < 1.0:
        risky.append(f"data.crop_pct={crop} (evaluation keeps the central {crop:.1%} of each side)")
    if not risky:
        return None
    return ("ImageFolder data with crops inherited from the defaults, not set by this config: "
            + "; ".join(risky) + ". They can cut small objects, the detail DART is meant to find, out of "
            "the image; set aug.scale and data.crop_pct explicitly (e.g. aug.scale=[0.5,1.0] "
            "data.crop_pct=1.0) or keep them to follow DeiT's recipe.")


def warn_small_object_crops(cfg: dict, file_cfg: dict | None, overrides=()) -> None:
    msg = small_object_crop_warning(cfg, file_cfg, overrides)
    if msg:
        logging.getLogger("dart.engine").warning(msg)


def load_config(path: str | None = None, overrides: Iterable[str] = ()) -> dict:
    """Defaults <- config file <- overrides, validated. Adds `name`/`output_dir` defaults."""
    cfg = _read_yaml(DEFAULTS_PATH)
    src, file_cfg = None, None
    overrides = list(overrides)
    if path:
        src = resolve_path(path)
        file_cfg = _read_yaml(src)
        cfg = deep_merge(cfg, file_cfg)
    cfg = _normalise(apply_overrides(cfg, overrides))
    validate(cfg)
    warn_small_object_crops(cfg, file_cfg, overrides)
    if not cfg.get("name"):
        cfg["name"] = os.path.splitext(os.path.basename(src))[0] if src else "default"
    if not cfg.get("output_dir"):
        cfg["output_dir"] = os.path.join("runs", cfg["name"])
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
