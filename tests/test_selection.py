"""fit's default: the model chosen by held-out annotation likelihood (crowdinfer.selection)."""
import warnings

import numpy as np
import pytest

import crowdinfer as ci
from crowdinfer import selection
from crowdinfer.fit import MODELS, fit


@pytest.fixture(scope="module")
def task():
    return ci.datasets.synthetic(n_items=300, n_workers=15, n_classes=3, annotations_per_item=3,
                                 seed=3)


@pytest.fixture(scope="module")
def default(task):
    return fit(task.annotations)


def test_default_reports_candidates_scores_and_choice(task, default):
    sel = default.selection
    assert sel["candidates"] == [c for c in selection.CANDIDATES if c in MODELS]
    assert set(sel["scores"]) == set(sel["candidates"])
    best = max(sel["candidates"], key=lambda c: sel["scores"][c]["score"])
    assert sel["chosen"] == best == default.model
    assert sel["criterion"] == selection.CRITERION
    for s in sel["scores"].values():  # log-likelihood per annotation of a K=3 answer
        assert -np.log(3) - 1.0 < s["score"] < 0
    # the temperature is searched for the chosen model only (the others' would cost a pass each)
    chosen = sel["scores"][sel["chosen"]]
    assert chosen["tempered_score"] >= chosen["score"]
    assert chosen["temperature"] == sel["temperature"] and 0.1 <= sel["temperature"] <= 10
    assert "held-out log-likelihood" in sel["rule"]


def test_the_choice_as_a_table_and_a_sentence(task, default):
    table = default.selection_table()
    sel = default.selection
    assert list(table.model) == sel["candidates"] and table.chosen.sum() == 1
    row = table.set_index("model")
    assert row.chosen[sel["chosen"]]
    for name in sel["candidates"]:
        assert row.held_out_log_lik[name] == sel["scores"][name]["score"]
    other = next(c for c in sel["candidates"] if c != sel["chosen"])
    assert row.se_vs_chosen[other] == sel["scores"][other]["se"][sel["chosen"]] > 0
    line = selection.describe(sel)
    assert line.startswith(f"chose {sel['chosen']} (the best score)")
    assert f"{other} {sel['scores'][other]['score']:.4f} (difference +" in line
    assert f"T = {sel['temperature']:.2f}" in line
    # the one-standard-error rule says so when it passes over the best score
    tie = {**sel, "chosen": "one_coin", "temperature": 1.0,
           "scores": {"dawid_skene": {"score": -1.0, "se": {"one_coin": 0.2}},
                      "one_coin": {"score": -1.1, "se": {"dawid_skene": 0.2}}}}
    assert "within 0.2000 of dawid_skene's score" in selection.describe(tie)
    with pytest.raises(ValueError, match="no model was chosen"):
        fit(task.annotations, "dawid_skene").selection_table()


def test_golden_section_temperature_matches_a_grid(task):
    """The temperature search (golden section on log T) finds the grid's best to grid precision."""
    import jax.numpy as jnp

    ann = task.annotations
    post = fit(ann, "dawid_skene")
    t, gain = selection.cavity_temperature(post)
    data = ann.to_device(sharding=None)
    q, confusion, prior = selection._cavity_arrays(post, "map")
    log_theta, alpha = selection._worker_posterior(data, q, confusion, prior, "map")
    cav, theta = selection._cavity_rows(data, jnp.arange(ann.n_annotations), jnp.log(q),
                                        log_theta, alpha, "map")
    cav, theta = np.asarray(cav, np.float64), np.asarray(theta, np.float64)
    curve = []
    for g in selection.TEMPERATURES:
        p = np.exp((cav - cav.max(-1, keepdims=True)) / g)
        curve.append(np.log((p * theta).sum(-1) / p.sum(-1)).mean())
    best = int(np.argmax(curve))
    step = selection.TEMPERATURES[1] / selection.TEMPERATURES[0]
    assert selection.TEMPERATURES[best] / step <= t <= selection.TEMPERATURES[best] * step
    at_one = curve[int(np.argmin(abs(np.log(selection.TEMPERATURES))))]
    assert gain == pytest.approx(max(curve) - at_one, abs=1e-3)


