"""Dataset loading (the shared layout) and the synthetic generator."""
import numpy as np
import pytest

import crowdinfer as ci


def test_load_with_features_and_held_out_splits(dataset):
    d = dataset("labelme")
    ann = d.annotations
    assert (ann.n_items, ann.n_workers, ann.n_classes, ann.n_annotations) == (1000, 59, 8, 2547)
    assert d.features.shape == (1000, 512) and (ann.gold >= 0).all()
    assert d.test.features.shape == (1188, 512) and d.test.gold.min() >= 0
    assert d.valid.features.shape == (500, 512)
    music = dataset("music_genre")
    assert list(music.annotations.classes)[:3] == ["blues", "classical", "country"]
    assert music.test.gold.shape == (300,) and music.test.gold.min() >= 0


def test_load_partial_gold(dataset):
    ann = dataset("web").annotations
    assert ann.n_items == 2665 and int((ann.gold >= 0).sum()) == 2653


def test_load_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no annotations.csv in"):
        ci.datasets.load(tmp_path)


def test_synthetic_is_reproducible_and_honours_its_options():
    a = ci.datasets.synthetic(n_items=3000, n_workers=40, n_classes=5, annotations_per_item=3,
                              accuracy=(0.6, 0.8), imbalance=10.0, structure="structured", seed=1)
    b = ci.datasets.synthetic(n_items=3000, n_workers=40, n_classes=5, annotations_per_item=3,
                              accuracy=(0.6, 0.8), imbalance=10.0, structure="structured", seed=1)
    np.testing.assert_array_equal(a.annotations.label, b.annotations.label)
    ann = a.annotations
    assert ann.n_annotations == 9000 and (ann.annotations_per_item() == 3).all()
    pairs = ann.item.astype(np.int64) * 100 + ann.worker
    assert len(np.unique(pairs)) == len(pairs), "an item's workers must be distinct"
    assert a.class_prior[0] / a.class_prior[-1] == pytest.approx(10.0)
    diag = np.einsum("jkk->jk", a.true_confusion)
    assert diag.min() >= 0.6 - 1e-9 and diag.max() <= 0.8 + 1e-9
    np.testing.assert_allclose(a.true_confusion.sum(-1), 1.0)
    # structured: errors concentrate on neighbouring classes
    off = a.true_confusion[:, 2, :] / (1 - diag[:, 2:3])
    assert off[:, [1, 3]].sum(1).mean() > 0.8
    # empirical accuracy matches the confusions
    right = (ann.label == a.true_labels[ann.item]).mean()
    expect = np.mean(diag[ann.worker, a.true_labels[ann.item]])
    assert abs(right - expect) < 0.02


def test_synthetic_rejects_bad_options():
    with pytest.raises(ValueError, match="annotations_per_item"):
        ci.datasets.synthetic(n_workers=3, annotations_per_item=5)
    with pytest.raises(ValueError, match="accuracy range"):
        ci.datasets.synthetic(accuracy=(0.9, 0.5))
