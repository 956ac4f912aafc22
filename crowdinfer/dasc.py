"""Deep crowdsourcing base models and distribution-aware self-training (DASC, seed 004).

Annotations are held densely: ``labels`` (N, M) int32 with ``-1`` where worker ``k`` did not
annotate item ``i``, and ``weights`` (N, M) float32, ``0`` at those cells (1 for an annotation, or a
class weight for the imbalance baselines).  At the sizes of these benchmarks (1000 x 59) that is
the simplest exact form; every loss is masked by ``weights`` so a missing cell contributes nothing.

Base models (Flax modules in :mod:`crowdinfer.models.networks`, seed 004 sec. 3.3):

* ``"crowdlayer"``  ``p(y_hat^k | x) = softmax(f(x) . W_k)``  (eq. 8-9)
* ``"anno_reg"``    ``p(y_hat^k | x) = f(x) A_k``, ``A_k`` row-stochastic, loss + ``lambda`` x the
  mean trace of the ``A_k`` (eq. 10-11)
* ``"wdn"``         one head per worker on a shared extractor (eq. 5-6), then worker weights fitted
  to the items' mean annotations (eq. 7)

all trained by minimising the masked crowd loss ``sum_ik w_ik l(p(y_hat^k_i | x_i), y^k_i) /
sum_ik w_ik`` (eq. 6 / 9) with Adam + L2 weight decay on every Dense kernel, minibatches of items.

Imbalance baselines (``loss=``): ``"ce"``; ``"reweighting"`` ``w_ik = max_c N_c / N_{y_ik}``;
``"resampling"`` random oversampling of each class's annotations to the largest class's count
(integer copy counts as weights, a fresh draw per seed); ``"focal"``
``-(1 - p)^gamma log p``, ``gamma = 2``.  Aggregate-then-learn baselines: :func:`train_aggregated`
(MV-DL, DS-DL).

Self-training (:func:`self_train`, Algorithm 1): train the base model; predict every worker's
annotation on each cell nobody filled; score each by its entropy (eq. 2); select ``n_select`` of
them

* ``"dasc"``        per predicted class ``c``, the ``M_c`` of least entropy, ``M_c = pi_c M`` with
  ``pi_c`` proportional to ``1 / N'_c``, ``N'_c`` the number of candidate pseudo-annotations
  predicted ``c`` (eq. 3-4);
* ``"confidence"``  the ``M`` of least entropy overall;
* ``"random"``      ``M`` at random;

add them (without replacement: a cell once filled stays filled, and an observed cell is never a
candidate) and continue training; repeat.  The imbalance ratio ``R = max_c N_c / min_c N_c`` of the
combined annotations (eq. 1) is recorded at every iteration.

Seeds are trained side by side with ``vmap``: every function takes ``seeds`` (a count or a list) and
returns parameters stacked on a leading seed axis.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .annotations import Annotations
from .models import networks

__all__ = [
    "BASE_MODELS",
    "LOSSES",
    "SELECTIONS",
    "AGGREGATIONS",
    "Config",
    "CrowdNet",
    "dense_annotations",
    "imbalance_ratio",
    "entropy",
    "class_quotas",
    "select_pseudo_annotations",
    "crowd_loss",
    "loss_weights",
    "network",
    "train_base",
    "train_aggregated",
    "self_train",
]

BASE_MODELS = ("crowdlayer", "anno_reg", "wdn")
LOSSES = ("ce", "resampling", "reweighting", "focal")
SELECTIONS = ("dasc", "confidence", "random")
AGGREGATIONS = ("majority_vote", "dawid_skene")


@dataclasses.dataclass(frozen=True)
class Config:
    """Training hyperparameters (defaults: seed 004 sec. 4.1, LabelMe).

    Attributes:
        hidden, dropout: the MLP backbone (one ReLU layer of 128 units, 50% dropout).
        learning_rate, weight_decay: Adam and the L2 penalty on every Dense kernel (5e-4).
        batch_size: items per minibatch; epochs: passes over the items per training round (the
            first round and each self-training iteration alike).
        trace_weight: ``lambda`` of Anno-Reg's trace regulariser (eq. 11), on the mean trace.
        init_scale: Anno-Reg's confusion logits start at ``init_scale * I``.
        focal_gamma: gamma of the focal loss.
        wdn_weight_steps, wdn_weight_lr: WDN's second phase (eq. 7), full-batch Adam steps on the
            worker weights with the heads fixed.
    """

    hidden: int = 128
    dropout: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 512
    epochs: int = 25
    trace_weight: float = 0.01
    init_scale: float = 2.0
    focal_gamma: float = 2.0
    wdn_weight_steps: int = 200
    wdn_weight_lr: float = 1e-2

    def __post_init__(self):
        for name in ("hidden", "batch_size", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Config.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Config.dropout must lie in [0, 1), got {self.dropout}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.trace_weight < 0:
            raise ValueError("need learning_rate > 0, weight_decay >= 0 and trace_weight >= 0")
        if self.focal_gamma < 0 or self.wdn_weight_steps < 0:
            raise ValueError("need focal_gamma >= 0 and wdn_weight_steps >= 0")


# --------------------------------------------------------------------------- dense annotations
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


# --------------------------------------------------------------------------- networks
class _Net(NamedTuple):
    """A base model as pure functions: ``apply(params, x, train, rng) -> (class_log_probs (B, K),
    annotator_log_probs (B, M, K))`` and the extra loss term ``regulariser(params)`` (Anno-Reg:
    ``trace_weight`` x the mean trace of the confusions, eq. 11).  Hashable by value, so it can be
    a static argument of ``jit``."""

    name: str
    module: Any
    trace_weight: float = 0.0

    def init(self, key, x):
        return self.module.init(key, x[:1])["params"]

    def apply(self, params, x, train=False, rng=None):
        rngs = {"dropout": rng} if train else None
        return self.module.apply({"params": params}, x, train, rngs=rngs)

    def regulariser(self, params):
        if self.name != "anno_reg":
            return jnp.zeros(())
        return self.trace_weight * networks.AnnoReg.trace(params) / self.module.n_workers


class _AsCrowd(networks.Classifier):
    """A plain classifier seen as a one-worker crowd model (the aggregated labels are that worker):
    the network of MV-DL / DS-DL."""

    def __call__(self, x, train=False):
        logp = jax.nn.log_softmax(super().__call__(x, train), -1)
        return logp, logp[:, None, :]


class _SoftAsCrowd(networks.Classifier):
    """The classifier seen as K one-class "workers", so soft targets reuse the masked crowd loss."""

    def __call__(self, x, train=False):
        logp = jax.nn.log_softmax(super().__call__(x, train), -1)
        return logp, jnp.broadcast_to(logp[:, None, :], (x.shape[0], self.n_classes,
                                                         self.n_classes))


def network(model: str, n_classes: int, n_workers: int, config: Config | None = None) -> _Net:
    """The base model ``model`` (``"crowdlayer"``, ``"anno_reg"``, ``"wdn"``) as pure functions:
    ``init(key, x)``, ``apply(params, x, train=False, rng=None) -> (class_log_probs,
    annotator_log_probs)``, ``regulariser(params)``; for :func:`crowd_loss`."""
    if model not in BASE_MODELS:
        raise ValueError(f"model must be one of {BASE_MODELS}, got {model!r}")
    return _net(model, n_classes, n_workers, Config() if config is None else config)


def _net(model: str, n_classes: int, n_workers: int, cfg: Config) -> _Net:
    common = dict(n_classes=n_classes, hidden=cfg.hidden, dropout=cfg.dropout)
    if model == "crowdlayer":
        return _Net(model, networks.Crowdlayer(n_workers=n_workers, **common))
    if model == "anno_reg":
        module = networks.AnnoReg(n_workers=n_workers, init_scale=cfg.init_scale, **common)
        return _Net(model, module, cfg.trace_weight)
    if model == "wdn":
        return _Net(model, networks.WDN(n_workers=n_workers, **common))
    if model == "classifier":
        return _Net(model, _AsCrowd(**common))
    if model == "soft_classifier":
        return _Net(model, _SoftAsCrowd(**common))
    raise ValueError(f"model must be one of {BASE_MODELS}, got {model!r}")


def _decay_mask(params):
    """L2 weight decay on the Dense kernels (and WDN's head kernels), not on the worker maps."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    keep = {jax.tree_util.keystr(p): "kernel" in jax.tree_util.keystr(p) for p, _ in flat}
    return jax.tree_util.tree_map_with_path(lambda p, _: keep[jax.tree_util.keystr(p)], params)


def _optimizer(cfg: Config):
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=_decay_mask),
                       optax.adam(cfg.learning_rate))