@pytest.mark.parametrize("model", sorted(selection.CAVITY))
def test_cavity_tracks_exact_leave_one_annotation_out(task, model):
    """The cavity of one fit approximates refitting without each annotation: on 30 annotations
    it correlates with the exact leave-one-out predictive, and lies below the in-sample one."""
    ann = task.annotations
    post = fit(ann, model)
    rows = np.random.default_rng(0).choice(ann.n_annotations, 30, replace=False)
    cavity = selection._cavity_log_lik(post, rows)
    exact = []
    for r in rows:
        keep = np.ones(ann.n_annotations, bool)
        keep[r] = False
        held = fit(selection._subset(ann, keep, selection.capacity_bucket(ann.n_annotations)),
                   model)
        exact.append(selection._log_predictive(held, ann, np.array([r]))[0])
    exact = np.asarray(exact)
    in_sample = selection._log_predictive(post, ann, rows)
    assert np.corrcoef(cavity, exact)[0, 1] > 0.8
    assert abs(cavity.mean() - exact.mean()) < abs(in_sample.mean() - exact.mean())
    assert cavity.mean() < in_sample.mean()
    whole = selection.cavity_score(post)  # the jitted pass agrees with the row-by-row one
    np.testing.assert_allclose(whole["score"], selection._cavity_log_lik(
        post, np.arange(ann.n_annotations)).mean(), rtol=1e-4)


def test_a_candidate_without_a_cavity_means_k_fold_for_all(task):
    post = selection.select(task.annotations, candidates=["dawid_skene", "majority_vote"],
                            criterion="cavity")
    assert post.selection["criterion"] == "kfold" and post.selection["folds"] == 2
    assert set(post.selection["scores"]) == {"dawid_skene", "majority_vote"}
    with pytest.raises(ValueError, match=r"criterion must be one of \('cavity', 'kfold', "
                                         r"'holdout'\), got 'evidence'"):
        selection.select(task.annotations, criterion="evidence")


@pytest.fixture(scope="module")
def sparse_crowd():
    """5 classes, errors spread evenly (one-coin workers), 3 answers per item, 40 workers."""
    import dataclasses

    t = ci.datasets.synthetic(n_items=1500, n_workers=40, n_classes=5, annotations_per_item=3,
                              seed=7)
    return dataclasses.replace(t.annotations, gold=None), t.true_labels


