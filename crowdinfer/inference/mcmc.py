"""NUTS on a label-marginalised NumPyro model, and label posteriors recovered per draw.

The discrete labels never enter the sampler: the model's ``numpyro.factor`` already sums them out.
Given each draw of the continuous parameters, the label posterior is the shared E-step, so

    p(y_i = k | Z) = E_draws[ p(y_i = k | Z_i, theta_draw, pi_draw) ].

Chains start from a point estimate (EM), which anchors the labelling against label switching.
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

__all__ = ["nuts", "draw_label_probs", "convergence"]


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
