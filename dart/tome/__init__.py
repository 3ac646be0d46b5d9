"""ToMe (token merging) for timm ViTs: the ToMe peer of the DART comparisons.

`merge.py` holds the tensor functions (bipartite soft matching, weighted merging, proportional
attention bias), `vit.py` the timm adapter (`apply_tome`) and `tome_deit_small_patch16_224`.
"""
from .merge import bipartite_soft_matching, merge_weighted, mergeable, size_bias
from .vit import ToMeBlock, apply_tome, remove_tome, tokens_after

__all__ = ["bipartite_soft_matching", "merge_weighted", "mergeable", "size_bias", "ToMeBlock",
           "apply_tome", "remove_tome", "tokens_after"]
