"""Posterior: what a fit returns -- label distributions, worker confusions, and views of them."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import pandas as pd

from .annotations import Annotations


def jax_softmax(logits):
    import jax

    return jax.nn.softmax(logits, axis=-1)

__all__ = ["Posterior", "expected_accuracy"]


def expected_accuracy(label_probs: np.ndarray, gold: np.ndarray) -> float:
    """Accuracy of the argmax labels on items with gold (``gold >= 0``), a tie among ``t`` classes
    counting ``1/t`` -- the expected accuracy of breaking ties at random."""
    has = gold >= 0
    if not has.any():
        raise ValueError("no item has a gold label")
    p = np.asarray(label_probs)[has]
    best = np.isclose(p, p.max(-1, keepdims=True), rtol=0, atol=1e-6)
    hit = best[np.arange(len(p)), gold[has]]
    return float(np.mean(hit / best.sum(-1)))


@dataclasses.dataclass(eq=False)
class Posterior:
    """The result of :func:`crowdinfer.fit`.

    Attributes:
        annotations: the data it was fitted on.
        model, method: what produced it.
        label_probs: (N, K) posterior probability of each item's true label.
        confusion: (M, K, K) worker confusions, ``confusion[j, k, l] = p(label l | truth k)``.
        class_prior: (K,) class proportions, or ``None`` when a per-item prior was used.
        history: objective per iteration (the log joint density for EM).
        n_iter, converged: iterations run and whether the stopping rule fired.
        params: the engine's raw parameter estimates (posterior means for NUTS).
        warnings: problems found in the solution (e.g. non-dominant diagonals).
        samples, diagnostics: for NUTS, the draws and their r-hat / ESS per site.
    """

    annotations: Annotations
    model: str
    method: str
    label_probs: np.ndarray
    confusion: np.ndarray
    class_prior: np.ndarray | None
    history: np.ndarray
    n_iter: int
    converged: bool
    params: dict = dataclasses.field(default_factory=dict)
    warnings: list = dataclasses.field(default_factory=list)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    samples: dict | None = None  # MCMC draws, each (chains, draws, ...)
    diagnostics: dict | None = None  # MCMC: max r_hat and min ESS per site
    classifier: dict | None = None  # learned label prior: hidden, params, feature mean/std
    _arviz: dict = dataclasses.field(default_factory=dict, init=False, repr=False)  # to_arviz cache
    selection: dict | None = None  # fit's default: candidates, held-out scores, chosen model
    gold_used: np.ndarray | None = None  # (N,) bool: items clamped to their gold label in training
    calibration: dict | None = None  # fit(calibrate=True): T, eps (crowdinfer.calibration)

    def __post_init__(self):
        for name in ("label_probs", "confusion", "class_prior"):
            value = getattr(self, name)
            if value is not None and not np.all(np.isfinite(np.asarray(value))):
                raise ValueError(
                    f"{self.model}/{self.method} produced NaN or inf in {name}: the fit diverged "
                    "(for gradient steps, try a smaller learning_rate)"
                )
        if self.method != "vote":  # a vote cannot switch labels; models that infer skills can
            self._check_diagonals()

    def __repr__(self) -> str:
        a = self.annotations
        return (
            f"Posterior(model={self.model!r}, method={self.method!r}, {a.n_items} items, "
            f"{a.n_workers} workers, {a.n_classes} classes, n_iter={self.n_iter}, "
            f"converged={self.converged})"
        )

    def selection_table(self):
        """What ``fit(ann)`` with no model chose, and why: one row per candidate model with its
        held-out log-likelihood per answer, the standard error of its difference from the chosen
        one, the temperature and which was chosen (:func:`crowdinfer.selection.table`)."""
        from .selection import table

        if self.selection is None:
            raise ValueError(f"this posterior comes from fit(..., model={self.model!r}): no model "
                             "was chosen; fit without a model to get the choice and its scores")
        return table(self.selection)

    # ------------------------------------------------------------------ labels
    @property
    def labels(self) -> np.ndarray:
        """Most probable class code per item, shape (N,)."""
        return np.argmax(self.label_probs, axis=-1)

    @property
    def confidence(self) -> np.ndarray:
        return np.max(self.label_probs, axis=-1)

    def accuracy(self, gold=None) -> float:
        """Accuracy against gold (the annotations' own gold by default), ties split evenly.

        Only items that were *not* clamped to their gold label in training count (``fit`` clamps
        the annotations' gold with ``use_gold=True``): scoring a label that was given as input
        would say nothing.  Raises ``ValueError`` when no such item is left."""
        if gold is None:
            if self.annotations.gold is None:
                raise ValueError("no gold labels: pass gold= or attach them to the annotations")
            gold = self.annotations.gold
        elif not isinstance(gold, np.ndarray):
            gold = self.annotations.with_gold(gold).gold
        gold = np.asarray(gold)
        if self.gold_used is not None and self.gold_used.any():
            gold = np.where(self.gold_used, -1, gold)
            if not (gold >= 0).any():
                raise ValueError(
                    f"all {int(self.gold_used.sum())} gold items were clamped to their gold label "
                    "in training (fit(..., use_gold=True)), so they cannot score it: fit "
                    "with use_gold=False to score on them, or hold some gold out of the annotations")
        return expected_accuracy(self.label_probs, gold)

    def to_pandas(self, probabilities: bool = False) -> pd.DataFrame:
        """One row per item: ``item, label, confidence`` with the user's ids and class names
        (plus one ``p_<class>`` column per class if ``probabilities``)."""
        a = self.annotations
        df = pd.DataFrame(
            {"item": a.item_ids, "label": a.classes[self.labels], "confidence": self.confidence}
        )
        if probabilities:
            for k, name in enumerate(a.classes):
                df[f"p_{name}"] = self.label_probs[:, k]
        return df

    def predict_proba(self, features) -> np.ndarray:
        """Class probabilities from the learned label prior for any items' features, e.g. items
        nobody annotated (needs ``label_prior="classifier"``)."""
        if self.classifier is None:
            raise ValueError("this posterior has no learned classifier: fit with label_prior='classifier'")
        from .models.learned_prior import predict_logits

        c = self.classifier
        x = np.asarray(features, np.float32)
        width = np.shape(c["mean"])[-1]
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"features must be an (items, {width}) array like those the "
                             f"classifier was fitted on, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features hold NaN or infinite values")
        x = (x - c["mean"]) / c["std"]
        logits = predict_logits(self.annotations.n_classes, c["hidden"], c["params"], x)
        return np.asarray(jax_softmax(logits))

    def predict(self, features) -> np.ndarray:
        """Most probable class code for any items' features (see :meth:`predict_proba`)."""
        return np.argmax(self.predict_proba(features), axis=-1)

    # ----------------------------------------------------------------- workers
    def _class_weights(self) -> np.ndarray:
        if self.class_prior is not None:
            return np.asarray(self.class_prior)
        return self.label_probs.mean(0)

    def worker_skills(self) -> pd.DataFrame:
        """One row per worker:

        ``accuracy``           p(correct) = sum_k pi_k theta[j, k, k] under the class proportions;
        ``balanced_accuracy``  mean of the confusion diagonal;
        ``agreement``          mean posterior probability of the labels the worker gave;
        ``n_annotations``      how many annotations the worker gave.
        """
        a = self.annotations
        diag = np.diagonal(self.confusion, axis1=1, axis2=2)
        agree = np.bincount(
            a.worker, weights=self.label_probs[a.item, a.label], minlength=a.n_workers
        )
        n = a.annotations_per_worker()
        return pd.DataFrame(
            {
                "worker": a.worker_ids,
                "accuracy": diag @ self._class_weights(),
                "balanced_accuracy": diag.mean(-1),
                "agreement": np.where(n > 0, agree / np.maximum(n, 1), np.nan),
                "n_annotations": n,
            }
        )

    def confusion_frame(self) -> pd.DataFrame:
        """The confusions as a long table ``worker, true_class, observed_class, probability``."""
        a = self.annotations
        m, k, _ = self.confusion.shape
        j, t, o = np.meshgrid(np.arange(m), np.arange(k), np.arange(k), indexing="ij")
        return pd.DataFrame(
            {
                "worker": a.worker_ids[j.ravel()],
                "true_class": a.classes[t.ravel()],
                "observed_class": a.classes[o.ravel()],
                "probability": self.confusion.ravel(),
            }
        )

    # ------------------------------------------------------------ diagnostics
    def to_arviz(self, num_draws: int = 500, seed: int = 0, label_probs: bool = True):
        """An ``arviz.InferenceData`` of worker-confusion draws (see :mod:`crowdinfer.diagnostics`)
        for every model and engine.  Computed once per ``(num_draws, seed)`` and cached: the plots
        and later calls reuse it (one with ``label_probs`` serves calls without)."""
        cached = self._arviz.get((num_draws, seed))
        if cached is not None and (not label_probs or "label_probs" in cached.posterior):
            return cached
        from .diagnostics import to_arviz

        idata = to_arviz(self, num_draws=num_draws, seed=seed, label_probs=label_probs)
        self._arviz[(num_draws, seed)] = idata
        return idata

    def _check_diagonals(self) -> None:
        """Label switching shows as a pooled confusion whose diagonal does not dominate its rows."""
        n = self.annotations.annotations_per_worker().astype(float)
        if n.sum() == 0:
            return
        pooled = np.tensordot(n / n.sum(), self.confusion, axes=1)
        present = self.label_probs.sum(0) >= 1.0  # a class no item belongs to has no evidence
        bad = np.flatnonzero((np.argmax(pooled, axis=-1) != np.arange(pooled.shape[0])) & present)
        if len(bad):
            names = np.asarray(self.annotations.classes)[bad].tolist()
            msg = (
                f"the pooled worker confusion does not put most mass on the diagonal for class(es) "
                f"{names}: the solution may have switched labels, or workers rarely recognise them"
            )
            self.warnings.append(msg)
            warnings.warn(msg, stacklevel=4)
