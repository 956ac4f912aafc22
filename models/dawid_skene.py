"""Dawid-Skene: one full K x K confusion matrix per worker (Dawid & Skene 1979; seed 000 sec. 3.2).

Generative story, with the true label marginalised::

    pi            ~ Dirichlet(a)                         class proportions
    theta[j, k]   ~ Dirichlet(alpha[j, k])               worker j's answers when the truth is k
    y_i           ~ Categorical(pi)        or  Categorical(softmax(prior_logits[i]))  (sec. 3.3)
    z_n | y_{i_n} ~ Categorical(theta[w_n, y_{i_n}])

    log p(Z, theta, pi) = log Dir(pi) + sum_{j,k} log Dir(theta[j, k])
                          + sum_i logsumexp_k (log pi_k + sum_{n: i_n = i} log theta[w_n, k, z_n])

``hyper`` is a dict of Dirichlet concentrations: ``confusion`` (alpha, shape (K, K) or (M, K, K)),
and either ``class_concentration`` (a, (K,)) or ``prior_logits`` ((N, K): a learned classifier
``p(y_i | x_i)`` or any outside model; the class proportions are then not used).

Inference parts:

* ``MAP`` (EM, seed 000 eq. 2): the mode ``theta[j, k, l] = (C[j, k, l] + alpha[j, k, l] - 1) /
  sum_l (...)``, ``C`` the expected counts under the label posterior.  ``crowdinfer.fit`` passes
  ``alpha = 1 + beta`` so that prior pseudo-counts ``beta`` simply add to the counts.
* ``VB`` -- mean-field variational Bayes, ``q(theta[j, k]) = Dirichlet(alpha[j, k] + C[j, k])``,
  the E-step using ``E[log theta]``.  This fully Bayesian treatment is Kim & Ghahramani's
  independent Bayesian classifier combination (IBCC; ``fit(model="bcc")``, ``alpha = beta``).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.kl import kl_divergence

from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import (
    expected_confusion_counts,
    gather_log_confusion,
    label_posterior,
    observe,
)

from . import class_prior
from .priors import dirichlet_map


def confusion_distribution(hyper, n_workers: int) -> dist.Dirichlet:
    beta = jnp.asarray(hyper["confusion"])  # the concentration alpha
    k = beta.shape[-1]
    # validate_args=False: this log density runs inside every EM iteration; its support checks
    # doubled the compile time of the online update (experiments/benchmarks/online_speed.md)
    return dist.Dirichlet(jnp.broadcast_to(beta, (n_workers, k, k)), validate_args=False)


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true labels marginalised)."""
    with numpyro.plate("worker", data.n_workers, dim=-2), numpyro.plate(
        "true_class", data.n_classes, dim=-1
    ):
        confusion = numpyro.sample("confusion", confusion_distribution(hyper, data.n_workers))
    log_prior = class_prior.sample_log_prior(hyper)
    _, evidence = label_posterior(data, gather_log_confusion(data, jnp.log(confusion)), log_prior)
    observe(evidence, hyper)


def _init(data, hyper):
    k = data.n_classes
    return {"confusion": jnp.full((data.n_workers, k, k), 1.0 / k)}


def _map_from_counts(counts, hyper, params):
    return {"confusion": dirichlet_map(counts, hyper["confusion"] - 1.0)}


MAP = WorkerPart(
    init=_init,
    update=lambda data, q, hyper, params: _map_from_counts(
        expected_confusion_counts(data, q), hyper, params),
    log_lik=lambda data, params: gather_log_confusion(data, jnp.log(params["confusion"])),
    objective=lambda params, hyper: confusion_distribution(hyper, params["confusion"].shape[0])
    .log_prob(params["confusion"])
    .sum(),
    confusion=lambda params, n_classes: params["confusion"],
    statistics=expected_confusion_counts,
    from_statistics=_map_from_counts,
    expected_likelihood=lambda counts, params: jnp.sum(counts * params["confusion"]),
)


def _vb_from_counts(counts, hyper, params):
    return {"confusion_alpha": hyper["confusion"] + counts}


def _vb_update(data, q, hyper, params):
    return _vb_from_counts(expected_confusion_counts(data, q), hyper, params)


VB = WorkerPart(
    init=lambda data, hyper: {
        "confusion_alpha": confusion_distribution(hyper, data.n_workers).concentration
    },
    update=_vb_update,
    log_lik=lambda data, params: gather_log_confusion(
        data, class_prior.dirichlet_expected_log(params["confusion_alpha"])
    ),
    objective=lambda params, hyper: -kl_divergence(
        dist.Dirichlet(params["confusion_alpha"]),
        confusion_distribution(hyper, params["confusion_alpha"].shape[0]),
    ).sum(),
    confusion=lambda params, n_classes: params["confusion_alpha"]
    / params["confusion_alpha"].sum(-1, keepdims=True),
    statistics=expected_confusion_counts,
    from_statistics=_vb_from_counts,
    expected_likelihood=lambda counts, params: jnp.sum(
        counts * jnp.exp(class_prior.dirichlet_expected_log(params["confusion_alpha"]))),
)