# --------------------------------------------------------------------------- losses
def crowd_loss(net: _Net, params, x, labels, weights, rng=None, loss: str = "ce",
               gamma: float = 2.0, train: bool = True) -> jax.Array:
    """The masked crowd loss (eq. 6 / 9) of a batch plus the model's regulariser:
    ``sum_ik w_ik l_ik / sum_ik w_ik``, ``l_ik = -log p(y_hat^k_i = y_ik | x_i)`` (``"ce"``; also
    ``"reweighting"``/``"resampling"``, whose difference lies in ``weights``) or the focal loss
    ``-(1 - p)^gamma log p`` (``"focal"``).  Cells with ``w_ik = 0`` contribute exactly nothing,
    whatever their label."""
    _, ann = net.apply(params, x, train, rng)
    observed = weights > 0
    logp = jnp.take_along_axis(ann, jnp.where(observed, labels, 0)[..., None], -1)[..., 0]
    ell = -logp
    if loss == "focal":
        ell = (1.0 - jnp.exp(logp)) ** gamma * ell
    total = jnp.sum(jnp.where(observed, weights * ell, 0.0))
    return total / jnp.maximum(weights.sum(), 1e-12) + net.regulariser(params)


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


# --------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True, eq=False)
class CrowdNet:
    """Trained networks, one per seed (parameters stacked on a leading seed axis).

    Attributes:
        model: ``"crowdlayer"``, ``"anno_reg"``, ``"wdn"`` or ``"classifier"`` (MV-DL / DS-DL).
        params: the stacked Flax parameters.
        seeds: the seeds.
        config: the :class:`Config`.
        n_classes, n_workers: sizes.
        center, scale: the feature standardisation learnt on the training items.
        labels, mask: (S, N, M) the annotations trained on at the end (observed + pseudo), ``None``
            for MV-DL / DS-DL.
        history: per-iteration arrays (S, T + 1) of self-training: ``ratio`` (R of the combined
            annotations), ``n_pseudo``, ``pseudo_accuracy`` (pseudo-annotations equal to the
            item's gold label, when gold is known), ``accuracy`` (on ``eval_data``, if given);
            ``loss`` (S, epochs) of the last round.
    """

    model: str
    params: Any
    seeds: tuple
    config: Config
    n_classes: int
    n_workers: int
    center: np.ndarray
    scale: np.ndarray
    labels: np.ndarray | None = None
    mask: np.ndarray | None = None
    history: dict = dataclasses.field(default_factory=dict)

    @property
    def _net(self) -> _Net:
        return _net(self.model, self.n_classes, self.n_workers, self.config)

    def _x(self, features) -> jax.Array:
        f = np.asarray(features, np.float32)
        if f.ndim != 2 or f.shape[1] != len(self.center):
            raise ValueError(f"features must have shape (n, {len(self.center)}), got {f.shape}")
        return jnp.asarray((f - self.center) / self.scale)

    def predict_proba(self, features) -> np.ndarray:
        """(S, n, K) ``p(y | x)`` of the true-label classifier, per seed."""
        return np.asarray(jnp.exp(_class_log_probs(self._net, self.params, self._x(features))))

    def predict(self, features) -> np.ndarray:
        """(S, n) predicted class codes."""
        return self.predict_proba(features).argmax(-1)

    def accuracy(self, features, gold) -> np.ndarray:
        """(S,) accuracy on items with known gold (``gold >= 0``)."""
        gold = np.asarray(gold)
        has = gold >= 0
        return (self.predict(features)[:, has] == gold[has]).mean(-1)

    def annotator_probs(self, features) -> np.ndarray:
        """(S, n, M, K) ``p(y_hat^k | x)``: each worker's predicted annotation."""
        return np.asarray(jnp.exp(_annotator_log_probs(self._net, self.params,
                                                       self._x(features))))

    def confusions(self) -> np.ndarray:
        """(S, M, K, K) the worker confusions the parameters define: Crowdlayer ``softmax(W_k)``
        rows, Anno-Reg ``A_k``.  WDN has none in its parameters: use :meth:`worker_confusions`."""
        if self.model == "crowdlayer":
            return np.asarray(jax.vmap(networks.Crowdlayer.confusions)(self.params))
        if self.model == "anno_reg":
            return np.asarray(jax.vmap(networks.AnnoReg.confusions)(self.params))
        raise ValueError(f"{self.model} has no confusion parameters; use worker_confusions()")

    def worker_confusions(self, features, true_labels) -> np.ndarray:
        """(S, M, K, K) the model's confusions read off its predictions: row ``c`` of worker
        ``k`` is the mean of ``p(y_hat^k | x_i)`` over the items with ``true_labels == c``
        (any base model; rows of absent classes are NaN)."""
        probs = self.annotator_probs(features)
        true_labels = np.asarray(true_labels)
        onehot = np.eye(self.n_classes)[np.where(true_labels >= 0, true_labels, 0)]
        onehot *= (true_labels >= 0)[:, None]
        sums = np.einsum("nc,snml->smcl", onehot, probs)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / onehot.sum(0)[None, None, :, None]


