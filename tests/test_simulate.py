"""Simulated annotators: structured AMT noise (seed 000 appendix G), uniform noise, dataset workers."""
import jax
import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer import simulate as sim

AMT = ci.datasets.shared_data_dir() / "imagenet100_amt"


def split_wnids(i):
    text = (AMT / "experiments" / f"imagenet_split_{i}.yaml").read_text()
    return text.split("wnids:")[1].splitlines()[0].split()


@pytest.fixture(scope="module")
def stats(dataset):
    return sim.load_amt(AMT)


def test_amt_statistics_load(stats):
    assert len(stats.wnids) == 100 and len(stats.groups) == 6
    assert sum(len(g) for g in stats.groups) == 100
    assert sum(len(v) for v in stats.group_workers) == 58


def test_structured_workers_follow_appendix_g(stats):
    w = sim.amt_structured_workers(20, list(range(100)), seed=0, stats=stats)
    assert w.shape == (20, 100, 100)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-9)
    group_of = {x: g for g, members in enumerate(stats.groups) for x in members}
    g = np.array([group_of[x] for x in stats.wnids])
    cross = np.where(g[:, None] != g[None, :], w, 0.0).sum(-1)
    np.testing.assert_allclose(cross, 0.03, atol=1e-9)  # the measured cross-group confusion
    assert 0.66 < np.diagonal(w, axis1=1, axis2=2).mean() < 0.74  # the pooled AMT matrix: 0.71
    # workers differ (one real worker each) and are reproducible from the seed
    assert np.abs(w[0] - w[1]).max() > 0.05
    np.testing.assert_array_equal(w, sim.amt_structured_workers(20, list(range(100)), seed=0, stats=stats))


def test_split_difficulty_matches_the_paper(stats):
    """Seed 000 Fig. 3: Dog is the hard split (worker accuracy 0.43), Commodity easy (0.76)."""
    dog = sim.amt_structured_workers(50, split_wnids(0), seed=1, stats=stats)
    assert dog.shape == (50, 19, 19)
    assert 0.38 < np.diagonal(dog, axis1=1, axis2=2).mean() < 0.50
    commodity = sim.amt_structured_workers(50, split_wnids(3), seed=1, stats=stats)
    assert np.diagonal(commodity, axis1=1, axis2=2).mean() > 0.7
    # confusion is structured: a dog row's errors concentrate on few classes
    off = dog[0] * (1 - np.eye(19))
    top3 = np.sort(off, axis=1)[:, -3:].sum(1) / off.sum(1)
    assert np.median(top3) > 0.5  # uniform errors would put 3/18 = 0.17 there


def test_uniform_noise_keeps_accuracy_and_spreads_errors(stats):
    w = sim.amt_structured_workers(3, split_wnids(2), seed=0, stats=stats)
    u = sim.uniform_noise_workers(w)
    np.testing.assert_allclose(np.diagonal(u, axis1=1, axis2=2), np.diagonal(w, axis1=1, axis2=2))
    off = u[0][~np.eye(13, dtype=bool)].reshape(13, 12)
    np.testing.assert_allclose(off, off[:, :1].repeat(12, 1))
    np.testing.assert_allclose(u.sum(-1), 1.0)


def test_perfect_and_dataset_workers(dataset):
    np.testing.assert_array_equal(sim.perfect_workers(2, 3)[1], np.eye(3))
    ann = dataset("bluebird").annotations
    w = sim.dataset_workers(ann, 30, seed=0)
    assert w.shape == (30, 2, 2)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    real = (ann.label == ann.gold[ann.item]).mean()
    assert abs(np.einsum("jkk->j", w).mean() / 2 - real) < 0.1
    with pytest.raises(ValueError, match="needs gold labels"):
        sim.dataset_workers(ci.Annotations.from_arrays([0, 1], [0, 0], [0, 1]), 2)


def test_annotate_draws_from_the_confusions():
    conf = np.array([[[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]])
    n = 60_000
    truth = np.arange(n) % 3
    labels = np.asarray(sim.annotate(jax.random.key(0), conf, truth, np.arange(n), np.zeros(n, int)))
    empirical = np.array([np.bincount(labels[truth == k], minlength=3) / (n / 3) for k in range(3)])
    np.testing.assert_allclose(empirical, conf[0], atol=0.015)
    again = sim.annotate(jax.random.key(0), conf, truth, np.arange(n), np.zeros(n, int))
    np.testing.assert_array_equal(labels, np.asarray(again))


def test_bad_inputs(stats):
    with pytest.raises(ValueError, match="unknown ImageNet100 wnid"):
        sim.amt_structured_workers(2, ["n00000000"], stats=stats)
    with pytest.raises(FileNotFoundError, match="no group_workers.json"):
        sim.load_amt("/nonexistent")
