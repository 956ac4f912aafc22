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

Ids are exact, in every reader (``from_csv``, ``from_parquet``, ``from_arrow``, ``from_dataframe``):

* In a text file (CSV, TSV) an id or a label is the text of its field.  A column becomes integers
  only when *every* value is a canonical integer: ASCII digits, no sign, no leading zero (``0``
  itself is one), within int64.  Anything else keeps the whole column as text, so ``007`` and
  ``7``, ``+1`` and ``1``, full-width ``１`` and ``1`` are different ids, and a 20-digit id is
  text.  Nothing is merged or split.  Labels follow the same rule: ``1`` and ``1.0`` in one column
  are two classes, with a warning naming such look-alikes.
* Typed input (a pandas DataFrame, an Arrow table, Parquet, a polars DataFrame) keeps its types: an
  integer column is integers, a string column is text (even ``"7"``), a float column whose values
  are all whole numbers becomes integers.  A column that mixes types (``7`` and ``"7"``) is refused.
* An empty field, NaN/None, or a missing marker of a text file (``NA``, ``NaN``, ``null``, ``N/A``,
  as in pandas) is a missing value: refused, naming the rows (lines).
* A value with leading or trailing whitespace is refused, naming the rows: ``' 1'`` and ``'1'`` are
  different text, and guessing which was meant would be silent.  Strip the column first.
* A negative id is refused where ids are integers (an integer DataFrame/Arrow column, code arrays).
  In a text file ``-3`` is not a canonical integer, so it is text, a name like any other.
* A text-file row with more (or fewer) fields than the header is refused, naming its lines: the
  columns are never shifted to fit.  Duplicate column names used as item/worker/label/weight are
  refused; so is a directory given as a file.

Weights (an optional ``weight`` column, or ``weight=`` in :meth:`Annotations.from_arrays`): each
annotation's weight, finite and >= 0 (a soft answer is several rows of one item and worker whose
weights sum to 1).  Every engine multiplies an annotation's likelihood terms and counts by its
weight: an integer weight ``w`` counts the row ``w`` times, weight 0 is the same as leaving the
row out.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import numbers
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = ["Annotations", "CrowdData", "capacity_bucket", "deal_folds", "slot_layout"]

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


def deal_folds(item: np.ndarray, n_items: int, folds: int, seed: int,
               counts: np.ndarray | None = None) -> np.ndarray:
    """Fold (0 .. ``folds`` - 1) of each annotation (``item``: each one's item code): a random
    permutation dealt round-robin within each item from a random start, so an item with at least
    ``folds`` answers has some in every fold.  ``counts``: the answers per item, when ``item`` is
    sorted and they are at hand (a faster path, same folds)."""
    rng = np.random.default_rng(seed)
    n = len(item)
    # shuffled within item: item + u (u uniform in [0, 1)) sorts by item, then by u -- the order
    # np.lexsort((u, item)) gives, ten times faster on 10^5+ answers
    order = np.argsort(item + rng.random(n), kind="stable")
    if counts is not None:  # sorted by item: item[order] is item itself, each item's rows a block
        start = np.repeat(np.cumsum(counts) - counts, counts)
    else:
        item = item[order]
        start = np.searchsorted(item, item, side="left")  # first row of each item (sorted)
    rank = np.arange(n) - start
    offset = rng.integers(0, folds, size=n_items)[item]  # random start per item
    fold = np.empty(n, np.int64)
    fold[order] = (rank + offset) % folds
    return fold


def slot_layout(item, worker, label, weight, n_items: int, n_workers: int, n_classes: int, *,
                max_fill: float = 1.5, max_slots: int = 64,
                counts: np.ndarray | None = None) -> np.ndarray | None:
    """The per-item layout of :attr:`CrowdData.slots` (host int32, shape (S, N)), or ``None``
    when it does not pay: a weight other than 0 or 1 (rows of weight 0 are left out), more than
    ``max_slots`` annotations on one item, or ``S * N > max_fill * annotations`` (a few items with
    many more annotations than the rest).  ``S`` is the largest number of annotations of an item,
    rounded up to a multiple of 8 above 16 (the kernels sum 8 slots per pass there).
    ``counts``: the rows per item, if the caller has them (ignored when rows are left out)."""
    item, worker, label = (np.asarray(a) for a in (item, worker, label))
    if weight is not None:
        weight = np.asarray(weight)
        if not np.all((weight == 0) | (weight == 1)):
            return None
        if not weight.all():
            keep = weight == 1
            item, worker, label = item[keep], worker[keep], label[keep]
            counts = None
    n = len(item)
    if n == 0 or n_items == 0:
        return None
    if counts is None:
        counts = np.bincount(item, minlength=n_items)
    s = int(counts.max())
    if s > 16:
        s = -(-s // 8) * 8
    if s > max_slots or s * n_items > max_fill * n:
        return None
    if not np.all(item[1:] >= item[:-1]):
        order = np.argsort(item, kind="stable")
        item, worker, label = item[order], worker[order], label[order]
    codes = np.multiply(worker, n_classes, dtype=np.int32)
    codes += label
    if counts.min() == s:  # every item has s annotations: a transpose
        return np.ascontiguousarray(codes.reshape(n_items, s).T)
    starts = (np.cumsum(counts) - counts).astype(np.int64)
    rank = np.arange(n, dtype=np.int64) - np.repeat(starts, counts)
    out = np.full((s, n_items), n_workers * n_classes, np.int32)
    out.reshape(-1)[rank * n_items + item] = codes
    return out


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class CrowdData:
    """Device arrays of annotations, padded to a capacity bucket.

    ``item``, ``worker``, ``label`` are int32 of length ``capacity``; ``weight`` is the weight of a
    real annotation (1 unless weighted) and 0 for padding.  The contract every producer keeps and
    every engine relies on:

    * every code is in range (``0 <= item < n_items`` and so on), padding rows included: padding
      rows are ``(item n_items - 1, worker 0, label 0, weight 0)`` and count for nothing;
    * the rows may come in any order: no kernel relies on it (segment sums without
      ``indices_are_sorted``).  :meth:`Annotations.to_device` and the SVI item chunks give them
      sorted by item (the padding, at the last item, keeps them sorted); the online buffer
      (:mod:`crowdinfer.online.state`) holds them in arrival order, its free rows padding.

    The sizes are static (pytree aux data), so ``jit`` specialises on them.

    ``slots`` (optional, built by :meth:`Annotations.to_device` on one device when every weight
    is 0 or 1 and the items' numbers of annotations are even enough: :func:`slot_layout`) is the
    same annotations laid out per item, shape (S, N): ``slots[s, i] = worker * K + label`` of item
    ``i``'s ``s``-th annotation, ``n_workers * K`` where it has fewer than ``S + 1``.  The kernels
    of :mod:`crowdinfer.ops` then sum over an item's annotations slot by slot, which XLA fuses
    with the gathers (no (annotations, K) intermediate).  It must describe the same annotations
    as the rows: a ``CrowdData`` built from changed rows leaves it out (the default).
    """

    item: jax.Array
    worker: jax.Array
    label: jax.Array
    weight: jax.Array
    n_items: int
    n_workers: int
    n_classes: int
    slots: jax.Array | None = None

    def tree_flatten(self):
        rows = (self.item, self.worker, self.label, self.weight)
        return rows + (() if self.slots is None else (self.slots,)), (
            self.n_items,
            self.n_workers,
            self.n_classes,
        )

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children[:4], *aux, slots=children[4] if len(children) > 4 else None)

    def rows_only(self) -> "CrowdData":
        """The same annotations without ``slots`` (for code that maps over the row arrays)."""
        return self if self.slots is None else dataclasses.replace(self, slots=None)

    @property
    def worker_label(self) -> jax.Array:
        """Row index ``worker * K + label`` into a (workers*K, K) view of the confusions."""
        return self.worker * self.n_classes + self.label


