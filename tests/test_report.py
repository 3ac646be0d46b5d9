"""The aggregation (verdicts, claims) and the HTML report, on small synthetic results (no torch)."""
from __future__ import annotations

import json
import math
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import aggregate  # noqa: E402
import plan  # noqa: E402
import report  # noqa: E402

TOL = {"params_m": 0.5, "gmacs_rel": 0.05, "top1": 0.5, "speedup": 1.6}
PUBLISHED = ROOT / "workflow" / "resources" / "published.csv"


class Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts, with its id and whether it sits in
    a scrolling box (a <div class="scroll">); plus img sources, links and scripts."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links, self.scripts = [], [], [], 0
        self._stack, self._cell, self._divs = [], None, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            self._divs.append("scroll" in (a.get("class") or "").split())
        elif tag == "table":
            self._stack.append({"id": a.get("id"), "data": a, "rows": [], "in_scroll": any(self._divs)})
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = []
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag in ("link", "a") and a.get("href"):
            self.links.append(a["href"])
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag):
        if tag == "div" and self._divs:
            self._divs.pop()
        elif tag in ("td", "th") and self._cell is not None and self._stack:
            self._stack[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table" and self._stack:
            self.tables.append(self._stack.pop())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(html: str) -> Tables:
    p = Tables()
    p.feed(html)
    return p


def test_verdict_rules():
    assert aggregate.verdict("params_m", 6, 5.72, TOL) == (pytest.approx(-0.28), "matches")
    assert aggregate.verdict("params_m", 24, 26.5, TOL)[1] == "differs"
    # published params are rounded to whole millions: DART DeiT-Ti's 6.30M (official code too) is not 7
    assert aggregate.verdict("params_m", 7, 6.30, TOL)[1] == "differs"
    assert aggregate.verdict("params_m", 24, 24.10, TOL)[1] == "matches"
    assert aggregate.verdict("gmacs", 4.61, 4.599, TOL)[1] == "matches"
    assert aggregate.verdict("gmacs", 1.08, 1.82, TOL)[1] == "differs"
    assert aggregate.verdict("top1", 72.2, 72.6, TOL)[1] == "matches"
    assert aggregate.verdict("top1", 72.2, 71.0, TOL)[1] == "differs"
    assert aggregate.verdict("top1", 72.2, math.nan, TOL)[1] == "not run at this scale"
    assert aggregate.verdict("gmacs", 1.3, math.nan, TOL)[1] == "not measured"
    assert aggregate.verdict("patches", "196", 196, TOL)[1] == "matches"
    assert aggregate.verdict("patches", "196", 392, TOL)[1] == "differs"


def test_norm_kwargs_joins_published_rows():
    assert aggregate.norm_kwargs("b=2, a=1") == "a=1,b=2"
    assert aggregate.norm_kwargs(float("nan")) == ""
    pub = aggregate.read_published(str(PUBLISHED))
    assert set(pub["table"]) >= {"main", "dynamic_tokenizers", "scorer_ablation"}
    assert "scorer=mnasnet" in set(pub["model_kwargs"])


def _synthetic(tmp_path: Path):
    """A complexity CSV per family as bench.complexity writes them, runs and a throughput sweep."""
    experiments = {
        "deit_small_384": {"scale": "paper", "model": "deit_small_patch16_384", "model_kwargs": "", "train": "x"},
        "dart_deit_small_392": {"scale": "paper", "model": "dart_deit_small_patch16_224_392", "model_kwargs": "",
                                "train": "x"},
        "deit_base": {"scale": "paper", "model": "deit_base_patch16_224", "model_kwargs": "", "train": None},
        "dart_deit_tiny_mnasnet": {"scale": "paper", "model": "dart_deit_tiny_patch16_224",
                                   "model_kwargs": "scorer=mnasnet", "train": "x"},
        "toy_cls_grid": {"scale": "toy", "task": "classification", "train": "toy_cls_grid"},
        "toy_cls_dart": {"scale": "toy", "task": "classification", "train": "toy_cls_dart"},
    }
    groups = {"deit": ["deit_small_384", "dart_deit_small_392", "deit_base", "dart_deit_tiny_mnasnet"]}
    comp = pd.DataFrame({
        "model": ["deit_small_patch16_384", "dart_deit_small_patch16_224_392", "deit_base_patch16_224",
                  "dart_deit_tiny_patch16_224"],
        "model_kwargs": ['{"num_classes": 1000}'] * 3 + ['{"num_classes": 1000, "scorer": "mnasnet"}'],
        "params_m": [22.2, 24.1, 86.6, 6.68], "trainable_params_m": [22.2, 24.1, 86.6, 6.68],
        "gmacs": [15.49, 10.10, 17.56, 1.36], "input_shape": ["3x384x384", "3x448x448", "3x224x224", "3x448x448"],
        "num_tokens": [576, 392, 196, 196], "img_size": [384, 448, 224, 448]})
    (tmp_path / "complexity").mkdir()
    comp.to_csv(tmp_path / "complexity" / "deit.csv", index=False)
    metrics = []
    for eid, top1 in (("toy_cls_grid", 41.0), ("toy_cls_dart", 55.5)):
        d = tmp_path / "runs" / "toy" / eid / "seed0"
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "task": "classification", "model": "x<script>alert(1)</script>", "top1": top1 - 1,
            "loss_curve": [2.3, 1.9], "params_m": 0.5, "gmacs": 0.01, "num_tokens": 16, "img_size": 64,
            "seed": 0, "epochs": 1, "wall_s": 12.0, "images_per_s": 100.0, "device": "cpu"}))
        metrics.append(str(d / "metrics.json"))
    evals = []
    for eid, top1 in (("toy_cls_grid", 41.0), ("toy_cls_dart", 55.5)):
        e = tmp_path / "results" / "toy" / "eval" / eid / "seed0.json"
        e.parent.mkdir(parents=True)
        e.write_text(json.dumps({"top1": top1, "top5": 90.0, "source": {"kind": "run", "weights": "model"}}))
        evals.append(str(e))
    bench = tmp_path / "results" / "toy" / "bench" / "headline.csv"
    bench.parent.mkdir(parents=True)
    pd.DataFrame({"model": ["dart_deit_small_patch16_224_392", "deit_base_patch16_224"] * 2,
                  "batch_size": [1, 1, 4, 4], "mode": ["infer"] * 4, "status": ["ok"] * 4,
                  "images_per_s": [9.0, 4.0, 10.0, 5.0], "latency_ms_median": [111, 250, 400, 800],
                  "rss_peak_delta_mib": [100, 300, 200, 600], "device": ["cpu"] * 4}).to_csv(bench, index=False)
    return experiments, groups, metrics, evals, [str(bench)]


