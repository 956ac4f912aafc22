"""The label prior ``p(y_i)`` of every model, as interchangeable parts of the inference loop.

* ``MAP`` -- class proportions ``pi ~ Dirichlet(a)``, point estimate (EM), the mode
  ``pi_k = (sum_i q_ik + a_k - 1) / (N + sum (a - 1))`` (needs ``a >= 1``).
* ``VB`` -- the same prior with a variational ``q(pi) = Dirichlet(alpha)``,
  ``alpha = a + sum_i q_i``; the E-step uses ``E[log pi]``; the objective is ``-KL``.
* ``FIXED`` -- a per-item prior ``log p(y_i | x_i)`` given as logits (``hyper["prior_logits"]``),
  from any outside model (seed 000 sec. 3.3: the classifier's prediction replaces ``p(y_i)``).

The learned classifier prior (trained inside the loop) is in :mod:`crowdinfer.models.learned_prior`.
``hyper["class_concentration"]`` holds ``a``.

Gold labels (semi-supervised inference): ``hyper["gold_offset"]`` (N, K), from :func:`gold_offset`,
is added to any part's ``log p(y_i)`` -- 0 for the gold class of a gold item (and for every class
of the other items), ``GOLD_LOG_PENALTY`` for the other classes of a gold item -- so that the E-step
clamps gold items to their gold label and every log density becomes that of the annotations *and*
the gold labels.  :func:`clamp` wraps a part, :func:`sample_log_prior` adds it in NumPyro models.
"""
from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import digamma
from numpyro.distributions.kl import kl_divergence

from crowdinfer.inference.loop import ClassPart

from .priors import dirichlet_map


def distribution(hyper) -> dist.Dirichlet:
    return dist.Dirichlet(jnp.asarray(hyper["class_concentration"]), validate_args=False)


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


def with_gold(log_prior, hyper):
    """``log_prior`` ((K,) or (N, K)) plus the gold offset when ``hyper`` has one."""
    if "gold_offset" in hyper:
        return log_prior + hyper["gold_offset"]
    return log_prior


def clamp_probs(probs, hyper):
    """Label probabilities (N, K) with gold items set to their gold label (the loop's start)."""
    if "gold_offset" not in hyper:
        return probs
    offset = hyper["gold_offset"]
    is_gold = jnp.any(offset < 0, axis=-1, keepdims=True)
    return jnp.where(is_gold, (offset == 0).astype(probs.dtype), probs)


@lru_cache(maxsize=None)
def clamp(part: ClassPart) -> ClassPart:
    """``part`` with the gold offset added to its log prior (cached: one compiled loop per part)."""
    inner = part.log_prior
    return part._replace(
        log_prior=lambda data, params, hyper: with_gold(inner(data, params, hyper), hyper))


def sample_log_prior(hyper):
    """Inside a NumPyro model: the log label prior, (K,) or (N, K), sampling ``class_prior`` unless
    ``hyper`` carries ``prior_logits``; gold items clamped when ``hyper`` has ``gold_offset``."""
    if "prior_logits" in hyper:
        return with_gold(jax.nn.log_softmax(hyper["prior_logits"], axis=-1), hyper)
    return with_gold(jnp.log(numpyro.sample("class_prior", distribution(hyper))), hyper)


def dirichlet_expected_log(alpha):
    """``E[log p]`` under ``Dirichlet(alpha)`` along the last axis."""
    return digamma(alpha) - digamma(alpha.sum(-1, keepdims=True))


def _uniform(data, hyper):
    return jnp.full((data.n_classes,), 1.0 / data.n_classes)


MAP = ClassPart(
    init=lambda data, hyper: {"class_prior": _uniform(data, hyper)},
    update=lambda data, q, hyper, params: {
        "class_prior": dirichlet_map(q.sum(0), hyper["class_concentration"] - 1.0)
    },
    log_prior=lambda data, params, hyper: jnp.log(params["class_prior"]),
    objective=lambda params, hyper: distribution(hyper).log_prob(params["class_prior"]),
    proportions=lambda params: params["class_prior"],
)

VB = ClassPart(
    init=lambda data, hyper: {"class_alpha": jnp.asarray(hyper["class_concentration"])},
    update=lambda data, q, hyper, params: {"class_alpha": hyper["class_concentration"] + q.sum(0)},
    log_prior=lambda data, params, hyper: dirichlet_expected_log(params["class_alpha"]),
    objective=lambda params, hyper: -kl_divergence(
        dist.Dirichlet(params["class_alpha"]), distribution(hyper)
    ),
    proportions=lambda params: params["class_alpha"] / params["class_alpha"].sum(),
)

FIXED = ClassPart(
    init=lambda data, hyper: {},
    update=lambda data, q, hyper, params: {},
    log_prior=lambda data, params, hyper: jax.nn.log_softmax(hyper["prior_logits"], axis=-1),
    objective=lambda params, hyper: jnp.zeros(()),
    proportions=lambda params: None,
)