_CANONICAL_INT = r"^(?:0|[1-9][0-9]{0,18})$"  # no sign, no leading zero, ASCII digits, <= 19 digits
_TAB_SUFFIXES = (".tsv", ".tab")


def _arrow():
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


def _rows(mask: np.ndarray, offset: int, limit: int = 10) -> str:
    idx = np.flatnonzero(np.asarray(mask)) + offset
    shown = ", ".join(str(i) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"{shown}{more}"


class _Where:
    """Names the rows of a problem in an error message: ``row(s) 3, 7`` (0-based table rows) or,
    for a text file, ``line(s) 4, 8`` (physical lines, the header is line 1)."""

    def __init__(self, word: str = "row", offset: int = 0, lines=None):
        self.word, self.offset, self.lines = word, offset, lines

    def __call__(self, mask, limit: int = 10) -> str:
        idx = np.flatnonzero(np.asarray(mask))
        shown = idx[:limit]
        numbers = self.lines(shown) if self.lines is not None else shown + self.offset
        more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
        return f"{self.word}(s) {', '.join(str(int(i)) for i in numbers)}{more}"


class _Column(NamedTuple):
    """One validated id/label column: ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"object"``
    or ``"text"``; either ``values`` (numpy, one per row) or, for a text column, ``codes`` (one per
    row) into the sorted distinct ``uniques`` (an object array)."""

    kind: str
    values: Any = None
    codes: Any = None
    uniques: Any = None

    def take(self, rows) -> list:
        rows = np.asarray(rows, dtype=np.int64)
        if self.values is None:
            return [_python(v) for v in self.uniques[self.codes[rows]]]
        return [_python(v) for v in np.asarray(self.values)[rows]]


def _python(value):
    return value.item() if isinstance(value, np.generic) else value


def _bool_mask(arrow_bool) -> np.ndarray:
    return np.asarray(arrow_bool.to_numpy(zero_copy_only=False), dtype=bool)


def _sorted_codes(indices: np.ndarray, uniques) -> tuple[np.ndarray, np.ndarray]:
    """Re-number dictionary ``indices`` so that codes follow the sorted ``uniques``."""
    _, pc = _arrow()
    order = np.asarray(pc.array_sort_indices(uniques).to_numpy(), dtype=np.int64)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return rank[indices], order


# ------------------------------------------------------------------------ column normalisation
def _check_text(arr, role: str, col, where: _Where, indices=None):
    """Refuse null, empty or whitespace-only values, and values with surrounding whitespace.
    With ``indices``, ``arr`` is a dictionary (distinct values) and rows are ``arr[indices]``."""
    _, pc = _arrow()

    def rows(mask_arrow):
        mask = _bool_mask(mask_arrow)
        return mask if indices is None else mask[indices]

    trimmed = pc.utf8_trim_whitespace(arr)
    missing = pc.fill_null(pc.equal(pc.utf8_length(trimmed), 0), True)
    if pc.any(missing).as_py():
        raise ValueError(f"missing or empty {role} in {where(rows(missing))} (column '{col}')")
    padded = pc.not_equal(trimmed, arr)
    if pc.any(padded).as_py():
        example = arr[int(np.flatnonzero(_bool_mask(padded))[0])].as_py()
        raise ValueError(
            f"{role} with leading or trailing whitespace in {where(rows(padded))} (column "
            f"'{col}', e.g. {example!r}): ids and labels are exact text, so ' 1' and '1' would be "
            "two different values; strip the column first"
        )


def _text_column(arr, role: str, col, where: _Where, parse_ints: bool) -> _Column:
    """A string column: integers when every value is a canonical integer (``parse_ints``, text
    files only), else exact text.  The checks run on the distinct values (dictionary-encoded)."""
    pa, pc = _arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    if arr.null_count:
        raise ValueError(f"missing or empty {role} in {where(_bool_mask(arr.is_null()))} "
                         f"(column '{col}')")
    enc = pc.dictionary_encode(arr)
    uniques = enc.dictionary
    indices = np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    if parse_ints and pc.all(pc.match_substring_regex(uniques, _CANONICAL_INT)).as_py():
        try:
            values = pc.cast(uniques, pa.int64())
        except (pa.ArrowInvalid, OverflowError):  # 19 digits above int64: stays text
            values = None
        if values is not None:
            codes, order = _sorted_codes(indices, values)
            return _Column("int", codes=codes,
                           uniques=values.to_numpy()[order].astype(object))
    _check_text(uniques, role, col, where, indices)
    codes, order = _sorted_codes(indices, uniques)
    return _Column("text", codes=codes,
                   uniques=np.asarray(uniques.to_numpy(zero_copy_only=False)[order], dtype=object))


def _numeric_column(arr: np.ndarray, role: str, col, where: _Where) -> _Column:
    """A numeric column (no missing values): bools, ints, or floats (whole floats become ints)."""
    if arr.dtype.kind == "b":
        return _Column("bool", arr.astype(bool))
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and len(arr) and arr.max() > np.iinfo(np.int64).max:
            return _Column("int", arr.astype(np.uint64))
        return _Column("int", arr.astype(np.int64))
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"non-finite {role} (inf) in {where(bad)} (column '{col}')")
    if np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2.0**53):
        return _Column("int", arr.astype(np.int64))  # 1.0 -> 1: a float column of whole numbers
    return _Column("float", arr)


