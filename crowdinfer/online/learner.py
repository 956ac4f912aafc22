"""The learner in the loop: a classifier on fixed item features whose calibrated prediction is the
label prior ``p(y_i | x_i, theta)`` of the next step (seed 000 sec. 3.3, 4.4, 4.5.1, appendix H).

Each step, :func:`fit` trains a fresh :class:`~crowdinfer.models.networks.MLP` (new random
initialisation: "learnt from scratch at every step") with optax AdamW on minibatches:

* **training set** -- items with at least one annotation, soft targets ``q_i`` (eq. 3);
  ``learner="pseudolabel"`` adds the unannotated items whose current posterior is confident,
  ``max_y q_i(y) > 1 - tau``, with hard targets (sec. 4.4; their posterior is the previous step's
  model prediction); ``learner="mixmatch"`` instead mixes them with the labelled items (appendix H,
  eq. 8): ``x' = l x_1 + (1 - l) x_2``, ``p' = l p_1 + (1 - l) p_2``, ``l = max(u, 1 - u)``,
  ``u ~ Beta(alpha, alpha)``, and adds ``mixmatch_weight * ||p' - p(y | x')||^2`` to the loss;
* **class-balanced sampling** -- minibatches drawn with probability inversely proportional to the
  size of the item's (hard) class;
* **validation** -- the clean prototypes (``calibration="prototypes"``, sec. 4.5.1), or for Lean the
  held-out fold of a k-fold split of the annotated items with their current labels
  (``calibration="cv"``; the folds train side by side under ``vmap`` and each item's prior comes
  from the network that did not train on it).  Every ``eval_every`` steps the validation loss is
  measured and the best parameters kept (local model selection);
* **temperature calibration** -- one temperature minimising the validation NLL (grid search);
* **global model selection** (``selection="global"``, Algorithm 1 lines 13-17) -- the new model
  replaces the previous one only if its calibrated prototype loss is not worse.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import optax

from crowdinfer.models.learned_prior import cross_fit, fold_masks
from crowdinfer.models.networks import MLP

from .config import OnlineConfig
from .risk import outside_trace

__all__ = ["init_params", "fit", "predict_log_probs", "TEMPERATURES"]

VALID_CAP = 1024  # validation items per fold for calibration="cv"


@lru_cache(maxsize=None)
def _temperatures() -> jax.Array:
    """The calibration grid (computed on first use: importing this module starts no JAX backend,
    so ``jax.distributed.initialize`` can still run after ``import crowdinfer.online``)."""
    return outside_trace(lambda: jnp.exp(jnp.linspace(-2.5, 2.5, 51)))


def __getattr__(name):
    if name == "TEMPERATURES":
        return _temperatures()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _net(config: OnlineConfig) -> MLP:
    return MLP(n_classes=config.n_classes, hidden=tuple(config.hidden))


def init_params(config: OnlineConfig, dim: int, key):
    """Parameters of ``config.n_folds`` fresh networks, stacked on a leading axis."""
    net = _net(config)
    x = jnp.zeros((1, dim), jnp.float32)
    return jax.vmap(lambda k: net.init(k, x))(jax.random.split(key, config.n_folds))


def predict_log_probs(config: OnlineConfig, params, features, temperature, fold=None):
    """Calibrated log p(y | x): each item from the network of its ``fold`` (default: the first)."""
    logits = jax.vmap(lambda p: _net(config).apply(p, features))(params)  # (F, N, K)
    return jax.nn.log_softmax(cross_fit(logits, fold) / temperature, axis=-1)


def _nll(logits, labels, mask):
    logp = jax.nn.log_softmax(logits, -1)
    picked = jnp.take_along_axis(logp, labels[:, None], -1)[:, 0]
    return -jnp.sum(picked * mask) / jnp.maximum(mask.sum(), 1.0)


def _sampler_cdf(weights, classes, n_classes, balanced):
    if balanced:
        size = jax.ops.segment_sum(weights, classes, n_classes)
        weights = weights / jnp.maximum(size[classes], 1.0)
    return jnp.cumsum(weights)


def _draw(key, cdf, size):
    u = jax.random.uniform(key, (size,)) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), cdf.shape[0] - 1)


def fold_of(n_items: int, n_folds: int, seed: int):
    """A fixed random split of the items into folds."""
    perm = jax.random.permutation(jax.random.key(seed + 7), n_items)
    return jnp.zeros(n_items, jnp.int32).at[perm].set(jnp.arange(n_items, dtype=jnp.int32) % n_folds)


def fit(config: OnlineConfig, task, q, annotated, previous: dict, previous_log_prior, key):
    """Train, calibrate and select; returns ``(learner_state, log_prior (N, K), report)``."""
    net = _net(config)
    n, k = q.shape
    f = config.n_folds
    x = task.features
    hard = jnp.argmax(q, -1).astype(jnp.int32)
    confident = (q.max(-1) > 1.0 - config.pseudo_tau) & ~annotated
    w_lab = annotated.astype(jnp.float32)
    targets = q
    if config.learner == "pseudolabel":
        targets = jnp.where(annotated[:, None], q, jax.nn.one_hot(hard, k))
        w_lab = (annotated | confident).astype(jnp.float32)
    folds = fold_of(n, f, config.seed)
    w_train = fold_masks(w_lab, folds, f)  # (F, N)
    cdfs = jax.vmap(lambda w: _sampler_cdf(w, hard, k, config.class_balanced))(w_train)
    unl_cdf = jnp.cumsum(confident.astype(jnp.float32))

    # validation sets, one per fold, static size
    if config.calibration == "cv":
        def pick(fold_id, kk):
            mask = annotated & (folds == fold_id)
            score = jnp.where(mask, jax.random.gumbel(kk, (n,)), -jnp.inf)
            top, idx = jax.lax.top_k(score, min(n, VALID_CAP))
            return x[idx], hard[idx], jnp.isfinite(top).astype(jnp.float32)

        vx, vy, vm = jax.vmap(pick)(jnp.arange(f), jax.random.split(jax.random.fold_in(key, 3), f))
    else:
        p = task.proto_features.shape[0]
        vx = task.proto_features[None]
        vy = task.proto_labels[None]
        vm = jnp.ones((1, p), jnp.float32)

    opt = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    b = config.batch_size

    def loss_fn(params, kk, cdf):
        k1, k2, k3 = jax.random.split(kk, 3)
        idx = _draw(k1, cdf, b)
        logp = jax.nn.log_softmax(net.apply(params, x[idx]), -1)
        loss = -jnp.mean(jnp.sum(targets[idx] * logp, -1))
        if config.learner == "mixmatch":
            jdx = _draw(k2, unl_cdf, b)
            u = jax.random.beta(k3, config.mixmatch_alpha, config.mixmatch_alpha, (b, 1))
            lam = jnp.maximum(u, 1.0 - u)
            xm = lam * x[idx] + (1 - lam) * x[jdx]
            pm = lam * targets[idx] + (1 - lam) * q[jdx]
            pred = jax.nn.softmax(net.apply(params, xm), -1)
            has_unl = (unl_cdf[-1] > 0).astype(jnp.float32)
            loss = loss + has_unl * config.mixmatch_weight * jnp.mean(jnp.sum((pm - pred) ** 2, -1))
        return loss

    def train_one(params, cdf, vx1, vy1, vm1, kk):
        state = opt.init(params)

        def step(carry, kstep):
            params, state = carry
            grads = jax.grad(loss_fn)(params, kstep, cdf)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        def block(carry, kb):
            params, state, best, best_loss = carry
            (params, state), _ = jax.lax.scan(step, (params, state), jax.random.split(kb, config.eval_every))
            val = _nll(net.apply(params, vx1), vy1, vm1)
            better = val <= best_loss
            best = jax.tree.map(lambda a, c: jnp.where(better, a, c), params, best)
            return (params, state, best, jnp.where(better, val, best_loss)), val

        n_blocks = config.train_steps // config.eval_every
        carry = (params, state, params, jnp.float32(jnp.inf))
        (_, _, best, best_loss), curve = jax.lax.scan(block, carry, jax.random.split(kk, n_blocks))
        return best, best_loss

    k_init, k_train = jax.random.split(key)
    fresh = init_params(config, x.shape[1], k_init)
    vsel = (lambda a: a) if f > 1 else (lambda a: jnp.broadcast_to(a, (f,) + a.shape[1:]))
    params, _ = jax.vmap(train_one)(fresh, cdfs, vsel(vx), vsel(vy), vsel(vm), jax.random.split(k_train, f))

    # temperature: minimise the validation NLL, pooled over folds
    vlogits = jax.vmap(lambda p, v: net.apply(p, v))(params, vsel(vx))  # (F, V, K)
    grid = _temperatures()
    nll_t = jax.vmap(lambda t: _nll(vlogits.reshape(-1, k) / t, vsel(vy).reshape(-1), vsel(vm).reshape(-1)))(grid)
    temperature = grid[jnp.argmin(nll_t)]
    loss = nll_t.min()
    log_prior = predict_log_probs(config, params, x, temperature, folds if f > 1 else None)

    has_data = w_lab.sum() > 0
    accept = has_data
    if config.selection == "global":
        accept = accept & (loss <= previous["best_loss"])
    new = {"params": params, "temperature": temperature, "best_loss": loss}
    if config.selection == "global":
        chosen = jax.tree.map(lambda a, c: jnp.where(accept, a, c), new, previous)
    else:
        chosen = jax.tree.map(lambda a, c: jnp.where(has_data, a, c), new, previous)
    log_prior = jnp.where(accept, log_prior, previous_log_prior)
    report = {"learner_loss": loss, "learner_accepted": accept, "temperature": temperature,
              "pseudo_labels": jnp.sum(confident) if config.learner != "supervised" else jnp.int32(0)}
    return chosen, log_prior, report
