"""NUTS on a label-marginalised NumPyro model, and label posteriors recovered per draw.

The discrete labels never enter the sampler: the model's ``numpyro.factor`` already sums them out.
Given each draw of the continuous parameters, the label posterior is the shared E-step, so

    p(y_i = k | Z) = E_draws[ p(y_i = k | Z_i, theta_draw, pi_draw) ].

Chains start from a point estimate (EM), but that does not stop label switching: a model whose
likelihood is symmetric under permuting the latent classes (Dawid-Skene, BCC) has K! equivalent
modes, and on small data (Dawid & Skene's 1979 table: 45 patients, 4 classes) NUTS hops between
them within a chain.  :func:`relabel` undoes it draw by draw: each draw's classes are matched to the
reference solution (EM) by the assignment that maximises the agreement of their label posteriors,
``sum_i p_draw(y_i = a) q_ref(y_i = b)`` (Hungarian algorithm), and every class-indexed site and the
label probabilities are permuted accordingly before r-hat and the averages are computed.
"""
from __future__ import annotations

import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.diagnostics import summary
from numpyro.infer import MCMC, NUTS, init_to_value

from crowdinfer.annotations import CrowdData
from crowdinfer.ops import label_posterior

__all__ = ["nuts", "draw_label_probs", "relabel", "convergence"]


def nuts(
    model: Callable,
    data: CrowdData,
    hyper: dict,
    init_params: dict,
    *,
    key: jax.Array,
    num_warmup: int = 500,
    num_samples: int = 500,
    num_chains: int = 4,
    progress: bool = False,
) -> dict:
    """Run NUTS; returns the draws grouped by chain, each of shape (chains, draws, ...)."""
    kernel = NUTS(model, init_strategy=init_to_value(values=init_params))
    chain_method = "parallel" if jax.local_device_count() >= num_chains else "vectorized"
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress,
    )
    mcmc.run(key, data, hyper)
    return {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}


def draw_label_probs(log_lik: Callable, log_prior: Callable, data: CrowdData, hyper: dict,
                     draws: dict, batch: int = 64) -> jax.Array:
    """``p(y_i | Z_i, draw)`` for every draw: (chains, draws, N, K).

    ``log_lik(data, params)`` and ``log_prior(data, params, hyper)`` are the model's MAP parts,
    whose parameter names are the sample sites of its NumPyro model.
    """

    @jax.jit
    @jax.vmap
    def per_draw(draw):
        log_q, _ = label_posterior(data, log_lik(data, draw), log_prior(data, draw, hyper))
        return jnp.exp(log_q)

    lead = next(iter(draws.values())).shape[:2]
    flat = {k: jnp.asarray(v).reshape((-1,) + v.shape[2:]) for k, v in draws.items()}
    n = lead[0] * lead[1]
    out = [per_draw({k: v[s : s + batch] for k, v in flat.items()}) for s in range(0, n, batch)]
    probs = jnp.concatenate(out, axis=0)
    return probs.reshape(lead + probs.shape[1:])


def class_permutations(label_probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """For each draw, the permutation ``perm`` (``perm[a]`` = the reference class of the draw's
    class ``a``) maximising ``sum_i sum_a p_draw[i, a] q_ref[i, perm[a]]``.

    ``label_probs``: (..., N, K) per draw; ``reference``: (N, K).  Returns (..., K) int arrays."""
    from scipy.optimize import linear_sum_assignment

    lead, k = label_probs.shape[:-2], label_probs.shape[-1]
    flat = np.asarray(label_probs, np.float64).reshape((-1,) + label_probs.shape[-2:])
    agree = np.einsum("dia,ib->dab", flat, np.asarray(reference, np.float64))
    perms = np.empty((agree.shape[0], k), np.int64)
    for d, score in enumerate(agree):
        rows, cols = linear_sum_assignment(score, maximize=True)
        perms[d, rows] = cols
    return perms.reshape(lead + (k,))


def _permute(values: np.ndarray, perms: np.ndarray, axis: int) -> np.ndarray:
    """Move index ``a`` of ``axis`` to ``perms[..., a]``, per draw (leading axes (chains, draws))."""
    values = np.asarray(values)
    axis = axis % values.ndim
    inverse = np.argsort(perms, axis=-1)  # new position b takes old class inverse[b]
    shape = perms.shape[:2] + (1,) * (axis - 2) + (perms.shape[-1],) + (1,) * (values.ndim - axis - 1)
    index = inverse.reshape(shape)
    return np.take_along_axis(values, np.broadcast_to(index, values.shape[:axis] + (perms.shape[-1],)
                                                      + values.shape[axis + 1:]), axis=axis)


def relabel(draws: dict, label_probs, reference: np.ndarray, class_axes: dict) -> tuple:
    """Undo label switching: ``(draws, label_probs, perms)`` with every draw's classes aligned to
    ``reference`` (N, K), e.g. the EM label posterior.

    ``label_probs`` (chains, draws, N, K) come from :func:`draw_label_probs`; ``class_axes`` maps
    each site whose axis indexes the *latent* class to that axis (for Dawid-Skene
    ``{"confusion": -2, "class_prior": -1}``: the rows of a confusion, not the observed labels).
    Sites not named are left as they are.  ``perms`` (chains, draws, K) is the permutation applied
    (the identity for a draw that did not switch)."""
    label_probs = np.asarray(label_probs)
    perms = class_permutations(label_probs, reference)
    out = dict(draws)
    for site, axis in class_axes.items():
        if site in out:
            out[site] = _permute(out[site], perms, axis)
    return out, _permute(label_probs, perms, -1), perms


def convergence(draws: dict, r_hat_limit: float = 1.01, ess_limit: float = 100.0) -> dict:
    """Worst split r-hat and smallest effective sample size per site; warns when they are poor."""
    stats = summary({k: v for k, v in draws.items()}, group_by_chain=True)
    report = {}
    for site, s in stats.items():
        r_hat = float(np.nanmax(s["r_hat"]))
        ess = float(np.nanmin(s["n_eff"]))
        report[site] = {"max_r_hat": r_hat, "min_ess": ess}
        if not (r_hat < r_hat_limit) or not (ess > ess_limit):
            warnings.warn(
                f"NUTS may not have converged for '{site}': max r_hat {r_hat:.3f} (want < "
                f"{r_hat_limit}), min ESS {ess:.0f} (want > {ess_limit:.0f}); run longer chains",
                stacklevel=3,
            )
    return report
