"""A learned label prior: a classifier on item features, trained inside the EM / VB loop.

Seed 000 sec. 3.3 (Lean Crowdsourcing; Raykar et al. 2010): the class proportions are replaced by
a classifier's prediction ``p(y_i | x_i, theta)``.  Each iteration of the loop:

    E-step      q_i  proportional to  p(y_i | x_i, theta) prod_n p(z_n | y_i, ...)
    workers     closed-form update of the confusions from q
    classifier  ``steps`` optax (AdamW) steps on the soft cross-entropy
                ``- sum_i m_i sum_k q_ik log p(k | x_i, theta) / sum_i m_i``  (seed 000 eq. 3),
                ``m_i = 1`` for items with at least one annotation

The classifier starts from a fixed random initialisation and is warm-started across iterations.

Cross-fitting (``folds > 1``, the default 5): as Lean Crowdsourcing does (seed 000 sec. 4.5.1),
item ``i``'s prior comes from a network that was not trained on item ``i`` -- one network per fold,
trained side by side with ``vmap``.  Without it the network memorises the current label estimates,
its own prediction included, and errors reinforce themselves (labelme: 0.825 -> 0.85 on the
training items with cross-fitting).

``hyper["features"]`` (N, d) are the standardised item features, ``hyper["train_mask"]`` (N,) is
``m`` and ``hyper["fold"]`` (N,) the fold of each item.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import optax

from crowdinfer.inference.loop import ClassPart

from .networks import MLP


@lru_cache(maxsize=None)
def classifier_part(n_classes: int, hidden: tuple = (128,), steps: int = 20,
                    learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                    seed: int = 0, folds: int = 5) -> ClassPart:
    """The label-prior part for :class:`~crowdinfer.models.networks.MLP` classifiers, one per fold
    (parameters stacked on a leading fold axis, ``params["net"]``)."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    opt = optax.adamw(learning_rate, weight_decay=weight_decay)
    n_folds = max(int(folds), 1)

    def init(data, hyper):
        keys = jax.random.split(jax.random.key(seed), n_folds)
        params = jax.vmap(lambda k: net.init(k, hyper["features"][:1]))(keys)
        return {"net": params, "_net_opt": jax.vmap(opt.init)(params)}

    def train_mask(hyper, fold):
        if n_folds == 1:
            return hyper["train_mask"]
        return hyper["train_mask"] * (hyper["fold"] != fold)

    def loss(params, mask, q, hyper):
        log_p = jax.nn.log_softmax(net.apply(params, hyper["features"]), axis=-1)
        return -jnp.sum(mask * jnp.sum(q * log_p, axis=-1)) / jnp.maximum(mask.sum(), 1.0)

    def train(params, state, mask, q, hyper):
        def step(carry, _):
            p, s = carry
            grads = jax.grad(loss)(p, mask, q, hyper)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, state), _ = jax.lax.scan(step, (params, state), None, length=steps)
        return params, state

    def update(data, q, hyper, params):
        masks = jax.vmap(lambda f: train_mask(hyper, f))(jnp.arange(n_folds))
        p, s = jax.vmap(train, in_axes=(0, 0, 0, None, None))(
            params["net"], params["_net_opt"], masks, q, hyper
        )
        return {"net": p, "_net_opt": s}

    def log_prior(data, params, hyper):
        logits = jax.vmap(lambda p: net.apply(p, hyper["features"]))(params["net"])  # (F, N, K)
        if n_folds == 1:
            chosen = logits[0]
        else:
            chosen = jnp.take_along_axis(logits, hyper["fold"][None, :, None], axis=0)[0]
        return jax.nn.log_softmax(chosen, axis=-1)

    return ClassPart(
        init=init,
        update=update,
        log_prior=log_prior,
        objective=lambda params, hyper: jnp.zeros(()),
        proportions=lambda params: None,
    )


def predict_logits(n_classes: int, hidden: tuple, params, features: jax.Array) -> jax.Array:
    """Class logits for any (standardised) features: the mean of the fold networks' log
    probabilities (an ensemble; none of them saw these items)."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    logits = jax.vmap(lambda p: net.apply(p, features))(params)
    return jax.nn.log_softmax(logits, axis=-1).mean(0)
