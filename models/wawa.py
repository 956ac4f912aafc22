"""Skill-weighted majority votes: Wawa and the log-odds weighted vote (cheap, robust baselines).

Not generative models; the pieces are pure jitted functions of a :class:`CrowdData`:

* :func:`weighted_vote` -- ``score[i, l] = sum_{n: i_n = i, z_n = l} skill[w_n]``, normalised per
  item (an item with no positive score gets the uniform distribution);
* :func:`agreement` -- each worker's fraction of answers equal to given labels;
* **Wawa** ("worker agreement with aggregate", as in crowd-kit): the majority vote, each worker's
  agreement with it as their skill, then the skill-weighted vote.  A tied vote among ``t``
  classes counts an answer to any of them ``1/t`` right (``ties="split"``, the default: the result
  does not depend on how classes are named); ``ties="first"`` gives the tie to the first class,
  as crowd-kit does (its "first" is the order of its ``value_counts``, which no renaming-invariant
  rule reproduces);
* **weighted vote** (``fit(ann, "weighted_vote")``): the same agreement, smoothed by one right
  and one wrong pseudo-answer and floored at chance ``1/K``, turned into the log-odds
  weight ``log((K - 1) a_j / (1 - a_j)) >= 0`` -- the optimal weight of an independent worker who is
  right with probability ``a_j`` and errs uniformly (Nitzan & Paroush 1982); the label
  probabilities are the softmax of the summed weights, i.e. the one-coin posterior (uniform class
  prior) at those plug-in accuracies.  Or any ``skills >= 0`` the user gives (one weight per
  worker, in ``Annotations.worker_ids`` order or as a mapping from worker id): then the normalised
  weighted vote, as crowd-kit's ``MajorityVote(skills=...)``.

Annotation weights (``CrowdData.weight``) multiply every vote; padding rows count for nothing.
With ``fit(use_gold=True)`` gold items take their gold label both in the skill estimate and in
the output.  There is no likelihood: these report no objective.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crowdinfer import options as opts
from crowdinfer.annotations import CrowdData
from crowdinfer.ops import vote_counts

__all__ = [
    "agreement",
    "log_odds",
    "vote_posterior",
    "wawa_runner",
    "wawa_skills",
    "weighted_vote",
    "weighted_vote_runner",
]


@jax.jit
def weighted_vote(data: CrowdData, skills: jax.Array) -> jax.Array:
    """Normalised skill-weighted votes, (N, K)."""
    votes = jax.nn.one_hot(data.label, data.n_classes) * (data.weight * skills[data.worker])[:, None]
    scores = jax.ops.segment_sum(votes, data.item, data.n_items)
    total = scores.sum(-1, keepdims=True)
    return jnp.where(total > 0, scores / jnp.where(total > 0, total, 1.0), 1.0 / data.n_classes)


def agreement(data: CrowdData, labels: jax.Array) -> jax.Array:
    """Each worker's (weighted) fraction of answers equal to the items' labels, (M,); 0 for a
    worker with no answers.  ``labels`` are class codes (N,) or distributions (N, K) (a tie among
    ``t`` classes as ``1/t`` each: the answer counts ``1/t`` right)."""
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, data.n_classes)
    hit = labels[data.item, data.label] * data.weight
    right = jax.ops.segment_sum(hit, data.worker, data.n_workers)
    total = jax.ops.segment_sum(data.weight, data.worker, data.n_workers)
    return jnp.where(total > 0, right / jnp.maximum(total, 1e-30), 0.0)


def winners(scores: jax.Array, ties: str) -> jax.Array:
    """The labels of vote scores (N, K) as distributions: ``ties="split"`` spreads a tie evenly
    over the tied classes (invariant to how classes are named); ``"first"`` gives it to the first
    (crowd-kit's rule, up to its own class order)."""
    if ties == "first":
        return jax.nn.one_hot(jnp.argmax(scores, -1), scores.shape[-1])
    top = scores >= scores.max(-1, keepdims=True) - 1e-6 * jnp.abs(scores).max(-1, keepdims=True)
    return top / top.sum(-1, keepdims=True)


def clamp_labels(labels: jax.Array, gold: jax.Array | None) -> jax.Array:
    """Gold labels (codes >= 0) replace the label distributions (N, K); ``gold=None`` leaves them."""
    if gold is None:
        return labels
    return jnp.where((gold >= 0)[:, None], jax.nn.one_hot(gold, labels.shape[-1]), labels)


@partial(jax.jit, static_argnames="ties")
def wawa_skills(data: CrowdData, gold: jax.Array | None = None, ties: str = "split") -> jax.Array:
    """Agreement with the majority vote (gold labels where given)."""
    return agreement(data, clamp_labels(winners(vote_counts(data), ties), gold))


@partial(jax.jit, static_argnames="ties")
def smoothed_skills(data: CrowdData, gold: jax.Array | None = None, ties: str = "split"):
    """Agreement with the majority vote with one pseudo-answer right and one wrong,
    ``(right + 1) / (n + 2)``: a worker seen once is not judged perfect or useless."""
    labels = clamp_labels(winners(vote_counts(data), ties), gold)
    right = jax.ops.segment_sum(labels[data.item, data.label] * data.weight, data.worker,
                                data.n_workers)
    total = jax.ops.segment_sum(data.weight, data.worker, data.n_workers)
    return (right + 1.0) / (total + 2.0)


def log_odds(accuracy: jax.Array, n_classes: int, ceiling: float = 1.0 - 1e-3) -> jax.Array:
    """``log((K - 1) a / (1 - a))``, ``a`` clipped to ``[1/K, ceiling]``: a worker no better than
    chance gets weight 0, never a negative one (an answer never counts against its own label)."""
    a = jnp.clip(accuracy, 1.0 / n_classes, ceiling)
    return jnp.log((n_classes - 1.0) * a / (1.0 - a))


def vote_posterior(annotations, data, probs, skills, model: str, options: dict):
    """Wrap a vote as a Posterior (confusions: answers against it, 0.01 smoothing)."""
    from crowdinfer.models.priors import dirichlet_map

    from crowdinfer.ops import expected_confusion_counts
    from crowdinfer.posterior import Posterior

    probs = jnp.asarray(probs, jnp.float32)
    if annotations.gold is not None:  # gold items clamped (fit's use_gold)
        gold = jnp.asarray(annotations.gold)
        probs = jnp.where((gold >= 0)[:, None], jax.nn.one_hot(gold, data.n_classes), probs)
    counts = dirichlet_map(expected_confusion_counts(data, probs), 0.01)
    q = np.asarray(probs, np.float64)
    return Posterior(annotations=annotations, model=model, method="vote", label_probs=q,
                     confusion=np.asarray(counts), class_prior=q.mean(0), history=np.zeros(0),
                     n_iter=0, converged=True, params={"skills": np.asarray(skills)},
                     options=options)


def _gold(annotations):
    return None if annotations.gold is None else jnp.asarray(annotations.gold, jnp.int32)


def wawa_runner(annotations, *, ties: str = "split") -> Any:
    """``fit(ann, "wawa")``."""
    data = annotations.to_device()
    skills = wawa_skills(data, _gold(annotations), ties)
    return vote_posterior(annotations, data, weighted_vote(data, skills), skills, "wawa",
                          {"ties": ties})


def _user_skills(annotations, skills) -> np.ndarray:
    if isinstance(skills, dict):
        missing = [w for w in annotations.worker_ids if w not in skills]
        if missing:
            raise ValueError(f"skills has no weight for {len(missing)} worker(s), e.g. "
                             f"{missing[:3]}")
        skills = [skills[w] for w in annotations.worker_ids]
    arr = np.asarray(skills, np.float64)
    if arr.shape != (annotations.n_workers,):
        raise ValueError(f"skills must have one weight per worker, shape ({annotations.n_workers},)"
                         f", got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("skills must be finite and >= 0")
    return arr


def weighted_vote_runner(annotations, *, skills=None, ties: str = "split") -> Any:
    """``fit(ann, "weighted_vote")``: log-odds weights from agreement with the majority vote, or
    the given ``skills``."""
    data = annotations.to_device()
    if skills is None:
        weights = log_odds(smoothed_skills(data, _gold(annotations), ties), data.n_classes)
        probs, given = _signed_vote(data, weights), False
    else:
        weights = jnp.asarray(_user_skills(annotations, skills), jnp.float32)
        probs, given = weighted_vote(data, weights), True
    return vote_posterior(annotations, data, probs, weights, "weighted_vote",
                          {"skills": "given" if given else "log-odds of agreement with the vote"})


@jax.jit
def _signed_vote(data: CrowdData, weights: jax.Array) -> jax.Array:
    """The vote with signed (log-odds) weights: the softmax of the summed weights per class."""
    votes = jax.nn.one_hot(data.label, data.n_classes) * (data.weight * weights[data.worker])[:, None]
    return jax.nn.softmax(jax.ops.segment_sum(votes, data.item, data.n_items), axis=-1)


def _skills_check(name, value):
    """Skills: one finite weight per worker, as an array or a {worker id: weight} mapping."""
    values = list(value.values()) if isinstance(value, dict) else value
    opts.finite_array(name, values)
    return value


_skills_check.allowed = "an array or a {worker: weight} mapping of finite numbers"


@dataclasses.dataclass(frozen=True)
class WeightedVoteOptions(opts._Group):
    """``skills``: one weight per worker (array or {worker id: weight}); None: log-odds weights."""

    skills: Any = opts._opt(None, opts.optional(_skills_check))
    ties: str = opts._opt("split", opts.choice("split", "first"))


@dataclasses.dataclass(frozen=True)
class TiesOptions(opts._Group):
    """How a tied majority vote counts when skills are measured against it: ``"split"`` (an
    answer to a tie among t classes is 1/t right; invariant to class names) or ``"first"``."""

    ties: str = opts._opt("split", opts.choice("split", "first"))


opts.register("wawa", "vote", TiesOptions)
opts.register("weighted_vote", "vote", WeightedVoteOptions)
RUNNERS = {"wawa": {"vote": wawa_runner}, "weighted_vote": {"vote": weighted_vote_runner}}
