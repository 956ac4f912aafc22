"""Annotation weights are honoured by every model and engine of ``fit.MODELS``.

The registry is iterated, so a model added later is covered without editing this file.  Two
invariants, per (model, engine):

* an integer weight ``w`` is the same evidence as the row repeated ``w`` times
  (``duplicates="keep"``);
* a row of weight 0 is the same as no row at all.
"""
import dataclasses
import warnings

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import crowdinfer as ci
from crowdinfer.fit import MODELS, fit

# few steps: the comparison is between two runs on the same evidence, not accuracy
FAST = {"nuts": dict(num_warmup=5, num_samples=5, num_chains=1, seed=0),
        "svi": dict(num_steps=60, seed=0)}
# Float32 sums in another order move flat optima (EBCC's best of 40 restarts) by up to ~2e-3
# (default options: tightening ``tol`` makes it worse, the hierarchical population's strength
# drifts without bound); an engine that ignored the weights is off by > 0.3 on this data
# (weights 1-3, and 15 contradicting weight-0 rows).
TOL = 5e-3
# SVI compiles longer: it runs in CI's second (slow) pass
# SVI and EBCC (whose VB takes ~9 s to compile) in the slow run only: the default run's time
ENGINES = [pytest.param(model, method,
                        marks=[pytest.mark.slow] if method == "svi" or model == "ebcc" else [])
           for model, entry in MODELS.items() for method in entry.methods]


@pytest.fixture
def nuts_target(monkeypatch):
    """NUTS is chaotic: float rounding (a weight of 2 against two rows summed) sends two chains
    apart, so the NUTS check compares its *target*: the NumPyro model's log density at the
    chain's start, recorded here, and the label posterior at that point (the sampler is replaced
    by four copies of the start point)."""
    from numpyro.infer.util import log_density

    from crowdinfer.inference import mcmc

    seen = []

    def one_draw(model, data, hyper, init_params, **_):
        params = {k: jnp.asarray(v) for k, v in init_params.items()}
        seen.append(float(log_density(model, (data, hyper), {}, params)[0]))
        return {k: np.repeat(np.asarray(v)[None, None], 4, axis=1) for k, v in init_params.items()}

    monkeypatch.setattr(mcmc, "nuts", one_draw)
    return seen


def _base_table(seed=0):
    task = ci.datasets.synthetic(n_items=40, n_workers=6, n_classes=3, annotations_per_item=3,
                                 accuracy=(0.55, 0.9), seed=seed)
    df = task.annotations.to_dataframe()
    df["item"] = "i" + df["item"].astype(str)
    df["worker"] = "w" + df["worker"].astype(str)
    df["label"] = np.array(["a", "b", "c"])[df["label"].to_numpy(dtype=int)]
    return df


