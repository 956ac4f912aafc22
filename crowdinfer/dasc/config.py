"""DASC configuration: the base models, losses, selections, aggregations and the training
hyperparameters (:class:`Config`)."""
from __future__ import annotations

import dataclasses

BASE_MODELS = ("crowdlayer", "anno_reg", "wdn")
LOSSES = ("ce", "resampling", "reweighting", "focal")
SELECTIONS = ("dasc", "confidence", "random")
AGGREGATIONS = ("majority_vote", "dawid_skene")


@dataclasses.dataclass(frozen=True)
class Config:
    """Training hyperparameters (defaults: seed 004 sec. 4.1, LabelMe).

    Attributes:
        hidden, dropout: the MLP backbone (one ReLU layer of 128 units, 50% dropout).
        learning_rate, weight_decay: Adam and the L2 penalty on every Dense kernel (5e-4).
        batch_size: items per minibatch; epochs: passes over the items per training round (the
            first round and each self-training iteration alike).
        trace_weight: ``lambda`` of Anno-Reg's trace regulariser (eq. 11), on the mean trace.
        init_scale: Anno-Reg's confusion logits start at ``init_scale * I``.
        focal_gamma: gamma of the focal loss.
        wdn_weight_steps, wdn_weight_lr: WDN's second phase (eq. 7), full-batch Adam steps on the
            worker weights with the heads fixed.
    """

    hidden: int = 128
    dropout: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 512
    epochs: int = 25
    trace_weight: float = 0.01
    init_scale: float = 2.0
    focal_gamma: float = 2.0
    wdn_weight_steps: int = 200
    wdn_weight_lr: float = 1e-2

    def __post_init__(self):
        for name in ("hidden", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Config.dropout must lie in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.trace_weight < 0:
            raise ValueError("need learning_rate > 0, weight_decay >= 0 and trace_weight >= 0")
        if self.focal_gamma < 0 or self.wdn_weight_steps < 0:
            raise ValueError("need focal_gamma >= 0 and wdn_weight_steps >= 0")
