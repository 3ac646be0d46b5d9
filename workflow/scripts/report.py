"""reports/paper_tables.html: the paper's tables rebuilt from our results, one self-contained page.

Jinja2 with autoescape on (workflow/templates/paper_tables.html.j2, which extends base.html.j2);
every image is an inlined PNG (data: URI); no script, no network. Inputs are the tidy CSVs of
`aggregate.py`, the partition pictures, the config and, at a scale with the resolution claim, its
toy verdicts (results/<scale>/claim/verdicts.csv of `claim_report.py`; the page links claim.html).

Run by the `report` rule (Snakemake `script:`) or imported by the tests (`render(...)`).
"""

import csv
import io
import json
import math
import os
import platform
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from page import TEMPLATE_DIR, environment, generated, git_info, png_data_uri, versions, write_text  # noqa: E402

TEMPLATE = "paper_tables.html.j2"
# the resolution claim's page (claim_report.py), beside this one in reports/
CLAIM_PAGE = "claim.html"

TABLE_TITLES = {
    "main": "Main results (ImageNet-1K)",
    "dynamic_tokenizers": "Comparison with other dynamic-inference methods (ImageNet-1K)",
    "scorer_ablation": "Ablation of the scoring network (DeiT-Ti, ImageNet-1K)",
}
METRIC_TITLES = {"params_m": "Params (M)", "patches": "Tokens", "gmacs": "GFLOPs (GMACs)", "top1": "Top-1 (%)",
                 "top1_official": "Top-1 (%), official checkpoint evaluated here"}
VERDICT_CLASS = {"matches": "ok", "differs": "bad", "not run at this scale": "na", "not built": "na",
                 "not measured": "na", "smoke: not a result": "smoke", "": "na",
                 # the resolution claim's verdicts (claim_report.py)
                 "holds": "ok", "does not hold": "bad", "inconclusive": "warn", "no test": "na"}
# short labels of the evidence kinds, printed under each verdict
EVIDENCE_SHORT = {"counted from code": "counted", "measured here": "measured", "trained here": "trained",
                  "trained here at toy scale": "toy-trained", "published only": "published only",
                  "smoke run": "smoke run", "fixed by the model name": "fixed by name",
                  "official checkpoint, evaluated here": "official checkpoint"}


def fmt(x, digits: int = 2) -> str:
    """A number for a table cell: '' for missing, integers without decimals."""
    if x is None:
        return ""
    if isinstance(x, str):
        return x
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return ""
    if abs(v - round(v)) < 1e-9 and abs(v) >= 1 and digits <= 2:
        return f"{int(round(v))}"
    return f"{v:.{digits}f}"


def fmt_delta(x, digits: int = 2) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return ""
    if math.isnan(v):
        return ""
    return f"{v:+.{digits}f}"


def figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return png_data_uri(buf.getvalue())


# ------------------------------------------------------------------------------------ sections

def paper_tables(comparison: pd.DataFrame) -> list[dict]:
    """One table per published table; a row per published row; per metric the four cells."""
    tables = []
    if comparison.empty:
        return tables
    for name in [t for t in TABLE_TITLES if t in set(comparison["table"])] + sorted(
            set(comparison["table"]) - set(TABLE_TITLES)):
        sub = comparison[comparison["table"] == name]
        metrics = [m for m in METRIC_TITLES if m in set(sub["metric"])]
        rows = []
        for row_id, cells in sub.groupby("row", sort=True):
            first = cells.iloc[0]
            by_metric = {c["metric"]: c for _, c in cells.iterrows()}
            out_cells = []
            for m in metrics:
                c = by_metric.get(m)
                if c is None:
                    out_cells.append({"metric": m, "published": "", "ours": "", "delta": "", "verdict": "",
                                      "css": "na", "evidence": "", "evidence_long": ""})
                    continue
                digits = 0 if m == "patches" else (1 if m.startswith("top1") else 2)
                ev = c.get("evidence") if isinstance(c.get("evidence"), str) else ""
                out_cells.append({"metric": m, "published": fmt(c["published"], digits),
                                  "ours": fmt(c["ours"], digits), "delta": fmt_delta(c["delta"], digits),
                                  "verdict": c["verdict"], "css": VERDICT_CLASS.get(c["verdict"], "na"),
                                  "evidence": EVIDENCE_SHORT.get(ev, ev), "evidence_long": ev})
            rows.append({"label": first["label"], "model": first["model"] or "(not built here)",
                         "model_kwargs": first["model_kwargs"] or "", "cells": out_cells})
        tables.append({"name": name, "title": TABLE_TITLES.get(name, name),
                       "metrics": [(m, METRIC_TITLES[m]) for m in metrics], "rows": rows,
                       "verdict_metrics": [m for m in metrics if m != "patches"]})
    return tables


