"""ArviZ views of a posterior: worker-confusion draws with the user's ids and class names.

``to_arviz(posterior)`` returns an ``arviz.InferenceData`` whose ``posterior`` group holds

    confusion    (chain, draw, worker, true_class, observed_class)
    class_prior  (chain, draw, class)              (absent with a per-item prior)
    accuracy     (chain, draw, worker)             sum_k pi_k confusion[k, k]
    label_probs  (chain, draw, item, class)        p(y_i | Z_i, parameters of the draw)

Where the draws come from depends on the engine (``idata.posterior.attrs["draws"]`` says which):
NUTS -- its own draws; VB -- the variational posterior ``q(theta) q(pi)``; every point estimate
(EM, SVI, GLAD, majority vote and any model added later) -- the conditional posterior of the
confusions given its label posterior, ``Dirichlet(alpha + expected counts)`` (for one-coin,
``Beta``; ``alpha`` the model's prior, 1 where it has none), which shows how much data stands behind
each estimate.  For models that are not confusion models (GLAD, majority vote) the draws and their
``label_probs`` are the Dawid-Skene view of the fitted labels.  Only NUTS draws are MCMC
(``attrs["mcmc"] == 1``): r-hat and ESS mean something only for them (``Posterior.diagnostics``);
the others are independent draws.  ``Posterior.to_arviz`` caches the result.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from .inference.mcmc import draw_label_probs
from .models import one_coin
from .ops import expected_confusion_counts, gather_log_confusion

if TYPE_CHECKING:  # only a type hint: posterior.py imports this module lazily (no cycle)
    from .posterior import Posterior

with warnings.catch_warnings():  # arviz 0.2x announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["to_arviz", "confusion_draws"]


def _coord(values) -> np.ndarray:
    """Coordinates keep the user's ids: ints stay ints, anything else becomes text."""
    arr = np.asarray(values.tolist() if hasattr(values, "tolist") else list(values))
    return arr.astype(str) if arr.dtype == object else arr


CHAINS = 4  # independent draws for VB and EM are split into 4 "chains" so that r-hat reads ~1