def test_aggregate_and_report(tmp_path):
    experiments, groups, metrics, evals, benches = _synthetic(tmp_path)
    out = tmp_path / "tidy"
    paths = aggregate.aggregate(published=str(PUBLISHED), complexity=[str(tmp_path / "complexity" / "deit.csv")],
                                metrics=metrics, evals=evals, benches=benches, experiments=experiments,
                                groups=groups, scale="toy", tolerance=TOL, outdir=str(out))
    cmp_ = pd.read_csv(paths["comparison"])
    row = cmp_[(cmp_["model"] == "dart_deit_small_patch16_224_392") & (cmp_["table"] == "main")]
    v = dict(zip(row["metric"], row["verdict"].fillna("")))
    # token counts are fixed by the model name: shown, no verdict
    assert v == {"params_m": "matches", "gmacs": "matches", "patches": "", "top1": "not run at this scale"}
    ev = dict(zip(row["metric"], row["evidence"]))
    assert ev == {"params_m": "counted from code", "gmacs": "counted from code", "patches": "fixed by the model name",
                  "top1": "published only"}
    # the scorer ablation row is joined on its model_kwargs
    mn = cmp_[(cmp_["table"] == "scorer_ablation") & (cmp_["model_kwargs"] == "scorer=mnasnet")]
    assert set(mn["verdict"].fillna("")) == {"matches", "not run at this scale", ""}
    # methods of other authors are not built; models we did not count are not measured
    assert "not built" in set(cmp_["verdict"])
    assert "not measured" in set(cmp_["verdict"])
    claims = pd.read_csv(paths["claims"])
    speed = claims[claims["quantity"].str.startswith("throughput ratio")]
    # one row per batch size; the paper gives no number ("nearly twice"); a CPU gives no verdict
    assert list(speed["ours"]) == [pytest.approx(9 / 4), pytest.approx(10 / 5)]
    assert speed["published"].isna().all() and speed["verdict"].isna().all()
    assert set(speed["evidence"]) == {"measured here"}
    assert speed["detail"].str.contains("FLOP bound 1.74x").all()
    assert claims.iloc[0]["quantity"].startswith("throughput ratio")  # the headline leads
    cut = claims[claims["claim"].str.startswith("deit_small: DART at 392")].iloc[0]
    assert cut["published"] == pytest.approx(100 * (1 - 10.1 / 15.5))
    assert cut["ours"] == pytest.approx(100 * (1 - 10.10 / 15.49))
    assert cut["verdict"] == "matches"
    runs = pd.read_csv(paths["runs"])
    assert list(runs["top1"]) == [55.5, 41.0]  # the evaluation wins over the training's last value

    html_path = tmp_path / "report.html"
    part = tmp_path / "p.png"
    part.write_bytes(bytes.fromhex("89504e470d0a1a0a") + b"\0" * 16)
    counts = report.render(tidy=paths, partitions=[str(part)], out=str(html_path), repo=ROOT,
                           config={"scale": "toy", "tolerance": TOL, "note": "<b>bold</b>"})
    html = html_path.read_text()
    page = parse(html)
    # self-contained: inlined images only, no script, no link to the network
    assert page.imgs and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert page.scripts == 0 and not page.links
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # autoescape
    assert "&lt;b&gt;bold" in html
    tables = {t["id"]: t for t in page.tables if t["id"]}
    main = tables["table-main"]["rows"]
    assert main[0][0] == "Row" and len(main) == 2 + 19
    hit = [r for r in main if "392 tokens" in r[0] and "DART" in r[0] and "deit_small" in r[0]][0]
    # paper / ours / verdict (delta) + evidence for params, GFLOPs, top-1; paper / ours for tokens
    assert hit[2:4] == ["24", "24.10"] and hit[4] == "matches (+0.10)counted"
    assert hit[5:7] == ["392", "392"]
    assert hit[-1] == "not run at this scale" + "published only"
    assert len(main[1]) == 3 + 2 + 3 + 3
    with_verdict = int((cmp_["verdict"].fillna("") != "").sum()) + int((claims["verdict"].fillna("") != "").sum())
    assert sum(counts.values()) == with_verdict
    evidence = {r[0]: r for r in tables["evidence-counts"]["rows"][1:]}
    assert set(evidence) >= {"counted from code", "published only"}
    assert "measured here" not in evidence  # the CPU speed rows have no verdict
    words = " ".join(r for r in html.split('id="summary-words"')[1].split("</ul>")[0].split("<li>"))
    assert "Top-1: 0 of 31 published cells reproduced" in words and "no verdict" in words
    assert html.index('id="claims"') < html.index('id="summary"') < html.index('id="paper-tables"')
    assert '<details id="config-dump">' in html
    shown = {s: int(s_) for s, s_ in [(c.split(":")[0].strip(), c.split(":")[1].strip())
                                       for c in [t for t in html.split("data-verdict=")[1:]]
                                       for c in [c.split(">", 1)[1].split("</span>")[0].replace("<strong>", "")
                                                 .replace("</strong>", "")]]}
    assert shown["matches"] == counts["matches"]
    assert "runs-table" in tables and len(tables["runs-table"]["rows"]) == 3
    assert "claims-table" in tables
    assert "toy-claims-table" not in tables  # no claim at this scale: no toy verdicts, no link
    # a table wider than the page scrolls in its own box (a long model spec in the throughput
    # table widened the page past 1400 px in Chromium), and a long name in a cell wraps
    assert "table { display: block; overflow-x: auto; max-width: 100%; }" in html
    assert "td code { overflow-wrap: anywhere; }" in html


