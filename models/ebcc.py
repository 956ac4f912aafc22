"""EBCC: enhanced Bayesian classifier combination (Li, Yu, Stark & Zhang, "Exploiting worker
correlation for label aggregation in crowdsourcing", ICML 2019).

Each true class is a mixture of ``M`` subtypes, and each worker has one confusion row per
(class, subtype): workers who err alike on the same kind of item are modelled, which independent
confusions (Dawid-Skene, IBCC) cannot do.  Generative story, (class, subtype) marginalised::

    tau          ~ Dirichlet(alpha)                     class proportions
    pi_k         ~ Dirichlet(a_pi / M)                  subtype proportions within class k
    v[j, k, m]   ~ Dirichlet(beta_k)                    beta_k = b_v + (a_v - b_v) e_k
    (y_i, g_i)   ~ Categorical(tau_k pi_km)             class and subtype of item i
    z_n          ~ Categorical(v[w_n, y_{i_n}, g_{i_n}])

Inference: mean-field variational Bayes, ``q(tau) q(pi) q(v) prod_i q(y_i, g_i)``, run by the
shared loop (:mod:`crowdinfer.inference.loop`) with the ``K * M`` (class, subtype) pairs as its
"classes": ``VB`` is the worker part (``q(v[j, k, m]) = Dirichlet(beta_k + C[j, (k, m), :])``) and
``PRIOR`` the class part (``q(tau)``, ``q(pi)``).  The objective is the evidence lower bound; it
never decreases (tests).  The subtype responsibilities start from the soft majority vote split at
random over subtypes (see :func:`initial_probs`: random per subtype, not per item, so that
renaming workers, items or classes changes nothing); as in the authors' evaluation, ``restarts``
random starts (default 40, run side by side under one ``vmap``) are made and the one with the
highest ELBO is kept (ELBOs closer than the stopping rule resolves are ties, won by the
lowest-numbered start: :func:`choose`), then iterated on until its label posterior stands still
(:func:`polish`): near an optimum the ELBO is flat, so its stopping rule alone ends where float
noise says, and renaming workers, items or classes would move the output by up to ~1e-2.
Defaults are the authors': ``M = 10``, ``a_pi = 0.1``, ``a_v = 4``, ``b_v = 1``, the empirical
class prior ``alpha = `` the majority-vote class counts (``empirical_prior=True``; else ``alpha``
for every class), at most 500 iterations.  The authors report a mean accuracy of 0.843 over their
17 datasets.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import lax
from numpyro.distributions.kl import kl_divergence

from crowdinfer import options as opts
from crowdinfer.annotations import CrowdData
from crowdinfer.distributed import data_mesh
from crowdinfer.inference.loop import ClassPart, Spec, WorkerPart, run, step
from crowdinfer.ops import label_posterior, observe

from .class_prior import dirichlet_expected_log

__all__ = ["PRIOR", "VB", "EbccOptions", "PriorHyper", "PriorState", "SubtypeState",
           "WorkerHyper", "gather", "model", "runner", "spec", "subtype_counts"]


class WorkerHyper(NamedTuple):
    a_v: jax.Array  # beta_k = b_v + (a_v - b_v) e_k
    b_v: jax.Array
    subtypes: jax.Array  # a placeholder of length M (the number of subtypes, static by its shape)


class PriorHyper(NamedTuple):
    alpha: jax.Array  # class concentration (K,) or scalar
    a_pi: jax.Array  # subtype concentration a_pi / M
    subtypes: jax.Array
    gold_offset: jax.Array | None = None  # (N, K), see class_prior.gold_offset


class SubtypeState(NamedTuple):
    confusion_alpha: jax.Array  # (W, K*M, K) q(v)


class PriorState(NamedTuple):
    class_alpha: jax.Array  # (K,) q(tau)
    subtype_alpha: jax.Array  # (K, M) q(pi)


def _as_dict(hyper) -> dict:
    return hyper if isinstance(hyper, dict) else hyper._asdict()


def _beta(hyper, n_classes):
    """The prior rows ``beta_k`` (K, K): ``a_v`` on the diagonal, ``b_v`` elsewhere."""
    hyper = _as_dict(hyper)
    return jnp.eye(n_classes) * (hyper["a_v"] - hyper["b_v"]) + hyper["b_v"]


def _worker_prior(hyper, n_workers, n_classes, n_subtypes):
    beta = jnp.repeat(_beta(hyper, n_classes), n_subtypes, axis=0)  # row k*M + m is beta_k
    return dist.Dirichlet(jnp.broadcast_to(beta, (n_workers, n_classes * n_subtypes, n_classes)),
                          validate_args=False)


def _subtype_prior(hyper, n_classes, n_subtypes):
    hyper = _as_dict(hyper)
    return dist.Dirichlet(jnp.full((n_classes, n_subtypes), hyper["a_pi"] / n_subtypes),
                          validate_args=False)


def _class_prior(hyper, n_classes):
    hyper = _as_dict(hyper)
    return dist.Dirichlet(jnp.broadcast_to(hyper["alpha"], (n_classes,)), validate_args=False)


def gather(data: CrowdData, table: jax.Array) -> jax.Array:
    """``G[n, c] = table[w_n, c, z_n]`` for a (M, C, K) table: shape (capacity, C)."""
    m, c, k = table.shape
    return jnp.swapaxes(table, 1, 2).reshape(m * k, c)[data.worker_label]


def subtype_counts(data: CrowdData, probs: jax.Array) -> jax.Array:
    """``C[j, c, l] = sum_{n: w_n = j, z_n = l} q[i_n, c]`` for (N, C) probabilities: (M, C, K)."""
    q = probs[data.item] * data.weight[:, None]
    flat = jax.ops.segment_sum(q, data.worker_label, data.n_workers * data.n_classes)
    return jnp.swapaxes(flat.reshape(data.n_workers, data.n_classes, -1), 1, 2)


def _log_prior(log_tau, log_pi, hyper):
    """log p(y = k, g = m) flattened to (K*M,), gold items clamped to their class's subtypes."""
    k, m = log_pi.shape
    flat = (log_tau[:, None] + log_pi).reshape(k * m)
    offset = _as_dict(hyper).get("gold_offset")
    if offset is not None:
        return flat + jnp.repeat(offset, m, axis=-1)
    return flat


