"""The default of :func:`crowdinfer.fit`: choose the model by held-out annotation likelihood.

No gold label is used.  Each candidate is scored by how well it predicts annotations it did not
see, per annotation::

    log p(z_n | Z_{-n}) ~ log sum_k q_{-n}(y_{i_n} = k) theta_{-n}[w_n, k, z_n]

where ``q_{-n}`` is the label posterior of item ``i_n`` without annotation ``n`` and
``theta_{-n}`` the worker's confusion without it.  A model that over-fits its workers (classic
Dawid-Skene with sparse workers), that is too rigid for them (one-coin when workers confuse some
classes more than others), or whose labels are wrong (a label-switched solution) predicts
held-out answers badly.  Three ways to leave annotations out (``criterion``):

- ``"holdout"`` (the default): each item's answers are dealt into two halves at random; every
  candidate is fitted on one half (at that half's own size) and scored by the exact held-out
  predictive of the other half; the chosen one is refitted on all the annotations
  (:func:`holdout_scores`).  Any model; one half-size fit per candidate plus one full fit.
- ``"cavity"``: ONE fit per candidate on all the annotations; each annotation's
  own contribution is removed from its item's posterior (``q_{-n}(k) ∝ q_i(k) /
  theta_E[w, k, z_n]``, ``theta_E`` the confusion the E-step multiplied in) and from its worker's
  Dirichlet counts (``A[w, k, z_n] - q_ik``; one-coin: the Beta counts), the predictive being the
  Dirichlet mean -- an approximate leave-one-annotation-out, in one jitted pass
  (:func:`cavity_score`).  It exists for the models of :data:`CAVITY`.  It ignores the second-order
  effect (the annotation also shaped the other workers of its item, and through them their
  other items): it is optimistic, and the more so the more parameters a worker has.  On sparse
  crowds it prefers Dawid-Skene to one-coin where one-coin is the more accurate and exact
  leave-one-out agrees with one-coin (5 classes, 3 answers per item: cavity -1.24 against exact
  -1.41 per answer for Dawid-Skene, -1.28 against -1.29 for one-coin), and the default it chose
  lost to majority vote on 11 of 90 generated crowds (experiments/results/stress_default.md).
  It is cheaper; it was the default before.
- ``"kfold"``: the annotations are split at random into ``folds`` parts; every candidate is
  fitted on the other parts and scored on each held-out part, then the best is refitted on all
  the annotations (the fold fits are padded to the full data's capacity: one compile each).  Any
  model; ``folds + 1`` fits of the chosen one.

Candidates are only ever compared under one criterion: if a candidate has no cavity, all are
scored by K-fold.  ``post.selection`` records every candidate's score and the choice.

**Calibration.**  The same held-out predictions give a temperature for the label posterior
(gold-free): ``q_T = softmax(log q / T)`` with ``T`` maximising the held-out likelihood.  Dividing
the log posterior by ``T`` never changes which label is most probable, so it changes
probabilities (``confidence``, risk) but not accuracy.  ``temper_probs=False`` switches it off.

The candidate set and the criterion were chosen by leave-one-dataset-out over the 12 datasets of
``../shared/data`` within a cost of 5 Dawid-Skene fits (``experiments/accuracy.py``,
``experiments/results/accuracy.md``); the cost is measured in
``experiments/results/default_cost.md``.
"""
from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from . import identifiability
from .annotations import Annotations, capacity_bucket, deal_folds
from .posterior import Posterior

__all__ = ["CANDIDATES", "CRITERION", "CRITERIA", "CAVITY", "DEFAULT_FOLDS", "select", "choose",
           "held_out_scores", "holdout_scores", "holdout_temperature",
           "cavity_score", "cavity_scores", "cavity_temperature", "temper"]

# Chosen by leave-one-dataset-out over ../shared/data
# (experiments/results/accuracy.md) among every subset (with dawid_skene) of dawid_skene, bcc,
# one_coin, majority_vote, MACE, BWA, Wawa, ZBS, weighted vote and hierarchical DS, scored by the
# holdout, the cavity (where every candidate has one) or 2-fold: within 5 Dawid-Skene fits (an
# estimate), then never more than 0.005 below majority vote, then the best mean accuracy, then
# fewer candidates, then the exact held-out criteria before the cavity.  (EBCC is ~3000x one Dawid-Skene
# fit; GLAD and community BCC are not candidates.  select(..., candidates=...) takes any model.)
CANDIDATES = ("dawid_skene", "one_coin")
DEFAULT_FOLDS = 2
CRITERION = "holdout"  # or "cavity" / "kfold"; chosen by leave-one-dataset-out with the candidates
CRITERIA = ("cavity", "kfold", "holdout")
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 47))
TEMPERATURE_ROWS = 20_000  # held-out rows per fold that the temperature search looks at
# The half fits of the holdout stop at a looser tolerance than a fit's 1e-5 (unless tol= is given):
# a half has half the answers per item, so EM crawls for 2-3x the iterations of the full fit on
# flat directions that do not move the held-out score's ranking.  Checked, not tuned: at 1e-4 every
# choice on the 12 datasets of ../shared/data and on the generated crowds of stress_default.py is
# the one made at 1e-5 (1e-3 changes cf's); the chosen model is always refitted at the user's tol.
HOLDOUT_TOL = 1e-4
FLOOR = 1e-6  # probability floor of a held-out answer (a zero would make one model's score -inf)


