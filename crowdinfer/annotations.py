"""Annotations: the one input type of crowdinfer.

An :class:`Annotations` holds validated ``(item, worker, label)`` triplets as int32 codes sorted by
item (ready for ``jax.ops.segment_sum``), plus the maps back to the user's own item ids, worker ids
and class names, optional gold labels and optional per-item features.

Duplicate policy (``duplicates=``):

* ``"collapse"`` (default) -- an *exact* duplicate row (same item, same worker, same label) is kept
  once: a worker repeating the same answer to the same question is one observation, not two
  independent ones.  The number of collapsed rows is recorded in ``n_collapsed`` and a warning says
  so.  *Conflicting* repeats (same item and worker, different labels) are all kept: each answer is
  evidence and none is preferred.
* ``"keep"`` -- every row is an annotation.
* ``"error"`` -- any repeated (item, worker) pair raises ``ValueError`` naming the rows.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = ["Annotations", "CrowdData", "capacity_bucket"]

_ITEM_COLUMNS = ("item", "task")


def capacity_bucket(n: int, minimum: int = 1024) -> int:
    """The padded length used for ``n`` annotations: the smallest of ``2^k * {1, 1.25, 1.5, 1.75}``
    that holds ``n`` (at least ``minimum``).

    Padding to a handful of capacities (four per doubling) means a growing online loop compiles a
    few times, not once per step, while padding wastes at most 25% (plain powers of two: up to 100%).
    """
    n = max(int(n), 1)
    if n <= minimum:
        return minimum
    base = 1 << ((n - 1).bit_length() - 1)  # largest power of two below n
    for quarter in (5, 6, 7, 8):
        cap = base * quarter // 4
        if cap >= n:
            return cap
    raise AssertionError("unreachable")


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class CrowdData:
    """Device arrays of annotations, padded to a capacity bucket.

    ``item``, ``worker``, ``label`` are int32 of length ``capacity``; ``weight`` is 1 for a real
    annotation and 0 for padding (padding rows point at the last item, so ``item`` stays sorted).
    The sizes are static (pytree aux data), so ``jit`` specialises on them.
    """

    item: jax.Array
    worker: jax.Array
    label: jax.Array
    weight: jax.Array
    n_items: int
    n_workers: int
    n_classes: int

    def tree_flatten(self):
        return (self.item, self.worker, self.label, self.weight), (
            self.n_items,
            self.n_workers,
            self.n_classes,
        )

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    @property
    def worker_label(self) -> jax.Array:
        """Row index ``worker * K + label`` into a (workers*K, K) view of the confusions."""
        return self.worker * self.n_classes + self.label


def _rows(mask: np.ndarray, offset: int, limit: int = 10) -> str:
    idx = np.flatnonzero(np.asarray(mask)) + offset
    shown = ", ".join(str(i) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"{shown}{more}"


def _missing(values: pd.Series) -> np.ndarray:
    miss = values.isna().to_numpy(dtype=bool).copy()
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        stripped = values.astype("string").str.strip()
        miss |= (stripped == "").fillna(True).to_numpy(dtype=bool)
    return miss


def _normalise_values(values: pd.Series) -> pd.Series:
    """Integral floats (1.0) become ints, so class ``1`` and ``1.0`` are one class."""
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy()
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return values.astype(np.int64)
    return values


def _apply_duplicate_policy(triplets: np.ndarray, policy: str, offset: int, word: str):
    """Apply the duplicate policy of the module docstring to (item, worker, label) code rows."""
    if policy not in ("collapse", "keep", "error"):
        raise ValueError(f"duplicates must be 'collapse', 'keep' or 'error', got {policy!r}")
    if policy == "keep":
        return triplets, 0
    key = pd.DataFrame(triplets, columns=["i", "w", "l"])
    where = f"{word}(s)"
    if policy == "error":
        rep = key.duplicated(["i", "w"], keep=False).to_numpy()
        if rep.any():
            raise ValueError(
                f"repeated (item, worker) pairs in {where} {_rows(rep, offset)}; "
                "use duplicates='collapse' or 'keep'"
            )
        return triplets, 0
    exact = key.duplicated(keep="first").to_numpy()
    n = int(exact.sum())
    if n:
        warnings.warn(
            f"collapsed {n} exact duplicate annotation(s) (same item, worker and label), e.g. "
            f"{where} {_rows(exact, offset, 5)}; pass duplicates='keep' to count them twice",
            stacklevel=3,
        )
    return triplets[~exact], n


def _codes(values: pd.Series, order: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and the sorted (or given) unique values."""
    if order is None:
        try:
            uniques = np.asarray(sorted(pd.unique(values)), dtype=object)
        except TypeError:  # mixed types: keep first-appearance order
            uniques = np.asarray(pd.unique(values), dtype=object)
    else:
        uniques = np.asarray(list(order), dtype=object)
    index = pd.Index(uniques)
    if not index.is_unique:
        dup = index[index.duplicated()].tolist()
        raise ValueError(f"ids must be unique; repeated: {dup[:10]}")
    codes = index.get_indexer(values.to_numpy(dtype=object))
    return codes.astype(np.int64), uniques


