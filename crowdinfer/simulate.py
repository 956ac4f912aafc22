"""Simulated annotators: worker confusion matrices, and answers drawn from them.

Seed 000 (sec. 4.2, appendix G) shows that workers with *uniform* label noise give over-optimistic
results, and simulates *structured* noise from real Amazon Mechanical Turk statistics.  This module
builds worker pools of confusion matrices ``(M, K, K)``, ``conf[j, k, l] = p(answer l | truth k)``:

* :func:`amt_structured_workers` -- appendix G, Listing 1, from the real AMT counts of
  ``../shared/data/imagenet100_amt`` (58 workers, 6 groups of confusable classes);
* :func:`uniform_noise_workers` -- the same per-class accuracy, errors spread evenly: the
  over-optimistic baseline of seed 000 Fig. 5;
* :func:`perfect_workers`;
* :func:`dataset_workers` -- confusions from a real dataset's own annotations against its gold;

and :func:`annotate` draws the answers to a batch of (item, worker) questions, jitted, from a key.

Sparse, class-imbalanced annotation (seed 004 sec. 4): :func:`long_tailed` subsamples the items of
a dataset so that its class sizes decay exponentially to a given imbalance ratio (the long-tailed
setting of Zhou et al. 2020), and :func:`remove_annotations` drops a random fraction of the
annotations (seed 004 sec. 4.3).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .annotations import Annotations

__all__ = [
    "weak_features",
    "AMTStatistics",
    "load_amt",
    "amt_structured_workers",
    "uniform_noise_workers",
    "perfect_workers",
    "dataset_workers",
    "annotate",
    "long_tailed_counts",
    "long_tailed",
    "remove_annotations",
]


@dataclass(frozen=True)
class AMTStatistics:
    """The real AMT worker statistics of seed 000's ImageNet100 sandbox."""

    wnids: list  # the 100 WordNet ids, the class order of every matrix
    names: list  # their class names
    groups: list  # 6 lists of wnids: disjoint subsets of classes confused mostly internally
    group_workers: list  # per group: (workers, 100, 100) integer counts [true class, answer]


def load_amt(path=None) -> AMTStatistics:
    """Read ``group_workers.json`` and ``groups.txt`` (default ``shared/data/imagenet100_amt``)."""
    from .datasets import shared_data_dir

    folder = Path(path) if path is not None else shared_data_dir() / "imagenet100_amt"
    source = folder / "group_workers.json"
    if not source.exists():
        raise FileNotFoundError(
            f"no group_workers.json in {folder}: the AMT statistics of seed 000 "
            "(imagenet100_amt) are needed for structured-noise workers"
        )
    raw = json.loads(source.read_text())
    # groups.txt: one wnid a line, groups separated by blank lines
    blocks = (folder / "groups.txt").read_text().strip().split("\n\n")
    groups = [block.split() for block in blocks if block.strip()]
    workers = [np.asarray(v, dtype=np.float64) for _, v in sorted(raw["group_workers"].items())]
    return AMTStatistics(list(raw["imagenet100"]), list(raw["imagenet100_name"]), groups, workers)


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def amt_structured_workers(n_workers: int, classes, seed=0, smooth_ratio: float = 0.1,
                           noise_level: float = 0.03, stats: AMTStatistics | None = None) -> np.ndarray:
    """Structured-noise workers for the experiment ``classes`` (wnids, or indices into the 100
    ImageNet100 classes), exactly as seed 000's appendix G (Listing 1) and its official code:

    1. for each of the 6 class groups, the group's pooled counts times ``smooth_ratio`` plus the
       counts of one real worker of that group drawn at random; summed over the groups (100 x 100);
    2. restricted to the experiment classes and row-normalised;
    3. in each row, the mass on classes of the same group (the diagonal included) is scaled by
       ``1 - noise_level`` and ``noise_level`` (0.03: the cross-group confusion measured on AMT) is
       spread evenly over the experiment classes of the other groups.

    Returns (n_workers, K, K).
    """
    stats = load_amt() if stats is None else stats
    if not 0.0 <= noise_level < 1.0 or smooth_ratio < 0:
        raise ValueError("need 0 <= noise_level < 1 and smooth_ratio >= 0")
    index = _class_index(classes, stats)
    group_of = {w: g for g, members in enumerate(stats.groups) for w in members}
    groups = np.array([group_of[stats.wnids[i]] for i in index])
    same = groups[:, None] == groups[None, :]
    rng = _rng(seed)
    out = np.empty((n_workers, len(index), len(index)))
    for j in range(n_workers):
        cm = sum(smooth_ratio * v.sum(0) + v[rng.integers(len(v))] for v in stats.group_workers)
        cm = cm[np.ix_(index, index)]
        cm = cm / (cm.sum(1, keepdims=True) + 1e-8)
        others = (~same).sum(1, keepdims=True)
        density = np.where(same, cm, 0.0).sum(1, keepdims=True)  # the row's mass in its group
        noise = np.where(others > 0, noise_level, 0.0)
        cm = np.where(same, cm * (1 - noise), cm + density * noise / np.maximum(others, 1))
        out[j] = cm / cm.sum(1, keepdims=True)
    return out


