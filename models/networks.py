"""Flax modules: the classifier behind the learned label prior ``p(y_i | x_i, theta)``, and the
deep crowdsourcing base models of DASC.

Seed 000 (sec. 3.3) uses a 2-layer MLP on fixed features; :class:`MLP` is that network.
Seed 004 (sec. 3.3): :class:`Crowdlayer`, :class:`AnnoReg` and :class:`WDN` on a :class:`Backbone`
(see the section below; trained by :mod:`crowdinfer.dasc`).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Fully connected ReLU network; returns class logits."""

    n_classes: int
    hidden: Sequence[int] = (128,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.n_classes)(x)


# ----------------------------------------------------------------------------------------------
# Deep crowdsourcing base models of seed 004 (DASC, sec. 3.3).
#
# Every module maps a batch of item features x (B, d) to the pair
#     (class_log_probs (B, K),  annotator_log_probs (B, M, K))
# -- log p(y | x), the true-label classifier used at test time, and log p(y_hat^k | x), each
# worker's predicted annotation, the quantity the crowd loss (eq. 6 / 9) and the pseudo-annotations
# of self-training (eq. 2) are computed from.  The backbone on fixed features is an MLP with one
# ReLU hidden layer and dropout (the classifier of seed 004 sec. 4.1: 128 units, 50% dropout).


class Backbone(nn.Module):
    """Shared feature extractor ``h(x)``: Dense(hidden) -> ReLU -> dropout."""

    hidden: int = 128
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dropout(self.dropout, deterministic=not train)(h)


class Classifier(nn.Module):
    """The true-label classifier ``f(x)``: :class:`Backbone` then Dense(K); returns logits.

    Alone it is the network of MV-DL / DS-DL (trained on aggregated labels)."""

    n_classes: int
    hidden: int = 128
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = Backbone(self.hidden, self.dropout, name="backbone")(x, train)
        return nn.Dense(self.n_classes, name="out")(h)


def _identity_maps(n_workers: int, n_classes: int, scale: float = 1.0):
    def init(key, shape=None, dtype=jnp.float32):
        del key, shape
        return scale * jnp.broadcast_to(jnp.eye(n_classes, dtype=dtype),
                                        (n_workers, n_classes, n_classes))
    return init


class Crowdlayer(nn.Module):
    """Crowdlayer (Rodrigues & Pereira 2018; seed 004 eq. 8): one real K x K matrix per worker,

        p(y_hat^k | x) = softmax(f(x) . W_k),   f(x) = softmax(classifier logits),

    ``W_k`` initialised to the identity (param ``worker_maps``, (M, K, K)); ``W_k[c, l]`` is read
    as "class c is annotated l by worker k", ``softmax(W_k[c])`` the worker's confusion row c."""

    n_classes: int
    n_workers: int
    hidden: int = 128
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        logits = Classifier(self.n_classes, self.hidden, self.dropout, name="classifier")(x, train)
        w = self.param("worker_maps", _identity_maps(self.n_workers, self.n_classes))
        f = jax.nn.softmax(logits, axis=-1)
        ann = jnp.einsum("bc,mcl->bml", f, w)
        return jax.nn.log_softmax(logits, -1), jax.nn.log_softmax(ann, -1)

    @staticmethod
    def confusions(params) -> jax.Array:
        """(M, K, K) ``p(annotation l | class c)`` for a one-hot f(x): the row softmax of W_k."""
        return jax.nn.softmax(params["worker_maps"], axis=-1)


class AnnoReg(nn.Module):
    """Anno-Reg (Tanno et al. 2019; seed 004 eq. 10-11): the Crowdlayer architecture with each
    ``W_k`` a confusion matrix, ``A_k = softmax(W_k)`` normalised over the annotated class,

        p(y_hat^k = l | x) = sum_c f_c(x) A_k[c, l],

    (rows here are true classes, so the paper's column softmax over the annotation index is a
    softmax over the last axis).  The trace regulariser ``sum_k tr(A_k)`` of eq. 11 is
    :meth:`trace`.  ``W_k`` starts at ``init_scale * I`` (diagonal-dominant confusions)."""

    n_classes: int
    n_workers: int
    hidden: int = 128
    dropout: float = 0.5
    init_scale: float = 2.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        logits = Classifier(self.n_classes, self.hidden, self.dropout, name="classifier")(x, train)
        w = self.param("confusion_logits",
                       _identity_maps(self.n_workers, self.n_classes, self.init_scale))
        f = jax.nn.softmax(logits, axis=-1)
        ann = jnp.einsum("bc,mcl->bml", f, jax.nn.softmax(w, axis=-1))
        return jax.nn.log_softmax(logits, -1), jnp.log(jnp.maximum(ann, 1e-30))

    @staticmethod
    def confusions(params) -> jax.Array:
        """(M, K, K) ``A_k[c, l] = p(annotation l | class c)``."""
        return jax.nn.softmax(params["confusion_logits"], axis=-1)

    @staticmethod
    def trace(params) -> jax.Array:
        """``sum_k tr(A_k)`` (eq. 11)."""
        return jnp.trace(AnnoReg.confusions(params), axis1=-2, axis2=-1).sum()


class WDN(nn.Module):
    """Weighted Doctor Net (Guan et al. 2018; seed 004 eq. 5-7): a shared feature extractor
    ``h(x)`` and one linear head per worker,

        p(y_hat^k | x) = softmax(g_k(h(x))),

    and learned worker weights ``w = softmax(worker_weights)`` (param, (M,)) that average the heads
    into the true-label prediction ``p(y | x) = sum_k w_k p(y_hat^k | x)`` (eq. 7; the softmax keeps
    the average a distribution)."""

    n_classes: int
    n_workers: int
    hidden: int = 128
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        h = Backbone(self.hidden, self.dropout, name="backbone")(x, train)
        # the M heads as one (hidden, M * K) matrix product: one GEMM instead of M small ones
        init = nn.initializers.lecun_normal(in_axis=0, out_axis=2, batch_axis=(1,))
        kernel = self.param("head_kernel", init,
                            (self.hidden, self.n_workers, self.n_classes))
        bias = self.param("head_bias", nn.initializers.zeros, (self.n_workers, self.n_classes))
        weights = self.param("worker_weights", nn.initializers.zeros, (self.n_workers,))
        heads = jnp.dot(h, kernel.reshape(self.hidden, -1)).reshape(-1, self.n_workers,
                                                                    self.n_classes)
        ann = jax.nn.log_softmax(heads + bias, -1)
        log_w = jax.nn.log_softmax(weights)
        cls = jax.nn.logsumexp(ann + log_w[None, :, None], axis=1)
        return cls, ann
