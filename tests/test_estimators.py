"""crowd-kit-style estimators (crowdinfer.estimators): names, shapes, gold, and crowd-kit's answers."""
import warnings

import numpy as np
import pandas as pd
import pytest

import crowdinfer as ci
from crowdinfer import estimators as E


@pytest.fixture(scope="module")
def task():
    return ci.datasets.synthetic(n_items=300, n_workers=15, n_classes=3, annotations_per_item=4,
                                 seed=3)


@pytest.fixture(scope="module")
def df(task):
    return task.annotations.to_dataframe().rename(columns={"item": "task"})


def test_dawid_skene_has_crowdkit_shapes(task, df):
    ds = E.DawidSkene(n_iter=50)
    labels = ds.fit_predict(df)
    ann = task.annotations
    assert labels.index.name == "task" and labels.name == "agg_label" and len(labels) == ann.n_items
    assert list(labels.to_numpy()) == list(ann.classes[ds.posterior_.labels])
    probas = ds.probas_
    assert probas.shape == (ann.n_items, ann.n_classes)
    assert probas.index.name == "task" and probas.columns.name == "label"
    np.testing.assert_allclose(probas.sum(axis=1), 1.0, atol=1e-6)
    assert (probas.idxmax(axis="columns") == labels).all()
    # errors_.loc[(worker, observed), true] = p(observed | true): each (worker, true) sums to 1
    errors = ds.errors_
    assert errors.index.names == ["worker", "label"] and errors.shape == (15 * 3, 3)
    np.testing.assert_allclose(errors.groupby(level="worker").sum().to_numpy(), 1.0, atol=1e-5)
    w, obs, true = ann.worker_ids[4], ann.classes[2], ann.classes[0]
    assert errors.loc[(w, obs), true] == pytest.approx(ds.posterior_.confusion[4, 0, 2])
    assert ds.skills_.index.name == "worker" and ds.skills_.name == "skill"
    np.testing.assert_allclose(ds.skills_.to_numpy(), ds.posterior_.worker_skills()["accuracy"])
    assert ds.priors_.name == "prior" and ds.priors_.sum() == pytest.approx(1.0)
    assert ds.fit_predict_proba(df).equals(probas)  # deterministic


def test_options_are_checked_when_the_estimator_is_built():
    with pytest.raises(ValueError, match=r"^max_iter must be an integer >= 1, got 0"):
        E.DawidSkene(n_iter=0)
    with pytest.raises(ValueError, match=r"^tol must be a finite number in \[0, inf\), got nan"):
        E.GLAD(tol=float("nan"))
    with pytest.raises(ValueError, match="^bcc/vb: unexpected keyword option 'guide'"):
        E.BCC(guide="normal")
    assert repr(E.BCC(n_iter=20, prior="symmetric")) == "BCC(prior='symmetric', max_iter=20)"


@pytest.mark.slow  # every registered model, EBCC's 40 restarts included
def test_every_model_has_an_estimator(df):
    for model in ci.MODELS:
        cls = E.estimator_for(model)
        est = cls()
        probas = est.fit_predict_proba(df)
        assert probas.shape[0] == df.task.nunique(), model
        assert est.posterior_.model == model
    assert E.estimator_for("community_bcc") is E.CommunityBCC
    assert E.estimator_for("mace") is E.MACE and E.estimator_for("wawa") is E.Wawa
    zbs = E.ZeroBasedSkill(n_iter=5).fit(df)  # crowd-kit's own parameter name
    assert zbs.posterior_.options.get("n_iter", 5) == 5 and zbs.skills_.name == "skill"
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        E.estimator_for("nope")


def test_glad_and_vote_attributes(task, df):
    glad = E.GLAD(n_iter=30).fit(df)
    assert glad.alphas_.index.name == "worker" and glad.alphas_.name == "alpha"
    assert glad.betas_.index.name == "task" and (glad.betas_ > 0).all()
    mv = E.MajorityVote().fit(df)
    merged = df.join(mv.labels_, on="task")
    agree = (merged.label == merged.agg_label).groupby(merged.worker).mean()
    pd.testing.assert_series_equal(mv.skills_, agree.rename("skill"), check_index_type=False)


def test_true_labels_fix_the_gold_tasks(task, df):
    ann = task.annotations
    wrong = pd.Series(ann.classes[(ann.gold[:30] + 1) % 3], index=pd.Index(ann.item_ids[:30], name="task"))
    ds = E.DawidSkene()
    labels = ds.fit_predict(df, true_labels=wrong)
    assert (labels.loc[wrong.index] == wrong).all()  # even deliberately wrong gold wins
    right = pd.Series(ann.classes[ann.gold[:30]], index=wrong.index)
    guided = E.DawidSkene().fit_predict(df, true_labels=right)
    free = E.DawidSkene().fit_predict(df)
    assert (free.loc[right.index] == right).mean() < 1.0 == (guided.loc[right.index] == right).mean()
    truth = pd.Series(ann.classes[ann.gold], index=free.index)
    rest = ann.item_ids[30:]
    assert (guided.loc[rest] == truth.loc[rest]).mean() >= (free.loc[rest] == truth.loc[rest]).mean()
    # no true labels is a plain fit; true labels of no task of the data are a mistake, said so
    empty = pd.Series([], dtype=object, index=pd.Index([], name="task"))
    assert (E.DawidSkene().fit_predict(df, true_labels=empty) == free).all()
    stray = pd.Series(ann.classes[:1], index=pd.Index(["not-a-task"], name="task"))
    with pytest.raises(ValueError, match="none of them a task of data|not-a-task"):
        E.DawidSkene().fit_predict(df, true_labels=stray)


@pytest.mark.slow
def test_dawid_skene_matches_crowdkit_on_real_data(dataset):
    ck = pytest.importorskip("crowdkit.aggregation")
    for name in ("rte", "temp"):
        ann = dataset(name).annotations
        df = ann.to_dataframe().rename(columns={"item": "task"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs_ds = ck.DawidSkene(n_iter=100).fit(df)
            theirs_oc = ck.OneCoinDawidSkene(n_iter=100).fit(df)
            theirs_mv = ck.MajorityVote().fit(df)
        ours = E.DawidSkene(n_iter=100, prior="none").fit(df)
        assert (ours.labels_ == theirs_ds.labels_.reindex(ours.labels_.index)).all(), name
        errors = ours.errors_.reindex(index=theirs_ds.errors_.index, columns=theirs_ds.errors_.columns)
        assert np.abs(errors.to_numpy() - theirs_ds.errors_.to_numpy()).max() < 0.01, name
        oc = E.OneCoinDawidSkene(n_iter=100, prior="none").fit(df)
        assert (oc.labels_ == theirs_oc.labels_.reindex(oc.labels_.index)).all(), name
        assert np.abs(oc.skills_ - theirs_oc.skills_.reindex(oc.skills_.index)).max() < 0.01, name
        mv = E.MajorityVote().fit(df)
        untied = mv.probas_.max(axis=1) > 0.5  # ties are broken differently
        assert (mv.labels_[untied] == theirs_mv.labels_.reindex(mv.labels_.index)[untied]).all()
