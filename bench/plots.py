"""Plots of the benchmark CSVs (seaborn), saved as PNG next to the CSV.

    python -m bench.plots results/bench/deit_s.csv            # -> results/bench/deit_s.png
    python -m bench.plots results/bench/split.csv --split     # tokenizer split -> split.png
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional

# the memory column each kind of run fills, and how to label it
MEMORY_COLUMNS = (
    ("torch_peak_alloc_mib", "torch peak allocated (MiB)"),
    ("rss_peak_delta_mib", "process peak RSS above run start (MiB)"),
)


def _setup():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


# the columns each plot reads: a CSV without them is not the benchmark's
THROUGHPUT_COLUMNS = ("model", "mode", "batch_size", "status", "images_per_s")
SPLIT_COLUMNS = ("tokenizer", "model", "num_tokens", "batch_size", "stage", "status", "time_ms_median")


def read_bench_csv(csv_path: str, columns: tuple, what: str):
    """The CSV as a DataFrame; a ValueError naming the file when it is not a CSV of `what`."""
    import pandas as pd
    try:
        df = pd.read_csv(csv_path)
    except (ValueError, OSError) as e:  # pandas' ParserError, EmptyDataError: ValueErrors
        raise ValueError(f"{csv_path} is not a {what} CSV: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path} is not a {what} CSV: no column {', '.join(missing)}")
    return df


def _save(fig, path: str) -> None:
    """savefig to a temporary file beside `path`, then rename: never a half-written PNG."""
    tmp = path + ".tmp.png"
    try:
        fig.savefig(tmp, dpi=120)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _png_path(csv_path: str, out: Optional[str]) -> str:
    return out or os.path.splitext(csv_path)[0] + ".png"


def memory_column(df) -> tuple[Optional[str], str]:
    """The first memory column with any value, and its axis label."""
    for col, label in MEMORY_COLUMNS:
        if col in df and df[col].notna().any():
            return col, label
    return None, "peak memory: not measured"


def plot_throughput(csv_path: str, out: Optional[str] = None) -> str:
    """images/s and peak memory against batch size, one line per model (and mode); returns the PNG."""
    df = read_bench_csv(csv_path, THROUGHPUT_COLUMNS, "bench.throughput")
    plt, sns = _setup()
    ok = df[df["status"] == "ok"].copy()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    style = "mode" if ok["mode"].nunique() > 1 else None
    if len(ok):
        sns.lineplot(data=ok, x="batch_size", y="images_per_s", hue="model", style=style,
                     marker="o", ax=axes[0])
    axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="images / s")
    col, label = memory_column(ok)
    if col is not None:
        sns.lineplot(data=ok, x="batch_size", y=col, hue="model", style=style, marker="o",
                     ax=axes[1], legend=False)
    else:
        axes[1].text(0.5, 0.5, "no memory measured", ha="center", va="center",
                     transform=axes[1].transAxes)
    axes[1].set(xscale="log", xlabel="batch size", ylabel=label)
    _batch_ticks(axes, sorted(df["batch_size"].unique()))
    handles, names = axes[0].get_legend_handles_labels()
    if axes[0].get_legend() is not None:
        axes[0].get_legend().remove()
    bad = df[df["status"] != "ok"]
    for _, r in bad.iterrows():  # mark OOM / error batch sizes on the speed panel
        axes[0].axvline(r["batch_size"], color="0.6", ls=":", lw=0.8)
    ctx = df.iloc[0] if len(df) else None
    if ctx is not None:
        fig.suptitle(f"{ctx.get('device', '')} | {ctx.get('dtype', '')} | {ctx.get('mode', '')} | "
                     f"threads {ctx.get('torch_threads', '')}", fontsize=9)
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(2, len(names)), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.06 * math.ceil(len(names) / 2) + 0.02, 1, 1))
    else:
        fig.tight_layout()
    path = _png_path(csv_path, out)
    _save(fig, path)
    plt.close(fig)
    return path


def _batch_ticks(axes, batches) -> None:
    """Label the log axis with the batch sizes themselves."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter
    for ax in axes:
        ax.xaxis.set_major_locator(FixedLocator([float(b) for b in batches]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(ScalarFormatter())


def plot_tokenizer_split(csv_path: str, out: Optional[str] = None) -> str:
    """Stacked bars: DART's stages (ms per batch) per (batch size, tokens), grid patch embed beside."""
    df = read_bench_csv(csv_path, SPLIT_COLUMNS, "bench.tokenizer_split")
    plt, sns = _setup()
    df = df[df["status"] == "ok"]
    stages = ["scorer", "geometry", "sampling", "projection"]
    batches = sorted(df["batch_size"].unique())
    fig, axes = plt.subplots(1, max(1, len(batches)), figsize=(4 * max(1, len(batches)), 4), squeeze=False)
    colors = dict(zip(stages + ["grid"], sns.color_palette("deep", len(stages) + 1)))
    for ax, b in zip(axes[0], batches):
        d = df[df["batch_size"] == b]
        labels, x, grid_labelled = [], 0, False
        for (tok, n), g in d[d["tokenizer"] == "dart"].groupby(["model", "num_tokens"], sort=False):
            bottom = 0.0
            for s in stages:
                v = g.loc[g["stage"] == s, "time_ms_median"]
                if len(v):
                    ax.bar(x, v.iloc[0], bottom=bottom, color=colors[s], label=None if labels else s)
                    bottom += float(v.iloc[0])
            v = g.loc[g["stage"] == "total", "time_ms_median"]
            if len(v):  # the end-to-end forward, for the glue the stages leave out
                ax.scatter([x], [v.iloc[0]], marker="_", s=400, color="k", zorder=3,
                           label=None if labels else "DART forward (total)")
            labels.append(f"DART\n{n} tok")
            x += 1
        for (tok, n), g in d[d["tokenizer"] == "grid"].groupby(["model", "num_tokens"], sort=False):
            v = g.loc[g["stage"] == "patch_embed", "time_ms_median"]
            if len(v):
                ax.bar(x, v.iloc[0], color=colors["grid"],
                       label=None if grid_labelled else "grid patch embed")
                grid_labelled = True
            labels.append(f"grid\n{n} tok")
            x += 1
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set(title=f"batch {b}", ylabel="ms per batch (median)")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, names, fontsize=7, loc="upper left")
    fig.tight_layout()
    path = _png_path(csv_path, out)
    _save(fig, path)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--split", action="store_true", help="the CSV is from bench.tokenizer_split")
    p.add_argument("--out", default=None, help="PNG path (default: beside the CSV)")
    a = p.parse_args(argv)
    from dart.engine.cli import check_writable, user_error
    if not os.path.isfile(a.csv):
        return user_error("bench.plots", f"CSV {a.csv} does not exist")
    try:
        check_writable(_png_path(a.csv, a.out), "the PNG")
        path = (plot_tokenizer_split if a.split else plot_throughput)(a.csv, a.out)
    except ValueError as e:
        return user_error("bench.plots", e)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
