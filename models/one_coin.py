"""One-coin Dawid-Skene: one accuracy per worker, errors spread evenly over the other classes.

Generative story, with the true label marginalised::

    pi            ~ Dirichlet(a)
    a_j           ~ Beta(correct, wrong)                  worker j's accuracy
    theta[j, k, l] = a_j if l == k else (1 - a_j) / (K - 1)
    y_i           ~ Categorical(pi)        or  Categorical(softmax(prior_logits[i]))
    z_n | y_{i_n} ~ Categorical(theta[w_n, y_{i_n}])

``hyper``: Beta concentrations ``correct``, ``wrong`` (scalars or (M,), at least 1) and
``class_concentration`` or ``prior_logits`` (the NumPyro model's dict); the EM part
``map_part(correct, wrong)`` carries :class:`AccuracyHyper`, its state is :class:`AccuracyState`.
MAP-EM update: ``a_j = (sum_k C[j, k, k] + correct - 1) / (n_j + correct + wrong - 2)``, where
``sum_k C[j, k, k]`` is the expected number of worker ``j``'s answers that are right.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import expected_confusion_counts, gather_log_confusion

from .dawid_skene import observe_confusion
from .priors import TINY

__all__ = ["AccuracyHyper", "AccuracyState", "MAP", "map_part", "model", "confusion"]


class AccuracyHyper(NamedTuple):
    correct: jax.Array  # Beta concentrations, scalars or (M,)
    wrong: jax.Array


class AccuracyState(NamedTuple):
    accuracy: jax.Array  # (M,)


def accuracy_distribution(hyper) -> dist.Beta:
    if isinstance(hyper, dict):
        hyper = AccuracyHyper(hyper["correct"], hyper["wrong"])
    return dist.Beta(jnp.asarray(hyper.correct), jnp.asarray(hyper.wrong))


def confusion(accuracy: jax.Array, n_classes: int) -> jax.Array:
    """Expand accuracies (M,) into confusion matrices (M, K, K)."""
    eye = jnp.eye(n_classes)
    off = (1.0 - accuracy) / (n_classes - 1)
    return accuracy[:, None, None] * eye + off[:, None, None] * (1.0 - eye)


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true labels marginalised)."""
    with numpyro.plate("worker", data.n_workers):
        accuracy = numpyro.sample("accuracy", accuracy_distribution(hyper))
    observe_confusion(data, confusion(accuracy, data.n_classes), hyper)


def _from_counts(counts, hyper, state):
    right = jnp.trace(counts, axis1=1, axis2=2)
    total = counts.sum((1, 2))
    a, b = hyper.correct - 1.0, hyper.wrong - 1.0
    acc = (right + a) / jnp.maximum(total + a + b, TINY)
    return AccuracyState(jnp.clip(acc, TINY, 1.0 - 1e-7))


def _update(data, q, hyper, state):
    return _from_counts(expected_confusion_counts(data, q), hyper, state)


MAP = WorkerPart(
    hyper=None,
    state=AccuracyState,
    init=lambda data, hyper: AccuracyState(jnp.full((data.n_workers,), 0.7)),
    update=_update,
    log_lik=lambda data, state: gather_log_confusion(
        data, jnp.log(confusion(state.accuracy, data.n_classes))
    ),
    objective=lambda state, hyper: accuracy_distribution(hyper).log_prob(state.accuracy).sum(),
    confusion=lambda state, n_classes: confusion(state.accuracy, n_classes),
    # the M-step through the expected confusion counts, as Dawid-Skene's: one fused pass per
    # iteration (the soft stopping rule from the counts, no second pass over the annotations)
    statistics=expected_confusion_counts,
    from_statistics=_from_counts,
    expected_likelihood=lambda counts, state: jnp.sum(
        counts * confusion(state.accuracy, counts.shape[-1])),
    soft_needs_objective=True,  # its confusion is symmetric (see WorkerPart)
)


def map_part(correct, wrong) -> WorkerPart:
    """The EM part with the Beta(correct, wrong) prior on every accuracy."""
    return MAP.with_hyper(AccuracyHyper(jnp.asarray(correct, jnp.float32),
                                        jnp.asarray(wrong, jnp.float32)))
