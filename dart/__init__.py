"""DART: Differentiable Dynamic Adaptive Region Tokenizer (arXiv 2506.10390), for timm backbones.

`import dart` registers the DART models with timm, so `timm.create_model("dart_deit_small_patch16_224")`
works in any code.
"""
from . import models  # noqa: F401  (registers the models with timm)
from . import tome  # noqa: F401  (registers tome_deit_small_patch16_224)
from . import viz
from .tokenizer import DART, Partition

__version__ = "0.1.0"
__all__ = ["DART", "Partition", "models", "viz", "__version__"]
