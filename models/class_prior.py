"""The label prior ``p(y_i)`` of every model, as interchangeable parts of the inference loop.

:func:`part` chooses the part -- the one place where a model's label prior is decided:

* ``MAP`` -- class proportions ``pi ~ Dirichlet(a)``, point estimate (EM), the mode
  ``pi_k = (sum_i q_ik + a_k - 1) / (N + sum (a - 1))`` (needs ``a >= 1``); state
  :class:`ClassState` ``(class_prior)``.
* ``VB`` -- the same prior with a variational ``q(pi) = Dirichlet(alpha)``,
  ``alpha = a + sum_i q_i``; the E-step uses ``E[log pi]``; the objective is ``-KL``; state
  :class:`ClassAlphaState` ``(class_alpha)``.
* ``FIXED`` -- a per-item prior ``log p(y_i | x_i)`` given as logits (:class:`FixedHyper`), from
  any outside model (seed 000 sec. 3.3: the classifier's prediction replaces ``p(y_i)``); no state.

The learned classifier prior (trained inside the loop) is in :mod:`crowdinfer.models.learned_prior`.
:class:`ProportionsHyper` holds ``a`` (``class_concentration``).

Gold labels (semi-supervised inference): ``gold_offset`` (N, K) in a part's hyperparameters, from
:func:`gold_offset`, is added to any part's ``log p(y_i)`` -- 0 for the gold class of a gold item
(and for every class of the other items), ``GOLD_LOG_PENALTY`` for the other classes of a gold
item -- so that the E-step clamps gold items to their gold label and every log density becomes that
of the annotations *and* the gold labels.  :func:`with_gold` adds it, :func:`sample_log_prior` adds
it in NumPyro models (whose ``hyper`` is a dict, :func:`crowdinfer.inference.loop.model_hyper`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import digamma
from numpyro.distributions.kl import kl_divergence

from crowdinfer.inference.loop import ClassPart

from .priors import dirichlet_map

__all__ = ["ProportionsHyper", "FixedHyper", "ClassState", "ClassAlphaState", "NoState", "MAP",
           "VB", "FIXED", "part", "gold_offset", "with_gold", "clamp_probs", "sample_log_prior",
           "dirichlet_expected_log", "distribution", "gold_array"]


class ProportionsHyper(NamedTuple):
    class_concentration: jax.Array  # a, (K,)
    gold_offset: jax.Array | None = None  # (N, K), see gold_offset


class FixedHyper(NamedTuple):
    prior_logits: jax.Array  # (N, K) fixed log p(y_i | x_i) up to a constant
    gold_offset: jax.Array | None = None
    class_concentration: jax.Array | None = None  # recorded in the options only: not used


class ClassState(NamedTuple):
    class_prior: jax.Array  # (K,) the MAP class proportions


class ClassAlphaState(NamedTuple):
    class_alpha: jax.Array  # (K,) q(pi) = Dirichlet(class_alpha)


class NoState(NamedTuple):
    """The state of a part with nothing to learn."""


def distribution(hyper) -> dist.Dirichlet:
    conc = hyper["class_concentration"] if isinstance(hyper, dict) else hyper.class_concentration
    return dist.Dirichlet(jnp.asarray(conc), validate_args=False)


GOLD_LOG_PENALTY = -1e6  # log p(y_i = k) added for the non-gold classes of a gold item


def gold_offset(gold: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) float32: 0, except ``GOLD_LOG_PENALTY`` for the non-gold classes of items whose
    gold code is ``>= 0``."""
    gold = np.asarray(gold)
    offset = np.zeros((len(gold), n_classes), np.float32)
    has = gold >= 0
    offset[has] = GOLD_LOG_PENALTY
    offset[np.flatnonzero(has), gold[has]] = 0.0
    return offset


def gold_array(gold, n_classes: int):
    """The gold offset of ``gold`` codes (``None``, or no code >= 0: ``None``)."""
    if gold is None or not (np.asarray(gold) >= 0).any():
        return None
    return jnp.asarray(gold_offset(gold, n_classes))