def test_cavity_warns_only_for_the_model_it_chose(task):
    """criterion="cavity" fits every candidate on all the data: a candidate not chosen must not
    warn (here every fit is capped at 2 iterations; only the chosen model's warning is said)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        post = selection.select(task.annotations, candidates=("dawid_skene", "one_coin"),
                                criterion="cavity", temper_probs=False, max_iter=2)
    limits = [str(w.message) for w in said if "iteration limit" in str(w.message)]
    assert len(limits) == 1 and limits[0].startswith(post.model + "/"), limits
    assert limits[0] in post.warnings


def test_holdout_is_not_fooled_where_the_cavity_overrates_dawid_skene(sparse_crowd):
    """On a sparse one-coin crowd the cavity (optimistic for Dawid-Skene's K(K-1) parameters per
    worker) picks Dawid-Skene; the default's exact held-out split picks one-coin, the more
    accurate model, and returns its fit on all the annotations."""
    ann, truth = sparse_crowd
    cavity = selection.select(ann, criterion="cavity")
    holdout = fit(ann)
    assert holdout.selection["criterion"] == "holdout" == selection.CRITERION
    assert cavity.selection["chosen"] == "dawid_skene"
    assert holdout.selection["chosen"] == holdout.model == "one_coin"
    scores = holdout.selection["scores"]
    assert scores["one_coin"]["score"] > scores["dawid_skene"]["score"] + 0.1
    assert holdout.accuracy(truth) > cavity.accuracy(truth) + 0.01
    full = fit(ann, "one_coin")  # the refit on every annotation, then tempered
    np.testing.assert_array_equal(holdout.labels, full.labels)
    np.testing.assert_allclose(
        holdout.label_probs, selection.temper(full.label_probs, holdout.selection["temperature"]),
        atol=1e-9)


def test_holdout_scores_only_the_held_out_half(sparse_crowd):
    """The held-out rows are the fold the fits did not see, and the score is their exact
    predictive; the temperature search agrees with a grid over the same rows."""
    ann, _ = sparse_crowd
    scores, posts, rows = selection.holdout_scores(ann, ["one_coin"])
    fold = selection.annotation_folds(ann, 2, 0)
    np.testing.assert_array_equal(rows, np.flatnonzero(fold == 1))
    post = posts["one_coin"]
    assert post.annotations.n_annotations == int((fold == 0).sum())
    assert scores["one_coin"]["score"] == pytest.approx(
        selection._log_predictive(post, ann, rows).mean())
    t, gain = selection.holdout_temperature(post, ann, rows)
    curve = selection._tempered_curve(post, ann, rows, selection.TEMPERATURES)
    best = int(np.argmax(curve))
    step = selection.TEMPERATURES[1] / selection.TEMPERATURES[0]
    assert selection.TEMPERATURES[best] / step <= t <= selection.TEMPERATURES[best] * step
    at_one = curve[int(np.argmin(abs(np.log(selection.TEMPERATURES))))]
    assert gain == pytest.approx(max(curve) - at_one, abs=2e-3)


def test_no_temperature_from_items_the_half_saw_no_answer_of():
    """One answer per item: every held-out answer's item is unanswered in its half (its posterior
    the class prior), which says nothing about how sharp a posterior should be: T = 1, and the
    default reports the same confidence as its model alone (the search used to run to its bound,
    T = 10: labels 86% right at confidence 0.37).  With two answers per item some items are seen
    by both halves, and the held-out answers of those alone set T."""
    rng = np.random.default_rng(0)
    n = 300
    truth = rng.integers(3, size=n)
    label = np.where(rng.random(n) < 0.8, truth, rng.integers(3, size=n))
    ann = ci.Annotations.from_arrays(np.arange(n), rng.integers(10, size=n), label, n_classes=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = fit(ann)
        alone = fit(ann, post.selection["chosen"])
    assert post.selection["temperature"] == 1.0
    np.testing.assert_allclose(post.label_probs, alone.label_probs)
    scores, posts, rows = selection.holdout_scores(ann, ["one_coin"])
    assert len(rows) > 0
    assert selection.holdout_temperature(posts["one_coin"], ann, rows) == (1.0, 0.0)


def test_tempering_changes_probabilities_not_labels(task, default):
    plain = fit(task.annotations, default.model)
    np.testing.assert_array_equal(default.labels, plain.labels)
    np.testing.assert_allclose(default.label_probs.sum(-1), 1.0, atol=1e-9)
    t = default.selection["temperature"]
    np.testing.assert_allclose(default.label_probs, selection.temper(plain.label_probs, t),
                               atol=1e-9)


def test_held_out_score_penalises_a_label_switched_model(task):
    """A model whose labels are permuted predicts held-out answers worse: the criterion sees it."""
    ann = task.annotations
    post = fit(ann, "dawid_skene")
    rows = np.arange(ann.n_annotations)
    good = selection._log_predictive(post, ann, rows).mean()
    post.label_probs = post.label_probs[:, [1, 2, 0]]
    assert selection._log_predictive(post, ann, rows).mean() < good - 0.3


def test_engine_options_without_a_model_mean_dawid_skene(task):
    post = fit(task.annotations, max_iter=5)
    assert post.model == "dawid_skene" and post.selection["chosen"] == "dawid_skene"
    assert post.selection["scores"] == {}


def test_bad_selection_arguments(task):
    with pytest.raises(ValueError, match="needs a model"):
        fit(task.annotations, method="em")
    with pytest.raises(ValueError, match="unknown candidate model"):
        selection.select(task.annotations, candidates=["dawid_skene", "oracle"])
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        selection.select(task.annotations, folds=1)


def test_folds_keep_every_busy_item_in_every_training_set(task):
    ann = task.annotations
    fold = selection.annotation_folds(ann, 3, seed=0)
    per_item = np.zeros((ann.n_items, 3), int)
    np.add.at(per_item, (ann.item, fold), 1)
    busy = ann.annotations_per_item() >= 3
    assert (per_item[busy] > 0).all()
    assert np.bincount(fold).min() > 0.3 * ann.n_annotations


def test_within_one_standard_error_the_model_with_fewer_parameters_wins():
    """2 answers per item: each half has one answer per item, no worker overlaps there, every
    candidate's workers are pinned to the same pooled skill and the held-out scores agree to
    1e-5, a tie (their own convergence is 1e-4).  The one-standard-error rule then takes one-coin (1 parameter per worker), not
    Dawid-Skene (K(K-1)); on this crowd of near-spammers one-coin is the more accurate on all the
    answers (Dawid-Skene falls below majority vote)."""
    import dataclasses

    t = ci.datasets.synthetic(n_items=3000, n_workers=78, n_classes=4, accuracy=(0.25, 0.7),
                              annotations_per_item=2, seed=202)
    ann = dataclasses.replace(t.annotations, gold=None)
    post = fit(ann)
    scores = post.selection["scores"]
    gap = abs(scores["one_coin"]["score"] - scores["dawid_skene"]["score"])
    assert gap < selection.TIE
    assert post.selection["chosen"] == "one_coin"
    assert post.accuracy(t.true_labels) > fit(ann, "dawid_skene").accuracy(t.true_labels) + 0.02
    names = ["dawid_skene", "one_coin"]
    clear = {"dawid_skene": {"score": -1.0, "se": {"one_coin": 0.01}}, "one_coin": {"score": -1.1}}
    close = {"dawid_skene": {"score": -1.0, "se": {"one_coin": 0.2}}, "one_coin": {"score": -1.1}}
    assert selection.choose(clear, names, 4) == "dawid_skene"
    assert selection.choose(close, names, 4) == "one_coin"
    assert selection.choose({"dawid_skene": {"score": -1.0}, "one_coin": {"score": -1.0}}, names,
                            4) == "one_coin"


def test_half_fits_keep_the_annotations_weights(task):
    """The held-out halves are subsets of the weighted annotations, weights included: a half
    fit of weighted data is the fit of that half's rows with their own weights."""
    import dataclasses

    ann = task.annotations
    weight = np.where(np.arange(ann.n_annotations) % 3 == 0, 0.25, 1.0).astype(np.float32)
    weighted = dataclasses.replace(ann, weight=weight)
    keep = selection.annotation_folds(weighted, 2, 0) == 0
    half = selection._subset(weighted, keep, 1024)
    np.testing.assert_array_equal(half.weight, weight[keep])
    np.testing.assert_array_equal(half.item, ann.item[keep])
    unweighted = selection._subset(ann, keep, 1024)
    assert unweighted.weight is None
    # the weights change the half fit (a quarter-weight answer counts a quarter)
    assert not np.allclose(fit(half, "dawid_skene").label_probs,
                           fit(unweighted, "dawid_skene").label_probs)


