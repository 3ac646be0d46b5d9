"""The quantile partition: inverse CDF, equal-mass cuts, rectangles, position resampling."""
import math

import pytest
import torch

from dart.tokenizer import geometry


def brute_force_inverse_cdf(density, level, eps):
    """Walk the cells one by one until the running mass reaches the level (the reference's rule:
    the first cell whose cumulative mass is >= the level, divided by its mass + eps)."""
    run = 0.0
    for i, m in enumerate(density):
        if run + m >= level or i == len(density) - 1:
            return i + min(max((level - run) / (m + eps), 0.0), 1.0)
        run += m


@pytest.mark.parametrize("eps", [0.0, 1e-8, 1e-3])
@pytest.mark.parametrize("length", [1, 5, 14, 33])
def test_inverse_cdf_matches_brute_force(length, eps):
    g = torch.Generator().manual_seed(length)
    density = torch.rand(4, length, generator=g, dtype=torch.float64) + 0.01
    density[1, : length // 2] *= 50  # strongly skewed image
    density /= density.sum(-1, keepdim=True)
    levels = torch.rand(9, generator=g, dtype=torch.float64)
    got = geometry.inverse_cdf(density, levels, eps)
    for b in range(density.shape[0]):
        for k, q in enumerate(levels.tolist()):
            want = brute_force_inverse_cdf(density[b].tolist(), q, eps)
            assert got[b, k].item() == pytest.approx(want, abs=1e-9), (b, k)


def test_quantile_bounds_cut_equal_masses():
    density = torch.rand(3, 20, dtype=torch.float64) + 0.05
    density /= density.sum(-1, keepdim=True)
    bounds = geometry.quantile_bounds(density, 7, eps=0.0)
    assert torch.all(bounds[:, 1:] > bounds[:, :-1])
    assert bounds[:, 0].eq(0).all() and bounds[:, -1].eq(20).all()
    masses = geometry.overlap_weights(bounds, 20) @ density[..., None]
    assert torch.allclose(masses, torch.full_like(masses, 1 / 7), atol=1e-12, rtol=0)
    # the reference's eps shortens every interval by a relative ~eps / cell mass
    masses = geometry.overlap_weights(geometry.quantile_bounds(density, 7), 20) @ density[..., None]
    assert torch.allclose(masses, torch.full_like(masses, 1 / 7), atol=1e-6, rtol=0)


def test_inverse_cdf_is_differentiable():
    density = (torch.rand(2, 10, dtype=torch.float64) + 0.1).requires_grad_()
    levels = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda d: geometry.inverse_cdf(d, levels), (density,))


@pytest.mark.parametrize("num_tokens,rows", [(121, 11), (144, 12), (196, 14), (288, 17), (392, 20), (1, 1), (2, 1)])
def test_rows_for_tokens(num_tokens, rows):
    assert geometry.rows_for_tokens(num_tokens) == rows


@pytest.mark.parametrize("grid,num_tokens", [(14, 196), (14, 16), (14, 392), (8, 288)])
def test_uniform_scores_give_the_standard_grid(grid, num_tokens):
    scores = torch.ones(2, grid, grid, dtype=torch.float64)
    rows = geometry.rows_for_tokens(num_tokens)
    std_rows = torch.linspace(0, grid, rows + 1, dtype=torch.float64).expand(2, -1)
    std_patches = torch.linspace(0, rows * grid, num_tokens + 1, dtype=torch.float64).expand(2, -1)
    row_b, patch_b, band = geometry.partition(scores, num_tokens, eps=0.0)
    assert torch.allclose(row_b, std_rows, atol=1e-9, rtol=0)
    assert torch.allclose(patch_b, std_patches, atol=1e-9, rtol=0)
    assert torch.allclose(band.sum((1, 2)), torch.ones(2, dtype=torch.float64))
    # with the reference's eps (the default) the grid is off by eps / cell mass: about 1e-6 cells
    row_b, patch_b, _ = geometry.partition(scores, num_tokens)
    assert torch.allclose(row_b, std_rows, atol=1e-5 * grid / rows, rtol=0)
    assert torch.allclose(patch_b, std_patches, atol=1e-5 * rows * grid / num_tokens, rtol=0)


