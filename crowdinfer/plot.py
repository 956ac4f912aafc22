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


def worker_accuracy(posterior: Posterior, idata=None, ax=None, prob: float = 0.94,
                    top: int | None = None, worst: int | None = None):
    """Workers' accuracy (sum_k pi_k theta[k, k]) with credible intervals, one named row per
    worker, least accurate at the top; the marker size grows with the number of annotations.

    ``worst`` keeps the N least accurate workers (by posterior mean), ``top`` the N busiest
    (before ``worst``).  The figure grows with the rows (0.16 in each, labels in 6-8 pt), so
    every worker id stays readable at 200 workers."""
    a = posterior.annotations
    draws = np.asarray(_idata(posterior, idata).posterior["accuracy"])
    draws = draws.reshape((-1, draws.shape[-1]))
    n = a.annotations_per_worker()
    keep = np.arange(a.n_workers) if top is None else np.argsort(-n, kind="stable")[:top]
    mean_all = draws.mean(0)
    order = keep[np.argsort(mean_all[keep], kind="stable")]
    if worst is not None:
        order = order[:worst]
    mean = mean_all[order]
    lo, hi = _interval(draws[:, order], prob)
    rows = len(order)
    ax = _axes(ax, (7.5, max(3.0, 0.16 * rows + 1.4)))
    y = np.arange(rows)
    ax.hlines(y, lo, hi, color="tab:blue", alpha=0.45, lw=1.5)
    size = 8 + 40 * np.sqrt(n[order] / max(n.max(), 1))
    ax.scatter(mean, y, s=size, color="tab:blue", zorder=3)
    ax.axvline(1.0 / a.n_classes, color="grey", ls="--", lw=1, label="chance")
    ax.set_yticks(y, [str(w) for w in a.worker_ids[order]], fontsize=8 if rows <= 60 else 6)
    ax.set_ylim(rows - 0.5, -0.5)  # least accurate at the top
    ax.set_xlim(0, 1.02)
    ax.set_xlabel(f"accuracy: posterior mean and {prob:.0%} interval")
    ax.set_ylabel("worker")
    which = f"the {rows} least accurate of {a.n_workers}" if rows < len(keep) else f"{rows}"
    ax.set_title(f"{which} workers ({posterior.model}/{posterior.method})")
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
