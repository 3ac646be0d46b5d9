"""The tokenizer against the reference implementation's own outputs (tests/data/official_*.npz).

official_golden.npz was computed by the official DART code (commit a96b798, float64, 448-px input)
on fixed score maps for N = 121/144/196/288/392: row bands and patch edges in pixels of the 448
input (the patch edges along the strip of bands laid end to end, 448 px per band), the re-binned
density, the resampling of a fixed 14x14 position table, and for N = 196/392 the 16x16 patches of a
fixed image with the mask of the seam patches (a sample point within a pixel of a band seam, where
the reference's second pass blends two bands; now only reported apart: every patch is held to
1e-4). official_near_uniform.npz: the same code's rows, edges and patches at uniform and
near-uniform scores (see its .md). Numbers only; no official code.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from dart import DART
from dart.tokenizer import geometry, sampling

GOLDEN = np.load(Path(__file__).parent / "data" / "official_golden.npz")
UNIFORM = np.load(Path(__file__).parent / "data" / "official_near_uniform.npz")
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


def reference_patches(scores, n, dtype):
    """Channel 0 of our reference-convention patches of the golden image, (B, N, 1, P, P), f64."""
    row_b, patch_b, _ = geometry.partition(scores, n)
    image = torch.from_numpy(GOLDEN["image"]).to(dtype) / 255
    grid = sampling.sampling_grid(row_b, patch_b, 14, 16, dtype=dtype, convention="reference",
                                  img_size=(448, 448))
    strip = sampling.sample_patches(image.expand(len(scores), -1, -1, -1), grid, "reference")
    return strip.view(len(scores), 3, 16, n, 16).permute(0, 3, 1, 2, 4)[:, :, :1].double()


@pytest.mark.parametrize("n", [int(n) for n in GOLDEN["patch_Ns"]])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_sampling_reproduces_every_reference_patch(n, dtype):
    """Every patch, seam patches included: in the last pixel before a band's end the reference's
    strip blends into the next band's first column (zeros after the last band)."""
    scores = golden("scores", n)[:2]
    err = (reference_patches(scores, n, dtype) - golden("patches", n)).abs().amax((2, 3, 4))
    seam = golden("seam", n)
    print(f"\ngolden maps N={n} {dtype}: max |ours - reference| {err.max():.2e} over all patches, "
          f"{err[seam].max():.2e} over the {int(seam.sum())} seam patches")
    assert err.max() < 1e-4
    # the centred convention is a different sampler: it must not pass the same check
    row_b, patch_b, _ = geometry.partition(scores, n)
    image = torch.from_numpy(GOLDEN["image"]).to(dtype) / 255
    centred = sampling.sample_patches(image.expand(2, -1, -1, -1),
                                      sampling.sampling_grid(row_b, patch_b, 14, 16, dtype=dtype), "centred")
    centred = centred.view(2, 3, 16, n, 16).permute(0, 3, 1, 2, 4)[:, :, :1]
    assert (centred.double() - golden("patches", n)).abs().amax((2, 3, 4))[~seam].max() > 1e-2


@pytest.mark.parametrize("n", [int(n) for n in UNIFORM["Ns"]])
@pytest.mark.parametrize("case", range(len(UNIFORM["case_names"])))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_sampling_at_uniform_and_near_uniform_scores(n, case, dtype):
    """At (near-)uniform scores, as every fresh model and flat image gives, patch edges sit on the
    band seams give or take a hair (6.3e-5 px before them at uniform scores): the first column of
    many a band's first patch lies in the previous band's last pixel and is blended into this
    band's first column. Clamping to the previous band's last column there instead put 7 to 15
    patches per image up to 0.21 off."""
    scores = torch.from_numpy(UNIFORM["scores"][case:case + 1])
    row_b, patch_b, _ = geometry.partition(scores, n)
    assert (row_b * PIXELS_PER_CELL - torch.from_numpy(UNIFORM[f"rows_{n}"][case])).abs().max() < 1e-6
    # At exactly uniform scores the cumulative masses meet the levels k/N to round-off, so which
    # cell an edge falls in is round-off's choice, and the +1e-8 puts it 6.3e-5 px before that
    # cell's end or not: 5 of the 197 edges at N=196 fall on the other side of that tie.
    tie = 6.3e-5 if UNIFORM["case_names"][case] == "uniform" else 1e-6
    assert (patch_b * PIXELS_PER_CELL - torch.from_numpy(UNIFORM[f"edges_{n}"][case])).abs().max() < tie
    ours = reference_patches(scores, n, dtype)[..., UNIFORM["rows_kept"], :]
    err = (ours - torch.from_numpy(UNIFORM[f"patches_{n}"][case:case + 1])).abs().max()
    print(f"\n{UNIFORM['case_names'][case]} N={n} {dtype}: max |ours - reference| {err:.2e} "
          f"over all patches")
    assert err < 1e-4


