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

**Weighted by the data** (issue 14): the prior is not the networks' prediction itself but

    log p(y_i = k | x_i) = log_softmax_k(a * l_ik + b_k),   a >= 0,

``l_i`` the cross-fitted log probabilities of item ``i`` (from the network that did not see it).
After the networks' steps, each iteration fits the weight ``a`` and the class offsets ``b`` by
maximising ``sum_i m_i sum_k r_ik log p(y_i = k | x_i)``, where ``r_i`` is the label posterior of
item ``i`` given its annotations *and the class proportions only* (``q_i`` with the classifier's
part of the prior divided out).  If ``r`` is calibrated, this is an unbiased estimate of the
expected log score of the prior against the true labels (a proper scoring rule), computed without
gold; and since the predictions are cross-fitted and ``r`` does not contain them, the classifier
cannot vouch for itself.  A useless classifier gets ``a`` near 0 and the prior falls back to the
class proportions ``softmax(b)`` -- the model without the classifier.  ``hidden=()`` makes the classifier a
logistic regression (seconds at 5k items).

The part's hyperparameters (:class:`LearnedHyper`, traced arrays): ``features`` (N, d), the
standardised item features, ``train_mask`` (N,) ``m``, ``fold`` (N,) the fold of each item, and the
gold offset; its state is :class:`LearnedState` (``net``: the fold networks and the weight; the
optimiser state private).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from crowdinfer.inference.loop import ClassPart

from .class_prior import with_gold
from .networks import MLP


class LearnedHyper(NamedTuple):
    features: jax.Array  # (N, d) standardised item features
    train_mask: jax.Array  # (N,) 1 for items with at least one annotation
    fold: jax.Array  # (N,) each item's fold
    gold_offset: jax.Array | None = None  # see class_prior.gold_offset
    class_concentration: jax.Array | None = None  # recorded in the options only: not used


class LearnedState(NamedTuple):
    net: dict  # {"folds": stacked fold networks, "weight": {"scale", "bias"}}
    opt_state: Any  # the fold networks' optimiser states
    private = ("opt_state",)


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
        hyper = hyper._asdict()
        keys = jax.random.split(jax.random.key(seed), n_folds)
        params = jax.vmap(lambda k: net.init(k, hyper["features"][:1]))(keys)
        # a = softplus(-10) ~ 0: the loop's first E-step comes from the majority vote, not a prior
        weight = {"scale": jnp.full((), -10.0), "bias": jnp.zeros((n_classes,))}
        return LearnedState({"folds": params, "weight": weight}, jax.vmap(opt.init)(params))

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

    def cross_fitted(folds_params, hyper):
        logits = jax.vmap(lambda p: net.apply(p, hyper["features"]))(folds_params)  # (F, N, K)
        return jax.nn.log_softmax(cross_fit(logits, hyper["fold"]), axis=-1)

    def update(data, q, hyper, state):
        hyper, params = hyper._asdict(), {"net": state.net, "_net_opt": state.opt_state}
        masks = fold_masks(hyper["train_mask"], hyper["fold"], n_folds)
        p, s = jax.vmap(train, in_axes=(0, 0, 0, None, None))(
            params["net"]["folds"], params["_net_opt"], masks, q, hyper
        )
        # the weight is fitted against the crowd alone: q without the classifier's part of the
        # prior that produced it (the class proportions instead), so the classifier cannot vouch
        # for itself
        old = weighted(cross_fitted(params["net"]["folds"], hyper), params["net"]["weight"])
        mask = hyper["train_mask"]
        proportions = (mask[:, None] * q).sum(0) / jnp.maximum(mask.sum(), 1.0)
        crowd = jax.nn.softmax(jnp.log(jnp.maximum(q, 1e-30)) - old
                               + jnp.log(jnp.maximum(proportions, 1e-30)), axis=-1)
        weight = fit_weight(cross_fitted(p, hyper), crowd, mask, params["net"]["weight"])
        return LearnedState({"folds": p, "weight": weight}, s)

    def log_prior(data, state, hyper):
        prior = weighted(cross_fitted(state.net["folds"], hyper._asdict()), state.net["weight"])
        return with_gold(prior, hyper.gold_offset)

    return ClassPart(
        hyper=None,
        state=LearnedState,
        init=init,
        update=update,
        log_prior=log_prior,
        objective=lambda state, hyper: jnp.zeros(()),
        proportions=lambda state: None,
    )


def fold_masks(mask: jax.Array, fold: jax.Array, n_folds: int) -> jax.Array:
    """(F, N) training weights of the ``n_folds`` networks of a cross-fitted classifier: network
    ``f`` trains on the items of ``mask`` outside fold ``f`` (``fold`` (N,) the fold of each item);
    a single network (``n_folds == 1``) on all of them.  Used here and by the online learner."""
    if n_folds == 1:
        return mask[None, :]
    return mask[None, :] * (fold[None, :] != jnp.arange(n_folds)[:, None])


def cross_fit(logits: jax.Array, fold) -> jax.Array:
    """Each item's logits (N, K) from the network that did not train on it: ``logits`` (F, N, K)
    of the fold networks, ``fold`` (N,) the fold of each item; with one network (or ``fold=None``)
    its logits.  Used here and by the online learner."""
    if fold is None or logits.shape[0] == 1:
        return logits[0]
    return jnp.take_along_axis(logits, fold[None, :, None], axis=0)[0]


def weighted(log_probs: jax.Array, weight: dict) -> jax.Array:
    """``log_softmax(a * log_probs + b)``, ``a = softplus(weight["scale"])``, ``b = weight["bias"]``."""
    a = jax.nn.softplus(weight["scale"])
    return jax.nn.log_softmax(a * log_probs + weight["bias"], axis=-1)


def fit_weight(log_probs, q, mask, weight, steps: int = 100, learning_rate: float = 0.1) -> dict:
    """The classifier's weight and the class offsets maximising
    ``sum_i mask_i sum_k q_ik log p(y_i = k | x_i)`` (Adam, warm-started from ``weight``)."""
    opt = optax.adam(learning_rate)
    total = jnp.maximum(mask.sum(), 1.0)

    def loss(w):
        return -jnp.sum(mask * jnp.sum(q * weighted(log_probs, w), -1)) / total

    def step(carry, _):
        w, s = carry
        updates, s = opt.update(jax.grad(loss)(w), s, w)
        return (optax.apply_updates(w, updates), s), None

    (weight, _), _ = jax.lax.scan(step, (weight, opt.init(weight)), None, length=steps)
    return weight


def classifier_weight(params) -> float:
    """The learned weight ``a`` of the classifier's log probabilities in the prior (0: ignored)."""
    return float(jax.nn.softplus(params["weight"]["scale"]))


def predict_logits(n_classes: int, hidden: tuple, params, features: jax.Array) -> jax.Array:
    """Class log probabilities for any (standardised) features: the mean of the fold networks'
    log probabilities (an ensemble; none of them saw these items), weighted as in the prior."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    logits = jax.vmap(lambda p: net.apply(p, features))(params["folds"])
    return weighted(jax.nn.log_softmax(logits, axis=-1).mean(0), params["weight"])