def with_gold(log_prior, offset):
    """``log_prior`` ((K,) or (N, K)) plus the gold ``offset`` (``None``: unchanged)."""
    return log_prior if offset is None else log_prior + offset


def clamp_probs(probs, offset):
    """Label probabilities (N, K) with gold items set to their gold label (the loop's start);
    ``offset`` is a gold offset or ``None``."""
    if offset is None:
        return probs
    is_gold = jnp.any(offset < 0, axis=-1, keepdims=True)
    return jnp.where(is_gold, (offset == 0).astype(probs.dtype), probs)


def sample_log_prior(hyper: dict):
    """Inside a NumPyro model: the log label prior, (K,) or (N, K), sampling ``class_prior`` unless
    ``hyper`` carries ``prior_logits``; gold items clamped when ``hyper`` has ``gold_offset``."""
    if "prior_logits" in hyper:
        return with_gold(jax.nn.log_softmax(hyper["prior_logits"], axis=-1),
                         hyper.get("gold_offset"))
    return with_gold(jnp.log(numpyro.sample("class_prior", distribution(hyper))),
                     hyper.get("gold_offset"))


def dirichlet_expected_log(alpha):
    """``E[log p]`` under ``Dirichlet(alpha)`` along the last axis."""
    return digamma(alpha) - digamma(alpha.sum(-1, keepdims=True))


MAP = ClassPart(
    hyper=None,
    state=ClassState,
    init=lambda data, hyper: ClassState(jnp.full((data.n_classes,), 1.0 / data.n_classes)),
    update=lambda data, q, hyper, state: ClassState(
        dirichlet_map(q.sum(0), hyper.class_concentration - 1.0)),
    log_prior=lambda data, state, hyper: with_gold(jnp.log(state.class_prior), hyper.gold_offset),
    objective=lambda state, hyper: distribution(hyper).log_prob(state.class_prior),
    proportions=lambda state: state.class_prior,
)

VB = ClassPart(
    hyper=None,
    state=ClassAlphaState,
    init=lambda data, hyper: ClassAlphaState(jnp.asarray(hyper.class_concentration)),
    update=lambda data, q, hyper, state: ClassAlphaState(hyper.class_concentration + q.sum(0)),
    log_prior=lambda data, state, hyper: with_gold(dirichlet_expected_log(state.class_alpha),
                                                   hyper.gold_offset),
    objective=lambda state, hyper: -kl_divergence(
        dist.Dirichlet(state.class_alpha), distribution(hyper)),
    proportions=lambda state: state.class_alpha / state.class_alpha.sum(),
)

FIXED = ClassPart(
    hyper=None,
    state=NoState,
    init=lambda data, hyper: NoState(),
    update=lambda data, q, hyper, state: state,
    log_prior=lambda data, state, hyper: with_gold(
        jax.nn.log_softmax(hyper.prior_logits, axis=-1), hyper.gold_offset),
    objective=lambda state, hyper: jnp.zeros(()),
    proportions=lambda state: None,
)


def part(method: str, n_classes: int | None = None, *, concentration=1.0, logits=None,
         gold=None) -> ClassPart:
    """The label-prior part of a model run by ``method`` ("em" or "vb"), with its hyperparameters:
    ``FIXED`` with ``logits`` (N, K) if given, else the class proportions (``MAP`` for EM, ``VB``
    for VB) with Dirichlet concentration ``concentration`` (a number or (K,)).  ``gold``: (N,) gold
    codes (negative: none), clamped through the gold offset."""
    if logits is not None:
        logits = jnp.asarray(logits, jnp.float32)
        n_classes = logits.shape[-1]
    offset = None if gold is None else gold_array(gold, n_classes)
    conc = jnp.broadcast_to(jnp.asarray(concentration, jnp.float32), (n_classes,))
    if logits is not None:
        return FIXED.with_hyper(FixedHyper(logits, offset, conc))
    return {"em": MAP, "vb": VB}[method].with_hyper(ProportionsHyper(conc, offset))
