"""Datasets: the standard folder layout, and synthetic tasks with known answers.

Folder layout (that of ``../shared/data/<name>/``)::

    annotations.csv            item,worker,label   one row per annotation
    truth.csv                  item,label          gold labels (all or some items)
    items.csv + features.npy   optional: row r of the float32 features describes items.csv row r
    test_items.csv, test_features.npy, test_truth.csv    optional held-out items (also valid_*)
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .annotations import Annotations, read_text_table

__all__ = ["Dataset", "Split", "SyntheticTask", "load", "synthetic", "shared_data_dir"]


@dataclasses.dataclass(frozen=True)
class Split:
    """Held-out items that nobody annotated: ids, features and (if known) gold class codes."""

    items: np.ndarray
    features: np.ndarray
    gold: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    annotations: Annotations  # with gold and (if any) features attached
    test: Split | None = None
    valid: Split | None = None

    @property
    def gold(self) -> pd.Series:
        return self.annotations.gold_labels()

    @property
    def features(self) -> np.ndarray | None:
        return self.annotations.features


def shared_data_dir() -> Path:
    """The real datasets' folder: ``$CROWDINFER_DATA`` if set; else ``shared/data`` beside the
    source checkout (an editable install); else ``../shared/data`` from the current directory.

    An installed copy (a wheel in ``site-packages``) has no checkout beside it, so it uses
    ``$CROWDINFER_DATA`` or the working directory, never a path inside ``site-packages``.
    The folder may not exist: callers that need it say so with a clear error.
    """
    env = os.environ.get("CROWDINFER_DATA")
    if env:
        return Path(env).expanduser()
    package = Path(__file__).resolve().parent
    if "site-packages" not in package.parts and "dist-packages" not in package.parts:
        checkout = package.parent.parent / "shared" / "data"
        if checkout.is_dir():
            return checkout
    return Path.cwd().parent / "shared" / "data"


def read_table(path: Path) -> pd.DataFrame:
    """A CSV/TSV table (gold labels, item lists), ids exact as in ``Annotations.from_csv``."""
    return read_text_table(path)


def load(path, duplicates: str = "collapse") -> Dataset:
    """Read a dataset folder (see the module docstring). ``path`` may also be the name of a folder
    under :func:`shared_data_dir`."""
    folder = Path(path)
    if not folder.exists() and os.sep not in str(path):
        folder = shared_data_dir() / str(path)
    if not (folder / "annotations.csv").exists():
        raise FileNotFoundError(
            f"no annotations.csv in {folder}: a dataset folder holds annotations.csv "
            "(item,worker,label) and optionally truth.csv, items.csv + features.npy"
        )
    items = features = None
    if (folder / "items.csv").exists() and (folder / "features.npy").exists():
        items = read_table(folder / "items.csv")["item"].to_numpy()
        features = np.load(folder / "features.npy")
    ann = Annotations.from_csv(
        folder / "annotations.csv", items=items, features=features, duplicates=duplicates
    )
    if (folder / "truth.csv").exists():
        truth = read_table(folder / "truth.csv")
        ann = ann.with_gold(truth)
    return Dataset(
        name=folder.name,
        annotations=ann,
        test=_split(folder, "test", ann),
        valid=_split(folder, "valid", ann),
    )


def _split(folder: Path, prefix: str, ann: Annotations) -> Split | None:
    items_path = folder / f"{prefix}_items.csv"
    feats_path = folder / f"{prefix}_features.npy"
    if not (items_path.exists() and feats_path.exists()):
        return None
    items = read_table(items_path)["item"].to_numpy()
    gold = None
    truth_path = folder / f"{prefix}_truth.csv"
    if truth_path.exists():
        truth = read_table(truth_path)
        by_item = pd.Series(truth["label"].to_numpy(), index=truth["item"].to_numpy())
        labels = by_item.reindex(items).to_numpy(dtype=object)
        codes = pd.Index(ann.classes).get_indexer(labels)
        gold = codes.astype(np.int32)
    return Split(items=items, features=np.load(feats_path).astype(np.float32), gold=gold)


# --------------------------------------------------------------------------- synthetic
@dataclasses.dataclass(frozen=True)
class SyntheticTask:
    """A simulated crowd task with its answers: ``true_labels`` (N,) codes, ``true_confusion``
    (M, K, K) and ``class_prior`` (K,)."""

    annotations: Annotations
    true_labels: np.ndarray
    true_confusion: np.ndarray
    class_prior: np.ndarray


def synthetic(
    n_items: int = 2000,
    n_workers: int = 50,
    n_classes: int = 5,
    annotations_per_item: int = 5,
    accuracy: tuple[float, float] = (0.5, 0.9),
    structure: str = "uniform",
    imbalance: float = 1.0,
    worker_activity: float = 0.0,
    seed: int = 0,
) -> SyntheticTask:
    """Generate a labelled crowd task from known confusion matrices.

    Args:
        n_items, n_workers, n_classes: sizes.
        annotations_per_item: distinct workers per item (at most ``n_workers``).
        accuracy: each worker's accuracy is drawn uniformly from this range.
        structure: ``"uniform"`` -- a worker's errors are spread evenly over the other classes;
            ``"structured"`` -- errors fall mostly on neighbouring classes (class ``k`` is confused
            with ``k +- 1``, a worker-specific Dirichlet draw around that pattern), as real workers
            confuse similar classes.
        imbalance: ratio of the largest to the smallest class proportion (exponential decay).
        worker_activity: 0 = every worker equally busy; ``a > 0`` makes worker ``j``'s share of the
            work proportional to ``(j + 1) ** -a`` (a few prolific workers, a long tail).
        seed: the random seed (numpy ``default_rng``).
    """
    if n_classes < 2 or n_items < 1 or n_workers < 1:
        raise ValueError("need n_classes >= 2, n_items >= 1 and n_workers >= 1")
    if not 1 <= annotations_per_item <= n_workers:
        raise ValueError(f"annotations_per_item must be in 1..n_workers={n_workers}")
    lo, hi = accuracy
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"accuracy range must satisfy 0 <= low <= high <= 1, got {accuracy}")
    if imbalance < 1.0:
        raise ValueError("imbalance is a max/min ratio, >= 1")
    if structure not in ("uniform", "structured"):
        raise ValueError("structure must be 'uniform' or 'structured'")
    rng = np.random.default_rng(seed)
    k = n_classes

    class_prior = imbalance ** (-np.arange(k) / (k - 1))
    class_prior /= class_prior.sum()
    truth = rng.choice(k, size=n_items, p=class_prior)

    acc = rng.uniform(lo, hi, size=n_workers)
    if structure == "uniform":
        errors = np.ones((n_workers, k, k))
    else:
        distance = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :])
        pattern = np.exp(-2.0 * (distance - 1.0)) + 0.02  # mass on the neighbours k +- 1
        errors = rng.gamma(5.0 * np.broadcast_to(pattern, (n_workers, k, k)))
    eye = np.eye(k, dtype=bool)
    errors = np.where(eye, 0.0, errors)
    errors /= errors.sum(-1, keepdims=True)
    confusion = (1.0 - acc)[:, None, None] * errors + acc[:, None, None] * eye

    # Distinct workers per item by Gumbel top-r on log activity weights, in chunks to bound memory.
    log_w = -worker_activity * np.log1p(np.arange(n_workers))
    r = annotations_per_item
    workers = np.empty((n_items, r), dtype=np.int64)
    chunk = max(1, 2_000_000 // n_workers)
    for start in range(0, n_items, chunk):
        stop = min(n_items, start + chunk)
        keys = log_w + rng.gumbel(size=(stop - start, n_workers))
        workers[start:stop] = np.argpartition(-keys, r - 1, axis=1)[:, :r]
    item = np.repeat(np.arange(n_items), r)
    worker = workers.ravel()
    cdf = np.cumsum(confusion[worker, truth[item]], axis=-1)
    label = (rng.random(len(item))[:, None] > cdf).sum(-1).clip(0, k - 1)

    ann = Annotations.from_arrays(
        item, worker, label, n_items=n_items, n_workers=n_workers, n_classes=k,
        gold=truth, duplicates="keep",
    )
    return SyntheticTask(ann, truth.astype(np.int32), confusion, class_prior)
