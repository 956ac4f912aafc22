"""Label probabilities calibrated on gold labels (issue 14, item 4), and the measures of calibration.

Seed 000 promises that items whose risk ``1 - max_k q_i(k)`` is below ``C = 0.1`` are at least
90% correct.  Without gold that cannot hold on every crowd: on some datasets the gold label gets
*no* vote on 10-13% of the items (``experiments/results/calibration.md``), and nothing that sees
only the annotations can tell those items from correct unanimous ones.  A few gold labels can:

**The map.**  Two parameters, fitted by maximum likelihood of held-out gold labels::

    p'_i = softmax(log q_i / T)                   # temperature T > 0
    c_i  = (1 - eps) p'_i + eps / K               # floor: with rate eps the truth is "anything"

``eps`` is the rate at which the gold disagrees with everything the crowd says; ``T`` how far to
trust the posterior's spread.  Both are monotone in ``q_i(k)`` within a row, so the most probable
label of every item is the same before and after: accuracy cannot change.

**Cross-fitting.**  The gold item that scores the map must not have been clamped to its gold in
the fit that produced its posterior.  ``fit(ann, calibrate=True)`` (any model and engine; the
default too) therefore:

- when the fit uses no gold (``use_gold=False``, no ``prior="worker"``): one fit, whose posterior of
  every gold item is already held out from its gold; the map is fitted on the gold items;
- when it does (``use_gold=True`` or ``prior="worker"``): the gold items are dealt into
  ``calibration_folds`` folds; for each fold one fit sees the gold of the other folds only and
  gives the posterior of the fold's gold items; the map is fitted on those, and applied to the
  fit with every gold label (``folds + 1`` fits).  Clamped gold items keep their gold.

``post.calibration`` holds ``T``, ``eps``, the number of gold items, the folds and the held-out
log-likelihood per gold item before and after.

Measures (the same as ``experiments/accuracy.py``): :func:`expected_calibration_error` (equal-width
confidence bins) and :func:`precision_at_risk` (accuracy of the items whose risk is below ``C``).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import NamedTuple

import numpy as np

__all__ = ["Calibrator", "calibrate_probs", "fit_calibrator", "fit_calibrator_jax",
           "calibrate_log_probs_jax", "expected_calibration_error",
           "precision_at_risk", "calibration_report", "gold_folds", "calibrated_fit",
           "MIN_GOLD", "T_BOUNDS", "EPS_MAX", "FOLD_SEED"]

MIN_GOLD = 10  # gold items below which two parameters are not fitted
T_BOUNDS = (0.05, 100.0)  # the temperatures searched
EPS_MAX = 0.99  # eps < 1: the floor never removes the argmax
_LOG_FLOOR = 1e-300


def _log_probs(label_probs) -> np.ndarray:
    logq = np.log(np.maximum(np.asarray(label_probs, np.float64), _LOG_FLOOR))
    return logq - logq.max(-1, keepdims=True)


def calibrate_probs(label_probs, temperature: float, floor: float) -> np.ndarray:
    """``(1 - floor) softmax(log q / temperature) + floor / K`` row by row (float64).  Neither step
    changes the order of a row's probabilities (``temperature > 0``, ``floor < 1``)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if not (np.isfinite(floor) and 0 <= floor < 1):
        raise ValueError(f"floor must be a finite number in [0, 1), got {floor!r}")
    return _calibrated(_log_probs(label_probs), temperature, floor, np)


