"""Deep crowdsourcing base models and distribution-aware self-training (DASC, seed 004).

Annotations are held densely: ``labels`` (N, M) int32 with ``-1`` where worker ``k`` did not
annotate item ``i``, and ``weights`` (N, M) float32, ``0`` at those cells (1 for an annotation, or a
class weight for the imbalance baselines).  At the sizes of these benchmarks (1000 x 59) that is
the simplest exact form; every loss is masked by ``weights`` so a missing cell contributes nothing.

Base models (Flax modules in :mod:`crowdinfer.models.networks`, seed 004 sec. 3.3):

* ``"crowdlayer"``  ``p(y_hat^k | x) = softmax(f(x) . W_k)``  (eq. 8-9)
* ``"anno_reg"``    ``p(y_hat^k | x) = f(x) A_k``, ``A_k`` row-stochastic, loss + ``lambda`` x the
  mean trace of the ``A_k`` (eq. 10-11)
* ``"wdn"``         one head per worker on a shared extractor (eq. 5-6), then worker weights fitted
  to the items' mean annotations (eq. 7)

all trained by minimising the masked crowd loss ``sum_ik w_ik l(p(y_hat^k_i | x_i), y^k_i) /
sum_ik w_ik`` (eq. 6 / 9) with Adam + L2 weight decay on every Dense kernel, minibatches of items.

Imbalance baselines (``loss=``): ``"ce"``; ``"reweighting"`` ``w_ik = max_c N_c / N_{y_ik}``;
``"resampling"`` random oversampling of each class's annotations to the largest class's count
(integer copy counts as weights, a fresh draw per seed); ``"focal"``
``-(1 - p)^gamma log p``, ``gamma = 2``.  Aggregate-then-learn baselines: :func:`train_aggregated`
(MV-DL, DS-DL).

Self-training (:func:`self_train`, Algorithm 1): train the base model; predict every worker's
annotation on each cell nobody filled; score each by its entropy (eq. 2); select ``n_select`` of
them

* ``"dasc"``        per predicted class ``c``, the ``M_c`` of least entropy, ``M_c = pi_c M`` with
  ``pi_c`` proportional to ``1 / N'_c``, ``N'_c`` the number of candidate pseudo-annotations
  predicted ``c`` (eq. 3-4);
* ``"confidence"``  the ``M`` of least entropy overall;
* ``"random"``      ``M`` at random;

add them (without replacement: a cell once filled stays filled, and an observed cell is never a
candidate) and continue training; repeat.  The imbalance ratio ``R = max_c N_c / min_c N_c`` of the
combined annotations (eq. 1) is recorded at every iteration.

Seeds are trained side by side with ``vmap``: every function takes ``seeds`` (a count or a list) and
returns parameters stacked on a leading seed axis.
"""
from __future__ import annotations

from .api import self_train, train_aggregated, train_base
from .config import AGGREGATIONS, BASE_MODELS, LOSSES, SELECTIONS, Config
from .nets import crowd_loss, network
from .results import CrowdNet
from .selection import (
    class_quotas,
    dense_annotations,
    entropy,
    imbalance_ratio,
    select_pseudo_annotations,
)
from .training import loss_weights

__all__ = [
    "BASE_MODELS",
    "LOSSES",
    "SELECTIONS",
    "AGGREGATIONS",
    "Config",
    "CrowdNet",
    "dense_annotations",
    "imbalance_ratio",
    "entropy",
    "class_quotas",
    "select_pseudo_annotations",
    "crowd_loss",
    "loss_weights",
    "network",
    "train_base",
    "train_aggregated",
    "self_train",
]
