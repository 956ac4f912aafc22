"""Priors on worker confusions and class proportions, as Dirichlet pseudo-counts.

The builders return pseudo-counts ``beta >= 0``: answers a worker is assumed to have given before
the data.  EM uses the prior ``Dirichlet(1 + beta)``, whose mode is the familiar
``(counts + beta) / (n + sum(beta))``; VB (BCC) uses ``Dirichlet(beta)``, as Kim & Ghahramani do.  Seed 000 (appendix E) writes the prior as ``Dir(n_beta * alpha_k)`` with strength
``n_beta = 10`` and a pooled ``alpha_k`` (diagonal 0.7): :func:`homogeneous` is that prior.
Section 4.5.4 / appendix A.4 add class-dependent (:func:`class_dependent`) and worker-dependent
(:func:`worker_dependent`, from gold questions) priors; :func:`symmetric` is plain smoothing.

Each builder returns an array of pseudo-counts, shape (K, K) (shared by all workers) or
(M, K, K) (one per worker).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crowdinfer.ops import vote_counts

__all__ = [
    "symmetric",
    "homogeneous",
    "class_dependent",
    "worker_dependent",
    "pooled",
    "dirichlet_map",
    "resolve",
    "DEFAULT_PRIOR",
    "DEFAULT_STRENGTH",
    "DEFAULT_ACCURACY",
]

TINY = 1e-30


def _check_strength(strength: float) -> float:
    strength = float(strength)
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"prior strength must be a finite number >= 0, got {strength}")
    return strength


def _check_accuracy(acc, n_classes: int) -> np.ndarray:
    acc = np.asarray(acc, dtype=np.float64)
    if np.any(~np.isfinite(acc)) or np.any(acc < 0) or np.any(acc > 1):
        raise ValueError(f"prior accuracies must lie in [0, 1], got {acc}")
    return acc


def symmetric(n_classes: int, counts: float = 1.0) -> np.ndarray:
    """Plain smoothing: ``counts`` pseudo-answers in every cell (``0`` is maximum likelihood)."""
    return np.full((n_classes, n_classes), _check_strength(counts))


def class_dependent(accuracies, strength: float = 10.0) -> np.ndarray:
    """Row ``k`` has mean accuracy ``accuracies[k]`` on the diagonal, the rest spread evenly over
    the other classes, and ``strength`` pseudo-answers in total (seed 000, appendix A.4 option A)."""
    acc = _check_accuracy(accuracies, None)
    k = acc.shape[-1]
    off = (1.0 - acc) / (k - 1)
    mean = np.broadcast_to(off[..., :, None], acc.shape + (k,)).copy()
    idx = np.arange(k)
    mean[..., idx, idx] = acc
    return _check_strength(strength) * mean


def homogeneous(n_classes: int, strength: float = 10.0, accuracy: float = 0.7) -> np.ndarray:
    """The homogeneous prior of seed 000 (appendix E): every worker and class alike, mean accuracy
    ``accuracy`` (0.7 in the paper) with ``strength`` pseudo-answers per row (10 in the paper)."""
    acc = _check_accuracy(accuracy, n_classes)
    return class_dependent(np.full(n_classes, float(acc)), strength)


def worker_dependent(annotations, base: np.ndarray) -> np.ndarray:
    """Worker-dependent prior from gold questions (seed 000, appendix A.4 option B): each worker's
    answers on gold items are added to the ``base`` pseudo-counts (shape (K, K)), so a worker who
    did well on the gold starts out trusted.  Shape (M, K, K)."""
    if annotations.gold is None:
        raise ValueError("a worker-dependent prior needs gold labels (Annotations.with_gold)")
    return np.asarray(base, dtype=np.float64)[None] + annotations.gold_confusion_counts()


def _pooled_confusion(annotations, data=None) -> np.ndarray:
    """(K, K) every worker's answers pooled against the soft majority vote, rows normalised, from
    ``data`` (``annotations.to_device()``, built here when not given): the vote table and the
    products on the device, block by block, the blocks added on the host in float64 (one float32
    sum over 10^7 items drifts by 1e-2)."""
    data = annotations.to_device() if data is None else data
    conf = np.asarray(_pooled_blocks(data), np.float64).sum(0) + 1e-3
    return conf / conf.sum(1, keepdims=True)


POOLED_BLOCK = 4096  # items per block of the pooled prior's float32 sums


@jax.jit
def _pooled_blocks(data) -> jax.Array:
    """``[b, k, l] = sum_{i in block b} q[i, k] V[i, l]``, ``V`` the vote table and ``q`` the soft
    majority vote (``sum_{n: z_n = l} q[i_n, k]`` over the block's items), shape (B, K, K)."""
    votes = vote_counts(data)
    total = votes.sum(-1, keepdims=True)
    soft = votes / jnp.where(total > 0, total, 1.0)
    pad = ((0, -votes.shape[0] % POOLED_BLOCK), (0, 0))
    k = data.n_classes
    return jnp.einsum("bik,bil->bkl", jnp.pad(soft, pad).reshape(-1, POOLED_BLOCK, k),
                      jnp.pad(votes, pad).reshape(-1, POOLED_BLOCK, k))


def pooled(annotations, strength: float = 10.0, structure: str = "diagonal",
           data=None) -> np.ndarray:
    """An empirical-Bayes homogeneous prior: the confusion of all workers pooled against the soft
    majority vote, either summarised by its mean diagonal (``structure="diagonal"``, seed 000's
    "pooled across all workers and classes") or kept whole (``"full"``).  ``data``: the
    annotations on the device, if the caller has them."""
    k = annotations.n_classes
    conf = annotations.derived("pooled_confusion", lambda: _pooled_confusion(annotations, data))
    if structure == "full":
        return _check_strength(strength) * conf
    if structure == "diagonal":
        return homogeneous(k, strength, float(np.clip(np.mean(np.diag(conf)), 1.0 / k, 0.999)))
    raise ValueError(f"structure must be 'diagonal' or 'full', got {structure!r}")


def dirichlet_map(counts, pseudo_counts):
    """The mode of ``Dirichlet(1 + pseudo_counts + counts)`` along the last axis (floored at TINY)."""
    total = counts + pseudo_counts
    mode = total / jnp.maximum(total.sum(-1, keepdims=True), TINY)
    return jnp.maximum(mode, TINY)


# The default worker prior: empirical Bayes -- the whole crowd's confusion pooled against the soft
# majority vote, worth 2 pseudo-answers per confusion row.  It shrinks sparse workers towards the
# typical worker (the cure for plain Dawid-Skene's over-fitting on zencrowd_in and cf) and is
# negligible for busy ones.  Chosen by the sweep in experiments/prior_sweep.py: it beats majority
# vote on every dataset of ../shared/data and stays within 0.01 of the published Dawid-Skene figures.
DEFAULT_PRIOR = "pooled"
DEFAULT_STRENGTH = {"pooled": 2.0, "pooled_diagonal": 2.0, "homogeneous": 10.0, "worker": 10.0,
                    "symmetric": 1.0, "none": 0.0}
DEFAULT_ACCURACY = 0.7


def resolve(
    annotations,
    prior: Any = DEFAULT_PRIOR,
    strength: float | None = None,
    accuracy: float = DEFAULT_ACCURACY,
    data=None,
) -> np.ndarray:
    """Pseudo-counts (K, K) or (M, K, K) for a prior given by name or as an array (``data``: the
    annotations on the device, if the caller has them: the pooled prior is worked out there).

    Names (default strength in brackets, in pseudo-answers per confusion row):
    ``"pooled"`` [2] the crowd's pooled confusion against the soft majority vote (the default);
    ``"pooled_diagonal"`` [2] the same summarised by its mean diagonal (seed 000's pooled alpha);
    ``"homogeneous"`` [10] seed 000 appendix E: diagonal ``accuracy`` (0.7), rest spread evenly;
    ``"worker"`` [10] homogeneous plus each worker's answers on gold items (appendix A.4 B);
    ``"symmetric"`` [1] ``strength`` pseudo-answers in every cell;
    ``"none"`` maximum likelihood, the classic Dawid-Skene.
    An array is used as given (see the builders above).
    """
    k, m = annotations.n_classes, annotations.n_workers
    if isinstance(prior, str):
        if prior not in DEFAULT_STRENGTH:
            raise ValueError(
                f"unknown prior {prior!r}: use one of {sorted(DEFAULT_STRENGTH)} "
                "or an array of pseudo-counts"
            )
        s = DEFAULT_STRENGTH[prior] if strength is None else strength
        if prior == "pooled":
            return pooled(annotations, s, "full", data)
        if prior == "pooled_diagonal":
            return pooled(annotations, s, "diagonal", data)
        if prior == "homogeneous":
            return homogeneous(k, s, accuracy)
        if prior == "worker":
            return worker_dependent(annotations, homogeneous(k, s, accuracy))
        if prior == "symmetric":
            return symmetric(k, s)
        return symmetric(k, 0.0)
    counts = np.asarray(prior, dtype=np.float64)
    if counts.shape not in ((k, k), (m, k, k)):
        raise ValueError(f"prior pseudo-counts must have shape ({k}, {k}) or ({m}, {k}, {k}), got {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("prior pseudo-counts must be finite and >= 0")
    return counts
