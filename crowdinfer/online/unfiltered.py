"""Unfiltered data: a "None of these" class (seed 000 sec. 4.5.7, Fig. 13).

When the requester has not filtered the images, some belong to none of the K target classes.  The
loop needs nothing special: the label set gets a (K+1)-th class, "None of these", the workers'
confusions a row and a column for it, and the requester a few prototypes of irrelevant items.
The quality measure is the mean precision of the target classes.
"""
from __future__ import annotations

import numpy as np

__all__ = ["add_none_class", "target_precision"]


def add_none_class(confusion, false_none: float = 0.02, true_none: float = 0.8) -> np.ndarray:
    """Extend worker confusions (M, K, K) to (M, K+1, K+1), the last class "None of these":
    a worker answers "None" for an in-set item with probability ``false_none`` (taken from its
    answers in proportion), and for an out-of-set item with probability ``true_none``, else one
    of the K classes at random."""
    conf = np.asarray(confusion, dtype=np.float64)
    if conf.ndim != 3 or conf.shape[1] != conf.shape[2]:
        raise ValueError(f"confusion must be (M, K, K), got {conf.shape}")
    if not (0 <= false_none < 1 and 0 < true_none <= 1):
        raise ValueError("need 0 <= false_none < 1 and 0 < true_none <= 1")
    m, k, _ = conf.shape
    out = np.zeros((m, k + 1, k + 1))
    out[:, :k, :k] = conf * (1 - false_none)
    out[:, :k, k] = false_none
    out[:, k, :k] = (1 - true_none) / k
    out[:, k, k] = true_none
    return out


def target_precision(decision, gold, none_class: int) -> float:
    """Mean over the target classes of the precision of the items decided as that class."""
    decision, gold = np.asarray(decision), np.asarray(gold)
    precisions = [np.mean(gold[decision == c] == c) for c in range(none_class) if np.any(decision == c)]
    return float(np.mean(precisions)) if precisions else float("nan")
