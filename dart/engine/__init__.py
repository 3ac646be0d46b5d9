"""Training/evaluation engine: config, loop, checkpoints, DDP, metrics, checkpoint key maps."""
from .config import ConfigError, load_config

__all__ = ["ConfigError", "load_config"]
