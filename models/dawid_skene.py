"""Dawid-Skene: one full K x K confusion matrix per worker (Dawid & Skene 1979; seed 000 sec. 3.2).

Generative story, with the true label marginalised::

    pi            ~ Dirichlet(1 + gamma)                 class proportions
    theta[j, k]   ~ Dirichlet(1 + beta[j, k])            worker j's answers when the truth is k
    y_i           ~ Categorical(pi)        or  Categorical(softmax(prior_logits[i]))  (sec. 3.3)
    z_n | y_{i_n} ~ Categorical(theta[w_n, y_{i_n}])

    log p(Z, theta, pi) = log Dir(pi) + sum_{j,k} log Dir(theta[j, k])
                          + sum_i logsumexp_k (log pi_k + sum_{n: i_n = i} log theta[w_n, k, z_n])

With ``prior_logits`` (a learned classifier ``p(y_i | x_i)``, or any outside model) the class
proportions are not used.  MAP-EM (seed 000 eq. 1-2) has the closed-form M-step
``theta[j, k, l] = (C[j, k, l] + beta[j, k, l]) / sum_l (...)`` with ``C`` the expected counts.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from crowdinfer.annotations import CrowdData
from crowdinfer.ops import expected_confusion_counts, label_posterior

from .priors import class_prior_distribution, dirichlet_map


class Hyper(NamedTuple):
    """Pseudo-counts: ``confusion`` shape (K, K) or (M, K, K); ``class_counts`` shape (K,)."""

    confusion: jax.Array
    class_counts: jax.Array


def confusion_distribution(hyper: Hyper, n_workers: int) -> dist.Dirichlet:
    k = hyper.class_counts.shape[-1]
    conc = jnp.broadcast_to(1.0 + jnp.asarray(hyper.confusion), (n_workers, k, k))
    return dist.Dirichlet(conc)


def model(data: CrowdData, hyper: Hyper, prior_logits=None):
    """The NumPyro model (true labels marginalised)."""
    with numpyro.plate("worker", data.n_workers, dim=-2), numpyro.plate(
        "true_class", data.n_classes, dim=-1
    ):
        confusion = numpyro.sample("confusion", confusion_distribution(hyper, data.n_workers))
    if prior_logits is None:
        class_prior = numpyro.sample("class_prior", class_prior_distribution(hyper.class_counts))
        log_prior = jnp.log(class_prior)
    else:
        log_prior = jax.nn.log_softmax(prior_logits, axis=-1)
    _, evidence = label_posterior(data, jnp.log(confusion), log_prior)
    numpyro.factor("annotations", evidence.sum())


# ----------------------------------------------------------------- closed-form pieces for EM
def m_step(data: CrowdData, label_probs: jax.Array, hyper: Hyper) -> dict:
    """MAP confusions given the label posterior ``q`` (seed 000 eq. 2)."""
    counts = expected_confusion_counts(data, label_probs)
    return {"confusion": dirichlet_map(counts, hyper.confusion)}


def log_confusion(params: dict, n_classes: int) -> jax.Array:
    return jnp.log(params["confusion"])


def log_prior(params: dict, hyper: Hyper) -> jax.Array:
    n_workers = params["confusion"].shape[0]
    return confusion_distribution(hyper, n_workers).log_prob(params["confusion"]).sum()