def test_held_out_answers_count_by_their_weight(task):
    """A held-out answer of weight 0 is no evidence: the score is the mean over the others; unit
    weights score exactly as no weights."""
    import dataclasses

    ann = task.annotations
    plain, _, rows = selection.holdout_scores(ann)
    ones = dataclasses.replace(ann, weight=np.ones(ann.n_annotations, np.float32))
    unit, _, _ = selection.holdout_scores(ones)
    for name in plain:
        assert unit[name]["score"] == pytest.approx(plain[name]["score"], abs=1e-12)
        assert unit[name]["se"] == pytest.approx(plain[name]["se"], rel=1e-9)
    weight = np.ones(ann.n_annotations, np.float32)
    weight[rows[::2]] = 0.0  # half of the held-out answers, none of the training half
    scores, posts, kept = selection.holdout_scores(dataclasses.replace(ann, weight=weight))
    np.testing.assert_array_equal(kept, rows[1::2])
    for name in scores:
        expected = selection._log_predictive(posts[name], ann, rows[1::2]).mean()
        assert scores[name]["score"] == pytest.approx(expected, abs=1e-9)
        assert scores[name]["score"] != pytest.approx(plain[name]["score"], abs=1e-6)


def test_temperature_counts_held_out_answers_by_their_weight(task):
    """The temperature search weighs each held-out answer as the score does: unit weights give
    exactly the unweighted temperature; doubling some answers' weight moves it as repeating them."""
    import dataclasses

    ann = task.annotations
    scores, posts, rows = selection.holdout_scores(ann)
    post = posts["dawid_skene"]
    plain = selection.holdout_temperature(post, ann, rows)
    ones = dataclasses.replace(ann, weight=np.ones(ann.n_annotations, np.float32))
    assert selection.holdout_temperature(post, ones, rows) == pytest.approx(plain, rel=1e-6)
    weight = np.ones(ann.n_annotations, np.float32)
    weight[rows[::3]] = 2.0
    weighted = selection.holdout_temperature(post, dataclasses.replace(ann, weight=weight), rows)
    repeated = selection.holdout_temperature(post, ann, np.sort(np.r_[rows, rows[::3]]))
    assert weighted == pytest.approx(repeated, rel=1e-4)
    assert weighted[0] != pytest.approx(plain[0], rel=1e-4)
