"""Tidy CSVs under results/<scale>/tidy/ from everything the workflow measured.

Outputs (one row per observation, long where it helps plotting):
- runs.csv        one row per trained run (experiment, seed): accuracy / mIoU, params, GMACs, speed
- complexity.csv  one row per counted model (full size): params, trainable params, GMACs, tokens
- throughput.csv  every benchmark sweep's rows, with a `sweep` column
- comparison.csv  one row per (published row, metric): published, ours, delta, verdict
- claims.csv      the paper's headline claims with the published and the measured figure
- published_weights.csv  one row per published checkpoint evaluated here (official DART files, the
                  grid baselines' timm weights): its published top-1, ours, delta, verdict

Verdicts: "matches" (within the config's tolerance), "differs", "not run at this scale"
(the number needs a run this scale does not make, e.g. ImageNet top-1 at toy scale),
"not built" (a method of other authors this project does not implement).

Run by the `aggregate` rule (Snakemake `script:`) or imported by the tests.
"""

import json
import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

MATCH, DIFF, NOT_RUN, NOT_BUILT, NO_COUNT, SMOKE = (
    "matches", "differs", "not run at this scale", "not built", "not measured", "smoke: not a result")
VERDICTS = (MATCH, DIFF, NOT_RUN, NOT_BUILT, NO_COUNT, SMOKE)
# What a verdict rests on. Token counts get no verdict: the model name fixes them.
COUNTED, MEASURED, TRAINED, TRAINED_TOY, PUBLISHED_ONLY, SMOKE_RUN, FIXED, OFFICIAL_EVAL = (
    "counted from code", "measured here", "trained here", "trained here at toy scale", "published only",
    "smoke run", "fixed by the model name", "official checkpoint, evaluated here")
EVIDENCE = (COUNTED, MEASURED, TRAINED, TRAINED_TOY, OFFICIAL_EVAL, PUBLISHED_ONLY, SMOKE_RUN)


def evidence_of(metric: str, verdict_: str, smoke: bool = False) -> str:
    """The kind of evidence a comparison cell's verdict rests on. A published checkpoint evaluated
    here is its own kind, smoke run or not (the verdict says "smoke: not a result" there)."""
    if metric == "patches":
        return FIXED
    if metric == "top1_official":
        return OFFICIAL_EVAL
    if verdict_ in (NOT_RUN, NOT_BUILT, NO_COUNT, ""):
        return PUBLISHED_ONLY
    if metric == "top1":
        return SMOKE_RUN if smoke else TRAINED
    return COUNTED
# top1_official: the published weights of the row's model (official checkpoint or timm baseline),
# evaluated here; compared with the published top-1 within tolerance.official_top1
METRICS = ("params_m", "patches", "gmacs", "top1", "top1_official")
# published.csv's column for each of our metrics (its "gflops" are multiply-accumulates)
PUBLISHED_COLUMN = {"params_m": "params_m", "patches": "patches", "gmacs": "gflops", "top1": "top1",
                    "top1_official": "top1"}


