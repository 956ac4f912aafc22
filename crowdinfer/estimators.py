"""crowd-kit-style estimators: thin wrappers over :func:`crowdinfer.fit` with crowd-kit's names,
methods and attribute shapes, for code that moves from ``crowdkit.aggregation``.

    from crowdinfer.estimators import DawidSkene
    labels = DawidSkene(n_iter=100).fit_predict(df)          # df: columns task, worker, label

Every estimator has ``fit(data, true_labels=None)`` (``fit(data)`` for the votes, ``MajorityVote``
and ``Wawa``, as in crowd-kit; returns ``self``), ``fit_predict`` and
``fit_predict_proba``, and after fitting:

``labels_``   Series indexed by ``task`` (name ``agg_label``): the most probable label;
``probas_``   DataFrame ``task`` x label (columns named ``label``): p(true label | data);
``skills_``   Series indexed by ``worker`` (name ``skill``): p(a worker's answer is right) -- for
              ``MajorityVote`` the share of the worker's answers that agree with the vote, as in
              crowd-kit;
``errors_``   (confusion models) DataFrame indexed by ``(worker, label)`` = the *observed* label,
              one column per *true* label: ``errors_.loc[(w, observed), true] = p(observed | true)``;
``priors_``   Series indexed by ``label`` (name ``prior``): the class proportions;
``posterior_`` the full :class:`~crowdinfer.Posterior` (confusions, diagnostics, ``to_arviz``).

``data`` needs columns ``task`` (or ``item``), ``worker``, ``label``; ``true_labels`` is a Series of
gold labels indexed by task, as in crowd-kit: those tasks are fixed to their gold label while the
workers are estimated (``fit(..., use_gold=True)``).  Options beyond crowd-kit's ``n_iter`` /
``tol`` are :func:`crowdinfer.fit`'s (see :mod:`crowdinfer.options`) and are checked when the
estimator is built.

A model registered in :data:`crowdinfer.fit.MODELS` gets an estimator with one line:
``MACE = make_estimator("MACE", "mace")`` (or ``estimator_for("mace")``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DawidSkene", "OneCoinDawidSkene", "GLAD", "MajorityVote", "BCC", "CommunityBCC",
    "MACE", "BWA", "EBCC", "Wawa", "ZeroBasedSkill", "HierarchicalDawidSkene",
    "make_estimator", "estimator_for", "ESTIMATORS",
]


class CrowdEstimator:
    """Base of the estimators: ``model`` / ``method`` name what :func:`crowdinfer.fit` runs."""

    model: str = ""
    method: str | None = None
    def __init__(self, n_iter: int | None = None, tol: float | None = None, *,
                 method: str | None = None, **options: Any):
        self.n_iter, self.tol = n_iter, tol
        given = {"max_iter": n_iter, "tol": tol}
        options.update({k: v for k, v in given.items() if v is not None})
        self._setup(method, options)

    def _setup(self, method: str | None, options: dict) -> None:
        from .fit import MODELS
        from .options import validate

        if method is not None:
            self.method = method
        entry = MODELS[self.model]
        self.method = self.method or entry.default_method
        if self.method not in entry.methods:
            raise ValueError(f"model {self.model!r} has no method {self.method!r}; available: "
                             f"{sorted(entry.methods)}")
        self.options = validate(self.model, self.method, options, entry.methods[self.method])
        self.posterior_ = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------ crowd-kit API
    def fit(self, data: pd.DataFrame, true_labels: pd.Series | None = None) -> "CrowdEstimator":
        """Fit on ``data`` (columns task/item, worker, label); ``true_labels`` fixes gold tasks."""
        from .annotations import Annotations
        from .fit import fit

        ann = Annotations.from_dataframe(data) if not isinstance(data, Annotations) else data
        options = dict(self.options)
        if true_labels is not None and len(true_labels):  # crowd-kit: gold tasks keep their
            ann = ann.with_gold(true_labels)                 # label while EM runs
            if not (ann.gold >= 0).any():
                raise ValueError(f"true_labels names {len(true_labels)} task(s), none of them a "
                                 "task of data: nothing to fix")
            options["use_gold"] = True
        self.posterior_ = fit(ann, self.model, self.method, **options)
        self._set_attributes(self.posterior_)
        return self

    def fit_predict(self, data: pd.DataFrame, true_labels: pd.Series | None = None) -> pd.Series:
        """``fit``, then ``labels_``: the most probable label per task."""
        return self.fit(data, true_labels).labels_

    def fit_predict_proba(self, data: pd.DataFrame,
                          true_labels: pd.Series | None = None) -> pd.DataFrame:
        """``fit``, then ``probas_``: task x label probabilities."""
        return self.fit(data, true_labels).probas_

    # --------------------------------------------------------------- attributes
    def _set_attributes(self, post) -> None:
        a = post.annotations
        tasks = pd.Index(a.item_ids, name="task")
        labels = pd.Index(a.classes, name="label")
        self.probas_ = pd.DataFrame(post.label_probs, index=tasks, columns=labels)
        self.labels_ = pd.Series(a.classes[post.labels], index=tasks, name="agg_label")
        weights = post._class_weights()
        self.priors_ = pd.Series(np.asarray(weights, float), index=labels, name="prior")
        workers = pd.Index(a.worker_ids, name="worker")
        diag = np.diagonal(post.confusion, axis1=1, axis2=2)
        self.skills_ = pd.Series(diag @ weights, index=workers, name="skill")
        m, k, _ = post.confusion.shape
        rows = pd.MultiIndex.from_product([a.worker_ids, a.classes], names=["worker", "label"])
        # confusion[j, true, observed] -> rows (worker, observed), columns true
        self.errors_ = pd.DataFrame(post.confusion.transpose(0, 2, 1).reshape(m * k, k),
                                    index=rows, columns=list(a.classes))


ESTIMATORS: dict[str, type] = {}


def make_estimator(name: str, model: str, method: str | None = None, doc: str | None = None,
                   base: type = CrowdEstimator) -> type:
    """A crowd-kit-style estimator class for ``fit(model=model, method=method)``."""
    cls = type(name, (base,), {
        "model": model, "method": method, "__module__": __name__,
        "__doc__": doc or f"crowd-kit-style estimator for ``crowdinfer.fit(model={model!r})``.",
    })
    ESTIMATORS[model] = cls
    return cls


def estimator_for(model: str) -> type:
    """The estimator class of any model in :data:`crowdinfer.fit.MODELS` (made on first use)."""
    if model not in ESTIMATORS:
        from .fit import MODELS

        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
        make_estimator("".join(w.title() for w in model.split("_")), model)
    return ESTIMATORS[model]


DawidSkene = make_estimator("DawidSkene", "dawid_skene", doc=(
    "Dawid-Skene by MAP-EM with crowdinfer's pooled empirical-Bayes prior; ``prior='none'`` is "
    "crowd-kit's maximum-likelihood ``DawidSkene``.  ``errors_`` is the confusion of each worker."))
OneCoinDawidSkene = make_estimator("OneCoinDawidSkene", "one_coin", doc=(
    "One accuracy per worker (``skills_``), errors spread evenly over the other labels."))
BCC = make_estimator("BCC", "bcc", doc="Bayesian classifier combination (IBCC) by variational Bayes.")
CommunityBCC = make_estimator("CommunityBCC", "community_bcc", doc=(
    "Community BCC (Venanzi et al. 2014) by variational Bayes: ``communities`` workers' groups."))


class _Glad(CrowdEstimator):
    def _set_attributes(self, post) -> None:
        super()._set_attributes(post)
        a = post.annotations
        self.alphas_ = pd.Series(np.asarray(post.params["alpha"], float),
                                 index=pd.Index(a.worker_ids, name="worker"), name="alpha")
        self.betas_ = pd.Series(np.exp(np.asarray(post.params["log_beta"], float)),
                                index=pd.Index(a.item_ids, name="task"), name="beta")


GLAD = make_estimator("GLAD", "glad", base=_Glad, doc=(
    "GLAD (Whitehill et al. 2009) by generalised EM; also ``alphas_`` (worker ability, by worker) "
    "and ``betas_`` (task easiness, by task), as in crowd-kit."))


class _Vote(CrowdEstimator):
    def __init__(self, *, method: str | None = None, **options):  # options go to fit as named
        self._setup(method, options)

    def fit(self, data: pd.DataFrame) -> "CrowdEstimator":  # no gold, as crowd-kit's
        return super().fit(data)

    def fit_predict(self, data: pd.DataFrame) -> pd.Series:
        return self.fit(data).labels_

    def fit_predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        return self.fit(data).probas_

    def _set_attributes(self, post) -> None:
        super()._set_attributes(post)
        a = post.annotations
        agree = a.label == np.asarray(post.labels)[a.item]
        n = np.maximum(a.annotations_per_worker(), 1)
        self.skills_ = pd.Series(np.bincount(a.worker, agree, a.n_workers) / n,
                                 index=pd.Index(a.worker_ids, name="worker"), name="skill")


MajorityVote = make_estimator("MajorityVote", "majority_vote", base=_Vote, doc=(
    "Majority vote; ``ties='split'`` (default) gives tied labels equal probability and "
    "``labels_`` takes the first, ``ties='first'`` the first class.  ``skills_`` is each worker's "
    "agreement with the vote."))


# the models of issue 14, one line each (crowd-kit's names where crowd-kit has the model)
MACE = make_estimator("MACE", "mace", doc="MACE: each worker knows the answer or spams.")
BWA = make_estimator("BWA", "bwa", doc="Bayesian weighted average with learned worker precisions.")
EBCC = make_estimator("EBCC", "ebcc", doc="Enhanced BCC: classes as mixtures of subtypes.")
HierarchicalDawidSkene = make_estimator("HierarchicalDawidSkene", "hierarchical_ds")
Wawa = make_estimator("Wawa", "wawa", base=_Vote, doc="The vote weighted by agreement with the majority vote.")
ZeroBasedSkill = make_estimator("ZeroBasedSkill", "zero_based_skill", base=_Vote,
                                doc="A vote re-weighted by skills learned over rounds (``n_iter``).")
