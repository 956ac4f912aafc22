"""A learned label prior: a cross-fitted classifier on item features, kept only where held-out
annotations say it helps.

Seed 000 sec. 3.3 (Lean Crowdsourcing; Raykar et al. 2010) replaces the class proportions by a
classifier's prediction ``p(y_i | x_i, theta)``.  Trained inside the EM loop, the classifier and the
worker confusions pull each other along: the classifier shifts the label posterior ``q``, the
confusions are re-estimated from ``q``, and the crowd's own evidence drifts toward the classifier,
which then looks better than it is (issue 14: a weak classifier lowered accuracy by up to 0.022).
So the prior is learned in **two stages**, each with a fixed target, then **checked on held-out
annotations**, which also set its weight (the runner, :func:`crowdinfer.runners.loop_runner`,
drives all four steps):

1. **The model without the classifier**, to convergence.  Its label posterior ``r`` and its crowd
   log likelihoods ``L_ik = log p(annotations of i | y_i = k) + c_i`` (its ``log q`` minus its log
   prior): :func:`crowd_evidence`.

2. **The classifier** (:func:`train_classifiers`, one ``jit``): ``F`` classifiers (``folds``,
   default 5) trained on the soft labels ``r``, classifier ``f`` on the annotated items outside
   fold ``f`` (seed 000 sec. 4.5.1): the cross-entropy ``- sum_i m_i sum_k r_ik log p(k | x_i) /
   sum_i m_i`` plus ``decay / 2 * |theta|^2``.  Item ``i``'s log probabilities ``l_i`` come from
   the classifier that did not see it.  The folds are ``vmap``ped; the L2 strengths of
   :data:`DECAYS` are a regularisation *path* (``lax.scan`` from the strongest, each strength
   warm-started from the previous one's solution), and the strength whose cross-fitted predictions
   score best (log loss) against ``r`` is kept -- ordinary cross-validation, no gold.  A logistic
   regression (``hidden=()``, convex) by L-BFGS to a gradient norm of 1e-4 (at most
   ``LBFGS_ROUNDS * steps`` iterations per strength); an MLP
   (:class:`~crowdinfer.models.networks.MLP`) by full-batch Adam, ``ADAM_ROUNDS * steps`` steps at
   the first strength and a quarter of that at each next one.

   The prior is ``log p(y_i = k | x_i) = log_softmax_k(a * l_ik + b_k)``, ``a >= 0``: the weight
   ``a`` calibrates the classifier, ``b`` are class offsets.  A first ``(a, b)`` maximise the
   **marginal likelihood of the annotations** given stage 1's worker parameters
   (:func:`fit_weight`; the guard's halves use it, the final ``a`` is step 4's),

       sum_i m_i log sum_k p(y_i = k | x_i; a, b) exp(L_ik),

   by L-BFGS from ``a = 0``, ``b`` = stage 1's log class proportions (the model without the
   classifier is the point ``a = 0`` of this family).

3. **The guard** (:func:`held_out_gain`): the evidence above rewards a prior for predicting an
   item's first answer, and a classifier can win it while moving labels the wrong way.  So the
   annotations are split in two halves within each item (as the default fit's holdout criterion,
   :mod:`crowdinfer.selection`); on each half the model without the classifier is fitted again,
   the weight is fitted again on that half's evidence (same cross-fitted ``l``: the classifier of
   item ``i`` never saw any answer of item ``i``), and both posteriors -- with and without the
   prior -- predict the *other* half's answers under that half's workers:
   ``log sum_k q_ik theta[w, k, z]`` for every held-out answer, as in
   :func:`crowdinfer.selection.holdout_scores`.  The classifier is kept only if, summed over both
   halves, it predicts the held-out answers better by more than :data:`GUARD_SE` standard errors
   of the per-item gains (a one-sided paired test) and by more than :data:`GUARD_MIN_GAIN` nats,
   **and** passes the same test on the items whose label it changes (:func:`flipped`; a gain in
   held-out likelihood can come from softer probabilities of items whose label stays, while
   accuracy is decided by the ones that move).  Otherwise the result is stage 1's posterior
   itself (exactly ``fit(annotations, model)``: same labels and probabilities), recorded with
   ``a = 0``.

4. **The weight, cross-validated** (:func:`held_out_weight`): where the classifier is kept, ``a``
   is the one that predicts the guard's held-out answers best (one ``a`` for both halves, offsets
   per half), and ``b`` then maximises the full data's evidence at that ``a`` (:func:`fit_bias`);
   the in-sample ``a`` of step 2 is recorded beside it (``guard["evidence_scale"]``).  The loop
   runs one iteration from stage 1's labels: its M-step gives stage 1's (converged) worker
   parameters, its E-step the label posterior under the prior.  The worker parameters are
   **not** re-estimated under the classifier's prior, so the classifier cannot feed back into the
   crowd evidence it is judged by.

The part (:func:`classifier_part`) only carries the result: its hyperparameters
(:class:`LearnedHyper`) hold the cross-fitted log probabilities, the weight and the fold
classifiers; its state is :class:`LearnedState` (``net``: the fold classifiers, the weight, the
chosen L2 strength and the guard's verdict; private: the cross-fitted log probabilities).
"""
from __future__ import annotations

