"""The DASC entry points: :func:`train_base`, :func:`train_aggregated` (MV-DL, DS-DL) and
:func:`self_train` (Algorithm 1)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..annotations import Annotations
from .config import AGGREGATIONS, SELECTIONS, Config
from .nets import _net
from .results import CrowdNet, _annotator_log_probs, _class_log_probs
from .selection import dense_annotations, imbalance_ratio, select_pseudo_annotations
from .training import (
    _check,
    _continue_training,
    _features,
    _fit,
    _init_and_train,
    _seed_keys,
    _seeds,
    loss_weights,
)


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
    from ..fit import fit

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
