"""``crowdinfer.fit``: one entry point over every model and engine, and the model registry."""
from __future__ import annotations

import dataclasses
import sys
import time
import types
import warnings
from functools import partial
from typing import Callable, NamedTuple

from . import identifiability, runners
from .annotations import Annotations
from .models import dawid_skene, one_coin
from .models import bwa, ebcc, hierarchical_ds, mace, wawa, zero_based_skill  # issue 14 models
from .models.priors import DEFAULT_ACCURACY
from .models.priors import resolve as resolve_prior
from .options import validate as validate_options
from .posterior import Posterior

__all__ = ["fit", "MODELS", "resolve_prior"]


class ModelEntry(NamedTuple):
    methods: dict[str, Callable]  # method name -> runner(annotations, **options) -> Posterior
    default_method: str


MODELS: dict[str, ModelEntry] = {
    "dawid_skene": ModelEntry(
        {
            "em": runners.loop_runner("dawid_skene", "em", dawid_skene.MAP, 1.0),
            "nuts": runners.nuts_runner("dawid_skene", dawid_skene, 1.0),
            "svi": runners.svi_runner("dawid_skene", dawid_skene, 1.0),
        },
        "em",
    ),
    "bcc": ModelEntry(
        {
            "vb": runners.loop_runner("bcc", "vb", dawid_skene.VB, 0.0),
            "nuts": runners.nuts_runner("bcc", dawid_skene, 0.0),
            "svi": runners.svi_runner("bcc", dawid_skene, 0.0),
        },
        "vb",
    ),
    "one_coin": ModelEntry(
        {
            "em": runners.loop_runner("one_coin", "em", one_coin.MAP, 1.0, True),
            "nuts": runners.nuts_runner("one_coin", one_coin, 1.0, True),
            "svi": runners.svi_runner("one_coin", one_coin, 1.0, True),
        },
        "em",
    ),
    "community_bcc": ModelEntry(
        {
            "vb": partial(runners.community_runner, method="vb"),
            "svi": partial(runners.community_runner, method="svi"),
        },
        "vb",
    ),
    "glad": ModelEntry({"em": runners.glad_runner}, "em"),
    "majority_vote": ModelEntry({"vote": runners.majority_vote_runner}, "vote"),
    "mace": ModelEntry({"vb": mace.runner("vb"), "em": mace.runner("em")}, "vb"),
    "bwa": ModelEntry({"em": bwa.runner}, "em"),
    "ebcc": ModelEntry({"vb": ebcc.runner}, "vb"),
    "wawa": ModelEntry({"vote": wawa.wawa_runner}, "vote"),
    "weighted_vote": ModelEntry({"vote": wawa.weighted_vote_runner}, "vote"),
    "zero_based_skill": ModelEntry({"vote": zero_based_skill.runner}, "vote"),
    "hierarchical_ds": ModelEntry({"vb": hierarchical_ds.runner}, "vb"),
}


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
        **options: depend on the model and engine, and are checked before any work: the
            groups are the frozen dataclasses of :mod:`crowdinfer.options` --
            :class:`~crowdinfer.options.PriorOptions` (``prior``, ``strength``, ...),
            :class:`~crowdinfer.options.LearnedPriorOptions` (``label_prior="classifier"``),
            :class:`~crowdinfer.options.LoopOptions` (EM/VB: ``max_iter``, ``tol``, ``stop``),
            :class:`~crowdinfer.options.NutsOptions`, :class:`~crowdinfer.options.SviOptions`,
            :class:`~crowdinfer.options.CommunityOptions`,
            :class:`~crowdinfer.options.GladOptions`, :class:`~crowdinfer.options.VoteOptions`;
            ``crowdinfer.options.options_for(model, method)`` lists the names one engine takes.

    Raises:
        ValueError: an unknown model, engine or option (naming the model, the engine and the valid
            options), or an option outside its allowed range (naming it and the range).

    Returns:
        a :class:`~crowdinfer.Posterior`.
    """
    import pandas as pd

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
    if not isinstance(use_gold, bool):
        raise ValueError(f"option 'use_gold' must be True or False, got {use_gold!r}")
    options = validate_options(model, method, options, runner)
    if isinstance(annotations, pd.DataFrame):
        annotations = Annotations.from_dataframe(annotations)
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
            annotations = dataclasses.replace(annotations, gold=None)
    start = time.perf_counter()
    posterior = runner(annotations, **options)
    posterior.annotations, posterior.gold_used = given, clamped
    unidentified = identifiability.warning(annotations)
    if unidentified is not None:
        posterior.warnings.append(unidentified)
        warnings.warn(unidentified, stacklevel=2)
    posterior.options["seconds"] = time.perf_counter() - start
    return posterior


class _CallableModule(types.ModuleType):
    """``crowdinfer.fit`` is both this module and the function :func:`fit`.

    Importing the submodule (``from crowdinfer.fit import MODELS``) makes Python set the package
    attribute ``crowdinfer.fit`` to the module, over the lazily imported function; calling the
    module calls the function, so ``ci.fit(ann)`` works in any import order."""

    def __call__(self, *args, **kwargs):
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
