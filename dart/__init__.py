"""DART: Differentiable Dynamic Adaptive Region Tokenizer (arXiv 2506.10390), for timm backbones.

`import dart` registers the DART models with timm, so `timm.create_model("dart_deit_small_patch16_224")`
works in any code. `dart.viz` (drawing partitions, matplotlib) is imported on first use.
"""
from . import models  # noqa: F401  (registers the models with timm)
from . import tome  # noqa: F401  (registers tome_deit_small_patch16_224)
from .tokenizer import DART, Partition

__version__ = "0.1.0"
__all__ = ["DART", "Partition", "models", "viz", "__version__"]


def __getattr__(name: str):
    # `dart.viz` on first use: imported here at package import, `python -m dart.viz` would find it
    # in sys.modules already and runpy would warn that it may run unpredictably
    if name == "viz":
        import importlib
        return importlib.import_module(".viz", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
