"""ToMe: bipartite soft matching merges exactly r tokens, keeps every token's mass (size) and the
class token, proportional attention makes a merged token attend like its copies, and the timm adapter
matches the plain model when nothing merges; tome_deit_small_patch16_224 costs the published 2.7 G."""
import pytest
import timm
import torch

import dart  # noqa: F401  (registers the models)
from dart.tome import apply_tome, bipartite_soft_matching, merge_weighted, remove_tome, size_bias, tokens_after
from dart.tome.vit import _attend


def _tokens(b=2, n=17, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=g)


@pytest.mark.parametrize("n,r", [(17, 5), (16, 7), (197, 13), (5, 9)])
def test_merge_removes_r_tokens_and_keeps_mass(n, r):
    x = _tokens(n=n)
    size = torch.rand(2, n, 1, generator=torch.Generator().manual_seed(1)) + 0.5
    merge, used = bipartite_soft_matching(x, r)
    assert used == min(r, (n + 1) // 2 - 1)
    y, s = merge_weighted(merge, x, size)
    assert y.shape == (2, n - used, 8) and s.shape == (2, n - used, 1)
    torch.testing.assert_close(s.sum(1), size.sum(1))  # no token's mass lost or made up
    torch.testing.assert_close((y * s).sum(1), (x * size).sum(1))  # the features' mass too


def test_class_token_is_never_merged_nor_changed():
    x = _tokens(n=9)
    x[:, 0] = x[:, 1]  # the class token is the closest match of token 1 ... and a copy of it
    x[:, 2] = x[:, 1]
    merge, used = bipartite_soft_matching(x, 4)
    y, s = merge_weighted(merge, x, torch.ones(2, 9, 1))
    assert used == 4
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(s[:, 0], torch.ones(2, 1))


def test_the_most_similar_pairs_merge():
    # A = even positions, B = odd: token 2 copies token 5, token 6 nearly copies token 3
    x = torch.eye(8)[None].repeat(1, 1, 1)
    x[0, 2] = x[0, 5]
    x[0, 6] = x[0, 3] + 0.1 * x[0, 7]
    merge, _ = bipartite_soft_matching(x, 1)
    y, s = merge_weighted(merge, x, torch.ones(1, 8, 1))
    # A tokens 0, 4, 6 stay in order, then B tokens 1, 3, 5 (with token 2 in it), 7
    assert torch.equal(y[0, :3], x[0, [0, 4, 6]]) and torch.equal(y[0, 5], x[0, 5])
    assert s[0, :, 0].tolist() == [1, 1, 1, 1, 1, 2, 1]
    merge, _ = bipartite_soft_matching(x, 2)
    y, s = merge_weighted(merge, x, torch.ones(1, 8, 1))
    assert s[0, :, 0].tolist() == [1, 1, 1, 2, 2, 1]  # A: 0, 4; B: 1, 3 (+6), 5 (+2), 7
    torch.testing.assert_close(y[0, 3], (x[0, 3] + x[0, 6]) / 2)


def test_proportional_attention_treats_a_merged_token_like_its_copies():
    attn = timm.models.vision_transformer.Attention(16, num_heads=2).eval()
    x = _tokens(b=1, n=5, c=16)
    dup = torch.cat([x, x[:, 4:5]], 1)  # token 4 twice, each of size 1
    with torch.no_grad():
        y_dup, _ = _attend(attn, dup, torch.ones(1, 6, 1))
        size = torch.tensor([[[1.0], [1], [1], [1], [2]]])
        y_merged, _ = _attend(attn, x, size)
        y_plain, _ = _attend(attn, x, None)
    torch.testing.assert_close(y_merged, y_dup[:, :5])
    assert not torch.allclose(y_plain, y_dup[:, :5], atol=1e-4)  # without the bias it differs
    assert size_bias(size).shape == (1, 1, 1, 5)


def _small_vit(**kw):
    return timm.create_model("vit_tiny_patch16_224", img_size=64, embed_dim=32, depth=4, num_heads=2,
                             num_classes=5, **kw).eval()


def test_adapter_matches_the_plain_model_without_merging_and_merges_on_schedule():
    model = _small_vit()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        apply_tome(model, 0)
        torch.testing.assert_close(model(x), ref)  # r = 0: sizes 1, bias 0, the same network
        apply_tome(model, 3)
        out = model(x)
        assert model.tokens_per_block() == tokens_after(17, 3, 4) == [14, 11, 8, 5]
        assert out.shape == (2, 5) and not torch.allclose(out, ref)
        apply_tome(model, [6, 0, 2, 0])
        model(x)
        assert model.tokens_per_block() == [11, 11, 9, 9]
        assert sum(model.tome["size"][0, :, 0].tolist()) == 17
        remove_tome(model)
        assert type(model).__name__ == "VisionTransformer" and not hasattr(model, "tome")
        torch.testing.assert_close(model(x), ref)


def test_adapter_refuses_what_it_cannot_merge():
    with pytest.raises(ValueError, match="r must be"):
        apply_tome(_small_vit(), [1, 2])
    with pytest.raises(ValueError, match="prefix tokens"):
        apply_tome(_small_vit(reg_tokens=2), 1)
    with pytest.raises(TypeError, match="VisionTransformer"):
        apply_tome(torch.nn.Linear(2, 2), 1)


def test_tome_deit_small_costs_the_published_gmacs():
    from bench.complexity import count
    tome, base = count("tome_deit_small_patch16_224"), count("deit_small_patch16_224")
    assert abs(tome["gmacs"] - 2.7) / 2.7 < 0.02  # ToMe paper, DeiT-S r=13: 2.7 GFLOPs
    assert tome["params_m"] == base["params_m"] and tome["gmacs"] < 0.6 * base["gmacs"]


def test_without_a_class_token_a_block_merges_at_most_half_and_keeps_one_token():
    """Issue 20, case 7: with nothing protected every merged A token needs a B partner, so a block
    merges at most n // 2 tokens; the schedule never reaches 0 tokens and the model runs to the end."""
    assert tokens_after(16, 3, 12, protected=0) == [13, 10, 7, 4, 2, 1, 1, 1, 1, 1, 1, 1]
    assert tokens_after(17, 9, 4, protected=1) == [9, 5, 3, 2]  # the class token's count is unchanged
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, embed_dim=32, depth=12, num_heads=2,
                              num_classes=5, class_token=False, global_pool="avg").eval()
    with torch.no_grad():
        apply_tome(model, 3)
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert model.tokens_per_block() == tokens_after(16, 3, 12, protected=0)
    assert sum(model.tome["size"][0, :, 0].tolist()) == 16  # every patch still counted once