@partial(jax.jit, static_argnums=0)
def _class_log_probs(net, params, x):
    return jax.vmap(lambda p: net.apply(p, x)[0])(params)


@partial(jax.jit, static_argnums=0)
def _annotator_log_probs(net, params, x):
    return jax.vmap(lambda p: net.apply(p, x)[1])(params)


# --------------------------------------------------------------------------- training
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
    f = annotations.features.astype(np.float32)
    center, scale = f.mean(0), f.std(0) + 1e-6
    return jnp.asarray((f - center) / scale), center, scale


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


def train_base(annotations: Annotations, model: str = "crowdlayer", loss: str = "ce",
               seeds=1, config: Config | None = None) -> CrowdNet:
    """Train a deep crowdsourcing base model on the observed annotations.

    Args:
        annotations: with item ``features`` attached.
        model: ``"crowdlayer"``, ``"anno_reg"`` or ``"wdn"``.
        loss: ``"ce"`` (the plain model), or an imbalance baseline ``"resampling"``,
            ``"reweighting"``, ``"focal"``.
        seeds: a count (seeds 0..n-1) or a list of ints; the seeds are trained side by side (vmap).
        config: :class:`Config` (default: the paper's LabelMe settings).

    Returns:
        a :class:`CrowdNet`.
    """
    cfg = _check(model, loss, config)
    seeds = _seeds(seeds)
    labels, mask = dense_annotations(annotations)
    net, params, _, values, _, center, scale = _fit(annotations, model, loss, seeds, cfg,
                                                    labels, mask)
    return CrowdNet(model, params, seeds, cfg, annotations.n_classes, labels.shape[1], center,
                    scale, np.broadcast_to(labels, (len(seeds),) + labels.shape),
                    np.broadcast_to(mask, (len(seeds),) + mask.shape),
                    {"loss": np.asarray(values)})