def _class_index(classes, stats: AMTStatistics) -> np.ndarray:
    classes = list(classes)
    if all(isinstance(c, (int, np.integer)) for c in classes):
        index = np.asarray(classes)
        if index.min() < 0 or index.max() >= len(stats.wnids):
            raise ValueError(f"class indices must lie in 0..{len(stats.wnids) - 1}")
        return index
    lookup = {w: i for i, w in enumerate(stats.wnids)}
    missing = [c for c in classes if c not in lookup]
    if missing:
        raise ValueError(f"unknown ImageNet100 wnid(s): {missing[:5]}")
    return np.array([lookup[c] for c in classes])


def uniform_noise_workers(confusion: np.ndarray) -> np.ndarray:
    """The same per-class accuracies (diagonals) with the errors spread evenly over the other
    classes: uniform label noise, the over-optimistic simulation of seed 000 Fig. 5."""
    confusion = np.asarray(confusion, dtype=np.float64)
    k = confusion.shape[-1]
    diag = np.diagonal(confusion, axis1=-2, axis2=-1)
    off = (1.0 - diag) / (k - 1)
    eye = np.eye(k, dtype=bool)
    return np.where(eye, diag[..., :, None], off[..., :, None])


def perfect_workers(n_workers: int, n_classes: int) -> np.ndarray:
    """Workers who are always right."""
    return np.broadcast_to(np.eye(n_classes), (n_workers, n_classes, n_classes)).copy()


def dataset_workers(annotations: Annotations, n_workers: int, seed=0, smooth_ratio: float = 0.1,
                    min_answers: int = 20) -> np.ndarray:
    """Workers whose confusions come from a real dataset's own annotations against its gold
    labels, built like the AMT workers: ``smooth_ratio`` x the pooled counts plus the counts of one
    real worker (with at least ``min_answers`` answers on gold items) drawn at random."""
    if annotations.gold is None:
        raise ValueError("dataset_workers needs gold labels to count each worker's confusions")
    counts = annotations.gold_confusion_counts()
    eligible = np.flatnonzero(counts.sum((1, 2)) >= min_answers)
    if len(eligible) == 0:
        raise ValueError(f"no worker has {min_answers} answers on gold items")
    pooled = counts.sum(0)
    rng = _rng(seed)
    chosen = counts[rng.choice(eligible, size=n_workers)]
    cm = smooth_ratio * pooled + chosen + 1e-6
    return cm / cm.sum(-1, keepdims=True)


@jax.jit
def annotate(key: jax.Array, confusion: jax.Array, true_labels: jax.Array, item: jax.Array,
             worker: jax.Array) -> jax.Array:
    """The answers of ``worker[n]`` about ``item[n]``: one draw each from
    ``confusion[worker[n], true_labels[item[n]]]``."""
    rows = jnp.log(confusion[worker, true_labels[item]])
    return jax.random.categorical(key, rows, axis=-1)


