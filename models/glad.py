"""GLAD: worker ability x item difficulty (Whitehill et al. 2009), in its multi-class form.

Generative story, with the true label marginalised::

    pi          ~ Dirichlet(a)                        class proportions
    alpha_j     ~ Normal(alpha_mean, alpha_scale)     worker ability (negative: adversarial)
    log beta_i  ~ Normal(beta_mean, beta_scale)       item easiness beta_i = exp(log beta_i) > 0
    y_i         ~ Categorical(pi)
    p(z_n = y | y) = sigmoid(alpha_{w_n} beta_{i_n});  each wrong class (1 - sigmoid(...)) / (K - 1)

The defaults (both means 1, both scales 1) are the original paper's and crowd-kit's.

Inference part ``map_part(hyper, steps, learning_rate)`` (EM, hyperparameters :class:`GladHyper`): the M-step has no closed form, so each EM iteration
takes ``steps`` Adam steps on the expected complete-data log posterior
``Q(alpha, beta) = sum_n sum_k q[i_n, k] G[n, k] + log p(alpha) + log p(log beta)`` (a generalised
EM: Q goes up, so the marginal log posterior does too).  The optimiser state is carried across
iterations in the part's state (:class:`GladState`, its private field ``adam``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax

from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import label_posterior, observe

from . import class_prior

__all__ = ["GladHyper", "GladState", "MAP", "map_part", "model", "annotation_log_lik",
           "confusion"]


class GladHyper(NamedTuple):
    alpha_mean: jax.Array  # Normal prior on worker ability
    alpha_scale: jax.Array
    beta_mean: jax.Array  # Normal prior on log item easiness
    beta_scale: jax.Array


class GladState(NamedTuple):
    alpha: jax.Array  # (M,) worker abilities
    log_beta: jax.Array  # (N,) log item easiness
    adam: Any  # the M-step optimiser's state, carried across iterations
    private = ("adam",)


def annotation_log_lik(data: CrowdData, alpha: jax.Array, log_beta: jax.Array) -> jax.Array:
    """``G[n, k] = log p(z_n | y = k)``: shape (capacity, K)."""
    x = alpha[data.worker] * jnp.exp(log_beta[data.item])
    right = jax.nn.log_sigmoid(x)
    wrong = jax.nn.log_sigmoid(-x) - jnp.log(data.n_classes - 1.0)
    observed = jax.nn.one_hot(data.label, data.n_classes, dtype=bool)
    return jnp.where(observed, right[:, None], wrong[:, None])


def _priors(hyper):
    if isinstance(hyper, dict):
        hyper = GladHyper(*(hyper[f] for f in GladHyper._fields))
    return (
        dist.Normal(hyper.alpha_mean, hyper.alpha_scale),
        dist.Normal(hyper.beta_mean, hyper.beta_scale),
    )


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true labels marginalised)."""
    alpha_prior, beta_prior = _priors(hyper)
    with numpyro.plate("worker", data.n_workers):
        alpha = numpyro.sample("alpha", alpha_prior)
    with numpyro.plate("item", data.n_items):
        log_beta = numpyro.sample("log_beta", beta_prior)
    log_prior = class_prior.sample_log_prior(hyper)
    _, evidence = label_posterior(data, annotation_log_lik(data, alpha, log_beta), log_prior)
    observe(evidence, hyper)


def _log_prior(theta, hyper):
    alpha_prior, beta_prior = _priors(hyper)
    return alpha_prior.log_prob(theta.alpha).sum() + beta_prior.log_prob(theta.log_beta).sum()


def confusion(state, n_classes: int) -> jax.Array:
    """Each worker's one-coin confusion on an item of median difficulty (for reporting)."""
    acc = jax.nn.sigmoid(state.alpha * jnp.exp(jnp.median(state.log_beta)))
    eye = jnp.eye(n_classes)
    return acc[:, None, None] * eye + ((1 - acc) / (n_classes - 1))[:, None, None] * (1 - eye)


class _Theta(NamedTuple):
    alpha: jax.Array
    log_beta: jax.Array


@lru_cache(maxsize=None)
def _template(steps: int, learning_rate: float) -> WorkerPart:
    """The part's functions for ``steps`` Adam steps of size ``learning_rate`` (cached: one compiled
    loop per setting)."""
    adam = optax.adam(learning_rate)

    def init(data, hyper):
        theta = _Theta(jnp.full((data.n_workers,), hyper.alpha_mean, jnp.float32),
                       jnp.full((data.n_items,), hyper.beta_mean, jnp.float32))
        return GladState(theta.alpha, theta.log_beta, adam.init(theta))

    def update(data, q, hyper, state):
        return _m_step(adam, steps, data, q, hyper, state)

    return WorkerPart(
        hyper=None,
        state=GladState,
        init=init,
        update=update,
        log_lik=lambda data, state: annotation_log_lik(data, state.alpha, state.log_beta),
        objective=_log_prior,
        confusion=confusion,
    )


def map_part(hyper: GladHyper | None = None, steps: int = 25,
             learning_rate: float = 0.05) -> WorkerPart:
    """The EM part with priors ``hyper`` (default: the paper's, all 1), ``steps`` Adam steps of
    size ``learning_rate`` per M-step."""
    hyper = GladHyper(1.0, 1.0, 1.0, 1.0) if hyper is None else hyper
    return _template(int(steps), float(learning_rate)).with_hyper(
        GladHyper(*(jnp.float32(v) for v in hyper)))


def _m_step(adam, steps, data, q, hyper, state):
    """``steps`` Adam steps uphill on Q (the generalised M-step)."""

    def negative_q(theta):
        g = annotation_log_lik(data, theta.alpha, theta.log_beta)
        expected = jnp.sum(q[data.item] * g, axis=-1) * data.weight
        return -(expected.sum() + _log_prior(theta, hyper))

    def step(carry, _):
        theta, opt = carry
        grads = jax.grad(negative_q)(theta)
        updates, opt = adam.update(grads, opt, theta)
        return (optax.apply_updates(theta, updates), opt), None

    theta = _Theta(state.alpha, state.log_beta)
    (theta, opt), _ = jax.lax.scan(step, (theta, state.adam), None, length=steps)
    return GladState(theta.alpha, theta.log_beta, opt)


MAP = _template(25, 0.05)  # the default part, without hyperparameters (``map_part`` adds them)