def norm_kwargs(text) -> str:
    """'b=2,a=1' -> 'a=1,b=2' ('' for none), the join key with published.csv's model_kwargs."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    return ",".join(sorted(parts))


def read_published(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, comment="#", dtype={"model": str, "model_kwargs": str, "patches": str})
    df["model"] = df["model"].fillna("")
    df["model_kwargs"] = df["model_kwargs"].map(norm_kwargs)
    return df


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def verdict(metric: str, published, ours, tol: dict, run_here: bool = True) -> tuple[float, str]:
    """(delta ours - published, verdict) of one cell."""
    pub, our = _num(published), _num(ours)
    if math.isnan(pub):
        return math.nan, ""
    if math.isnan(our):
        return math.nan, NOT_RUN if metric == "top1" else NO_COUNT
    delta = our - pub
    if metric == "params_m":
        ok = abs(delta) <= tol["params_m"] + 1e-9
    elif metric == "gmacs":
        ok = abs(delta) <= tol["gmacs_rel"] * abs(pub) + 1e-12
    elif metric == "patches":
        ok = abs(delta) < 0.5
    elif metric == "top1":
        ok = abs(delta) <= tol["top1"] + 1e-9
    elif metric == "top1_official":
        ok = abs(delta) <= tol.get("official_top1", 0.3) + 1e-9
    else:
        raise ValueError(metric)
    return delta, MATCH if ok else DIFF


def read_jsons(paths: Iterable[str]) -> list[dict]:
    out = []
    for p in paths:
        with open(p) as f:
            out.append(json.load(f))
    return out


def _exp_seed(path: str) -> tuple[str, int]:
    """runs/<scale>/<exp>/seed<k>/metrics.json or results/<scale>/eval/<exp>/seed<k>.json."""
    p = Path(path)
    seed_part = p.parent.name if p.name == "metrics.json" else p.stem
    exp = p.parent.parent.name if p.name == "metrics.json" else p.parent.name
    return exp, int(seed_part.removeprefix("seed"))


def check_eval_source(ev: dict, path: str) -> None:
    """Refuse an eval whose weights are not known to be the checkpoint's: it must name its source, and
    an official checkpoint's key map must be complete (dart.evaluate records it under source.keymap)."""
    src = ev.get("source")
    if not isinstance(src, dict) or src.get("kind") not in ("run", "official", "pretrained"):
        raise ValueError(f"{path}: no record of the checkpoint it evaluated (source.kind); re-run dart.evaluate")
    km = src.get("keymap") or {}
    # an official checkpoint (by file or by tag) must have been loaded whole; timm's own loader
    # (baselines by tag) loads strictly and records no key map
    if (src["kind"] == "official" or "keymap" in src) and km.get("complete") is not True:
        left = [*km.get("unmapped", []), *km.get("missing", []), *[m[1] for m in km.get("mismatched", [])]]
        raise ValueError(f"{path}: the checkpoint's key map is not complete ({len(left)} keys not loaded: "
                         f"{', '.join(map(str, left[:10]))}); its score is not the checkpoint's")


def runs_table(metrics_paths: Iterable[str], eval_paths: Iterable[str], experiments: dict) -> pd.DataFrame:
    """One row per trained run; the evaluation's numbers win over the training's last validation.
    An eval without a complete key map is refused (`check_eval_source`)."""
    evals = {}
    for p in eval_paths:
        with open(p) as f:
            evals[_exp_seed(p)] = json.load(f)
        check_eval_source(evals[_exp_seed(p)], p)
    rows = []
    for p in metrics_paths:
        with open(p) as f:
            m = json.load(f)
        exp, seed = _exp_seed(p)
        e = evals.get((exp, seed), {})
        row = experiments.get(exp, {})
        rec = {"experiment": exp, "seed": m.get("seed", seed), "scale": row.get("scale"),
               "task": m.get("task", row.get("task")), "model": m.get("model", row.get("model")),
               "dataset": m.get("dataset")}
        for k in ("top1", "top5", "miou", "loss"):
            v = e.get(k, m.get(k))
            rec[k] = _num(v) if v is not None else math.nan
        for k in ("params_m", "gmacs", "num_tokens", "img_size", "epochs", "wall_s", "images_per_s"):
            rec[k] = _num(m.get(k))
        rec["train_top1"] = _num(m.get("top1"))
        rec["device"] = m.get("device")
        rec["skipped_files"] = len(m.get("skipped_files") or [])
        curve = m.get("loss_curve") or []
        rec["first_loss"] = _num(curve[0]) if curve else math.nan
        rec["last_loss"] = _num(curve[-1]) if curve else math.nan
        rows.append(rec)
    cols = ["experiment", "seed", "scale", "task", "model", "dataset", "top1", "top5", "miou", "loss",
            "params_m", "gmacs", "num_tokens", "img_size", "epochs", "wall_s", "images_per_s",
            "train_top1", "device", "skipped_files", "first_loss", "last_loss"]
    return pd.DataFrame(rows, columns=cols).sort_values(["experiment", "seed"], ignore_index=True)


