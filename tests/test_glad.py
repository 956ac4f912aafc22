"""GLAD against crowd-kit's GLAD. The peer's accuracies come from
experiments/benchmarks/glad_vs_crowdkit.py, which runs both in one process (its CSV is read here)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpyro.infer.util import log_density

import crowdinfer as ci
from crowdinfer.inference.loop import Spec, run
from crowdinfer.models import class_prior, glad, majority_vote
from lean import lean_or_slow

PEER = pd.read_csv(
    Path(__file__).resolve().parents[1] / "experiments" / "results" / "glad_vs_crowdkit.csv",
    index_col="dataset",
)["crowd-kit accuracy"]


@pytest.mark.parametrize("name", lean_or_slow(list(PEER.index), keep=("rte", "face", "zencrowd_in")))
def test_glad_matches_or_beats_crowdkit(dataset, name):
    acc = ci.fit(dataset(name).annotations, "glad").accuracy()
    assert acc >= PEER[name] - 0.01, f"{name}: {acc:.4f} vs crowd-kit {PEER[name]:.4f}"


def test_glad_objective_is_the_numpyro_log_density_and_climbs(dataset):
    ann = dataset("dog").annotations
    data = ann.to_device()
    hyper = {"alpha_mean": 1.0, "alpha_scale": 1.0, "beta_mean": 1.0, "beta_scale": 1.0,
             "prior_logits": np.zeros((ann.n_items, ann.n_classes), np.float32)}
    spec = Spec(glad.map_part(glad.GladHyper(1.0, 1.0, 1.0, 1.0)),
                class_prior.part("em", logits=hyper["prior_logits"]))
    state = run(spec, data, majority_vote.soft(data), max_iter=30, tol=0.0, stop="objective")
    h = np.asarray(state.history)
    assert np.all(np.diff(h) >= -1e-4 * np.abs(h[:-1]))
    params = {"alpha": state.params["alpha"], "log_beta": state.params["log_beta"]}
    logp, _ = log_density(glad.model, (data, hyper), {}, params)
    np.testing.assert_allclose(float(logp), float(state.objective), rtol=2e-5)


def test_glad_recovers_worker_ability_order():
    task = ci.datasets.synthetic(n_items=1500, n_workers=20, n_classes=3, annotations_per_item=5,
                                 accuracy=(0.4, 0.95), seed=5)
    post = ci.fit(task.annotations, "glad")
    true_acc = np.einsum("jkk,k->j", task.true_confusion, task.class_prior)
    assert np.corrcoef(post.params["alpha"], true_acc)[0, 1] > 0.9
    assert post.params["log_beta"].shape == (1500,)
    idata = post.to_arviz(num_draws=40, label_probs=False)  # every model has draws (issue 12)
    assert idata.posterior["accuracy"].shape == (4, 10, 20) and idata.posterior.attrs["mcmc"] == 0