def _calibrated(z, temperature, floor, xp):
    """The map on log probabilities ``z`` (rows; any constant per row), in NumPy (``xp=np``) or
    ``jax.numpy``: the one place its formula is written."""
    s = z / temperature
    p = xp.exp(s - s.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    return (1.0 - floor) * p + floor / p.shape[-1]


class Calibrator(NamedTuple):
    """A fitted map (:func:`fit_calibrator`); call it on label probabilities (N, K)."""

    temperature: float
    floor: float
    n_gold: int
    log_lik: float  # mean log-likelihood of the gold labels after the map
    raw_log_lik: float  # ... and before (T = 1, eps = 0)

    def __call__(self, label_probs) -> np.ndarray:
        return calibrate_probs(label_probs, self.temperature, self.floor)


def _check_gold(label_probs, gold) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(label_probs, np.float64)
    g = np.asarray(gold)
    if q.ndim != 2 or q.shape[1] < 2:
        raise ValueError(f"label_probs must be (items, classes >= 2), got shape {q.shape}")
    if g.shape != (q.shape[0],):
        raise ValueError(f"gold must be ({q.shape[0]},) to match label_probs, got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"gold must hold integer class codes (-1: unknown), got {g.dtype}")
    if (g >= q.shape[1]).any():
        raise ValueError(f"gold holds class codes >= {q.shape[1]} (the number of classes)")
    return q, g


def _neg_log_lik(params, z, gold, k):
    """Mean negative log-likelihood of ``gold`` under the map at ``(log T, eps)`` and its
    gradient; ``z`` are the max-normalised log probabilities of the gold items."""
    log_t, eps = params
    t = np.exp(log_t)
    s = z / t
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    rows = np.arange(len(gold))
    a = p[rows, gold]
    like = (1.0 - eps) * a + eps / k
    like = np.maximum(like, 1e-300)
    # d a / d log T = a (z_g - E_p z) * (-1 / T)
    da = a * (z[rows, gold] - (p * z).sum(-1)) * (-1.0 / t)
    g_log_t = -np.mean((1.0 - eps) * da / like)
    g_eps = -np.mean((1.0 / k - a) / like)
    return -np.mean(np.log(like)), np.array([g_log_t, g_eps])


def fit_calibrator(label_probs, gold) -> Calibrator:
    """The temperature ``T`` (in :data:`T_BOUNDS`) and floor ``eps`` (in ``[0, EPS_MAX]``) that
    maximise ``sum_i log c_i(gold_i)`` over the items with a gold label (``gold >= 0``).

    ``label_probs`` of a gold item must come from a fit that did not see its gold
    (:func:`calibrated_fit` cross-fits).  A coarse grid over ``log T`` (``eps`` by EM at each
    point; the log-likelihood is concave in ``eps``) starts an L-BFGS-B search of both."""
    from scipy.optimize import minimize

    q, g = _check_gold(label_probs, gold)
    has = g >= 0
    if has.sum() < MIN_GOLD:
        raise ValueError(f"calibration needs at least {MIN_GOLD} items with a gold label, got "
                         f"{int(has.sum())}")
    z, g = _log_probs(q[has]), g[has]
    k = q.shape[1]
    rows = np.arange(len(g))
    # coarse start: log T on a grid, eps by EM (the mixture weight of the uniform component)
    grid = np.linspace(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1]), 41)
    best = (np.inf, 0.0, 0.0)
    for log_t in grid:
        s = z / np.exp(log_t)
        p = np.exp(s - s.max(-1, keepdims=True))
        a = p[rows, g] / p.sum(-1)
        eps = 0.1
        for _ in range(200):
            r = (eps / k) / ((1.0 - eps) * a + eps / k)
            new = min(float(r.mean()), EPS_MAX)
            if abs(new - eps) < 1e-7:
                eps = new
                break
            eps = new
        value = -np.mean(np.log(np.maximum((1.0 - eps) * a + eps / k, 1e-300)))
        if value < best[0]:
            best = (value, log_t, eps)
    result = minimize(_neg_log_lik, np.array([best[1], best[2]]), args=(z, g, k), jac=True,
                      method="L-BFGS-B",
                      bounds=[(np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])), (0.0, EPS_MAX)])
    log_t, eps = (result.x if result.fun <= best[0] else (best[1], best[2]))
    value = min(float(result.fun), best[0])
    raw = _neg_log_lik((0.0, 0.0), z, g, k)[0]
    return Calibrator(float(np.exp(log_t)), float(eps), int(len(g)), -value, -float(raw))


# ------------------------------------------------------------------ the same fit in JAX
def calibrate_log_probs_jax(log_q, temperature, floor):
    """``log`` of :func:`calibrate_probs` for a JAX array of log probabilities (N, K): traceable
    (the online loop's jitted update, :mod:`crowdinfer.online.loop`)."""
    import jax.numpy as jnp

    c = _calibrated(log_q, temperature, floor, jnp)
    return jnp.log(jnp.maximum(c, jnp.finfo(c.dtype).tiny))


def golden_section(value, lo, hi, steps: int):
    """Maximise a unimodal traced ``value`` on ``[lo, hi]`` by ``steps`` golden-section steps
    inside a jit (``jax.lax.fori_loop``, one evaluation per step).  Returns the final state
    ``(lo, hi, x1, x2, f1, f2)``: the bracket, its two interior points and their values.  The
    temperature searches of :mod:`crowdinfer.selection` and :func:`fit_calibrator_jax` use it."""
    import jax
    import jax.numpy as jnp

    ratio = (np.sqrt(5.0) - 1.0) / 2.0

    def step(_, state):
        lo, hi, x1, x2, f1, f2 = state
        left = f1 >= f2  # the maximum lies in [lo, x2]
        lo, hi = jnp.where(left, lo, x1), jnp.where(left, x2, hi)
        x1n = jnp.where(left, hi - ratio * (hi - lo), x2)
        x2n = jnp.where(left, x1, lo + ratio * (hi - lo))
        new = value(jnp.where(left, x1n, x2n))
        return lo, hi, x1n, x2n, jnp.where(left, new, f2), jnp.where(left, f1, new)

    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    return jax.lax.fori_loop(0, steps, step, (lo, hi, x1, x2, value(x1), value(x2)))


