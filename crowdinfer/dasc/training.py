"""Training: minibatch Adam rounds as one ``lax.scan``, WDN's worker weights, seeds side by side
with ``vmap``, the imbalance baselines' weights."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..annotations import Annotations
from ..ops import standardise
from .config import BASE_MODELS, LOSSES, Config
from .nets import _Net, _net, _optimizer, crowd_loss


def _batches(key, n: int, batch: int):
    nb = -(-n // batch)
    pad = nb * batch - n
    perm = jnp.concatenate([jax.random.permutation(key, n), jnp.zeros(pad, jnp.int32)])
    valid = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)])
    return perm.reshape(nb, batch), valid.reshape(nb, batch)


def _train_rounds(net: _Net, cfg: Config, loss: str, epochs: int):
    """``train(params, opt_state, key, x, labels, weights) -> (params, opt_state, losses)``:
    ``epochs`` passes of minibatch Adam on the masked crowd loss, as one ``lax.scan``."""
    opt = _optimizer(cfg)

    def step(carry, batch):
        params, state, x, labels, weights = carry
        idx, valid, rng = batch
        w = weights[idx] * valid[:, None]
        value, grads = jax.value_and_grad(crowd_loss, argnums=1)(
            net, params, x[idx], labels[idx], w, rng, loss, cfg.focal_gamma)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state, x, labels, weights), value

    def epoch(carry, key):
        n = carry[2].shape[0]
        k_perm, k_drop = jax.random.split(key)
        idx, valid = _batches(k_perm, n, min(cfg.batch_size, n))
        rngs = jax.random.split(k_drop, idx.shape[0])
        carry, values = jax.lax.scan(step, carry, (idx, valid, rngs))
        return carry, values.mean()

    def train(params, state, key, x, labels, weights):
        carry = (params, state, x, labels, weights)
        carry, values = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))
        return carry[0], carry[1], values

    return train, opt


def _fit_worker_weights(net: _Net, cfg: Config, params, x, labels, weights):
    """WDN's second phase (eq. 7): with the heads fixed, fit the worker weights so that their
    weighted average of the heads' predictions matches each item's mean (weighted) annotation."""
    _, ann = net.apply(params, x)  # (N, M, K), eval mode
    ann = jax.lax.stop_gradient(ann)
    onehot = jax.nn.one_hot(jnp.where(weights > 0, labels, 0), ann.shape[-1]) * weights[..., None]
    target = onehot.sum(1)
    has = target.sum(-1) > 0
    target = target / jnp.maximum(target.sum(-1, keepdims=True), 1e-12)
    opt = optax.adam(cfg.wdn_weight_lr)

    def loss(v):
        cls = jax.nn.logsumexp(ann + jax.nn.log_softmax(v)[None, :, None], axis=1)
        return -jnp.sum(has[:, None] * target * cls) / jnp.maximum(has.sum(), 1)

    def step(carry, _):
        v, s = carry
        g = jax.grad(loss)(v)
        u, s = opt.update(g, s, v)
        return (optax.apply_updates(v, u), s), None

    v = params["worker_weights"]
    (v, _), _ = jax.lax.scan(step, (v, opt.init(v)), None, length=cfg.wdn_weight_steps)
    return {**params, "worker_weights": v}


def _seeds(seeds) -> tuple:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (a count) or a list of ints, got {seeds}")
        return tuple(range(int(seeds)))
    out = tuple(int(s) for s in seeds)
    if not out:
        raise ValueError("seeds is empty")
    return out


def _features(annotations: Annotations, what: str):
    if not isinstance(annotations, Annotations):
        raise TypeError(f"{what} needs Annotations, got {type(annotations).__name__}")
    if annotations.features is None:
        raise ValueError(f"{what} needs item features: attach them with Annotations.with_features")
    z, center, scale = standardise(annotations.features.astype(np.float32))
    return jnp.asarray(z), center, scale


def loss_weights(labels: np.ndarray, mask: np.ndarray, n_classes: int, loss: str = "ce",
                 seed: int = 0) -> np.ndarray:
    """(N, M) per-annotation weights of the loss (0 at missing cells): 1 for ``"ce"`` and
    ``"focal"``; ``max_c N_c / N_{y_ik}`` for ``"reweighting"``; for ``"resampling"``, the number
    of copies of each annotation after random oversampling of every class (with replacement, a draw
    from ``seed``) up to the largest class's count."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    w = mask.astype(np.float32)
    if loss in ("ce", "focal"):
        return w
    counts = np.bincount(labels[mask], minlength=n_classes).astype(np.float64)
    if loss == "reweighting":  # R_c = max_c N_c / N_c
        per = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 0.0)
        return (w * per[np.where(mask, labels, 0)]).astype(np.float32)
    # resampling: oversample every class's annotations (with replacement) up to the largest count
    rng = np.random.default_rng(seed)
    copies = w.copy()
    rows, cols = np.nonzero(mask)
    cells = labels[rows, cols]
    for c in range(n_classes):
        members = np.flatnonzero(cells == c)
        extra = int(counts.max() - counts[c])
        if len(members) and extra:
            picks = rng.choice(members, size=extra, replace=True)
            np.add.at(copies, (rows[picks], cols[picks]), 1.0)
    return copies


def _check(model, loss, cfg):
    if model not in BASE_MODELS:
        raise ValueError(f"model must be one of {BASE_MODELS}, got {model!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if cfg is not None and not isinstance(cfg, Config):
        raise TypeError(f"config must be a dasc.Config, got {type(cfg).__name__}")
    return Config() if cfg is None else cfg


@partial(jax.jit, static_argnums=(0, 1))
def _init(net, cfg, keys, x):
    """Fresh parameters and optimizer states, one per key."""
    opt = _optimizer(cfg)

    def one(key):
        params = net.init(jax.random.split(key)[0], x)
        return params, opt.init(params)

    return jax.vmap(one)(keys)


def _init_and_train(net, cfg, loss, epochs, keys, x, labels, weights):
    params, state = _init(net, cfg, keys, x)
    keys = jax.vmap(lambda k: jax.random.split(k)[1])(keys)
    return _continue_training(net, cfg, loss, epochs, params, state, keys, x, labels, weights)


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _continue_training(net, cfg, loss, epochs, params, state, keys, x, labels, weights):
    train, _ = _train_rounds(net, cfg, loss, epochs)

    def one(params, state, key, labels, weights):
        params, state, values = train(params, state, key, x, labels, weights)
        if net.name == "wdn":
            params = _fit_worker_weights(net, cfg, params, x, labels, weights)
        return params, state, values

    return jax.vmap(one)(params, state, keys, labels, weights)


def _seed_keys(seeds, tag: int = 0):
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), tag))(jnp.asarray(seeds))


def _fit(annotations, model, loss, seeds, cfg, labels, mask):
    x, center, scale = _features(annotations, "training")
    net = _net(model, annotations.n_classes, labels.shape[1], cfg)
    weights = np.stack([loss_weights(labels, mask, annotations.n_classes, loss, s)
                        for s in seeds])
    labels_s = np.broadcast_to(labels, weights.shape)
    params, state, values = _init_and_train(net, cfg, loss, cfg.epochs, _seed_keys(seeds), x,
                                            jnp.asarray(labels_s), jnp.asarray(weights))
    return net, params, state, values, x, center, scale
