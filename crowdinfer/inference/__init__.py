"""Inference engines, as pure functions over a model's pieces (one ``jit`` each)."""
from .em import EMSpec, EMState, em

__all__ = ["EMSpec", "EMState", "em"]
