"""Params and GMACs against the published DeiT rows (attention unfused, 1 MAC = 2 FLOPs)."""
import csv
import json
from pathlib import Path

import pytest
import timm
import torch

import dart  # noqa: F401
from bench import complexity

PUBLISHED = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "published.csv"


def published_rows(prefix):
    with open(PUBLISHED) as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    seen, out = set(), []
    for r in rows:
        key = (r["model"], r["model_kwargs"])
        if r["model"] and (r["model"].startswith(prefix) or r["model"].startswith("dart_" + prefix)) \
                and r["params_m"] and key not in seen:
            seen.add(key)
            out.append(r)
    return out


DEIT_ROWS = published_rows("deit_")


def test_deit_rows_are_all_there():
    names = {r["model"] for r in DEIT_ROWS}
    assert {"deit_tiny_patch16_224", "dart_deit_tiny_patch16_224", "deit_small_patch16_224",
            "dart_deit_small_patch16_224", "deit_small_patch16_384", "dart_deit_small_patch16_224_392"} <= names


# Published params are whole millions, so an honest match is within 0.5M. Rows that miss it, and why:
OFFICIAL_DEIT_TI = ("the official darvit_tiny also has 6.30M (official_state_dicts.txt), which does not round "
                    "to the published 7M")
PARAMS_MISSES = {
    ("dart_deit_tiny_patch16_224", ""): OFFICIAL_DEIT_TI,
    ("dart_deit_tiny_patch16_224", "scorer=mobilenetv3_small"): OFFICIAL_DEIT_TI,
    ("dart_deit_tiny_patch16_224", "scorer=squeezenet"): (
        "6.45M: the official code has no SqueezeNet scorer, so its trunk cut is our choice; published 7M"),
}
PARAMS_TOL_M = 0.5


def _row_id(r):
    return r["model"] + (":" + r["model_kwargs"] if r["model_kwargs"] else "")


def _row_param(row):
    miss = PARAMS_MISSES.get((row["model"], row["model_kwargs"]))
    marks = [pytest.mark.xfail(strict=True, reason=miss)] if miss else []
    return pytest.param(row, marks=marks, id=_row_id(row))


@pytest.mark.parametrize("row", [_row_param(r) for r in DEIT_ROWS])
def test_params_match_the_paper(row):
    with torch.device("meta"):  # parameters only: no weights to initialise
        model = timm.create_model(row["model"], **complexity.parse_kwargs(row["model_kwargs"]))
    got = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(got - float(row["params_m"])) <= PARAMS_TOL_M, got


@pytest.mark.parametrize("row", DEIT_ROWS, ids=_row_id)
def test_gmacs_and_tokens_match_the_paper(row):
    got = complexity.count(row["model"], **complexity.parse_kwargs(row["model_kwargs"]))
    assert abs(got["gmacs"] - float(row["gflops"])) <= 0.05 * float(row["gflops"]), got
    assert got["num_tokens"] == int(row["patches"])


@pytest.mark.parametrize("name,official", [("dart_deit_tiny_patch16_224", 6303289),
                                           ("dart_deit_small_patch16_224", 24095657)])
def test_dart_deit_params_equal_the_official_models(name, official):
    """Exact parameter counts of the official darvit_tiny / darvit_sm (the research notes' summary of
    the state dicts built from the official code, commit a96b798): a value, not a rounded million."""
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == official


@pytest.mark.parametrize("name,gmacs", [("deit_tiny_patch16_224", 1.254), ("deit_small_patch16_224", 4.599),
                                        ("deit_base_patch16_224", 17.564)])
def test_timm_deit_counts_as_the_deit_paper(name, gmacs):
    assert complexity.count(name)["gmacs"] == pytest.approx(gmacs, abs=0.002)


def test_scorer_and_sampling_are_counted():
    import timm
    dart_model = timm.create_model("dart_deit_tiny_patch16_224")
    grid = complexity.count("deit_tiny_patch16_224")
    ours = complexity.count_model(dart_model, (3, 448, 448))
    class Scorer(torch.nn.Module):  # the scorer on the 224-px copy, giving the 14x14 map
        def __init__(self, scorer):
            super().__init__()
            self.scorer = scorer

        def forward(self, x):
            return self.scorer(x, 14)

    scorer = complexity.count_model(Scorer(dart_model.patch_embed.scorer), (3, 224, 224))
    sampling = dart_model.patch_embed.uncounted_macs(torch.zeros(1, 3, 448, 448)) / 1e9
    # position table: band means and band running sums, (rows x g) @ (g x g*D) and (g x (g+1)*D)
    pos_resampling = 14 * 14 * (14 * 192 + 15 * 192) / 1e9
    rebinning = 14 * 14 * 14 / 1e9  # score mass into the row bands, (rows x g) @ (g x g)
    extra = ours["gmacs"] - grid["gmacs"]
    # the DART model costs the grid model + scorer + patch and position resampling
    assert extra == pytest.approx(scorer["gmacs"] + sampling + pos_resampling + rebinning, abs=1e-7)
    assert sampling > 0
    assert ours["params_m"] - grid["params_m"] == pytest.approx(scorer["params_m"], abs=1e-6)


def test_cli_writes_csv(tmp_path):
    out = tmp_path / "c.csv"
    complexity.main(["deit_tiny_patch16_224", "dart_deit_tiny_patch16_224:img_size=64,num_tokens=16,scorer=cnn",
                     "--model-kwargs", '{"num_classes": 10}', "--out", str(out)])
    rows = list(csv.DictReader(open(out)))
    assert [r["model"] for r in rows] == ["deit_tiny_patch16_224", "dart_deit_tiny_patch16_224"]
    assert json.loads(rows[1]["model_kwargs"]) == {"img_size": 64, "num_tokens": 16, "scorer": "cnn", "num_classes": 10}
    assert rows[1]["num_tokens"] == "16" and rows[1]["img_size"] == "64"
    assert float(rows[0]["gmacs"]) == pytest.approx(1.254 - 0.0007, abs=0.01)  # 10 classes: smaller head


def test_bad_kwargs_are_named():
    with pytest.raises(ValueError, match="not key=value"):
        complexity.parse_kwargs("img_size")