from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from crowdinfer.inference.loop import ClassPart

from .class_prior import with_gold
from .networks import MLP

LBFGS_ROUNDS = 10  # L-BFGS iterations (at most) per unit of ``steps`` and L2 strength
LBFGS_TOL = 1e-4  # gradient norm at which L-BFGS stops (the loss is a mean cross-entropy)
ADAM_ROUNDS = 10  # Adam steps per unit of ``steps`` at the first L2 strength (MLP)
DECAYS = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)  # the L2 path, strongest first (cross-validated)
GUARD_SE = 2.0  # the held-out gain must exceed this many standard errors (one-sided test)
# ... and this many nats: the classifier's prior adds one parameter (the weight a), and one nat per
# parameter is Akaike's price; it keeps a gain of 0.0 +- 0.0 (float32 rounding) from counting
GUARD_MIN_GAIN = 1.0


class LearnedHyper(NamedTuple):
    log_probs: jax.Array  # (N, K) cross-fitted classifier log probabilities
    net: dict  # {"folds", "weight", "decay", "guard"}: see classifier_part
    gold_offset: jax.Array | None = None  # see class_prior.gold_offset
    class_concentration: jax.Array | None = None  # recorded in the options only: not used


class LearnedState(NamedTuple):
    net: dict  # {"folds": fold classifiers, "weight": {"scale": a, "bias": b}, "decay", "guard"}
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


