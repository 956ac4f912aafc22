"""Every option of ``fit`` is checked before any work (crowdinfer.options)."""
import dataclasses

import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer import options as opts
from crowdinfer.posterior import Posterior


@pytest.fixture(scope="module")
def ann():
    task = ci.datasets.synthetic(n_items=300, n_workers=20, n_classes=3, annotations_per_item=3,
                                 seed=1)
    return task.annotations


@pytest.mark.parametrize("model, method, options, message", [
    ("glad", None, dict(learning_rate=float("nan")), "learning_rate must be a finite number in (0, 1], got nan"),
    ("dawid_skene", "svi", dict(learning_rate=1e6), "learning_rate must be a finite number in (0, 1], got 1000000.0"),
    ("dawid_skene", "svi", dict(num_steps=0), "num_steps must be an integer >= 1, got 0"),
    ("bcc", "nuts", dict(num_chains=0), "num_chains must be an integer >= 1, got 0"),
    ("dawid_skene", None, dict(max_iter=0), "max_iter must be an integer >= 1, got 0"),
    ("dawid_skene", None, dict(max_iter=2.5), "max_iter must be an integer >= 1, got 2.5"),
    ("dawid_skene", None, dict(max_iter=True), "max_iter must be an integer >= 1, got True"),
    ("one_coin", None, dict(tol=-1e-3), "tol must be a finite number in [0, inf), got -0.001"),
    ("bcc", None, dict(tol=float("inf")), "tol must be a finite number in [0, inf), got inf"),
    ("dawid_skene", None, dict(strength=-1), "strength must be a finite number in [0, inf), got -1"),
    ("dawid_skene", None, dict(accuracy=1.0), "accuracy must be a finite number in (0, 1), got 1.0"),
    ("dawid_skene", None, dict(class_prior=float("nan")), "class_prior must be a finite number in [0, inf), got nan"),
    ("dawid_skene", None, dict(stop="sometimes"), "stop must be one of ['soft', 'hard', 'objective'], got 'sometimes'"),
    ("dawid_skene", None, dict(label_prior="classifier", hidden=(0,)), "hidden must be an integer >= 1, got 0"),
    ("dawid_skene", None, dict(label_prior="classifier", folds=0), "folds must be an integer >= 1, got 0"),
    ("community_bcc", None, dict(deviation=0.0), "deviation must be a finite number in (0, inf), got 0.0"),
    ("community_bcc", "svi", dict(communities=0), "communities must be an integer >= 1, got 0"),
    ("glad", None, dict(alpha_scale=-1.0), "alpha_scale must be a finite number in (0, inf), got -1.0"),
    ("glad", None, dict(m_steps=0), "m_steps must be an integer >= 1, got 0"),
    ("dawid_skene", "svi", dict(guide="laplace"), "guide must be one of ['map', 'normal'], got 'laplace'"),
    ("dawid_skene", "svi", dict(batch_items=0), "batch_items must be an integer >= 1, got 0"),
    ("dawid_skene", "nuts", dict(seed=-1), "seed must be an integer >= 0, got -1"),
    ("majority_vote", None, dict(ties="coin"), "ties must be one of ['split', 'first'], got 'coin'"),
    ("dawid_skene", None, dict(prior="flat"), "unknown prior 'flat' (option 'prior'): use one of"),
])
def test_bad_values_name_the_option_and_the_range(ann, model, method, options, message):
    with pytest.raises(ValueError) as err:
        ci.fit(ann, model, method, **options)
    assert str(err.value).startswith(message), str(err.value)


def test_bad_values_are_checked_before_the_data():
    # a wrong option is reported even when the data would fail too: options come first
    with pytest.raises(ValueError, match="^max_iter must be"):
        ci.fit(None, "dawid_skene", max_iter=0)


def test_unknown_options_name_the_model_the_engine_and_the_valid_ones(ann):
    with pytest.raises(ValueError) as err:
        ci.fit(ann, "glad", max_iters=3)
    assert str(err.value) == (
        "glad/em: unexpected keyword option 'max_iters': model 'glad' with engine 'em' takes "
        "alpha_mean, alpha_scale, beta_mean, beta_scale, class_prior, learning_rate, m_steps, "
        "max_iter, prior_logits, progress, stop, tol")
    with pytest.raises(ValueError, match="^majority_vote/vote: unexpected keyword options "
                                         "'prior', 'strength': .* takes ties$"):
        ci.fit(ann, "majority_vote", prior="none", strength=2)
    with pytest.raises(ValueError, match="engine 'nuts' takes .*num_chains"):
        ci.fit(ann, "bcc", "nuts", label_prior="classifier")  # NUTS has no learned prior