def toy_claims(path: str | None) -> dict | None:
    """The resolution claim's verdicts at toy scale (verdicts.csv of claim_report.py) for the
    headline claims, each with its evidence kind and the claim page's link (None: no file)."""
    if not path:
        return None
    from aggregate import TRAINED_TOY
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = [{"claim": r.get("claim") or "", "method": r.get("method") or "", "numbers": r.get("numbers") or "",
            "verdict": r.get("verdict") or "", "css": VERDICT_CLASS.get(r.get("verdict") or "", "na"),
            "evidence": TRAINED_TOY} for r in rows]
    return {"rows": out, "methods": any(r["method"] for r in out), "page": CLAIM_PAGE}


def claims_rows(claims: pd.DataFrame) -> list[dict]:
    out = []
    for _, c in claims.iterrows():
        digits = 1 if "%" in str(c["quantity"]) else 2
        out.append({"claim": c["claim"], "row": c["row"], "quantity": c["quantity"],
                    "published": fmt(c["published"], digits), "ours": fmt(c["ours"], digits),
                    "detail": c["detail"] if isinstance(c["detail"], str) else "",
                    "verdict": c["verdict"] if isinstance(c["verdict"], str) else "",
                    "css": VERDICT_CLASS.get(c["verdict"] if isinstance(c["verdict"], str) else "", "na"),
                    "spread": c.get("spread") if isinstance(c.get("spread"), str) else "",
                    "evidence": c.get("evidence") if isinstance(c.get("evidence"), str) else "",
                    "rule": c["rule"]})
    return out


def published_weights_rows(weights: pd.DataFrame) -> list[dict]:
    """The published checkpoints evaluated here, a row each (aggregate.published_weights_table)."""
    out = []
    for _, w in weights.iterrows():
        v = w["verdict"] if isinstance(w["verdict"], str) else ""
        out.append({"name": w["name"], "kind": w["kind"] if isinstance(w["kind"], str) else "",
                    "file": w["file"] if isinstance(w["file"], str) else "",
                    "source": w["source"] if isinstance(w["source"], str) else "",
                    "published": fmt(w["published_top1"], 1) or "none published", "ours": fmt(w["top1"], 2),
                    "top5": fmt(w["top5"], 2), "delta": fmt_delta(w["delta"], 2), "verdict": v,
                    "css": VERDICT_CLASS.get(v, "na"), "samples": fmt(w["val_samples"], 0),
                    "transform_differs": w["transform_differs"] if isinstance(w["transform_differs"], str) else ""})
    return out


def published_weights_words(weights: pd.DataFrame, smoke: bool, tol: float) -> list[str]:
    if weights is None or not len(weights):
        return []
    if smoke:
        return [f"Published weights: {len(weights)} evaluation jobs ran on made-up checkpoints in the published files' "
                f"layouts (smoke: not a result)."]
    pub = weights[weights["published_top1"].notna()]
    ok = int((pub["verdict"] == "matches").sum())
    return [f"Published weights evaluated here: {ok} of {len(pub)} checkpoints with a published top-1 reach it within "
            f"{tol} points ({len(weights)} evaluated: the official DART checkpoints and the grid baselines' timm "
            f"weights; the evidence kind 'official checkpoint, evaluated here')."]


