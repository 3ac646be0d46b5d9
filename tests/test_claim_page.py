"""reports/claim.html: rendered from the reports' template family, columns in words with units,
rows and columns from the data (fields it does not know render), self-contained, every table in a
scrolling box; the CSVs keep their machine names."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import claim_report  # noqa: E402
from test_report import parse  # noqa: E402

PARTITION = {"area_cv": 0.02, "area_min_frac": 0.9, "area_max_frac": 1.1, "patches_per_band": [4.0, 4.0, 4.0, 4.0],
             "band_height_cv": 0.01, "score_ratio": 1.02, "score_cv": 0.005}


def _records(model, tokens, px, gmacs, scores, metric="top1", floor=33.4, **extra):
    return [{"run": f"runs/toy/x/seed{s}", "task": "classification", "model": model, "seed": s, "img_size": px,
             "metric": metric, metric: v, "train_" + metric: v, "gmacs": gmacs, "num_tokens": tokens,
             "val_images": 500, "floor": floor, **extra} for s, v in enumerate(scores)]


def _write(tmp_path: Path, name: str, records) -> str:
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps({"records": records}))
    return str(p)


@pytest.fixture
def claim(tmp_path):
    """claim_report's main on measure JSONs like claim_measure's, two with fields it doesn't know."""
    dart = dict(PARTITION, tokenizer="dart", method="ours", trunk="scratch", tokens_on_detail=1.0,
                tokens_on_detail_grid=1.0)
    runs = {
        "grid_low": _records("deit_tiny_patch16_224", 16, 32, 0.004, (33.0, 32.4, 34.0), method="published"),
        "dart_n": _records("dart_deit_tiny_patch16_224", 16, 64, 0.005, (31.4, 33.8, 31.6),
                           flip_rate=0.25, remark="<b>bold</b>", **dart),
        "dart_2n": _records("dart_deit_tiny_patch16_224", 32, 64, 0.008, (31.8, 53.4, 49.0), **dict(PARTITION)),
        "grid_4n": _records("deit_tiny_patch16_224", 64, 64, 0.016, (99.4, 96.2, 97.0)),
        "segmentation:grid_low": _records("deit_tiny_patch16_224", 16, 32, 0.006, (18.1, 18.5, 19.0), metric="miou",
                                          floor=11.2),
        "segmentation:dart_n": _records("dart_deit_tiny_patch16_224", 16, 64, 0.007, (21.0, 25.0, 20.2),
                                        metric="miou", floor=11.2, **PARTITION),
        "ablation:published_random_frozen": _records("dart_deit_tiny_patch16_224", 16, 64, 0.005, (33.0, 34.0),
                                                     method="published", trunk="random-frozen", **PARTITION),
    }
    measures = [_write(tmp_path, role.replace(":", "_"), recs) for role, recs in runs.items()]
    html = tmp_path / "reports" / "claim.html"
    out = tmp_path / "claim"
    assert claim_report.main(["--measures", *measures, "--roles", *runs, "--outdir", str(out), "--html", str(html),
                              "--scale", "toy"]) == 0
    return html.read_text(), out


def _headers(table):
    return table["rows"][0]


