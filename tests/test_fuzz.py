"""Property-based fuzzing of the readers (hypothesis): every generated input either loads exactly
(ids and labels round-trip through ``to_dataframe`` and ``Posterior.to_pandas``) or raises one
``ValueError`` with a message.  Never another exception, never a silent merge, split or shift.

The default run is lean (a few dozen examples per reader); ``experiments/benchmarks/robustness.py``
runs the same properties on thousands of inputs and writes ``robustness.md``.  The helpers here
(``csv_outcome``, ``frame_outcome``, ``arrays_outcome``) are what that benchmark calls.
"""
from __future__ import annotations

import collections
import csv
import io
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crowdinfer as ci

EXAMPLES = 40
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CANONICAL = re.compile(r"(?:0|[1-9][0-9]{0,18})")
NA_TOKENS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
             "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"}

# the characters that break naive readers: separators, quotes, newlines, signs, zeros, dots,
# ASCII and Unicode spaces, a full-width digit, an accent
ALPHABET = "0123456789abAB+-.,;\"'\n\r\t \u00a0\u3000\uff11\u00e9_/"
TRAPS = ["007", "7", "+1", "1", "1.0", "\uff11", "-1", "0", "12345678901234567890",
         "9223372036854775807", "9223372036854775808", "x", "y"]
# a clean field: no surrounding space, not empty, not a missing-value marker -- but separators,
# quotes and newlines inside (the writer quotes them)
clean_field = st.one_of(
    st.text(alphabet=ALPHABET.replace(" ", "").replace("\t", "").replace("\u00a0", "")
            .replace("\u3000", ""), min_size=1, max_size=6).filter(lambda v: v not in NA_TOKENS
                                                                 and v == v.strip()),
    st.sampled_from(TRAPS),
)
field = st.one_of(clean_field, st.text(alphabet=ALPHABET, max_size=6),
                  st.sampled_from(TRAPS + [" 1", "1 ", "NA", "nan", "null", ""]))
# half the tables are clean (they must load), half may hold anything (load exactly or refuse)
rows = st.one_of(st.lists(st.tuples(clean_field, clean_field, clean_field), min_size=1, max_size=8),
                 st.lists(st.tuples(field, field, field), min_size=1, max_size=8))


def _expected_column(values: list[str]) -> list:
    """The reader's rule: integers when every value is a canonical int64, else the text."""
    if all(CANONICAL.fullmatch(v) for v in values) and all(int(v) < 2**63 for v in values):
        return [int(v) for v in values]
    return list(values)


def _clean(value: str) -> bool:
    return value not in NA_TOKENS and value == value.strip() and value.strip() != ""


def csv_outcome(table: list[tuple], path, sep: str = ",", extra: str | None = None) -> str:
    """Write ``table`` (item, worker, label rows) as a correctly quoted CSV (plus an optional raw
    ``extra`` line) and read it.  Returns ``"loaded"`` (exact round trip checked) or
    ``"error: <message>"``; anything else is raised (a failed check is an AssertionError)."""
    buf = io.StringIO()
    # lines end in \r\n (the csv module's default), so a field holding a lone \r is quoted too
    writer = csv.writer(buf, delimiter=sep, lineterminator="\r\n")
    writer.writerow(["item", "worker", "label"])
    writer.writerows(table)
    text = buf.getvalue() + (extra or "")
    path.write_bytes(text.encode("utf-8"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ann = ci.Annotations.from_csv(path, sep=sep, duplicates="keep")
        except ValueError as err:
            message = str(err)
            assert message and "\n" not in message, repr(message)
            clean = all(_clean(v) for row in table for v in row)
            if clean and extra is None and len({r[2] for r in table}) >= 2:
                raise AssertionError(f"clean table refused: {message}")
            return "error: " + message
    assert extra is None, "a malformed extra line was accepted"
    expected = [_expected_column([r[c] for r in table]) for c in range(3)]
    want = collections.Counter(zip(*expected))
    got = collections.Counter(ann.to_dataframe().itertuples(index=False, name=None))
    assert got == want, f"not an exact round trip: {got} != {want}"
    for ids, column in ((ann.item_ids, 0), (ann.worker_ids, 1), (ann.classes, 2)):
        assert len(ids) == len(set(expected[column])), "ids merged or split"
    return "loaded"


@given(table=rows)
@SETTINGS
def test_csv_loads_exactly_or_raises_one_value_error(tmp_path, table):
    csv_outcome(table, tmp_path / "fuzz.csv")


@given(table=rows)
@SETTINGS
def test_tsv_loads_exactly_or_raises_one_value_error(tmp_path, table):
    csv_outcome(table, tmp_path / "fuzz.tsv", sep="\t")


@given(table=rows, extra=st.sampled_from(["i1,w1,cat,0.9\n", "a,b\n", "a,b,c,\n", "a,\"b,c\n",
                                         ",,\n", "a,b,c,d,e\n"]))
@SETTINGS
def test_csv_with_a_malformed_line_is_refused(tmp_path, table, extra):
    outcome = csv_outcome(table, tmp_path / "fuzz.csv", extra=extra)
    assert outcome.startswith("error: ")


values = st.one_of(
    st.integers(min_value=-3, max_value=3), st.integers(min_value=2**62, max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1.0, 2.0]),
    st.text(alphabet=ALPHABET, max_size=4), st.none(), st.booleans(),
)
# a column of one type (often loadable) or of anything (mixed types are refused)
columns = st.one_of(
    st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=6),
    st.lists(st.sampled_from(["a", "b", "007", "7", "\uff11"]), min_size=1, max_size=6),
    st.lists(st.sampled_from([0.0, 1.0, 2.5]), min_size=1, max_size=6),
    st.lists(values, min_size=1, max_size=6),
)