def _value_kind(value) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    return type(value).__name__


def _pandas_column(series: pd.Series, role: str, col, where: _Where) -> _Column:
    """A DataFrame column, typed as given: see the module docstring (ids are exact)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = pd.Series(np.asarray(series, dtype=object))
    miss = np.asarray(series.isna(), dtype=bool)
    if miss.any():
        raise ValueError(f"missing or empty {role} in {where(miss)} (column '{col}')")
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        if not pd.api.types.is_complex_dtype(dtype):
            return _numeric_column(series.to_numpy(dtype=dtype.numpy_dtype if hasattr(
                dtype, "numpy_dtype") else None), role, col, where)
    if not (dtype == object or isinstance(dtype, pd.StringDtype)):
        return _Column("object", values=np.asarray(series, dtype=object))
    values = series.to_numpy(dtype=object)
    inferred = pd.api.types.infer_dtype(values, skipna=False)
    if inferred == "string":
        pa, _ = _arrow()
        return _text_column(pa.array(values, type=pa.string()), role, col, where, parse_ints=False)
    if inferred in ("integer", "floating", "mixed-integer-float", "boolean"):
        try:
            arr = np.asarray(values.tolist())
        except OverflowError:  # Python ints beyond 64 bits: exact as objects
            return _Column("object", values)
        if arr.dtype.kind in "biuf":
            return _numeric_column(arr, role, col, where)
        return _Column("object", values)
    kinds = pd.Series([_value_kind(v) for v in values])
    if kinds.nunique() > 1:
        common = kinds.mode().iloc[0]
        raise ValueError(
            f"the {role} column '{col}' mixes value types ({', '.join(sorted(kinds.unique()))}): "
            f"e.g. {where((kinds != common).to_numpy())} are not {common}; an id is text or a "
            f"number, never both (7 and '7' would be two ids) -- convert the column first, e.g. "
            f"df['{col}'].astype(str)"
        )
    if inferred == "bytes":
        raise ValueError(f"the {role} column '{col}' holds bytes: decode it to text first")
    return _Column("object", values)


def _arrow_column(arr, role: str, col, where: _Where) -> _Column:
    """An Arrow column, typed as given (strings stay text, even ``"7"``)."""
    pa, _ = _arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise ValueError(f"missing or empty {role} in {where(_bool_mask(arr.is_null()))} "
                         f"(column '{col}')")
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _text_column(arr, role, col, where, parse_ints=False)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return _numeric_column(arr.to_numpy(zero_copy_only=False), role, col, where)
    return _pandas_column(arr.to_pandas(), role, col, where)


def _as_weight(value) -> float:
    """A weight from a Python value: a real number, or text that spells one; else NaN."""
    if isinstance(value, (bool, np.bool_)):
        return math.nan
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _weights(raw, col, where: _Where) -> np.ndarray:
    """The weight column as float64: finite and >= 0, at least one > 0."""
    pa, pc = _arrow()
    role = "weight"
    if isinstance(raw, pd.Series):
        miss = np.asarray(raw.isna(), dtype=bool)
        if miss.any():
            raise ValueError(f"missing weight in {where(miss)} (column '{col}')")
        if pd.api.types.is_bool_dtype(raw.dtype):
            raise ValueError(f"the weight column '{col}' holds booleans: weights are numbers >= 0")
        if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_complex_dtype(raw.dtype):
            w = raw.to_numpy(dtype=np.float64)
        else:
            w = np.asarray([_as_weight(v) for v in raw.to_numpy(dtype=object)], np.float64)
            bad = np.isnan(w)  # NaN itself was refused above as missing
            if bad.any():
                raise ValueError(f"weight that is not a number in {where(bad)} (column '{col}')")
    else:  # Arrow
        if isinstance(raw, pa.ChunkedArray):
            raw = raw.combine_chunks()
        if pa.types.is_dictionary(raw.type):
            raw = raw.dictionary_decode()
        if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
            _check_text(raw, role, col, where)
            try:
                raw = pc.cast(raw, pa.float64())
            except pa.ArrowInvalid:
                parsed = pd.to_numeric(pd.Series(raw.to_pylist(), dtype=object), errors="coerce")
                bad = parsed.isna().to_numpy()
                raise ValueError(f"weight that is not a number in {where(bad)} (column '{col}')"
                                 ) from None
        elif raw.null_count:
            raise ValueError(f"missing weight in {where(_bool_mask(raw.is_null()))} "
                             f"(column '{col}')")
        elif not (pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type)):
            raise ValueError(f"the weight column '{col}' has type {raw.type}: weights are numbers")
        w = np.asarray(raw.to_numpy(zero_copy_only=False), dtype=np.float64)
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(w) | (w < 0) | ~np.isfinite(w.astype(np.float32))  # engines use float32
    if bad.any():
        raise ValueError(f"weight must be finite and >= 0 (at most {np.finfo(np.float32).max:.3g}): "
                         f"{where(bad)} (column '{col}')")
    if not (w.astype(np.float32) > 0).any():
        raise ValueError(f"every weight is 0 (column '{col}'): no evidence to fit")
    return w


# --------------------------------------------------------------------------------- encoding
def _factorize(column: _Column) -> tuple[np.ndarray, np.ndarray]:
    """Codes into the sorted distinct values, and those values (an object array of Python
    scalars: ``ann.item_ids[i]`` is an ``int`` or a ``str``, as the user's own ids)."""
    if column.values is None:
        return column.codes, column.uniques
    if column.kind == "object":
        try:
            codes, uniques = pd.factorize(column.values)
        except TypeError as err:
            raise ValueError(f"ids and labels must be hashable values: {err}") from None
        try:
            order = np.asarray(sorted(range(len(uniques)), key=uniques.__getitem__), np.int64)
        except TypeError:  # values that do not sort: first-appearance order
            return codes.astype(np.int64), np.asarray(uniques, dtype=object)
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        return rank[codes], np.asarray(uniques, dtype=object)[order]
    codes, uniques = pd.factorize(column.values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques).astype(object)


def _aligned(order: Sequence[Any], kind: str) -> list:
    """A user's id list (``items=``, ``classes=``, gold) against a column: when the column is
    text, an integer in the list means its canonical text (``7`` -> ``'7'``)."""
    values = [_python(v) for v in order]
    if kind == "text":
        values = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in values]
    return values


