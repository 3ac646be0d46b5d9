"""Evaluate a checkpoint on a config's validation set.

    python -m dart.evaluate --config FILE --checkpoint PATH [--out FILE.json] [key.sub=value ...]
    python -m dart.evaluate --config FILE --pretrained NAME.TAG [--checkpoint PATH] [...]

PATH is a run checkpoint of ours (checkpoint_last.pt; `eval.use_ema=true` picks its EMA weights)
or an official DART checkpoint (darvit-*.pth / darvim-*.pth, read from its 'model' entry, or from
'model_ema' with `eval.use_ema=true`), loaded through the key map in `dart.engine.keymap`.
`--pretrained` takes the timm pretrained tag of published weights instead
(`dart_deit_small_patch16_224.official_in1k`, `deit_small_patch16_224.fb_in1k`, ...): the model is
`timm.create_model(NAME.TAG, pretrained=True)`, the config's `model.name` becomes NAME, and PATH, if
given, is the file to read (`pretrained_cfg_overlay=dict(file=PATH)`) instead of the Hugging Face
hub or its local cache. Files are read with `torch.load(weights_only=True)`. The checkpoint supplies
every weight, the scorer trunk's included, so no pretrained trunk is fetched for the model it is
loaded into. Writes a JSON with the same metric keys as training's metrics.json (default
<output_dir>/eval.json); `epochs` is the checkpoint's own count (an official file's 'epoch' + 1,
null when it has none).

Refused (exit 2, one line naming the file and the keys): an official checkpoint that leaves any
model key unloaded, except the classifier head when data.num_classes differs (recorded under
`source.keymap.allowed`); a run checkpoint with a config that changes its model, data or task
(`dart.engine.compat`: only evaluation and runtime settings may differ; training-only settings
are taken from the checkpoint, so the JSON records what was trained); weights that hold NaN or
inf, or a model whose outputs are not finite on the validation data.
"""
from __future__ import annotations

import copy
import os
import sys
import time


