"""One-coin Dawid-Skene: one accuracy per worker, errors spread evenly over the other classes.

Generative story, with the true label marginalised::

    pi            ~ Dirichlet(1 + gamma)
    a_j           ~ Beta(1 + correct, 1 + wrong)          worker j's accuracy
    theta[j, k, l] = a_j if l == k else (1 - a_j) / (K - 1)
    y_i           ~ Categorical(pi)        or  Categorical(softmax(prior_logits[i]))
    z_n | y_{i_n} ~ Categorical(theta[w_n, y_{i_n}])

MAP-EM M-step: ``a_j = (sum_k C[j, k, k] + correct) / (n_j + correct + wrong)``, where
``sum_k C[j, k, k]`` is the expected number of worker ``j``'s answers that are right.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from crowdinfer.annotations import CrowdData
from crowdinfer.ops import expected_confusion_counts, label_posterior

from .priors import TINY, class_prior_distribution


class Hyper(NamedTuple):
    """Pseudo-counts of right and wrong answers (scalars or shape (M,)), and of classes (K,)."""

    correct: jax.Array
    wrong: jax.Array
    class_counts: jax.Array


def accuracy_distribution(hyper: Hyper) -> dist.Beta:
    return dist.Beta(1.0 + jnp.asarray(hyper.correct), 1.0 + jnp.asarray(hyper.wrong))


def confusion(accuracy: jax.Array, n_classes: int) -> jax.Array:
    """Expand accuracies (M,) into confusion matrices (M, K, K)."""
    eye = jnp.eye(n_classes)
    off = (1.0 - accuracy) / (n_classes - 1)
    return accuracy[:, None, None] * eye + off[:, None, None] * (1.0 - eye)


def model(data: CrowdData, hyper: Hyper, prior_logits=None):
    """The NumPyro model (true labels marginalised)."""
    with numpyro.plate("worker", data.n_workers):
        accuracy = numpyro.sample("accuracy", accuracy_distribution(hyper))
    if prior_logits is None:
        class_prior = numpyro.sample("class_prior", class_prior_distribution(hyper.class_counts))
        log_prior = jnp.log(class_prior)
    else:
        log_prior = jax.nn.log_softmax(prior_logits, axis=-1)
    theta = confusion(accuracy, data.n_classes)
    _, evidence = label_posterior(data, jnp.log(theta), log_prior)
    numpyro.factor("annotations", evidence.sum())


# ----------------------------------------------------------------- closed-form pieces for EM
def m_step(data: CrowdData, label_probs: jax.Array, hyper: Hyper) -> dict:
    counts = expected_confusion_counts(data, label_probs)
    right = jnp.trace(counts, axis1=1, axis2=2)
    total = counts.sum((1, 2))
    acc = (right + hyper.correct) / jnp.maximum(total + hyper.correct + hyper.wrong, TINY)
    return {"accuracy": jnp.clip(acc, TINY, 1.0 - 1e-7)}


def log_confusion(params: dict, n_classes: int) -> jax.Array:
    return jnp.log(confusion(params["accuracy"], n_classes))


def log_prior(params: dict, hyper: Hyper) -> jax.Array:
    return accuracy_distribution(hyper).log_prob(params["accuracy"]).sum()
