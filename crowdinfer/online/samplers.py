"""Which items to ask about next, and whom to ask: samplers as values.

A sampler is a :class:`Proposer` -- the shape of Optax's ``GradientTransformation`` and BlackJAX's
``SamplingAlgorithm``: a NamedTuple of two pure functions, built by a factory that closes over the
sampler's settings::

    proposer = samplers.bald(prior_counts, slots=200, per_worker=40)
    sampler_state = proposer.init(state)                               # a NamedTuple
    proposal, sampler_state = proposer.propose(key, sampler_state, state)

The loop owns the key and the loop: :func:`next_proposal` (one ``jax.jit`` per proposer) derives
the step's key from the run state (``fold_in(state.key, 2 * step)``, so a run is a function of its
seed) and hands the proposer the state without its annotation buffer (``state.data`` is ``None``:
the buffer's size changes as it grows, and every sampler works from the counts, the answered
bitmask and the posteriors).  :class:`~crowdinfer.online.Session` and
:func:`~crowdinfer.online.run_simulation` take a ``proposer=``; without one they use
:func:`from_config` (``config.sampler``: ``"random"``, ``"greedy"`` or ``"bald"``).

Every sampler fills ``slots`` (item, worker) slots from the eligible set (unfinished, below the
per-item cap), never asks a worker about an item it already answered, and marks slots it cannot
fill as invalid.

* :func:`random` -- seed 000 sec. 3.3 / the official RandomSampler: ``hits_per_step`` HITs, each
  ``hit_size`` distinct items drawn uniformly from the eligible set and answered by one worker
  drawn at random.
* :func:`greedy` -- appendix A.5 eq. 7: items drawn uniformly from the eligible set; each goes to the
  worker with the highest expected accuracy on it, ``sum_y q_i(y) w_j[y, y]``, among the workers
  below the cap ``alpha = max_per_worker``.
* :func:`bald` -- seed 003 eq. 4: the (item, worker) pairs with the largest mutual information
  between the next answer ``z_ij`` and the unknowns (the label ``y_i`` and worker ``j``'s
  confusion), under the posterior ``q_i`` and ``W_j[y] ~ Dirichlet(a_j[y])`` (prior plus expected
  counts)::

      I(z_ij; y_i, W_j) = H[ sum_y q_i(y) E W_j[y] ]  -  sum_y q_i(y) E H[W_j[y]]

  with the closed form ``E H[Dir(a)] = psi(a_0 + 1) - sum_l a_l / a_0 psi(a_l + 1)``.  Candidates
  are ``pool * slots`` eligible items drawn at random; pairs are taken greedily, one new answer per
  item and at most ``per_worker`` per worker per step.
"""
from __future__ import annotations

import numbers
from functools import lru_cache, partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from .config import OnlineConfig
from .risk import open_items
from .state import State, answered_by

__all__ = ["Proposal", "Proposer", "EmptyState", "random", "greedy", "bald", "from_config",
           "next_proposal", "proposal_key", "propose", "bald_scores"]


class Proposal(NamedTuple):
    item: jax.Array  # (slots,) int32
    worker: jax.Array  # (slots,) int32
    valid: jax.Array  # (slots,) bool: False where no eligible item/worker was left


class EmptyState(NamedTuple):
    """The state of a sampler that carries nothing from step to step (all built-in ones)."""


class Proposer(NamedTuple):
    """A sampler as a value: ``init(state) -> sampler_state`` (a NamedTuple) and
    ``propose(key, sampler_state, state) -> (Proposal, sampler_state)``, both pure and traceable
    (:func:`next_proposal` jits them).  A :class:`~crowdinfer.online.Session` keeps the sampler
    state in memory and rebuilds it with ``init`` when a run directory is reopened."""

    init: Callable[[State], Any]
    propose: Callable[[jax.Array, Any, State], tuple]


def _empty_init(state: State) -> EmptyState:
    return EmptyState()


def _stateless(fn: Callable[[jax.Array, State], Proposal]) -> Proposer:
    return Proposer(_empty_init, lambda key, sampler_state, state: (fn(key, state), sampler_state))