def parse_args(argv=None):
    from .engine.cli import ArgumentParser
    ap = ArgumentParser(prog="python -m dart.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help="YAML file or packaged config name")
    ap.add_argument("--checkpoint", default=None,
                    help="checkpoint_last.pt of a run, or an official .pth (with --pretrained: its file)")
    ap.add_argument("--pretrained", default=None, metavar="NAME.TAG",
                    help="published weights by timm pretrained tag, e.g. dart_deit_small_patch16_224.official_in1k")
    ap.add_argument("--out", default=None, help="output JSON (default <output_dir>/eval.json)")
    ap.add_argument("--output-dir", default=None, help="overrides output_dir")
    ap.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = ap.parse_args(argv)
    if not (args.checkpoint or args.pretrained):
        ap.error("give --checkpoint PATH, or --pretrained NAME.TAG (with an optional --checkpoint file)")
    return args


def _strip(state: dict, prefix: str = "module.") -> dict:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def config_for(obj, cfg: dict, path: str) -> dict:
    """The config to evaluate a checkpoint with: a run checkpoint's own (dart.engine.compat decides
    which keys the command line may change; the kwargs the run's init checkpoint implied count as
    given, `initialise.with_init_kwargs`); the command line's for an official checkpoint."""
    from .engine import checkpoint as ckpt
    from .engine.compat import for_evaluate
    from .engine.config import yaml_load
    from .engine.initialise import with_init_kwargs
    if not ckpt.is_run(obj):
        return cfg
    ckpt.check_run(obj, path)
    stored = yaml_load(obj["config_yaml"])
    return for_evaluate(stored, with_init_kwargs(cfg, stored)[0], path)


def _non_finite(model) -> list[str]:
    return [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(v.isfinite().all())]


def load_weights(model, obj, path: str, use_ema: bool, log) -> dict:
    """Load the checkpoint object `obj` (read from `path`) into `model`; returns a description for the
    JSON. An official checkpoint must fill every model key (`keymap.evaluation_blockers`); with
    `use_ema` it is read from its 'model_ema' entry. Weights holding NaN or inf are refused."""
    from .engine import checkpoint as ckpt
    from .engine.keymap import evaluation_blockers, load_into
    if ckpt.is_run(obj):
        state = obj["model"]
        which = "model"
        if use_ema:
            if obj.get("ema") is None:
                raise ValueError(f"eval.use_ema is true but {path} has no EMA weights (train.ema was false)")
            state, which = _strip(obj["ema"]), "ema"
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ckpt.CheckpointError(f"{path}: the weights do not fit the model: {e}") from e
        source = {"kind": "run", "weights": which, "epoch": obj["epoch"] + 1,
                  "loss_curve": obj["history"]["loss_curve"]}
    else:
        entry = "model_ema" if use_ema else None
        if use_ema and not isinstance(obj.get("model_ema") if isinstance(obj, dict) else None, dict):
            raise ValueError(f"config key 'eval.use_ema' is true but the official checkpoint {path} has no "
                             f"'model_ema' entry; set eval.use_ema=false to evaluate its 'model' weights")
        report = load_into(model, obj, entry=entry)
        blockers, allowed = evaluation_blockers(report)
        if blockers:
            raise ckpt.CheckpointError(f"official checkpoint {path} does not fill the model, so its score would "
                                       f"not be the checkpoint's: {report.summary()}")
        msg = f"official checkpoint {path}: {report.summary()}"
        if allowed:
            msg += f"; allowed (classifier head of another data.num_classes, left as initialised): {', '.join(allowed)}"
        (log.warning if allowed else log.info)(msg)
        print(f"dart.evaluate: {msg}", file=sys.stderr)
        epoch = obj.get("epoch")
        source = {"kind": "official", "weights": report.entry, "keymap": {**report.as_dict(), "allowed": allowed},
                  "epoch": epoch + 1 if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
                  "loss_curve": []}
    refuse_non_finite(model, path)
    return source


def refuse_non_finite(model, what: str) -> None:
    """A CheckpointError naming `what` when loaded weights hold NaN or inf (no score to report)."""
    from .engine import checkpoint as ckpt
    bad = _non_finite(model)
    if bad:
        raise ckpt.CheckpointError(f"{what}: {len(bad)} weight tensors hold NaN or inf ({', '.join(bad[:6])}"
                                   f"{' ...' if len(bad) > 6 else ''}): its scores would not be numbers")


def pretrained_source(model, name: str, file: str | None, cfg: dict, log) -> dict:
    """eval.json's `source` for published weights loaded by tag: where they came from, the key map
    (DART models), the published top-1, and the evaluation transform of the tag beside the config's
    (a difference is logged: the published number was measured with the tag's)."""
    pc = getattr(model, "pretrained_cfg", {}) or {}
    src = dict(getattr(model, "pretrained_source", None) or {})
    where = src.get("source") or file or f"hf-hub:{pc.get('hf_hub_id')}"
    d = cfg["data"]
    ours = {"input_size": d["img_size"], "crop_pct": d["crop_pct"], "interpolation": d["interpolation"],
            "mean": [round(float(v), 4) for v in d["mean"]], "std": [round(float(v), 4) for v in d["std"]]}
    tags = {"input_size": (pc.get("input_size") or (3, None, None))[-1], "crop_pct": pc.get("crop_pct"),
            "interpolation": pc.get("interpolation"), "mean": [round(float(v), 4) for v in pc.get("mean", ())],
            "std": [round(float(v), 4) for v in pc.get("std", ())]}
    differ = [k for k in ours if ours[k] != tags[k]]
    if differ:
        log.warning("evaluation transform differs from %s's pretrained cfg in %s: config %s, tag %s", name,
                    ", ".join(differ), {k: ours[k] for k in differ}, {k: tags[k] for k in differ})
    keymap = src.get("keymap")
    from .models.official import BY_NAME  # the grid baselines' timm cfgs carry no published top-1
    top1 = pc.get("published_top1", getattr(BY_NAME.get(name), "published_top1", None))
    return {"kind": "pretrained", "name": name, "file": where, "published_top1": top1,
            "transform": ours, "transform_differs": differ, **({"keymap": keymap} if keymap else {}),
            "loss_curve": []}


def main(argv=None) -> int:
    args = parse_args(argv)
    from .engine.cli import user_error
    from .engine.config import ConfigError, load_config
    prog = "dart.evaluate"
    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    if args.pretrained:  # the tag names the model
        overrides.append(f"model.name={args.pretrained.split('.', 1)[0]}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        return user_error(prog, e)
    import torch
    from .data import DataError, SkipLog, build_datasets
    from .engine import checkpoint as ckpt
    from .engine import distributed as dist_
    from .engine.build import build_model, input_shape
    from .engine.loop import ShardSampler, evaluate, make_loader, metric_record, setup_logging
    from .engine.metrics import complexity

    from .engine.cli import check_writable
    try:
        obj = None if args.pretrained else ckpt.load(args.checkpoint)
        if obj is not None:
            cfg = config_for(obj, cfg, args.checkpoint)
        check_writable(args.out or os.path.join(cfg["output_dir"], "eval.json"), "the output")  # before evaluating
    except (FileNotFoundError, ValueError) as e:
        return user_error(prog, e)
    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    info = dist_.init(cfg["train"]["device"])
    out = args.out or os.path.join(cfg["output_dir"], "eval.json")
    if info.is_main:  # in a run's folder, a later `dart.train --overwrite` removes them with the run
        from .engine.runfolder import register_if_run_folder
        register_if_run_folder(os.path.dirname(os.path.abspath(out)), os.path.basename(out), "eval.log")
    log = setup_logging(os.path.dirname(os.path.abspath(out)), info.is_main, filename="eval.log")
    try:
        try:
            _, val_ds, data_info = build_datasets(
                cfg, barrier=(lambda: dist_.barrier(info)) if info.enabled else None, is_main=info.is_main,
                progress=info.is_main)
            if args.pretrained:
                model = build_model(cfg, pretrained=args.pretrained, pretrained_file=args.checkpoint)
                source = pretrained_source(model, args.pretrained, args.checkpoint, cfg, log)
                log.info("%s: %s", args.pretrained, source["file"])
                refuse_non_finite(model, args.checkpoint or args.pretrained)
            else:  # the checkpoint supplies every weight: no pretrained trunk is fetched
                model = build_model(cfg, weights_follow=True)
            cx = complexity(copy.deepcopy(model).cpu(), input_shape(cfg)) if info.is_main else {}
            if not args.pretrained:
                source = load_weights(model, obj, args.checkpoint, cfg["eval"]["use_ema"], log)
        except (FileNotFoundError, ValueError, DataError) as e:
            return user_error(prog, e)
        model.to(info.device)
        loader = make_loader(val_ds, cfg["eval"]["batch_size"], ShardSampler(len(val_ds), info.rank, info.world_size),
                             cfg["data"]["num_workers"], False, info.device)
        skips = SkipLog(log)
        t0 = time.perf_counter()
        try:
            res = evaluate(model, loader, cfg, info, skips, cfg["eval"]["max_batches"])
        except DataError as e:
            return user_error(prog, e)
        except FloatingPointError as e:  # the model's own finiteness check, or non-finite outputs
            return user_error(prog, f"{args.checkpoint or args.pretrained}: the model gives non-finite values on "
                                    f"the validation data, so there is no score to report: {e}")
        wall = time.perf_counter() - t0
        skipped = {p: r for d in dist_.all_gather_object(skips.paths, info) for p, r in d.items()}
        record = {
            **metric_record(cfg, model, data_info, info), **res,
            "loss_curve": source.pop("loss_curve"), "images_per_s": res["eval_images_per_s"], "wall_s": wall,
            "params_m": cx.get("params_m"), "gmacs": cx.get("gmacs"), "skipped_files": len(skipped),
            "skipped_paths": sorted(skipped)[:100],
            "checkpoint": source.get("file") if args.pretrained else os.path.abspath(args.checkpoint),
            "source": source,
        }
        if source["kind"] in ("official", "pretrained"):  # not the config's train.epochs: the file's, or null
            record["epochs"] = source.get("epoch")
        if cfg["task"] != "segmentation":
            record.setdefault("top5", None)
        if info.is_main:
            ckpt.write_json_atomic(record, out)
            key = "miou" if cfg["task"] == "segmentation" else "top1"
            log.info("eval: %s %.2f on %d samples, %.1f img/s -> %s", key, record[key], record["val_samples"],
                     record["images_per_s"], out)
    finally:
        dist_.shutdown(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