# Free parameters per worker.  The choice follows a one-standard-error rule (after Hastie,
# Tibshirani & Friedman, The Elements of Statistical Learning, sec. 7.10): among the candidates
# whose held-out score is within one standard error of the best one's -- the paired standard error
# of the per-answer difference, where the criterion has one (the holdout), and never less than
# TIE -- the one with the fewest parameters per worker.  Where the held-out answers cannot tell
# the candidates apart -- 2 answers per item: each half has one answer per item, no worker
# overlaps there, and every candidate's workers are pinned to the same pooled skill -- that is
# the simpler model, not whichever came first (stress_default.md: Dawid-Skene there fell below
# majority vote).  (The unpaired standard error of the best score, as in the book, is ~100x wider
# here: under leave-one-dataset-out it picked MACE or a weighted vote where Dawid-Skene was
# clearly better, LODO mean 0.845 against 0.852.)
WORKER_PARAMETERS = {"majority_vote": lambda k: 0, "wawa": lambda k: 1,
                     "zero_based_skill": lambda k: 1, "weighted_vote": lambda k: 1,
                     "one_coin": lambda k: 1, "mace": lambda k: k, "bwa": lambda k: 1,
                     "glad": lambda k: 1, "dawid_skene": lambda k: k * (k - 1),
                     "hierarchical_ds": lambda k: k * (k - 1), "bcc": lambda k: k * (k - 1)}
# held-out log-likelihood per answer: closer than this is a tie.  The half fits stop when the mean
# annotation likelihood moves by less than HOLDOUT_TOL per iteration: a smaller difference in
# held-out score is within the fits' own convergence.
TIE = HOLDOUT_TOL


def choose(scores: dict, names, n_classes: int = 3) -> str:
    """The candidate chosen from ``scores`` (name -> ``{"score": ..., "se": {other: paired
    standard error of the score difference}}``, ``se`` optional): the fewest parameters per
    worker (:data:`WORKER_PARAMETERS`; unknown models count K^2) among those within one standard
    error (at least :data:`TIE`) of the best score, then the earlier in ``names``."""
    names = list(names)
    best = _best(scores, names)
    near = [c for c in names
            if scores[c]["score"] >= scores[best]["score"] - _margin(scores, best, c)]
    return min(near, key=lambda c: (WORKER_PARAMETERS.get(c, lambda k: k * k)(n_classes),
                                    names.index(c)))


def _best(scores: dict, names: list) -> str:
    """The top score, ties to the earlier in ``names``."""
    return max(names, key=lambda c: (scores[c]["score"], -names.index(c)))


def _margin(scores: dict, best: str, other: str) -> float:
    """How far below ``best`` ``other`` may score and still count as near it: one paired
    standard error of their difference, at least :data:`TIE`."""
    return max(TIE, (scores[best].get("se") or {}).get(other, 0.0))


@dataclasses.dataclass(frozen=True, eq=False)
class _Padded(Annotations):
    """Annotations that pad to a given capacity, so a fold fit reuses the full fit's compile."""

    capacity: int = 0

    def to_device(self, capacity=None, sharding="auto"):
        return super().to_device(self.capacity if capacity is None else capacity, sharding)


def _subset(annotations: Annotations, keep: np.ndarray, capacity: int) -> Annotations:
    keep = np.flatnonzero(keep)  # one pass over the mask, then three gathers
    return _Padded(
        item=annotations.item.take(keep), worker=annotations.worker.take(keep),
        label=annotations.label.take(keep),
        item_ids=annotations.item_ids, worker_ids=annotations.worker_ids,
        classes=annotations.classes, gold=None, features=annotations.features,
        weight=None if annotations.weight is None else annotations.weight.take(keep),
        capacity=capacity,
    )


def annotation_folds(annotations: Annotations, folds: int, seed: int) -> np.ndarray:
    """Fold of each annotation (:func:`~crowdinfer.annotations.deal_folds`): every item with at
    least ``folds`` annotations keeps some in every training set."""
    item = annotations.item
    is_sorted = bool(np.all(item[1:] >= item[:-1]))  # as every Annotations is
    return deal_folds(item, annotations.n_items, folds, seed,
                      annotations.rows_per_item() if is_sorted else None)


