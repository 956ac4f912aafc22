"""ZeroBasedSkill (ZBS): an iteratively skill-weighted majority vote (as in crowd-kit).

Every worker starts with the same skill ``1/K + eps``.  Each of ``n_iter`` rounds takes the
skill-weighted vote's labels (a tie among ``t`` classes counting ``1/t`` for each, ``ties="split"``;
``"first"``: crowd-kit's first class) and moves each skill a step towards the
worker's agreement with them::

    skill <- skill + lr_t * (agreement(labels_t) - skill)

(gradient descent on the squared error between skill and agreement), with the step ``lr_t``
starting at ``lr_init`` and multiplied by ``lr_reduce_factor`` at every ``lr_steps_to_reduce``-th
round.  The labels and probabilities are the normalised weighted vote with the final skills.
All rounds run in one jitted ``lax.fori_loop``.  Annotation weights multiply every vote; with
``fit(use_gold=True)`` gold items keep their gold label throughout.  No objective (not a
likelihood model).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from crowdinfer import options as opts
from crowdinfer.annotations import CrowdData

from .wawa import _gold, agreement, clamp_labels, vote_posterior, weighted_vote, winners

__all__ = ["ZbsOptions", "runner", "skills"]


@partial(jax.jit, static_argnames=("n_iter", "lr_steps_to_reduce", "ties"))
def skills(data: CrowdData, gold=None, *, n_iter: int = 100, lr_init: float = 1.0,
           lr_steps_to_reduce: int = 20, lr_reduce_factor: float = 0.5,
           eps: float = 1e-5, ties: str = "split") -> jax.Array:
    """The workers' skills after ``n_iter`` rounds, (M,)."""
    present = jax.ops.segment_sum(data.weight, data.label, data.n_classes) > 0
    start = jnp.full((data.n_workers,), 1.0 / present.sum() + eps, jnp.float32)

    def body(iteration, carry):
        skill, lr = carry
        lr = jnp.where(iteration % lr_steps_to_reduce == 0, lr * lr_reduce_factor, lr)
        labels = clamp_labels(winners(weighted_vote(data, skill), ties), gold)
        return skill + lr * (agreement(data, labels) - skill), lr

    skill, _ = lax.fori_loop(1, n_iter + 1, body, (start, jnp.float32(lr_init)))
    return skill


@dataclasses.dataclass(frozen=True)
class ZbsOptions(opts._Group):
    """ZBS's schedule (crowd-kit's defaults)."""

    n_iter: int = opts._opt(100, opts.integer(1))
    lr_init: float = opts._opt(1.0, opts.number(0.0, 1.0, lo_open=True))
    lr_steps_to_reduce: int = opts._opt(20, opts.integer(1))
    lr_reduce_factor: float = opts._opt(0.5, opts.number(0.0, 1.0, lo_open=True))
    eps: float = opts._opt(1e-5, opts.number(0.0))
    ties: str = opts._opt("split", opts.choice("split", "first"))


def runner(annotations, *, n_iter: int = 100, lr_init: float = 1.0, lr_steps_to_reduce: int = 20,
           lr_reduce_factor: float = 0.5, eps: float = 1e-5, ties: str = "split"):
    """``fit(ann, "zero_based_skill")``."""
    data = annotations.to_device()
    skill = skills(data, _gold(annotations), n_iter=int(n_iter), lr_init=float(lr_init),
                   lr_steps_to_reduce=int(lr_steps_to_reduce),
                   lr_reduce_factor=float(lr_reduce_factor), eps=float(eps), ties=ties)
    return vote_posterior(annotations, data, weighted_vote(data, skill), skill, "zero_based_skill",
                          dict(n_iter=n_iter, lr_init=lr_init, lr_steps_to_reduce=lr_steps_to_reduce,
                               lr_reduce_factor=lr_reduce_factor, eps=eps, ties=ties))


opts.register("zero_based_skill", "vote", ZbsOptions)
RUNNERS = {"zero_based_skill": {"vote": runner}}
