"""MAP expectation-maximisation, fully inside one ``jax.jit`` (a ``lax.while_loop``).

The engine is model-agnostic: a model supplies an :class:`EMSpec` of three pure functions (its
closed-form M-step for the worker parameters, its confusion matrices, and the log density of its
worker-parameter prior).  The class prior and the E-step are shared by every model.

One iteration, from the label posterior ``q`` of the previous one (initially the soft majority vote):

    M-step   params = argmax_params  E_q[log p(Z, Y | params)] + log p(params)   (seed 000 eq. 2)
    E-step   log q[i, k] = log p(y_i = k | Z_i, params)                           (seed 000 eq. 1)

and the objective EM climbs is the log joint of the label-marginalised NumPyro model,
``log p(params) + sum_i log p(Z_i | params)``: it never decreases.

Stopping rules (``stop=``):
    ``"soft"``      the mean annotation likelihood changes by less than ``tol`` (seed 000 eq. 6);
    ``"hard"``      no item's argmax label changes (seed 000 eq. 5);
    ``"objective"`` the objective changes by less than ``tol`` per annotation;
and always at ``max_iter`` iterations (``tol=0`` runs exactly ``max_iter``).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from crowdinfer.annotations import CrowdData
from crowdinfer.models.priors import class_prior_distribution, dirichlet_map
from crowdinfer.ops import label_posterior, mean_annotation_likelihood

__all__ = ["EMSpec", "EMState", "em", "STOP_RULES"]

STOP_RULES = ("soft", "hard", "objective")


class EMSpec(NamedTuple):
    """What a model gives the EM engine (all pure functions)."""

    m_step: Callable  # (data, label_probs, hyper) -> dict of worker parameters
    log_confusion: Callable  # (params, n_classes) -> (M, K, K) log confusions
    log_prior: Callable  # (params, hyper) -> log density of the worker-parameter prior


class EMState(NamedTuple):
    params: dict  # the model's parameters (+ "class_prior" unless a per-item prior is given)
    log_q: jax.Array  # (N, K) log label posterior at ``params``
    objective: jax.Array  # log joint density at ``params``
    likelihood: jax.Array  # mean annotation likelihood (seed 000 eq. 6)
    iteration: jax.Array  # number of EM iterations done
    converged: jax.Array  # whether the stopping rule fired before max_iter
    history: jax.Array  # (max_iter,) objective per iteration, NaN after the last


def _iterate(spec: EMSpec, data: CrowdData, hyper, prior_logits, label_probs):
    """One M-step followed by one E-step."""
    params = spec.m_step(data, label_probs, hyper)
    log_prior = spec.log_prior(params, hyper)
    if prior_logits is None:
        params["class_prior"] = dirichlet_map(label_probs.sum(0), hyper.class_counts)
        log_prior_y = jnp.log(params["class_prior"])
        log_prior = log_prior + class_prior_distribution(hyper.class_counts).log_prob(
            params["class_prior"]
        )
    else:
        log_prior_y = jax.nn.log_softmax(prior_logits, axis=-1)
    log_conf = spec.log_confusion(params, data.n_classes)
    log_q, evidence = label_posterior(data, log_conf, log_prior_y)
    likelihood = mean_annotation_likelihood(data, log_conf, jnp.exp(log_q))
    return params, log_q, log_prior + evidence.sum(), likelihood


@partial(jax.jit, static_argnames=("spec", "max_iter", "stop", "callback"))
def em(
    spec: EMSpec,
    data: CrowdData,
    hyper,
    init_probs: jax.Array,
    prior_logits: jax.Array | None = None,
    *,
    max_iter: int = 100,
    tol: float = 1e-5,
    stop: str = "soft",
    callback: Callable | None = None,
) -> EMState:
    """Run MAP-EM from the label distribution ``init_probs`` (N, K); returns the final state.

    ``callback(iteration, objective)``, if given, is called on the host after every iteration
    (progress bars); it costs a device-host round trip per iteration.
    """
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {STOP_RULES}, got {stop!r}")
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    n_annotations = jnp.maximum(data.weight.sum(), 1.0)

    def report(state):
        if callback is not None:
            jax.debug.callback(callback, state.iteration, state.objective)

    params, log_q, objective, likelihood = _iterate(spec, data, hyper, prior_logits, init_probs)
    init_labels_same = jnp.all(jnp.argmax(log_q, -1) == jnp.argmax(init_probs, -1))
    history = jnp.full((max_iter,), jnp.nan, dtype=objective.dtype).at[0].set(objective)
    state = EMState(params, log_q, objective, likelihood, jnp.int32(1), init_labels_same, history)
    if stop != "hard":
        state = state._replace(converged=jnp.bool_(False))
    report(state)

    def cond(state: EMState):
        return (state.iteration < max_iter) & ~state.converged

    def body(state: EMState):
        params, log_q, objective, likelihood = _iterate(
            spec, data, hyper, prior_logits, jnp.exp(state.log_q)
        )
        if stop == "soft":
            done = jnp.abs(likelihood - state.likelihood) < tol
        elif stop == "hard":
            done = jnp.all(jnp.argmax(log_q, -1) == jnp.argmax(state.log_q, -1))
        else:
            done = jnp.abs(objective - state.objective) < tol * n_annotations
        new = EMState(
            params,
            log_q,
            objective,
            likelihood,
            state.iteration + 1,
            done,
            state.history.at[state.iteration].set(objective),
        )
        report(new)
        return new

    return lax.while_loop(cond, body, state)
