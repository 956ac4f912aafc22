"""Majority vote, the baseline every model is measured against.

Not a generative model: the soft vote ``q[i, l] = V[i, l] / sum_l V[i, l]`` (``V`` the vote
counts; an item nobody annotated gets the uniform distribution), and the hard vote its argmax.

Ties: the soft vote splits them evenly, so its expected accuracy counts a tie among ``t`` classes
as ``1/t`` correct (how the published MV figures are computed).  The hard vote breaks ties either by
the lowest class index (``ties="first"``, deterministic) or uniformly at random from a key
(``ties="random"``).  The soft vote is also the initialisation of every EM run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from crowdinfer.annotations import CrowdData
from crowdinfer.ops import vote_counts


@jax.jit
def soft(data: CrowdData) -> jax.Array:
    """Vote fractions, shape (N, K) (weighted votes over their total weight, which may be < 1)."""
    votes = vote_counts(data)
    total = votes.sum(-1, keepdims=True)
    return jnp.where(total > 0, votes / jnp.where(total > 0, total, 1.0), 1.0 / data.n_classes)


def hard(data: CrowdData, ties: str = "first", key: jax.Array | None = None) -> jax.Array:
    """Majority labels, shape (N,), ties broken by ``"first"`` class or at ``"random"``."""
    votes = vote_counts(data)
    if ties == "first":
        return jnp.argmax(votes, axis=-1)
    if ties == "random":
        if key is None:
            raise ValueError("ties='random' needs a jax.random key")
        best = votes == votes.max(-1, keepdims=True)
        noise = jax.random.uniform(key, votes.shape)
        return jnp.argmax(jnp.where(best, noise, -1.0), axis=-1)
    raise ValueError(f"ties must be 'first' or 'random', got {ties!r}")
