"""The coordinate-ascent loop shared by MAP-EM and mean-field variational Bayes.

One ``jax.jit``; the iterations run in a ``lax.while_loop`` over :func:`step`.  A :class:`Spec`
pairs two parts, each built by a factory in its model file and each with its own typed state:

* a :class:`WorkerPart` (the model's worker parameters: how annotations depend on the true label),
  e.g. ``dawid_skene.map_part(concentration)`` with state ``ConfusionState(confusion)``;
* a :class:`ClassPart` (the label prior: class proportions, fixed per-item logits, or a learned
  classifier ``p(y_i | x_i)``), chosen in one place, :func:`crowdinfer.models.class_prior.part`.

A part is a pytree (Optax/BlackJAX style): its array hyperparameters (``part.hyper``, a typed
NamedTuple: Dirichlet concentrations, prior logits, features, the gold offset) are leaves, traced by
``jit``; its functions (and what they close over: numbers of steps, layer sizes, learning rates) are
static.  So the compiled loop is reused by every fit with same-shaped data and the same static
settings, whatever the prior arrays hold.  ``init`` / ``step`` are public: analytics and the online
loop iterate the same step.

One iteration, from the label posterior ``q`` of the previous one (initially the soft majority vote):

    update     each part's parameters given q          EM: the MAP M-step (seed 000 eq. 2)
                                                       VB: the conjugate Dirichlet update
    E-step     log q[i, k] = log p(y_i = k | Z_i, ...)  seed 000 eq. 1 (VB: with E[log theta])
    objective  sum_i log sum_k exp(log prior_ik + sum_n G[n, k]) + part objectives

For EM the part objectives are the log prior densities, and the objective is the log joint density
of the label-marginalised NumPyro model (tests check both facts and that it never decreases).  For VB
they are ``-KL(q || prior)`` and the objective is the evidence lower bound.

Stopping rules (``stop=``):
    ``"soft"``      the mean annotation likelihood changes by less than ``tol`` (seed 000 eq. 6)
                    (and, for parts with ``soft_needs_objective`` (one-coin), the objective as
                    for ``"objective"``: their likelihood can stand still while the fit moves);
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

import dataclasses
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from crowdinfer.annotations import CrowdData
from crowdinfer.distributed import annotation_sum, data_mesh
from crowdinfer.ops import item_sum, label_posterior, mean_annotation_likelihood

__all__ = ["WorkerPart", "ClassPart", "Spec", "State", "init", "step", "run", "STOP_RULES",
           "public", "as_state", "model_hyper"]

STOP_RULES = ("soft", "hard", "objective")


def _part(cls):
    """Register a part as a pytree: ``hyper`` is its only child, the functions are static."""
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(
        cls, data_fields=["hyper"], meta_fields=[f for f in fields if f != "hyper"])


@_part
@dataclasses.dataclass(frozen=True)
class WorkerPart:
    """The worker side of a model: pure functions of its own typed state and hyperparameters."""

    hyper: Any  # a NamedTuple of arrays (traced), or None
    state: type  # the NamedTuple type of the part's state
    init: Callable  # (data, hyper) -> state before the first update
    update: Callable  # (data, label_probs, hyper, state) -> state
    log_lik: Callable  # (data, state) -> (capacity, K): G[n, k] = log p(z_n | y = k)
    objective: Callable  # (state, hyper) -> scalar: log prior density (EM) or -KL (VB)
    confusion: Callable  # (state, n_classes) -> (M, K, K) point estimate for reporting
    # optional: the M-step through sufficient statistics (chunked and sharded sums, out-of-core EM)
    statistics: Callable | None = None  # (data, label_probs) -> pytree, a sum over annotations
    from_statistics: Callable | None = None  # (stats, hyper, state) -> state, as ``update``
    # (stats, state) -> sum_n sum_k q[i_n, k] p(z_n | y = k): the soft rule's numerator
    expected_likelihood: Callable | None = None
    # the soft rule also waits for the objective to settle: for a symmetric confusion (one-coin's)
    # the mean annotation likelihood is a function of the mean agreement of q with the answers
    # alone, so it stands still while the class proportions still move (1 answer per item, skewed
    # classes: one-coin stopped after 3 iterations at majority vote's labels)
    soft_needs_objective: bool = False

    def with_hyper(self, hyper) -> "WorkerPart":
        return dataclasses.replace(self, hyper=hyper)


@_part
@dataclasses.dataclass(frozen=True)
class ClassPart:
    """The label-prior side: class proportions, fixed logits, or a learned classifier."""

    hyper: Any
    state: type
    init: Callable  # (data, hyper) -> state
    update: Callable  # (data, label_probs, hyper, state) -> state
    log_prior: Callable  # (data, state, hyper) -> (K,) or (N, K): log p(y_i = k)
    objective: Callable  # (state, hyper) -> scalar
    proportions: Callable  # (state) -> (K,) point estimate, or None

    def with_hyper(self, hyper) -> "ClassPart":
        return dataclasses.replace(self, hyper=hyper)


class Spec(NamedTuple):
    workers: WorkerPart
    classes: ClassPart


def public(state) -> dict:
    """A part state's fields as a dict, without its private ones (``state.private``: optimiser
    states and the like, not shown in ``Posterior.params``)."""
    private = getattr(state, "private", ())
    return {k: v for k, v in state._asdict().items() if k not in private}


def as_state(part, params: dict):
    """A part's typed state from a dict of parameters named as its fields (NUTS draws, SVI
    estimates: the sample sites of the model's NumPyro model)."""
    return part.state(**{f: params[f] for f in part.state._fields})