def _log_predictive(post: Posterior, annotations: Annotations, rows: np.ndarray) -> np.ndarray:
    """``log sum_k q(y_i = k) theta[w, k, z]`` for the annotations ``rows``: float32 products on
    the device (one jitted gather and row dot, ``rows`` padded to a capacity
    bucket so that a dataset compiles it once), float64 logarithms."""
    global _ANSWER_LIKELIHOOD
    import jax
    import jax.numpy as jnp

    if _ANSWER_LIKELIHOOD is None:
        def like(q, confusion, item, worker, label, rows):
            k = q.shape[-1]
            by_answer = jnp.swapaxes(confusion, 1, 2).reshape(-1, k)  # row (w, z): theta[w, :, z]
            i, w, z = item[rows], worker[rows], label[rows]
            return jnp.sum(q[i] * by_answer[w * k + z], -1)

        _ANSWER_LIKELIHOOD = jax.jit(like)
    q = np.asarray(post.label_probs, np.float32)
    padded = np.zeros(capacity_bucket(len(rows)), np.int32)
    padded[:len(rows)] = rows
    like = _ANSWER_LIKELIHOOD(q, np.asarray(post.confusion, np.float32), annotations.item,
                              annotations.worker, annotations.label, padded)
    return np.log(np.maximum(np.asarray(like, np.float64)[:len(rows)], FLOOR))


_ANSWER_LIKELIHOOD = None


def _tempered_curve(post: Posterior, annotations: Annotations, rows: np.ndarray,
                    grid: np.ndarray) -> np.ndarray:
    """Mean of :func:`_log_predictive` over ``rows`` at every temperature of ``grid`` at once."""
    logq = np.log(np.maximum(np.asarray(post.label_probs, np.float64)[annotations.item[rows]],
                             1e-300))
    logq -= logq.max(-1, keepdims=True)
    theta = np.asarray(post.confusion, np.float64)[annotations.worker[rows], :,
                                                   annotations.label[rows]]
    out = np.empty(len(grid))
    for start in range(0, len(grid), 8):  # 8 temperatures at a time bound the memory
        t = grid[start:start + 8, None, None]
        p = np.exp(logq[None] / t)
        like = (p * theta[None]).sum(-1) / p.sum(-1)
        out[start:start + 8] = np.log(np.maximum(like, FLOOR)).mean(-1)
    return out


# ------------------------------------------------------------------ the cavity (one full fit)
# How each model's fitted Posterior gives its worker posterior and the confusion its E-step used:
#   "map": EM on a Dirichlet-confusion model: theta = post.confusion, Dirichlet(hyper["confusion"]
#          + expected counts);  "vb": VB on one: Dirichlet(params["confusion_alpha"]), the E-step
#          multiplied exp(E log theta);  "coin": EM on one-coin: theta = post.confusion,
#          Beta(hyper["correct"] + right answers, hyper["wrong"] + wrong answers).
# Models not listed (votes, MACE, BWA, EBCC, GLAD, ...) have no such closed form here: they are
# scored by K-fold cross-validation, and never compared with a cavity score.
CAVITY = {"dawid_skene": "map", "bcc": "vb", "one_coin": "coin", "hierarchical_ds": "vb"}


def _cavity_arrays(post: Posterior, family: str):
    """``(q, confusion, prior)`` of a fitted Posterior, float32 host arrays (the jitted passes
    take them as they are): the label posterior; the confusion its E-step used (VB: its
    Dirichlet parameters); the worker prior's concentrations (Dirichlet (K, K) or (M, K, K);
    one-coin: (correct, wrong) on the last axis)."""
    hyper = post.options.get("hyper", {})
    q = np.asarray(post.label_probs, np.float32)
    if family == "vb":
        return q, np.asarray(post.params["confusion_alpha"], np.float32), np.zeros((), np.float32)
    if family == "map":
        prior = np.asarray(hyper["confusion"], np.float32)
    else:
        prior = np.stack(np.broadcast_arrays(np.asarray(hyper["correct"], np.float32),
                                             np.asarray(hyper["wrong"], np.float32)), -1)
    return q, np.asarray(post.confusion, np.float32), prior


def _worker_posterior(data, q, confusion, prior, family: str):
    """``(log_theta_e, alpha)``: the log confusion the E-step multiplied into ``q`` (M, K, K) and
    the worker posterior's concentrations -- (M, K, K) Dirichlet, or (M, 2) Beta for "coin"
    (the prior plus the expected counts :func:`crowdinfer.ops.expected_confusion_counts`)."""
    import jax.numpy as jnp
    from jax.scipy.special import digamma

    from .ops import expected_confusion_counts

    if family == "vb":
        return digamma(confusion) - digamma(confusion.sum(-1, keepdims=True)), confusion
    log_theta = jnp.log(jnp.maximum(confusion, FLOOR))
    counts = expected_confusion_counts(data, q)
    if family == "map":
        return log_theta, prior + counts
    right = jnp.trace(counts, axis1=1, axis2=2)
    return log_theta, prior + jnp.stack([right, counts.sum((1, 2)) - right], -1)


