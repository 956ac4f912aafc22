"""The default of :func:`crowdinfer.fit`: choose the model by held-out annotation likelihood.

No gold label is used.  The annotations are split at random into ``folds`` parts; for each part,
every candidate model is fitted on the other parts and scored on the held-out annotations by the
probability it gives them::

    log p(z_n | Z_{-f}) = log sum_k q_{-f}(y_{i_n} = k) theta_{-f}[w_n, k, z_n]

where ``q_{-f}`` is the label posterior of item ``i_n`` given its *other* (training) annotations
and ``theta_{-f}`` the worker's estimated confusion.  A model that over-fits its workers (classic
Dawid-Skene with sparse workers), that is too rigid for them (one-coin when workers confuse
some classes more than others), or whose labels are wrong (a label-switched solution) predicts
held-out answers badly.  The candidate with the highest mean held-out log-likelihood per
annotation is refitted on all annotations; ``post.selection`` records every candidate's score.

**Calibration.**  The same held-out fits also give a temperature for the label posterior (gold-
free): ``q_T = softmax(log q / T)`` with ``T`` maximising the held-out likelihood of the chosen
model.  Dividing the log posterior by ``T`` never changes which label is most probable, so it
changes probabilities (``confidence``, risk) but not accuracy.  ``temper=False`` switches it off.

The candidate set, the number of folds and the temperature search were chosen by leave-one-
dataset-out over the 12 datasets of ``../shared/data`` (``experiments/accuracy.py``,
``experiments/results/accuracy.md``).

Cost: one fit per candidate and fold plus the final fit; the held-out fits are padded to the
full data's annotation capacity, so each candidate compiles once (the compile is what a first
call pays; later calls reuse it).
"""
from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np

from .annotations import Annotations, capacity_bucket
from .posterior import Posterior

__all__ = ["CANDIDATES", "DEFAULT_FOLDS", "select", "held_out_scores", "temper"]

# In order of preference on exact ties.  Chosen by leave-one-dataset-out over ../shared/data
# (experiments/results/accuracy.md) from dawid_skene, bcc, one_coin and majority_vote: the subset
# and number of folds (2, 3 or 5) that never lose more than 0.005 to majority vote and have the
# best mean accuracy on the 12 datasets, fewer candidates and folds on ties.  (The models added by
# issue 14 -- MACE, BWA, EBCC, Wawa, ZBS, weighted vote -- were scored on only 3 of the 12
# datasets in time, so they are not candidates yet: select(..., candidates=...) takes any.)
CANDIDATES = ("dawid_skene", "bcc", "one_coin")
DEFAULT_FOLDS = 2
TEMPERATURES = np.exp(np.linspace(np.log(0.1), np.log(10.0), 47))
TEMPERATURE_ROWS = 20_000  # held-out rows per fold that the temperature search looks at
FLOOR = 1e-6  # probability floor of a held-out answer (a zero would make one model's score -inf)


@dataclasses.dataclass(frozen=True, eq=False)
class _Padded(Annotations):
    """Annotations that pad to a given capacity, so a fold fit reuses the full fit's compile."""

    capacity: int = 0

    def to_device(self, capacity=None, sharding="auto"):
        return super().to_device(self.capacity if capacity is None else capacity, sharding)


def _subset(annotations: Annotations, keep: np.ndarray, capacity: int) -> Annotations:
    return _Padded(
        item=annotations.item[keep], worker=annotations.worker[keep], label=annotations.label[keep],
        item_ids=annotations.item_ids, worker_ids=annotations.worker_ids,
        classes=annotations.classes, gold=None, features=annotations.features,
        capacity=capacity,
    )


def _fold_of(annotations: Annotations, folds: int, seed: int) -> np.ndarray:
    """Fold of each annotation: a random permutation, dealt round-robin within each item, so
    every item with at least ``folds`` annotations keeps some in every training set."""
    rng = np.random.default_rng(seed)
    n = annotations.n_annotations
    order = np.lexsort((rng.random(n), annotations.item))  # shuffled within item
    item = annotations.item[order]
    start = np.searchsorted(item, item, side="left")  # first row of each item (sorted)
    rank = np.arange(n) - start
    offset = rng.integers(0, folds, size=annotations.n_items)[item]  # random start per item
    fold = np.empty(n, np.int64)
    fold[order] = (rank + offset) % folds
    return fold


def _log_predictive(post: Posterior, annotations: Annotations, rows: np.ndarray,
                    temperature: float = 1.0) -> np.ndarray:
    """``log sum_k q_T(y_i = k) theta[w, k, z]`` for the annotations ``rows`` (the label
    posterior is gathered for those rows first, then tempered: no pass over every item)."""
    q = temper(post.label_probs[annotations.item[rows]], temperature)
    theta = np.asarray(post.confusion, np.float64)[annotations.worker[rows], :,
                                                   annotations.label[rows]]
    return np.log(np.maximum((q * theta).sum(-1), FLOOR))


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
    fold = _fold_of(annotations, folds, seed)
    capacity = capacity_bucket(annotations.n_annotations)
    subsets = [(np.flatnonzero(fold == f), _subset(annotations, fold != f, capacity))
               for f in range(folds)]
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
        per_t /= annotations.n_annotations
        best = int(np.argmax(per_t))
        scores[name] = {"score": total / annotations.n_annotations,
                        "temperature": float(grid[best]), "tempered_score": float(per_t[best]),
                        "seconds": time.perf_counter() - start}
    return scores


def select(annotations: Annotations, candidates=None, folds: int = DEFAULT_FOLDS, seed: int = 0,
           temper_probs: bool = True, **options) -> Posterior:
    """Fit every candidate under cross-validation over annotations, refit the best on all the
    annotations, and return its posterior with ``post.selection`` (and ``post.model`` the chosen
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
    if annotations.n_annotations < 2 * folds or len(names) == 1:
        chosen, scores = names[0], {}
    else:
        scores = held_out_scores(annotations, names, folds, seed,
                                 TEMPERATURES if temper_probs else None, **options)
        chosen = max(names, key=lambda c: (scores[c]["score"], -names.index(c)))
    post = fit(annotations, chosen, use_gold=use_gold, **options)
    temperature = scores[chosen]["temperature"] if scores and temper_probs else 1.0
    if temperature != 1.0:
        post.label_probs = temper(post.label_probs, temperature)
    post.selection = {
        "rule": f"highest held-out log-likelihood per annotation, {folds}-fold cross-validation "
                "over annotations (no gold)" if scores else "engine options without a model: "
                "Dawid-Skene" if (candidates is None and options) else "a single candidate or "
                "too few annotations to cross-validate: the first candidate",
        "chosen": chosen,
        "candidates": names,
        "scores": scores,
        "folds": folds,
        "temperature": temperature,
        "seconds": time.perf_counter() - start,
    }
    return post
