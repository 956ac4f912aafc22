"""Trained networks, one per seed: :class:`CrowdNet`."""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..models import networks
from .config import Config
from .nets import _Net, _net


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