def fit_calibrator_jax(log_q, gold, grid: int = 41, refine: int = 20, em_steps: int = 30,
                       newton_steps: int = 8):
    """:func:`fit_calibrator` as a traceable JAX function with static shapes: ``(T, eps)``
    maximising the mean log-likelihood of the gold labels ``gold`` (N,) int (-1: unknown; the
    items with a gold label are a mask, not a gather) under the map of ``log_q`` (N, K).

    ``log T`` on a ``grid``-point grid over :data:`T_BOUNDS` (the NumPy fit's coarse grid), then
    ``refine`` golden-section steps between the best point's neighbours; at every ``T`` the floor
    ``eps`` by ``em_steps`` EM steps from 0.1, then ``newton_steps`` Newton steps (the
    log-likelihood is concave in ``eps``), within ``[0, EPS_MAX]``.  No host round trip; the caller checks that there are gold items
    (:data:`MIN_GOLD`)."""
    import jax
    import jax.numpy as jnp

    k = log_q.shape[-1]
    has = gold >= 0
    w = has.astype(log_q.dtype) / jnp.maximum(has.sum(), 1).astype(log_q.dtype)
    z = log_q - log_q.max(-1, keepdims=True)
    at_gold = lambda p: jnp.take_along_axis(p, jnp.where(has, gold, 0)[:, None], -1)[:, 0]  # noqa: E731
    tiny = jnp.finfo(log_q.dtype).tiny

    def profile(log_t):  # (negative mean log-likelihood at the best eps, that eps)
        t = jnp.exp(log_t)
        a = at_gold(_calibrated(z, t, 0.0, jnp))

        def em(_, eps):
            like = (1.0 - eps) * a + eps / k
            return jnp.minimum(jnp.sum(w * (eps / k) / jnp.maximum(like, tiny)), EPS_MAX)

        def newton(_, eps):  # EM is slow where the best eps is 0: finish with Newton steps
            d = 1.0 / k - a
            like = jnp.maximum((1.0 - eps) * a + eps / k, tiny)
            grad, hess = jnp.sum(w * d / like), -jnp.sum(w * (d / like) ** 2)
            return jnp.clip(eps - grad / jnp.minimum(hess, -tiny), 0.0, EPS_MAX)

        eps = jax.lax.fori_loop(0, em_steps, em, jnp.asarray(0.1, log_q.dtype))
        eps = jax.lax.fori_loop(0, newton_steps, newton, eps)
        like = at_gold(_calibrated(z, t, eps, jnp))
        return -jnp.sum(w * jnp.log(jnp.maximum(like, tiny))), eps

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    points = jnp.linspace(lo, hi, grid, dtype=log_q.dtype)
    values, floors = jax.vmap(profile)(points)
    best = jnp.argmin(values)
    a, b = points[jnp.maximum(best - 1, 0)], points[jnp.minimum(best + 1, grid - 1)]
    a, b, *_ = golden_section(lambda x: -profile(x)[0], a, b, refine)
    mid = 0.5 * (a + b)
    value, eps = profile(mid)
    better = value < values[best]
    log_t = jnp.where(better, mid, points[best])
    return jnp.exp(log_t), jnp.where(better, eps, floors[best])


# ------------------------------------------------------------------ measures
def _scored(label_probs, gold):
    q, g = _check_gold(label_probs, gold)
    has = g >= 0
    if not has.any():
        raise ValueError("no item has a gold label")
    p = q[has]
    conf = p.max(-1)
    right = (p.argmax(-1) == g[has]).astype(float)
    return conf, right


def expected_calibration_error(label_probs, gold, bins: int = 15) -> float:
    """ECE of the most probable label: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` over
    ``bins`` equal-width confidence bins, on the items with a gold label (``gold >= 0``)."""
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    conf, right = _scored(label_probs, gold)
    edges = np.linspace(0, 1, int(bins) + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(right[idx == b].mean() - conf[idx == b].mean()) * (idx == b).mean()
                     for b in range(int(bins)) if (idx == b).any()))