def _encode(column: _Column, order: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """Codes (``-1`` for a value not in ``order``) and the id list."""
    codes, uniques = _factorize(column)
    if order is None:
        return codes, uniques
    order = _aligned(order, column.kind)
    index = pd.Index(np.asarray(order, dtype=object), dtype=object)
    if not index.is_unique:
        dup = index[index.duplicated()].tolist()
        raise ValueError(f"ids must be unique; repeated: {dup[:10]}")
    where = index.get_indexer(pd.Index(uniques, dtype=object))
    return where[codes], np.asarray(order, dtype=object)


def _is_text(ids: np.ndarray) -> bool:
    return len(ids) > 0 and all(isinstance(v, str) for v in ids[:1000])


def _warn_lookalike_labels(classes: np.ndarray) -> None:
    """Text labels that are different text but the same number (``1`` and ``1.0``) stay distinct
    classes; say so, since it is rarely what was meant."""
    if len(classes) > 10_000:
        return
    groups: dict[float, list] = {}
    for c in classes:
        try:
            value = float(c)
        except (TypeError, ValueError, OverflowError):
            continue
        if np.isfinite(value):
            groups.setdefault(value, []).append(c)
    same = [g for g in groups.values() if len(g) > 1]
    if same:
        warnings.warn(
            f"labels {same[:5]} are different text but the same number: they are kept as "
            "different classes (a label column is integers only when every label is a canonical "
            "integer); make them one spelling if they are one class",
            stacklevel=4,
        )


def _repeated(key: np.ndarray, keep_first: bool) -> np.ndarray:
    """Rows whose ``key`` occurs earlier (``keep_first``) or more than once; by one stable sort
    (faster than hashing at 10^6-10^7 rows)."""
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    out = np.zeros(len(key), dtype=bool)
    out[order[1:][same]] = True
    if not keep_first:
        out[order[:-1][same]] = True
    return out


def _apply_duplicate_policy(triplets: np.ndarray, policy: str, where: _Where, weight=None):
    """Apply the duplicate policy of the module docstring to (item, worker, label) code rows."""
    if policy not in ("collapse", "keep", "error"):
        raise ValueError(f"duplicates must be 'collapse', 'keep' or 'error', got {policy!r}")
    if policy == "keep":
        return triplets, weight, 0
    i, w, l = (triplets[:, c].astype(np.int64) for c in range(3))
    m, k = int(w.max()) + 1, int(l.max()) + 1
    if (int(i.max()) + 1) * m * k >= 2**62:  # codes too large for one int64 key
        key = pd.DataFrame(triplets, columns=["i", "w", "l"])
        repeated = key.duplicated(["i", "w"], keep=False).to_numpy()
        exact = key.duplicated(keep="first").to_numpy()
    elif policy == "error":
        repeated = _repeated(i * m + w, keep_first=False)
    else:
        exact = _repeated((i * m + w) * k + l, keep_first=True)
    if policy == "error":
        if repeated.any():
            raise ValueError(
                f"repeated (item, worker) pairs in {where(repeated)}; "
                "use duplicates='collapse' or 'keep'"
            )
        return triplets, weight, 0
    n = int(exact.sum())
    if n:
        warnings.warn(
            f"collapsed {n} exact duplicate annotation(s) (same item, worker and label), e.g. "
            f"{where(exact, 5)}; pass duplicates='keep' to count them twice",
            stacklevel=4,
        )
    return triplets[~exact], None if weight is None else weight[~exact], n


# ------------------------------------------------------------------------------ text files
def _source(path):
    """``(source for pyarrow, display name)``: a path (checked), or a file object's bytes."""
    pa, _ = _arrow()
    if hasattr(path, "read"):
        data = path.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        return pa.py_buffer(data), getattr(path, "name", "<stream>")
    p = Path(os.fspath(path)).expanduser()
    if p.is_dir():
        raise ValueError(
            f"{p} is a directory, not a file of annotations: pass the file itself (e.g. "
            f"{p / 'annotations.csv'}), or ci.datasets.load({str(p)!r}) for a dataset folder"
        )
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    return str(p), str(p)


_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4", ".br", ".zstd")


def _text_stream(source, encoding: str, limit: int | None = None):
    """A text stream over the file (the BOM dropped), for Python's csv module."""
    pa, _ = _arrow()
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    if isinstance(source, str) and not source.lower().endswith(_COMPRESSED):
        return open(source, newline="", encoding=codec, errors="replace")
    if isinstance(source, str):
        with pa.input_stream(source, compression="detect") as f:
            data = f.read(limit) if limit else f.read()
    else:
        data = source.to_pybytes()[:limit] if limit else source.to_pybytes()
    return io.StringIO(data.decode(codec, errors="replace"), newline="")


def _records(source, sep: str, encoding: str, limit: int | None = None):
    """``(first physical line, fields)`` of every non-empty record, by Python's csv module (the
    slow path: only to name lines in an error message, and for the header)."""
    with _text_stream(source, encoding, limit) as stream:
        reader = csv.reader(stream, delimiter=sep)
        start = 1
        try:
            for record in reader:
                if record:
                    yield start, record
                start = reader.line_num + 1
        except csv.Error:
            return


def _line_finder(source, sep: str, encoding: str):
    """Maps data-row indices (as pyarrow counts them: empty lines skipped) to file lines."""

    def lines(rows):
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return rows
        wanted, top, found = set(rows.tolist()), int(rows.max()), {}
        for r, (line, _) in enumerate(_records(source, sep, encoding), start=-1):  # -1: header
            if r in wanted:
                found[r] = line
            if r >= top:
                break
        return np.asarray([found.get(int(r), int(r) + 2) for r in rows])

    return lines


def _read_text(path, sep: str | None, encoding: str, choose_columns) -> tuple:
    """Read a CSV/TSV with pyarrow's CSV reader (the engine of pandas' ``engine="pyarrow"``),
    every field as exact text.  ``choose_columns(names)`` picks the columns to keep.  Returns
    ``(table, names, where)``; a row with more or fewer fields than the header is an error that
    names its lines (pandas would shift the columns)."""
    pa, _ = _arrow()
    import pyarrow.csv as pacsv

    source, name = _source(path)
    if sep is None:
        suffixes = [s.lower() for s in Path(name).suffixes]
        sep = "\t" if any(s in _TAB_SUFFIXES for s in suffixes) else ","
    if not isinstance(sep, str) or len(sep) != 1 or sep in "\"\r\n":
        raise ValueError(f"sep must be one character other than a quote or newline, got {sep!r}")
    header = next(_records(source, sep, encoding, limit=1 << 20), None)
    if header is None:
        raise ValueError(f"{name} is empty: expected a header line such as item,worker,label")
    names = header[1]
    keep = choose_columns(names)
    bad_rows: list = []

    def invalid(row):
        bad_rows.append(row)
        return "skip"

    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True,
                                             invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names}, strings_can_be_null=True,
                include_columns=keep or []),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, KeyError, UnicodeError, LookupError) as err:
        reason = " ".join(str(err).split())
        if "UTF8" in reason or isinstance(err, UnicodeError):
            raise ValueError(f"{name} is not valid {encoding} text ({reason}); pass "
                             "encoding='latin-1' (or the file's encoding)") from None
        raise ValueError(f"cannot parse {name} as {'TSV' if sep == chr(9) else 'CSV'}: "
                         f"{reason}") from None
    if bad_rows:
        n = len(names)
        lines = [(line, len(fields)) for line, fields in _records(source, sep, encoding)
                 if len(fields) != n][:10]
        shown = ", ".join(f"{line} ({k} fields)" for line, k in lines) or "?"
        more = f" and {len(bad_rows) - len(lines)} more" if len(bad_rows) > len(lines) else ""
        example = " ".join(str(bad_rows[0].text).split())[:80]
        raise ValueError(
            f"{name}: line(s) {shown}{more} do not have the header's {n} fields (e.g. "
            f"{example!r}); a trailing {'tab' if sep == chr(9) else 'comma'}, an unquoted "
            "separator inside a value, an unclosed quote or a missing field? Columns are never shifted to fit"
        )
    if any(not pa.types.is_string(t) for t in table.schema.types):
        raise ValueError(f"cannot read the header of {name}: {names}")
    return table, names, _Where("line", 2, _line_finder(source, sep, encoding))


