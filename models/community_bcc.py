"""Community BCC (Venanzi et al. 2014): workers belong to a few communities that share a confusion
matrix, and each worker deviates from its community.

Generative story, with the true labels and the community memberships marginalised::

    pi                ~ Dirichlet(a)                                   class proportions
    h                 ~ Dirichlet(1, ..., 1)                           community sizes (C)
    kappa[c, k]       ~ Dirichlet(beta[k])                             community c's confusion rows
    m_j               ~ Categorical(h)                                 worker j's community
    theta[j, k]       ~ Dirichlet(s * kappa[m_j, k])                   worker j deviates from it
    y_i ~ Categorical(pi);   z_n | y ~ Categorical(theta[w_n, y])

so ``p(theta_j) = sum_c h_c prod_k Dir(theta[j, k]; s kappa[c, k])``: a mixture prior over each
worker's whole matrix.  A worker with few answers is pulled towards the community it most
resembles; ``s`` (``hyper["deviation"]``) is how many pseudo-answers per row that pull is worth
(BCC's parametrisation: no ``1 +``, which would add K uniform pseudo-answers per row).
Everything left is continuous, so SVI or NUTS can fit the NumPyro model; the membership posterior
``p(m_j = c | theta_j, kappa, h)`` is :func:`memberships`.  But the joint MAP of a hierarchical
model over-shrinks (on web it collapses sparse workers into their community: 0.75 against BCC's
0.80), so the default engine is ``VB``, variational Bayes as Venanzi et al. use:

    q(m_j = c)   proportional to  h_c exp(E_q[log Dir(theta_j; s kappa_c)])
    q(theta_j)   = Dirichlet(sum_c q(m_j = c) s kappa_c + C_j)               C_j expected counts
    kappa_c      proportional to  sum_j q(m_j = c) C_j + beta                 community's pooled counts
    h_c          proportional to  1 + sum_j q(m_j = c)

(``kappa`` and ``h`` as point estimates, an empirical-Bayes step; the reported objective is then
an approximation of the ELBO.)  ``hyper["community_init"]`` (C, K, K) starts the communities:
:func:`kmeans` of the workers' Dawid-Skene confusions, started deterministically (the busiest
worker, then farthest points), so that the result does not depend on how workers are named or
ordered (a random start over the worker order used to flip labels when workers were renamed).

``hyper``: ``community_prior`` (beta, (C, K, K) -- its first axis sets the number of communities),
``deviation`` (s), ``community_init`` (VB), and ``class_concentration`` (a) or ``prior_logits``
(the NumPyro model's dict; the VB part ``vb_part(prior, deviation, init)`` carries
:class:`CommunityHyper`, its state is :class:`CommunityState`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import gammaln
from numpyro.distributions.kl import kl_divergence

from crowdinfer.annotations import CrowdData
from crowdinfer.inference.loop import WorkerPart
from crowdinfer.ops import expected_confusion_counts

from . import class_prior
from .dawid_skene import dirichlet_part, observe_confusion


class CommunityHyper(NamedTuple):
    community_prior: jax.Array  # beta, (C, K, K)
    deviation: jax.Array  # s
    community_init: jax.Array  # (C, K, K) the starting community confusions


class CommunityState(NamedTuple):
    confusion_alpha: jax.Array  # (M, K, K) q(theta_j)
    community_confusion: jax.Array  # (C, K, K) kappa
    community_sizes: jax.Array  # (C,) h
    memberships: jax.Array  # (M, C) q(m_j = c)
    prior_alpha: jax.Array  # (M, K, K) the prior of q(theta_j) at the last update
    private = ("prior_alpha",)


def _worker_prior(kappa, h, deviation):
    rows = dist.Dirichlet(deviation * kappa).to_event(1)  # batch (C,), event (K, K)
    return dist.MixtureSameFamily(dist.Categorical(probs=h), rows)


def model(data: CrowdData, hyper: dict):
    """The NumPyro model (true labels and memberships marginalised)."""
    beta = jnp.asarray(hyper["community_prior"])
    n_communities = beta.shape[0]
    h = numpyro.sample("community_sizes", dist.Dirichlet(jnp.ones(n_communities)))
    with numpyro.plate("community", n_communities, dim=-2), numpyro.plate(
        "true_class", data.n_classes, dim=-1
    ):
        kappa = numpyro.sample("community_confusion", dist.Dirichlet(beta))
    with numpyro.plate("worker", data.n_workers):
        confusion = numpyro.sample("confusion", _worker_prior(kappa, h, hyper["deviation"]))
    observe_confusion(data, confusion, hyper)


def memberships(params: dict, deviation: float) -> jax.Array:
    """``p(m_j = c | theta_j, kappa, h)``, shape (M, C)."""
    rows = dist.Dirichlet(deviation * params["community_confusion"]).to_event(1)
    log_p = rows.log_prob(params["confusion"][:, None]) + jnp.log(params["community_sizes"])
    return jax.nn.softmax(log_p, axis=-1)


# ------------------------------------------------------------------ variational Bayes part
def _community_log_density(alpha, kappa, deviation):
    """``E_q(theta_j)[log Dir(theta_j; s kappa_c)]`` for every worker and community, (M, C)."""
    a = deviation * kappa  # (C, K, K)
    e_log = class_prior.dirichlet_expected_log(alpha)  # (M, K, K)
    norm = (gammaln(a.sum(-1)) - gammaln(a).sum(-1)).sum(-1)  # (C,)
    cross = jnp.einsum("ckl,mkl->mc", a - 1.0, e_log)
    return norm[None, :] + cross


def _vb_update(data, q, hyper, state):
    counts = expected_confusion_counts(data, q)  # (M, K, K)
    s = hyper.deviation
    kappa, h = state.community_confusion, state.community_sizes
    log_r = jnp.log(h)[None, :] + _community_log_density(state.confusion_alpha, kappa, s)
    r = jax.nn.softmax(log_r, axis=-1)  # q(m_j = c)
    prior = jnp.einsum("mc,ckl->mkl", r, s * kappa)
    pooled = jnp.einsum("mc,mkl->ckl", r, counts) + hyper.community_prior
    return CommunityState(
        confusion_alpha=prior + counts,
        community_confusion=pooled / pooled.sum(-1, keepdims=True),
        community_sizes=(r.sum(0) + 1.0) / (r.shape[0] + r.shape[1]),
        memberships=r,
        prior_alpha=prior,
    )


def _vb_objective(state, hyper):
    return -kl_divergence(
        dist.Dirichlet(state.confusion_alpha), dist.Dirichlet(state.prior_alpha)
    ).sum()


def _vb_init(data, hyper):
    k, c = data.n_classes, hyper.community_init.shape[0]
    prior = jnp.broadcast_to(hyper.deviation * hyper.community_init.mean(0),
                             (data.n_workers, k, k))
    return CommunityState(
        confusion_alpha=prior,
        community_confusion=hyper.community_init,
        community_sizes=jnp.full((c,), 1.0 / c),
        memberships=jnp.full((data.n_workers, c), 1.0 / c),
        prior_alpha=prior,
    )


VB = dirichlet_part(CommunityState, _vb_init, _vb_update, _vb_objective)


def vb_part(community_prior, deviation, community_init) -> WorkerPart:
    """The VB part: prior ``community_prior`` (beta, (C, K, K)), ``deviation`` s, and the starting
    communities ``community_init`` (C, K, K)."""
    return VB.with_hyper(CommunityHyper(jnp.asarray(community_prior, jnp.float32),
                                        jnp.float32(deviation),
                                        jnp.asarray(community_init, jnp.float32)))


# ------------------------------------------------------------------ initial communities
def _first_by_content(score: np.ndarray, x: np.ndarray) -> int:
    """Index of the largest ``score``; exact ties broken by the rows of ``x`` (lexicographic), never
    by position, so that permuting the workers permutes nothing in the result."""
    best = np.flatnonzero(score >= score.max() - 1e-12 * max(abs(score.max()), 1.0))
    if len(best) == 1:
        return int(best[0])
    order = np.lexsort(x[best].T[::-1])
    return int(best[order[0]])


def kmeans(confusion: np.ndarray, weight: np.ndarray, k: int, iters: int = 20):
    """Weighted k-means of the workers' confusion matrices: (centres (k, K, K), sizes (k,)).

    Started without randomness, from the workers' content only: the first centre is the busiest
    worker, each next one the worker farthest (weighted) from the centres so far (a deterministic
    k-means++); Lloyd iterations follow.  Invariant to worker order and names."""
    x = np.asarray(confusion, np.float64).reshape(len(confusion), -1)
    w = np.asarray(weight, np.float64)
    chosen = [_first_by_content(w, x)]
    while len(chosen) < min(k, len(x)):
        dist = ((x[:, None] - x[chosen][None]) ** 2).sum(-1).min(1)
        if dist.max() <= 0:
            break
        chosen.append(_first_by_content(w * dist, x))
    centres = x[chosen + [chosen[i % len(chosen)] for i in range(k - len(chosen))]].copy()
    for _ in range(iters):
        d = ((x[:, None] - centres[None]) ** 2).sum(-1)
        assign = np.argmin(d, axis=1)  # ties go to the lower centre index: centres are ordered
        for c in range(k):              # by content, not by worker position
            if (assign == c).any():
                centres[c] = np.average(x[assign == c], axis=0, weights=w[assign == c] + 1e-9)
    sizes = np.bincount(assign, weights=w, minlength=k) + 1.0
    centres = centres.reshape((k,) + confusion.shape[1:]) + 1e-3
    return centres / centres.sum(-1, keepdims=True), sizes / sizes.sum()
