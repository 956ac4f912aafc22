"""Reading and writing the files of the platforms annotators already use.

    ann = formats.read("export.json", "label_studio")      # or "toloka", "mturk", "csv", ...
    post = crowdinfer.fit(ann)
    formats.write_label_studio_predictions(post, "preannotations.json", tasks="export.json")

* **Label Studio** (JSON export, "JSON" not "JSON_MIN"): a list of tasks, each with ``data`` and
  ``annotations``; an annotation's ``result`` holds ``{"type": "choices", "from_name": ...,
  "value": {"choices": [label]}}``; ``completed_by`` is the annotator (a user id, or an object with
  ``email``/``id``).  Cancelled (skipped) annotations are dropped; annotations marked
  ``ground_truth`` give the task's gold label and are not counted as crowd answers.  The item is
  the task ``id`` (or ``item="<data key>"``).
* **Toloka** (results TSV): ``INPUT:<field>`` columns (the task), ``OUTPUT:<field>`` (the answer),
  ``GOLDEN:<field>`` (the control answer, used as gold), ``ASSIGNMENT:worker_id`` and
  ``ASSIGNMENT:status`` (``REJECTED`` assignments are dropped with a warning).  The item is the
  ``INPUT:`` value (several ``INPUT:`` columns: their values joined by ``" | "``).
* **Amazon Mechanical Turk** (batch results CSV): ``HITId``, ``WorkerId``, ``AssignmentStatus``
  (``Rejected`` assignments are dropped with a warning), ``Input.<field>`` and
  ``Answer.<field>`` columns.  The answer is the one ``Answer.*`` column (or ``answer="..."``), or,
  for radio buttons exported as one true/false column per choice (``Answer.<group>.<choice>``),
  the choice that is true.  The item is the one ``Input.*`` value, otherwise the ``HITId``.

Every reader returns :class:`~crowdinfer.annotations.Annotations` and raises ``ValueError``
naming the problem (file, line or task, column) on a malformed file.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import pandas as pd

from .annotations import Annotations

__all__ = ["FORMATS", "read", "read_label_studio", "read_toloka", "read_mturk",
           "write_label_studio_predictions", "FeatureTable", "read_features"]

FORMATS = ("csv", "tsv", "parquet", "label_studio", "toloka", "mturk")


def read(path, format: str, **options) -> Annotations:
    """Annotations from ``path`` in ``format`` (one of :data:`FORMATS`); ``options`` go to the
    reader (for csv/tsv/parquet: :meth:`Annotations.from_dataframe`'s column names etc.)."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if format == "csv":
        return Annotations.from_csv(path, **options)
    if format == "tsv":
        return Annotations.from_csv(path, sep="\t", **options)
    if format == "parquet":
        return Annotations.from_dataframe(pd.read_parquet(path), **options)
    reader = {"label_studio": read_label_studio, "toloka": read_toloka, "mturk": read_mturk}[format]
    return reader(path, **options)


def _read_text_table(path: Path, sep: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise ValueError(f"{path} is not a well-formed {'TSV' if sep == chr(9) else 'CSV'} file: "
                         f"{err}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty") from None


def _finish(rows: list, path, gold, classes, drop_notes: list) -> Annotations:
    for note in drop_notes:
        warnings.warn(f"{path}: {note}", stacklevel=3)
    if not rows:
        raise ValueError(f"{path} holds no usable answers")
    df = pd.DataFrame(rows, columns=["item", "worker", "label"])
    if isinstance(gold, dict) and not gold:
        gold = None
    return Annotations.from_dataframe(df, classes=classes, gold=gold)


# -- Label Studio ---------------------------------------------------------------------------------
def _ls_worker(value, where: str) -> str:
    if isinstance(value, dict):
        for key in ("email", "id", "username"):
            if value.get(key) not in (None, ""):
                return str(value[key])
        raise ValueError(f"{where}: completed_by has neither email nor id")
    if value is None or value == "":
        raise ValueError(f"{where}: the annotation has no completed_by (annotator)")
    return str(value)


def read_label_studio(path, *, from_name: Optional[str] = None, item: Optional[str] = None,
                      classes: Optional[Sequence] = None) -> Annotations:
    """A Label Studio JSON export of a classification project (see the module docstring).
    ``from_name``: which ``<Choices>`` control, when the config has several; ``item``: a key of
    the task ``data`` to use as item id instead of the task id."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks")
    rows, gold, notes = [], {}, []
    cancelled = 0
    controls = set()
    for n, task in enumerate(tasks):
        if not isinstance(task, dict) or "data" not in task:
            raise ValueError(f"{path}: task #{n} has no 'data' (is this a Label Studio JSON export?)")
        if "annotations" not in task:
            raise ValueError(f"{path}: task #{n} has no 'annotations' list (export as 'JSON', not "
                             "'JSON_MIN' or 'CSV')")
        if item is None:
            if "id" not in task:
                raise ValueError(f"{path}: task #{n} has no 'id'; pass item='<data key>'")
            key = task["id"]
        else:
            if item not in task["data"]:
                raise ValueError(f"{path}: task #{n} has no data[{item!r}] (keys: "
                                 f"{sorted(task['data'])})")
            key = task["data"][item]
        if not _is_int(key):
            key = str(key)
        for a, ann in enumerate(task["annotations"] or []):
            where = f"{path}: task {key}, annotation #{a}"
            if ann.get("was_cancelled"):
                cancelled += 1
                continue
            choices = [r for r in ann.get("result") or [] if r.get("type") == "choices"
                       and (from_name is None or r.get("from_name") == from_name)]
            controls.update(r.get("from_name") for r in choices)
            if len(controls) > 1:
                raise ValueError(f"{path}: several choice controls {sorted(map(str, controls))}; "
                                 "pass from_name=...")
            if not choices:
                continue
            picked = (choices[0].get("value") or {}).get("choices")
            if not isinstance(picked, list) or len(picked) != 1:
                raise ValueError(f"{where}: expected exactly one chosen class, got {picked!r} "
                                 "(multi-label choices are not supported)")
            label = picked[0]
            if ann.get("ground_truth"):
                if gold.get(key, label) != label:
                    raise ValueError(f"{where}: two different ground-truth labels for one task")
                gold[key] = label
                continue
            rows.append((key, _ls_worker(ann.get("completed_by"), where), label))
    if cancelled:
        notes.append(f"{cancelled} cancelled (skipped) annotation(s) dropped")
    keys = [r[0] for r in rows] + list(gold)
    if not all(_is_int(k) for k in keys):  # one type of id, so that the items sort
        rows = [(str(k), w, lab) for k, w, lab in rows]
        gold = {str(k): lab for k, lab in gold.items()}
    return _finish(rows, path, gold, classes, notes)


def _is_int(value) -> bool:
    """Label Studio's task ids are integers: kept as such, they order 1, 2, ..., 10."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _prediction_table(posterior) -> pd.DataFrame:
    if isinstance(posterior, pd.DataFrame):
        table = posterior
    elif hasattr(posterior, "to_pandas"):
        table = posterior.to_pandas()
    else:
        raise TypeError("posterior must be a crowdinfer Posterior or a DataFrame with columns "
                        "item, label, confidence")
    missing = [c for c in ("item", "label", "confidence") if c not in table.columns]
    if missing:
        raise ValueError(f"the predictions need columns item, label, confidence; missing {missing}")
    return table


def write_label_studio_predictions(posterior, path, *, from_name: str = "choice",
                                   to_name: str = "image", data_key: str = "image",
                                   tasks: Any = None, model_version: str = "crowdinfer") -> int:
    """Write crowdinfer's label and confidence per task as Label Studio pre-annotations (tasks
    with ``predictions``, ready to import).  ``tasks``: the export the labels came from (a path or
    the list): each task keeps its own ``data`` (and is matched by task id, or by
    ``data[data_key]``); without it the item id goes in ``data[data_key]``.  Returns the number of
    tasks written."""
    table = _prediction_table(posterior)
    originals = {}
    if tasks is not None:
        if not isinstance(tasks, list):
            tasks = json.loads(Path(tasks).read_text(encoding="utf-8"))
        for task in tasks:
            originals[str(task.get("id"))] = task
            if data_key in task.get("data", {}):
                originals.setdefault(str(task["data"][data_key]), task)
    out = []
    for item, label, conf in zip(table["item"], table["label"], table["confidence"]):
        base = originals.get(str(item))
        if tasks is not None and base is None:
            raise ValueError(f"item {item!r} is not a task of the given export")
        data = dict(base["data"]) if base is not None else {data_key: item}
        out.append({
            "data": data,
            "predictions": [{
                "model_version": model_version,
                "score": float(conf),
                "result": [{"from_name": from_name, "to_name": to_name, "type": "choices",
                            "value": {"choices": [str(label)]}}],
            }],
        })
    Path(path).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return len(out)


# -- Toloka ---------------------------------------------------------------------------------------
def _pick(columns: list, prefix: str, wanted: Optional[str], path, what: str) -> str:
    found = [c for c in columns if c.startswith(prefix)]
    if wanted is not None:
        name = wanted if wanted.startswith(prefix) else prefix + wanted
        if name not in columns:
            raise ValueError(f"{path}: no column {name!r} (the {what} columns are {found})")
        return name
    if len(found) != 1:
        raise ValueError(f"{path}: {'no' if not found else 'several'} {what} column(s) {found}; "
                         f"pass {'output' if prefix == 'OUTPUT:' else 'answer'}='<field>'")
    return found[0]


def _item_ids(df: pd.DataFrame, inputs: list, item: Optional[str], fallback: Optional[str],
              path) -> pd.Series:
    if item is not None:
        if item not in df.columns:
            raise ValueError(f"{path}: no column {item!r} for the item id")
        return df[item]
    if len(inputs) == 1:
        return df[inputs[0]]
    if fallback is not None and fallback in df.columns:
        return df[fallback]
    if not inputs:
        raise ValueError(f"{path}: no input columns to identify the items; pass item='<column>'")
    return df[inputs].agg(" | ".join, axis=1)


def _require(df: pd.DataFrame, columns: Sequence[str], path, platform: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not a {platform} results file: missing column(s) {missing} "
                         f"(it has {list(df.columns)[:12]})")


def _lines(mask: np.ndarray) -> str:
    idx = (np.flatnonzero(mask) + 2).tolist()  # line 1 is the header
    return ", ".join(map(str, idx[:10])) + (f" and {len(idx) - 10} more" if len(idx) > 10 else "")


def read_toloka(path, *, output: Optional[str] = None, item: Optional[str] = None,
                classes: Optional[Sequence] = None) -> Annotations:
    """Toloka's results TSV (see the module docstring).  ``output``: the ``OUTPUT:`` field when
    there are several; ``item``: a column to use as item id."""
    path = Path(path)
    df = _read_text_table(path, "\t")
    _require(df, ["ASSIGNMENT:worker_id"], path, "Toloka")
    out = _pick(list(df.columns), "OUTPUT:", output, path, "OUTPUT:")
    inputs = [c for c in df.columns if c.startswith("INPUT:")]
    items = _item_ids(df, inputs, item, "ASSIGNMENT:task_id", path).astype(str)
    notes = []
    keep = np.ones(len(df), bool)
    if "ASSIGNMENT:status" in df.columns:
        rejected = df["ASSIGNMENT:status"].str.upper().eq("REJECTED").to_numpy()
        if rejected.any():
            notes.append(f"{int(rejected.sum())} answer(s) of REJECTED assignments dropped "
                         f"(lines {_lines(rejected)})")
        keep &= ~rejected
    blank = df[out].str.strip().eq("").to_numpy() & keep
    if blank.any():
        notes.append(f"{int(blank.sum())} row(s) without an answer in {out} dropped "
                     f"(lines {_lines(blank)})")
    keep &= ~blank
    no_worker = df["ASSIGNMENT:worker_id"].str.strip().eq("").to_numpy() & keep
    if no_worker.any():
        raise ValueError(f"{path}: answer without ASSIGNMENT:worker_id on line(s) {_lines(no_worker)}")
    gold = {}
    golden = "GOLDEN:" + out[len("OUTPUT:"):]
    if golden in df.columns:
        for n, (key, value) in enumerate(zip(items, df[golden])):
            if value.strip() == "":
                continue
            if gold.get(key, value) != value:
                raise ValueError(f"{path}: line {n + 2}: item {key!r} has two different "
                                 f"{golden} values ({gold[key]!r}, {value!r})")
            gold[key] = value
    rows = list(zip(items[keep], df["ASSIGNMENT:worker_id"][keep], df[out][keep]))
    return _finish(rows, path, gold, classes, notes)


# -- Amazon Mechanical Turk -----------------------------------------------------------------------
_TRUE, _FALSE = {"true", "1", "on", "yes"}, {"false", "0", "", "off", "no"}


def read_mturk(path, *, answer: Optional[str] = None, item: Optional[str] = None,
               classes: Optional[Sequence] = None, gold: Any = None) -> Annotations:
    """An MTurk batch results CSV (see the module docstring).  ``answer``: the ``Answer.``
    field, or the radio-button group whose choices are exported as true/false columns;
    ``item``: a column to use as item id; ``gold``: gold labels, as for ``from_dataframe``."""
    path = Path(path)
    df = _read_text_table(path, ",")
    _require(df, ["HITId", "WorkerId", "AssignmentStatus"], path, "Mechanical Turk")
    answers = [c for c in df.columns if c.startswith("Answer.")]
    if not answers:
        raise ValueError(f"{path}: no Answer.* column (is this a batch results file?)")
    group = None
    if answer is not None:
        name = answer if answer.startswith("Answer.") else "Answer." + answer
        if name in df.columns:
            answers = [name]
        else:
            group = [c for c in answers if c.startswith(name + ".")]
            if not group:
                raise ValueError(f"{path}: no column {name!r} nor choices {name}.* "
                                 f"(Answer columns: {answers})")
    elif len(answers) > 1:
        values = {v.strip().lower() for c in answers for v in df[c]}
        if values <= _TRUE | _FALSE:
            group = answers
        else:
            raise ValueError(f"{path}: several Answer.* columns {answers}; pass answer='<field>'")
    notes = []
    rejected = df["AssignmentStatus"].str.strip().str.lower().eq("rejected").to_numpy()
    if rejected.any():
        notes.append(f"{int(rejected.sum())} Rejected assignment(s) dropped "
                     f"(lines {_lines(rejected)})")
    if group is not None:
        flags = np.stack([df[c].str.strip().str.lower().isin(_TRUE).to_numpy() for c in group], 1)
        several = (flags.sum(1) > 1) & ~rejected
        if several.any():
            raise ValueError(f"{path}: more than one choice of {group} is true on line(s) "
                             f"{_lines(several)}")
        choice = np.array([c.rsplit(".", 1)[-1] for c in group], dtype=object)
        labels = pd.Series(np.where(flags.any(1), choice[flags.argmax(1)], ""), index=df.index)
    else:
        labels = df[answers[0]]
    blank = labels.astype(str).str.strip().eq("").to_numpy() & ~rejected
    if blank.any():
        notes.append(f"{int(blank.sum())} assignment(s) without an answer dropped "
                     f"(lines {_lines(blank)})")
    keep = ~rejected & ~blank
    no_worker = df["WorkerId"].str.strip().eq("").to_numpy() & keep
    if no_worker.any():
        raise ValueError(f"{path}: answer without WorkerId on line(s) {_lines(no_worker)}")
    inputs = [c for c in df.columns if c.startswith("Input.")]
    items = _item_ids(df, inputs, item, "HITId", path).astype(str)
    rows = list(zip(items[keep], df["WorkerId"][keep], labels[keep]))
    return _finish(rows, path, gold, classes, notes)


# ------------------------------------------------------------------ item features (the online loop)
class FeatureTable(NamedTuple):
    """Items with a known class and numeric features, as :func:`read_features` returns them."""

    items: np.ndarray     # (N,) item ids, as written in the file
    classes: np.ndarray   # (K,) the class names, sorted (as text)
    labels: np.ndarray    # (N,) each item's class: an index into ``classes``
    features: np.ndarray  # (N, D) float32, D = 0 when the table has no feature column
    columns: list         # the D feature column names


def read_features(path, format: str = "csv", *, item: str = "item", label: str = "label") -> FeatureTable:
    """A table of items (one row each: ``item``, ``label`` = the true class, then numeric feature
    columns) in csv, tsv or parquet, as read by ``crowdinfer online``.  Item ids and labels are
    read as text; raises ``ValueError`` naming a missing column, the non-numeric feature columns,
    or the rows without a label."""
    if format not in ("csv", "tsv", "parquet"):
        raise ValueError(f"format {format!r}: a features table must be csv, tsv or parquet")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if format == "parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, sep="\t" if format == "tsv" else ",", dtype={item: str, label: str})
    for col in (item, label):
        if col not in table.columns:
            raise ValueError(f"{path} needs a column {col!r} (columns: {item},{label},<features>)")
    feature_cols = [c for c in table.columns if c not in (item, label)]
    bad = [c for c in feature_cols if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise ValueError(f"feature columns must be numeric; not numeric: {bad[:5]}")
    missing = table[label].isna().to_numpy()
    if missing.any():
        where = (f"row(s) {np.flatnonzero(missing)[:10].tolist()}" if format == "parquet"
                 else f"line(s) {_lines(missing)}")
        raise ValueError("every item needs its true label (the simulated workers answer from it); "
                         f"{path} has none on {where}")
    classes, codes = np.unique(table[label].astype(str).to_numpy(), return_inverse=True)
    return FeatureTable(table[item].to_numpy(), classes, codes.astype(np.int64),
                        table[feature_cols].to_numpy(np.float32), feature_cols)