def test_claim_page_reads_like_the_report(claim):
    html, out = claim
    page = parse(html)
    # self-contained, the reports' stylesheet and provenance (base.html.j2), autoescaped
    assert page.scripts == 0 and not page.links
    assert len(page.imgs) == 1 and page.imgs[0].startswith("data:image/png;base64,")
    assert ".scroll { overflow-x: auto" in html and 'id="provenance-table"' in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    tables = {t["id"]: t for t in page.tables}
    assert set(tables) >= {"verdicts-table", "runs-detail", "partitions-detail", "runs-segmentation",
                           "partitions-segmentation", "runs-ablation", "provenance-table"}
    assert all(t["in_scroll"] for t in page.tables)  # a wide table scrolls in its own box
    # columns in words with units, no machine names
    runs = _headers(tables["runs-detail"])
    for words in ("input (px)", "compute (MMACs per image)", "top-1, mean over seeds (%)",
                  "spread over seeds (std, points)", "floor: always the most common class (%)"):
        assert words in runs
    parts = _headers(tables["partitions-detail"])
    assert "patch-area spread (std / mean; grid = 0)" in parts and "tokens on the pattern" in parts
    assert "mIoU, mean over seeds (%)" in _headers(tables["runs-segmentation"])
    # a value every row shares is named once: the split in the section's title, not a column
    assert "split" not in runs and "Detail set: the runs (validation split, mean and spread" in html
    assert "tokenizer" not in runs  # the run's name and model say it
    # the ablation's variants: their own names, the trunk and method they differ in
    ablation = tables["runs-ablation"]["rows"]
    row = dict(zip(ablation[0], ablation[1]))
    assert (row["run"], row["method"], row["scorer trunk"]) == ("published random frozen", "published",
                                                               "random-frozen")
    for table in page.tables:
        for name in ("area_cv", "gmacs", "input_px", "tokens_on_detail", "mean", "std", "per_seed"):
            assert name not in _headers(table), (table["id"], name)
    # rows come from the data: a role's short name and description; method / trunk shown because
    # the records carry them; fields the script does not know render under their own names
    body = {r[0]: dict(zip(runs, r)) for r in tables["runs-detail"]["rows"][1:]}
    assert set(body) == {"grid-N" + claim_report.ROWS["grid_low"][1], "DART-N" + claim_report.ROWS["dart_n"][1],
                         "DART-2N" + claim_report.ROWS["dart_2n"][1], "grid-4N" + claim_report.ROWS["grid_4n"][1]}
    dart_n = body["DART-N" + claim_report.ROWS["dart_n"][1]]
    assert (dart_n["method"], dart_n["scorer trunk"], dart_n["flip rate"], dart_n["remark"]) == (
        "ours", "scratch", "0.25", "<b>bold</b>")
    assert dart_n["compute (MMACs per image)"] == "5.00" and dart_n["top-1 per seed (%)"] == "31.4 / 33.8 / 31.6"
    # the verdicts, "no test" among them (both sides of DART-N vs grid-N at chance)
    verdicts = {r[0]: r for r in tables["verdicts-table"]["rows"][1:]}
    assert _headers(tables["verdicts-table"])[:4] == ["claim", "method", "verdict", "the numbers behind it"]
    beats = next(r for c, r in verdicts.items() if c.startswith("DART at N tokens beats the grid"))
    assert beats[1:3] == ["ours", "no test"]  # the method judged: its DART side's
    # the CSVs keep the machine names
    with open(out / "summary.csv") as f:
        fields = next(csv.reader(f))
    assert {"role", "gmacs", "mean", "std", "area_cv", "tokens_on_detail", "method", "trunk",
            "flip_rate", "tokenizer"} <= set(fields)
    with open(out / "verdicts.csv") as f:
        assert next(csv.reader(f)) == ["claim", "method", "verdict", "numbers", "split"]


def test_verdict_fields_the_page_does_not_know_render(tmp_path):
    """A verdict naming the method it judges gets a column; an unknown field gets its own."""
    rows = claim_report.summarise(_records("dart_deit_tiny_patch16_224", 16, 64, 0.005, (40.0, 41.0)),
                                  ["dart_n", "dart_n"])
    png = tmp_path / "plot.png"
    png.write_bytes(bytes.fromhex("89504e470d0a1a0a") + b"\0" * 16)
    ver = [{"claim": "c1", "method": "DART-N (ours)", "verdict": "holds", "numbers": "n", "split": "val",
            "seed_spread": 1.5}, {"claim": "c2", "verdict": "inconclusive", "numbers": "m", "split": "val"}]
    html = tmp_path / "claim.html"
    claim_report.write_html(rows, ver, str(png), None, str(html))
    table = next(t for t in parse(html.read_text()).tables if t["id"] == "verdicts-table")
    assert table["rows"][0] == ["claim", "method", "verdict", "the numbers behind it", "split", "seed spread"]
    assert table["rows"][1] == ["c1", "DART-N (ours)", "holds", "n", "val", "1.5"]
    assert table["rows"][2] == ["c2", "", "inconclusive", "m", "val", ""]


def test_one_role_stands_for_one_method(tmp_path):
    recs = _records("dart_deit_tiny_patch16_224", 16, 64, 0.005, (40.0, 41.0))
    recs[1]["method"], recs[0]["method"] = "ours", "published"
    with pytest.raises(SystemExit, match="role dart_n differ in method"):
        claim_report.summarise(recs, ["dart_n", "dart_n"])


def test_unknown_roles_are_refused(tmp_path):
    m = _write(tmp_path, "m", _records("deit_tiny_patch16_224", 16, 32, 0.004, (33.0,)))
    with pytest.raises(SystemExit, match="--roles must name one of grid_low"):
        claim_report.main(["--measures", m, "--roles", "grid_8n", "--outdir", str(tmp_path), "--html",
                           os.path.join(tmp_path, "c.html")])