def _check(**settings) -> None:
    for name, value in settings.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _random_items(key, mask, k):
    """``k`` distinct items drawn uniformly from ``mask`` (Gumbel top-k); valid flags."""
    score = jnp.where(mask, jax.random.gumbel(key, mask.shape), -jnp.inf)
    top, idx = jax.lax.top_k(score, k)
    return idx.astype(jnp.int32), jnp.isfinite(top)


def random(hits_per_step: int = 5, hit_size: int = 40, max_per_item: int = 3) -> Proposer:
    """``hits_per_step`` HITs of ``hit_size`` distinct eligible items, each for one worker drawn
    at random (distinct workers per step when there are enough of them)."""
    _check(hits_per_step=hits_per_step, hit_size=hit_size, max_per_item=max_per_item)

    def propose(key, state: State) -> Proposal:
        n, m = state.item_count.shape[0], state.worker_count.shape[0]
        k_workers, k_items = jax.random.split(key)
        order = jax.random.permutation(k_workers, m)
        workers = order[jnp.arange(hits_per_step) % m].astype(jnp.int32)
        free = open_items(state, max_per_item)

        def hit(taken, inputs):
            key, w = inputs
            mask = free & ~taken & ~answered_by(state.answered, jnp.arange(n), w)
            items, valid = _random_items(key, mask, hit_size)
            taken = taken.at[items].max(valid)
            return taken, (items, valid)

        keys = jax.random.split(k_items, hits_per_step)
        _, (items, valid) = jax.lax.scan(hit, jnp.zeros_like(free), (keys, workers))
        return Proposal(items.reshape(-1), jnp.repeat(workers, hit_size), valid.reshape(-1))

    return _stateless(propose)


def _assign(state: State, items, item_valid, scores, per_step_cap, max_per_worker):
    """Greedy over slots: slot s takes the best-scoring allowed worker for ``items[s]`` (scores
    (S, M)); allowed = below the total cap, below ``per_step_cap`` this step, not answered yet."""
    m = scores.shape[1]

    def slot(load, inputs):
        i, ok, score = inputs
        allowed = (state.worker_count + load < max_per_worker) & (load < per_step_cap)
        allowed &= ~answered_by(state.answered, jnp.full((m,), i), jnp.arange(m))
        best = jnp.argmax(jnp.where(allowed, score, -jnp.inf)).astype(jnp.int32)
        valid = ok & allowed[best]
        return load.at[best].add(valid.astype(jnp.int32)), (best, valid)

    _, (workers, valid) = jax.lax.scan(slot, jnp.zeros(m, jnp.int32), (items, item_valid, scores))
    return Proposal(items, workers, valid)


def greedy(slots: int = 200, max_per_worker: int = 2000, max_per_item: int = 3) -> Proposer:
    """``slots`` distinct eligible items drawn at random, each for the worker with the highest
    expected accuracy on it (eq. 7) among those below ``max_per_worker`` answers; ties at random."""
    _check(slots=slots, max_per_worker=max_per_worker, max_per_item=max_per_item)

    def propose(key, state: State) -> Proposal:
        k_items, k_ties = jax.random.split(key)
        items, valid = _random_items(k_items, open_items(state, max_per_item), slots)
        q = jnp.exp(state.log_q[items])  # (S, K)
        accuracy = jnp.diagonal(state.confusion, axis1=1, axis2=2)  # (M, K)
        score = q @ accuracy.T
        # ties (e.g. every worker still at the prior) are broken at random, not towards worker 0
        score = score + 1e-6 * jax.random.uniform(k_ties, score.shape)
        return _assign(state, items, valid, score, slots, max_per_worker)

    return _stateless(propose)


def _dirichlet_entropy(alpha):
    """``E H[p]`` for ``p ~ Dirichlet(alpha)`` along the last axis."""
    a0 = alpha.sum(-1)
    return digamma(a0 + 1.0) - jnp.sum(alpha / a0[..., None] * digamma(alpha + 1.0), -1)


