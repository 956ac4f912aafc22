"""MACE: multi-annotator competence estimation (Hovy, Berg-Kirkpatrick, Vaswani & Hovy 2013).

Each worker either knows the answer or spams.  Generative story, with the true label and the
spam indicator marginalised::

    pi           ~ Dirichlet(a)                        class proportions (the paper: uniform, fixed)
    theta_j      ~ Beta(knowing, spamming)             worker j's probability of *not* spamming
    xi_j         ~ Dirichlet(strategy)                 worker j's answers when spamming
    y_i          ~ Categorical(pi)
    s_n          ~ Bernoulli(1 - theta_{w_n})           annotation n is spam
    z_n          = y_{i_n} if not s_n, else ~ Categorical(xi_{w_n})

so worker ``j``'s confusion is ``theta_j * I + (1 - theta_j) * 1 xi_j^T``: a Dawid-Skene confusion
whose off-diagonal rows are all the same spam distribution.

``hyper``: ``knowing``, ``spamming`` (Beta concentrations, scalars), ``strategy`` (Dirichlet
concentration, scalar or (K,)), and ``class_concentration`` or ``prior_logits`` (the NumPyro
model's dict; the parts ``map_part(hyper)`` / ``vb_part(hyper)`` carry :class:`MaceHyper`, their
states are :class:`SpamState` / :class:`SpamAlphaState`).

Inference parts (both read the spam posterior from the previous parameters, so both are exact
coordinate ascent on their objective):

* ``MAP`` (EM): ``theta_j = (E[knowing answers] + knowing - 1) / (n_j + knowing + spamming - 2)``,
  ``xi_j`` the mode of ``Dirichlet(strategy + E[spam answers per class])``.  The objective is the
  log joint density of :func:`model` (needs concentrations >= 1).
* ``VB`` (the paper's variational Bayes, default Beta(0.5, 0.5) and Dirichlet(10) as in the
  original MACE program): ``q(theta_j) = Beta(knowing + E[knowing], spamming + E[spam])``,
  ``q(xi_j) = Dirichlet(strategy + E[spam answers per class])``, the E-step with
  ``exp E[log theta]`` etc.; the objective is the evidence lower bound.

An annotation's responsibility of "knowing" when it says ``l`` and the truth is ``l`` is
``r[j, l] = theta_j / (theta_j + (1 - theta_j) xi_j[l])`` (never knowing when the truth differs), so
both updates come from the expected confusion counts ``C[j, k, l]`` of the shared loop.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions.kl import kl_divergence

from crowdinfer import options as opts
from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import expected_confusion_counts, gather_log_confusion

from . import class_prior
from .dawid_skene import observe_confusion
from .priors import TINY, dirichlet_map

__all__ = ["DEFAULTS", "MAP", "VB", "MaceHyper", "MaceOptions", "SpamAlphaState", "SpamState",
           "confusion", "map_part", "model", "runner", "vb_part"]


class MaceHyper(NamedTuple):
    knowing: jax.Array  # Beta concentrations of "knows the answer" and "spams"
    spamming: jax.Array
    strategy: jax.Array  # Dirichlet concentration of the spam distribution, scalar or (K,)


class SpamState(NamedTuple):
    knowing: jax.Array  # (M, 2) (theta_j, 1 - theta_j)
    spam: jax.Array  # (M, K) xi_j


class SpamAlphaState(NamedTuple):
    knowing_alpha: jax.Array  # (M, 2) q(theta_j) as a two-class Dirichlet
    spam_alpha: jax.Array  # (M, K) q(xi_j)

# the paper's VB priors (and those of the original MACE program); EM needs concentrations >= 1
DEFAULTS = {
    "vb": {"knowing": 0.5, "spamming": 0.5, "strategy": 10.0},
    "em": {"knowing": 2.0, "spamming": 2.0, "strategy": 2.0},
}


def _priors(hyper, n_workers: int, n_classes: int):
    if not isinstance(hyper, dict):
        hyper = hyper._asdict()
    strategy = jnp.broadcast_to(jnp.asarray(hyper["strategy"], jnp.float32), (n_workers, n_classes))
    knowing = jnp.stack([jnp.asarray(hyper["knowing"]), jnp.asarray(hyper["spamming"])]).astype(
        jnp.float32)
    return (dist.Dirichlet(jnp.broadcast_to(knowing, (n_workers, 2)), validate_args=False),
            dist.Dirichlet(strategy, validate_args=False))


def confusion(knowing: jax.Array, spam: jax.Array) -> jax.Array:
    """``theta[j] = knowing_j I + (1 - knowing_j) 1 spam_j^T``, shape (M, K, K)."""
    k = spam.shape[-1]
    return (knowing[:, None, None] * jnp.eye(k)
            + (1.0 - knowing)[:, None, None] * spam[:, None, :])


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true label and spam indicators marginalised).  ``knowing`` is sampled as
    the pair ``(theta_j, 1 - theta_j)`` (a two-class Dirichlet, i.e. the Beta)."""
    knowing_prior, strategy_prior = _priors(hyper, data.n_workers, data.n_classes)
    with numpyro.plate("worker", data.n_workers):
        knowing = numpyro.sample("knowing", knowing_prior)
        spam = numpyro.sample("spam", strategy_prior)
    observe_confusion(data, confusion(knowing[:, 0], spam), hyper)


