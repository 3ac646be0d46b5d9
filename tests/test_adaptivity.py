"""Adaptivity measures: zero spread for the grid, a real spread for a peaked score map, any number of
rectangle pieces per patch."""
import torch

import pytest

from dart.adaptivity import partition_stats, patch_areas, tokens_in_box
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


def test_tokens_in_box_counts_area_shares():
    grid = _part(torch.ones(2, 8, 8))
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [5.0, 3.0, 21.0, 19.0]])
    # the grid's 16-px patches: N * the box's area share, wherever the box is
    assert torch.allclose(tokens_in_box(grid.rects, boxes), torch.full((2,), 16 * 256 / 4096.0, dtype=torch.float64))
    s = torch.ones(2, 8, 8)
    s[:, 1:3, 1:3] = 20.0  # the cells under the first box
    t = tokens_in_box(_part(s).rects, boxes)
    assert t[0] > 3 and t[1] > 1.5  # a peak over the box gathers tokens on it
    with pytest.raises(ValueError, match="boxes"):
        tokens_in_box(grid.rects, boxes[:1])
