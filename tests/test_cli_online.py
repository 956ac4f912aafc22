"""What ``crowdinfer online`` reads and builds, as library functions: the features table
(``formats.read_features``), the prototypes and the simulated workers (``online.pool``)."""
import numpy as np
import pandas as pd
import pytest

from crowdinfer.formats import read_features
from crowdinfer.online.pool import pick_prototypes, simulated_workers


def _table(path, rows=None):
    frame = pd.DataFrame(rows or {"item": ["007", "b", "c", "d", "e", "f"],
                                  "label": ["cat", "dog", "cat", "007", "dog", "cat"],
                                  "f0": [0.5, 1.0, 2.0, 3.0, 4.0, 5.0],
                                  "f1": [1, 2, 3, 4, 5, 6]})
    frame.to_csv(path, index=False)
    return frame


def test_features_table_keeps_ids_as_text_and_codes_sorted_classes(tmp_path):
    _table(tmp_path / "f.csv")
    t = read_features(tmp_path / "f.csv")
    assert t.items.tolist() == ["007", "b", "c", "d", "e", "f"]  # not the integer 7
    assert t.classes.tolist() == ["007", "cat", "dog"]
    assert t.labels.tolist() == [1, 2, 1, 0, 2, 1]
    assert t.columns == ["f0", "f1"] and t.features.dtype == np.float32
    assert t.features[:, 1].tolist() == [1, 2, 3, 4, 5, 6]


def test_features_table_in_tsv_and_parquet_with_other_column_names(tmp_path):
    frame = _table(tmp_path / "f.csv").rename(columns={"item": "image", "label": "truth"})
    frame.to_csv(tmp_path / "f.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "f.parquet")
    for path, fmt in ((tmp_path / "f.tsv", "tsv"), (tmp_path / "f.parquet", "parquet")):
        t = read_features(path, fmt, item="image", label="truth")
        assert t.classes.tolist() == ["007", "cat", "dog"] and t.features.shape == (6, 2)


def test_features_table_refusals_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("item,f0\na,1.0\n")
    with pytest.raises(ValueError, match=r"needs a column 'label' \(columns: item,label,<features>\)"):
        read_features(bad)
    bad.write_text("item,label,f0,colour\na,x,1.0,red\nb,y,2.0,blue\n")
    with pytest.raises(ValueError, match=r"feature columns must be numeric; not numeric: \['colour'\]"):
        read_features(bad)
    bad.write_text("item,label,f0\na,x,1.0\nb,,2.0\nc,y,3.0\nd,,4.0\n")
    with pytest.raises(ValueError, match=r"every item needs its true label .* none on line\(s\) 3, 5$"):
        read_features(bad)
    with pytest.raises(ValueError, match="format 'json': a features table must be csv, tsv or parquet"):
        read_features(bad, "json")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_features(tmp_path / "missing.csv")


def test_prototypes_are_per_class_random_and_left_out_of_the_pool():
    labels = np.repeat([0, 1, 2], [10, 3, 7])
    proto, pool = pick_prototypes(labels, 3, 4, seed=1)
    assert np.bincount(labels[proto], minlength=3).tolist() == [4, 3, 4]  # class 1 has only 3
    assert sorted(np.concatenate([proto, pool]).tolist()) == list(range(20))
    assert (np.diff(pool) > 0).all()
    again, _ = pick_prototypes(labels, 3, 4, seed=1)
    other, _ = pick_prototypes(labels, 3, 4, seed=2)
    assert again.tolist() == proto.tolist() and other.tolist() != proto.tolist()
    none, everything = pick_prototypes(labels, 3, 0)
    assert none.size == 0 and everything.tolist() == list(range(20))
    with pytest.raises(ValueError, match="per_class must be >= 0, got -1"):
        pick_prototypes(labels, 3, -1)


def test_simulated_workers_by_kind():
    uniform = simulated_workers("uniform", 5, ["a", "b", "c", "d"], accuracy=0.7)
    assert uniform.shape == (5, 4, 4)
    np.testing.assert_allclose(uniform.sum(-1), 1.0)
    np.testing.assert_allclose(np.diagonal(uniform, axis1=1, axis2=2), 0.7)
    np.testing.assert_allclose(uniform[0, 0, 1:], 0.1)
    perfect = simulated_workers("perfect", 2, ["a", "b"])
    assert perfect.tolist() == [[[1, 0], [0, 1]]] * 2
    with pytest.raises(ValueError, match=r"accuracy must lie in \(0, 1\], got 1.5"):
        simulated_workers("uniform", 2, ["a", "b"], accuracy=1.5)
    with pytest.raises(ValueError, match="unknown workers 'robots': use uniform, structured"):
        simulated_workers("robots", 2, ["a", "b"])


def test_workers_from_a_dataset_need_its_number_of_classes(dataset):
    confusion = simulated_workers("dataset:dog", 6, ["a", "b", "c", "d"], seed=0)
    assert confusion.shape == (6, 4, 4)
    np.testing.assert_allclose(confusion.sum(-1), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="dataset:dog has 4 classes, the items 3"):
        simulated_workers("dataset:dog", 6, ["a", "b", "c"])