def summary_words(comparison: pd.DataFrame, claims: pd.DataFrame, smoke: bool, toy: dict | None = None) -> list[str]:
    """What was and was not reproduced, in sentences, from the verdicts and their evidence (`toy`:
    the resolution claim's verdicts at toy scale, `toy_claims`)."""
    def n(df, **eq):
        m = pd.Series(True, index=df.index)
        for k, v in eq.items():
            m &= df[k] == v
        return int(m.sum())
    out = []
    if smoke:
        out.append("This is a smoke run: every job of the paper scale ran at full model size for a few steps on "
                   "fake data. It shows that the jobs run, not what they produce; no trained number here is a result.")
    top1 = comparison[comparison["metric"] == "top1"] if len(comparison) else comparison
    if len(top1):
        trained = n(top1, evidence="trained here")
        out.append(f"Top-1: {n(top1, verdict='matches')} of {len(top1)} published cells reproduced "
                   f"({trained} trained here at the paper's scale; the others need an ImageNet-1K run this scale "
                   f"does not make, or a method not built here).")
    official = comparison[comparison["metric"] == "top1_official"] if len(comparison) else comparison
    if len(official) and not smoke:
        out.append(f"Top-1 of the published weights: {n(official, verdict='matches')} of {len(official)} published "
                   f"cells match the official checkpoint (or the baseline's published weights) evaluated here.")
    if toy and toy["rows"]:
        tally = {}
        for r in toy["rows"]:
            tally[r["verdict"]] = tally.get(r["verdict"], 0) + 1
        out.append(f"The resolution claim at toy scale, trained here ({CLAIM_PAGE}): of {len(toy['rows'])} verdicts, "
                   + ", ".join(f'{count} "{v}"' for v, count in tally.items()) + ".")
    counted = comparison[comparison["evidence"] == "counted from code"] if len(comparison) else comparison
    if len(counted):
        out.append(f"Parameters and GMACs: {n(counted, verdict='matches')} of {len(counted)} cells match, "
                   f"{n(counted, verdict='differs')} differ. These are counted from the code of the models, "
                   f"not trained: they check that we built the published architectures.")
    if len(claims):
        speed = claims[claims["quantity"].astype(str).str.startswith("throughput ratio")]
        if len(speed):
            measured = speed[speed["evidence"] == "measured here"]
            gpu_verdicts = measured[measured["verdict"].isin(["matches", "differs"])]
            if len(gpu_verdicts):
                out.append(f"Speed: {n(gpu_verdicts, verdict='matches')} of {len(gpu_verdicts)} batch sizes "
                           f"reach the claimed ratio on a GPU.")
            elif len(measured):
                out.append("Speed: measured on a CPU only; the paper's claim is about a GPU, so it gets no verdict "
                           "here (the ratios per batch size are shown with their spread).")
        over = claims[(claims["quantity"] == "extra GMACs") & claims["verdict"].isin(["matches", "differs"])]
        if len(over):
            out.append(f"The tokenizer's own GMACs over its grid model: {n(over, verdict='matches')} of {len(over)} "
                       f"counted backbones match the published overhead" + (
                           f"; {n(over, verdict='differs')} differ, although their totals may match within the "
                           f"tolerance (the overhead is a small part of the total)." if n(over, verdict="differs")
                           else "."))
    out.append("Token counts get no verdict: the model name fixes them.")
    return out


