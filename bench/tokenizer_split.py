"""Where the DART tokenizer's time goes: scorer, geometry, sampling, projection, against the grid
patch embedding, at several batch sizes and token budgets.

    python -m bench.tokenizer_split --model dart_deit_small_patch16_224 --tokens 196 392 \\
        --grid-models deit_small_patch16_224 deit_small_patch16_384 --batch-sizes 1 8 32 \\
        --out results/bench/tokenizer_split.csv

Stages (each timed alone on inputs precomputed once, as `DART.forward` runs them):
  scorer      DART.score(x): resize to the scorer's input, scorer network, score activation
  geometry    geometry.partition(scores.double(), N, rows) + sampling.sampling_grid(...)
  sampling    sampling.sample_patches(x, grid): one batched grid_sample into a strip of patches
              (with sampling="reference", also the blend in the last pixel before each band's end)
  geometry+sampling  the two above in one call (what the baselines are compared on)
  projection  DART.project(strip): the stride-P conv over the strip (+ the tokenizer's norm)
  total       DART(x) end to end (the stages plus glue)
and for each grid model: patch_embed (timm's PatchEmbed on its own input size). With --baselines,
also geometry / sampling / geometry+sampling of each baseline on the same scores and image.
At each batch size all stages of all tokenizers take turns, round by round (--rounds), so that
they see the same machine state. One CSV row per (tokenizer, tokens, batch size, stage); the CSV
is rewritten atomically after every batch size.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import math
import sys
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from .throughput import (ModelSpec, create_model, input_size_of, is_oom, latency_stats, model_problems,
                         parse_model_spec, resolve_device, synchronize, timed_loop, write_rows_atomic)
from dart.engine.cli import check_writable, kwargs_arg, nonnegative_int, positive_int, user_error

from . import memory as mem

NAN = float("nan")
STAGES = ("scorer", "geometry", "sampling", "geometry+sampling", "projection", "total")
BASELINE_STAGES = ("geometry", "sampling", "geometry+sampling")
FIELDS = ["tokenizer", "model", "arch", "model_kwargs", "num_tokens", "img_size", "batch_size", "stage",
          "status", "error", "time_ms_median", "time_ms_p10", "time_ms_p90", "time_ms_min",
          "iters", "share_of_total", "images_per_s", "device_type", "device", "torch_version",
          "dtype", "torch_threads", "timestamp"]


def _autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def dart_stage_fns(tok: nn.Module, x: torch.Tensor, amp_dtype: Optional[torch.dtype] = None
                   ) -> dict[str, Callable[[], object]]:
    """Closures that run each stage of `tok` (a `dart.DART`) on inputs computed once here."""
    from dart.tokenizer import geometry, sampling
    dev = x.device

    def geometry_stage():
        with torch.autocast(dev.type, enabled=False):
            rb, pb, _ = geometry.partition(scores.double(), tok.num_tokens, tok.rows, tok.quantile_eps)
            return sampling.sampling_grid(rb, pb, tok.grid, tok.patch_size, convention=tok.sampling,
                                          img_size=tok.img_size)

    with torch.inference_mode(), _autocast(dev, amp_dtype):
        scores = tok.score(x)
        grid = geometry_stage()
        patches = sampling.sample_patches(x, grid, tok.sampling)

    def wrap(fn):
        def run():
            with torch.inference_mode(), _autocast(dev, amp_dtype):
                return fn()
        return run

    return {
        "scorer": wrap(lambda: tok.score(x)),
        "geometry": wrap(geometry_stage),
        "sampling": wrap(lambda: sampling.sample_patches(x, grid, tok.sampling)),
        "geometry+sampling": wrap(lambda: sampling.sample_patches(x, geometry_stage(), tok.sampling)),
        "projection": wrap(lambda: tok.project(patches)),
        "total": wrap(lambda: tok(x)),
    }


def baseline_stage_fns(baseline: str, tok: nn.Module, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Geometry and sampling of a baseline (see `bench.reference_tokenizer`) on the same scores and
    image as `dart_stage_fns`: 'two-pass' (the reference's structure) or 'rev:REV' (our tokenizer at
    a git revision, in the tokenizer's sampling convention)."""
    from . import reference_tokenizer as ref
    with torch.inference_mode():
        scores = tok.score(x).double()
    n, rows, g, P = tok.num_tokens, tok.rows, tok.grid, tok.patch_size
    if baseline == "two-pass":
        def geom():
            return ref.two_pass_geometry(scores, n, rows)[:2]

        def sample(bounds):
            return ref.two_pass_patches(x, *bounds, g, P)
    elif baseline.startswith("rev:"):
        geometry, sampling = ref.load_revision(baseline[4:])

        # the default convention through the plain call, which every revision has
        conv = {} if tok.sampling == "centred" else {"convention": tok.sampling,
                                                     "img_size": tok.img_size}

        def geom():
            rb, pb, _ = geometry.partition(scores, n, rows)
            return sampling.sampling_grid(rb, pb, g, P, **conv)

        def sample(grid):
            if conv:
                return sampling.sample_patches(x, grid, tok.sampling)
            return sampling.sample_patches(x, grid)
    else:
        raise ValueError(f"unknown baseline {baseline!r}: use 'two-pass' or 'rev:GIT_REVISION'")
    with torch.inference_mode():
        bounds = geom()

    def wrap(fn):
        def run():
            with torch.inference_mode():
                return fn()
        return run

    return {"geometry": wrap(geom), "sampling": wrap(lambda: sample(bounds)),
            "geometry+sampling": wrap(lambda: sample(geom()))}


