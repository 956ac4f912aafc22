"""A learned label prior: a cross-fitted classifier on item features, weighted by the evidence.

Seed 000 sec. 3.3 (Lean Crowdsourcing; Raykar et al. 2010) replaces the class proportions by a
classifier's prediction ``p(y_i | x_i, theta)``.  Trained inside the EM loop, the classifier and the
worker confusions pull each other along: the classifier shifts the label posterior ``q``, the
confusions are re-estimated from ``q``, and the crowd's own evidence drifts toward the classifier,
which then looks better than it is (issue 14: a weak classifier lowered accuracy by up to 0.022).
So the prior is learned in **two stages**, each with a fixed target:

1. **The model without the classifier**, to convergence (the runner runs it:
   :func:`crowdinfer.runners.loop_runner`).  Its label posterior ``r`` and its crowd log
   likelihoods ``L_ik = log p(annotations of i | y_i = k) + c_i`` (its ``log q`` minus its log
   prior) go into :class:`LearnedHyper` (``crowd_probs``, ``crowd_log_lik``).

2. **The classifier prior**, learned once in the part's ``init``:

   * ``F`` classifiers (``folds``, default 5) are trained on the soft labels ``r``, classifier
     ``f`` on the items outside fold ``f`` (seed 000 sec. 4.5.1), to convergence: the
     cross-entropy ``- sum_i m_i sum_k r_ik log p(k | x_i, theta) / sum_i m_i`` (``m_i = 1`` for
     annotated items) plus ``weight_decay / 2 * |theta|^2``.  A logistic regression
     (``hidden=()``, convex) by L-BFGS, at most ``10 * steps`` iterations; an MLP
     (:class:`~crowdinfer.models.networks.MLP`) by ``10 * steps`` full-batch Adam steps.
     Item ``i``'s log probabilities ``l_i`` come from the classifier that did not see it.
     ``weight_decay=None`` (the default) trains them at every strength of :data:`DECAYS` and keeps
     the one whose cross-fitted predictions score best (log loss) against ``r`` -- ordinary
     cross-validation, no gold: a weakly regularised classifier on weak features is confidently
     wrong on the items it did not see, and one weight ``a`` cannot undo that item by item.
   * The prior is ``log p(y_i = k | x_i) = log_softmax_k(a * l_ik + b_k)``, ``a >= 0``: the
     weight ``a`` calibrates (and may switch off) the classifier, ``b`` are class offsets.
     ``(a, b)`` maximise the **marginal likelihood of the annotations** given stage 1's worker
     parameters (type-II maximum likelihood, the evidence of the weight)

         sum_i m_i log sum_k p(y_i = k | x_i; a, b) exp(L_ik),

     by L-BFGS from ``a = 0``, ``b = log`` (stage 1's class proportions): the model without the
     classifier is the point ``a = 0`` of this family, and the weight moves away from it only as
     far as the annotations of items the classifier never saw support it.  Features that carry no
     information give ``a ~ 0`` and the labels of the model without the classifier.

   The loop then runs one iteration from stage 1's labels: its M-step gives stage 1's (converged)
   worker parameters, its E-step the label posterior under the learned prior.  The worker
   parameters are **not** re-estimated under the classifier's prior (measured: re-estimating
   them, with the weight refitted by the same evidence each iteration, lowered accuracy on
   music_genre with weak features), so the classifier cannot feed back into the crowd evidence it
   is judged by.

The part's hyperparameters (:class:`LearnedHyper`, traced arrays): ``features`` (N, d), the
standardised item features, ``train_mask`` (N,) ``m``, ``fold`` (N,) the fold of each item, the
gold offset (gold items are left out of the weight's evidence: their labels are clamped), and stage
1's ``crowd_probs`` and ``crowd_log_lik``.  Its state is :class:`LearnedState` (``net``: the fold
classifiers, the weight and the chosen L2 strength; private: the cross-fitted log probabilities).
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from crowdinfer.inference.loop import ClassPart

from .class_prior import with_gold
from .networks import MLP

LBFGS_ROUNDS = 10  # L-BFGS iterations per unit of ``steps`` (logistic regression, the weight)
ADAM_ROUNDS = 10  # Adam steps per unit of ``steps`` (MLP)


class LearnedHyper(NamedTuple):
    features: jax.Array  # (N, d) standardised item features
    train_mask: jax.Array  # (N,) 1 for items with at least one annotation
    fold: jax.Array  # (N,) each item's fold
    gold_offset: jax.Array | None = None  # see class_prior.gold_offset
    class_concentration: jax.Array | None = None  # recorded in the options only: not used
    crowd_probs: jax.Array | None = None  # (N, K) stage 1's label posterior: the training target
    crowd_log_lik: jax.Array | None = None  # (N, K) stage 1's log q minus its log prior


class LearnedState(NamedTuple):
    net: dict  # {"folds": fold classifiers, "weight": {"scale": a, "bias": b}, "decay": L2}
    log_probs: jax.Array  # (N, K) cross-fitted classifier log probabilities (fixed)
    private = ("log_probs",)


def minimise_lbfgs(fun, params, max_iter: int, tol: float = 1e-5):
    """``params`` minimising ``fun`` by L-BFGS (optax, zoom line search), stopped when the
    gradient norm is below ``tol`` or after ``max_iter`` iterations (a ``while_loop``)."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def body(carry):
        p, s = carry
        value, grad = value_and_grad(p, state=s)
        updates, s = opt.update(grad, s, p, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(p, updates), s

    def cond(carry):
        _, s = carry
        count = optax.tree_utils.tree_get(s, "count")
        grad = optax.tree_utils.tree_get(s, "grad")
        return (count == 0) | ((count < max_iter) & (optax.tree_utils.tree_norm(grad) >= tol))

    return lax.while_loop(cond, body, (params, opt.init(params)))[0]


DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the L2 strengths cross-validation chooses from


@lru_cache(maxsize=None)
def classifier_part(n_classes: int, hidden: tuple = (128,), steps: int = 20,
                    learning_rate: float = 1e-3, weight_decay: float | None = None,
                    seed: int = 0, folds: int = 5) -> ClassPart:
    """The label-prior part for :class:`~crowdinfer.models.networks.MLP` classifiers (``hidden=()``:
    logistic regression), one per fold (parameters stacked on a leading fold axis,
    ``params["net"]["folds"]``).  ``weight_decay``: the L2 strength; ``None`` chooses it from
    :data:`DECAYS` by the cross-fitted cross-entropy against stage 1's posterior.  Everything is learned in
    ``init``; ``update`` keeps it (the runner's second stage is one iteration)."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    n_folds = max(int(folds), 1)
    decays = jnp.asarray(DECAYS if weight_decay is None else (weight_decay,), jnp.float32)

    def loss(params, decay, mask, target, features):
        log_p = jax.nn.log_softmax(net.apply(params, features), axis=-1)
        fit = -jnp.sum(mask * jnp.sum(target * log_p, axis=-1)) / jnp.maximum(mask.sum(), 1.0)
        return fit + 0.5 * decay * optax.tree_utils.tree_norm(params, squared=True)

    def train(params, decay, mask, target, features):
        if not hidden:  # convex: to convergence by L-BFGS
            return minimise_lbfgs(lambda p: loss(p, decay, mask, target, features), params,
                                  LBFGS_ROUNDS * steps)
        opt = optax.adam(learning_rate)  # the decay is in the loss

        def step(carry, _):
            p, s = carry
            grads = jax.grad(loss)(p, decay, mask, target, features)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = lax.scan(step, (params, opt.init(params)), None,
                                  length=ADAM_ROUNDS * steps)
        return params

    def init(data, hyper):
        if hyper.crowd_probs is None or hyper.crowd_log_lik is None:
            raise ValueError("the classifier prior needs stage 1's crowd_probs and crowd_log_lik "
                             "(crowdinfer.runners.loop_runner sets them)")
        x, target = hyper.features, hyper.crowd_probs
        keys = jax.random.split(jax.random.key(seed), n_folds)
        start = jax.vmap(lambda k: net.init(k, x[:1]))(keys)
        masks = fold_masks(hyper.train_mask, hyper.fold, n_folds)

        def cross_fitted(decay):  # every fold's classifier at this L2 strength
            params = jax.vmap(train, in_axes=(0, None, 0, None, None))(start, decay, masks,
                                                                       target, x)
            logits = jax.vmap(lambda p: net.apply(p, x))(params)  # (F, N, K)
            return params, jax.nn.log_softmax(cross_fit(logits, hyper.fold), axis=-1)

        params, log_probs = jax.vmap(cross_fitted)(decays)  # (D, F, ...), (D, N, K)
        # the decay whose held-out predictions score best against stage 1's posterior
        mask = hyper.train_mask
        held_out = -jnp.sum(mask[None, :, None] * target[None] * log_probs, axis=(1, 2))
        best = jnp.argmin(held_out)
        params = jax.tree.map(lambda p: p[best], params)
        log_probs = log_probs[best]
        mask = evidence_mask(hyper)
        proportions = (mask[:, None] * target).sum(0) / jnp.maximum(mask.sum(), 1.0)
        weight = {"scale": jnp.zeros(()), "bias": jnp.log(jnp.maximum(proportions, 1e-6))}
        weight = fit_weight(log_probs, hyper.crowd_log_lik, mask, weight, LBFGS_ROUNDS * steps)
        return LearnedState({"folds": params, "weight": weight, "decay": decays[best]}, log_probs)

    def update(data, q, hyper, state):
        return state

    def log_prior(data, state, hyper):
        return with_gold(weighted(state.log_probs, state.net["weight"]), hyper.gold_offset)

    return ClassPart(
        hyper=None,
        state=LearnedState,
        init=init,
        update=update,
        log_prior=log_prior,
        objective=lambda state, hyper: jnp.zeros(()),
        proportions=lambda state: None,
    )


def evidence_mask(hyper) -> jax.Array:
    """The items whose annotations are the weight's evidence: annotated and not gold."""
    mask = hyper.train_mask
    if hyper.gold_offset is not None:
        mask = mask * ~jnp.any(hyper.gold_offset < 0, axis=-1)
    return mask


def crowd_evidence(spec, data, state) -> tuple[jax.Array, jax.Array]:
    """Stage 1's label posterior and crowd log likelihoods ``log q - log prior`` (each item's
    log p(annotations | y = k) up to a constant) from its final loop ``state`` under ``spec``."""
    log_prior = spec.classes.log_prior(data, state.classes, spec.classes.hyper)
    log_lik = state.log_q - jnp.broadcast_to(log_prior, state.log_q.shape)
    return jnp.exp(state.log_q), log_lik


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
    """``log_softmax(a * log_probs + b)``, ``a = weight["scale"]`` (>= 0), ``b = weight["bias"]``."""
    return jax.nn.log_softmax(weight["scale"] * log_probs + weight["bias"], axis=-1)


def log_evidence(log_probs, log_lik, mask, weight) -> jax.Array:
    """``sum_i mask_i log sum_k p(y_i = k | x_i; a, b) exp(log_lik_ik)``: the log marginal
    likelihood of the annotations (up to a constant) under the weighted prior."""
    log_lik = log_lik - jnp.max(log_lik, axis=-1, keepdims=True)
    per_item = jax.nn.logsumexp(weighted(log_probs, weight) + log_lik, axis=-1)
    return jnp.sum(mask * per_item)


def fit_weight(log_probs, log_lik, mask, weight, max_iter: int = 500) -> dict:
    """The weight ``a >= 0`` and class offsets ``b`` maximising :func:`log_evidence`, by L-BFGS
    from ``weight``; where the unconstrained maximum has ``a < 0`` (a classifier worse than none),
    ``a = 0`` and the starting offsets."""
    total = jnp.maximum(mask.sum(), 1.0)
    log_lik = jnp.where(mask[:, None] > 0, log_lik, 0.0)  # unannotated / gold rows: no evidence

    def loss(w):
        return -log_evidence(log_probs, log_lik, mask, w) / total

    best = minimise_lbfgs(loss, weight, max_iter, tol=1e-6)
    keep = best["scale"] > 0
    return {"scale": jnp.where(keep, best["scale"], 0.0),
            "bias": jnp.where(keep, best["bias"], weight["bias"])}


def classifier_weight(params) -> float:
    """The learned weight ``a`` of the classifier's log probabilities in the prior (0: ignored)."""
    return float(params["weight"]["scale"])


def predict_logits(n_classes: int, hidden: tuple, params, features: jax.Array) -> jax.Array:
    """Class log probabilities for any (standardised) features: the mean of the fold networks'
    log probabilities (an ensemble; none of them saw these items), weighted as in the prior."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    logits = jax.vmap(lambda p: net.apply(p, features))(params["folds"])
    return weighted(jax.nn.log_softmax(logits, axis=-1).mean(0), params["weight"])
