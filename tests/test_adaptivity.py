"""Adaptivity measures: zero spread for the grid, a real spread for a peaked score map, any number of
rectangle pieces per patch."""
import torch

from dart.adaptivity import partition_stats, patch_areas
from dart.tokenizer import DART


def _part(scores):
    tok = DART(img_size=64, patch_size=8, embed_dim=16, num_tokens=16, score_grid=8, scorer="cnn")
    with torch.no_grad():
        _, part = tok(torch.zeros(scores.shape[0], 3, 64, 64), scores=scores, return_partition=True)
    return part


def test_grid_has_no_spread():
    st = partition_stats(_part(torch.ones(2, 8, 8)))
    assert abs(st["area_cv"]) < 1e-6 and abs(st["area_min_frac"] - 1) < 1e-6
    assert st["patches_per_band"] == [4.0, 4.0, 4.0, 4.0]
    assert abs(st["score_ratio"] - 1) < 1e-9 and st["band_height_cv"] < 1e-6


def test_peaked_scores_shrink_patches_where_they_peak():
    s = torch.ones(1, 8, 8)
    s[0, 1:3, 1:3] = 20.0
    part = _part(s)
    st = partition_stats(part)
    assert st["area_cv"] > 0.3 and st["area_min_frac"] < 0.5 and st["score_ratio"] == 20.0
    areas = patch_areas(part.rects)[0]
    assert abs(float(areas.sum()) - 64 * 64) < 1e-3  # the patches tile the image
    assert sum(st["patches_per_band"]) == 16


def test_any_number_of_pieces():
    rects = torch.tensor([[[[0, 0, 2, 2], [0, 2, 1, 3], [0, 0, 0, 0]]]], dtype=torch.float64)
    assert patch_areas(rects).tolist() == [[5.0]]
