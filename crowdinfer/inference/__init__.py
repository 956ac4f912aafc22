"""Inference engines, as pure functions over a model's parts (one ``jit`` each).

* :mod:`.loop` -- the coordinate-ascent loop shared by MAP-EM and mean-field VB.
"""
from .loop import ClassPart, Spec, State, WorkerPart, run

__all__ = ["ClassPart", "Spec", "State", "WorkerPart", "run"]
