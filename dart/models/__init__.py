"""Model families with the DART tokenizer; importing this registers them with timm."""
from .deit import DartVisionTransformer

__all__ = ["DartVisionTransformer"]