# --------------------------------------------------------------------------- imbalance, sparsity
def long_tailed_counts(available, ratio: float, order=None) -> np.ndarray:
    """Class sizes decaying exponentially from the head to the tail class,

        n_(r) = floor(n_max * ratio ** (-r / (K - 1))),   r = 0..K-1 the rank of the class,

    with ``n_max`` as large as the ``available`` items of each class allow (so the ratio of the
    head to the tail is ``ratio`` up to rounding).  ``order`` lists the classes from head to tail;
    default: by decreasing ``available``.  Returns (K,) counts in class order."""
    available = np.asarray(available, dtype=np.int64)
    k = len(available)
    if k < 2:
        raise ValueError("need at least 2 classes")
    if ratio < 1.0:
        raise ValueError(f"ratio is a head/tail size ratio, >= 1; got {ratio}")
    order = np.argsort(-available, kind="stable") if order is None else np.asarray(order)
    if sorted(order.tolist()) != list(range(k)):
        raise ValueError(f"order must be a permutation of 0..{k - 1}")
    fraction = float(ratio) ** (-np.arange(k) / (k - 1))  # by rank
    n_max = np.min(available[order] / fraction)
    if n_max * fraction[-1] < 1:
        raise ValueError(f"too few items for ratio {ratio}: the tail class would be empty")
    counts = np.empty(k, dtype=np.int64)
    counts[order] = np.floor(n_max * fraction + 1e-9).astype(np.int64)
    return counts


def long_tailed(annotations: Annotations, ratio: float, seed=0, order=None) -> Annotations:
    """A long-tailed subset of a dataset with gold labels: for each class, ``long_tailed_counts``
    items drawn at random among the items of that gold class, with all their annotations (and
    features).  Items without gold are dropped; workers keep their codes (some may be left with no
    annotation)."""
    if annotations.gold is None:
        raise ValueError("long_tailed needs gold labels to know each item's class")
    gold = np.asarray(annotations.gold)
    k = annotations.n_classes
    available = np.bincount(gold[gold >= 0], minlength=k)
    counts = long_tailed_counts(available, ratio, order)
    rng = _rng(seed)
    keep = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(gold == c), size=counts[c], replace=False) for c in range(k)
    ]))
    return _subset_items(annotations, keep)


def _subset_items(annotations: Annotations, keep: np.ndarray) -> Annotations:
    new_code = np.full(annotations.n_items, -1, dtype=np.int64)
    new_code[keep] = np.arange(len(keep))
    rows = new_code[annotations.item] >= 0
    if not rows.any():
        raise ValueError("the subset keeps no annotation")
    out = Annotations._from_codes(
        np.stack([new_code[annotations.item[rows]], annotations.worker[rows],
                  annotations.label[rows]], axis=1),
        annotations.item_ids[keep], annotations.worker_ids, annotations.classes,
    )
    return out._with_optional(
        gold=None if annotations.gold is None else annotations.gold[keep],
        features=None if annotations.features is None else annotations.features[keep],
    )


def remove_annotations(annotations: Annotations, fraction: float, seed=0) -> Annotations:
    """Drop ``round(fraction * n)`` of the ``n`` annotations uniformly at random (seed 004 sec.
    4.3, sparsity ``p``).  Items, workers, gold and features are all kept, so an item may be left
    with no annotation."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    n = annotations.n_annotations
    rng = _rng(seed)
    keep = np.sort(rng.permutation(n)[: n - int(round(fraction * n))])
    if len(keep) == 0:
        raise ValueError("no annotation would be left")
    out = Annotations._from_codes(
        np.stack([annotations.item[keep], annotations.worker[keep], annotations.label[keep]],
                 axis=1),
        annotations.item_ids, annotations.worker_ids, annotations.classes,
    )
    return out._with_optional(gold=annotations.gold, features=annotations.features)


def weak_features(x, kind: str, seed: int = 0) -> np.ndarray:
    """Weak versions of real item features, to test a learned label prior on features that carry
    little information: ``"noisy"`` (Gaussian noise of 3 feature standard deviations),
    ``"projected"`` (a random projection to 2 dimensions), ``"random"`` (no information at all:
    16 standard-normal columns)."""
    if kind not in ("noisy", "projected", "random"):
        raise ValueError(f"kind must be 'noisy', 'projected' or 'random', got {kind!r}")
    x = np.asarray(x, np.float64)
    rng = np.random.default_rng(seed)
    if kind == "noisy":
        return x + 3.0 * x.std(0) * rng.normal(size=x.shape)
    if kind == "projected":
        return x @ rng.normal(size=(x.shape[1], 2))
    return rng.normal(size=(x.shape[0], 16))
