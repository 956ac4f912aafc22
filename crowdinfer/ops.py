"""Segment-sum kernels shared by every model and engine.

Notation (seed 000, section 3): ``N`` items, ``M`` workers, ``K`` classes, annotation ``n`` says
worker ``w_n`` gave label ``z_n`` to item ``i_n``; ``theta[j, k, l] = p(z = l | y = k, worker j)``.
Nothing here builds an items x workers array: work is a gather per annotation and a
``segment_sum`` with a static number of segments.

When the data carry the per-item layout ``data.slots`` (S, N) (:func:`crowdinfer.annotations.
slot_layout`), sums over an item's annotations run slot by slot instead (:func:`item_sum`): the
sum of S gathers of (N, K) rows is one XLA loop fusion, so no (annotations, K) array is written,
and the expected counts scatter the label posterior itself, once per slot (no (annotations, K)
array of updates).  The results are the same up to the order of float additions.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpyro
from jax import lax
from jax.scipy.special import logsumexp

from .annotations import CrowdData

__all__ = [
    "gather_log_confusion",
    "slot_rows",
    "item_sum",
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
    if isinstance(data, _SlotRows):
        by_observed = _written(by_observed, data.code[0])
    return by_observed[data.worker_label]


def _written(x: jax.Array, zero: jax.Array) -> jax.Array:
    """``x``, written out as an array: a loop of ``min(zero, 0)`` = 0 passes (``zero`` is a code,
    >= 0, which XLA cannot know).  Else XLA fuses a cheap producer such as the transposed
    (M*K, K) table into every gather of :func:`item_sum`'s slots, and each gathered element
    reads it transposed (40% of the E-step at K = 10); the table is small."""
    return lax.fori_loop(0, jnp.minimum(zero, 0), lambda i, a: a * 2.0, x)


# Above SLOT_UNROLL slots, item_sum adds them SLOT_BLOCK at a time (one fusion per block;
# slot_layout rounds the number of slots up to a multiple of SLOT_BLOCK there).
SLOT_UNROLL = 16
SLOT_BLOCK = 8


@dataclasses.dataclass(frozen=True)
class _SlotRows(CrowdData):
    """One slot's rows; ``worker_label`` is the slot's code itself (not recomputed from the
    worker and label, which costs a quarter of a fused E-step at K = 10)."""

    code: jax.Array | None = None

    @property
    def worker_label(self) -> jax.Array:
        return self.code


def slot_rows(data: CrowdData, s) -> CrowdData:
    """Slot ``s`` of ``data.slots`` as N annotation rows: row ``i`` is item ``i``'s ``s``-th
    annotation, weight 0 (worker 0, label 0) where the item has fewer."""
    wl = lax.dynamic_index_in_dim(data.slots, s, keepdims=False)
    k = data.n_classes
    real = wl < data.n_workers * k
    wl = jnp.where(real, wl, 0)
    return _SlotRows(lax.iota(jnp.int32, data.n_items), wl // k, wl % k,
                     real.astype(jnp.float32), data.n_items, data.n_workers, data.n_classes,
                     code=wl)


def _weighted(values: jax.Array, weight: jax.Array) -> jax.Array:
    return values * weight.reshape(weight.shape + (1,) * (values.ndim - 1))


def _sum_by_item(data: CrowdData, values: jax.Array) -> jax.Array:
    """``out[i] = sum_{n: i_n = i} w_n values[n]`` over the annotation rows (padding: weight 0)."""
    # no indices_are_sorted=True: on the XLA CPU backend that path is twice as slow
    return jax.ops.segment_sum(_weighted(values, data.weight), data.item, data.n_items)


def item_sum(data: CrowdData, per_annotation) -> jax.Array:
    """``out[i] = sum_{n: i_n = i} w_n f(rows)[n]`` for ``f = per_annotation``, a function of
    annotation rows (a :class:`CrowdData`) returning one value (or row of values) per row; shape
    (N, ...).  ``f`` may use ``rows.item`` to look up per-item arrays.

    Without ``data.slots``: ``f`` on all rows, then a ``segment_sum`` by item.  With them: ``f`` on
    each slot's N rows (:func:`slot_rows`), added up in one fusion (blocks of
    :data:`SLOT_BLOCK` slots above :data:`SLOT_UNROLL`)."""
    if data.slots is None:
        return _sum_by_item(data, per_annotation(data))

    n_slots = data.slots.shape[0]
    size = n_slots if n_slots <= SLOT_UNROLL or n_slots % SLOT_BLOCK else SLOT_BLOCK

    def block(b, total):
        for j in range(size):
            rows = slot_rows(data, b * size + j)
            total = total + _weighted(per_annotation(rows), rows.weight)
        return total

    # Every block in a while loop whose trip count XLA cannot see (the slots are >= 0): the
    # block's sum then has one consumer, the loop, and is written once (fused straight into
    # several consumers -- the E-step's logsumexp and log q -- each gather would be written out),
    # and nothing per slot is hoisted out of an enclosing loop as a loop invariant (a copy of the
    # slots' codes, weights, indices).
    n_blocks = n_slots // size + jnp.minimum(data.slots[0, 0], 0)
    zero = jnp.zeros(jax.eval_shape(lambda: per_annotation(slot_rows(data, 0))).shape,
                     jnp.float32)
    return lax.fori_loop(0, n_blocks, block, zero)


def item_log_likelihood(data: CrowdData, annotation_log_lik: jax.Array) -> jax.Array:
    """``L[i, k] = sum_{n: i_n = i} log p(z_n | y_i = k, ...)``, shape (N, K), from the
    per-annotation log-likelihoods ``G[n, k]`` (padding rows count for nothing)."""
    return _sum_by_item(data, annotation_log_lik)  # finite everywhere: probabilities are floored


def expected_confusion_counts(data: CrowdData, label_probs: jax.Array) -> jax.Array:
    """``C[j, k, l] = sum_{n: w_n = j, z_n = l} q[i_n, k]``: expected counts, shape (M, K, K).

    With ``data.slots``: one scatter-add of ``q`` itself per slot into the (M*K + 1, K) rows
    (``worker * K + label``; the last row takes the empty slots and is dropped)."""
    mk = data.n_workers * data.n_classes
    if data.slots is not None:
        q = label_probs.astype(jnp.float32)
        dims = lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(0,),
                                           scatter_dims_to_operand_dims=(0,))

        def add(s, acc):
            idx = lax.dynamic_index_in_dim(data.slots, s, keepdims=False)[:, None]
            return lax.scatter_add(acc, idx, q, dims,
                                   mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)

        # a loop XLA cannot unroll (slots are >= 0): no per-slot copy of the codes is hoisted out
        # of the EM loop as an invariant (as fast as unrolled, and no extra memory)
        n_slots = data.slots.shape[0] + jnp.minimum(data.slots[0, 0], 0)
        acc = lax.fori_loop(0, n_slots, add, jnp.zeros((mk + 1, data.n_classes), jnp.float32))
        flat = acc[:mk]
    else:
        q = label_probs[data.item] * data.weight[:, None]
        flat = jax.ops.segment_sum(q, data.worker_label, mk)
    return jnp.swapaxes(flat.reshape(data.n_workers, data.n_classes, data.n_classes), 1, 2)


def vote_counts(data: CrowdData) -> jax.Array:
    """``V[i, l]``: how many annotations gave item ``i`` label ``l``, shape (N, K)."""
    return item_sum(data, lambda rows: jax.nn.one_hot(rows.label, data.n_classes))


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


def mean_annotation_likelihood(data: CrowdData, annotation_log_lik, label_probs: jax.Array):
    """The quantity of the soft stopping rule (seed 000 eq. 6):
    ``(1/|Z|) sum_n sum_k q[i_n, k] p(z_n | y = k, ...)``.  ``annotation_log_lik``: the (capacity,
    K) array ``G``, or a function of annotation rows giving it (then summed by :func:`item_sum`,
    which with ``data.slots`` writes no (capacity, K) array)."""
    if callable(annotation_log_lik):
        label_probs = jnp.asarray(label_probs)
        per_item = item_sum(data, lambda rows: jnp.sum(
            label_probs[rows.item] * jnp.exp(annotation_log_lik(rows)), axis=-1))
        return per_item.sum() / jnp.maximum(data.weight.sum(), 1.0)
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
