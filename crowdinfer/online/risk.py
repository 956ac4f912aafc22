"""Bayes risk of the current labels (seed 000 eq. 4) and the finished / unfinished sets.

With a loss matrix ``H[d, y]`` (the cost of deciding ``d`` when the truth is ``y``; 0-1 by
default) the expected cost of deciding ``d`` for item ``i`` is ``sum_y H[d, y] q_i(y)``; the
decision is the cheapest label and the risk is its cost.  Under 0-1 loss that is the posterior
argmax and ``1 - max_y q_i(y)``.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import jax
import jax.numpy as jnp

from .config import OnlineConfig

__all__ = ["loss_matrix", "bayes_risk", "eligible", "open_items", "loo_temperature",
           "gold_checked_temperature", "TEMPERATURES"]

# the temperatures searched by :func:`loo_temperature`: 1 to 8, log-spaced.  Never below 1: a
# plug-in (MAP) posterior ignores the uncertainty of the worker confusions, so it can be too sure,
# not too timid -- and with one answer per item the held-out answer is predicted by the class
# proportions alone, which a temperature below 1 would sharpen for nothing.
# (computed on first use, not at import: importing crowdinfer.online starts no JAX backend, so
# ``jax.distributed.initialize`` can still run after it)


def outside_trace(fn):
    """``fn()`` run eagerly even when called while a jit traces: in a helper thread (JAX's trace
    state is per thread), so the values are those of a plain eager call (``ensure_compile_time_eval``
    inlines ``jnp.linspace``'s jit and changes the last bits)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@lru_cache(maxsize=None)
def _temperature_grid() -> tuple:
    return outside_trace(lambda: tuple(float(t) for t in 2.0 ** jnp.linspace(0.0, 3.0, 13)))


def __getattr__(name):
    if name == "TEMPERATURES":
        return _temperature_grid()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def loss_matrix(config: OnlineConfig) -> jnp.ndarray | None:
    """The configured loss matrix (``None``: 0-1 loss)."""
    if config.loss_matrix is None:
        return None
    return jnp.asarray(config.loss_matrix, jnp.float32)


def bayes_risk(label_probs: jnp.ndarray, loss: jnp.ndarray | None = None):
    """``(risk, decision)`` per item from the label posterior (N, K); ``loss=None``: 0-1 loss."""
    if loss is None:  # no K x K product: 1 - max q, argmax
        return 1.0 - label_probs.max(-1), jnp.argmax(label_probs, -1).astype(jnp.int32)
    expected = label_probs @ loss.T  # (N, decisions)
    return expected.min(-1), expected.argmin(-1).astype(jnp.int32)


def open_items(state, max_per_item: int) -> jnp.ndarray:
    """Items that may be asked about: unfinished and below the per-item cap."""
    return ~state.finished & (state.item_count < max_per_item)


def eligible(config: OnlineConfig, state) -> jnp.ndarray:
    """:func:`open_items` under ``config.max_per_item``."""
    return open_items(state, config.max_per_item)


def loo_temperature(data, log_lik: jnp.ndarray, log_q: jnp.ndarray, counts=None, pseudo=None,
                    grid=None):
    """A temperature for the label posterior, from the annotations alone (issue 14, item 4).

    Tempering ``q_T = softmax(log q / T)`` never changes a decision under 0-1 loss; it says how
    far to trust the posterior.  ``T`` maximises the leave-one-annotation-out predictive
    likelihood ``sum_n log sum_k q_T^{-n}(k) p(z_n | y = k)``, where ``q_T^{-n}`` is the tempered
    posterior of item ``i_n`` without annotation ``n`` (its own factor divided out): a posterior
    that is too sure predicts the answers it has not seen badly, one that is too timid too.
    ``log_lik`` (capacity, K) is ``log p(z_n | y = k)``; padding rows (weight 0) count for nothing.
    With the expected confusion counts ``counts`` (M, K, K) and the prior pseudo-counts ``pseudo``
    (K, K) of a MAP Dawid-Skene fit, annotation ``n`` is also taken out of its worker's confusion
    (``theta^{-n}[k, z_n] = (C + beta - q_ik) / (row + sum beta - q_ik)``): otherwise a worker's
    confusion, fitted to the very answer it predicts, makes any posterior look right.
    """
    from jax.scipy.special import logsumexp

    cavity = log_q[data.item] - log_lik  # (capacity, K): log q^{-n} up to a constant, T = 1
    if counts is not None:
        q_n = jnp.exp(log_q)[data.item]  # (capacity, K)
        own = counts[data.worker, :, data.label] + pseudo[:, data.label].T - q_n
        # row totals per worker first, then gathered: (capacity, K), never (capacity, K, K)
        rows = counts.sum(-1)[data.worker] + pseudo.sum(-1)[None, :] - q_n
        log_lik = jnp.log(jnp.maximum(own, 1e-6)) - jnp.log(jnp.maximum(rows, 1e-6))

    def score(t):
        c = cavity / t
        c = c - logsumexp(c, axis=-1, keepdims=True)
        return jnp.sum(data.weight * logsumexp(c + log_lik, axis=-1))

    grid = jnp.asarray(_temperature_grid() if grid is None else grid, jnp.float32)
    scores = jax.lax.map(score, grid)
    return grid[jnp.argmax(scores)]


def gold_checked_temperature(log_q, gold, temperature, floor, threshold, loss=None,
                             steps: int = 25, z: float = 1.0):
    """The smallest temperature ``T >= temperature`` (on the grid ``temperature * 2^(j/4)``,
    ``j < steps``) at which the gold items whose calibrated risk is below ``threshold`` (C) are
    ``>= 1 - C`` correct by a Wilson lower bound (``z`` standard errors; 1: one-sided 84%), or
    there is none: seed 000's promise checked on the gold items themselves.  A map fitted by
    maximum likelihood is calibrated on average over the gold items, most of which are far from
    the finished set; this check looks at the finished ones, with a margin for how few they are.
    Raising ``T`` only shrinks the finished set (its most confident items stay).  Traceable, static
    shapes; the largest grid temperature when no grid point passes."""
    from crowdinfer.calibration import calibrate_log_probs_jax

    has = gold >= 0
    factors = 2.0 ** (jnp.arange(steps, dtype=log_q.dtype) / 4.0)

    def passes(t):
        risk, decision = bayes_risk(jnp.exp(calibrate_log_probs_jax(log_q, t, floor)), loss)
        done = has & (risk < threshold)
        n = jnp.maximum(jnp.sum(done), 1).astype(log_q.dtype)
        p = jnp.sum(done & (decision == gold)) / n
        lower = (p + z * z / (2 * n) - z * jnp.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (
            1 + z * z / n)
        return ~done.any() | (lower >= 1.0 - threshold)

    ok = jax.lax.map(passes, temperature * factors)
    return temperature * factors[jnp.where(ok.any(), jnp.argmax(ok), steps - 1)]
