"""Stochastic variational inference with optax, for any model in ``models/``, with minibatches of
items for data that does not fit in memory at once.

The models marginalise the labels, so minibatching is a matter of the likelihood factor: the items
are shuffled and cut into chunks of ``batch_items`` consecutive items (their annotations are
contiguous, since annotations are sorted by item), each chunk padded to one static capacity and
stacked.  A step draws one chunk and the model scales its likelihood by ``N / items in the chunk``
(``hyper["likelihood_scale"]``): an unbiased estimate of the full objective.  The whole training
run is one ``lax.scan`` inside one ``jit``.

Guides: ``"map"`` (``AutoDelta``: a point estimate, MAP) or ``"normal"`` (``AutoNormal``: a
mean-field Gaussian in the unconstrained space).  Models with per-item parameters (GLAD) train on
the full data only.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpyro.infer import SVI, Trace_ELBO, init_to_value
from numpyro.infer.autoguide import AutoDelta, AutoNormal
from numpyro.optim import optax_to_numpyro

from crowdinfer.annotations import Annotations, CrowdData, capacity_bucket
from crowdinfer.inference.loop import Spec, as_state
from crowdinfer.ops import label_posterior

__all__ = ["Chunks", "chunk", "chunked_label_probs", "e_step_terms", "svi"]


@dataclasses.dataclass(frozen=True)
class Chunks:
    """Annotations cut into item chunks: every array (n_chunks, capacity); ``scale`` (n_chunks,)."""

    data: CrowdData  # stacked: item (local to the chunk), worker, label, weight
    scale: jax.Array
    n_chunks: int
    position: np.ndarray  # (N,) each item's position in the shuffled order (chunk * size + local)


def chunk(annotations: Annotations, batch_items: int, seed: int = 0) -> Chunks:
    """Shuffle the items and cut them into chunks of ``batch_items`` items (see module doc)."""
    n = annotations.n_items
    batch_items = int(min(max(batch_items, 1), n))
    order = np.random.default_rng(seed).permutation(n)  # new position of each item
    new_item = order[annotations.item]
    sort = np.argsort(new_item, kind="stable")
    item, worker, label = new_item[sort], annotations.worker[sort], annotations.label[sort]
    row_weight = annotations.weights[sort]
    n_chunks = -(-n // batch_items)
    bounds = np.searchsorted(item, np.arange(n_chunks + 1) * batch_items)
    capacity = capacity_bucket(int(np.diff(bounds).max()), minimum=16)
    arrays = np.zeros((4, n_chunks, capacity), np.int64)
    weight = np.zeros((n_chunks, capacity), np.float32)
    for c in range(n_chunks):
        lo, hi = bounds[c], bounds[c + 1]
        m = hi - lo
        arrays[0, c, :m] = item[lo:hi] - c * batch_items
        arrays[0, c, m:] = batch_items - 1  # padding points at the last local item, stays sorted
        arrays[1, c, :m] = worker[lo:hi]
        arrays[2, c, :m] = label[lo:hi]
        weight[c, :m] = row_weight[lo:hi]
    items_in_chunk = np.minimum(batch_items, n - np.arange(n_chunks) * batch_items)
    data = CrowdData(
        item=jnp.asarray(arrays[0], jnp.int32),
        worker=jnp.asarray(arrays[1], jnp.int32),
        label=jnp.asarray(arrays[2], jnp.int32),
        weight=jnp.asarray(weight),
        n_items=batch_items,
        n_workers=annotations.n_workers,
        n_classes=annotations.n_classes,
    )
    return Chunks(data, jnp.asarray(n / items_in_chunk, jnp.float32), n_chunks, order)


def e_step_terms(spec: Spec, data: CrowdData, params: dict):
    """``(G, log prior)`` of the E-step for ``spec``'s parts at ``params`` (a dict of the model's
    sample sites, as SVI and NUTS give them)."""
    workers, classes = spec
    return (workers.log_lik(data, as_state(workers, params)),
            classes.log_prior(data, as_state(classes, params), classes.hyper))


def chunked_label_probs(chunks: Chunks, spec: Spec, params: dict):
    """The E-step of ``spec``'s parts at ``params``, chunk by chunk (never the whole data at once):
    (N, K) in the original order."""

    @jax.jit
    def one(batch):
        log_q, _ = label_posterior(batch, *e_step_terms(spec, batch, params))
        return jnp.exp(log_q)

    probs = [np.asarray(one(jax.tree.map(lambda a: a[c], chunks.data)))
             for c in range(chunks.n_chunks)]
    return np.concatenate(probs)[chunks.position]


def _guide(model, kind: str, init_params: dict):
    init = init_to_value(values=init_params)
    if kind == "map":
        return AutoDelta(model, init_loc_fn=init)
    if kind == "normal":
        return AutoNormal(model, init_loc_fn=init, init_scale=0.01)
    raise ValueError(f"guide must be 'map' or 'normal', got {kind!r}")


@partial(jax.jit, static_argnames=("model", "guide", "num_steps", "learning_rate"))
def _train(model, guide, data, hyper, scales, key, *, num_steps, learning_rate):
    svi_ = SVI(model, guide, optax_to_numpyro(optax.adam(learning_rate)), Trace_ELBO())
    stacked = scales.ndim > 0
    first = jax.tree.map(lambda a: a[0], data) if stacked else data
    key, init_key = jax.random.split(key)
    state = svi_.init(init_key, first, {**hyper, "likelihood_scale": scales[0] if stacked else scales})

    def step(state, k):
        if stacked:
            c = jax.random.randint(k, (), 0, scales.shape[0])
            batch, scale = jax.tree.map(lambda a: a[c], data), scales[c]
        else:
            batch, scale = data, scales
        state, loss = svi_.update(state, batch, {**hyper, "likelihood_scale": scale})
        return state, loss

    state, losses = jax.lax.scan(step, state, jax.random.split(key, num_steps))
    return svi_.get_params(state), losses


def svi(model, annotations: Annotations, hyper: dict, init_params: dict, *, guide: str = "map",
        num_steps: int = 2000, learning_rate: float = 0.05, batch_items: int | None = None,
        seed: int = 0):
    """Fit ``model`` by SVI; returns ``(params, losses, chunks)``: the guide's median of every
    latent site (constrained), the loss (negative ELBO estimate) per step, and the item chunks
    (``None`` for full-batch training)."""
    chunks = None
    if batch_items is None:
        data, scales = annotations.to_device(), jnp.float32(1.0)
    else:
        if "prior_logits" in hyper:
            raise ValueError("minibatch SVI takes class proportions, not per-item prior_logits")
        chunks = chunk(annotations, batch_items, seed)
        data, scales = chunks.data, chunks.scale
    auto = _guide(model, guide, init_params)
    params, losses = _train(model, auto, data, hyper, scales, jax.random.key(seed),
                            num_steps=int(num_steps), learning_rate=float(learning_rate))
    return auto.median(params), np.asarray(losses), chunks