def test_every_registered_engine_has_a_schema():
    for model, entry in ci.MODELS.items():
        for method in entry.methods:
            assert (model, method) in opts.SCHEMAS, (model, method)
    registered = {m: tuple(e.methods) for m, e in ci.MODELS.items()}
    assert opts.catalogue() == registered
    assert all(e.methods and next(iter(e.methods)) == e.default_method for e in ci.MODELS.values())
    assert set(opts.DESCRIPTIONS) == set(ci.MODELS)
    # the static list that --help prints without importing JAX is the registry
    assert {m: engines for m, (engines, _) in opts.KNOWN_MODELS.items()} == registered


def test_help_lists_every_model_without_importing_jax():
    import subprocess
    import sys

    code = ("import sys; from crowdinfer.cli import main; main(['fit', '--help'])")
    proc = subprocess.run([sys.executable, "-c", code + "\n", ], capture_output=True, text=True)
    assert proc.returncode == 0
    for model, (engines, _) in opts.KNOWN_MODELS.items():
        assert f"{model:<17} engines: {', '.join(engines)}" in proc.stdout, model
    check = subprocess.run([sys.executable, "-c", "import sys; from crowdinfer.cli import "
                            "build_parser; build_parser([]); build_parser(['fit']); print('jax' in sys.modules, "
                            "'pandas' in sys.modules, 'numpy' in sys.modules)"],
                           capture_output=True, text=True)
    assert check.stdout.split() == ["False", "False", "False"], check.stderr


def test_option_groups_are_frozen_validated_and_match_the_runner_defaults():
    loop = opts.LoopOptions(max_iter=50.0)
    assert loop.max_iter == 50 and isinstance(loop.max_iter, int)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loop.max_iter = 3
    with pytest.raises(ValueError, match=r"^learning_rate must be a finite number in \(0, 1\]"):
        opts.SviOptions(learning_rate=0.0)
    # the defaults documented here are the runners' own
    from crowdinfer.models import priors

    assert opts.PriorOptions().prior == priors.DEFAULT_PRIOR
    assert opts.PriorOptions().accuracy == priors.DEFAULT_ACCURACY
    import inspect

    from crowdinfer import runners

    glad = inspect.signature(runners.glad_runner).parameters
    for f in dataclasses.fields(opts.GladOptions):
        assert glad[f.name].default == f.default, f.name
    nuts = inspect.signature(runners.nuts_runner("x", None, 1.0)).parameters
    for f in dataclasses.fields(opts.NutsOptions):
        assert nuts[f.name].default == f.default, f.name


def test_validated_values_reach_the_engine(ann):
    post = ci.fit(ann, "dawid_skene", max_iter=np.int64(3), tol=0, stop="objective")
    assert post.n_iter == 3


def test_a_runner_registered_without_a_schema_is_checked_by_its_signature(ann, monkeypatch):
    def runner(annotations, *, max_iter=10, smoothing=0.5, **options):
        return ci.fit(annotations, "dawid_skene", max_iter=max_iter, **options)

    from crowdinfer.fit import ModelEntry

    monkeypatch.setitem(ci.MODELS, "custom", ModelEntry({"em": runner}, "em"))
    with pytest.raises(ValueError, match="^max_iter must be an integer >= 1, got -2"):
        ci.fit(ann, "custom", max_iter=-2)
    with pytest.raises(ValueError, match="custom/em: unexpected keyword option 'smooth'.*smoothing"):
        ci.fit(ann, "custom", smooth=1)
    assert ci.fit(ann, "custom", max_iter=2, tol=0, stop="objective").n_iter == 2


def test_nan_in_an_output_raises(ann):
    p = ci.fit(ann, "majority_vote")
    probs = p.label_probs.copy()
    probs[0, 0] = np.nan
    with pytest.raises(ValueError, match="^majority_vote/vote produced NaN or inf in label_probs"):
        Posterior(p.annotations, "majority_vote", "vote", probs, p.confusion, p.class_prior,
                  p.history, 0, True)


def test_array_and_huge_integer_options_are_named():
    """Found by experiments/benchmarks/robustness.py: these raised numpy's or JAX's own errors."""
    ann = ci.Annotations.from_arrays([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], [0, 0, 1, 1, 0, 1],
                                     n_classes=2)
    with pytest.raises(ValueError, match="^prior_logits must be an array of finite numbers, got str"):
        ci.fit(ann, "glad", prior_logits="abc")
    with pytest.raises(ValueError, match="^prior_logits must be an array of finite numbers: it holds"):
        ci.fit(ann, "dawid_skene", prior_logits=np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="^n_iter must be an integer <= 2147483647"):
        ci.fit(ann, "zero_based_skill", n_iter=2**40)
