"""The EM/VB loop: EM climbs the NumPyro model's log density, never down; stopping rules; hooks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import log_density

import crowdinfer as ci
from crowdinfer.fit import resolve_prior
from crowdinfer.inference.loop import Spec, run
from crowdinfer.models import class_prior, dawid_skene, majority_vote, one_coin


def em(workers, data, hyper, init, **kw):
    """The loop on ``workers`` (a part template) with the NumPyro model's ``hyper`` dict."""
    worker_hyper = (dawid_skene.ConfusionHyper(hyper["confusion"]) if "confusion" in hyper
                    else one_coin.AccuracyHyper(hyper["correct"], hyper["wrong"]))
    classes = class_prior.part("em", data.n_classes,
                               concentration=hyper.get("class_concentration", 1.0),
                               logits=hyper.get("prior_logits"))
    return run(Spec(workers.with_hyper(worker_hyper), classes), data, init, **kw)


@pytest.fixture(scope="module")
def task():
    return ci.datasets.synthetic(n_items=600, n_workers=30, n_classes=4, annotations_per_item=4,
                                 structure="structured", imbalance=3.0, seed=3)


@pytest.mark.parametrize("name", ["rte", "dog"])
def test_objective_is_numpyro_log_density_and_never_decreases(dataset, name):
    ann = dataset(name).annotations
    data = ann.to_device()
    hyper = {"confusion": 1.0 + jnp.asarray(resolve_prior(ann, "homogeneous"), jnp.float32),
             "class_concentration": 2.0 * jnp.ones(ann.n_classes)}
    state = em(dawid_skene.MAP, data, hyper, majority_vote.soft(data), max_iter=60, tol=0.0,
               stop="objective")
    history = np.asarray(state.history)[: int(state.iteration)]
    assert int(state.iteration) == 60 and not np.isnan(history).any()
    assert np.all(np.diff(history) >= -1e-4 * np.abs(history[:-1])), "EM objective decreased"
    assert history[-1] > history[0] + 1.0, "EM made no progress"
    logp, _ = log_density(dawid_skene.model, (data, hyper), {}, state.params)
    np.testing.assert_allclose(float(logp), float(state.objective), rtol=2e-5)


def test_one_coin_objective_is_numpyro_log_density(task):
    data = task.annotations.to_device()
    k = task.annotations.n_classes
    hyper = {"correct": jnp.float32(8.0), "wrong": jnp.float32(4.0), "class_concentration": 2.0 * jnp.ones(k)}
    state = em(one_coin.MAP, data, hyper, majority_vote.soft(data), max_iter=40, tol=0.0,
               stop="objective")
    history = np.asarray(state.history)
    assert np.all(np.diff(history) >= -1e-4 * np.abs(history[:-1]))
    logp, _ = log_density(one_coin.model, (data, hyper), {}, state.params)
    np.testing.assert_allclose(float(logp), float(state.objective), rtol=2e-5)


def test_per_item_prior_logits_replace_the_class_prior(task):
    ann = task.annotations
    data = ann.to_device()
    logits = jax.random.normal(jax.random.key(0), (ann.n_items, ann.n_classes))
    hyper = {"confusion": 1.0 + jnp.asarray(resolve_prior(ann), jnp.float32), "prior_logits": logits}
    state = em(dawid_skene.MAP, data, hyper, majority_vote.soft(data), max_iter=30,
               tol=0.0, stop="objective")
    assert "class_prior" not in state.params
    logp, _ = log_density(dawid_skene.model, (data, hyper), {}, state.params)
    np.testing.assert_allclose(float(logp), float(state.objective), rtol=2e-5)


def test_a_confident_item_prior_decides_unannotated_items():
    ann = ci.Annotations.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1], n_items=3, n_classes=2)
    logits = np.array([[0.0, 0.0], [0.0, 0.0], [-5.0, 5.0]])
    post = ci.fit(ann, prior_logits=logits)
    assert post.labels[2] == 1 and post.label_probs[2, 1] > 0.99
    assert post.class_prior is None


def test_stopping_rules(task):
    ann = task.annotations
    soft = ci.fit(ann, stop="soft", tol=1e-3)
    tight = ci.fit(ann, stop="soft", tol=1e-7)
    hard = ci.fit(ann, stop="hard")
    with pytest.warns(UserWarning, match=r"stopped at its iteration limit, after 7 iterations, before its stopping"):
        capped = ci.fit(ann, "dawid_skene", stop="objective", tol=0.0, max_iter=7)
    assert any("iteration limit" in w for w in capped.warnings)
    assert not any("iteration limit" in w for w in soft.warnings + tight.warnings + hard.warnings)
    assert soft.converged and soft.n_iter < tight.n_iter
    assert hard.converged and hard.n_iter <= tight.n_iter
    # the hard rule fired because its last iteration moved no argmax label (seed 000 eq. 5)
    with pytest.warns(UserWarning, match="iteration limit"):
        before = ci.fit(ann, stop="objective", tol=0.0, max_iter=hard.n_iter - 1)
    assert np.array_equal(before.labels, hard.labels)
    assert not np.array_equal(before.label_probs, hard.label_probs)
    assert capped.n_iter == 7 and not capped.converged and len(capped.history) == 7
    with pytest.raises(ValueError, match="stop must be one of"):
        ci.fit(ann, stop="sometimes")


