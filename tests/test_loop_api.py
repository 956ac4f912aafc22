"""The loop's public init/step, parts as pytrees of typed hyperparameters, and compile reuse."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer.inference import loop
from crowdinfer.inference.loop import Spec
from crowdinfer.models import class_prior, dawid_skene, glad, majority_vote


@pytest.fixture(scope="module")
def ann():
    return ci.datasets.synthetic(n_items=200, n_workers=10, n_classes=3, annotations_per_item=3,
                                 seed=1).annotations


def test_fits_with_other_prior_arrays_reuse_the_compiled_loop(ann):
    """The prior arrays are traced leaves of the parts, not static: a second fit with a different
    prior of the same shape compiles nothing new, and its result differs (the prior was used)."""
    first = ci.fit(ann, "dawid_skene", prior=np.full((3, 3), 1.0) + 4 * np.eye(3))
    compiled = loop._run._cache_size()
    second = ci.fit(ann, "dawid_skene", prior=np.full((3, 3), 2.0) + np.eye(3))
    assert loop._run._cache_size() == compiled
    assert np.abs(first.label_probs - second.label_probs).max() > 1e-3
    ci.fit(ann, "glad", max_iter=3)
    compiled = loop._run._cache_size()
    ci.fit(ann, "glad", max_iter=3, alpha_mean=2.0, beta_scale=0.5)  # other GladHyper values
    assert loop._run._cache_size() == compiled
    ci.fit(ann, "glad", max_iter=3, m_steps=5)  # a static setting: a new compile
    assert loop._run._cache_size() == compiled + 1


def test_run_is_init_then_step_until_the_rule_fires(ann):
    data = ann.to_device()
    spec = Spec(dawid_skene.map_part(2.0 + jnp.eye(3)), class_prior.part("em", 3, concentration=2.0))
    start = majority_vote.soft(data)
    ran = loop.run(spec, data, start, max_iter=50, tol=1e-6, stop="objective")
    state = jax.jit(lambda s: loop.init(s, data, start, max_iter=50, stop="objective"))(spec)
    step = jax.jit(lambda s, st: loop.step(s, data, st, tol=1e-6, stop="objective"))
    while int(state.iteration) < 50 and not bool(state.converged):
        state = step(spec, state)
    assert int(state.iteration) == int(ran.iteration) and bool(ran.converged)
    np.testing.assert_allclose(state.log_q, ran.log_q, atol=1e-5)
    np.testing.assert_allclose(state.workers.confusion, ran.workers.confusion, atol=1e-5)
    assert set(ran.params) == {"confusion", "class_prior"}


def test_private_state_fields_stay_out_of_params(ann):
    data = ann.to_device()
    spec = Spec(glad.map_part(), class_prior.part("em", logits=np.zeros((ann.n_items, 3))))
    state = loop.run(spec, data, majority_vote.soft(data), max_iter=2)
    assert isinstance(state.workers, glad.GladState) and state.workers.adam is not None
    assert set(state.params) == {"alpha", "log_beta"}
    post = ci.fit(ann, "glad", max_iter=2)
    assert set(post.params) == {"alpha", "log_beta"}
    assert set(post.options["hyper"]) == {"alpha_mean", "alpha_scale", "beta_mean", "beta_scale",
                                          "prior_logits", "class_concentration"}