@dataclasses.dataclass(frozen=True, eq=False)
class Annotations:
    """Validated crowd annotations.

    Attributes:
        item, worker, label: int32 codes, sorted by item (then worker).
        item_ids, worker_ids, classes: the user's ids / class names; code ``c`` means ``classes[c]``.
        gold: int32 code of the gold label per item, ``-1`` where unknown; ``None`` if no gold.
        features: float32 array (n_items, d) or ``None``.
        n_collapsed: exact duplicate rows collapsed on construction.
    """

    item: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    item_ids: np.ndarray
    worker_ids: np.ndarray
    classes: np.ndarray
    gold: np.ndarray | None = None
    features: np.ndarray | None = None
    n_collapsed: int = 0

    # ------------------------------------------------------------------ sizes
    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_workers(self) -> int:
        return len(self.worker_ids)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_annotations(self) -> int:
        return len(self.item)

    def __len__(self) -> int:
        return self.n_annotations

    def __repr__(self) -> str:
        extras = []
        if self.gold is not None:
            extras.append(f"gold={int((self.gold >= 0).sum())}")
        if self.features is not None:
            extras.append(f"features={self.features.shape[1]}-d")
        extra = (", " + ", ".join(extras)) if extras else ""
        return (
            f"Annotations({self.n_annotations} annotations, {self.n_items} items, "
            f"{self.n_workers} workers, {self.n_classes} classes{extra})"
        )

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        *,
        item: str | None = None,
        worker: str = "worker",
        label: str = "label",
        classes: Sequence[Any] | None = None,
        items: Sequence[Any] | None = None,
        gold: Any = None,
        features: np.ndarray | None = None,
        duplicates: str = "collapse",
        _row_offset: int = 0,
        _row_word: str = "row",
    ) -> "Annotations":
        """Build from a long table with one row per annotation.

        Args:
            df: the table. Default columns ``item, worker, label``; crowd-kit's ``task`` is accepted
                for the item column.
            item, worker, label: column names, if not the defaults.
            classes: the fixed, ordered class list (a class nobody chose still exists). Default: the
                sorted distinct labels.
            items: the full, ordered list of item ids (items nobody annotated may be included, e.g.
                to carry their features). Default: the sorted distinct annotated items.
            gold: gold labels, as a ``{item: label}`` mapping, a Series indexed by item, or a
                DataFrame with columns ``item, label``.
            features: float array, one row per item in the order of ``items`` (required with it).
            duplicates: ``"collapse"``, ``"keep"`` or ``"error"`` (see the module docstring).
        """
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
        where = f"{_row_word}(s)"
        if item is None:
            item = next((c for c in _ITEM_COLUMNS if c in df.columns), "item")
        for role, col in (("item", item), ("worker", worker), ("label", label)):
            if col not in df.columns:
                hint = " or 'task'" if role == "item" else ""
                raise ValueError(
                    f"missing {role} column '{col}'{hint}; the table has columns "
                    f"{list(df.columns)}; name it with {role}=..."
                )
        if len(df) == 0:
            raise ValueError("no annotations: the table is empty")
        cols = {"item": df[item], "worker": df[worker], "label": df[label]}
        for role, values in cols.items():
            miss = _missing(values)
            if miss.any():
                raise ValueError(
                    f"missing or empty {role} in {where} {_rows(miss, _row_offset)} "
                    f"(column '{df.columns[df.columns.get_loc(values.name)]}')"
                )
            if role == "label":
                cols[role] = _normalise_values(values)
            elif pd.api.types.is_float_dtype(values.dtype):
                cols[role] = _normalise_values(values)
        for role in ("item", "worker"):
            values = cols[role]
            if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
                values.dtype
            ):
                neg = values.to_numpy() < 0
                if neg.any():
                    raise ValueError(f"negative {role} id in {where} {_rows(neg, _row_offset)}")

        label_codes, class_names = _codes(cols["label"], classes)
        if classes is not None:
            bad = label_codes < 0
            if bad.any():
                unknown = pd.unique(cols["label"][bad])[:10].tolist()
                raise ValueError(
                    f"label(s) {unknown} in {where} {_rows(bad, _row_offset)} are not in the "
                    f"given classes {list(class_names)}"
                )
        if len(class_names) < 2:
            raise ValueError(
                f"fewer than 2 classes ({list(class_names)}): pass classes=[...] with the full "
                "class list if some classes were never chosen"
            )
        item_codes, item_ids = _codes(cols["item"], items)
        if items is not None and (item_codes < 0).any():
            bad = item_codes < 0
            raise ValueError(f"item(s) in {where} {_rows(bad, _row_offset)} are not in items=[...]")
        worker_codes, worker_ids = _codes(cols["worker"])

        triplets = np.stack([item_codes, worker_codes, label_codes], axis=1)
        triplets, n_collapsed = _apply_duplicate_policy(triplets, duplicates, _row_offset, _row_word)
        ann = cls._from_codes(triplets, item_ids, worker_ids, class_names, n_collapsed)
        if features is not None:
            if items is None:
                raise ValueError("features need items=[...]: the item id of each feature row")
            ann = ann.with_features(features)
        if gold is not None:
            ann = ann.with_gold(gold)
        return ann

    @classmethod
    def from_csv(cls, path, **kwargs) -> "Annotations":
        """Read a CSV with one row per annotation (see :meth:`from_dataframe` for the options).

        Error messages name CSV lines (the header is line 1).
        """
        df = pd.read_csv(path, dtype=str, keep_default_na=True)
        df = df.apply(_parse_numeric_column)
        return cls.from_dataframe(df, _row_offset=2, _row_word="line", **kwargs)

    @classmethod
    def from_arrays(
        cls,
        item,
        worker,
        label,
        *,
        n_items: int | None = None,
        n_workers: int | None = None,
        n_classes: int | None = None,
        classes: Sequence[Any] | None = None,
        gold=None,
        features=None,
        duplicates: str = "keep",
    ) -> "Annotations":
        """Build from integer code arrays (item, worker and label already in 0..n-1).

        Sizes default to ``max + 1``; pass them to include items, workers or classes that do not
        appear. ``gold`` is an int array with one code per item (``-1`` unknown).
        """
        arrays = {}
        for role, values in (("item", item), ("worker", worker), ("label", label)):
            arr = np.asarray(values)
            if arr.ndim != 1:
                raise ValueError(f"{role} must be a 1-d array, got shape {arr.shape}")
            if arr.dtype.kind == "f":
                bad = ~np.isfinite(arr) | (arr != np.round(arr))
                if bad.any():
                    raise ValueError(f"non-integer or NaN {role} at index {_rows(bad, 0)}")
            elif arr.dtype.kind not in "iu":
                raise ValueError(f"{role} must be integer codes, got dtype {arr.dtype}")
            arrays[role] = arr.astype(np.int64)
        n = len(arrays["item"])
        if n == 0:
            raise ValueError("no annotations: the arrays are empty")
        if len(arrays["worker"]) != n or len(arrays["label"]) != n:
            raise ValueError("item, worker and label must have the same length")
        if n_classes is None and classes is not None:
            n_classes = len(classes)
        sizes = {}
        for role, size in (("item", n_items), ("worker", n_workers), ("label", n_classes)):
            arr = arrays[role]
            neg = arr < 0
            if neg.any():
                raise ValueError(f"negative {role} code at index {_rows(neg, 0)}")
            size = int(arr.max()) + 1 if size is None else int(size)
            over = arr >= size
            if over.any():
                raise ValueError(f"{role} code >= {size} at index {_rows(over, 0)}")
            sizes[role] = size
        if sizes["label"] < 2:
            raise ValueError("fewer than 2 classes: pass n_classes=")
        class_names = np.asarray(list(classes) if classes is not None else range(sizes["label"]), dtype=object)
        if len(class_names) != sizes["label"]:
            raise ValueError(f"classes has {len(class_names)} names for {sizes['label']} classes")
        triplets = np.stack([arrays["item"], arrays["worker"], arrays["label"]], axis=1)
        triplets, n_collapsed = _apply_duplicate_policy(triplets, duplicates, 0, "index")
        ann = cls._from_codes(
            triplets, np.arange(sizes["item"]), np.arange(sizes["worker"]), class_names, n_collapsed
        )
        return ann._with_optional(gold=gold, features=features)

    @classmethod
    def _from_codes(cls, triplets, item_ids, worker_ids, classes, n_collapsed=0) -> "Annotations":
        order = np.lexsort((triplets[:, 1], triplets[:, 0]))
        t = triplets[order].astype(np.int32)
        return cls(
            item=t[:, 0].copy(),
            worker=t[:, 1].copy(),
            label=t[:, 2].copy(),
            item_ids=np.asarray(item_ids),
            worker_ids=np.asarray(worker_ids),
            classes=np.asarray(classes),
            n_collapsed=n_collapsed,
        )

    def _with_optional(self, gold=None, features=None) -> "Annotations":
        ann = self
        if features is not None:
            ann = ann.with_features(features)
        if gold is not None:
            g = np.asarray(gold)
            if g.shape != (ann.n_items,):
                raise ValueError(f"gold codes must have shape ({ann.n_items},), got {g.shape}")
            bad = (g < -1) | (g >= ann.n_classes)
            if bad.any():
                raise ValueError(f"gold code outside -1..{ann.n_classes - 1} at index {_rows(bad, 0)}")
            ann = dataclasses.replace(ann, gold=g.astype(np.int32))
        return ann

    # ------------------------------------------------------------ enrichment
    def with_gold(self, gold) -> "Annotations":
        """Attach gold labels: ``{item: label}``, a Series indexed by item, or a DataFrame
        with columns ``item, label``. Items without gold get ``-1``."""
        if isinstance(gold, pd.DataFrame):
            missing = {"item", "label"} - set(gold.columns)
            if missing:
                raise ValueError(f"gold table is missing column(s) {sorted(missing)}")
            series = pd.Series(gold["label"].to_numpy(), index=gold["item"].to_numpy())
        elif isinstance(gold, pd.Series):
            series = gold
        elif isinstance(gold, dict):
            series = pd.Series(gold)
        else:
            raise TypeError("gold must be a dict, a Series indexed by item, or a DataFrame item,label")
        series = _normalise_values(series.dropna())
        item_index = pd.Index(self.item_ids)
        codes = item_index.get_indexer(series.index.to_numpy(dtype=object))
        unknown = codes < 0
        if unknown.any():
            names = series.index[unknown].tolist()
            raise ValueError(
                f"gold labels for {int(unknown.sum())} unknown item(s): {names[:10]}"
                f"{' ...' if len(names) > 10 else ''}"
            )
        class_index = pd.Index(self.classes)
        label_codes = class_index.get_indexer(series.to_numpy(dtype=object))
        bad = label_codes < 0
        if bad.any():
            raise ValueError(
                f"gold label(s) {pd.unique(series[bad]).tolist()[:10]} (items "
                f"{series.index[bad].tolist()[:10]}) are not among the classes {list(self.classes)}"
            )
        out = np.full(self.n_items, -1, dtype=np.int32)
        out[codes] = label_codes
        return dataclasses.replace(self, gold=out)

    def with_features(self, features) -> "Annotations":
        """Attach per-item features, one row per item in ``item_ids`` order."""
        f = np.asarray(features, dtype=np.float32)
        if f.ndim != 2 or f.shape[0] != self.n_items:
            raise ValueError(f"features must have shape ({self.n_items}, d), got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError(f"features contain NaN/inf in row(s) {_rows(~np.isfinite(f).all(1), 0)}")
        return dataclasses.replace(self, features=f)

    # ------------------------------------------------------------------ views
    def to_dataframe(self) -> pd.DataFrame:
        """The annotations as a long table with the user's ids and class names."""
        return pd.DataFrame(
            {
                "item": self.item_ids[self.item],
                "worker": self.worker_ids[self.worker],
                "label": self.classes[self.label],
            }
        )

    def gold_labels(self) -> pd.Series:
        """Gold labels (class names) indexed by item id, items with gold only."""
        if self.gold is None:
            raise ValueError("these annotations carry no gold labels")
        has = self.gold >= 0
        return pd.Series(self.classes[self.gold[has]], index=pd.Index(self.item_ids[has], name="item"))

    def gold_confusion_counts(self) -> np.ndarray:
        """``C[j, k, l]``: how often worker ``j`` answered ``l`` on gold items whose gold label is
        ``k``, shape (M, K, K)."""
        if self.gold is None:
            raise ValueError("these annotations carry no gold labels (Annotations.with_gold)")
        gold = self.gold[self.item]
        has = gold >= 0
        counts = np.zeros((self.n_workers, self.n_classes, self.n_classes))
        np.add.at(counts, (self.worker[has], gold[has], self.label[has]), 1.0)
        return counts

    def annotations_per_worker(self) -> np.ndarray:
        return np.bincount(self.worker, minlength=self.n_workers)

    def annotations_per_item(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)

    def to_device(self, capacity: int | None = None, sharding="auto") -> CrowdData:
        """Pad to a capacity bucket (default: :func:`capacity_bucket`) and move to the device(s).

        ``sharding="auto"`` splits the annotation axis over all devices when there are several
        (:mod:`crowdinfer.distributed`); ``None`` keeps everything on the default device; or pass a
        ``jax.sharding.Sharding``.
        """
        from .distributed import annotation_sharding

        if sharding == "auto":
            sharding = annotation_sharding()
        n = self.n_annotations
        cap = capacity_bucket(n) if capacity is None else int(capacity)
        if cap < n:
            raise ValueError(f"capacity {cap} is smaller than the {n} annotations")
        if sharding is not None:
            parts = len(sharding.device_set)
            cap = -(-cap // parts) * parts
        pad = cap - n

        def put(a):
            return jnp.asarray(a) if sharding is None else jax.device_put(a, sharding)

        def padded(a, fill):
            return put(np.concatenate([a, np.full(pad, fill, dtype=np.int32)]))

        weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
        return CrowdData(
            item=padded(self.item, self.n_items - 1),
            worker=padded(self.worker, 0),
            label=padded(self.label, 0),
            weight=put(weight),
            n_items=self.n_items,
            n_workers=self.n_workers,
            n_classes=self.n_classes,
        )


def _parse_numeric_column(col: pd.Series) -> pd.Series:
    """CSV columns are read as text; make integer-looking columns integers (ids stay exact)."""
    nonmissing = col.dropna()
    stripped = nonmissing.str.strip()
    if len(stripped) and stripped.str.fullmatch(r"[+-]?\d+").all():
        out = pd.Series(pd.NA, index=col.index, dtype=object)
        out[nonmissing.index] = stripped.astype(np.int64).to_numpy()
        if len(nonmissing) == len(col):
            return out.astype(np.int64)
        return out
    return col