def test_dawid_skene_recovers_known_confusions():
    task = ci.datasets.synthetic(n_items=2000, n_workers=30, n_classes=4, annotations_per_item=4,
                                 structure="structured", imbalance=3.0, seed=4)
    post = ci.fit(task.annotations, "dawid_skene")
    mv = ci.fit(task.annotations, "majority_vote")
    assert post.accuracy() > mv.accuracy() + 0.02
    true_acc = np.einsum("jkk,k->j", task.true_confusion, task.class_prior)
    est = post.worker_skills()["accuracy"].to_numpy()
    assert np.mean(np.abs(est - true_acc)) < 0.04
    assert np.corrcoef(est, true_acc)[0, 1] > 0.85
    np.testing.assert_allclose(post.class_prior, task.class_prior, atol=0.05)


def test_every_output_is_a_distribution(task):
    for model in ("dawid_skene", "one_coin", "majority_vote"):
        post = ci.fit(task.annotations, model)
        np.testing.assert_allclose(post.label_probs.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(post.confusion.sum(-1), 1.0, atol=1e-5)
        assert np.all(post.label_probs >= 0) and np.all(post.confusion >= 0)


def test_results_are_deterministic(task):
    a, b = ci.fit(task.annotations, "dawid_skene"), ci.fit(task.annotations, "dawid_skene")
    np.testing.assert_array_equal(a.label_probs, b.label_probs)


def test_fit_rejects_unknown_model_method_and_options(task):
    with pytest.raises(ValueError, match="unknown model 'wisdom'; available: "):
        ci.fit(task.annotations, "wisdom")
    with pytest.raises(ValueError, match="model 'one_coin' has no method 'gibbs'; available: \\['em', 'nuts', 'svi'\\]"):
        ci.fit(task.annotations, "one_coin", method="gibbs")
    with pytest.raises(TypeError, match="dawid_skene/em: .*unexpected keyword.*colour"):
        ci.fit(task.annotations, colour="red")
    with pytest.raises(ValueError, match="unknown prior 'flat'"):
        ci.fit(task.annotations, prior="flat")
    with pytest.raises(ValueError, match=r"prior_logits must have shape \(600, 4\)"):
        ci.fit(task.annotations, prior_logits=np.zeros((3, 4)))


def test_prior_builders():
    from crowdinfer.models import priors

    h = priors.homogeneous(4, strength=10, accuracy=0.7)
    np.testing.assert_allclose(h.sum(1), 10.0)
    np.testing.assert_allclose(np.diag(h), 7.0)
    c = priors.class_dependent([0.9, 0.5, 0.7], strength=4)
    np.testing.assert_allclose(np.diag(c), [3.6, 2.0, 2.8])
    np.testing.assert_allclose(c.sum(1), 4.0)
    with pytest.raises(ValueError, match=r"prior accuracies must lie in \[0, 1\]"):
        priors.class_dependent([1.2, 0.5])
    with pytest.raises(ValueError, match="prior strength must be a finite number >= 0"):
        priors.homogeneous(3, strength=-1)


def test_worker_dependent_prior_adds_gold_answers():
    """Seed 000 appendix A.4 B: each worker's answers on gold questions join the base prior."""
    from crowdinfer.models import priors

    ann = ci.Annotations.from_arrays([0, 0, 1, 2], [0, 1, 0, 1], [1, 1, 0, 1], n_classes=2,
                                     gold=np.array([1, 0, -1]))
    base = priors.homogeneous(2, strength=2, accuracy=0.5)
    w = priors.worker_dependent(ann, base)
    assert w.shape == (2, 2, 2)
    np.testing.assert_allclose(w[0] - base, [[1, 0], [0, 1]])  # worker 0: right on items 0 and 1
    np.testing.assert_allclose(w[1] - base, [[0, 0], [0, 1]])  # worker 1: item 2 has no gold
    post = ci.fit(ann, prior="worker", strength=2)
    assert post.confusion.shape == (2, 2, 2)
    with pytest.raises(ValueError, match="needs gold labels"):
        ci.fit(ci.Annotations.from_arrays([0, 1], [0, 1], [0, 1]), prior="worker")


def test_one_coin_soft_rule_waits_for_the_class_proportions():
    """One answer per item, 10:1 classes: nobody overlaps, every worker is pinned to the prior
    skill, and only the class proportions move.  One-coin's mean annotation likelihood (a function
    of the mean agreement alone: its confusion is symmetric) stood still after 3 iterations and the
    soft rule stopped it at majority vote's labels; it must run on to Dawid-Skene's answer."""
    task = ci.datasets.synthetic(n_items=3000, n_workers=78, n_classes=2, imbalance=10.0,
                                 annotations_per_item=1, seed=202)
    ann = task.annotations.without_gold()
    coin, ds = ci.fit(ann, "one_coin"), ci.fit(ann, "dawid_skene")
    assert coin.n_iter > 10
    np.testing.assert_allclose(coin.class_prior, ds.class_prior, atol=0.01)
    assert coin.accuracy(task.true_labels) == pytest.approx(ds.accuracy(task.true_labels), abs=0.002)
    assert coin.accuracy(task.true_labels) > 0.85  # majority vote: 0.69
