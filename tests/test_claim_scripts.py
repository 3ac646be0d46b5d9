"""The claim's measure/report scripts: pattern boxes in the model's pixels, the "gathers on the
detail" verdict."""
import os
import sys

import pytest

from dart.data import build_datasets
from dart.engine.config import load_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflow", "scripts"))
import claim_measure  # noqa: E402
import claim_report  # noqa: E402


def _cfg(name, root):
    return load_config(name, [f"data.root={root}", "data.toy.train_size=4", "data.toy.val_size=6"])


def test_detail_boxes_are_in_the_models_pixels(tmp_path):
    full = _cfg("toy_detail_dart", tmp_path / "d")
    build_datasets(full, progress=False)
    boxes = claim_measure.detail_boxes(full)
    assert boxes.shape == (6, 4) and ((boxes[:, 2:] - boxes[:, :2]) == 16).all()
    low = claim_measure.detail_boxes(_cfg("toy_detail_grid_low", tmp_path / "d"))  # same data, 32-px input
    assert (low * 2 == boxes).all()
    assert claim_measure.detail_boxes(load_config("toy_cls_dart")) is None


def _rows(tokens_on_detail):
    base = {"mean": 33.0, "std": 1.0, "gmacs": 0.004}
    return [dict(base, role="grid_low"),
            dict(base, role="dart_n", area_cv=0.2, tokens_on_detail=tokens_on_detail, tokens_on_detail_grid=1.0)]


@pytest.mark.parametrize("tokens,verdict", [(1.9, "holds"), (1.1, "does not hold")])
def test_gathers_on_the_detail_verdict(tokens, verdict):
    out = {v["claim"]: v for v in claim_report.verdicts(_rows(tokens))}
    v = next(v for c, v in out.items() if "gathers on the detail" in c)
    assert v["verdict"] == verdict and f"{tokens:.2f} tokens on the pattern" in v["numbers"]


def _row(role, seeds, gmacs):
    mean = sum(seeds) / len(seeds)
    std = (sum((s - mean) ** 2 for s in seeds) / (len(seeds) - 1)) ** 0.5
    return {"role": role, "mean": mean, "std": std, "min": min(seeds), "max": max(seeds), "gmacs": gmacs}


@pytest.mark.parametrize("dart_2n,verdict", [
    ((31.8, 53.4, 49.0), "does not hold"),  # seeds disagree, but even the best seed is 43 points short
    ((60.0, 97.0, 75.0), "inconclusive"),   # seeds disagree and the best seed would make it hold
    ((96.0, 97.0, 96.5), "holds"),
])
def test_unstable_seeds_make_a_verdict_inconclusive_only_when_they_could_flip_it(dart_2n, verdict):
    rows = [_row("dart_2n", dart_2n, 0.007), _row("grid_4n", (99.4, 96.2, 97.0), 0.012)]
    v = next(v for v in claim_report.verdicts(rows) if "2N tokens" in v["claim"])
    assert v["verdict"] == verdict
    assert ("seeds disagree" in v["numbers"]) == (verdict != "holds")


def _rec(seed, score, metric="miou", model="deit_tiny_patch16_224", **extra):
    return {"seed": seed, "metric": metric, metric: score, "model": model, "num_tokens": 16, "img_size": 32,
            "gmacs": 0.02, **extra}


def test_task_pairs_get_their_own_rows_and_verdicts():
    """The segmentation pair (TASK:role) is summarised on its own metric (mIoU) and judged like the
    detail set: DART-N above grid-N by more than the seeds' spread."""
    measures = [_rec(s, v) for s, v in enumerate((18.0, 18.5, 19.0))]
    measures += [_rec(s, v, model="dart_deit_tiny_patch16_224", area_cv=0.3) for s, v in enumerate((25.0, 26.0, 24.0))]
    roles = ["segmentation:grid_low"] * 3 + ["segmentation:dart_n"] * 3
    rows = claim_report.summarise(measures, roles)
    by = {r["role"]: r for r in rows}
    assert by["segmentation:dart_n"]["metric"] == "miou" and by["segmentation:dart_n"]["mean"] == 25.0
    assert by["segmentation:grid_low"]["per_seed"] == "18.0 / 18.5 / 19.0"
    out = {v["claim"]: v for v in claim_report.verdicts(rows)}
    beats = next(v for c, v in out.items() if c.startswith("Toy segmentation: DART at N"))
    assert beats["verdict"] == "holds" and "mIoU" in beats["numbers"]
    adapts = next(v for c, v in out.items() if c.startswith("Toy segmentation: the trained DART-N partition"))
    assert adapts["verdict"] == "holds"


def test_one_seed_cannot_make_a_claim_hold():
    rows = claim_report.summarise([_rec(0, 18.0), _rec(0, 30.0, model="dart_deit_tiny_patch16_224")],
                                  ["video:grid_low", "video:dart_n"])
    v = next(v for v in claim_report.verdicts(rows) if v["claim"].startswith("Toy video: DART at N"))
    assert v["verdict"] == "inconclusive" and "one seed only" in v["numbers"]