def time_stages(fns: dict, device: torch.device, warmup: int, min_iters: int, min_time: float,
                rounds: int) -> tuple[dict, dict]:
    """(latencies, errors): per-call latencies (s) of each closure, the closures taking turns for
    `rounds` rounds; a closure that raises is dropped and its exception kept in `errors`."""
    lat: dict = {k: [] for k in fns}
    errors: dict = {}

    def attempt(k, fn):
        try:
            fn()
            return True
        except Exception as e:  # noqa: BLE001 - e.g. OOM of one tokenizer at this batch size
            errors[k] = e
            lat.pop(k, None)
            return False

    for k, fn in fns.items():
        for _ in range(warmup):
            if not attempt(k, fn):
                break
    synchronize(device)
    rounds = max(1, rounds)
    for _ in range(rounds):
        for k, fn in fns.items():
            if k in errors:
                continue
            try:
                lat[k].extend(timed_loop(fn, device, math.ceil(min_iters / rounds), min_time / rounds)[0])
            except Exception as e:  # noqa: BLE001
                errors[k] = e
                lat.pop(k, None)
    return lat, errors


def _tokenizer_of(model: nn.Module) -> nn.Module:
    pe = getattr(model, "patch_embed", None)
    if pe is None:
        raise ValueError(f"{type(model).__name__} has no patch_embed")
    return pe


def run(dart_spec: ModelSpec, tokens: Sequence[int], grid_specs: Sequence[ModelSpec],
        batch_sizes: Sequence[int], out: Optional[str], device: str = "auto", amp: str = "none",
        warmup: int = 5, min_iters: int = 10, min_time: float = 1.0, rounds: int = 3,
        threads: Optional[int] = None, seed: int = 0, log: Callable[[str], None] = None,
        baselines: Sequence[str] = ()) -> list[dict]:
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _run(dart_spec, tokens, grid_specs, batch_sizes, out, device, amp, warmup, min_iters,
                    min_time, rounds, seed, log, baselines)
    finally:
        torch.set_num_threads(threads_before)