def model(data: CrowdData, hyper: dict):
    """The NumPyro model ((class, subtype) marginalised); ``hyper["subtypes"]`` is a placeholder
    array of length ``M``."""
    k, m = data.n_classes, _m(hyper)
    tau = numpyro.sample("class_prior", _class_prior(hyper, k))
    with numpyro.plate("class", k):
        pi = numpyro.sample("subtype_prior", _subtype_prior(hyper, k, m))
    with numpyro.plate("worker", data.n_workers, dim=-2), numpyro.plate("row", k * m, dim=-1):
        v = numpyro.sample("confusion", _worker_prior(hyper, data.n_workers, k, m))
    log_prior = _log_prior(jnp.log(tau), jnp.log(pi), hyper)
    _, evidence = label_posterior(data, gather(data, jnp.log(v)), log_prior)
    observe(evidence, hyper)


def _m(hyper) -> int:
    """The number of subtypes, static: the length of ``hyper["subtypes"]`` (a placeholder array,
    so that it survives ``jit``)."""
    return _as_dict(hyper)["subtypes"].shape[-1]


def _report_confusion(params, n_classes):
    """(M, K, K): each worker's confusion averaged over subtypes with the mean subtype weights
    (``params``: both parts' parameters, a dict)."""
    alpha = params["confusion_alpha"]
    w, km, k = alpha.shape
    mean = (alpha / alpha.sum(-1, keepdims=True)).reshape(w, k, km // k, k)
    pi = params["subtype_alpha"] / params["subtype_alpha"].sum(-1, keepdims=True)
    return jnp.einsum("jkml,km->jkl", mean, pi)


def _worker_kl(state, hyper):
    alpha = state.confusion_alpha
    w, km, k = alpha.shape
    return kl_divergence(dist.Dirichlet(alpha), _worker_prior(hyper, w, k, km // k)).sum()


VB = WorkerPart(
    hyper=None,
    state=SubtypeState,
    init=lambda data, hyper: SubtypeState(_worker_prior(
        hyper, data.n_workers, data.n_classes, _m(hyper)).concentration),
    update=lambda data, q, hyper, state: SubtypeState(_worker_prior(
        hyper, data.n_workers, data.n_classes, q.shape[-1] // data.n_classes).concentration
        + subtype_counts(data, q)),
    log_lik=lambda data, state: gather(data, dirichlet_expected_log(state.confusion_alpha)),
    objective=lambda state, hyper: -_worker_kl(state, hyper),
    # subtypes weighted alike (the runner reports them weighted by q(pi): _report_confusion)
    confusion=lambda state, n_classes: (state.confusion_alpha / state.confusion_alpha.sum(
        -1, keepdims=True)).reshape(state.confusion_alpha.shape[0], n_classes, -1,
                                    n_classes).mean(2),
)


def _prior_update(data, q, hyper, state):
    k = data.n_classes
    by_pair = q.sum(0).reshape(k, -1)  # (K, M) expected items per (class, subtype)
    return PriorState(hyper.alpha + by_pair.sum(-1), hyper.a_pi / by_pair.shape[-1] + by_pair)


def _prior_objective(state, hyper):
    k, m = state.subtype_alpha.shape
    return -(kl_divergence(dist.Dirichlet(state.class_alpha), _class_prior(hyper, k))
             + kl_divergence(dist.Dirichlet(state.subtype_alpha),
                             _subtype_prior(hyper, k, m)).sum())


PRIOR = ClassPart(
    hyper=None,
    state=PriorState,
    init=lambda data, hyper: PriorState(
        jnp.broadcast_to(hyper.alpha, (data.n_classes,)),
        jnp.full((data.n_classes, _m(hyper)), hyper.a_pi / _m(hyper))),
    update=_prior_update,
    log_prior=lambda data, state, hyper: _log_prior(
        dirichlet_expected_log(state.class_alpha),
        dirichlet_expected_log(state.subtype_alpha), hyper),
    objective=_prior_objective,
    proportions=lambda state: state.class_alpha / state.class_alpha.sum(),
)


def spec(hyper: dict) -> Spec:
    """The loop's parts with the hyperparameters of ``hyper`` (the NumPyro model's dict)."""
    subtypes = jnp.asarray(hyper["subtypes"])
    return Spec(VB.with_hyper(WorkerHyper(hyper["a_v"], hyper["b_v"], subtypes)),
                PRIOR.with_hyper(PriorHyper(hyper["alpha"], hyper["a_pi"], subtypes,
                                            hyper.get("gold_offset"))))


def item_features(data: CrowdData) -> jax.Array:
    """Name-free descriptors of each (item, class), standardised, shape (N, K, 4): the class's vote
    fraction, the item's vote entropy, its number of answers, and the mean agreement of its
    workers with the majority vote -- none depends on how workers, items or classes are named."""
    from crowdinfer.models import majority_vote

    from .wawa import agreement

    votes = majority_vote.soft(data)
    n_i = jax.ops.segment_sum(data.weight, data.item, data.n_items)
    entropy = -(votes * jnp.log(jnp.maximum(votes, 1e-30))).sum(-1)
    skill = agreement(data, votes)[data.worker] * data.weight
    mean_skill = jax.ops.segment_sum(skill, data.item, data.n_items) / jnp.maximum(n_i, 1.0)
    per_item = jnp.stack([entropy, jnp.log1p(n_i), mean_skill], -1)
    per_item = jnp.broadcast_to(per_item[:, None, :], votes.shape + (3,))
    phi = jnp.concatenate([votes[..., None], per_item], -1)
    return (phi - phi.mean((0, 1))) / (phi.std((0, 1)) + 1e-6)


def initial_probs(data: CrowdData, hyper: dict, n_subtypes: int, key: jax.Array) -> jax.Array:
    """The soft majority vote split over subtypes, (N, K*M).  The split is random, as in the
    authors' code, but drawn per *subtype* (a random direction ``u_m`` in the space of
    :func:`item_features`, split ``softmax_m(2 u_m . phi_ik)``) rather than per item, so that it
    does not depend on the names or order of workers, items and classes."""
    from crowdinfer.models import majority_vote
    from crowdinfer.models.class_prior import clamp_probs

    mv = clamp_probs(majority_vote.soft(data), hyper.get("gold_offset"))
    phi = item_features(data)
    u = jax.random.normal(key, (n_subtypes, phi.shape[-1]))
    split = jax.nn.softmax(2.0 * jnp.einsum("ikf,mf->ikm", phi, u), axis=-1)
    return (mv[:, :, None] * split).reshape(data.n_items, -1)


# The kept restart is polished (:func:`polish`) until no label probability moves by this much in
# an iteration: ten times their float32 noise (a converged posterior still moves by up to ~1.6e-6
# per iteration on ../shared/data), so that it is always reached and runs stop together.
POSTERIOR_TOL = 1e-5
# Final ELBOs closer than this many times the objective rule's threshold (``tol`` per annotation)
# are ties (:func:`choose`).  A restart stopped by that rule still climbs by about ``r / (1 - r)``
# thresholds, ``r`` the iteration's contraction near an optimum (0.65-0.97 here): restarts of one
# optimum end up to ~14 thresholds apart on ../shared/data, distinct optima over 200 apart.
ELBO_RESOLUTION = 10.0


def choose(objective: jax.Array, resolution) -> jax.Array:
    """The restart kept: the lowest-numbered one whose final ELBO is within ``resolution`` of the
    best (non-finite ELBOs never win).  Restarts that reach one optimum (up to a relabelling of
    subtypes) stop with ELBOs that differ by less than the stopping rule resolves, and by a
    different amount when the sums run in another order, i.e. when workers, items or classes are
    renamed; a plain ``argmax`` then picks another restart.  The restart's number is name-free
    (its start is drawn from :func:`item_features`), so ties go to it instead."""
    finite = jnp.where(jnp.isfinite(objective), objective, -jnp.inf)
    return jnp.argmax(finite >= finite.max() - resolution)


@partial(jax.jit, static_argnames=("max_iter", "mesh"))
def polish(spec: Spec, data: CrowdData, state, *, max_iter: int, tol: float, mesh=None):
    """Continue one restart's ``state`` until no (class, subtype) probability of any item moves by
    ``tol`` or more in an iteration, or ``max_iter`` iterations in all; ``converged`` says which.

    Why: EBCC's optima are flat.  Its ELBO stands still to a few float32 ulps while the label
    posterior still drifts (by 1e-3 to 0.6 over the next tens to hundreds of iterations on
    ../shared/data), so a stop on the ELBO's change (``stop="objective"`` at ``tol=1e-6``, ~10
    ulps) ends wherever float noise says, and two runs that differ only in the order of their sums
    end iterations and ~1e-3 apart.  A bound on the posterior's own change is far above its noise
    (:data:`POSTERIOR_TOL`), so both runs stop at the same iteration, and the iteration contracts,
    so that point is near the fixed point every restart of the optimum tends to.  One restart
    only: cheap next to all of them."""
    def body(carry):
        old, _ = carry
        new = step(spec, data, old, tol=0.0, stop="objective", mesh=mesh)
        return new, jnp.abs(jnp.exp(new.log_q) - jnp.exp(old.log_q)).max()

    state, moved = lax.while_loop(lambda c: (c[0].iteration < max_iter) & (c[1] >= tol), body,
                                  (state, jnp.asarray(jnp.inf, state.log_q.dtype)))
    return state._replace(converged=moved < tol)


def best_of(data: CrowdData, hyper: dict, n_subtypes: int, seed: int, restarts: int, *,
            max_iter: int, tol: float, stop: str):
    """``restarts`` runs of the loop from random starts (one ``vmap``, each stopped by ``stop`` at
    ``tol``), one kept (:func:`choose`, ties within :data:`ELBO_RESOLUTION` thresholds of ``tol``
    per annotation) and :func:`polish`-ed (within ``max_iter`` iterations in all); the kept
    state, and all the restarts' final ELBOs."""
    keys = jax.random.split(jax.random.key(seed), restarts)
    inits = jax.vmap(lambda key: initial_probs(data, hyper, n_subtypes, key))(keys)
    states = jax.vmap(lambda init: run(spec(hyper), data, init, max_iter=max_iter, tol=tol,
                                       stop=stop))(inits)
    best = choose(states.objective,
                  ELBO_RESOLUTION * tol * jnp.maximum(data.weight.sum(), 1.0))
    state = jax.tree.map(lambda leaf: leaf[best], states)
    return (polish(spec(hyper), data, state, max_iter=max_iter, tol=POSTERIOR_TOL,
                   mesh=data_mesh(data)), states.objective)


@dataclasses.dataclass(frozen=True)
class EbccOptions(opts._Group):
    """EBCC's hyperparameters (the authors' defaults) and random start."""

    subtypes: int = opts._opt(10, opts.integer(1))
    restarts: int = opts._opt(40, opts.integer(1))
    empirical_prior: bool = opts._opt(True, opts.boolean)
    a_pi: float = opts._opt(0.1, opts.number(0.0, 1e6, lo_open=True))
    alpha: float = opts._opt(1.0, opts.number(0.0, 1e6, lo_open=True))
    a_v: float = opts._opt(4.0, opts.number(0.0, 1e6, lo_open=True))
    b_v: float = opts._opt(1.0, opts.number(0.0, 1e6, lo_open=True))
    seed: int = opts._opt(0, opts.SEED)
    max_iter: int = opts._opt(500, opts.integer(1))
    tol: float = opts._opt(1e-6, opts.number(0.0))
    stop: str = opts._opt("objective", opts.choice("soft", "hard", "objective"))


def runner(annotations, *, subtypes: int = 10, restarts: int = 40, empirical_prior: bool = True,
           a_pi: float = 0.1, alpha: float = 1.0, a_v: float = 4.0, b_v: float = 1.0,
           seed: int = 0, max_iter: int = 500, tol: float = 1e-6, stop: str = "objective"):
    """``fit(ann, "ebcc")``: mean-field VB from the authors' defaults, best of ``restarts``
    (:func:`best_of`); ``n_iter``, ``history`` and ``converged`` are the kept restart's,
    :func:`polish` included."""
    from crowdinfer.models import majority_vote
    from crowdinfer.models.class_prior import gold_offset

    from crowdinfer.posterior import Posterior

    data = annotations.to_device()
    k = annotations.n_classes
    hyper = {"a_pi": jnp.float32(a_pi), "a_v": jnp.float32(a_v), "b_v": jnp.float32(b_v),
             "subtypes": jnp.zeros(int(subtypes))}
    if annotations.gold is not None and (annotations.gold >= 0).any():  # fit(use_gold=True)
        hyper["gold_offset"] = jnp.asarray(gold_offset(annotations.gold, k))
    hyper["alpha"] = (majority_vote.soft(data).sum(0) if empirical_prior
                      else jnp.full((k,), alpha, jnp.float32))
    state, elbos = best_of(data, hyper, int(subtypes), int(seed), int(restarts),
                           max_iter=int(max_iter), tol=float(tol), stop=stop)
    state = jax.device_get(state)
    joint = np.exp(np.asarray(state.log_q, np.float64)).reshape(annotations.n_items, k, -1)
    n_iter = int(state.iteration)
    params = {key: np.asarray(val) for key, val in state.params.items()}
    return Posterior(
        annotations=annotations, model="ebcc", method="vb", label_probs=joint.sum(-1),
        confusion=np.asarray(_report_confusion(state.params, k)),
        class_prior=params["class_alpha"] / params["class_alpha"].sum(),
        history=np.asarray(state.history[:n_iter]), n_iter=n_iter,
        converged=bool(state.converged), params={**params, "subtype_probs": joint},
        options=dict(subtypes=subtypes, restarts=restarts, empirical_prior=empirical_prior,
                     a_pi=a_pi, alpha=alpha, a_v=a_v, b_v=b_v, seed=seed,
                     restart_elbos=np.asarray(elbos), hyper=jax.device_get(hyper)),
    )


opts.register("ebcc", "vb", EbccOptions)
RUNNERS = {"ebcc": {"vb": runner}}