def test_constant_floor_is_what_always_predicting_the_majority_scores():
    """The floor is the metric dart's own MeanIoU / top-1 give a constant prediction."""
    import torch
    from dart.engine.distributed import DistInfo
    from dart.engine.metrics import MeanIoU
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(4, 8, 8, generator=g) * 10).long().clamp(max=4) * (torch.rand(4, 8, 8, generator=g) > 0.7)
    masks[0, 0, 0] = 255  # ignored
    iou = MeanIoU(5, torch.device("cpu"), 255)
    iou.update(torch.nn.functional.one_hot(torch.zeros_like(masks).clamp(max=4), 5).permute(0, 3, 1, 2).float(),
               masks)
    assert claim_measure.constant_floor(list(masks), "segmentation", 5) == pytest.approx(
        iou.compute(DistInfo())["miou"])
    assert claim_measure.constant_floor([0, 1, 1, 2, 1], "classification", 3) == pytest.approx(60.0)


# --- "no test": a comparison that cannot decide gets no verdict (issue 18, item 5) ---

CHANCE = (33.0, 32.4, 34.0)  # three balanced classes: the floor is 33.4 on these validation images


def _at(role, seeds, floor=33.4, gmacs=0.004, **extra):
    return dict(_row(role, seeds, gmacs), floor=floor, **extra)


def _detail(dart_n, grid_low, grid_4n=(99.4, 96.2, 97.0)):
    return [_at("grid_low", grid_low), _at("dart_n", dart_n, area_cv=0.2),
            _at("dart_2n", (96.0, 97.0, 96.5), gmacs=0.008), _at("grid_4n", grid_4n, gmacs=0.016),
            _at("tome", (58.0, 61.2, 55.4), gmacs=0.0045, tome_r=32)]


def _verdict(rows, start):
    return next(v for v in claim_report.verdicts(rows) if v["claim"].startswith(start))


@pytest.mark.parametrize("dart_n,grid_low,verdict", [
    ((31.4, 33.8, 31.6), CHANCE, "no test"),  # both sides at chance: their difference is noise
    ((60.0, 62.0, 61.0), CHANCE, "holds"),  # one side learned: the test decides
    (CHANCE, (50.0, 52.0, 51.0), "does not hold"),
])
def test_a_comparison_of_two_runs_at_the_floor_gets_no_test(dart_n, grid_low, verdict):
    v = _verdict(_detail(dart_n, grid_low), "DART at N tokens beats the grid")
    assert v["verdict"] == verdict
    if verdict == "no test":
        assert "no test: DART-N (mean 32.3, floor 33.4) and grid-N (mean 33.1, floor 33.4) are both within " \
               "3 points of the floor" in v["numbers"]
    # the other comparisons on the set are decided (grid-4N learned, DART-2N is off the floor)
    assert _verdict(_detail(dart_n, grid_low), "DART at 2N tokens")["verdict"] == "holds"


def test_an_unlearned_upper_reference_leaves_every_accuracy_comparison_untested():
    """grid-4N (every token, full resolution) at chance: the task was not learned, so no accuracy
    comparison on the set decides; the partition verdicts do not rest on accuracies and stay."""
    rows = _detail((60.0, 62.0, 61.0), (40.0, 41.0, 42.0), grid_4n=(34.0, 35.1, 33.0))
    out = {v["claim"]: v for v in claim_report.verdicts(rows)}
    accuracy = [v for c, v in out.items() if "beats" in c or "2N tokens" in c]
    assert len(accuracy) == 3
    for v in accuracy:
        assert v["verdict"] == "no test", v
        assert "the upper reference grid-4N (mean 34.0) is within 3 points of the floor 33.4" in v["numbers"]
    assert _verdict(rows, "The trained DART-N partition adapts")["verdict"] == "holds"


def test_no_test_comes_before_the_one_seed_rule_on_the_task_pairs():
    rows = claim_report.summarise([_rec(0, 20.5, floor=20.0), _rec(0, 21.0, model="dart_x", floor=20.0)],
                                  ["video:grid_low", "video:dart_n"])
    v = _verdict(rows, "Toy video: DART at N")
    assert v["verdict"] == "no test" and "one seed only" not in v["numbers"]
    rows = claim_report.summarise([_rec(0, 20.5, floor=20.0), _rec(0, 40.0, model="dart_x", floor=20.0)],
                                  ["video:grid_low", "video:dart_n"])
    assert _verdict(rows, "Toy video: DART at N")["verdict"] == "inconclusive"


def test_the_control_and_our_defaults_get_verdicts_that_name_their_method():
    """DART-N against its own uniform partition (the control that isolates adaptation) and DART-N
    under our defaults against grid-N: each verdict names the method it judges."""
    rows = _detail((60.0, 62.0, 61.0), (50.0, 52.0, 51.0))
    rows[1]["method"] = "published"
    rows += [_at("dart_n_uniform", (59.0, 61.0, 63.0), method="published"),
             _at("dart_n_ours", (70.0, 71.0, 72.0), method="ours", area_cv=0.05)]
    control = _verdict(rows, "DART-N beats its own uniform partition")
    assert control["verdict"] == "does not hold" and control["method"] == "published"
    assert "DART-N 61.0 +- 1.0 vs DART-N at the grid 61.0 +- 2.0" in control["numbers"]
    ours = _verdict(rows, "DART at N tokens under our defaults beats the grid")
    assert ours["verdict"] == "holds" and ours["method"] == "ours"
    assert _verdict(rows, "DART at N tokens beats the grid")["method"] == "published"
    adapts = _verdict(rows, "The trained DART-N, our defaults partition adapts")
    assert adapts["verdict"] == "does not hold" and adapts["method"] == "ours"
    # the control at the floor beside a learned DART-N still decides (one side learned)
    rows[-2] = _at("dart_n_uniform", CHANCE, method="published")
    assert _verdict(rows, "DART-N beats its own uniform partition")["verdict"] == "holds"