def _fit(ann, model, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diagonal / convergence warnings of tiny fits
        return fit(ann, model, method, **FAST.get(method, {}))


def _same(a, b, method):
    tol = TOL
    assert list(a.annotations.item_ids) == list(b.annotations.item_ids)
    assert list(a.annotations.worker_ids) == list(b.annotations.worker_ids)
    np.testing.assert_allclose(a.label_probs, b.label_probs, atol=tol)
    np.testing.assert_allclose(a.confusion, b.confusion, atol=tol)


@pytest.mark.parametrize("model, method", ENGINES)
def test_weights_equal_repeated_rows_and_weight_zero_equals_no_row(model, method, request):
    """One fit pair per engine checks both invariants: the weighted table (integer weights,
    plus contradicting rows of weight 0) against the rows repeated by their weight, the
    weight-0 rows left out."""
    df = _base_table()
    rng = np.random.default_rng(1)
    w = rng.choice([1, 2, 3], size=len(df), p=[0.5, 0.3, 0.2])
    # extra answers (items and workers that exist anyway), contradicting the crowd, at weight 0
    extra = df.sample(15, random_state=4).assign(
        label=lambda t: rng.choice(["a", "b", "c"], size=len(t)), worker="w0")
    weighted = pd.concat([df.assign(weight=w.astype(float)), extra.assign(weight=0.0)],
                         ignore_index=True)
    weighted = ci.Annotations.from_dataframe(weighted, duplicates="keep")
    repeated = ci.Annotations.from_dataframe(df.loc[df.index.repeat(w)], duplicates="keep")
    assert weighted.n_annotations == len(df) + 15 and repeated.n_annotations == int(w.sum())
    target = request.getfixturevalue("nuts_target") if method == "nuts" else None
    _same(_fit(weighted, model, method), _fit(repeated, model, method), method)
    if target is not None:
        assert len(target) == 2 and target[0] == pytest.approx(target[1], rel=1e-5)


def test_weights_reach_the_device_and_the_counts():
    df = _base_table().iloc[:6].assign(weight=[0.5, 2.0, 1.0, 0.0, 1.0, 3.0])
    ann = ci.Annotations.from_dataframe(df)
    data = ann.to_device()
    assert float(data.weight.sum()) == pytest.approx(7.5)
    assert ann.annotations_per_item().sum() == pytest.approx(7.5)
    back = ann.to_dataframe()
    merged = back.merge(df, on=["item", "worker", "label"], suffixes=("", "_in"))
    np.testing.assert_allclose(merged["weight"], merged["weight_in"])


def test_soft_answers_as_weights():
    """A soft answer (one item, one worker, a distribution over labels) is rows whose weights
    sum to 1; conflicting rows of one (item, worker) are kept, never collapsed."""
    df = pd.DataFrame({"item": ["x", "x", "y", "y", "y"], "worker": ["a", "a", "a", "b", "b"],
                       "label": ["p", "q", "p", "p", "q"], "weight": [0.7, 0.3, 1.0, 0.4, 0.6]})
    ann = ci.Annotations.from_dataframe(df)
    assert ann.n_annotations == 5 and ann.n_collapsed == 0
    post = fit(ann, "majority_vote")
    np.testing.assert_allclose(post.label_probs, [[0.7, 0.3], [0.7, 0.3]], atol=1e-6)


@pytest.mark.parametrize(
    "weights, match",
    [
        ([1.0, -1.0, 1.0], r"weight must be finite and >= 0 \(at most 3.4e\+38\): row\(s\) 1 \(column 'weight'\)"),
        ([1.0, np.inf, 1.0], r"weight must be finite and >= 0 \(at most 3.4e\+38\): row\(s\) 1"),
        ([1.0, 1e300, 1.0], r"\(at most 3.4e\+38\): row\(s\) 1"),  # inf in the engines' float32
        ([1.0, np.nan, 1.0], r"missing weight in row\(s\) 1"),
        (["1", "x", "2"], r"weight that is not a number in row\(s\) 1"),
        ([0.0, 0.0, 0.0], "every weight is 0"),
    ],
)
def test_bad_weights_name_the_rows(weights, match):
    df = pd.DataFrame({"item": [1, 1, 2], "worker": [0, 1, 0], "label": [0, 1, 1],
                       "weight": weights})
    with pytest.raises(ValueError, match=match):
        ci.Annotations.from_dataframe(df)


def test_bad_weights_in_a_csv_name_the_lines(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("item,worker,label,weight\n1,a,x,1\n1,b,y,-2\n2,a,y,\n")
    with pytest.raises(ValueError, match=r"missing or empty weight in line\(s\) 4"):
        ci.Annotations.from_csv(path)
    path.write_text("item,worker,label,weight\n1,a,x,1\n1,b,y,-2\n")
    with pytest.raises(ValueError, match=r"weight must be finite and >= 0 \(at most 3.4e\+38\): line\(s\) 3"):
        ci.Annotations.from_csv(path)
    assert ci.Annotations.from_csv(path, weight=None).weight is None  # weight=None ignores it


def test_weights_from_arrays():
    ann = ci.Annotations.from_arrays([0, 0, 1], [0, 1, 0], [0, 1, 1], weight=[1.0, 2.0, 0.5])
    assert ann.weights.tolist() == [1.0, 2.0, 0.5]
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        ci.Annotations.from_arrays([0, 0, 1], [0, 1, 0], [0, 1, 1], weight=[1.0])


def test_fractional_weights_give_normalised_votes_and_the_host_pooled_prior():
    """Weights below 1: the soft vote of an item still sums to 1 (it divided by max(total, 1)
    before), and the pooled prior equals its float64 definition on the host."""
    from crowdinfer.models import majority_vote, priors

    ann = ci.Annotations.from_arrays([0, 0, 1, 1, 1, 2], [0, 1, 0, 1, 2, 0], [0, 1, 0, 0, 1, 1],
                                     n_classes=2)
    ann = dataclasses.replace(ann, weight=np.array([.3, .3, 1, 1, 1, .2], np.float32))
    soft = np.asarray(majority_vote.soft(ann.to_device()))
    np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(soft[0], [0.5, 0.5], atol=1e-6)
    votes = np.zeros((3, 2))
    np.add.at(votes, (ann.item, ann.label), ann.weight)
    q = votes / votes.sum(1, keepdims=True)
    conf = q.T @ votes + 1e-3
    np.testing.assert_allclose(priors._pooled_confusion(ann), conf / conf.sum(1, keepdims=True),
                               rtol=1e-6)


def test_tiny_label_probabilities_are_not_flushed_to_zero():
    """25 unanimous answers: the other classes' probabilities are far below e^-87 (float32's
    smallest normal exponent) but not 0, so a high calibration temperature can raise them."""
    ann = ci.Annotations.from_arrays(np.repeat(np.arange(4), 25), np.tile(np.arange(25), 4),
                                     np.repeat([0, 1, 0, 1], 25), n_classes=2)
    probs = fit(ann, "dawid_skene").label_probs
    assert 0.0 < probs.min() < np.exp(-100.0)
