"""The coordinate-ascent loop shared by MAP-EM and mean-field variational Bayes.

One ``jax.jit``; the iterations run in a ``lax.while_loop``.  A :class:`Spec` pairs two parts:

* a :class:`WorkerPart` (the model's worker parameters: how annotations depend on the true label);
* a :class:`ClassPart` (the label prior: class proportions, fixed per-item logits, or a learned
  classifier ``p(y_i | x_i)``).

One iteration, from the label posterior ``q`` of the previous one (initially the soft majority vote):

    update     each part's parameters given q          EM: the MAP M-step (seed 000 eq. 2)
                                                       VB: the conjugate Dirichlet update
    E-step     log q[i, k] = log p(y_i = k | Z_i, ...)  seed 000 eq. 1 (VB: with E[log theta])
    objective  sum_i log sum_k exp(log prior_ik + sum_n G[n, k]) + part objectives

For EM the part objectives are the log prior densities, and the objective is the log joint density
of the label-marginalised NumPyro model (tests check both facts and that it never decreases).  For VB
they are ``-KL(q || prior)`` and the objective is the evidence lower bound.

Stopping rules (``stop=``):
    ``"soft"``      the mean annotation likelihood changes by less than ``tol`` (seed 000 eq. 6);
                    for parts with sufficient statistics (Dawid-Skene, BCC) it is taken at the
                    M-step's labels and parameters, ``sum_{j,k,l} C[j,k,l] theta[j,k,l] / |Z|``
                    (``C`` the expected counts), which costs no pass over the annotations;
    ``"hard"``      no item's argmax label changes (seed 000 eq. 5);
    ``"objective"`` the objective changes by less than ``tol`` per annotation;
and always at ``max_iter`` iterations (``tol=0`` runs exactly ``max_iter``).

Scale.  A worker part may give its M-step as sufficient statistics (``statistics``, a sum over
annotations, and ``from_statistics``).  Then both passes over the annotations of an iteration -- the
statistics and the item log-likelihoods of the E-step -- run through :func:`annotation_sum`: the
annotation axis is cut into chunks of at most :data:`CHUNK_BYTES` of (rows, K) intermediates
(``lax.scan``; 10^8 annotations fit in memory), and when the data are sharded over a mesh (several
devices, or several processes after ``jax.distributed.initialize``) each device sums its own shard
and a ``psum`` combines them (:mod:`crowdinfer.distributed`).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from crowdinfer.annotations import CrowdData
from crowdinfer.distributed import annotation_sum, data_mesh
from crowdinfer.ops import label_posterior, mean_annotation_likelihood

__all__ = ["WorkerPart", "ClassPart", "Spec", "State", "run", "STOP_RULES"]

STOP_RULES = ("soft", "hard", "objective")


class WorkerPart(NamedTuple):
    """The worker side of a model (all pure functions; ``params`` is a dict shared with the class
    part, each part owning its own keys)."""

    init: Callable  # (data, hyper) -> dict: parameters before the first update
    update: Callable  # (data, label_probs, hyper, params) -> dict: updated worker parameters
    log_lik: Callable  # (data, params) -> (capacity, K): G[n, k] = log p(z_n | y = k)
    objective: Callable  # (params, hyper) -> scalar: log prior density (EM) or -KL (VB)
    confusion: Callable  # (params, n_classes) -> (M, K, K) point estimate for reporting
    # optional: the M-step through sufficient statistics (chunked and sharded sums, out-of-core EM)
    statistics: Callable | None = None  # (data, label_probs) -> pytree, a sum over annotations
    from_statistics: Callable | None = None  # (stats, hyper, params) -> dict, as ``update``
    # (stats, params) -> sum_n sum_k q[i_n, k] p(z_n | y = k): the soft rule's numerator
    expected_likelihood: Callable | None = None


class ClassPart(NamedTuple):
    """The label-prior side: class proportions, fixed logits, or a learned classifier."""

    init: Callable  # (data, hyper) -> dict
    update: Callable  # (data, label_probs, hyper, params) -> dict
    log_prior: Callable  # (data, params, hyper) -> (K,) or (N, K): log p(y_i = k)
    objective: Callable  # (params, hyper) -> scalar
    proportions: Callable  # (params) -> (K,) point estimate, or None


class Spec(NamedTuple):
    workers: WorkerPart
    classes: ClassPart


class State(NamedTuple):
    params: dict  # both parts' parameters
    log_q: jax.Array  # (N, K) log label posterior at ``params``
    objective: jax.Array  # log joint density (EM) or ELBO (VB) at ``params``
    likelihood: jax.Array  # mean annotation likelihood (seed 000 eq. 6)
    iteration: jax.Array  # number of iterations done
    converged: jax.Array  # whether the stopping rule fired before max_iter
    history: jax.Array  # (max_iter,) objective per iteration, NaN after the last


def _iterate(spec: Spec, data: CrowdData, hyper, params: dict, label_probs, soft: bool, mesh):
    """Update both parts from ``label_probs``, then the E-step and the objective (and, for the
    soft stopping rule, the mean annotation likelihood)."""
    workers = spec.workers
    if workers.statistics is None:
        params = {**params, **workers.update(data, label_probs, hyper, params)}
        params = {**params, **spec.classes.update(data, label_probs, hyper, params)}
        log_lik = workers.log_lik(data, params)
        log_q, evidence = label_posterior(data, log_lik, spec.classes.log_prior(data, params, hyper))
        likelihood = (mean_annotation_likelihood(data, log_lik, jnp.exp(log_q)) if soft
                      else jnp.nan)
    else:
        stats = annotation_sum(workers.statistics, data, label_probs, mesh=mesh)
        params = {**params, **workers.from_statistics(stats, hyper, params)}
        params = {**params, **spec.classes.update(data, label_probs, hyper, params)}
        zero = jnp.zeros((data.n_items, data.n_classes), jnp.float32)
        item_ll = annotation_sum(
            lambda d, p, acc: acc.at[d.item].add(workers.log_lik(d, p) * d.weight[:, None]),
            data, (params, zero), mesh=mesh, accumulate=True)
        log_q, evidence = label_posterior(
            data, None, spec.classes.log_prior(data, params, hyper), item_log_lik=item_ll)
        likelihood = (workers.expected_likelihood(stats, params)
                      / jnp.maximum(data.weight.sum(), 1.0)) if soft else jnp.nan
    objective = (
        evidence.sum() + workers.objective(params, hyper) + spec.classes.objective(params, hyper)
    )
    return params, log_q, objective, likelihood


def run(
    spec: Spec,
    data: CrowdData,
    hyper: dict,
    init_probs: jax.Array,
    *,
    max_iter: int = 100,
    tol: float = 1e-5,
    stop: str = "soft",
    callback: Callable | None = None,
) -> State:
    """Iterate from the label distribution ``init_probs`` (N, K); returns the final state.

    ``callback(iteration, objective)``, if given, is called on the host after every iteration
    (progress bars); it costs a device-host round trip per iteration.  When ``data`` is sharded
    over a mesh of devices (:func:`crowdinfer.distributed.data_mesh`), the annotation sums run per
    device and are combined by collectives.
    """
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {STOP_RULES}, got {stop!r}")
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    return _run(spec, data, hyper, init_probs, max_iter=max_iter, tol=tol, stop=stop,
                callback=callback, mesh=data_mesh(data))


@partial(jax.jit, static_argnames=("spec", "max_iter", "stop", "callback", "mesh"))
def _run(spec: Spec, data: CrowdData, hyper: dict, init_probs: jax.Array, *, max_iter: int,
         tol: float, stop: str, callback: Callable | None, mesh) -> State:
    n_annotations = jnp.maximum(data.weight.sum(), 1.0)

    def report(state):
        if callback is not None:
            jax.debug.callback(callback, state.iteration, state.objective)

    params = {**spec.workers.init(data, hyper), **spec.classes.init(data, hyper)}
    soft = stop == "soft"
    params, log_q, objective, likelihood = _iterate(spec, data, hyper, params, init_probs, soft, mesh)
    same = jnp.all(jnp.argmax(log_q, -1) == jnp.argmax(init_probs, -1))
    history = jnp.full((max_iter,), jnp.nan, dtype=objective.dtype).at[0].set(objective)
    converged = same if stop == "hard" else jnp.bool_(False)
    state = State(params, log_q, objective, likelihood, jnp.int32(1), converged, history)
    report(state)

    def cond(state: State):
        return (state.iteration < max_iter) & ~state.converged

    def body(state: State):
        params, log_q, objective, likelihood = _iterate(
            spec, data, hyper, state.params, jnp.exp(state.log_q), soft, mesh
        )
        if stop == "soft":
            done = jnp.abs(likelihood - state.likelihood) < tol
        elif stop == "hard":
            done = jnp.all(jnp.argmax(log_q, -1) == jnp.argmax(state.log_q, -1))
        else:
            done = jnp.abs(objective - state.objective) < tol * n_annotations
        new = State(
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