def frame_outcome(item: list, worker: list, label: list) -> str:
    """``from_dataframe`` on object columns of mixed Python values: ``"loaded"`` (values round
    trip: to_dataframe gives back equal values, one id per distinct value) or ``"error: ..."``."""
    n = min(len(item), len(worker), len(label))
    df = pd.DataFrame({"item": pd.Series(item[:n], dtype=object),
                       "worker": pd.Series(worker[:n], dtype=object),
                       "label": pd.Series(label[:n], dtype=object)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ann = ci.Annotations.from_dataframe(df, duplicates="keep")
        except ValueError as err:
            assert str(err), "an empty message"
            return "error: " + str(err)
    back = ann.to_dataframe()
    for col in ("item", "worker", "label"):
        given_values, got = list(df[col]), list(back[col])
        assert collections.Counter(map(_key, given_values)) == collections.Counter(map(_key, got)), col
    assert len(ann.item_ids) == len({_key(v) for v in df["item"]})
    return "loaded"


def _key(value):
    """Equal ids compare equal across int/float spellings (1 and 1.0 are one number)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return ("number", int(value))
    if isinstance(value, (bool, np.bool_)):
        return ("bool", bool(value))
    if isinstance(value, (int, np.integer)):
        return ("number", int(value))
    return (type(value).__name__, value)


@given(item=columns, worker=columns, label=columns)
@SETTINGS
def test_dataframe_loads_exactly_or_raises_one_value_error(item, worker, label):
    frame_outcome(item, worker, label)


def arrays_outcome(item, worker, label, n_classes=None, weight=None) -> str:
    """``from_arrays``: ``"loaded"`` (codes kept, weights kept) or ``"error: ..."``."""
    try:
        ann = ci.Annotations.from_arrays(item, worker, label, n_classes=n_classes, weight=weight)
    except ValueError as err:
        assert str(err)
        return "error: " + str(err)
    got = collections.Counter(zip(ann.item.tolist(), ann.worker.tolist(), ann.label.tolist()))
    assert got == collections.Counter(zip(*(np.asarray(a).astype(np.int64).tolist()
                                            for a in (item, worker, label))))
    assert np.all(np.isfinite(ann.weights)), "a weight the engines cannot use (inf in float32)"
    if weight is not None:
        assert sorted(ann.weights.tolist()) == sorted(np.float32(weight).tolist())
    return "loaded"


codes = st.one_of(
    st.lists(st.integers(0, 5), min_size=4, max_size=4),  # often three of one length: loadable
    st.lists(st.one_of(st.integers(-2, 5), st.floats(-1, 5), st.just(float("nan"))), min_size=0,
             max_size=6),
)


@given(item=codes, worker=codes, label=codes, n_classes=st.one_of(st.none(), st.integers(-1, 4)),
       weight=st.one_of(st.none(), st.lists(st.floats(allow_nan=True, allow_infinity=True),
                                            min_size=0, max_size=6)))
@SETTINGS
def test_arrays_load_exactly_or_raise_one_value_error(item, worker, label, n_classes, weight):
    if weight is not None and len(weight) != len(item):
        weight = weight[: len(item)] + [1.0] * max(0, len(item) - len(weight))
    arrays_outcome(np.asarray(item), np.asarray(worker), np.asarray(label), n_classes, weight)


@given(table=st.lists(st.tuples(field, st.sampled_from(["w1", "w2", "007", "7"]),
                                st.sampled_from(["cat", "1", "1.0", "007"])),
                      min_size=2, max_size=6))
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_posterior_maps_back_to_the_exact_ids(tmp_path, table):
    if not csv_outcome(table, tmp_path / "p.csv") == "loaded":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ann = ci.Annotations.from_csv(tmp_path / "p.csv", duplicates="keep")
        post = ci.fit(ann, "majority_vote")
    labels = post.to_pandas()
    expected_items = _expected_column([r[0] for r in table])
    assert sorted(map(str, labels["item"])) == sorted(map(str, set(expected_items)))
    assert set(labels["label"]) <= set(_expected_column([r[2] for r in table]))


def test_fuzz_helpers_catch_a_merge(tmp_path, monkeypatch):
    """The round-trip check fails when a reader merges ``007`` and ``7`` (as the old one did)."""
    real = ci.Annotations.from_csv

    def merging(path, **kwargs):
        df = pd.read_csv(path, sep=kwargs.pop("sep", ","))  # pandas' inference: 007 -> 7
        return ci.Annotations.from_dataframe(df, **kwargs)

    monkeypatch.setattr(ci.Annotations, "from_csv", merging)
    with pytest.raises(AssertionError, match="round trip|merged"):
        csv_outcome([("007", "w", "x"), ("7", "w", "y")], tmp_path / "m.csv")
    monkeypatch.setattr(ci.Annotations, "from_csv", real)
    assert csv_outcome([("007", "w", "x"), ("7", "w", "y")], tmp_path / "m.csv") == "loaded"
