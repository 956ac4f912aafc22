"""The generative models of crowdinfer, one per file, written as NumPyro models.

Every model marginalises the discrete true label: the annotations enter through one
``numpyro.factor`` of a log-sum-exp over classes, fed by segment sums over annotations
(:mod:`crowdinfer.ops`).  A model file also exposes the closed-form pieces its EM engine needs
(``m_step``, ``log_confusion``, ``log_prior``), bundled as ``EM``.
"""
from . import dawid_skene, majority_vote, one_coin, priors

__all__ = ["dawid_skene", "one_coin", "majority_vote", "priors"]