def precision_at_risk(label_probs, gold, risk: float = 0.1) -> tuple[float | None, int]:
    """``(precision, n)``: the accuracy of the gold items whose risk ``1 - max_k q(k)`` is below
    ``risk`` (seed 000's finished set; ``None`` when there is none) and how many there are."""
    if not (np.isfinite(risk) and 0 < risk <= 1):
        raise ValueError(f"risk must be a finite number in (0, 1], got {risk!r}")
    conf, right = _scored(label_probs, gold)
    sure = 1.0 - conf < risk
    return (float(right[sure].mean()) if sure.any() else None), int(sure.sum())


def calibration_report(label_probs, gold, bins: int = 15, risk: float = 0.1) -> dict:
    """``{"ece", "precision", "n_sure", "n_gold", "accuracy"}`` on the gold items (``accuracy``:
    of the argmax, ties to the first class)."""
    precision, n_sure = precision_at_risk(label_probs, gold, risk)
    _, right = _scored(label_probs, gold)
    return {"ece": expected_calibration_error(label_probs, gold, bins), "precision": precision,
            "n_sure": n_sure, "n_gold": int(len(right)), "accuracy": float(right.mean())}


# ------------------------------------------------------------------ fit(..., calibrate=True)
def gold_folds(gold, folds: int, seed: int = 0) -> np.ndarray:
    """Fold of each item (-1: no gold): the gold items in a random order, dealt round-robin."""
    gold = np.asarray(gold)
    out = np.full(gold.shape, -1, np.int64)
    has = np.flatnonzero(gold >= 0)
    order = np.random.default_rng(seed).permutation(has)
    out[order] = np.arange(len(order)) % folds
    return out


FOLD_SEED = 0  # the cross-fitting folds' draw


def calibrated_fit(annotations, model=None, method=None, calibration_folds: int = 5, **options):
    """``fit(annotations, model, method, **options)`` with its label probabilities mapped by a
    :class:`Calibrator` fitted on cross-fitted posteriors of the gold items (module docstring).
    What ``fit(..., calibrate=True, calibration_folds=...)`` runs; ``options`` go to every fit
    unchanged (an engine's own ``seed`` or ``folds`` included)."""
    import pandas as pd

    from .annotations import Annotations
    from .fit import fit

    if isinstance(annotations, pd.DataFrame):
        annotations = Annotations.from_dataframe(annotations)
    if not isinstance(annotations, Annotations):
        raise TypeError(f"fit needs Annotations or a DataFrame, got {type(annotations).__name__}")
    gold = annotations.gold
    n_gold = 0 if gold is None else int((gold >= 0).sum())
    if n_gold < MIN_GOLD:
        raise ValueError(f"calibrate=True needs at least {MIN_GOLD} items with a gold label "
                         f"(Annotations.gold), got {n_gold}")
    folds = calibration_folds
    use_gold = options.get("use_gold", False)
    uses_gold = use_gold is True or (isinstance(options.get("prior"), str)
                                     and options["prior"] == "worker")
    if uses_gold and n_gold < folds:
        raise ValueError(f"calibration_folds={folds} is more than the {n_gold} gold items")
    post = fit(annotations, model, method, **options)
    if uses_gold:  # each gold item's posterior from a fit that did not see its gold
        fold = gold_folds(gold, folds, FOLD_SEED)
        held = np.zeros(post.label_probs.shape, np.float64)
        for f in range(folds):
            part = dataclasses.replace(annotations, gold=np.where(fold == f, -1, gold))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the full fit above has warned already
                held[fold == f] = np.asarray(fit(part, model, method, **options).label_probs,
                                             np.float64)[fold == f]
    else:  # the fit saw no gold: every gold item's posterior is held out from its gold
        held = np.asarray(post.label_probs, np.float64)
    calibrator = fit_calibrator(held, gold)
    clamped = post.gold_used if post.gold_used is not None else np.zeros(len(gold), bool)
    post.label_probs = np.where(clamped[:, None], np.asarray(post.label_probs, np.float64),
                                calibrator(post.label_probs))
    post.calibration = {
        "temperature": calibrator.temperature, "floor": calibrator.floor,
        "gold_items": calibrator.n_gold, "folds": folds if uses_gold else None,
        "held_out_log_lik": calibrator.log_lik, "raw_log_lik": calibrator.raw_log_lik,
        "rule": (f"T and eps by maximum likelihood of the gold labels, each scored by a fit that "
                 f"did not see it ({f'{folds}-fold cross-fitting' if uses_gold else 'the fit uses no gold'})"),
    }
    return post