@pytest.mark.parametrize("num_tokens", [196, 288, 30])
def test_partition_gives_equal_mass_rows_and_patches(num_tokens):
    torch.manual_seed(num_tokens)
    scores = torch.rand(3, 14, 14, dtype=torch.float64) + 0.1
    scores[0, 2:5, 9:12] += 20
    row_b, patch_b, band = geometry.partition(scores, num_tokens, eps=0.0)
    rows = row_b.shape[1] - 1
    p = geometry.normalize_scores(scores)
    row_mass = geometry.overlap_weights(row_b, 14) @ p.sum(-1, keepdim=True)
    assert torch.allclose(row_mass, torch.full_like(row_mass, 1 / rows), atol=1e-10, rtol=0)
    patch_mass = geometry.overlap_weights(patch_b, rows * 14) @ band.flatten(1)[..., None]
    assert torch.allclose(patch_mass, torch.full_like(patch_mass, 1 / num_tokens), atol=1e-10, rtol=0)
    # the bands hold the overlap-weighted average of the grid rows they cover, renormalised
    w = geometry.overlap_weights(row_b, 14)
    mean = (w / w.sum(-1, keepdim=True)) @ p
    assert torch.allclose(band, mean / mean.sum((1, 2), keepdim=True), atol=1e-14, rtol=0)
    # dense rows are thin: bands over the hot spot of image 0 are under half the uniform height
    heights = row_b[0, 1:] - row_b[0, :-1]
    assert heights[(row_b[0, :-1] >= 2) & (row_b[0, 1:] <= 5)].max() < 0.5 * 14 / rows


@pytest.mark.parametrize("num_tokens", [196, 288, 3])
def test_rects_tile_the_image(num_tokens):
    torch.manual_seed(0)
    scores = torch.rand(2, 14, 14, dtype=torch.float64) + 0.1
    scores[1, 3, 4] += 40  # a hot cell: patches over its thin band run on into the next ones
    row_b, patch_b, _ = geometry.partition(scores, num_tokens)
    rects = geometry.patch_rects(row_b, patch_b, 14, 448, 448)
    assert rects.shape[:2] == (2, num_tokens) and rects.shape[3] == 4
    area = ((rects[..., 2] - rects[..., 0]).clamp_min(0) * (rects[..., 3] - rects[..., 1]).clamp_min(0)).sum((1, 2))
    assert torch.allclose(area, torch.full_like(area, 448.0 * 448.0), rtol=1e-9)
    assert rects.min() >= -1e-9 and rects.max() <= 448 + 1e-9
    # each piece lies in one band: its y-extent is exactly a band's (or zero for padding)
    bands = row_b * 32
    used = rects[..., 2] > rects[..., 0]
    for b in range(2):
        u = used[b]
        top = rects[b][..., 1][u]
        assert torch.isclose(top[:, None], bands[b][None, :-1], atol=1e-9, rtol=0).any(-1).all()


def test_rects_follow_a_patch_across_bands_in_raster_order():
    """A patch straddling a seam: piece 0 ends at the band's right edge, piece 1 starts at x = 0 of
    the next band, and their widths add up to the patch's length along the strip."""
    row_b = torch.tensor([[0.0, 1.0, 3.0, 4.0]], dtype=torch.float64)
    patch_b = torch.tensor([[0.0, 3.5, 9.0, 12.0]], dtype=torch.float64)  # grid 4: 3 bands of 4 cells
    rects = geometry.patch_rects(row_b, patch_b, 4, 40, 40)  # 10 px per cell
    assert rects.shape == (1, 3, 3, 4)
    want = torch.tensor([
        [[0, 0, 35, 10], [0, 0, 0, 0], [0, 0, 0, 0]],
        [[35, 0, 40, 10], [0, 10, 40, 30], [0, 30, 10, 40]],  # 3.5 -> 9.0 spans all three bands
        [[10, 30, 40, 40], [0, 0, 0, 0], [0, 0, 0, 0]],
    ], dtype=torch.float64)
    assert torch.allclose(rects[0], want)
    assert geometry.patches_per_band(patch_b, 3, 4).tolist() == [[2, 0, 1]]


