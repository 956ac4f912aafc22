"""The base models as pure functions (:class:`_Net`) and the masked crowd loss (seed 004
eq. 6 / 9)."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..models import networks
from .config import BASE_MODELS, Config


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
