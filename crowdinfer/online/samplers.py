"""Which items to ask about next, and whom to ask: ``propose`` (jitted, static shapes).

Every sampler fills ``config.slots = hits_per_step * hit_size`` (item, worker) slots from the
eligible set (unfinished, below the per-item cap), never asks a worker about an item it already
answered, and marks slots it cannot fill as invalid.

* ``random`` -- seed 000 sec. 3.3 / the official RandomSampler: ``hits_per_step`` HITs, each
  ``hit_size`` distinct items drawn uniformly from the eligible set and answered by one worker
  drawn at random.
* ``greedy`` -- appendix A.5 eq. 7: items drawn uniformly from the eligible set; each goes to the
  worker with the highest expected accuracy on it, ``sum_y q_i(y) w_j[y, y]``, among the workers
  below the cap ``alpha = max_per_worker``.
* ``bald`` -- seed 003 eq. 4: the (item, worker) pairs with the largest mutual information between
  the next answer ``z_ij`` and the unknowns (the label ``y_i`` and worker ``j``'s confusion), under
  the posterior ``q_i`` and ``W_j[y] ~ Dirichlet(a_j[y])`` (prior plus expected counts)::

      I(z_ij; y_i, W_j) = H[ sum_y q_i(y) E W_j[y] ]  -  sum_y q_i(y) E H[W_j[y]]

  with the closed form ``E H[Dir(a)] = psi(a_0 + 1) - sum_l a_l / a_0 psi(a_l + 1)``.  Candidates
  are ``bald_pool * slots`` eligible items drawn at random; pairs are taken greedily, one new
  answer per item and at most ``hit_size`` per worker per step.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from .config import OnlineConfig
from .risk import eligible
from .state import WORD, State, answered_by

__all__ = ["Proposal", "propose", "bald_scores"]


class Proposal(NamedTuple):
    item: jax.Array  # (slots,) int32
    worker: jax.Array  # (slots,) int32
    valid: jax.Array  # (slots,) bool: False where no eligible item/worker was left


def _answered_row(state: State, worker) -> jax.Array:
    """(N,) whether ``worker`` answered each item."""
    words = state.answered[:, worker // WORD]
    return ((words >> (worker % WORD).astype(jnp.uint32)) & 1).astype(bool)


def _random_items(key, mask, k):
    """``k`` distinct items drawn uniformly from ``mask`` (Gumbel top-k); valid flags."""
    score = jnp.where(mask, jax.random.gumbel(key, mask.shape), -jnp.inf)
    top, idx = jax.lax.top_k(score, k)
    return idx.astype(jnp.int32), jnp.isfinite(top)


def _random(config: OnlineConfig, state: State, key) -> Proposal:
    m = state.worker_count.shape[0]
    k_workers, k_items = jax.random.split(key)
    # distinct workers per step when there are enough of them
    order = jax.random.permutation(k_workers, m)
    workers = order[jnp.arange(config.hits_per_step) % m].astype(jnp.int32)
    free = eligible(config, state)

    def hit(taken, inputs):
        key, w = inputs
        mask = free & ~taken & ~_answered_row(state, w)
        items, valid = _random_items(key, mask, config.hit_size)
        taken = taken.at[items].max(valid)
        return taken, (items, valid)

    keys = jax.random.split(k_items, config.hits_per_step)
    _, (items, valid) = jax.lax.scan(hit, jnp.zeros_like(free), (keys, workers))
    return Proposal(items.reshape(-1), jnp.repeat(workers, config.hit_size), valid.reshape(-1))


def _assign(config: OnlineConfig, state: State, items, item_valid, scores, per_step_cap):
    """Greedy over slots: slot s takes the best-scoring allowed worker for ``items[s]`` (scores
    (S, M)); allowed = below the total cap, below ``per_step_cap`` this step, not answered yet."""
    m = scores.shape[1]

    def slot(load, inputs):
        i, ok, score = inputs
        allowed = (state.worker_count + load < config.max_per_worker) & (load < per_step_cap)
        allowed &= ~answered_by(state.answered, jnp.full((m,), i), jnp.arange(m))
        best = jnp.argmax(jnp.where(allowed, score, -jnp.inf)).astype(jnp.int32)
        valid = ok & allowed[best]
        return load.at[best].add(valid.astype(jnp.int32)), (best, valid)

    _, (workers, valid) = jax.lax.scan(slot, jnp.zeros(m, jnp.int32), (items, item_valid, scores))
    return Proposal(items, workers, valid)


def _greedy(config: OnlineConfig, state: State, key) -> Proposal:
    k_items, k_ties = jax.random.split(key)
    items, valid = _random_items(k_items, eligible(config, state), config.slots)
    q = jnp.exp(state.log_q[items])  # (S, K)
    accuracy = jnp.diagonal(state.confusion, axis1=1, axis2=2)  # (M, K)
    score = q @ accuracy.T
    # ties (e.g. every worker still at the prior) are broken at random, not towards worker 0
    score = score + 1e-6 * jax.random.uniform(k_ties, score.shape)
    return _assign(config, state, items, valid, score, config.slots)


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


def _bald(config: OnlineConfig, state: State, key, prior_counts) -> Proposal:
    n = state.log_q.shape[0]
    pool = min(n, config.bald_pool * config.slots)
    items, valid = _random_items(key, eligible(config, state), pool)
    mi = bald_scores(jnp.exp(state.log_q[items]), 1.0 + prior_counts + state.counts)
    m = mi.shape[1]
    cap = config.hit_size

    open_pair = valid[:, None] & ~answered_by(state.answered, items[:, None], jnp.arange(m)[None, :])

    def slot(carry, _):
        used, load = carry
        allowed = (state.worker_count + load < config.max_per_worker) & (load < cap)
        ok = open_pair & ~used[:, None] & allowed[None, :]
        flat = jnp.argmax(jnp.where(ok, mi, -jnp.inf))
        p, w = flat // m, (flat % m).astype(jnp.int32)
        good = ok[p, w]
        used = used.at[p].set(used[p] | good)
        return (used, load.at[w].add(good.astype(jnp.int32))), (items[p], w, good)

    init = (jnp.zeros(pool, bool), jnp.zeros(m, jnp.int32))
    _, (it, wk, good) = jax.lax.scan(slot, init, None, length=config.slots)
    return Proposal(it, wk, good)


@partial(jax.jit, static_argnums=(0,))
def _propose(config: OnlineConfig, state: State, prior_counts) -> Proposal:
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 2 * state.step)
    if config.sampler == "random":
        return _random(config, state, key)
    if config.sampler == "greedy":
        return _greedy(config, state, key)
    return _bald(config, state, key, prior_counts)


def propose(config: OnlineConfig, state: State) -> Proposal:
    """The next step's questions; deterministic given the state (its key and step)."""
    from .loop import worker_prior

    # the annotation buffer is not needed: leaving it out keeps one compilation per run
    return _propose(config, state._replace(data=None), worker_prior(config))
