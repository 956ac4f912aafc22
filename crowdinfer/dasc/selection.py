"""Dense annotations and the pseudo-annotation selection of DASC (seed 004 eq. 1-4)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..annotations import Annotations
from .config import SELECTIONS


def dense_annotations(annotations: Annotations) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` (N, M) int32 (``-1`` missing) and ``mask`` (N, M) bool from COO annotations.

    Where a worker gave one item several (conflicting) answers, the last in the sorted order is
    kept: the dense form holds one annotation per cell."""
    if not isinstance(annotations, Annotations):
        raise TypeError(f"need Annotations, got {type(annotations).__name__}")
    labels = np.full((annotations.n_items, annotations.n_workers), -1, dtype=np.int32)
    labels[annotations.item, annotations.worker] = annotations.label
    return labels, labels >= 0


def class_counts(labels: jax.Array, mask: jax.Array, n_classes: int) -> jax.Array:
    """``N_c``: the number of annotations (cells with ``mask``) labelled ``c``."""
    onehot = jax.nn.one_hot(jnp.where(mask, labels, -1), n_classes)  # -1 -> all zeros
    return onehot.reshape(-1, n_classes).sum(0)


@partial(jax.jit, static_argnames="n_classes")
def imbalance_ratio(labels: jax.Array, mask: jax.Array, n_classes: int) -> jax.Array:
    """``R = max_c N_c / min_c N_c`` of the annotations at ``mask`` (eq. 1); ``inf`` when a class
    has none.  ``labels``/``mask`` may carry leading batch axes (one ratio per leading index)."""
    counts = jax.vmap(lambda l, m: class_counts(l, m, n_classes))(
        labels.reshape(-1, *labels.shape[-2:]), mask.reshape(-1, *mask.shape[-2:]))
    ratio = counts.max(-1) / counts.min(-1)
    return ratio.reshape(labels.shape[:-2])


def entropy(log_probs: jax.Array) -> jax.Array:
    """``-sum_c p_c log p_c`` over the last axis (eq. 2): low entropy = a confident prediction."""
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def class_quotas(counts: jax.Array, total) -> jax.Array:
    """Per-class selection numbers ``M_c`` (eq. 3-4), integers summing to ``min(total, sum N')``.

    ``M_c = pi_c M`` with ``pi_c`` proportional to ``1 / N'_c`` over the classes that have
    candidates; a class whose quota exceeds its ``N'_c`` candidates gives all of them and its excess
    is shared among the others in the same proportions (water-filling).  Rounding is by largest
    remainder."""
    counts = jnp.asarray(counts, jnp.float32)
    k = counts.shape[-1]
    total = jnp.minimum(jnp.asarray(total, jnp.float32), counts.sum())
    inv = jnp.where(counts > 0, 1.0 / jnp.maximum(counts, 1.0), 0.0)

    def fill(capped, _):
        free = inv * ~capped
        left = total - jnp.sum(jnp.where(capped, counts, 0.0))
        ideal = left * free / jnp.maximum(free.sum(), 1e-30)
        return capped | (ideal >= counts) & (counts > 0), None

    capped, _ = jax.lax.scan(fill, jnp.zeros(k, bool), None, length=k)
    free = inv * ~capped
    left = total - jnp.sum(jnp.where(capped, counts, 0.0))
    ideal = jnp.where(capped, counts, left * free / jnp.maximum(free.sum(), 1e-30))
    ideal = jnp.minimum(ideal, counts)
    base = jnp.floor(ideal + 1e-4)
    short = jnp.round(total - base.sum()).astype(jnp.int32)
    frac = jnp.where(base < counts, ideal - base, -1.0)
    rank = jnp.argsort(jnp.argsort(-frac))
    return (base + (rank < short)).astype(jnp.int32)


@partial(jax.jit, static_argnames=("n_select", "rule"))
def select_pseudo_annotations(key: jax.Array, log_probs: jax.Array, annotated: jax.Array,
                              n_select: int, rule: str = "dasc") -> tuple[jax.Array, jax.Array]:
    """Choose pseudo-annotations among the cells nobody annotated.

    Args:
        key: PRNG key (used by ``rule="random"`` only).
        log_probs: (N, M, K) ``log p(y_hat^k_i | x_i)`` of the current model.
        annotated: (N, M) bool, the cells already filled (observed or earlier pseudo-annotations);
            they are never selected.
        n_select: ``M``, the number to select (fewer when fewer cells are free).
        rule: ``"dasc"`` (eq. 2-4), ``"confidence"`` or ``"random"``.

    Returns:
        ``chosen`` (N, M) bool and ``pseudo`` (N, M) int32, the predicted annotation
        ``argmax_c p(y_hat^k_i = c)`` of every cell.
    """
    n, m, k = log_probs.shape
    pseudo = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
    cand = ~annotated.reshape(-1)
    cls = pseudo.reshape(-1)
    if rule == "random":
        score = jax.random.uniform(key, cand.shape)
    elif rule in ("dasc", "confidence"):
        score = entropy(log_probs).reshape(-1)
    else:
        raise ValueError(f"rule must be one of {SELECTIONS}, got {rule!r}")
    score = jnp.where(cand, score, jnp.inf)
    if rule == "dasc":
        group = jnp.where(cand, cls, k)  # non-candidates sort into a virtual last class
        order = jnp.lexsort((score, group))
        sorted_group = group[order]
        first = jnp.searchsorted(sorted_group, jnp.arange(k + 1))
        rank_sorted = jnp.arange(n * m) - first[sorted_group]
        rank = jnp.zeros(n * m, jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))
        counts = jnp.zeros(k + 1).at[group].add(1.0)[:k]
        quota = jnp.concatenate([class_quotas(counts, n_select), jnp.zeros(1, jnp.int32)])
        chosen = cand & (rank < quota[group])
    else:
        order = jnp.argsort(score)
        rank = jnp.zeros(n * m, jnp.int32).at[order].set(jnp.arange(n * m, dtype=jnp.int32))
        chosen = cand & (rank < n_select)
    return chosen.reshape(n, m), pseudo