def _run(dart_spec, tokens, grid_specs, batch_sizes, out, device, amp, warmup, min_iters, min_time,
         rounds, seed, log, baselines=()) -> list[dict]:
    from dart import DART
    say = log or (lambda s: print(s, file=sys.stderr))
    dev = resolve_device(device)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    ctx = {
        "device_type": dev.type,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else mem.cpu_name(),
        "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
        "dtype": str(amp_dtype or torch.float32).replace("torch.", ""),
    }
    say(f"[split] device: {ctx['device']} ({dev}); torch threads {ctx['torch_threads']}; "
        f"dtype {ctx['dtype']}")
    rows: list[dict] = []

    # the tokenizers: DART at each token budget, then the grid models' patch embeddings
    jobs = [("dart", s) for s in dart_specs(dart_spec, tokens)] + [("grid", s) for s in grid_specs]

    toks = []  # (kind, spec, tokenizer module, (c, h, w), tokens)
    for kind, spec in jobs:
        try:
            torch.manual_seed(seed)
            model = create_model(spec)
            chw = input_size_of(model)
            tok = _tokenizer_of(model).to(dev).eval()
            del model
            if kind == "dart" and not isinstance(tok, DART):
                raise TypeError(f"{spec.arch}: patch_embed is {type(tok).__name__}, not DART")
            toks.append((kind, spec, tok, chw, int(tok.num_tokens if kind == "dart" else tok.num_patches)))
            for name in baselines if kind == "dart" else ():  # timed on the same tokenizer's scores
                toks.append((f"baseline:{name}", ModelSpec(f"{spec.label} {name}", spec.arch, spec.kwargs),
                             tok, chw, int(tok.num_tokens)))
            gc.collect()
        except Exception as e:  # noqa: BLE001 - e.g. out of memory; user errors were found before
            rows.append(_row(ctx, kind, spec, NAN, "", NAN, "total" if kind == "dart" else "patch_embed",
                             "oom" if is_oom(e) else "error", f"{type(e).__name__}: {e}"))
            say(f"[split] {spec.label}: {rows[-1]['status']} while building ({rows[-1]['error'][:160]})")
    if out and rows:
        write_rows_atomic(out, rows, FIELDS)

    # at each batch size every stage of every tokenizer takes its turn, round by round
    for b in sorted(set(int(v) for v in batch_sizes)):
        fns, failed = {}, {}
        for i, (kind, spec, tok, (c, h, w), n_tok) in enumerate(toks):
            try:
                g = torch.Generator().manual_seed(seed)
                x = torch.randn(b, c, h, w, generator=g).to(dev)
                if kind == "dart":
                    stage_fns = dart_stage_fns(tok, x, amp_dtype)
                elif kind.startswith("baseline:"):
                    stage_fns = baseline_stage_fns(kind.split(":", 1)[1], tok, x)
                else:
                    def grid_fn(tok=tok, x=x):
                        with torch.inference_mode(), _autocast(dev, amp_dtype):
                            return tok(x)
                    stage_fns = {"patch_embed": grid_fn}
                fns.update({(i, k): fn for k, fn in stage_fns.items()})
            except Exception as e:  # noqa: BLE001
                failed[i] = e
            x = stage_fns = None
        lat, errors = time_stages(fns, dev, warmup, min_iters, min_time, rounds)
        for (i, _), e in errors.items():
            failed.setdefault(i, e)
        for i, (kind, spec, tok, (c, h, w), n_tok) in enumerate(toks):
            img = str(h) if h == w else f"{h}x{w}"
            names = STAGES if kind == "dart" else BASELINE_STAGES if kind.startswith("baseline:") \
                else ("patch_embed",)
            if i in failed:
                e = failed[i]
                status, err = ("oom" if is_oom(e) else "error"), f"{type(e).__name__}: {e}".replace("\n", " ")[:500]
                rows.extend(_row(ctx, kind, spec, n_tok, img, b, k, status, err) for k in names)
                say(f"[split] {spec.label} batch {b}: {status} ({err[:160]})")
                continue
            stats = {k: latency_stats(lat[(i, k)]) for k in names}
            total = stats[names[-1]]["latency_ms_median"]
            for k, st in stats.items():
                r = _row(ctx, kind, spec, n_tok, img, b, k, "ok", "")
                r.update(time_ms_median=st["latency_ms_median"], time_ms_p10=st["latency_ms_p10"],
                         time_ms_p90=st["latency_ms_p90"], time_ms_min=st["latency_ms_min"],
                         iters=len(lat[(i, k)]), share_of_total=st["latency_ms_median"] / total,
                         images_per_s=b / (st["latency_ms_median"] / 1000.0))
                rows.append(r)
            say(f"[split] {spec.label} batch {b}: " + ", ".join(
                f"{k} {st['latency_ms_median']:.2f} ms" for k, st in stats.items()))
        fns = lat = None
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if out:
            write_rows_atomic(out, rows, FIELDS)
    return rows


def dart_specs(dart_spec: ModelSpec, tokens: Sequence[int]) -> list[ModelSpec]:
    """The DART model at each token budget, labelled MODEL@N."""
    return [ModelSpec(f"{dart_spec.label}@{n}", dart_spec.arch, {**dart_spec.kwargs, "num_tokens": int(n)})
            for n in tokens]


