"""The tokenizer against the reference implementation's own outputs (tests/data/official_golden.npz).

The arrays were computed by the official DART code (commit a96b798, float64, 448-px input) on fixed
score maps for N = 121/144/196/288/392: row bands and patch edges in pixels of the 448 input (the
patch edges along the strip of bands laid end to end, 448 px per band), the re-binned density, the
resampling of a fixed 14x14 position table, and for N = 196/392 the 16x16 patches of a fixed image
with the mask of the patches a one-pass sampler cannot reproduce (a sample point within a pixel of a
band seam, where the reference's second pass blends two bands). Numbers only; no official code.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from dart import DART
from dart.tokenizer import geometry, sampling

GOLDEN = np.load(Path(__file__).parent / "data" / "official_golden.npz")
NS = [int(n) for n in GOLDEN["Ns"]]
PIXELS_PER_CELL = 448 / 14


def golden(name, n):
    return torch.from_numpy(GOLDEN[f"{name}_{n}"])


@pytest.mark.parametrize("n", NS)
def test_rows_edges_density_and_pos_match_the_reference(n):
    row_b, patch_b, band = geometry.partition(golden("scores", n), n)
    assert (row_b * PIXELS_PER_CELL - golden("rows", n)).abs().max() < 1e-6
    assert (patch_b * PIXELS_PER_CELL - golden("edges", n)).abs().max() < 1e-6
    assert (band - golden("band_pdf", n)).abs().max() < 1e-12
    pos = geometry.resample_pos_embed(torch.from_numpy(GOLDEN["pos_table"]), row_b, patch_b)
    assert (pos - golden("pos", n)).abs().max() < 1e-6


@pytest.mark.parametrize("n", NS)
def test_the_module_cuts_the_reference_partition(n):
    """The same through `DART` with caller scores (the path a model takes after its scorer)."""
    tok = DART(img_size=448, embed_dim=8, num_tokens=n, scorer="cnn", sampling="reference")
    scores = golden("scores", n)
    _, part = tok(torch.zeros(4, 3, 448, 448), scores=scores, return_partition=True)
    assert (part.patch_bounds * PIXELS_PER_CELL - golden("edges", n)).abs().max() < 1e-6


@pytest.mark.parametrize("n", [int(n) for n in GOLDEN["patch_Ns"]])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_sampling_reproduces_the_reference_patches(n, dtype):
    scores = golden("scores", n)[:2]
    row_b, patch_b, _ = geometry.partition(scores, n)
    image = torch.from_numpy(GOLDEN["image"]).to(dtype) / 255
    grid = sampling.sampling_grid(row_b, patch_b, 14, 16, dtype=dtype, convention="reference",
                                  img_size=(448, 448))
    strip = sampling.sample_patches(image.expand(2, -1, -1, -1), grid, "reference")
    patches = strip.view(2, 3, 16, n, 16).permute(0, 3, 1, 2, 4)[:, :, :1]  # (2, N, 1, v, u)
    err = (patches.double() - golden("patches", n)).abs().amax((2, 3, 4))
    seam = golden("seam", n)
    assert err[~seam].max() < 1e-4
    # the centred convention is a different sampler: it must not pass the same check
    centred = sampling.sample_patches(image.expand(2, -1, -1, -1),
                                      sampling.sampling_grid(row_b, patch_b, 14, 16, dtype=dtype), "centred")
    centred = centred.view(2, 3, 16, n, 16).permute(0, 3, 1, 2, 4)[:, :, :1]
    assert (centred.double() - golden("patches", n)).abs().amax((2, 3, 4))[~seam].max() > 1e-2


def test_tokens_flow_between_rows_with_the_density():
    """A thin band over dense rows receives more than N/rows patches; sparse bands fewer."""
    n = 196
    scores = golden("scores", n)
    row_b, patch_b, _ = geometry.partition(scores, n)
    rows = row_b.shape[1] - 1
    counts = geometry.patches_per_band(patch_b, rows, 14)
    assert (counts.sum(1) == n).all()
    heights = row_b[:, 1:] - row_b[:, :-1]
    for b in range(scores.shape[0]):
        thin = heights[b].argmin()
        assert counts[b, thin] > n // rows, (b, counts[b])
        assert counts[b].min() < n // rows
    # a single salient region: its bands hold the most patches
    one = torch.full((1, 14, 14), 1e-3, dtype=torch.float64)
    one[0, 5, 5] = 1.0
    row_b, patch_b, _ = geometry.partition(one, 392)
    counts = geometry.patches_per_band(patch_b, 20, 14)[0]
    assert counts.max() > 392 // 20 and counts.min() < 392 // 20


def test_a_patch_may_span_more_than_two_bands():
    one = torch.full((1, 14, 14), 1e-3, dtype=torch.float64)
    one[0, 5, 5] = 1.0
    row_b, patch_b, _ = geometry.partition(one, 392)
    rects = geometry.patch_rects(row_b, patch_b, 14, 448, 448)
    pieces = ((rects[..., 2] - rects[..., 0]) > 0).sum(-1)
    assert rects.shape[2] >= 3 and pieces.max() >= 3
    area = ((rects[..., 2] - rects[..., 0]) * (rects[..., 3] - rects[..., 1])).sum((1, 2))
    assert torch.allclose(area, torch.full_like(area, 448.0 * 448.0), rtol=1e-9)


def test_gradients_reach_the_scores_through_the_average_rebinning():
    scores = (torch.rand(1, 5, 5, dtype=torch.float64) + 0.2)
    scores[0, 1, 3] += 4  # a dense row so that bands differ in height

    def edges(s):
        _, patch_b, band = geometry.partition(s, 7)  # 7 tokens in 3 bands: edges off the seams
        return patch_b[:, 1:-1], band

    assert torch.autograd.gradcheck(edges, (scores.requires_grad_(),))


@pytest.mark.parametrize("n", [int(n) for n in GOLDEN["patch_Ns"]])
def test_the_two_pass_timing_baseline_does_the_reference_work(n):
    """`bench.tokenizer_split --baselines two-pass` times a sampler built like the reference's (a loop
    over bands, then a pass along the strip): it must reproduce every reference patch, seams included,
    or the speed comparison would compare different work."""
    from bench.reference_tokenizer import two_pass_geometry, two_pass_patches
    scores = golden("scores", n)[:2]
    row_b, patch_b, pos = two_pass_geometry(scores, n, geometry.rows_for_tokens(n),
                                            torch.from_numpy(GOLDEN["pos_table"]))
    assert (patch_b * PIXELS_PER_CELL - golden("edges", n)[:2]).abs().max() < 1e-6
    assert (pos - golden("pos", n)[:2]).abs().max() < 1e-6
    image = torch.from_numpy(GOLDEN["image"]).double() / 255
    strip = two_pass_patches(image.expand(2, -1, -1, -1), row_b, patch_b, 14)
    patches = strip.view(2, 3, 16, n, 16).permute(0, 3, 1, 2, 4)[:, :, :1]
    assert (patches - golden("patches", n)).abs().max() < 1e-4