def train_aggregated(annotations: Annotations, method: str = "dawid_skene", seeds=1,
                     config: Config | None = None, soft: bool = False, **fit_options) -> CrowdNet:
    """MV-DL / DS-DL: aggregate the annotations with :func:`crowdinfer.fit` (``method`` =
    ``"majority_vote"`` or ``"dawid_skene"``), then train the classifier on the aggregated labels
    of the annotated items (hard labels; ``soft=True`` trains on the posterior probabilities).
    ``fit_options`` go to :func:`crowdinfer.fit`."""
    from .fit import fit

    if method not in AGGREGATIONS:
        raise ValueError(f"method must be one of {AGGREGATIONS}, got {method!r}")
    cfg = _check("crowdlayer", "ce", config)
    seeds = _seeds(seeds)
    x, center, scale = _features(annotations, "train_aggregated")
    probs = np.asarray(fit(annotations, model=method, **fit_options).label_probs)
    annotated = np.bincount(annotations.item, minlength=annotations.n_items) > 0
    net = _net("classifier", annotations.n_classes, 1, cfg)
    if soft:  # a soft target = K weighted one-worker "annotations", one per class
        k = annotations.n_classes
        labels = np.broadcast_to(np.arange(k, dtype=np.int32), probs.shape).copy()
        weights = (probs * annotated[:, None]).astype(np.float32)
        net = _net("soft_classifier", k, k, cfg)
    else:
        labels = probs.argmax(-1).astype(np.int32)[:, None]
        weights = annotated[:, None].astype(np.float32)
    s = len(seeds)
    params, _, values = _init_and_train(
        net, cfg, "ce", cfg.epochs, _seed_keys(seeds), x,
        jnp.asarray(np.broadcast_to(labels, (s,) + labels.shape)),
        jnp.asarray(np.broadcast_to(weights, (s,) + weights.shape)))
    return CrowdNet("classifier", params, seeds, cfg, annotations.n_classes, 1, center, scale,
                    history={"loss": np.asarray(values)})