def model_hyper(spec: Spec) -> dict:
    """Both parts' hyperparameters as one dict, keyed by field name (``None`` fields dropped): the
    ``hyper`` of the model's NumPyro model, and what ``Posterior.options["hyper"]`` records."""
    out = {}
    for part in spec:
        if part.hyper is not None:
            out.update({k: v for k, v in part.hyper._asdict().items() if v is not None})
    return out


class State(NamedTuple):
    workers: Any  # the worker part's state
    classes: Any  # the class part's state
    log_q: jax.Array  # (N, K) log label posterior at the parts' states
    objective: jax.Array  # log joint density (EM) or ELBO (VB) at the parts' states
    likelihood: jax.Array  # mean annotation likelihood (seed 000 eq. 6)
    iteration: jax.Array  # number of iterations done
    converged: jax.Array  # whether the stopping rule fired before max_iter
    history: jax.Array  # (max_iter,) objective per iteration, NaN after the last

    @property
    def params(self) -> dict:
        """Both parts' public parameters as one dict (what ``Posterior.params`` shows)."""
        return {**public(self.workers), **public(self.classes)}


def _log_lik_of_rows(workers: WorkerPart, state, rows: CrowdData) -> jax.Array:
    return workers.log_lik(rows, state)


def _iterate(spec: Spec, data: CrowdData, workers_state, classes_state, label_probs, soft: bool,
             mesh):
    """Update both parts from ``label_probs``, then the E-step and the objective (and, for the
    soft stopping rule, the mean annotation likelihood)."""
    workers, classes = spec
    classes_state = classes.update(data, label_probs, classes.hyper, classes_state)
    log_prior = classes.log_prior(data, classes_state, classes.hyper)
    slotted = data.slots is not None and mesh is None  # the per-item layout: fused item sums
    if workers.statistics is None:
        workers_state = workers.update(data, label_probs, workers.hyper, workers_state)
        if slotted:
            log_lik = partial(_log_lik_of_rows, workers, workers_state)
            log_q, evidence = label_posterior(data, None, log_prior,
                                              item_log_lik=item_sum(data, log_lik))
        else:
            log_lik = workers.log_lik(data, workers_state)
            log_q, evidence = label_posterior(data, log_lik, log_prior)
        likelihood = (mean_annotation_likelihood(data, log_lik, jnp.exp(log_q)) if soft
                      else jnp.nan)
    elif slotted:  # no (annotations, K) array, so no chunks
        stats = workers.statistics(data, label_probs)
        workers_state = workers.from_statistics(stats, workers.hyper, workers_state)
        item_ll = item_sum(data, partial(_log_lik_of_rows, workers, workers_state))
        log_q, evidence = label_posterior(data, None, log_prior, item_log_lik=item_ll)
    else:
        rows = data.rows_only()  # the chunks and shards map over the row arrays
        stats = annotation_sum(workers.statistics, rows, label_probs, mesh=mesh)
        workers_state = workers.from_statistics(stats, workers.hyper, workers_state)
        zero = jnp.zeros((data.n_items, data.n_classes), jnp.float32)
        item_ll = annotation_sum(
            lambda d, p, acc: acc.at[d.item].add(workers.log_lik(d, p) * d.weight[:, None]),
            rows, (workers_state, zero), mesh=mesh, accumulate=True)
        log_q, evidence = label_posterior(data, None, log_prior, item_log_lik=item_ll)
    if workers.statistics is not None:
        likelihood = (workers.expected_likelihood(stats, workers_state)
                      / jnp.maximum(data.weight.sum(), 1.0)) if soft else jnp.nan
    objective = (evidence.sum() + workers.objective(workers_state, workers.hyper)
                 + classes.objective(classes_state, classes.hyper))
    return workers_state, classes_state, log_q, objective, likelihood


