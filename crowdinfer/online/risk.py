"""Bayes risk of the current labels (seed 000 eq. 4) and the finished / unfinished sets.

With a loss matrix ``H[d, y]`` (the cost of deciding ``d`` when the truth is ``y``; 0-1 by
default) the expected cost of deciding ``d`` for item ``i`` is ``sum_y H[d, y] q_i(y)``; the
decision is the cheapest label and the risk is its cost.  Under 0-1 loss that is the posterior
argmax and ``1 - max_y q_i(y)``.
"""
from __future__ import annotations

import jax.numpy as jnp

from .config import OnlineConfig

__all__ = ["loss_matrix", "bayes_risk", "eligible"]


def loss_matrix(config: OnlineConfig) -> jnp.ndarray | None:
    """The configured loss matrix (``None``: 0-1 loss)."""
    if config.loss_matrix is None:
        return None
    return jnp.asarray(config.loss_matrix, jnp.float32)


def bayes_risk(label_probs: jnp.ndarray, loss: jnp.ndarray | None = None):
    """``(risk, decision)`` per item from the label posterior (N, K); ``loss=None``: 0-1 loss."""
    if loss is None:  # no K x K product: 1 - max q, argmax
        return 1.0 - label_probs.max(-1), jnp.argmax(label_probs, -1).astype(jnp.int32)
    expected = label_probs @ loss.T  # (N, decisions)
    return expected.min(-1), expected.argmin(-1).astype(jnp.int32)


def eligible(config: OnlineConfig, state) -> jnp.ndarray:
    """Items that may be asked about: unfinished and below the per-item cap."""
    return ~state.finished & (state.item_count < config.max_per_item)
