"""Figures of a posterior (matplotlib): a worker's confusion, all workers' accuracy, label confidence.

Each function takes a :class:`~crowdinfer.Posterior` and optionally its ``InferenceData`` (so the
draws are made once), draws on ``ax`` (a new figure if ``None``) and returns the axes.
"""
from __future__ import annotations

import numpy as np

from .posterior import Posterior

__all__ = ["confusion_matrix", "worker_accuracy", "label_confidence"]


def _axes(ax, size):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=size, layout="constrained")
    return ax


def _idata(posterior, idata):
    return posterior.to_arviz(label_probs=False) if idata is None else idata


def _interval(values: np.ndarray, prob: float = 0.94):
    lo, hi = np.quantile(values, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    return lo, hi


def confusion_matrix(posterior: Posterior, worker=None, idata=None, ax=None, prob: float = 0.94):
    """One worker's confusion: colour = posterior mean, text = mean and the width of the central
    ``prob`` credible interval.  ``worker`` is the user's worker id (default: the busiest)."""
    a = posterior.annotations
    if worker is None:
        j = int(np.argmax(a.annotations_per_worker()))
    else:
        matches = np.flatnonzero(a.worker_ids == worker)
        if not len(matches):
            raise ValueError(f"unknown worker {worker!r}")
        j = int(matches[0])
    draws = np.asarray(_idata(posterior, idata).posterior["confusion"])[:, :, j]
    draws = draws.reshape((-1,) + draws.shape[2:])
    mean = draws.mean(0)
    lo, hi = _interval(draws, prob)
    k = a.n_classes
    ax = _axes(ax, (1.2 + 0.8 * k, 1.0 + 0.7 * k))
    image = ax.imshow(mean, vmin=0, vmax=1, cmap="Blues")
    for t in range(k):
        for o in range(k):
            colour = "white" if mean[t, o] > 0.6 else "black"
            ax.text(o, t, f"{mean[t, o]:.2f}\n±{(hi[t, o] - lo[t, o]) / 2:.2f}", ha="center",
                    va="center", fontsize=8, color=colour)
    names = [str(c) for c in a.classes]
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("observed class")
    ax.set_ylabel("true class")
    n = int(a.annotations_per_worker()[j])
    ax.set_title(f"worker {a.worker_ids[j]} ({n} annotations)\nmean ± half {prob:.0%} interval")
    ax.figure.colorbar(image, ax=ax, shrink=0.8, label="p(observed | true)")
    return ax


def worker_accuracy(posterior: Posterior, idata=None, ax=None, prob: float = 0.94, top: int | None = None):
    """Every worker's accuracy (sum_k pi_k theta[k, k]) with its credible interval, sorted; the
    marker size grows with the number of annotations.  ``top`` keeps the busiest workers only."""
    a = posterior.annotations
    draws = np.asarray(_idata(posterior, idata).posterior["accuracy"])
    draws = draws.reshape((-1, draws.shape[-1]))
    n = a.annotations_per_worker()
    keep = np.arange(a.n_workers) if top is None else np.argsort(-n)[:top]
    mean = draws.mean(0)[keep]
    lo, hi = _interval(draws[:, keep], prob)
    order = np.argsort(mean)
    ax = _axes(ax, (8, 4))
    x = np.arange(len(keep))
    ax.vlines(x, lo[order], hi[order], color="tab:blue", alpha=0.4, lw=1.5)
    size = 8 + 40 * np.sqrt(n[keep][order] / max(n.max(), 1))
    ax.scatter(x, mean[order], s=size, color="tab:blue", zorder=3)
    ax.axhline(1.0 / a.n_classes, color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("workers, sorted by estimated accuracy")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{len(keep)} workers: posterior mean and {prob:.0%} interval "
                 f"({posterior.model}/{posterior.method})")
    ax.legend(loc="lower right")
    return ax


def label_confidence(posterior: Posterior, ax=None, bins: int = 20):
    """Histogram of each item's top label probability; split into right and wrong where gold
    labels are known."""
    ax = _axes(ax, (6, 4))
    conf = posterior.confidence
    edges = np.linspace(1.0 / posterior.annotations.n_classes, 1.0, bins + 1)
    gold = posterior.annotations.gold
    if gold is not None and (gold >= 0).any():
        has = gold >= 0
        right = posterior.labels[has] == gold[has]
        ax.hist([conf[has][right], conf[has][~right]], bins=edges, stacked=True,
                label=["right (gold)", "wrong (gold)"], color=["tab:green", "tab:red"])
        if (~has).any():
            ax.hist(conf[~has], bins=edges, histtype="step", color="black", label="no gold")
        ax.legend(loc="upper left")
    else:
        ax.hist(conf, bins=edges, color="tab:blue")
    ax.set_xlabel("confidence: max_k p(y_i = k | annotations)")
    ax.set_ylabel("items")
    ax.set_title(f"label confidence ({posterior.model}/{posterior.method})")
    return ax