def self_train(annotations: Annotations, model: str = "crowdlayer", selection: str = "dasc",
               n_select: int = 1000, iterations: int = 5, seeds=1,
               config: Config | None = None, loss: str = "ce", eval_data=None,
               reinit: bool = False) -> CrowdNet:
    """Self-training of a base model with pseudo-annotations (Algorithm 1 of seed 004).

    Trains the base model on the observed annotations (iteration 0: the plain ``loss`` model), then
    ``iterations`` times: predicts every worker's annotation on every free cell, selects
    ``n_select`` of them by ``selection`` (``"dasc"``: eq. 2-4; ``"confidence"``: least entropy;
    ``"random"``), adds them to the training annotations and trains ``config.epochs`` more epochs
    (continuing from the current network, or from a fresh initialisation with ``reinit=True``).

    Args:
        eval_data: optional ``(features, gold)`` whose accuracy is recorded at every iteration.

    Returns:
        a :class:`CrowdNet` whose ``history`` holds ``ratio``, ``n_pseudo``, ``pseudo_accuracy``
        and (with ``eval_data``) ``accuracy``, each (S, iterations + 1); ``labels``/``mask`` are
        the final combined annotations per seed.
    """
    cfg = _check(model, loss, config)
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if int(n_select) < 1 or int(iterations) < 0:
        raise ValueError("need n_select >= 1 and iterations >= 0")
    seeds = _seeds(seeds)
    s, k = len(seeds), annotations.n_classes
    labels0, mask0 = dense_annotations(annotations)
    net, params, state, _, x, center, scale = _fit(annotations, model, loss, seeds, cfg,
                                                   labels0, mask0)
    labels = jnp.asarray(np.broadcast_to(labels0, (s,) + labels0.shape))
    mask = jnp.asarray(np.broadcast_to(mask0, (s,) + mask0.shape))
    gold = None if annotations.gold is None else jnp.asarray(annotations.gold)
    hist = {"ratio": [], "n_pseudo": [], "pseudo_accuracy": [], "accuracy": []}
    if eval_data is not None:
        ex = (np.asarray(eval_data[0], np.float32) - center) / scale
        eg = np.asarray(eval_data[1])

    def record():
        hist["ratio"].append(np.asarray(imbalance_ratio(labels, mask, k)))
        pseudo = mask & ~jnp.asarray(mask0)[None]
        hist["n_pseudo"].append(np.asarray(pseudo.sum((1, 2))))
        if gold is not None:
            good = pseudo & (labels == gold[None, :, None]) & (gold[None, :, None] >= 0)
            hist["pseudo_accuracy"].append(
                np.asarray(good.sum((1, 2)) / jnp.maximum(pseudo.sum((1, 2)), 1)))
        if eval_data is not None:
            pred = np.asarray(_class_log_probs(net, params, jnp.asarray(ex))).argmax(-1)
            hist["accuracy"].append((pred[:, eg >= 0] == eg[eg >= 0]).mean(-1))

    select = jax.jit(jax.vmap(partial(select_pseudo_annotations, n_select=int(n_select),
                                      rule=selection)))
    record()
    for t in range(1, int(iterations) + 1):
        logp = _annotator_log_probs(net, params, x)
        chosen, pseudo = select(_seed_keys(seeds, 2 * t), logp, mask)
        labels = jnp.where(chosen, pseudo, labels)
        mask = mask | chosen
        weights = jnp.asarray(np.stack([
            loss_weights(np.asarray(labels[j]), np.asarray(mask[j]), k, loss, seeds[j] + 7919 * t)
            for j in range(s)]))
        keys = _seed_keys(seeds, 2 * t + 1)
        if reinit:
            params, state, values = _init_and_train(net, cfg, loss, cfg.epochs, keys, x,
                                                    labels, weights)
        else:
            params, state, values = _continue_training(net, cfg, loss, cfg.epochs, params, state,
                                                       keys, x, labels, weights)
        record()
    history = {name: np.stack(v, axis=1) for name, v in hist.items() if v}
    return CrowdNet(model, params, seeds, cfg, k, labels0.shape[1], center, scale,
                    np.asarray(labels), np.asarray(mask), history)
