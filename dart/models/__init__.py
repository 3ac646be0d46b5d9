"""Model families with the DART tokenizer; importing this registers them with timm."""
from .deit import DartVisionTransformer
from .vim import Vim
from .videomamba import VideoMamba

__all__ = ["DartVisionTransformer", "Vim", "VideoMamba"]