def _cavity_rows(data, idx, log_q, log_theta, alpha, family: str):
    """For annotations ``idx``: the cavity label posterior ``log q_{-n}`` and the cavity
    predictive ``theta_{-n}[w_n, k, z_n]``, both (len(idx), K)."""
    import jax
    import jax.numpy as jnp

    item, worker, label = data.item[idx], data.worker[idx], data.label[idx]
    rows = data.worker_label[idx]  # row (w, z) of a (M * K, K) view: one contiguous gather

    def by_label(a):  # a[w_n, :, z_n] for every annotation of idx
        m, k, _ = a.shape
        return jnp.swapaxes(a, 1, 2).reshape(m * k, k)[rows]

    lq = log_q[item]
    cav = lq - by_label(log_theta)  # remove the annotation's own factor
    cav = cav - jax.scipy.special.logsumexp(cav, -1, keepdims=True)
    q = jnp.exp(lq)  # what the annotation added to its worker's counts, per true class
    tiny = 1e-6
    if family == "coin":
        k = log_q.shape[-1]
        qz = jnp.take_along_axis(q, label[:, None], -1)[:, 0]
        a = jnp.maximum(alpha[worker, 0] - qz, tiny)
        b = jnp.maximum(alpha[worker, 1] - (1.0 - qz), tiny)
        same = jnp.arange(k)[None, :] == label[:, None]
        theta = jnp.where(same, (a / (a + b))[:, None], (b / ((a + b) * (k - 1)))[:, None])
    else:
        a = jnp.maximum(by_label(alpha) - q, tiny)
        s = jnp.maximum(alpha.sum(-1)[worker] - q, tiny)  # (M, K) summed first, then gathered
        theta = a / s
    return cav, theta


def _cavity_log_lik(post: Posterior, rows: np.ndarray) -> np.ndarray:
    """The cavity log predictive of the annotations ``rows`` one by one (for checks)."""
    import jax.numpy as jnp

    family = CAVITY[post.model]
    data = post.annotations.to_device(sharding=None)
    q, confusion, prior = _cavity_arrays(post, family)
    log_theta, alpha = _worker_posterior(data, q, confusion, prior, family)
    log_q = jnp.log(jnp.maximum(q, 1e-30))
    cav, theta = _cavity_rows(data, jnp.asarray(rows, jnp.int32), log_q, log_theta, alpha, family)
    return np.log(np.maximum(np.asarray((jnp.exp(cav) * theta).sum(-1), np.float64), FLOOR))


GOLDEN_STEPS = 14  # golden-section steps on log T in [log 0.1, log 10]: to within ~0.6% in T
CAVITY_TEMPERATURE_ROWS = 5_000  # annotations the cavity's temperature search looks at


def _tempered_mean(log_q, theta, weight=None):
    """``value(log T)``: the mean over rows of ``log sum_k softmax(log_q / T)_k theta_k``, the
    held-out log-likelihood of answers with the item posterior (rows of ``log_q``, without the
    answer) tempered by ``T``; ``theta`` the held-out answer's probability under each class;
    ``weight``: each answer's weight (the weighted mean), or ``None`` (every answer counts 1)."""
    import jax.numpy as jnp

    log_q = log_q - log_q.max(-1, keepdims=True)

    def value(log_t):
        p = jnp.exp(log_q / jnp.exp(log_t))
        ll = jnp.log(jnp.maximum((p * theta).sum(-1) / p.sum(-1), FLOOR))
        return ll.mean() if weight is None else (weight * ll).sum() / weight.sum()

    return value


def _golden_temperature(value, bounds):
    """``(T, gain)`` maximising ``value(log T)`` on ``[log bounds[0], log bounds[1]]`` by
    :data:`GOLDEN_STEPS` golden-section steps (traced; inside a jit), the ends and ``T = 1``
    also tried; ``gain`` = the value at ``T`` minus the value at ``T = 1``."""
    import jax
    import jax.numpy as jnp

    from .calibration import golden_section

    lo, hi = jnp.log(bounds[0]), jnp.log(bounds[1])
    lo, hi, x1, x2, f1, f2 = golden_section(value, lo, hi, GOLDEN_STEPS)
    # the search's point, or the ends of the range or T = 1 if one of them is better
    points = jnp.stack([(x1 + x2) / 2, jnp.log(bounds[0]), jnp.log(bounds[1]), 0.0])
    values = jax.vmap(value)(points)
    best = jnp.argmax(values)
    return jnp.exp(points[best]), values[best] - values[3]


