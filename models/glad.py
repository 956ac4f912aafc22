"""GLAD: worker ability x item difficulty (Whitehill et al. 2009), in its multi-class form.

Generative story, with the true label marginalised::

    pi          ~ Dirichlet(a)                        class proportions
    alpha_j     ~ Normal(alpha_mean, alpha_scale)     worker ability (negative: adversarial)
    log beta_i  ~ Normal(beta_mean, beta_scale)       item easiness beta_i = exp(log beta_i) > 0
    y_i         ~ Categorical(pi)
    p(z_n = y | y) = sigmoid(alpha_{w_n} beta_{i_n});  each wrong class (1 - sigmoid(...)) / (K - 1)

The defaults (both means 1, both scales 1) are the original paper's and crowd-kit's.

Inference part ``MAP = map_part()`` (EM): the M-step has no closed form, so each EM iteration
takes ``steps`` Adam steps on the expected complete-data log posterior
``Q(alpha, beta) = sum_n sum_k q[i_n, k] G[n, k] + log p(alpha) + log p(log beta)`` (a generalised
EM: Q goes up, so the marginal log posterior does too).  The optimiser state is carried across
iterations in ``params["_adam"]``.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax

from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import label_posterior, observe

from . import class_prior



def annotation_log_lik(data: CrowdData, alpha: jax.Array, log_beta: jax.Array) -> jax.Array:
    """``G[n, k] = log p(z_n | y = k)``: shape (capacity, K)."""
    x = alpha[data.worker] * jnp.exp(log_beta[data.item])
    right = jax.nn.log_sigmoid(x)
    wrong = jax.nn.log_sigmoid(-x) - jnp.log(data.n_classes - 1.0)
    observed = jax.nn.one_hot(data.label, data.n_classes, dtype=bool)
    return jnp.where(observed, right[:, None], wrong[:, None])


def _priors(hyper):
    return (
        dist.Normal(hyper["alpha_mean"], hyper["alpha_scale"]),
        dist.Normal(hyper["beta_mean"], hyper["beta_scale"]),
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


def _log_prior(params, hyper):
    alpha_prior, beta_prior = _priors(hyper)
    return alpha_prior.log_prob(params["alpha"]).sum() + beta_prior.log_prob(params["log_beta"]).sum()


def confusion(params, n_classes: int) -> jax.Array:
    """Each worker's one-coin confusion on an item of median difficulty (for reporting)."""
    acc = jax.nn.sigmoid(params["alpha"] * jnp.exp(jnp.median(params["log_beta"])))
    eye = jnp.eye(n_classes)
    return acc[:, None, None] * eye + ((1 - acc) / (n_classes - 1))[:, None, None] * (1 - eye)


@lru_cache(maxsize=None)
def map_part(steps: int = 25, learning_rate: float = 0.05) -> WorkerPart:
    """The EM part, with ``steps`` Adam steps of size ``learning_rate`` per M-step."""
    adam = optax.adam(learning_rate)

    def init(data, hyper):
        params = {
            "alpha": jnp.full((data.n_workers,), hyper["alpha_mean"], jnp.float32),
            "log_beta": jnp.full((data.n_items,), hyper["beta_mean"], jnp.float32),
        }
        return {**params, "_adam": adam.init(params)}

    def update(data, q, hyper, params):
        return _m_step(adam, steps, data, q, hyper, params)

    return WorkerPart(
        init=init,
        update=update,
        log_lik=lambda data, params: annotation_log_lik(data, params["alpha"], params["log_beta"]),
        objective=_log_prior,
        confusion=confusion,
    )


def _m_step(adam, steps, data, q, hyper, params):
    """``steps`` Adam steps uphill on Q (the generalised M-step)."""

    def negative_q(theta):
        g = annotation_log_lik(data, theta["alpha"], theta["log_beta"])
        expected = jnp.sum(q[data.item] * g, axis=-1) * data.weight
        return -(expected.sum() + _log_prior(theta, hyper))

    def step(carry, _):
        theta, opt = carry
        grads = jax.grad(negative_q)(theta)
        updates, opt = adam.update(grads, opt, theta)
        return (optax.apply_updates(theta, updates), opt), None

    theta = {"alpha": params["alpha"], "log_beta": params["log_beta"]}
    (theta, opt), _ = jax.lax.scan(step, (theta, params["_adam"]), None, length=steps)
    return {**theta, "_adam": opt}


MAP = map_part()
