"""Dawid-Skene: one full K x K confusion matrix per worker (Dawid & Skene 1979; seed 000 sec. 3.2).

Generative story, with the true label marginalised::

    pi            ~ Dirichlet(a)                         class proportions
    theta[j, k]   ~ Dirichlet(alpha[j, k])               worker j's answers when the truth is k
    y_i           ~ Categorical(pi)        or  Categorical(softmax(prior_logits[i]))  (sec. 3.3)
    z_n | y_{i_n} ~ Categorical(theta[w_n, y_{i_n}])

    log p(Z, theta, pi) = log Dir(pi) + sum_{j,k} log Dir(theta[j, k])
                          + sum_i logsumexp_k (log pi_k + sum_{n: i_n = i} log theta[w_n, k, z_n])

The NumPyro model's ``hyper`` is a dict of Dirichlet concentrations: ``confusion`` (alpha, shape
(K, K) or (M, K, K)), and either ``class_concentration`` (a, (K,)) or ``prior_logits`` ((N, K): a
learned classifier ``p(y_i | x_i)`` or any outside model; the class proportions are then not used).
The loop's parts carry their own typed hyperparameters (:class:`ConfusionHyper`; the label prior's
from :func:`crowdinfer.models.class_prior.part`).

Inference parts (factories: ``map_part(alpha)``, ``vb_part(alpha)``):

* ``map_part`` (EM, seed 000 eq. 2), state :class:`ConfusionState`: the mode ``theta[j, k, l] = (C[j, k, l] + alpha[j, k, l] - 1) /
  sum_l (...)``, ``C`` the expected counts under the label posterior.  ``crowdinfer.fit`` passes
  ``alpha = 1 + beta`` so that prior pseudo-counts ``beta`` simply add to the counts.
* ``vb_part`` -- mean-field variational Bayes, state :class:`DirichletState`, ``q(theta[j, k]) = Dirichlet(alpha[j, k] + C[j, k])``,
  the E-step using ``E[log theta]``.  This fully Bayesian treatment is Kim & Ghahramani's
  independent Bayesian classifier combination (IBCC; ``fit(model="bcc")``, ``alpha = beta``).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
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

__all__ = ["ConfusionHyper", "ConfusionState", "DirichletState", "MAP", "VB", "map_part",
           "vb_part", "model", "observe_confusion", "confusion_distribution", "vb_log_lik",
           "vb_confusion", "dirichlet_part"]


class ConfusionHyper(NamedTuple):
    confusion: jax.Array  # the Dirichlet concentration alpha, (K, K) or (M, K, K)


class ConfusionState(NamedTuple):
    confusion: jax.Array  # (M, K, K) theta, the MAP estimate


class DirichletState(NamedTuple):
    confusion_alpha: jax.Array  # (M, K, K): q(theta[j, k]) = Dirichlet(confusion_alpha[j, k])


def confusion_distribution(hyper, n_workers: int) -> dist.Dirichlet:
    beta = jnp.asarray(hyper["confusion"] if isinstance(hyper, dict) else hyper.confusion)
    k = beta.shape[-1]
    # validate_args=False: this log density runs inside every EM iteration; its support checks
    # doubled the compile time of the online update (experiments/benchmarks/online_speed.md)
    return dist.Dirichlet(jnp.broadcast_to(beta, (n_workers, k, k)), validate_args=False)


def observe_confusion(data: CrowdData, confusion: jax.Array, hyper: dict) -> None:
    """Inside a NumPyro model: the annotations' factor given every worker's confusion (M, K, K),
    the label prior sampled (or fixed) from ``hyper`` -- shared by every confusion model."""
    log_prior = class_prior.sample_log_prior(hyper)
    _, evidence = label_posterior(data, gather_log_confusion(data, jnp.log(confusion)), log_prior)
    observe(evidence, hyper)


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true labels marginalised)."""
    with numpyro.plate("worker", data.n_workers, dim=-2), numpyro.plate(
        "true_class", data.n_classes, dim=-1
    ):
        confusion = numpyro.sample("confusion", confusion_distribution(hyper, data.n_workers))
    observe_confusion(data, confusion, hyper)


def _map_from_counts(counts, hyper, state):
    return ConfusionState(dirichlet_map(counts, hyper.confusion - 1.0))


MAP = WorkerPart(
    hyper=None,
    state=ConfusionState,
    init=lambda data, hyper: ConfusionState(
        jnp.full((data.n_workers, data.n_classes, data.n_classes), 1.0 / data.n_classes)),
    update=lambda data, q, hyper, state: _map_from_counts(
        expected_confusion_counts(data, q), hyper, state),
    log_lik=lambda data, state: gather_log_confusion(data, jnp.log(state.confusion)),
    objective=lambda state, hyper: confusion_distribution(hyper, state.confusion.shape[0])
    .log_prob(state.confusion)
    .sum(),
    confusion=lambda state, n_classes: state.confusion,
    statistics=expected_confusion_counts,
    from_statistics=_map_from_counts,
    expected_likelihood=lambda counts, state: jnp.sum(counts * state.confusion),
)


def map_part(confusion) -> WorkerPart:
    """The EM part with Dirichlet concentration ``confusion`` (alpha: (K, K) or (M, K, K))."""
    return MAP.with_hyper(ConfusionHyper(jnp.asarray(confusion, jnp.float32)))


def vb_log_lik(data: CrowdData, state) -> jax.Array:
    """``G[n, k] = E_q[log theta[w_n, k, z_n]]`` for any state with ``confusion_alpha``."""
    return gather_log_confusion(data, class_prior.dirichlet_expected_log(state.confusion_alpha))


def vb_confusion(state, n_classes: int) -> jax.Array:
    """The mean confusion under ``q(theta) = Dirichlet(state.confusion_alpha)``."""
    return state.confusion_alpha / state.confusion_alpha.sum(-1, keepdims=True)


def dirichlet_part(state: type, init, update, objective) -> WorkerPart:
    """A worker part whose state holds a Dirichlet posterior ``confusion_alpha`` (M, K, K) of every
    confusion row -- community BCC, hierarchical Dawid-Skene: the E-step and the reported
    confusion are IBCC's, only the prior (``init``, ``update``, ``objective``) differs."""
    return WorkerPart(None, state, init, update, vb_log_lik, objective, vb_confusion)


def _vb_from_counts(counts, hyper, state):
    return DirichletState(hyper.confusion + counts)


VB = WorkerPart(
    hyper=None,
    state=DirichletState,
    init=lambda data, hyper: DirichletState(
        confusion_distribution(hyper, data.n_workers).concentration),
    update=lambda data, q, hyper, state: _vb_from_counts(
        expected_confusion_counts(data, q), hyper, state),
    log_lik=vb_log_lik,
    objective=lambda state, hyper: -kl_divergence(
        dist.Dirichlet(state.confusion_alpha),
        confusion_distribution(hyper, state.confusion_alpha.shape[0]),
    ).sum(),
    confusion=vb_confusion,
    statistics=expected_confusion_counts,
    from_statistics=_vb_from_counts,
    expected_likelihood=lambda counts, state: jnp.sum(
        counts * jnp.exp(class_prior.dirichlet_expected_log(state.confusion_alpha))),
)


def vb_part(confusion) -> WorkerPart:
    """The VB (IBCC) part with prior concentration ``confusion`` (alpha: (K, K) or (M, K, K))."""
    return VB.with_hyper(ConfusionHyper(jnp.asarray(confusion, jnp.float32)))