def test_pos_embed_resampling_is_identity_on_the_standard_grid():
    table = torch.randn(196, 8)
    row_b, patch_b, _ = geometry.partition(torch.ones(2, 14, 14, dtype=torch.float64), 196)
    pos = geometry.resample_pos_embed(table, row_b, patch_b)
    assert torch.allclose(pos, table.expand(2, -1, -1), atol=1e-5)


def test_pos_embed_resampling_averages_covered_cells():
    table = torch.arange(16, dtype=torch.float64)[:, None].repeat(1, 3)  # value = cell index
    row_b, patch_b, _ = geometry.partition(torch.ones(1, 4, 4, dtype=torch.float64), 4, eps=0.0)
    pos = geometry.resample_pos_embed(table, row_b, patch_b)
    # 2x2 tokens over a 4x4 table: each token is the mean of a 2x2 block of cells
    want = torch.tensor([(0 + 1 + 4 + 5) / 4, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14 + 15) / 4],
                        dtype=torch.float64)
    assert torch.allclose(pos[0, :, 0], want)
    assert math.isclose(pos[0, :, 0].mean().item(), table[:, 0].mean().item())


@pytest.mark.parametrize("num_tokens", [196, 288, 7])
def test_pos_embed_resampling_equals_the_dense_overlap_average(num_tokens):
    """Against the definition: band rows, then raster cells, averaged with overlap-length weights."""
    torch.manual_seed(num_tokens)
    table = torch.randn(196, 6, dtype=torch.float64)
    scores = torch.rand(2, 14, 14, dtype=torch.float64) + 0.1
    scores[1, 5:9, 2:4] += 30
    row_b, patch_b, _ = geometry.partition(scores, num_tokens)
    w_rows = geometry.overlap_weights(row_b, 14)
    bands = ((w_rows / w_rows.sum(-1, keepdim=True)) @ table.view(14, -1)).view(2, -1, 6)
    w_seq = geometry.overlap_weights(patch_b, bands.shape[1])
    dense = (w_seq / w_seq.sum(-1, keepdim=True)) @ bands
    assert torch.allclose(geometry.resample_pos_embed(table, row_b, patch_b), dense, atol=1e-10)


def test_pos_embed_resampling_is_differentiable():
    # a budget that is not a square keeps patch edges off the band seams, where F has a kink
    table = torch.randn(36, 3, dtype=torch.float64, requires_grad=True)
    row_b, patch_b, _ = geometry.partition(torch.rand(1, 6, 6, dtype=torch.float64) + 0.1, 7)
    row_b.requires_grad_()
    patch_b.requires_grad_()
    assert torch.autograd.gradcheck(geometry.resample_pos_embed, (table, row_b, patch_b))


@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_gradients_flow_at_exactly_uniform_scores(eps):
    """Equal scores put every quantile exactly on a cell edge; the partition must still pass a
    gradient to the scores, or a scorer whose head starts at zero (all scores equal) never learns."""
    scores = torch.ones(1, 8, 8, dtype=torch.float64, requires_grad=True)
    row_b, patch_b, _ = geometry.partition(scores, 16, eps=eps)
    (patch_b * torch.arange(17.0)).sum().backward(retain_graph=True)
    assert scores.grad.abs().sum() > 1.0
    scores.grad = None
    (row_b * torch.arange(5.0)).sum().backward()
    assert scores.grad.abs().sum() > 1.0
