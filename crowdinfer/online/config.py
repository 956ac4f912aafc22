"""Settings of an online annotation run, and the presets of seed 001 (the official code).

:class:`OnlineConfig` is frozen and hashable: it is the static argument of the jitted functions of
:mod:`crowdinfer.online.loop`, so a run compiles once per capacity bucket, not once per step.

Presets (seed 001; ``../shared/data/imagenet100_amt/experiments/learner_method__*.yaml``):

==========================  ==========  =============  ===========  ==========  ===================
preset                      learner     semi-superv.   calibration  selection   EM stopping rule
==========================  ==========  =============  ===========  ==========  ===================
``ds_model`` (online DS)    none        --             --           --          soft (eq. 6)
``lean`` (Branson 2017)     MLP         none           3-fold CV    local       hard (eq. 5)
``improved_lean``           MLP         none           prototypes   global      soft
``efficient_annotation``    MLP         pseudo-labels  prototypes   global      soft
==========================  ==========  =============  ===========  ==========  ===================

"local" selection keeps, within one training run, the parameters with the lowest validation loss;
"global" also keeps the previous step's model when the new one is worse on the prototypes
(Algorithm 1, lines 13-17).  The shared settings follow ``base_config.yaml``: risk threshold
C = 0.1, at most 3 annotations per item, EM for at most 10 iterations with likelihood epsilon
1e-3, an MLP with one hidden layer of 64 units, weight decay 1e-3, a homogeneous worker prior of
strength 10 with accuracy 0.7 (appendix E), pseudo-label threshold tau = 0.1 (sec. 4.4), early
stopping when the finished set has not grown (sec. 4.5.9) -- the paper's beta = 5 steps, here
``early_stop = 0.5`` answers per item of the pool, so that the rule means the same on any pool size
and step size (5 steps of 200 answers are 0.03 answers per item on 36k images but 3 on 300).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

__all__ = ["OnlineConfig", "PRESETS", "preset", "LEARNERS", "SAMPLERS"]

LEARNERS = ("none", "supervised", "pseudolabel", "mixmatch")
SAMPLERS = ("random", "greedy", "bald")
CALIBRATIONS = ("prototypes", "cv", "none")


@dataclasses.dataclass(frozen=True)
class OnlineConfig:
    """Every setting of a run (sizes of the data come from the :class:`~crowdinfer.online.Task`)."""

    n_classes: int
    # -- aggregation (EM on the Dawid-Skene model)
    em_stop: str = "soft"  # "soft" (eq. 6) or "hard" (eq. 5)
    em_max_iter: int = 10
    em_tol: float = 1e-3
    prior_strength: float = 10.0  # homogeneous worker prior, pseudo-answers per confusion row
    prior_accuracy: float = 0.7
    # -- risk and item selection
    risk_threshold: float = 0.1  # C: an item is finished when its risk is below C
    # the risk from the label posterior tempered by the leave-one-annotation-out temperature
    # (risk.loo_temperature: no gold; decisions unchanged); False: the raw posterior (seed 000)
    calibrate_risk: bool = True
    max_per_item: int = 3
    loss_matrix: Optional[tuple] = None  # K x K nested tuple, loss[decision][truth]; None: 0-1
    sampler: str = "random"
    hits_per_step: int = 5
    hit_size: int = 40
    max_per_worker: int = 2000  # alpha of eq. 7 (greedy and BALD)
    bald_pool: int = 4  # BALD scores this many candidate items per annotation slot
    # -- stopping
    # beta, in answers per item (not steps): stop when the finished set has not grown while the
    # crowd gave this many answers per item of the pool; None: never stop early
    early_stop: Optional[float] = 0.5
    budget: Optional[int] = None  # total annotations
    # -- learner
    learner: str = "pseudolabel"
    calibration: str = "prototypes"
    selection: str = "global"
    folds: int = 3  # for calibration="cv" (Lean's cross-validation)
    pseudo_tau: float = 0.1
    hidden: tuple = (64,)
    train_steps: int = 300
    batch_size: int = 256
    eval_every: int = 25
    learning_rate: float = 1e-3
    weight_decay: float = 1e-3
    class_balanced: bool = True
    mixmatch_alpha: float = 0.75
    mixmatch_weight: float = 5.0
    seed: int = 0

    def __post_init__(self):
        def need(cond, message):
            if not cond:
                raise ValueError(message)

        need(self.n_classes >= 2, f"n_classes must be at least 2, got {self.n_classes}")
        need(self.em_stop in ("soft", "hard"), f"em_stop must be 'soft' or 'hard', got {self.em_stop!r}")
        need(self.learner in LEARNERS, f"learner must be one of {LEARNERS}, got {self.learner!r}")
        need(self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        need(self.calibration in CALIBRATIONS,
             f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        need(self.selection in ("local", "global"), f"selection must be 'local' or 'global', got {self.selection!r}")
        need(0.0 < self.risk_threshold <= 1.0, "risk_threshold must lie in (0, 1]")
        need(self.max_per_item >= 1, "max_per_item must be at least 1")
        need(self.hits_per_step >= 1 and self.hit_size >= 1, "hits_per_step and hit_size must be >= 1")
        need(self.max_per_worker >= 1, "max_per_worker must be at least 1")
        need(self.early_stop is None or 0 < self.early_stop <= self.max_per_item,
             f"early_stop must be None or in (0, max_per_item={self.max_per_item}] answers per item, "
             f"got {self.early_stop}")
        need(self.budget is None or self.budget >= 1, "budget must be None or >= 1")
        need(0.0 < self.pseudo_tau < 1.0, "pseudo_tau must lie in (0, 1)")
        need(self.folds >= 2 or self.calibration != "cv", "calibration='cv' needs folds >= 2")
        need(self.train_steps >= self.eval_every >= 1, "need train_steps >= eval_every >= 1")
        need(self.em_max_iter >= 1, "em_max_iter must be at least 1")
        if self.loss_matrix is not None:
            rows = self.loss_matrix
            need(len(rows) == self.n_classes and all(len(r) == self.n_classes for r in rows),
                 f"loss_matrix must be {self.n_classes} x {self.n_classes}")
        if self.learner == "none":
            object.__setattr__(self, "calibration", "none")

    @property
    def slots(self) -> int:
        """Annotations asked for per step: ``hits_per_step * hit_size``."""
        return self.hits_per_step * self.hit_size

    @property
    def n_folds(self) -> int:
        return self.folds if self.calibration == "cv" else 1

    def replace(self, **changes) -> "OnlineConfig":
        return dataclasses.replace(self, **changes)


PRESETS = {
    "ds_model": dict(learner="none", em_stop="soft"),
    "lean": dict(learner="supervised", calibration="cv", selection="local", em_stop="hard"),
    "improved_lean": dict(learner="supervised", calibration="prototypes", selection="global",
                          em_stop="soft"),
    "efficient_annotation": dict(learner="pseudolabel", calibration="prototypes",
                                 selection="global", em_stop="soft"),
}


def preset(name: str, n_classes: int, **overrides) -> OnlineConfig:
    """The configuration of a seed 001 preset, with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: use one of {sorted(PRESETS)}")
    if isinstance(overrides.get("loss_matrix"), (list,)) or hasattr(overrides.get("loss_matrix"), "tolist"):
        overrides["loss_matrix"] = tuple(tuple(float(v) for v in row) for row in overrides["loss_matrix"])
    if "hidden" in overrides:
        overrides["hidden"] = tuple(overrides["hidden"])
    return OnlineConfig(n_classes=n_classes, **{**PRESETS[name], **overrides})