@lru_cache(maxsize=None)
def trainer(n_classes: int, hidden: tuple = (128,), steps: int = 20, learning_rate: float = 1e-3,
            seed: int = 0, folds: int = 5):
    """``train(features, target, train_mask, fold, decays)``, one ``jit`` (compiled once per
    shape): the ``folds`` cross-fitted classifiers on the soft labels ``target`` (N, K) at every L2
    strength of ``decays`` (strongest first, each warm-started from the previous solution), the
    strength whose cross-fitted log loss against ``target`` is lowest kept.  Returns
    ``(fold parameters, cross-fitted log probabilities (N, K), chosen decay, log loss per decay)``."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    n_folds = max(int(folds), 1)
    if hidden:
        first, rest = ADAM_ROUNDS * steps, max(ADAM_ROUNDS * steps // 4, 1)
    else:
        first = rest = LBFGS_ROUNDS * steps

    def loss(params, decay, mask, target, features):
        log_p = jax.nn.log_softmax(net.apply(params, features), axis=-1)
        fit = -jnp.sum(mask * jnp.sum(target * log_p, axis=-1)) / jnp.maximum(mask.sum(), 1.0)
        return fit + 0.5 * decay * optax.tree_utils.tree_norm(params, squared=True)

    def train_one(params, decay, mask, target, features, iterations):
        if not hidden:  # convex: to convergence by L-BFGS
            return minimise_lbfgs(lambda p: loss(p, decay, mask, target, features), params,
                                  iterations, LBFGS_TOL)
        opt = optax.adam(learning_rate)  # the decay is in the loss

        def step(carry, _):
            p, s = carry
            grads = jax.grad(loss)(p, decay, mask, target, features)
            updates, s = opt.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = lax.scan(step, (params, opt.init(params)), None, length=iterations)
        return params

    @jax.jit
    def train(features, target, train_mask, fold, decays):
        keys = jax.random.split(jax.random.key(seed), n_folds)
        params = jax.vmap(lambda k: net.init(k, features[:1]))(keys)
        masks = fold_masks(train_mask, fold, n_folds)

        def all_folds(params, decay, iterations):
            return jax.vmap(partial(train_one, iterations=iterations),
                            in_axes=(0, None, 0, None, None))(params, decay, masks, target,
                                                              features)

        if first > rest:  # the first strength starts from scratch: more steps
            params = all_folds(params, decays[0], first - rest)

        def body(carry, decay):
            params, best = carry
            params = all_folds(params, decay, rest)
            logits = jax.vmap(lambda p: net.apply(p, features))(params)  # (F, N, K)
            log_probs = jax.nn.log_softmax(cross_fit(logits, fold), axis=-1)
            score = -jnp.sum(train_mask[:, None] * target * log_probs)
            better = score < best[2]
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                                (params, log_probs, score, decay), best)
            return (params, best), score

        best = (params, jnp.zeros_like(target), jnp.asarray(jnp.inf, target.dtype), decays[0])
        (_, best), scores = lax.scan(body, (params, best), decays)
        return best[0], best[1], best[3], scores

    return train


def classifier_part() -> ClassPart:
    """The label-prior part that carries a learned classifier prior (stage 2): its hyperparameters
    (:class:`LearnedHyper`) hold everything, learned beforehand by the runner."""
    return _PART


def _log_prior(data, state, hyper):
    return with_gold(weighted(state.log_probs, state.net["weight"]), hyper.gold_offset)


_PART = ClassPart(
    hyper=None,
    state=LearnedState,
    init=lambda data, hyper: LearnedState(hyper.net, hyper.log_probs),
    update=lambda data, q, hyper, state: state,
    log_prior=_log_prior,
    objective=lambda state, hyper: jnp.zeros(()),
    proportions=lambda state: None,
)


def without_gold(hyper):
    """``hyper`` with its gold offset (if any) removed."""
    if getattr(hyper, "gold_offset", None) is None:
        return hyper
    return hyper._replace(gold_offset=None)


def crowd_evidence(spec, data, state) -> tuple[jax.Array, jax.Array, jax.Array]:
    """From a loop ``state`` of the model without the classifier (``spec``): its label posterior,
    its crowd log likelihoods ``log q - log prior`` (each item's log p(annotations | y = k) up to a
    constant) and its log class proportions (K,) (``log_softmax`` of its log prior, without the
    gold offset: with these as ``b`` and ``a = 0`` the weighted prior gives its posterior)."""
    hyper = spec.classes.hyper
    log_prior = spec.classes.log_prior(data, state.classes, hyper)
    log_lik = state.log_q - jnp.broadcast_to(log_prior, state.log_q.shape)
    base = spec.classes.log_prior(data, state.classes, without_gold(hyper))
    probs = jnp.exp(state.log_q)
    if base.ndim == 1:
        base = jax.nn.log_softmax(base)
    else:  # per-item prior logits: the mean posterior
        base = jnp.log(jnp.maximum(probs.mean(0), 1e-6))
    return probs, log_lik, base


def evidence_mask(train_mask, gold_offset) -> jax.Array:
    """The items whose annotations are evidence: annotated and not gold."""
    if gold_offset is not None:
        train_mask = train_mask * ~jnp.any(gold_offset < 0, axis=-1)
    return train_mask


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


@partial(jax.jit, static_argnames="max_iter")
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


@partial(jax.jit, static_argnames="max_iter")
def fit_bias(log_probs, log_lik, mask, scale, bias, max_iter: int = 500) -> dict:
    """The class offsets ``b`` maximising :func:`log_evidence` at a fixed weight ``a = scale``,
    by L-BFGS from ``bias``."""
    total = jnp.maximum(mask.sum(), 1.0)
    log_lik = jnp.where(mask[:, None] > 0, log_lik, 0.0)

    def loss(b):
        return -log_evidence(log_probs, log_lik, mask, {"scale": scale, "bias": b}) / total

    return {"scale": jnp.asarray(scale, log_probs.dtype),
            "bias": minimise_lbfgs(loss, bias, max_iter, tol=1e-6)}


@partial(jax.jit, static_argnames="max_iter")
def held_out_weight(log_probs, log_lik, log_theta, item, held, weight, max_iter: int = 500):
    """The weight ``a >= 0`` that predicts held-out answers best: over the guard's halves
    (``log_lik`` (H, N, K): each half's crowd log likelihoods of the answers it kept,
    ``log_theta`` (H, R, K): ``log confusion[w, k, z]`` of every answer under that half's
    workers, ``held`` (H, R): the weights of the answers it held out), the summed held-out log
    likelihood ``sum_r held_r log sum_k q_ik(a, b_h) theta[w, k, z]`` of the posterior ``q``
    under the prior ``log_softmax(a * l + b_h)``, maximised over one ``a`` shared by the halves
    and offsets ``b_h`` per half, by L-BFGS from ``weight`` (``{"scale": (), "bias": (H, K)}``).
    Cross-validation of ``a``: no answer scores a posterior it entered.  Returns ``a``."""
    total = jnp.maximum(held.sum(), 1.0)

    def loss(w):
        def half(bias, lik, theta, held_h):
            log_q = jax.nn.log_softmax(
                weighted(log_probs, {"scale": w["scale"], "bias": bias}) + lik, axis=-1)
            return jnp.sum(held_h * jax.nn.logsumexp(log_q[item] + theta, axis=-1))

        return -jnp.sum(jax.vmap(half)(w["bias"], log_lik, log_theta, held)) / total

    best = minimise_lbfgs(loss, weight, max_iter, tol=1e-6)
    return jnp.maximum(best["scale"], 0.0)


@jax.jit
def held_out_gain(log_probs, weight, base, log_lik, confusion, worker, label, item, held):
    """Per item (N,): how much better the posterior under the weighted classifier prior predicts
    the held-out answers than the posterior under the class proportions ``base`` -- both from the
    crowd log likelihoods ``log_lik`` of the other answers, each held-out answer (``worker``,
    ``label``, ``item``; ``held`` its weight, 0 for answers that are not held out) scored as
    ``log sum_k q_ik confusion[w, k, z]`` (the fitted workers of the other answers)."""
    log_theta = jnp.log(jnp.maximum(confusion[worker, :, label], 1e-30))  # (R, K)

    def score(log_prior):
        log_q = jax.nn.log_softmax(log_prior + log_lik, axis=-1)
        return jax.nn.logsumexp(log_q[item] + log_theta, axis=-1)

    per_row = held * (score(weighted(log_probs, weight)) - score(base))
    return jax.ops.segment_sum(per_row, item, num_segments=log_probs.shape[0])


@jax.jit
def flipped(log_probs, weight, base, log_lik) -> jax.Array:
    """(N,) 1 where the weighted classifier prior changes an item's label (the argmax of its
    posterior) against the class proportions ``base``, from the crowd log likelihoods
    ``log_lik``; else 0."""
    with_prior = jnp.argmax(weighted(log_probs, weight) + log_lik, axis=-1)
    return (with_prior != jnp.argmax(base + log_lik, axis=-1)).astype(log_probs.dtype)


def guard_test(gain: np.ndarray, counted: np.ndarray) -> dict:
    """The guard's verdict from the per-item held-out gains ``gain`` of the ``counted`` items:
    the total, its standard error (items as independent pairs) and ``kept``: the total is above
    both ``GUARD_SE`` standard errors and :data:`GUARD_MIN_GAIN` nats (a gain of 0 +- 0 -- a
    classifier that changes nothing, or float32 rounding -- is not kept; nor is anything where
    fewer than two items were held out or the standard error is not finite)."""
    g = np.asarray(gain, np.float64)[np.asarray(counted, bool)]
    n = len(g)
    total = float(g.sum())
    se = float(np.sqrt(n / max(n - 1, 1) * np.sum((g - g.mean()) ** 2))) if n else 0.0
    kept = (n > 1 and np.isfinite(total) and np.isfinite(se)
            and total > max(GUARD_SE * se, GUARD_MIN_GAIN))
    return {"gain": total, "se": se, "kept": bool(kept)}


def classifier_weight(params) -> float:
    """The learned weight ``a`` of the classifier's log probabilities in the prior (0: ignored)."""
    return float(params["weight"]["scale"])


def predict_logits(n_classes: int, hidden: tuple, params, features: jax.Array) -> jax.Array:
    """Class log probabilities for any (standardised) features: the mean of the fold networks'
    log probabilities (an ensemble; none of them saw these items), weighted as in the prior (a
    classifier the guard switched off gives the class proportions)."""
    net = MLP(n_classes=n_classes, hidden=hidden)
    logits = jax.vmap(lambda p: net.apply(p, features))(params["folds"])
    return weighted(jax.nn.log_softmax(logits, axis=-1).mean(0), params["weight"])
