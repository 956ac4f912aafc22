"""SVI (full batch and minibatches of items) and community BCC."""
import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer.inference.svi import chunk
from lean import lean_or_slow

BCC_NAMES = ["rte", "temp", "bluebird", "dog", "web", "product", "sentiment_possent", "face", "cf",
             "zencrowd_in", "labelme", "music_genre"]


def test_chunks_cover_every_annotation_once():
    ann = ci.datasets.synthetic(n_items=1003, n_workers=30, annotations_per_item=3, seed=1).annotations
    c = chunk(ann, batch_items=100, seed=0)
    assert c.n_chunks == 11 and c.data.item.shape[0] == 11
    assert float(c.data.weight.sum()) == ann.n_annotations
    assert np.all(np.diff(np.asarray(c.data.item), axis=1) >= 0), "chunks stay sorted by item"
    assert int(np.asarray(c.data.item).max()) < 100
    np.testing.assert_allclose(np.asarray(c.scale)[:10], 1003 / 100)
    np.testing.assert_allclose(np.asarray(c.scale)[-1], 1003 / 3)
    # the same (worker, label) multiset
    w = np.asarray(c.data.worker)[np.asarray(c.data.weight) > 0]
    np.testing.assert_array_equal(np.bincount(w, minlength=30), ann.annotations_per_worker())


@pytest.mark.parametrize("name", lean_or_slow(["rte", "dog", "web"]))
def test_svi_agrees_with_em(dataset, name):
    ann = dataset(name).annotations
    em = ci.fit(ann, "dawid_skene")
    svi = ci.fit(ann, "dawid_skene", "svi")
    mini = ci.fit(ann, "dawid_skene", "svi", batch_items=128, num_steps=3000)
    assert abs(svi.accuracy() - em.accuracy()) <= 0.01
    assert abs(mini.accuracy() - em.accuracy()) <= 0.01
    busy = ann.annotations_per_worker() >= np.percentile(ann.annotations_per_worker(), 75)
    assert np.abs(svi.confusion[busy] - em.confusion[busy]).mean() < 0.02
    assert np.isfinite(mini.history).all() and mini.history[-200:].mean() > mini.history[:200].mean()


def test_svi_normal_guide_and_other_models(dataset):
    ann = dataset("dog").annotations
    assert ci.fit(ann, "bcc", "svi", guide="normal").accuracy() > 0.82
    assert ci.fit(ann, "one_coin", "svi").accuracy() > 0.82
    with pytest.raises(ValueError, match=r"guide must be one of \['map', 'normal'\]"):
        ci.fit(ann, "bcc", "svi", guide="laplace")


@pytest.mark.parametrize("name", lean_or_slow(BCC_NAMES))
def test_community_bcc_within_001_of_bcc_or_better(dataset, name):
    ann = dataset(name).annotations
    bcc = ci.fit(ann, "bcc").accuracy()
    cbcc = ci.fit(ann, "community_bcc").accuracy()
    assert cbcc >= bcc - 0.01, f"{name}: community BCC {cbcc:.4f} vs BCC {bcc:.4f}"


def test_community_bcc_finds_planted_communities():
    """Two kinds of workers: experts, and spammers who answer class 0 whatever the truth."""
    rng = np.random.default_rng(0)
    n_items, k = 1500, 3
    truth = rng.integers(0, k, n_items)
    expert = np.full((k, k), 0.05) + np.eye(k) * 0.85
    spammer = np.tile([0.9, 0.05, 0.05], (k, 1))
    conf = np.stack([expert] * 20 + [spammer] * 20)
    item = np.repeat(np.arange(n_items), 4)
    worker = np.concatenate([rng.choice(40, 4, replace=False) for _ in range(n_items)])
    label = np.array([rng.choice(k, p=conf[w, truth[i]]) for i, w in zip(item, worker)])
    ann = ci.Annotations.from_arrays(item, worker, label, gold=truth)
    post = ci.fit(ann, "community_bcc", communities=2)
    r = post.params["memberships"]
    groups = r.argmax(1)
    assert len(set(groups[:20])) == 1 and len(set(groups[20:])) == 1 and groups[0] != groups[20]
    assert post.accuracy() > 0.85 and post.accuracy() >= ci.fit(ann, "bcc").accuracy() - 0.01


def test_chunked_e_step_equals_the_full_e_step(dataset):
    import jax.numpy as jnp

    from crowdinfer.inference.svi import chunked_label_probs
    from crowdinfer.models import class_prior, dawid_skene

    ann = dataset("web").annotations
    post = ci.fit(ann, "dawid_skene")
    params = {"confusion": jnp.asarray(post.confusion), "class_prior": jnp.asarray(post.class_prior)}
    from crowdinfer.inference.loop import Spec

    spec = Spec(dawid_skene.MAP, class_prior.part("em", ann.n_classes))
    probs = chunked_label_probs(chunk(ann, 300, seed=3), spec, params)
    np.testing.assert_allclose(probs, post.label_probs, atol=1e-4)


def test_minibatch_svi_starts_from_the_prior_and_rejects_item_logits(dataset):
    ann = dataset("rte").annotations
    post = ci.fit(ann, "bcc", "svi", batch_items=100, num_steps=1500)
    assert post.accuracy() > 0.91
    with pytest.raises(ValueError, match="minibatch SVI takes class proportions"):
        ci.fit(ann, "dawid_skene", "svi", batch_items=100,
               prior_logits=np.zeros((ann.n_items, ann.n_classes)))