def _cavity_jits():
    """Two jitted functions: the cavity score over every annotation, and the temperature of
    the cavity posterior on a sample of annotations (golden-section search on ``log T``)."""
    import jax
    import jax.numpy as jnp

    def score(data, q, confusion, prior, family):
        log_theta, alpha = _worker_posterior(data, q, confusion, prior, family)
        log_q = jnp.log(jnp.maximum(q, 1e-30))
        cav, theta = _cavity_rows(data, jnp.arange(data.item.shape[0]), log_q, log_theta, alpha,
                                  family)
        like = (jnp.exp(cav) * theta).sum(-1)
        return (jnp.log(jnp.maximum(like, FLOOR)) * data.weight).sum()

    def temperature(data, sample, q, confusion, prior, bounds, family):
        log_theta, alpha = _worker_posterior(data, q, confusion, prior, family)
        log_q = jnp.log(jnp.maximum(q, 1e-30))
        cav, theta = _cavity_rows(data, sample, log_q, log_theta, alpha, family)
        return _golden_temperature(_tempered_mean(cav, theta), bounds)

    return (jax.jit(score, static_argnames=("family",)),
            jax.jit(temperature, static_argnames=("family",)))


_CAVITY = None


def _family(post: Posterior) -> str:
    family = CAVITY.get(post.model)
    if family is None:
        raise ValueError(f"model {post.model!r} has no cavity score; those that do: "
                         f"{sorted(CAVITY)}")
    return family


def cavity_temperature(post: Posterior, grid=TEMPERATURES, seed: int = 0) -> tuple[float, float]:
    """``(T, gain)``: the temperature in ``[min(grid), max(grid)]`` that maximises the cavity
    held-out log-likelihood of :func:`cavity_score` with ``q_{-n}`` tempered, on at most
    :data:`CAVITY_TEMPERATURE_ROWS` annotations (one number: a random sample estimates its
    curve), and its gain over ``T = 1`` (>= 0)."""
    global _CAVITY
    family = _family(post)
    if _CAVITY is None:
        _CAVITY = _cavity_jits()
    ann = post.annotations
    n = ann.n_annotations
    sample = np.arange(n) if n <= CAVITY_TEMPERATURE_ROWS else np.sort(
        np.random.default_rng(seed).choice(n, CAVITY_TEMPERATURE_ROWS, replace=False))
    bounds = np.asarray([np.min(grid), np.max(grid)], np.float32)
    t, gain = _CAVITY[1](ann.to_device(sharding=None), np.asarray(sample, np.int32),
                         *_cavity_arrays(post, family), bounds, family)
    return float(t), max(float(gain), 0.0)


def cavity_score(post: Posterior, grid=None, seed: int = 0) -> dict:
    """Approximate leave-one-annotation-out predictive of a fitted confusion model, from ONE fit
    (the "cavity"): for annotation ``n`` of item ``i`` by worker ``w``, its own factor is removed
    from the item posterior, ``q_{-n}(k) ∝ q_i(k) / theta_E[w, k, z_n]`` (``theta_E`` the
    confusion the E-step multiplied in), and its expected count from the worker's Dirichlet
    (``A[w, k, z_n] - q_ik``; one-coin: the Beta), and the annotation is scored by
    ``log sum_k q_{-n}(k) E[theta_{-n}[w, k, z_n]]``, averaged over annotations: one
    vectorised, jitted pass.  Returns ``{"score", "temperature", "tempered_score"}``; with
    ``grid`` (temperatures: their range is searched, :func:`cavity_temperature`), else
    ``temperature`` None."""
    global _CAVITY
    family = _family(post)
    if _CAVITY is None:
        _CAVITY = _cavity_jits()
    ann = post.annotations
    total = _CAVITY[0](ann.to_device(sharding=None), *_cavity_arrays(post, family), family)
    score = float(total) / ann.n_annotations
    if grid is None:
        return {"score": score, "temperature": None, "tempered_score": None}
    t, gain = cavity_temperature(post, grid, seed)
    return {"score": score, "temperature": t, "tempered_score": score + gain}