def init(spec: Spec, data: CrowdData, init_probs: jax.Array, *, max_iter: int = 100,
         stop: str = "soft", mesh=None) -> State:
    """The state after the first iteration from the label distribution ``init_probs`` (N, K): both
    parts initialised, updated from ``init_probs``, and the E-step.  ``max_iter`` sizes the
    objective history; ``mesh``: see :func:`crowdinfer.distributed.data_mesh` (outside ``jit``)."""
    workers_state, classes_state, log_q, objective, likelihood = _iterate(
        spec, data, spec.workers.init(data, spec.workers.hyper),
        spec.classes.init(data, spec.classes.hyper), init_probs, stop == "soft", mesh)
    same = jnp.all(jnp.argmax(log_q, -1) == jnp.argmax(init_probs, -1))
    history = jnp.full((max_iter,), jnp.nan, dtype=objective.dtype).at[0].set(objective)
    converged = same if stop == "hard" else jnp.bool_(False)
    return State(workers_state, classes_state, log_q, objective, likelihood, jnp.int32(1),
                 converged, history)


def step(spec: Spec, data: CrowdData, state: State, *, tol: float = 1e-5, stop: str = "soft",
         mesh=None) -> State:
    """One iteration: both parts updated from ``exp(state.log_q)``, the E-step, the objective, and
    the stopping rule ``stop`` at tolerance ``tol`` (``state.converged``)."""
    workers_state, classes_state, log_q, objective, likelihood = _iterate(
        spec, data, state.workers, state.classes, jnp.exp(state.log_q), stop == "soft", mesh)
    if stop == "soft":
        done = jnp.abs(likelihood - state.likelihood) < tol  # seed 000 eq. 6
        if spec.workers.soft_needs_objective:
            done = done & (jnp.abs(objective - state.objective)
                           < tol * jnp.maximum(data.weight.sum(), 1.0))
    elif stop == "hard":
        done = jnp.all(jnp.argmax(log_q, -1) == jnp.argmax(state.log_q, -1))
    else:
        done = jnp.abs(objective - state.objective) < tol * jnp.maximum(data.weight.sum(), 1.0)
    return State(workers_state, classes_state, log_q, objective, likelihood,
                 state.iteration + 1, done, state.history.at[state.iteration].set(objective))


def run(
    spec: Spec,
    data: CrowdData,
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
    return _run(spec, data, init_probs, max_iter=max_iter, tol=tol, stop=stop,
                callback=callback, mesh=data_mesh(data))


@partial(jax.jit, static_argnames=("max_iter", "stop", "callback", "mesh"))
def _run(spec: Spec, data: CrowdData, init_probs: jax.Array, *, max_iter: int, tol: float,
         stop: str, callback: Callable | None, mesh) -> State:
    def report(state):
        if callback is not None:
            jax.debug.callback(callback, state.iteration, state.objective)

    state = init(spec, data, init_probs, max_iter=max_iter, stop=stop, mesh=mesh)
    report(state)

    def body(state: State):
        new = step(spec, data, state, tol=tol, stop=stop, mesh=mesh)
        report(new)
        return new

    return lax.while_loop(lambda s: (s.iteration < max_iter) & ~s.converged, body, state)
