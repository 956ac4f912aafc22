"""``crowdinfer.fit``: one entry point over every model and engine; ``MODELS``, built from the
JAX-free registry :data:`crowdinfer.options.REGISTRY` (one line per model)."""
from __future__ import annotations

import importlib
import sys
import time
import types
import warnings
from typing import Callable, NamedTuple

from . import identifiability
from .annotations import Annotations
from .models.priors import DEFAULT_ACCURACY
from .models.priors import resolve as resolve_prior
from .options import REGISTRY, CalibrationOptions
from .options import validate as validate_options
from .posterior import Posterior

__all__ = ["fit", "MODELS", "resolve_prior"]


class ModelEntry(NamedTuple):
    methods: dict[str, Callable]  # method name -> runner(annotations, **options) -> Posterior
    default_method: str


def _entry(model: str) -> ModelEntry:
    """``MODELS[model]`` from its line of :data:`crowdinfer.options.REGISTRY`: the runners that
    its module exposes (``RUNNERS[model]``), checked against the engines the line names."""
    line = REGISTRY[model]
    methods = dict(importlib.import_module(line.module).RUNNERS[model])
    if tuple(methods) != line.engines:
        raise RuntimeError(f"{line.module}.RUNNERS[{model!r}] has engines {tuple(methods)}, "
                           f"the registry says {line.engines}")
    return ModelEntry(methods, line.engines[0])


#: ``model -> ModelEntry``, derived from :data:`crowdinfer.options.REGISTRY` (one line per model).
MODELS: dict[str, ModelEntry] = {model: _entry(model) for model in REGISTRY}