def _arrow_columns(table, roles: dict) -> dict:
    """``{role: the Arrow column named roles[role]}`` (by position: names are unique here)."""
    index = {c: i for i, c in enumerate(table.column_names)}
    return {role: table.column(index[col]) for role, col in roles.items()}


def _choose(names: list, item, worker: str, label: str, weight) -> dict:
    """``{role: column name}`` for item, worker, label (and weight, if present or asked for);
    a missing or duplicated column is an error naming it."""
    names = list(names)
    default_item = item is None
    if item is None:
        item = next((c for c in _ITEM_COLUMNS if c in names), "item")
    roles = {"item": item, "worker": worker, "label": label}
    if weight is not None and weight in names:
        roles["weight"] = weight
    dup = sorted({str(c) for c in roles.values() if names.count(c) > 1})
    if dup:
        raise ValueError(f"duplicate column name(s) {dup} in the table: which one is meant is "
                         "ambiguous; rename them")
    for role, col in roles.items():
        if col not in names:
            hint = " or 'task'" if role == "item" and default_item else ""
            near = [n for n in names if isinstance(n, str) and n.strip().lower() == str(col).lower()]
            near_hint = f" (did you mean {near[0]!r}? column names are exact)" if near else ""
            raise ValueError(
                f"missing {role} column '{col}'{hint}; the table has columns "
                f"{names}{near_hint}; name it with {role}=... (crowdinfer fit: --{role}-col)"
            )
    if weight is not None and weight not in names and weight != "weight":
        raise ValueError(f"missing weight column '{weight}'; the table has columns {names}")
    used = list(roles.values())
    same = sorted({str(c) for c in used if used.count(c) > 1})
    if same:
        raise ValueError(f"column(s) {same} given for two roles ({roles}); each role needs its "
                         "own column")
    return roles



