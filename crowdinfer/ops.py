"""Segment-sum kernels shared by every model and engine.

Notation (seed 000, section 3): ``N`` items, ``M`` workers, ``K`` classes, annotation ``n`` says
worker ``w_n`` gave label ``z_n`` to item ``i_n``; ``theta[j, k, l] = p(z = l | y = k, worker j)``.
Nothing here builds an items x workers array: work is a gather per annotation and a
``segment_sum`` with a static number of segments.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
from jax.scipy.special import logsumexp

from .annotations import CrowdData

__all__ = [
    "gather_log_confusion",
    "item_log_likelihood",
    "expected_confusion_counts",
    "vote_counts",
    "label_posterior",
    "mean_annotation_likelihood",
    "observe",
    "standardise",
]


def gather_log_confusion(data: CrowdData, log_confusion: jax.Array) -> jax.Array:
    """``G[n, k] = log theta[w_n, k, z_n]`` for every annotation, shape (capacity, K)."""
    m, k, _ = log_confusion.shape
    by_observed = jnp.swapaxes(log_confusion, 1, 2).reshape(m * k, k)  # row (j, l) -> over k
    return by_observed[data.worker_label]


def item_log_likelihood(data: CrowdData, annotation_log_lik: jax.Array) -> jax.Array:
    """``L[i, k] = sum_{n: i_n = i} log p(z_n | y_i = k, ...)``, shape (N, K), from the
    per-annotation log-likelihoods ``G[n, k]`` (padding rows count for nothing)."""
    g = annotation_log_lik * data.weight[:, None]  # finite everywhere: probabilities are floored
    # no indices_are_sorted=True: on the XLA CPU backend that path is twice as slow
    return jax.ops.segment_sum(g, data.item, data.n_items)


def expected_confusion_counts(data: CrowdData, label_probs: jax.Array) -> jax.Array:
    """``C[j, k, l] = sum_{n: w_n = j, z_n = l} q[i_n, k]``: expected counts, shape (M, K, K)."""
    q = label_probs[data.item] * data.weight[:, None]
    flat = jax.ops.segment_sum(q, data.worker_label, data.n_workers * data.n_classes)
    return jnp.swapaxes(flat.reshape(data.n_workers, data.n_classes, data.n_classes), 1, 2)


def vote_counts(data: CrowdData) -> jax.Array:
    """``V[i, l]``: how many annotations gave item ``i`` label ``l``, shape (N, K)."""
    votes = jax.nn.one_hot(data.label, data.n_classes) * data.weight[:, None]
    return jax.ops.segment_sum(votes, data.item, data.n_items)


def label_posterior(data: CrowdData, annotation_log_lik: jax.Array | None, log_prior: jax.Array,
                    item_log_lik: jax.Array | None = None):
    """The E-step: ``log q[i, k] = log p(y_i = k | Z_i, theta)`` (seed 000 eq. 1 and 4).

    ``annotation_log_lik[n, k] = log p(z_n | y = k, ...)`` (for confusion models
    :func:`gather_log_confusion`); ``log_prior`` is the log class prior, shape (K,), or a per-item
    prior ``log p(y_i | x_i)``, shape (N, K).  Returns ``(log_q, log_evidence)`` where
    ``log_evidence[i] = log p(Z_i | theta)``.  ``item_log_lik`` (N, K), if given, replaces
    :func:`item_log_likelihood` (the loop sums it chunk by chunk and device by device).
    """
    if item_log_lik is None:
        item_log_lik = item_log_likelihood(data, annotation_log_lik)
    joint = log_prior + item_log_lik
    evidence = logsumexp(joint, axis=-1)
    return joint - evidence[:, None], evidence


def mean_annotation_likelihood(data: CrowdData, annotation_log_lik: jax.Array, label_probs: jax.Array):
    """The quantity of the soft stopping rule (seed 000 eq. 6):
    ``(1/|Z|) sum_n sum_k q[i_n, k] p(z_n | y = k, ...)``."""
    lik = jnp.exp(annotation_log_lik)
    per_annotation = jnp.sum(label_probs[data.item] * lik, axis=-1) * data.weight
    return per_annotation.sum() / jnp.maximum(data.weight.sum(), 1.0)


def observe(log_evidence: jax.Array, hyper: dict) -> None:
    """Inside a NumPyro model: the annotations enter as one factor, ``sum_i log p(Z_i | ...)``,
    scaled by ``hyper["likelihood_scale"]`` when SVI trains on a minibatch of items."""
    numpyro.factor("annotations", log_evidence.sum() * hyper.get("likelihood_scale", 1.0))


def standardise(x, eps: float = 1e-6):
    """Feature standardisation shared by every learned prior: ``(z, mean, std)`` with
    ``z = (x - mean) / std``, ``mean`` and ``std = x.std(0) + eps`` per column (so a constant
    column maps to 0, never to NaN).  NumPy in, NumPy out (JAX arrays work as well); ``mean`` and
    ``std`` standardise new items the same way."""
    mean = x.mean(0)
    std = x.std(0) + eps
    return (x - mean) / std, mean, std