def test_headline_claims_carry_the_toy_verdicts(tmp_path):
    """At a scale with the resolution claim, the headline claims show its verdicts with their
    evidence kind, ahead of the published claims, and link the claim page beside the report."""
    experiments, groups, metrics, evals, benches = _synthetic(tmp_path)
    paths = aggregate.aggregate(published=str(PUBLISHED), complexity=[str(tmp_path / "complexity" / "deit.csv")],
                                metrics=metrics, evals=evals, benches=benches, experiments=experiments,
                                groups=groups, scale="toy", tolerance=TOL, outdir=str(tmp_path / "tidy"))
    verdicts = tmp_path / "verdicts.csv"
    pd.DataFrame([
        {"claim": "DART at N tokens beats the grid at N tokens", "verdict": "no test",
         "numbers": "DART-N 32.3 vs grid-N 33.1; no test: both within 3 points of the floor", "split": "val"},
        {"claim": "Toy segmentation: DART at N tokens beats the grid <b>", "verdict": "holds",
         "numbers": "DART-N 22.1 vs grid-N 18.5 mIoU", "split": "val"},
    ]).to_csv(verdicts, index=False)
    out = tmp_path / "reports" / "paper_tables.html"
    report.render(tidy=paths, partitions=[], out=str(out), repo=ROOT, config={"scale": "toy", "tolerance": TOL},
                  claim_verdicts=str(verdicts))
    html = out.read_text()
    page = parse(html)
    tables = {t["id"]: t for t in page.tables if t["id"]}
    toy = tables["toy-claims-table"]
    assert toy["in_scroll"]
    assert toy["rows"][0] == ["Claim", "The numbers behind it", "Verdict"]  # no `method` field: no column
    assert [r[-1] for r in toy["rows"][1:]] == ["no test" + "trained here at toy scale",
                                                "holds" + "trained here at toy scale"]
    assert "&lt;b&gt;" in html and "beats the grid <b>" not in html
    assert 'data-evidence="trained here at toy scale"' in html
    assert page.links == ["claim.html"]  # relative: both pages are in reports/
    assert html.index('id="toy-claims-table"') < html.index('id="claims-table"')
    words = html.split('id="summary-words"')[1].split("</ul>")[0]
    assert 'The resolution claim at toy scale, trained here (claim.html): of 2 verdicts, 1 &#34;no test&#34;, ' \
           '1 &#34;holds&#34;.' in words


