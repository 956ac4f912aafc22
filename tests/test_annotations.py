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
