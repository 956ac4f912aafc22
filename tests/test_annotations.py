"""Annotations: constructors, id maps, validation errors that name the rows, duplicate policy."""
import numpy as np
import pandas as pd
import pytest

import crowdinfer as ci
from crowdinfer.annotations import capacity_bucket


def table(**cols):
    base = {"item": ["a", "a", "b", "c"], "worker": ["w1", "w2", "w1", "w2"], "label": ["x", "y", "x", "x"]}
    base.update(cols)
    return pd.DataFrame(base)


def test_dataframe_round_trip_keeps_user_ids_and_sorts_by_item():
    df = pd.DataFrame({"item": ["q", "p", "q", "p"], "worker": [7, 7, 9, 9], "label": ["no", "yes", "yes", "yes"]})
    ann = ci.Annotations.from_dataframe(df)
    assert list(ann.item_ids) == ["p", "q"] and list(ann.worker_ids) == [7, 9]
    assert list(ann.classes) == ["no", "yes"]
    assert np.all(np.diff(ann.item) >= 0) and ann.item.dtype == np.int32
    back = ann.to_dataframe().sort_values(["item", "worker"]).reset_index(drop=True)
    expect = df.sort_values(["item", "worker"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(back.astype(str), expect.astype(str))


def test_crowdkit_task_column_and_custom_names():
    ann = ci.Annotations.from_dataframe(table().rename(columns={"item": "task"}))
    assert ann.n_items == 3
    custom = table().rename(columns={"item": "img", "worker": "who", "label": "ans"})
    ann2 = ci.Annotations.from_dataframe(custom, item="img", worker="who", label="ans")
    assert ann2.n_annotations == 4


def test_fixed_class_list_keeps_unchosen_class():
    ann = ci.Annotations.from_dataframe(table(), classes=["z", "y", "x"])
    assert ann.n_classes == 3 and list(ann.classes) == ["z", "y", "x"]
    post = ci.fit(ann, "dawid_skene")
    assert post.label_probs.shape == (3, 3) and post.confusion.shape == (2, 3, 3)


def test_from_arrays_and_csv(tmp_path):
    ann = ci.Annotations.from_arrays([0, 0, 2], [1, 0, 1], [1, 0, 1], n_items=4, n_workers=3, n_classes=3)
    assert (ann.n_items, ann.n_workers, ann.n_classes) == (4, 3, 3)
    assert ann.annotations_per_item().tolist() == [2, 0, 1, 0]
    path = tmp_path / "a.csv"
    table().to_csv(path, index=False)
    assert ci.Annotations.from_csv(path).n_annotations == 4


def test_csv_integer_ids_stay_integers(tmp_path):
    path = tmp_path / "a.csv"
    pd.DataFrame({"item": [10, 2], "worker": [1, 1], "label": [0, 1]}).to_csv(path, index=False)
    ann = ci.Annotations.from_csv(path)
    assert list(ann.item_ids) == [2, 10] and list(ann.classes) == [0, 1]


def test_gold_and_features():
    ann = ci.Annotations.from_dataframe(
        table(), items=["a", "b", "c", "d"], features=np.ones((4, 3)), gold={"a": "y", "d": "x"}
    )
    assert ann.gold.tolist() == [1, -1, -1, 0]
    assert ann.features.shape == (4, 3) and ann.features.dtype == np.float32
    assert ann.gold_labels().to_dict() == {"a": "y", "d": "x"}


def test_padding_to_capacity_buckets():
    assert capacity_bucket(1) == 1024 and capacity_bucket(1025) == 1280 and capacity_bucket(4096) == 4096
    assert capacity_bucket(10_000_000) == 10_485_760  # 1.25 * 2^23: 5% padding, not 68%
    caps = {capacity_bucket(n) for n in range(1000, 100_000, 7)}
    assert len(caps) <= 4 * 7 + 1, "a handful of buckets per doubling"
    assert all(capacity_bucket(n) < 1.26 * n for n in range(1025, 100_000, 13))
    ann = ci.Annotations.from_dataframe(table())
    data = ann.to_device()
    assert data.item.shape == (1024,) and float(data.weight.sum()) == 4
    assert np.all(np.diff(np.asarray(data.item)) >= 0), "padding must keep items sorted"


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "df, match",
    [
        (table().drop(columns="label"), "missing label column 'label'"),
        (table().drop(columns="item"), "missing item column 'item' or 'task'"),
        (table(item=["a", None, "b", "c"]), r"missing or empty item in row\(s\) 1"),
        (table(worker=["w1", "w2", " ", "w2"]), r"missing or empty worker in row\(s\) 2"),
        (table(label=["x", "y", np.nan, "x"]), r"missing or empty label in row\(s\) 2"),
        (table().iloc[:0], "no annotations"),
        (table(label=["x"] * 4), "fewer than 2 classes"),
        (pd.DataFrame({"item": [1, -2], "worker": [0, 0], "label": [0, 1]}), r"negative item id in row\(s\) 1"),
    ],
)
def test_bad_dataframes_name_the_problem(df, match):
    with pytest.raises(ValueError, match=match):
        ci.Annotations.from_dataframe(df)


def test_label_outside_class_list_names_rows_and_labels():
    with pytest.raises(ValueError, match=r"label\(s\) \['y'\] in row\(s\) 1 are not in the given classes"):
        ci.Annotations.from_dataframe(table(), classes=["x", "z"])


def test_csv_errors_name_file_lines(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("item,worker,label\n1,a,0\n2,,1\n")
    with pytest.raises(ValueError, match=r"missing or empty worker in line\(s\) 3"):
        ci.Annotations.from_csv(path)


def test_gold_for_unknown_items_and_classes():
    ann = ci.Annotations.from_dataframe(table())
    with pytest.raises(ValueError, match=r"gold labels for 1 unknown item\(s\): \['zz'\]"):
        ann.with_gold({"a": "x", "zz": "y"})
    with pytest.raises(ValueError, match=r"gold label\(s\) \['q'\]"):
        ann.with_gold({"a": "q"})


def test_array_errors():
    with pytest.raises(ValueError, match="negative worker code at index 1"):
        ci.Annotations.from_arrays([0, 1], [0, -1], [0, 1])
    with pytest.raises(ValueError, match="label code >= 2 at index 0"):
        ci.Annotations.from_arrays([0], [0], [2], n_classes=2)
    with pytest.raises(ValueError, match="no annotations"):
        ci.Annotations.from_arrays([], [], [])
    with pytest.raises(ValueError, match="non-integer or NaN item at index 0"):
        ci.Annotations.from_arrays([np.nan, 1.0], [0, 0], [0, 1])


def test_features_must_match_items():
    with pytest.raises(ValueError, match=r"features must have shape \(2, d\)"):
        ci.Annotations.from_arrays([0, 1], [0, 0], [0, 1], features=np.ones((3, 2)))


# --------------------------------------------------------------------- duplicate policy
DUPS = pd.DataFrame(
    {"item": [1, 1, 1, 2, 2], "worker": ["a", "a", "b", "a", "a"], "label": [0, 0, 1, 0, 1]}
)


def test_exact_duplicates_collapse_with_a_warning_conflicts_kept():
    with pytest.warns(UserWarning, match=r"collapsed 1 exact duplicate.*row\(s\) 1"):
        ann = ci.Annotations.from_dataframe(DUPS)
    assert ann.n_annotations == 4 and ann.n_collapsed == 1
    # the conflicting repeat (item 2, worker a: 0 then 1) is kept, both answers count
    sub = ann.to_dataframe().query("item == 2")
    assert sorted(sub.label) == [0, 1]


def test_duplicates_keep_and_error():
    assert ci.Annotations.from_dataframe(DUPS, duplicates="keep").n_annotations == 5
    with pytest.raises(ValueError, match=r"repeated \(item, worker\) pairs in row\(s\) 0, 1, 3, 4"):
        ci.Annotations.from_dataframe(DUPS, duplicates="error")


def test_real_zencrowd_duplicates_follow_the_policy(dataset):
    ann = dataset("zencrowd_in").annotations
    raw = pd.read_csv(ci.datasets.shared_data_dir() / "zencrowd_in" / "annotations.csv")
    assert ann.n_collapsed == raw.duplicated().sum() == 579
    assert ann.n_annotations == len(raw) - 579


# ------------------------------------------------------------------ exact ids (issue 12)
def _csv(tmp_path, text, name="a.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "ids",
    [["007", "7"], ["+1", "1"], ["\uff11", "1"], ["-1", "1"], ["12345678901234567890", "2"],
     ["1", "a"]],
)
def test_csv_ids_are_exact_text_unless_every_value_is_a_canonical_integer(tmp_path, ids):
    path = _csv(tmp_path, "item,worker,label\n" + "".join(f"{i},w,{k}\n" for k, i in zip("xy", ids)))
    ann = ci.Annotations.from_csv(path)
    assert ann.n_items == 2 and sorted(ann.item_ids) == sorted(ids), "never merged"
    assert all(isinstance(i, str) for i in ann.item_ids)
    back = ann.to_dataframe().set_index("item")["label"].to_dict()
    assert back == {ids[0]: "x", ids[1]: "y"}


def test_csv_canonical_integers_become_integers(tmp_path):
    path = _csv(tmp_path, "item,worker,label\n0,3,1\n10,3,0\n9223372036854775807,4,1\n")
    ann = ci.Annotations.from_csv(path)
    assert list(ann.item_ids) == [0, 10, 9223372036854775807]
    assert all(type(i) is int for i in ann.item_ids) and list(ann.classes) == [0, 1]


def test_numeric_lookalike_labels_stay_distinct_with_a_warning(tmp_path):
    path = _csv(tmp_path, "item,worker,label\n1,a,1.0\n2,a,1\n3,a,2\n")
    with pytest.warns(UserWarning, match=r"labels \[\['1', '1.0'\]\] are different text but the same number"):
        ann = ci.Annotations.from_csv(path)
    assert list(ann.classes) == ["1", "1.0", "2"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("item,worker,label\n 1,a,x\n1,a,y\n",
         r"item with leading or trailing whitespace in line\(s\) 2 \(column 'item', e.g. ' 1'\)"),
        ("item,label,label\n1,a,x\n", r"duplicate column name\(s\) \['label'\]"),
        ("item,worker,label\ni1,w1,cat,0.9\ni2,w2,dog\n",
         r"line\(s\) 2 \(4 fields\) do not have the header's 3 fields"),
        ("item,worker,label\n1,a,x,\n2,a,y,\n", r"line\(s\) 2 \(4 fields\), 3 \(4 fields\)"),
        ("item,worker,label\n1,a\n", r"line\(s\) 2 \(2 fields\)"),
        ("", "is empty: expected a header line"),
        ("item,worker,label\n", "no annotations: the table is empty"),
        ("item,worker,label\nNA,a,x\n2,a,y\n", r"missing or empty item in line\(s\) 2"),
        ("item,worker,label\n\n1,a,x\n\n2,,y\n", r"missing or empty worker in line\(s\) 5"),
        ('item,worker,label\n"a\nb",w,x\n2,,y\n', r"missing or empty worker in line\(s\) 4"),
        ("item, worker,label\n1,a,x\n", r"missing worker column 'worker'.*did you mean ' worker'"),
    ],
)
def test_malformed_csv_is_one_clear_error_naming_lines(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        ci.Annotations.from_csv(_csv(tmp_path, text))


def test_trailing_comma_on_every_line_including_the_header_loads(tmp_path):
    ann = ci.Annotations.from_csv(_csv(tmp_path, "item,worker,label,\n1,a,x,\n2,a,y,\n"))
    assert list(ann.item_ids) == [1, 2] and list(ann.classes) == ["x", "y"]


def test_directory_and_bad_encoding(tmp_path):
    with pytest.raises(ValueError, match="is a directory, not a file of annotations"):
        ci.Annotations.from_csv(tmp_path)
    path = tmp_path / "latin.csv"
    path.write_bytes(b"item,worker,label\n\xe9,a,x\n2,a,y\n")
    with pytest.raises(ValueError, match="is not valid utf-8 text.*encoding='latin-1'"):
        ci.Annotations.from_csv(path)
    assert sorted(ci.Annotations.from_csv(path, encoding="latin-1").item_ids) == ["2", "\u00e9"]


def test_quoted_separators_and_newlines_stay_inside_one_id(tmp_path):
    df = pd.DataFrame({"item": ["a,b", "c\nd", 'e"f'], "worker": ["w", "w", "w"], "label": ["x", "y", "x"]})
    df.to_csv(tmp_path / "q.csv", index=False)
    ann = ci.Annotations.from_csv(tmp_path / "q.csv")
    assert sorted(ann.item_ids) == sorted(df["item"])


def test_tsv_parquet_arrow_and_compressed_csv_give_the_same_annotations(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    df = pd.DataFrame({"item": ["007", "7", "7"], "worker": ["a", "a", "b"], "label": ["x", "y", "y"]})
    df.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    df.to_csv(tmp_path / "a.csv.gz", index=False)
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "a.parquet")
    anns = [ci.Annotations.from_csv(tmp_path / "a.tsv"), ci.Annotations.from_csv(tmp_path / "a.csv.gz"),
            ci.Annotations.from_parquet(tmp_path / "a.parquet"),
            ci.Annotations.from_file(tmp_path / "a.parquet"),
            ci.Annotations.from_arrow(pa.Table.from_pandas(df)),
            ci.Annotations.from_dataframe(pa.Table.from_pandas(df))]
    for ann in anns:
        assert list(ann.item_ids) == ["007", "7"] and list(ann.worker_ids) == ["a", "b"]
        assert ann.label.tolist() == anns[0].label.tolist()


def test_polars_dataframe():
    pl = pytest.importorskip("polars")
    df = pl.DataFrame({"item": [3, 1, 3], "worker": ["a", "a", "b"], "label": ["x", "y", "y"],
                       "weight": [1.0, 0.5, 2.0]})
    ann = ci.Annotations.from_dataframe(df)
    assert list(ann.item_ids) == [1, 3] and ann.weights.tolist() == [0.5, 1.0, 2.0]


def test_typed_dataframe_columns_keep_their_types():
    ann = ci.Annotations.from_dataframe(pd.DataFrame({"item": ["7", "07"], "worker": [1, 1], "label": [0.0, 1.0]}))
    assert list(ann.item_ids) == ["07", "7"] and list(ann.classes) == [0, 1]
    with pytest.raises(ValueError, match=r"mixes value types \(int, str\): e.g. row\(s\) 1 are not int"):
        ci.Annotations.from_dataframe(pd.DataFrame({"item": [7, "7", 8], "worker": [1, 1, 1], "label": [0, 1, 0]}))
    with pytest.raises(ValueError, match=r"item with leading or trailing whitespace in row\(s\) 0"):
        ci.Annotations.from_dataframe(pd.DataFrame({"item": ["1 ", "1"], "worker": [1, 1], "label": [0, 1]}))
    big = ci.Annotations.from_dataframe(pd.DataFrame({"item": [2**70, 1], "worker": [1, 1], "label": [0, 1]}))
    assert sorted(big.item_ids) == [1, 2**70]


def test_gold_with_integer_ids_matches_text_ids(tmp_path):
    path = _csv(tmp_path, "item,worker,label\n007,a,x\n7,a,y\n")
    truth = _csv(tmp_path, "item,label\n7,y\n", name="truth.csv")
    ann = ci.Annotations.from_csv(path).with_gold(ci.datasets.read_table(truth))
    assert ann.gold_labels().to_dict() == {"7": "y"}
