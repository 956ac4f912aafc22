"""What the annotations can and cannot tell about a worker's skill.

A worker's skill is learned only from items that *other* workers also annotated: on an item with a
single annotation, any confusion explains that answer equally well, so EM happily makes the worker
perfect and every one of their items certain (one annotation per item: confidence 1.000, worker
accuracy 1.000, whatever the truth).  :func:`worker_overlap` counts, per worker, the answers given
on items some other worker also answered; a worker with answers but no overlap is *not
identifiable*.

What :func:`crowdinfer.fit` does about it:

* it says so, in ``Posterior.warnings`` (every model and engine);
* for the confusion models (Dawid-Skene, BCC, one-coin: every runner that builds its prior with
  ``runners._confusion_spec``) it falls back to what the data support: each unidentified worker's
  prior is pinned (:data:`PIN` pseudo-answers per row) to the pooled confusion of the workers the
  data do identify -- a Dawid-Skene EM fit on the items with two or more workers, weighted by their
  answers -- or, when no item has two workers, to the homogeneous prior mean (seed 000 appendix E,
  accuracy ``priors.DEFAULT_ACCURACY`` = 0.7).
"""
from __future__ import annotations

import numpy as np

__all__ = ["worker_overlap", "unidentified_workers", "pooled_skill", "prepare", "tie_unidentified",
           "warning", "PIN"]

POOLED = "pooled_skill"  # the Annotations.derived key of pooled_skill (prepare() fills it, at the halves' tol for selection)
PIN = 1e4  # pseudo-answers per confusion row that pin an unidentified worker to the pooled skill


def _distinct_pairs(annotations) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (item, worker) pairs, in O(n) when the annotations are sorted (they are)."""
    m = max(annotations.n_workers, 1)
    key = annotations.item.astype(np.int64) * m + annotations.worker
    if len(key) and np.all(key[1:] >= key[:-1]):
        key = key[np.r_[True, key[1:] != key[:-1]]]
    else:
        key = np.unique(key)
    return key // m, key % m


def worker_overlap(annotations) -> np.ndarray:
    """(M,) per worker: how many of the items they answered were answered by another worker too."""
    item, worker = _distinct_pairs(annotations)
    workers_per_item = np.bincount(item, minlength=annotations.n_items)
    shared = workers_per_item[item] >= 2
    return np.bincount(worker, weights=shared, minlength=annotations.n_workers).astype(np.int64)


def _shared_items(annotations) -> np.ndarray:
    """(N,) bool: items answered by two or more distinct workers.  On item-sorted annotations (they
    are) one segment min and max of the worker per item, in O(n) without forming pairs -- or, when
    every item has the same number of rows, one comparison with each item's first worker."""
    item, worker = np.asarray(annotations.item), np.asarray(annotations.worker)
    out = np.zeros(annotations.n_items, bool)
    if len(item) == 0:
        return out
    if np.all(item[1:] >= item[:-1]):
        counts = annotations.rows_per_item()
        if counts.min() == counts.max():  # an (items, rows) table
            by_item = worker.reshape(annotations.n_items, -1)
            return (by_item != by_item[:, :1]).any(1)
        starts = (np.cumsum(counts) - counts)[counts > 0]
        out[item[starts]] = (np.minimum.reduceat(worker, starts)
                             != np.maximum.reduceat(worker, starts))
        return out
    pair_item, _ = _distinct_pairs(annotations)
    return np.bincount(pair_item, minlength=annotations.n_items) >= 2


def unidentified_workers(annotations) -> np.ndarray:
    """(M,) bool: workers with answers, none of them on an item another worker answered."""
    def compute():
        m = annotations.n_workers
        answered = annotations.rows_per_item() > 0
        alone = answered & ~_shared_items(annotations)  # items with one distinct worker
        if not alone.any():  # every answer has company: every worker with answers overlaps
            return np.zeros(m, bool)
        on_shared = ~alone[annotations.item]
        n = np.bincount(annotations.worker, minlength=m)
        return (n > 0) & (np.bincount(annotations.worker[on_shared], minlength=m) == 0)

    return annotations.derived("unidentified_workers", compute)


def pooled_skill(annotations, tol: float | None = None) -> np.ndarray:
    """(K, K) the confusion the data support for a worker nobody overlaps: the answer-weighted mean
    confusion of a Dawid-Skene EM fit on the items with two or more workers (stopped at ``tol``,
    the loop's default when ``None``), or the homogeneous prior mean when there are none."""
    from .annotations import Annotations
    from .models import dawid_skene, priors

    k = annotations.n_classes
    shared_items = np.flatnonzero(_shared_items(annotations))
    if len(shared_items) == 0:
        mean = priors.homogeneous(k, 1.0, priors.DEFAULT_ACCURACY)
        return mean / mean.sum(-1, keepdims=True)
    keep = np.isin(annotations.item, shared_items)
    sub = Annotations.from_arrays(
        np.searchsorted(shared_items, annotations.item[keep]), annotations.worker[keep],
        annotations.label[keep], n_items=len(shared_items), n_workers=annotations.n_workers,
        n_classes=k, weight=None if annotations.weight is None else annotations.weight[keep])
    from .runners import loop_runner  # here: runners imports this module

    post = loop_runner("dawid_skene", "em", dawid_skene.MAP, 1.0)(
        sub, **({} if tol is None else {"tol": tol}))
    n = np.bincount(sub.worker, weights=sub.weight,
                    minlength=annotations.n_workers).astype(np.float64)
    return np.tensordot(n / n.sum(), np.asarray(post.confusion, np.float64), axes=1)


def _pooled(annotations) -> np.ndarray:
    return annotations.derived(POOLED, lambda: pooled_skill(annotations))


def prepare(annotations, tol: float | None = None) -> None:
    """Fit the pooled skill now (stopped at ``tol``) when some worker overlaps nobody
    (:func:`tie_unidentified` will need it): its own fit then does not run while the caller
    holds the annotations on the device (twice the device memory at once)."""
    if unidentified_workers(annotations).any():
        annotations.derived(POOLED, lambda: pooled_skill(annotations, tol))


def tie_unidentified(annotations, counts: np.ndarray) -> np.ndarray:
    """Prior pseudo-counts ((K, K) or (M, K, K)) with every unidentified worker's rows replaced by
    ``PIN`` pseudo-answers of :func:`pooled_skill`; unchanged when every worker is identified."""
    lost = unidentified_workers(annotations)
    if not lost.any():
        return counts
    m, k = annotations.n_workers, annotations.n_classes
    out = np.array(np.broadcast_to(counts, (m, k, k)), dtype=np.float64)
    pooled = _pooled(annotations) + 1e-3  # no zero cell: BCC's Dirichlet(beta) needs beta > 0
    out[lost] = PIN * pooled / pooled.sum(-1, keepdims=True)
    return out


def warning(annotations) -> str | None:
    """The message for ``Posterior.warnings``, or ``None`` when every worker is identified."""
    lost = unidentified_workers(annotations)
    if not lost.any():
        return None
    ids = np.asarray(annotations.worker_ids)[lost][:5].tolist()
    more = "" if lost.sum() <= 5 else f" and {int(lost.sum()) - 5} more"
    return (
        f"{int(lost.sum())} of {annotations.n_workers} workers ({ids}{more}) share no item with any "
        "other worker: their skill is not identifiable from these annotations, so the confidence "
        "of their items is not either. Dawid-Skene, BCC and one-coin tie them to the pooled skill "
        "of the workers who do overlap (or to the prior, accuracy 0.7, when nobody overlaps); "
        "other models report what their prior gives. Collect overlapping answers to measure it."
    )