def temper(label_probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log q / T)`` row by row (``T = 1``: unchanged; the argmax never changes)."""
    if temperature == 1.0:
        return np.asarray(label_probs, np.float64)
    logq = np.log(np.maximum(np.asarray(label_probs, np.float64), 1e-300)) / temperature
    logq -= logq.max(-1, keepdims=True)
    p = np.exp(logq)
    return p / p.sum(-1, keepdims=True)


def held_out_scores(annotations: Annotations, candidates=CANDIDATES, folds: int = DEFAULT_FOLDS,
                    seed: int = 0, temperatures=TEMPERATURES, **options) -> dict:
    """Cross-validated held-out log-likelihood per annotation of each candidate (see the module
    docstring).  Returns ``{model: {"score", "temperature", "tempered_score", "seconds"}}``;
    ``temperatures``: the grid searched for the best temperature (``None``: no search)."""
    from .fit import fit

    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    fold = annotation_folds(annotations, folds, seed)
    capacity = capacity_bucket(annotations.n_annotations)
    subsets = [(np.flatnonzero(fold == f), _subset(annotations, fold != f, capacity))
               for f in range(folds)]
    n_scored = annotations.n_annotations
    grid = np.asarray([1.0] if temperatures is None else temperatures, np.float64)
    # the temperature is one number: a random sample of held-out rows estimates its curve
    # (every row where a fold holds at most TEMPERATURE_ROWS; the 12 shared datasets all do)
    rng = np.random.default_rng(seed)
    samples = [rows if len(rows) <= TEMPERATURE_ROWS else
               np.sort(rng.choice(rows, TEMPERATURE_ROWS, replace=False)) for rows, _ in subsets]
    scores = {}
    for name in candidates:
        start = time.perf_counter()
        total = 0.0
        per_t = np.zeros(len(grid))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # label-switching warnings of the fold fits
            for (rows, train), sample in zip(subsets, samples):
                post = fit(train, name, **options)
                total += _log_predictive(post, annotations, rows).sum()
                per_t += len(rows) * _tempered_curve(post, annotations, sample, grid)
        per_t /= n_scored
        best = int(np.argmax(per_t))
        scores[name] = {"score": total / n_scored,
                        "temperature": float(grid[best]), "tempered_score": float(per_t[best]),
                        "seconds": time.perf_counter() - start}
    return scores


def cavity_scores(annotations: Annotations, candidates, temperatures=TEMPERATURES,
                  **options) -> tuple[dict, dict]:
    """Fit each candidate once on all the annotations and score it by :func:`cavity_score`.
    Returns ``(scores, posteriors)``; ``scores[model]`` as :func:`held_out_scores` gives them."""
    from .fit import fit

    scores, posts = {}, {}
    for name in candidates:
        start = time.perf_counter()
        with warnings.catch_warnings():  # in post.warnings; select() repeats the chosen one's
            warnings.simplefilter("ignore")
            posts[name] = fit(annotations, name, **options)
        fitted = time.perf_counter()
        scores[name] = {**cavity_score(posts[name], temperatures),
                        "seconds": time.perf_counter() - start, "fit_seconds": fitted - start}
    return scores, posts


def holdout_scores(annotations: Annotations, candidates=CANDIDATES, seed: int = 0,
                   **options) -> tuple[dict, dict, np.ndarray]:
    """The ``"holdout"`` criterion: every candidate is fitted on half of each item's answers
    (:func:`annotation_folds` with 2 folds, at the half's own size) and scored by the exact held-out
    log-likelihood per answer of the other half.  Unlike the cavity it needs no closed form and
    is not optimistic for models with many parameters per worker (Dawid-Skene's K(K-1) against
    one-coin's 1): the cavity removes an answer from its item and its worker but not from the
    other workers it shaped, and on sparse crowds that favours Dawid-Skene where it is the less
    accurate model (experiments/results/stress_default.md).  Returns ``(scores, fold posteriors,
    held-out rows)``."""
    from .fit import MODELS, fit
    from .options import options_for

    fold = annotation_folds(annotations, 2, seed)
    rows = np.flatnonzero(fold == 1)
    if annotations.weight is not None:  # a weight-0 answer is no evidence, held out or not
        rows = rows[annotations.weight[rows] > 0]
    held_weight = None if annotations.weight is None else annotations.weight[rows].astype(float)
    keep = fold == 0
    train = _subset(annotations, keep, capacity_bucket(int(keep.sum())))
    tol = options.get("tol", HOLDOUT_TOL)
    identifiability.prepare(train, tol)  # the half's own pooled skill, at the half fits' tol
    scores, posts, per_answer = {}, {}, {}
    for name in candidates:
        start = time.perf_counter()
        entry = MODELS[name]
        takes_tol = "tol" in options_for(name, entry.default_method,
                                         entry.methods[entry.default_method])
        half = {"tol": tol, **options} if takes_tol else options
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # label-switching / identifiability warnings
            posts[name] = fit(train, name, **half)
        per_answer[name] = np.asarray(_log_predictive(posts[name], annotations, rows), np.float64)
        scores[name] = {"score": _weighted_mean(per_answer[name], held_weight),
                        "temperature": None, "tempered_score": None,
                        "seconds": time.perf_counter() - start}
    for name in candidates:  # paired standard errors of the score differences (choose())
        scores[name]["se"] = {other: _weighted_se(per_answer[name] - per_answer[other], held_weight)
                              for other in candidates if other != name}
    return scores, posts, rows


def _weighted_mean(values: np.ndarray, weight: np.ndarray | None) -> float:
    """The mean of held-out per-answer values, each answer counted by its weight (None: 1);
    0 when nothing is held out (every candidate ties: the simplest is chosen)."""
    if len(values) == 0:
        return 0.0
    return float(values.mean() if weight is None else np.average(values, weights=weight))


def _weighted_se(values: np.ndarray, weight: np.ndarray | None) -> float:
    """The standard error of :func:`_weighted_mean` (the effective number of answers
    ``(sum w)^2 / sum w^2`` with weights; the plain ``std / sqrt(n)`` without)."""
    if weight is None or len(values) < 2:
        return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    n_eff = weight.sum() ** 2 / max(float((weight ** 2).sum()), 1e-300)
    if n_eff <= 1:
        return 0.0
    var = np.average((values - np.average(values, weights=weight)) ** 2, weights=weight)
    return float(np.sqrt(var * n_eff / (n_eff - 1) / n_eff))


_HOLDOUT_TEMPERATURE = None


def holdout_temperature(post: Posterior, annotations: Annotations, rows: np.ndarray,
                        grid=TEMPERATURES, seed: int = 0) -> tuple[float, float]:
    """``(T, gain)`` as :func:`cavity_temperature`, for a fit that did not see ``rows``: its item
    posterior is the held-out answers' cavity as it is (at most
    :data:`CAVITY_TEMPERATURE_ROWS` of them, a random sample), each counted by its weight.

    Only held-out answers of items the fit saw answers of (weight > 0) count: the posterior of an
    item the fit saw no answer of is the class prior, which says nothing about how sharp a
    posterior built from answers should be (with one answer per item every held-out item is such
    an item, and the search ran to its bound, T = 10: every label near uniform).  Without any
    such answer, ``(1.0, 0.0)``: no tempering."""
    global _HOLDOUT_TEMPERATURE
    import jax
    import jax.numpy as jnp

    seen = np.ones(annotations.n_annotations, bool)
    seen[rows] = False  # the fit's answers: all but the held-out ones ...
    if annotations.weight is not None:
        seen &= annotations.weight > 0  # ... that carry evidence
    seen_items = np.bincount(annotations.item[seen], minlength=annotations.n_items) > 0
    rows = rows[seen_items[annotations.item[rows]]]
    if len(rows) == 0:
        return 1.0, 0.0

    if _HOLDOUT_TEMPERATURE is None:
        _HOLDOUT_TEMPERATURE = jax.jit(lambda q, theta, weight, bounds: _golden_temperature(
            _tempered_mean(jnp.log(jnp.maximum(q, 1e-30)), theta, weight), bounds))
    if len(rows) > CAVITY_TEMPERATURE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, CAVITY_TEMPERATURE_ROWS,
                                                          replace=False))
    q = np.asarray(post.label_probs, np.float32)[annotations.item[rows]]
    theta = np.asarray(post.confusion, np.float32)[annotations.worker[rows], :,
                                                   annotations.label[rows]]
    weight = None if annotations.weight is None else annotations.weight[rows]
    bounds = np.asarray([np.min(grid), np.max(grid)], np.float32)
    t, gain = _HOLDOUT_TEMPERATURE(q, theta, weight, bounds)  # one program, the log included
    return float(t), max(float(gain), 0.0)


def select(annotations: Annotations, candidates=None, folds: int = DEFAULT_FOLDS, seed: int = 0,
           temper_probs: bool = True, criterion: str | None = None, **options) -> Posterior:
    """Score every candidate without gold -- by the cavity of one full fit (``criterion=
    "cavity"``, where every candidate has one, :data:`CAVITY`) or by ``folds``-fold cross-
    validation over annotations (``"kfold"``) -- and return the best one's posterior (refitted on
    all the annotations after K-fold) with ``post.selection`` (and ``post.model`` the chosen
    model).  ``options`` go to every candidate's fit (e.g. ``max_iter``)."""
    import pandas as pd

    from .fit import MODELS, fit
    from .options import options_for

    start = time.perf_counter()
    if isinstance(annotations, pd.DataFrame):
        annotations = Annotations.from_dataframe(annotations)
    if not isinstance(annotations, Annotations):
        raise TypeError(f"fit needs Annotations or a DataFrame, got {type(annotations).__name__}")
    if int(folds) != folds or folds < 2:
        raise ValueError(f"folds must be an integer >= 2, got {folds!r}")
    use_gold = options.pop("use_gold", False)
    wanted = CANDIDATES if candidates is None else tuple(candidates)
    unknown = [c for c in wanted if c not in MODELS]
    if candidates is not None and unknown:
        raise ValueError(f"unknown candidate model(s) {unknown}; available: {sorted(MODELS)}")
    names = [c for c in wanted if c in MODELS]
    if candidates is None and options:
        # engine options without a model (prior=, max_iter=, label_prior=, ...) were written for
        # Dawid-Skene, the default before the selection existed: they keep that meaning
        # (and Dawid-Skene's own validation names any option it does not take)
        names = ["dawid_skene"]
    else:
        # a candidate takes part only if its engine takes every option given (e.g. max_iter: not MV)
        names = [c for c in names if set(options) <= set(
            options_for(c, MODELS[c].default_method, MODELS[c].methods[MODELS[c].default_method]))]
        if not names:
            raise ValueError(f"no candidate model takes the options {sorted(options)}; name a model")
    if criterion is None:
        criterion = CRITERION
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if criterion == "cavity" and not all(c in CAVITY for c in names):
        criterion = "kfold"  # every candidate is scored by the same criterion
    grid = TEMPERATURES if temper_probs else None
    posts = {}
    if annotations.n_annotations < 2 * folds or len(names) == 1:
        chosen, scores, criterion = names[0], {}, None
    elif criterion == "cavity":
        # every candidate's score; the temperature only for the chosen one (below)
        scores, posts = cavity_scores(annotations, names, None, **options)
    elif criterion == "holdout":  # every candidate's score; the temperature for the chosen one
        scores, fold_posts, held_rows = holdout_scores(annotations, names, seed, **options)
    else:
        scores = held_out_scores(annotations, names, folds, seed, grid, **options)
    if scores:
        chosen = choose(scores, names, annotations.n_classes)
        if criterion in ("cavity", "holdout") and grid is not None:
            t, gain = (cavity_temperature(posts[chosen], grid, seed) if criterion == "cavity" else
                       holdout_temperature(fold_posts[chosen], annotations, held_rows, grid, seed)
                       if len(held_rows) else (1.0, 0.0))
            scores[chosen].update(temperature=t, tempered_score=scores[chosen]["score"] + gain)
    refit = time.perf_counter()
    if chosen in posts and not use_gold:
        post = posts[chosen]  # the cavity's fit is the fit on all the annotations
        for message in post.warnings:  # said once, for the model chosen (not for the others)
            warnings.warn(message, stacklevel=3)
    else:
        post = fit(annotations, chosen, use_gold=use_gold, **options)
    refit = time.perf_counter() - refit
    temperature = scores[chosen]["temperature"] if scores and temper_probs else 1.0
    if temperature != 1.0:
        post.label_probs = temper(post.label_probs, temperature)
    rules = {"cavity": "highest held-out log-likelihood per annotation, approximate leave-one-"
                       "annotation-out (the cavity of one fit per candidate; no gold)",
             "kfold": f"highest held-out log-likelihood per annotation, {folds}-fold cross-"
                      "validation over annotations (no gold)",
             "holdout": "highest held-out log-likelihood per annotation: each candidate fitted "
                        "on half of every item's answers, scored on the other half (no gold)"}
    post.selection = {
        "rule": rules[criterion] if scores else "engine options without a model: "
                "Dawid-Skene" if (candidates is None and options) else "a single candidate or "
                "too few annotations to cross-validate: the first candidate",
        "criterion": criterion,
        "chosen": chosen,
        "candidates": names,
        "scores": scores,
        "folds": folds if criterion == "kfold" else None,
        "temperature": temperature,
        "refit_seconds": refit,
        "seconds": time.perf_counter() - start,
    }
    return post