def _split_counts(data, q, r):
    """Expected (knowing, spamming) answer counts (M, 2) and spam answers per class (M, K), from the
    label posterior and the responsibilities ``r[j, l]`` of "knowing" for an answer ``l`` that
    equals the truth (from the previous parameters)."""
    counts = expected_confusion_counts(data, q)  # (M, K, K)
    agree = jnp.diagonal(counts, axis1=1, axis2=2)  # answers equal to the truth, by class
    known = (agree * r).sum(-1)
    spam_by_class = counts.sum(1) - agree * r
    return jnp.stack([known, spam_by_class.sum(-1)], -1), spam_by_class


def _responsibility(knowing, spam_weight, spam):
    """``r[j, l] = knowing_j / (knowing_j + spam_weight_j * spam[j, l])``."""
    return knowing[:, None] / jnp.maximum(knowing[:, None] + spam_weight[:, None] * spam, TINY)


def _map_update(data, q, hyper, state):
    theta = state.knowing[:, 0]
    pair, spam_by_class = _split_counts(data, q, _responsibility(theta, 1.0 - theta, state.spam))
    knowing_prior, strategy_prior = _priors(hyper, data.n_workers, data.n_classes)
    knowing = dirichlet_map(pair, knowing_prior.concentration - 1.0)
    knowing = jnp.clip(knowing, 1e-6, 1.0 - 1e-6)
    return SpamState(knowing / knowing.sum(-1, keepdims=True),
                     dirichlet_map(spam_by_class, strategy_prior.concentration - 1.0))


def _map_objective(state, hyper):
    m, k = state.spam.shape
    knowing_prior, strategy_prior = _priors(hyper, m, k)
    return knowing_prior.log_prob(state.knowing).sum() + strategy_prior.log_prob(
        state.spam).sum()


MAP = WorkerPart(
    hyper=None,
    state=SpamState,
    init=lambda data, hyper: SpamState(
        jnp.tile(jnp.array([0.7, 0.3]), (data.n_workers, 1)),
        jnp.full((data.n_workers, data.n_classes), 1.0 / data.n_classes)),
    update=_map_update,
    log_lik=lambda data, state: gather_log_confusion(
        data, jnp.log(confusion(state.knowing[:, 0], state.spam))),
    objective=_map_objective,
    confusion=lambda state, n_classes: confusion(state.knowing[:, 0], state.spam),
)


def _expected(state):
    """``exp E[log theta]``, ``exp E[log (1 - theta)]``, ``exp E[log xi]`` under q."""
    pair = class_prior.dirichlet_expected_log(state.knowing_alpha)
    return jnp.exp(pair[:, 0]), jnp.exp(pair[:, 1]), jnp.exp(
        class_prior.dirichlet_expected_log(state.spam_alpha))


def _vb_log_lik(data, state):
    know, spam_w, xi = _expected(state)
    k = xi.shape[-1]
    tilde = know[:, None, None] * jnp.eye(k) + spam_w[:, None, None] * xi[:, None, :]
    return gather_log_confusion(data, jnp.log(tilde))


def _vb_update(data, q, hyper, state):
    pair, spam_by_class = _split_counts(data, q, _responsibility(*_expected(state)))
    knowing_prior, strategy_prior = _priors(hyper, data.n_workers, data.n_classes)
    return SpamAlphaState(knowing_prior.concentration + pair,
                          strategy_prior.concentration + spam_by_class)