@dataclasses.dataclass(frozen=True, eq=False)
class Annotations:
    """Validated crowd annotations.

    Attributes:
        item, worker, label: int32 codes, sorted by item (then worker).
        item_ids, worker_ids, classes: the user's ids / class names; code ``c`` means ``classes[c]``.
        gold: int32 code of the gold label per item, ``-1`` where unknown; ``None`` if no gold.
        features: float32 array (n_items, d) or ``None``.
        n_collapsed: exact duplicate rows collapsed on construction.
        weight: float32 weight per annotation (same order as ``item``), or ``None`` (all 1).
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
    weight: np.ndarray | None = None

    def derived(self, key: str, compute):
        """``compute()``, worked out once per ``Annotations`` and kept: the quantities every fit
        derives from the annotations alone (the vote table, which workers are identifiable, the
        pooled skill) -- the default fits several models on the same annotations.  Safe because
        an ``Annotations`` is never changed after construction (every transformation returns a
        new one, with an empty cache -- except :meth:`without_gold`, which shares it: what is
        kept here must not depend on the gold labels)."""
        cache = self.__dict__.setdefault("_derived", {})  # frozen: not through __setattr__
        if key not in cache:
            cache[key] = compute()
        return cache[key]

    def without_gold(self) -> "Annotations":
        """The same annotations without gold labels (what a fit that does not use the gold
        sees), sharing this one's :meth:`derived` cache."""
        out = dataclasses.replace(self, gold=None)
        out.__dict__["_derived"] = self.__dict__.setdefault("_derived", {})
        return out

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

    @property
    def weights(self) -> np.ndarray:
        """The weight of each annotation (float32; all 1 without a weight column)."""
        if self.weight is None:
            return np.ones(self.n_annotations, np.float32)
        return self.weight

    def __len__(self) -> int:
        return self.n_annotations

    def __repr__(self) -> str:
        extras = []
        if self.weight is not None:
            extras.append(f"weighted (total {float(self.weight.sum()):.6g})")
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
        df,
        *,
        item: str | None = None,
        worker: str = "worker",
        label: str = "label",
        weight: str | None = "weight",
        classes: Sequence[Any] | None = None,
        items: Sequence[Any] | None = None,
        gold: Any = None,
        features: np.ndarray | None = None,
        duplicates: str = "collapse",
    ) -> "Annotations":
        """Build from a long table with one row per annotation.

        Args:
            df: the table: a pandas DataFrame, a pyarrow Table or a polars DataFrame. Default
                columns ``item, worker, label``; crowd-kit's ``task`` is accepted for the item
                column. Values keep their types (see the module docstring: ids are exact).
            item, worker, label: column names, if not the defaults.
            weight: the column of annotation weights (finite, >= 0), used when present; ``None``
                ignores any such column.
            classes: the fixed, ordered class list (a class nobody chose still exists). Default: the
                sorted distinct labels.
            items: the full, ordered list of item ids (items nobody annotated may be included, e.g.
                to carry their features). Default: the sorted distinct annotated items.
            gold: gold labels, as a ``{item: label}`` mapping, a Series indexed by item, or a
                DataFrame with columns ``item, label``.
            features: float array, one row per item in the order of ``items`` (required with it).
            duplicates: ``"collapse"``, ``"keep"`` or ``"error"`` (see the module docstring); a
                collapsed exact duplicate keeps the first row's weight.
        """
        options = dict(item=item, worker=worker, label=label, weight=weight, classes=classes,
                       items=items, gold=gold, features=features, duplicates=duplicates)
        if not isinstance(df, pd.DataFrame):
            if type(df).__module__.split(".")[0] == "polars":
                if not hasattr(df, "to_arrow"):  # a LazyFrame
                    raise TypeError("a polars LazyFrame: call .collect() first")
                return cls.from_arrow(df.to_arrow(), **options)
            if type(df).__module__.split(".")[0] == "pyarrow":
                return cls.from_arrow(df, **options)
            raise TypeError(f"expected a pandas DataFrame, a pyarrow Table or a polars DataFrame, "
                            f"got {type(df).__name__}")
        where = _Where("row", 0)
        roles = _choose(list(df.columns), item, worker, label, weight)
        if len(df) == 0:
            raise ValueError("no annotations: the table is empty")
        position = {c: i for i, c in enumerate(df.columns)}
        series = {role: df.iloc[:, position[col]] for role, col in roles.items()}
        return cls._from_columns(series, roles, where, _pandas_column, options)

    @classmethod
    def from_arrow(cls, table, **kwargs) -> "Annotations":
        """Build from a pyarrow Table or RecordBatch (options as :meth:`from_dataframe`). String
        columns are text, integer columns integers; error messages name 0-based rows."""
        pa, _ = _arrow()
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TypeError(f"expected a pyarrow Table, got {type(table).__name__}")
        options = _options(kwargs)
        where = _Where("row", 0)
        roles = _choose(table.column_names, options["item"], options["worker"],
                        options["label"], options["weight"])
        if table.num_rows == 0:
            raise ValueError("no annotations: the table is empty")
        return cls._from_columns(_arrow_columns(table, roles), roles, where, _arrow_column, options)

    @classmethod
    def from_parquet(cls, path, **kwargs) -> "Annotations":
        """Read a Parquet file (or a folder of Parquet files) with one row per annotation; options
        as :meth:`from_dataframe`. Column types are kept (see :meth:`from_arrow`)."""
        import pyarrow.parquet as pq

        p = Path(os.fspath(path)).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"no such file: {p}")
        options = _options(kwargs)
        columns = None
        if p.is_file():
            try:
                names = pq.read_schema(p).names
            except Exception as err:  # pyarrow raises ArrowInvalid / OSError for a non-Parquet file
                raise ValueError(f"cannot read {p} as Parquet: {' '.join(str(err).split())}"
                                 ) from None
            roles = _choose(names, options["item"], options["worker"], options["label"],
                            options["weight"])
            columns = list(roles.values())
        try:
            table = pq.read_table(p, columns=columns)
        except Exception as err:
            raise ValueError(f"cannot read {p} as Parquet: {' '.join(str(err).split())}") from None
        return cls.from_arrow(table, **kwargs)

    @classmethod
    def from_csv(cls, path, *, sep: str | None = None, encoding: str = "utf-8",
                 **kwargs) -> "Annotations":
        """Read a CSV (or, with ``sep="\\t"`` or a ``.tsv``/``.tab`` name, TSV) file with one row per
        annotation (see :meth:`from_dataframe` for the options). ``path`` may be compressed
        (``.gz``, ``.bz2``, ``.zst``) or a file object.

        Every field is read as exact text by pyarrow's CSV reader; a column becomes integers only
        when every value is a canonical integer (module docstring). Error messages name file lines
        (the header is line 1).
        """
        options = _options(kwargs)
        chosen = {}

        def choose(names):
            chosen.update(_choose(names, options["item"], options["worker"], options["label"],
                                  options["weight"]))
            return list(dict.fromkeys(chosen.values()))

        table, _, where = _read_text(path, sep, encoding, choose)
        if table.num_rows == 0:
            raise ValueError("no annotations: the table is empty")
        return cls._from_columns(_arrow_columns(table, chosen), chosen, where,
                                 partial(_text_column, parse_ints=True), options)

    @classmethod
    def from_file(cls, path, format: str | None = None, **kwargs) -> "Annotations":
        """Read annotations from a file: ``format`` is ``"csv"``, ``"tsv"``, ``"parquet"`` or
        ``"arrow"`` (Feather/IPC); default: from the extension (CSV when unknown)."""
        if format is None:
            suffixes = [s.lower() for s in Path(os.fspath(path)).suffixes]
            if any(s in (".parquet", ".pq") for s in suffixes):
                format = "parquet"
            elif any(s in (".arrow", ".feather", ".ipc") for s in suffixes):
                format = "arrow"
            elif any(s in _TAB_SUFFIXES for s in suffixes):
                format = "tsv"
            else:
                format = "csv"
        if format == "csv":
            return cls.from_csv(path, **kwargs)
        if format == "tsv":
            return cls.from_csv(path, sep="\t", **kwargs)
        if format == "parquet":
            return cls.from_parquet(path, **kwargs)
        if format == "arrow":
            import pyarrow.feather as feather

            p = Path(os.fspath(path))
            if p.is_dir():
                raise ValueError(f"{p} is a directory, not an Arrow file")
            try:
                table = feather.read_table(p)
            except FileNotFoundError:
                raise
            except Exception as err:
                raise ValueError(f"cannot read {p} as Arrow/Feather: "
                                 f"{' '.join(str(err).split())}") from None
            return cls.from_arrow(table, **kwargs)
        raise ValueError(f"format must be 'csv', 'tsv', 'parquet' or 'arrow', got {format!r}")

    @classmethod
    def _from_columns(cls, raw: dict, roles: dict, where: _Where, column, options: dict):
        """Validate the raw ``{role: column}`` with ``column(raw, role, name, where)``, then
        :meth:`_build`."""
        cols = {role: column(raw[role], role, roles[role], where)
                for role in ("item", "worker", "label")}
        w = _weights(raw["weight"], roles["weight"], where) if "weight" in roles else None
        return cls._build(cols, w, where, **_build_options(options))

    @classmethod
    def _build(cls, cols: dict, weight, where: _Where, *, classes, items, gold, features,
               duplicates) -> "Annotations":
        """Codes, id maps and the duplicate policy, from validated columns."""
        for role in ("item", "worker"):
            column = cols[role]
            if column.kind in ("int", "float") and column.values is not None:
                neg = column.values < 0
                if neg.any():
                    raise ValueError(f"negative {role} id in {where(neg)}")
        label_codes, class_names = _encode(cols["label"], classes)
        if classes is not None:
            bad = label_codes < 0
            if bad.any():
                unknown = list(dict.fromkeys(cols["label"].take(np.flatnonzero(bad)[:100])))[:10]
                raise ValueError(
                    f"label(s) {unknown} in {where(bad)} are not in the "
                    f"given classes {list(class_names)}"
                )
        if len(class_names) < 2:
            raise ValueError(
                f"fewer than 2 classes ({list(class_names)}): pass classes=[...] with the full "
                "class list if some classes were never chosen"
            )
        if classes is None and cols["label"].kind == "text":
            _warn_lookalike_labels(class_names)
        item_codes, item_ids = _encode(cols["item"], items)
        if items is not None and (item_codes < 0).any():
            bad = item_codes < 0
            raise ValueError(f"item(s) in {where(bad)} are not in items=[...]")
        worker_codes, worker_ids = _encode(cols["worker"], None)

        triplets = np.stack([item_codes, worker_codes, label_codes], axis=1)
        triplets, weight, n_collapsed = _apply_duplicate_policy(triplets, duplicates, where, weight)
        ann = cls._from_codes(triplets, item_ids, worker_ids, class_names, n_collapsed, weight)
        if features is not None:
            if items is None:
                raise ValueError("features need items=[...]: the item id of each feature row")
            ann = ann.with_features(features)
        if gold is not None:
            ann = ann.with_gold(gold)
        return ann

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
        weight=None,
        duplicates: str = "keep",
    ) -> "Annotations":
        """Build from integer code arrays (item, worker and label already in 0..n-1).

        Sizes default to ``max + 1``; pass them to include items, workers or classes that do not
        appear. ``gold`` is an int array with one code per item (``-1`` unknown); ``weight`` an
        optional float array, one finite weight >= 0 per annotation.
        """
        arrays = {}
        for role, values in (("item", item), ("worker", worker), ("label", label)):
            arr = np.asarray(values)
            if arr.ndim != 1:
                raise ValueError(f"{role} must be a 1-d array, got shape {arr.shape}")
            if arr.dtype.kind == "f":
                bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**31)
                if bad.any():
                    raise ValueError(f"non-integer or NaN {role} at index {_rows(bad, 0)}")
            elif arr.dtype.kind not in "iu" or (arr.dtype.kind == "u" and arr.dtype.itemsize == 8
                                                and len(arr) and arr.max() >= 2**63):
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
            if size > 2**31 - 1:
                raise ValueError(f"{role} codes go up to {size - 1}: at most 2**31 - 2")
            sizes[role] = size
        if sizes["label"] < 2:
            raise ValueError("fewer than 2 classes: pass n_classes=")
        class_names = np.asarray(list(classes) if classes is not None else range(sizes["label"]), dtype=object)
        if len(class_names) != sizes["label"]:
            raise ValueError(f"classes has {len(class_names)} names for {sizes['label']} classes")
        w = None
        if weight is not None:
            w = np.asarray(weight)
            if w.shape != (n,):
                raise ValueError(f"weight must have shape ({n},), got {w.shape}")
            if w.dtype.kind not in "iuf":
                raise ValueError(f"weight must be numbers, got dtype {w.dtype}")
            w = _weights(pd.Series(w.astype(np.float64)), "weight", _Where("index", 0))
        triplets = np.stack([arrays["item"], arrays["worker"], arrays["label"]], axis=1)
        triplets, w, n_collapsed = _apply_duplicate_policy(triplets, duplicates,
                                                           _Where("index", 0), w)
        ann = cls._from_codes(
            triplets, np.arange(sizes["item"]), np.arange(sizes["worker"]), class_names,
            n_collapsed, w,
        )
        return ann._with_optional(gold=gold, features=features)

    @classmethod
    def _from_codes(cls, triplets, item_ids, worker_ids, classes, n_collapsed=0,
                    weight=None) -> "Annotations":
        i, w = triplets[:, 0].astype(np.int64), triplets[:, 1].astype(np.int64)
        m = int(w.max()) + 1 if len(w) else 1
        if len(i) and (int(i.max()) + 1) * m < 2**62:
            order = np.argsort(i * m + w, kind="stable")
        else:
            order = np.lexsort((w, i))
        t = triplets[order].astype(np.int32)
        return cls(
            item=t[:, 0].copy(),
            worker=t[:, 1].copy(),
            label=t[:, 2].copy(),
            item_ids=np.asarray(item_ids),
            worker_ids=np.asarray(worker_ids),
            classes=np.asarray(classes),
            n_collapsed=n_collapsed,
            weight=None if weight is None else np.asarray(weight, np.float32)[order],
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
        if len(series) and pd.api.types.is_float_dtype(series.index.dtype):
            series.index = _normalise_values(series.index.to_series()).to_numpy()
        gold_items = _aligned(series.index.to_numpy(dtype=object),
                              "text" if _is_text(self.item_ids) else "")
        gold_labels = _aligned(series.to_numpy(dtype=object),
                               "text" if _is_text(self.classes) else "")
        series = pd.Series(gold_labels, index=pd.Index(gold_items, dtype=object), dtype=object)
        item_index = pd.Index(self.item_ids, dtype=object)
        codes = item_index.get_indexer(series.index)
        unknown = codes < 0
        if unknown.any():
            names = series.index[unknown].tolist()
            raise ValueError(
                f"gold labels for {int(unknown.sum())} unknown item(s): {names[:10]}"
                f"{' ...' if len(names) > 10 else ''}"
            )
        class_index = pd.Index(self.classes, dtype=object)
        label_codes = class_index.get_indexer(pd.Index(series.to_numpy(dtype=object), dtype=object))
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
        table = {
            "item": self.item_ids[self.item],
            "worker": self.worker_ids[self.worker],
            "label": self.classes[self.label],
        }
        if self.weight is not None:
            table["weight"] = self.weight
        return pd.DataFrame(table)

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
        np.add.at(counts, (self.worker[has], gold[has], self.label[has]), self.weights[has])
        return counts

    def annotations_per_worker(self) -> np.ndarray:
        """Annotations per worker (with a weight column: the total weight, a float)."""
        return self.derived("annotations_per_worker", lambda: np.bincount(
            self.worker, weights=self.weight, minlength=self.n_workers)).copy()

    def rows_per_item(self) -> np.ndarray:
        """Rows per item, weights ignored (int).  Kept: the per-item layout of
        :meth:`to_device` and the identifiability check both start from it."""
        return self.derived("rows_per_item", lambda: np.bincount(
            self.item, minlength=self.n_items)).copy()

    def annotations_per_item(self) -> np.ndarray:
        """Annotations per item (with a weight column: the total weight, a float)."""
        return np.bincount(self.item, weights=self.weight, minlength=self.n_items)

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

        def put(a):  # every array here is a fresh host copy: device_put need not copy it again
            return jax.device_put(a, sharding)  # None: the default device

        def padded(a, fill):
            return put(np.concatenate([a, np.full(pad, fill, dtype=np.int32)]))

        weight = np.concatenate([self.weights, np.zeros(pad, np.float32)])
        slots = None if sharding is not None else slot_layout(
            self.item, self.worker, self.label, self.weight, self.n_items, self.n_workers,
            self.n_classes, counts=self.rows_per_item())
        return CrowdData(
            item=padded(self.item, self.n_items - 1),
            worker=padded(self.worker, 0),
            label=padded(self.label, 0),
            weight=put(weight),
            n_items=self.n_items,
            n_workers=self.n_workers,
            n_classes=self.n_classes,
            slots=None if slots is None else put(slots),
        )


_OPTION_DEFAULTS = dict(item=None, worker="worker", label="label", weight="weight", classes=None,
                        items=None, gold=None, features=None, duplicates="collapse")


def _options(kwargs: dict) -> dict:
    unknown = sorted(set(kwargs) - set(_OPTION_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; the readers take {sorted(_OPTION_DEFAULTS)}")
    return {**_OPTION_DEFAULTS, **kwargs}


def _build_options(options: dict) -> dict:
    return {k: options[k] for k in ("classes", "items", "gold", "features", "duplicates")}


def _normalise_values(values: pd.Series) -> pd.Series:
    """Whole floats (1.0) become ints in a float Series (a gold table read with NaNs)."""
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy()
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2.0**53):
            return values.astype(np.int64)
    return values


def read_text_table(path, sep: str | None = None, encoding: str = "utf-8") -> pd.DataFrame:
    """A small CSV/TSV table (gold labels, item lists) by the same rules as :meth:`Annotations.
    from_csv`: every field exact text, a column integers only when every non-missing value is a
    canonical integer; missing fields are ``None``."""
    pa, pc = _arrow()
    table, _, _ = _read_text(path, sep, encoding, lambda names: None)
    if len(set(table.column_names)) != len(table.column_names):
        dup = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
        raise ValueError(f"duplicate column name(s) {dup} in {path}; rename them")
    out = {}
    for i, name in enumerate(table.column_names):
        arr = table.column(i).combine_chunks()
        present = arr.drop_null()
        if len(present) and pc.all(pc.match_substring_regex(present, _CANONICAL_INT)).as_py():
            try:
                ints = pc.cast(arr, pa.int64())
            except pa.ArrowInvalid:
                ints = None
            if ints is not None:
                out[name] = (ints.to_numpy() if not arr.null_count
                             else np.asarray(ints.to_pylist(), dtype=object))
                continue
        out[name] = np.asarray(arr.to_pylist(), dtype=object)
    return pd.DataFrame(out, columns=list(out))