def test_plan_helpers():
    assert plan.family("dart_vim_tiny_patch16_224_392") == "vim"
    assert plan.family("deit_small_patch16_384") == "deit"
    assert plan.family("videomamba_tiny_patch16_576") == "videomamba"
    assert plan.launcher(8).startswith("torchrun --standalone --nnodes 1 --nproc-per-node 8")
    assert plan.launcher(1) == "python -m" and plan.launcher(0) == "python -m"
    assert plan.complexity_spec({"model": "dart_deit_tiny_patch16_224", "model_kwargs": "scorer=mnasnet"}) == \
        "dart_deit_tiny_patch16_224:scorer=mnasnet"


def test_config_rows_cover_every_published_model():
    """One config row per published (model, model_kwargs): the experiment table is complete."""
    import yaml
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    rows = plan.experiments(cfg)
    ours = {(r["model"], aggregate.norm_kwargs(r["model_kwargs"])) for r in rows.values()
            if r["scale"] == "paper" and r.get("model")}
    pub = aggregate.read_published(str(PUBLISHED))
    needed = {(m, k) for m, k in zip(pub["model"], pub["model_kwargs"]) if m}
    assert needed <= ours, needed - ours
    # every paper training row names a packaged recipe
    for eid in plan.trained({**cfg, "scale": "paper"}):
        assert Path(plan.train_config_path(rows[eid]["train"], ROOT)).is_file()


def test_smoke_cells_are_not_results_and_gpu_speed_gets_a_verdict(tmp_path):
    experiments, groups, metrics, evals, benches = _synthetic(tmp_path)
    # the smoke scale trains the paper rows: a "trained" DART DeiT-S-392 top-1 is not a result
    ev = tmp_path / "results" / "smoke" / "eval" / "dart_deit_small_392" / "seed0.json"
    ev.parent.mkdir(parents=True)
    ev.write_text(json.dumps({"top1": 0.0, "source": {"kind": "run", "weights": "model"}}))
    m = tmp_path / "runs" / "smoke" / "dart_deit_small_392" / "seed0" / "metrics.json"
    m.parent.mkdir(parents=True)
    m.write_text(json.dumps({"task": "classification", "top1": 0.0, "seed": 0}))
    gpu = pd.read_csv(benches[0]).assign(device_type="cuda", device="NVIDIA H100",
                                         images_per_s_per_round=["9;8", "4;4", "10;11", "5;5"])
    gpu.to_csv(benches[0], index=False)
    paths = aggregate.aggregate(published=str(PUBLISHED), complexity=[str(tmp_path / "complexity" / "deit.csv")],
                                metrics=[str(m)], evals=[str(ev)], benches=benches, experiments=experiments,
                                groups=groups, scale="smoke", rows_scale="paper", smoke=True, tolerance=TOL,
                                outdir=str(tmp_path / "tidy"))
    cmp_ = pd.read_csv(paths["comparison"])
    cell = cmp_[(cmp_["model"] == "dart_deit_small_patch16_224_392") & (cmp_["metric"] == "top1")].iloc[0]
    assert cell["verdict"] == "smoke: not a result" and cell["evidence"] == "smoke run"
    assert pd.isna(cell["delta"])  # no difference is shown for a number two steps on fake data made
    claims = pd.read_csv(paths["claims"])
    assert set(claims.loc[claims["quantity"].str.startswith("throughput"), "verdict"]) == {"smoke: not a result"}

    # the same sweep, not smoke: measured on a GPU, per batch size, median and spread over rounds
    paths = aggregate.aggregate(published=str(PUBLISHED), complexity=[str(tmp_path / "complexity" / "deit.csv")],
                                metrics=[], evals=[], benches=benches, experiments=experiments, groups=groups,
                                scale="paper", tolerance=TOL, outdir=str(tmp_path / "tidy2"))
    claims = pd.read_csv(paths["claims"])
    speed = claims[claims["quantity"].str.startswith("throughput")]
    assert list(speed["ours"]) == [pytest.approx((9 / 4 + 8 / 4) / 2), pytest.approx((10 / 5 + 11 / 5) / 2)]
    assert list(speed["spread"]) == ["2.00-2.25 over 2 round(s)", "2.00-2.20 over 2 round(s)"]
    assert list(speed["verdict"]) == ["matches", "matches"] and set(speed["evidence"]) == {"measured here"}


