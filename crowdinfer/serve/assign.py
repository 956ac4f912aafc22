"""Which item a given annotator gets next: the sampler's scores for every (item, worker) pair,
computed once per update (one jit), so a request only takes a masked argmax on the host.

* ``random``: uniform over the eligible items (no scores).
* ``greedy`` (appendix A.5 eq. 7, read per annotator): the item on which this annotator's expected
  accuracy ``sum_y q_i(y) w_j[y, y]`` is highest.
* ``bald`` (seed 003 eq. 4): the item whose next answer from this annotator carries the most
  information about its label and the annotator's confusion
  (:func:`crowdinfer.online.samplers.bald_scores`).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from crowdinfer.online.config import OnlineConfig
from crowdinfer.online.loop import worker_prior
from crowdinfer.online.samplers import bald_scores
from crowdinfer.online.state import State

__all__ = ["worker_scores"]


@partial(jax.jit, static_argnums=(0,))
def _scores(config: OnlineConfig, log_q, confusion, counts, prior_counts):
    q = jnp.exp(log_q)
    if config.sampler == "greedy":
        return q @ jnp.diagonal(confusion, axis1=1, axis2=2).T
    return bald_scores(q, 1.0 + prior_counts + counts)


def worker_scores(config: OnlineConfig, state: State):
    """(N, M) score of asking worker j about item i (higher first); ``None`` for ``random``."""
    if config.sampler == "random":
        return None
    return _scores(config, state.log_q, state.confusion, state.counts, worker_prior(config))