def fit(annotations: Annotations, model: str | None = None, method: str | None = None,
        **options) -> Posterior:
    """Infer true labels and worker skills.

    Args:
        annotations: an :class:`~crowdinfer.Annotations` (or a DataFrame with item, worker, label).
        model: ``None`` (default, or ``"auto"``): choose among the candidate models by held-out
            annotation likelihood, no gold used (:mod:`crowdinfer.selection`; the choice and every
            candidate's score are in ``post.selection``); or one of ``MODELS``:
            ``"dawid_skene"``, ``"bcc"``, ``"community_bcc"``, ``"one_coin"``, ``"glad"``,
            ``"majority_vote"``, ...
        method: the engine -- ``"em"``, ``"vb"``, ``"nuts"``, ``"svi"`` or ``"vote"``; default the
            model's own (the first of ``MODELS[model].methods``).
        use_gold: ``True`` clamps items with a gold label (``Annotations.gold``) to it:
            semi-supervised inference, for every model and engine; ``Posterior.accuracy`` then
            scores only the gold items that were not clamped.  Default ``False``: the gold is for
            scoring (every loaded dataset carries its evaluation truth as gold), except that
            ``prior="worker"`` still builds each worker's prior from it (seed 000, A.4 B).
        calibrate: ``True`` maps the label probabilities by a temperature and a floor,
            ``(1 - eps) softmax(log q / T) + eps / K``, with ``T`` and ``eps`` fitted by maximum
            likelihood of the gold labels (``Annotations.gold``, at least 10 items), each gold item
            scored by a fit that did not see its gold: one fit when the fit uses no gold, else
            ``calibration_folds`` (5) cross-fits plus the full fit (:mod:`crowdinfer.calibration`;
            ``post.calibration`` holds ``T`` and ``eps``).  The most probable labels do not change.
            Any model and engine, the default too (its gold-free temperature is applied first).
            Default ``False``.
        **options: depend on the model and engine, and are checked before any work: the
            groups are the frozen dataclasses of :mod:`crowdinfer.options` --
            :class:`~crowdinfer.options.PriorOptions` (``prior``, ``strength``, ...),
            :class:`~crowdinfer.options.LearnedPriorOptions` (``label_prior="classifier"``),
            :class:`~crowdinfer.options.LoopOptions` (EM/VB: ``max_iter``, ``tol``, ``stop``),
            :class:`~crowdinfer.options.NutsOptions`, :class:`~crowdinfer.options.SviOptions`,
            :class:`~crowdinfer.options.CommunityOptions`,
            :class:`~crowdinfer.options.GladOptions`, :class:`~crowdinfer.options.VoteOptions`,
            :class:`~crowdinfer.options.CalibrationOptions` (``calibrate``, above);
            ``crowdinfer.options.options_for(model, method)`` lists the names one engine takes.

    Raises:
        ValueError: an unknown model, engine or option (naming the model, the engine and the valid
            options), or an option outside its allowed range (naming it and the range);
            ``calibrate=True`` without at least 10 gold labels.

    Returns:
        a :class:`~crowdinfer.Posterior`.
    """
    import pandas as pd

    if isinstance(annotations, pd.DataFrame):
        annotations = Annotations.from_dataframe(annotations)
    _check_use_gold(annotations, options.get("use_gold", False))
    calibration = CalibrationOptions.take(options)
    if calibration.calibrate:
        from .calibration import calibrated_fit

        return calibrated_fit(annotations, model, method, calibration.calibration_folds, **options)
    if model is None or model == "auto":
        if method is not None:
            raise ValueError(f"method={method!r} needs a model: the default (model=None) chooses "
                             "among several models, each with its own engine")
        from .selection import select

        return select(annotations, **options)
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; available: {sorted(MODELS)}")
    entry = MODELS[model]
    method = entry.default_method if method is None else method
    if method not in entry.methods:
        raise ValueError(
            f"model {model!r} has no method {method!r}; available: {sorted(entry.methods)}"
        )
    runner = entry.methods[method]
    use_gold = options.pop("use_gold", False)
    options = validate_options(model, method, options, runner)  # options first, then the data
    if not isinstance(annotations, Annotations):
        raise TypeError(f"fit needs Annotations or a DataFrame, got {type(annotations).__name__}")
    given, clamped = annotations, None
    if annotations.gold is not None:
        if use_gold:
            clamped = annotations.gold >= 0
        else:
            if isinstance(options.get("prior"), str) and options["prior"] == "worker":
                # the worker prior is built from the gold (seed 000 A.4 B); the labels stay free
                options["prior"] = resolve_prior(annotations, "worker", options.get("strength"),
                                                 options.get("accuracy", DEFAULT_ACCURACY))
            annotations = annotations.without_gold()
    start = time.perf_counter()
    posterior = runner(annotations, **options)
    posterior.annotations, posterior.gold_used = given, clamped
    unidentified = identifiability.warning(annotations)
    if unidentified is not None:
        posterior.warnings.append(unidentified)
        warnings.warn(unidentified, stacklevel=2)
    if method in ("em", "vb") and not posterior.converged:  # the loop ran out of iterations
        # the learned prior's second stage (when kept) is one iteration on top of the crowd loop's
        crowd_iterations = posterior.options.get("crowd_iterations", posterior.n_iter)
        stopped = (f"{model}/{method} stopped at its iteration limit, after {crowd_iterations} "
                   "iterations, before its stopping rule fired: the estimates may still be "
                   f"moving; fit(ann, {model!r}, max_iter=...) with a larger limit "
                   "(post.history holds the objective per iteration)")
        posterior.warnings.append(stopped)
        warnings.warn(stopped, stacklevel=2)
    posterior.options["seconds"] = time.perf_counter() - start
    return posterior


def _check_use_gold(annotations, use_gold) -> None:
    """``use_gold=True`` asks for gold labels to clamp: without any, it is a mistake to say so."""
    if not isinstance(use_gold, bool):
        raise ValueError(f"option 'use_gold' must be True or False, got {use_gold!r}")
    if not isinstance(annotations, Annotations):
        return  # not annotations at all: fit says so, after checking the options
    gold = annotations.gold
    if use_gold and (gold is None or not (gold >= 0).any()):
        raise ValueError("use_gold=True, but the annotations carry no gold label: attach them "
                         "with Annotations.with_gold({item: label}) (or from_dataframe(..., "
                         "gold=...)), or leave use_gold at False")


class _CallableModule(types.ModuleType):
    """``crowdinfer.fit`` is both this module and the function :func:`fit`.

    Importing the submodule (``from crowdinfer.fit import MODELS``) makes Python set the package
    attribute ``crowdinfer.fit`` to the module, over the lazily imported function; calling the
    module calls the function, so ``ci.fit(ann)`` works in any import order."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