def confusion_draws(posterior: Posterior, num_draws: int = 500, seed: int = 0):
    """``(confusion, class_prior, source)``: draws shaped (chains, draws, ...); for VB and EM,
    ``num_draws`` independent draws in :data:`CHAINS` groups."""
    if posterior.samples is not None:
        s = posterior.samples
        return s["confusion"], s.get("class_prior"), "NUTS draws"
    p = posterior.params
    shape = (CHAINS, max(1, num_draws // CHAINS))
    key_c, key_p = jax.random.split(jax.random.key(seed))
    hyper = posterior.options.get("hyper", {})
    if "subtype_alpha" in p:  # EBCC: each class a mixture of subtypes, each with its confusion
        return _subtype_marginal_draws(p, shape, key_c, key_p), None, (
            "draws from the variational posterior q(theta) q(subtype weights), each confusion "
            "the mixture over a class's subtypes of their confusions (the worker's marginal)")
    if "confusion_alpha" in p:  # VB
        conf = jax.random.dirichlet(key_c, p["confusion_alpha"], shape + p["confusion_alpha"].shape[:-1])
        prior = None
        if "class_alpha" in p:
            prior = jax.random.dirichlet(key_p, p["class_alpha"], shape)
        return np.asarray(conf), None if prior is None else np.asarray(prior), (
            "draws from the variational posterior q(theta) q(pi)"
        )
    # a point estimate (EM, SVI, GLAD, majority vote, ...): the conditional posterior of the
    # confusions given the label posterior -- the model's own Dirichlet (or, for one-coin, Beta)
    # prior where it has one, a flat Dirichlet(1) otherwise -- plus the expected counts
    data = posterior.annotations.to_device()
    q = jnp.asarray(posterior.label_probs, jnp.float32)
    counts = expected_confusion_counts(data, q)
    k = posterior.annotations.n_classes
    if "correct" in hyper:  # one-coin: Beta(correct + right, wrong + errors)
        right = jnp.trace(counts, axis1=1, axis2=2)
        a = hyper["correct"] + right
        b = hyper["wrong"] + counts.sum((1, 2)) - right
        acc = jax.random.beta(key_c, a, b, shape + a.shape)
        conf = one_coin.confusion(acc.reshape(-1), k).reshape(acc.shape + (k, k))
    else:
        alpha = jnp.broadcast_to(jnp.asarray(hyper.get("confusion", 1.0), jnp.float32),
                                 counts.shape) + counts
        conf = jax.random.dirichlet(key_c, alpha, shape + alpha.shape[:-1])
    prior = None
    if posterior.class_prior is not None:
        conc = jnp.asarray(hyper.get("class_concentration", 1.0), jnp.float32)
        prior = np.asarray(jax.random.dirichlet(key_p, conc + q.sum(0), shape))
    return np.asarray(conf), prior, (
        f"draws from the conditional posterior of the parameters given the "
        f"{posterior.model}/{posterior.method} label posterior (independent draws, not MCMC)"
    )


def _subtype_marginal_draws(p: dict, shape: tuple, key_c, key_p) -> np.ndarray:
    """EBCC's draws of ``p(z | y = k) = sum_t p(t | k) theta[w, (k, t), z]``, shape
    ``shape + (M, K, K)``: the subtypes' confusion rows ``(M, K * T, K)`` and the subtype
    weights ``(K, T)`` drawn from their Dirichlet factors."""
    alpha, weights = p["confusion_alpha"], p["subtype_alpha"]
    k, t = weights.shape
    theta = jax.random.dirichlet(key_c, alpha, shape + alpha.shape[:-1])  # (..., M, K*T, K)
    mix = jax.random.dirichlet(key_p, weights, shape + weights.shape[:-1])  # (..., K, T)
    theta = theta.reshape(theta.shape[:-2] + (k, t, theta.shape[-1]))
    return np.asarray(jnp.einsum("...kt,...mktz->...mkz", mix, theta))


def to_arviz(posterior: Posterior, num_draws: int = 500, seed: int = 0,
             label_probs: bool = True) -> az.InferenceData:
    """The posterior as ``arviz.InferenceData`` (see the module docstring)."""
    a = posterior.annotations
    conf, prior, source = confusion_draws(posterior, num_draws, seed)
    weights = prior if prior is not None else np.broadcast_to(
        posterior.label_probs.mean(0), conf.shape[:2] + (a.n_classes,)
    )
    diag = np.diagonal(conf, axis1=-2, axis2=-1)
    variables = {
        "confusion": conf,
        "accuracy": np.einsum("cdjk,cdk->cdj", diag, weights),
    }
    if prior is not None:
        variables["class_prior"] = prior
    # EBCC's label posterior mixes subtypes per item (no product of marginal confusions gives
    # it): its label_probs are left out rather than drawn from the wrong model
    subtypes = "subtype_alpha" in posterior.params and posterior.samples is None
    if label_probs and not subtypes:
        logits = posterior.options.get("hyper", {}).get("prior_logits")

        def log_prior(data, draw, hyper):
            return jax.nn.log_softmax(logits, -1) if logits is not None else jnp.log(draw["pi"])

        variables["label_probs"] = np.asarray(draw_label_probs(
            lambda data, draw: gather_log_confusion(data, jnp.log(draw["theta"])), log_prior,
            a.to_device(), {}, {"theta": conf, "pi": weights}, batch=32))
    coords = {
        "worker": _coord(a.worker_ids),
        "true_class": _coord(a.classes),
        "observed_class": _coord(a.classes),
        "class": _coord(a.classes),
        "item": _coord(a.item_ids),
    }
    dims = {
        "confusion": ["worker", "true_class", "observed_class"],
        "accuracy": ["worker"],
        "class_prior": ["class"],
        "label_probs": ["item", "class"],
    }
    idata = az.from_dict(
        posterior=variables,
        coords=coords,
        dims={k: v for k, v in dims.items() if k in variables},
    )
    idata.posterior.attrs.update(
        {"model": posterior.model, "method": posterior.method, "draws": source,
         "mcmc": int(posterior.samples is not None)}  # r-hat / ESS mean something only then
    )
    return idata