def user_errors(dart_spec: ModelSpec, tokens: Sequence[int], grid_specs: Sequence[ModelSpec],
                baselines: Sequence[str] = ()) -> list[str]:
    """What makes the command line wrong, found before anything is timed: a --model that is not a
    DART model or cannot hold a --tokens budget, a grid model timm does not know or whose keywords
    it refuses (`bench.throughput.model_problems`), a baseline neither 'two-pass' nor 'rev:REV'."""
    out = []
    for s, why in model_problems(dart_specs(dart_spec, tokens), need_dart=True):
        at = "" if why.startswith(("unknown", "not a DART")) else f" at --tokens {s.kwargs['num_tokens']}"
        line = f"--model {dart_spec.label}{at}: {why}"
        if line not in out:  # a wrong name: one line, not one per budget
            out.append(line)
    out += [f"--grid-models {s.label}: {why}" for s, why in model_problems(grid_specs)]
    out += [f"--baselines {b!r}: use 'two-pass' or 'rev:GIT_REVISION'" for b in baselines
            if b != "two-pass" and not (b.startswith("rev:") and len(b) > 4)]
    return out


def _row(ctx: dict, kind: str, spec: ModelSpec, n_tok, img, batch, stage, status, error) -> dict:
    r = dict.fromkeys(FIELDS, NAN)
    r.update(ctx)
    r.update(tokenizer=kind, model=spec.label, arch=spec.arch, model_kwargs=spec.kwargs_json,
             num_tokens=n_tok, img_size=img, batch_size=batch, stage=stage, status=status, error=error,
             timestamp=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return r


def print_table(rows: Sequence[dict], file=None) -> None:
    """Per (batch, tokenizer): ms per batch of each stage and its share of the total."""
    file = file or sys.stdout
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault((r["batch_size"], r["model"]), []).append(r)
    order = {k: i for i, k in enumerate(groups)}
    for (b, model), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0]])):
        parts = ", ".join(f"{r['stage']} {r['time_ms_median']:.2f} ms ({100 * r['share_of_total']:.0f}%)"
                          for r in rs)
        print(f"batch {b:>4} {model}: {parts}", file=file)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tokenizer_split", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dart_deit_small_patch16_224",
                   help="DART model whose patch_embed is timed, NAME[:key=val,...] "
                        "(default dart_deit_small_patch16_224)")
    p.add_argument("--tokens", nargs="+", type=positive_int, default=[196, 392], help="token budgets N")
    p.add_argument("--grid-models", nargs="*", default=["deit_small_patch16_224"],
                   help="grid models whose timm PatchEmbed is timed (each on its own input size)")
    p.add_argument("--model-kwargs", type=kwargs_arg, default={},
                   help="keyword arguments for every model: JSON or key=val,key=val (e.g. img_size=64)")
    p.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 8, 32])
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--warmup-iters", type=nonnegative_int, default=5)
    p.add_argument("--min-iters", type=positive_int, default=10, help="timed calls per stage at least")
    p.add_argument("--min-time", type=float, default=1.0, help="timed seconds per stage at least")
    p.add_argument("--rounds", type=positive_int, default=3, help="the stages take turns this many times")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baselines", nargs="*", default=[],
                   help="also time these geometry+sampling baselines on the same scores: 'two-pass' (the "
                        "reference implementation's structure, bench/reference_tokenizer.py) and/or "
                        "'rev:GIT_REV' (our tokenizer at that revision: before/after in one run)")
    p.add_argument("--out", required=True, help="CSV path (rewritten atomically)")
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    prog = "bench.tokenizer_split"
    try:
        spec = parse_model_spec(a.model, a.model_kwargs)
        grids = [parse_model_spec(s, a.model_kwargs) for s in a.grid_models]
        problems = user_errors(spec, a.tokens, grids, a.baselines)
        if problems:
            raise ValueError("; ".join(problems))
        check_writable(a.out)  # before measuring
    except ValueError as e:
        return user_error(prog, e)
    rows = run(spec, a.tokens, grids, a.batch_sizes, a.out, device=a.device, amp=a.amp,
               warmup=a.warmup_iters, min_iters=a.min_iters, min_time=a.min_time, rounds=a.rounds,
               threads=a.threads, seed=a.seed, baselines=a.baselines)
    print_table(rows)
    if not a.no_plot:
        try:
            from .plots import plot_tokenizer_split
            print(f"[split] plot: {plot_tokenizer_split(a.out)}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001
            print(f"[split] plot failed: {type(e).__name__}: {e}", file=sys.stderr)
    if any(r["status"] == "ok" for r in rows):
        return 0
    errors = list(dict.fromkeys(f"{r['model']}: {r['error']}" for r in rows))
    print(f"{prog}: nothing was timed ok ({len(rows)} rows in {a.out}): " + "; ".join(errors)[:400],
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