def _vb_objective(state, hyper):
    m, k = state.spam_alpha.shape
    knowing_prior, strategy_prior = _priors(hyper, m, k)
    return -(kl_divergence(dist.Dirichlet(state.knowing_alpha), knowing_prior).sum()
             + kl_divergence(dist.Dirichlet(state.spam_alpha), strategy_prior).sum())


def _vb_confusion(state, n_classes):
    pair = state.knowing_alpha / state.knowing_alpha.sum(-1, keepdims=True)
    spam = state.spam_alpha / state.spam_alpha.sum(-1, keepdims=True)
    return confusion(pair[:, 0], spam)


def _vb_init(data, hyper):
    knowing_prior, strategy_prior = _priors(hyper, data.n_workers, data.n_classes)
    return SpamAlphaState(knowing_prior.concentration + jnp.array([4.0, 1.0]),
                          strategy_prior.concentration)


VB = WorkerPart(hyper=None, state=SpamAlphaState, init=_vb_init, update=_vb_update,
                log_lik=_vb_log_lik, objective=_vb_objective, confusion=_vb_confusion)


def _hyper(knowing, spamming, strategy) -> MaceHyper:
    return MaceHyper(jnp.float32(knowing), jnp.float32(spamming),
                     jnp.asarray(strategy, jnp.float32))


def map_part(knowing=2.0, spamming=2.0, strategy=2.0) -> WorkerPart:
    """The EM part with its Beta(knowing, spamming) and Dirichlet(strategy) priors."""
    return MAP.with_hyper(_hyper(knowing, spamming, strategy))


def vb_part(knowing=0.5, spamming=0.5, strategy=10.0) -> WorkerPart:
    """The VB part (the paper's defaults)."""
    return VB.with_hyper(_hyper(knowing, spamming, strategy))


def runner(method: str):
    """The ``fit`` runner for ``method`` ("vb" or "em").  Options: ``knowing``, ``spamming``,
    ``strategy`` (prior concentrations, defaults in ``DEFAULTS``), ``class_prior`` (pseudo-count:
    learn the class proportions; default ``None``, the paper's fixed uniform prior),
    ``prior_logits`` and the loop options (``max_iter``, ``tol``, ``stop``, ``progress``)."""
    def run_mace(annotations, *, knowing=None, spamming=None, strategy=None, class_prior=None,
                 prior_logits=None, **options):
        from crowdinfer.inference.loop import Spec
        from crowdinfer.runners import label_prior_part, run_loop

        prior = {**DEFAULTS[method]}
        for name, value in (("knowing", knowing), ("spamming", spamming), ("strategy", strategy)):
            if value is not None:
                prior[name] = float(value)
        low = 1.0 if method == "em" else 0.0
        for name, value in prior.items():
            if not np.isfinite(value) or value < low or (low == 0.0 and value == 0.0):
                bound = ">= 1 (EM takes the posterior mode)" if method == "em" else "> 0"
                raise ValueError(f"mace/{method}: {name} must be a finite concentration {bound}, "
                                 f"got {value}")
        if class_prior is None and prior_logits is None:
            prior_logits = np.zeros((annotations.n_items, annotations.n_classes), np.float32)
        offset = 1.0 if method == "em" else 0.0
        classes = label_prior_part(annotations, method, offset + (class_prior or 1.0),
                                   prior_logits)
        workers = {"vb": vb_part, "em": map_part}[method](**prior)
        return run_loop("mace", method, Spec(workers, classes), annotations,
                        opts.LoopOptions(**options), options={**prior, "class_prior": class_prior})

    return run_mace


@dataclasses.dataclass(frozen=True)
class MaceOptions(opts._Group):
    """MACE's priors (``None``: the engine's default in ``DEFAULTS``) and label prior."""

    knowing: float | None = opts._opt(None, opts.optional(opts.number(0.0, lo_open=True)))
    spamming: float | None = opts._opt(None, opts.optional(opts.number(0.0, lo_open=True)))
    strategy: float | None = opts._opt(None, opts.optional(opts.number(0.0, lo_open=True)))
    class_prior: float | None = opts._opt(None, opts.optional(opts.number(0.0)))
    prior_logits: Any = opts._opt(None, opts.optional(opts.finite_array))


for _method in ("vb", "em"):
    opts.register("mace", _method, MaceOptions, opts.LoopOptions)

#: What ``fit`` runs: its registration is the one line ``"mace"`` of
#: :data:`crowdinfer.options.REGISTRY` (module, engines, description).
RUNNERS = {"mace": {"vb": runner("vb"), "em": runner("em")}}
