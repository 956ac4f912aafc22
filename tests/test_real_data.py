"""Accuracy on the real datasets of ../shared/data against the published / reference figures
(../shared/data/README.md).  Real data: slow-marked (CI's second pass)."""
import dataclasses

import numpy as np
import pytest

from crowdinfer.fit import (
    fit,  # not ci.fit: importing crowdinfer.fit shadows the lazy attribute
)

pytestmark = pytest.mark.slow

# dataset: (low, high) of the published Dawid-Skene accuracy
DAWID_SKENE = {
    "product": (0.940, 0.940),
    "sentiment_possent": (0.960, 0.960),
    "rte": (0.928, 0.928),
    "dog": (0.843, 0.843),
    "bluebird": (0.889, 0.898),
    "web": (0.819, 0.829),
    "face": (0.640, 0.640),
    "temp": (0.942, 0.942),
    "labelme": (0.790, 0.804),
}
MAJORITY_VOTE = {
    "product": 0.897, "sentiment_possent": 0.932, "rte": 0.897, "bluebird": 0.759, "dog": 0.822,
    "web": 0.731, "face": 0.637, "temp": 0.936, "labelme": 0.769,
}
ALL = ["rte", "temp", "bluebird", "dog", "web", "product", "sentiment_possent", "face", "cf",
       "zencrowd_in", "labelme", "music_genre"]


def within(value, low, high, tol):
    return low - tol <= value <= high + tol


@pytest.mark.parametrize("name", sorted(DAWID_SKENE))
def test_classic_dawid_skene_matches_published_accuracy(dataset, name):
    """Maximum-likelihood Dawid-Skene (prior='none'), as in the published comparisons."""
    post = fit(dataset(name).annotations, "dawid_skene", prior="none")
    low, high = DAWID_SKENE[name]
    assert within(post.accuracy(), low, high, 0.01), f"{name}: {post.accuracy():.4f} vs {low}-{high}"


@pytest.mark.parametrize("name", sorted(DAWID_SKENE))
def test_dawid_skene_with_pooled_prior_matches_published_dawid_skene(dataset, name):
    post = fit(dataset(name).annotations, "dawid_skene")
    low, high = DAWID_SKENE[name]
    assert within(post.accuracy(), low, high, 0.01), f"{name}: {post.accuracy():.4f} vs {low}-{high}"


@pytest.mark.parametrize("name", sorted(MAJORITY_VOTE))
def test_majority_vote_matches_reference(dataset, name):
    post = fit(dataset(name).annotations, "majority_vote")
    assert abs(post.accuracy() - MAJORITY_VOTE[name]) <= 0.005, f"{name}: {post.accuracy():.4f}"


@pytest.mark.parametrize("name", ALL)
def test_dawid_skene_never_loses_to_majority_vote(dataset, name):
    """Including the sparse-worker data (zencrowd_in, cf) where classic Dawid-Skene loses."""
    ann = dataset(name).annotations
    mv = fit(ann, "majority_vote").accuracy()
    ds = fit(ann, "dawid_skene").accuracy()
    assert ds >= mv - 0.005, f"{name}: dawid_skene {ds:.4f} < majority vote {mv:.4f}"


@pytest.mark.parametrize("name", ALL)
def test_default_never_loses_to_majority_vote(dataset, name):
    """fit's default (held-out-likelihood selection, crowdinfer.selection) sees no gold."""
    ann = dataset(name).annotations
    mv = fit(ann, "majority_vote").accuracy()
    post = fit(dataclasses.replace(ann, gold=None))
    default = post.accuracy(ann.gold)
    assert post.selection["chosen"] in post.selection["candidates"]
    assert default >= mv - 0.005, f"{name}: default {default:.4f} < majority vote {mv:.4f}"


def test_prior_is_the_cure_on_sparse_workers(dataset):
    """cf: 461 workers for 1720 annotations. Classic DS over-fits; the default prior does not."""
    ann = dataset("cf").annotations
    mv = fit(ann, "majority_vote").accuracy()
    classic = fit(ann, "dawid_skene", prior="none").accuracy()
    assert classic < mv - 0.02
    assert fit(ann, "dawid_skene").accuracy() >= mv


def test_worker_skills_rank_real_workers(dataset):
    """bluebird: every worker labelled all 108 items; estimated accuracy tracks accuracy on gold."""
    ann = dataset("bluebird").annotations
    skills = fit(ann, "dawid_skene").worker_skills()
    right = ann.label == ann.gold[ann.item]
    on_gold = np.bincount(ann.worker, weights=right, minlength=ann.n_workers) / ann.annotations_per_worker()
    assert np.corrcoef(skills["accuracy"], on_gold)[0, 1] > 0.9
    assert skills["n_annotations"].tolist() == [108] * ann.n_workers