def rule_times(paths) -> list[dict]:
    """Wall time per rule from Snakemake's `benchmark:` files (results/.../benchmarks/<rule>/...)."""
    per_rule: dict = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            continue
        try:
            df = pd.read_csv(p, sep="\t")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        if "s" not in df or not len(df):
            continue
        rule = p.parent.name if p.parent.name != "benchmarks" else p.stem
        rec = per_rule.setdefault(rule, {"rule": rule, "jobs": 0, "wall_s": 0.0, "max_s": 0.0, "max_rss_mib": 0.0,
                                         "cpu_s": 0.0})
        wall = float(df["s"].iloc[-1])
        rec["jobs"] += 1
        rec["wall_s"] += wall
        if "cpu_time" in df and not math.isnan(_f(df["cpu_time"].iloc[-1])):
            rec["cpu_s"] += _f(df["cpu_time"].iloc[-1])
        rec["max_s"] = max(rec["max_s"], wall)
        if "max_rss" in df and not math.isnan(_f(df["max_rss"].iloc[-1])):
            rec["max_rss_mib"] = max(rec["max_rss_mib"], _f(df["max_rss"].iloc[-1]))
    rows = sorted(per_rule.values(), key=lambda r: -r["wall_s"])
    total = sum(r["wall_s"] for r in rows)
    return [{"rule": r["rule"], "jobs": r["jobs"], "wall_s": fmt(r["wall_s"], 1), "max_s": fmt(r["max_s"], 1),
             "cpu_s": fmt(r["cpu_s"], 1),
             "share": f"{100 * r['wall_s'] / total:.0f}%" if total else "", "max_rss_mib": fmt(r["max_rss_mib"], 0)}
            for r in rows]


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def complexity_rows(complexity: pd.DataFrame) -> list[dict]:
    out = []
    for _, c in complexity.iterrows():
        out.append({"experiment": c["experiment"], "model": c["model"],
                    "model_kwargs": c.get("model_kwargs") if isinstance(c.get("model_kwargs"), str) else "",
                    "params_m": fmt(c["params_m"], 3), "trainable_params_m": fmt(c.get("trainable_params_m"), 3),
                    "gmacs": fmt(c["gmacs"], 3), "gmacs_paper": fmt(c.get("gmacs_paper", c["gmacs"]), 3),
                    "macs_convention": c.get("macs_convention") if isinstance(c.get("macs_convention"), str) else "full",
                    "num_tokens": fmt(c.get("num_tokens"), 0),
                    "input": c.get("input_shape", "")})
    return out


def runs_rows(runs: pd.DataFrame) -> list[dict]:
    out = []
    for _, r in runs.iterrows():
        metric = "mIoU" if r["task"] == "segmentation" else "top-1"
        value = r["miou"] if r["task"] == "segmentation" else r["top1"]
        out.append({"experiment": r["experiment"], "seed": fmt(r["seed"], 0), "task": r["task"],
                    "model": r["model"], "metric": metric, "value": fmt(value, 1),
                    "params_m": fmt(r["params_m"], 3), "gmacs": fmt(r["gmacs"], 4),
                    "tokens": fmt(r["num_tokens"], 0), "img_size": fmt(r["img_size"], 0),
                    "epochs": fmt(r["epochs"], 0), "wall_s": fmt(r["wall_s"], 0),
                    "loss": f"{fmt(r['first_loss'], 3)} → {fmt(r['last_loss'], 3)}"
                    if not math.isnan(float(r["first_loss"])) else ""})
    return out


def toy_pairs(runs: pd.DataFrame) -> list[dict]:
    """Grid vs DART at the same task and token count, at the toy scale (mean over seeds): the toy
    counterpart of the paper's rows. Runs without a partner of the other kind at the same budget
    (DART-2N, grid-4N) are left to the runs table and reports/claim.html."""
    out = []
    if runs.empty:
        return out
    runs = runs.assign(dart=runs["model"].astype(str).str.startswith("dart_"))
    for (task, tokens), sub in runs.groupby(["task", "num_tokens"]):
        metric = "miou" if task == "segmentation" else "top1"
        grid, dart = sub[~sub["dart"]], sub[sub["dart"]]
        if grid.empty or dart.empty:
            continue
        g, d = grid[metric].mean(), dart[metric].mean()
        out.append({"task": task, "metric": "mIoU" if metric == "miou" else "top-1", "tokens": fmt(tokens, 0),
                    "grid": fmt(g, 1), "dart": fmt(d, 1), "delta": fmt_delta(d - g, 1),
                    "grid_px": ", ".join(fmt(v, 0) for v in sorted(set(grid["img_size"]))),
                    "dart_px": ", ".join(fmt(v, 0) for v in sorted(set(dart["img_size"]))),
                    "seeds": ", ".join(str(int(s)) for s in sorted(set(sub["seed"])))})
    return out


def short_labels(models) -> dict:
    """Plot labels: the timm name without the spec's key=val list, unless two specs share a name."""
    models = list(dict.fromkeys(models))
    short = {m: m.split(":", 1)[0] for m in models}
    if len(set(short.values())) < len(models):
        return {m: m for m in models}
    return {m: short[m] + (" (toy size)" if ":" in m else "") for m in models}