@pytest.mark.parametrize("n", [int(n) for n in UNIFORM["Ns"]])
def test_a_fresh_reference_model_tokenises_like_the_reference(n):
    """Through `DART` in float32, as a model runs: a projection that copies channel 0's 256 pixels
    into the token makes the tokens the patches themselves."""
    tok = DART(img_size=448, embed_dim=256, num_tokens=n, scorer="cnn", sampling="reference")
    with torch.no_grad():
        tok.proj.weight.zero_()
        tok.proj.bias.zero_()
        tok.proj.weight[:, 0].view(256, 256).copy_(torch.eye(256))
        image = torch.from_numpy(GOLDEN["image"]).float() / 255
        scores = torch.from_numpy(UNIFORM["scores"])
        tokens = tok(image.expand(len(scores), -1, -1, -1), scores=scores)
    patches = tokens.view(len(scores), n, 1, 16, 16)[..., UNIFORM["rows_kept"], :]
    assert (patches.double() - torch.from_numpy(UNIFORM[f"patches_{n}"])).abs().max() < 1e-4


def test_reference_sampling_is_differentiable_in_the_image_and_the_geometry():
    """gradcheck on a tiny image with sample points in the last pixel of both bands: the blend
    into the next band's first column (and into zeros after the last band) carries gradients to
    both pixels and to the patch and row bounds."""
    g, P, H, W = 2, 4, 6, 8  # 2x2 score grid over a 6x8 image, two bands, 4x4 patches
    image = torch.rand(1, 1, H, W, dtype=torch.float64)
    inner_rows = torch.tensor([0.7], dtype=torch.float64)
    inner_edges = torch.tensor([0.9, 1.83, 2.6, 3.37], dtype=torch.float64)

    def patches(image, inner_rows, inner_edges):
        row_b = torch.cat([inner_rows.new_zeros(1), inner_rows, inner_rows.new_full((1,), g)])[None]
        patch_b = torch.cat([inner_edges.new_zeros(1), inner_edges, inner_edges.new_full((1,), 2 * g)])[None]
        grid = sampling.sampling_grid(row_b, patch_b, g, P, dtype=torch.float64, convention="reference",
                                      img_size=(H, W))
        return sampling.sample_patches(image, grid, "reference")

    grid = sampling.sampling_grid(torch.tensor([[0.0, 0.7, 2.0]], dtype=torch.float64),
                                  torch.tensor([[0.0, 0.9, 1.83, 2.6, 3.37, 4.0]], dtype=torch.float64),
                                  g, P, dtype=torch.float64, convention="reference", img_size=(H, W))
    assert grid.seam_column.tolist() == [8, 19] and grid.seam_band.tolist() == [0, 1]
    inputs = (image.requires_grad_(), inner_rows.requires_grad_(), inner_edges.requires_grad_())
    assert torch.autograd.gradcheck(patches, inputs)
    # patch 2 starts in band 0's last pixel (7.32 px): its first column reads both bands
    image.grad = None
    patches(*inputs)[0, 0, :, 2 * P].sum().backward()
    assert (image.grad[0, 0, :, 0] != 0).any() and (image.grad[0, 0, :, W - 1] != 0).any()


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