def complexity_table(paths: Iterable[str], experiments: dict, groups: dict[str, list[str]]) -> pd.DataFrame:
    """One row per counted experiment. Each CSV is one bench.complexity call over `groups[<stem>]`,
    whose rows come in the order of the models given."""
    frames = []
    for p in paths:
        df = pd.read_csv(p)
        ids = groups[Path(p).stem]
        if len(ids) != len(df) or any(experiments[e]["model"] != m for e, m in zip(ids, df["model"])):
            raise ValueError(f"{p}: rows {list(df['model'])} do not match the experiments {ids}; "
                             "delete it and rerun")
        df.insert(0, "experiment", ids)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["experiment", "model", "model_kwargs", "params_m", "gmacs", "num_tokens"])
    df = pd.concat(frames, ignore_index=True)
    df["model_kwargs"] = [norm_kwargs(experiments[e].get("model_kwargs", "")) for e in df["experiment"]]
    return df


def throughput_table(paths: Iterable[str]) -> pd.DataFrame:
    frames = []
    for p in paths:
        df = pd.read_csv(p)
        df.insert(0, "sweep", Path(p).stem)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["sweep", "model", "batch_size", "mode", "status", "images_per_s"])
    return pd.concat(frames, ignore_index=True)


def _paper_gmacs(c) -> float:
    """Our GMACs under the counting convention of the model's published row, when the complexity
    CSV has it (older CSVs: our full count)."""
    v = c.get("gmacs_paper") if hasattr(c, "get") else None
    return float(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else c["gmacs"]


def comparison_table(published: pd.DataFrame, complexity: pd.DataFrame, runs: pd.DataFrame,
                     experiments: dict, scale: str, tol: dict, smoke: bool = False,
                     weights: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every published cell beside ours. Ours: full-size counts for params/GMACs/tokens; top-1 from
    this scale's runs of the same model (mean over seeds), when this scale trains it; beside the
    top-1, that of the model's published weights evaluated here (`weights`, from
    `published_weights_table`; rows without model_kwargs), when this scale evaluates them."""
    official_top1 = {}
    if weights is not None and len(weights):
        official_top1 = {m: t for m, t in zip(weights["model"], weights["top1"])}
    by_key = {}
    for _, c in complexity.iterrows():
        by_key.setdefault((c["model"], norm_kwargs(c["model_kwargs"])), c)
    trained_ids = {}
    for eid, row in experiments.items():
        if row.get("scale") == scale and row.get("train") and row.get("model"):
            trained_ids.setdefault((row["model"], norm_kwargs(row.get("model_kwargs", ""))), []).append(eid)
    out = []
    for i, pub in published.reset_index(drop=True).iterrows():
        key = (pub["model"], pub["model_kwargs"])
        built = bool(pub["model"])
        c = by_key.get(key)
        ids = trained_ids.get(key, [])
        top1 = runs.loc[runs["experiment"].isin(ids), "top1"].mean() if ids and len(runs) else math.nan
        ours = {"params_m": c["params_m"] if c is not None else math.nan,
                # counted as the published row was (== gmacs except Mamba rows; bench/complexity.py)
                "gmacs": _paper_gmacs(c) if c is not None else math.nan,
                "patches": c["num_tokens"] if c is not None else math.nan,
                "top1": top1,
                "top1_official": official_top1.get(pub["model"], math.nan) if not pub["model_kwargs"] else math.nan}
        for metric in METRICS:
            if metric == "top1_official" and (not built or math.isnan(_num(ours[metric]))):
                continue  # no published weights of this row's model evaluated here
            pv = pub.get(PUBLISHED_COLUMN[metric])
            if metric == "patches" and not str(pv).strip().isdigit():
                continue  # "dynamic": no fixed token count to compare
            if math.isnan(_num(pv)):
                continue  # the paper gives no number for this cell
            if not built:
                delta, v = math.nan, NOT_BUILT
            else:
                delta, v = verdict(metric, pv, ours[metric], tol, run_here=bool(ids))
                if metric == "patches":
                    v = ""  # the model name fixes the token count: nothing to reproduce
                elif metric in ("top1", "top1_official") and smoke and v in (MATCH, DIFF):
                    delta, v = math.nan, SMOKE  # two steps / made-up weights on fake data: means nothing
            out.append({"table": pub["table"], "row": i, "model": pub["model"],
                        "model_kwargs": pub["model_kwargs"], "backbone": pub["backbone"],
                        "tokenizer": pub.get("tokenizer"), "scorer": pub.get("scorer"),
                        "long_seq": pub.get("long_seq"), "label": row_label(pub), "metric": metric,
                        "published": _num(pv), "ours": _num(ours[metric]) if built else math.nan,
                        "delta": delta, "verdict": v, "evidence": evidence_of(metric, v, smoke)})
    return pd.DataFrame(out)


def published_weights_table(paths: Iterable[str], weights: dict, tol: dict, smoke: bool = False) -> pd.DataFrame:
    """One row per published checkpoint evaluated here (results/<scale>/published/<tag>/eval.json):
    where it came from, its published top-1 (None: no published row), ours, delta and verdict
    (within tolerance.official_top1). An eval that is not of published weights, or whose key map is
    not complete, is refused (`check_eval_source`)."""
    rows = []
    for p in paths:
        name = Path(p).parent.name if Path(p).name == "eval.json" else Path(p).name.removesuffix(".json")
        with open(p) as f:
            ev = json.load(f)
        check_eval_source(ev, p)
        src = ev["source"]
        if src["kind"] != "pretrained" or src.get("name") != name:
            raise ValueError(f"{p}: not the evaluation of the published weights {name} (source: {src.get('name')})")
        w = weights.get(name, {})
        pub = w.get("published_top1")
        delta, v = verdict("top1_official", pub if pub is not None else math.nan, ev.get("top1"), tol)
        if smoke and v in (MATCH, DIFF):
            delta, v = math.nan, SMOKE
        rows.append({"name": name, "kind": w.get("kind", ""), "model": ev.get("model"), "file": w.get("file", ""),
                     "source": src.get("file", ""), "published_top1": _num(pub), "top1": _num(ev.get("top1")),
                     "top5": _num(ev.get("top5")), "delta": delta, "verdict": v,
                     "evidence": OFFICIAL_EVAL if v else "", "val_samples": ev.get("val_samples"),
                     "dataset": ev.get("dataset"), "img_size": ev.get("img_size"), "amp": ev.get("amp"),
                     "device": ev.get("device"), "transform_differs": ";".join(src.get("transform_differs") or []),
                     "wall_s": _num(ev.get("wall_s"))})
    cols = ["name", "kind", "model", "file", "source", "published_top1", "top1", "top5", "delta", "verdict",
            "evidence", "val_samples", "dataset", "img_size", "amp", "device", "transform_differs", "wall_s"]
    order = list(weights)
    df = pd.DataFrame(rows, columns=cols)
    return df.assign(_o=df["name"].map(lambda n: order.index(n) if n in order else len(order))).sort_values(
        "_o", ignore_index=True).drop(columns="_o")


def row_label(pub) -> str:
    parts = [str(pub["backbone"])]
    tok = pub.get("tokenizer")
    if isinstance(tok, str) and tok:
        parts.append(tok.upper() if tok == "dart" else tok)
    sc = pub.get("scorer")
    if isinstance(sc, str) and sc and sc != "none":
        parts.append(f"scorer {sc}")
    p = pub.get("patches")
    if isinstance(p, str) and p:
        parts.append(f"{p} tokens")
    if _num(pub.get("long_seq")) == 1:
        parts.append("long-seq")
    return ", ".join(parts)


def _pub_row(published: pd.DataFrame, **eq) -> pd.Series | None:
    m = pd.Series(True, index=published.index)
    for k, v in eq.items():
        m &= published[k].astype(str) == str(v)
    hit = published[m]
    return hit.iloc[0] if len(hit) else None


def _ours(complexity: pd.DataFrame, model: str, metric: str, kwargs: str = "") -> float:
    hit = complexity[(complexity["model"] == model) & (complexity["model_kwargs"].map(norm_kwargs) == kwargs)]
    return float(hit.iloc[0][metric]) if len(hit) else math.nan


def _per_round(row) -> list[float]:
    text = row.get("images_per_s_per_round") if hasattr(row, "get") else None
    vals = [_num(v) for v in str(text).split(";")] if isinstance(text, str) and text else []
    vals = [v for v in vals if not math.isnan(v)]
    return vals or [_num(row["images_per_s"])]


def speed_by_batch(throughput: pd.DataFrame, a: str, b: str) -> list[dict]:
    """Per batch size where both ran: a's over b's images/s per round (interleaved rounds pair up),
    its median and min-max over rounds, and the context of the measurement."""
    if throughput.empty:
        return []
    t = throughput[(throughput["status"] == "ok") & (throughput["mode"] == "infer")]
    out = []
    for bs in sorted(set(t.loc[t["model"] == a, "batch_size"]) & set(t.loc[t["model"] == b, "batch_size"])):
        ra, rb = t[(t["model"] == a) & (t["batch_size"] == bs)].iloc[-1], t[(t["model"] == b) & (t["batch_size"] == bs)].iloc[-1]
        pa, pb = _per_round(ra), _per_round(rb)
        ratios = [x / y for x, y in zip(pa, pb) if y > 0] if len(pa) == len(pb) else [
            _num(ra["images_per_s"]) / _num(rb["images_per_s"])]
        ratios = sorted(ratios)
        out.append({"batch_size": int(bs), "ratio": float(pd.Series(ratios).median()), "min": ratios[0],
                    "max": ratios[-1], "rounds": len(ratios),
                    "device_type": str(ra.get("device_type", "") or ""), "device": str(ra.get("device", "") or ""),
                    "threads": ra.get("torch_threads")})
    return out


def speed_claim_rows(throughput: pd.DataFrame, a: str, b: str, flop_bound: float, tol: dict,
                     smoke: bool = False, machine: dict | None = None) -> list[dict]:
    need = tol.get("speedup", 1.6)
    claim = "DART DeiT-S at 392 tokens reaches DeiT-B's top-1 at nearly twice the inference speed (GPU)"
    row = "main: deit_small, DART, 392 tokens, long-seq"
    bound = (f"; FLOP bound {flop_bound:.2f}x (DeiT-B / DART GMACs)" if not math.isnan(flop_bound) else "")
    load = ""
    if machine:
        load = (f"; machine: {machine.get('cpus', '?')} CPUs, load average {machine.get('load_before', '?')} "
                f"before / {machine.get('load_after', '?')} after the sweep")
    per_bs = speed_by_batch(throughput, a, b)
    if not per_bs:
        return [{"claim": claim, "row": row, "quantity": "throughput ratio vs DeiT-B", "published": math.nan,
                 "ours": math.nan, "spread": "", "detail": "no side-by-side measurement in this run" + bound,
                 "verdict": NOT_RUN, "evidence": PUBLISHED_ONLY,
                 "rule": f"the paper says 'nearly twice' (no number); a GPU ratio of {need} or more counts"}]
    out = []
    for s in per_bs:
        on_gpu = s["device_type"] == "cuda"
        if smoke:
            v = SMOKE
        elif not on_gpu:
            v = ""  # a GPU claim gets no verdict from a CPU measurement
        else:
            v = MATCH if s["ratio"] >= need else DIFF
        threads = _num(s["threads"])
        out.append({
            "claim": claim, "row": row, "quantity": f"throughput ratio vs DeiT-B, batch {s['batch_size']}",
            "published": math.nan, "ours": s["ratio"],
            "spread": f"{s['min']:.2f}-{s['max']:.2f} over {s['rounds']} round(s)",
            "detail": (f"median over rounds on {s['device'] or s['device_type']}"
                       + (f", {int(threads)} threads" if not math.isnan(threads) else "") + bound + load
                       + ("" if on_gpu else "; measured on a CPU: no verdict on a GPU claim")),
            "verdict": v, "evidence": SMOKE_RUN if smoke else MEASURED,
            "rule": f"the paper says 'nearly twice' (no number); a GPU ratio of {need} or more counts"})
    return out


def tokenizer_overhead_rows(main: pd.DataFrame, complexity: pd.DataFrame, tol: dict) -> list[dict]:
    """DART's cost over its own grid model (196 tokens), params and GMACs, apart from the totals:
    a 5% match of the totals can hide a tokenizer that costs a third less than published."""
    rows = []
    for _, d in main[(main["tokenizer"] == "dart") & (main["long_seq"] == 0)].iterrows():
        g = _pub_row(main[(main["tokenizer"] == "grid") & (main["long_seq"] == 0)], backbone=d["backbone"])
        if g is None:
            continue
        pub = float(d["gflops"]) - float(g["gflops"])
        ours = _ours(complexity, d["model"], "gmacs_paper" if "gmacs_paper" in complexity else "gmacs") - _ours(
            complexity, g["model"], "gmacs_paper" if "gmacs_paper" in complexity else "gmacs")
        ok = abs(ours - pub) <= tol["gmacs_rel"] * abs(pub) + 0.005  # the table's 2-decimal rounding
        rows.append({
            "claim": f"{d['backbone']}: the DART tokenizer's GMACs over the grid model",
            "row": f"main: {d['backbone']}, DART vs grid, 196 tokens", "quantity": "extra GMACs",
            "published": pub, "ours": ours, "spread": "",
            "detail": (f"{100 * (ours - pub) / pub:+.0f}% vs published (table difference, 2 decimals)"
                       if not math.isnan(ours) and pub else "not counted in this run"),
            "verdict": NO_COUNT if math.isnan(ours) else (MATCH if ok else DIFF),
            "evidence": PUBLISHED_ONLY if math.isnan(ours) else COUNTED,
            "rule": f"within {100 * tol['gmacs_rel']:.0f}% (+0.005 rounding) of the table's difference"})
    return rows


def claims_table(published: pd.DataFrame, complexity: pd.DataFrame, throughput: pd.DataFrame,
                 runs: pd.DataFrame, experiments: dict, scale: str, tol: dict, smoke: bool = False,
                 machine: dict | None = None) -> pd.DataFrame:
    """The paper's headline claims, each tied to its published row(s) and our measured figure."""
    main = published[published["table"] == "main"]
    rows = []
    # 1. DART DeiT-S, 392 tokens: DeiT-B's top-1 at nearly twice the speed (a GPU claim; the paper
    #    gives no number, only "nearly twice"): one row per batch size, with the spread over rounds
    dart392, base = "dart_deit_small_patch16_224_392", "deit_base_patch16_224"
    g_dart, g_base = _ours(complexity, dart392, "gmacs"), _ours(complexity, base, "gmacs")
    rows += speed_claim_rows(throughput, dart392, base, g_base / g_dart if g_dart else math.nan, tol,
                             smoke=smoke, machine=machine)
    rows.append({
        "claim": "... at fewer multiply-accumulates than DeiT-B (the source of the speed-up)",
        "row": "main: deit_small, DART, 392 tokens, long-seq", "quantity": "GMACs ratio DeiT-B / DART",
        "published": math.nan, "ours": g_base / g_dart if g_dart else math.nan,
        "detail": (f"{g_base:.2f} / {g_dart:.2f} GMACs (counted)" if not math.isnan(g_base / g_dart if g_dart else math.nan)
                   else "DeiT-B or DART DeiT-S-392 not counted in this run"), "verdict": "",
        "rule": "informative: the paper gives no DeiT-B GMACs in its tables"})
    pub392 = _pub_row(main, model=dart392)
    ids = [e for e, r in experiments.items() if r.get("model") == dart392 and r.get("scale") == scale
           and r.get("train")]
    top1 = runs.loc[runs["experiment"].isin(ids), "top1"].mean() if ids and len(runs) else math.nan
    top1_verdict = verdict("top1", pub392["top1"] if pub392 is not None else math.nan, top1, tol)[1]
    if smoke and top1_verdict in (MATCH, DIFF):
        top1_verdict = SMOKE
    rows.append({
        "claim": "... with the same top-1 as DeiT-B", "row": "main: deit_small, DART, 392 tokens, long-seq",
        "quantity": "ImageNet-1K top-1 (%)", "published": _num(pub392["top1"]) if pub392 is not None else math.nan,
        "ours": top1, "detail": "needs the paper-scale run" if math.isnan(top1) else "our run",
        "verdict": top1_verdict, "evidence": evidence_of("top1", top1_verdict, smoke),
        "rule": f"within {tol['top1']} points"})
    # 2. FLOP cuts of the long-sequence rows: DART at 392 tokens vs the longest grid row of its backbone
    for _, d in main[(main["tokenizer"] == "dart") & (main["long_seq"] == 1)].iterrows():
        grid = main[(main["backbone"] == d["backbone"]) & (main["tokenizer"] == "grid") & (main["long_seq"] == 1)]
        if grid.empty:
            continue
        g = grid.assign(_p=grid["patches"].astype(int)).sort_values("_p").iloc[-1]
        pub_cut = 1 - float(d["gflops"]) / float(g["gflops"])
        our_d, our_g = _ours(complexity, d["model"], "gmacs"), _ours(complexity, g["model"], "gmacs")
        our_cut = 1 - our_d / our_g if our_g and not math.isnan(our_g) else math.nan
        ok = abs(our_cut - pub_cut) <= tol["gmacs_rel"]
        rows.append({
            "claim": f"{d['backbone']}: DART at {d['patches']} tokens needs fewer FLOPs than the grid at {g['patches']}",
            "row": f"main: {d['backbone']}, DART {d['patches']} vs grid {g['patches']} tokens, long-seq",
            "quantity": "FLOP cut (%)", "published": 100 * pub_cut, "ours": 100 * our_cut,
            "detail": (f"{our_d:.2f} vs {our_g:.2f} GMACs (counted)" if not math.isnan(our_cut)
                       else "not counted in this run"),
            "verdict": NO_COUNT if math.isnan(our_cut) else (MATCH if ok else DIFF),
            "rule": f"within {100 * tol['gmacs_rel']:.0f} points"})
    # 3. The tokenizer costs about 1M parameters: DART vs grid, 196 tokens
    for _, d in main[(main["tokenizer"] == "dart") & (main["long_seq"] == 0)].iterrows():
        g = _pub_row(main[(main["tokenizer"] == "grid") & (main["long_seq"] == 0)], backbone=d["backbone"])
        if g is None:
            continue
        pub_extra = float(d["params_m"]) - float(g["params_m"])
        our_extra = _ours(complexity, d["model"], "params_m") - _ours(complexity, g["model"], "params_m")
        rows.append({
            "claim": f"{d['backbone']}: the DART tokenizer adds about 1M parameters",
            "row": f"main: {d['backbone']}, DART vs grid, 196 tokens", "quantity": "extra parameters (M)",
            "published": pub_extra, "ours": our_extra,
            "detail": (f"published params are rounded to 1M; ours {_ours(complexity, d['model'], 'params_m'):.2f} "
                       f"vs {_ours(complexity, g['model'], 'params_m'):.2f}M" if not math.isnan(our_extra)
                       else "not counted in this run"),
            "verdict": NO_COUNT if math.isnan(our_extra) else
            (MATCH if abs(our_extra - pub_extra) <= tol["params_m"] else DIFF),
            "rule": f"within {tol['params_m']}M of the table's difference"})
    # 4. ... and its GMACs over the grid, apart from the totals
    rows += tokenizer_overhead_rows(main, complexity, tol)
    for r in rows:  # the rest are counts (or absent)
        r.setdefault("spread", "")
        r.setdefault("evidence", PUBLISHED_ONLY if r["verdict"] in (NOT_RUN, NO_COUNT, NOT_BUILT) else COUNTED)
    return pd.DataFrame(rows)


def evidence_counts(comparison: pd.DataFrame, claims: pd.DataFrame) -> dict:
    """{evidence kind: {verdict: count}} over the comparison cells and the claims with a verdict."""
    out: dict = {}
    for df in (comparison, claims):
        if df is None or not len(df) or "evidence" not in df:
            continue
        for ev, v in zip(df["evidence"], df["verdict"].fillna("")):
            if v:
                out.setdefault(ev, {}).setdefault(v, 0)
                out[ev][v] += 1
    return out


def verdict_counts(comparison: pd.DataFrame, claims: pd.DataFrame | None = None) -> dict:
    vals = list(comparison["verdict"]) if len(comparison) else []
    if claims is not None and len(claims):
        vals += list(claims["verdict"])
    return {v: sum(1 for x in vals if x == v) for v in VERDICTS}


def read_machine(paths: Iterable[str]) -> dict:
    """Load and CPU count around the headline sweep (workflow/scripts/machine_load.py files)."""
    for p in paths:
        if Path(p).stem.startswith("headline"):
            with open(p) as f:
                return json.load(f)
    return {}


def aggregate(*, published: str, complexity: list[str], metrics: list[str], evals: list[str],
              benches: list[str], experiments: dict, groups: dict, scale: str, tolerance: dict,
              outdir: str, rows_scale: str | None = None, smoke: bool = False,
              machine: Iterable[str] = (), weights: Iterable[str] = (),
              published_weights: dict | None = None) -> dict:
    os.makedirs(outdir, exist_ok=True)
    pub = read_published(published)
    comp = complexity_table(complexity, experiments, groups)
    runs = runs_table(metrics, evals, experiments)
    thr = throughput_table(benches)
    pw = published_weights_table(weights, published_weights or {}, tolerance, smoke=smoke)
    rows = rows_scale or scale  # the smoke scale trains the paper's rows
    cmp_ = comparison_table(pub, comp, runs, experiments, rows, tolerance, smoke=smoke, weights=pw)
    claims = claims_table(pub, comp, thr, runs, experiments, rows, tolerance, smoke=smoke,
                          machine=read_machine(machine))
    paths = {}
    for name, df in (("runs", runs), ("complexity", comp), ("throughput", thr), ("comparison", cmp_),
                     ("claims", claims), ("published_weights", pw)):
        paths[name] = os.path.join(outdir, f"{name}.csv")
        df.to_csv(paths[name], index=False)
    return paths


def _from_snakemake(smk) -> None:  # pragma: no cover - exercised by the workflow tests
    aggregate(published=smk.input.published, complexity=list(smk.input.complexity),
              metrics=list(smk.input.metrics), evals=list(smk.input.evals), benches=list(smk.input.benches),
              experiments=smk.params.experiments, groups=smk.params.groups, scale=smk.params.scale,
              tolerance=smk.params.tolerance, outdir=os.path.dirname(smk.output.comparison),
              rows_scale=smk.params.rows_scale, smoke=smk.params.smoke, machine=list(smk.input.machine),
              weights=list(smk.input.weights), published_weights=smk.params.published_weights)


if "snakemake" in globals():  # run by Snakemake's `script:` directive
    import logging
    import sys
    with open(snakemake.log[0], "w") as _log:  # noqa: F821
        sys.stderr = _log
        logging.basicConfig(stream=_log, level=logging.INFO)
        _from_snakemake(snakemake)  # noqa: F821
