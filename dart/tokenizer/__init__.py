"""The DART tokenizer: pure geometry/sampling functions and the `DART` module around them."""
from .geometry import band_weights, inverse_cdf, overlap_weights, partition, patch_rects, \
    patches_per_band, quantile_bounds, resample_pos_embed, rows_for_tokens
from .module import DART, NonFiniteScores, Partition
from .sampling import sample_patches, sampling_grid
from .scorers import SCORERS, SmallCNNScorer, TrunkScorer, create_scorer, score_activation

__all__ = [
    "DART", "NonFiniteScores", "Partition", "SCORERS", "SmallCNNScorer", "TrunkScorer", "band_weights",
    "create_scorer", "inverse_cdf", "overlap_weights", "partition", "patch_rects", "patches_per_band", "quantile_bounds", "resample_pos_embed",
    "rows_for_tokens", "sample_patches", "sampling_grid", "score_activation",
]