def throughput_plots(throughput: pd.DataFrame) -> list[dict]:
    """Per sweep: images/s and peak memory against batch size (seaborn), inlined."""
    if throughput.empty:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    out = []
    ok = throughput[throughput["status"] == "ok"].copy()
    for sweep, sub in ok.groupby("sweep", sort=True):
        sub = sub.copy()
        labels = short_labels(sub["model"])
        sub["label"] = sub["model"].map(labels)
        mem_col, mem_label = memory_column(sub)
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        sns.lineplot(data=sub, x="batch_size", y="images_per_s", hue="label", marker="o", ax=axes[0])
        axes[0].set(xscale="log", xlabel="batch size", ylabel="images / s",
                    title=f"{sweep}: throughput")
        if mem_col:
            sns.lineplot(data=sub, x="batch_size", y=mem_col, hue="label", marker="o", ax=axes[1], legend=False)
            axes[1].set(xscale="log", xlabel="batch size", ylabel=mem_label, title=f"{sweep}: peak memory")
        else:
            axes[1].set_axis_off()
        sizes = sorted(set(int(b) for b in sub["batch_size"]))
        for ax in axes:
            if not ax.axison:
                continue
            ax.set_xticks(sizes)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, alpha=0.3)
        handles, names = axes[0].get_legend_handles_labels()
        if axes[0].get_legend() is not None:
            axes[0].get_legend().remove()
        fig.legend(handles, names, loc="lower center", ncol=min(3, max(1, len(names))), fontsize=8,
                   frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.05 * ((len(names) - 1) // 3)))
        fig.tight_layout(rect=(0, 0.08 + 0.05 * ((len(names) - 1) // 3), 1, 1))
        table = []
        for _, r in sub.sort_values(["model", "batch_size"]).iterrows():
            lat = _f(r.get("latency_ms_median"))
            lo, hi = _f(r.get("images_per_s_round_min")), _f(r.get("images_per_s_round_max"))
            table.append({"model": r["model"], "batch_size": fmt(r["batch_size"], 0),
                          # images/s at the median latency: the figure consistent with the latency beside it
                          "images_per_s_median": fmt(float(r["batch_size"]) * 1000.0 / lat, 1)
                          if lat and not math.isnan(lat) else "",
                          "images_per_s": fmt(r["images_per_s"], 1),
                          "rounds": (f"{fmt(lo, 1)}–{fmt(hi, 1)}" if not (math.isnan(lo) or math.isnan(hi)) else ""),
                          "threads": fmt(r.get("torch_threads"), 0),
                          "latency_ms": fmt(r.get("latency_ms_median"), 1),
                          "memory": fmt(r.get(mem_col), 0) if mem_col else "",
                          "device": r.get("device", "")})
        failed = throughput[(throughput["sweep"] == sweep) & (throughput["status"] != "ok")]
        out.append({"sweep": sweep, "png": figure_uri(fig), "memory_label": mem_label or "memory",
                    "rows": table, "failed": [f"{r['model']} at batch {r['batch_size']}: {r['status']}"
                                              for _, r in failed.iterrows()]})
    return out


def memory_column(df: pd.DataFrame) -> tuple[str | None, str | None]:
    for col, label in (("torch_peak_alloc_mib", "peak allocated (MiB, torch)"),
                       ("nvml_used_peak_mib", "peak used (MiB, NVML)"),
                       ("rss_peak_delta_mib", "peak RSS above start (MiB)"),
                       ("rss_peak_mib", "peak RSS (MiB)")):
        if col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any():
            return col, label
    return None, None


def images(paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        with open(p, "rb") as f:
            out.append({"name": Path(p).stem, "png": png_data_uri(f.read())})
    return out


# ---------------------------------------------------------------------------------- provenance

def hardware(runs: pd.DataFrame, throughput: pd.DataFrame) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = ""
    try:
        mem_gb = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        pass
    devices = set()
    if not runs.empty:
        devices |= {str(d) for d in runs["device"].dropna()}
    if not throughput.empty and "device" in throughput.columns:
        devices |= {str(d) for d in throughput["device"].dropna()}
    return {"host": platform.node(), "os": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory": mem_gb, "devices used": ", ".join(sorted(devices)) or "cpu"}


# -------------------------------------------------------------------------------------- render

def config_text(config: dict) -> str:
    """The config as block YAML with every repeated value written out (no *id001 aliases)."""
    import yaml

    class NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return yaml.dump(config, Dumper=NoAliases, sort_keys=False, width=110)


def render(*, tidy: dict, partitions: list[str], config: dict, out: str, repo: Path | None = None,
           template: str | None = None, command: str = "", benchmarks=(), claim_verdicts: str | None = None) -> dict:
    """Write the HTML report; return the verdict counts (cells and claims). `claim_verdicts`: the
    resolution claim's verdicts.csv at this scale, shown in the headline claims (None: no claim)."""
    from aggregate import VERDICTS

    comparison = pd.read_csv(tidy["comparison"], keep_default_na=True)
    comparison["verdict"] = comparison.get("verdict", pd.Series(dtype=str)).fillna("")
    for col in ("model", "model_kwargs"):
        if col in comparison:
            comparison[col] = comparison[col].fillna("")
    claims = pd.read_csv(tidy["claims"])
    claims["verdict"] = claims["verdict"].fillna("")
    complexity = pd.read_csv(tidy["complexity"])
    runs = pd.read_csv(tidy["runs"])
    throughput = pd.read_csv(tidy["throughput"])
    weights = pd.read_csv(tidy["published_weights"]) if tidy.get("published_weights") else pd.DataFrame()

    counts = {v: int((comparison["verdict"] == v).sum()) + int((claims["verdict"] == v).sum())
              for v in VERDICTS}
    from aggregate import EVIDENCE, evidence_counts
    for df in (comparison, claims):
        if "evidence" not in df:
            df["evidence"] = ""
        df["evidence"] = df["evidence"].fillna("")
    by_evidence = evidence_counts(comparison, claims)
    evidence_rows = [{"evidence": ev, "counts": by_evidence.get(ev, {}),
                      "total": sum(by_evidence.get(ev, {}).values())} for ev in EVIDENCE if by_evidence.get(ev)]
    scale = config.get("scale", "")
    smoke = bool(((config.get("scales") or {}).get(scale) or {}).get("smoke", False))
    template = Path(template) if template else TEMPLATE_DIR / TEMPLATE
    toy = toy_claims(claim_verdicts)
    html = environment(template.parent).get_template(template.name).render(
        title="DART (arXiv 2506.10390): published numbers beside ours",
        scale=scale, generated=generated(),
        counts=counts, tolerance=config.get("tolerance", {}), smoke=smoke,
        verdicts=[v for v in VERDICTS if counts.get(v)], evidence_rows=evidence_rows,
        summary=summary_words(comparison, claims, smoke, toy) + published_weights_words(
            weights, smoke, config.get("tolerance", {}).get("official_top1", 0.3)),
        published_weights=published_weights_rows(weights), rule_times=rule_times(benchmarks),
        tables=paper_tables(comparison), claims=claims_rows(claims), toy_claims=toy,
        complexity=complexity_rows(complexity), runs=runs_rows(runs), toy_pairs=toy_pairs(runs),
        sweeps=throughput_plots(throughput), partitions=images(partitions),
        git=git_info(repo or HERE.parents[1]), versions=versions(), provenance=hardware(runs, throughput),
        config_yaml=config_text(config), command=command)
    write_text(html, out)
    return counts


def _from_snakemake(smk) -> None:  # pragma: no cover - exercised by the workflow tests
    tidy = {k: smk.input[k] for k in ("comparison", "claims", "complexity", "runs", "throughput", "published_weights")}
    claim = getattr(smk.input, "claim_verdicts", None) or []  # none at a scale without the claim
    claim = [claim] if isinstance(claim, str) else list(claim)
    counts = render(tidy=tidy, partitions=list(smk.input.partitions), config=smk.params.config,
                    out=smk.output[0], repo=Path(smk.params.repo), template=smk.input.template,
                    benchmarks=list(smk.params.benchmarks), claim_verdicts=claim[0] if claim else None)
    print("verdicts: " + json.dumps(counts), file=sys.stderr)


if "snakemake" in globals():  # run by Snakemake's `script:` directive
    with open(snakemake.log[0], "w") as _log:  # noqa: F821
        sys.stderr = _log
        _from_snakemake(snakemake)  # noqa: F821