def table(selection: dict):
    """``post.selection`` as a DataFrame, one row per candidate: its held-out log-likelihood per
    answer (higher is better), the paired standard error of its difference from the chosen one,
    the temperature (the chosen one's), the seconds its scoring took, and which was chosen."""
    import pandas as pd

    chosen, scores = selection["chosen"], selection.get("scores") or {}
    rows = [{"model": name,
             "held_out_log_lik": sc.get("score"),
             "se_vs_chosen": (sc.get("se") or {}).get(chosen),
             "temperature": sc.get("temperature"),
             "seconds": sc.get("seconds"),
             "chosen": name == chosen} for name, sc in scores.items()]
    if not rows:  # nothing was scored (one candidate, or too few answers)
        rows = [{"model": chosen, "held_out_log_lik": None, "se_vs_chosen": None,
                 "temperature": None, "seconds": None, "chosen": True}]
    return pd.DataFrame(rows)


def describe(selection: dict) -> str:
    """One line: what the default chose and why (``post.selection``)."""
    chosen, scores = selection["chosen"], selection.get("scores") or {}
    if not scores:
        return f"chose {chosen}: {selection['rule']}"
    best = _best(scores, list(scores))
    mine = scores[chosen]["score"]
    others = ", ".join(f"{m} {sc['score']:.4f}" + (
        f" (difference {mine - sc['score']:+.4f} ± {sc['se'][chosen]:.4f})"
        if (sc.get("se") or {}).get(chosen) is not None else "")
        for m, sc in scores.items() if m != chosen)
    if best == chosen:
        why = " (the best score)"
    else:
        margin = _margin(scores, best, chosen)
        why = (f" (within {margin:.4f} of {best}'s score -- one paired standard error, at least "
               f"{TIE:g} -- and no more parameters per worker)")
    line = (f"chose {chosen}{why}: held-out log-likelihood per answer {mine:.4f}"
            f" against {others} [{selection['criterion']}, no gold]")
    if selection.get("temperature", 1.0) != 1.0:
        line += f"; probabilities tempered by T = {selection['temperature']:.2f}"
    return line