def test_tokenizer_overhead_is_compared_apart_from_the_totals():
    pub = aggregate.read_published(str(PUBLISHED))
    main = pub[pub["table"] == "main"]
    comp = pd.DataFrame({"model": ["deit_tiny_patch16_224", "dart_deit_tiny_patch16_224"], "model_kwargs": ["", ""],
                         "params_m": [5.72, 6.30], "gmacs": [1.254, 1.302], "gmacs_paper": [1.254, 1.302]})
    rows = {r["claim"]: r for r in aggregate.tokenizer_overhead_rows(main, comp, TOL)}
    r = rows["deit_tiny: the DART tokenizer's GMACs over the grid model"]
    # the totals match within 5% (1.302 vs 1.32), the overhead does not (0.048 vs 0.06)
    assert r["published"] == pytest.approx(0.06) and r["ours"] == pytest.approx(0.048)
    assert r["verdict"] == "differs" and r["evidence"] == "counted from code"
    assert aggregate.verdict("gmacs", 1.32, 1.302, TOL)[1] == "matches"


def test_toy_pairs_compare_grid_and_dart_at_the_same_budget():
    """Each grid run is set against the DART run of its task and token count; a 64-token grid is
    not averaged into the 16-token one, and a run without a partner gets no pair."""
    runs = pd.DataFrame([
        {"task": "classification", "model": "deit_tiny_patch16_224", "num_tokens": 16, "img_size": 32,
         "top1": 30.4, "miou": math.nan, "seed": 0},
        {"task": "classification", "model": "deit_tiny_patch16_224", "num_tokens": 64, "img_size": 64,
         "top1": 97.0, "miou": math.nan, "seed": 0},
        {"task": "classification", "model": "dart_deit_tiny_patch16_224", "num_tokens": 16, "img_size": 64,
         "top1": 33.2, "miou": math.nan, "seed": 0},
        {"task": "classification", "model": "dart_deit_tiny_patch16_224", "num_tokens": 32, "img_size": 64,
         "top1": 45.0, "miou": math.nan, "seed": 0},
        {"task": "segmentation", "model": "deit_tiny_patch16_224", "num_tokens": 16, "img_size": 32,
         "top1": math.nan, "miou": 18.0, "seed": 0},
        {"task": "segmentation", "model": "dart_deit_tiny_patch16_224", "num_tokens": 16, "img_size": 64,
         "top1": math.nan, "miou": 21.0, "seed": 0},
    ])
    pairs = {(p["task"], p["tokens"]): p for p in report.toy_pairs(runs)}
    assert set(pairs) == {("classification", "16"), ("segmentation", "16")}
    cls = pairs[("classification", "16")]
    assert (cls["grid"], cls["dart"], cls["grid_px"], cls["dart_px"]) == ("30.4", "33.2", "32", "64")
    assert cls["delta"].replace("\u2212", "-").startswith("+2.8")
    assert pairs[("segmentation", "16")]["metric"] == "mIoU"