def bald_scores(q: jax.Array, alpha: jax.Array) -> jax.Array:
    """Mutual information (P, M) between a new answer of worker j on item i and (y_i, W_j), for
    label posteriors ``q`` (P, K) and Dirichlet confusion posteriors ``alpha`` (M, K, K)."""
    mean = alpha / alpha.sum(-1, keepdims=True)  # E W_j[y, l]
    predictive = jnp.einsum("pk,mkl->pml", q, mean)
    h_marginal = -jnp.sum(predictive * jnp.log(jnp.maximum(predictive, 1e-30)), -1)
    h_conditional = q @ _dirichlet_entropy(alpha).T  # (P, M)
    return h_marginal - h_conditional


def bald(prior_counts, slots: int = 200, per_worker: int = 40, max_per_worker: int = 2000,
         max_per_item: int = 3, pool: int = 4) -> Proposer:
    """The ``slots`` (item, worker) pairs of largest mutual information (eq. 4) among
    ``pool * slots`` eligible items drawn at random, the workers' Dirichlet posteriors being
    ``1 + prior_counts`` (K, K) plus the expected counts; one new answer per item, at most
    ``per_worker`` per worker per step and ``max_per_worker`` in all."""
    _check(slots=slots, per_worker=per_worker, max_per_worker=max_per_worker,
           max_per_item=max_per_item, pool=pool)
    prior_counts = jnp.asarray(prior_counts, jnp.float32)
    if prior_counts.ndim != 2 or prior_counts.shape[0] != prior_counts.shape[1]:
        raise ValueError(f"prior_counts must be a (K, K) array, got shape {prior_counts.shape}")

    def propose(key, state: State) -> Proposal:
        n = state.log_q.shape[0]
        size = min(n, pool * slots)
        items, valid = _random_items(key, open_items(state, max_per_item), size)
        mi = bald_scores(jnp.exp(state.log_q[items]), 1.0 + prior_counts + state.counts)
        m = mi.shape[1]

        open_pair = valid[:, None] & ~answered_by(state.answered, items[:, None], jnp.arange(m)[None, :])

        def slot(carry, _):
            used, load = carry
            allowed = (state.worker_count + load < max_per_worker) & (load < per_worker)
            ok = open_pair & ~used[:, None] & allowed[None, :]
            flat = jnp.argmax(jnp.where(ok, mi, -jnp.inf))
            p, w = flat // m, (flat % m).astype(jnp.int32)
            good = ok[p, w]
            used = used.at[p].set(used[p] | good)
            return (used, load.at[w].add(good.astype(jnp.int32))), (items[p], w, good)

        init = (jnp.zeros(size, bool), jnp.zeros(m, jnp.int32))
        _, (it, wk, good) = jax.lax.scan(slot, init, None, length=slots)
        return Proposal(it, wk, good)

    return _stateless(propose)


@lru_cache(maxsize=None)
def from_config(config: OnlineConfig) -> Proposer:
    """The proposer ``config.sampler`` names, with the configuration's settings (the same value for
    equal configurations, so a run compiles its proposals once)."""
    if config.sampler == "random":
        return random(config.hits_per_step, config.hit_size, config.max_per_item)
    if config.sampler == "greedy":
        return greedy(config.slots, config.max_per_worker, config.max_per_item)
    from .loop import worker_prior

    return bald(worker_prior(config), config.slots, config.hit_size, config.max_per_worker,
                config.max_per_item, config.bald_pool)


def proposal_key(state: State) -> jax.Array:
    """The key of the current step's proposal: a function of the run's seed and step only."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.key), 2 * state.step)


@partial(jax.jit, static_argnums=(0,))
def _propose(proposer: Proposer, sampler_state, state: State):
    return proposer.propose(proposal_key(state), sampler_state, state)


def next_proposal(proposer: Proposer, sampler_state, state: State):
    """``(proposal, sampler_state)`` for the current step (jitted once per proposer and state
    layout; the annotation buffer is left out, so a growing buffer does not compile it again)."""
    return _propose(proposer, sampler_state, state._replace(data=None))


def propose(config: OnlineConfig, state: State) -> Proposal:
    """The next step's questions from the sampler ``config.sampler`` names; deterministic given the
    state (its key and step)."""
    proposer = from_config(config)
    return next_proposal(proposer, proposer.init(state), state)[0]
