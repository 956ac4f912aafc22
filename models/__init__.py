"""The generative models of crowdinfer, one per file, written as NumPyro models.

Every model marginalises the discrete true label: the annotations enter through one
``numpyro.factor`` of a log-sum-exp over classes, fed by segment sums over annotations
(:mod:`crowdinfer.ops`).  A model file also exposes the parts its inference loop needs
(:class:`crowdinfer.inference.loop.WorkerPart`): ``MAP`` for EM and, where the model is conjugate,
``VB`` for variational Bayes.  :mod:`.class_prior` holds the label-prior parts.
"""
from . import (
    class_prior,
    community_bcc,
    dawid_skene,
    glad,
    learned_prior,
    majority_vote,
    networks,
    one_coin,
    priors,
)

__all__ = [
    "class_prior", "community_bcc", "dawid_skene", "glad", "learned_prior", "majority_vote",
    "networks", "one_coin", "priors",
]
