"""The pool of a simulated online run: clean prototypes picked from labelled items, and simulated
workers by kind (what ``crowdinfer online`` builds from its features table).

    table = formats.read_features("features.csv")
    proto, pool = pick_prototypes(table.labels, len(table.classes), per_class=10, seed=0)
    confusion = simulated_workers("uniform", 50, table.classes, accuracy=0.7)
    task = online.make_task(table.features[pool], 50, table.features[proto],
                            table.labels[proto], len(table.classes))
    session = online.run_simulation(config, task, confusion, table.labels[pool])
"""
from __future__ import annotations

import numpy as np

__all__ = ["WORKER_KINDS", "pick_prototypes", "simulated_workers"]

#: The kinds of :func:`simulated_workers` (``dataset:NAME`` names a dataset of shared/data).
WORKER_KINDS = ("uniform", "structured", "perfect", "dataset:NAME")


def pick_prototypes(labels, n_classes: int, per_class: int, seed: int = 0):
    """``(prototypes, pool)``: at most ``per_class`` item indices of each class drawn at random
    (``seed``; class by class, a permutation of the class's items), and the other items' indices,
    sorted.  The prototypes are shown to the learner as clean examples and are not annotated."""
    labels = np.asarray(labels)
    if int(per_class) < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be one class per item, got shape {labels.shape}")
    if per_class == 0:
        return np.zeros(0, np.int64), np.arange(len(labels))
    rng = np.random.default_rng(seed)
    proto = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                            for c in range(n_classes)])
    return proto, np.setdiff1d(np.arange(len(labels)), proto)


def simulated_workers(kind: str, n_workers: int, classes, *, accuracy: float = 0.7,
                      seed: int = 0) -> np.ndarray:
    """Confusion matrices ``(n_workers, K, K)`` of simulated workers for the classes ``classes``:

    * ``uniform``: every worker right with probability ``accuracy``, errors spread evenly;
    * ``perfect``: always right;
    * ``structured``: the AMT statistics of seed 000 (``simulate.amt_structured_workers``; the
      classes must be ImageNet100 wnids);
    * ``dataset:NAME``: confusions from a dataset of shared/data with the same number of classes
      (``simulate.dataset_workers``).
    """
    from crowdinfer import simulate

    k = len(classes)
    if kind == "uniform":
        if not 0.0 < accuracy <= 1.0:
            raise ValueError(f"accuracy must lie in (0, 1], got {accuracy}")
        return simulate.uniform_noise_workers(np.broadcast_to(accuracy * np.eye(k), (n_workers, k, k)))
    if kind == "perfect":
        return simulate.perfect_workers(n_workers, k)
    if kind == "structured":
        return simulate.amt_structured_workers(n_workers, [str(c) for c in classes], seed=seed)
    if kind.startswith("dataset:"):
        from crowdinfer.datasets import load

        ann = load(kind.split(":", 1)[1]).annotations
        if ann.n_classes != k:
            raise ValueError(f"{kind} has {ann.n_classes} classes, the items {k}")
        return simulate.dataset_workers(ann, n_workers, seed=seed)
    raise ValueError(f"unknown workers {kind!r}: use uniform, structured, perfect or dataset:NAME")
