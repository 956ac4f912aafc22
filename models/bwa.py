"""BWA: Bayesian weighted average (Li, Rubinstein & Cohn, "Truth inference at scale: a Bayesian
model for adjudicating highly redundant crowd annotations", WWW 2019).

Each answer is a one-hot vector ``y_n`` (K,), read as a noisy measurement of the item's label
vector ``z_i`` (K,) with a per-worker precision -- one per class, as in the authors' multi-class
code, which runs the binary model on each class against the rest::

    v[j, k]   ~ Gamma(a_v / 2 + 1, rate b_v[k] / 2)        worker j's precision on class k
    z[i, k]   ~ Normal(mu_k, 1 / sqrt(lambda))              mu_k a free parameter (flat prior)
    y[n, k]   ~ Normal(z[i_n, k], 1 / sqrt(v[w_n, k]))

Coordinate ascent on the log joint (each block its exact maximiser, so it never decreases):
``mu_k = mean_i z[i, k]``; ``v[j, k] = (a_v + n_j) / (b_v[k] + sum_{n: w_n = j} (z[i_n, k] - y[n, k])^2)``;
``z[i, k] = (lambda mu_k + sum_n v[w_n, k] y[n, k]) / (lambda + sum_n v[w_n, k])`` -- a weighted
average of the answers, the weights learned.  The Gamma prior's shape ``a_v / 2 + 1`` and rate
``b_v / 2`` make these modes the authors' updates exactly.  ``b_v`` is set from the data as in the
paper: ``b_v[k] = a_v * adj * sum_i n_i z0[i, k] (1 - z0[i, k]) / sum_i n_i`` with ``z0`` the vote
fractions and ``adj = 4 (1 - 1/K)`` (the "prior correction").  Defaults ``a_v = 15``,
``lambda = 1``, the authors'.  Gold items (``fit(use_gold=True)``) are held at their one-hot label vectors.  Stops when ``|z - z_prev| <= tol * |z|`` for every entry (their
``np.allclose(rtol=1e-3)``) or at ``max_iter`` (500).

The labels are ``argmax_k z[i, k]``; ``label_probs`` are ``z`` normalised per item: a score, not a
calibrated posterior.  The engine (``init`` / ``step`` / :func:`run`) is one jitted while-loop.
There is no per-annotation categorical likelihood (the model is Gaussian on one-hot vectors); the
objective (log joint, :func:`log_joint`) is exposed.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax

from crowdinfer import options as opts
from crowdinfer.annotations import CrowdData
from crowdinfer.ops import vote_counts

__all__ = ["State", "init", "log_joint", "model", "prior_rate", "run", "runner", "step"]


def _segment(values, ids, n):
    return jax.ops.segment_sum(values, ids, n)


RATE_FLOOR = 1e-4  # the smallest prior rate per answer (prior_rate)


def prior_rate(data: CrowdData, a_v: float, correction: bool = True) -> jax.Array:
    """``b_v`` (K,) from the vote fractions (the paper's data-dependent rate)."""
    votes = vote_counts(data)
    n_i = votes.sum(-1)
    z0 = _vote_fractions(votes, data.n_classes)
    adj = 4.0 * (1.0 - 1.0 / data.n_classes) if correction else 1.0
    rate = (n_i[:, None] * z0 * (1.0 - z0)).sum(0) / jnp.maximum(n_i.sum(), 1.0)
    # floored: where no item's answers disagree (one answer per item, say) the paper's rate is 0,
    # an improper Gamma whose precisions are infinite and every z NaN (reported as uniform
    # probabilities, every label class 0); the floor, 70x below the smallest rate of the 12
    # datasets of ../shared/data, lets the answers through as they are
    return a_v * adj * jnp.maximum(rate, RATE_FLOOR)


def _vote_fractions(votes, n_classes):
    total = votes.sum(-1, keepdims=True)
    return jnp.where(total > 0, votes / jnp.maximum(total, 1e-30), 1.0 / n_classes)


def model(data: CrowdData, hyper: dict):
    """The NumPyro model: ``hyper`` holds ``a_v``, ``b_v`` (K,), ``lam``; ``mu`` is a parameter."""
    k = data.n_classes
    with numpyro.plate("worker", data.n_workers, dim=-2), numpyro.plate("class", k, dim=-1):
        v = numpyro.sample("precision", dist.Gamma(hyper["a_v"] / 2.0 + 1.0, hyper["b_v"] / 2.0))
    mu = numpyro.param("mu", jnp.full((k,), 1.0 / k))
    with numpyro.plate("item", data.n_items, dim=-2), numpyro.plate("class", k, dim=-1):
        z = numpyro.sample("z", dist.Normal(mu, 1.0 / jnp.sqrt(hyper["lam"])))
    numpyro.factor("annotations", _annotation_log_lik(data, z, v).sum())


def _annotation_log_lik(data, z, v):
    """``w_n sum_k log N(y[n, k] | z[i_n, k], 1 / v[w_n, k])`` per annotation."""
    y = jax.nn.one_hot(data.label, data.n_classes)
    prec = v[data.worker]
    log_p = 0.5 * (jnp.log(prec) - jnp.log(2 * jnp.pi)) - 0.5 * prec * (y - z[data.item]) ** 2
    return log_p.sum(-1) * data.weight


def log_joint(data: CrowdData, hyper: dict, z, v, mu) -> jax.Array:
    """The log joint density of :func:`model` (what :func:`run` climbs)."""
    prior_v = dist.Gamma(hyper["a_v"] / 2.0 + 1.0, hyper["b_v"] / 2.0).log_prob(v).sum()
    prior_z = dist.Normal(mu, 1.0 / jnp.sqrt(hyper["lam"])).log_prob(z).sum()
    return prior_v + prior_z + _annotation_log_lik(data, z, v).sum()


class State(NamedTuple):
    z: jax.Array  # (N, K) item label vectors
    precision: jax.Array  # (M, K)
    mu: jax.Array  # (K,)
    objective: jax.Array  # log joint after the last step
    iteration: jax.Array
    converged: jax.Array
    history: jax.Array  # (max_iter,) objective per step, NaN after the last


def _clamp(z, hyper):
    """Gold items (``hyper["gold"]`` >= 0, from ``fit(use_gold=True)``) held at their one-hot."""
    if "gold" not in hyper:
        return z
    gold = hyper["gold"]
    return jnp.where((gold >= 0)[:, None], jax.nn.one_hot(gold, z.shape[-1]), z)


def init(data: CrowdData, hyper: dict, max_iter: int) -> State:
    z = _clamp(_vote_fractions(vote_counts(data), data.n_classes), hyper)
    k = data.n_classes
    return State(z, jnp.ones((data.n_workers, k)), z.mean(0), jnp.float32(-jnp.inf), jnp.int32(0),
                 jnp.bool_(False), jnp.full((max_iter,), jnp.nan, jnp.float32))


def step(data: CrowdData, hyper: dict, state: State, tol: float) -> State:
    """One round of the three block updates (mu, precisions, z)."""
    y = jax.nn.one_hot(data.label, data.n_classes) * data.weight[:, None]
    n_j = _segment(data.weight, data.worker, data.n_workers)
    mu = state.z.mean(0)
    resid = data.weight[:, None] * (state.z[data.item] - jax.nn.one_hot(data.label, data.n_classes)) ** 2
    v = (hyper["a_v"] + n_j[:, None]) / (hyper["b_v"] + _segment(resid, data.worker, data.n_workers))
    lam = hyper["lam"]
    num = lam * mu + _segment(v[data.worker] * y, data.item, data.n_items)
    den = lam + _segment(v[data.worker] * data.weight[:, None], data.item, data.n_items)
    z = _clamp(num / den, hyper)
    objective = log_joint(data, hyper, z, v, mu)
    done = jnp.all(jnp.abs(z - state.z) <= 1e-8 + tol * jnp.abs(z))
    return State(z, v, mu, objective, state.iteration + 1, done,
                 state.history.at[state.iteration].set(objective))


@partial(jax.jit, static_argnames=("max_iter",))
def run(data: CrowdData, hyper: dict, *, max_iter: int = 500, tol: float = 1e-3) -> State:
    """Iterate :func:`step` from the vote fractions until converged or ``max_iter`` steps."""
    return lax.while_loop(lambda s: (s.iteration < max_iter) & ~s.converged,
                          lambda s: step(data, hyper, s, tol), init(data, hyper, max_iter))


def runner(annotations, *, a_v: float = 15.0, lam: float = 1.0, prior_correction: bool = True,
           max_iter: int = 500, tol: float = 1e-3):
    """``fit(ann, "bwa")``: the authors' defaults; returns a Posterior whose confusions are each
    worker's answers against the labels (0.01 smoothing), for ``worker_skills``."""
    from crowdinfer.ops import expected_confusion_counts
    from crowdinfer.posterior import Posterior

    from .priors import dirichlet_map

    for name, value in (("a_v", a_v), ("lam", lam)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"bwa: {name} must be a finite number > 0, got {value}")
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    data = annotations.to_device()
    hyper = {"a_v": jnp.float32(a_v), "lam": jnp.float32(lam)}
    hyper["b_v"] = prior_rate(data, hyper["a_v"], prior_correction)
    if annotations.gold is not None:  # fit(use_gold=True): gold items clamped
        hyper["gold"] = jnp.asarray(annotations.gold, jnp.int32)
    state = jax.device_get(run(data, hyper, max_iter=int(max_iter), tol=float(tol)))
    z = np.clip(np.asarray(state.z, np.float64), 0.0, None)
    total = z.sum(-1, keepdims=True)
    probs = np.where(total > 0, z / np.where(total > 0, total, 1.0), 1.0 / annotations.n_classes)
    counts = dirichlet_map(expected_confusion_counts(data, jnp.asarray(probs, jnp.float32)), 0.01)
    n_iter = int(state.iteration)
    return Posterior(
        annotations=annotations, model="bwa", method="em", label_probs=probs,
        confusion=np.asarray(counts), class_prior=probs.mean(0),
        history=np.asarray(state.history[:n_iter]), n_iter=n_iter,
        converged=bool(state.converged),
        params={"precision": np.asarray(state.precision), "mu": np.asarray(state.mu),
                "z": np.asarray(state.z)},
        options={"a_v": a_v, "lam": lam, "prior_correction": prior_correction,
                 "hyper": jax.device_get(hyper)},
    )


@dataclasses.dataclass(frozen=True)
class BwaOptions(opts._Group):
    """BWA's hyperparameters (the authors' defaults) and its loop."""

    a_v: float = opts._opt(15.0, opts.number(0.0, lo_open=True))
    lam: float = opts._opt(1.0, opts.number(0.0, lo_open=True))
    prior_correction: bool = opts._opt(True, opts.boolean)
    max_iter: int = opts._opt(500, opts.integer(1))
    tol: float = opts._opt(1e-3, opts.number(0.0))


opts.register("bwa", "em", BwaOptions)

#: The engines of :data:`crowdinfer.options.REGISTRY`'s line ``"bwa"``.
RUNNERS = {"bwa": {"em": runner}}
