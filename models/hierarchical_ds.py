"""Hierarchical Dawid-Skene: worker confusions drawn from a population whose mean *and* strength
are learned from the data (empirical Bayes), so shrinkage is set by the data instead of a fixed
pseudo-count.

Generative story, with the true label marginalised::

    pi            ~ Dirichlet(a)                            class proportions
    theta[j, k]   ~ Dirichlet(alpha_k)                      alpha_k = s_k m_k: the population's
                                                            mean row m_k and strength s_k
    y_i           ~ Categorical(pi)
    z_n | y_{i_n} ~ Categorical(theta[w_n, y_{i_n}])

Inference (``VB``, variational EM): mean-field ``q(theta[j, k]) = Dirichlet(alpha_k + C[j, k])``
and ``q(pi)`` as in BCC, and the population ``alpha`` by type-II maximum likelihood on the
evidence lower bound: given ``q``, the terms of the ELBO that involve ``alpha_k`` are
``sum_j E_q[log Dirichlet(theta[j, k] | alpha_k)]``, the log-likelihood of a Dirichlet with
sufficient statistics ``mean_j E_q[log theta[j, k, l]]``, maximised by Minka's fixed point
(``psi(alpha_kl) <- psi(sum_l alpha_kl) + mean_j E[log theta[j, k, l]]``, each step uphill; "Estimating
a Dirichlet distribution", 2000), ``fixed_point_steps`` steps per iteration.  Every block update
increases the ELBO, which is the objective (tests check it never decreases).  A crowd of alike
workers gets a strong population (little freedom per worker: close to one shared confusion); a
crowd of different workers a weak one (close to independent confusions).

``hyper``: ``population`` (K, K), the starting ``alpha`` (default: the crowd's confusion pooled
against the soft majority vote, strength ``init_strength`` per row), ``class_concentration`` (the
NumPyro model's dict; the part ``vb_part(steps).with_hyper(PopulationHyper(...))`` carries
:class:`PopulationHyper`, its state is :class:`PopulationState`).
"""
from __future__ import annotations

import dataclasses
from functools import cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import digamma, polygamma
from numpyro.distributions.kl import kl_divergence

from crowdinfer import options as opts
from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import expected_confusion_counts

from . import class_prior
from .dawid_skene import dirichlet_part, observe_confusion


class PopulationHyper(NamedTuple):
    population: jax.Array  # (K, K) the starting population concentrations


class PopulationState(NamedTuple):
    confusion_alpha: jax.Array  # (M, K, K) q(theta_j)
    population: jax.Array  # (K, K) the learned population alpha


__all__ = [
    "VB",
    "HierarchicalOptions",
    "PopulationHyper",
    "PopulationState",
    "dirichlet_fixed_point",
    "inverse_digamma",
    "model",
    "runner",
    "vb_part",
]

ALPHA_RANGE = (1e-3, 1e5)  # the population concentrations are kept in this range


def inverse_digamma(y: jax.Array, newton_steps: int = 5) -> jax.Array:
    """``x`` with ``digamma(x) = y`` (Minka's starting point and Newton steps)."""
    x = jnp.where(y >= -2.22, jnp.exp(y) + 0.5, -1.0 / (y - digamma(1.0)))
    for _ in range(newton_steps):
        x = x - (digamma(x) - y) / polygamma(1, x)
    return x


def dirichlet_fixed_point(alpha: jax.Array, mean_log: jax.Array, steps: int) -> jax.Array:
    """``steps`` of Minka's fixed point for the Dirichlet (last axis) with mean log-probabilities
    ``mean_log``."""

    def one(a, _):
        a = inverse_digamma(digamma(a.sum(-1, keepdims=True)) + mean_log)
        return jnp.clip(a, *ALPHA_RANGE), None

    alpha, _ = jax.lax.scan(one, alpha, None, length=steps)
    return alpha


def _population(alpha, n_workers):
    k = alpha.shape[-1]
    return dist.Dirichlet(jnp.broadcast_to(alpha, (n_workers, k, k)), validate_args=False)


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true labels marginalised), at the population ``hyper["population"]``."""
    with numpyro.plate("worker", data.n_workers, dim=-2), numpyro.plate(
        "true_class", data.n_classes, dim=-1
    ):
        confusion = numpyro.sample("confusion", _population(hyper["population"], data.n_workers))
    observe_confusion(data, confusion, hyper)


@cache
def vb_part(fixed_point_steps: int = 10) -> WorkerPart:
    """The variational-EM part with ``fixed_point_steps`` Minka steps per iteration."""

    def init(data, hyper):
        alpha = jnp.asarray(hyper.population, jnp.float32)
        return PopulationState(_population(alpha, data.n_workers).concentration, alpha)

    def update(data, q, hyper, state):
        population = state.population
        q_alpha = population[None] + expected_confusion_counts(data, q)
        expected_log = class_prior.dirichlet_expected_log(q_alpha)  # (M, K, K)
        population = dirichlet_fixed_point(population, expected_log.mean(0), fixed_point_steps)
        return PopulationState(q_alpha, population)

    def objective(state, hyper):
        alpha = state.confusion_alpha
        return -kl_divergence(dist.Dirichlet(alpha),
                              _population(state.population, alpha.shape[0])).sum()

    return dirichlet_part(PopulationState, init, update, objective)


VB = vb_part()


@dataclasses.dataclass(frozen=True)
class HierarchicalOptions(opts._Group):
    """The starting population (pooled confusion at ``init_strength`` answers per row), the
    number of Minka steps per iteration, and the label prior."""

    init_strength: float = opts._opt(10.0, opts.number(0.0, lo_open=True))
    fixed_point_steps: int = opts._opt(10, opts.integer(1))
    class_prior: float = opts._opt(1.0, opts.number(0.0, lo_open=True))
    prior_logits: object = opts._opt(None, opts.optional(opts.finite_array))


def runner(annotations, *, init_strength: float = 10.0, fixed_point_steps: int = 10,
           class_prior: float = 1.0, prior_logits=None, max_iter: int = 200, **loop):
    """``fit(ann, "hierarchical_ds")``: variational EM; the learned population is in
    ``params["population"]`` (its strength per row: ``params["population"].sum(-1)``)."""
    from crowdinfer.inference.loop import Spec
    from crowdinfer.runners import label_prior_part, run_loop

    from .priors import pooled

    start = pooled(annotations, 1.0, "full")  # rows sum to 1: the pooled confusion
    workers = vb_part(int(fixed_point_steps)).with_hyper(PopulationHyper(
        jnp.asarray(np.clip(init_strength * start, *ALPHA_RANGE), jnp.float32)))
    spec = Spec(workers, label_prior_part(annotations, "vb", class_prior, prior_logits))
    post = run_loop("hierarchical_ds", "vb", spec, annotations,
                    opts.LoopOptions(max_iter=max_iter, **loop),
                    options=dict(init_strength=init_strength, fixed_point_steps=fixed_point_steps,
                                 class_prior=class_prior))
    post.params["strength"] = post.params["population"].sum(-1)
    return post


opts.register("hierarchical_ds", "vb", HierarchicalOptions, opts.LoopOptions)
RUNNERS = {"hierarchical_ds": {"vb": runner}}
