"""Dawid-Skene and BCC whose label prior is a classifier on item features, trained in the loop."""
import numpy as np
import pytest

import crowdinfer as ci


@pytest.fixture(scope="module")
def labelme(dataset):
    d = dataset("labelme")
    return d, ci.fit(d.annotations, label_prior="classifier")


def test_labelme_learned_prior_beats_dawid_skene(labelme):
    d, post = labelme
    plain = ci.fit(d.annotations).accuracy()
    assert plain < 0.81  # Dawid-Skene alone: about 0.79-0.80
    assert post.accuracy() >= 0.85, post.accuracy()


def test_labelme_classifier_predicts_unannotated_test_items(labelme):
    d, post = labelme
    test_acc = (post.predict(d.test.features) == d.test.gold).mean()
    assert test_acc >= 0.80, test_acc
    probs = post.predict_proba(d.test.features)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_music_genre_learned_prior_beats_dawid_skene(dataset):
    ann = dataset("music_genre").annotations
    plain = ci.fit(ann, prior="none").accuracy()  # the published-style DS: 0.77
    for model in ("dawid_skene", "bcc"):
        learned = ci.fit(ann, model, label_prior="classifier").accuracy()
        assert learned > plain + 0.01, (model, learned, plain)


def test_learned_prior_needs_features_and_a_classifier():
    ann = ci.datasets.synthetic(n_items=200, n_workers=10, seed=0).annotations
    with pytest.raises(ValueError, match="needs item features"):
        ci.fit(ann, label_prior="classifier")
    with pytest.raises(ValueError, match="label_prior must be"):
        ci.fit(ann, label_prior="oracle")
    with pytest.raises(ValueError, match="no learned classifier"):
        ci.fit(ann).predict(np.zeros((3, 4)))


def test_features_can_be_passed_to_fit():
    task = ci.datasets.synthetic(n_items=600, n_workers=15, n_classes=3, annotations_per_item=2,
                                 accuracy=(0.5, 0.7), seed=2)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    x = centres[task.true_labels] + rng.normal(size=(600, 8))
    post = ci.fit(task.annotations, label_prior="classifier", features=x)
    assert post.accuracy() > ci.fit(task.annotations).accuracy() + 0.03
